-- The size of each tile's result as it came over the broker, for the job
-- page's throughput (MB/s) over the job's life.
ALTER TABLE tiles ADD COLUMN result_bytes INTEGER;
