-- Garbage collection and accounting.
-- A blob being collected: marked (and unlinked everywhere) in the transaction that found it
-- unreferenced, forgotten once its bytes are gone. A push that stores it again clears the
-- mark in the transaction that links it.
ALTER TABLE blobs ADD COLUMN deleting_at BIGINT;
-- When a manifest was last pulled (a GET by tag or digest), written in batches.
ALTER TABLE manifests ADD COLUMN pulled_at BIGINT;
-- "Does any manifest anywhere have this digest?" is the collector's question.
CREATE INDEX manifests_digest ON manifests (digest);
CREATE INDEX uploads_updated ON uploads (updated_at);
