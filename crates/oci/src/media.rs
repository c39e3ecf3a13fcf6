//! Media types the registry recognises.

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_SCHEMA1: &str = "application/vnd.docker.distribution.manifest.v1+json";
pub const DOCKER_SCHEMA1_SIGNED: &str = "application/vnd.docker.distribution.manifest.v1+prettyjws";
pub const OCI_EMPTY: &str = "application/vnd.oci.empty.v1+json";

/// Layer types that point outside the registry (Windows base layers): their blobs need not
/// be pushed, so manifests referencing them are not checked for those blobs.
pub const NON_DISTRIBUTABLE: &[&str] = &[
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
];

/// Manifest media types that may be stored and served.
pub const MANIFEST_TYPES: &[&str] = &[OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST];

/// Is `s` a syntactically valid media type (`type/subtype`, RFC 6838 restricted names)?
pub fn is_valid(s: &str) -> bool {
    fn token(t: &str) -> bool {
        !t.is_empty()
            && t.len() <= 127
            && t.as_bytes()[0].is_ascii_alphanumeric()
            && t.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$&-^_.+".contains(&b))
    }
    match s.split_once('/') {
        Some((ty, sub)) => token(ty) && token(sub),
        None => false,
    }
}

/// The media type without parameters (`; charset=…`), lower-cased.
pub fn essence(s: &str) -> String {
    s.split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

/// Does a client that sent these `Accept` header values take a manifest of `media_type`?
///
/// A client that names no manifest type at all (no header, `application/json`, …) did not
/// negotiate and gets what is stored; one that names manifest types gets only those (or
/// anything with `*/*`), as Distribution does for OCI types.
pub fn accepts(accept: &[&str], media_type: &str) -> bool {
    let named: Vec<String> = accept
        .iter()
        .flat_map(|v| v.split(','))
        .map(essence)
        .filter(|t| !t.is_empty())
        .collect();
    let negotiates = named.iter().any(|t| {
        MANIFEST_TYPES.contains(&t.as_str()) || t == DOCKER_SCHEMA1 || t == DOCKER_SCHEMA1_SIGNED
    });
    !negotiates
        || named
            .iter()
            .any(|t| t == media_type || t == "*/*" || t == "application/*")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiation() {
        assert!(accepts(&[], OCI_MANIFEST));
        assert!(accepts(&["application/json"], OCI_MANIFEST));
        assert!(accepts(
            &[&format!("{DOCKER_MANIFEST}, {OCI_MANIFEST};q=0.9")],
            OCI_MANIFEST
        ));
        assert!(accepts(&[DOCKER_MANIFEST, OCI_INDEX], OCI_INDEX));
        assert!(!accepts(&[DOCKER_MANIFEST], OCI_MANIFEST));
        assert!(accepts(&[DOCKER_MANIFEST, "*/*"], OCI_MANIFEST));
        assert!(is_valid("application/vnd.oci.image.manifest.v1+json"));
        assert!(!is_valid("application"));
        assert!(!is_valid("a/b/c"));
    }
}
