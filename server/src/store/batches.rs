//! The `batches` table: uploads submitted together.

use app::api::Job;

use super::Store;
use super::jobs::{JOB_COLUMNS, JobRow};

impl Store {
    /// Records a new, empty batch.
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
}
