//! The SQL of the metadata store, in the dialect SQLite and PostgreSQL share: `$N`
//! placeholders, `ON CONFLICT … DO`, no `INSERT OR …`, no `RETURNING`-only tricks, no
//! engine-specific functions. Backends bind and run these texts. The `*_SCRIPT` texts hold
//! several statements and are SQLite's alone (PostgreSQL prepares one statement per query).

/// Links a blob in a repository, as one script ($1 repository, $2 digest, $3 size, $4 now)
/// that the database thread runs in one trip where three statements would wait for three
/// (SQLite runs scripts with numbered binds; PostgreSQL would want one statement of CTEs):
/// - records the repository if new;
/// - records the blob; storing it again clears a collection's mark (see `mark_deleting`);
/// - links it; linking it again renews the link, which the collector's grace period counts
///   from (a client pushing a layer the repository already has is about to reference it).
pub const LINK_SCRIPT: &str = "\
    INSERT INTO repositories (name, created_at) VALUES ($1, $4) ON CONFLICT (name) DO NOTHING; \
    INSERT INTO blobs (digest, size, created_at) VALUES ($2, $3, $4) \
    ON CONFLICT (digest) DO UPDATE SET deleting_at = NULL WHERE blobs.deleting_at IS NOT NULL; \
    INSERT INTO repo_blobs (repo, digest, linked_at) VALUES ($1, $2, $4) \
    ON CONFLICT (repo, digest) DO UPDATE SET linked_at = excluded.linked_at";
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

/// Whether repository `$1` exists, and its tags after `$2` (pass '' for the first page), at
/// most `$3`, joined by commas (NULL for none) — one row, one trip to the database thread,
/// where ten thousand rows would cross ten thousand times. Tag and repository names cannot
/// hold a comma. The aggregate is not asked to sort (that costs a temporary b-tree as big as
/// the page): it reads the index in order, and [`split_names`](super) checks that it did.
pub const TAGS: &str = "SELECT EXISTS (SELECT 1 FROM repositories WHERE name = $1), \
    (SELECT string_agg(name, ',') FROM \
    (SELECT name FROM tags WHERE repo = $1 AND name > $2 ORDER BY name LIMIT $3) AS page)";
/// [`TAGS`] without a page limit: no subquery, half the work for a whole list.
pub const ALL_TAGS: &str = "SELECT EXISTS (SELECT 1 FROM repositories WHERE name = $1), \
    (SELECT string_agg(name, ',') FROM tags WHERE repo = $1 AND name > $2)";
/// Repository names after `$1`, at most `$2`, joined as [`TAGS`] are.
pub const REPOS: &str = "SELECT string_agg(name, ',') FROM \
    (SELECT name FROM repositories WHERE name > $1 ORDER BY name LIMIT $2) AS page";

pub const UPLOAD: &str =
    "SELECT id, repo, offset_bytes, hash_state, progress, created_at, updated_at, ended_at \
    FROM uploads WHERE id = $1";
/// Moves a session on from offset 0, recording it if it has no row yet.
pub const FIRST_ADVANCE: &str =
    "INSERT INTO uploads (id, repo, offset_bytes, hash_state, progress, created_at, updated_at) \
    VALUES ($1, $2, $3, $4, $5, $6, $7) \
    ON CONFLICT (id) DO UPDATE SET offset_bytes = excluded.offset_bytes, \
    hash_state = excluded.hash_state, progress = excluded.progress, \
    updated_at = excluded.updated_at \
    WHERE uploads.offset_bytes = 0 AND uploads.ended_at IS NULL";
/// Moves a recorded open session on, only from offset `$2`.
pub const MOVE_UPLOAD: &str = "UPDATE uploads SET offset_bytes = $3, hash_state = $4, \
    progress = $5, updated_at = $6 WHERE id = $1 AND offset_bytes = $2 AND ended_at IS NULL";
/// Ends a session, recorded or not; changes nothing (no row counted) when it had ended.
pub const END_UPLOAD: &str =
    "INSERT INTO uploads (id, repo, offset_bytes, created_at, updated_at, ended_at) \
    VALUES ($1, $2, $3, $4, $5, $5) \
    ON CONFLICT (id) DO UPDATE SET ended_at = excluded.ended_at, hash_state = NULL, progress = NULL, \
    updated_at = excluded.updated_at WHERE uploads.ended_at IS NULL";

pub const INSERT_SECRET: &str =
    "INSERT INTO secrets (name, value, created_at) VALUES ($1, $2, $3) \
    ON CONFLICT (name) DO NOTHING";
pub const SECRET: &str = "SELECT value FROM secrets WHERE name = $1";

/// The condition that makes blob `b` garbage at cutoff `$1` (see `garbage_blobs`).
macro_rules! garbage {
    () => {
        "b.deleting_at IS NULL AND b.created_at < $1 \
        AND NOT EXISTS (SELECT 1 FROM manifest_refs r WHERE r.target = b.digest) \
        AND NOT EXISTS (SELECT 1 FROM manifests m WHERE m.digest = b.digest) \
        AND NOT EXISTS (SELECT 1 FROM repo_blobs l WHERE l.digest = b.digest AND l.linked_at >= $1)"
    };
}

pub const GARBAGE_BLOBS: &str = concat!(
    "SELECT b.digest, b.size FROM blobs b WHERE ",
    garbage!(),
    " ORDER BY b.digest"
);
/// Marks blob `$2` deleting at time `$3` if it is garbage at cutoff `$1`.
pub const MARK_DELETING: &str = concat!(
    "UPDATE blobs SET deleting_at = $3 WHERE digest = $2 AND digest IN (SELECT b.digest FROM blobs b WHERE b.digest = $2 AND ",
    garbage!(),
    ")"
);
pub const UNLINK_EVERYWHERE: &str = "DELETE FROM repo_blobs WHERE digest = $1";
pub const DELETING_BLOBS: &str =
    "SELECT digest, size FROM blobs WHERE deleting_at IS NOT NULL ORDER BY digest";
pub const FORGET_BLOB: &str = "DELETE FROM blobs WHERE digest = $1 AND deleting_at IS NOT NULL";
pub const PRUNE_LINKS: &str = "DELETE FROM repo_blobs WHERE linked_at < $1 \
    AND NOT EXISTS (SELECT 1 FROM manifest_refs r WHERE r.repo = repo_blobs.repo AND r.target = repo_blobs.digest) \
    AND NOT EXISTS (SELECT 1 FROM manifests m WHERE m.repo = repo_blobs.repo AND m.digest = repo_blobs.digest)";
/// Repositories left with nothing (no link, manifest or tag), created before `$1`.
pub const PRUNE_REPOS: &str = "DELETE FROM repositories WHERE created_at < $1 \
    AND NOT EXISTS (SELECT 1 FROM repo_blobs l WHERE l.repo = repositories.name) \
    AND NOT EXISTS (SELECT 1 FROM manifests m WHERE m.repo = repositories.name) \
    AND NOT EXISTS (SELECT 1 FROM tags t WHERE t.repo = repositories.name)";
pub const BLOB_RECORD: &str = "SELECT size FROM blobs WHERE digest = $1";
pub const BLOB_LIVE: &str = "SELECT 1 FROM blobs WHERE digest = $1 AND deleting_at IS NULL";
pub const BLOB_RECORDS: &str = "SELECT digest, size FROM blobs WHERE deleting_at IS NULL";

pub const STALE_UPLOADS: &str =
    "SELECT id, repo, offset_bytes, hash_state, progress, created_at, updated_at, ended_at \
    FROM uploads WHERE ended_at IS NULL AND updated_at < $1";
pub const FORGET_ENDED_UPLOADS: &str =
    "DELETE FROM uploads WHERE ended_at IS NOT NULL AND created_at < $1";

pub const RECORD_PULL: &str = "UPDATE manifests SET pulled_at = $3 \
    WHERE repo = $1 AND digest = $2 AND (pulled_at IS NULL OR pulled_at < $3)";

pub const REPO_MANIFESTS: &str =
    "SELECT digest, media_type, size, subject, pushed_at, pulled_at FROM manifests WHERE repo = $1";
pub const REPO_REFS: &str = "SELECT r.manifest, r.target, b.size FROM manifest_refs r \
    LEFT JOIN blobs b ON b.digest = r.target WHERE r.repo = $1";
pub const REPO_TAGS: &str = "SELECT name, digest, updated_at FROM tags WHERE repo = $1";

/// Usage: bytes and blobs stored.
pub const USAGE_TOTAL: &str =
    "SELECT COALESCE(SUM(size), 0), COUNT(*) FROM blobs WHERE deleting_at IS NULL";
/// Usage per repository: every repository, its creation time, manifests, last push and pull.
pub const USAGE_REPOS: &str = "SELECT p.name, p.created_at, COUNT(m.digest), \
    COALESCE(SUM(m.size), 0), MAX(m.pushed_at), MAX(m.pulled_at) \
    FROM repositories p LEFT JOIN manifests m ON m.repo = p.name GROUP BY p.name, p.created_at";
/// Usage per repository: bytes linked here only and linked elsewhere too.
pub const USAGE_LINKS: &str = "SELECT l.repo, \
    COALESCE(SUM(CASE WHEN c.n = 1 THEN b.size ELSE 0 END), 0), \
    COALESCE(SUM(CASE WHEN c.n > 1 THEN b.size ELSE 0 END), 0), COUNT(*) \
    FROM repo_blobs l JOIN blobs b ON b.digest = l.digest \
    JOIN (SELECT digest, COUNT(*) AS n FROM repo_blobs GROUP BY digest) c ON c.digest = l.digest \
    GROUP BY l.repo";
/// Usage per repository: bytes manifests reference, other than child manifests (which are
/// counted as manifests).
pub const USAGE_REFS: &str = "SELECT r.repo, COALESCE(SUM(b.size), 0) FROM manifest_refs r \
    JOIN blobs b ON b.digest = r.target \
    WHERE NOT EXISTS (SELECT 1 FROM manifests c WHERE c.repo = r.repo AND c.digest = r.target) \
    GROUP BY r.repo";
pub const USAGE_TAGS: &str = "SELECT repo, COUNT(*) FROM tags GROUP BY repo";

pub const DELETE_TAG_AT: &str = "DELETE FROM tags WHERE repo = $1 AND name = $2 AND digest = $3";
/// Deletes manifest `$2` of `$1` if no tag points at it and no manifest references it.
pub const DELETE_UNTAGGED: &str = "DELETE FROM manifests WHERE repo = $1 AND digest = $2 \
    AND NOT EXISTS (SELECT 1 FROM tags t WHERE t.repo = $1 AND t.digest = $2) \
    AND NOT EXISTS (SELECT 1 FROM manifest_refs r WHERE r.repo = $1 AND r.target = $2)";
pub const ORPHAN_REFERRERS: &str = "SELECT m.repo, m.digest FROM manifests m \
    WHERE m.subject IS NOT NULL AND m.pushed_at < $1 \
    AND NOT EXISTS (SELECT 1 FROM manifests s WHERE s.repo = m.repo AND s.digest = m.subject) \
    ORDER BY m.repo, m.digest";
