//! Metadata: the only source of truth for what exists. Repositories, which blobs each
//! repository may see (links), manifests and what they reference, tags, referrers and upload
//! sessions.
//!
//! - [`MetaStore`]: the contract (its method docs), checked by [`testsuite`].
//! - [`sqlite`]: the default embedded backend.
//! - [`leases`]: exclusivity across processes (digests, upload sessions, scheduled jobs).
//! - [`sql`]: the SQL text, written once in the dialect SQLite and PostgreSQL share.

use async_trait::async_trait;
use berth_oci::{Digest, ErrorKind, Reference, RepoName, Tag, UploadId};

pub mod leases;
pub mod sql;
#[cfg(feature = "sqlite")]
pub mod sqlite;
mod sqlx_errors;
pub mod testsuite;

/// A metadata failure: its kind says what a caller may do about it; its message, for the
/// log, what happened. No backend's own error type shows through.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct MetaError {
    kind: ErrorKind,
    message: String,
}

impl MetaError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> MetaError {
        MetaError {
            kind,
            message: message.into(),
        }
    }

    /// A stored record that cannot be what it must be.
    pub fn corrupt(message: impl Into<String>) -> MetaError {
        MetaError::new(ErrorKind::Corrupt, message)
    }

    pub fn io(e: std::io::Error) -> MetaError {
        MetaError::new(ErrorKind::of_io(&e), format!("database file: {e}"))
    }

    pub fn kind(&self) -> ErrorKind {
        self.kind
    }
}

pub use leases::{LeaseGuard, LeaseMode, Leases, LocalLeases};

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
    /// Whether this put stored the manifest's bytes, or found them stored before it.
    pub stored: Stored,
}

/// Whether the caller of a write that links a blob stored its bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stored {
    /// Stored (again) by this caller, holding the digest's exclusive lease: a collection's
    /// mark on the blob is cleared, since these bytes were written after it.
    Anew,
    /// Found stored: the link is made only if no collection has marked the blob.
    Already,
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
    /// The manifest's own bytes were found stored ([`Stored::Already`]), but a collection
    /// has marked them deleting (or forgotten them) since.
    BytesGone,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadRecord {
    pub id: UploadId,
    pub repo: RepoName,
    /// Bytes received and durable.
    pub offset: u64,
    /// The hash midstate after `offset` bytes (see `DigestHasher::save`), if kept.
    pub hash_state: Option<String>,
    /// The blob store's own progress after `offset` bytes (its upload token), opaque here;
    /// empty when it keeps none.
    pub progress: Vec<u8>,
    pub created_at: i64,
    pub updated_at: i64,
}

/// A page request: entries strictly after `after`, at most `limit` of them (all when `None`).
#[derive(Debug, Clone, Copy, Default)]
pub struct Page<'a> {
    pub after: Option<&'a str>,
    pub limit: Option<u64>,
}

/// The facts, and the leases of whoever shares them (see [`leases`]).
#[async_trait]
pub trait MetaStore: Leases + Send + Sync + 'static {
    /// Records that `repo` may see the blob `digest` of `size` bytes, whose bytes the caller
    /// has just stored under the digest's exclusive lease: creates the repository and the
    /// blob record if needed, and clears a collection's mark (the bytes are newer than it).
    /// Idempotent.
    async fn link_blob(&self, repo: &RepoName, digest: &Digest, size: u64) -> Result<()>;

    /// In one transaction: links the blob in the session's repository as
    /// [`MetaStore::link_blob`] does and ends the session it came from (recorded or not), as
    /// [`MetaStore::end_upload`] does.
    async fn finish_upload(&self, session: &UploadRecord, digest: &Digest, size: u64)
        -> Result<()>;

    /// In one transaction: if `from` links `digest`, links it in `repo` too and returns its
    /// size; else `None`, and nothing changes. A blob a collection has marked is linked
    /// nowhere, so it is never mounted.
    async fn mount_blob(
        &self,
        repo: &RepoName,
        from: &RepoName,
        digest: &Digest,
    ) -> Result<Option<u64>>;

    /// The size of `digest` if `repo` may see it, else `None`.
    async fn linked_blob(&self, repo: &RepoName, digest: &Digest) -> Result<Option<u64>>;

    /// Removes `repo`'s link to `digest`; `false` when there was none. Bytes stay for GC.
    async fn unlink_blob(&self, repo: &RepoName, digest: &Digest) -> Result<bool>;

    /// In one transaction: checks that every referenced blob is linked in the repository with
    /// the declared size and every child manifest is stored there, and, for bytes found
    /// stored ([`Stored::Already`]), that the manifest's own blob is live (else a refusal,
    /// and nothing changes); then stores the manifest row and its references, links the
    /// manifest's own blob (clearing a mark when [`Stored::Anew`]), and points the tag at it
    /// when one is given.
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

    /// The change generation: a number that every committed write changing what a tag or
    /// digest resolves to, a tag list, or the set of repositories makes larger, whoever
    /// made it (any process on the same database). A cache keeps what it read with the
    /// generation read *before* reading it, and serves it only while the generation is the
    /// same; so nothing committed before a read is missed by what the read's entry serves.
    async fn generation(&self) -> Result<u64>;

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

    /// Moves `session` from the offset it carries to `to` with a new hash state and blob
    /// store progress, only if the session still stands there and is open (compare-and-set);
    /// `false` when it does not. A session with no record stands at offset 0: its first
    /// advance records it with the repository and creation time `session` carries. Durable
    /// when it returns.
    async fn advance_upload(
        &self,
        session: &UploadRecord,
        to: u64,
        hash_state: Option<&str>,
        progress: &[u8],
    ) -> Result<bool>;

    /// Ends a session, recorded or not, leaving a tombstone so that its id stays unknown
    /// afterwards; `false` when it had already ended.
    async fn end_upload(&self, session: &UploadRecord) -> Result<bool>;

    /// Blobs no manifest in any repository references (as config, layer, child or as the
    /// manifest itself) that were created, and last linked anywhere, before `cutoff`
    /// (milliseconds): what a collection at that cutoff would delete. Blobs already marked
    /// deleting are not listed.
    async fn garbage_blobs(&self, cutoff: i64) -> Result<Vec<(Digest, u64)>>;

    /// In one transaction, for each of `digests` that is still garbage at `cutoff` (as
    /// [`MetaStore::garbage_blobs`] says): marks it deleting and removes its links, so that no
    /// repository sees it and no manifest can reference it from then on. Returns the marked
    /// ones. Only a caller that stored the bytes again links a marked blob
    /// ([`MetaStore::link_blob`], [`MetaStore::finish_upload`], [`MetaStore::put_manifest`]
    /// with [`Stored::Anew`]), which clears the mark; mounts and puts of bytes found stored
    /// are refused.
    async fn mark_deleting(&self, digests: &[Digest], cutoff: i64) -> Result<Vec<Digest>>;

    /// Blobs marked deleting, with their sizes, including those a collection left marked
    /// when it stopped.
    async fn deleting_blobs(&self) -> Result<Vec<(Digest, u64)>>;

    /// Forgets the blobs of `digests` that are still marked deleting (their bytes are gone);
    /// returns how many.
    async fn forget_blobs(&self, digests: &[Digest]) -> Result<u64>;

    /// Removes links made before `cutoff` to blobs that no manifest of the same repository
    /// references (layers pushed, or left behind by deleted manifests), then the
    /// repositories created before `cutoff` that are left with nothing (no link, manifest or
    /// tag); returns how many links.
    async fn prune_links(&self, cutoff: i64) -> Result<u64>;

    /// The size of a blob record (marked deleting or not), linked anywhere or nowhere.
    async fn blob_record(&self, digest: &Digest) -> Result<Option<u64>>;

    /// Every blob record not marked deleting, with its size.
    async fn blob_records(&self) -> Result<Vec<(Digest, u64)>>;

    /// Whether a record of the blob exists that no collection has marked deleting.
    async fn blob_live(&self, digest: &Digest) -> Result<bool>;

    /// Open upload sessions that last received bytes before `before`.
    async fn stale_uploads(&self, before: i64) -> Result<Vec<UploadRecord>>;

    /// Deletes the tombstones of ended sessions opened before `before` (whose ids have
    /// expired by themselves); returns how many.
    async fn forget_ended_uploads(&self, before: i64) -> Result<u64>;

    /// Records pulls: each manifest's last pull time becomes the given one if later.
    async fn record_pulls(&self, pulls: &[(RepoName, Digest, i64)]) -> Result<()>;

    /// Everything stored in `repo` (manifests, what they reference with sizes, tags), or
    /// `None` when the repository does not exist.
    async fn repository(&self, repo: &RepoName) -> Result<Option<RepoContents>>;

    /// Deletes tag `tag` of `repo` only if it still points at `digest`; `false` otherwise.
    async fn delete_tag_at(&self, repo: &RepoName, tag: &Tag, digest: &Digest) -> Result<bool>;

    /// Deletes a manifest as [`MetaStore::delete_manifest`] does, only if no tag points at
    /// it and no manifest of the repository references it (as a child of an index); `false`
    /// otherwise.
    async fn delete_untagged_manifest(&self, repo: &RepoName, digest: &Digest) -> Result<bool>;

    /// Manifests pushed before `before` whose subject is not (or no longer) stored in their
    /// repository, by repository.
    async fn orphan_referrers(&self, before: i64) -> Result<Vec<(RepoName, Digest)>>;

    /// Storage figures, all from records: bytes stored once, and per repository.
    async fn usage(&self) -> Result<Usage>;

    /// The secret called `name`: the one already stored, else `candidate`, stored now. Every
    /// caller (and every node on the same database) gets the same value.
    async fn secret(&self, name: &str, candidate: &str) -> Result<String>;
}

/// A manifest as [`MetaStore::repository`] lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestInfo {
    pub digest: Digest,
    pub media_type: String,
    pub size: u64,
    pub subject: Option<Digest>,
    pub pushed_at: i64,
    pub pulled_at: Option<i64>,
}

/// A tag as [`MetaStore::repository`] lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagInfo {
    pub name: String,
    pub digest: Digest,
    /// When it was last pointed at its manifest.
    pub updated_at: i64,
}

/// What [`MetaStore::repository`] returns.
#[derive(Debug, Clone, Default)]
pub struct RepoContents {
    pub manifests: Vec<ManifestInfo>,
    /// (manifest, what it references, that blob's size when recorded).
    pub refs: Vec<(Digest, Digest, Option<u64>)>,
    pub tags: Vec<TagInfo>,
}

/// Storage figures of one repository. (Serialized without its times, which reports show in
/// their own format.)
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct RepoUsage {
    pub name: String,
    /// Bytes of blobs linked here and in no other repository: freed if it were deleted.
    pub unique_bytes: u64,
    /// Bytes of blobs linked here and in other repositories too.
    pub shared_bytes: u64,
    /// Bytes of its images counted as if nothing were shared: every manifest with the
    /// blobs it references (child manifests counted once, as manifests).
    pub logical_bytes: u64,
    pub blobs: u64,
    pub manifests: u64,
    pub tags: u64,
    #[serde(skip)]
    pub created_at: i64,
    #[serde(skip)]
    pub last_push: Option<i64>,
    #[serde(skip)]
    pub last_pull: Option<i64>,
}

/// What [`MetaStore::usage`] returns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Usage {
    /// Bytes of every blob stored (each once).
    pub physical_bytes: u64,
    pub blobs: u64,
    /// The sum of every repository's logical bytes.
    pub logical_bytes: u64,
    /// By name.
    pub repositories: Vec<RepoUsage>,
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
