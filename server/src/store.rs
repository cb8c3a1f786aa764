//! The SQLite store: the only module with SQL in it.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use app::api::{Job, JobStatus, Output, Stats, Tile, TileStatus, Worker, WorkerStatus};
use pipeline::wire::Heartbeat;
use pipeline::{Operation, Rect};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{FromRow, SqlitePool};

#[derive(Clone)]
pub struct Store {
    pool: SqlitePool,
}

/// A job as it is first recorded.
pub struct NewJob<'a> {
    pub id: &'a str,
    pub filename: &'a str,
    pub width: u32,
    pub height: u32,
    pub tile_size: u32,
    pub ops: &'a [Operation],
    pub tiles_total: u32,
    pub input_bytes: u64,
    pub created_at: i64,
    pub output: Output,
    pub cache_key: Option<&'a str>,
    pub batch_id: Option<&'a str>,
}

#[derive(FromRow)]
struct TileRow {
    pub idx: u32,
    pub x: u32,
    pub y: u32,
    pub width: u32,
    pub height: u32,
    pub status: TileStatus,
    pub worker_id: Option<String>,
    pub elapsed_ms: Option<f64>,
    pub done_at: Option<i64>,
    pub attempts: u32,
    pub result_bytes: Option<i64>,
}

/// A tile not done yet, and where its latest task was published.
#[derive(Debug, Clone, PartialEq, FromRow)]
pub struct PendingTile {
    pub idx: u32,
    pub attempts: u32,
    pub task_partition: Option<i32>,
    pub task_offset: Option<i64>,
}

#[derive(FromRow)]
struct JobRow {
    id: String,
    filename: String,
    status: JobStatus,
    width: u32,
    height: u32,
    tile_size: u32,
    ops: String,
    tiles_total: u32,
    tiles_done: u32,
    input_bytes: i64,
    error: Option<String>,
    created_at: i64,
    finished_at: Option<i64>,
    stages: Option<String>,
    output: String,
    cached_from: Option<String>,
    batch_id: Option<String>,
}

impl TryFrom<JobRow> for Job {
    type Error = sqlx::Error;

    fn try_from(r: JobRow) -> Result<Self, Self::Error> {
        let decode = |e: Box<dyn std::error::Error + Send + Sync>| sqlx::Error::Decode(e);
        Ok(Job {
            status: r.status,
            ops: serde_json::from_str(&r.ops).map_err(|e| decode(e.into()))?,
            id: r.id,
            filename: r.filename,
            width: r.width,
            height: r.height,
            tile_size: r.tile_size,
            tiles_total: r.tiles_total,
            tiles_done: r.tiles_done,
            input_bytes: r.input_bytes as u64,
            error: r.error,
            created_at: r.created_at,
            finished_at: r.finished_at,
            stages: r.stages.as_deref().map(serde_json::from_str).transpose().map_err(|e| decode(e.into()))?,
            output: serde_json::from_str(&r.output).map_err(|e| decode(e.into()))?,
            cached_from: r.cached_from,
            batch_id: r.batch_id,
        })
    }
}

impl From<TileRow> for Tile {
    fn from(r: TileRow) -> Self {
        Tile {
            idx: r.idx,
            x: r.x,
            y: r.y,
            width: r.width,
            height: r.height,
            status: r.status,
            worker_id: r.worker_id,
            elapsed_ms: r.elapsed_ms,
            done_at: r.done_at,
            attempts: r.attempts,
            result_bytes: r.result_bytes.and_then(|b| u64::try_from(b).ok()),
        }
    }
}

#[derive(FromRow)]
struct WorkerRow {
    id: String,
    host: String,
    pid: u32,
    last_seen: i64,
    current_tile: Option<String>,
    tiles_done: i64,
    cpu_percent: Option<f32>,
    rss_bytes: Option<i64>,
    runtime: Option<String>,
}

impl WorkerRow {
    fn into_worker(self, now: i64, timeout: Duration) -> Worker {
        let alive = now - self.last_seen <= timeout.as_millis() as i64;
        Worker {
            id: self.id,
            host: self.host,
            pid: self.pid,
            status: if alive { WorkerStatus::Alive } else { WorkerStatus::Lost },
            last_seen: self.last_seen,
            current_tile: self.current_tile,
            tiles_done: self.tiles_done as u64,
            cpu_percent: self.cpu_percent,
            rss_bytes: self.rss_bytes.and_then(|b| u64::try_from(b).ok()),
            runtime: self.runtime,
        }
    }
}

const WORKER_COLUMNS: &str = "id, host, pid, last_seen, current_tile, tiles_done, cpu_percent, rss_bytes, runtime";

const JOB_COLUMNS: &str = "id, filename, status, width, height, tile_size, ops, tiles_total, \
                           tiles_done, input_bytes, error, created_at, finished_at, stages, output, \
                           cached_from, batch_id";

impl Store {
    /// Opens (creating if needed) the database file and brings its schema up to date.
    pub async fn open(path: &Path) -> anyhow::Result<Self> {
        if let Some(dir) = path.parent() {
            tokio::fs::create_dir_all(dir).await?;
        }
        let options = SqliteConnectOptions::from_str("sqlite:")?
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        let pool = SqlitePoolOptions::new().max_connections(8).connect_with(options).await?;
        sqlx::migrate!("./migrations").run(&pool).await?;
        Ok(Self { pool })
    }

    /// Takes and releases the write lock: the database accepts writes.
    pub async fn check_writable(&self) -> sqlx::Result<()> {
        let mut conn = self.pool.acquire().await?;
        sqlx::query("BEGIN IMMEDIATE").execute(&mut *conn).await?;
        sqlx::query("ROLLBACK").execute(&mut *conn).await?;
        Ok(())
    }

    pub async fn insert_job(&self, job: &NewJob<'_>) -> sqlx::Result<()> {
        self.insert(job, None).await
    }

    /// Records a job answered from the cache: done at once, every tile
    /// counted, sharing `source`'s result.
    pub async fn insert_cached_job(&self, job: &NewJob<'_>, source: &str) -> sqlx::Result<()> {
        self.insert(job, Some(source)).await
    }

    async fn insert(&self, job: &NewJob<'_>, cached_from: Option<&str>) -> sqlx::Result<()> {
        let done = cached_from.is_some();
        sqlx::query(
            "INSERT INTO jobs (id, filename, status, width, height, tile_size, ops, tiles_total, tiles_done, \
             input_bytes, created_at, finished_at, output, cache_key, cached_from, batch_id) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(job.id)
        .bind(job.filename)
        .bind(if done { JobStatus::Done } else { JobStatus::Queued })
        .bind(job.width)
        .bind(job.height)
        .bind(job.tile_size)
        .bind(serde_json::to_string(job.ops).expect("operations serialise"))
        .bind(job.tiles_total)
        .bind(if done { job.tiles_total } else { 0 })
        .bind(job.input_bytes as i64)
        .bind(job.created_at)
        .bind(done.then_some(job.created_at))
        .bind(serde_json::to_string(&job.output).expect("an output serialises"))
        .bind(job.cache_key)
        .bind(cached_from)
        .bind(job.batch_id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The latest done job with this cache key, if any.
    pub async fn cached(&self, key: &str) -> sqlx::Result<Option<Job>> {
        let row: Option<JobRow> = sqlx::query_as(&format!(
            "SELECT {JOB_COLUMNS} FROM jobs WHERE cache_key = ? AND status = 'done' \
             ORDER BY finished_at DESC, id LIMIT 1"
        ))
        .bind(key)
        .fetch_optional(&self.pool)
        .await?;
        row.map(Job::try_from).transpose()
    }

    /// Records a job's tiles and marks it running, in one transaction; false
    /// (and nothing recorded) if the job has finished, e.g. cancelled. A job
    /// already running (resumed after a restart) keeps its tiles' state.
    pub async fn start_job(&self, job_id: &str, tiles: impl Iterator<Item = (u32, Rect)>) -> sqlx::Result<bool> {
        let mut tx = self.pool.begin().await?;
        for (idx, r) in tiles {
            sqlx::query(
                "INSERT OR IGNORE INTO tiles (job_id, idx, x, y, width, height, status) \
                 VALUES (?, ?, ?, ?, ?, ?, 'queued')",
            )
            .bind(job_id)
            .bind(idx)
            .bind(r.x)
            .bind(r.y)
            .bind(r.width)
            .bind(r.height)
            .execute(&mut *tx)
            .await?;
        }
        let started =
            sqlx::query("UPDATE jobs SET status = 'running' WHERE id = ? AND status IN ('queued', 'running')")
                .bind(job_id)
                .execute(&mut *tx)
                .await?
                .rows_affected()
                == 1;
        if started {
            tx.commit().await?;
        }
        Ok(started)
    }

    /// Records where a job's time went.
    pub async fn set_stages(&self, job_id: &str, stages: &app::api::Stages) -> sqlx::Result<()> {
        sqlx::query("UPDATE jobs SET stages = ? WHERE id = ?")
            .bind(serde_json::to_string(stages).expect("stages serialise"))
            .bind(job_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Moves an unfinished job to a final status; false if it had already
    /// finished (a job ends once: done, failed or cancelled).
    pub async fn finish_job(
        &self,
        job_id: &str,
        status: JobStatus,
        error: Option<&str>,
        at: i64,
    ) -> sqlx::Result<bool> {
        let updated = sqlx::query(
            "UPDATE jobs SET status = ?, error = ?, finished_at = ? \
             WHERE id = ? AND status IN ('queued', 'running')",
        )
        .bind(status)
        .bind(error)
        .bind(at)
        .bind(job_id)
        .execute(&self.pool)
        .await?;
        Ok(updated.rows_affected() == 1)
    }

    /// Ids of the jobs left queued or running, oldest first: after a restart
    /// they resume in the order they were submitted.
    pub async fn unfinished_jobs(&self) -> sqlx::Result<Vec<String>> {
        sqlx::query_scalar("SELECT id FROM jobs WHERE status IN ('queued', 'running') ORDER BY created_at, id")
            .fetch_all(&self.pool)
            .await
    }

    /// The tiles of a job that are not done yet.
    pub async fn pending_tiles(&self, job_id: &str) -> sqlx::Result<Vec<PendingTile>> {
        sqlx::query_as(
            "SELECT idx, attempts, task_partition, task_offset FROM tiles \
             WHERE job_id = ? AND status <> 'done' ORDER BY idx",
        )
        .bind(job_id)
        .fetch_all(&self.pool)
        .await
    }

    /// Records that a tile's task was published at `partition`/`offset`;
    /// returns how many times it has been sent.
    pub async fn record_dispatch(&self, job_id: &str, idx: u32, partition: i32, offset: i64) -> sqlx::Result<u32> {
        sqlx::query_scalar(
            "UPDATE tiles SET attempts = attempts + 1, task_partition = ?, task_offset = ? \
             WHERE job_id = ? AND idx = ? RETURNING attempts",
        )
        .bind(partition)
        .bind(offset)
        .bind(job_id)
        .bind(idx)
        .fetch_optional(&self.pool)
        .await
        .map(Option::unwrap_or_default)
    }

    /// Marks a done tile as pending again (its stored pixels were lost).
    pub async fn reopen_tile(&self, job_id: &str, idx: u32) -> sqlx::Result<()> {
        let mut tx = self.pool.begin().await?;
        let reopened = sqlx::query(
            "UPDATE tiles SET status = 'queued', worker_id = NULL, elapsed_ms = NULL, done_at = NULL, \
             task_partition = NULL, task_offset = NULL WHERE job_id = ? AND idx = ? AND status = 'done'",
        )
        .bind(job_id)
        .bind(idx)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if reopened == 1 {
            sqlx::query("UPDATE jobs SET tiles_done = tiles_done - 1 WHERE id = ?")
                .bind(job_id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await
    }

    /// Deletes a job and its tiles.
    pub async fn delete_job(&self, job_id: &str) -> sqlx::Result<()> {
        sqlx::query("DELETE FROM jobs WHERE id = ?").bind(job_id).execute(&self.pool).await?;
        Ok(())
    }

    /// Records a finished tile and returns the job's new state, or `None` when
    /// the tile was already done (a duplicate result changes nothing).
    pub async fn complete_tile(
        &self,
        job_id: &str,
        idx: u32,
        worker_id: &str,
        elapsed_ms: f64,
        result_bytes: usize,
        at: i64,
    ) -> sqlx::Result<Option<Job>> {
        let mut tx = self.pool.begin().await?;
        let updated = sqlx::query(
            "UPDATE tiles SET status = 'done', worker_id = ?, elapsed_ms = ?, result_bytes = ?, done_at = ? \
             WHERE job_id = ? AND idx = ? AND status <> 'done'",
        )
        .bind(worker_id)
        .bind(elapsed_ms)
        .bind(i64::try_from(result_bytes).unwrap_or(i64::MAX))
        .bind(at)
        .bind(job_id)
        .bind(idx)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if updated == 0 {
            return Ok(None);
        }
        sqlx::query("UPDATE jobs SET tiles_done = tiles_done + 1 WHERE id = ?").bind(job_id).execute(&mut *tx).await?;
        let row: JobRow = sqlx::query_as(&format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?"))
            .bind(job_id)
            .fetch_one(&mut *tx)
            .await?;
        tx.commit().await?;
        row.try_into().map(Some)
    }

    /// Jobs queued or running, and the tiles they still wait for.
    pub async fn backlog(&self) -> sqlx::Result<(u64, u64)> {
        let (jobs, tiles): (i64, i64) = sqlx::query_as(
            "SELECT COUNT(*), COALESCE(SUM(tiles_total - tiles_done), 0) FROM jobs \
             WHERE status IN ('queued', 'running')",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok((jobs as u64, tiles as u64))
    }

    pub async fn job(&self, id: &str) -> sqlx::Result<Option<Job>> {
        let row: Option<JobRow> = sqlx::query_as(&format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.map(Job::try_from).transpose()
    }

    /// The newest jobs first.
    pub async fn insert_batch(&self, id: &str, created_at: i64) -> sqlx::Result<()> {
        sqlx::query("INSERT INTO batches (id, created_at) VALUES (?, ?)")
            .bind(id)
            .bind(created_at)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// A batch's creation time, if it exists.
    pub async fn batch(&self, id: &str) -> sqlx::Result<Option<i64>> {
        sqlx::query_scalar("SELECT created_at FROM batches WHERE id = ?").bind(id).fetch_optional(&self.pool).await
    }

    /// A batch's jobs, oldest first.
    pub async fn batch_jobs(&self, id: &str) -> sqlx::Result<Vec<Job>> {
        let rows: Vec<JobRow> =
            sqlx::query_as(&format!("SELECT {JOB_COLUMNS} FROM jobs WHERE batch_id = ? ORDER BY created_at, id"))
                .bind(id)
                .fetch_all(&self.pool)
                .await?;
        rows.into_iter().map(Job::try_from).collect()
    }

    /// Removes a batch whose jobs are gone.
    pub async fn delete_batch(&self, id: &str) -> sqlx::Result<()> {
        sqlx::query("DELETE FROM batches WHERE id = ?").bind(id).execute(&self.pool).await?;
        Ok(())
    }

    pub async fn jobs(&self, limit: u32) -> sqlx::Result<Vec<Job>> {
        let rows: Vec<JobRow> =
            sqlx::query_as(&format!("SELECT {JOB_COLUMNS} FROM jobs ORDER BY created_at DESC, id LIMIT ?"))
                .bind(limit)
                .fetch_all(&self.pool)
                .await?;
        rows.into_iter().map(Job::try_from).collect()
    }

    pub async fn tiles(&self, job_id: &str) -> sqlx::Result<Vec<Tile>> {
        let rows: Vec<TileRow> = sqlx::query_as(
            "SELECT idx, x, y, width, height, status, worker_id, elapsed_ms, done_at, attempts, result_bytes \
             FROM tiles WHERE job_id = ? ORDER BY idx",
        )
        .bind(job_id)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(Tile::from).collect())
    }

    /// Records a heartbeat; `now` is the server's clock, so liveness never
    /// depends on the worker's clock being right.
    pub async fn record_heartbeat(&self, hb: &Heartbeat, now: i64, timeout: Duration) -> sqlx::Result<Worker> {
        let row: WorkerRow = sqlx::query_as(&format!(
            "INSERT INTO workers (id, host, pid, first_seen, last_seen, current_tile, tiles_done, \
             cpu_percent, rss_bytes, runtime) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) \
             ON CONFLICT (id) DO UPDATE SET host = excluded.host, pid = excluded.pid, \
             last_seen = excluded.last_seen, current_tile = excluded.current_tile, \
             tiles_done = excluded.tiles_done, cpu_percent = excluded.cpu_percent, \
             rss_bytes = excluded.rss_bytes, runtime = excluded.runtime \
             RETURNING {WORKER_COLUMNS}"
        ))
        .bind(&hb.worker_id)
        .bind(&hb.host)
        .bind(hb.pid)
        .bind(now)
        .bind(now)
        .bind(&hb.current_tile)
        .bind(i64::try_from(hb.tiles_done).unwrap_or(i64::MAX))
        .bind(hb.cpu_percent)
        .bind(hb.rss_bytes.map(|b| i64::try_from(b).unwrap_or(i64::MAX)))
        .bind(&hb.runtime)
        .fetch_one(&self.pool)
        .await?;
        Ok(row.into_worker(now, timeout))
    }

    /// Forgets workers last seen before `before` (ms): gone for good, or
    /// never real (a forged heartbeat). Returns their ids.
    pub async fn forget_workers(&self, before: i64) -> sqlx::Result<Vec<String>> {
        sqlx::query_scalar("DELETE FROM workers WHERE last_seen < ? RETURNING id")
            .bind(before)
            .fetch_all(&self.pool)
            .await
    }

    /// Ids of finished jobs that finished before `before` (ms).
    pub async fn finished_before(&self, before: i64) -> sqlx::Result<Vec<String>> {
        sqlx::query_scalar(
            "SELECT id FROM jobs WHERE status IN ('done', 'failed', 'cancelled') AND finished_at < ? ORDER BY finished_at",
        )
        .bind(before)
        .fetch_all(&self.pool)
        .await
    }

    pub async fn workers(&self, now: i64, timeout: Duration) -> sqlx::Result<Vec<Worker>> {
        let rows: Vec<WorkerRow> =
            sqlx::query_as(&format!("SELECT {WORKER_COLUMNS} FROM workers ORDER BY id")).fetch_all(&self.pool).await?;
        Ok(rows.into_iter().map(|r| r.into_worker(now, timeout)).collect())
    }

    pub async fn stats(&self, now: i64, timeout: Duration) -> sqlx::Result<Stats> {
        let (total, queued, running, done, failed, tiles_done): (i64, i64, i64, i64, i64, i64) = sqlx::query_as(
            "SELECT COUNT(*), \
             COALESCE(SUM(status = 'queued'), 0), COALESCE(SUM(status = 'running'), 0), \
             COALESCE(SUM(status = 'done'), 0), COALESCE(SUM(status = 'failed'), 0), \
             COALESCE(SUM(tiles_done), 0) FROM jobs",
        )
        .fetch_one(&self.pool)
        .await?;
        let workers = self.workers(now, timeout).await?;
        let alive = workers.iter().filter(|w| w.status == WorkerStatus::Alive).count() as u64;
        Ok(Stats {
            jobs_total: total as u64,
            jobs_queued: queued as u64,
            jobs_running: running as u64,
            jobs_done: done as u64,
            jobs_failed: failed as u64,
            tiles_done: tiles_done as u64,
            workers_alive: alive,
            workers_lost: workers.len() as u64 - alive,
        })
    }
}
