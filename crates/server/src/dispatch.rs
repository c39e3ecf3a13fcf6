//! The `/v2/` path dispatcher. Repository names contain `/`, which a router cannot express,
//! so the path is parsed from the right: the last segments say which endpoint it is, and
//! everything before them is the name. The raw (still percent-encoded) path is parsed, so
//! `%2e%2e` and friends reach the name grammar as the literal text they are, and fail it.

use berth_oci::{Digest, DigestError, NameError, Reference, RepoName, UploadId};

/// An endpoint of the spec, with its arguments parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `end-1`: `/v2/`.
    Base,
    /// `/v2/_catalog`.
    Catalog,
    /// `end-8a`/`end-8b`: `/v2/<name>/tags/list`.
    Tags(RepoName),
    /// `end-3`, `end-7`, `end-9`: `/v2/<name>/manifests/<reference>`.
    Manifest(RepoName, Reference),
    /// `end-2`, `end-10`: `/v2/<name>/blobs/<digest>`.
    Blob(RepoName, Digest),
    /// `end-4a`, `end-4b`, `end-11`: `/v2/<name>/blobs/uploads/`.
    UploadStart(RepoName),
    /// `end-5`, `end-6`, `end-13`, `end-14`: `/v2/<name>/blobs/uploads/<id>`.
    Upload(RepoName, UploadId),
    /// `end-12a`/`end-12b`: `/v2/<name>/referrers/<digest>`.
    Referrers(RepoName, Digest),
}

/// Why a path under `/v2/` is not a route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteError {
    /// No endpoint has this shape.
    NotFound,
    Name(NameError),
    Digest(DigestError),
    /// The manifest reference is neither a tag nor a digest.
    Reference(NameError),
    /// The upload id cannot be one we issued.
    Upload,
}

/// Parses a request path (with or without the query) into a route.
pub fn parse(path: &str) -> Result<Route, RouteError> {
    let path = path.split('?').next().unwrap_or("");
    let rest = match path.strip_prefix("/v2") {
        Some("") | Some("/") => return Ok(Route::Base),
        Some(r) => r.strip_prefix('/').ok_or(RouteError::NotFound)?,
        None => return Err(RouteError::NotFound),
    };
    if rest == "_catalog" {
        return Ok(Route::Catalog);
    }
    let segs: Vec<&str> = rest.split('/').collect();
    let n = segs.len();
    let name = |k: usize| -> Result<RepoName, RouteError> {
        if n <= k {
            return Err(RouteError::NotFound);
        }
        segs[..n - k].join("/").parse().map_err(RouteError::Name)
    };
    let tail = |k: usize| &segs[n.saturating_sub(k)..];
    let digest = |s: &str| s.parse::<Digest>().map_err(RouteError::Digest);
    match (tail(3), tail(2)) {
        (["blobs", "uploads", ""], _) => Ok(Route::UploadStart(name(3)?)),
        (_, ["blobs", "uploads"]) => Ok(Route::UploadStart(name(2)?)),
        (["blobs", "uploads", id], _) => {
            let name = name(3)?;
            Ok(Route::Upload(
                name,
                id.parse().map_err(|_| RouteError::Upload)?,
            ))
        }
        (_, ["blobs", d]) => Ok(Route::Blob(name(2)?, digest(d)?)),
        (_, ["manifests", r]) => {
            let name = name(2)?;
            Ok(Route::Manifest(
                name,
                r.parse().map_err(RouteError::Reference)?,
            ))
        }
        (_, ["tags", "list"]) => Ok(Route::Tags(name(2)?)),
        (_, ["referrers", d]) => Ok(Route::Referrers(name(2)?, digest(d)?)),
        _ => Err(malformed_tail(&segs).unwrap_or(RouteError::NotFound)),
    }
}

/// Why a path that fits no endpoint is still a request for a blob, manifest or referrers
/// list of a valid repository: the digest or reference after `blobs/`, `manifests/` or
/// `referrers/` holds a `/` (`sha256:../../etc/passwd`), so its tail was taken for the
/// endpoint. The rightmost such keyword after a valid name wins, as the dispatcher reads
/// from the right; `blobs/uploads/…` stays an upload path.
fn malformed_tail(segs: &[&str]) -> Option<RouteError> {
    (1..segs.len().saturating_sub(1)).rev().find_map(|j| {
        let kind = segs[j];
        let upload = kind == "blobs" && segs[j + 1] == "uploads";
        if upload || !matches!(kind, "blobs" | "manifests" | "referrers") {
            return None;
        }
        segs[..j].join("/").parse::<RepoName>().ok()?;
        let rest = segs[j + 1..].join("/");
        Some(match kind {
            "manifests" => RouteError::Reference(rest.parse::<Reference>().err()?),
            _ => RouteError::Digest(rest.parse::<Digest>().err()?),
        })
    })
}

impl Route {
    /// A low-cardinality label for metrics and logs.
    pub fn label(&self) -> &'static str {
        match self {
            Route::Base => "base",
            Route::Catalog => "catalog",
            Route::Tags(_) => "tags",
            Route::Manifest(..) => "manifest",
            Route::Blob(..) => "blob",
            Route::UploadStart(_) => "upload_start",
            Route::Upload(..) => "upload",
            Route::Referrers(..) => "referrers",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const D: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    fn name(s: &str) -> RepoName {
        s.parse().unwrap()
    }

    #[test]
    fn routes() {
        assert_eq!(parse("/v2/"), Ok(Route::Base));
        assert_eq!(parse("/v2"), Ok(Route::Base));
        assert_eq!(parse("/v2/_catalog?n=1"), Ok(Route::Catalog));
        assert_eq!(parse("/v2/a/b/tags/list"), Ok(Route::Tags(name("a/b"))));
        assert_eq!(
            parse("/v2/a/manifests/latest"),
            Ok(Route::Manifest(name("a"), "latest".parse().unwrap()))
        );
        assert_eq!(
            parse(&format!("/v2/a/blobs/{D}")),
            Ok(Route::Blob(name("a"), D.parse().unwrap()))
        );
        assert_eq!(
            parse("/v2/a/b/c/blobs/uploads/"),
            Ok(Route::UploadStart(name("a/b/c")))
        );
        assert_eq!(
            parse("/v2/a/blobs/uploads"),
            Ok(Route::UploadStart(name("a")))
        );
        assert_eq!(
            parse("/v2/a/blobs/uploads/abc-123"),
            Ok(Route::Upload(name("a"), "abc-123".parse().unwrap()))
        );
        assert_eq!(
            parse(&format!("/v2/a/referrers/{D}")),
            Ok(Route::Referrers(name("a"), D.parse().unwrap()))
        );
        // Names may contain the endpoint words themselves.
        assert_eq!(
            parse("/v2/blobs/manifests/tags/manifests/v1"),
            Ok(Route::Manifest(
                name("blobs/manifests/tags"),
                "v1".parse().unwrap()
            ))
        );
        assert_eq!(
            parse(&format!("/v2/x/blobs/uploads/blobs/{D}")),
            Ok(Route::Blob(name("x/blobs/uploads"), D.parse().unwrap()))
        );
    }

    #[test]
    fn bad_paths() {
        assert_eq!(parse("/v3/a/tags/list"), Err(RouteError::NotFound));
        assert_eq!(parse("/v2/a/nothing"), Err(RouteError::NotFound));
        assert_eq!(parse("/v2/tags/list"), Err(RouteError::NotFound));
        assert_eq!(
            parse("/v2//tags/list").map_err(|e| matches!(e, RouteError::Name(_))),
            Err(true)
        );
        assert!(matches!(
            parse("/v2/../etc/tags/list"),
            Err(RouteError::Name(_))
        ));
        assert!(matches!(
            parse("/v2/%2e%2e/manifests/x"),
            Err(RouteError::Name(_))
        ));
        assert!(matches!(
            parse("/v2/a/blobs/sha256:abc"),
            Err(RouteError::Digest(_))
        ));
        assert!(matches!(
            parse("/v2/a/manifests/bad:ref"),
            Err(RouteError::Reference(_))
        ));
        assert!(matches!(
            parse("/v2/a/blobs/uploads/..%2f"),
            Err(RouteError::Upload)
        ));
        assert!(matches!(parse("/v2/A/tags/list"), Err(RouteError::Name(_))));
    }

    #[test]
    fn a_digest_segment_holding_slashes_is_a_malformed_digest() {
        for path in [
            "/v2/a/b/blobs/sha256:../../../../etc/passwd",
            "/v2/a/blobs/../../etc/passwd",
            "/v2/a/referrers/sha256:x/y",
        ] {
            assert!(matches!(parse(path), Err(RouteError::Digest(_))), "{path}");
        }
        assert!(matches!(
            parse("/v2/a/manifests/sha256:../../x"),
            Err(RouteError::Reference(_))
        ));
        // Not a blob path: an upload id with more after it, or no valid name before it.
        assert_eq!(parse("/v2/a/blobs/uploads/x/y"), Err(RouteError::NotFound));
        assert_eq!(parse("/v2/a/nothing/here"), Err(RouteError::NotFound));
        assert_eq!(parse("/v2/A/blobs/x/y"), Err(RouteError::NotFound));
    }

    proptest! {
        #[test]
        fn never_panics(p in "/v2/[a-z0-9/._:%-]{0,80}") {
            let _ = parse(&p);
        }

        #[test]
        fn names_round_trip(parts in proptest::collection::vec("[a-z0-9]{1,4}", 1..6), tag in "[a-zA-Z0-9_][a-zA-Z0-9._-]{0,20}") {
            let n = parts.join("/");
            let route = parse(&format!("/v2/{n}/manifests/{tag}")).unwrap();
            prop_assert_eq!(route, Route::Manifest(name(&n), tag.parse().unwrap()));
            prop_assert_eq!(parse(&format!("/v2/{n}/tags/list")).unwrap(), Route::Tags(name(&n)));
        }
    }
}
