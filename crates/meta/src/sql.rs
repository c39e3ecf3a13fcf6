//! The SQL of the metadata store, in the dialect SQLite and PostgreSQL share: `$N`
//! placeholders, `ON CONFLICT … DO`, no `INSERT OR …`, no `RETURNING`-only tricks, no
//! engine-specific functions. Backends bind and run these texts.

pub const INSERT_REPO: &str =
    "INSERT INTO repositories (name, created_at) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING";
pub const INSERT_BLOB: &str = "INSERT INTO blobs (digest, size, created_at) VALUES ($1, $2, $3) ON CONFLICT (digest) DO NOTHING";
pub const INSERT_LINK: &str =
    "INSERT INTO repo_blobs (repo, digest, linked_at) VALUES ($1, $2, $3) ON CONFLICT (repo, digest) DO NOTHING";
pub const LINKED_BLOB: &str =
    "SELECT b.size FROM repo_blobs l JOIN blobs b ON b.digest = l.digest WHERE l.repo = $1 AND l.digest = $2";
pub const DELETE_LINK: &str = "DELETE FROM repo_blobs WHERE repo = $1 AND digest = $2";

pub const MANIFEST_EXISTS: &str = "SELECT 1 FROM manifests WHERE repo = $1 AND digest = $2";
pub const UPSERT_MANIFEST: &str = "INSERT INTO manifests \
    (repo, digest, media_type, size, artifact_type, subject, config_media_type, annotations, pushed_at) \
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
    ON CONFLICT (repo, digest) DO UPDATE SET media_type = excluded.media_type, size = excluded.size, \
    artifact_type = excluded.artifact_type, subject = excluded.subject, \
    config_media_type = excluded.config_media_type, annotations = excluded.annotations, \
    pushed_at = excluded.pushed_at";
pub const DELETE_REFS: &str = "DELETE FROM manifest_refs WHERE repo = $1 AND manifest = $2";
pub const INSERT_REF: &str =
    "INSERT INTO manifest_refs (repo, manifest, target) VALUES ($1, $2, $3) ON CONFLICT (repo, manifest, target) DO NOTHING";
pub const UPSERT_TAG: &str = "INSERT INTO tags (repo, name, digest, updated_at) VALUES ($1, $2, $3, $4) \
    ON CONFLICT (repo, name) DO UPDATE SET digest = excluded.digest, updated_at = excluded.updated_at";

macro_rules! manifest_columns {
    () => {
        "SELECT m.digest, m.media_type, m.size, m.artifact_type, m.subject, m.config_media_type, m.annotations, m.pushed_at "
    };
}

pub const MANIFEST_BY_DIGEST: &str = concat!(
    manifest_columns!(),
    "FROM manifests m WHERE m.repo = $1 AND m.digest = $2"
);
pub const MANIFEST_BY_TAG: &str = concat!(
    manifest_columns!(),
    "FROM tags t JOIN manifests m ON m.repo = t.repo AND m.digest = t.digest WHERE t.repo = $1 AND t.name = $2"
);
pub const REFERRERS: &str = concat!(
    manifest_columns!(),
    "FROM manifests m WHERE m.repo = $1 AND m.subject = $2 ORDER BY m.digest"
);
pub const REFERRERS_OF_TYPE: &str = concat!(
    manifest_columns!(),
    "FROM manifests m WHERE m.repo = $1 AND m.subject = $2 AND m.artifact_type = $3 ORDER BY m.digest"
);

pub const DELETE_MANIFEST: &str = "DELETE FROM manifests WHERE repo = $1 AND digest = $2";
pub const DELETE_TAGS_OF: &str = "DELETE FROM tags WHERE repo = $1 AND digest = $2";
pub const DELETE_TAG: &str = "DELETE FROM tags WHERE repo = $1 AND name = $2";
pub const REPO_EXISTS: &str = "SELECT 1 FROM repositories WHERE name = $1";

/// Tags after `$2` (pass '' for the first page), at most `$3`, joined by commas in one row
/// (NULL for none): tag and repository names cannot hold a comma, and one row crosses to
/// the database thread once where ten thousand rows would cross ten thousand times.
pub const TAGS: &str = "SELECT string_agg(name, ',' ORDER BY name) FROM \
    (SELECT name FROM tags WHERE repo = $1 AND name > $2 ORDER BY name LIMIT $3) AS page";
/// Repository names after `$1`, at most `$2`, joined as [`TAGS`] are.
pub const REPOS: &str = "SELECT string_agg(name, ',' ORDER BY name) FROM \
    (SELECT name FROM repositories WHERE name > $1 ORDER BY name LIMIT $2) AS page";

pub const UPLOAD: &str =
    "SELECT id, repo, offset_bytes, hash_state, created_at, updated_at, ended_at \
    FROM uploads WHERE id = $1";
/// Moves a session on from offset 0, recording it if it has no row yet.
pub const FIRST_ADVANCE: &str =
    "INSERT INTO uploads (id, repo, offset_bytes, hash_state, created_at, updated_at) \
    VALUES ($1, $2, $3, $4, $5, $6) \
    ON CONFLICT (id) DO UPDATE SET offset_bytes = excluded.offset_bytes, \
    hash_state = excluded.hash_state, updated_at = excluded.updated_at \
    WHERE uploads.offset_bytes = 0 AND uploads.ended_at IS NULL";
/// Moves a recorded open session on, only from offset `$2`.
pub const MOVE_UPLOAD: &str = "UPDATE uploads SET offset_bytes = $3, hash_state = $4, \
    updated_at = $5 WHERE id = $1 AND offset_bytes = $2 AND ended_at IS NULL";
/// Ends a session, recorded or not; changes nothing (no row counted) when it had ended.
pub const END_UPLOAD: &str =
    "INSERT INTO uploads (id, repo, offset_bytes, created_at, updated_at, ended_at) \
    VALUES ($1, $2, $3, $4, $5, $5) \
    ON CONFLICT (id) DO UPDATE SET ended_at = excluded.ended_at, hash_state = NULL, \
    updated_at = excluded.updated_at WHERE uploads.ended_at IS NULL";

pub const INSERT_SECRET: &str =
    "INSERT INTO secrets (name, value, created_at) VALUES ($1, $2, $3) \
    ON CONFLICT (name) DO NOTHING";
pub const SECRET: &str = "SELECT value FROM secrets WHERE name = $1";
