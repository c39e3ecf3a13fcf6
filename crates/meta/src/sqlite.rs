//! The embedded SQLite backend, the default: one file next to the blobs, nothing to run.
//!
//! SQLite lets one writer in at a time, so writes go through a pool of one connection (no
//! lock upgrades, no `SQLITE_BUSY` between our own writers) and reads through a pool of
//! several read-only connections, which WAL mode lets run beside the writer. `synchronous =
//! FULL`: a transaction that returned is on disk, which is what an acknowledged push promises.

use crate::sql;
use crate::{
    ManifestRecord, MetaError, MetaStore, NewManifest, Page, PutRefusal, Result, UploadRecord,
};
use async_trait::async_trait;
use berth_oci::{Digest, Reference, RepoName, Tag, UploadId};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::Row;
use std::path::Path;
use std::time::Duration;

pub struct SqliteMeta {
    writer: SqlitePool,
    reader: SqlitePool,
}

impl SqliteMeta {
    /// Opens (creating and migrating if needed) the database file at `path`.
    pub async fn open(path: &Path) -> Result<SqliteMeta> {
        let base = SqliteConnectOptions::new()
            .filename(path)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(30))
            .foreign_keys(false);
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(base.clone().create_if_missing(true))
            .await?;
        sqlx::migrate!("./migrations/sqlite").run(&writer).await?;
        let reader = SqlitePoolOptions::new()
            .max_connections(8)
            .connect_with(base.read_only(true))
            .await?;
        Ok(SqliteMeta { writer, reader })
    }

    /// Opens the database named by a `sqlite://PATH` URL.
    pub async fn open_url(url: &str) -> Result<SqliteMeta> {
        let path = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))
            .ok_or_else(|| MetaError::Corrupt(format!("not a sqlite URL: {url}")))?;
        SqliteMeta::open(Path::new(path)).await
    }
}

fn i(v: u64) -> i64 {
    v as i64
}

fn digest_col(row: &SqliteRow, col: &str) -> Result<Digest> {
    let s: String = row.try_get(col)?;
    s.parse()
        .map_err(|e| MetaError::Corrupt(format!("{col}: {e}")))
}

fn manifest_row(row: &SqliteRow) -> Result<ManifestRecord> {
    let subject: Option<String> = row.try_get("subject")?;
    Ok(ManifestRecord {
        digest: digest_col(row, "digest")?,
        media_type: row.try_get("media_type")?,
        size: row.try_get::<i64, _>("size")? as u64,
        artifact_type: row.try_get("artifact_type")?,
        subject: subject
            .map(|s| s.parse())
            .transpose()
            .map_err(|e| MetaError::Corrupt(format!("subject: {e}")))?,
        config_media_type: row.try_get("config_media_type")?,
        annotations: row.try_get("annotations")?,
        pushed_at: row.try_get("pushed_at")?,
    })
}

fn upload_row(row: &SqliteRow) -> Result<UploadRecord> {
    let id: String = row.try_get("id")?;
    let repo: String = row.try_get("repo")?;
    Ok(UploadRecord {
        id: id
            .parse()
            .map_err(|e| MetaError::Corrupt(format!("upload id: {e}")))?,
        repo: repo
            .parse()
            .map_err(|e| MetaError::Corrupt(format!("upload repo: {e}")))?,
        offset: row.try_get::<i64, _>("offset_bytes")? as u64,
        hash_state: row.try_get("hash_state")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

/// `LIMIT` for a page: SQLite and PostgreSQL both take -1 / NULL differently, so "all" is
/// spelled as the largest count.
fn limit(p: &Page<'_>) -> i64 {
    p.limit
        .map(|l| l.min(i64::MAX as u64) as i64)
        .unwrap_or(i64::MAX)
}

#[async_trait]
impl MetaStore for SqliteMeta {
    async fn link_blob(&self, repo: &RepoName, digest: &Digest, size: u64) -> Result<()> {
        let now = crate::now_millis();
        let mut tx = self.writer.begin().await?;
        sqlx::query(sql::INSERT_REPO)
            .bind(repo.as_str())
            .bind(now)
            .execute(&mut *tx)
            .await?;
        sqlx::query(sql::INSERT_BLOB)
            .bind(digest.to_string())
            .bind(i(size))
            .bind(now)
            .execute(&mut *tx)
            .await?;
        sqlx::query(sql::INSERT_LINK)
            .bind(repo.as_str())
            .bind(digest.to_string())
            .bind(now)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
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
        let r = sqlx::query(sql::DELETE_LINK)
            .bind(repo.as_str())
            .bind(digest.to_string())
            .execute(&self.writer)
            .await?;
        Ok(r.rows_affected() > 0)
    }

    async fn put_manifest(&self, m: &NewManifest) -> Result<Result<(), PutRefusal>> {
        let repo = m.repo.as_str();
        let rec = &m.record;
        let digest = rec.digest.to_string();
        let now = crate::now_millis();
        let mut tx = self.writer.begin().await?;
        for (d, declared) in &m.blobs {
            let row = sqlx::query(sql::LINKED_BLOB)
                .bind(repo)
                .bind(d.to_string())
                .fetch_optional(&mut *tx)
                .await?;
            match row {
                None => return Ok(Err(PutRefusal::BlobUnknown(d.clone()))),
                Some(r) => {
                    let stored = r.try_get::<i64, _>(0)? as u64;
                    if stored != *declared {
                        return Ok(Err(PutRefusal::SizeMismatch {
                            digest: d.clone(),
                            stored,
                            declared: *declared,
                        }));
                    }
                }
            }
        }
        for c in &m.children {
            let row = sqlx::query(sql::MANIFEST_EXISTS)
                .bind(repo)
                .bind(c.to_string())
                .fetch_optional(&mut *tx)
                .await?;
            if row.is_none() {
                return Ok(Err(PutRefusal::ManifestUnknown(c.clone())));
            }
        }
        sqlx::query(sql::INSERT_REPO)
            .bind(repo)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        sqlx::query(sql::INSERT_BLOB)
            .bind(&digest)
            .bind(i(rec.size))
            .bind(now)
            .execute(&mut *tx)
            .await?;
        sqlx::query(sql::INSERT_LINK)
            .bind(repo)
            .bind(&digest)
            .bind(now)
            .execute(&mut *tx)
            .await?;
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
        tx.commit().await?;
        Ok(Ok(()))
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
        let d = digest.to_string();
        let mut tx = self.writer.begin().await?;
        let r = sqlx::query(sql::DELETE_MANIFEST)
            .bind(repo.as_str())
            .bind(&d)
            .execute(&mut *tx)
            .await?;
        if r.rows_affected() == 0 {
            return Ok(false);
        }
        sqlx::query(sql::DELETE_TAGS_OF)
            .bind(repo.as_str())
            .bind(&d)
            .execute(&mut *tx)
            .await?;
        sqlx::query(sql::DELETE_REFS)
            .bind(repo.as_str())
            .bind(&d)
            .execute(&mut *tx)
            .await?;
        // The manifest's own bytes stop being visible in the repository with it.
        sqlx::query(sql::DELETE_LINK)
            .bind(repo.as_str())
            .bind(&d)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn delete_tag(&self, repo: &RepoName, tag: &Tag) -> Result<bool> {
        let r = sqlx::query(sql::DELETE_TAG)
            .bind(repo.as_str())
            .bind(tag.as_str())
            .execute(&self.writer)
            .await?;
        Ok(r.rows_affected() > 0)
    }

    async fn tags(&self, repo: &RepoName, page: Page<'_>) -> Result<Option<Vec<String>>> {
        let exists = sqlx::query(sql::REPO_EXISTS)
            .bind(repo.as_str())
            .fetch_optional(&self.reader)
            .await?;
        if exists.is_none() {
            return Ok(None);
        }
        let rows = sqlx::query(sql::TAGS)
            .bind(repo.as_str())
            .bind(page.after.unwrap_or(""))
            .bind(limit(&page))
            .fetch_all(&self.reader)
            .await?;
        Ok(Some(
            rows.iter()
                .map(|r| r.try_get(0))
                .collect::<Result<_, _>>()?,
        ))
    }

    async fn repositories(&self, page: Page<'_>) -> Result<Vec<String>> {
        let rows = sqlx::query(sql::REPOS)
            .bind(page.after.unwrap_or(""))
            .bind(limit(&page))
            .fetch_all(&self.reader)
            .await?;
        Ok(rows
            .iter()
            .map(|r| r.try_get(0))
            .collect::<Result<_, _>>()?)
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

    async fn create_upload(&self, u: &UploadRecord) -> Result<()> {
        sqlx::query(sql::INSERT_UPLOAD)
            .bind(u.id.as_str())
            .bind(u.repo.as_str())
            .bind(i(u.offset))
            .bind(&u.hash_state)
            .bind(u.created_at)
            .bind(u.updated_at)
            .execute(&self.writer)
            .await?;
        Ok(())
    }

    async fn upload(&self, id: &UploadId) -> Result<Option<UploadRecord>> {
        let row = sqlx::query(sql::UPLOAD)
            .bind(id.as_str())
            .fetch_optional(&self.reader)
            .await?;
        row.as_ref().map(upload_row).transpose()
    }

    async fn advance_upload(
        &self,
        id: &UploadId,
        from: u64,
        to: u64,
        hash_state: Option<&str>,
    ) -> Result<bool> {
        let r = sqlx::query(sql::ADVANCE_UPLOAD)
            .bind(id.as_str())
            .bind(i(from))
            .bind(i(to))
            .bind(hash_state)
            .bind(crate::now_millis())
            .execute(&self.writer)
            .await?;
        Ok(r.rows_affected() > 0)
    }

    async fn delete_upload(&self, id: &UploadId) -> Result<bool> {
        let r = sqlx::query(sql::DELETE_UPLOAD)
            .bind(id.as_str())
            .execute(&self.writer)
            .await?;
        Ok(r.rows_affected() > 0)
    }
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn sqlite_meta_keeps_the_contract() {
        let dir = tempfile::tempdir().unwrap();
        let meta = super::SqliteMeta::open(&dir.path().join("meta.db"))
            .await
            .unwrap();
        crate::testsuite::run(&meta).await;
    }
}
