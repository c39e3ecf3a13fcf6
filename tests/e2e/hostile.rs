//! Hostile input, table-driven: bad names and path tricks, malformed and mismatched
//! digests, lying `Content-Length`s, chunks out of order, broken `Content-Range` and
//! `Range`, manifests that are malformed, huge, deeply nested or inconsistent, repeated
//! query parameters, huge headers. Each case is sent raw over TCP (no client library
//! tidies it up) and must get its status and the spec's error code — never a 500 — and
//! afterwards the server still serves, and nothing it stored has changed.

use crate::e2e::harness::{files, sha256, TestRegistry, OCI_INDEX, OCI_MANIFEST};
use crate::e2e::images::{bytes, ImageBuilder};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::Duration;

/// What came back for one raw request.
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: String,
    body: String,
}

impl Answer {
    fn code(&self) -> String {
        serde_json::from_str::<serde_json::Value>(&self.body)
            .ok()
            .and_then(|v| v["errors"][0]["code"].as_str().map(str::to_owned))
            .unwrap_or_default()
    }

    fn header(&self, name: &str) -> Option<String> {
        self.headers.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_owned())
        })
    }
}

/// Sends `head` (request line and headers, without the blank line) and `body` exactly as
/// given; `close_early` shuts the sending side after the body, whatever it announced.
fn raw(addr: &str, head: &str, body: &[u8], close_early: bool) -> Answer {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut req = head.as_bytes().to_vec();
    req.extend_from_slice(b"\r\nHost: test\r\nConnection: close\r\n\r\n");
    req.extend_from_slice(body);
    // The server may answer and close before reading everything (a refused body).
    let _ = s.write_all(&req);
    if close_early {
        let _ = s.shutdown(Shutdown::Write);
    }
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    Answer {
        status,
        headers: head.to_owned(),
        body: body.to_owned(),
    }
}

/// Every blob file and its content's digest, every tag of every repository, and what each
/// tag points to: what no hostile request may change.
async fn snapshot(reg: &TestRegistry) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for p in files(&reg.data.join("blobs")) {
        out.insert(p.display().to_string(), sha256(&std::fs::read(&p).unwrap()));
    }
    let catalog: serde_json::Value = reg.get("/v2/_catalog").await.json().await.unwrap();
    for repo in catalog["repositories"].as_array().unwrap() {
        let repo = repo.as_str().unwrap();
        let tags: serde_json::Value = reg
            .get(&format!("/v2/{repo}/tags/list"))
            .await
            .json()
            .await
            .unwrap();
        for tag in tags["tags"].as_array().unwrap() {
            let tag = tag.as_str().unwrap();
            let r = reg.get(&format!("/v2/{repo}/manifests/{tag}")).await;
            let body = r.bytes().await.unwrap();
            out.insert(format!("{repo}:{tag}"), sha256(&body));
        }
    }
    out
}

struct Case {
    name: &'static str,
    head: String,
    body: Vec<u8>,
    close_early: bool,
    status: u16,
    /// The spec's error code; empty when the status alone is what matters (the request
    /// never reached the registry: hyper refused it as HTTP).
    code: &'static str,
}

fn case(name: &'static str, head: impl Into<String>, status: u16, code: &'static str) -> Case {
    Case {
        name,
        head: head.into(),
        body: Vec::new(),
        close_early: false,
        status,
        code,
    }
}

fn with_body(mut c: Case, body: impl Into<Vec<u8>>) -> Case {
    c.body = body.into();
    c
}

/// Opens an upload session and returns its path.
async fn session(reg: &TestRegistry, repo: &str) -> String {
    let r = reg
        .req(reqwest::Method::POST, &format!("/v2/{repo}/blobs/uploads/"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    crate::e2e::harness::header(&r, "location")
}

/// A session that already holds bytes 0-9.
async fn session_with_ten(reg: &TestRegistry, repo: &str) -> String {
    let loc = session(reg, repo).await;
    let r = reg
        .req(reqwest::Method::PATCH, &loc)
        .header("content-type", "application/octet-stream")
        .header("content-range", "0-9")
        .body(vec![7u8; 10])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    crate::e2e::harness::header(&r, "location")
}

fn manifest_put(repo: &str, reference: &str, content_type: &str, body: Vec<u8>) -> Case {
    // Named by its reference, so a failure says which case it was.
    let name: &'static str = Box::leak(format!("manifest {reference}").into_boxed_str());
    with_body(
        case(
            name,
            format!(
                "PUT /v2/{repo}/manifests/{reference} HTTP/1.1\r\nContent-Type: {content_type}\r\nContent-Length: {}",
                body.len()
            ),
            400,
            "MANIFEST_INVALID",
        ),
        body,
    )
}

#[tokio::test]
async fn hostile_requests_get_the_spec_error_and_change_nothing() {
    let reg = TestRegistry::spawn();
    let img = ImageBuilder::new(61).layers(2, 5000).build();
    let digest = reg.push_image("good/repo", "v1", &img).await;
    let layer = sha256(&img.layers[0]);
    let layer_len = img.layers[0].len();
    let before = snapshot(&reg).await;

    let zero = format!("sha256:{}", "0".repeat(64));
    let long_name = vec!["a"; 200].join("/");
    let data = bytes(62, 100);
    let good_digest = sha256(&data);
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let missing_blob_manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": zero, "size": 2},
        "layers": [],
    }))
    .unwrap();

    let child_missing = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [{"mediaType": OCI_MANIFEST, "digest": zero, "size": 100}],
    }))
    .unwrap();
    let mut bad_digest: serde_json::Value = serde_json::from_slice(&img.manifest).unwrap();
    bad_digest["layers"][0]["digest"] = "sha256:zz".into();
    let bad_digest = serde_json::to_vec(&bad_digest).unwrap();
    let mut wrong_size: serde_json::Value = serde_json::from_slice(&img.manifest).unwrap();
    wrong_size["layers"][0]["size"] = 7.into();
    let wrong_size = serde_json::to_vec(&wrong_size).unwrap();
    let mut negative_size: serde_json::Value = serde_json::from_slice(&img.manifest).unwrap();
    negative_size["layers"][0]["size"] = (-1).into();
    let negative_size = serde_json::to_vec(&negative_size).unwrap();

    let mut cases = vec![
        // Names and paths.
        case("dot-dot segment", "GET /v2/good/../repo/manifests/v1 HTTP/1.1", 400, "NAME_INVALID"),
        case("encoded dot-dot", "GET /v2/good/%2e%2e/repo/manifests/v1 HTTP/1.1", 400, "NAME_INVALID"),
        case("encoded slash", "GET /v2/good%2f..%2frepo/manifests/v1 HTTP/1.1", 400, "NAME_INVALID"),
        case("absolute path", "GET /v2//etc/passwd/manifests/v1 HTTP/1.1", 400, "NAME_INVALID"),
        case("NUL byte", "GET /v2/good%00/repo/manifests/v1 HTTP/1.1", 400, "NAME_INVALID"),
        case("upper case", "GET /v2/Good/Repo/manifests/v1 HTTP/1.1", 400, "NAME_INVALID"),
        case("very long name", format!("GET /v2/{long_name}/manifests/v1 HTTP/1.1"), 400, "NAME_INVALID"),
        case("very long tag", format!("GET /v2/good/repo/manifests/{} HTTP/1.1", "t".repeat(200)), 404, "MANIFEST_UNKNOWN"),
        case("tag with a slash", "GET /v2/good/repo/manifests/..%2f..%2fx HTTP/1.1", 404, "MANIFEST_UNKNOWN"),
        case("PUT of a tag with a slash", "PUT /v2/good/repo/manifests/..%2f..%2fx HTTP/1.1\r\nContent-Length: 0", 400, "MANIFEST_INVALID"),
        case("upload id traversal", "GET /v2/good/repo/blobs/uploads/..%2f..%2fmeta.db HTTP/1.1", 404, "BLOB_UPLOAD_UNKNOWN"),
        case("upload id NUL", "PATCH /v2/good/repo/blobs/uploads/%00 HTTP/1.1\r\nContent-Length: 0", 404, "BLOB_UPLOAD_UNKNOWN"),
        case("unknown endpoint", "GET /v2/good/repo/nothing/here HTTP/1.1", 404, "NAME_UNKNOWN"),
        // Digests.
        case("digest not hex", "GET /v2/good/repo/blobs/sha256:xyz HTTP/1.1", 400, "DIGEST_INVALID"),
        case("digest short", format!("GET /v2/good/repo/blobs/sha256:{} HTTP/1.1", "a".repeat(63)), 400, "DIGEST_INVALID"),
        case("digest upper hex", format!("GET /v2/good/repo/blobs/sha256:{} HTTP/1.1", "A".repeat(64)), 400, "DIGEST_INVALID"),
        case("digest algorithm unknown", format!("GET /v2/good/repo/blobs/md5:{} HTTP/1.1", "a".repeat(32)), 400, "DIGEST_INVALID"),
        case("digest no algorithm", format!("GET /v2/good/repo/blobs/{} HTTP/1.1", "a".repeat(64)), 400, "DIGEST_INVALID"),
        with_body(
            case("monolithic digest mismatch", format!("POST /v2/good/repo/blobs/uploads/?digest={zero} HTTP/1.1\r\nContent-Length: 100"), 400, "DIGEST_INVALID"),
            data.clone(),
        ),
        with_body(
            case("monolithic digest given twice", format!("POST /v2/good/repo/blobs/uploads/?digest={good_digest}&digest={zero} HTTP/1.1\r\nContent-Length: 100"), 400, "DIGEST_INVALID"),
            data.clone(),
        ),
        with_body(
            case("mount digest invalid", "POST /v2/good/repo/blobs/uploads/?mount=sha256:zz&from=good/repo HTTP/1.1\r\nContent-Length: 0", 400, "DIGEST_INVALID"),
            Vec::new(),
        ),
        // Lying lengths.
        Case {
            close_early: true,
            ..with_body(
                case("body shorter than Content-Length", format!("POST /v2/good/repo/blobs/uploads/?digest={good_digest} HTTP/1.1\r\nContent-Length: 200"), 400, "BLOB_UPLOAD_INVALID"),
                data.clone(),
            )
        },
        with_body(
            case("body longer than Content-Length", format!("POST /v2/good/repo/blobs/uploads/?digest={good_digest} HTTP/1.1\r\nContent-Length: 50"), 400, "DIGEST_INVALID"),
            data.clone(),
        ),
        case("Content-Length not a number", "POST /v2/good/repo/blobs/uploads/ HTTP/1.1\r\nContent-Length: ten", 400, ""),
        case("two Content-Lengths", "POST /v2/good/repo/blobs/uploads/ HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2", 400, ""),
        // Ranges on reads.
        // RFC 9110: a range that is not valid syntax is ignored, and the whole blob served.
        case("Range reversed", format!("GET /v2/good/repo/blobs/{layer} HTTP/1.1\r\nRange: bytes=100-50"), 200, ""),
        case("Range garbage", format!("GET /v2/good/repo/blobs/{layer} HTTP/1.1\r\nRange: lines=1-2"), 200, ""),
        case("Range past the end", format!("GET /v2/good/repo/blobs/{layer} HTTP/1.1\r\nRange: bytes={layer_len}-"), 416, "SIZE_INVALID"),
        // Manifests.
        manifest_put("good/repo", "bad", OCI_MANIFEST, b"{not json".to_vec()),
        manifest_put("good/repo", "deep", OCI_MANIFEST, deep.into_bytes()),
        manifest_put("good/repo", "empty", OCI_MANIFEST, Vec::new()),
        manifest_put("good/repo", "array", OCI_MANIFEST, b"[1,2,3]".to_vec()),
        Case {
            status: 400,
            code: "MANIFEST_BLOB_UNKNOWN",
            ..manifest_put("good/repo", "missing", OCI_MANIFEST, missing_blob_manifest)
        },
        Case {
            status: 400,
            code: "MANIFEST_BLOB_UNKNOWN",
            ..manifest_put("good/repo", "child-missing", OCI_INDEX, child_missing)
        },
        manifest_put("good/repo", "bad-digest", OCI_MANIFEST, bad_digest),
        manifest_put("good/repo", "wrong-size", OCI_MANIFEST, wrong_size),
        manifest_put("good/repo", "negative-size", OCI_MANIFEST, negative_size),
        manifest_put("good/repo", "disagree", OCI_INDEX, img.manifest.clone()),
        manifest_put("good/repo", "unknown-type", "application/x-unknown", img.manifest.clone()),
        Case {
            status: 413,
            code: "SIZE_INVALID",
            ..manifest_put("good/repo", "huge", OCI_MANIFEST, vec![b' '; 5 << 20])
        },
        Case {
            status: 400,
            code: "DIGEST_INVALID",
            ..manifest_put("good/repo", &zero, OCI_MANIFEST, img.manifest.clone())
        },
        // Query parameters (UNSUPPORTED: the spec has no code for a bad page size).
        case("n twice", "GET /v2/good/repo/tags/list?n=1&n=2 HTTP/1.1", 400, "UNSUPPORTED"),
        case("n not a number", "GET /v2/good/repo/tags/list?n=many HTTP/1.1", 400, "UNSUPPORTED"),
        case("n negative", "GET /v2/_catalog?n=-1 HTTP/1.1", 400, "UNSUPPORTED"),
        case("referrers of a bad digest", "GET /v2/good/repo/referrers/sha256:nope HTTP/1.1", 400, "DIGEST_INVALID"),
        // Headers hyper refuses before any handler runs.
        case("huge header", format!("GET /v2/ HTTP/1.1\r\nX-Big: {}", "b".repeat(1 << 20)), 431, ""),
        case("too many headers", format!("GET /v2/ HTTP/1.1{}", "\r\nX-H: 1".repeat(500)), 431, ""),
        case("garbage request line", "\u{1}\u{2}\u{3} / HTTP/1.1", 400, ""),
        with_body(
            case("broken chunked encoding", format!("POST /v2/good/repo/blobs/uploads/?digest={good_digest} HTTP/1.1\r\nTransfer-Encoding: chunked"), 400, "BLOB_UPLOAD_INVALID"),
            b"zz\r\nhello\r\n0\r\n\r\n".to_vec(),
        ),
    ];

    // Chunks out of order and overlapping, invalid Content-Range, on live sessions.
    for (name, range, status, code) in [
        ("chunk out of order", "20-29", 416, "BLOB_UPLOAD_INVALID"),
        ("chunk overlapping", "5-14", 416, "BLOB_UPLOAD_INVALID"),
        (
            "Content-Range reversed",
            "19-10",
            416,
            "BLOB_UPLOAD_INVALID",
        ),
        (
            "Content-Range garbage",
            "ten-twenty",
            416,
            "BLOB_UPLOAD_INVALID",
        ),
        (
            "Content-Range longer than the body",
            "10-109",
            400,
            "SIZE_INVALID",
        ),
    ] {
        let loc = session_with_ten(&reg, "good/repo").await;
        cases.push(with_body(
            case(
                name,
                format!("PATCH {loc} HTTP/1.1\r\nContent-Type: application/octet-stream\r\nContent-Range: {range}\r\nContent-Length: 10"),
                status,
                code,
            ),
            vec![1u8; 10],
        ));
    }
    let loc = session_with_ten(&reg, "good/repo").await;
    let sep = if loc.contains('?') { '&' } else { '?' };
    cases.push(case(
        "finish with a digest of other content",
        format!("PUT {loc}{sep}digest={zero} HTTP/1.1\r\nContent-Length: 0"),
        400,
        "DIGEST_INVALID",
    ));

    let mut failures = Vec::new();
    let total = cases.len();
    for c in cases {
        let a = raw(&reg.addr, &c.head, &c.body, c.close_early);
        let ok = a.status == c.status && (c.code.is_empty() || a.code() == c.code);
        if !ok || a.status >= 500 {
            failures.push(format!(
                "{}: expected {} {}, got {} {:?} {}",
                c.name,
                c.status,
                c.code,
                a.status,
                a.code(),
                a.body.chars().take(200).collect::<String>()
            ));
        }
        if a.status == 416
            && c.name.starts_with("Range")
            && a.header("content-range") != Some(format!("bytes */{layer_len}"))
        {
            failures.push(format!("{}: no Content-Range: bytes */{layer_len}", c.name));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {total} cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );

    // Still serving, and nothing stored changed.
    let r = reg.get("/v2/good/repo/manifests/v1").await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        crate::e2e::harness::header(&r, "docker-content-digest"),
        digest
    );
    assert_eq!(snapshot(&reg).await, before);
    println!("{total} hostile cases answered as the spec says");
}
