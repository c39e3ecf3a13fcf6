//! Manifest handlers: `end-3` (GET and HEAD), `end-7` (PUT) and `end-9` (DELETE).

use super::Result;
use crate::headers::{empty, header_str, hv, DIGEST_HEADER, OCI_SUBJECT};
use crate::request::{drain, stream_of};
use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::Response;
use berth_oci::{Reference, RepoName};
use berth_registry::Registry;

/// `end-3`: the manifest a tag or digest names, as the client's `Accept` allows.
pub async fn get_manifest(
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

/// `end-7`: stores a manifest under a tag or its digest.
pub async fn put_manifest(reg: &Registry, repo: &RepoName, r: &Reference, req: Request) -> Result {
    let content_type = header_str(req.headers(), &header::CONTENT_TYPE).map(str::to_owned);
    let mut body = req.into_body();
    let read = reg.read_manifest(stream_of(&mut body)).await;
    if read.is_err() {
        // So the client reads the answer instead of a connection closed mid-send.
        drain(body).await;
    }
    let bytes = read?;
    let pushed = reg
        .put_manifest(repo, r, content_type.as_deref(), bytes)
        .await?;
    let mut resp = empty(StatusCode::CREATED);
    let hs = resp.headers_mut();
    let location = format!("/v2/{repo}/manifests/{}", pushed.digest);
    hs.insert(header::LOCATION, hv(location));
    hs.insert(DIGEST_HEADER.clone(), hv(pushed.digest.to_string()));
    if let Some(s) = pushed.subject {
        hs.insert(OCI_SUBJECT.clone(), hv(s.to_string()));
    }
    Ok(resp)
}

/// `end-9`: deletes a manifest (with its tags), or one tag.
pub async fn delete_manifest(reg: &Registry, repo: &RepoName, r: &Reference) -> Result {
    reg.delete_manifest(repo, r).await?;
    Ok(empty(StatusCode::ACCEPTED))
}
