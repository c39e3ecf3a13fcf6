//! The HTTP handlers. [`v2`] parses a `/v2/` path, admits the caller and calls the handler
//! of the route and method; each handler (by resource: [`blobs`], [`uploads`],
//! [`manifests`], [`listings`]) extracts its arguments, calls one `Registry` method and
//! builds the response headers. Logic belongs in the domain, policy with `auth`.

mod blobs;
mod listings;
mod manifests;
mod uploads;

use crate::auth::{self, Auth, Caller};
use crate::dispatch::{self, Route};
use crate::error::{route_error, ApiError};
use crate::headers::json_response;
use crate::metrics::RouteLabel;
use crate::request::{base_url, peer, Query};
use crate::sendfile::ConnInfo;
use crate::state::{Access, AppState};
use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, Version};
use axum::response::{IntoResponse, Response};
use berth_oci::ErrorCode;
use berth_registry::Registry;
use std::net::IpAddr;

type Result<T = Response, E = ApiError> = std::result::Result<T, E>;

/// The `/v2/…` entry point: parses the path, then calls the handler for route and method.
pub async fn v2(State(app): State<AppState>, req: Request) -> Response {
    let (label, result) = match dispatch::parse(req.uri().path()) {
        Err(e) => ("invalid", Err(route_error(e, req.method()))),
        Ok(route) => (route.label(), admit_and_route(&app, route, req).await),
    };
    let mut response = result.unwrap_or_else(IntoResponse::into_response);
    response.extensions_mut().insert(RouteLabel(label));
    response
}

/// Admits the caller (when authentication is on), then routes the request.
async fn admit_and_route(app: &AppState, route: Route, req: Request) -> Result {
    let caller = if app.auth.is_on() {
        let (peer, base) = (peer(&req), base_url(&req));
        let need = auth::need(&route, req.method());
        admit(&app.auth, &need, req.headers(), peer, &base).await?
    } else {
        Caller::anonymous()
    };
    let access = Access {
        auth: &app.auth,
        caller: &caller,
        peer: peer(&req),
        uploads: &app.uploads,
    };
    route_request(&app.registry, route, req, &access).await
}

/// The caller who sent `headers`, if they may do what the request needs. (Parts of the
/// request, not the request: its body is not `Sync`, and this awaits.)
async fn admit(
    auth: &Auth,
    need: &auth::Need,
    headers: &HeaderMap,
    peer: IpAddr,
    base: &str,
) -> Result<Caller> {
    let caller = auth
        .caller(headers, peer)
        .await
        .map_err(|e| auth.challenge(e, base))?;
    auth.check(&caller, need, base)?;
    Ok(caller)
}

async fn route_request(reg: &Registry, route: Route, req: Request, access: &Access<'_>) -> Result {
    let method = req.method().clone();
    let head = method == Method::HEAD;
    // Borrows of the request must not live across awaits (its body is not Sync).
    let q = Query::of(&req);
    match (route, method) {
        // end-1
        (Route::Base, Method::GET | Method::HEAD) => {
            Ok(json_response(&serde_json::json!({}), "application/json"))
        }
        (Route::Catalog, Method::GET) => listings::catalog(reg, &q, access).await,
        // end-8a, end-8b
        (Route::Tags(repo), Method::GET) => listings::list_tags(reg, &repo, &q).await,
        // end-3
        (Route::Manifest(repo, r), Method::GET | Method::HEAD) => {
            manifests::get_manifest(reg, &repo, &r, req.headers(), head).await
        }
        // end-7
        (Route::Manifest(repo, r), Method::PUT) => {
            manifests::put_manifest(reg, &repo, &r, req).await
        }
        // end-9
        (Route::Manifest(repo, r), Method::DELETE) => {
            manifests::delete_manifest(reg, &repo, &r).await
        }
        // end-2
        (Route::Blob(repo, d), Method::GET | Method::HEAD) => {
            // sendfile needs our own connection type and HTTP/1 (see `sendfile`).
            let sender = req
                .extensions()
                .get::<ConnectInfo<ConnInfo>>()
                .and_then(|c| c.0.files.clone())
                .filter(|_| matches!(req.version(), Version::HTTP_10 | Version::HTTP_11));
            blobs::get_blob(reg, &repo, &d, req.headers(), head, sender).await
        }
        // end-10
        (Route::Blob(repo, d), Method::DELETE) => blobs::delete_blob(reg, &repo, &d).await,
        // end-4a, end-4b, end-11
        (Route::UploadStart(repo), Method::POST) => {
            uploads::start_upload(reg, &repo, &q, req, access).await
        }
        // end-5
        (Route::Upload(repo, id), Method::PATCH) => {
            uploads::patch_upload(reg, &repo, &id, req).await
        }
        // end-6
        (Route::Upload(repo, id), Method::PUT) => {
            uploads::finish_upload(reg, &repo, &id, &q, req).await
        }
        // end-13
        (Route::Upload(repo, id), Method::GET | Method::HEAD) => {
            uploads::upload_status(reg, &repo, &id).await
        }
        // end-14
        (Route::Upload(repo, id), Method::DELETE) => uploads::cancel_upload(reg, &repo, &id).await,
        // end-12a, end-12b
        (Route::Referrers(repo, d), Method::GET) => listings::referrers(reg, &repo, &d, &q).await,
        (_, m) => Err(ApiError::spec(
            ErrorCode::Unsupported,
            format!("method {m} is not supported on this endpoint"),
        )),
    }
}

/// `GET /token`, `POST /token`: the token endpoint of the Docker token flow.
pub async fn token(State(app): State<AppState>, req: Request) -> Response {
    let (method, headers) = (req.method().clone(), req.headers().clone());
    let query = req.uri().query().unwrap_or("").to_owned();
    let peer = peer(&req);
    let form = if method == Method::POST {
        // An OAuth2 form is a few hundred bytes; anything far larger is not one.
        match axum::body::to_bytes(req.into_body(), 64 << 10).await {
            Ok(b) => String::from_utf8_lossy(&b).into_owned(),
            Err(_) => {
                return ApiError::spec(ErrorCode::SizeInvalid, "token request body too large")
                    .into_response()
            }
        }
    } else {
        String::new()
    };
    match app
        .auth
        .token_endpoint(&method, &headers, &query, &form, peer)
        .await
    {
        Ok(body) => json_response(&body, "application/json"),
        Err(e) => e.into_response(),
    }
}

/// `GET /metrics`: Prometheus text format.
pub async fn metrics_page(State(app): State<AppState>) -> Response {
    let mut text = app.metrics.as_ref().map(|h| h.render()).unwrap_or_default();
    text.push_str(&app.storage.render(&app.registry).await);
    let mut r = Response::new(Body::from(text));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    r.extensions_mut().insert(RouteLabel("metrics"));
    r
}
