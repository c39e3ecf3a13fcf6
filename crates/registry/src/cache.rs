//! In-memory caches for manifest pulls, the hottest requests a registry serves.
//!
//! - [`ManifestCache`]: manifest bytes by digest. Content addressing makes it always correct:
//!   the bytes under a digest never change, so nothing is ever invalidated, only evicted.
//! - [`ResolveCache`]: what a tag or digest names in a repository (its metadata record), so
//!   that a pull asks the database nothing. Every manifest or tag write of this process
//!   bumps a generation *after* it commits; a lookup notes the generation *before* it asks
//!   the database and its entry counts only while the generation is unchanged, so a lookup
//!   racing a write can never keep the old answer. Writers elsewhere (another process on
//!   the same database) are seen within [`RESOLVE_TTL`].

use berth_meta::ManifestRecord;
use berth_oci::{Digest, Reference, RepoName};
use bytes::Bytes;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a resolution may be served without asking the database again.
pub const RESOLVE_TTL: Duration = Duration::from_secs(1);
/// Resolutions kept at most; the cache is emptied when it is full.
const RESOLVE_MAX: usize = 16_384;

#[derive(Default)]
pub struct ResolveCache {
    generation: AtomicU64,
    // A std Mutex: held for a map operation only, never across an await.
    map: Mutex<HashMap<(RepoName, Reference), Resolution>>,
}

/// A record, the generation it was asked at, and when.
type Resolution = (ManifestRecord, u64, Instant);

impl ResolveCache {
    /// The generation to pass to [`ResolveCache::insert`]: read it before asking the database.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Forgets every resolution; call after a manifest or tag write has committed.
    pub fn invalidate(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    pub fn get(&self, repo: &RepoName, reference: &Reference) -> Option<ManifestRecord> {
        let now = self.generation();
        let map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        let key = (repo.clone(), reference.clone());
        match map.get(&key) {
            Some((rec, generation, at)) if *generation == now && at.elapsed() < RESOLVE_TTL => {
                Some(rec.clone())
            }
            _ => None,
        }
    }

    /// Keeps what the database answered, asked at `generation`.
    pub fn insert(
        &self,
        repo: &RepoName,
        reference: &Reference,
        rec: ManifestRecord,
        generation: u64,
    ) {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= RESOLVE_MAX {
            map.clear();
        }
        map.insert(
            (repo.clone(), reference.clone()),
            (rec, generation, Instant::now()),
        );
    }
}

/// Manifest bytes by digest, at most a given number of bytes.
pub struct ManifestCache {
    // A std Mutex: held for a map operation only, never across an await.
    inner: Mutex<Inner>,
    capacity: usize,
}

#[derive(Default)]
struct Inner {
    map: HashMap<Digest, Bytes>,
    bytes: usize,
}

impl ManifestCache {
    /// A cache holding at most `capacity` bytes of manifests.
    pub fn new(capacity: usize) -> ManifestCache {
        ManifestCache {
            inner: Mutex::default(),
            capacity,
        }
    }

    pub fn get(&self, d: &Digest) -> Option<Bytes> {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .map
            .get(d)
            .cloned()
    }

    pub fn insert(&self, d: Digest, b: Bytes) {
        if b.len() > self.capacity / 8 {
            return;
        }
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if inner.bytes + b.len() > self.capacity {
            // Evicting everything at once keeps this simple and O(1) amortised; a hot set
            // refills from disk in a few requests.
            inner.map.clear();
            inner.bytes = 0;
        }
        let len = b.len();
        if inner.map.insert(d, b).is_none() {
            inner.bytes += len;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_resolution_asked_before_a_write_is_not_kept() {
        let c = ResolveCache::default();
        let repo: RepoName = "a".parse().unwrap();
        let tag: Reference = "v1".parse().unwrap();
        let rec = ManifestRecord {
            digest: Digest::sha256(b"m"),
            media_type: "x".into(),
            size: 1,
            artifact_type: None,
            subject: None,
            config_media_type: None,
            annotations: None,
            pushed_at: 0,
        };
        let before = c.generation();
        c.insert(&repo, &tag, rec.clone(), before);
        assert_eq!(c.get(&repo, &tag), Some(rec.clone()));
        // A lookup starts, a write commits and invalidates, the lookup stores its old answer.
        let asked = c.generation();
        c.invalidate();
        c.insert(&repo, &tag, rec, asked);
        assert_eq!(c.get(&repo, &tag), None);
    }

    #[test]
    fn bounded() {
        let c = ManifestCache::new(800);
        for i in 0..100u32 {
            c.insert(
                Digest::sha256(&i.to_le_bytes()),
                Bytes::from(vec![0u8; 100]),
            );
            assert!(c.inner.lock().unwrap().bytes <= 800);
        }
        let d = Digest::sha256(&99u32.to_le_bytes());
        assert_eq!(c.get(&d).map(|b| b.len()), Some(100));
        c.insert(Digest::sha256(b"big"), Bytes::from(vec![0u8; 200]));
        assert!(
            c.get(&Digest::sha256(b"big")).is_none(),
            "entries over 1/8 of the cache are not kept"
        );
    }
}
