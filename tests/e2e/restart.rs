//! Upload sessions survive a restart: half a blob in, the server killed and started again on
//! the same data, the rest in, and the blob pulls back whole.

use crate::e2e::harness::{header, sha256, TestRegistry};
use crate::e2e::images::bytes;
use reqwest::{Method, StatusCode};

#[tokio::test]
async fn upload_resumes_after_restart() {
    let reg = TestRegistry::spawn();
    let data = bytes(42, 3 << 20);
    let half = data.len() / 2;
    let r = reg
        .req(Method::POST, "/v2/resume/me/blobs/uploads/")
        .send()
        .await
        .unwrap();
    let loc = header(&r, "location");
    // A second session that has received nothing yet: its id must still verify after the
    // restart (the key that signs ids is kept in the database).
    let r = reg
        .req(Method::POST, "/v2/resume/me/blobs/uploads/")
        .send()
        .await
        .unwrap();
    let empty = header(&r, "location");
    let r = reg
        .req(Method::PATCH, &loc)
        .header("content-range", format!("0-{}", half - 1))
        .body(data[..half].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);

    // SIGKILL: no chance to flush anything that was not already durable.
    let dir = reg.into_data();
    let reg = TestRegistry::spawn_with(dir.path(), &[]);

    let r = reg.get(&loc).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(header(&r, "range"), format!("0-{}", half - 1));
    let small = b"sent after the restart";
    let r = reg
        .req(Method::PUT, &format!("{empty}?digest={}", sha256(small)))
        .body(small.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let d = sha256(&data);
    let r = reg
        .req(Method::PUT, &format!("{loc}?digest={d}"))
        .header("content-range", format!("{half}-{}", data.len() - 1))
        .body(data[half..].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::CREATED,
        "{}",
        r.text().await.unwrap_or_default()
    );
    let body = reg
        .get(&format!("/v2/resume/me/blobs/{d}"))
        .await
        .bytes()
        .await
        .unwrap();
    assert_eq!(sha256(&body), d);
    assert_eq!(body.len(), data.len());
    drop(dir);
}

#[tokio::test]
async fn pushed_images_survive_a_kill() {
    let reg = TestRegistry::spawn();
    let img = crate::e2e::images::ImageBuilder::new(3)
        .layers(2, 1000)
        .build();
    let digest = reg.push_image("keep/me", "v1", &img).await;
    let dir = reg.into_data();
    let reg = TestRegistry::spawn_with(dir.path(), &[]);
    let r = reg.get("/v2/keep/me/manifests/v1").await;
    assert_eq!(header(&r, "docker-content-digest"), digest);
    for l in &img.layers {
        let b = reg
            .get(&format!("/v2/keep/me/blobs/{}", sha256(l)))
            .await
            .bytes()
            .await
            .unwrap();
        assert_eq!(b.to_vec(), *l);
    }
    drop(reg);
    drop(dir);
}
