//! The embedded SQLite backend, the default: one file next to the blobs, nothing to run.
//!
//! SQLite lets one writer in at a time, so writes go to one writer task that owns the only
//! writing connection (no lock upgrades, no `SQLITE_BUSY` between our own writers), and reads
//! go through a pool of several read-only connections, which WAL mode lets run beside it.
//! `synchronous = FULL`: a write that returned is on disk, which is what an acknowledged push
//! promises.
//!
//! Group commit: every fsync of the WAL costs the same whatever it carries, and one writer
//! would otherwise pay one per write. The writer task takes every write queued while the
//! previous commit was syncing, runs each inside a savepoint of one transaction (a failing
//! write rolls back alone), commits once, and only then answers each caller. A write alone in
//! the queue runs at once: nothing waits for a batch to fill.
//!

use crate::leases::{LeaseGuard, LeaseMode, Leases, LocalLeases};
use crate::sql;
use crate::{
    ManifestInfo, ManifestRecord, MetaError, MetaStore, NewManifest, Page, PutRefusal,
    RepoContents, RepoUsage, Result, Stored, TagInfo, UploadRecord, UploadState, Usage,
};
use async_trait::async_trait;
use berth_oci::{Digest, ErrorKind, Reference, RepoName, Tag, UploadId};
use futures::future::BoxFuture;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteRow, SqliteSynchronous,
};
use sqlx::{ConnectOptions, Row};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// Writes taken into one transaction at most: bounds the time a caller waits behind others.
const MAX_BATCH: usize = 256;

/// How a write answers its caller once its batch is committed (`Ok`) or failed (`Err`).
type Reply = Box<dyn FnOnce(std::result::Result<(), String>) + Send>;

/// A queued write: runs its statements on the writer's connection and says whether they
/// succeeded (else its savepoint is rolled back) and how to answer.
type Job = Box<dyn for<'c> FnOnce(&'c mut SqliteConnection) -> BoxFuture<'c, (bool, Reply)> + Send>;

/// Whether a write needs a savepoint of its own: a single statement is atomic by itself, and
/// the two statements a savepoint costs are round trips to the database thread.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Statements {
    One,
    Several,
}

/// A write in the writer task's queue.
struct Queued {
    statements: Statements,
    job: Job,
}

pub struct SqliteMeta {
    /// Held (locked) while open: one process serves a SQLite database, so the leases of
    /// this process are everyone's.
    _serving: std::fs::File,
    leases: LocalLeases,
    jobs: mpsc::Sender<Queued>,
    reader: SqlitePool,
    /// The change generation (see [`MetaStore::generation`]): this process is the
    /// database's only writer, so it sees every change.
    generation: Arc<AtomicU64>,
}

/// Whether a write can change what a tag or digest resolves to, or a tag list, or remove a
/// repository: those bump the change generation once committed.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Touches {
    Resolutions,
    Other,
}

impl SqliteMeta {
    /// Opens (creating and migrating if needed) the database file at `path`.
    pub async fn open(path: &Path) -> Result<SqliteMeta> {
        refuse_orphan_log(path)?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            tokio::fs::create_dir_all(dir)
                .await
                .map_err(MetaError::io)?;
        }
        let serving = serve_alone(path)?;
        let base = SqliteConnectOptions::new()
            .filename(path)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(30))
            .foreign_keys(false);
        // Migrations run without a sync per transaction: a crash before the next synced
        // commit loses a migration and its record together, and the next start applies both.
        let mut writer = base
            .clone()
            .synchronous(SqliteSynchronous::Normal)
            .create_if_missing(true)
            .connect()
            .await?;
        sqlx::migrate!("./migrations/sqlite")
            .run(&mut writer)
            .await?;
        sqlx::query("PRAGMA synchronous = FULL")
            .execute(&mut writer)
            .await?;
        // Readers connect on first use: nothing of theirs is on the start-up path.
        let reader = SqlitePoolOptions::new()
            .max_connections(8)
            .connect_lazy_with(base.read_only(true));
        let (jobs, queue) = mpsc::channel(1024);
        tokio::spawn(write_loop(writer, queue));
        Ok(SqliteMeta {
            _serving: serving,
            leases: LocalLeases::default(),
            jobs,
            reader,
            generation: Arc::default(),
        })
    }

    /// Runs one statement with these binds in the writer's next batch; whether it changed a
    /// row.
    async fn changes(
        &self,
        touches: Touches,
        statement: &'static str,
        binds: Vec<String>,
    ) -> Result<bool> {
        self.write_touching(touches, Statements::One, move |c| {
            Box::pin(async move {
                let mut q = sqlx::query(statement);
                for b in binds {
                    q = q.bind(b);
                }
                Ok(q.execute(c).await?.rows_affected() > 0)
            })
        })
        .await
    }

    /// Runs `f` in the writer task's next batch and returns its result once the batch is
    /// durable. An `Err` from `f` rolls back only `f`'s own statements.
    async fn write<T, F>(&self, statements: Statements, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c mut SqliteConnection) -> BoxFuture<'c, Result<T>> + Send + 'static,
    {
        self.write_touching(Touches::Other, statements, f).await
    }

    /// [`SqliteMeta::write`], for a write that may change what `touches` says: the writer
    /// task bumps the change generation before answering, whether or not the
    /// caller is still waiting.
    async fn write_touching<T, F>(
        &self,
        touches: Touches,
        statements: Statements,
        f: F,
    ) -> Result<T>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c mut SqliteConnection) -> BoxFuture<'c, Result<T>> + Send + 'static,
    {
        self.enqueue(touches, statements, f).await
    }

    async fn enqueue<T, F>(&self, touches: Touches, statements: Statements, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c mut SqliteConnection) -> BoxFuture<'c, Result<T>> + Send + 'static,
    {
        let generation = (touches == Touches::Resolutions).then(|| self.generation.clone());
        let (tx, rx) = oneshot::channel::<Result<T>>();
        let job: Job = Box::new(move |conn| {
            Box::pin(async move {
                let result = f(conn).await;
                let ok = result.is_ok();
                let reply: Reply = Box::new(move |committed| {
                    // Also on a failed commit: what is on disk is then unknown.
                    if let Some(g) = generation {
                        g.fetch_add(1, Ordering::AcqRel);
                    }
                    let _ = tx.send(match committed {
                        Ok(()) => result,
                        Err(e) => Err(MetaError::new(
                            ErrorKind::Other,
                            format!("commit failed: {e}"),
                        )),
                    });
                });
                (ok, reply)
            })
        });
        let closed = || MetaError::new(ErrorKind::Unavailable, "the database writer has stopped");
        self.jobs
            .send(Queued { statements, job })
            .await
            .map_err(|_| closed())?;
        rx.await.map_err(|_| closed())?
    }

    /// Deletes a manifest's row with `statement` (binds: repo, digest) and, if that deleted
    /// it, its tags, references and the link to its own blob, in one transaction.
    async fn remove_manifest(
        &self,
        statement: &'static str,
        repo: &RepoName,
        digest: &Digest,
    ) -> Result<bool> {
        let (repo, d) = (repo.to_string(), digest.to_string());
        self.write_touching(Touches::Resolutions, Statements::Several, move |c| {
            Box::pin(async move {
                let r = sqlx::query(statement)
                    .bind(&repo)
                    .bind(&d)
                    .execute(&mut *c)
                    .await?;
                if r.rows_affected() == 0 {
                    return Ok(false);
                }
                // The manifest's own bytes stop being visible in the repository with it.
                for q in [sql::DELETE_TAGS_OF, sql::DELETE_REFS, sql::DELETE_LINK] {
                    sqlx::query(q).bind(&repo).bind(&d).execute(&mut *c).await?;
                }
                Ok(true)
            })
        })
        .await
    }

    /// Runs a query whose rows are (digest, size).
    async fn digest_sizes(
        &self,
        query: sqlx::query::Query<'_, sqlx::Sqlite, sqlx::sqlite::SqliteArguments>,
    ) -> Result<Vec<(Digest, u64)>> {
        query
            .fetch_all(&self.reader)
            .await?
            .iter()
            .map(|r| Ok((digest_col(r, "digest")?, u(r, 1)?)))
            .collect()
    }

    async fn repo_exists(&self, repo: &RepoName) -> Result<bool> {
        let row = sqlx::query(sql::REPO_EXISTS)
            .bind(repo.as_str())
            .fetch_optional(&self.reader)
            .await?;
        Ok(row.is_some())
    }
}

/// Locks `<path>.lock` for as long as the returned file is open, or says which other
/// process serves the database: the leases of one process hold only if no other process
/// writes to it. The kernel drops the lock with the process, however it ends.
fn serve_alone(path: &Path) -> Result<std::fs::File> {
    let mut name = path.as_os_str().to_owned();
    name.push(".lock");
    let file = std::fs::File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&name)
        .map_err(MetaError::io)?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(MetaError::new(
            ErrorKind::Conflict,
            format!(
                "{} is in use by another process: one process serves a SQLite database \
                 (several nodes share PostgreSQL)",
                path.display()
            ),
        )),
        Err(std::fs::TryLockError::Error(e)) => Err(MetaError::io(e)),
    }
}

/// A write-ahead log left without its database (`meta.db` deleted, `meta.db-wal` kept) is
/// refused: SQLite would replay its pages into the new database.
fn refuse_orphan_log(path: &Path) -> Result<()> {
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    if !path.exists() && Path::new(&wal).exists() {
        return Err(MetaError::corrupt(format!(
            "{} is missing but its write-ahead log {} is there: restore the database, or \
             remove the log (and its -shm) to start empty",
            path.display(),
            Path::new(&wal).display()
        )));
    }
    Ok(())
}

fn i(v: u64) -> i64 {
    v as i64
}

fn digest_col(row: &SqliteRow, col: &str) -> Result<Digest> {
    let s: String = row.try_get(col)?;
    s.parse()
        .map_err(|e| MetaError::corrupt(format!("{col}: {e}")))
}

fn manifest_row(row: &SqliteRow) -> Result<ManifestRecord> {
    Ok(ManifestRecord {
        digest: digest_col(row, "digest")?,
        media_type: row.try_get("media_type")?,
        size: row.try_get::<i64, _>("size")? as u64,
        artifact_type: row.try_get("artifact_type")?,
        subject: opt_digest_col(row, "subject")?,
        config_media_type: row.try_get("config_media_type")?,
        annotations: row.try_get("annotations")?,
        pushed_at: row.try_get("pushed_at")?,
    })
}

/// The names a [`sql::TAGS`] or [`sql::REPOS`] row joined, in lexical (byte) order: the
/// aggregate follows the index it reads, and should a query plan ever feed it otherwise, the
/// names are sorted here — a check that costs one comparison per name.
fn split_names(joined: Option<String>) -> Vec<String> {
    let mut names: Vec<String> = joined
        .map(|j| j.split(',').map(str::to_owned).collect())
        .unwrap_or_default();
    if !names.is_sorted() {
        names.sort_unstable();
    }
    names
}

fn opt_digest_col(row: &SqliteRow, col: &str) -> Result<Option<Digest>> {
    let s: Option<String> = row.try_get(col)?;
    s.map(|s| s.parse())
        .transpose()
        .map_err(|e| MetaError::corrupt(format!("{col}: {e}")))
}

fn repo_col(row: &SqliteRow, col: &str) -> Result<RepoName> {
    let s: String = row.try_get(col)?;
    s.parse()
        .map_err(|e| MetaError::corrupt(format!("{col}: {e}")))
}

fn u(row: &SqliteRow, col: usize) -> Result<u64> {
    Ok(row.try_get::<i64, _>(col)?.max(0) as u64)
}

fn upload_row(row: &SqliteRow) -> Result<UploadState> {
    if row.try_get::<Option<i64>, _>("ended_at")?.is_some() {
        return Ok(UploadState::Ended);
    }
    let id: String = row.try_get("id")?;
    Ok(UploadState::Open(UploadRecord {
        id: id
            .parse()
            .map_err(|e| MetaError::corrupt(format!("upload id: {e}")))?,
        repo: repo_col(row, "repo")?,
        offset: row.try_get::<i64, _>("offset_bytes")? as u64,
        hash_state: row.try_get("hash_state")?,
        progress: row
            .try_get::<Option<Vec<u8>>, _>("progress")?
            .unwrap_or_default(),
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    }))
}

/// `LIMIT` for a page: SQLite and PostgreSQL both take -1 / NULL differently, so "all" is
/// spelled as the largest count.
fn limit(p: &Page<'_>) -> i64 {
    p.limit
        .map(|l| l.min(i64::MAX as u64) as i64)
        .unwrap_or(i64::MAX)
}

/// Links a blob in a repository, creating both records if needed (see `link_blob`).
async fn link(c: &mut SqliteConnection, repo: &str, digest: &str, size: u64) -> Result<()> {
    sqlx::query(sql::LINK_SCRIPT)
        .bind(repo)
        .bind(digest)
        .bind(i(size))
        .bind(crate::now_millis())
        .execute(c)
        .await?;
    Ok(())
}

/// Why [`MetaStore::put_manifest`] must refuse `m`, if it must: a referenced blob not
/// linked with its declared size, its own bytes found stored but marked, a child missing.
async fn refusal(tx: &mut SqliteConnection, m: &NewManifest) -> Result<Option<PutRefusal>> {
    let repo = m.repo.as_str();
    let digest = m.record.digest.to_string();
    for (d, declared) in &m.blobs {
        let row = sqlx::query(sql::LINKED_BLOB)
            .bind(repo)
            .bind(d.to_string())
            .fetch_optional(&mut *tx)
            .await?;
        match row {
            None => return Ok(Some(PutRefusal::BlobUnknown(d.clone()))),
            Some(r) => {
                let stored = r.try_get::<i64, _>(0)? as u64;
                if stored != *declared {
                    return Ok(Some(PutRefusal::SizeMismatch {
                        digest: d.clone(),
                        stored,
                        declared: *declared,
                    }));
                }
            }
        }
    }
    if m.stored == Stored::Already {
        let live = sqlx::query(sql::BLOB_LIVE)
            .bind(&digest)
            .fetch_optional(&mut *tx)
            .await?;
        if live.is_none() {
            return Ok(Some(PutRefusal::BytesGone));
        }
    }
    for c in &m.children {
        let row = sqlx::query(sql::MANIFEST_EXISTS)
            .bind(repo)
            .bind(c.to_string())
            .fetch_optional(&mut *tx)
            .await?;
        if row.is_none() {
            return Ok(Some(PutRefusal::ManifestUnknown(c.clone())));
        }
    }
    Ok(None)
}

/// The statements of [`MetaStore::put_manifest`], run inside the writer's transaction.
async fn put_manifest_in(
    tx: &mut SqliteConnection,
    m: NewManifest,
) -> Result<Result<(), PutRefusal>> {
    let repo = m.repo.as_str();
    let rec = &m.record;
    let digest = rec.digest.to_string();
    let now = crate::now_millis();
    if let Some(refusal) = refusal(tx, &m).await? {
        return Ok(Err(refusal));
    }
    link(&mut *tx, repo, &digest, rec.size).await?;
    sqlx::query(sql::UPSERT_MANIFEST)
        .bind(repo)
        .bind(&digest)
        .bind(&rec.media_type)
        .bind(i(rec.size))
        .bind(&rec.artifact_type)
        .bind(rec.subject.as_ref().map(|s| s.to_string()))
        .bind(&rec.config_media_type)
        .bind(&rec.annotations)
        .bind(rec.pushed_at)
        .execute(&mut *tx)
        .await?;
    sqlx::query(sql::DELETE_REFS)
        .bind(repo)
        .bind(&digest)
        .execute(&mut *tx)
        .await?;
    for target in m.blobs.iter().map(|(d, _)| d).chain(m.children.iter()) {
        sqlx::query(sql::INSERT_REF)
            .bind(repo)
            .bind(&digest)
            .bind(target.to_string())
            .execute(&mut *tx)
            .await?;
    }
    if let Some(tag) = &m.tag {
        sqlx::query(sql::UPSERT_TAG)
            .bind(repo)
            .bind(tag.as_str())
            .bind(&digest)
            .bind(now)
            .execute(&mut *tx)
            .await?;
    }
    Ok(Ok(()))
}

/// The writer task: one transaction per batch of queued writes, each in its own savepoint.
async fn write_loop(mut conn: SqliteConnection, mut queue: mpsc::Receiver<Queued>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while queue.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let mut replies = Vec::with_capacity(batch.len());
        let outcome = run_batch(&mut conn, batch.drain(..), &mut replies).await;
        if let Err(e) = &outcome {
            tracing::error!(error = %e, writes = replies.len(), "metadata batch failed");
            // Leave no half-open transaction for the next batch.
            let _ = sqlx::query("ROLLBACK").execute(&mut conn).await;
        }
        let outcome = outcome.map_err(|e| e.to_string());
        for reply in replies {
            reply(outcome.clone());
        }
    }
}

async fn run_batch(
    conn: &mut SqliteConnection,
    jobs: impl ExactSizeIterator<Item = Queued>,
    replies: &mut Vec<Reply>,
) -> std::result::Result<(), sqlx::Error> {
    // A write alone in its batch needs no savepoint (two more trips to the database thread):
    // if it fails, the whole transaction is rolled back instead.
    let alone = jobs.len() == 1;
    let mut end = "COMMIT";
    sqlx::query("BEGIN IMMEDIATE").execute(&mut *conn).await?;
    for Queued { statements, job } in jobs {
        let savepoint = statements == Statements::Several && !alone;
        if savepoint {
            sqlx::query("SAVEPOINT write").execute(&mut *conn).await?;
        }
        let (ok, reply) = job(conn).await;
        replies.push(reply);
        if savepoint {
            if !ok {
                sqlx::query("ROLLBACK TO write").execute(&mut *conn).await?;
            }
            sqlx::query("RELEASE write").execute(&mut *conn).await?;
        } else if alone && !ok {
            end = "ROLLBACK";
        }
    }
    sqlx::query(end).execute(&mut *conn).await?;
    Ok(())
}

#[async_trait]
impl Leases for SqliteMeta {
    async fn digest(&self, digest: &Digest, mode: LeaseMode) -> Result<LeaseGuard> {
        self.leases.digest(digest, mode).await
    }

    async fn try_session(&self, id: &UploadId) -> Result<Option<LeaseGuard>> {
        self.leases.try_session(id).await
    }

    async fn try_job(&self, name: &str) -> Result<Option<LeaseGuard>> {
        self.leases.try_job(name).await
    }
}

#[async_trait]
impl MetaStore for SqliteMeta {
    async fn link_blob(&self, repo: &RepoName, digest: &Digest, size: u64) -> Result<()> {
        let (repo, digest) = (repo.to_string(), digest.to_string());
        self.write(Statements::Several, move |c| {
            Box::pin(async move { link(c, &repo, &digest, size).await })
        })
        .await
    }

    async fn finish_upload(
        &self,
        session: &UploadRecord,
        digest: &Digest,
        size: u64,
    ) -> Result<()> {
        let (session, digest) = (session.clone(), digest.to_string());
        self.write(Statements::Several, move |c| {
            Box::pin(async move {
                link(c, session.repo.as_str(), &digest, size).await?;
                end_upload(c, &session).await?;
                Ok(())
            })
        })
        .await
    }

    async fn mount_blob(
        &self,
        repo: &RepoName,
        from: &RepoName,
        digest: &Digest,
    ) -> Result<Option<u64>> {
        let (repo, from, d) = (repo.to_string(), from.to_string(), digest.to_string());
        self.write(Statements::Several, move |c| {
            Box::pin(async move {
                let row = sqlx::query(sql::LINKED_BLOB)
                    .bind(&from)
                    .bind(&d)
                    .fetch_optional(&mut *c)
                    .await?;
                let Some(row) = row else { return Ok(None) };
                let size = row.try_get::<i64, _>(0)?.max(0) as u64;
                link(c, &repo, &d, size).await?;
                Ok(Some(size))
            })
        })
        .await
    }

    async fn linked_blob(&self, repo: &RepoName, digest: &Digest) -> Result<Option<u64>> {
        let row = sqlx::query(sql::LINKED_BLOB)
            .bind(repo.as_str())
            .bind(digest.to_string())
            .fetch_optional(&self.reader)
            .await?;
        Ok(row
            .map(|r| r.try_get::<i64, _>(0))
            .transpose()?
            .map(|s| s as u64))
    }

    async fn unlink_blob(&self, repo: &RepoName, digest: &Digest) -> Result<bool> {
        self.changes(
            Touches::Other,
            sql::DELETE_LINK,
            vec![repo.to_string(), digest.to_string()],
        )
        .await
    }

    async fn put_manifest(&self, m: &NewManifest) -> Result<Result<(), PutRefusal>> {
        let m = m.clone();
        self.write_touching(Touches::Resolutions, Statements::Several, move |c| {
            Box::pin(put_manifest_in(c, m))
        })
        .await
    }

    async fn manifest(
        &self,
        repo: &RepoName,
        reference: &Reference,
    ) -> Result<Option<ManifestRecord>> {
        let row = match reference {
            Reference::Digest(d) => {
                sqlx::query(sql::MANIFEST_BY_DIGEST)
                    .bind(repo.as_str())
                    .bind(d.to_string())
                    .fetch_optional(&self.reader)
                    .await?
            }
            Reference::Tag(t) => {
                sqlx::query(sql::MANIFEST_BY_TAG)
                    .bind(repo.as_str())
                    .bind(t.as_str())
                    .fetch_optional(&self.reader)
                    .await?
            }
        };
        row.as_ref().map(manifest_row).transpose()
    }

    async fn delete_manifest(&self, repo: &RepoName, digest: &Digest) -> Result<bool> {
        self.remove_manifest(sql::DELETE_MANIFEST, repo, digest)
            .await
    }

    async fn delete_tag(&self, repo: &RepoName, tag: &Tag) -> Result<bool> {
        self.changes(
            Touches::Resolutions,
            sql::DELETE_TAG,
            vec![repo.to_string(), tag.to_string()],
        )
        .await
    }

    async fn generation(&self) -> Result<u64> {
        Ok(self.generation.load(Ordering::Acquire))
    }

    async fn tags(&self, repo: &RepoName, page: Page<'_>) -> Result<Option<Vec<String>>> {
        let query = match page.limit {
            Some(_) => sqlx::query(sql::TAGS)
                .bind(repo.as_str())
                .bind(page.after.unwrap_or(""))
                .bind(limit(&page)),
            None => sqlx::query(sql::ALL_TAGS)
                .bind(repo.as_str())
                .bind(page.after.unwrap_or("")),
        };
        let row = query.fetch_one(&self.reader).await?;
        if !row.try_get::<bool, _>(0)? {
            return Ok(None);
        }
        Ok(Some(split_names(row.try_get(1)?)))
    }

    async fn repositories(&self, page: Page<'_>) -> Result<Vec<String>> {
        let row = sqlx::query(sql::REPOS)
            .bind(page.after.unwrap_or(""))
            .bind(limit(&page))
            .fetch_one(&self.reader)
            .await?;
        Ok(split_names(row.try_get(0)?))
    }

    async fn referrers(
        &self,
        repo: &RepoName,
        subject: &Digest,
        artifact_type: Option<&str>,
    ) -> Result<Vec<ManifestRecord>> {
        let q = if artifact_type.is_some() {
            sql::REFERRERS_OF_TYPE
        } else {
            sql::REFERRERS
        };
        let mut query = sqlx::query(q).bind(repo.as_str()).bind(subject.to_string());
        if let Some(t) = artifact_type {
            query = query.bind(t);
        }
        query
            .fetch_all(&self.reader)
            .await?
            .iter()
            .map(manifest_row)
            .collect()
    }

    async fn upload(&self, id: &UploadId) -> Result<Option<UploadState>> {
        let row = sqlx::query(sql::UPLOAD)
            .bind(id.as_str())
            .fetch_optional(&self.reader)
            .await?;
        row.as_ref().map(upload_row).transpose()
    }

    async fn advance_upload(
        &self,
        session: &UploadRecord,
        to: u64,
        hash_state: Option<&str>,
        progress: &[u8],
    ) -> Result<bool> {
        let (s, state, progress, now) = (
            session.clone(),
            hash_state.map(str::to_owned),
            progress.to_vec(),
            crate::now_millis(),
        );
        self.write(Statements::One, move |c| {
            Box::pin(async move {
                // Only a session at 0 may lack a record: elsewhere a missing row is a loss.
                let r = if s.offset == 0 {
                    sqlx::query(sql::FIRST_ADVANCE)
                        .bind(s.id.as_str())
                        .bind(s.repo.as_str())
                        .bind(i(to))
                        .bind(state)
                        .bind(progress)
                        .bind(s.created_at)
                        .bind(now)
                        .execute(c)
                        .await?
                } else {
                    sqlx::query(sql::MOVE_UPLOAD)
                        .bind(s.id.as_str())
                        .bind(i(s.offset))
                        .bind(i(to))
                        .bind(state)
                        .bind(progress)
                        .bind(now)
                        .execute(c)
                        .await?
                };
                Ok(r.rows_affected() > 0)
            })
        })
        .await
    }

    async fn end_upload(&self, session: &UploadRecord) -> Result<bool> {
        let s = session.clone();
        self.write(Statements::One, move |c| {
            Box::pin(async move { end_upload(c, &s).await })
        })
        .await
    }

    async fn garbage_blobs(&self, cutoff: i64) -> Result<Vec<(Digest, u64)>> {
        self.digest_sizes(sqlx::query(sql::GARBAGE_BLOBS).bind(cutoff))
            .await
    }

    async fn mark_deleting(&self, digests: &[Digest], cutoff: i64) -> Result<Vec<Digest>> {
        let digests = digests.to_vec();
        self.write(Statements::Several, move |c| {
            Box::pin(async move {
                let now = crate::now_millis();
                let mut marked = Vec::new();
                for d in digests {
                    let r = sqlx::query(sql::MARK_DELETING)
                        .bind(cutoff)
                        .bind(d.to_string())
                        .bind(now)
                        .execute(&mut *c)
                        .await?;
                    if r.rows_affected() > 0 {
                        sqlx::query(sql::UNLINK_EVERYWHERE)
                            .bind(d.to_string())
                            .execute(&mut *c)
                            .await?;
                        marked.push(d);
                    }
                }
                Ok(marked)
            })
        })
        .await
    }

    async fn deleting_blobs(&self) -> Result<Vec<(Digest, u64)>> {
        self.digest_sizes(sqlx::query(sql::DELETING_BLOBS)).await
    }

    async fn forget_blobs(&self, digests: &[Digest]) -> Result<u64> {
        let digests: Vec<String> = digests.iter().map(Digest::to_string).collect();
        self.write(Statements::Several, move |c| {
            Box::pin(async move {
                let mut n = 0;
                for d in digests {
                    n += sqlx::query(sql::FORGET_BLOB)
                        .bind(d)
                        .execute(&mut *c)
                        .await?
                        .rows_affected();
                }
                Ok(n)
            })
        })
        .await
    }

    async fn prune_links(&self, cutoff: i64) -> Result<u64> {
        // It removes repositories: a kept empty list would say one still exists.
        self.write_touching(Touches::Resolutions, Statements::Several, move |c| {
            Box::pin(async move {
                let links = sqlx::query(sql::PRUNE_LINKS)
                    .bind(cutoff)
                    .execute(&mut *c)
                    .await?
                    .rows_affected();
                sqlx::query(sql::PRUNE_REPOS)
                    .bind(cutoff)
                    .execute(&mut *c)
                    .await?;
                Ok(links)
            })
        })
        .await
    }

    async fn blob_record(&self, digest: &Digest) -> Result<Option<u64>> {
        sqlx::query(sql::BLOB_RECORD)
            .bind(digest.to_string())
            .fetch_optional(&self.reader)
            .await?
            .map(|r| u(&r, 0))
            .transpose()
    }

    async fn blob_live(&self, digest: &Digest) -> Result<bool> {
        Ok(sqlx::query(sql::BLOB_LIVE)
            .bind(digest.to_string())
            .fetch_optional(&self.reader)
            .await?
            .is_some())
    }

    async fn blob_records(&self) -> Result<Vec<(Digest, u64)>> {
        self.digest_sizes(sqlx::query(sql::BLOB_RECORDS)).await
    }

    async fn stale_uploads(&self, before: i64) -> Result<Vec<UploadRecord>> {
        let rows = sqlx::query(sql::STALE_UPLOADS)
            .bind(before)
            .fetch_all(&self.reader)
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in &rows {
            if let UploadState::Open(rec) = upload_row(row)? {
                out.push(rec);
            }
        }
        Ok(out)
    }

    async fn forget_ended_uploads(&self, before: i64) -> Result<u64> {
        self.write(Statements::One, move |c| {
            Box::pin(async move {
                Ok(sqlx::query(sql::FORGET_ENDED_UPLOADS)
                    .bind(before)
                    .execute(c)
                    .await?
                    .rows_affected())
            })
        })
        .await
    }

    async fn record_pulls(&self, pulls: &[(RepoName, Digest, i64)]) -> Result<()> {
        if pulls.is_empty() {
            return Ok(());
        }
        let pulls: Vec<(String, String, i64)> = pulls
            .iter()
            .map(|(r, d, t)| (r.to_string(), d.to_string(), *t))
            .collect();
        self.write(Statements::Several, move |c| {
            Box::pin(async move {
                for (repo, digest, at) in pulls {
                    sqlx::query(sql::RECORD_PULL)
                        .bind(repo)
                        .bind(digest)
                        .bind(at)
                        .execute(&mut *c)
                        .await?;
                }
                Ok(())
            })
        })
        .await
    }

    async fn repository(&self, repo: &RepoName) -> Result<Option<RepoContents>> {
        if !self.repo_exists(repo).await? {
            return Ok(None);
        }
        let mut out = RepoContents::default();
        for r in sqlx::query(sql::REPO_MANIFESTS)
            .bind(repo.as_str())
            .fetch_all(&self.reader)
            .await?
        {
            out.manifests.push(ManifestInfo {
                digest: digest_col(&r, "digest")?,
                media_type: r.try_get("media_type")?,
                size: u(&r, 2)?,
                subject: opt_digest_col(&r, "subject")?,
                pushed_at: r.try_get("pushed_at")?,
                pulled_at: r.try_get("pulled_at")?,
            });
        }
        for r in sqlx::query(sql::REPO_REFS)
            .bind(repo.as_str())
            .fetch_all(&self.reader)
            .await?
        {
            let size: Option<i64> = r.try_get(2)?;
            out.refs.push((
                digest_col(&r, "manifest")?,
                digest_col(&r, "target")?,
                size.map(|s| s.max(0) as u64),
            ));
        }
        for r in sqlx::query(sql::REPO_TAGS)
            .bind(repo.as_str())
            .fetch_all(&self.reader)
            .await?
        {
            out.tags.push(TagInfo {
                name: r.try_get("name")?,
                digest: digest_col(&r, "digest")?,
                updated_at: r.try_get("updated_at")?,
            });
        }
        Ok(Some(out))
    }

    async fn delete_tag_at(&self, repo: &RepoName, tag: &Tag, digest: &Digest) -> Result<bool> {
        self.changes(
            Touches::Resolutions,
            sql::DELETE_TAG_AT,
            vec![repo.to_string(), tag.to_string(), digest.to_string()],
        )
        .await
    }

    async fn delete_untagged_manifest(&self, repo: &RepoName, digest: &Digest) -> Result<bool> {
        self.remove_manifest(sql::DELETE_UNTAGGED, repo, digest)
            .await
    }

    async fn orphan_referrers(&self, before: i64) -> Result<Vec<(RepoName, Digest)>> {
        sqlx::query(sql::ORPHAN_REFERRERS)
            .bind(before)
            .fetch_all(&self.reader)
            .await?
            .iter()
            .map(|r| Ok((repo_col(r, "repo")?, digest_col(r, "digest")?)))
            .collect()
    }

    async fn usage(&self) -> Result<Usage> {
        use futures::TryStreamExt;
        let total = sqlx::query(sql::USAGE_TOTAL)
            .fetch_one(&self.reader)
            .await?;
        // Rows are streamed, not collected, and each repository's name is held once: with a
        // million repositories, every query's rows held at once took more memory than the
        // figures themselves.
        let mut repos: Vec<RepoUsage> = Vec::new();
        let mut rows = sqlx::query(sql::USAGE_REPOS).fetch(&self.reader);
        while let Some(r) = rows.try_next().await? {
            repos.push(RepoUsage {
                name: r.try_get(0)?,
                created_at: r.try_get(1)?,
                manifests: u(&r, 2)?,
                logical_bytes: u(&r, 3)?,
                last_push: r.try_get(4)?,
                last_pull: r.try_get(5)?,
                ..RepoUsage::default()
            });
        }
        drop(rows);
        repos.sort_unstable_by(|a, b| a.name.cmp(&b.name));
        fn find<'a>(
            repos: &'a mut [RepoUsage],
            r: &SqliteRow,
        ) -> Result<Option<&'a mut RepoUsage>> {
            let name: &str = r.try_get(0)?;
            Ok(repos
                .binary_search_by(|e| e.name.as_str().cmp(name))
                .ok()
                .map(|i| &mut repos[i]))
        }
        let mut rows = sqlx::query(sql::USAGE_LINKS).fetch(&self.reader);
        while let Some(r) = rows.try_next().await? {
            if let Some(e) = find(&mut repos, &r)? {
                e.unique_bytes = u(&r, 1)?;
                e.shared_bytes = u(&r, 2)?;
                e.blobs = u(&r, 3)?;
            }
        }
        drop(rows);
        let mut rows = sqlx::query(sql::USAGE_REFS).fetch(&self.reader);
        while let Some(r) = rows.try_next().await? {
            if let Some(e) = find(&mut repos, &r)? {
                e.logical_bytes += u(&r, 1)?;
            }
        }
        drop(rows);
        let mut rows = sqlx::query(sql::USAGE_TAGS).fetch(&self.reader);
        while let Some(r) = rows.try_next().await? {
            if let Some(e) = find(&mut repos, &r)? {
                e.tags = u(&r, 1)?;
            }
        }
        drop(rows);
        Ok(Usage {
            physical_bytes: u(&total, 0)?,
            blobs: u(&total, 1)?,
            logical_bytes: repos.iter().map(|r| r.logical_bytes).sum(),
            repositories: repos,
        })
    }

    async fn secret(&self, name: &str, candidate: &str) -> Result<String> {
        // Read first: at every start but the first the secret exists, and a write would cost
        // a transaction on the start-up path.
        let stored = || async {
            let row = sqlx::query(sql::SECRET)
                .bind(name)
                .fetch_optional(&self.reader)
                .await?;
            row.map(|r| r.try_get::<String, _>(0)).transpose()
        };
        if let Some(v) = stored().await? {
            return Ok(v);
        }
        let (n, v) = (name.to_owned(), candidate.to_owned());
        self.write(Statements::One, move |c| {
            Box::pin(async move {
                sqlx::query(sql::INSERT_SECRET)
                    .bind(n)
                    .bind(v)
                    .bind(crate::now_millis())
                    .execute(c)
                    .await?;
                Ok(())
            })
        })
        .await?;
        // Another node may have stored its candidate first: that one is the secret.
        stored().await?.ok_or_else(|| {
            MetaError::corrupt(format!("secret {name} vanished after it was stored"))
        })
    }
}

async fn end_upload(c: &mut SqliteConnection, s: &UploadRecord) -> Result<bool> {
    let r = sqlx::query(sql::END_UPLOAD)
        .bind(s.id.as_str())
        .bind(s.repo.as_str())
        .bind(i(s.offset))
        .bind(s.created_at)
        .bind(crate::now_millis())
        .execute(c)
        .await?;
    Ok(r.rows_affected() > 0)
}

#[cfg(test)]
mod tests {
    /// The contract, one test per promise, each on a new database.
    mod contract {
        crate::meta_contract_tests!(async {
            let dir = tempfile::tempdir().expect("tempdir");
            let meta = crate::sqlite::SqliteMeta::open(&dir.path().join("meta.db"))
                .await
                .expect("open");
            (Box::new(meta), dir)
        });
    }

    /// A new database is made with the migrations and reopens with nothing applied twice.
    #[tokio::test]
    async fn a_new_database_is_migrated_and_reopens() {
        use crate::MetaStore;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("meta.db");
        let repo: berth_oci::RepoName = "r".parse().unwrap();
        let d = berth_oci::Digest::sha256(b"x");
        {
            let meta = super::SqliteMeta::open(&path).await.unwrap();
            meta.link_blob(&repo, &d, 1).await.unwrap();
        }
        let meta = super::SqliteMeta::open(&path).await.unwrap();
        assert_eq!(meta.linked_blob(&repo, &d).await.unwrap(), Some(1));
    }

    /// A second open of a database that is served already is refused, and says why; the
    /// first's end frees it.
    #[tokio::test]
    async fn one_process_serves_a_database() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("meta.db");
        let first = super::SqliteMeta::open(&path).await.unwrap();
        let e = super::SqliteMeta::open(&path).await.err().expect("refused");
        assert!(e.to_string().contains("in use by another process"), "{e}");
        drop(first);
        super::SqliteMeta::open(&path).await.unwrap();
    }

    /// A write-ahead log whose database is gone is not replayed into a new database: the
    /// start is refused, and says why.
    #[tokio::test]
    async fn a_log_without_its_database_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("meta.db-wal"),
            b"frames of another database",
        )
        .unwrap();
        let e = super::SqliteMeta::open(&dir.path().join("meta.db"))
            .await
            .err()
            .expect("refused");
        assert!(e.to_string().contains("write-ahead log"), "{e}");
        assert!(!dir.path().join("meta.db").exists());
    }

    /// Group commit: a write that fails among concurrent ones rolls back alone.
    #[tokio::test]
    async fn a_failing_write_fails_alone() {
        use crate::MetaStore;
        let dir = tempfile::tempdir().unwrap();
        let meta = super::SqliteMeta::open(&dir.path().join("meta.db"))
            .await
            .unwrap();
        let repo: berth_oci::RepoName = "r".parse().unwrap();
        let digests: Vec<berth_oci::Digest> = (0..64u32)
            .map(|n| berth_oci::Digest::sha256(&n.to_be_bytes()))
            .collect();
        let links = futures::future::join_all(digests.iter().map(|d| meta.link_blob(&repo, d, 4)));
        // Two rows with one primary key: the second insert fails inside the write.
        let failing = meta.write(super::Statements::Several, |c| {
            Box::pin(async move {
                for _ in 0..2 {
                    sqlx::query(
                        "INSERT INTO secrets (name, value, created_at) VALUES ('k', 'v', 0)",
                    )
                    .execute(&mut *c)
                    .await?;
                }
                Ok(())
            })
        });
        let (links, failing) = futures::join!(links, failing);
        assert!(failing.is_err(), "a duplicate key is refused");
        for (d, r) in digests.iter().zip(links) {
            r.unwrap();
            assert_eq!(meta.linked_blob(&repo, d).await.unwrap(), Some(4));
        }
        // Its first insert was rolled back with it.
        assert_eq!(meta.secret("k", "fresh").await.unwrap(), "fresh");
    }
}
