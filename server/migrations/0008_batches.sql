-- Batches: many images submitted together with the same operations. A job
-- may belong to one; deleting a batch deletes its jobs (done by the server,
-- which also removes their files).
CREATE TABLE batches (
    id TEXT PRIMARY KEY,
    created_at INTEGER NOT NULL
);
ALTER TABLE jobs ADD COLUMN batch_id TEXT REFERENCES batches (id);
CREATE INDEX jobs_by_batch ON jobs (batch_id) WHERE batch_id IS NOT NULL;
