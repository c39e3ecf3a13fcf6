//! Reading a request: query parameters (a known one given twice is refused), lengths and
//! ranges of upload bodies, the body as a stream, who sent it and how they addressed us.

use crate::error::{digest_error, ApiError};
use crate::metrics;
use crate::sendfile::ConnInfo;
use axum::body::Body;
use axum::extract::{ConnectInfo, Request};
use axum::http::{header, HeaderMap};
use berth_oci::range::parse_content_range;
use berth_oci::{Digest, ErrorCode};
use berth_registry::uploads::ChunkInfo;
use berth_registry::ByteStream;
use futures::{StreamExt, TryStreamExt};
use http_body_util::BodyExt;
use std::net::IpAddr;

type Result<T, E = ApiError> = std::result::Result<T, E>;

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
            return Err(ApiError::bad_request(
                code,
                format!("query parameter {key:?} given more than once"),
            ));
        }
        Ok(first)
    }

    pub(crate) fn number(&self, key: &str) -> Result<Option<u64>> {
        match self.one(key, ErrorCode::Unsupported)? {
            None => Ok(None),
            Some(v) => v.parse().map(Some).map_err(|_| {
                ApiError::bad_request(
                    ErrorCode::Unsupported,
                    format!("{key} must be a non-negative integer"),
                )
            }),
        }
    }
}

pub(crate) fn content_length(h: &HeaderMap) -> Result<Option<u64>> {
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

pub(crate) fn chunk_info(h: &HeaderMap) -> Result<ChunkInfo> {
    let range = match h.get(header::CONTENT_RANGE) {
        None => None,
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(parse_content_range)
                .ok_or_else(ApiError::bad_content_range)?,
        ),
    };
    Ok(ChunkInfo {
        range,
        length: content_length(h)?,
    })
}

/// Does this request carry a body (a non-zero length, or a chunked one)?
pub(crate) fn has_body(h: &HeaderMap) -> Result<bool> {
    Ok(match content_length(h)? {
        Some(n) => n > 0,
        None => h.contains_key(header::TRANSFER_ENCODING),
    })
}

/// The body's data as a stream that leaves the body to its owner (who may drain it after).
pub(crate) fn stream_of(body: &mut Body) -> ByteStream<'_> {
    futures::stream::unfold(body, |b| async move {
        loop {
            match b.frame().await? {
                Ok(frame) => {
                    if let Ok(data) = frame.into_data() {
                        metrics::received(data.len() as u64);
                        return Some((Ok(data), b));
                    }
                }
                Err(e) => return Some((Err(std::io::Error::other(e)), b)),
            }
        }
    })
    .boxed()
}

pub(crate) fn stream(body: Body) -> ByteStream<'static> {
    let s = TryStreamExt::map_err(body.into_data_stream(), std::io::Error::other);
    TryStreamExt::inspect_ok(s, |b| metrics::received(b.len() as u64)).boxed()
}

pub(crate) fn digest_param(q: &Query) -> Result<Option<Digest>> {
    q.one("digest", ErrorCode::DigestInvalid)?
        .map(|d| d.parse().map_err(digest_error))
        .transpose()
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

/// Reads and discards what is left of a refused body, up to a bound, so the client can read
/// the error instead of failing on a closed connection; past the bound the connection closes.
pub(crate) async fn drain(mut body: Body) {
    const DRAIN_LIMIT: usize = 64 << 20;
    let mut seen = 0;
    while let Some(Ok(frame)) = body.frame().await {
        seen += frame.data_ref().map(|d| d.len()).unwrap_or(0);
        if seen > DRAIN_LIMIT {
            break;
        }
    }
}
