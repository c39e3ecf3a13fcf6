//! The registry domain: everything the distribution spec means, on top of a [`BlobStore`] and
//! a [`MetaStore`], with no HTTP and no concrete backend.
//!
//! - [`access`]: the access policy: users, groups, rules, repository globs.
//! - [`uploads`]: upload sessions, chunked and monolithic, with resumable hashing.
//! - [`ids`]: signed upload ids, so that opening a session writes nothing.
//! - [`blobs`]: blob reads, deletes and cross-repository mounts.
//! - [`manifests`]: manifest push (validation and reference checks), pull and delete.
//! - [`listing`]: tags, catalog and referrers.
//! - [`cache`]: manifest bytes by digest; what tags and digests resolve to, and tag lists.
//! - [`retention`]: which tags and manifests a collection deletes, by policy.
//! - [`usage`]: storage accounting from metadata, and pull times.
//! - [`gc`]: online garbage collection and reconciliation with the blob store.
//! - [`error`]: the domain error, which knows its spec error code.

use berth_meta::MetaStore;
use berth_store::BlobStore;
use std::sync::Arc;

pub mod access;
pub mod blobs;
pub mod cache;
pub mod error;
pub mod gc;
mod ids;
pub mod listing;
pub mod manifests;
pub mod retention;
pub mod uploads;
pub mod usage;

pub use berth_store::ByteStream;
pub use error::{Error, Result};

/// A duration in milliseconds, as the metadata keeps times.
pub(crate) fn millis(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Settings the domain needs; the server builds them from its configuration.
#[derive(Debug, Clone)]
pub struct Options {
    /// Largest manifest accepted, in bytes.
    pub max_manifest_bytes: usize,
    /// Most entries one tags or catalog page returns, whatever `n` asks.
    pub max_page: u64,
    /// Entries in a catalog page when the client does not say.
    pub default_catalog_page: u64,
    /// Bytes of manifests kept in memory for GETs.
    pub manifest_cache_bytes: usize,
    /// An upload session that has received nothing for this long is unknown, and expired
    /// by the next collection.
    pub upload_expiry: std::time::Duration,
    /// How long a collection spares unreferenced blobs (counted from their last link).
    pub gc_grace: std::time::Duration,
    /// Retention rules, the first matching a repository applying to it.
    pub retention: Vec<retention::Rule>,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            max_manifest_bytes: 4 << 20,
            max_page: 10_000,
            default_catalog_page: 1_000,
            manifest_cache_bytes: 8 << 20,
            upload_expiry: std::time::Duration::from_secs(24 * 3600),
            gc_grace: std::time::Duration::from_secs(24 * 3600),
            retention: Vec::new(),
        }
    }
}

/// The registry: cheap to clone, shared by every request.
#[derive(Clone)]
pub struct Registry {
    blobs: Arc<dyn BlobStore>,
    meta: Arc<dyn MetaStore>,
    opts: Arc<Options>,
    manifests: Arc<cache::ManifestCache>,
    resolutions: Arc<cache::Resolutions>,
    ids: Arc<tokio::sync::OnceCell<ids::IdKey>>,
    pulls: Arc<usage::PullLog>,
    /// Small whole blobs being finished in memory (see `uploads::SMALL_BLOB`).
    small: Arc<tokio::sync::Semaphore>,
}

impl Registry {
    /// The registry on these backends.
    pub async fn open(
        blobs: Arc<dyn BlobStore>,
        meta: Arc<dyn MetaStore>,
        opts: Options,
    ) -> Result<Registry> {
        let manifests = Arc::new(cache::ManifestCache::new(opts.manifest_cache_bytes));
        let registry = Registry {
            blobs,
            meta,
            opts: Arc::new(opts),
            manifests,
            resolutions: Arc::default(),
            ids: Arc::default(),
            pulls: Arc::default(),
            small: Arc::new(tokio::sync::Semaphore::new(uploads::SMALL_BLOBS)),
        };
        // Fetched beside start-up rather than on its path: on a new database, making the
        // key is a durable write. The first upload waits for it if it is not there yet; if
        // fetching fails, that is logged and each upload tries again (answering 500 until
        // the database answers).
        let warm = registry.clone();
        tokio::spawn(async move {
            if let Err(e) = warm.id_key().await {
                tracing::error!(error = %e, "fetching the upload id key");
            }
        });
        Ok(registry)
    }

    /// The key upload ids are signed with, from the metadata store (made there on a new
    /// database); fetched once.
    pub(crate) async fn id_key(&self) -> Result<&ids::IdKey> {
        self.ids
            .get_or_try_init(|| async {
                let candidate = ids::new_secret().map_err(Error::Internal)?;
                let secret = self.meta.secret(ids::SECRET_NAME, &candidate).await?;
                ids::IdKey::new(&secret).map_err(Error::Internal)
            })
            .await
    }

    pub fn options(&self) -> &Options {
        &self.opts
    }
}

#[cfg(test)]
pub(crate) mod testutil {
    use super::*;

    /// A registry on the memory blob store and a SQLite file in a temp dir.
    pub async fn registry() -> (Registry, tempfile::TempDir) {
        let dir = tempfile::tempdir().expect("tempdir");
        let meta = berth_meta::sqlite::SqliteMeta::open(&dir.path().join("meta.db"))
            .await
            .expect("meta");
        let reg = Registry::open(
            Arc::new(berth_store::memory::MemoryStore::new()),
            Arc::new(meta),
            Options::default(),
        )
        .await
        .expect("registry");
        (reg, dir)
    }
}
