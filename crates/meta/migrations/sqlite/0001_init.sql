-- The registry's facts. Portable SQL: the PostgreSQL schema is this file with BIGINT/TEXT
-- unchanged and `COLLATE "C"` on sorted name columns (SQLite's default collation is bytewise).
-- Timestamps are Unix milliseconds.

CREATE TABLE repositories (
    name        TEXT PRIMARY KEY,
    created_at  BIGINT NOT NULL
);

-- Every blob the registry holds, once, whatever the number of repositories using it.
CREATE TABLE blobs (
    digest      TEXT PRIMARY KEY,
    size        BIGINT NOT NULL,
    created_at  BIGINT NOT NULL
);

-- Which repository may see which blob: pushed or mounted there, or a manifest stored there.
CREATE TABLE repo_blobs (
    repo        TEXT NOT NULL,
    digest      TEXT NOT NULL,
    linked_at   BIGINT NOT NULL,
    PRIMARY KEY (repo, digest)
);
CREATE INDEX repo_blobs_digest ON repo_blobs (digest);

CREATE TABLE manifests (
    repo              TEXT NOT NULL,
    digest            TEXT NOT NULL,
    media_type        TEXT NOT NULL,
    size              BIGINT NOT NULL,
    -- artifactType as a referrers listing shows it (the config media type when absent).
    artifact_type     TEXT,
    subject           TEXT,
    config_media_type TEXT,
    annotations       TEXT,
    pushed_at         BIGINT NOT NULL,
    PRIMARY KEY (repo, digest)
);
CREATE INDEX manifests_subject ON manifests (repo, subject);

-- What each manifest references (config, layers, child manifests): the GC mark set.
CREATE TABLE manifest_refs (
    repo        TEXT NOT NULL,
    manifest    TEXT NOT NULL,
    target      TEXT NOT NULL,
    PRIMARY KEY (repo, manifest, target)
);
CREATE INDEX manifest_refs_target ON manifest_refs (target);

CREATE TABLE tags (
    repo        TEXT NOT NULL,
    name        TEXT NOT NULL,
    digest      TEXT NOT NULL,
    updated_at  BIGINT NOT NULL,
    PRIMARY KEY (repo, name)
);
CREATE INDEX tags_digest ON tags (repo, digest);

-- Upload sessions: where each stands, and the hash midstate to continue from.
CREATE TABLE uploads (
    id          TEXT PRIMARY KEY,
    repo        TEXT NOT NULL,
    offset_bytes BIGINT NOT NULL,
    hash_state  TEXT,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL
);
