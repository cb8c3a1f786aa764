-- The result cache: a job's key (hex SHA-256 of the input's bytes, the
-- operations and the output), and for a job answered from the cache, the
-- job whose result it shares.
ALTER TABLE jobs ADD COLUMN cache_key TEXT;
ALTER TABLE jobs ADD COLUMN cached_from TEXT;
CREATE INDEX jobs_by_cache_key ON jobs (cache_key) WHERE cache_key IS NOT NULL;
