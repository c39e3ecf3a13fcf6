//! Listing handlers: `end-8a`/`end-8b` (tags), the catalog, and `end-12a`/`end-12b`
//! (referrers). Pages carry a `Link` to the next one.

use super::Result;
use crate::headers::{hv, json_body, json_response, FILTERS_APPLIED};
use crate::request::Query;
use crate::state::Access;
use axum::http::{header, HeaderValue};
use axum::response::Response;
use berth_oci::{media, Digest, ErrorCode, RepoName};
use berth_registry::listing::Listing;
use berth_registry::Registry;

/// `end-8a`, `end-8b`: tags, whole or a page (`n`, `last`).
pub async fn list_tags(reg: &Registry, repo: &RepoName, q: &Query) -> Result {
    let (n, last) = (q.number("n")?, q.one("last", ErrorCode::Unsupported)?);
    let listing = reg.list_tags(repo, n, last).await?;
    Ok(page(&listing, &format!("/v2/{repo}/tags/list")))
}

/// The catalog: repositories the caller may pull, a page at a time.
pub async fn catalog(reg: &Registry, q: &Query, access: &Access<'_>) -> Result {
    let visible = |name: &str| access.auth.visible(access.caller, name);
    let (n, last) = (q.number("n")?, q.one("last", ErrorCode::Unsupported)?);
    let listing = reg.catalog(n, last, &visible).await?;
    Ok(page(&listing, "/v2/_catalog"))
}

/// A page's response, with `Link: <…?n=N&last=L>; rel="next"` when it was cut.
fn page(listing: &Listing, base: &str) -> Response {
    let mut r = json_body(listing.body.clone(), "application/json");
    if let (true, Some(last)) = (listing.more, &listing.last) {
        let last: String = form_urlencoded::byte_serialize(last.as_bytes()).collect();
        let link = format!("<{base}?n={}&last={last}>; rel=\"next\"", listing.n);
        r.headers_mut().insert(header::LINK, hv(link));
    }
    r
}

/// `end-12a`, `end-12b`: the referrers of `subject`, as an image index.
pub async fn referrers(reg: &Registry, repo: &RepoName, subject: &Digest, q: &Query) -> Result {
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
