//! Authentication and access control at the HTTP edge: who the caller is (Basic credentials
//! checked against the htpasswd users, or a Bearer token), what the route needs, and the
//! answer when it is not allowed — 401 with a challenge that tells a client where to get a
//! token, 403 for a known user without the right, 429 after too many failed logins. The
//! rules themselves live in the domain (`berth_registry::access`).
//!
//! - [`htpasswd`]: users and bcrypt checks.
//! - [`token`]: JWTs issued and verified.
//! - [`limiter`]: throttling of failed logins.
//! - this file: the decision for a request, and the token endpoint.
//!
//! To a caller without pull right, a repository that does not exist and one it may not see
//! look the same: the decision is made before anything is looked up.

pub mod htpasswd;
pub mod limiter;
pub mod token;
pub mod uploads;

use crate::config::{AuthConfig, Config};
use crate::error::ApiError;
use anyhow::Context;
use axum::http::{header, HeaderMap, HeaderValue, Method};
use base64::Engine;
use berth_oci::{ErrorCode, RepoName};
use berth_registry::access::{Action, Actions, Identity, Policy, Rule};
use std::net::IpAddr;
use std::time::Duration;

/// Who is calling, and how they proved it.
#[derive(Debug, Clone)]
pub struct Caller {
    pub who: Identity,
    /// The token presented, when a Bearer token was: its grants bound the caller.
    pub token: Option<token::Verified>,
    /// Credentials were presented (and were valid).
    pub presented: bool,
}

impl Caller {
    pub fn anonymous() -> Caller {
        Caller {
            who: Identity::Anonymous,
            token: None,
            presented: false,
        }
    }
}

/// What a request needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Need {
    /// Credentials or a token, even an anonymous one: `/v2/`. A 401 there is what tells
    /// clients to log in (`docker login` takes a 200 as "no password needed") or to fetch
    /// an anonymous token before pulling.
    Login,
    /// Only to be let in: the catalog (filtered by what the caller may pull).
    Entry,
    /// An action on a repository.
    Repo(RepoName, Action),
    /// The administration API.
    Admin,
}

/// The state of authentication: off, or users, rules, tokens and the login throttle.
pub struct Auth {
    users: Option<htpasswd::Htpasswd>,
    policy: Policy,
    tokens: Option<token::Tokens>,
    limiter: limiter::Limiter,
    burst: u32,
    service: String,
    realm: Option<String>,
}

fn rules(cfg: &AuthConfig) -> Vec<Rule> {
    cfg.rules
        .iter()
        .map(|r| Rule {
            anonymous: r.anonymous,
            users: r.users.clone(),
            groups: r.groups.clone(),
            repositories: r.repositories.clone(),
            actions: Actions::parse_each(&r.actions),
        })
        .collect()
}

impl Auth {
    /// Authentication off: every caller may do everything.
    pub fn off() -> Auth {
        Auth {
            users: None,
            policy: Policy::open(),
            tokens: None,
            limiter: limiter::Limiter::new(Duration::from_secs(6)),
            burst: 10,
            service: "berth".into(),
            realm: None,
        }
    }

    /// From the configuration; off when it names no users and no issuer.
    pub fn from_config(config: &Config) -> anyhow::Result<Auth> {
        let cfg = &config.auth;
        if !cfg.enabled() {
            return Ok(Auth::off());
        }
        let users = cfg
            .htpasswd
            .as_deref()
            .map(htpasswd::Htpasswd::open)
            .transpose()?;
        let policy = if cfg.rules.is_empty() {
            Policy::authenticated_only(cfg.anonymous_pull)
        } else {
            Policy::new(
                rules(cfg),
                &cfg.groups,
                cfg.admins.clone(),
                cfg.admin_groups.clone(),
            )
            .map_err(anyhow::Error::msg)
            .context("auth.rules")?
        };
        let tokens = token::Tokens::load(
            &cfg.service,
            cfg.token_ttl_secs,
            cfg.refresh_ttl_secs,
            cfg.token_key.as_deref(),
            &config.data_dir().join("token-key.pem"),
            &cfg.issuers,
        )?;
        Ok(Auth {
            users,
            policy,
            tokens: Some(tokens),
            limiter: limiter::Limiter::new(Duration::from_secs(cfg.login_refill_secs)),
            burst: cfg.login_burst.max(1),
            service: cfg.service.clone(),
            realm: cfg.realm.clone(),
        })
    }

    pub fn is_on(&self) -> bool {
        // Tokens exist exactly when users or issuers are configured.
        self.tokens.is_some()
    }

    /// Checks a user's password, throttling failures per address and per name.
    async fn login(&self, user: &str, password: &str, peer: IpAddr) -> Result<Identity, ApiError> {
        let (by_ip, by_user) = (format!("ip:{peer}"), format!("user:{user}"));
        let throttled = self
            .limiter
            .check(&by_ip, self.burst)
            .and_then(|()| self.limiter.check(&by_user, self.burst * 2));
        if let Err(wait) = throttled {
            return Err(ApiError::spec(
                ErrorCode::TooManyRequests,
                "too many failed logins: try again later",
            )
            .with_header(
                header::RETRY_AFTER,
                HeaderValue::from(wait.as_secs().max(1)),
            ));
        }
        let ok = match &self.users {
            Some(users) => users.verify(user, password).await,
            None => false,
        };
        if ok {
            return Ok(Identity::User(user.to_owned()));
        }
        self.limiter.fail(&by_ip);
        self.limiter.fail(&by_user);
        tracing::info!(user, %peer, "failed login");
        Err(ApiError::spec(
            ErrorCode::Unauthorized,
            "invalid username or password",
        ))
    }

    /// Who sent `headers`. Bad credentials, bad tokens and malformed `Authorization`
    /// headers are 401 (with the challenge added by the caller of this), throttled logins
    /// 429.
    pub async fn caller(&self, headers: &HeaderMap, peer: IpAddr) -> Result<Caller, ApiError> {
        if !self.is_on() {
            return Ok(Caller::anonymous());
        }
        let Some(value) = headers.get(header::AUTHORIZATION) else {
            return Ok(Caller::anonymous());
        };
        let malformed =
            || ApiError::spec(ErrorCode::Unauthorized, "malformed Authorization header");
        let value = value.to_str().map_err(|_| malformed())?;
        let (scheme, rest) = value.split_once(' ').ok_or_else(malformed)?;
        let rest = rest.trim();
        if scheme.eq_ignore_ascii_case("basic") {
            let (user, password) = basic(rest).ok_or_else(malformed)?;
            let who = self.login(&user, &password, peer).await?;
            Ok(Caller {
                who,
                token: None,
                presented: true,
            })
        } else if scheme.eq_ignore_ascii_case("bearer") {
            let verified = self
                .tokens
                .as_ref()
                .and_then(|t| t.verify(rest))
                .ok_or_else(|| {
                    ApiError::spec(ErrorCode::Unauthorized, "invalid or expired token")
                })?;
            let who = if verified.sub.is_empty() {
                Identity::Anonymous
            } else {
                Identity::User(verified.sub.clone())
            };
            Ok(Caller {
                who,
                token: Some(verified),
                presented: true,
            })
        } else {
            Err(malformed())
        }
    }

    /// What `caller` may do to `repo`: the rules, bounded by the token's grants when a
    /// token was presented.
    pub fn allowed(&self, caller: &Caller, repo: &str) -> Actions {
        if !self.is_on() {
            return Actions::ALL;
        }
        let by_rules = self.policy.allowed(&caller.who, repo);
        match &caller.token {
            Some(t) => by_rules.and(t.allows(repo)),
            None => by_rules,
        }
    }

    /// Whether the catalog shows `repo` to `caller`: the rules decide, whatever the token's
    /// grants (a token proves who the caller is; listing names needs no repository scope).
    pub fn visible(&self, caller: &Caller, repo: &str) -> bool {
        !self.is_on() || self.policy.allowed(&caller.who, repo).has(Action::Pull)
    }

    /// The repository a cross-repository mount may take a blob from: `from`, if `caller`
    /// may pull from it. A source the caller may not pull from is no source, and a plain
    /// upload session follows, as for a blob the source does not have.
    pub fn mount_source(&self, caller: &Caller, from: Option<RepoName>) -> Option<RepoName> {
        from.filter(|f| self.allowed(caller, f.as_str()).has(Action::Pull))
    }

    /// Whether `caller` may use Berth's administration API.
    pub fn is_admin(&self, caller: &Caller) -> bool {
        self.policy.is_admin(&caller.who)
    }

    /// `Ok` when `caller` may do what the request needs; else the refusal to send.
    pub fn check(&self, caller: &Caller, need: &Need, base: &str) -> Result<(), ApiError> {
        if !self.is_on() {
            return Ok(());
        }
        match need {
            Need::Login if caller.presented => Ok(()),
            Need::Login => Err(self.unauthorized(base, None, false)),
            Need::Entry => {
                if caller.presented || self.policy.grants_anything(&caller.who) {
                    Ok(())
                } else {
                    Err(self.unauthorized(base, None, false))
                }
            }
            Need::Admin if self.is_admin(caller) => Ok(()),
            Need::Admin if caller.presented => Err(ApiError::spec(
                ErrorCode::Denied,
                format!("{} is not an administrator", caller.who.name()),
            )),
            Need::Admin => Err(self.unauthorized(base, None, false)),
            Need::Repo(repo, action) => {
                if self.allowed(caller, repo.as_str()).has(*action) {
                    return Ok(());
                }
                // What a client should ask a token for: pull comes with push, as docker asks.
                let wanted = match action {
                    Action::Pull => Actions::of([Action::Pull]),
                    other => Actions::of([Action::Pull, *other]),
                };
                let scope = format!("repository:{repo}:{wanted}");
                match (&caller.token, caller.presented) {
                    (Some(_), _) => Err(self.unauthorized(base, Some(&scope), true)),
                    (None, false) => Err(self.unauthorized(base, Some(&scope), false)),
                    (None, true) => Err(ApiError::spec(
                        ErrorCode::Denied,
                        format!("{} may not {action} {repo}", caller.who.name()),
                    )),
                }
            }
        }
    }

    /// The `WWW-Authenticate` challenge: where to get a token, and for what.
    fn challenge_header(
        &self,
        base: &str,
        scope: Option<&str>,
        insufficient: bool,
    ) -> Option<HeaderValue> {
        let realm = self
            .realm
            .clone()
            .unwrap_or_else(|| format!("{base}/token"));
        let mut challenge = format!("Bearer realm=\"{realm}\",service=\"{}\"", self.service);
        if let Some(s) = scope {
            challenge.push_str(&format!(",scope=\"{s}\""));
        }
        if insufficient {
            challenge.push_str(",error=\"insufficient_scope\"");
        }
        HeaderValue::from_str(&challenge).ok()
    }

    /// 401 with the challenge.
    fn unauthorized(&self, base: &str, scope: Option<&str>, insufficient: bool) -> ApiError {
        let message = if insufficient {
            "the token does not grant this"
        } else {
            "authentication required"
        };
        let e = ApiError::spec(ErrorCode::Unauthorized, message);
        match self.challenge_header(base, scope, insufficient) {
            Some(v) => e.with_header(header::WWW_AUTHENTICATE, v),
            None => e,
        }
    }

    /// Adds the challenge to a 401 that [`Auth::caller`] returned.
    pub fn challenge(&self, e: ApiError, base: &str) -> ApiError {
        let unauthorized = e.is(ErrorCode::Unauthorized);
        match self.challenge_header(base, None, false) {
            Some(v) if unauthorized && self.is_on() => e.with_header(header::WWW_AUTHENTICATE, v),
            _ => e,
        }
    }

    /// The token endpoint (`GET /token`, and `POST /token` as OAuth2 clients use it).
    pub async fn token_endpoint(
        &self,
        method: &Method,
        headers: &HeaderMap,
        query: &str,
        form: &str,
        peer: IpAddr,
    ) -> Result<serde_json::Value, ApiError> {
        let Some(tokens) = self.tokens.as_ref() else {
            return Err(ApiError::no_endpoint(
                "authentication is off: no tokens are needed",
            ));
        };
        let post = method == Method::POST;
        let params: Vec<(String, String)> =
            form_urlencoded::parse(if post { form } else { query }.as_bytes())
                .into_owned()
                .collect();
        let scopes: Vec<&str> = params
            .iter()
            .filter(|(n, _)| n == "scope")
            .flat_map(|(_, v)| v.split(' '))
            .filter(|s| !s.is_empty())
            .collect();
        let (who, offline) = self
            .token_subject(tokens, post, &params, headers, peer)
            .await?;
        let grants = self.grants(&who, &scopes);
        let issued = tokens.issue(who.name(), grants).map_err(internal)?;
        let issued_at = humantime::format_rfc3339_seconds(
            std::time::UNIX_EPOCH + Duration::from_secs(issued.issued_at.max(0) as u64),
        )
        .to_string();
        let mut body = serde_json::json!({
            "token": issued.token,
            "access_token": issued.token,
            "expires_in": issued.expires_in,
            "issued_at": issued_at,
        });
        if post {
            body["scope"] = serde_json::Value::from(scopes.join(" "));
        }
        if offline && who != Identity::Anonymous {
            let refresh = tokens.issue_refresh(who.name()).map_err(internal)?;
            body["refresh_token"] = serde_json::Value::from(refresh);
        }
        Ok(body)
    }

    /// Who a token is for, and whether a refresh token goes with it: the OAuth2 password or
    /// refresh grant (POST), else Basic credentials, else nobody.
    async fn token_subject(
        &self,
        tokens: &token::Tokens,
        post: bool,
        params: &[(String, String)],
        headers: &HeaderMap,
        peer: IpAddr,
    ) -> Result<(Identity, bool), ApiError> {
        let get = |k: &str| param(params, k);
        match (post, get("grant_type")) {
            (true, Some("password")) => {
                let (u, p) = (get("username").unwrap_or(""), get("password").unwrap_or(""));
                let who = self.login(u, p, peer).await?;
                Ok((who, get("access_type") == Some("offline")))
            }
            (true, Some("refresh_token")) => {
                let sub = get("refresh_token")
                    .and_then(|t| tokens.verify_refresh(t))
                    .filter(|u| self.users.as_ref().is_some_and(|h| h.exists(u)))
                    .ok_or_else(|| {
                        ApiError::spec(ErrorCode::Unauthorized, "invalid refresh token")
                    })?;
                Ok((Identity::User(sub), false))
            }
            (true, other) => Err(ApiError::bad_request(
                ErrorCode::Unsupported,
                format!("unsupported grant_type {:?}", other.unwrap_or("")),
            )),
            (false, _) => {
                let basic_realm =
                    HeaderValue::from_str(&format!("Basic realm=\"{}\"", self.service))
                        .unwrap_or(HeaderValue::from_static("Basic"));
                let caller = self
                    .caller(headers, peer)
                    .await
                    .map_err(|e| e.with_header(header::WWW_AUTHENTICATE, basic_realm))?;
                Ok((caller.who, get("offline_token") == Some("true")))
            }
        }
    }

    /// What a token grants: each scope asked for, cut down to what the rules allow.
    fn grants(&self, who: &Identity, scopes: &[&str]) -> Vec<token::Grant> {
        let caller = Caller {
            who: who.clone(),
            token: None,
            presented: *who != Identity::Anonymous,
        };
        let mut repositories: Vec<(&str, Actions)> = Vec::new();
        let mut catalog = false;
        for scope in scopes {
            let (kind, rest) = scope.split_once(':').unwrap_or((scope, ""));
            let Some((name, actions)) = rest.rsplit_once(':') else {
                continue;
            };
            match kind {
                "repository" => {
                    let granted = self.allowed(&caller, name).and(Actions::parse(actions));
                    match repositories.iter_mut().find(|(n, _)| *n == name) {
                        Some((_, a)) => *a = a.or(granted),
                        None => repositories.push((name, granted)),
                    }
                }
                // Docker clients ask for this before listing the catalog; the listing
                // itself shows only what the caller may pull.
                "registry" if name == "catalog" => {
                    catalog |= caller.presented || self.policy.grants_anything(who);
                }
                _ => {}
            }
        }
        repositories
            .into_iter()
            .map(|(name, actions)| token::Grant::repository(name, actions))
            .chain(catalog.then(token::Grant::catalog))
            .collect()
    }
}

/// The value of the first parameter called `key`.
fn param<'a>(params: &'a [(String, String)], key: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(n, _)| n == key)
        .map(|(_, v)| v.as_str())
}

/// A failure of ours while answering (signing a token): logged, answered as a bare 500.
fn internal(e: anyhow::Error) -> ApiError {
    berth_registry::Error::Internal(format!("{e:#}")).into()
}

/// `user:password` from a Basic credential.
fn basic(b64: &str) -> Option<(String, String)> {
    let raw = base64::engine::general_purpose::STANDARD
        .decode(b64.as_bytes())
        .ok()?;
    let text = String::from_utf8(raw).ok()?;
    let (u, p) = text.split_once(':')?;
    Some((u.to_owned(), p.to_owned()))
}

/// What a request on `route` with `method` needs.
pub fn need(route: &crate::dispatch::Route, method: &Method) -> Need {
    use crate::dispatch::Route;
    let action = |m: &Method| match *m {
        Method::GET | Method::HEAD => Action::Pull,
        Method::DELETE => Action::Delete,
        _ => Action::Push,
    };
    match route {
        Route::Base => Need::Login,
        Route::Catalog => Need::Entry,
        Route::Tags(r) | Route::Referrers(r, _) => Need::Repo(r.clone(), Action::Pull),
        Route::Manifest(r, _) | Route::Blob(r, _) => Need::Repo(r.clone(), action(method)),
        // Every upload request writes; cancelling one is not deleting anything stored.
        Route::UploadStart(r) | Route::Upload(r, _) => Need::Repo(r.clone(), Action::Push),
    }
}
