//! The one place where the configuration's storage and database become backends: each
//! `StorageConfig` and `DatabaseUrl` variant names the backend that serves it.

use crate::config::{Config, DatabaseUrl, StorageConfig};
use anyhow::Context;
use berth_meta::MetaStore;
use berth_registry::Registry;
use berth_store::BlobStore;
use std::sync::Arc;

/// Opens the blob store the configuration names.
pub async fn blob_store(storage: &StorageConfig) -> anyhow::Result<Arc<dyn BlobStore>> {
    match storage {
        StorageConfig::Fs { path } => {
            let path = path.clone();
            let store = tokio::task::spawn_blocking(move || {
                berth_store::fs::FsStore::open(&path)
                    .with_context(|| format!("opening data directory {}", path.display()))
            })
            .await
            .context("opening the data directory")??;
            Ok(Arc::new(store))
        }
        StorageConfig::S3 {
            bucket,
            prefix,
            region,
            endpoint,
            path_style,
            access_key_id,
            secret_access_key,
            redirect,
        } => {
            let opts = berth_store::s3::S3Options {
                bucket: bucket.clone(),
                prefix: prefix.clone(),
                region: region.clone(),
                endpoint: endpoint.clone(),
                path_style: *path_style,
                access_key_id: access_key_id.clone(),
                secret_access_key: secret_access_key.clone(),
                redirect: *redirect,
                part_size: None,
            };
            let store = berth_store::s3::S3Store::open(&opts)
                .with_context(|| format!("opening bucket {bucket}"))?;
            Ok(Arc::new(store))
        }
    }
}

/// Opens (creating and migrating if needed) the metadata store the URL names.
pub async fn meta_store(url: &DatabaseUrl) -> anyhow::Result<Arc<dyn MetaStore>> {
    let meta = match url {
        DatabaseUrl::Sqlite(path) => berth_meta::sqlite::SqliteMeta::open(path).await,
    };
    Ok(Arc::new(
        meta.with_context(|| format!("opening database {url}"))?,
    ))
}

/// Opens the backends the configuration names (both at once: each is start-up work) and
/// builds the registry on them.
pub async fn open_registry(config: &Config) -> anyhow::Result<Registry> {
    let url = config.database_url();
    let (blobs, meta) = tokio::try_join!(blob_store(&config.storage), meta_store(&url))?;
    Registry::open(blobs, meta, config.registry_options()?)
        .await
        .context("opening the registry")
}
