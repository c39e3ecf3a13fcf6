-- The blob store's own progress of an upload session (its upload token, opaque here), saved
-- with the offset and the hash midstate after each append, so that any process continues
-- the session from the record alone. NULL: the store keeps none.
ALTER TABLE uploads ADD COLUMN progress BLOB;
