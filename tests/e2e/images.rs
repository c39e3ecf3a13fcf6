//! Test images generated from a seed: no binary fixtures in the repository.

use crate::e2e::harness::{sha256, OCI_MANIFEST};

/// Deterministic pseudo-random bytes (splitmix64).
pub fn bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut s = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = s;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        out.extend_from_slice(&(z ^ (z >> 31)).to_le_bytes());
    }
    out.truncate(len);
    out
}

pub struct Image {
    pub config: Vec<u8>,
    pub layers: Vec<Vec<u8>>,
    pub manifest: Vec<u8>,
}

impl Image {
    pub fn digest(&self) -> String {
        sha256(&self.manifest)
    }
}

pub struct ImageBuilder {
    seed: u64,
    layers: Vec<Vec<u8>>,
    subject: Option<(String, usize)>,
    artifact_type: Option<String>,
}

impl ImageBuilder {
    pub fn new(seed: u64) -> ImageBuilder {
        ImageBuilder {
            seed,
            layers: Vec::new(),
            subject: None,
            artifact_type: None,
        }
    }

    /// Adds `n` layers of `size` bytes each, derived from the seed.
    pub fn layers(mut self, n: usize, size: usize) -> ImageBuilder {
        for i in 0..n {
            let k = self.layers.len() as u64 + i as u64;
            self.layers.push(bytes(self.seed * 1000 + k, size));
        }
        self.layers.truncate(self.layers.len());
        self
    }

    /// Adds a given layer (to share a base layer between images).
    pub fn layer(mut self, data: Vec<u8>) -> ImageBuilder {
        self.layers.push(data);
        self
    }

    pub fn subject(mut self, digest: &str, size: usize) -> ImageBuilder {
        self.subject = Some((digest.to_owned(), size));
        self
    }

    pub fn artifact_type(mut self, t: &str) -> ImageBuilder {
        self.artifact_type = Some(t.to_owned());
        self
    }

    pub fn build(self) -> Image {
        let config = format!(
            r#"{{"architecture":"amd64","os":"linux","seed":{}}}"#,
            self.seed
        )
        .into_bytes();
        let layers: Vec<serde_json::Value> = self
            .layers
            .iter()
            .map(|l| {
                serde_json::json!({"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":sha256(l),"size":l.len()})
            })
            .collect();
        let mut m = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType":"application/vnd.oci.image.config.v1+json","digest":sha256(&config),"size":config.len()},
            "layers": layers,
        });
        if let Some((d, s)) = self.subject {
            m["subject"] = serde_json::json!({"mediaType": OCI_MANIFEST, "digest": d, "size": s});
        }
        if let Some(t) = self.artifact_type {
            m["artifactType"] = serde_json::json!(t);
            m["annotations"] = serde_json::json!({"org.example.kind": t});
        }
        Image {
            config,
            layers: self.layers,
            manifest: serde_json::to_vec(&m).expect("json"),
        }
    }
}
