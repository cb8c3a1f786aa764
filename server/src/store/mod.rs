//! The SQLite store: the only module with SQL in it. One file per table
//! (`jobs`, `tiles`, `workers`, `batches`), each adding its queries to [`Store`].

mod batches;
mod jobs;
mod tiles;
mod workers;

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use app::api::{Stats, WorkerStatus};
use sqlx::SqlitePool;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

pub use jobs::NewJob;
pub use tiles::PendingTile;

#[derive(Clone)]
pub struct Store {
    pool: SqlitePool,
}

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
            task_partitions: 0, // the broker's: the API fills it in
        })
    }
}
