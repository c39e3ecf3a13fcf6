//! Fuzzes manifest parsing and validation, the registry's largest parser of pushed bytes,
//! together with the media-type helpers it leans on.
//!
//! The first input byte picks the `Content-Type` (none, one of the known media types, or,
//! past the list, a length byte and that many bytes of arbitrary text); the rest is the
//! body. Nothing may panic or overflow the stack (deeply nested JSON included), and an
//! accepted manifest must satisfy what the registry relies on: a storable media type, the
//! shape its kind demands, valid descriptor media types, and stability when pushed again
//! with its own media type.

#![no_main]

use berth_oci::manifest::{Descriptor, Kind, Manifest, Platform};
use berth_oci::media;
use libfuzzer_sys::fuzz_target;

const CONTENT_TYPES: &[Option<&str>] = &[
    None,
    Some(media::OCI_MANIFEST),
    Some(media::OCI_INDEX),
    Some(media::DOCKER_MANIFEST),
    Some(media::DOCKER_LIST),
    Some(media::DOCKER_SCHEMA1),
    Some(media::DOCKER_SCHEMA1_SIGNED),
    Some(media::OCI_EMPTY),
    Some("application/json"),
    Some("application/octet-stream"),
    Some("application/json; charset=utf-8"),
    Some(""),
    Some("APPLICATION/VND.OCI.IMAGE.MANIFEST.V1+JSON ; x=y"),
];

fuzz_target!(|data: &[u8]| {
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let (content_type, body) = match CONTENT_TYPES.get(usize::from(pick)) {
        Some(ct) => (ct.map(str::to_owned), rest),
        None => {
            let Some((&n, rest)) = rest.split_first() else {
                return;
            };
            let n = usize::from(n).min(rest.len());
            (
                Some(String::from_utf8_lossy(&rest[..n]).into_owned()),
                &rest[n..],
            )
        }
    };

    if let Some(ct) = &content_type {
        helpers(ct);
    }
    if let Ok(s) = std::str::from_utf8(body) {
        helpers(s);
    }

    let Ok(m) = Manifest::parse(body, content_type.as_deref()) else {
        return;
    };
    assert!(media::MANIFEST_TYPES.contains(&m.media_type.as_str()));
    match m.kind {
        Kind::Image => {
            assert!(m.media_type == media::OCI_MANIFEST || m.media_type == media::DOCKER_MANIFEST);
            assert!(m.config.is_some() && m.manifests.is_empty());
        }
        Kind::Index => {
            assert!(m.media_type == media::OCI_INDEX || m.media_type == media::DOCKER_LIST);
            assert!(m.config.is_none() && m.layers.is_empty());
        }
    }
    let all = m
        .config
        .iter()
        .chain(&m.layers)
        .chain(&m.manifests)
        .chain(&m.subject);
    for d in all {
        assert!(media::is_valid(&d.media_type));
        descriptor_round_trips(d);
        if let Some(p) = &d.platform {
            assert!(p.satisfies(p));
        }
    }
    if let Some(at) = &m.artifact_type {
        assert!(media::is_valid(at));
    }
    let required = m.required_blobs().count();
    assert!(required <= 1 + m.layers.len());
    let _ = m.listed_artifact_type();

    // Pushed again with the media type it was stored under, the same bytes are accepted as
    // the same kind of manifest: a pull that echoes the stored Content-Type must not break.
    let again = Manifest::parse(body, Some(&m.media_type)).expect("re-parse with its own type");
    assert_eq!(again.media_type, m.media_type);
    assert_eq!(again.kind, m.kind);
});

/// Descriptors are written back out (referrers listings, indexes the client builds): what is
/// serialised must read back as the same descriptor.
fn descriptor_round_trips(d: &Descriptor) {
    let json = serde_json::to_vec(d).expect("a descriptor serialises");
    let back: Descriptor = serde_json::from_slice(&json).expect("a serialised descriptor parses");
    assert_eq!(&back, d);
}

/// The media-type and platform helpers on arbitrary text.
fn helpers(s: &str) {
    let essence = media::essence(s);
    assert_eq!(media::essence(&essence), essence);
    if media::is_valid(s) {
        assert!(s.contains('/'));
    }
    for t in media::MANIFEST_TYPES {
        let _ = media::accepts(&[s], t);
    }
    if let Some(p) = Platform::parse(s) {
        assert_eq!(p.to_string(), s);
        assert_eq!(Platform::parse(&p.to_string()), Some(p.clone()));
        assert!(p.satisfies(&p));
    }
}
