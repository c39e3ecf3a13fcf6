//! The registry on S3-compatible storage (the server at `BERTH_TEST_S3`, which CI starts,
//! bucket `berth-test`): pushes whole and chunked, pulls by redirect to a presigned URL and
//! streamed. Without `BERTH_TEST_S3` these tests are skipped, except under CI, where that
//! fails.

use crate::e2e::harness::{header, sha256, TestRegistry};
use reqwest::{Method, StatusCode};

/// A registry on a fresh prefix of the test bucket, with SQLite in `dir`.
fn spawn(dir: &std::path::Path, redirect: bool) -> Option<TestRegistry> {
    let endpoint = berth_store::testsuite::s3_test_server()?;
    let prefix = format!("e2e-{}", dir.file_name()?.to_str()?);
    let config = format!(
        "[storage]\ntype = \"s3\"\nbucket = \"berth-test\"\nprefix = \"{prefix}\"\n\
         region = \"us-east-1\"\nendpoint = \"{endpoint}\"\npath_style = true\n\
         access_key_id = \"berth-test\"\nsecret_access_key = \"berth-test-secret\"\n\
         redirect = {redirect}\n\n[database]\nurl = \"sqlite://{}/meta.db\"\n",
        dir.display()
    );
    let path = dir.join("berth.toml");
    std::fs::write(&path, config).ok()?;
    Some(TestRegistry::spawn_in(dir, &["--config", path.to_str()?]))
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len as u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 9) as u8)
        .collect()
}

/// Sends `data` as a chunked upload in PATCHes of `chunk` bytes, then the finishing PUT.
async fn push_chunked(reg: &TestRegistry, repo: &str, data: &[u8], chunk: usize) -> String {
    let digest = sha256(data);
    let r = reg
        .req(Method::POST, &format!("/v2/{repo}/blobs/uploads/"))
        .send()
        .await
        .unwrap();
    let mut loc = header(&r, "location");
    for (i, part) in data.chunks(chunk).enumerate() {
        let r = reg.patch_chunk(&loc, i * chunk, part).await;
        assert_eq!(r.status(), StatusCode::ACCEPTED);
        loc = header(&r, "location");
    }
    let r = reg.finish_upload(&loc, &digest).await;
    assert_eq!(
        r.status(),
        StatusCode::CREATED,
        "{}",
        r.text().await.unwrap()
    );
    digest
}

/// A blob pushed in PATCHes smaller than a part (the bytes wait in the bucket until a part
/// fills), and one pushed whole, come back byte for byte: a redirect to a presigned URL that
/// honours `Range`, which a client following it reads like any blob.
#[tokio::test]
async fn s3_push_chunked_and_whole_then_pull_by_redirect() {
    let dir = tempfile::tempdir().unwrap();
    let Some(reg) = spawn(dir.path(), true) else {
        return;
    };
    let big = pattern(19 << 20);
    let d = push_chunked(&reg, "s3/app", &big, 3 << 20).await;
    let small = reg.push_blob("s3/app", b"a small blob").await;

    let plain = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let r = plain
        .get(reg.url(&format!("/v2/s3/app/blobs/{d}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::TEMPORARY_REDIRECT);
    assert_eq!(header(&r, "docker-content-digest"), d);
    let location = header(&r, "location");
    let whole = plain
        .get(&location)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert!(whole[..] == big[..], "the redirected blob differs");
    let part = plain
        .get(&location)
        .header("range", "bytes=1000-1999")
        .send()
        .await
        .unwrap();
    assert_eq!(part.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(part.bytes().await.unwrap()[..], big[1000..2000]);

    let followed = reg.get(&format!("/v2/s3/app/blobs/{small}")).await;
    assert_eq!(followed.bytes().await.unwrap()[..], b"a small blob"[..]);
    let head = reg
        .req(Method::HEAD, &format!("/v2/s3/app/blobs/{d}"))
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), StatusCode::OK);
    assert_eq!(header(&head, "content-length"), (19 << 20).to_string());
}

/// With `redirect = false` the node streams blobs itself, ranges included; a session
/// continues after a restart from its record, its bytes waiting in the bucket.
#[tokio::test]
async fn s3_streams_without_redirect_and_sessions_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let Some(mut reg) = spawn(dir.path(), false) else {
        return;
    };
    let data = pattern(7 << 20);
    let r = reg
        .req(Method::POST, "/v2/s3/restart/blobs/uploads/")
        .send()
        .await
        .unwrap();
    let loc = header(&r, "location");
    let first = reg.patch_chunk(&loc, 0, &data[..4 << 20]).await;
    assert_eq!(first.status(), StatusCode::ACCEPTED);
    let loc = header(&first, "location");
    reg.kill();
    let reg = spawn(dir.path(), false).unwrap();
    let r = reg.patch_chunk(&loc, 4 << 20, &data[4 << 20..]).await;
    assert_eq!(
        r.status(),
        StatusCode::ACCEPTED,
        "{}",
        r.text().await.unwrap()
    );
    let loc = header(&r, "location");
    let digest = sha256(&data);
    let r = reg.finish_upload(&loc, &digest).await;
    assert_eq!(
        r.status(),
        StatusCode::CREATED,
        "{}",
        r.text().await.unwrap()
    );
    let got = reg.get(&format!("/v2/s3/restart/blobs/{digest}")).await;
    assert_eq!(got.status(), StatusCode::OK);
    assert!(got.bytes().await.unwrap()[..] == data[..]);
    let range = reg
        .req(Method::GET, &format!("/v2/s3/restart/blobs/{digest}"))
        .header("range", "bytes=5-9")
        .send()
        .await
        .unwrap();
    assert_eq!(range.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(range.bytes().await.unwrap()[..], data[5..10]);
}

/// A bucket that cannot be reached answers 503 with `Retry-After` (a retry may succeed),
/// not 500, and the registry goes on serving what needs no storage.
#[tokio::test]
async fn an_unreachable_bucket_answers_503_with_retry_after() {
    let dir = tempfile::tempdir().unwrap();
    // A port nothing listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let config = format!(
        "[storage]\ntype = \"s3\"\nbucket = \"b\"\nregion = \"us-east-1\"\n\
         endpoint = \"{endpoint}\"\npath_style = true\naccess_key_id = \"k\"\n\
         secret_access_key = \"s\"\n\n[database]\nurl = \"sqlite://{}/meta.db\"\n",
        dir.path().display()
    );
    let path = dir.path().join("berth.toml");
    std::fs::write(&path, config).unwrap();
    let reg = TestRegistry::spawn_in(dir.path(), &["--config", path.to_str().unwrap()]);
    let digest = sha256(b"nowhere to go");
    let r = reg
        .req(
            Method::POST,
            &format!("/v2/dead/blobs/uploads/?digest={digest}"),
        )
        .body(b"nowhere to go".to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(header(&r, "retry-after"), "1");
    let body = r.text().await.unwrap();
    assert!(body.contains("UNAVAILABLE"), "{body}");
    assert_eq!(reg.get("/v2/").await.status(), StatusCode::OK);
}
