//! A client for one registry: the `/v2/` API over reqwest, with the authentication dance,
//! retries with backoff, and the upload protocol (monolithic, chunked, resumed).
//!
//! Every request goes through [`Registry::send`], which attaches what the registry asked for
//! before (a bearer token for the request's scope, or Basic credentials), answers a `401`
//! challenge once, and retries transient failures — refused or cut connections, `5xx`, `429`
//! (honouring `Retry-After`) — with exponential backoff. Requests are built by a closure so
//! that each attempt gets a fresh body.

use crate::auth::{parse_challenge, Challenge, Credentials, IDENTITY_TOKEN_USER};
use crate::error::{one_line, root_cause, Error, Result};
use berth_oci::manifest::{Descriptor, Manifest, Platform};
use berth_oci::{media, Digest, RepoName};
use reqwest::header::{HeaderMap, ACCEPT, CONTENT_LENGTH, CONTENT_TYPE, LOCATION};
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

/// Every manifest type a pull accepts.
/// The largest manifest the client takes, as registries (Distribution's default) do.
pub const MANIFEST_LIMIT: usize = 4 << 20;
/// The largest JSON answer (tag page, referrers list, token) the client takes.
const LIST_LIMIT: usize = 16 << 20;

pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v2+json";

/// How a client talks to registries.
#[derive(Debug, Clone)]
pub struct Options {
    /// Plain HTTP, or HTTPS without certificate checks, for every registry.
    pub insecure: bool,
    /// Attempts per request before a transient failure is final.
    pub attempts: u32,
    /// First backoff delay; it doubles each attempt.
    pub backoff: Duration,
    /// Bytes per `PATCH` of a chunked upload: the most a cut connection makes us resend.
    pub chunk_size: u64,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            insecure: false,
            attempts: 5,
            backoff: Duration::from_millis(200),
            chunk_size: 16 << 20,
        }
    }
}

/// What the registry wants on each request, learnt from its challenges.
#[derive(Debug, Clone, Default)]
enum AuthMode {
    #[default]
    Unknown,
    Basic,
    Bearer,
}

/// A fetched manifest: its bytes, media type and digest (verified).
#[derive(Debug, Clone)]
pub struct Fetched {
    pub bytes: Vec<u8>,
    pub media_type: String,
    pub digest: Digest,
}

impl Fetched {
    /// Parses and validates the manifest.
    pub fn parse(&self) -> Result<Manifest> {
        Manifest::parse(&self.bytes, Some(&self.media_type))
            .map_err(|e| Error::Invalid(format!("manifest {}: {e}", self.digest)))
    }

    /// The descriptor of this manifest, for an index entry on `platform`.
    pub fn descriptor(&self, platform: Option<Platform>) -> Descriptor {
        Descriptor {
            media_type: self.media_type.clone(),
            digest: self.digest.clone(),
            size: self.bytes.len() as u64,
            artifact_type: None,
            annotations: None,
            urls: None,
            platform,
        }
    }
}

/// How an upload started.
pub enum Started {
    /// A cross-repository mount succeeded: nothing to send.
    Mounted,
    /// A session to send the bytes to.
    Session(String),
}

pub struct Registry {
    http: reqwest::Client,
    /// `scheme://host[:port]`.
    base: String,
    /// The registry's name in references, for messages.
    pub name: String,
    creds: Option<Credentials>,
    mode: Mutex<AuthMode>,
    /// Bearer tokens by scope.
    tokens: Mutex<HashMap<String, String>>,
    opts: Options,
}

/// The scope of a request: `repository:<name>:<actions>` items.
#[derive(Debug, Clone)]
pub struct Scope(Vec<String>);

impl Scope {
    pub fn pull(repo: &RepoName) -> Scope {
        Scope(vec![format!("repository:{repo}:pull")])
    }
    pub fn push(repo: &RepoName) -> Scope {
        Scope(vec![format!("repository:{repo}:pull,push")])
    }
    /// Push to `repo` and pull from `from`: what a cross-repository mount needs.
    pub fn mount(repo: &RepoName, from: &RepoName) -> Scope {
        Scope(vec![
            format!("repository:{repo}:pull,push"),
            format!("repository:{from}:pull"),
        ])
    }
    pub fn none() -> Scope {
        Scope(Vec::new())
    }
    fn key(&self) -> String {
        self.0.join(" ")
    }
}

/// Builds the reqwest client all registries of a command share.
pub fn http_client(insecure: bool) -> Result<reqwest::Client> {
    reqwest::Client::builder()
        .user_agent(concat!("berth/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(Duration::from_secs(15))
        .read_timeout(Duration::from_secs(120))
        .tls_danger_accept_invalid_certs(insecure)
        .build()
        .map_err(|e| Error::Invalid(format!("cannot build the HTTP client: {e}")))
}

impl Registry {
    /// A client for `name` (as in references) answering on `host`. Local registries and
    /// `insecure` ones speak plain HTTP unless they answer HTTPS.
    pub async fn connect(
        http: reqwest::Client,
        name: &str,
        host: &str,
        local: bool,
        creds: Option<Credentials>,
        opts: Options,
    ) -> Result<Registry> {
        let mut reg = Registry {
            http,
            base: format!("https://{host}"),
            name: name.to_owned(),
            creds,
            mode: Mutex::new(AuthMode::Unknown),
            tokens: Mutex::new(HashMap::new()),
            opts,
        };
        if local {
            // This machine's registries speak plain HTTP: probing HTTPS first would cost a
            // handshake a plain server may answer only after its header timeout.
            reg.base = format!("http://{host}");
        } else if reg.opts.insecure {
            // Docker's rule for insecure registries: HTTPS if it answers, else HTTP.
            let https = reg
                .http
                .get(format!("{}/v2/", reg.base))
                .timeout(Duration::from_secs(10))
                .send()
                .await;
            if https.is_err() {
                reg.base = format!("http://{host}");
            }
        }
        Ok(reg)
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    fn url(&self, path: &str) -> String {
        if path.starts_with("http://") || path.starts_with("https://") {
            path.to_owned()
        } else {
            format!("{}{}", self.base, path)
        }
    }

    /// Reads a body that has no business being large (a manifest, a config, a JSON list),
    /// refusing to hold more than `limit` bytes of it.
    pub async fn small_body(&self, resp: Response, limit: usize, what: &str) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        let mut body = resp.bytes_stream();
        while let Some(chunk) = futures::StreamExt::next(&mut body).await {
            let chunk = chunk.map_err(|e| self.transport_error(&e))?;
            if out.len() + chunk.len() > limit {
                return Err(Error::Invalid(format!(
                    "{} sent a {what} larger than {} MiB",
                    self.name,
                    limit >> 20
                )));
            }
            out.extend_from_slice(&chunk);
        }
        Ok(out)
    }

    /// [`Registry::small_body`] parsed as JSON.
    async fn small_json<T: serde::de::DeserializeOwned>(
        &self,
        resp: Response,
        what: &str,
    ) -> Result<T> {
        let bytes = self.small_body(resp, LIST_LIMIT, what).await?;
        serde_json::from_slice(&bytes).map_err(|e| Error::Transfer {
            registry: self.name.clone(),
            reason: format!("{what}: {e}"),
        })
    }

    fn transport_error(&self, e: &reqwest::Error) -> Error {
        if e.is_connect() {
            Error::Connect {
                registry: self.name.clone(),
                reason: root_cause(e),
            }
        } else {
            Error::Transfer {
                registry: self.name.clone(),
                reason: root_cause(e),
            }
        }
    }

    fn delay(&self, attempt: u32, headers: Option<&HeaderMap>) -> Duration {
        let retry_after = headers
            .and_then(|h| h.get("retry-after"))
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(|s| Duration::from_secs(s.min(60)));
        retry_after.unwrap_or(self.opts.backoff * 2u32.saturating_pow(attempt))
    }

    /// Sends the request `build` makes, with authentication and retries (see the module doc).
    /// With `retry` false, a transport failure is returned at once (the caller resumes).
    pub async fn send(
        &self,
        scope: &Scope,
        retry: bool,
        build: impl Fn(&reqwest::Client) -> RequestBuilder,
    ) -> Result<Response> {
        let mut attempt = 0;
        let mut challenged = false;
        loop {
            let req = self.authorize(build(&self.http), scope);
            let resp = match req.send().await {
                Ok(r) => r,
                Err(e) => {
                    attempt += 1;
                    if retry && attempt < self.opts.attempts {
                        tokio::time::sleep(self.delay(attempt - 1, None)).await;
                        continue;
                    }
                    return Err(self.transport_error(&e));
                }
            };
            let status = resp.status();
            if status == StatusCode::UNAUTHORIZED && !challenged {
                challenged = true;
                if self.answer_challenge(&resp, scope).await? {
                    continue;
                }
            }
            let transient = status.is_server_error()
                || status == StatusCode::TOO_MANY_REQUESTS
                || status == StatusCode::REQUEST_TIMEOUT;
            if transient && retry && attempt + 1 < self.opts.attempts {
                attempt += 1;
                tokio::time::sleep(self.delay(attempt - 1, Some(resp.headers()))).await;
                continue;
            }
            return Ok(resp);
        }
    }

    fn authorize(&self, req: RequestBuilder, scope: &Scope) -> RequestBuilder {
        let mode = self.mode.lock().map(|m| m.clone()).unwrap_or_default();
        match mode {
            AuthMode::Basic => match &self.creds {
                Some(c) => req.basic_auth(&c.username, Some(&c.secret)),
                None => req,
            },
            AuthMode::Bearer => {
                let token = self
                    .tokens
                    .lock()
                    .ok()
                    .and_then(|t| t.get(&scope.key()).cloned());
                match token {
                    Some(t) => req.bearer_auth(t),
                    None => req,
                }
            }
            AuthMode::Unknown => req,
        }
    }

    /// Learns what a `401` asks for and gets it. `false` when there is nothing to try.
    async fn answer_challenge(&self, resp: &Response, scope: &Scope) -> Result<bool> {
        let Some(challenge) = resp
            .headers()
            .get_all("www-authenticate")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find_map(parse_challenge)
        else {
            return Ok(false);
        };
        match challenge {
            Challenge::Basic => {
                if let Ok(mut m) = self.mode.lock() {
                    *m = AuthMode::Basic;
                }
                Ok(self.creds.is_some())
            }
            Challenge::Bearer {
                realm,
                service,
                scope: asked,
            } => {
                if let Ok(mut m) = self.mode.lock() {
                    *m = AuthMode::Bearer;
                }
                let mut scopes = scope.0.clone();
                if let Some(a) = asked {
                    if !scopes.contains(&a) {
                        scopes.push(a);
                    }
                }
                let token = self
                    .fetch_token(&realm, service.as_deref(), &scopes)
                    .await?;
                if let Ok(mut t) = self.tokens.lock() {
                    // A token for several scopes serves each of them alone too: the upload a
                    // mount request opened continues with the push scope.
                    for item in &scope.0 {
                        t.entry(item.clone()).or_insert_with(|| token.clone());
                    }
                    t.insert(scope.key(), token);
                }
                Ok(true)
            }
        }
    }

    async fn fetch_token(
        &self,
        realm: &str,
        service: Option<&str>,
        scopes: &[String],
    ) -> Result<String> {
        let mut query = form_urlencoded::Serializer::new(String::new());
        if let Some(s) = service {
            query.append_pair("service", s);
        }
        for s in scopes {
            query.append_pair("scope", s);
        }
        let req = match &self.creds {
            // An identity token is an OAuth2 refresh token: POSTed, never sent as Basic.
            Some(c) if c.username == IDENTITY_TOKEN_USER => {
                let mut form = form_urlencoded::Serializer::new(String::new());
                form.append_pair("grant_type", "refresh_token")
                    .append_pair("refresh_token", &c.secret)
                    .append_pair("client_id", "berth");
                if let Some(s) = service {
                    form.append_pair("service", s);
                }
                if !scopes.is_empty() {
                    form.append_pair("scope", &scopes.join(" "));
                }
                self.http
                    .post(realm)
                    .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
                    .body(form.finish())
            }
            creds => {
                let sep = if realm.contains('?') { '&' } else { '?' };
                let req = self.http.get(format!("{realm}{sep}{}", query.finish()));
                match creds {
                    Some(c) => req.basic_auth(&c.username, Some(&c.secret)),
                    None => req,
                }
            }
        };
        let resp = req.send().await.map_err(|e| self.transport_error(&e))?;
        let status = resp.status();
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            return Err(Error::Unauthorized {
                registry: self.name.clone(),
                message: error_message(resp).await,
            });
        }
        if !status.is_success() {
            return Err(Error::Registry {
                registry: self.name.clone(),
                status: status.as_u16(),
                message: format!("token endpoint: {}", error_message(resp).await),
            });
        }
        let body: serde_json::Value = self.small_json(resp, "token endpoint answer").await?;
        body.get("token")
            .or_else(|| body.get("access_token"))
            .and_then(|t| t.as_str())
            .map(str::to_owned)
            .ok_or_else(|| Error::Transfer {
                registry: self.name.clone(),
                reason: "token endpoint answered no token".into(),
            })
    }

    /// Turns an unexpected status into an error carrying the registry's message.
    pub async fn fail(&self, resp: Response, what: &str) -> Error {
        let status = resp.status();
        let message = error_message(resp).await;
        match status {
            StatusCode::UNAUTHORIZED => Error::Unauthorized {
                registry: self.name.clone(),
                message,
            },
            StatusCode::FORBIDDEN => Error::Denied {
                message: format!("{what}: {message}"),
            },
            StatusCode::NOT_FOUND => Error::NotFound(format!("{what}: {message}")),
            s => Error::Registry {
                registry: self.name.clone(),
                status: s.as_u16(),
                message: format!("{what}: {message}"),
            },
        }
    }

    /// Checks that the registry answers and accepts our credentials (`GET /v2/`).
    pub async fn ping(&self) -> Result<()> {
        let resp = self
            .send(&Scope::none(), true, |h| h.get(self.url("/v2/")))
            .await?;
        if resp.status().is_success() {
            Ok(())
        } else {
            Err(self.fail(resp, "checking the registry").await)
        }
    }

    /// Fetches a manifest by tag or digest and verifies its digest.
    pub async fn manifest(&self, repo: &RepoName, reference: &str) -> Result<Fetched> {
        let url = self.url(&format!("/v2/{repo}/manifests/{reference}"));
        let resp = self
            .send(&Scope::pull(repo), true, |h| {
                h.get(&url).header(ACCEPT, MANIFEST_ACCEPT)
            })
            .await?;
        if resp.status() == StatusCode::NOT_FOUND {
            return Err(Error::NotFound(format!(
                "no such image: {}/{repo}{}{reference}",
                self.name,
                if reference.contains(':') { "@" } else { ":" }
            )));
        }
        if !resp.status().is_success() {
            return Err(self.fail(resp, &format!("{repo}:{reference}")).await);
        }
        let header_type = resp
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(media::essence);
        let sent_digest = resp
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<Digest>().ok());
        let bytes = self.small_body(resp, MANIFEST_LIMIT, "manifest").await?;
        // Verify with the algorithm of the digest we asked for or were told.
        let expected = reference.parse::<Digest>().ok().or(sent_digest);
        let digest = match expected {
            Some(d) => {
                let actual = Digest::of(d.algorithm(), &bytes);
                if actual != d {
                    return Err(Error::DigestMismatch {
                        expected: d.to_string(),
                        actual: actual.to_string(),
                    });
                }
                d
            }
            None => Digest::sha256(&bytes),
        };
        let media_type = media_type_of(&bytes)
            .or(header_type)
            .unwrap_or_else(|| media::OCI_MANIFEST.to_owned());
        Ok(Fetched {
            bytes,
            media_type,
            digest,
        })
    }

    /// Pushes a manifest under a tag or its digest; returns the digest the registry computed.
    pub async fn put_manifest(
        &self,
        repo: &RepoName,
        reference: &str,
        bytes: &[u8],
        media_type: &str,
    ) -> Result<Digest> {
        let url = self.url(&format!("/v2/{repo}/manifests/{reference}"));
        let body = bytes::Bytes::copy_from_slice(bytes);
        let resp = self
            .send(&Scope::push(repo), true, |h| {
                h.put(&url)
                    .header(CONTENT_TYPE, media_type)
                    .body(body.clone())
            })
            .await?;
        if !resp.status().is_success() {
            return Err(self
                .fail(resp, &format!("pushing manifest {repo}:{reference}"))
                .await);
        }
        Ok(Digest::sha256(bytes))
    }

    /// The size of a blob the repository holds, or `None`.
    pub async fn blob_size(&self, repo: &RepoName, digest: &Digest) -> Result<Option<u64>> {
        let url = self.url(&format!("/v2/{repo}/blobs/{digest}"));
        let resp = self
            .send(&Scope::pull(repo), true, |h| h.head(&url))
            .await?;
        match resp.status() {
            s if s.is_success() => Ok(content_length(resp.headers())),
            StatusCode::NOT_FOUND => Ok(None),
            _ => Err(self.fail(resp, &format!("checking blob {digest}")).await),
        }
    }

    /// Starts reading a blob at `offset`. Returns the response and whether it honoured the
    /// offset (`206`) or sends the whole blob again (`200`).
    pub async fn blob(
        &self,
        repo: &RepoName,
        digest: &Digest,
        offset: u64,
    ) -> Result<(Response, bool)> {
        let url = self.url(&format!("/v2/{repo}/blobs/{digest}"));
        let resp = self
            .send(&Scope::pull(repo), true, |h| {
                let r = h.get(&url);
                if offset > 0 {
                    r.header("range", format!("bytes={offset}-"))
                } else {
                    r
                }
            })
            .await?;
        match resp.status() {
            StatusCode::PARTIAL_CONTENT if offset > 0 => Ok((resp, true)),
            StatusCode::OK => Ok((resp, false)),
            StatusCode::NOT_FOUND => Err(Error::NotFound(format!(
                "blob {digest} is missing from {}/{repo}",
                self.name
            ))),
            _ => Err(self.fail(resp, &format!("fetching blob {digest}")).await),
        }
    }

    /// Opens an upload session, or mounts `digest` from `from` when given.
    pub async fn start_upload(
        &self,
        repo: &RepoName,
        mount: Option<(&Digest, &RepoName)>,
    ) -> Result<Started> {
        let mut path = format!("/v2/{repo}/blobs/uploads/");
        let scope = match mount {
            Some((d, from)) => {
                path.push_str(&format!("?mount={d}&from={from}"));
                Scope::mount(repo, from)
            }
            None => Scope::push(repo),
        };
        let url = self.url(&path);
        let resp = self
            .send(&scope, true, |h| h.post(&url).header(CONTENT_LENGTH, 0))
            .await?;
        match resp.status() {
            StatusCode::CREATED if mount.is_some() => Ok(Started::Mounted),
            StatusCode::ACCEPTED => Ok(Started::Session(self.location(&resp)?)),
            _ => Err(self
                .fail(resp, &format!("starting an upload to {repo}"))
                .await),
        }
    }

    fn location(&self, resp: &Response) -> Result<String> {
        resp.headers()
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            // Absolute, from the root or relative to the request: the URL rules settle it.
            .and_then(|l| resp.url().join(l).ok())
            .map(String::from)
            .ok_or_else(|| Error::Transfer {
                registry: self.name.clone(),
                reason: "upload answer has no Location".into(),
            })
    }

    /// Where an upload session stands: the bytes the registry holds and the URL to continue
    /// at. `None` when the registry no longer knows the session.
    pub async fn upload_status(
        &self,
        repo: &RepoName,
        location: &str,
    ) -> Result<Option<(u64, String)>> {
        let resp = self
            .send(&Scope::push(repo), true, |h| h.get(location))
            .await?;
        match resp.status() {
            StatusCode::NO_CONTENT | StatusCode::OK | StatusCode::ACCEPTED => {
                let offset = range_end(resp.headers()).unwrap_or(0);
                let next = self.location(&resp).unwrap_or_else(|_| location.to_owned());
                Ok(Some((offset, next)))
            }
            StatusCode::NOT_FOUND | StatusCode::BAD_REQUEST => Ok(None),
            _ => Err(self.fail(resp, "checking an upload").await),
        }
    }

    /// Sends one chunk at `offset`; returns the registry's offset afterwards and the next URL.
    /// Not retried here: after a failure the caller asks where the session stands.
    pub async fn patch(
        &self,
        repo: &RepoName,
        location: &str,
        offset: u64,
        body: impl Fn() -> reqwest::Body,
        len: u64,
    ) -> Result<(u64, String)> {
        let resp = self
            .send(&Scope::push(repo), false, |h| {
                h.patch(location)
                    .header(CONTENT_TYPE, "application/octet-stream")
                    .header("content-range", format!("{}-{}", offset, offset + len - 1))
                    .header(CONTENT_LENGTH, len)
                    .body(body())
            })
            .await?;
        if resp.status() != StatusCode::ACCEPTED {
            return Err(self.fail(resp, "uploading a chunk").await);
        }
        // The registry's word on what it holds wins; without one, the chunk went in whole.
        let end = range_end(resp.headers()).unwrap_or(offset + len);
        Ok((end, self.location(&resp)?))
    }

    /// Finishes an upload with `digest`, sending `body` (`len` bytes) with it.
    pub async fn finish_upload(
        &self,
        repo: &RepoName,
        location: &str,
        digest: &Digest,
        body: impl Fn() -> reqwest::Body,
        len: u64,
        retry: bool,
    ) -> Result<()> {
        let sep = if location.contains('?') { '&' } else { '?' };
        let url = format!("{location}{sep}digest={digest}");
        let resp = self
            .send(&Scope::push(repo), retry, |h| {
                h.put(&url)
                    .header(CONTENT_TYPE, "application/octet-stream")
                    .header(CONTENT_LENGTH, len)
                    .body(body())
            })
            .await?;
        if resp.status() != StatusCode::CREATED {
            return Err(self
                .fail(resp, &format!("finishing the upload of {digest}"))
                .await);
        }
        Ok(())
    }

    /// Every tag of a repository, following `Link` pagination.
    pub async fn tags(&self, repo: &RepoName) -> Result<Vec<String>> {
        let mut out = Vec::new();
        let mut next = Some(self.url(&format!("/v2/{repo}/tags/list?n=1000")));
        while let Some(url) = next.take() {
            let resp = self.send(&Scope::pull(repo), true, |h| h.get(&url)).await?;
            if resp.status() == StatusCode::NOT_FOUND {
                return Err(Error::NotFound(format!(
                    "no such repository: {}/{repo}",
                    self.name
                )));
            }
            if !resp.status().is_success() {
                return Err(self.fail(resp, &format!("listing tags of {repo}")).await);
            }
            next = next_link(resp.headers())
                .and_then(|l| resp.url().join(&l).ok())
                .map(String::from);
            let body: serde_json::Value = self.small_json(resp, "tag list").await?;
            if let Some(tags) = body.get("tags").and_then(|t| t.as_array()) {
                out.extend(tags.iter().filter_map(|t| t.as_str().map(str::to_owned)));
            }
        }
        Ok(out)
    }

    /// The referrers of `digest` (OCI 1.1); empty where the registry has no referrers API.
    pub async fn referrers(&self, repo: &RepoName, digest: &Digest) -> Result<Vec<Descriptor>> {
        let url = self.url(&format!("/v2/{repo}/referrers/{digest}"));
        let resp = self
            .send(&Scope::pull(repo), true, |h| {
                h.get(&url).header(ACCEPT, media::OCI_INDEX)
            })
            .await?;
        if !resp.status().is_success() {
            return Ok(Vec::new());
        }
        #[derive(serde::Deserialize)]
        struct Index {
            #[serde(default)]
            manifests: Vec<Descriptor>,
        }
        let index: Index = self.small_json(resp, "referrers list").await?;
        Ok(index.manifests)
    }

    /// Deletes a manifest by digest.
    pub async fn delete_manifest(&self, repo: &RepoName, digest: &Digest) -> Result<()> {
        let url = self.url(&format!("/v2/{repo}/manifests/{digest}"));
        let resp = self
            .send(
                &Scope(vec![format!("repository:{repo}:delete")]),
                true,
                |h| h.request(Method::DELETE, &url),
            )
            .await?;
        if resp.status().is_success() {
            Ok(())
        } else {
            Err(self.fail(resp, &format!("deleting {repo}@{digest}")).await)
        }
    }
}

/// The `mediaType` a manifest body declares, else what its shape says.
pub fn media_type_of(bytes: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(bytes).ok()?;
    if let Some(mt) = v.get("mediaType").and_then(|m| m.as_str()) {
        return Some(mt.to_owned());
    }
    if v.get("manifests").is_some() {
        Some(media::OCI_INDEX.to_owned())
    } else if v.get("config").is_some() {
        Some(media::OCI_MANIFEST.to_owned())
    } else {
        None
    }
}

fn content_length(h: &HeaderMap) -> Option<u64> {
    h.get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

/// The byte count a `Range: 0-N` upload status header reports (N + 1), or 0.
fn range_end(h: &HeaderMap) -> Option<u64> {
    h.get("range")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim_start_matches("bytes=").split_once('-'))
        .and_then(|(_, end)| end.parse::<u64>().ok())
        .map(|end| end + 1)
}

/// The target of `Link: <url>; rel="next"`.
fn next_link(h: &HeaderMap) -> Option<String> {
    let link = h.get("link")?.to_str().ok()?;
    link.split(',').find_map(|part| {
        let (url, params) = part.split_once(';')?;
        params.contains("rel=\"next\"").then(|| {
            url.trim()
                .trim_start_matches('<')
                .trim_end_matches('>')
                .to_owned()
        })
    })
}

/// The registry's message from an error body (`{"errors":[{"code","message"}]}`), else the
/// status text.
async fn error_message(resp: Response) -> String {
    let status = resp.status();
    // Only the start of an error body is read: a message is short, a hostile body is not.
    let mut body = Vec::new();
    let mut stream = resp.bytes_stream();
    while let Some(Ok(chunk)) = futures::StreamExt::next(&mut stream).await {
        body.extend_from_slice(&chunk);
        if body.len() >= 64 << 10 {
            break;
        }
    }
    let parsed: Option<serde_json::Value> = serde_json::from_slice(&body).ok();
    let first = parsed
        .as_ref()
        .and_then(|v| v.get("errors"))
        .and_then(|e| e.get(0));
    if let Some(e) = first {
        let code = e.get("code").and_then(|c| c.as_str()).unwrap_or("");
        let msg = e.get("message").and_then(|c| c.as_str()).unwrap_or("");
        return match (code.is_empty(), msg.is_empty()) {
            (false, false) => format!("{} ({})", one_line(msg), one_line(code)),
            (false, true) => one_line(code),
            _ => one_line(msg),
        };
    }
    let text = String::from_utf8_lossy(&body);
    let text = text.trim();
    if !text.is_empty() && text.len() < 200 && !text.contains('\n') {
        text.to_owned()
    } else {
        status.canonical_reason().unwrap_or("error").to_lowercase()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn links_and_ranges() {
        let mut h = HeaderMap::new();
        h.insert(
            "link",
            HeaderValue::from_static("</v2/a/tags/list?n=2&last=b>; rel=\"next\""),
        );
        h.insert("range", HeaderValue::from_static("0-1023"));
        assert_eq!(next_link(&h).as_deref(), Some("/v2/a/tags/list?n=2&last=b"));
        assert_eq!(range_end(&h), Some(1024));
        assert_eq!(range_end(&HeaderMap::new()), None);
    }

    #[test]
    fn media_types_from_bodies() {
        assert_eq!(
            media_type_of(br#"{"schemaVersion":2,"manifests":[]}"#).as_deref(),
            Some(media::OCI_INDEX)
        );
        assert_eq!(
            media_type_of(
                br#"{"mediaType":"application/vnd.docker.distribution.manifest.v2+json"}"#
            )
            .as_deref(),
            Some(media::DOCKER_MANIFEST)
        );
        assert_eq!(media_type_of(b"nope"), None);
    }
}
