//! Manifests: push (end-7), pull (end-3), delete (end-9), and referrers (end-12a, end-12b).

use crate::e2e::harness::{expect_error, header, sha256, TestRegistry, OCI_INDEX, OCI_MANIFEST};
use crate::e2e::images::{bytes, ImageBuilder};
use reqwest::{Method, StatusCode};

const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

#[tokio::test]
async fn end_7_end_3_push_and_pull_by_tag_and_digest() {
    let reg = TestRegistry::spawn();
    let img = ImageBuilder::new(1).layers(2, 3000).build();
    let digest = reg.push_image("team/app", "v1", &img).await;
    assert_eq!(digest, img.digest());
    for reference in ["v1", digest.as_str()] {
        let r = reg
            .get(&format!("/v2/team/app/manifests/{reference}"))
            .await;
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(header(&r, "content-type"), OCI_MANIFEST);
        assert_eq!(header(&r, "docker-content-digest"), digest);
        assert_eq!(r.bytes().await.unwrap().to_vec(), img.manifest);
        let r = reg
            .req(Method::HEAD, &format!("/v2/team/app/manifests/{reference}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(header(&r, "content-length"), img.manifest.len().to_string());
        assert_eq!(header(&r, "docker-content-digest"), digest);
    }
    // The manifest is also readable as a blob of its repository.
    let r = reg.get(&format!("/v2/team/app/blobs/{digest}")).await;
    assert_eq!(r.bytes().await.unwrap().to_vec(), img.manifest);
    // Pushing by digest works and answers with its Location.
    let r = reg
        .put_manifest("team/app", &digest, OCI_MANIFEST, &img.manifest)
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(
        header(&r, "location"),
        format!("/v2/team/app/manifests/{digest}")
    );

    // A tag moved is seen moved at once, by GET and HEAD, however recently it was read.
    let other = ImageBuilder::new(2).layers(1, 100).build();
    let moved = reg.push_image("team/app", "v1", &other).await;
    assert_ne!(moved, digest);
    let r = reg.get("/v2/team/app/manifests/v1").await;
    assert_eq!(header(&r, "docker-content-digest"), moved);
    assert_eq!(r.bytes().await.unwrap().to_vec(), other.manifest);
    let r = reg
        .req(Method::HEAD, "/v2/team/app/manifests/v1")
        .send()
        .await
        .unwrap();
    assert_eq!(header(&r, "docker-content-digest"), moved);
}

#[tokio::test]
async fn end_7_references_are_checked() {
    let reg = TestRegistry::spawn();
    let img = ImageBuilder::new(2).layers(1, 100).build();
    // No blobs pushed yet.
    let r = reg
        .put_manifest("r", "t", OCI_MANIFEST, &img.manifest)
        .await;
    expect_error(r, 400, "MANIFEST_BLOB_UNKNOWN").await;
    // Blobs in another repository do not count.
    reg.push_blob("other", &img.config).await;
    reg.push_blob("other", &img.layers[0]).await;
    let r = reg
        .put_manifest("r", "t", OCI_MANIFEST, &img.manifest)
        .await;
    expect_error(r, 400, "MANIFEST_BLOB_UNKNOWN").await;
    expect_error(reg.get("/v2/r/manifests/t").await, 404, "NAME_UNKNOWN").await;
    // An index whose child is missing.
    let index = serde_json::json!({"schemaVersion":2,"mediaType":OCI_INDEX,"manifests":[{"mediaType":OCI_MANIFEST,"digest":img.digest(),"size":img.manifest.len()}]});
    let r = reg
        .put_manifest(
            "other",
            "multi",
            OCI_INDEX,
            &serde_json::to_vec(&index).unwrap(),
        )
        .await;
    expect_error(r, 400, "MANIFEST_BLOB_UNKNOWN").await;
    // Once the child is there, the index is accepted.
    let r = reg
        .put_manifest("other", "single", OCI_MANIFEST, &img.manifest)
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = reg
        .put_manifest(
            "other",
            "multi",
            OCI_INDEX,
            &serde_json::to_vec(&index).unwrap(),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = reg.get("/v2/other/manifests/multi").await;
    assert_eq!(header(&r, "content-type"), OCI_INDEX);
}

#[tokio::test]
async fn end_7_invalid_manifests_are_refused() {
    let reg = TestRegistry::spawn();
    let img = ImageBuilder::new(3).layers(1, 10).build();
    reg.push_image("m", "ok", &img).await;
    let text = String::from_utf8(img.manifest.clone()).unwrap();
    let cases: Vec<(Vec<u8>, &str, u16, &str)> = vec![
        (b"not json".to_vec(), OCI_MANIFEST, 400, "MANIFEST_INVALID"),
        (b"{}".to_vec(), OCI_MANIFEST, 400, "MANIFEST_INVALID"),
        (
            format!("{}{}", "[".repeat(5000), "]".repeat(5000)).into_bytes(),
            OCI_MANIFEST,
            400,
            "MANIFEST_INVALID",
        ),
        (
            text.replace("\"schemaVersion\":2", "\"schemaVersion\":1")
                .into_bytes(),
            OCI_MANIFEST,
            400,
            "MANIFEST_INVALID",
        ),
        (
            img.manifest.clone(),
            DOCKER_MANIFEST,
            400,
            "MANIFEST_INVALID",
        ),
        (
            img.manifest.clone(),
            "application/vnd.unknown+json",
            400,
            "MANIFEST_INVALID",
        ),
        (vec![b' '; 5 << 20], OCI_MANIFEST, 413, "SIZE_INVALID"),
    ];
    for (body, ct, status, code) in cases {
        let r = reg.put_manifest("m", "bad", ct, &body).await;
        expect_error(r, status, code).await;
    }
    // Digest in the URL that does not match the body.
    let r = reg
        .put_manifest("m", &sha256(b"x"), OCI_MANIFEST, &img.manifest)
        .await;
    expect_error(r, 400, "DIGEST_INVALID").await;
    // Nothing of the above was stored.
    expect_error(
        reg.get("/v2/m/manifests/bad").await,
        404,
        "MANIFEST_UNKNOWN",
    )
    .await;
    let tags: serde_json::Value = reg.get("/v2/m/tags/list").await.json().await.unwrap();
    assert_eq!(tags["tags"], serde_json::json!(["ok"]));
}

#[tokio::test]
async fn end_7_docker_schema2_and_manifest_list() {
    let reg = TestRegistry::spawn();
    let img = ImageBuilder::new(4).layers(1, 10).build();
    reg.push_blob("d", &img.config).await;
    reg.push_blob("d", &img.layers[0]).await;
    let text = String::from_utf8(img.manifest.clone())
        .unwrap()
        .replace(OCI_MANIFEST, DOCKER_MANIFEST);
    let r = reg
        .put_manifest("d", "v2", DOCKER_MANIFEST, text.as_bytes())
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let child = header(&r, "docker-content-digest");
    let list = serde_json::json!({"schemaVersion":2,"mediaType":DOCKER_LIST,"manifests":[{"mediaType":DOCKER_MANIFEST,"digest":child,"size":text.len(),"platform":{"architecture":"amd64","os":"linux"}}]});
    let r = reg
        .put_manifest(
            "d",
            "list",
            DOCKER_LIST,
            &serde_json::to_vec(&list).unwrap(),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = reg
        .req(Method::GET, "/v2/d/manifests/list")
        .header("accept", DOCKER_LIST)
        .send()
        .await
        .unwrap();
    assert_eq!(header(&r, "content-type"), DOCKER_LIST);
}

#[tokio::test]
async fn end_3_accept_negotiation() {
    let reg = TestRegistry::spawn();
    let img = ImageBuilder::new(5).layers(1, 10).build();
    reg.push_image("n", "latest", &img).await;
    let get = |accept: &'static str| {
        reg.req(Method::GET, "/v2/n/manifests/latest")
            .header("accept", accept)
            .send()
    };
    assert_eq!(get(OCI_MANIFEST).await.unwrap().status(), StatusCode::OK);
    assert_eq!(get("application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.manifest.v1+json").await.unwrap().status(), StatusCode::OK);
    assert_eq!(get("*/*").await.unwrap().status(), StatusCode::OK);
    expect_error(get(DOCKER_MANIFEST).await.unwrap(), 404, "MANIFEST_UNKNOWN").await;
}

#[tokio::test]
async fn end_9_delete_by_tag_and_by_digest() {
    let reg = TestRegistry::spawn();
    let img = ImageBuilder::new(6).layers(1, 10).build();
    let d = reg.push_image("del", "a", &img).await;
    reg.put_manifest("del", "b", OCI_MANIFEST, &img.manifest)
        .await;
    let r = reg
        .req(Method::DELETE, "/v2/del/manifests/a")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    expect_error(
        reg.get("/v2/del/manifests/a").await,
        404,
        "MANIFEST_UNKNOWN",
    )
    .await;
    assert_eq!(
        reg.get("/v2/del/manifests/b").await.status(),
        StatusCode::OK
    );
    assert_eq!(
        reg.get(&format!("/v2/del/manifests/{d}")).await.status(),
        StatusCode::OK
    );
    let r = reg
        .req(Method::DELETE, &format!("/v2/del/manifests/{d}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    expect_error(
        reg.get(&format!("/v2/del/manifests/{d}")).await,
        404,
        "MANIFEST_UNKNOWN",
    )
    .await;
    expect_error(
        reg.get("/v2/del/manifests/b").await,
        404,
        "MANIFEST_UNKNOWN",
    )
    .await;
    expect_error(
        reg.req(Method::DELETE, &format!("/v2/del/manifests/{d}"))
            .send()
            .await
            .unwrap(),
        404,
        "MANIFEST_UNKNOWN",
    )
    .await;
    let tags: serde_json::Value = reg.get("/v2/del/tags/list").await.json().await.unwrap();
    assert_eq!(tags["tags"], serde_json::json!([]));
}

#[tokio::test]
async fn end_12_referrers_with_subject_and_filter() {
    let reg = TestRegistry::spawn();
    let img = ImageBuilder::new(7).layers(1, 100).build();
    // Referrers may arrive before their subject.
    let sig = ImageBuilder::new(8)
        .layers(1, 50)
        .subject(&img.digest(), img.manifest.len())
        .artifact_type("application/vnd.example.sig")
        .build();
    let sbom = ImageBuilder::new(9)
        .layers(1, 60)
        .subject(&img.digest(), img.manifest.len())
        .artifact_type("application/vnd.example.sbom")
        .build();
    for a in [&sig, &sbom] {
        reg.push_blob("ref", &a.config).await;
        reg.push_blob("ref", &a.layers[0]).await;
        let r = reg
            .put_manifest("ref", &a.digest(), OCI_MANIFEST, &a.manifest)
            .await;
        assert_eq!(r.status(), StatusCode::CREATED);
        assert_eq!(header(&r, "oci-subject"), img.digest());
    }
    reg.push_image("ref", "v1", &img).await;
    let r = reg
        .get(&format!("/v2/ref/referrers/{}", img.digest()))
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(header(&r, "content-type"), OCI_INDEX);
    let idx: serde_json::Value = r.json().await.unwrap();
    assert_eq!(idx["schemaVersion"], 2);
    assert_eq!(idx["mediaType"], OCI_INDEX);
    let listed = idx["manifests"].as_array().unwrap();
    assert_eq!(listed.len(), 2);
    for m in listed {
        let which = if m["digest"] == sig.digest() {
            &sig
        } else {
            &sbom
        };
        assert_eq!(m["size"], which.manifest.len());
        assert_eq!(m["mediaType"], OCI_MANIFEST);
        assert!(m["artifactType"]
            .as_str()
            .unwrap()
            .starts_with("application/vnd.example."));
        assert_eq!(m["annotations"]["org.example.kind"], m["artifactType"]);
    }
    let r = reg
        .get(&format!(
            "/v2/ref/referrers/{}?artifactType=application/vnd.example.sig",
            img.digest()
        ))
        .await;
    assert_eq!(header(&r, "oci-filters-applied"), "artifactType");
    let idx: serde_json::Value = r.json().await.unwrap();
    assert_eq!(idx["manifests"].as_array().unwrap().len(), 1);
    assert_eq!(idx["manifests"][0]["digest"], sig.digest());
    // Unknown subject: an empty index, not a 404. Bad digest: 400.
    let r = reg
        .get(&format!("/v2/ref/referrers/{}", sha256(&bytes(1, 1))))
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let idx: serde_json::Value = r.json().await.unwrap();
    assert_eq!(idx["manifests"], serde_json::json!([]));
    expect_error(
        reg.get("/v2/ref/referrers/sha256:zzz").await,
        400,
        "DIGEST_INVALID",
    )
    .await;
}

#[tokio::test]
async fn shared_base_layer_is_one_blob_across_images_and_repositories() {
    let reg = TestRegistry::spawn();
    let base = bytes(100, 200_000);
    let app1 = ImageBuilder::new(11)
        .layer(base.clone())
        .layers(1, 1000)
        .build();
    let app2 = ImageBuilder::new(12)
        .layer(base.clone())
        .layers(1, 1000)
        .build();
    reg.push_image("team/one", "v1", &app1).await;
    reg.push_image("team/two", "v1", &app2).await;
    for (repo, img) in [("team/one", &app1), ("team/two", &app2)] {
        let r = reg.get(&format!("/v2/{repo}/manifests/v1")).await;
        assert_eq!(header(&r, "docker-content-digest"), img.digest());
        let b = reg
            .get(&format!("/v2/{repo}/blobs/{}", sha256(&base)))
            .await
            .bytes()
            .await
            .unwrap();
        assert_eq!(b.to_vec(), base);
    }
    let files = crate::e2e::push::walk(&reg.data.join("blobs"));
    let hex = sha256(&base).trim_start_matches("sha256:").to_owned();
    assert_eq!(files.iter().filter(|f| f.ends_with(&hex)).count(), 1);
    // 2 configs + 1 shared base + 2 own layers + 2 manifests.
    assert_eq!(files.len(), 7, "{files:?}");
}
