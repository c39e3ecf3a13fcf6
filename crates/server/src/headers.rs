//! Response building blocks that every handler shares: the spec's header names, header
//! values from our own text, empty and JSON responses, and an upload session's headers. The
//! bottom of the server's modules: it uses none of them.

use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::Response;
use berth_oci::{Digest, RepoName, UploadId};

pub(crate) static DIGEST_HEADER: HeaderName = HeaderName::from_static("docker-content-digest");
pub(crate) static UPLOAD_UUID: HeaderName = HeaderName::from_static("docker-upload-uuid");
pub(crate) static OCI_SUBJECT: HeaderName = HeaderName::from_static("oci-subject");
pub(crate) static FILTERS_APPLIED: HeaderName = HeaderName::from_static("oci-filters-applied");

/// A header value from text we produced (digests, names, numbers): always valid, but no
/// panic if it ever were not.
pub(crate) fn hv(s: impl AsRef<str>) -> HeaderValue {
    HeaderValue::from_str(s.as_ref()).unwrap_or_else(|_| HeaderValue::from_static("invalid"))
}

pub(crate) fn empty(status: StatusCode) -> Response {
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

pub(crate) fn json_body(text: impl Into<Body>, content_type: &'static str) -> Response {
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

pub(crate) fn blob_created(repo: &RepoName, digest: &Digest) -> Response {
    let mut r = empty(StatusCode::CREATED);
    r.headers_mut()
        .insert(header::LOCATION, hv(format!("/v2/{repo}/blobs/{digest}")));
    r.headers_mut()
        .insert(DIGEST_HEADER.clone(), hv(digest.to_string()));
    r
}

pub(crate) fn header_str<'a>(h: &'a HeaderMap, name: &HeaderName) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
}
