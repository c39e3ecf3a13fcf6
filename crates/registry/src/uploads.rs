//! Upload sessions: start, append (streamed or chunked), status, finish, cancel.
//!
//! Opening a session writes nothing: its id is signed (see [`crate::ids`]) and says which
//! repository it belongs to and when it was opened. The session is recorded by its first
//! PATCH; a monolithic PUT that finishes it at once never records it at all. Finishing or
//! cancelling leaves a tombstone, so that an ended session's id stays unknown.
//!
//! Bytes are hashed while they stream to the blob store. After every PATCH the session
//! record moves, by compare-and-set on the offset, to the new offset with the hasher's
//! midstate and the store's upload token, so any process continues the session from the
//! record alone, without reading its bytes back. The record is the truth: bytes a store
//! holds past it (a request that died before its record moved) are not part of the upload.
//! A blob becomes visible only at finish: digest verified, bytes committed durably, then
//! linked.

use crate::{Error, Registry, Result};
use berth_meta::{LeaseGuard, LeaseMode, UploadRecord, UploadState};
use berth_oci::range::ChunkRange;
use berth_oci::{Algorithm, Digest, DigestHasher, RepoName, UploadId};
use berth_store::{ByteStream, Durability, UploadToken};
use futures::{Stream, StreamExt, TryStreamExt};
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

/// A session finished by one request whose body announces at most this many bytes is
/// finished in memory: body read and verified, then stored with one write that is durable
/// when it returns — no scratch file to create, reopen and move.
pub(crate) const SMALL_BLOB: u64 = 256 << 10;
/// At most this many at once (memory stays bounded whatever the concurrency); the others
/// take the streaming path.
pub(crate) const SMALL_BLOBS: usize = 32;

/// What the client said about a chunk's length.
#[derive(Debug, Clone, Copy, Default)]
pub struct ChunkInfo {
    /// `Content-Range`, when sent.
    pub range: Option<ChunkRange>,
    /// `Content-Length`, when sent.
    pub length: Option<u64>,
}

/// Fails the stream when the body is longer or shorter than `expected`, so that the store's
/// all-or-nothing append rolls it back.
struct Exact<S> {
    inner: S,
    expected: Option<u64>,
    seen: u64,
}

impl<S> Exact<S> {
    fn new(inner: S, expected: Option<u64>) -> Exact<S> {
        Exact {
            inner,
            expected,
            seen: 0,
        }
    }
}

impl<S: Stream<Item = io::Result<bytes::Bytes>> + Unpin> Stream for Exact<S> {
    type Item = io::Result<bytes::Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let item = match Pin::new(&mut self.inner).poll_next(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(item) => item,
        };
        let Some(expected) = self.expected else {
            return Poll::Ready(item);
        };
        match item {
            Some(Ok(b)) => {
                self.seen += b.len() as u64;
                if self.seen > expected {
                    return Poll::Ready(Some(Err(io::Error::other(format!(
                        "body longer than the {expected} bytes announced"
                    )))));
                }
                Poll::Ready(Some(Ok(b)))
            }
            None if self.seen < expected => {
                self.expected = None;
                Poll::Ready(Some(Err(io::Error::other(format!(
                    "body shorter ({} bytes) than the {expected} bytes announced",
                    self.seen
                )))))
            }
            other => Poll::Ready(other),
        }
    }
}

/// `DIGEST_INVALID` unless the bytes hashed are `digest`'s.
fn verify(hasher: DigestHasher, digest: &Digest) -> Result<()> {
    let actual = hasher.finish();
    if &actual != digest {
        return Err(Error::DigestMismatch {
            what: "uploaded content",
            expected: digest.clone(),
            actual,
        });
    }
    Ok(())
}

impl Registry {
    /// The session's lease: one writer per session, and a second request on a busy session
    /// is refused rather than queued, since two writers at one offset cannot both be right.
    async fn session_lease(&self, id: &UploadId) -> Result<LeaseGuard> {
        self.meta.try_session(id).await?.ok_or(Error::UploadBusy)
    }

    /// The digest's lease, to store its bytes and link them (see `berth_meta::leases`).
    pub(crate) async fn install_lease(&self, digest: &Digest) -> Result<LeaseGuard> {
        Ok(self.meta.digest(digest, LeaseMode::Exclusive).await?)
    }

    /// Opens a new upload session in `repo`. Nothing is written until it receives bytes.
    pub async fn start_upload(&self, repo: &RepoName) -> Result<UploadRecord> {
        let now = berth_meta::now_millis();
        let id = self
            .id_key()
            .await?
            .issue(repo, now)
            .map_err(Error::Internal)?;
        Ok(unrecorded(id, repo, now))
    }

    /// The session `id` of `repo`, or `BLOB_UPLOAD_UNKNOWN`: unknown when it was not issued
    /// for `repo`, has ended, has received nothing for longer than the expiry, or no longer
    /// holds the bytes its record counts (see `still_held`).
    pub async fn upload_status(&self, repo: &RepoName, id: &UploadId) -> Result<UploadRecord> {
        let rec = self.session(repo, id).await?;
        self.still_held(&rec).await?;
        Ok(rec)
    }

    /// Feeds `h` the bytes of the upload standing at `rec` (when its saved hash state cannot
    /// serve): a store that cannot read an upload before its commit leaves such a session
    /// unfinishable with `h`'s algorithm.
    async fn hash_upload(&self, rec: &UploadRecord, h: &mut DigestHasher) -> Result<()> {
        let stream = self.blobs.read_upload(&rec.id, &token(rec)).await;
        let Some(mut stream) = stream.map_err(session_gone)? else {
            return Err(Error::UploadInvalid(format!(
                "this storage cannot read a session's chunks again to hash them with {}: \
                 finish it with the algorithm its chunks were hashed with, sha256",
                h.algorithm().as_str()
            )));
        };
        while let Some(chunk) = stream.next().await {
            h.update(&chunk.map_err(|e| Error::Internal(format!("re-reading upload: {e}")))?);
        }
        Ok(())
    }

    /// The record of session `id` of `repo`, or `BLOB_UPLOAD_UNKNOWN` (as `upload_status`,
    /// without looking at the scratch space: the requests that write to it learn a missing
    /// one from the store, see `session_gone`).
    async fn session(&self, repo: &RepoName, id: &UploadId) -> Result<UploadRecord> {
        let expired = |t: i64| {
            berth_meta::now_millis().saturating_sub(t) > crate::millis(self.opts.upload_expiry)
        };
        match self.meta.upload(id).await? {
            Some(UploadState::Open(rec)) if &rec.repo == repo && !expired(rec.updated_at) => {
                Ok(rec)
            }
            Some(_) => Err(Error::UploadUnknown),
            None => match self.id_key().await?.verify(repo, id) {
                Some(created) if !expired(created) => Ok(unrecorded(id.clone(), repo, created)),
                _ => Err(Error::UploadUnknown),
            },
        }
    }

    /// Checks that a recorded session's bytes are still in its scratch space. They are not
    /// when a finish committed them (the commit moves them into the blob store) and the
    /// process died before the session ended in the metadata: the record then names bytes
    /// the session no longer holds, so it can be neither continued nor finished, and the
    /// truthful answer is `BLOB_UPLOAD_UNKNOWN`: the client starts a new session, whose
    /// commit finds the blob's bytes already in place.
    async fn still_held(&self, rec: &UploadRecord) -> Result<()> {
        if self.blobs.holds(&rec.id, &token(rec)).await? {
            Ok(())
        } else {
            Err(Error::UploadUnknown)
        }
    }

    /// Appends a chunk (PATCH). With a `Content-Range` the chunk must start where the session
    /// stands, else 416. Returns the session with its new offset.
    pub async fn patch_upload(
        &self,
        repo: &RepoName,
        id: &UploadId,
        chunk: ChunkInfo,
        body: ByteStream<'_>,
    ) -> Result<UploadRecord> {
        let _guard = self.session_lease(id).await?;
        let rec = self.session(repo, id).await?;
        let expected = expected_len(&rec, chunk)?;
        let (rec, _) = self
            .append(rec, Algorithm::Sha256, expected, body, true)
            .await?;
        Ok(rec)
    }

    /// Finishes a session (PUT): appends an optional last chunk, verifies `digest`, commits the
    /// blob and links it in `repo`. Returns the blob's size.
    pub async fn finish_upload(
        &self,
        repo: &RepoName,
        id: &UploadId,
        digest: &Digest,
        chunk: ChunkInfo,
        body: Option<ByteStream<'_>>,
    ) -> Result<u64> {
        let _guard = self.session_lease(id).await?;
        let rec = self.session(repo, id).await?;
        self.finish(rec, digest, chunk, body).await
    }

    /// Finishes the session `rec` (whose lease the caller holds).
    async fn finish(
        &self,
        rec: UploadRecord,
        digest: &Digest,
        chunk: ChunkInfo,
        body: Option<ByteStream<'_>>,
    ) -> Result<u64> {
        // The session ends here, so a last chunk's offset and midstate are not recorded: if
        // the digest is wrong, the session stays as it was before this request.
        let (rec, hasher) = match body {
            Some(body) => {
                let expected = expected_len(&rec, chunk)?;
                let small = expected.filter(|&n| rec.offset == 0 && n <= SMALL_BLOB);
                if let Some(n) = small {
                    if let Ok(_permit) = self.small.try_acquire() {
                        return self.finish_small(rec, digest, n, body).await;
                    }
                }
                self.append(rec, digest.algorithm(), expected, body, false)
                    .await?
            }
            None => {
                let hasher = self.hasher_for(&rec, digest.algorithm()).await?;
                (rec, hasher)
            }
        };
        verify(hasher, digest)?;
        // Committed and linked under the digest's lease, so that a collection never deletes
        // the bytes between the two (see `gc`).
        let _blob = self.install_lease(digest).await?;
        let size = self
            .blobs
            .commit(&rec.id, &token(&rec), digest)
            .await
            .map_err(session_gone)?;
        self.meta.finish_upload(&rec, digest, size).await?;
        Ok(size)
    }

    /// Finishes an empty session with its whole blob, `len` bytes announced and at most
    /// [`SMALL_BLOB`]: read into memory while hashed, verified, stored durably, linked.
    async fn finish_small(
        &self,
        rec: UploadRecord,
        digest: &Digest,
        len: u64,
        body: ByteStream<'_>,
    ) -> Result<u64> {
        let mut hasher = DigestHasher::new(digest.algorithm());
        let mut bytes = bytes::BytesMut::with_capacity(len as usize);
        let mut body = Exact::new(body, Some(len));
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(berth_store::StoreError::Body)?;
            hasher.update(&chunk);
            bytes.extend_from_slice(&chunk);
        }
        verify(hasher, digest)?;
        let _blob = self.install_lease(digest).await?;
        self.blobs.put(digest, bytes.freeze()).await?;
        let rec = UploadRecord {
            offset: len,
            progress: Vec::new(),
            ..rec
        };
        self.meta.finish_upload(&rec, digest, len).await?;
        Ok(len)
    }

    /// A whole blob in one request (POST with `?digest=`): a session opened and finished at once.
    pub async fn monolithic_upload(
        &self,
        repo: &RepoName,
        digest: &Digest,
        chunk: ChunkInfo,
        body: ByteStream<'_>,
    ) -> Result<u64> {
        // A session made here and known to nobody else: nothing to look up before finishing.
        let rec = self.start_upload(repo).await?;
        let id = rec.id.clone();
        let result = {
            let _guard = self.session_lease(&id).await?;
            self.finish(rec, digest, chunk, Some(body)).await
        };
        if result.is_err() {
            // Nobody knows this session's id and it was never recorded: only its bytes remain.
            self.blobs.abort(&id, None).await.ok();
        }
        result
    }

    /// Cancels a session (DELETE) and frees its bytes.
    pub async fn cancel_upload(&self, repo: &RepoName, id: &UploadId) -> Result<()> {
        let _guard = self.session_lease(id).await?;
        let rec = self.upload_status(repo, id).await?;
        self.meta.end_upload(&rec).await?;
        self.blobs.abort(&rec.id, Some(&token(&rec))).await?;
        Ok(())
    }

    /// Streams `body` onto the session. Returns the session at its new offset and the hasher
    /// over all its bytes; with `record` (a PATCH), the bytes are durable and the record
    /// moves to the new offset with the hash midstate and the store's token, so that the
    /// session resumes anywhere without re-reading. A finishing PUT's bytes need only reach
    /// the commit, and its record never moves: if the digest is wrong, the session stays as
    /// it was.
    async fn append(
        &self,
        rec: UploadRecord,
        alg: Algorithm,
        expected: Option<u64>,
        body: ByteStream<'_>,
        record: bool,
    ) -> Result<(UploadRecord, DigestHasher)> {
        // Shared with the body, which feeds it as the bytes stream to the store.
        let hashing = std::sync::Arc::new(std::sync::Mutex::new(self.hasher_for(&rec, alg).await?));
        let fed = std::sync::Arc::clone(&hashing);
        let body = Exact::new(body, expected)
            .inspect_ok(move |b| lock_hasher(&fed).update(b))
            .boxed();
        let durability = if record {
            Durability::Durable
        } else {
            Durability::UntilCommit
        };
        let at = self
            .blobs
            .append(&rec.id, &token(&rec), body, durability)
            .await
            .map_err(session_gone)?;
        let hasher = lock_hasher(&hashing).clone();
        let mut state = rec.hash_state.clone();
        if record {
            let saved = hasher.save();
            let moved = self
                .meta
                .advance_upload(&rec, at.len, Some(&saved), &at.progress)
                .await?;
            if !moved {
                // Only possible if another node wrote the session meanwhile; ours is the loser.
                return Err(Error::UploadBusy);
            }
            state = Some(saved);
        }
        let rec = UploadRecord {
            offset: at.len,
            hash_state: state,
            progress: at.progress,
            ..rec
        };
        Ok((rec, hasher))
    }

    /// The hasher over the session's bytes: restored from the saved midstate when it is for
    /// this algorithm and offset, else recomputed from the stored bytes.
    async fn hasher_for(&self, rec: &UploadRecord, alg: Algorithm) -> Result<DigestHasher> {
        if rec.offset == 0 {
            return Ok(DigestHasher::new(alg));
        }
        if let Some(h) = rec.hash_state.as_deref().and_then(DigestHasher::restore) {
            if h.algorithm() == alg && h.len() == rec.offset {
                return Ok(h);
            }
        }
        let mut h = DigestHasher::new(alg);
        self.hash_upload(rec, &mut h).await?;
        if h.len() != rec.offset {
            return Err(Error::Internal(format!(
                "upload {} holds {} bytes, record says {}",
                rec.id,
                h.len(),
                rec.offset
            )));
        }
        Ok(h)
    }
}

/// Where the session `rec` stands in the blob store, as its record saved it.
pub(crate) fn token(rec: &UploadRecord) -> UploadToken {
    UploadToken {
        len: rec.offset,
        progress: rec.progress.clone(),
    }
}

/// The hasher shared by an append's body and the append; a panic elsewhere cannot leave it
/// half-updated (an update is one call), so a poisoned lock is still usable.
fn lock_hasher(h: &std::sync::Mutex<DigestHasher>) -> std::sync::MutexGuard<'_, DigestHasher> {
    h.lock().unwrap_or_else(|e| e.into_inner())
}

/// A store error on a session's scratch space. `NotFound` there means the bytes the record
/// counts are gone (see `Registry::still_held`): the session is unknown, not broken.
fn session_gone(e: berth_store::StoreError) -> Error {
    match e {
        berth_store::StoreError::NotFound => Error::UploadUnknown,
        e => e.into(),
    }
}

/// A session opened at `at` that holds nothing yet, as its signed id alone describes it.
fn unrecorded(id: UploadId, repo: &RepoName, at: i64) -> UploadRecord {
    UploadRecord {
        id,
        repo: repo.clone(),
        offset: 0,
        hash_state: None,
        progress: Vec::new(),
        created_at: at,
        updated_at: at,
    }
}

/// How long the chunk must be, from its `Content-Range` and `Content-Length`, checked against
/// where the session stands.
fn expected_len(rec: &UploadRecord, chunk: ChunkInfo) -> Result<Option<u64>> {
    match chunk.range {
        None => Ok(chunk.length),
        Some(r) => {
            if r.start != rec.offset {
                return Err(Error::ChunkOutOfOrder {
                    repo: rec.repo.clone(),
                    id: rec.id.clone(),
                    offset: rec.offset,
                });
            }
            if let Some(l) = chunk.length {
                if l != r.len() {
                    return Err(Error::SizeInvalid(format!(
                        "Content-Length {l} does not match Content-Range {}-{}",
                        r.start, r.end
                    )));
                }
            }
            Ok(Some(r.len()))
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::testutil::registry;
    use crate::Error;
    use berth_oci::range::ChunkRange;
    use berth_oci::{Digest, RepoName};
    use bytes::Bytes;
    use futures::StreamExt;

    use super::ChunkInfo;

    fn body(b: &'static [u8]) -> berth_store::ByteStream<'static> {
        futures::stream::once(async move { Ok(Bytes::from_static(b)) }).boxed()
    }

    #[tokio::test]
    async fn chunked_upload_with_order_checks() {
        let (reg, _dir) = registry().await;
        let repo: RepoName = "a/b".parse().unwrap();
        let rec = reg.start_upload(&repo).await.unwrap();
        let c1 = ChunkInfo {
            range: Some(ChunkRange { start: 0, end: 4 }),
            length: Some(5),
        };
        assert_eq!(
            reg.patch_upload(&repo, &rec.id, c1, body(b"hello"))
                .await
                .unwrap()
                .offset,
            5
        );
        // repeated chunk
        let e = reg
            .patch_upload(&repo, &rec.id, c1, body(b"hello"))
            .await
            .unwrap_err();
        assert!(matches!(e, Error::ChunkOutOfOrder { offset: 5, .. }));
        // a body longer than its range is refused and changes nothing
        let c2 = ChunkInfo {
            range: Some(ChunkRange { start: 5, end: 6 }),
            length: None,
        };
        assert!(reg
            .patch_upload(&repo, &rec.id, c2, body(b" world"))
            .await
            .is_err());
        assert_eq!(reg.upload_status(&repo, &rec.id).await.unwrap().offset, 5);
        let c2 = ChunkInfo {
            range: Some(ChunkRange { start: 5, end: 10 }),
            length: Some(6),
        };
        reg.patch_upload(&repo, &rec.id, c2, body(b" world"))
            .await
            .unwrap();
        // wrong digest: refused, the session stays
        let wrong = Digest::sha256(b"nope");
        assert!(reg
            .finish_upload(&repo, &rec.id, &wrong, ChunkInfo::default(), None)
            .await
            .is_err());
        let d = Digest::sha256(b"hello world");
        assert_eq!(
            reg.finish_upload(&repo, &rec.id, &d, ChunkInfo::default(), None)
                .await
                .unwrap(),
            11
        );
        assert!(reg.upload_status(&repo, &rec.id).await.is_err());
        assert_eq!(reg.blob_size(&repo, &d).await.unwrap(), 11);
    }

    #[tokio::test]
    async fn sha512_and_monolithic() {
        let (reg, _dir) = registry().await;
        let repo: RepoName = "x".parse().unwrap();
        let d = Digest::of(berth_oci::Algorithm::Sha512, b"abc");
        reg.monolithic_upload(&repo, &d, ChunkInfo::default(), body(b"abc"))
            .await
            .unwrap();
        assert_eq!(reg.blob_size(&repo, &d).await.unwrap(), 3);
        // A session hashed as sha256 finished with a sha512 digest is re-hashed.
        let rec = reg.start_upload(&repo).await.unwrap();
        reg.patch_upload(&repo, &rec.id, ChunkInfo::default(), body(b"ab"))
            .await
            .unwrap();
        reg.finish_upload(&repo, &rec.id, &d, ChunkInfo::default(), Some(body(b"c")))
            .await
            .unwrap();
        // Sessions belong to their repository.
        let rec = reg.start_upload(&repo).await.unwrap();
        let other: RepoName = "y".parse().unwrap();
        assert!(reg.upload_status(&other, &rec.id).await.is_err());
    }

    /// A small whole blob finished in memory is checked as a streamed one is: a wrong digest
    /// or a short body stores nothing and leaves the session usable. With every in-memory
    /// slot taken, the same requests take the streaming path and behave alike.
    #[tokio::test]
    async fn small_whole_blobs_are_checked_in_memory_and_streamed_alike() {
        let (reg, _dir) = registry().await;
        let repo: RepoName = "small".parse().unwrap();
        for slots_taken in [false, true] {
            let _held = slots_taken.then(|| {
                reg.small
                    .clone()
                    .try_acquire_many_owned(super::SMALL_BLOBS as u32)
                    .unwrap()
            });
            let content: &'static [u8] = if slots_taken {
                b"streamed"
            } else {
                b"in memory"
            };
            let d = Digest::sha256(content);
            let announced = ChunkInfo {
                range: None,
                length: Some(content.len() as u64),
            };
            let rec = reg.start_upload(&repo).await.unwrap();
            let wrong = Digest::sha256(b"other");
            let e = reg
                .finish_upload(&repo, &rec.id, &wrong, announced, Some(body(content)))
                .await
                .unwrap_err();
            assert!(matches!(e, Error::DigestMismatch { .. }), "{e}");
            assert!(reg.blob_size(&repo, &wrong).await.is_err());
            let short = ChunkInfo {
                length: Some(content.len() as u64 + 1),
                ..announced
            };
            assert!(reg
                .finish_upload(&repo, &rec.id, &d, short, Some(body(content)))
                .await
                .is_err());
            assert!(reg.blob_size(&repo, &d).await.is_err(), "nothing stored");
            assert_eq!(
                reg.finish_upload(&repo, &rec.id, &d, announced, Some(body(content)))
                    .await
                    .unwrap(),
                content.len() as u64
            );
            assert_eq!(
                reg.blob_size(&repo, &d).await.unwrap(),
                content.len() as u64
            );
            assert!(reg.upload_status(&repo, &rec.id).await.is_err(), "ended");
            // The same blob again, in another repository: stored once, linked there too.
            let again: RepoName = "small/again".parse().unwrap();
            let rec = reg.start_upload(&again).await.unwrap();
            reg.finish_upload(&again, &rec.id, &d, announced, Some(body(content)))
                .await
                .unwrap();
            assert_eq!(
                reg.blob_size(&again, &d).await.unwrap(),
                content.len() as u64
            );
        }
    }
}

#[cfg(test)]
mod crash_tests {
    use super::ChunkInfo;
    use crate::{Options, Registry};
    use berth_oci::{Digest, RepoName};
    use berth_store::memory::MemoryStore;
    use berth_store::{BlobStore, Durability};
    use bytes::Bytes;
    use futures::StreamExt;
    use std::sync::Arc;

    /// A registry on the memory store (handed back, to act behind the registry's back) and
    /// SQLite (whose directory lives as long as the returned guard).
    async fn registry() -> (tempfile::TempDir, Arc<MemoryStore>, Registry) {
        let dir = tempfile::tempdir().unwrap();
        let meta = berth_meta::sqlite::SqliteMeta::open(&dir.path().join("m.db"))
            .await
            .unwrap();
        let store = Arc::new(MemoryStore::new());
        let reg = Registry::open(store.clone(), Arc::new(meta), Options::default())
            .await
            .unwrap();
        (dir, store, reg)
    }

    fn body(b: &'static [u8]) -> berth_store::ByteStream<'static> {
        futures::stream::once(async move { Ok(Bytes::from_static(b)) }).boxed()
    }

    /// A crash between a store append and its record leaves unrecorded bytes in the upload:
    /// they must never reach the committed blob.
    #[tokio::test]
    async fn unrecorded_bytes_never_reach_a_blob() {
        let (_dir, store, reg) = registry().await;
        let repo: RepoName = "crash".parse().unwrap();
        let rec = reg.start_upload(&repo).await.unwrap();
        reg.patch_upload(&repo, &rec.id, ChunkInfo::default(), body(b"good"))
            .await
            .unwrap();
        // What the crashed request had written, without its record.
        let at = berth_store::UploadToken {
            len: 4,
            progress: Vec::new(),
        };
        store
            .append(&rec.id, &at, body(b"GARBAGE"), Durability::Durable)
            .await
            .unwrap();
        let d = Digest::sha256(b"good");
        let n = reg
            .finish_upload(&repo, &rec.id, &d, ChunkInfo::default(), None)
            .await
            .unwrap();
        assert_eq!(n, 4);
        let mut s = store.read_all(&d).await.unwrap();
        let mut got = Vec::new();
        while let Some(c) = s.next().await {
            got.extend_from_slice(&c.unwrap());
        }
        assert_eq!(got, b"good");
    }

    /// Two nodes (two registries on one database and one blob store) take turns on one
    /// session: each continues from the record the other saved, hash state included, with
    /// nothing kept in a process.
    #[tokio::test]
    async fn a_session_continues_on_another_node_from_its_record() {
        let (_dir, store, a) = registry().await;
        let b = Registry::open(store.clone(), a.meta.clone(), Options::default())
            .await
            .unwrap();
        let repo: RepoName = "nodes".parse().unwrap();
        let rec = a.start_upload(&repo).await.unwrap();
        let at = a
            .patch_upload(&repo, &rec.id, ChunkInfo::default(), body(b"first "))
            .await
            .unwrap();
        assert_eq!(b.upload_status(&repo, &rec.id).await.unwrap().offset, 6);
        b.patch_upload(&repo, &rec.id, ChunkInfo::default(), body(b"second "))
            .await
            .unwrap();
        // A's view of the session is stale: its record moved on B.
        assert_eq!(at.offset, 6);
        a.patch_upload(&repo, &rec.id, ChunkInfo::default(), body(b"third"))
            .await
            .unwrap();
        let d = Digest::sha256(b"first second third");
        let n = b
            .finish_upload(&repo, &rec.id, &d, ChunkInfo::default(), None)
            .await
            .unwrap();
        assert_eq!(n, 18);
        assert_eq!(a.blob_size(&repo, &d).await.unwrap(), 18);
    }

    /// A crash between a finish's commit (which moves the session's bytes into the blob
    /// store) and its metadata write leaves a record whose bytes are gone: the session is
    /// unknown from then on, not a 500 at every attempt, and a new upload of the blob works.
    #[tokio::test]
    async fn a_session_whose_commit_was_cut_is_unknown() {
        let (_dir, store, reg) = registry().await;
        let repo: RepoName = "crash".parse().unwrap();
        let rec = reg.start_upload(&repo).await.unwrap();
        reg.patch_upload(&repo, &rec.id, ChunkInfo::default(), body(b"committed"))
            .await
            .unwrap();
        let d = Digest::sha256(b"committed");
        // What the killed finish had done: the commit, not the metadata write.
        let at = berth_store::UploadToken {
            len: 9,
            progress: Vec::new(),
        };
        store.commit(&rec.id, &at, &d).await.unwrap();
        let unknown = |r: crate::Result<_>| matches!(r, Err(crate::Error::UploadUnknown));
        assert!(unknown(reg.upload_status(&repo, &rec.id).await.map(drop)));
        assert!(unknown(
            reg.patch_upload(&repo, &rec.id, ChunkInfo::default(), body(b"more"))
                .await
                .map(drop)
        ));
        assert!(unknown(
            reg.finish_upload(&repo, &rec.id, &d, ChunkInfo::default(), None)
                .await
                .map(drop)
        ));
        reg.monolithic_upload(&repo, &d, ChunkInfo::default(), body(b"committed"))
            .await
            .unwrap();
        assert_eq!(reg.blob_size(&repo, &d).await.unwrap(), 9);
    }
}
