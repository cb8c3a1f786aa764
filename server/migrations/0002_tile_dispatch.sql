-- Where each tile's latest task sits in the tasks topic and how often it was
-- sent, so the master's deadlines and retry limit survive its restart.
ALTER TABLE tiles ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0;
ALTER TABLE tiles ADD COLUMN task_partition INTEGER;
ALTER TABLE tiles ADD COLUMN task_offset INTEGER;
