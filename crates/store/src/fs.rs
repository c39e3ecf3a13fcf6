//! The filesystem blob store, the default backend.
//!
//! Layout under the root directory:
//!
//! ```text
//! <root>/blobs/<algorithm>/<first two hex>/<hex>   committed blobs, immutable
//! <root>/uploads/<upload id>                       scratch space of an upload session
//! <root>/tmp/<random>                              small puts on their way to blobs/
//! ```
//!
//! All three live on one filesystem so that a commit is a rename. The order of a commit is
//! the data-safety invariant: data fsynced (at the end of every append) → rename into
//! `blobs/` → fsync of the directory. A reader therefore sees no blob or a whole one, and a
//! crash after the commit returns loses nothing.

use crate::{BlobStore, ByteStream, Result, StoreError};
use async_trait::async_trait;
use berth_oci::{Algorithm, Digest, UploadId};
use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use std::fs::{File, OpenOptions};
use std::io::{self, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use tokio::io::AsyncSeekExt;
use tokio::task::spawn_blocking;
use tokio_util::io::ReaderStream;

/// Appends are gathered into buffers this large before a write: one blocking-pool hop per
/// MiB rather than one per network frame.
const WRITE_BUF: usize = 1 << 20;
/// Reads are served in chunks this large (fewer syscalls and frames than the 8 KiB default).
const READ_BUF: usize = 256 << 10;

#[derive(Debug, Clone)]
pub struct FsStore {
    root: PathBuf,
}

impl FsStore {
    /// Opens (creating if needed) a store rooted at `root`.
    pub fn open(root: impl Into<PathBuf>) -> io::Result<FsStore> {
        let root = root.into();
        for dir in ["blobs/sha256", "blobs/sha512", "uploads", "tmp"] {
            std::fs::create_dir_all(root.join(dir))?;
        }
        Ok(FsStore { root })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn blob_path(&self, d: &Digest) -> PathBuf {
        let hex = d.hex();
        self.root
            .join("blobs")
            .join(d.algorithm().as_str())
            .join(&hex[..2])
            .join(hex)
    }

    fn upload_path(&self, id: &UploadId) -> PathBuf {
        self.root.join("uploads").join(id.as_str())
    }
}

fn not_found(e: io::Error) -> StoreError {
    if e.kind() == io::ErrorKind::NotFound {
        StoreError::NotFound
    } else {
        StoreError::Io(e)
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    spawn_blocking(f).await.map_err(io::Error::other)?
}

/// fsync of a directory, so that a rename or create inside it survives a crash.
fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Renames `from` to `to` durably, unless `to` exists (content-addressed: same bytes).
fn install(from: &Path, to: &Path) -> io::Result<()> {
    if to.exists() {
        return std::fs::remove_file(from);
    }
    let parent = to
        .parent()
        .ok_or_else(|| io::Error::other("blob path has no parent"))?;
    std::fs::create_dir_all(parent)?;
    std::fs::rename(from, to)?;
    sync_dir(parent)
}

async fn open_range(path: PathBuf, range: Option<(u64, u64)>) -> Result<ByteStream<'static>> {
    let mut file = tokio::fs::File::open(&path).await.map_err(not_found)?;
    let len = match range {
        Some((start, end)) => {
            file.seek(SeekFrom::Start(start)).await?;
            end - start + 1
        }
        None => file.metadata().await?.len(),
    };
    use tokio::io::AsyncReadExt;
    Ok(ReaderStream::with_capacity(file.take(len), READ_BUF).boxed())
}

#[async_trait]
impl BlobStore for FsStore {
    async fn stat(&self, digest: &Digest) -> Result<Option<u64>> {
        match tokio::fs::metadata(self.blob_path(digest)).await {
            Ok(m) => Ok(Some(m.len())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    async fn read(
        &self,
        digest: &Digest,
        range: Option<(u64, u64)>,
    ) -> Result<ByteStream<'static>> {
        open_range(self.blob_path(digest), range).await
    }

    async fn put(&self, digest: &Digest, bytes: Bytes) -> Result<()> {
        let target = self.blob_path(digest);
        if tokio::fs::try_exists(&target).await? {
            return Ok(());
        }
        let tmp = self.root.join("tmp").join(uuid_like());
        Ok(blocking(move || {
            let mut f = File::create(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_all()?;
            install(&tmp, &target)
        })
        .await?)
    }

    async fn delete(&self, digest: &Digest) -> Result<()> {
        match tokio::fs::remove_file(self.blob_path(digest)).await {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e.into()),
            _ => Ok(()),
        }
    }

    async fn list(&self) -> Result<Vec<(Digest, u64)>> {
        let root = self.root.join("blobs");
        Ok(blocking(move || {
            let mut out = Vec::new();
            for alg in [Algorithm::Sha256, Algorithm::Sha512] {
                let dir = root.join(alg.as_str());
                for prefix in std::fs::read_dir(&dir)? {
                    for entry in std::fs::read_dir(prefix?.path())? {
                        let entry = entry?;
                        let name = entry.file_name();
                        let parsed = name
                            .to_str()
                            .and_then(|n| format!("{}:{n}", alg.as_str()).parse::<Digest>().ok());
                        if let Some(d) = parsed {
                            out.push((d, entry.metadata()?.len()));
                        }
                    }
                }
            }
            Ok(out)
        })
        .await?)
    }

    async fn begin(&self, id: &UploadId) -> Result<()> {
        let path = self.upload_path(id);
        let dir = self.root.join("uploads");
        Ok(blocking(move || {
            File::create(&path)?.sync_all()?;
            sync_dir(&dir)
        })
        .await?)
    }

    async fn append(&self, id: &UploadId, offset: u64, mut body: ByteStream<'_>) -> Result<u64> {
        let path = self.upload_path(id);
        let mut file = blocking(move || {
            let mut f = OpenOptions::new().write(true).open(&path)?;
            let actual = f.metadata()?.len();
            if actual < offset {
                return Ok(Err(StoreError::Offset {
                    expected: offset,
                    actual,
                }));
            }
            if actual > offset {
                f.set_len(offset)?;
            }
            f.seek(SeekFrom::Start(offset))?;
            Ok(Ok(f))
        })
        .await
        .map_err(not_found)??;

        // Writes happen on the blocking pool; the file and buffer travel there and back.
        let mut buf = BytesMut::with_capacity(WRITE_BUF);
        let mut written = offset;
        let mut failure = None;
        loop {
            let done = match body.next().await {
                Some(Ok(chunk)) => {
                    buf.extend_from_slice(&chunk);
                    false
                }
                Some(Err(e)) => {
                    failure = Some(StoreError::Body(e));
                    break;
                }
                None => true,
            };
            if buf.len() >= WRITE_BUF || (done && !buf.is_empty()) {
                let data = buf.split().freeze();
                // split() hands the capacity away with the data: take a whole buffer again
                // rather than regrowing it by doubling (and copying) chunk by chunk.
                buf.reserve(WRITE_BUF);
                let (f, res) = spawn_blocking(move || {
                    let mut f = file;
                    let r = f.write_all(&data);
                    (f, r.map(|_| data.len() as u64))
                })
                .await
                .map_err(io::Error::other)?;
                file = f;
                match res {
                    Ok(n) => written += n,
                    Err(e) => {
                        failure = Some(StoreError::Io(e));
                        break;
                    }
                }
            }
            if done {
                break;
            }
        }

        // All or nothing: a failed append is cut back to where it started.
        blocking(move || match failure {
            None => {
                file.sync_data()?;
                Ok(Ok(written))
            }
            Some(e) => {
                file.set_len(offset)?;
                file.sync_data()?;
                Ok(Err(e))
            }
        })
        .await?
    }

    async fn upload_len(&self, id: &UploadId) -> Result<u64> {
        Ok(tokio::fs::metadata(self.upload_path(id))
            .await
            .map_err(not_found)?
            .len())
    }

    async fn read_upload(&self, id: &UploadId, len: u64) -> Result<ByteStream<'static>> {
        if len == 0 {
            return Ok(futures::stream::empty().boxed());
        }
        open_range(self.upload_path(id), Some((0, len - 1))).await
    }

    async fn commit(&self, id: &UploadId, digest: &Digest, len: u64) -> Result<u64> {
        let from = self.upload_path(id);
        let to = self.blob_path(digest);
        blocking(move || {
            let f = OpenOptions::new().write(true).open(&from)?;
            let actual = f.metadata()?.len();
            if actual < len {
                return Ok(Err(StoreError::Offset {
                    expected: len,
                    actual,
                }));
            }
            if actual > len {
                f.set_len(len)?;
                f.sync_data()?;
            }
            drop(f);
            install(&from, &to)?;
            Ok(Ok(len))
        })
        .await
        .map_err(not_found)?
    }

    async fn abort(&self, id: &UploadId) -> Result<()> {
        match tokio::fs::remove_file(self.upload_path(id)).await {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e.into()),
            _ => Ok(()),
        }
    }
}

/// A unique temporary file name (process id, time, counter): no randomness needed.
fn uuid_like() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!(
        "{}-{t}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn fs_store_keeps_the_contract() {
        let dir = tempfile::tempdir().unwrap();
        let store = super::FsStore::open(dir.path()).unwrap();
        crate::testsuite::run(&store).await;
    }
}
