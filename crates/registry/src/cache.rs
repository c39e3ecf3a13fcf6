//! A bounded cache of manifest bytes by digest. Content addressing makes it always correct:
//! the bytes under a digest never change, so nothing is ever invalidated, only evicted.

use berth_oci::Digest;
use bytes::Bytes;
use std::collections::HashMap;
use std::sync::Mutex;

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
