//! Upload handlers: `end-4a`/`end-4b` (POST: a session, or a whole blob), `end-11` (a
//! cross-repository mount), `end-5` (PATCH), `end-6` (PUT), `end-13` (status) and `end-14`
//! (cancel).

use super::Result;
use crate::error::{digest_error, ApiError};
use crate::headers::{blob_created, empty, upload_headers};
use crate::metrics::InFlight;
use crate::request::{chunk_info, content_length, digest_param, has_body, stream, Query};
use crate::state::Access;
use axum::extract::Request;
use axum::http::StatusCode;
use axum::response::Response;
use berth_oci::{Digest, ErrorCode, RepoName, UploadId};
use berth_registry::blobs::Mount;
use berth_registry::uploads::ChunkInfo;
use berth_registry::Registry;

/// `end-4a`, `end-4b`, `end-11`: a mount when asked for, a whole blob when its digest is
/// given, else a new session.
pub async fn start_upload(
    reg: &Registry,
    repo: &RepoName,
    q: &Query,
    req: Request,
    access: &Access<'_>,
) -> Result {
    if let Some(mount) = q.one("mount", ErrorCode::DigestInvalid)? {
        let digest: Digest = mount.parse().map_err(digest_error)?;
        return mount_blob(reg, repo, &digest, q, access).await;
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
    Ok(session(repo, &rec.id, 0))
}

/// `end-11`: mounts `digest` from `?from=` when the caller may pull it from there, else
/// opens a session (which counts against the client's session limit).
async fn mount_blob(
    reg: &Registry,
    repo: &RepoName,
    digest: &Digest,
    q: &Query,
    access: &Access<'_>,
) -> Result {
    let from = q
        .one("from", ErrorCode::NameInvalid)?
        .map(|f| f.parse::<RepoName>())
        .transpose()
        .map_err(|e| ApiError::spec(ErrorCode::NameInvalid, e.to_string()))?;
    let from = access.auth.mount_source(access.caller, from);
    match reg.mount_blob(repo, digest, from.as_ref()).await? {
        Mount::Mounted { .. } => Ok(blob_created(repo, digest)),
        Mount::Upload(rec) => {
            access.uploads.open(access.peer)?;
            Ok(session(repo, &rec.id, 0))
        }
    }
}

/// `end-5`: a chunk appended at the session's offset.
pub async fn patch_upload(reg: &Registry, repo: &RepoName, id: &UploadId, req: Request) -> Result {
    let _in_flight = InFlight::start();
    let chunk = chunk_info(req.headers())?;
    let rec = reg
        .patch_upload(repo, id, chunk, stream(req.into_body()))
        .await?;
    Ok(session(repo, id, rec.offset))
}

/// `end-6`: the session finished, with a last chunk or none, as the blob `?digest=` names.
pub async fn finish_upload(
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

/// `end-13`: where the session stands.
pub async fn upload_status(reg: &Registry, repo: &RepoName, id: &UploadId) -> Result {
    let rec = reg.upload_status(repo, id).await?;
    let mut r = session(repo, id, rec.offset);
    *r.status_mut() = StatusCode::NO_CONTENT;
    Ok(r)
}

/// `end-14`: the session cancelled, its bytes freed.
pub async fn cancel_upload(reg: &Registry, repo: &RepoName, id: &UploadId) -> Result {
    reg.cancel_upload(repo, id).await?;
    Ok(empty(StatusCode::NO_CONTENT))
}

/// 202 with the session's headers.
fn session(repo: &RepoName, id: &UploadId, offset: u64) -> Response {
    let mut r = empty(StatusCode::ACCEPTED);
    upload_headers(r.headers_mut(), repo, id, offset);
    r
}
