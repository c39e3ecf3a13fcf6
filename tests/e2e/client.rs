//! The `berth` image client against real registries: a `berth serve` and the reference
//! registry (Debian's `docker-registry`). Round trips with digest checks, multi-platform
//! indexes, transfers resumed after a proxy cuts them, archives read and written by skopeo,
//! the local store's sharing, credentials, and the one-line errors.

use crate::e2e::clients::have;
use crate::e2e::harness::{header, sha256, TestRegistry, OCI_INDEX, OCI_MANIFEST};
use crate::e2e::images::{bytes, Image, ImageBuilder};
use crate::e2e::proxy::CutProxy;
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;

/// A client user: their own image store and docker configuration directory.
struct User {
    store: tempfile::TempDir,
    docker: tempfile::TempDir,
}

impl User {
    fn new() -> User {
        User {
            store: tempfile::tempdir().unwrap(),
            docker: tempfile::tempdir().unwrap(),
        }
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_berth"));
        c.args(args)
            .env("BERTH_STORE", self.store.path())
            .env("DOCKER_CONFIG", self.docker.path())
            .stdin(Stdio::null());
        c
    }

    /// Runs a command that must succeed; returns its standard output.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.cmd(args).output().unwrap();
        assert!(
            out.status.success(),
            "berth {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Runs a command that must succeed; returns its standard error (the progress lines).
    fn ok_progress(&self, args: &[&str]) -> String {
        let out = self.cmd(args).output().unwrap();
        let err = String::from_utf8(out.stderr).unwrap();
        assert!(out.status.success(), "berth {args:?} failed: {err}");
        err
    }

    /// Runs a command that must fail; returns its standard error.
    fn fails(&self, args: &[&str]) -> String {
        let out = self.cmd(args).output().unwrap();
        assert!(!out.status.success(), "berth {args:?} succeeded");
        String::from_utf8(out.stderr).unwrap()
    }

    fn json(&self, args: &[&str]) -> Value {
        serde_json::from_str(&self.ok(args)).unwrap()
    }

    fn blob_files(&self) -> usize {
        std::fs::read_dir(self.store.path().join("blobs/sha256"))
            .unwrap()
            .count()
    }
}

/// Debian's `docker-registry` (CNCF Distribution) on a free loopback port.
struct Reference {
    child: Child,
    addr: String,
    _dir: tempfile::TempDir,
}

impl Reference {
    fn spawn() -> Option<Reference> {
        Reference::spawn_with("")
    }

    /// With `extra` top-level YAML (an `auth:` section, say).
    fn spawn_with(extra: &str) -> Option<Reference> {
        if !have("docker-registry") {
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let cfg = dir.path().join("config.yml");
        std::fs::write(
            &cfg,
            format!(
                "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n{extra}",
                dir.path().join("data").display()
            ),
        )
        .unwrap();
        let mut child = Command::new("docker-registry")
            .arg("serve")
            .arg(&cfg)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let addr = format!("127.0.0.1:{port}");
        for _ in 0..100 {
            if std::net::TcpStream::connect(&addr).is_ok() {
                return Some(Reference {
                    child,
                    addr,
                    _dir: dir,
                });
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("docker-registry did not start");
    }

    async fn manifest_digest(&self, repo: &str, reference: &str) -> Option<String> {
        let r = reqwest::Client::new()
            .get(format!(
                "http://{}/v2/{repo}/manifests/{reference}",
                self.addr
            ))
            .header("accept", format!("{OCI_MANIFEST}, {OCI_INDEX}"))
            .send()
            .await
            .unwrap();
        if r.status() != StatusCode::OK {
            return None;
        }
        Some(sha256(&r.bytes().await.unwrap()))
    }
}

impl Drop for Reference {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An image whose config says what `docker inspect` shows.
fn image(arch: &str, layers: Vec<Vec<u8>>) -> Image {
    let config = json!({
        "created": "2024-05-01T12:00:00Z",
        "author": "berth tests",
        "architecture": arch,
        "os": "linux",
        "config": {
            "Env": ["PATH=/usr/bin", "MODE=test"],
            "Cmd": ["serve"],
            "Entrypoint": ["/app"],
            "Labels": {"org.example.arch": arch},
            "WorkingDir": "/srv",
            "User": "1000",
            "ExposedPorts": {"8080/tcp": {}},
        },
        "rootfs": {"type": "layers", "diff_ids": layers.iter().map(|l| sha256(l)).collect::<Vec<_>>()},
        "history": [{"created_by": "test layer"}],
    });
    let config = serde_json::to_vec(&config).unwrap();
    let m = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha256(&config), "size": config.len()},
        "layers": layers.iter().map(|l| json!({"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": sha256(l), "size": l.len()})).collect::<Vec<_>>(),
    });
    Image {
        config,
        layers,
        manifest: serde_json::to_vec(&m).unwrap(),
    }
}

/// Pushes two platform images and an index over them; returns (index digest, amd64, arm64).
async fn push_multi(reg: &TestRegistry, repo: &str, tag: &str) -> (String, Image, Image) {
    let base = bytes(7, 50_000);
    let amd = image("amd64", vec![base.clone(), bytes(8, 30_000)]);
    let arm = image("arm64", vec![base, bytes(9, 30_000)]);
    let da = reg.push_image(repo, &amd.digest(), &amd).await;
    let db = reg.push_image(repo, &arm.digest(), &arm).await;
    let index = json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [
            {"mediaType": OCI_MANIFEST, "digest": da, "size": amd.manifest.len(), "platform": {"os": "linux", "architecture": "amd64"}},
            {"mediaType": OCI_MANIFEST, "digest": db, "size": arm.manifest.len(), "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"}},
        ],
    });
    let body = serde_json::to_vec(&index).unwrap();
    let r = reg.put_manifest(repo, tag, OCI_INDEX, &body).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    (sha256(&body), amd, arm)
}

#[tokio::test]
async fn pull_inspect_push_round_trip_keeps_every_digest() {
    let reg = TestRegistry::spawn();
    let base = bytes(1, 200_000);
    let app = image("amd64", vec![base.clone(), bytes(2, 100_000)]);
    let web = image("amd64", vec![base.clone(), bytes(3, 120_000)]);
    reg.push_image("team/app", "v1", &app).await;
    reg.push_image("team/web", "v1", &web).await;
    let user = User::new();
    let app_ref = format!("{}/team/app:v1", reg.addr);
    let out = user.ok(&["pull", &app_ref]);
    assert!(out.contains(&format!("Digest: {}", app.digest())), "{out}");
    user.ok(&["pull", "-q", &format!("{}/team/web:v1", reg.addr)]);
    // Pulling again fetches nothing new.
    let again = user.ok(&["pull", &app_ref]);
    assert!(again.contains("Image is up to date"), "{again}");

    // The shared base layer is stored once: 2 configs + 3 layers + 2 manifests.
    assert_eq!(user.blob_files(), 7);
    let list = user.json(&["images", "--format", "json"]);
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 2);
    for row in list {
        assert_eq!(row["SharedSize"], 200_000, "{row}");
        assert_eq!(
            row["UniqueSize"].as_u64().unwrap() + 200_000,
            row["Size"].as_u64().unwrap()
        );
    }
    let table = user.ok(&["images"]);
    assert!(
        table.contains("SHARED SIZE") && table.contains("team/app"),
        "{table}"
    );
    assert!(table.contains("2 images"), "{table}");

    let info = user.json(&["inspect", &app_ref]);
    let info = &info[0];
    assert_eq!(info["Id"], sha256(&app.config));
    assert_eq!(info["Architecture"], "amd64");
    assert_eq!(info["Os"], "linux");
    assert_eq!(info["Config"]["Entrypoint"], json!(["/app"]));
    assert_eq!(info["Config"]["ExposedPorts"], json!({"8080/tcp": {}}));
    assert_eq!(info["Config"]["WorkingDir"], "/srv");
    assert_eq!(info["RepoTags"], json!([app_ref]));
    assert_eq!(
        info["RepoDigests"],
        json!([format!("{}/team/app@{}", reg.addr, app.digest())])
    );
    let layers: Vec<&str> = info["Layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["Digest"].as_str().unwrap())
        .collect();
    assert_eq!(layers, vec![sha256(&app.layers[0]), sha256(&app.layers[1])]);
    assert_eq!(info["History"][0]["created_by"], "test layer");

    // A remote inspect reads the registry without pulling.
    let other = User::new();
    let remote = other.json(&["inspect", &format!("{}/team/web:v1", reg.addr)]);
    assert_eq!(remote[0]["Id"], sha256(&web.config));
    assert_eq!(other.blob_files(), 0);

    // Push to the reference registry and to another berth repository: same digest there.
    let mut targets = vec![(format!("{}/moved/app:v2", reg.addr), None)];
    let reference = Reference::spawn();
    if let Some(r) = &reference {
        targets.push((format!("{}/moved/app:v2", r.addr), Some(r)));
    }
    for (target, refreg) in targets {
        user.ok(&["tag", &app_ref, &target]);
        let out = user.ok(&["push", "--chunk-size", "65536", &target]);
        assert!(out.contains(&app.digest()), "{out}");
        match refreg {
            Some(r) => assert_eq!(
                r.manifest_digest("moved/app", "v2").await,
                Some(app.digest())
            ),
            None => {
                let got = reg.get("/v2/moved/app/manifests/v2").await;
                assert_eq!(header(&got, "docker-content-digest"), app.digest());
            }
        }
        // And back into a fresh store, by digest.
        let fresh = User::new();
        let by_digest = format!("{}@{}", target.rsplit_once(':').unwrap().0, app.digest());
        fresh.ok(&["pull", &by_digest]);
        assert_eq!(
            fresh.json(&["inspect", &by_digest])[0]["Id"],
            sha256(&app.config)
        );
    }
}

#[tokio::test]
async fn multi_platform_index_pull_by_platform_and_copy_all() {
    let reg = TestRegistry::spawn();
    let (index, amd, arm) = push_multi(&reg, "multi/app", "v1").await;
    let src = format!("{}/multi/app:v1", reg.addr);
    let user = User::new();
    user.ok(&["pull", "--platform", "linux/arm64", &src]);
    let info = user.json(&["inspect", &src]);
    assert_eq!(info[0]["Id"], sha256(&arm.config));
    assert_eq!(info[0]["Architecture"], "arm64");
    // Docker's RepoDigest: the index the tag names.
    assert_eq!(
        info[0]["RepoDigests"][0],
        format!("{}/multi/app@{index}", reg.addr)
    );
    let err = user.fails(&["pull", "--platform", "linux/s390x", &src]);
    assert!(
        err.contains("no image for linux/s390x") && err.contains("linux/arm64/v8"),
        "{err}"
    );

    // Every platform, and a push of the whole index back.
    let all = User::new();
    all.ok(&["pull", "--all-platforms", &src]);
    let target = format!("{}/multi/again:v1", reg.addr);
    all.ok(&["tag", &src, &target]);
    all.ok(&["push", &target]);
    let got = reg.get("/v2/multi/again/manifests/v1").await;
    assert_eq!(header(&got, "docker-content-digest"), index);

    let Some(refreg) = Reference::spawn() else {
        return;
    };
    let dst = format!("{}/mirror/app:v1", refreg.addr);
    user.ok(&["copy", "--all", &src, &dst]);
    assert_eq!(
        refreg.manifest_digest("mirror/app", "v1").await,
        Some(index)
    );
    for img in [&amd, &arm] {
        assert_eq!(
            refreg.manifest_digest("mirror/app", &img.digest()).await,
            Some(img.digest())
        );
    }
    // Without --all, the host's platform only, under the tag.
    let one = format!("{}/mirror/one:v1", refreg.addr);
    user.ok(&["copy", "--platform", "linux/amd64", &src, &one]);
    assert_eq!(
        refreg.manifest_digest("mirror/one", "v1").await,
        Some(amd.digest())
    );
}

#[tokio::test]
async fn copy_mounts_on_the_same_registry_and_brings_referrers() {
    let reg = TestRegistry::spawn();
    let img = ImageBuilder::new(41).layers(3, 40_000).build();
    let subject = reg.push_image("src/app", "v1", &img).await;
    let sig = ImageBuilder::new(42)
        .layers(1, 100)
        .subject(&subject, img.manifest.len())
        .artifact_type("application/vnd.example.sig")
        .build();
    reg.push_image("src/app", &sig.digest(), &sig).await;
    let user = User::new();
    let progress = user.ok_progress(&[
        "copy",
        &format!("{}/src/app:v1", reg.addr),
        &format!("{}/dst/app:v1", reg.addr),
    ]);
    // The image's config and 3 layers, the signature's config and layer.
    assert_eq!(progress.matches(": mounted").count(), 6, "{progress}");
    let got = reg.get("/v2/dst/app/manifests/v1").await;
    assert_eq!(header(&got, "docker-content-digest"), subject);
    let referrers: Value = reg
        .get(&format!("/v2/dst/app/referrers/{subject}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(referrers["manifests"][0]["digest"], sig.digest());
    // A second copy finds every blob there.
    let again = user.ok_progress(&[
        "copy",
        &format!("{}/src/app:v1", reg.addr),
        &format!("{}/dst/app:v1", reg.addr),
    ]);
    assert!(
        again.contains(": exists") && !again.contains(": mounted"),
        "{again}"
    );
}

#[tokio::test]
async fn push_and_pull_resume_after_the_connection_is_cut_mid_blob() {
    let reg = TestRegistry::spawn();
    let big = bytes(77, 6 << 20);
    let img = image("amd64", vec![big.clone()]);
    let proxy = CutProxy::spawn(&reg.addr);
    // Get the image into a store through the proxy's registry name, then push it back
    // through a proxy that cuts the upload after 2.5 MiB.
    reg.push_image("seed/big", "v1", &img).await;
    let user = User::new();
    let seed = format!("{}/seed/big:v1", proxy.addr);
    user.ok(&["pull", "-q", &seed]);
    let target = format!("{}/resumed/big:v1", proxy.addr);
    user.ok(&["tag", &seed, &target]);
    let before = proxy.up();
    proxy
        .counters
        .cut_up_at
        .store(before + (5 << 19), Ordering::SeqCst);
    let progress = user.ok_progress(&["push", "--chunk-size", "1048576", &target]);
    assert_eq!(proxy.cuts(), 1, "the proxy never cut the push");
    let sent = proxy.up() - before;
    // Resumed: the blob once plus at most the chunk that was cut (and headers); a restart
    // would have sent 2.5 MiB more.
    assert!(
        sent < (6 << 20) + (1 << 20) + (64 << 10),
        "sent {sent} bytes"
    );
    assert!(progress.contains("resuming"), "{progress}");
    let got = reg
        .get(&format!("/v2/resumed/big/blobs/{}", sha256(&big)))
        .await;
    assert_eq!(sha256(&got.bytes().await.unwrap()), sha256(&big));

    // A pull cut after 3 MiB continues with a Range request.
    let puller = User::new();
    let before = proxy.down();
    proxy
        .counters
        .cut_down_at
        .store(before + (3 << 20), Ordering::SeqCst);
    let progress = puller.ok_progress(&["pull", &target]);
    assert_eq!(proxy.cuts(), 2, "the proxy never cut the pull");
    assert!(progress.contains("resuming"), "{progress}");
    let received = proxy.down() - before;
    assert!(
        received < (6 << 20) + (64 << 10),
        "received {received} bytes"
    );
    let stored = std::fs::read(
        puller
            .store
            .path()
            .join("blobs/sha256")
            .join(sha256(&big).trim_start_matches("sha256:")),
    )
    .unwrap();
    assert_eq!(sha256(&stored), sha256(&big));
}

#[tokio::test]
async fn an_interrupted_pull_leaves_a_partial_that_the_next_pull_continues() {
    let reg = TestRegistry::spawn();
    let big = bytes(78, 4 << 20);
    let img = image("amd64", vec![big.clone()]);
    reg.push_image("part/big", "v1", &img).await;
    let proxy = CutProxy::spawn(&reg.addr);
    let user = User::new();
    let src = format!("{}/part/big:v1", proxy.addr);
    // Every later connection is dropped once the first cut happened: the run gives up.
    proxy.counters.cut_down_at.store(2 << 20, Ordering::SeqCst);
    proxy
        .counters
        .refuse_after_cut
        .store(true, Ordering::SeqCst);
    let err = user.fails(&["pull", "-q", &src]);
    assert!(
        err.starts_with("berth: ") && err.trim().lines().count() == 1,
        "{err}"
    );
    drop(proxy);
    let proxy = CutProxy::spawn(&reg.addr);
    let partials: Vec<_> = std::fs::read_dir(user.store.path().join("ingest"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".partial"))
        .map(|e| e.metadata().unwrap().len())
        .collect();
    // The first proxy cut after 2 MiB of the response (headers and a config included).
    assert!(partials.iter().any(|&n| n > 0), "{partials:?}");
    let src = format!("{}/part/big:v1", proxy.addr);
    user.ok(&["pull", &src]);
    assert!(
        proxy.down() < (4 << 20) - (1 << 20),
        "received {}",
        proxy.down()
    );
    let info = user.json(&["inspect", &src]);
    assert_eq!(info[0]["Layers"][0]["Digest"], sha256(&big));
}

#[tokio::test]
async fn save_is_read_by_skopeo_and_load_reads_what_skopeo_writes() {
    let reg = TestRegistry::spawn();
    let app = image("amd64", vec![bytes(51, 70_000), bytes(52, 30_000)]);
    let web = image("amd64", vec![bytes(51, 70_000), bytes(53, 20_000)]);
    reg.push_image("arch/app", "v1", &app).await;
    reg.push_image("arch/web", "v1", &web).await;
    let user = User::new();
    let (a, w) = (
        format!("{}/arch/app:v1", reg.addr),
        format!("{}/arch/web:v1", reg.addr),
    );
    user.ok(&["pull", "-q", &a]);
    user.ok(&["pull", "-q", &w]);
    let dir = tempfile::tempdir().unwrap();
    let tar = dir.path().join("images.tar");
    user.ok(&["save", "-o", tar.to_str().unwrap(), &a, &w]);

    // Our own load reads it back whole, into a fresh store.
    let other = User::new();
    let out = other.ok(&["load", "-i", tar.to_str().unwrap()]);
    assert!(out.contains(&format!("Loaded image: {a}")), "{out}");
    assert_eq!(other.json(&["inspect", &w])[0]["Id"], sha256(&web.config));
    assert_eq!(other.blob_files(), 7);

    if !have("skopeo") {
        return;
    }
    let skopeo = |args: &[&str]| {
        let out = Command::new("skopeo").args(args).output().unwrap();
        assert!(
            out.status.success(),
            "skopeo {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    // As a docker archive: skopeo finds the image by its tag and copies it to a registry.
    let docker_src = format!("docker-archive:{}:{a}", tar.display());
    let raw: Value = serde_json::from_str(&skopeo(&["inspect", "--raw", &docker_src])).unwrap();
    assert_eq!(raw["config"]["digest"], sha256(&app.config));
    skopeo(&[
        "copy",
        "--dest-tls-verify=false",
        &docker_src,
        &format!("docker://{}/from-archive/app:v1", reg.addr),
    ]);
    let layout = dir.path().join("layout");
    skopeo(&[
        "copy",
        &docker_src,
        &format!("oci:{}:app", layout.display()),
    ]);
    // As an OCI archive, by the tag the index names.
    let oci_src = format!("oci-archive:{}:v1", tar.display());
    let raw = skopeo(&["inspect", "--raw", &oci_src]);
    assert!([app.digest(), web.digest()].contains(&sha256(raw.as_bytes())));
    let single = dir.path().join("one.tar");
    user.ok(&["save", "-o", single.to_str().unwrap(), &a]);
    let raw = skopeo(&[
        "inspect",
        "--raw",
        &format!("oci-archive:{}:v1", single.display()),
    ]);
    assert_eq!(sha256(raw.as_bytes()), app.digest());

    // What skopeo writes, berth loads: a docker archive and an OCI archive.
    let from_skopeo = dir.path().join("skopeo-docker.tar");
    skopeo(&[
        "copy",
        "--src-tls-verify=false",
        &format!("docker://{w}"),
        &format!(
            "docker-archive:{}:localhost/loaded/web:v9",
            from_skopeo.display()
        ),
    ]);
    let third = User::new();
    let out = third.ok(&["load", "-i", from_skopeo.to_str().unwrap()]);
    assert!(out.contains("localhost/loaded/web:v9"), "{out}");
    // skopeo rewrites the config in docker's format: the layers and settings stay.
    let info = third.json(&["inspect", "localhost/loaded/web:v9"]);
    assert_eq!(info[0]["Config"]["Entrypoint"], json!(["/app"]));
    let layers: Vec<&str> = info[0]["Layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["Digest"].as_str().unwrap())
        .collect();
    assert_eq!(layers, vec![sha256(&web.layers[0]), sha256(&web.layers[1])]);
    let oci_tar = dir.path().join("skopeo-oci.tar");
    skopeo(&[
        "copy",
        "--src-tls-verify=false",
        &format!("docker://{a}"),
        &format!("oci-archive:{}:localhost/loaded/app:v8", oci_tar.display()),
    ]);
    let f = std::fs::File::open(&oci_tar).unwrap();
    let out = third.cmd(&["load"]).stdin(f).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let info = third.json(&["inspect", "localhost/loaded/app:v8"]);
    // skopeo compressed the layers on the way: the config is the same.
    assert_eq!(info[0]["Id"], sha256(&app.config));
    assert_eq!(
        info[0]["Layers"][0]["MediaType"],
        "application/vnd.oci.image.layer.v1.tar+gzip"
    );
}

#[tokio::test]
async fn tag_rmi_and_prune_free_exactly_what_no_image_uses() {
    let reg = TestRegistry::spawn();
    let base = bytes(61, 50_000);
    let a = image("amd64", vec![base.clone(), bytes(62, 10_000)]);
    let b = image("amd64", vec![base.clone(), bytes(63, 10_000)]);
    reg.push_image("keep/a", "v1", &a).await;
    reg.push_image("keep/b", "v1", &b).await;
    let user = User::new();
    let (ra, rb) = (
        format!("{}/keep/a:v1", reg.addr),
        format!("{}/keep/b:v1", reg.addr),
    );
    user.ok(&["pull", "-q", &ra]);
    user.ok(&["pull", "-q", &rb]);
    user.ok(&["tag", &ra, "localhost/copy:1"]);
    assert_eq!(
        user.json(&["images", "--format", "json"])
            .as_array()
            .unwrap()
            .len(),
        3
    );
    // Untagging one of two names of an image frees nothing.
    let out = user.ok(&["rmi", &ra]);
    assert!(
        out.contains("Untagged") && !out.contains("Deleted"),
        "{out}"
    );
    // Removing its last name frees its own blobs, not the shared base.
    let out = user.ok(&["rmi", "localhost/copy:1"]);
    assert_eq!(out.matches("Deleted: ").count(), 3, "{out}");
    assert!(!out.contains(&sha256(&base)));
    assert_eq!(user.blob_files(), 4);
    let info = user.json(&["inspect", &rb]);
    assert_eq!(info[0]["Layers"][0]["Digest"], sha256(&base));
    // By id prefix.
    let id = sha256(&b.config);
    user.ok(&["rmi", &id["sha256:".len().."sha256:".len() + 12]]);
    assert_eq!(user.blob_files(), 0);
    // Leftovers of an interrupted pull go with prune.
    std::fs::write(
        user.store.path().join("ingest/abc.partial"),
        vec![0u8; 1000],
    )
    .unwrap();
    let out = user.ok(&["prune"]);
    assert!(out.contains("Total reclaimed space: 1kB"), "{out}");
    let err = user.fails(&["rmi", "localhost/none:1"]);
    assert_eq!(err.trim(), "berth: no such image: localhost/none:1");
}

/// Every entry of the store's `ingest/` directory.
fn ingest_entries(user: &User) -> Vec<String> {
    std::fs::read_dir(user.store.path().join("ingest"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

#[tokio::test]
async fn pull_leaves_nothing_in_ingest_and_prune_removes_old_lock_files() {
    let reg = TestRegistry::spawn();
    let img = image("amd64", vec![bytes(64, 30_000), bytes(65, 20_000)]);
    reg.push_image("clean/app", "v1", &img).await;
    let user = User::new();
    let src = format!("{}/clean/app:v1", reg.addr);
    // Two pulls at once share the layers' locks; neither leaves one behind.
    let spawn = || {
        user.cmd(&["pull", "-q", &src])
            .stdout(Stdio::null())
            .spawn()
            .unwrap()
    };
    let (a, b) = (spawn(), spawn());
    assert!(a.wait_with_output().unwrap().status.success());
    assert!(b.wait_with_output().unwrap().status.success());
    assert_eq!(ingest_entries(&user), Vec::<String>::new());
    user.ok(&["push", "-q", &src]);
    assert_eq!(ingest_entries(&user), Vec::<String>::new());
    // Zero-byte lock files that older versions left go with prune.
    let stale = user
        .store
        .path()
        .join(format!("ingest/{}.lock", "0".repeat(64)));
    std::fs::write(&stale, b"").unwrap();
    user.ok(&["prune"]);
    assert_eq!(ingest_entries(&user), Vec::<String>::new());
}

#[tokio::test]
async fn tags_login_logout_and_errors_a_person_can_act_on() {
    let dir = tempfile::tempdir().unwrap();
    let htpasswd = dir.path().join("htpasswd");
    std::fs::write(
        &htpasswd,
        format!("alice:{}\n", bcrypt::hash("alice-pw", 4).unwrap()),
    )
    .unwrap();
    let reg = TestRegistry::spawn_with(
        &dir.path().join("data"),
        &["--htpasswd", htpasswd.to_str().unwrap()],
    );
    let user = User::new();
    let img = ImageBuilder::new(71).layers(1, 1000).build();
    // Nothing pushed yet, and no credentials: the registry says so.
    let r = format!("{}/private/app:v1", reg.addr);
    let err = user.fails(&["pull", &r]);
    assert!(err.starts_with("berth: unauthorized"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");

    let err = user
        .cmd(&["login", "-u", "alice", "--password-stdin", &reg.addr])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(b"wrong\n")?;
            c.wait_with_output()
        })
        .unwrap();
    assert!(!err.status.success());
    let stderr = String::from_utf8_lossy(&err.stderr);
    assert!(stderr.starts_with("berth: unauthorized"), "{stderr}");
    let out = user.ok(&["login", "-u", "alice", "-p", "alice-pw", &reg.addr]);
    assert!(out.contains("Login Succeeded"));
    let cfg: Value =
        serde_json::from_slice(&std::fs::read(user.docker.path().join("config.json")).unwrap())
            .unwrap();
    assert!(cfg["auths"][&reg.addr]["auth"].is_string(), "{cfg}");

    // With credentials: list tags, pull.
    let seed = format!("{}/private/app", reg.addr);
    let mut r2 = reg;
    r2.basic = Some(("alice".into(), "alice-pw".into()));
    for tag in ["v1", "v2", "v3"] {
        r2.push_image("private/app", tag, &img).await;
    }
    let tags = user.json(&["tags", "--format", "json", &seed]);
    assert_eq!(tags["tags"], json!(["v1", "v2", "v3"]));
    assert_eq!(user.ok(&["tags", &seed]), "v1\nv2\nv3\n");
    user.ok(&["pull", "-q", &r]);

    // Unknown tags and repositories, a refused connection: one line each, non-zero exit.
    let err = user.fails(&["pull", &format!("{seed}:nope")]);
    assert_eq!(err.trim(), format!("berth: no such image: {seed}:nope"));
    let err = user.fails(&["tags", &format!("{}/private/none", r2.addr)]);
    assert!(err.starts_with("berth: no such repository"), "{err}");
    let err = user.fails(&["pull", "127.0.0.1:1/app:v1"]);
    assert_eq!(
        err.trim(),
        "berth: cannot reach 127.0.0.1:1: connection refused"
    );
    let err = user.fails(&["pull", "UPPER/case"]);
    assert!(err.starts_with("berth: invalid reference"), "{err}");

    let out = user.ok(&["logout", &r2.addr]);
    assert!(out.contains("Removing login credentials"), "{out}");
    let err = user.fails(&["pull", &r]);
    assert!(err.starts_with("berth: unauthorized"), "{err}");

    // A credential helper (docker's protocol) keeps the secret out of config.json.
    let bin = tempfile::tempdir().unwrap();
    let helper = bin.path().join("docker-credential-berthtest");
    std::fs::write(
        &helper,
        "#!/bin/sh\nf=\"$(dirname \"$0\")/creds.json\"\ncase \"$1\" in\n  store) cat > \"$f\" ;;\n  get) cat > /dev/null; [ -f \"$f\" ] && cat \"$f\" || { echo 'credentials not found in native keychain'; exit 1; } ;;\n  erase) rm -f \"$f\" ;;\nesac\n",
    )
    .unwrap();
    std::fs::set_permissions(&helper, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    std::fs::write(
        user.docker.path().join("config.json"),
        r#"{"credsStore":"berthtest"}"#,
    )
    .unwrap();
    let path = format!(
        "{}:{}",
        bin.path().display(),
        std::env::var("PATH").unwrap()
    );
    let with_helper = |args: &[&str]| {
        let out = user.cmd(args).env("PATH", &path).output().unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    with_helper(&["login", "-u", "alice", "-p", "alice-pw", &r2.addr]);
    let stored: Value =
        serde_json::from_slice(&std::fs::read(bin.path().join("creds.json")).unwrap()).unwrap();
    assert_eq!(stored["Username"], "alice");
    let cfg = std::fs::read_to_string(user.docker.path().join("config.json")).unwrap();
    assert!(
        !cfg.contains("alice-pw") && !cfg.contains("\"auth\""),
        "{cfg}"
    );
    with_helper(&["pull", "-q", &r]);
    with_helper(&["logout", &r2.addr]);
    assert!(!bin.path().join("creds.json").exists());

    // A registry that asks for Basic credentials (Distribution with htpasswd).
    let Some(basic) = Reference::spawn_with(&format!(
        "auth:\n  htpasswd:\n    realm: test\n    path: {}\n",
        htpasswd.display()
    )) else {
        return;
    };
    let target = format!("{}/basic/app:v1", basic.addr);
    with_helper(&["tag", &r, &target]);
    let out = user
        .cmd(&["push", &target])
        .env("PATH", &path)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("berth: unauthorized"),
        "{err}"
    );
    with_helper(&["login", "-u", "alice", "-p", "alice-pw", &basic.addr]);
    with_helper(&["push", "--chunk-size", "512", &target]);
    let fresh = User::new();
    std::fs::copy(
        user.docker.path().join("config.json"),
        fresh.docker.path().join("config.json"),
    )
    .unwrap();
    let out = fresh
        .cmd(&["pull", &target])
        .env("PATH", &path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        fresh.json(&["inspect", &target])[0]["Id"],
        sha256(&img.config)
    );
}

#[tokio::test]
async fn an_artifact_naming_one_blob_twice_and_two_pulls_at_once_share_the_store() {
    let reg = TestRegistry::spawn();
    // The empty descriptor as config and as a layer, beside a real layer: one download each.
    let empty = b"{}".to_vec();
    let payload = bytes(91, 3 << 20);
    reg.push_blob("art/one", &empty).await;
    reg.push_blob("art/one", &payload).await;
    let empty_desc = json!({"mediaType": "application/vnd.oci.empty.v1+json", "digest": sha256(&empty), "size": 2});
    let m = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": "application/vnd.example.thing",
        "config": empty_desc,
        "layers": [empty_desc, {"mediaType": "application/octet-stream", "digest": sha256(&payload), "size": payload.len()}, empty_desc],
    });
    let body = serde_json::to_vec(&m).unwrap();
    let r = reg.put_manifest("art/one", "v1", OCI_MANIFEST, &body).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let user = User::new();
    let name = format!("{}/art/one:v1", reg.addr);
    // Two processes pull the same blobs into one store at the same time.
    let runs: Vec<Child> = (0..2)
        .map(|_| {
            user.cmd(&["pull", "-q", &name])
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for run in runs {
        let out = run.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // The manifest, the empty blob and the payload.
    assert_eq!(user.blob_files(), 3);
    let stored = std::fs::read(
        user.store
            .path()
            .join("blobs/sha256")
            .join(sha256(&payload).trim_start_matches("sha256:")),
    )
    .unwrap();
    assert_eq!(sha256(&stored), sha256(&payload));
    let partials = std::fs::read_dir(user.store.path().join("ingest"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".partial"))
        .count();
    assert_eq!(partials, 0);
}

/// The name under which a push keeps its session between runs (see `transfer::push_key`).
fn push_state(user: &User, reg: &TestRegistry, repo: &str, digest: &str) -> std::path::PathBuf {
    let key = sha256(format!("http://{} {repo} {digest}", reg.addr).as_bytes());
    user.store
        .path()
        .join("ingest")
        .join(format!("push-{}", &key["sha256:".len()..][..32]))
}

#[tokio::test]
async fn a_saved_push_session_continues_when_empty_and_is_replaced_when_gone() {
    let reg = TestRegistry::spawn();
    let big = bytes(93, 3 << 20);
    let img = image("amd64", vec![big.clone()]);
    reg.push_image("seed/s", "v1", &img).await;
    let user = User::new();
    let seed = format!("{}/seed/s:v1", reg.addr);
    user.ok(&["pull", "-q", &seed]);
    for (i, repo) in ["empty/s", "gone/s"].iter().enumerate() {
        let target = format!("{}/{repo}:v1", reg.addr);
        user.ok(&["tag", &seed, &target]);
        // A session an earlier run opened and saved, then died before its first chunk
        // went through (the registry reports "0-0"); or one the registry forgot.
        let r = reg
            .req(reqwest::Method::POST, &format!("/v2/{repo}/blobs/uploads/"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::ACCEPTED);
        let mut loc = reg.url(&header(&r, "location"));
        if i == 1 {
            let r = reg
                .req(reqwest::Method::DELETE, &header(&r, "location"))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), StatusCode::NO_CONTENT);
            loc.push_str("&x=1");
        }
        std::fs::write(push_state(&user, &reg, repo, &sha256(&big)), &loc).unwrap();
        let progress = user.ok_progress(&["push", "--chunk-size", "1048576", &target]);
        if i == 0 {
            assert!(progress.contains("resuming at 0 bytes"), "{progress}");
        }
        let got = reg.get(&format!("/v2/{repo}/blobs/{}", sha256(&big))).await;
        assert_eq!(got.status(), StatusCode::OK, "{progress}");
        assert_eq!(sha256(&got.bytes().await.unwrap()), sha256(&big));
        assert!(!push_state(&user, &reg, repo, &sha256(&big)).exists());
    }
}

#[tokio::test]
async fn load_takes_the_platform_an_archive_carries_from_a_partial_index() {
    if !have("tar") {
        return;
    }
    let amd = image("amd64", vec![bytes(95, 20_000)]);
    let arm = image("arm64", vec![bytes(96, 20_000)]);
    // An OCI layout whose index names both platforms while only amd64's blobs are there:
    // what `docker save` writes from containerd's store.
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [
            {"mediaType": OCI_MANIFEST, "digest": amd.digest(), "size": amd.manifest.len(), "platform": {"os": "linux", "architecture": "amd64"}},
            {"mediaType": OCI_MANIFEST, "digest": arm.digest(), "size": arm.manifest.len(), "platform": {"os": "linux", "architecture": "arm64"}},
        ],
    }))
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let blobs = dir.path().join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    for b in [&index, &amd.manifest, &amd.config, &amd.layers[0]] {
        std::fs::write(blobs.join(&sha256(b)["sha256:".len()..]), b).unwrap();
    }
    std::fs::write(
        dir.path().join("oci-layout"),
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();
    let top = json!({"schemaVersion": 2, "manifests": [{
        "mediaType": OCI_INDEX, "digest": sha256(&index), "size": index.len(),
        "annotations": {"io.containerd.image.name": "docker.io/library/partial:v1"},
    }]});
    std::fs::write(
        dir.path().join("index.json"),
        serde_json::to_vec(&top).unwrap(),
    )
    .unwrap();
    let tar = dir.path().join("a.tar");
    let st = Command::new("tar")
        .arg("-cf")
        .arg(&tar)
        .arg("-C")
        .arg(dir.path())
        .args(["oci-layout", "index.json", "blobs"])
        .status()
        .unwrap();
    assert!(st.success());
    let user = User::new();
    let out = user.ok(&["load", "-i", tar.to_str().unwrap()]);
    assert!(out.contains("Loaded image: partial:v1"), "{out}");
    let info = user.json(&["inspect", "partial:v1"]);
    assert_eq!(info[0]["Id"], sha256(&amd.config));
    assert_eq!(
        info[0]["RepoDigests"],
        json!([format!("partial@{}", sha256(&index))])
    );
}

#[tokio::test]
async fn token_auth_with_a_login_and_with_an_identity_token_from_docker_config() {
    let dir = tempfile::tempdir().unwrap();
    let reg = crate::e2e::auth::spawn(dir.path(), "");
    let img = image("amd64", vec![bytes(97, 10_000)]);
    let user = User::new();
    // Seed the store from an open registry, then push where the token flow rules.
    let open = TestRegistry::spawn();
    open.push_image("seed/t", "v1", &img).await;
    let seed = format!("{}/seed/t:v1", open.addr);
    user.ok(&["pull", "-q", &seed]);
    let target = format!("{}/team-a/app:v1", reg.addr);
    user.ok(&["tag", &seed, &target]);
    let err = user.fails(&["push", &target]);
    assert!(
        err.contains("denied") || err.contains("unauthorized"),
        "{err}"
    );
    user.ok(&["login", "-u", "alice", "-p", "alice-pw", &reg.addr]);
    user.ok(&["push", &target]);
    user.ok(&["logout", &reg.addr]);

    // An identity token (OAuth2 refresh token) beside a placeholder `auth`, as `az acr
    // login` writes it: exchanged by POST, never sent as a password.
    let r = reqwest::Client::new()
        .get(reg.url("/token?service=berth&offline_token=true"))
        .basic_auth("alice", Some("alice-pw"))
        .send()
        .await
        .unwrap();
    let body: Value = r.json().await.unwrap();
    let refresh = body["refresh_token"].as_str().unwrap();
    std::fs::write(
        user.docker.path().join("config.json"),
        json!({"auths": {reg.addr.clone(): {
            "auth": "MDAwMDAwMDAtMDAwMDAwMDA6",
            "identitytoken": refresh,
        }}})
        .to_string(),
    )
    .unwrap();
    let fresh = User {
        store: tempfile::tempdir().unwrap(),
        docker: user.docker,
    };
    fresh.ok(&["pull", "-q", &target]);
    assert_eq!(
        fresh.json(&["inspect", &target])[0]["Id"],
        sha256(&img.config)
    );
}
