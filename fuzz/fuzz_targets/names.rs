//! Fuzzes the grammars of the names a URL carries (`RepoName`, `Tag`, `Reference`, `Digest`,
//! `UploadId`) and the saved hasher midstate an upload resumes from.
//!
//! Every parser must return rather than panic, a parsed value must print as the text it was
//! parsed from and parse back to itself, and a repository name must never hold a path
//! traversal. The midstate is fed both as text and, so that the fuzzer reaches the hash
//! state's own checks, as a well-formed `v1:<alg>:<len>:<hex>` line built from the input.

#![no_main]

use berth_oci::digest::DigestHasher;
use berth_oci::name::MAX_NAME_LEN;
use berth_oci::{Algorithm, Digest, Reference, RepoName, Tag, UploadId};
use libfuzzer_sys::fuzz_target;
use std::fmt::Write as _;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        text(s);
    }
    midstate(data);
});

fn text(s: &str) {
    if let Ok(n) = s.parse::<RepoName>() {
        assert_eq!(n.as_str(), s);
        assert_eq!(n.to_string().parse::<RepoName>().as_ref(), Ok(&n));
        assert!(n.as_str().len() <= MAX_NAME_LEN);
        assert!(!n
            .as_str()
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == ".."));
        assert!(n
            .as_str()
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-/".contains(&b)));
    }
    if let Ok(t) = s.parse::<Tag>() {
        assert_eq!(t.as_str(), s);
        assert_eq!(t.to_string().parse::<Tag>().as_ref(), Ok(&t));
        assert!(t.as_str().len() <= 128 && !t.as_str().contains(['/', ':']));
    }
    if let Ok(id) = s.parse::<UploadId>() {
        assert_eq!(id.as_str(), s);
        assert_eq!(id.to_string().parse::<UploadId>().as_ref(), Ok(&id));
    }
    if let Ok(r) = s.parse::<Reference>() {
        assert_eq!(r.to_string(), s);
        assert_eq!(r.to_string().parse::<Reference>().as_ref(), Ok(&r));
    }
    if let Ok(d) = s.parse::<Digest>() {
        assert_eq!(d.to_string(), s);
        assert_eq!(d.to_string().parse::<Digest>().as_ref(), Ok(&d));
        assert_eq!(d.hex().len(), d.algorithm().hex_len());
        // Digests travel in manifests as JSON strings too.
        let json = serde_json::to_string(&d).expect("a digest serialises");
        assert_eq!(
            serde_json::from_str::<Digest>(&json).ok().as_ref(),
            Some(&d)
        );
    }
    if let Some(a) = Algorithm::parse(s) {
        assert_eq!(a.as_str(), s);
    }
    if let Some(h) = DigestHasher::restore(s) {
        resumed(h, s.as_bytes());
    }
}

/// A saved line in the exact shape `DigestHasher::save` writes, around state bytes from the
/// input (zero-padded to the state's size).
fn midstate(data: &[u8]) {
    let Some((&alg, rest)) = data.split_first() else {
        return;
    };
    let (algorithm, state_len) = if alg & 1 == 0 {
        (Algorithm::Sha256, 104)
    } else {
        (Algorithm::Sha512, 208)
    };
    let mut len = [0u8; 8];
    let n = rest.len().min(8);
    len[..n].copy_from_slice(&rest[..n]);
    let len = u64::from_le_bytes(len);
    let mut state = rest[n..].to_vec();
    state.resize(state_len, 0);
    let mut line = format!("v1:{}:{len}:", algorithm.as_str());
    for b in &state {
        let _ = write!(line, "{b:02x}");
    }
    if let Some(h) = DigestHasher::restore(&line) {
        assert_eq!(h.algorithm(), algorithm);
        assert_eq!(h.len(), len);
        resumed(h, data);
    }
}

/// A restored hasher keeps hashing, saves to a line that restores to the same hasher, and
/// finishes.
fn resumed(h: DigestHasher, more: &[u8]) {
    let saved = h.save();
    let again = DigestHasher::restore(&saved).expect("a saved state restores");
    assert_eq!(again.len(), h.len());
    let mut h = h;
    h.update(more);
    let mut again = again;
    again.update(more);
    assert_eq!(h.finish(), again.finish());
}
