//! Pushing blobs: upload sessions (end-4a, end-4b, end-5, end-6, end-13, end-14) and
//! cross-repository mounts (end-11).

use crate::e2e::harness::{expect_error, header, sha256, TestRegistry};
use crate::e2e::images::bytes;
use reqwest::{Method, StatusCode};

async fn start(reg: &TestRegistry, repo: &str) -> String {
    let r = reg
        .req(Method::POST, &format!("/v2/{repo}/blobs/uploads/"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert_eq!(header(&r, "range"), "0-0");
    assert!(!header(&r, "docker-upload-uuid").is_empty());
    let loc = header(&r, "location");
    assert!(
        loc.starts_with(&format!("/v2/{repo}/blobs/uploads/")),
        "{loc}"
    );
    loc
}

async fn patch(
    reg: &TestRegistry,
    loc: &str,
    range: Option<&str>,
    data: &[u8],
) -> reqwest::Response {
    let mut rb = reg
        .req(Method::PATCH, loc)
        .header("content-type", "application/octet-stream")
        .body(data.to_vec());
    if let Some(r) = range {
        rb = rb.header("content-range", r);
    }
    rb.send().await.unwrap()
}

async fn blob_of(reg: &TestRegistry, repo: &str, digest: &str) -> Vec<u8> {
    let r = reg.get(&format!("/v2/{repo}/blobs/{digest}")).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(header(&r, "docker-content-digest"), digest);
    r.bytes().await.unwrap().to_vec()
}

#[tokio::test]
async fn end_4a_end_6_post_then_put_monolithic() {
    let reg = TestRegistry::spawn();
    let data = bytes(1, 100_000);
    let digest = reg.push_blob("library/app", &data).await;
    assert_eq!(blob_of(&reg, "library/app", &digest).await, data);
}

#[tokio::test]
async fn end_4b_single_post_with_digest() {
    let reg = TestRegistry::spawn();
    let data = bytes(2, 5000);
    let d = sha256(&data);
    let r = reg
        .req(Method::POST, &format!("/v2/a/blobs/uploads/?digest={d}"))
        .body(data.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(header(&r, "location"), format!("/v2/a/blobs/{d}"));
    assert_eq!(header(&r, "docker-content-digest"), d);
    assert_eq!(blob_of(&reg, "a", &d).await, data);
    // A wrong digest is refused and leaves nothing visible.
    let wrong = sha256(b"other");
    let r = reg
        .req(
            Method::POST,
            &format!("/v2/a/blobs/uploads/?digest={wrong}"),
        )
        .body(data.clone())
        .send()
        .await
        .unwrap();
    expect_error(r, 400, "DIGEST_INVALID").await;
    expect_error(
        reg.get(&format!("/v2/a/blobs/{wrong}")).await,
        404,
        "BLOB_UNKNOWN",
    )
    .await;
}

#[tokio::test]
async fn end_5_chunked_upload_in_order_and_out_of_order() {
    let reg = TestRegistry::spawn();
    let data = bytes(3, 3000);
    let loc = start(&reg, "chunks").await;
    let r = patch(&reg, &loc, Some("0-999"), &data[..1000]).await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert_eq!(header(&r, "range"), "0-999");
    let loc2 = header(&r, "location");
    // A repeated chunk and a chunk with a gap are both 416, and report where the upload is.
    for (range, part) in [("0-999", &data[..1000]), ("1500-1999", &data[1500..2000])] {
        let r = patch(&reg, &loc2, Some(range), part).await;
        assert_eq!(r.status().as_u16(), 416, "{range}");
        assert_eq!(header(&r, "range"), "0-999");
        expect_error(r, 416, "BLOB_UPLOAD_INVALID").await;
    }
    let r = patch(&reg, &loc2, Some("1000-1999"), &data[1000..2000]).await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    // end-13: status.
    let r = reg.get(&loc2).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(header(&r, "range"), "0-1999");
    assert!(header(&r, "location").contains("/blobs/uploads/"));
    // end-6 with the last chunk in the PUT body.
    let d = sha256(&data);
    let r = reg
        .req(Method::PUT, &format!("{loc2}?digest={d}"))
        .header("content-range", "2000-2999")
        .body(data[2000..].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(blob_of(&reg, "chunks", &d).await, data);
    // The session is gone once finished.
    expect_error(reg.get(&loc2).await, 404, "BLOB_UPLOAD_UNKNOWN").await;
}

#[tokio::test]
async fn end_5_streamed_patch_without_content_range() {
    let reg = TestRegistry::spawn();
    let data = bytes(4, 2 << 20);
    let loc = start(&reg, "stream").await;
    // A streamed body of unknown length (chunked transfer encoding).
    let parts: Vec<Result<Vec<u8>, std::io::Error>> =
        data.chunks(100_000).map(|c| Ok(c.to_vec())).collect();
    let body = reqwest::Body::wrap_stream(futures_stream(parts));
    let r = reg
        .req(Method::PATCH, &loc)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert_eq!(header(&r, "range"), format!("0-{}", data.len() - 1));
    let d = sha256(&data);
    let r = reg
        .req(
            Method::PUT,
            &format!("{}?digest={d}", header(&r, "location")),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(blob_of(&reg, "stream", &d).await, data);
}

fn futures_stream(
    parts: Vec<Result<Vec<u8>, std::io::Error>>,
) -> impl futures::Stream<Item = Result<Vec<u8>, std::io::Error>> + Send + 'static {
    futures::stream::iter(parts)
}

#[tokio::test]
async fn end_6_digest_checks() {
    let reg = TestRegistry::spawn();
    let loc = start(&reg, "d").await;
    patch(&reg, &loc, None, b"abc").await;
    let r = reg.req(Method::PUT, &loc).send().await.unwrap();
    expect_error(r, 400, "DIGEST_INVALID").await;
    let r = reg
        .req(Method::PUT, &format!("{loc}?digest=sha256:123"))
        .send()
        .await
        .unwrap();
    expect_error(r, 400, "DIGEST_INVALID").await;
    let r = reg
        .req(Method::PUT, &format!("{loc}?digest={}", sha256(b"abd")))
        .send()
        .await
        .unwrap();
    expect_error(r, 400, "DIGEST_INVALID").await;
    // sha512 is verified too.
    use sha2::Digest;
    let d512 = format!("sha512:{}", hex::encode(sha2::Sha512::digest(b"abc")));
    let r = reg
        .req(Method::PUT, &format!("{loc}?digest={d512}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(blob_of(&reg, "d", &d512).await, b"abc");
}

#[tokio::test]
async fn end_14_cancel_then_unknown() {
    let reg = TestRegistry::spawn();
    let loc = start(&reg, "c").await;
    patch(&reg, &loc, None, b"partial").await;
    let r = reg.req(Method::DELETE, &loc).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    expect_error(
        reg.req(Method::DELETE, &loc).send().await.unwrap(),
        404,
        "BLOB_UPLOAD_UNKNOWN",
    )
    .await;
    expect_error(
        patch(&reg, &loc, None, b"more").await,
        404,
        "BLOB_UPLOAD_UNKNOWN",
    )
    .await;
    // An upload belongs to its repository.
    let loc = start(&reg, "c").await;
    let id = loc.rsplit('/').next().unwrap();
    expect_error(
        reg.get(&format!("/v2/other/blobs/uploads/{id}")).await,
        404,
        "BLOB_UPLOAD_UNKNOWN",
    )
    .await;

    // A session that never received a byte is cancelled just the same, and stays unknown.
    let r = reg.get(&loc).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(header(&r, "range"), "0-0");
    let r = reg.req(Method::DELETE, &loc).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let d = sha256(b"late");
    expect_error(
        reg.req(Method::PUT, &format!("{loc}?digest={d}"))
            .body(b"late".to_vec())
            .send()
            .await
            .unwrap(),
        404,
        "BLOB_UPLOAD_UNKNOWN",
    )
    .await;
    assert_eq!(
        reg.get(&format!("/v2/c/blobs/{d}")).await.status(),
        StatusCode::NOT_FOUND
    );

    // Ids are not guessable: one character changed, or one made up, is unknown.
    let loc = start(&reg, "c").await;
    let mut forged = loc.clone().into_bytes();
    let last = forged.len() - 1;
    forged[last] = if forged[last] == b'0' { b'1' } else { b'0' };
    let forged = String::from_utf8(forged).unwrap();
    for bad in [forged.as_str(), "/v2/c/blobs/uploads/0123456789abcdef"] {
        expect_error(reg.get(bad).await, 404, "BLOB_UPLOAD_UNKNOWN").await;
        expect_error(
            patch(&reg, bad, None, b"x").await,
            404,
            "BLOB_UPLOAD_UNKNOWN",
        )
        .await;
    }
    // ...while the real one still works.
    assert_eq!(
        patch(&reg, &loc, None, b"x").await.status(),
        StatusCode::ACCEPTED
    );

    // A finished session is unknown afterwards, even one finished by a single PUT.
    let loc = start(&reg, "c").await;
    let d = sha256(b"once");
    let put = |body: &'static [u8]| {
        reg.req(Method::PUT, &format!("{loc}?digest={d}"))
            .body(body.to_vec())
            .send()
    };
    assert_eq!(put(b"once").await.unwrap().status(), StatusCode::CREATED);
    expect_error(put(b"once").await.unwrap(), 404, "BLOB_UPLOAD_UNKNOWN").await;
    expect_error(reg.get(&loc).await, 404, "BLOB_UPLOAD_UNKNOWN").await;
}

#[tokio::test]
async fn idle_upload_sessions_expire() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("berth.toml");
    std::fs::write(&config, "[limits]\nupload_expiry_secs = 1\n").unwrap();
    let reg = TestRegistry::spawn_with(
        &dir.path().join("data"),
        &["--config", config.to_str().unwrap()],
    );
    let fresh = start(&reg, "e").await;
    let started = start(&reg, "e").await;
    assert_eq!(
        patch(&reg, &started, None, b"some").await.status(),
        StatusCode::ACCEPTED
    );
    assert_eq!(reg.get(&fresh).await.status(), StatusCode::NO_CONTENT);
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    for loc in [&fresh, &started] {
        expect_error(reg.get(loc).await, 404, "BLOB_UPLOAD_UNKNOWN").await;
    }
}

#[tokio::test]
async fn end_11_mount_from_another_repository() {
    let reg = TestRegistry::spawn();
    let data = bytes(5, 4096);
    let d = reg.push_blob("src/repo", &data).await;
    let r = reg
        .req(
            Method::POST,
            &format!("/v2/dst/repo/blobs/uploads/?mount={d}&from=src/repo"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(header(&r, "location"), format!("/v2/dst/repo/blobs/{d}"));
    assert_eq!(header(&r, "docker-content-digest"), d);
    assert_eq!(blob_of(&reg, "dst/repo", &d).await, data);
    // Unknown blob, unknown source, or no source: 202 with a fresh session.
    let missing = sha256(b"missing");
    for q in [
        format!("mount={missing}&from=src/repo"),
        format!("mount={d}&from=nowhere"),
        format!("mount={d}"),
    ] {
        let r = reg
            .req(Method::POST, &format!("/v2/third/blobs/uploads/?{q}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::ACCEPTED, "{q}");
        assert!(header(&r, "location").starts_with("/v2/third/blobs/uploads/"));
    }
    // Stored once on disk.
    let files = walk(&reg.data.join("blobs"));
    assert_eq!(
        files
            .iter()
            .filter(|p| p.ends_with(d.trim_start_matches("sha256:")))
            .count(),
        1
    );
}

pub fn walk(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p.to_string_lossy().into_owned());
            }
        }
    }
    out
}

#[tokio::test]
async fn same_blob_in_two_repositories_is_stored_once() {
    let reg = TestRegistry::spawn();
    let data = bytes(6, 50_000);
    let d1 = reg.push_blob("one", &data).await;
    let d2 = reg.push_blob("two", &data).await;
    assert_eq!(d1, d2);
    let files = walk(&reg.data.join("blobs"));
    assert_eq!(files.len(), 1, "{files:?}");
    // A repository sees only what it linked.
    expect_error(
        reg.get(&format!("/v2/three/blobs/{d1}")).await,
        404,
        "BLOB_UNKNOWN",
    )
    .await;
}

#[tokio::test]
async fn large_blob_streams_without_growing_memory() {
    let reg = TestRegistry::spawn();
    let chunk = bytes(7, 1 << 20);
    let n = 256; // 256 MiB
    let mut hasher = <sha2::Sha256 as sha2::Digest>::new();
    for _ in 0..n {
        sha2::Digest::update(&mut hasher, &chunk);
    }
    let d = format!("sha256:{}", hex::encode(sha2::Digest::finalize(hasher)));
    let parts: Vec<Result<Vec<u8>, std::io::Error>> = (0..n).map(|_| Ok(chunk.clone())).collect();
    let body = reqwest::Body::wrap_stream(futures_stream(parts));
    let r = reg
        .req(Method::POST, &format!("/v2/big/blobs/uploads/?digest={d}"))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = reg.get(&format!("/v2/big/blobs/{d}")).await;
    assert_eq!(header(&r, "content-length"), (n << 20).to_string());
    let mut total = 0usize;
    let mut r = r;
    while let Some(c) = r.chunk().await.unwrap() {
        total += c.len();
    }
    assert_eq!(total, n << 20);
    let status = std::fs::read_to_string(format!("/proc/{}/status", reg.pid())).unwrap();
    let hwm_kb: u64 = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap();
    assert!(
        hwm_kb < 96 * 1024,
        "peak RSS {hwm_kb} KiB after a 256 MiB blob in and out"
    );
}
