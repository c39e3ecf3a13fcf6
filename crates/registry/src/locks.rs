//! Locks by key, made on first use and gone with their last holder: one per upload session
//! (one writer at a time) and one per digest (a blob is never committed, linked and collected
//! at once).
//!
//! These are locks of this process. Several nodes on one database would need the database's
//! own (advisory locks); the metadata transaction that marks a blob deleting still refuses
//! every link made after it, so a node can lose a push to another's collection, never data.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex, Weak};
use tokio::sync::OwnedMutexGuard;

pub struct KeyedLocks<K> {
    // A std Mutex: held only to look up or insert, never across an await.
    map: Mutex<HashMap<K, Weak<tokio::sync::Mutex<()>>>>,
}

impl<K> Default for KeyedLocks<K> {
    fn default() -> Self {
        KeyedLocks {
            map: Mutex::new(HashMap::new()),
        }
    }
}

/// Held while it lives.
pub type KeyGuard = OwnedMutexGuard<()>;

impl<K: Hash + Eq + Clone> KeyedLocks<K> {
    fn entry(&self, key: &K) -> Arc<tokio::sync::Mutex<()>> {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() > 1024 {
            map.retain(|_, w| w.strong_count() > 0);
        }
        match map.get(key).and_then(Weak::upgrade) {
            Some(l) => l,
            None => {
                let l = Arc::new(tokio::sync::Mutex::new(()));
                map.insert(key.clone(), Arc::downgrade(&l));
                l
            }
        }
    }

    /// The lock of `key` if nobody holds it.
    pub fn try_lock(&self, key: &K) -> Option<KeyGuard> {
        self.entry(key).try_lock_owned().ok()
    }

    /// The lock of `key`, waiting for its holder.
    pub async fn lock(&self, key: &K) -> KeyGuard {
        self.entry(key).lock_owned().await
    }
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn one_holder_per_key() {
        let locks = super::KeyedLocks::<u32>::default();
        let a = locks.lock(&1).await;
        assert!(locks.try_lock(&1).is_none());
        assert!(locks.try_lock(&2).is_some());
        drop(a);
        assert!(locks.try_lock(&1).is_some());
    }
}
