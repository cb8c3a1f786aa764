//! The `workers` table: what each worker's latest heartbeat said.

use std::time::Duration;

use app::api::{Worker, WorkerStatus};
use pipeline::wire::Heartbeat;
use sqlx::FromRow;

use super::Store;

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

impl Store {
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
    pub async fn workers(&self, now: i64, timeout: Duration) -> sqlx::Result<Vec<Worker>> {
        let rows: Vec<WorkerRow> =
            sqlx::query_as(&format!("SELECT {WORKER_COLUMNS} FROM workers ORDER BY id")).fetch_all(&self.pool).await?;
        Ok(rows.into_iter().map(|r| r.into_worker(now, timeout)).collect())
    }
}
