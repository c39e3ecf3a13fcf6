//! Metadata: the only source of truth for what exists. Repositories, which blobs each
//! repository may see (links), manifests and what they reference, tags, referrers and upload
//! sessions.
//!
//! - [`MetaStore`]: the contract (its method docs), checked by [`testsuite`].
//! - [`sqlite`]: the default embedded backend.
//! - [`sql`]: the SQL text, written once in the dialect SQLite and PostgreSQL share.

use async_trait::async_trait;
use berth_oci::{Digest, Reference, RepoName, Tag, UploadId};

pub mod sql;
#[cfg(feature = "sqlite")]
pub mod sqlite;
pub mod testsuite;

#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("corrupt record: {0}")]
    Corrupt(String),
}

pub type Result<T, E = MetaError> = std::result::Result<T, E>;

/// A stored manifest, as the registry needs it to answer GET, HEAD and referrers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestRecord {
    pub digest: Digest,
    pub media_type: String,
    pub size: u64,
    pub artifact_type: Option<String>,
    pub subject: Option<Digest>,
    pub config_media_type: Option<String>,
    /// The manifest's annotations as a JSON object, when it has any.
    pub annotations: Option<String>,
    pub pushed_at: i64,
}

/// Everything [`MetaStore::put_manifest`] records in one transaction.
#[derive(Debug, Clone)]
pub struct NewManifest {
    pub repo: RepoName,
    pub record: ManifestRecord,
    /// Blobs (config, layers) that must be linked in the repository, with their sizes.
    pub blobs: Vec<(Digest, u64)>,
    /// Child manifests (of an index) that must be stored in the repository.
    pub children: Vec<Digest>,
    pub tag: Option<Tag>,
}

/// Why [`MetaStore::put_manifest`] refused a manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PutRefusal {
    /// A referenced blob is not linked in the repository.
    BlobUnknown(Digest),
    /// A referenced blob is linked but has another size than the descriptor says.
    SizeMismatch {
        digest: Digest,
        stored: u64,
        declared: u64,
    },
    /// A child manifest is not stored in the repository.
    ManifestUnknown(Digest),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadRecord {
    pub id: UploadId,
    pub repo: RepoName,
    /// Bytes received and durable.
    pub offset: u64,
    /// The hash midstate after `offset` bytes (see `DigestHasher::save`), if kept.
    pub hash_state: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

/// A page request: entries strictly after `after`, at most `limit` of them (all when `None`).
#[derive(Debug, Clone, Copy, Default)]
pub struct Page<'a> {
    pub after: Option<&'a str>,
    pub limit: Option<u64>,
}

#[async_trait]
pub trait MetaStore: Send + Sync + 'static {
    /// Records that `repo` may see the blob `digest` of `size` bytes, creating the repository
    /// and the blob record if needed. Idempotent.
    async fn link_blob(&self, repo: &RepoName, digest: &Digest, size: u64) -> Result<()>;

    /// In one transaction: links the blob in the session's repository as
    /// [`MetaStore::link_blob`] does and ends the session it came from (recorded or not), as
    /// [`MetaStore::end_upload`] does.
    async fn finish_upload(&self, session: &UploadRecord, digest: &Digest, size: u64)
        -> Result<()>;

    /// The size of `digest` if `repo` may see it, else `None`.
    async fn linked_blob(&self, repo: &RepoName, digest: &Digest) -> Result<Option<u64>>;

    /// Removes `repo`'s link to `digest`; `false` when there was none. Bytes stay for GC.
    async fn unlink_blob(&self, repo: &RepoName, digest: &Digest) -> Result<bool>;

    /// In one transaction: checks that every referenced blob is linked in the repository with
    /// the declared size and every child manifest is stored there (else a refusal, and
    /// nothing changes), then stores the manifest row and its references, links the manifest's
    /// own blob, and points the tag at it when one is given.
    async fn put_manifest(&self, m: &NewManifest) -> Result<Result<(), PutRefusal>>;

    /// The manifest a tag or digest names in `repo`, if any.
    async fn manifest(
        &self,
        repo: &RepoName,
        reference: &Reference,
    ) -> Result<Option<ManifestRecord>>;

    /// Deletes a manifest by digest with every tag pointing at it; `false` when absent.
    async fn delete_manifest(&self, repo: &RepoName, digest: &Digest) -> Result<bool>;

    /// Deletes one tag, leaving its manifest; `false` when absent.
    async fn delete_tag(&self, repo: &RepoName, tag: &Tag) -> Result<bool>;

    /// Tags of `repo` in byte order, paged; `None` when the repository does not exist.
    async fn tags(&self, repo: &RepoName, page: Page<'_>) -> Result<Option<Vec<String>>>;

    /// Repository names in byte order, paged.
    async fn repositories(&self, page: Page<'_>) -> Result<Vec<String>>;

    /// Manifests in `repo` whose subject is `subject`, optionally only those of one artifact
    /// type, in digest order.
    async fn referrers(
        &self,
        repo: &RepoName,
        subject: &Digest,
        artifact_type: Option<&str>,
    ) -> Result<Vec<ManifestRecord>>;

    /// What is recorded of the upload session `id`: nothing (a session is recorded from its
    /// first [`MetaStore::advance_upload`]), an open session, or the tombstone of one that
    /// ended.
    async fn upload(&self, id: &UploadId) -> Result<Option<UploadState>>;

    /// Moves `session` from the offset it carries to `to` with a new hash state, only if the
    /// session still stands there and is open (compare-and-set); `false` when it does not.
    /// A session with no record stands at offset 0: its first advance records it with the
    /// repository and creation time `session` carries.
    async fn advance_upload(
        &self,
        session: &UploadRecord,
        to: u64,
        hash_state: Option<&str>,
    ) -> Result<bool>;

    /// Ends a session, recorded or not, leaving a tombstone so that its id stays unknown
    /// afterwards; `false` when it had already ended.
    async fn end_upload(&self, session: &UploadRecord) -> Result<bool>;

    /// The secret called `name`: the one already stored, else `candidate`, stored now. Every
    /// caller (and every node on the same database) gets the same value.
    async fn secret(&self, name: &str, candidate: &str) -> Result<String>;
}

/// What [`MetaStore::upload`] knows of a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UploadState {
    Open(UploadRecord),
    Ended,
}

/// Milliseconds since the Unix epoch.
pub fn now_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
