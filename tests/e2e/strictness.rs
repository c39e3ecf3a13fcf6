//! Regression tests for the last places where answers differed from the spec, RFC 9110 and
//! RFC 9112 and the OCI conformance suite: each test is named after its case, and sends it
//! raw over TCP where a client library would tidy the request up.

use crate::e2e::harness::{error_code, header, sha256, TestRegistry, OCI_MANIFEST};
use crate::e2e::images::ImageBuilder;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// Sends `request` (complete, blank line included) and reads until the server closes the
/// connection or 5 s pass; returns what came back and whether the server closed it.
fn exchange(addr: &str, request: &str) -> (String, bool) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let (mut out, mut buf) = (Vec::new(), [0u8; 4096]);
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(5) {
        match s.read(&mut buf) {
            Ok(0) => return (String::from_utf8_lossy(&out).into_owned(), true),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(_) => continue,
        }
    }
    (String::from_utf8_lossy(&out).into_owned(), false)
}

fn status_of(answer: &str) -> u16 {
    answer
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn end_3_get_and_head_of_an_invalid_reference_are_404_manifest_unknown() {
    let reg = TestRegistry::spawn();
    let img = ImageBuilder::new(90).layers(1, 100).build();
    reg.push_image("conf/repo", "v1", &img).await;
    for reference in [".INVALID_MANIFEST_NAME", "-dash", "sha256:zzz", "bad%20tag"] {
        let path = format!("/v2/conf/repo/manifests/{reference}");
        let r = reg.get(&path).await;
        assert_eq!(r.status(), 404, "GET {reference}");
        assert_eq!(error_code(r).await, "MANIFEST_UNKNOWN", "GET {reference}");
        let r = reg.req(reqwest::Method::HEAD, &path).send().await.unwrap();
        assert_eq!(r.status(), 404, "HEAD {reference}");
        let r = reg
            .req(reqwest::Method::DELETE, &path)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404, "DELETE {reference}");
    }
    // A PUT asks for a name no tag may have: still refused as invalid.
    let r = reg
        .req(
            reqwest::Method::PUT,
            "/v2/conf/repo/manifests/.INVALID_MANIFEST_NAME",
        )
        .header("content-type", OCI_MANIFEST)
        .body(img.manifest.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(error_code(r).await, "MANIFEST_INVALID");
}

#[tokio::test]
async fn end_2_blob_digest_with_path_traversal_is_digest_invalid_not_name_unknown() {
    let reg = TestRegistry::spawn();
    let img = ImageBuilder::new(91).layers(1, 100).build();
    reg.push_image("good/repo", "v1", &img).await;
    for (method, path) in [
        ("GET", "/v2/good/repo/blobs/sha256:../../../../etc/passwd"),
        ("HEAD", "/v2/good/repo/blobs/sha256:../../../../etc/passwd"),
        (
            "DELETE",
            "/v2/good/repo/blobs/sha256:../../../../etc/passwd",
        ),
        (
            "GET",
            "/v2/good/repo/blobs/sha256:..%2F..%2F..%2F..%2Fetc%2Fpasswd",
        ),
        ("GET", "/v2/good/repo/blobs/sha256%3A..%2F..%2Fetc%2Fpasswd"),
        ("GET", "/v2/good/repo/blobs/../../etc/passwd"),
        ("GET", "/v2/good/repo/referrers/sha256:../../etc/passwd"),
    ] {
        let (answer, _) = exchange(
            &reg.addr,
            &format!("{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
        );
        assert_eq!(status_of(&answer), 400, "{method} {path}: {answer}");
        assert!(
            method == "HEAD" || answer.contains("DIGEST_INVALID"),
            "{method} {path}: {answer}"
        );
    }
    // The traversal reached nothing: the repository still serves its manifest.
    assert_eq!(reg.get("/v2/good/repo/manifests/v1").await.status(), 200);
}

#[tokio::test]
async fn http_1_1_without_host_is_400_and_the_connection_closes() {
    let reg = TestRegistry::spawn();
    // Pipelined: the second request must not be answered on a connection the first broke.
    let (answer, closed) = exchange(
        &reg.addr,
        "GET /v2/ HTTP/1.1\r\n\r\nGET /v2/ HTTP/1.1\r\nHost: x\r\n\r\n",
    );
    assert_eq!(status_of(&answer), 400, "{answer}");
    assert!(closed, "connection left open: {answer}");
    assert_eq!(answer.matches("HTTP/1.1 ").count(), 1, "{answer}");
    // HTTP/1.0 may omit it.
    let (answer, _) = exchange(&reg.addr, "GET /v2/ HTTP/1.0\r\n\r\n");
    assert_eq!(status_of(&answer), 200, "{answer}");
}

#[tokio::test]
async fn two_host_headers_are_400_and_the_connection_closes() {
    let reg = TestRegistry::spawn();
    let (answer, closed) = exchange(&reg.addr, "GET /v2/ HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n");
    assert_eq!(status_of(&answer), 400, "{answer}");
    assert!(closed, "connection left open: {answer}");
}

#[tokio::test]
async fn an_invalid_host_value_is_400_and_the_connection_closes() {
    let reg = TestRegistry::spawn();
    for host in ["a b", "user@host", "host:port", "[::1", "x/y"] {
        let (answer, closed) = exchange(
            &reg.addr,
            &format!("GET /v2/_catalog HTTP/1.1\r\nHost: {host}\r\n\r\n"),
        );
        assert_eq!(status_of(&answer), 400, "{host}: {answer}");
        assert!(closed, "{host}: connection left open");
    }
    let (answer, _) = exchange(
        &reg.addr,
        "GET /v2/ HTTP/1.1\r\nHost: [::1]:5000\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status_of(&answer), 200, "{answer}");
}

#[tokio::test]
async fn end_2_head_of_a_blob_ignores_an_unsatisfiable_range() {
    let reg = TestRegistry::spawn();
    let data = crate::e2e::images::bytes(92, 1000);
    let digest = reg.push_blob("range/repo", &data).await;
    assert_eq!(digest, sha256(&data));
    let path = format!("/v2/range/repo/blobs/{digest}");
    for range in ["bytes=1000-", "bytes=5000-6000", "bytes=0-9"] {
        let r = reg
            .req(reqwest::Method::HEAD, &path)
            .header("range", range)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{range}");
        assert_eq!(header(&r, "content-length"), "1000", "{range}");
        assert!(r.headers().get("content-range").is_none(), "{range}");
    }
    // GET still honours it.
    let r = reg
        .req(reqwest::Method::GET, &path)
        .header("range", "bytes=1000-")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 416);
}
