//! The master's job engine: tiling and dispatch of new jobs, collection and
//! reassembly of results, and writing the finished image.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use app::api::{Event, Job, JobStatus, TileDone};
use futures::{StreamExt, TryStreamExt};
use pipeline::wire::{Task, TaskHeader, TileResult, Topics};
use pipeline::{Frame, Operation, TileGrid, ops};
use rdkafka::Message;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::intake::{self, ImageInfo};
use crate::sse::Events;
use crate::store::{NewJob, Store};

/// Tiles being cut and sent at once: enough to keep the producer busy.
const DISPATCH_CONCURRENCY: usize = 8;

/// A job whose tiles are out: the output image, filled in as results arrive.
struct Assembly {
    grid: TileGrid,
    output: Frame,
}

pub struct Jobs {
    store: Store,
    events: Events,
    producer: FutureProducer,
    topics: Topics,
    jobs_dir: PathBuf,
    tile_size: u32,
    active: Mutex<HashMap<String, Arc<Mutex<Assembly>>>>,
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

impl Jobs {
    pub fn new(
        store: Store,
        events: Events,
        producer: FutureProducer,
        topics: Topics,
        jobs_dir: PathBuf,
        tile_size: u32,
    ) -> Self {
        Self { store, events, producer, topics, jobs_dir, tile_size, active: Mutex::default() }
    }

    pub fn result_path(&self, job_id: &str) -> PathBuf {
        self.jobs_dir.join(job_id).join("result.png")
    }

    /// Records a checked upload as a new job and starts it in the background.
    pub async fn submit(
        self: &Arc<Self>,
        bytes: Vec<u8>,
        filename: &str,
        info: ImageInfo,
        ops: Vec<Operation>,
    ) -> anyhow::Result<Job> {
        let id = uuid::Uuid::new_v4().to_string();
        let dir = self.jobs_dir.join(&id);
        tokio::fs::create_dir_all(&dir).await?;
        let input = dir.join(format!("input.{}", info.format.extensions_str()[0]));
        tokio::fs::write(&input, &bytes).await.with_context(|| format!("writing {}", input.display()))?;

        let grid = TileGrid::new(info.width, info.height, self.tile_size);
        self.store
            .insert_job(&NewJob {
                id: &id,
                filename,
                width: info.width,
                height: info.height,
                tile_size: self.tile_size,
                ops: &ops,
                tiles_total: grid.len(),
                input_bytes: bytes.len() as u64,
                created_at: now_ms(),
            })
            .await?;
        let job = self.store.job(&id).await?.context("job just inserted")?;
        self.events.emit(Event::Job(job.clone()));
        info!(job = %id, width = info.width, height = info.height, tiles = grid.len(), "job accepted");

        let this = Arc::clone(self);
        tokio::spawn(async move {
            if let Err(e) = this.dispatch(&id, bytes, info, grid, ops).await {
                warn!(job = %id, error = %e, "job failed before its tiles were sent");
                this.fail(&id, &e.to_string()).await;
            }
        });
        Ok(job)
    }

    async fn dispatch(
        &self,
        id: &str,
        bytes: Vec<u8>,
        info: ImageInfo,
        grid: TileGrid,
        ops: Vec<Operation>,
    ) -> anyhow::Result<()> {
        let input = tokio::task::spawn_blocking(move || intake::decode(&bytes, info)).await??;
        let input = Arc::new(input);
        if !self.store.start_job(id, grid.tiles()).await? {
            return Ok(()); // cancelled while decoding
        }
        let assembly = Assembly { grid, output: Frame::black(grid.width, grid.height) };
        self.active.lock().expect("lock").insert(id.to_owned(), Arc::new(Mutex::new(assembly)));
        self.emit_job(id).await;

        let halo = ops::chain_halo(&ops);
        let ops = Arc::new(ops);
        futures::stream::iter(grid.tiles())
            .map(|(tile, rect)| {
                let (input, ops) = (Arc::clone(&input), Arc::clone(&ops));
                let header = TaskHeader { job_id: id.to_owned(), tile, rect, halo, ops: ops.to_vec() };
                async move {
                    if !self.is_active(id) {
                        return anyhow::Ok(()); // cancelled mid-dispatch
                    }
                    let payload = tokio::task::spawn_blocking(move || {
                        Task { header, input: input.crop_with_halo(rect, halo) }.encode()
                    })
                    .await?;
                    let key = format!("{id}/{tile}");
                    let record = FutureRecord::to(&self.topics.tasks).key(&key).payload(&payload);
                    self.producer
                        .send(record, Duration::from_secs(30))
                        .await
                        .map_err(|(e, _)| anyhow::anyhow!("sending tile {tile}: {e}"))?;
                    anyhow::Ok(())
                }
            })
            .buffer_unordered(DISPATCH_CONCURRENCY)
            .try_collect::<()>()
            .await?;
        info!(job = %id, tiles = grid.len(), "all tiles dispatched");
        Ok(())
    }

    /// Consumes results until `shutdown`; a result's offset is stored only
    /// once it has been recorded, so a crash replays it rather than losing it.
    pub async fn collect_results(self: Arc<Self>, consumer: StreamConsumer, shutdown: CancellationToken) {
        while let Some(message) = crate::kafka::next_message(&consumer, &shutdown, "results").await {
            match TileResult::decode(message.payload().unwrap_or_default()) {
                // The offset is stored only once the result is recorded: while
                // the store fails, retry rather than move past it.
                Ok(result) => {
                    while let Err(e) = self.accept(&result).await {
                        warn!(error = %e, job = %result.header.job_id, tile = result.header.tile, "recording a result failed; retrying");
                        tokio::select! {
                            _ = shutdown.cancelled() => return self.close(consumer),
                            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                        }
                    }
                }
                Err(e) => warn!(error = %e, offset = message.offset(), "skipping malformed result"),
            }
            if let Err(e) = consumer.store_offset_from_message(&message) {
                warn!(error = %e, "storing result offset");
            }
        }
        self.close(consumer);
    }

    /// Leaves the group (blocking, so off the reactor).
    fn close(&self, consumer: StreamConsumer) {
        tokio::task::spawn_blocking(move || drop(consumer));
    }

    async fn accept(self: &Arc<Self>, result: &TileResult) -> anyhow::Result<()> {
        let TileResult { header: h, output } = result;
        let Some(assembly) = self.active.lock().expect("lock").get(&h.job_id).cloned() else {
            // A job that finished already (a duplicate) or that this master never started.
            return Ok(());
        };
        {
            let mut a = assembly.lock().expect("lock");
            if a.grid.tile(h.tile) != Some(h.rect) {
                warn!(job = %h.job_id, tile = h.tile, "result does not match the job's grid; ignored");
                return Ok(());
            }
            a.output.paste(h.rect.x, h.rect.y, output);
        }
        let Some(job) = self.store.complete_tile(&h.job_id, h.tile, &h.worker_id, h.elapsed_ms, now_ms()).await? else {
            return Ok(()); // duplicate
        };
        self.events.emit(Event::Tile(TileDone {
            job_id: h.job_id.clone(),
            tile: h.tile,
            worker_id: h.worker_id.clone(),
            elapsed_ms: h.elapsed_ms,
        }));
        let complete = job.tiles_done == job.tiles_total;
        self.events.emit(Event::Job(job));
        if complete {
            let (this, id) = (Arc::clone(self), h.job_id.clone());
            tokio::spawn(async move { this.finish(&id).await });
        }
        Ok(())
    }

    async fn finish(&self, id: &str) {
        let Some(assembly) = self.active.lock().expect("lock").remove(id) else {
            return;
        };
        let path = self.result_path(id);
        let written = async {
            let png = tokio::task::spawn_blocking(move || intake::encode_png(&assembly.lock().expect("lock").output))
                .await??;
            // Write then rename: a reader never sees half a file.
            let partial = path.with_extension("png.partial");
            tokio::fs::write(&partial, png).await?;
            tokio::fs::rename(&partial, &path).await?;
            anyhow::Ok(())
        };
        match written.await {
            Ok(()) => match self.store.finish_job(id, JobStatus::Done, None, now_ms()).await {
                Ok(true) => {
                    info!(job = %id, "job done");
                    self.emit_job(id).await;
                }
                Ok(false) => {} // cancelled meanwhile
                Err(e) => warn!(job = %id, error = %e, "marking job done"),
            },
            Err(e) => self.fail(id, &format!("writing the result failed: {e}")).await,
        }
    }

    fn is_active(&self, id: &str) -> bool {
        self.active.lock().expect("lock").contains_key(id)
    }

    /// Stops an unfinished job: its unsent tiles are not sent and results
    /// still in flight are ignored. False if it had already finished.
    pub async fn cancel(&self, id: &str) -> anyhow::Result<bool> {
        let cancelled = self.store.finish_job(id, JobStatus::Cancelled, None, now_ms()).await?;
        if cancelled {
            self.active.lock().expect("lock").remove(id);
            info!(job = %id, "job cancelled");
            self.emit_job(id).await;
        }
        Ok(cancelled)
    }

    /// Removes a finished job's rows and files together.
    pub async fn delete(&self, id: &str) -> anyhow::Result<()> {
        self.store.delete_job(id).await?;
        match tokio::fs::remove_dir_all(self.jobs_dir.join(id)).await {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.into()),
            _ => {}
        }
        self.events.emit(Event::JobDeleted(id.to_owned()));
        Ok(())
    }

    async fn fail(&self, id: &str, reason: &str) {
        self.active.lock().expect("lock").remove(id);
        if let Err(e) = self.store.finish_job(id, JobStatus::Failed, Some(reason), now_ms()).await {
            warn!(job = %id, error = %e, "marking job failed");
        }
        self.emit_job(id).await;
    }

    async fn emit_job(&self, id: &str) {
        if let Ok(Some(job)) = self.store.job(id).await {
            self.events.emit(Event::Job(job));
        }
    }
}
