//! Blob reads, deletes and cross-repository mounts. A repository sees a blob only through its
//! link in the metadata store; the bytes themselves are shared by every repository.

use crate::{Error, Registry, Result};
use berth_meta::{LeaseMode, UploadRecord};
use berth_oci::range::{parse_range, RangeRequest};
use berth_oci::{Digest, RepoName};
pub use berth_store::{BlobRead, ReadAs};

/// A blob ready to be sent.
pub struct BlobBody {
    /// The whole blob's size.
    pub size: u64,
    /// The inclusive range being sent, when the client asked for one.
    pub range: Option<(u64, u64)>,
    /// Its bytes as the store gives them; a file is to be sent at [`BlobBody::range`] (or
    /// whole).
    pub body: BlobRead,
}

/// The outcome of a mount request.
pub enum Mount {
    /// The blob is now linked in the target repository.
    Mounted { size: u64 },
    /// It could not be mounted; here is a fresh upload session instead.
    Upload(UploadRecord),
}

impl Registry {
    /// The size of a blob `repo` may see, or `BLOB_UNKNOWN`.
    pub async fn blob_size(&self, repo: &RepoName, digest: &Digest) -> Result<u64> {
        self.meta
            .linked_blob(repo, digest)
            .await?
            .ok_or_else(|| Error::BlobUnknown(digest.clone()))
    }

    /// The size of a blob `repo` may see and the part of it a `Range` header asks for.
    pub async fn blob_range(
        &self,
        repo: &RepoName,
        digest: &Digest,
        range: Option<&str>,
    ) -> Result<(u64, Option<(u64, u64)>)> {
        let size = self.blob_size(repo, digest).await?;
        match parse_range(range, size) {
            RangeRequest::Full => Ok((size, None)),
            RangeRequest::Partial { start, end } => Ok((size, Some((start, end)))),
            RangeRequest::Unsatisfiable => Err(Error::RangeNotSatisfiable { size }),
        }
    }

    /// Opens a blob for reading, honouring a single `Range` header, in a form `read_as`
    /// allows (a caller that can send files itself may get one).
    pub async fn read_blob(
        &self,
        repo: &RepoName,
        digest: &Digest,
        range: Option<&str>,
        read_as: ReadAs,
    ) -> Result<BlobBody> {
        let (size, range) = self.blob_range(repo, digest, range).await?;
        let body = match self.blobs.read(digest, range, read_as).await {
            Err(berth_store::StoreError::NotFound) => {
                // A collection may have taken it since it was looked up; then it is unknown.
                if self.meta.linked_blob(repo, digest).await?.is_none() {
                    return Err(Error::BlobUnknown(digest.clone()));
                }
                return Err(Error::Internal(format!(
                    "blob {digest} is linked in {repo} but missing from the store"
                )));
            }
            other => other?,
        };
        Ok(BlobBody { size, range, body })
    }

    /// Removes `repo`'s link to a blob; the bytes go when garbage collection finds them
    /// unreferenced.
    pub async fn delete_blob(&self, repo: &RepoName, digest: &Digest) -> Result<()> {
        if self.meta.unlink_blob(repo, digest).await? {
            Ok(())
        } else {
            Err(Error::BlobUnknown(digest.clone()))
        }
    }

    /// Mounts a blob from `from` into `repo` when `from` has it; otherwise opens an upload
    /// session, as the spec asks (clients then push the blob).
    pub async fn mount_blob(
        &self,
        repo: &RepoName,
        digest: &Digest,
        from: Option<&RepoName>,
    ) -> Result<Mount> {
        if let Some(from) = from {
            // Under a share of the digest's lease: a collection cannot take the blob while
            // its bytes are checked and the link made; other mounts of it go on beside. The
            // link is only as good as the bytes behind it.
            let _blob = self.meta.digest(digest, LeaseMode::Shared).await?;
            // Read first, so a miss never queues behind the database's writer.
            let linked = self.meta.linked_blob(from, digest).await?.is_some();
            if linked && self.blobs.stat(digest).await?.is_some() {
                if let Some(size) = self.meta.mount_blob(repo, from, digest).await? {
                    return Ok(Mount::Mounted { size });
                }
            }
        }
        Ok(Mount::Upload(self.start_upload(repo).await?))
    }
}

#[cfg(test)]
mod tests {
    use super::{BlobRead, Mount, ReadAs};
    use crate::testutil::registry;
    use crate::uploads::ChunkInfo;
    use berth_oci::{Digest, RepoName};
    use bytes::Bytes;
    use futures::StreamExt;

    #[tokio::test]
    async fn mount_links_once_and_delete_unlinks() {
        let (reg, _dir) = registry().await;
        let a: RepoName = "a".parse().unwrap();
        let b: RepoName = "b".parse().unwrap();
        let d = Digest::sha256(b"0123456789");
        let body = futures::stream::once(async { Ok(Bytes::from_static(b"0123456789")) }).boxed();
        reg.monolithic_upload(&a, &d, ChunkInfo::default(), body)
            .await
            .unwrap();
        assert!(reg.blob_size(&b, &d).await.is_err());
        assert!(matches!(
            reg.mount_blob(&b, &d, None).await.unwrap(),
            Mount::Upload(_)
        ));
        assert!(matches!(
            reg.mount_blob(&b, &Digest::sha256(b"x"), Some(&a))
                .await
                .unwrap(),
            Mount::Upload(_)
        ));
        assert!(matches!(
            reg.mount_blob(&b, &d, Some(&a)).await.unwrap(),
            Mount::Mounted { size: 10 }
        ));
        let got = reg
            .read_blob(&b, &d, Some("bytes=2-4"), ReadAs::STREAM_OR_FILE)
            .await
            .unwrap();
        assert_eq!((got.size, got.range), (10, Some((2, 4))));
        // The memory store keeps no files: a stream, even when a file would do.
        assert!(matches!(got.body, BlobRead::Stream(_)));
        assert!(reg
            .read_blob(&b, &d, Some("bytes=10-"), ReadAs::STREAM_OR_FILE)
            .await
            .is_err());
        reg.delete_blob(&a, &d).await.unwrap();
        assert!(reg.delete_blob(&a, &d).await.is_err());
        assert_eq!(
            reg.blob_size(&b, &d).await.unwrap(),
            10,
            "b's link survives a's delete"
        );
    }
}
