//! Workers' replies: finished tiles are stored and assembled, failed ones retried.

use std::sync::Arc;
use std::time::Duration;

use app::api::{Event, TileDone};
use pipeline::TileGrid;
use pipeline::wire::{Reply, TileFailure, TileResult};
use rdkafka::Message;
use rdkafka::consumer::{Consumer, StreamConsumer};
use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::{Jobs, now_ms};

impl Jobs {
    /// Consumes replies until `shutdown`. A reply's offset is stored only once
    /// its effect is durable, so a crash replays it rather than losing it.
    pub async fn collect_results(self: Arc<Self>, consumer: StreamConsumer, shutdown: CancellationToken) {
        while let Some(message) = crate::kafka::next_message(&consumer, &shutdown, "results").await {
            self.metrics.result_bytes.inc_by(message.payload_len() as u64);
            // Off the async threads: a PNG result takes about a millisecond to decode.
            let payload = message.payload().unwrap_or_default().to_vec();
            let decoded = tokio::task::spawn_blocking(move || Reply::decode(&payload)).await;
            match decoded.map_err(anyhow::Error::from).and_then(|r| r.map_err(anyhow::Error::from)) {
                Ok(Reply::Done(result)) => {
                    // While the store fails, retry rather than move past it.
                    while let Err(e) = self.accept(&result).await {
                        let h = &result.header;
                        warn!(error = %e, job = %h.job_id, tile = h.tile, "recording a result failed; retrying");
                        tokio::select! {
                            _ = shutdown.cancelled() => return close(consumer),
                            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                        }
                    }
                }
                Ok(Reply::Failed(failure)) => self.reject(failure),
                Err(e) => warn!(error = %e, offset = message.offset(), "skipping a malformed reply"),
            }
            if let Err(e) = consumer.store_offset_from_message(&message) {
                warn!(error = %e, "storing result offset");
            }
        }
        close(consumer);
    }

    /// Stores a finished tile on disk and in SQLite, then counts it done. Duplicates and results for stopped jobs change nothing.
    async fn accept(self: &Arc<Self>, result: &TileResult) -> anyhow::Result<()> {
        let TileResult { header: h, output } = result;
        let active = self.get(&h.job_id);
        let (grid, channels) = match &active {
            Some(a) => {
                let a = a.lock().expect("lock");
                if a.tiles.get(h.tile as usize).is_some_and(|t| t.done) {
                    return Ok(()); // a duplicate
                }
                (a.grid, a.input.channels)
            }
            // Not assembling (yet): keep it if the job is running, e.g.
            // still being resumed after a restart (which checks each tile
            // file's size against the input's channels).
            None => match self.store.job(&h.job_id).await? {
                Some(job) if !job.status.is_finished() => {
                    (TileGrid::new(job.width, job.height, job.tile_size), output.channels)
                }
                _ => return Ok(()),
            },
        };
        if grid.tile(h.tile) != Some(h.rect) || output.channels != channels {
            warn!(job = %h.job_id, tile = h.tile, "result does not match the job's grid or channels; ignored");
            return Ok(());
        }
        let path = self.tile_path(&h.job_id, h.tile);
        if let Some(dir) = path.parent() {
            tokio::fs::create_dir_all(dir).await?;
        }
        tokio::fs::write(&path, &output.pixels).await?;
        let job = self.store.complete_tile(&h.job_id, h.tile, &h.worker_id, h.elapsed_ms, now_ms()).await?;

        let complete = active.is_some_and(|a| {
            let mut a = a.lock().expect("lock");
            let state = &mut a.tiles[h.tile as usize];
            if state.done {
                return false;
            }
            state.done = true;
            a.remaining -= 1;
            if a.remaining == 0 {
                a.clock.last_result_at = Some(std::time::Instant::now());
            }
            a.remaining == 0
        });
        if let Some(job) = job {
            self.metrics.observe_tile(h.elapsed_ms);
            self.events.emit(Event::Tile(TileDone {
                job_id: h.job_id.clone(),
                tile: h.tile,
                worker_id: h.worker_id.clone(),
                elapsed_ms: h.elapsed_ms,
            }));
            self.events.emit(Event::Job(job));
        }
        if complete {
            let (this, id) = (Arc::clone(self), h.job_id.clone());
            tokio::spawn(async move { this.finish(&id).await });
        }
        Ok(())
    }

    /// A worker could not process a tile: send it again, or give up on it.
    fn reject(self: &Arc<Self>, failure: TileFailure) {
        let TileFailure { job_id, tile, worker_id, error } = failure;
        let Some(active) = self.get(&job_id) else { return };
        if active.lock().expect("lock").tiles.get(tile as usize).is_none_or(|t| t.done || t.sending) {
            return;
        }
        warn!(job = %job_id, tile, worker = %worker_id, error = %error, "a worker failed a tile");
        self.metrics.tiles_failed.inc();
        let this = Arc::clone(self);
        tokio::spawn(async move { this.retry(&job_id, tile, &format!("{worker_id}: {error}")).await });
    }
}

/// Leaves the group (blocking, so off the reactor).
fn close(consumer: StreamConsumer) {
    tokio::task::spawn_blocking(move || drop(consumer));
}
