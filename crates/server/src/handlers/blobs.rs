//! Blob handlers: `end-2` (GET and HEAD, with a single `Range` on GET) and `end-10` (DELETE).

use super::Result;
use crate::headers::{empty, header_str, hv, DIGEST_HEADER};
use crate::sendfile::FileSender;
use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use berth_oci::{Digest, RepoName};
use berth_registry::blobs::{BlobRead, ReadAs};
use berth_registry::{Error, Registry};

/// `end-2`: a blob, whole or the range asked for; sent with sendfile where `sender` can.
pub async fn get_blob(
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
        let read_as = ReadAs {
            file: sender.is_some(),
            redirect: true,
        };
        let b = reg.read_blob(repo, d, range_header, read_as).await?;
        if let BlobRead::Redirect(url) = b.body {
            return Ok(redirect(d, &url));
        }
        (b.size, b.range, body(b.body, sender, b.size, b.range)?)
    };
    let mut r = Response::new(body);
    blob_headers(r.headers_mut(), d, size);
    if let Some(range) = range {
        partial(&mut r, range, size);
    }
    Ok(r)
}

/// A 307 to where the blob's bytes are served (the client sends its `Range` there).
fn redirect(d: &Digest, url: &str) -> Response {
    let mut r = empty(StatusCode::TEMPORARY_REDIRECT);
    let hs = r.headers_mut();
    hs.insert(header::LOCATION, hv(url));
    hs.insert(DIGEST_HEADER.clone(), hv(d.to_string()));
    r
}

/// A 206 of the inclusive `start..=end` of a blob of `size` bytes.
fn partial(r: &mut Response, (start, end): (u64, u64), size: u64) {
    let hs = r.headers_mut();
    hs.insert(header::CONTENT_LENGTH, hv((end - start + 1).to_string()));
    hs.insert(
        header::CONTENT_RANGE,
        hv(format!("bytes {start}-{end}/{size}")),
    );
    *r.status_mut() = StatusCode::PARTIAL_CONTENT;
}

/// The response body of a blob read: a stream, or a file the connection sends itself.
fn body(
    payload: BlobRead,
    sender: Option<FileSender>,
    size: u64,
    range: Option<(u64, u64)>,
) -> Result<Body> {
    match (payload, sender) {
        (BlobRead::File(f), Some(sender)) => {
            let (start, end) = range.unwrap_or((0, size.saturating_sub(1)));
            let len = if size == 0 { 0 } else { end - start + 1 };
            Ok(sender.body(f.into_std(), start, len))
        }
        (BlobRead::Stream(s), _) => Ok(Body::from_stream(s)),
        (BlobRead::File(_), None) | (BlobRead::Redirect(_), _) => {
            Err(Error::Internal("a file or a URL where a body was asked for".into()).into())
        }
    }
}

/// The headers of every blob response: content addressed, so cacheable for good.
fn blob_headers(hs: &mut HeaderMap, d: &Digest, size: u64) {
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
    hs.insert(header::CONTENT_LENGTH, hv(size.to_string()));
}

/// `end-10`: unlinks the blob from the repository; its bytes go with a collection.
pub async fn delete_blob(reg: &Registry, repo: &RepoName, d: &Digest) -> Result {
    reg.delete_blob(repo, d).await?;
    let mut r = empty(StatusCode::ACCEPTED);
    r.headers_mut()
        .insert(DIGEST_HEADER.clone(), hv(d.to_string()));
    Ok(r)
}
