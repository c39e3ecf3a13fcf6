//! Online garbage collection and reconciliation: the registry keeps serving throughout.
//!
//! A collection, in order:
//! 1. retention rules delete tags and manifests (see [`crate::retention`]), and referrers
//!    whose subject is gone are deleted once older than the grace period;
//! 2. links nothing in their repository references are pruned once older than the grace
//!    period, and repositories left with nothing go;
//! 3. blobs no manifest references and no link made within the grace period protects are
//!    swept: under each digest's exclusive lease (held by whoever shares the database),
//!    one metadata transaction re-checks and marks them deleting (removing every link, so
//!    no manifest can reference them any more), then the bytes are deleted and the records
//!    forgotten. A push holds the same lease from storing its bytes to linking them, so it
//!    either lands before the mark (and the blob is referenced, so not marked) or after the
//!    bytes are gone (and stores them again); and the transaction links a marked blob only
//!    for whoever stored its bytes again. Marks left by an interrupted run are finished
//!    first. One collection runs at a time, under the `gc` job lease;
//! 4. upload sessions idle for longer than the upload expiry are ended and their bytes
//!    freed, as are scratch files no open session owns, and old tombstones are forgotten.
//!
//! Reconciliation compares the blob store with the records: files no record names are
//! deleted once older than the grace period (a crash between a commit and its link leaves
//! them), and records whose file is missing are reported.

use crate::retention::{Deleted, RetentionReport};
use crate::usage::rfc3339;
use crate::{millis, Registry, Result};
use berth_meta::{LeaseGuard, UploadState};
use berth_oci::{Digest, UploadId};
use futures::TryStreamExt;
use serde::Serialize;
use std::collections::HashSet;
use std::time::{Duration, Instant, SystemTime};

/// Digests marked and swept per metadata transaction.
const SWEEP_BATCH: usize = 256;

/// What a run is asked to do.
#[derive(Debug, Clone, Copy, Default)]
pub struct GcRequest {
    /// Report only: delete nothing.
    pub dry_run: bool,
    /// Overrides the configured grace period for this run.
    pub grace: Option<Duration>,
}

/// A blob deleted (or that would be).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct BlobGone {
    pub digest: Digest,
    pub size: u64,
}

/// What a collection did (or, in a dry run, would do).
#[derive(Debug, Clone, Serialize)]
pub struct GcReport {
    pub dry_run: bool,
    pub grace_period_secs: u64,
    pub started_at: String,
    pub duration_ms: u64,
    pub blobs_deleted: u64,
    pub bytes_deleted: u64,
    pub blobs: Vec<BlobGone>,
    pub manifests_deleted: Vec<Deleted>,
    pub tags_deleted: Vec<Deleted>,
    pub links_pruned: u64,
    pub uploads_expired: u64,
    pub temporary_files_removed: u64,
}

/// What a reconciliation found and did.
#[derive(Debug, Clone, Serialize)]
pub struct ReconcileReport {
    pub dry_run: bool,
    pub duration_ms: u64,
    /// Blob files in the store, and blob records in the metadata.
    pub files: u64,
    pub records: u64,
    /// Files no record names, older than the grace period: deleted (unless a dry run).
    pub orphans_deleted: Vec<BlobGone>,
    pub orphan_bytes_deleted: u64,
    /// Files no record names yet, within the grace period (a push may be linking them).
    pub orphans_spared: u64,
    /// Records whose file is missing: their blobs cannot be served.
    pub missing: Vec<BlobGone>,
    /// Records whose file has another size.
    pub size_mismatches: Vec<SizeMismatch>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SizeMismatch {
    pub digest: Digest,
    pub recorded: u64,
    pub actual: u64,
}

/// The time `d` ago (the epoch if that is before it).
fn ago(d: Duration) -> SystemTime {
    SystemTime::now()
        .checked_sub(d)
        .unwrap_or(SystemTime::UNIX_EPOCH)
}

impl Registry {
    /// Runs a collection (one at a time wherever the database is shared: a second waits for
    /// the first).
    pub async fn collect(&self, req: GcRequest) -> Result<GcReport> {
        let _running = self.job_lease("gc").await?;
        let started = Instant::now();
        let now = berth_meta::now_millis();
        let grace = req.grace.unwrap_or(self.opts.gc_grace);
        let cutoff = now.saturating_sub(millis(grace));
        let dry = req.dry_run;
        self.flush_pulls().await?;

        let RetentionReport {
            tags_deleted,
            mut manifests_deleted,
        } = self.apply_retention(now, dry).await?;
        manifests_deleted.extend(self.delete_orphan_referrers(cutoff, dry).await?);

        let (blobs, links_pruned) = if dry {
            let garbage = self.meta.garbage_blobs(cutoff).await?;
            let blobs = garbage
                .into_iter()
                .map(|(digest, size)| BlobGone { digest, size })
                .collect();
            (blobs, 0)
        } else {
            let pruned = self.meta.prune_links(cutoff).await?;
            let mut blobs = self.finish_interrupted_sweep().await?;
            let garbage = self.meta.garbage_blobs(cutoff).await?;
            for batch in garbage.chunks(SWEEP_BATCH) {
                blobs.extend(self.sweep(batch, cutoff).await?);
            }
            (blobs, pruned)
        };
        let (uploads_expired, temporary_files_removed) = self.expire_uploads(dry).await?;
        let report = GcReport {
            dry_run: dry,
            grace_period_secs: grace.as_secs(),
            started_at: rfc3339(now),
            duration_ms: started.elapsed().as_millis() as u64,
            blobs_deleted: blobs.len() as u64,
            bytes_deleted: blobs.iter().map(|b| b.size).sum(),
            blobs,
            manifests_deleted,
            tags_deleted,
            links_pruned,
            uploads_expired,
            temporary_files_removed,
        };
        tracing::info!(
            dry_run = dry,
            blobs = report.blobs_deleted,
            bytes = report.bytes_deleted,
            manifests = report.manifests_deleted.len(),
            tags = report.tags_deleted.len(),
            uploads = report.uploads_expired,
            ms = report.duration_ms,
            "garbage collection"
        );
        Ok(report)
    }

    /// Deletes referrers whose subject is not in their repository, pushed before `cutoff`
    /// (and then theirs, which that made orphans).
    async fn delete_orphan_referrers(&self, cutoff: i64, dry: bool) -> Result<Vec<Deleted>> {
        let mut out = Vec::new();
        for _round in 0..8 {
            let orphans = self.meta.orphan_referrers(cutoff).await?;
            let mut any = false;
            for (repo, digest) in orphans {
                if dry || self.meta.delete_manifest(&repo, &digest).await? {
                    any = true;
                    out.push(Deleted::new(&repo, &digest, None, "subject missing", dry));
                }
            }
            if dry || !any {
                break;
            }
        }
        Ok(out)
    }

    /// Takes the exclusive leases of `digests` in one order (digest order), which every
    /// caller leasing several keeps; pushes take one digest at a time.
    async fn lock_all(&self, digests: &[&Digest]) -> Result<Vec<LeaseGuard>> {
        let mut sorted = digests.to_vec();
        sorted.sort();
        let mut guards = Vec::with_capacity(sorted.len());
        for d in sorted {
            guards.push(self.install_lease(d).await?);
        }
        Ok(guards)
    }

    /// The lease of the job `name`, waiting while another run (here or on another node)
    /// holds it.
    async fn job_lease(&self, name: &str) -> Result<LeaseGuard> {
        loop {
            if let Some(lease) = self.meta.try_job(name).await? {
                return Ok(lease);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Marks and deletes one batch of garbage, under the digests' leases.
    async fn sweep(&self, batch: &[(Digest, u64)], cutoff: i64) -> Result<Vec<BlobGone>> {
        let digests: Vec<&Digest> = batch.iter().map(|(d, _)| d).collect();
        let _guards = self.lock_all(&digests).await?;
        let list: Vec<Digest> = digests.into_iter().cloned().collect();
        let marked = self.meta.mark_deleting(&list, cutoff).await?;
        let marked: HashSet<&Digest> = marked.iter().collect();
        self.remove_marked(batch.iter().filter(|(d, _)| marked.contains(d)))
            .await
    }

    /// Deletes the bytes of blobs marked deleting, then their records. A blob whose bytes
    /// cannot be deleted stays marked, and the next run tries again.
    async fn remove_marked<'a>(
        &self,
        marked: impl Iterator<Item = &'a (Digest, u64)>,
    ) -> Result<Vec<BlobGone>> {
        let marked: Vec<&(Digest, u64)> = marked.collect();
        let digests: Vec<Digest> = marked.iter().map(|(d, _)| d.clone()).collect();
        let kept: HashSet<Digest> = self
            .blobs
            .delete_many(&digests)
            .await?
            .into_iter()
            .collect();
        let gone: Vec<BlobGone> = marked
            .into_iter()
            .filter(|(d, _)| !kept.contains(d))
            .map(|(digest, size)| BlobGone {
                digest: digest.clone(),
                size: *size,
            })
            .collect();
        let digests: Vec<Digest> = gone.iter().map(|b| b.digest.clone()).collect();
        self.meta.forget_blobs(&digests).await?;
        Ok(gone)
    }

    /// Finishes what an interrupted run marked.
    async fn finish_interrupted_sweep(&self) -> Result<Vec<BlobGone>> {
        let listed = self.meta.deleting_blobs().await?;
        if listed.is_empty() {
            return Ok(Vec::new());
        }
        let digests: Vec<&Digest> = listed.iter().map(|(d, _)| d).collect();
        let _guards = self.lock_all(&digests).await?;
        // Read again under the leases: a push may have stored one again and cleared its mark.
        let still = self.meta.deleting_blobs().await?;
        self.remove_marked(still.iter().filter(|b| listed.contains(b)))
            .await
    }

    /// Ends sessions idle for longer than the upload expiry and frees their bytes, frees
    /// scratch space no open session owns, forgets old tombstones, and removes temporary
    /// leftovers. Returns (sessions expired, temporary files removed). A session some request
    /// is writing to right now is left alone.
    async fn expire_uploads(&self, dry: bool) -> Result<(u64, u64)> {
        let expiry = self.opts.upload_expiry;
        let before = berth_meta::now_millis().saturating_sub(millis(expiry));
        let before_time = ago(expiry);
        let mut expired: HashSet<UploadId> = HashSet::new();
        for rec in self.meta.stale_uploads(before).await? {
            if dry {
                expired.insert(rec.id);
                continue;
            }
            let Some(_session) = self.meta.try_session(&rec.id).await? else {
                continue;
            };
            self.meta.end_upload(&rec).await?;
            self.blobs
                .abort(&rec.id, Some(&crate::uploads::token(&rec)))
                .await?;
            expired.insert(rec.id);
        }
        let scratch: Vec<_> = self.blobs.uploads().try_collect().await?;
        for (id, modified) in scratch {
            if modified >= before_time || expired.contains(&id) {
                continue;
            }
            let Some(_session) = self.meta.try_session(&id).await? else {
                continue;
            };
            match self.meta.upload(&id).await? {
                Some(UploadState::Open(rec)) if rec.updated_at >= before => continue,
                Some(UploadState::Open(rec)) if !dry => {
                    self.meta.end_upload(&rec).await?;
                }
                _ => {}
            }
            if !dry {
                self.blobs.abort(&id, None).await?;
            }
            expired.insert(id);
        }
        let mut temporary = 0;
        if !dry {
            self.meta.forget_ended_uploads(before).await?;
            temporary = self.blobs.purge_temporary(before_time).await?;
        }
        Ok((expired.len() as u64, temporary))
    }

    /// Deletes a blob file no record names (unless `dry`): under its lease, and only if it is
    /// still unrecorded, since a push links what it commits while holding it. Whether it
    /// was (or would be) deleted.
    async fn delete_orphan(&self, digest: &Digest, dry: bool) -> Result<bool> {
        let _blob = self.install_lease(digest).await?;
        if self.meta.blob_record(digest).await?.is_some() {
            return Ok(false);
        }
        if !dry {
            self.blobs.delete(digest).await?;
        }
        Ok(true)
    }

    /// Compares the blob store with the records and repairs what can be repaired (one run at
    /// a time wherever the database is shared).
    pub async fn reconcile(&self, req: GcRequest) -> Result<ReconcileReport> {
        let _running = self.job_lease("reconcile").await?;
        let started = Instant::now();
        let grace = req.grace.unwrap_or(self.opts.gc_grace);
        let young = ago(grace);
        let files: Vec<_> = self.blobs.list().try_collect().await?;
        let records: std::collections::HashMap<Digest, u64> =
            self.meta.blob_records().await?.into_iter().collect();
        let mut report = ReconcileReport {
            dry_run: req.dry_run,
            duration_ms: 0,
            files: files.len() as u64,
            records: records.len() as u64,
            orphans_deleted: Vec::new(),
            orphan_bytes_deleted: 0,
            orphans_spared: 0,
            missing: Vec::new(),
            size_mismatches: Vec::new(),
        };
        let on_disk: HashSet<&Digest> = files.iter().map(|f| &f.digest).collect();
        for f in &files {
            match records.get(&f.digest) {
                Some(&recorded) if recorded != f.size => {
                    report.size_mismatches.push(SizeMismatch {
                        digest: f.digest.clone(),
                        recorded,
                        actual: f.size,
                    })
                }
                Some(_) => {}
                None if f.modified >= young => report.orphans_spared += 1,
                None => {
                    if self.delete_orphan(&f.digest, req.dry_run).await? {
                        report.orphan_bytes_deleted += f.size;
                        report.orphans_deleted.push(BlobGone {
                            digest: f.digest.clone(),
                            size: f.size,
                        });
                    }
                }
            }
        }
        for (digest, size) in &records {
            if on_disk.contains(digest) {
                continue;
            }
            // Committed since the listing, or really missing?
            if self.blobs.stat(digest).await?.is_none()
                && self.meta.blob_record(digest).await?.is_some()
            {
                report.missing.push(BlobGone {
                    digest: digest.clone(),
                    size: *size,
                });
            }
        }
        report.missing.sort_by(|a, b| a.digest.cmp(&b.digest));
        report.duration_ms = started.elapsed().as_millis() as u64;
        log_reconcile(&report);
        Ok(report)
    }
}

/// What a reconciliation found, in the log: a warning for records without their file.
fn log_reconcile(report: &ReconcileReport) {
    if !report.missing.is_empty() || !report.size_mismatches.is_empty() {
        tracing::warn!(
            missing = report.missing.len(),
            mismatched = report.size_mismatches.len(),
            "reconcile: records whose blob file is missing or of another size"
        );
    }
    tracing::info!(
        orphans = report.orphans_deleted.len(),
        bytes = report.orphan_bytes_deleted,
        dry_run = report.dry_run,
        ms = report.duration_ms,
        "reconcile"
    );
}

#[cfg(test)]
mod tests {
    use super::GcRequest;
    use crate::testutil::registry;
    use crate::uploads::ChunkInfo;
    use crate::Registry;
    use berth_oci::{media, Digest, Reference, RepoName};
    use berth_store::{BlobStore, ByteStream, Result as StoreResult, UploadToken};
    use bytes::Bytes;
    use futures::stream::BoxStream;
    use futures::StreamExt;
    use std::time::Duration;

    async fn push_blob(reg: &Registry, repo: &RepoName, data: Vec<u8>) -> crate::Result<Digest> {
        let d = Digest::sha256(&data);
        let body = futures::stream::once(async move { Ok(Bytes::from(data)) }).boxed();
        reg.monolithic_upload(repo, &d, ChunkInfo::default(), body)
            .await?;
        Ok(d)
    }

    fn image(config: &Digest, layers: &[(&Digest, usize)]) -> Bytes {
        let layers: Vec<String> = layers
            .iter()
            .map(|(d, n)| {
                format!(r#"{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{d}","size":{n}}}"#)
            })
            .collect();
        Bytes::from(format!(
            r#"{{"schemaVersion":2,"mediaType":"{}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config}","size":2}},"layers":[{}]}}"#,
            media::OCI_MANIFEST,
            layers.join(",")
        ))
    }

    const NOW: GcRequest = GcRequest {
        dry_run: false,
        grace: Some(Duration::ZERO),
    };

    #[tokio::test]
    async fn collects_what_nothing_references() {
        let (reg, _dir) = registry().await;
        let repo: RepoName = "app".parse().unwrap();
        let config = push_blob(&reg, &repo, b"{}".to_vec()).await.unwrap();
        let a = push_blob(&reg, &repo, vec![1; 100]).await.unwrap();
        let loose = push_blob(&reg, &repo, vec![2; 50]).await.unwrap();
        let tag: Reference = "v1".parse().unwrap();
        let pushed = reg
            .put_manifest(&repo, &tag, None, image(&config, &[(&a, 100)]))
            .await
            .unwrap();
        // The default grace period spares everything just pushed.
        let r = reg.collect(GcRequest::default()).await.unwrap();
        assert_eq!(r.blobs_deleted, 0);
        let dry = reg
            .collect(GcRequest {
                dry_run: true,
                ..NOW
            })
            .await
            .unwrap();
        assert_eq!((dry.blobs_deleted, dry.bytes_deleted), (1, 50));
        assert!(
            reg.blob_size(&repo, &loose).await.is_ok(),
            "a dry run deletes nothing"
        );
        let r = reg.collect(NOW).await.unwrap();
        assert_eq!((r.blobs_deleted, r.bytes_deleted), (1, 50));
        assert_eq!(r.blobs[0].digest, loose);
        assert!(reg.blob_size(&repo, &loose).await.is_err());
        assert_eq!(reg.blobs.stat(&loose).await.unwrap(), None);
        assert!(reg.blobs.stat(&a).await.unwrap().is_some());
        // Deleting the image frees its manifest, config and layer.
        reg.delete_manifest(&repo, &Reference::Digest(pushed.digest.clone()))
            .await
            .unwrap();
        let r = reg.collect(NOW).await.unwrap();
        assert_eq!(r.blobs_deleted, 3);
        assert!(reg.blobs.list().next().await.is_none());
        assert_eq!(reg.usage().await.unwrap().physical_bytes, 0);
    }

    /// A memory store with hooks into its timing: deletes that take a while (widening the
    /// window between a collection's mark and its delete), and a gate that, once armed,
    /// holds the next store of bytes (a put or a commit) after it is done and before its
    /// caller links them.
    #[derive(Default)]
    struct Hooked {
        inner: berth_store::memory::MemoryStore,
        slow_deletes: bool,
        armed: std::sync::atomic::AtomicBool,
        stored: tokio::sync::Notify,
        go: tokio::sync::Notify,
    }

    impl Hooked {
        async fn gate(&self) {
            if self.armed.swap(false, std::sync::atomic::Ordering::SeqCst) {
                self.stored.notify_one();
                self.go.notified().await;
            }
        }
    }

    #[async_trait::async_trait]
    impl BlobStore for Hooked {
        async fn stat(&self, d: &Digest) -> StoreResult<Option<u64>> {
            self.inner.stat(d).await
        }
        async fn read(
            &self,
            d: &Digest,
            r: Option<(u64, u64)>,
            read_as: berth_store::ReadAs,
        ) -> StoreResult<berth_store::BlobRead> {
            self.inner.read(d, r, read_as).await
        }
        async fn put(&self, d: &Digest, b: Bytes) -> StoreResult<()> {
            self.inner.put(d, b).await?;
            self.gate().await;
            Ok(())
        }
        async fn delete(&self, d: &Digest) -> StoreResult<()> {
            if self.slow_deletes {
                tokio::time::sleep(Duration::from_millis(3)).await;
            }
            self.inner.delete(d).await
        }
        fn list(&self) -> BoxStream<'_, StoreResult<berth_store::BlobEntry>> {
            self.inner.list()
        }
        fn uploads(
            &self,
        ) -> BoxStream<'_, StoreResult<(berth_oci::UploadId, std::time::SystemTime)>> {
            self.inner.uploads()
        }
        async fn append(
            &self,
            id: &berth_oci::UploadId,
            at: &UploadToken,
            body: ByteStream<'_>,
            durability: berth_store::Durability,
        ) -> StoreResult<UploadToken> {
            self.inner.append(id, at, body, durability).await
        }
        async fn holds(&self, id: &berth_oci::UploadId, at: &UploadToken) -> StoreResult<bool> {
            self.inner.holds(id, at).await
        }
        async fn read_upload(
            &self,
            id: &berth_oci::UploadId,
            at: &UploadToken,
        ) -> StoreResult<Option<ByteStream<'static>>> {
            self.inner.read_upload(id, at).await
        }
        async fn commit(
            &self,
            id: &berth_oci::UploadId,
            at: &UploadToken,
            d: &Digest,
        ) -> StoreResult<u64> {
            let n = self.inner.commit(id, at, d).await?;
            self.gate().await;
            Ok(n)
        }
        async fn abort(
            &self,
            id: &berth_oci::UploadId,
            at: Option<&UploadToken>,
        ) -> StoreResult<()> {
            self.inner.abort(id, at).await
        }
    }

    /// Two registries on one database and one blob store, as two nodes are: one finishes an
    /// upload of bytes that are stored already (garbage, as nothing references them) while
    /// the other's collection runs between its store and its link. The acknowledged upload
    /// keeps its bytes: the collection waits for the digest's lease, and then finds the
    /// blob freshly linked.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_collection_on_another_node_never_deletes_bytes_an_upload_links() {
        let dir = tempfile::tempdir().unwrap();
        let meta = std::sync::Arc::new(
            berth_meta::sqlite::SqliteMeta::open(&dir.path().join("meta.db"))
                .await
                .unwrap(),
        );
        let store = std::sync::Arc::new(Hooked::default());
        let open = || Registry::open(store.clone(), meta.clone(), crate::Options::default());
        let (a, b) = (open().await.unwrap(), open().await.unwrap());
        let (old, new): (RepoName, RepoName) = ("old".parse().unwrap(), "new".parse().unwrap());
        let data = vec![7u8; 3000];
        let d = push_blob(&a, &old, data.clone()).await.unwrap();

        store.armed.store(true, std::sync::atomic::Ordering::SeqCst);
        let into = new.clone();
        let upload = tokio::spawn(async move { push_blob(&b, &into, data).await });
        store.stored.notified().await;
        let collection = tokio::spawn(async move { a.collect(NOW).await });
        tokio::time::sleep(Duration::from_millis(300)).await;
        store.go.notify_one();
        assert_eq!(upload.await.unwrap().unwrap(), d);
        collection.await.unwrap().unwrap();

        use berth_meta::MetaStore;
        assert_eq!(meta.linked_blob(&new, &d).await.unwrap(), Some(3000));
        assert_eq!(store.stat(&d).await.unwrap(), Some(3000), "bytes deleted");
    }

    /// Pushes of images sharing layers race a collector with no grace period: every push
    /// acknowledged stays whole. (The end-to-end test does the same over HTTP, at length.)
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn acknowledged_pushes_survive_a_collector_in_a_loop() {
        let dir = tempfile::tempdir().unwrap();
        let meta = berth_meta::sqlite::SqliteMeta::open(&dir.path().join("meta.db"))
            .await
            .unwrap();
        let reg = Registry::open(
            std::sync::Arc::new(Hooked {
                slow_deletes: true,
                ..Hooked::default()
            }),
            std::sync::Arc::new(meta),
            crate::Options::default(),
        )
        .await
        .unwrap();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let collector = {
            let (reg, stop) = (reg.clone(), stop.clone());
            tokio::spawn(async move {
                let mut runs = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    reg.collect(NOW).await.unwrap();
                    runs += 1;
                }
                runs
            })
        };
        let mounts = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut pushers = Vec::new();
        for p in 0..4u8 {
            let (reg, mounts) = (reg.clone(), mounts.clone());
            pushers.push(tokio::spawn(async move {
                let repo: RepoName = format!("race/{p}").parse().unwrap();
                // Layers from a small pool, and each pusher deletes its images but the last: layers keep turning from referenced to garbage and back, and get
                // pushed again while the collector is deleting them.
                let mut acked: Vec<Digest> = Vec::new();
                for i in 0..80u32 {
                    let layers: Vec<Vec<u8>> = [(i * 7 + p as u32 * 3) % 16]
                        .iter()
                        .map(|k| vec![*k as u8; 64 + *k as usize])
                        .collect();
                    let push = async {
                        let c = push_blob(&reg, &repo, b"{}".to_vec()).await?;
                        let mut ds = Vec::new();
                        for l in &layers {
                            // Every other image mounts its layer from the next pusher's
                            // repository when it is there (mounts share the digest's lease).
                            let d = Digest::sha256(l);
                            let from: RepoName = format!("race/{}", (p + 1) % 4).parse().unwrap();
                            let mounted = i % 2 == 1
                                && matches!(
                                    reg.mount_blob(&repo, &d, Some(&from)).await?,
                                    crate::blobs::Mount::Mounted { .. }
                                );
                            if mounted {
                                mounts.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            } else {
                                push_blob(&reg, &repo, l.clone()).await?;
                            }
                            ds.push((d, l.len()));
                        }
                        let refs: Vec<(&Digest, usize)> = ds.iter().map(|(d, n)| (d, *n)).collect();
                        let tag: Reference = format!("t{i}").parse().unwrap();
                        reg.put_manifest(&repo, &tag, None, image(&c, &refs)).await
                    };
                    if let Ok(p) = push.await {
                        if !acked.contains(&p.digest) {
                            acked.push(p.digest);
                        }
                    }
                    while acked.len() > 1 {
                        let old = acked.remove(0);
                        reg.delete_manifest(&repo, &Reference::Digest(old))
                            .await
                            .unwrap();
                    }
                }
                (repo, acked)
            }));
        }
        let mut acked = Vec::new();
        for p in pushers {
            acked.push(p.await.unwrap());
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        assert!(collector.await.unwrap() > 0);
        assert!(
            mounts.load(std::sync::atomic::Ordering::Relaxed) > 0,
            "no layer was mounted"
        );
        let mut whole = 0;
        for (repo, digests) in acked {
            for d in digests {
                let m = reg
                    .get_manifest(&repo, &Reference::Digest(d), &[])
                    .await
                    .unwrap();
                let parsed = berth_oci::manifest::Manifest::parse(&m.body, None).unwrap();
                for b in parsed.required_blobs() {
                    assert!(reg.blob_size(&repo, &b.digest).await.is_ok());
                    assert!(reg.blobs.stat(&b.digest).await.unwrap().is_some());
                }
                whole += 1;
            }
        }
        assert!(whole > 0, "some pushes were acknowledged");
    }
}
