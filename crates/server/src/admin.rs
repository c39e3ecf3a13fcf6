//! Berth's own administration API, under `/api/v1/`: garbage collection, reconciliation and
//! storage figures. Admins only when authentication is on (open, like everything else, when
//! it is off). Answers are JSON; errors use the registry's error body.
//!
//! - `POST /api/v1/gc?dry_run=&grace_period=`: a collection, its report.
//! - `POST /api/v1/reconcile?dry_run=&grace_period=`: compare records and blob files.
//! - `GET /api/v1/usage`: bytes stored, logical bytes, dedup ratio, per repository.
//! - `GET /api/v1/repositories?sort=&order=&page=&per_page=`: repositories with figures.
//! - `GET /api/v1/repositories/NAME/tags?sort=&order=&page=&per_page=`: tags with figures.

use crate::config::duration;
use crate::error::ApiError;
use crate::headers::json_response;
use crate::metrics::RouteLabel;
use crate::request::{base_url, peer, Query};
use crate::state::AppState;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method};
use axum::response::{IntoResponse, Response};
use berth_oci::{ErrorCode, RepoName};
use berth_registry::gc::GcRequest;
use berth_registry::usage::{ListRequest, Paged, SortKey};
use berth_registry::Registry;
use std::net::IpAddr;

type Result<T = Response, E = ApiError> = std::result::Result<T, E>;

/// Most entries a page holds, whatever `per_page` asks.
const MAX_PER_PAGE: u64 = 1000;

fn bad(message: impl Into<String>) -> ApiError {
    ApiError::bad_request(ErrorCode::Unsupported, message)
}

/// Every `/api/v1/…` request.
pub async fn api(State(app): State<AppState>, req: Request) -> Response {
    // Only the parts: the request's body is not Sync, and these futures await.
    let (peer, base, q) = (peer(&req), base_url(&req), Query::of(&req));
    let (parts, _) = req.into_parts();
    let result = match admitted(&app, &parts.headers, peer, &base).await {
        Ok(()) => route(&app.registry, &parts.method, parts.uri.path(), &q).await,
        Err(e) => Err(e),
    };
    if parts.method == Method::POST && result.is_ok() {
        // A collection or a repair changed the figures: the gauges follow at once.
        let (reg, gauges) = (app.registry.clone(), app.storage.clone());
        tokio::spawn(async move { gauges.refresh(&reg).await.ok() });
    }
    let mut r = result.unwrap_or_else(IntoResponse::into_response);
    r.extensions_mut().insert(RouteLabel("admin"));
    r
}

async fn admitted(app: &AppState, headers: &HeaderMap, peer: IpAddr, base: &str) -> Result<()> {
    if !app.auth.is_on() {
        return Ok(());
    }
    let caller = app
        .auth
        .caller(headers, peer)
        .await
        .map_err(|e| app.auth.challenge(e, base))?;
    app.auth.check(&caller, &crate::auth::Need::Admin, base)
}

async fn route(reg: &Registry, method: &Method, path: &str, q: &Query) -> Result {
    let Some(rest) = path.trim_end_matches('/').strip_prefix("/api/v1/") else {
        return Err(not_found());
    };
    match (rest, method) {
        ("gc", &Method::POST) => ok(&reg.collect(gc_request(q)?).await?),
        ("reconcile", &Method::POST) => ok(&reg.reconcile(gc_request(q)?).await?),
        ("usage", &Method::GET) => ok(&reg.usage().await?),
        ("repositories", &Method::GET) => {
            let page = reg
                .repositories_page(list_request(q, SortKey::Name)?)
                .await?;
            Ok(paged(page, "/api/v1/repositories", q))
        }
        (other, &Method::GET) if other.starts_with("repositories/") && other.ends_with("/tags") => {
            let name = &other["repositories/".len()..other.len() - "/tags".len()];
            let repo: RepoName = name.parse().map_err(|e: berth_oci::NameError| {
                ApiError::spec(ErrorCode::NameInvalid, e.to_string())
            })?;
            let page = reg
                .tags_page(&repo, list_request(q, SortKey::Name)?)
                .await?;
            Ok(paged(page, &format!("/api/v1/repositories/{repo}/tags"), q))
        }
        ("gc" | "reconcile" | "usage" | "repositories", _) => Err(ApiError::spec(
            ErrorCode::Unsupported,
            format!("method {method} is not supported on this endpoint"),
        )),
        _ => Err(not_found()),
    }
}

fn not_found() -> ApiError {
    ApiError::no_endpoint("no such endpoint")
}

fn ok(value: &impl serde::Serialize) -> Result {
    Ok(json_response(value, "application/json"))
}

/// `dry_run=true|false` and `grace_period=` (`90s`, `1h`, `2d`, or seconds).
fn gc_request(q: &Query) -> Result<GcRequest> {
    let dry_run = match q.one("dry_run", ErrorCode::Unsupported)? {
        None | Some("false" | "0") => false,
        Some("true" | "1" | "") => true,
        Some(other) => return Err(bad(format!("dry_run must be true or false, not {other:?}"))),
    };
    let grace = q
        .one("grace_period", ErrorCode::Unsupported)?
        .map(|g| {
            duration(g).ok_or_else(|| {
                bad(format!(
                    "grace_period {g:?} is not a duration like 3600, 90s, 1h or 2d"
                ))
            })
        })
        .transpose()?;
    Ok(GcRequest { dry_run, grace })
}

/// `sort=`, `order=asc|desc` (default: ascending by name, descending by anything else),
/// `page=` (from 1) and `per_page=` (default 100).
fn list_request(q: &Query, default: SortKey) -> Result<ListRequest> {
    let sort = match q.one("sort", ErrorCode::Unsupported)? {
        None => default,
        Some(s) => SortKey::parse(s).ok_or_else(|| bad(format!("unknown sort key {s:?}")))?,
    };
    let descending = match q.one("order", ErrorCode::Unsupported)? {
        None => sort != SortKey::Name,
        Some("asc") => false,
        Some("desc") => true,
        Some(o) => return Err(bad(format!("order must be asc or desc, not {o:?}"))),
    };
    let page = q.number("page")?.unwrap_or(1);
    if page == 0 {
        return Err(bad("page counts from 1"));
    }
    let per_page = q.number("per_page")?.unwrap_or(100).clamp(1, MAX_PER_PAGE);
    Ok(ListRequest {
        sort,
        descending,
        page,
        per_page,
    })
}

/// A page as JSON, with `Link: <…>; rel="next"` when there is a next one.
fn paged<T: serde::Serialize>(page: Paged<T>, path: &str, q: &Query) -> Response {
    let more = page.page.saturating_mul(page.per_page) < page.total;
    let next = more.then(|| {
        let mut params: Vec<(String, String)> =
            q.0.iter().filter(|(k, _)| k != "page").cloned().collect();
        params.push(("page".into(), (page.page + 1).to_string()));
        let query = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(params)
            .finish();
        format!("<{path}?{query}>; rel=\"next\"")
    });
    let mut r = json_response(&page, "application/json");
    if let Some(v) = next.and_then(|n| HeaderValue::from_str(&n).ok()) {
        r.headers_mut().insert(header::LINK, v);
    }
    r
}
