//! The `tiles` table: each tile's state, attempts and where its task was sent.

use app::api::{Job, Tile, TileStatus};
use sqlx::FromRow;

use super::Store;
use super::jobs::{JOB_COLUMNS, JobRow};

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

impl Store {
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
        let row: JobRow = sqlx::query_as(&format!(
            "UPDATE jobs SET tiles_done = tiles_done + 1 WHERE id = ? RETURNING {JOB_COLUMNS}"
        ))
        .bind(job_id)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        row.try_into().map(Some)
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
}
