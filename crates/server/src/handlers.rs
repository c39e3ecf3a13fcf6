//! Request handlers: each extracts its arguments, calls one `Registry` method and builds the
//! response headers. Logic belongs in the domain, not here.

use crate::auth::{self, Auth, Caller};
use crate::dispatch::{self, Route};
use crate::error::{digest_error, route_error, ApiError};
use crate::metrics::{self, InFlight, RouteLabel};
use crate::sendfile::{ConnInfo, FileSender};
use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Version};
use axum::response::{IntoResponse, Response};
use berth_oci::range::parse_content_range;
use berth_oci::{media, Digest, ErrorCode, Reference, RepoName, UploadId};
use berth_registry::access::Action;
use berth_registry::blobs::{Mount, Payload};
use berth_registry::uploads::ChunkInfo;
use berth_registry::{ByteStream, Registry};
use futures::{StreamExt, TryStreamExt};
use http_body_util::BodyExt;
use std::net::IpAddr;
use std::sync::Arc;

#[derive(Clone)]
pub struct AppState {
    pub registry: Registry,
    pub metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
    pub auth: Arc<Auth>,
    pub storage: Arc<metrics::StorageGauges>,
    pub uploads: Arc<UploadLimit>,
}

/// Who is asking, for the handlers whose answer depends on it (catalog, mounts, uploads).
pub struct Access<'a> {
    pub auth: &'a Auth,
    pub caller: &'a Caller,
    pub peer: IpAddr,
    pub uploads: &'a UploadLimit,
}

/// How many upload sessions one client address may open: a burst, then a steady rate. A
/// session costs a record and, once written to, a file; a client opening them in a loop
/// gets 429 with `Retry-After` instead of filling the disk with empty sessions.
pub struct UploadLimit {
    limiter: auth::limiter::Limiter,
    burst: u32,
}

impl UploadLimit {
    pub fn new(burst: u32, per_sec: f64) -> UploadLimit {
        UploadLimit {
            limiter: auth::limiter::Limiter::new(std::time::Duration::from_secs_f64(
                1.0 / per_sec.max(1e-6),
            )),
            burst: burst.max(1),
        }
    }

    /// Counts a session `peer` opens, or refuses it (429) when `peer` has opened its burst
    /// recently. Clients are told apart by address; IPv6 ones by their /64 network, which
    /// one client usually holds whole.
    fn open(&self, peer: IpAddr) -> Result<()> {
        let key = match peer.to_canonical() {
            IpAddr::V6(v6) => {
                let s = v6.segments();
                format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
            }
            v4 => v4.to_string(),
        };
        self.limiter.take(&key, self.burst).map_err(|wait| {
            ApiError::status(
                ErrorCode::TooManyRequests,
                429,
                "too many upload sessions opened: try again later",
            )
            .with_header(
                header::RETRY_AFTER,
                HeaderValue::from(wait.as_secs_f64().ceil().max(1.0) as u64),
            )
        })
    }
}

type Result<T = Response, E = ApiError> = std::result::Result<T, E>;

static DIGEST_HEADER: HeaderName = HeaderName::from_static("docker-content-digest");
static UPLOAD_UUID: HeaderName = HeaderName::from_static("docker-upload-uuid");
static OCI_SUBJECT: HeaderName = HeaderName::from_static("oci-subject");
static FILTERS_APPLIED: HeaderName = HeaderName::from_static("oci-filters-applied");

/// A header value from text we produced (digests, names, numbers): always valid, but no
/// panic if it ever were not.
fn hv(s: impl AsRef<str>) -> HeaderValue {
    HeaderValue::from_str(s.as_ref()).unwrap_or_else(|_| HeaderValue::from_static("invalid"))
}

fn empty(status: StatusCode) -> Response {
    let mut r = Response::new(Body::empty());
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
    r
}

pub(crate) fn json_response(value: &impl serde::Serialize, content_type: &'static str) -> Response {
    let text = serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec());
    json_body(text, content_type)
}

fn json_body(text: impl Into<Body>, content_type: &'static str) -> Response {
    let mut r = Response::new(text.into());
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

/// `Location`, `Range` and `Docker-Upload-UUID` of an upload session at `offset`.
pub fn upload_headers(h: &mut HeaderMap, repo: &RepoName, id: &UploadId, offset: u64) {
    h.insert(
        header::LOCATION,
        hv(format!("/v2/{repo}/blobs/uploads/{id}")),
    );
    // Inclusive end of what is held; Distribution writes 0-0 for an empty session.
    h.insert(header::RANGE, hv(format!("0-{}", offset.saturating_sub(1))));
    h.insert(UPLOAD_UUID.clone(), hv(id.as_str()));
}

fn blob_created(repo: &RepoName, digest: &Digest) -> Response {
    let mut r = empty(StatusCode::CREATED);
    r.headers_mut()
        .insert(header::LOCATION, hv(format!("/v2/{repo}/blobs/{digest}")));
    r.headers_mut()
        .insert(DIGEST_HEADER.clone(), hv(digest.to_string()));
    r
}

/// Query parameters; a known parameter given twice is ambiguous and refused.
pub(crate) struct Query(pub(crate) Vec<(String, String)>);

impl Query {
    pub(crate) fn of(req: &Request) -> Query {
        Query(
            form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes())
                .into_owned()
                .collect(),
        )
    }

    pub(crate) fn one(&self, key: &str, code: ErrorCode) -> Result<Option<&str>> {
        let mut it = self.0.iter().filter(|(k, _)| k == key);
        let first = it.next().map(|(_, v)| v.as_str());
        if it.next().is_some() {
            return Err(ApiError::status(
                code,
                400,
                format!("query parameter {key:?} given more than once"),
            ));
        }
        Ok(first)
    }

    pub(crate) fn number(&self, key: &str) -> Result<Option<u64>> {
        match self.one(key, ErrorCode::Unsupported)? {
            None => Ok(None),
            Some(v) => v.parse().map(Some).map_err(|_| {
                ApiError::status(
                    ErrorCode::Unsupported,
                    400,
                    format!("{key} must be a non-negative integer"),
                )
            }),
        }
    }
}

fn header_str<'a>(h: &'a HeaderMap, name: &HeaderName) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

fn content_length(h: &HeaderMap) -> Result<Option<u64>> {
    match h.get(header::CONTENT_LENGTH) {
        None => Ok(None),
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|s| s.parse().ok())
            .map(Some)
            .ok_or_else(|| ApiError::spec(ErrorCode::SizeInvalid, "invalid Content-Length")),
    }
}

fn chunk_info(h: &HeaderMap) -> Result<ChunkInfo> {
    let range = match h.get(header::CONTENT_RANGE) {
        None => None,
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(parse_content_range)
                .ok_or_else(|| {
                    ApiError::status(ErrorCode::BlobUploadInvalid, 416, "invalid Content-Range")
                })?,
        ),
    };
    Ok(ChunkInfo {
        range,
        length: content_length(h)?,
    })
}

/// Does this request carry a body (a non-zero length, or a chunked one)?
fn has_body(h: &HeaderMap) -> Result<bool> {
    Ok(match content_length(h)? {
        Some(n) => n > 0,
        None => h.contains_key(header::TRANSFER_ENCODING),
    })
}

fn stream(body: Body) -> ByteStream<'static> {
    let s = TryStreamExt::map_err(body.into_data_stream(), std::io::Error::other);
    TryStreamExt::inspect_ok(s, |b| metrics::received(b.len() as u64)).boxed()
}

fn digest_param(q: &Query) -> Result<Option<Digest>> {
    q.one("digest", ErrorCode::DigestInvalid)?
        .map(|d| d.parse().map_err(digest_error))
        .transpose()
}

/// The `/v2/…` entry point: parses the path, then calls the handler for route and method.
pub async fn v2(State(app): State<AppState>, req: Request) -> Response {
    let (label, result) = match dispatch::parse(req.uri().path()) {
        Err(e) => ("invalid", Err(route_error(e, req.method()))),
        Ok(route) => {
            let label = route.label();
            let admitted = if app.auth.is_on() {
                let (peer, base) = (peer(&req), base_url(&req));
                let need = auth::need(&route, req.method());
                admit(&app.auth, &need, req.headers(), peer, &base).await
            } else {
                Ok(Caller::anonymous())
            };
            match admitted {
                Ok(caller) => {
                    let access = Access {
                        auth: &app.auth,
                        caller: &caller,
                        peer: peer(&req),
                        uploads: &app.uploads,
                    };
                    (
                        label,
                        route_request(&app.registry, route, req, &access).await,
                    )
                }
                Err(e) => (label, Err(e)),
            }
        }
    };
    let mut response = result.unwrap_or_else(IntoResponse::into_response);
    response.extensions_mut().insert(RouteLabel(label));
    response
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

/// The client's address.
pub(crate) fn peer(req: &Request) -> IpAddr {
    req.extensions()
        .get::<ConnectInfo<ConnInfo>>()
        .map(|c| c.0.remote.ip())
        .unwrap_or(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST))
}

/// This server as the client addressed it (`http://host:port`), for the token realm.
pub(crate) fn base_url(req: &Request) -> String {
    let tls = req
        .extensions()
        .get::<ConnectInfo<ConnInfo>>()
        .is_some_and(|c| c.0.tls);
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| {
            !h.is_empty()
                && h.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b".-:[]_".contains(&b))
        })
        .or_else(|| req.uri().authority().map(|a| a.as_str()))
        .unwrap_or("localhost");
    format!("{}://{host}", if tls { "https" } else { "http" })
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
        (Route::Catalog, Method::GET) => catalog(reg, &q, access).await,
        // end-8a, end-8b
        (Route::Tags(repo), Method::GET) => list_tags(reg, &repo, &q).await,
        // end-3
        (Route::Manifest(repo, r), Method::GET | Method::HEAD) => {
            get_manifest(reg, &repo, &r, req.headers(), head).await
        }
        // end-7
        (Route::Manifest(repo, r), Method::PUT) => put_manifest(reg, &repo, &r, req).await,
        // end-9
        (Route::Manifest(repo, r), Method::DELETE) => {
            reg.delete_manifest(&repo, &r).await?;
            Ok(empty(StatusCode::ACCEPTED))
        }
        // end-2
        (Route::Blob(repo, d), Method::GET | Method::HEAD) => {
            // sendfile needs our own connection type and HTTP/1 (see `sendfile`).
            let sender = req
                .extensions()
                .get::<ConnectInfo<ConnInfo>>()
                .and_then(|c| c.0.files.clone())
                .filter(|_| matches!(req.version(), Version::HTTP_10 | Version::HTTP_11));
            get_blob(reg, &repo, &d, req.headers(), head, sender).await
        }
        // end-10
        (Route::Blob(repo, d), Method::DELETE) => {
            reg.delete_blob(&repo, &d).await?;
            let mut r = empty(StatusCode::ACCEPTED);
            r.headers_mut()
                .insert(DIGEST_HEADER.clone(), hv(d.to_string()));
            Ok(r)
        }
        // end-4a, end-4b, end-11
        (Route::UploadStart(repo), Method::POST) => start_upload(reg, &repo, &q, req, access).await,
        // end-5
        (Route::Upload(repo, id), Method::PATCH) => patch_upload(reg, &repo, &id, req).await,
        // end-6
        (Route::Upload(repo, id), Method::PUT) => finish_upload(reg, &repo, &id, &q, req).await,
        // end-13
        (Route::Upload(repo, id), Method::GET | Method::HEAD) => {
            let rec = reg.upload_status(&repo, &id).await?;
            let mut r = empty(StatusCode::NO_CONTENT);
            upload_headers(r.headers_mut(), &repo, &id, rec.offset);
            Ok(r)
        }
        // end-14
        (Route::Upload(repo, id), Method::DELETE) => {
            reg.cancel_upload(&repo, &id).await?;
            Ok(empty(StatusCode::NO_CONTENT))
        }
        // end-12a, end-12b
        (Route::Referrers(repo, d), Method::GET) => referrers(reg, &repo, &d, &q).await,
        (_, m) => Err(ApiError::spec(
            ErrorCode::Unsupported,
            format!("method {m} is not supported on this endpoint"),
        )),
    }
}

async fn get_blob(
    reg: &Registry,
    repo: &RepoName,
    d: &Digest,
    h: &HeaderMap,
    head: bool,
    sender: Option<FileSender>,
) -> Result {
    // RFC 9110 §14.2: range requests are defined for GET only; a HEAD describes the whole.
    let range_header = header_str(h, &header::RANGE).filter(|_| !head);
    let (size, range, body) = if head {
        let (size, range) = reg.blob_range(repo, d, range_header).await?;
        (size, range, Body::empty())
    } else {
        let b = reg
            .read_blob(repo, d, range_header, sender.is_some())
            .await?;
        let body = match (b.body, sender) {
            (Payload::File(f), Some(sender)) => {
                let (start, end) = b.range.unwrap_or((0, b.size.saturating_sub(1)));
                let len = if b.size == 0 { 0 } else { end - start + 1 };
                sender.body(f, start, len)
            }
            (Payload::Stream(s), _) => Body::from_stream(s),
            (Payload::File(_), None) => {
                return Err(berth_registry::Error::Internal(
                    "a file body with no way to send it".into(),
                )
                .into())
            }
        };
        (b.size, b.range, body)
    };
    let mut r = Response::new(body);
    let hs = r.headers_mut();
    hs.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    hs.insert(DIGEST_HEADER.clone(), hv(d.to_string()));
    hs.insert(header::ETAG, hv(format!("\"{d}\"")));
    hs.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    hs.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("max-age=31536000"),
    );
    match range {
        None => {
            hs.insert(header::CONTENT_LENGTH, hv(size.to_string()));
        }
        Some((start, end)) => {
            hs.insert(header::CONTENT_LENGTH, hv((end - start + 1).to_string()));
            hs.insert(
                header::CONTENT_RANGE,
                hv(format!("bytes {start}-{end}/{size}")),
            );
            *r.status_mut() = StatusCode::PARTIAL_CONTENT;
        }
    }
    Ok(r)
}

async fn get_manifest(
    reg: &Registry,
    repo: &RepoName,
    r: &Reference,
    h: &HeaderMap,
    head: bool,
) -> Result {
    let accept: Vec<&str> = h
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    let (record, body) = if head {
        (reg.manifest_record(repo, r, &accept).await?, Body::empty())
    } else {
        let m = reg.get_manifest(repo, r, &accept).await?;
        (m.record, Body::from(m.body))
    };
    let mut resp = Response::new(body);
    let hs = resp.headers_mut();
    hs.insert(header::CONTENT_TYPE, hv(&record.media_type));
    hs.insert(header::CONTENT_LENGTH, hv(record.size.to_string()));
    hs.insert(DIGEST_HEADER.clone(), hv(record.digest.to_string()));
    hs.insert(header::ETAG, hv(format!("\"{}\"", record.digest)));
    Ok(resp)
}

async fn put_manifest(reg: &Registry, repo: &RepoName, r: &Reference, req: Request) -> Result {
    let max = reg.options().max_manifest_bytes;
    let content_type = header_str(req.headers(), &header::CONTENT_TYPE).map(str::to_owned);
    let mut body = req.into_body();
    let bytes = match http_body_util::Limited::new(&mut body, max).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            drain(body).await;
            return Err(ApiError::status(
                ErrorCode::SizeInvalid,
                413,
                format!("manifest exceeds the limit of {max} bytes"),
            ));
        }
        Err(e) => {
            return Err(ApiError::spec(
                ErrorCode::ManifestInvalid,
                format!("reading the manifest failed: {e}"),
            ))
        }
    };
    metrics::received(bytes.len() as u64);
    let pushed = reg
        .put_manifest(repo, r, content_type.as_deref(), bytes)
        .await?;
    let mut resp = empty(StatusCode::CREATED);
    let hs = resp.headers_mut();
    hs.insert(
        header::LOCATION,
        hv(format!("/v2/{repo}/manifests/{}", pushed.digest)),
    );
    hs.insert(DIGEST_HEADER.clone(), hv(pushed.digest.to_string()));
    if let Some(s) = pushed.subject {
        hs.insert(OCI_SUBJECT.clone(), hv(s.to_string()));
    }
    Ok(resp)
}

async fn start_upload(
    reg: &Registry,
    repo: &RepoName,
    q: &Query,
    req: Request,
    access: &Access<'_>,
) -> Result {
    if let Some(mount) = q.one("mount", ErrorCode::DigestInvalid)? {
        let digest: Digest = mount.parse().map_err(digest_error)?;
        let from = q
            .one("from", ErrorCode::NameInvalid)?
            .map(|f| {
                f.parse::<RepoName>()
                    .map_err(|e| ApiError::spec(ErrorCode::NameInvalid, e.to_string()))
            })
            .transpose()?
            // A source the caller may not pull from is no source: a plain upload follows.
            .filter(|f| {
                access
                    .auth
                    .allowed(access.caller, f.as_str())
                    .has(Action::Pull)
            });
        return match reg.mount_blob(repo, &digest, from.as_ref()).await? {
            Mount::Mounted { .. } => Ok(blob_created(repo, &digest)),
            Mount::Upload(rec) => {
                // Only a mount that falls back to a session counts (and may be refused;
                // the session it made then expires unused).
                access.uploads.open(access.peer)?;
                let mut r = empty(StatusCode::ACCEPTED);
                upload_headers(r.headers_mut(), repo, &rec.id, 0);
                Ok(r)
            }
        };
    }
    if let Some(digest) = digest_param(q)? {
        let _in_flight = InFlight::start();
        let chunk = ChunkInfo {
            range: None,
            length: content_length(req.headers())?,
        };
        reg.monolithic_upload(repo, &digest, chunk, stream(req.into_body()))
            .await?;
        return Ok(blob_created(repo, &digest));
    }
    access.uploads.open(access.peer)?;
    let rec = reg.start_upload(repo).await?;
    let mut r = empty(StatusCode::ACCEPTED);
    upload_headers(r.headers_mut(), repo, &rec.id, 0);
    Ok(r)
}

async fn patch_upload(reg: &Registry, repo: &RepoName, id: &UploadId, req: Request) -> Result {
    let _in_flight = InFlight::start();
    let chunk = chunk_info(req.headers())?;
    let rec = reg
        .patch_upload(repo, id, chunk, stream(req.into_body()))
        .await?;
    let mut r = empty(StatusCode::ACCEPTED);
    upload_headers(r.headers_mut(), repo, id, rec.offset);
    Ok(r)
}

async fn finish_upload(
    reg: &Registry,
    repo: &RepoName,
    id: &UploadId,
    q: &Query,
    req: Request,
) -> Result {
    let _in_flight = InFlight::start();
    let digest = digest_param(q)?.ok_or_else(|| {
        ApiError::spec(ErrorCode::DigestInvalid, "the digest parameter is required")
    })?;
    let chunk = chunk_info(req.headers())?;
    let body = has_body(req.headers())?.then(|| stream(req.into_body()));
    reg.finish_upload(repo, id, &digest, chunk, body).await?;
    Ok(blob_created(repo, &digest))
}

/// Reads and discards what is left of a refused body, up to a bound, so the client can read
/// the error instead of failing on a closed connection; past the bound the connection closes.
async fn drain(mut body: Body) {
    const DRAIN_LIMIT: usize = 64 << 20;
    let mut seen = 0;
    while let Some(Ok(frame)) = body.frame().await {
        seen += frame.data_ref().map(|d| d.len()).unwrap_or(0);
        if seen > DRAIN_LIMIT {
            break;
        }
    }
}

/// `Link: <…?n=N&last=L>; rel="next"` when a page was cut.
fn next_link(r: &mut Response, base: &str, listing: &berth_registry::listing::Listing) {
    if let (true, Some(last)) = (listing.more, &listing.last) {
        let last: String = form_urlencoded::byte_serialize(last.as_bytes()).collect();
        r.headers_mut().insert(
            header::LINK,
            hv(format!(
                "<{base}?n={}&last={last}>; rel=\"next\"",
                listing.n
            )),
        );
    }
}

async fn list_tags(reg: &Registry, repo: &RepoName, q: &Query) -> Result {
    let (n, last) = (q.number("n")?, q.one("last", ErrorCode::Unsupported)?);
    let listing = reg.list_tags(repo, n, last).await?;
    let mut r = json_body(listing.body.clone(), "application/json");
    next_link(&mut r, &format!("/v2/{repo}/tags/list"), &listing);
    Ok(r)
}

async fn catalog(reg: &Registry, q: &Query, access: &Access<'_>) -> Result {
    let visible = |name: &str| access.auth.visible(access.caller, name);
    let listing = reg
        .catalog(
            q.number("n")?,
            q.one("last", ErrorCode::Unsupported)?,
            &visible,
        )
        .await?;
    let mut r = json_body(listing.body.clone(), "application/json");
    next_link(&mut r, "/v2/_catalog", &listing);
    Ok(r)
}

async fn referrers(reg: &Registry, repo: &RepoName, subject: &Digest, q: &Query) -> Result {
    let artifact_type = q.one("artifactType", ErrorCode::Unsupported)?;
    let manifests = reg.referrers(repo, subject, artifact_type).await?;
    let index = serde_json::json!({ "schemaVersion": 2, "mediaType": media::OCI_INDEX, "manifests": manifests });
    let mut r = json_response(&index, media::OCI_INDEX);
    if artifact_type.is_some() {
        r.headers_mut().insert(
            FILTERS_APPLIED.clone(),
            HeaderValue::from_static("artifactType"),
        );
    }
    Ok(r)
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
