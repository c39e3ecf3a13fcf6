//! Listings: tags with pagination (end-8a, end-8b) and the catalog.

use crate::e2e::harness::{expect_error, header, link_target, TestRegistry, OCI_MANIFEST};
use crate::e2e::images::ImageBuilder;
use reqwest::StatusCode;

async fn tags(reg: &TestRegistry, path: &str) -> (Vec<String>, String) {
    let r = reg.get(path).await;
    assert_eq!(r.status(), StatusCode::OK, "{path}");
    let link = header(&r, "link");
    let v: serde_json::Value = r.json().await.unwrap();
    let list = v["tags"]
        .as_array()
        .or(v["repositories"].as_array())
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap().to_owned())
        .collect();
    (list, link)
}

#[tokio::test]
async fn end_8_tags_sorted_and_paginated() {
    let reg = TestRegistry::spawn();
    let img = ImageBuilder::new(1).layers(1, 10).build();
    reg.push_image("t/repo", "latest", &img).await;
    let names = ["v10", "v2", "A", "b", "v1", "_x", "latest"];
    for t in names {
        reg.put_manifest("t/repo", t, OCI_MANIFEST, &img.manifest)
            .await;
    }
    let mut sorted: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    sorted.sort();
    sorted.dedup();
    let (all, link) = tags(&reg, "/v2/t/repo/tags/list").await;
    assert_eq!(all, sorted);
    assert!(link.is_empty());
    // Walk with n=2 following Link headers.
    let mut walked = Vec::new();
    let mut next = "/v2/t/repo/tags/list?n=2".to_owned();
    loop {
        let (page, link) = tags(&reg, &next).await;
        assert!(page.len() <= 2);
        walked.extend(page);
        if link.is_empty() {
            break;
        }
        assert!(link.ends_with("rel=\"next\""), "{link}");
        next = link
            .trim_start_matches('<')
            .split('>')
            .next()
            .unwrap()
            .to_owned();
    }
    assert_eq!(walked, sorted);
    let (page, _) = tags(&reg, "/v2/t/repo/tags/list?last=b").await;
    assert_eq!(
        page,
        sorted
            .iter()
            .filter(|t| t.as_str() > "b")
            .cloned()
            .collect::<Vec<_>>()
    );
    let (page, _) = tags(&reg, "/v2/t/repo/tags/list?n=0").await;
    assert!(page.is_empty());
    expect_error(reg.get("/v2/nope/tags/list").await, 404, "NAME_UNKNOWN").await;
    let r = reg.get("/v2/t/repo/tags/list?n=abc").await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let r = reg.get("/v2/t/repo/tags/list?n=1&n=2").await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
}

/// A whole tag list read again and again (its body is kept while the list is unchanged)
/// shows every change as soon as the write that made it is acknowledged.
#[tokio::test]
async fn end_8a_a_polled_tag_list_follows_every_change() {
    let reg = TestRegistry::spawn();
    let img = ImageBuilder::new(1).layers(1, 10).build();
    let other = ImageBuilder::new(2).layers(1, 10).build();
    let expect = |want: &'static [&'static str]| {
        let reg = &reg;
        async move {
            for _ in 0..2 {
                let (all, _) = tags(reg, "/v2/t/repo/tags/list").await;
                assert_eq!(all, want);
            }
        }
    };
    reg.push_image("t/repo", "a", &img).await;
    reg.put_manifest("t/repo", "b", OCI_MANIFEST, &img.manifest)
        .await;
    expect(&["a", "b"]).await;
    reg.put_manifest("t/repo", "c", OCI_MANIFEST, &img.manifest)
        .await;
    expect(&["a", "b", "c"]).await;
    // A tag moved: the same names.
    reg.push_image("t/repo", "b", &other).await;
    expect(&["a", "b", "c"]).await;
    // A tag deleted, then a manifest deleted (which untags it everywhere).
    let paths = [
        "/v2/t/repo/manifests/c".to_owned(),
        format!("/v2/t/repo/manifests/{}", img.digest()),
    ];
    let lists: [&'static [&'static str]; 2] = [&["a", "b"], &["b"]];
    for (path, want) in paths.iter().zip(lists) {
        let r = reg.req(reqwest::Method::DELETE, path).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::ACCEPTED);
        expect(want).await;
    }
}

#[tokio::test]
async fn catalog_is_sorted_and_paginated() {
    let reg = TestRegistry::spawn();
    let names = ["zeta", "alpha/one", "alpha/two", "beta", "a.b/c-d/e_f"];
    for n in names {
        reg.push_blob(n, b"x").await;
    }
    let mut sorted: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    sorted.sort();
    let (all, _) = tags(&reg, "/v2/_catalog").await;
    assert_eq!(all, sorted);
    let (p1, link) = tags(&reg, "/v2/_catalog?n=2").await;
    assert_eq!(p1, sorted[..2]);
    assert!(link.contains("/v2/_catalog?n=2&last="), "{link}");
    let next = link_target(&link);
    let (p2, _) = tags(&reg, &next).await;
    assert_eq!(p2, sorted[2..4]);
}
