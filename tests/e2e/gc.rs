//! Garbage collection, retention, accounting and reconciliation through the administration
//! API, checked against what is on disk: the figures must match the blob directory, and a
//! collection must free exactly what it reports.

use crate::e2e::harness::{header, link_target, sha256, TestRegistry, OCI_INDEX, OCI_MANIFEST};
use crate::e2e::images::{bytes, Image, ImageBuilder};
use reqwest::{Method, StatusCode};
use serde_json::Value;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// A registry with this configuration (scheduled jobs off unless `config` says otherwise).
fn spawn(dir: &Path, config: &str) -> TestRegistry {
    let path = dir.join("berth.toml");
    let text = if config.contains("[gc]") {
        config.to_owned()
    } else {
        format!("[gc]\ninterval = 0\nreconcile_interval = 0\n{config}")
    };
    std::fs::write(&path, text).unwrap();
    TestRegistry::spawn_with(&dir.join("data"), &["--config", path.to_str().unwrap()])
}

/// Bytes of the files under `dir`, recursively.
fn disk_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let m = e.metadata().unwrap();
        total += if m.is_dir() {
            disk_bytes(&e.path())
        } else {
            m.len()
        };
    }
    total
}

fn files(dir: &Path) -> usize {
    let mut n = 0;
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        n += if e.metadata().unwrap().is_dir() {
            files(&e.path())
        } else {
            1
        };
    }
    n
}

async fn json(reg: &TestRegistry, method: Method, path: &str) -> Value {
    let r = reg.req(method, path).send().await.unwrap();
    if r.status() != StatusCode::OK {
        let log = std::fs::read_to_string(reg.log_path()).unwrap_or_default();
        let errors: Vec<&str> = log.lines().filter(|l| l.contains("ERROR")).collect();
        panic!("{path}: {}\n{}", r.status(), errors.join("\n"));
    }
    r.json().await.unwrap()
}

async fn gc(reg: &TestRegistry, query: &str) -> Value {
    json(reg, Method::POST, &format!("/api/v1/gc?{query}")).await
}

fn repo_figures<'a>(usage: &'a Value, name: &str) -> &'a Value {
    usage["repositories"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == name)
        .unwrap_or_else(|| panic!("{name} in {usage}"))
}

/// Pulls every blob of `image` from `repo` and checks its digest.
async fn pull_whole(reg: &TestRegistry, repo: &str, image: &Image) {
    let r = reg
        .req(
            Method::GET,
            &format!("/v2/{repo}/manifests/{}", image.digest()),
        )
        .header("accept", OCI_MANIFEST)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(sha256(&r.bytes().await.unwrap()), image.digest());
    for blob in std::iter::once(&image.config).chain(&image.layers) {
        let d = sha256(blob);
        let r = reg.get(&format!("/v2/{repo}/blobs/{d}")).await;
        assert_eq!(r.status(), StatusCode::OK, "{repo} {d}");
        assert_eq!(sha256(&r.bytes().await.unwrap()), d);
    }
}

#[tokio::test]
async fn gc_frees_exactly_what_it_reports_and_usage_matches_the_disk() {
    let dir = tempfile::tempdir().unwrap();
    let reg = spawn(dir.path(), "");
    let blobs_dir = reg.data.join("blobs");
    let base = bytes(1, 40_000);
    let a = ImageBuilder::new(10)
        .layer(base.clone())
        .layers(1, 3_000)
        .build();
    let b = ImageBuilder::new(20)
        .layer(base.clone())
        .layers(1, 5_000)
        .build();
    reg.push_image("app/a", "v1", &a).await;
    reg.push_image("app/b", "v1", &b).await;
    let loose = reg.push_blob("app/a", &bytes(3, 7_777)).await;

    // Stored once: the base layer is one file, and physical bytes are the directory's.
    let usage = json(&reg, Method::GET, "/api/v1/usage").await;
    let on_disk = disk_bytes(&blobs_dir);
    assert_eq!(usage["physical_bytes"], on_disk, "{usage}");
    let image_bytes = |i: &Image| {
        (i.manifest.len() + i.config.len() + i.layers.iter().map(Vec::len).sum::<usize>()) as u64
    };
    assert_eq!(usage["logical_bytes"], image_bytes(&a) + image_bytes(&b));
    assert_eq!(
        on_disk,
        image_bytes(&a) + image_bytes(&b) - base.len() as u64 + 7_777
    );
    assert!(usage["dedup_ratio"].as_f64().unwrap() > 1.0);
    let fa = repo_figures(&usage, "app/a");
    assert_eq!(fa["shared_bytes"], base.len() as u64);
    assert_eq!(
        fa["unique_bytes"],
        image_bytes(&a) - base.len() as u64 + 7_777
    );
    assert_eq!(
        (fa["tags"].as_u64(), fa["manifests"].as_u64()),
        (Some(1), Some(1))
    );
    assert!(fa["last_push"].is_string() && fa["last_pull"].is_null());

    // The default grace period spares what was just pushed.
    let r = gc(&reg, "").await;
    assert_eq!(r["blobs_deleted"], 0);
    // A dry run reports the loose blob and deletes nothing.
    let r = gc(&reg, "dry_run=true&grace_period=0").await;
    assert_eq!(r["dry_run"], true);
    assert_eq!(
        (r["blobs_deleted"].as_u64(), r["bytes_deleted"].as_u64()),
        (Some(1), Some(7_777))
    );
    assert_eq!(r["blobs"][0]["digest"], loose);
    assert_eq!(disk_bytes(&blobs_dir), on_disk);

    // Delete image b: its manifest, config and own layer go; the shared base stays.
    let r = reg
        .req(
            Method::DELETE,
            &format!("/v2/app/b/manifests/{}", b.digest()),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let r = gc(&reg, "grace_period=0s").await;
    let freed = r["bytes_deleted"].as_u64().unwrap();
    assert_eq!(r["blobs_deleted"], 4, "{r}");
    assert_eq!(freed, image_bytes(&b) - base.len() as u64 + 7_777);
    let after = disk_bytes(&blobs_dir);
    assert_eq!(
        on_disk - after,
        freed,
        "the disk shrank by what was reported"
    );
    let usage = json(&reg, Method::GET, "/api/v1/usage").await;
    assert_eq!(usage["physical_bytes"], after);
    assert_eq!(repo_figures(&usage, "app/a")["shared_bytes"], 0);
    // app/b is left with nothing and goes from the catalog.
    let cat: Value = reg.get("/v2/_catalog").await.json().await.unwrap();
    assert_eq!(cat["repositories"], serde_json::json!(["app/a"]));
    pull_whole(&reg, "app/a", &a).await;
    let r = reg.get(&format!("/v2/app/a/blobs/{loose}")).await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    // Nothing left to collect.
    assert_eq!(gc(&reg, "grace_period=0").await["blobs_deleted"], 0);
    // Bad parameters are refused.
    for q in ["dry_run=maybe", "grace_period=soon"] {
        let r = reg
            .req(Method::POST, &format!("/api/v1/gc?{q}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{q}");
    }
}

/// Pushes `image` (blobs skipped when the repository has them, as clients do), then its
/// manifest under `tag`; `true` when the manifest was accepted.
async fn push_like_a_client(reg: &TestRegistry, repo: &str, tag: &str, image: &Image) -> bool {
    for blob in std::iter::once(&image.config).chain(&image.layers) {
        let d = sha256(blob);
        let head = reg
            .req(Method::HEAD, &format!("/v2/{repo}/blobs/{d}"))
            .send()
            .await
            .unwrap();
        if head.status() == StatusCode::OK {
            continue;
        }
        let r = reg
            .req(
                Method::POST,
                &format!("/v2/{repo}/blobs/uploads/?digest={d}"),
            )
            .body(blob.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::CREATED);
    }
    let r = reg
        .put_manifest(repo, tag, OCI_MANIFEST, &image.manifest)
        .await;
    match r.status() {
        StatusCode::CREATED => true,
        // The collector took a layer between the HEAD and the manifest: refused, not lost.
        StatusCode::BAD_REQUEST => false,
        s => panic!("manifest PUT: {s}"),
    }
}

/// A collector with no grace period runs in a loop while clients push images sharing layers
/// (skipping blobs the repository has, as clients do) and delete their older images, so
/// that layers keep turning into garbage and back. Afterwards every image still acknowledged
/// pulls whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn gc_in_a_loop_never_breaks_an_acknowledged_push() {
    let dir = tempfile::tempdir().unwrap();
    let reg = Arc::new(spawn(dir.path(), ""));
    let pool: Arc<Vec<Vec<u8>>> = Arc::new(
        (0..12)
            .map(|k| bytes(500 + k, 1024 + k as usize * 64))
            .collect(),
    );
    let stop = Arc::new(AtomicBool::new(false));
    let (runs, collected, refused) = (
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
    );
    let collector = {
        let (reg, stop, runs, collected) =
            (reg.clone(), stop.clone(), runs.clone(), collected.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let r = gc(&reg, "grace_period=0").await;
                collected.fetch_add(r["blobs_deleted"].as_u64().unwrap(), Ordering::Relaxed);
                runs.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    const PUSHERS: u64 = 4;
    const ITERATIONS: u64 = 500;
    let mut pushers = Vec::new();
    for p in 0..PUSHERS {
        let (reg, pool, refused) = (reg.clone(), pool.clone(), refused.clone());
        pushers.push(tokio::spawn(async move {
            let repo = format!("race/{}", p % 2);
            let (mut acked, mut kept): (u64, Vec<Image>) = (0, Vec::new());
            for i in 0..ITERATIONS {
                let k = (i * 5 + p * 3) as usize;
                let image = ImageBuilder::new(1_000 * p + i)
                    .layer(pool[k % pool.len()].clone())
                    .layer(pool[(k + 1) % pool.len()].clone())
                    .build();
                // A refused push is retried, as clients do, re-uploading what went.
                for _attempt in 0..5 {
                    if push_like_a_client(&reg, &repo, &format!("p{p}-{i}"), &image).await {
                        acked += 1;
                        kept.push(image);
                        break;
                    }
                    refused.fetch_add(1, Ordering::Relaxed);
                }
                // Keep the last two; older ones are deleted, their layers left to the collector.
                while kept.len() > 2 {
                    let old = kept.remove(0);
                    let r = reg
                        .req(
                            Method::DELETE,
                            &format!("/v2/{repo}/manifests/{}", old.digest()),
                        )
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(r.status(), StatusCode::ACCEPTED);
                }
            }
            (repo, acked, kept)
        }));
    }
    let mut results = Vec::new();
    for p in pushers {
        results.push(p.await.unwrap());
    }
    stop.store(true, Ordering::Relaxed);
    collector.await.unwrap();
    let acked: u64 = results.iter().map(|(_, a, _)| a).sum();
    let (runs, collected) = (
        runs.load(Ordering::Relaxed),
        collected.load(Ordering::Relaxed),
    );
    eprintln!(
        "{acked} of {} pushes acknowledged ({} refused attempts retried), {runs} collections deleted {collected} blobs",
        PUSHERS * ITERATIONS,
        refused.load(Ordering::Relaxed)
    );
    // With no grace period, a layer uploaded and not yet referenced is fair game: a push
    // may be refused (and is retried); it must never be acknowledged and then broken.
    // (About two in three get through here; a loaded machine may see fewer.)
    assert!(
        acked > PUSHERS * ITERATIONS / 4,
        "pushes get through: {acked}"
    );
    assert!(
        runs > 10 && collected > 100,
        "the collector did run and delete: {runs} runs, {collected} blobs"
    );
    for (repo, _, kept) in &results {
        for image in kept {
            pull_whole(&reg, repo, image).await;
        }
    }
    // And everything any tag names pulls whole: no dangling manifest anywhere.
    for repo in ["race/0", "race/1"] {
        let tags: Value = reg
            .get(&format!("/v2/{repo}/tags/list"))
            .await
            .json()
            .await
            .unwrap();
        for t in tags["tags"].as_array().unwrap() {
            let r = reg
                .req(
                    Method::GET,
                    &format!("/v2/{repo}/manifests/{}", t.as_str().unwrap()),
                )
                .header("accept", OCI_MANIFEST)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), StatusCode::OK);
            let m: Value = r.json().await.unwrap();
            for d in std::iter::once(&m["config"]).chain(m["layers"].as_array().unwrap()) {
                let d = d["digest"].as_str().unwrap();
                let r = reg.get(&format!("/v2/{repo}/blobs/{d}")).await;
                assert_eq!(r.status(), StatusCode::OK, "{repo}:{t} {d}");
                assert_eq!(sha256(&r.bytes().await.unwrap()), d);
            }
        }
    }
    // The figures still match the disk after all that.
    let usage = json(&reg, Method::GET, "/api/v1/usage").await;
    assert_eq!(usage["physical_bytes"], disk_bytes(&reg.data.join("blobs")));
}

const RETENTION: &str = r#"
[[retention]]
repositories = ["ret/**"]
keep_last = 2
protect_tags = "stable"
untagged_after = "0s"

[[retention]]
repositories = ["dry/**"]
keep_last = 1
dry_run = true
"#;

#[tokio::test]
async fn retention_deletes_old_tags_untagged_manifests_and_their_referrers() {
    let dir = tempfile::tempdir().unwrap();
    let reg = spawn(dir.path(), RETENTION);
    let images: Vec<Image> = (1..=4)
        .map(|i| ImageBuilder::new(i).layers(1, 500).build())
        .collect();
    for (i, image) in images.iter().enumerate() {
        reg.push_image("ret/app", &format!("v{}", i + 1), image)
            .await;
        reg.push_image("dry/app", &format!("v{}", i + 1), image)
            .await;
        // Push times order the tags.
        tokio::time::sleep(Duration::from_millis(15)).await;
    }
    // v1's image is also `stable` (protected); v2's image has a signature.
    let r = reg
        .put_manifest("ret/app", "stable", OCI_MANIFEST, &images[0].manifest)
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let sig = ImageBuilder::new(99)
        .layers(1, 100)
        .subject(&images[1].digest(), images[1].manifest.len())
        .artifact_type("application/vnd.example.signature")
        .build();
    reg.push_image("ret/app", &sig.digest(), &sig).await;
    // An index of two untagged images (kept: they are its children), and an untagged image.
    let children: Vec<Image> = (50..52)
        .map(|i| ImageBuilder::new(i).layers(1, 200).build())
        .collect();
    for c in &children {
        reg.push_image("ret/app", &c.digest(), c).await;
    }
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": children.iter().map(|c| serde_json::json!({"mediaType": OCI_MANIFEST, "digest": c.digest(), "size": c.manifest.len()})).collect::<Vec<_>>(),
    });
    let r = reg
        .put_manifest(
            "ret/app",
            "multi",
            OCI_INDEX,
            &serde_json::to_vec(&index).unwrap(),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let loose = ImageBuilder::new(60).layers(1, 300).build();
    reg.push_image("ret/app", &loose.digest(), &loose).await;

    let dry = gc(&reg, "dry_run=true").await;
    assert_eq!(
        dry["tags_deleted"].as_array().unwrap().len(),
        3 + 3,
        "{dry}"
    );
    let r = gc(&reg, "").await;
    let deleted = |what: &str| -> Vec<(String, String, String)> {
        let mut v: Vec<_> = r[what]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| {
                (
                    d["repository"].as_str().unwrap().to_owned(),
                    d["tag"]
                        .as_str()
                        .unwrap_or(d["digest"].as_str().unwrap())
                        .to_owned(),
                    d["reason"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        v.sort();
        v
    };
    let t = |r: &str, x: &str, why: &str| (r.to_owned(), x.to_owned(), why.to_owned());
    // "multi" is the most recent tag, then v4: v1..v3 go in ret/app (stable protects v1's
    // image); the dry rule only reports.
    assert_eq!(
        deleted("tags_deleted"),
        vec![
            t("dry/app", "v1", "keep_last"),
            t("dry/app", "v2", "keep_last"),
            t("dry/app", "v3", "keep_last"),
            t("ret/app", "v1", "keep_last"),
            t("ret/app", "v2", "keep_last"),
            t("ret/app", "v3", "keep_last"),
        ]
    );
    assert!(r["tags_deleted"]
        .as_array()
        .unwrap()
        .iter()
        .all(|d| d["dry_run"] == (d["repository"] == "dry/app")));
    let mut want = vec![
        t("ret/app", &images[1].digest(), "last tag deleted"),
        t("ret/app", &images[2].digest(), "last tag deleted"),
        t("ret/app", &sig.digest(), "subject deleted"),
        t("ret/app", &loose.digest(), "untagged"),
        t("dry/app", &images[0].digest(), "last tag deleted"),
        t("dry/app", &images[1].digest(), "last tag deleted"),
        t("dry/app", &images[2].digest(), "last tag deleted"),
    ];
    want.sort();
    assert_eq!(deleted("manifests_deleted"), want);

    let status = |path: String| {
        let reg = &reg;
        async move {
            reg.req(Method::GET, &path)
                .header("accept", format!("{OCI_MANIFEST}, {OCI_INDEX}"))
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    for (reference, code) in [
        ("v1".to_owned(), 404),
        ("v3".to_owned(), 404),
        ("stable".to_owned(), 200),
        ("v4".to_owned(), 200),
        ("multi".to_owned(), 200),
        (images[0].digest(), 200),
        (images[1].digest(), 404),
        (sig.digest(), 404),
        (loose.digest(), 404),
        (children[0].digest(), 200),
    ] {
        assert_eq!(
            status(format!("/v2/ret/app/manifests/{reference}")).await,
            code,
            "{reference}"
        );
    }
    assert_eq!(
        status("/v2/dry/app/manifests/v1".into()).await,
        200,
        "a dry rule deletes nothing"
    );
    let refs: Value = reg
        .get(&format!("/v2/ret/app/referrers/{}", images[1].digest()))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(refs["manifests"], serde_json::json!([]));
    // The same collection swept the bytes retention freed (grace 0 for blobs).
    // The signature and the untagged image (manifest, config, layer each): the other
    // deleted images' blobs are still used by dry/app.
    let r = gc(&reg, "grace_period=0").await;
    assert_eq!(r["blobs_deleted"], 6, "{r}");
    pull_whole(&reg, "ret/app", &images[3]).await;
    pull_whole(&reg, "ret/app", &children[1]).await;
}

#[tokio::test]
async fn listings_sort_page_and_show_pull_times_and_gauges() {
    let dir = tempfile::tempdir().unwrap();
    let reg = spawn(dir.path(), "");
    for (repo, seed, size) in [
        ("list/small", 1, 1_000),
        ("list/big", 2, 30_000),
        ("list/mid", 3, 9_000),
    ] {
        for t in 0..3u64 {
            let image = ImageBuilder::new(seed * 10 + t).layers(1, size).build();
            reg.push_image(repo, &format!("t{t}"), &image).await;
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    let names = |v: &Value| -> Vec<String> {
        v["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["name"].as_str().unwrap().to_owned())
            .collect()
    };
    let page = json(&reg, Method::GET, "/api/v1/repositories").await;
    assert_eq!(names(&page), ["list/big", "list/mid", "list/small"]);
    assert_eq!(page["total"], 3);
    let r = reg
        .get("/api/v1/repositories?sort=unique_bytes&per_page=2")
        .await;
    let link = header(&r, "link");
    let page: Value = r.json().await.unwrap();
    assert_eq!(names(&page), ["list/big", "list/mid"]);
    assert!(
        link.contains("page=2") && link.contains("sort=unique_bytes"),
        "{link}"
    );
    let next = link_target(&link);
    let r = reg.get(&next).await;
    assert!(r.headers().get("link").is_none(), "last page");
    assert_eq!(names(&r.json().await.unwrap()), ["list/small"]);
    let page = json(
        &reg,
        Method::GET,
        "/api/v1/repositories?sort=unique_bytes&order=asc",
    )
    .await;
    assert_eq!(names(&page), ["list/small", "list/mid", "list/big"]);
    for bad in ["sort=colour", "order=up", "page=0"] {
        let r = reg.get(&format!("/api/v1/repositories?{bad}")).await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{bad}");
    }

    // Tags: newest first by push time; a pull shows on its tag only.
    let tags = json(
        &reg,
        Method::GET,
        "/api/v1/repositories/list/mid/tags?sort=pushed",
    )
    .await;
    assert_eq!(names(&tags), ["t2", "t1", "t0"]);
    let first = &tags["items"][2];
    assert!(first["size"].as_u64().unwrap() > 9_000 && first["pushed_at"].is_string());
    assert!(first["last_pull"].is_null());
    let r = reg
        .req(Method::GET, "/v2/list/mid/manifests/t0")
        .header("accept", OCI_MANIFEST)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let tags = json(
        &reg,
        Method::GET,
        "/api/v1/repositories/list/mid/tags?sort=pulled",
    )
    .await;
    assert_eq!(names(&tags)[0], "t0");
    assert!(tags["items"][0]["last_pull"].is_string());
    assert!(tags["items"][1]["last_pull"].is_null());
    let usage = json(&reg, Method::GET, "/api/v1/usage").await;
    assert!(repo_figures(&usage, "list/mid")["last_pull"].is_string());
    let r = reg.get("/api/v1/repositories/list/none/tags").await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);

    // Gauges: refreshed after a collection.
    gc(&reg, "").await;
    let physical = usage["physical_bytes"].as_u64().unwrap();
    let mut text = String::new();
    for _ in 0..50 {
        text = reg.get("/metrics").await.text().await.unwrap();
        if text.contains(&format!("berth_storage_physical_bytes {physical}")) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        text.contains(&format!("berth_storage_physical_bytes {physical}")),
        "{text}"
    );
    assert!(text.contains("berth_repository_unique_bytes{repository=\"list/big\"}"));
}

#[tokio::test]
async fn abandoned_uploads_expire_and_reconcile_repairs_drift() {
    let dir = tempfile::tempdir().unwrap();
    let reg = spawn(dir.path(), "[limits]\nupload_expiry_secs = 1\n");
    // An upload that received bytes, then nothing.
    let r = reg
        .req(Method::POST, "/v2/up/blobs/uploads/")
        .send()
        .await
        .unwrap();
    let loc = header(&r, "location");
    let r = reg
        .req(Method::PATCH, &loc)
        .header("content-type", "application/octet-stream")
        .body(bytes(7, 10_000))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let uploads = reg.data.join("uploads");
    assert_eq!(files(&uploads), 1);
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let r = gc(&reg, "").await;
    assert_eq!(r["uploads_expired"], 1, "{r}");
    assert_eq!(files(&uploads), 0, "its bytes are freed");
    assert_eq!(reg.get(&loc).await.status(), StatusCode::NOT_FOUND);

    // Drift: a file no record names (old), one just written, and a record whose file is gone.
    let image = ImageBuilder::new(5).layers(2, 2_000).build();
    reg.push_image("rec/app", "v1", &image).await;
    let stray = bytes(8, 4_321);
    let young = bytes(9, 100);
    let place = |data: &[u8]| {
        let hex = sha256(data).trim_start_matches("sha256:").to_owned();
        let p = reg.data.join("blobs/sha256").join(&hex[..2]);
        std::fs::create_dir_all(&p).unwrap();
        let p = p.join(hex);
        std::fs::write(&p, data).unwrap();
        p
    };
    let stray_path = place(&stray);
    std::fs::File::options()
        .write(true)
        .open(&stray_path)
        .unwrap()
        .set_modified(SystemTime::now() - Duration::from_secs(48 * 3600))
        .unwrap();
    let young_path = place(&young);
    let lost = sha256(&image.layers[0]);
    let hex = lost.trim_start_matches("sha256:");
    std::fs::remove_file(reg.data.join("blobs/sha256").join(&hex[..2]).join(hex)).unwrap();

    let dry = json(&reg, Method::POST, "/api/v1/reconcile?dry_run=true").await;
    assert_eq!(dry["orphans_deleted"][0]["digest"], sha256(&stray));
    assert!(stray_path.exists());
    let r = json(&reg, Method::POST, "/api/v1/reconcile").await;
    assert_eq!(r["orphans_deleted"].as_array().unwrap().len(), 1, "{r}");
    assert_eq!(r["orphan_bytes_deleted"], 4_321);
    assert_eq!(r["orphans_spared"], 1, "within the grace period");
    assert_eq!(r["missing"][0]["digest"], lost);
    assert!(!stray_path.exists() && young_path.exists());
    let r = json(&reg, Method::POST, "/api/v1/reconcile?grace_period=0").await;
    assert_eq!(r["orphans_deleted"][0]["digest"], sha256(&young));
    assert!(!young_path.exists());
}
