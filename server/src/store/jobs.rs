//! The `jobs` table: a job from its upload to its end.

use app::api::{Job, JobStatus, Output};
use pipeline::{Operation, Rect};
use sqlx::FromRow;

use super::Store;

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
pub(super) struct JobRow {
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

pub(super) const JOB_COLUMNS: &str = "id, filename, status, width, height, tile_size, ops, tiles_total, \
                           tiles_done, input_bytes, error, created_at, finished_at, stages, output, \
                           cached_from, batch_id";

impl Store {
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
    /// Deletes a job and its tiles.
    pub async fn delete_job(&self, job_id: &str) -> sqlx::Result<()> {
        sqlx::query("DELETE FROM jobs WHERE id = ?").bind(job_id).execute(&self.pool).await?;
        Ok(())
    }
    pub async fn job(&self, id: &str) -> sqlx::Result<Option<Job>> {
        let row: Option<JobRow> = sqlx::query_as(&format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.map(Job::try_from).transpose()
    }

    /// The newest `limit` jobs, newest first.
    pub async fn jobs(&self, limit: u32) -> sqlx::Result<Vec<Job>> {
        let rows: Vec<JobRow> =
            sqlx::query_as(&format!("SELECT {JOB_COLUMNS} FROM jobs ORDER BY created_at DESC, id LIMIT ?"))
                .bind(limit)
                .fetch_all(&self.pool)
                .await?;
        rows.into_iter().map(Job::try_from).collect()
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
}
