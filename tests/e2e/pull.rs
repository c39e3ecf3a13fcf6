//! Pulling: the base endpoint (end-1), blob GET and HEAD with ranges (end-2), and blob
//! delete (end-10).

use crate::e2e::harness::{expect_error, header, TestRegistry};
use crate::e2e::images::bytes;
use reqwest::{Method, StatusCode};

#[tokio::test]
async fn end_1_base_answers_200_with_api_version() {
    let reg = TestRegistry::spawn();
    for m in [Method::GET, Method::HEAD] {
        let r = reg.req(m, "/v2/").send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(
            header(&r, "docker-distribution-api-version"),
            "registry/2.0"
        );
    }
}

#[tokio::test]
async fn end_2_get_and_head_blob() {
    let reg = TestRegistry::spawn();
    let data = bytes(10, 10_000);
    let d = reg.push_blob("pull/me", &data).await;
    let r = reg
        .req(Method::HEAD, &format!("/v2/pull/me/blobs/{d}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(header(&r, "content-length"), "10000");
    assert_eq!(header(&r, "docker-content-digest"), d);
    assert_eq!(header(&r, "accept-ranges"), "bytes");
    let r = reg.get(&format!("/v2/pull/me/blobs/{d}")).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.bytes().await.unwrap().to_vec(), data);
}

#[tokio::test]
async fn end_2_ranges_206_and_416() {
    let reg = TestRegistry::spawn();
    let data = bytes(11, 1000);
    let d = reg.push_blob("r", &data).await;
    let path = format!("/v2/r/blobs/{d}");
    for (range, start, end) in [
        ("bytes=0-99", 0, 99),
        ("bytes=900-", 900, 999),
        ("bytes=-10", 990, 999),
        ("bytes=995-5000", 995, 999),
    ] {
        let r = reg
            .req(Method::GET, &path)
            .header("range", range)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT, "{range}");
        assert_eq!(
            header(&r, "content-range"),
            format!("bytes {start}-{end}/1000")
        );
        assert_eq!(header(&r, "content-length"), (end - start + 1).to_string());
        assert_eq!(r.bytes().await.unwrap().to_vec(), &data[start..=end]);
        // RFC 9110 §14.2: ranges are for GET; a HEAD describes the whole blob.
        let r = reg
            .req(Method::HEAD, &path)
            .header("range", range)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(header(&r, "content-length"), "1000");
    }
    for range in ["bytes=1000-", "bytes=5000-6000", "bytes=-0"] {
        let r = reg
            .req(Method::GET, &path)
            .header("range", range)
            .send()
            .await
            .unwrap();
        assert_eq!(header(&r, "content-range"), "bytes */1000", "{range}");
        expect_error(r, 416, "SIZE_INVALID").await;
    }
    // A malformed or multi-part range is ignored: the whole blob.
    for range in ["bytes=0-1,5-6", "lines=1-2", "bytes=9-3"] {
        let r = reg
            .req(Method::GET, &path)
            .header("range", range)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{range}");
        assert_eq!(r.bytes().await.unwrap().len(), 1000);
    }
}

#[tokio::test]
async fn end_2_unknown_blob_is_404() {
    let reg = TestRegistry::spawn();
    let d = crate::e2e::harness::sha256(b"nothing");
    expect_error(
        reg.get(&format!("/v2/x/blobs/{d}")).await,
        404,
        "BLOB_UNKNOWN",
    )
    .await;
    let r = reg
        .req(Method::HEAD, &format!("/v2/x/blobs/{d}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    expect_error(
        reg.get("/v2/x/blobs/sha256:abc").await,
        400,
        "DIGEST_INVALID",
    )
    .await;
    expect_error(
        reg.get("/v2/x/blobs/md5:abcdef").await,
        400,
        "DIGEST_INVALID",
    )
    .await;
}

#[tokio::test]
async fn end_10_delete_blob() {
    let reg = TestRegistry::spawn();
    let data = bytes(12, 100);
    let d = reg.push_blob("del", &data).await;
    reg.push_blob("keep", &data).await;
    let r = reg
        .req(Method::DELETE, &format!("/v2/del/blobs/{d}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    expect_error(
        reg.get(&format!("/v2/del/blobs/{d}")).await,
        404,
        "BLOB_UNKNOWN",
    )
    .await;
    expect_error(
        reg.req(Method::DELETE, &format!("/v2/del/blobs/{d}"))
            .send()
            .await
            .unwrap(),
        404,
        "BLOB_UNKNOWN",
    )
    .await;
    // The other repository's link, and the shared bytes, are untouched.
    let r = reg.get(&format!("/v2/keep/blobs/{d}")).await;
    assert_eq!(r.bytes().await.unwrap().to_vec(), data);
}

#[tokio::test]
async fn hostile_paths_get_spec_errors() {
    let reg = TestRegistry::spawn();
    let long = "a".repeat(300);
    for (path, status, code) in [
        ("/v2/UPPER/tags/list", 400, "NAME_INVALID"),
        ("/v2/a%00b/tags/list", 400, "NAME_INVALID"),
        (&format!("/v2/{long}/tags/list"), 400, "NAME_INVALID"),
        (
            "/v2/a/blobs/sha256:..%2f..%2fetc%2fpasswd",
            400,
            "DIGEST_INVALID",
        ),
        ("/v2/a/manifests/bad%20tag", 404, "MANIFEST_UNKNOWN"),
        ("/v2/a/blobs/uploads/not..valid", 404, "BLOB_UPLOAD_UNKNOWN"),
        ("/v2/a/nothing-here", 404, "NAME_UNKNOWN"),
    ] {
        let r = reg.get(path).await;
        assert_eq!(r.status().as_u16(), status, "{path}");
        assert_eq!(crate::e2e::harness::error_code(r).await, code, "{path}");
    }
    // Raw paths that an HTTP client library would normalise away.
    for path in [
        "/v2/%2e%2e/tags/list",
        "/v2/a/%2E%2E/b/manifests/x",
        "/v2/a/../b/tags/list",
        "/v2/../../etc/passwd/tags/list",
        "/v2/./a/tags/list",
        "/v2//a/tags/list",
    ] {
        let (status, body) = crate::e2e::harness::raw_request(
            &reg.addr,
            &format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
            b"",
        );
        assert_eq!(status, 400, "{path}");
        assert!(body.contains("NAME_INVALID"), "{path}: {body}");
    }
    // Unsupported methods are 405 UNSUPPORTED.
    let r = reg
        .req(Method::POST, "/v2/a/tags/list")
        .send()
        .await
        .unwrap();
    expect_error(r, 405, "UNSUPPORTED").await;
    // The server is still serving.
    assert_eq!(reg.get("/v2/").await.status(), StatusCode::OK);
}

/// Blob bodies leave by sendfile on HTTP/1 connections and as plain bytes on HTTP/2: the
/// bytes must be the blob's either way, on kept-alive connections, one range after another,
/// and after clients that hung up half way.
#[tokio::test]
async fn end_2_blob_bytes_over_http1_and_http2() {
    use crate::e2e::harness::sha256;
    use std::io::{Read, Write};

    let reg = TestRegistry::spawn();
    // Larger than one body chunk of the sendfile path (4 MiB), not a multiple of it.
    let data = bytes(77, (9 << 20) + 12345);
    let d = reg.push_blob("send/file", &data).await;
    let path = format!("/v2/send/file/blobs/{d}");

    // Clients that hang up after the headers or a few bytes.
    for keep in [0usize, 100, 5 << 20] {
        let mut s = std::net::TcpStream::connect(reg.addr.as_str()).unwrap();
        write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut buf = vec![0u8; keep + 512];
        let mut got = 0;
        while got < keep + 1 {
            let n = s.read(&mut buf[got..]).unwrap();
            assert!(n > 0, "connection closed early");
            got += n;
        }
    }

    let h1 = reqwest::Client::builder().http1_only().build().unwrap();
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    for (client, version) in [
        (&h1, reqwest::Version::HTTP_11),
        (&h2, reqwest::Version::HTTP_2),
    ] {
        // One connection, requests in turn: whole, ranges across chunk borders, whole again.
        for range in [
            None,
            Some((0, 0)),
            Some(((4 << 20) - 3, (4 << 20) + 3)),
            Some((1, data.len() - 2)),
            None,
        ] {
            let mut req = client.get(reg.url(&path));
            if let Some((a, b)) = range {
                req = req.header("range", format!("bytes={a}-{b}"));
            }
            let r = req.send().await.unwrap();
            assert_eq!(r.version(), version);
            let body = r.bytes().await.unwrap();
            match range {
                None => assert_eq!(sha256(&body), d, "{version:?} whole"),
                Some((a, b)) => assert!(body[..] == data[a..=b], "{version:?} {a}-{b}"),
            }
        }
    }
}
