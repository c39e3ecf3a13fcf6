//! Real clients against the real server. CI installs them; on a machine without them these
//! tests say so and pass, unless `CI` is set, where a missing client is a failure.

use crate::e2e::harness::{sha256, TestRegistry};
use crate::e2e::images::{Image, ImageBuilder};
use std::path::Path;
use std::process::Command;

/// `true` when `tool` can run here; in CI a missing tool fails the test.
pub fn have(tool: &str) -> bool {
    let found = Command::new(tool)
        .arg("--version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !found {
        assert!(
            std::env::var_os("CI").is_none(),
            "{tool} is not installed: .ci/run must install it"
        );
        eprintln!("skipped: {tool} is not installed");
    }
    found
}

/// Writes images into an OCI image layout directory, each under its ref name.
pub fn write_layout(dir: &Path, images: &[(&str, &Image)]) {
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let put = |data: &[u8]| {
        std::fs::write(blobs.join(sha256(data).trim_start_matches("sha256:")), data).unwrap()
    };
    let mut manifests = Vec::new();
    for (name, img) in images {
        put(&img.config);
        for l in &img.layers {
            put(l);
        }
        put(&img.manifest);
        manifests.push(serde_json::json!({
            "mediaType": crate::e2e::harness::OCI_MANIFEST,
            "digest": img.digest(),
            "size": img.manifest.len(),
            "annotations": {"org.opencontainers.image.ref.name": name},
        }));
    }
    let index = serde_json::json!({"schemaVersion": 2, "manifests": manifests});
    std::fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
}

fn skopeo(args: &[&str]) -> String {
    let out = Command::new("skopeo")
        .args(args)
        .output()
        .expect("run skopeo");
    assert!(
        out.status.success(),
        "skopeo {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test]
async fn skopeo_pushes_shared_base_to_two_repositories_and_pulls_both_back() {
    if !have("skopeo") {
        return;
    }
    let reg = TestRegistry::spawn();
    let work = tempfile::tempdir().unwrap();
    let base = crate::e2e::images::bytes(7, 300_000);
    let one = ImageBuilder::new(21)
        .layer(base.clone())
        .layers(1, 5000)
        .build();
    let two = ImageBuilder::new(22)
        .layer(base.clone())
        .layers(1, 7000)
        .build();
    let layout = work.path().join("src");
    write_layout(&layout, &[("one", &one), ("two", &two)]);
    let src = layout.to_str().unwrap();
    let a = &reg.addr;
    skopeo(&[
        "copy",
        "--preserve-digests",
        "--dest-tls-verify=false",
        &format!("oci:{src}:one"),
        &format!("docker://{a}/shared/one:v1"),
    ]);
    skopeo(&[
        "copy",
        "--preserve-digests",
        "--dest-tls-verify=false",
        &format!("oci:{src}:two"),
        &format!("docker://{a}/shared/two:v1"),
    ]);

    for (repo, img) in [("one", &one), ("two", &two)] {
        // The registry serves exactly the manifest that was pushed.
        let raw = skopeo(&[
            "inspect",
            "--raw",
            "--tls-verify=false",
            &format!("docker://{a}/shared/{repo}:v1"),
        ]);
        assert_eq!(sha256(raw.as_bytes()), img.digest(), "{repo}");
        let tags = skopeo(&[
            "list-tags",
            "--tls-verify=false",
            &format!("docker://{a}/shared/{repo}"),
        ]);
        assert!(tags.contains("\"v1\""), "{tags}");
        // Pull it back into a fresh layout: same manifest digest, same blobs.
        let out = work.path().join(format!("out-{repo}"));
        let dst = format!("oci:{}:{repo}", out.to_str().unwrap());
        skopeo(&[
            "copy",
            "--preserve-digests",
            "--src-tls-verify=false",
            &format!("docker://{a}/shared/{repo}:v1"),
            &dst,
        ]);
        let index: serde_json::Value =
            serde_json::from_slice(&std::fs::read(out.join("index.json")).unwrap()).unwrap();
        assert_eq!(index["manifests"][0]["digest"], img.digest());
        for l in &img.layers {
            let p = out
                .join("blobs/sha256")
                .join(sha256(l).trim_start_matches("sha256:"));
            assert_eq!(std::fs::read(p).unwrap(), *l);
        }
    }
    // The shared base layer is one file on the server.
    let files = crate::e2e::push::walk(&reg.data.join("blobs"));
    let hex = sha256(&base).trim_start_matches("sha256:").to_owned();
    assert_eq!(files.iter().filter(|f| f.ends_with(&hex)).count(), 1);

    // Copying between repositories of the same registry mounts instead of uploading.
    let out = Command::new("skopeo")
        .args([
            "--debug",
            "copy",
            "--src-tls-verify=false",
            "--dest-tls-verify=false",
        ])
        .arg(format!("docker://{a}/shared/one:v1"))
        .arg(format!("docker://{a}/shared/three:v1"))
        .output()
        .unwrap();
    assert!(out.status.success());
    let log = String::from_utf8_lossy(&out.stderr);
    // Every layer is mounted (skopeo uploads the small config itself).
    assert_eq!(
        log.matches("mount OK").count(),
        one.layers.len(),
        "layers were not mounted: {log}"
    );
    let raw = skopeo(&[
        "inspect",
        "--raw",
        "--tls-verify=false",
        &format!("docker://{a}/shared/three:v1"),
    ]);
    assert_eq!(sha256(raw.as_bytes()), one.digest());
}
