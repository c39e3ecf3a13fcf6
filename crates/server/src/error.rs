//! The one place where errors become HTTP responses: the spec's JSON error body
//! (`{"errors":[{"code","message","detail"}]}`), the status, and the headers some errors
//! carry. Internal failures are logged in full and answered without their details.

use crate::dispatch::RouteError;
use axum::http::{header, HeaderName, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use berth_oci::{DigestError, ErrorCode};
use berth_registry::Error;

/// An error on its way to the client, with the headers it needs (a challenge on 401,
/// `Retry-After` on 429).
#[derive(Debug)]
pub struct ApiError {
    pub error: Failure,
    /// Few and rare: a list, not a `HeaderMap`, keeps every `Result` small.
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

/// What failed: the domain, or the HTTP front itself (a request it cannot read, a caller
/// it does not admit).
#[derive(Debug)]
pub enum Failure {
    Domain(Error),
    Spec {
        code: ErrorCode,
        status: u16,
        message: String,
    },
}

impl From<Error> for ApiError {
    fn from(error: Error) -> Self {
        ApiError {
            error: Failure::Domain(error),
            headers: Vec::new(),
        }
    }
}

impl ApiError {
    pub fn spec(code: ErrorCode, message: impl Into<String>) -> ApiError {
        ApiError::status(code, code.status(), message)
    }

    /// A request whose parameters are wrong (400), with the spec code that says which.
    pub fn bad_request(code: ErrorCode, message: impl Into<String>) -> ApiError {
        ApiError::status(code, 400, message)
    }

    /// A path that is no endpoint of ours (outside `/v2/`, where `NAME_UNKNOWN` says so).
    pub fn no_endpoint(message: impl Into<String>) -> ApiError {
        ApiError::status(ErrorCode::Unsupported, 404, message)
    }

    /// A `Content-Range` that cannot be parsed (416, as for one out of order).
    pub fn bad_content_range() -> ApiError {
        ApiError::status(ErrorCode::BlobUploadInvalid, 416, "invalid Content-Range")
    }

    fn status(code: ErrorCode, status: u16, message: impl Into<String>) -> ApiError {
        ApiError {
            error: Failure::Spec {
                code,
                status,
                message: message.into(),
            },
            headers: Vec::new(),
        }
    }

    /// Whether this is the spec error `code`.
    pub fn is(&self, code: ErrorCode) -> bool {
        match &self.error {
            Failure::Domain(e) => e.code() == Some(code),
            Failure::Spec { code: c, .. } => *c == code,
        }
    }

    pub fn with_header(mut self, name: HeaderName, value: HeaderValue) -> ApiError {
        self.headers.retain(|(n, _)| n != name);
        self.headers.push((name, value));
        self
    }
}

/// The answer to a path that is not a route. A manifest reference that is neither a tag nor
/// a digest names nothing: reading or deleting it finds no manifest (404, as the spec's
/// conformance suite requires for `.INVALID_MANIFEST_NAME`), while a PUT asks for a name no
/// tag may have (400).
pub fn route_error(e: RouteError, method: &Method) -> ApiError {
    match e {
        RouteError::NotFound => ApiError::status(ErrorCode::NameUnknown, 404, "no such endpoint"),
        RouteError::Name(e) => ApiError::spec(ErrorCode::NameInvalid, e.to_string()),
        RouteError::Digest(e) => digest_error(e),
        RouteError::Reference(e) if method != Method::PUT => ApiError::status(
            ErrorCode::ManifestUnknown,
            404,
            format!("no manifest has this reference: {e}"),
        ),
        RouteError::Reference(berth_oci::NameError::Digest(e)) => digest_error(e),
        RouteError::Reference(e) => ApiError::spec(ErrorCode::ManifestInvalid, e.to_string()),
        RouteError::Upload => Error::UploadUnknown.into(),
    }
}

/// The answer to a connection over the cap: come back in a second.
pub fn too_busy() -> Response {
    ApiError::status(
        ErrorCode::TooManyRequests,
        503,
        "too many connections: try again shortly",
    )
    .with_header(header::RETRY_AFTER, HeaderValue::from_static("1"))
    .into_response()
}

/// The answer to a request whose `Host` header is missing, repeated or invalid (RFC 9112
/// §3.2); the connection closes after it, since the request's framing cannot be trusted.
pub fn bad_host() -> Response {
    ApiError::status(
        ErrorCode::Unsupported,
        400,
        "a request needs exactly one valid Host header",
    )
    .with_header(header::CONNECTION, HeaderValue::from_static("close"))
    .into_response()
}

pub fn digest_error(e: DigestError) -> ApiError {
    ApiError::spec(ErrorCode::DigestInvalid, e.to_string())
}

fn body(code: ErrorCode, message: &str, detail: Option<serde_json::Value>) -> String {
    let mut err = serde_json::json!({ "code": code.as_str(), "message": message });
    if let Some(d) = detail {
        err["detail"] = d;
    }
    serde_json::json!({ "errors": [err] }).to_string()
}

fn json(status: u16, text: String) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        text,
    )
        .into_response()
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = response(self.error);
        for (name, value) in self.headers {
            r.headers_mut().insert(name, value);
        }
        r
    }
}

fn response(error: Failure) -> Response {
    match error {
        Failure::Spec {
            code,
            status,
            message,
        } => json(status, body(code, &message, None)),
        Failure::Domain(e) => domain_response(e),
    }
}

/// The status each domain error answers with, and the headers some carry.
fn domain_response(e: Error) -> Response {
    let status = match &e {
        Error::Internal(msg) => {
            tracing::error!(error = %msg, "internal error");
            return json(
                500,
                r#"{"errors":[{"code":"UNKNOWN","message":"internal server error"}]}"#.to_owned(),
            );
        }
        Error::Unavailable(msg) => {
            tracing::warn!(error = %msg, "backend unavailable");
            let mut r = json(
                503,
                r#"{"errors":[{"code":"UNAVAILABLE","message":"storage unavailable, retry later"}]}"#
                    .to_owned(),
            );
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            return r;
        }
        Error::UploadBusy | Error::ChunkOutOfOrder { .. } | Error::RangeNotSatisfiable { .. } => {
            416
        }
        Error::ManifestTooLarge { .. } => 413,
        Error::Unsupported(_) => 400,
        other => other.code().map_or(500, ErrorCode::status),
    };
    let code = e.code().unwrap_or(ErrorCode::Unsupported);
    let mut r = json(status, body(code, &e.to_string(), e.detail()));
    match e {
        Error::ChunkOutOfOrder { repo, id, offset } => {
            crate::headers::upload_headers(r.headers_mut(), &repo, &id, offset);
        }
        Error::RangeNotSatisfiable { size } => {
            if let Ok(v) = HeaderValue::from_str(&format!("bytes */{size}")) {
                r.headers_mut().insert(header::CONTENT_RANGE, v);
            }
        }
        _ => {}
    }
    r
}
