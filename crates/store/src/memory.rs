//! An in-process blob store: the same contract as the filesystem store, for domain tests
//! that want no disk.

use crate::{
    BlobEntry, BlobRead, BlobStore, ByteStream, Durability, ReadAs, Result, StoreError, UploadToken,
};
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
        at: &UploadToken,
        mut body: ByteStream<'_>,
        _: Durability,
    ) -> Result<UploadToken> {
        self.stands_at(id, at)?;
        let mut data = Vec::new();
        while let Some(chunk) = body.next().await {
            data.extend_from_slice(&chunk.map_err(StoreError::Body)?);
        }
        let mut uploads = lock(&self.uploads);
        let (up, when) = uploads
            .entry(id.clone())
            .or_insert_with(|| (Vec::new(), SystemTime::now()));
        up.truncate(at.len as usize);
        up.extend_from_slice(&data);
        *when = SystemTime::now();
        Ok(UploadToken {
            len: up.len() as u64,
            progress: Vec::new(),
        })
    }

    async fn holds(&self, id: &UploadId, at: &UploadToken) -> Result<bool> {
        match self.stands_at(id, at) {
            Ok(()) => Ok(true),
            Err(StoreError::NotFound) => Ok(false),
            Err(e) => Err(e),
        }
    }

    async fn read_upload(
        &self,
        id: &UploadId,
        at: &UploadToken,
    ) -> Result<Option<ByteStream<'static>>> {
        Ok(Some(once(Bytes::from(self.held(id, at, false)?))))
    }

    async fn commit(&self, id: &UploadId, at: &UploadToken, digest: &Digest) -> Result<u64> {
        let up = self.held(id, at, true)?;
        lock(&self.blobs).insert(digest.clone(), (Bytes::from(up), SystemTime::now()));
        Ok(at.len)
    }

    async fn abort(&self, id: &UploadId, _: Option<&UploadToken>) -> Result<()> {
        lock(&self.uploads).remove(id);
        Ok(())
    }
}

impl MemoryStore {
    /// Whether the upload can stand at `at`: `NotFound` when it is gone (but for an empty
    /// token), `Offset` when it holds fewer bytes.
    fn stands_at(&self, id: &UploadId, at: &UploadToken) -> Result<()> {
        match lock(&self.uploads).get(id) {
            None if at.len == 0 => Ok(()),
            None => Err(StoreError::NotFound),
            Some((up, _)) if (up.len() as u64) < at.len => Err(StoreError::Offset {
                expected: at.len,
                actual: up.len() as u64,
            }),
            Some(_) => Ok(()),
        }
    }

    /// The bytes `at` counts (none past it), taking the upload away when `remove`.
    fn held(&self, id: &UploadId, at: &UploadToken, remove: bool) -> Result<Vec<u8>> {
        self.stands_at(id, at)?;
        let mut uploads = lock(&self.uploads);
        let mut up = match remove {
            true => uploads.remove(id).map(|(up, _)| up),
            false => uploads.get(id).map(|(up, _)| up.clone()),
        }
        .unwrap_or_default();
        up.truncate(at.len as usize);
        Ok(up)
    }
}

#[cfg(test)]
mod tests {
    /// The contract, one test per promise, each on a new store.
    mod contract {
        crate::store_contract_tests!(async { Some((super::super::MemoryStore::new(), ())) });
    }
}
