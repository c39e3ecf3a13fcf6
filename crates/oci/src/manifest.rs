//! Parsing and validation of the manifests a registry stores: OCI image manifests and indexes
//! (with `subject` and `artifactType`), Docker schema 2 manifests and manifest lists.
//!
//! Parsing is deliberately lenient about fields it does not use (unknown keys are kept in the
//! stored bytes, never re-serialised) and strict about what the registry relies on: the media
//! type, the schema version, and every descriptor's digest and size.

use crate::digest::Digest;
use crate::media;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A content descriptor as it appears inside a manifest.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub urls: Option<Vec<String>>,
    /// The platform an index entry runs on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
}

/// The platform of an index entry: `os/architecture[/variant]`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    #[serde(
        rename = "os.version",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub os_version: Option<String>,
}

impl Platform {
    /// Parses `os/architecture[/variant]`.
    pub fn parse(s: &str) -> Option<Platform> {
        let mut parts = s.split('/');
        let os = parts.next().filter(|p| !p.is_empty())?;
        let architecture = parts.next().filter(|p| !p.is_empty())?;
        let variant = parts.next().map(str::to_owned);
        if parts.next().is_some() || variant.as_deref() == Some("") {
            return None;
        }
        Some(Platform {
            os: os.to_owned(),
            architecture: architecture.to_owned(),
            variant,
            os_version: None,
        })
    }

    /// Whether an index entry for `self` serves a request for `wanted`: same os and
    /// architecture, and the variant when one is asked for.
    pub fn satisfies(&self, wanted: &Platform) -> bool {
        self.os == wanted.os
            && self.architecture == wanted.architecture
            && (wanted.variant.is_none() || self.variant == wanted.variant)
    }
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

impl Descriptor {
    /// A layer whose bytes live elsewhere (foreign or non-distributable) need not be stored here.
    pub fn is_distributable(&self) -> bool {
        !media::NON_DISTRIBUTABLE.contains(&self.media_type.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// An image manifest (OCI or Docker schema 2): a config and layers.
    Image,
    /// An index or manifest list: child manifests.
    Index,
}

/// What the registry needs to know of a valid manifest.
#[derive(Debug, Clone)]
pub struct Manifest {
    /// The effective media type: the `Content-Type` it was pushed with, else its `mediaType`.
    pub media_type: String,
    pub kind: Kind,
    pub config: Option<Descriptor>,
    pub layers: Vec<Descriptor>,
    pub manifests: Vec<Descriptor>,
    pub subject: Option<Descriptor>,
    pub artifact_type: Option<String>,
    pub annotations: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ManifestError(pub String);

fn invalid(msg: impl Into<String>) -> ManifestError {
    ManifestError(msg.into())
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Raw {
    schema_version: Option<serde_json::Value>,
    media_type: Option<String>,
    config: Option<Descriptor>,
    layers: Option<Vec<Descriptor>>,
    manifests: Option<Vec<Descriptor>>,
    subject: Option<Descriptor>,
    artifact_type: Option<String>,
    annotations: Option<BTreeMap<String, String>>,
}

/// Content types a client may send that say nothing about the manifest's kind.
fn is_generic(ct: &str) -> bool {
    matches!(ct, "" | "application/json" | "application/octet-stream")
}

/// The manifest's media type: the `Content-Type` and the body's `mediaType` must agree when
/// both are given; with neither, the fields say which kind it is.
fn media_type_of(raw: &Raw, content_type: Option<&str>) -> Result<String, ManifestError> {
    let ct = content_type.map(media::essence).filter(|c| !is_generic(c));
    let body_type = raw.media_type.as_deref();
    if let Some(bt) = body_type {
        if !media::is_valid(bt) {
            return Err(invalid(format!("invalid mediaType {bt:?}")));
        }
    }
    match (&ct, body_type) {
        (Some(ct), Some(bt)) if ct != bt => Err(invalid(format!(
            "Content-Type {ct:?} does not match the manifest's mediaType {bt:?}"
        ))),
        (Some(ct), _) => Ok(ct.clone()),
        (None, Some(bt)) => Ok(bt.to_owned()),
        (None, None) if raw.manifests.is_some() => Ok(media::OCI_INDEX.to_owned()),
        (None, None) if raw.config.is_some() => Ok(media::OCI_MANIFEST.to_owned()),
        (None, None) => Err(invalid("cannot tell the manifest's media type")),
    }
}

/// The fields an image manifest or an index must have, and those it must not.
fn check_shape(raw: &Raw, kind: Kind) -> Result<(), ManifestError> {
    match kind {
        Kind::Image if raw.config.is_none() => {
            Err(invalid("an image manifest needs a config descriptor"))
        }
        Kind::Image if raw.layers.is_none() => {
            Err(invalid("an image manifest needs a layers array"))
        }
        Kind::Image if raw.manifests.is_some() => {
            Err(invalid("an image manifest cannot list manifests"))
        }
        Kind::Index if raw.manifests.is_none() => Err(invalid("an index needs a manifests array")),
        Kind::Index if raw.config.is_some() || raw.layers.is_some() => {
            Err(invalid("an index cannot have a config or layers"))
        }
        _ => Ok(()),
    }
}

impl Manifest {
    /// Parses and validates a manifest body pushed with an optional `Content-Type`.
    pub fn parse(body: &[u8], content_type: Option<&str>) -> Result<Manifest, ManifestError> {
        let raw: Raw = serde_json::from_slice(body)
            .map_err(|e| invalid(format!("manifest is not valid: {e}")))?;
        let media_type = media_type_of(&raw, content_type)?;
        if media_type == media::DOCKER_SCHEMA1 || media_type == media::DOCKER_SCHEMA1_SIGNED {
            return Err(invalid(
                "Docker schema 1 manifests are not supported; push schema 2 or OCI",
            ));
        }
        let kind = match media_type.as_str() {
            media::OCI_MANIFEST | media::DOCKER_MANIFEST => Kind::Image,
            media::OCI_INDEX | media::DOCKER_LIST => Kind::Index,
            other => {
                return Err(invalid(format!(
                    "unsupported manifest media type {other:?}"
                )))
            }
        };
        match &raw.schema_version {
            Some(v) if v.as_i64() == Some(2) => {}
            _ => return Err(invalid("schemaVersion must be 2")),
        }
        if let Some(at) = &raw.artifact_type {
            if !media::is_valid(at) {
                return Err(invalid(format!("invalid artifactType {at:?}")));
            }
        }
        let all = raw
            .config
            .iter()
            .chain(raw.layers.iter().flatten())
            .chain(raw.manifests.iter().flatten());
        for d in all.chain(raw.subject.iter()) {
            if !media::is_valid(&d.media_type) {
                return Err(invalid(format!(
                    "invalid descriptor mediaType {:?}",
                    d.media_type
                )));
            }
        }
        check_shape(&raw, kind)?;
        Ok(Manifest {
            media_type,
            kind,
            config: raw.config,
            layers: raw.layers.unwrap_or_default(),
            manifests: raw.manifests.unwrap_or_default(),
            subject: raw.subject,
            artifact_type: raw.artifact_type,
            annotations: raw.annotations,
        })
    }

    /// Blobs that must be present in the repository for this manifest to be complete:
    /// the config and every distributable layer.
    pub fn required_blobs(&self) -> impl Iterator<Item = &Descriptor> {
        self.config
            .iter()
            .chain(self.layers.iter().filter(|d| d.is_distributable()))
    }

    /// The artifact type a referrers listing shows: `artifactType`, else the config's media
    /// type for an image manifest (image-spec 1.1).
    pub fn listed_artifact_type(&self) -> Option<&str> {
        self.artifact_type.as_deref().or(match self.kind {
            Kind::Image => self.config.as_ref().map(|c| c.media_type.as_str()),
            Kind::Index => None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D1: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
    const D2: &str = "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a";

    fn image(mt: &str) -> String {
        format!(
            r#"{{"schemaVersion":2,"mediaType":"{mt}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{D1}","size":0}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"{D2}","size":2}}]}}"#
        )
    }

    #[test]
    fn image_manifests() {
        let m = Manifest::parse(
            image(media::OCI_MANIFEST).as_bytes(),
            Some(media::OCI_MANIFEST),
        )
        .unwrap();
        assert_eq!(m.kind, Kind::Image);
        assert_eq!(m.required_blobs().count(), 2);
        assert_eq!(
            m.listed_artifact_type(),
            Some("application/vnd.oci.image.config.v1+json")
        );
        let m = Manifest::parse(image(media::DOCKER_MANIFEST).as_bytes(), None).unwrap();
        assert_eq!(m.media_type, media::DOCKER_MANIFEST);
    }

    #[test]
    fn media_type_mismatch_is_refused() {
        let e = Manifest::parse(
            image(media::OCI_MANIFEST).as_bytes(),
            Some(media::DOCKER_MANIFEST),
        );
        assert!(e.is_err());
        let e = Manifest::parse(
            image(media::OCI_MANIFEST).as_bytes(),
            Some("application/vnd.foo+json"),
        );
        assert!(e.is_err());
        let m = Manifest::parse(
            image(media::OCI_MANIFEST).as_bytes(),
            Some("application/json; charset=utf-8"),
        );
        assert!(m.is_ok());
    }

    #[test]
    fn index_and_artifacts() {
        let body = format!(
            r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"{}","digest":"{D1}","size":10,"platform":{{"os":"linux","architecture":"amd64"}}}}],"subject":{{"mediaType":"{}","digest":"{D2}","size":3}},"artifactType":"application/x.sig"}}"#,
            media::OCI_MANIFEST,
            media::OCI_MANIFEST
        );
        let m = Manifest::parse(body.as_bytes(), None).unwrap();
        assert_eq!(m.kind, Kind::Index);
        assert_eq!(m.media_type, media::OCI_INDEX);
        assert_eq!(m.subject.as_ref().unwrap().digest.to_string(), D2);
        assert_eq!(m.listed_artifact_type(), Some("application/x.sig"));
        let p = m.manifests[0].platform.as_ref().unwrap();
        assert!(p.satisfies(&Platform::parse("linux/amd64").unwrap()));
        assert!(!p.satisfies(&Platform::parse("linux/arm64").unwrap()));
        assert!(!p.satisfies(&Platform::parse("linux/amd64/v3").unwrap()));
    }

    #[test]
    fn platforms() {
        let p = Platform::parse("linux/arm/v7").unwrap();
        assert_eq!(p.to_string(), "linux/arm/v7");
        for bad in ["", "linux", "linux/", "/amd64", "linux/arm/", "a/b/c/d"] {
            assert!(Platform::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn bad_manifests() {
        let nested = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        for bad in [
            "".to_owned(),
            "{".to_owned(),
            "[]".to_owned(),
            nested,
            r#"{"schemaVersion":1,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{},"layers":[]}"#.to_owned(),
            image(media::OCI_MANIFEST).replace(D2, "sha256:abc"),
            image(media::OCI_MANIFEST).replace("\"size\":2", "\"size\":-2"),
            image(media::DOCKER_SCHEMA1),
            image(media::OCI_MANIFEST).replace("\"schemaVersion\":2,", ""),
            r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","layers":[]}"#.to_owned(),
            r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json"}"#.to_owned(),
        ] {
            assert!(Manifest::parse(bad.as_bytes(), None).is_err(), "{}", &bad[..bad.len().min(80)]);
        }
    }
}
