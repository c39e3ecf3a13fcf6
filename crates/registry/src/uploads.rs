//! Upload sessions: start, append (streamed or chunked), status, finish, cancel.
//!
//! Opening a session writes nothing: its id is signed (see [`crate::ids`]) and says which
//! repository it belongs to and when it was opened. The session is recorded by its first
//! PATCH; a monolithic PUT that finishes it at once never records it at all. Finishing or
//! cancelling leaves a tombstone, so that an ended session's id stays unknown.
//!
//! Bytes are hashed while they stream to the blob store, and after every PATCH the hasher's
//! midstate is saved in the upload record with the new offset (compare-and-set), so a session
//! continues after a restart, or on another node, without re-reading what it holds. A blob
//! becomes visible only at finish: digest verified, bytes committed durably, then linked.
//!
//! A store that keeps progress (the filesystem's) saves, with each PATCH's bytes and in the
//! same sync, where the PATCH started, where it ended and the digest of everything up to
//! there; the record's advance is then committed without a sync of its own: one device flush
//! per PATCH instead of two. After a crash the record may stand behind what was
//! acknowledged, and the first request on the session after the restart catches it up (see
//! `caught_up`).

use crate::{Error, Registry, Result};
use berth_meta::{LeaseGuard, LeaseMode, UploadRecord, UploadState};
use berth_oci::range::ChunkRange;
use berth_oci::{Algorithm, Digest, DigestHasher, RepoName, UploadId};
use berth_store::{ByteStream, Durability};
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
        let mut rec = self.session(repo, id).await?;
        if self.may_lag(&rec) {
            // Under the session's lease, like every request that moves it, and from the
            // record as it stands under the lease; one that holds the lease is answered as
            // recorded.
            if let Ok(_guard) = self.session_lease(id).await {
                rec = self.session(repo, id).await?;
                rec = self.caught_up(rec).await?;
            }
        }
        self.still_held(&rec).await?;
        Ok(rec)
    }

    /// Whether the record `rec` may stand behind the bytes its store saved progress for: only
    /// if it was last written before this process started (an advance whose progress the
    /// store saved is committed unsynced, and a crash may lose it). Within a process the
    /// record is committed right after the bytes, under the session's lease. (A clock set back
    /// across a restart could hide a lagging record: the session then stands where its
    /// record says, and the client resends from there.)
    fn may_lag(&self, rec: &UploadRecord) -> bool {
        self.blobs.keeps_progress() && rec.updated_at < self.started_at
    }

    /// The session `rec` (whose lease the caller holds) caught up with the progress its store
    /// saved, when that is ahead of the record (see [`Registry::may_lag`]). The bytes before
    /// where the last saving append started were synced before it began, so the record
    /// moves at least there; it moves to the end of that append if the bytes hash to the
    /// check saved with them (a crash during the append's sync may have kept what it saved
    /// and lost some of its bytes).
    async fn caught_up(&self, rec: UploadRecord) -> Result<UploadRecord> {
        if !self.may_lag(&rec) {
            return Ok(rec);
        }
        let saved = match self.blobs.progress(&rec.id).await {
            Ok(Some(saved)) if saved.len > rec.offset && saved.from >= rec.offset => saved,
            // Nothing ahead of the record (or no bytes at all: the append will say so).
            Ok(_) | Err(berth_store::StoreError::NotFound) => return Ok(rec),
            Err(e) => return Err(e.into()),
        };
        // Saved progress comes from PATCHes, which hash with SHA-256 (see `patch_upload`).
        let mut h = self.hasher_for(&rec, Algorithm::Sha256).await?;
        let read = self.hash_upload(&rec.id, &mut h, saved.from).await;
        let h = if read.is_err() || h.len() != saved.from {
            // Saved progress past the file's end (a crash between a truncation and its
            // sync): the record stands, and the next append cuts the rest off.
            tracing::warn!(upload = %rec.id, error = ?read.err(), "upload shorter than its progress");
            None
        } else {
            let synced = h.clone();
            let checked = match self.hash_upload(&rec.id, &mut h, saved.len).await {
                Ok(()) => h.len() == saved.len && h.digest_so_far() == saved.check,
                Err(e) => {
                    tracing::warn!(upload = %rec.id, error = %e, "re-reading an upload's last chunk");
                    false
                }
            };
            Some(if checked { h } else { synced })
        };
        let (offset, state) = match h {
            Some(h) => (h.len(), Some(h.save())),
            None => (rec.offset, rec.hash_state.clone()),
        };
        if offset != rec.offset {
            tracing::info!(
                upload = %rec.id, recorded = rec.offset, saved = saved.len, now = offset,
                "an upload record behind its bytes caught up"
            );
        }
        // Synced, unlike a PATCH's advance: the saved progress may be cut by the next
        // append, and this record is then the only word of where the session stands. Also
        // when it stays where it was: written by this process, it is not looked at again.
        if !self
            .meta
            .advance_upload(&rec, offset, state.as_deref(), true)
            .await?
        {
            return Err(Error::UploadBusy);
        }
        Ok(UploadRecord {
            offset,
            hash_state: state,
            ..rec
        })
    }

    /// Feeds `h` the upload's bytes from where it stands to `to`.
    async fn hash_upload(&self, id: &UploadId, h: &mut DigestHasher, to: u64) -> Result<()> {
        let mut stream = self
            .blobs
            .read_upload(id, h.len(), to)
            .await
            .map_err(session_gone)?;
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
    /// commit finds the blob's bytes already in place. (Answering the record's offset sent
    /// the client's next PATCH or PUT into a 500, for ever.)
    async fn still_held(&self, rec: &UploadRecord) -> Result<()> {
        if rec.offset == 0 {
            // Nothing to hold: the next append creates the scratch space afresh.
            return Ok(());
        }
        match self.blobs.upload_len(&rec.id).await {
            Ok(len) if len >= rec.offset => Ok(()),
            Ok(len) => Err(Error::Internal(format!(
                "upload {} holds {len} bytes, its record says {}",
                rec.id, rec.offset
            ))),
            Err(berth_store::StoreError::NotFound) => Err(Error::UploadUnknown),
            Err(e) => Err(e.into()),
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
        let rec = self.caught_up(rec).await?;
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
        let rec = self.caught_up(rec).await?;
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
            .commit(&rec.id, digest, rec.offset)
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
        let rec = UploadRecord { offset: len, ..rec };
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
            self.blobs.abort(&id).await.ok();
        }
        result
    }

    /// Cancels a session (DELETE) and frees its bytes.
    pub async fn cancel_upload(&self, repo: &RepoName, id: &UploadId) -> Result<()> {
        let _guard = self.session_lease(id).await?;
        let rec = self.upload_status(repo, id).await?;
        self.meta.end_upload(&rec).await?;
        self.blobs.abort(&rec.id).await?;
        Ok(())
    }

    /// Streams `body` onto the session. Returns the session at its new offset and the hasher
    /// over all its bytes; with `record`, the new offset and the hash midstate are saved in
    /// the session (a PATCH), so that it resumes after a restart without re-reading.
    async fn append(
        &self,
        rec: UploadRecord,
        alg: Algorithm,
        expected: Option<u64>,
        body: ByteStream<'_>,
        record: bool,
    ) -> Result<(UploadRecord, DigestHasher)> {
        // Shared with the store, which asks for the state to save once the body has ended.
        let hasher = std::sync::Arc::new(std::sync::Mutex::new(self.hasher_for(&rec, alg).await?));
        let hashing = std::sync::Arc::clone(&hasher);
        let body = Exact::new(body, expected)
            .inspect_ok(move |b| lock_hasher(&hashing).update(b))
            .boxed();
        // A PATCH's bytes must outlive a crash; a finishing PUT's need only reach the commit.
        let saving = record && self.blobs.keeps_progress();
        let appended = if saving {
            let saved = std::sync::Arc::clone(&hasher);
            let check = Box::new(move || lock_hasher(&saved).digest_so_far());
            self.blobs
                .append_saving(&rec.id, rec.offset, body, check)
                .await
        } else {
            let durability = if record {
                Durability::Durable
            } else {
                Durability::UntilCommit
            };
            self.blobs
                .append(&rec.id, rec.offset, body, durability)
                .await
        };
        let len = appended.map_err(session_gone)?;
        let hasher = lock_hasher(&hasher).clone();
        let mut state = None;
        if record {
            let saved = hasher.save();
            // With the progress saved with the bytes, the record needs no sync of its own.
            if !self
                .meta
                .advance_upload(&rec, len, Some(&saved), !saving)
                .await?
            {
                // Only possible if another node wrote the session meanwhile; ours is the loser.
                return Err(Error::UploadBusy);
            }
            state = Some(saved);
        }
        let rec = UploadRecord {
            offset: len,
            hash_state: state,
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
        self.hash_upload(&rec.id, &mut h, rec.offset).await?;
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

/// The hasher shared by an append's body and its store; a panic elsewhere cannot leave it
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
        store
            .append(&rec.id, 4, body(b"GARBAGE"), Durability::Durable)
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
        store.commit(&rec.id, &d, 9).await.unwrap();
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

/// Sessions on the filesystem store, which saves their progress with their bytes and lets
/// their records be committed unsynced: what a crash can leave, and how the next request on
/// the session recovers it.
#[cfg(test)]
mod saved_progress {
    use super::ChunkInfo;
    use crate::{Options, Registry};
    use berth_meta::sqlite::SqliteMeta;
    use berth_meta::{MetaStore, UploadState};
    use berth_oci::range::ChunkRange;
    use berth_oci::{Algorithm, Digest, DigestHasher, RepoName, UploadId};
    use berth_store::fs::FsStore;
    use berth_store::BlobStore;
    use bytes::Bytes;
    use futures::StreamExt;
    use std::os::unix::fs::FileExt;
    use std::sync::Arc;

    struct Setup {
        _dir: tempfile::TempDir,
        store: Arc<FsStore>,
        meta: Arc<SqliteMeta>,
        reg: Registry,
        repo: RepoName,
    }

    async fn setup() -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let meta = Arc::new(SqliteMeta::open(&dir.path().join("m.db")).await.unwrap());
        let store = Arc::new(FsStore::open(dir.path().join("blobs")).unwrap());
        assert!(store.keeps_progress(), "this filesystem keeps no progress");
        let reg = Registry::open(store.clone(), meta.clone(), Options::default())
            .await
            .unwrap();
        Setup {
            _dir: dir,
            store,
            meta,
            reg,
            repo: "crash".parse().unwrap(),
        }
    }

    fn body(b: &'static [u8]) -> berth_store::ByteStream<'static> {
        futures::stream::once(async move { Ok(Bytes::from_static(b)) }).boxed()
    }

    fn check_of(bytes: &[u8]) -> Vec<u8> {
        hex::decode(Digest::sha256(bytes).hex()).unwrap()
    }

    fn state_after(bytes: &[u8]) -> String {
        let mut h = DigestHasher::new(Algorithm::Sha256);
        h.update(bytes);
        h.save()
    }

    impl Setup {
        async fn patch(&self, id: &UploadId, at: u64, b: &'static [u8]) -> u64 {
            self.patch_with(id, at, b.len() as u64, body(b))
                .await
                .unwrap()
                .offset
        }

        /// A PATCH of `len` bytes at `at` with `Content-Range`, whatever its body does.
        async fn patch_with(
            &self,
            id: &UploadId,
            at: u64,
            len: u64,
            body: berth_store::ByteStream<'static>,
        ) -> crate::Result<berth_meta::UploadRecord> {
            let chunk = ChunkInfo {
                range: Some(ChunkRange {
                    start: at,
                    end: at + len - 1,
                }),
                length: Some(len),
            };
            self.reg.patch_upload(&self.repo, id, chunk, body).await
        }

        /// Where the session stands, as a status request (`GET` on the upload) answers.
        async fn status(&self, id: &UploadId) -> u64 {
            self.reg.upload_status(&self.repo, id).await.unwrap().offset
        }

        async fn recorded(&self, id: &UploadId) -> u64 {
            match self.meta.upload(id).await.unwrap() {
                Some(UploadState::Open(rec)) => rec.offset,
                other => panic!("no open record: {other:?}"),
            }
        }

        /// What a crash can leave: the record back where an earlier PATCH put it (its later
        /// advances were committed unsynced and lost).
        async fn lose_advances(&self, id: &UploadId, back_to: &[u8]) {
            let Some(UploadState::Open(rec)) = self.meta.upload(id).await.unwrap() else {
                panic!("no open record");
            };
            let state = state_after(back_to);
            assert!(self
                .meta
                .advance_upload(&rec, back_to.len() as u64, Some(&state), true)
                .await
                .unwrap());
        }

        async fn finish(&self, id: &UploadId, content: &[u8]) {
            let d = Digest::sha256(content);
            let n = self
                .reg
                .finish_upload(&self.repo, id, &d, ChunkInfo::default(), None)
                .await
                .unwrap();
            assert_eq!(n, content.len() as u64);
            let mut s = self.store.read_all(&d).await.unwrap();
            let mut got = Vec::new();
            while let Some(c) = s.next().await {
                got.extend_from_slice(&c.unwrap());
            }
            assert_eq!(got, content);
        }

        /// A new process on the same data.
        async fn restart(&mut self) {
            // Records written in the same millisecond as the start would count as this
            // process's own.
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            self.reg = Registry::open(self.store.clone(), self.meta.clone(), Options::default())
                .await
                .unwrap();
        }

        fn upload_file(&self, id: &UploadId) -> std::fs::File {
            let id = id.as_str();
            let path = self.store.root().join("uploads").join(&id[..2]).join(id);
            std::fs::OpenOptions::new().write(true).open(path).unwrap()
        }
    }

    /// The record of an acknowledged PATCH lost in a crash: the session answers where the
    /// PATCH left it, and finishes with the right blob.
    #[tokio::test]
    async fn a_record_behind_the_saved_progress_catches_up() {
        let mut s = setup().await;
        let id = s.reg.start_upload(&s.repo).await.unwrap().id;
        assert_eq!(s.patch(&id, 0, b"hello ").await, 6);
        assert_eq!(s.patch(&id, 6, b"world").await, 11);
        s.lose_advances(&id, b"hello ").await;
        assert_eq!(s.recorded(&id).await, 6);
        s.restart().await;

        assert_eq!(s.status(&id).await, 11);
        assert_eq!(s.recorded(&id).await, 11, "the record itself caught up");
        s.finish(&id, b"hello world").await;
    }

    /// A crash during a PATCH's sync that kept what it saved and lost some of its bytes,
    /// with the two PATCHes before it unrecorded: the session goes to where that PATCH
    /// started (the bytes before it were synced before it began), and the client resends
    /// the last chunk from there.
    #[tokio::test]
    async fn a_last_chunk_lost_under_its_progress_falls_back_to_where_it_started() {
        let mut s = setup().await;
        let id = s.reg.start_upload(&s.repo).await.unwrap().id;
        s.patch(&id, 0, b"hello").await;
        s.patch(&id, 5, b" world").await;
        s.patch(&id, 11, b"!").await;
        s.lose_advances(&id, b"hello").await;
        s.upload_file(&id).write_all_at(b"?", 11).unwrap();
        s.restart().await;

        assert_eq!(s.status(&id).await, 11);
        assert_eq!(s.recorded(&id).await, 11);
        assert_eq!(s.patch(&id, 11, b"!").await, 12);
        s.finish(&id, b"hello world!").await;
    }

    /// A crash between a truncation and its sync may leave saved progress past the file's
    /// end: the record stands, and the session goes on from it.
    #[tokio::test]
    async fn progress_past_the_end_of_its_file_leaves_the_record() {
        let mut s = setup().await;
        let id = s.reg.start_upload(&s.repo).await.unwrap().id;
        s.patch(&id, 0, b"hello").await;
        s.patch(&id, 5, b" world").await;
        s.patch(&id, 11, b"!").await;
        s.lose_advances(&id, b"hello").await;
        s.upload_file(&id).set_len(8).unwrap();
        s.restart().await;

        assert_eq!(s.status(&id).await, 5);
        assert_eq!(s.patch(&id, 5, b" world!").await, 12);
        s.finish(&id, b"hello world!").await;
    }

    /// An append that cuts into the bytes of a session (here after a finish with a wrong
    /// digest left its last chunk behind) and then fails must not take the saved progress
    /// of the PATCHes before it with it: their records may be lost in a crash.
    #[tokio::test]
    async fn a_cutting_append_keeps_the_progress_of_acknowledged_patches() {
        let mut s = setup().await;
        let id = s.reg.start_upload(&s.repo).await.unwrap().id;
        s.patch(&id, 0, b"hello").await;
        s.patch(&id, 5, b" world").await;
        let wrong = Digest::sha256(b"something else");
        assert!(s
            .reg
            .finish_upload(
                &s.repo,
                &id,
                &wrong,
                ChunkInfo::default(),
                Some(body(b"XYZ"))
            )
            .await
            .is_err());
        let cut_short = futures::stream::iter([
            Ok(Bytes::from_static(b"!")),
            Err(std::io::Error::other("client went away")),
        ])
        .boxed();
        assert!(s.patch_with(&id, 11, 2, cut_short).await.is_err());
        s.lose_advances(&id, b"hello").await;
        s.restart().await;

        assert_eq!(s.status(&id).await, 11);
        assert_eq!(s.patch(&id, 11, b"!").await, 12);
        s.finish(&id, b"hello world!").await;
    }

    /// The first PATCH's record (which creates it) lost: the session is found in the store,
    /// by the PATCH that continues it without asking for its status first.
    #[tokio::test]
    async fn a_session_whose_first_record_was_lost_continues() {
        let mut s = setup().await;
        let id = s.reg.start_upload(&s.repo).await.unwrap().id;
        // What the first PATCH did before the crash took its record.
        s.store
            .append_saving(&id, 0, body(b"hello "), Box::new(|| check_of(b"hello ")))
            .await
            .unwrap();
        assert_eq!(s.meta.upload(&id).await.unwrap(), None);
        s.restart().await;

        assert_eq!(s.patch(&id, 6, b"world").await, 11);
        s.finish(&id, b"hello world").await;
    }
}
