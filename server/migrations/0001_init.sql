-- Jobs, their tiles, and the workers seen through heartbeats.
-- Times are milliseconds since the Unix epoch.

CREATE TABLE jobs (
    id           TEXT PRIMARY KEY NOT NULL,
    filename     TEXT NOT NULL,
    status       TEXT NOT NULL CHECK (status IN ('queued', 'running', 'done', 'failed', 'cancelled')),
    width        INTEGER NOT NULL,
    height       INTEGER NOT NULL,
    tile_size    INTEGER NOT NULL,
    ops          TEXT NOT NULL, -- JSON array of operations
    tiles_total  INTEGER NOT NULL,
    tiles_done   INTEGER NOT NULL DEFAULT 0,
    input_bytes  INTEGER NOT NULL,
    error        TEXT,
    created_at   INTEGER NOT NULL,
    finished_at  INTEGER
);

CREATE INDEX jobs_created_at ON jobs (created_at DESC);

CREATE TABLE tiles (
    job_id      TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    idx         INTEGER NOT NULL,
    x           INTEGER NOT NULL,
    y           INTEGER NOT NULL,
    width       INTEGER NOT NULL,
    height      INTEGER NOT NULL,
    status      TEXT NOT NULL CHECK (status IN ('queued', 'done')),
    worker_id   TEXT,
    elapsed_ms  REAL,
    done_at     INTEGER,
    PRIMARY KEY (job_id, idx)
) WITHOUT ROWID;

CREATE TABLE workers (
    id            TEXT PRIMARY KEY NOT NULL,
    host          TEXT NOT NULL,
    pid           INTEGER NOT NULL,
    first_seen    INTEGER NOT NULL,
    last_seen     INTEGER NOT NULL,
    current_tile  TEXT,
    tiles_done    INTEGER NOT NULL DEFAULT 0
);
