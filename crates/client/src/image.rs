//! One image as people look at it: its manifest, config and layers, read from the local
//! store or a registry, and what `images` and `inspect` print of it.

use crate::error::{Error, Result};
use crate::reference::ImageRef;
use crate::store::{host_platform, pick_platform, LocalStore};
use crate::transfer::{Ctx, REPO_DIGEST};
use berth_oci::manifest::{Descriptor, Kind, Manifest, Platform};
use berth_oci::Digest;
use serde_json::{json, Map, Value};

/// An image manifest with its config, resolved from a name.
#[derive(Debug, Clone)]
pub struct ImageView {
    /// The image manifest.
    pub manifest: Descriptor,
    /// The digest its name resolves to on a registry (an index's, for a multi-platform image).
    pub repo_digest: Digest,
    /// The config's digest: the image id.
    pub id: Digest,
    pub config_size: u64,
    pub config: Value,
    pub layers: Vec<Descriptor>,
}

fn parse(bytes: &[u8], media_type: &str, digest: &Digest) -> Result<Manifest> {
    Manifest::parse(bytes, Some(media_type))
        .map_err(|e| Error::Invalid(format!("manifest {digest}: {e}")))
}

impl ImageView {
    fn build(
        manifest: Descriptor,
        repo_digest: Digest,
        m: &Manifest,
        config: &[u8],
    ) -> Result<ImageView> {
        let cfg = m
            .config
            .as_ref()
            .ok_or_else(|| Error::Invalid(format!("manifest {} has no config", manifest.digest)))?;
        let value: Value = serde_json::from_slice(config).unwrap_or(Value::Null);
        Ok(ImageView {
            manifest,
            repo_digest,
            id: cfg.digest.clone(),
            config_size: cfg.size,
            config: value,
            layers: m.layers.clone(),
        })
    }

    /// The image a stored descriptor names; for an index, the host's platform among the
    /// children present, else the first present.
    pub fn local(store: &LocalStore, desc: &Descriptor) -> Result<ImageView> {
        let bytes = store.read_blob(&desc.digest)?;
        let m = parse(&bytes, &desc.media_type, &desc.digest)?;
        let repo_digest = desc
            .annotations
            .as_ref()
            .and_then(|a| a.get(REPO_DIGEST))
            .and_then(|d| d.parse().ok())
            .unwrap_or_else(|| desc.digest.clone());
        match m.kind {
            Kind::Image => {
                let cfg = m.config.as_ref().map(|c| c.digest.clone());
                let config = match cfg {
                    Some(c) => store.read_blob(&c)?,
                    None => Vec::new(),
                };
                ImageView::build(desc.clone(), repo_digest, &m, &config)
            }
            Kind::Index => {
                let present: Vec<Descriptor> = m
                    .manifests
                    .iter()
                    .filter(|c| store.blob_size(&c.digest).is_some())
                    .cloned()
                    .collect();
                let child = pick_platform(&present, &host_platform())
                    .or(present.first())
                    .ok_or_else(|| {
                        Error::NotFound(format!("no image of index {} is stored", desc.digest))
                    })?;
                let mut view = ImageView::local(store, child)?;
                view.repo_digest = repo_digest;
                Ok(view)
            }
        }
    }

    /// The image `r` names on its registry, read without pulling layers.
    pub async fn remote(ctx: &Ctx, r: &ImageRef, platform: Option<&Platform>) -> Result<ImageView> {
        let reg = ctx.registry(r).await?;
        let top = reg.manifest(&r.repo, &r.reference()).await?;
        let mut m = top.parse()?;
        let mut f = top.clone();
        if m.kind == Kind::Index {
            let wanted = platform.cloned().unwrap_or_else(host_platform);
            let child = pick_platform(&m.manifests, &wanted)
                .or(m.manifests.first())
                .ok_or_else(|| Error::NotFound(format!("{r} is an empty index")))?;
            f = reg.manifest(&r.repo, &child.digest.to_string()).await?;
            m = f.parse()?;
        }
        let cfg = m
            .config
            .as_ref()
            .ok_or_else(|| Error::Invalid(format!("manifest {} has no config", f.digest)))?;
        let (resp, _) = reg.blob(&r.repo, &cfg.digest, 0).await?;
        let config = reg
            .small_body(resp, crate::registry::MANIFEST_LIMIT, "image config")
            .await?;
        if Digest::of(cfg.digest.algorithm(), &config) != cfg.digest {
            return Err(Error::DigestMismatch {
                expected: cfg.digest.to_string(),
                actual: Digest::of(cfg.digest.algorithm(), &config).to_string(),
            });
        }
        ImageView::build(f.descriptor(None), top.digest, &m, &config)
    }

    /// The config and layers: what the image takes on disk.
    pub fn size(&self) -> u64 {
        self.config_size + self.layers.iter().map(|l| l.size).sum::<u64>()
    }

    pub fn created(&self) -> Option<&str> {
        self.config.get("created").and_then(Value::as_str)
    }

    fn field(&self, key: &str) -> Value {
        self.config.get(key).cloned().unwrap_or(Value::Null)
    }

    /// `docker inspect`'s shape for this image.
    pub fn inspect(&self, repo_tags: Vec<String>, repo_digests: Vec<String>) -> Value {
        // Every key people look for is present, empty when the image does not set it.
        let mut config: Map<String, Value> = Map::new();
        for (k, empty) in [
            ("User", json!("")),
            ("ExposedPorts", json!({})),
            ("Env", json!([])),
            ("Cmd", Value::Null),
            ("Entrypoint", Value::Null),
            ("WorkingDir", json!("")),
            ("Labels", json!({})),
        ] {
            config.insert(k.to_owned(), empty);
        }
        if let Some(Value::Object(c)) = self.config.get("config") {
            for (k, v) in c {
                if !v.is_null() {
                    config.insert(k.clone(), v.clone());
                }
            }
        }
        let diff_ids = self
            .config
            .get("rootfs")
            .and_then(|r| r.get("diff_ids"))
            .cloned()
            .unwrap_or(json!([]));
        let layers: Vec<Value> = self
            .layers
            .iter()
            .map(|l| json!({"Digest": l.digest, "Size": l.size, "MediaType": l.media_type}))
            .collect();
        let mut out = json!({
            "Id": self.id,
            "RepoTags": repo_tags,
            "RepoDigests": repo_digests,
            "Created": self.field("created"),
            "Author": self.config.get("author").cloned().unwrap_or(json!("")),
            "Architecture": self.field("architecture"),
            "Os": self.field("os"),
            "Config": config,
            "RootFS": {"Type": "layers", "Layers": diff_ids},
            "Layers": layers,
            "History": self.config.get("history").cloned().unwrap_or(json!([])),
            "Size": self.size(),
            "Descriptor": {
                "mediaType": self.manifest.media_type,
                "digest": self.manifest.digest,
                "size": self.manifest.size,
            },
        });
        if let Some(v) = self.config.get("variant") {
            out["Variant"] = v.clone();
        }
        out
    }
}

/// "3 days ago", from an RFC 3339 time.
pub fn since(created: Option<&str>) -> String {
    let Some(t) = created.and_then(|c| humantime::parse_rfc3339_weak(c.trim_end_matches('Z')).ok())
    else {
        return "unknown".into();
    };
    let Ok(age) = std::time::SystemTime::now().duration_since(t) else {
        return "just now".into();
    };
    let s = age.as_secs();
    let (n, unit) = match s {
        0..60 => (s, "second"),
        60..3600 => (s / 60, "minute"),
        3600..86_400 => (s / 3600, "hour"),
        86_400..1_209_600 => (s / 86_400, "day"),
        1_209_600..5_184_000 => (s / 604_800, "week"),
        5_184_000..63_072_000 => (s / 2_592_000, "month"),
        _ => (s / 31_536_000, "year"),
    };
    format!("{n} {unit}{} ago", if n == 1 { "" } else { "s" })
}

#[cfg(test)]
mod tests {
    #[test]
    fn ages() {
        assert_eq!(super::since(None), "unknown");
        assert_eq!(
            super::since(Some("1970-01-01T00:00:00Z")).split(' ').nth(1),
            Some("years")
        );
        assert_eq!(super::since(Some("garbage")), "unknown");
    }
}
