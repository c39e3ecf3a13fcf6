//! In-memory caches for pulls and listings, the hottest requests a registry serves.
//!
//! - [`ManifestCache`]: manifest bytes by digest. Content addressing makes it always correct:
//!   the bytes under a digest never change, so nothing is ever invalidated, only evicted.
//! - [`Resolutions`]: what a tag or digest names in a repository (its metadata record), and
//!   whole tag lists as their JSON body. One mechanism keeps it current: the metadata
//!   store's change generation, which every committed write that could change an entry
//!   makes larger, whichever process made it (see `MetaStore::generation`). An entry is kept
//!   with the generation read *before* its read, and served only while the generation is the
//!   same, so a read racing a write never keeps the old answer.

use berth_meta::ManifestRecord;
use berth_oci::{Digest, Reference, RepoName};
use bytes::Bytes;
use std::collections::HashMap;
use std::sync::Mutex;

/// Bytes the resolutions may take, counted roughly (an entry's names and body, plus a fixed
/// cost); the whole set is dropped when it would outgrow them.
const RESOLUTIONS_MAX_BYTES: usize = 8 << 20;
/// What an entry costs besides its names and body.
const ENTRY_COST: usize = 256;

/// What [`Resolutions`] keeps.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Key {
    /// What a tag or digest names in a repository.
    Manifest(RepoName, Reference),
    /// A repository's whole tag list.
    TagList(RepoName),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Manifest(ManifestRecord),
    /// A whole tag list: its names, from which pages are cut, and its JSON body.
    TagList {
        names: std::sync::Arc<Vec<String>>,
        body: Bytes,
    },
}

impl Value {
    fn cost(&self, key: &Key) -> usize {
        let names = match key {
            Key::Manifest(r, reference) => r.as_str().len() + reference.to_string().len(),
            Key::TagList(r) => r.as_str().len(),
        };
        let body = match self {
            Value::Manifest(m) => {
                m.media_type.len() + m.annotations.as_ref().map_or(0, String::len)
            }
            // The names take about what the body does.
            Value::TagList { body, .. } => 2 * body.len(),
        };
        ENTRY_COST + names + body
    }
}

#[derive(Default)]
pub struct Resolutions {
    // A std Mutex: held for a map operation only, never across an await.
    kept: Mutex<Kept>,
}

#[derive(Default)]
struct Kept {
    entries: HashMap<Key, (u64, Value)>,
    bytes: usize,
}

impl Resolutions {
    /// The value kept for `key` if it was read at the current `generation`.
    pub fn get(&self, key: &Key, generation: u64) -> Option<Value> {
        let kept = self.kept.lock().unwrap_or_else(|p| p.into_inner());
        match kept.entries.get(key) {
            Some((g, v)) if *g == generation => Some(v.clone()),
            _ => None,
        }
    }

    /// Keeps `value`, read after the generation was `generation`.
    pub fn keep(&self, key: Key, generation: u64, value: Value) {
        let cost = value.cost(&key);
        if cost > RESOLUTIONS_MAX_BYTES / 4 {
            return;
        }
        let mut kept = self.kept.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, old)) = kept.entries.remove(&key) {
            kept.bytes -= old.cost(&key);
        }
        if kept.bytes + cost > RESOLUTIONS_MAX_BYTES {
            *kept = Kept::default();
        }
        kept.entries.insert(key, (generation, value));
        kept.bytes += cost;
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
    fn an_entry_is_served_only_at_the_generation_it_was_read_at() {
        let c = Resolutions::default();
        let key = Key::TagList("a".parse().unwrap());
        let body = Value::TagList {
            names: Default::default(),
            body: Bytes::from_static(b"{}"),
        };
        c.keep(key.clone(), 7, body.clone());
        assert_eq!(c.get(&key, 7), Some(body));
        assert_eq!(c.get(&key, 8), None, "a write committed since");
    }

    #[test]
    fn resolutions_are_bounded() {
        let c = Resolutions::default();
        for i in 0..20_000u32 {
            let key = Key::TagList(format!("r{i}").parse().unwrap());
            let body = Bytes::from(vec![b'x'; 1000]);
            let names = Default::default();
            c.keep(key, 1, Value::TagList { names, body });
            assert!(c.kept.lock().unwrap().bytes <= RESOLUTIONS_MAX_BYTES);
        }
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
