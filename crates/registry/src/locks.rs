//! Locks by key, made on first use and gone with their last holder: one per upload session
//! (one writer at a time) and one per digest (a blob is never committed, linked and collected
//! at once). A digest's lock is taken whole by the collector and by writers that install the
//! digest's file (whoever finds the file there relies on its installer having synced the
//! name), and shared by writers that only link what is there (mounts, and puts of a manifest
//! whose bytes are stored already): mounts of one popular blob into many repositories, or
//! many tags of one manifest, do not wait out one another's metadata commits, which made
//! them one commit at a time instead of one group commit.
//!
//! These are locks of this process. Several nodes on one database would need the database's
//! own (advisory locks); the metadata transaction that marks a blob deleting still refuses
//! every link made after it, so a node can lose a push to another's collection, never data.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex, Weak};
use tokio::sync::{OwnedRwLockReadGuard, OwnedRwLockWriteGuard};

pub struct KeyedLocks<K> {
    // A std Mutex: held only to look up or insert, never across an await.
    map: Mutex<HashMap<K, Weak<tokio::sync::RwLock<()>>>>,
}

impl<K> Default for KeyedLocks<K> {
    fn default() -> Self {
        KeyedLocks {
            map: Mutex::new(HashMap::new()),
        }
    }
}

/// Held while it lives.
pub enum KeyGuard {
    Whole { _guard: OwnedRwLockWriteGuard<()> },
    Shared { _guard: OwnedRwLockReadGuard<()> },
}

impl<K: Hash + Eq + Clone> KeyedLocks<K> {
    fn entry(&self, key: &K) -> Arc<tokio::sync::RwLock<()>> {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() > 1024 {
            map.retain(|_, w| w.strong_count() > 0);
        }
        match map.get(key).and_then(Weak::upgrade) {
            Some(l) => l,
            None => {
                let l = Arc::new(tokio::sync::RwLock::new(()));
                map.insert(key.clone(), Arc::downgrade(&l));
                l
            }
        }
    }

    /// The whole lock of `key` if nobody holds it.
    pub fn try_lock(&self, key: &K) -> Option<KeyGuard> {
        self.entry(key)
            .try_write_owned()
            .ok()
            .map(|_guard| KeyGuard::Whole { _guard })
    }

    /// The whole lock of `key`, waiting for its holders.
    pub async fn lock(&self, key: &K) -> KeyGuard {
        KeyGuard::Whole {
            _guard: self.entry(key).write_owned().await,
        }
    }

    /// A share of the lock of `key`, beside other sharers, waiting for a whole holder (and
    /// behind one that waits: the lock is fair, so sharers never starve it).
    pub async fn share(&self, key: &K) -> KeyGuard {
        KeyGuard::Shared {
            _guard: self.entry(key).read_owned().await,
        }
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

    /// Sharers hold a key together; a whole holder waits for them all, and excludes them.
    #[tokio::test]
    async fn sharers_exclude_only_a_whole_holder() {
        let locks = super::KeyedLocks::<u32>::default();
        let a = locks.share(&1).await;
        let b = tokio::time::timeout(std::time::Duration::from_secs(5), locks.share(&1))
            .await
            .expect("a second sharer gets in");
        assert!(locks.try_lock(&1).is_none());
        drop(a);
        assert!(locks.try_lock(&1).is_none());
        drop(b);
        let whole = locks.try_lock(&1).expect("free once the sharers are gone");
        let waiting = tokio::time::timeout(std::time::Duration::from_millis(50), locks.share(&1));
        assert!(
            waiting.await.is_err(),
            "a sharer waits for the whole holder"
        );
        drop(whole);
    }
}
