//! An in-process blob store: the same contract as the filesystem store, for domain tests
//! that want no disk.

use crate::{BlobEntry, BlobRead, BlobStore, ByteStream, Durability, ReadAs, Result, StoreError};
use async_trait::async_trait;
use berth_oci::{Digest, UploadId};
use bytes::Bytes;
use futures::stream::BoxStream;
use futures::StreamExt;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::SystemTime;

#[derive(Default)]
pub struct MemoryStore {
    // A std Mutex: it is never held across an await, and the maps are small.
    blobs: Mutex<HashMap<Digest, (Bytes, SystemTime)>>,
    uploads: Mutex<HashMap<UploadId, (Vec<u8>, SystemTime)>>,
}

impl MemoryStore {
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn once(b: Bytes) -> ByteStream<'static> {
    futures::stream::once(async move { Ok(b) }).boxed()
}

#[async_trait]
impl BlobStore for MemoryStore {
    async fn stat(&self, digest: &Digest) -> Result<Option<u64>> {
        Ok(lock(&self.blobs).get(digest).map(|(b, _)| b.len() as u64))
    }

    async fn read(
        &self,
        digest: &Digest,
        range: Option<(u64, u64)>,
        _: ReadAs,
    ) -> Result<BlobRead> {
        let (b, _) = lock(&self.blobs)
            .get(digest)
            .cloned()
            .ok_or(StoreError::NotFound)?;
        Ok(BlobRead::Stream(once(match range {
            Some((s, e)) => b.slice(s as usize..=e as usize),
            None => b,
        })))
    }

    async fn put(&self, digest: &Digest, bytes: Bytes) -> Result<()> {
        lock(&self.blobs).insert(digest.clone(), (bytes, SystemTime::now()));
        Ok(())
    }

    async fn delete(&self, digest: &Digest) -> Result<()> {
        lock(&self.blobs).remove(digest);
        Ok(())
    }

    fn list(&self) -> BoxStream<'_, Result<BlobEntry>> {
        let entries: Vec<Result<BlobEntry>> = lock(&self.blobs)
            .iter()
            .map(|(d, (b, t))| {
                Ok(BlobEntry {
                    digest: d.clone(),
                    size: b.len() as u64,
                    modified: *t,
                })
            })
            .collect();
        futures::stream::iter(entries).boxed()
    }

    fn uploads(&self) -> BoxStream<'_, Result<(UploadId, SystemTime)>> {
        let entries: Vec<Result<(UploadId, SystemTime)>> = lock(&self.uploads)
            .iter()
            .map(|(id, (_, t))| Ok((id.clone(), *t)))
            .collect();
        futures::stream::iter(entries).boxed()
    }

    async fn append(
        &self,
        id: &UploadId,
        offset: u64,
        mut body: ByteStream<'_>,
        _: Durability,
    ) -> Result<u64> {
        let actual = match self.upload_len(id).await {
            Err(StoreError::NotFound) if offset == 0 => 0,
            other => other?,
        };
        if actual < offset {
            return Err(StoreError::Offset {
                expected: offset,
                actual,
            });
        }
        let mut data = Vec::new();
        while let Some(chunk) = body.next().await {
            data.extend_from_slice(&chunk.map_err(StoreError::Body)?);
        }
        let mut uploads = lock(&self.uploads);
        let (up, at) = uploads
            .entry(id.clone())
            .or_insert_with(|| (Vec::new(), SystemTime::now()));
        up.truncate(offset as usize);
        up.extend_from_slice(&data);
        *at = SystemTime::now();
        Ok(up.len() as u64)
    }

    async fn upload_len(&self, id: &UploadId) -> Result<u64> {
        lock(&self.uploads)
            .get(id)
            .map(|(u, _)| u.len() as u64)
            .ok_or(StoreError::NotFound)
    }

    async fn read_upload(&self, id: &UploadId, from: u64, to: u64) -> Result<ByteStream<'static>> {
        let (up, _) = lock(&self.uploads)
            .get(id)
            .cloned()
            .ok_or(StoreError::NotFound)?;
        let len = up.len();
        let (from, to) = ((from as usize).min(len), (to as usize).min(len));
        Ok(once(Bytes::from(up).slice(from..to.max(from))))
    }

    async fn commit(&self, id: &UploadId, digest: &Digest, len: u64) -> Result<u64> {
        let (mut up, at) = lock(&self.uploads).remove(id).ok_or(StoreError::NotFound)?;
        if (up.len() as u64) < len {
            let actual = up.len() as u64;
            lock(&self.uploads).insert(id.clone(), (up, at));
            return Err(StoreError::Offset {
                expected: len,
                actual,
            });
        }
        up.truncate(len as usize);
        lock(&self.blobs).insert(digest.clone(), (Bytes::from(up), SystemTime::now()));
        Ok(len)
    }

    async fn abort(&self, id: &UploadId) -> Result<()> {
        lock(&self.uploads).remove(id);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn memory_store_keeps_the_contract() {
        crate::testsuite::run(&super::MemoryStore::new()).await;
    }
}
