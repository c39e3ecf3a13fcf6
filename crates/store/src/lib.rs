//! Content-addressed blob storage. The store knows digests and upload scratch space, never
//! repositories, tags or users: which repository may see a blob is a metadata fact.
//!
//! - [`BlobStore`]: the contract every backend keeps (its method docs are the contract, and
//!   [`testsuite`] checks exactly those sentences).
//! - [`fs`]: the default backend on a local filesystem.
//! - [`s3`]: S3-compatible object storage, for several nodes sharing one bucket.
//! - [`memory`]: an in-process backend for domain tests.

use async_trait::async_trait;
use berth_oci::{Digest, ErrorKind, UploadId};
use bytes::Bytes;
use futures::stream::BoxStream;
use std::io;
use std::time::SystemTime;

#[cfg(feature = "fs")]
pub mod fs;
pub mod memory;
#[cfg(feature = "s3")]
pub mod s3;
pub mod testsuite;

/// A stream of body bytes, in or out.
pub type ByteStream<'a> = BoxStream<'a, io::Result<Bytes>>;

/// How a blob, or a range of it, is to be read: what [`BlobStore::read`] answers.
pub enum BlobRead {
    /// Its bytes.
    Stream(ByteStream<'static>),
    /// A local file, positioned nowhere in particular: the caller sends the range it asked
    /// for (a server may hand it to the kernel).
    File(LocalFile),
    /// A URL the client fetches the blob from itself (a presigned object URL, good for a
    /// while), sending its own `Range`.
    Redirect(String),
}

/// An open local file holding a blob, for a caller that can send files itself.
pub struct LocalFile(std::fs::File);

impl LocalFile {
    pub fn new(file: std::fs::File) -> LocalFile {
        LocalFile(file)
    }

    pub fn into_std(self) -> std::fs::File {
        self.0
    }
}

/// What a reader can take besides a stream, which every reader takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReadAs {
    /// A local file, which the reader sends itself.
    pub file: bool,
    /// A URL to send the client to.
    pub redirect: bool,
}

impl ReadAs {
    /// A stream only.
    pub const STREAM: ReadAs = ReadAs {
        file: false,
        redirect: false,
    };
    /// A stream or a local file.
    pub const STREAM_OR_FILE: ReadAs = ReadAs {
        file: true,
        redirect: false,
    };
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("not found")]
    NotFound,
    #[error("upload holds {actual} bytes, not the {expected} expected")]
    Offset { expected: u64, actual: u64 },
    /// The request body failed (the client's doing, not the store's).
    #[error("reading the request body: {0}")]
    Body(io::Error),
    /// The backend failed; no backend's own error type shows through.
    #[error("storage: {message}")]
    Backend { kind: ErrorKind, message: String },
}

impl StoreError {
    /// What kind of failure this is, so that a caller knows whether a retry may cure it.
    pub fn kind(&self) -> ErrorKind {
        match self {
            StoreError::NotFound => ErrorKind::NotFound,
            StoreError::Offset { .. } => ErrorKind::Corrupt,
            StoreError::Body(_) => ErrorKind::Other,
            StoreError::Backend { kind, .. } => *kind,
        }
    }
}

impl From<io::Error> for StoreError {
    fn from(e: io::Error) -> StoreError {
        StoreError::Backend {
            kind: ErrorKind::of_io(&e),
            message: e.to_string(),
        }
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// A committed blob as [`BlobStore::list`] shows it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct BlobEntry {
    pub digest: Digest,
    pub size: u64,
    /// When its bytes were written (a blob is immutable afterwards).
    pub modified: SystemTime,
}

/// Where an upload stands in its backend: what [`BlobStore::append`] returns and the caller
/// saves in the session record, so that any process continues the session from it without
/// reading its bytes back. The default is an empty upload.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UploadToken {
    /// Bytes the upload holds.
    pub len: u64,
    /// The backend's own progress (a part list, say), opaque to the caller; empty for a
    /// backend whose uploads need none.
    pub progress: Vec<u8>,
}

/// What an append promises about its bytes if the machine crashes right after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// They survive: the session goes on later (a PATCH), maybe after a restart.
    Durable,
    /// They may be lost: the session is committed in the same request or not at all (a
    /// finishing PUT), and the commit makes the blob durable. Saves the syncs of the upload.
    UntilCommit,
}

#[async_trait]
pub trait BlobStore: Send + Sync + 'static {
    /// The size of a committed blob, or `None` when there is none under that digest.
    /// Upload scratch space is never visible here.
    async fn stat(&self, digest: &Digest) -> Result<Option<u64>>;

    /// A committed blob, whole or the inclusive byte range `start..=end` (which the caller
    /// has checked against the size): a stream; or, when `read_as` allows it, the open file
    /// of a backend that keeps blobs in local files (which may start reading the range
    /// ahead), or a URL for a backend configured to send clients to its objects. `NotFound`
    /// when absent (a redirect may also answer for a blob deleted since).
    async fn read(
        &self,
        digest: &Digest,
        range: Option<(u64, u64)>,
        read_as: ReadAs,
    ) -> Result<BlobRead>;

    /// A committed blob streamed whole: [`BlobStore::read`] as a stream.
    async fn read_all(&self, digest: &Digest) -> Result<ByteStream<'static>> {
        match self.read(digest, None, ReadAs::STREAM).await? {
            BlobRead::Stream(s) => Ok(s),
            BlobRead::File(_) | BlobRead::Redirect(_) => Err(StoreError::Backend {
                kind: ErrorKind::Other,
                message: "a file or a URL where a stream was asked for".into(),
            }),
        }
    }

    /// Stores small content (manifests) under its digest, which the caller has verified.
    /// Durable when it returns. A blob already there is stored anew (the same content): the
    /// caller relies on bytes written after any collection's mark.
    async fn put(&self, digest: &Digest, bytes: Bytes) -> Result<()>;

    /// Removes a committed blob; deleting an absent blob is not an error.
    async fn delete(&self, digest: &Digest) -> Result<()>;

    /// Removes committed blobs, in as few requests as the backend allows (an object store
    /// takes a thousand keys a request); absent blobs are not an error. Returns the digests
    /// it could not remove (they stay as they were), in no particular order. The default
    /// deletes them one by one.
    async fn delete_many(&self, digests: &[Digest]) -> Result<Vec<Digest>> {
        let mut failed = Vec::new();
        for d in digests {
            if let Err(e) = self.delete(d).await {
                tracing::warn!(digest = %d, error = %e, "deleting a blob");
                failed.push(d.clone());
            }
        }
        Ok(failed)
    }

    /// Every committed blob with its size and when it was written, in no particular order
    /// (for reconciliation with the metadata), streamed: a store may hold millions.
    fn list(&self) -> BoxStream<'_, Result<BlobEntry>>;

    /// Every upload's scratch space with when it last received bytes, in no particular order
    /// (for expiring abandoned sessions), streamed.
    fn uploads(&self) -> BoxStream<'_, Result<(UploadId, SystemTime)>>;

    /// Removes what interrupted writes left behind outside blobs and uploads (temporary
    /// files), if last modified before `before`; returns how many. The default keeps none.
    async fn purge_temporary(&self, before: SystemTime) -> Result<u64> {
        let _ = before;
        Ok(0)
    }

    /// Appends `body` to the upload standing at `at`: the token the last append returned, as
    /// the session record saved it, or the default for a session that holds nothing. The
    /// record is the truth: whatever the backend holds past `at` (from an append whose token
    /// was never saved) is not part of the upload. All or nothing: on any error the upload
    /// still stands at `at`. With [`Durability::Durable`] the bytes are durable when it
    /// returns; with [`Durability::UntilCommit`] they need only reach [`BlobStore::commit`],
    /// which makes them durable. Returns where the upload now stands. An append to an empty
    /// upload creates its scratch space (there is no separate step: a session costs nothing
    /// until it holds bytes); an upload holding fewer bytes than `at` counts is `Offset`, and
    /// one that is gone (committed or aborted) is `NotFound`.
    async fn append(
        &self,
        id: &UploadId,
        at: &UploadToken,
        body: ByteStream<'_>,
        durability: Durability,
    ) -> Result<UploadToken>;

    /// Whether the upload still holds what `at` counts: `false` once it was committed or
    /// aborted. An empty token is always held: the next append starts the upload afresh.
    /// An upload holding fewer bytes than `at` counts is `Offset`: it lost acknowledged bytes.
    async fn holds(&self, id: &UploadId, at: &UploadToken) -> Result<bool>;

    /// The bytes of the upload standing at `at`, to hash them again (when a session is
    /// finished with another algorithm than its appends were hashed with); `None` from a
    /// backend that cannot read an upload before its commit, whose caller then refuses such
    /// a finish. `NotFound` when the upload is gone.
    async fn read_upload(
        &self,
        id: &UploadId,
        at: &UploadToken,
    ) -> Result<Option<ByteStream<'static>>> {
        let _ = (id, at);
        Ok(None)
    }

    /// Makes the upload standing at `at` readable under `digest`, which the caller has
    /// verified over exactly those bytes, without sending them through this process again;
    /// bytes past `at` never become part of the blob, and an upload holding fewer is
    /// `Offset`. Removes the scratch space (a backend may leave what an append whose token
    /// was never saved wrote, until the upload is aborted). A blob already there is
    /// replaced by these bytes (the same content), so they are stored anew after any
    /// collection's mark. The blob is durable, and never visible partially, when it
    /// returns. Returns its size.
    async fn commit(&self, id: &UploadId, at: &UploadToken, digest: &Digest) -> Result<u64>;

    /// Removes an upload's scratch space, standing at `at` when the session record says so
    /// (a backend may need its progress to find it); an absent upload is not an error.
    async fn abort(&self, id: &UploadId, at: Option<&UploadToken>) -> Result<()>;
}
