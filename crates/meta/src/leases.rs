//! Exclusivity that holds across processes, granted by the metadata store: who may install or
//! delete a digest's bytes, who writes to an upload session, which node runs a scheduled
//! job. Every backend grants them for everyone who shares its database: an embedded database
//! serves one process (the SQLite backend refuses a second), so [`LocalLeases`] is
//! cluster-wide there; a database of several nodes grants them itself.
//!
//! A digest's lease is taken exclusive by whoever stores its bytes and links them (an
//! upload's commit, a manifest's put of new bytes) and by the collector, from its mark to the
//! bytes' deletion; it is shared by those who only link bytes already stored (mounts, puts
//! of a manifest whose bytes are there), so they do not wait for one another. Together with
//! the metadata transaction's rule (a blob marked deleting is linked again only by whoever
//! stored its bytes after the mark), a collection never deletes bytes that a link relies on.

use crate::Result;
use async_trait::async_trait;
use berth_oci::{Digest, UploadId};
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex, Weak};
use tokio::sync::RwLock;

/// How a digest's lease is held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseMode {
    /// Alone: storing or deleting the bytes.
    Exclusive,
    /// Beside other sharers: linking bytes already stored.
    Shared,
}

/// A held lease, released when dropped.
pub struct LeaseGuard(#[allow(dead_code)] Box<dyn Send + Sync>);

impl LeaseGuard {
    /// Wraps whatever keeps a backend's lease held until it is dropped.
    pub fn new(held: impl Send + Sync + 'static) -> LeaseGuard {
        LeaseGuard(Box::new(held))
    }
}

#[async_trait]
pub trait Leases: Send + Sync + 'static {
    /// The lease of `digest` in `mode`, waiting for holders it excludes (a waiting exclusive
    /// holder is served before later sharers, so sharers never starve it).
    async fn digest(&self, digest: &Digest, mode: LeaseMode) -> Result<LeaseGuard>;

    /// The upload session's lease, or `None` at once when someone holds it: two writers at
    /// one offset cannot both be right, so the second is refused rather than queued.
    async fn try_session(&self, id: &UploadId) -> Result<Option<LeaseGuard>>;

    /// The lease of the scheduled job `name`, or `None` at once when someone runs it: at most
    /// one holder wherever the database is shared.
    async fn try_job(&self, name: &str) -> Result<Option<LeaseGuard>>;
}

/// Leases of one process: a read-write lock per key, made on first use and gone with its
/// last holder.
#[derive(Default)]
pub struct LocalLeases {
    digests: KeyedLocks<Digest>,
    sessions: KeyedLocks<UploadId>,
    jobs: KeyedLocks<String>,
}

#[async_trait]
impl Leases for LocalLeases {
    async fn digest(&self, digest: &Digest, mode: LeaseMode) -> Result<LeaseGuard> {
        let lock = self.digests.entry(digest);
        Ok(match mode {
            LeaseMode::Exclusive => LeaseGuard::new(lock.write_owned().await),
            LeaseMode::Shared => LeaseGuard::new(lock.read_owned().await),
        })
    }

    async fn try_session(&self, id: &UploadId) -> Result<Option<LeaseGuard>> {
        Ok(self.sessions.try_exclusive(id))
    }

    async fn try_job(&self, name: &str) -> Result<Option<LeaseGuard>> {
        Ok(self.jobs.try_exclusive(&name.to_owned()))
    }
}

struct KeyedLocks<K> {
    // A std Mutex: held only to look up or insert, never across an await.
    map: Mutex<HashMap<K, Weak<RwLock<()>>>>,
}

impl<K> Default for KeyedLocks<K> {
    fn default() -> Self {
        KeyedLocks {
            map: Mutex::new(HashMap::new()),
        }
    }
}

impl<K: Hash + Eq + Clone> KeyedLocks<K> {
    fn entry(&self, key: &K) -> Arc<RwLock<()>> {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() > 1024 {
            map.retain(|_, w| w.strong_count() > 0);
        }
        match map.get(key).and_then(Weak::upgrade) {
            Some(l) => l,
            None => {
                let l = Arc::new(RwLock::new(()));
                map.insert(key.clone(), Arc::downgrade(&l));
                l
            }
        }
    }

    fn try_exclusive(&self, key: &K) -> Option<LeaseGuard> {
        self.entry(key).try_write_owned().ok().map(LeaseGuard::new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn digest(n: u8) -> Digest {
        Digest::sha256(&[n])
    }

    /// Whether a lease of `d` in `mode` is granted within 50 ms.
    async fn granted(leases: &LocalLeases, d: &Digest, mode: LeaseMode) -> bool {
        tokio::time::timeout(Duration::from_millis(50), leases.digest(d, mode))
            .await
            .is_ok()
    }

    #[tokio::test]
    async fn an_exclusive_digest_lease_excludes_every_other_holder_of_that_digest() {
        let leases = LocalLeases::default();
        let held = leases
            .digest(&digest(1), LeaseMode::Exclusive)
            .await
            .unwrap();
        assert!(!granted(&leases, &digest(1), LeaseMode::Exclusive).await);
        assert!(!granted(&leases, &digest(1), LeaseMode::Shared).await);
        assert!(granted(&leases, &digest(2), LeaseMode::Exclusive).await);
        drop(held);
        assert!(granted(&leases, &digest(1), LeaseMode::Exclusive).await);
    }

    #[tokio::test]
    async fn shared_digest_leases_exclude_only_an_exclusive_holder() {
        let leases = LocalLeases::default();
        let a = leases.digest(&digest(1), LeaseMode::Shared).await.unwrap();
        let b = leases.digest(&digest(1), LeaseMode::Shared).await.unwrap();
        assert!(!granted(&leases, &digest(1), LeaseMode::Exclusive).await);
        drop((a, b));
        assert!(granted(&leases, &digest(1), LeaseMode::Exclusive).await);
    }

    #[tokio::test]
    async fn a_held_session_or_job_is_refused_at_once() {
        let leases = LocalLeases::default();
        let id: UploadId = "abc".parse().unwrap();
        let held = leases.try_session(&id).await.unwrap().expect("free");
        assert!(leases.try_session(&id).await.unwrap().is_none());
        drop(held);
        assert!(leases.try_session(&id).await.unwrap().is_some());
        let job = leases.try_job("gc").await.unwrap().expect("free");
        assert!(leases.try_job("gc").await.unwrap().is_none());
        assert!(leases.try_job("reconcile").await.unwrap().is_some());
        drop(job);
        assert!(leases.try_job("gc").await.unwrap().is_some());
    }
}
