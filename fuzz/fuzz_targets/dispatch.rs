//! Fuzzes the `/v2/` path dispatcher, which splits a raw request path into an endpoint and
//! the repository name (names contain `/`, so no router can).
//!
//! No path may panic it. A route names only a valid repository, and rebuilt into the path a
//! client would send it parses back to the same route, so no two endpoints claim one path.
//! A query string never changes the route.

#![no_main]

use berth_oci::RepoName;
use berth_server::dispatch::{parse, Route};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(path) = std::str::from_utf8(data) else {
        return;
    };
    let route = parse(path);
    if !path.starts_with("/v2") {
        assert!(route.is_err());
    }
    if !path.contains('?') {
        assert_eq!(parse(&format!("{path}?n=1&last=x/y")), route);
    }
    let Ok(route) = route else {
        return;
    };
    if let Some(name) = repo(&route) {
        assert_eq!(name.as_str().parse::<RepoName>().as_ref(), Ok(name));
        assert!(path.contains(&format!("/{name}/")));
    }
    let rebuilt = path_of(&route);
    assert_eq!(
        parse(&rebuilt).as_ref(),
        Ok(&route),
        "{path:?} -> {rebuilt:?}"
    );
    let _ = route.label();
});

fn repo(route: &Route) -> Option<&RepoName> {
    match route {
        Route::Base | Route::Catalog => None,
        Route::Tags(n)
        | Route::Manifest(n, _)
        | Route::Blob(n, _)
        | Route::UploadStart(n)
        | Route::Upload(n, _)
        | Route::Referrers(n, _) => Some(n),
    }
}

/// The canonical path of a route, as the spec writes each endpoint.
fn path_of(route: &Route) -> String {
    match route {
        Route::Base => "/v2/".to_owned(),
        Route::Catalog => "/v2/_catalog".to_owned(),
        Route::Tags(n) => format!("/v2/{n}/tags/list"),
        Route::Manifest(n, r) => format!("/v2/{n}/manifests/{r}"),
        Route::Blob(n, d) => format!("/v2/{n}/blobs/{d}"),
        Route::UploadStart(n) => format!("/v2/{n}/blobs/uploads/"),
        Route::Upload(n, id) => format!("/v2/{n}/blobs/uploads/{id}"),
        Route::Referrers(n, d) => format!("/v2/{n}/referrers/{d}"),
    }
}
