//! Many clients at once: one blob pushed by 64 clients into 64 repositories is stored once;
//! one tag moved by many clients at once ends on one of their manifests, whole; a manifest
//! deleted (and its blobs collected) while clients pull it breaks neither side.

use crate::e2e::harness::{files, header, sha256, TestRegistry, OCI_MANIFEST};
use crate::e2e::images::{bytes, ImageBuilder};
use reqwest::{Method, StatusCode};
use std::sync::Arc;

#[tokio::test]
async fn one_blob_pushed_by_64_clients_at_once_is_stored_once() {
    let reg = Arc::new(TestRegistry::spawn());
    let data = Arc::new(bytes(71, 3 << 20));
    let digest = sha256(&data);
    let mut tasks = Vec::new();
    for i in 0..64 {
        let (reg, data, digest) = (reg.clone(), data.clone(), digest.clone());
        tasks.push(tokio::spawn(async move {
            // A fresh client each: 64 connections, not one queue.
            let c = reqwest::Client::new();
            let repo = format!("many/r{i}");
            if i % 2 == 0 {
                // Monolithic.
                let r = c
                    .post(reg.url(&format!("/v2/{repo}/blobs/uploads/?digest={digest}")))
                    .body(data.to_vec())
                    .send()
                    .await
                    .unwrap();
                r.status()
            } else {
                // Chunked, in 1 MiB PATCHes.
                let r = c
                    .post(reg.url(&format!("/v2/{repo}/blobs/uploads/")))
                    .send()
                    .await
                    .unwrap();
                let mut loc = header(&r, "location");
                for (n, chunk) in data.chunks(1 << 20).enumerate() {
                    let start = n << 20;
                    let r = c
                        .patch(reg.url(&loc))
                        .header("content-type", "application/octet-stream")
                        .header(
                            "content-range",
                            format!("{start}-{}", start + chunk.len() - 1),
                        )
                        .body(chunk.to_vec())
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(r.status(), StatusCode::ACCEPTED);
                    loc = header(&r, "location");
                }
                let sep = if loc.contains('?') { '&' } else { '?' };
                c.put(reg.url(&format!("{loc}{sep}digest={digest}")))
                    .send()
                    .await
                    .unwrap()
                    .status()
            }
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), StatusCode::CREATED);
    }
    // Every repository serves it whole.
    for i in 0..64 {
        let r = reg.get(&format!("/v2/many/r{i}/blobs/{digest}")).await;
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(sha256(&r.bytes().await.unwrap()), digest);
    }
    // One file on disk, named by its digest and holding exactly the blob.
    let blobs = files(&reg.data.join("blobs"));
    assert_eq!(blobs.len(), 1, "{blobs:?}");
    assert!(blobs[0].ends_with(digest.trim_start_matches("sha256:")));
    assert_eq!(sha256(&std::fs::read(&blobs[0]).unwrap()), digest);
    // Uploads left nothing behind.
    assert!(files(&reg.data.join("uploads")).is_empty());
}

#[tokio::test]
async fn a_tag_moved_by_many_clients_at_once_ends_on_one_of_their_manifests() {
    let reg = Arc::new(TestRegistry::spawn());
    let images: Vec<_> = (0..16)
        .map(|i| ImageBuilder::new(100 + i).layers(1, 1000).build())
        .collect();
    let mut digests = Vec::new();
    for img in &images {
        digests.push(reg.push_image("race/tag", &img.digest(), img).await);
    }
    for round in 0..5 {
        let mut tasks = Vec::new();
        for img in &images {
            let reg = reg.clone();
            let body = img.manifest.clone();
            tasks.push(tokio::spawn(async move {
                let c = reqwest::Client::new();
                c.put(reg.url("/v2/race/tag/manifests/latest"))
                    .header("content-type", OCI_MANIFEST)
                    .body(body)
                    .send()
                    .await
                    .unwrap()
                    .status()
            }));
        }
        for t in tasks {
            assert_eq!(t.await.unwrap(), StatusCode::CREATED, "round {round}");
        }
        let r = reg.get("/v2/race/tag/manifests/latest").await;
        assert_eq!(r.status(), StatusCode::OK);
        let said = header(&r, "docker-content-digest");
        let body = r.bytes().await.unwrap();
        assert_eq!(
            sha256(&body),
            said,
            "the body is the manifest the header names"
        );
        assert!(digests.contains(&said), "round {round}: {said}");
        let tags: serde_json::Value = reg
            .get("/v2/race/tag/tags/list")
            .await
            .json()
            .await
            .unwrap();
        let latest = tags["tags"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|t| *t == "latest")
            .count();
        assert_eq!(latest, 1);
    }
}

#[tokio::test]
async fn a_manifest_deleted_and_collected_while_clients_pull_it() {
    let reg = Arc::new(TestRegistry::spawn());
    let img = ImageBuilder::new(131).layers(2, 6 << 20).build();
    let digest = reg.push_image("del/me", "v1", &img).await;
    // A pull that has started reading a layer before the delete: 32 MiB, far more than
    // loopback socket buffers hold, so most of it is read from the file after the delete.
    let big = ImageBuilder::new(133).layers(1, 32 << 20).build();
    let big_digest = reg.push_image("del/me", "big", &big).await;
    let layer = sha256(&big.layers[0]);
    let mut slow = reg.get(&format!("/v2/del/me/blobs/{layer}")).await;
    assert_eq!(slow.status(), StatusCode::OK);
    let first = slow.chunk().await.unwrap().unwrap();

    // Pullers in a loop while the manifest is deleted and the collector runs.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut pullers = Vec::new();
    for _ in 0..8 {
        let (reg, stop, digest) = (reg.clone(), stop.clone(), digest.clone());
        let manifest = img.manifest.clone();
        let layers = img.layers.iter().map(|l| sha256(l)).collect::<Vec<_>>();
        pullers.push(tokio::spawn(async move {
            let c = reqwest::Client::new();
            let (mut whole, mut gone) = (0, 0);
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let r = c
                    .get(reg.url(&format!("/v2/del/me/manifests/{digest}")))
                    .header("accept", OCI_MANIFEST)
                    .send()
                    .await
                    .unwrap();
                match r.status() {
                    StatusCode::OK => assert_eq!(r.bytes().await.unwrap().to_vec(), manifest),
                    StatusCode::NOT_FOUND => gone += 1,
                    s => panic!("manifest GET answered {s}"),
                }
                for l in &layers {
                    let r = c
                        .get(reg.url(&format!("/v2/del/me/blobs/{l}")))
                        .send()
                        .await
                        .unwrap();
                    match r.status() {
                        // Whole, or nothing: never a cut or mixed body.
                        StatusCode::OK => match r.bytes().await {
                            Ok(b) => {
                                assert_eq!(&sha256(&b), l);
                                whole += 1;
                            }
                            Err(e) => panic!("a blob body broke off: {e}"),
                        },
                        StatusCode::NOT_FOUND => gone += 1,
                        s => panic!("blob GET answered {s}"),
                    }
                }
            }
            (whole, gone)
        }));
    }
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    for d in [&digest, &big_digest] {
        let r = reg
            .req(Method::DELETE, &format!("/v2/del/me/manifests/{d}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::ACCEPTED);
    }
    let r = reg
        .req(Method::POST, "/api/v1/gc?grace_period=0")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let (mut whole, mut gone) = (0, 0);
    for p in pullers {
        let (w, g) = p.await.unwrap();
        whole += w;
        gone += g;
    }
    assert!(whole > 0 && gone > 0, "whole {whole}, gone {gone}");

    // The pull that was under way when its blob was deleted still gets every byte.
    let hex = &layer["sha256:".len()..];
    assert!(
        !files(&reg.data.join("blobs"))
            .iter()
            .any(|p| p.ends_with(hex)),
        "the collector deleted the big layer's file"
    );
    let mut got = first.to_vec();
    while let Some(c) = slow.chunk().await.unwrap() {
        got.extend_from_slice(&c);
    }
    assert_eq!(sha256(&got), layer);
    // Gone for good, and the registry serves other things as before.
    assert_eq!(
        reg.get(&format!("/v2/del/me/manifests/{digest}"))
            .await
            .status(),
        StatusCode::NOT_FOUND
    );
    assert!(files(&reg.data.join("blobs")).is_empty());
    let other = ImageBuilder::new(132).layers(1, 100).build();
    reg.push_image("del/other", "v1", &other).await;
}
