-- Upload sessions are recorded only once they hold bytes (an upload id proves by itself which
-- repository it was opened for), and a session that ended stays as a tombstone, so that its
-- id is refused afterwards, until GC expires it.
ALTER TABLE uploads ADD COLUMN ended_at BIGINT;

-- Server-wide secrets (the key upload ids are signed with), made once and shared by every
-- node on the same database.
CREATE TABLE secrets (
    name        TEXT PRIMARY KEY,
    value       TEXT NOT NULL,
    created_at  BIGINT NOT NULL
);
