//! The master's job engine: a job's life from upload to result.
//!
//! A job's input is kept on disk and every finished tile is written next to
//! it before it is recorded in SQLite (and only then is its Kafka offset
//! stored), so after a crash a job resumes from the files and the database.
//! Submodules: `start` opens a job's input, registers its tiles and sends
//! them; `active` is a running job and `tile` one tile's state machine, the
//! only code that changes them; `results` takes workers' replies in;
//! `retry` sends tiles again (after failures and missed deadlines) and
//! dead-letters hopeless ones.

mod active;
mod input;
mod raster;
mod results;
mod retry;
mod start;
mod tile;
pub mod window;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use app::api::{Event, Job, JobStatus, Output};

use crate::admission::{Admission, Reservation};
use pipeline::wire::{Control, TileKey, Topics};
use pipeline::{Operation, TileGrid, ops};
use plumbing::now_ms;
use rdkafka::producer::{FutureProducer, FutureRecord};
use tokio::sync::oneshot;
use tracing::{info, warn};

use crate::intake::{self, ImageInfo, Source};
use crate::kafka::TaskProgress;
use crate::metrics::Metrics;
use crate::sse::Events;
use crate::store::{NewJob, Store};
use active::{Finishing, Shared};
use tile::Placement;
pub use window::Window;

/// How long a job whose result could not be written waits to try again.
const FINISH_RETRY: Duration = Duration::from_secs(5);

/// Tiles being cut and sent at once: enough to keep the producer busy.
const DISPATCH_CONCURRENCY: usize = 8;

/// Where the engine keeps job files, and how it cuts, retries and times out tiles.
#[derive(Debug, Clone)]
pub struct Settings {
    pub jobs_dir: PathBuf,
    pub tile_size: u32,
    pub max_attempts: u32,
    pub tile_timeout: Duration,
}

/// A resumed job's share of the memory budget.
pub enum Share {
    Held(Reservation),
    /// Not free yet: this many bytes, to wait for.
    Wait(u64),
    /// Its input could not be read: the job will fail as it starts.
    Unknown,
}

/// How a job starts: a new upload hands it the prepared input and how long
/// that took, where to report whether a JPEG's scan reads through, and its
/// share of the memory budget; a job resumed after a restart reads its input
/// again, with the share reserved for it.
enum Start {
    Fresh {
        source: Source,
        read_time: Duration,
        verdict: Option<input::ScanVerdict>,
        memory: Option<Reservation>,
        received_at: Instant,
    },
    Resumed {
        memory: Option<Reservation>,
    },
}

/// A checked upload and what to do with it.
pub struct Submission {
    pub file: crate::upload::Upload,
    /// As shown: control characters removed, at most 200 of them.
    pub filename: String,
    pub info: ImageInfo,
    pub ops: Vec<Operation>,
    pub output: Output,
    /// See [`crate::cache::key`].
    pub cache_key: String,
    /// Its share of the memory budget, held while it runs.
    pub memory: Option<Reservation>,
    /// The batch it belongs to (checked to exist).
    pub batch_id: Option<String>,
}

pub struct Jobs {
    store: Store,
    events: Events,
    producer: FutureProducer,
    progress: TaskProgress,
    topics: Topics,
    settings: Settings,
    metrics: Arc<Metrics>,
    window: Arc<Window>,
    active: Mutex<HashMap<String, Shared>>,
}

/// How the engine reaches the workers: the broker's clients and topics, and
/// the window that paces dispatch.
pub struct Broker {
    pub producer: FutureProducer,
    pub progress: TaskProgress,
    pub topics: Topics,
    pub window: Arc<Window>,
}

impl Jobs {
    pub fn new(store: Store, events: Events, broker: Broker, settings: Settings, metrics: Arc<Metrics>) -> Self {
        let Broker { producer, progress, topics, window } = broker;
        Self { store, events, producer, progress, topics, settings, metrics, window, active: Mutex::default() }
    }

    /// The dispatch window all jobs share.
    pub fn window(&self) -> &Arc<Window> {
        &self.window
    }

    pub fn producer(&self) -> &FutureProducer {
        &self.producer
    }

    pub fn result_path(&self, job_id: &str, output: Output) -> PathBuf {
        self.settings.jobs_dir.join(job_id).join(format!("result.{}", output.extension()))
    }

    /// Where the preview of a job's `input` or `result` is kept.
    pub fn preview_path(&self, job_id: &str, which: &str) -> PathBuf {
        self.settings.jobs_dir.join(job_id).join(format!("preview-{which}.jpg"))
    }

    /// Where a job's zoomable pyramid is kept (see [`crate::zoom`]).
    pub fn zoom_dir(&self, job_id: &str) -> PathBuf {
        self.settings.jobs_dir.join(job_id).join("zoom")
    }

    fn tiles_dir(&self, job_id: &str) -> PathBuf {
        self.settings.jobs_dir.join(job_id).join("tiles")
    }

    fn tile_path(&self, job_id: &str, tile: u32) -> PathBuf {
        tile_file(&self.tiles_dir(job_id), tile)
    }

    /// Lets go of every running job on shutdown: their encoders stop waiting
    /// for tiles (a job resumes from the store and its files next time), so
    /// no thread is left blocked on a job that can no longer progress.
    pub fn release(&self) {
        let active = std::mem::take(&mut *self.active.lock().expect("lock"));
        for job in active.values() {
            job.lock().expect("lock").abort();
        }
    }

    fn get(&self, id: &str) -> Option<Shared> {
        self.active.lock().expect("lock").get(id).cloned()
    }

    /// Records a checked upload as a new job and starts it in the background.
    pub async fn submit(
        self: &Arc<Self>,
        request: Submission,
        decoded: (Source, Duration),
    ) -> anyhow::Result<(Job, Option<oneshot::Receiver<Result<(), crate::error::AppError>>>)> {
        let Submission { file, filename, info, ops, output, cache_key, memory, batch_id } = request;
        let id = uuid::Uuid::new_v4().to_string();
        let dir = self.settings.jobs_dir.join(&id);
        tokio::fs::create_dir_all(&dir).await?;
        let input = dir.join(format!("input.{}", info.format.extensions_str()[0]));
        let grid = TileGrid::new(info.width, info.height, self.settings.tile_size);
        let (input_bytes, received_at) = (file.len, file.received);
        let recorded = async {
            file.keep_as(&input).await.with_context(|| format!("moving the upload to {}", input.display()))?;
            self.store
                .insert_job(&NewJob {
                    id: &id,
                    filename: &filename,
                    width: info.width,
                    height: info.height,
                    tile_size: self.settings.tile_size,
                    ops: &ops,
                    tiles_total: grid.len(),
                    input_bytes,
                    created_at: now_ms(),
                    output,
                    cache_key: Some(&cache_key),
                    batch_id: batch_id.as_deref(),
                })
                .await?;
            anyhow::Ok(())
        };
        if let Err(e) = recorded.await {
            // No file without its row (a full disk, a failed insert).
            let _ = tokio::fs::remove_dir_all(&dir).await;
            return Err(e);
        }
        let job = self.store.job(&id).await?.context("job just inserted")?;
        self.metrics.upload_bytes.inc_by(input_bytes);
        self.events.emit(Event::Job(job.clone()));
        info!(job = %id, width = info.width, height = info.height, tiles = grid.len(), "job accepted");

        // A JPEG's scan is read while its tiles are cut, a PNG's rows while
        // they are sent, after this returns: the caller hears whether it decoded.
        let (verdict, scan) = match decoded.0 {
            Source::Jpeg(_) | Source::Rows { .. } => {
                let (tx, rx) = oneshot::channel();
                (Some(tx), Some(rx))
            }
            Source::Pixels(_) => (None, None),
        };
        let (source, read_time) = decoded;
        let fresh = Start::Fresh { source, read_time, verdict, memory, received_at };
        let this = Arc::clone(self);
        tokio::spawn(async move { this.run(&id, fresh).await });
        Ok((job, scan))
    }

    /// Resumes the jobs a previous run of the server left unfinished, one at
    /// a time (each decodes its whole input).
    /// The jobs a previous run left unfinished, each holding its share of
    /// the memory budget if that is free: reserved before the server takes
    /// uploads, so that none takes it first.
    pub async fn unfinished(&self, admission: &Admission) -> Vec<(String, Share)> {
        let ids = match self.store.unfinished_jobs().await {
            Ok(ids) => ids,
            Err(e) => {
                warn!(error = %e, "listing unfinished jobs");
                return Vec::new();
            }
        };
        let mut jobs = Vec::with_capacity(ids.len());
        for id in ids {
            let share = match self.resume_estimate(&id).await {
                Ok(memory) => admission.try_reserve(memory).map_or(Share::Wait(memory), Share::Held),
                Err(e) => {
                    warn!(job = %id, error = %e, "cannot estimate a resumed job's memory");
                    Share::Unknown
                }
            };
            jobs.push((id, share));
        }
        jobs
    }

    /// Carries on `unfinished` jobs side by side, as new uploads' jobs run,
    /// those still waiting for their share of the memory budget once it is
    /// free (in turn).
    pub async fn resume(self: Arc<Self>, unfinished: Vec<(String, Share)>, admission: Arc<Admission>) {
        for (id, share) in unfinished {
            info!(job = %id, "resuming job");
            let memory = match share {
                Share::Held(reservation) => Some(reservation),
                Share::Wait(memory) => Some(admission.reserve(memory).await),
                Share::Unknown => None,
            };
            let this = Arc::clone(&self);
            tokio::spawn(async move { this.run(&id, Start::Resumed { memory }).await });
        }
    }

    /// What a stored job needs of the memory budget, from its input's header.
    async fn resume_estimate(&self, id: &str) -> anyhow::Result<u64> {
        let job = self.store.job(id).await?.context("the job was deleted")?;
        let path = self.input_path(id).await.context("the job's input file is gone")?;
        let (info, plan) = tokio::task::spawn_blocking(move || intake::inspect_stored(&path)).await??;
        let halo = ops::chain_halo(&job.ops);
        Ok(intake::memory_needed(&info, &plan, job.tile_size, halo, job.output))
    }

    /// Records a job whose result `source` already has (see [`crate::cache`]):
    /// done at once, sharing that file, without the broker. Hands the upload
    /// back when the source's result is gone (deleted meanwhile): the job
    /// must run.
    pub async fn answer_from_cache(
        &self,
        request: Submission,
        source: &Job,
    ) -> anyhow::Result<Result<Job, Submission>> {
        let id = uuid::Uuid::new_v4().to_string();
        let dir = self.settings.jobs_dir.join(&id);
        tokio::fs::create_dir_all(&dir).await?;
        let (from, to) = (self.result_path(&source.id, source.output), self.result_path(&id, source.output));
        let recorded = match crate::cache::share(&from, &to).await {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let _ = tokio::fs::remove_dir_all(&dir).await;
                return Ok(Err(request));
            }
            Err(e) => Err(anyhow::Error::new(e).context("sharing the cached result")),
            Ok(()) => {
                let input = dir.join(format!("input.{}", request.info.format.extensions_str()[0]));
                let job = NewJob {
                    id: &id,
                    filename: &request.filename,
                    width: source.width,
                    height: source.height,
                    tile_size: source.tile_size,
                    ops: &source.ops,
                    tiles_total: source.tiles_total,
                    input_bytes: request.file.len,
                    created_at: now_ms(),
                    output: source.output,
                    cache_key: Some(&request.cache_key),
                    batch_id: request.batch_id.as_deref(),
                };
                async {
                    request.file.keep_as(&input).await.context("moving the upload")?;
                    self.store.insert_cached_job(&job, &source.id).await?;
                    anyhow::Ok(())
                }
                .await
            }
        };
        if let Err(e) = recorded {
            let _ = tokio::fs::remove_dir_all(&dir).await;
            return Err(e);
        }
        let job = self.store.job(&id).await?.context("job just inserted")?;
        self.metrics.cache_hits.inc();
        self.events.emit(Event::Job(job.clone()));
        info!(job = %id, source = %source.id, "job answered from the result cache");
        Ok(Ok(job))
    }

    /// The stored upload, `input.<its format's extension>`.
    pub async fn input_path(&self, id: &str) -> Option<PathBuf> {
        let mut entries = tokio::fs::read_dir(self.settings.jobs_dir.join(id)).await.ok()?;
        while let Ok(Some(entry)) = entries.next_entry().await {
            if entry.file_name().to_string_lossy().starts_with("input.") {
                return Some(entry.path());
            }
        }
        None
    }

    /// Publishes a tile's task and records where the broker put it; says
    /// whether it did. Does nothing if the job stopped, the tile is done or
    /// it is being sent already. A first sending brings its window `slot`;
    /// a later one moves the tile's slot to another partition.
    async fn publish(&self, id: &str, tile: u32, slot: Option<window::Slot>) -> anyhow::Result<bool> {
        let Some(active) = self.get(id) else { return Ok(false) };
        let Some((header, payload, partition)) = active.lock().expect("lock").begin_send(id, tile, slot) else {
            return Ok(false);
        };
        let sent = async {
            let payload = tokio::task::spawn_blocking(move || payload.encode(header)).await??;
            self.metrics.task_bytes.inc_by(payload.len() as u64);
            let key = TileKey::new(id, tile).to_string();
            let mut record = FutureRecord::to(&self.topics.tasks).key(&key).payload(&payload);
            record.partition = partition;
            let delivery = self
                .producer
                .send(record, Duration::from_secs(30))
                .await
                .map_err(|(e, _)| anyhow::anyhow!("sending tile {tile}: {e}"))?;
            let (partition, offset) = (delivery.partition, delivery.offset);
            let attempts = self.store.record_dispatch(id, tile, partition, offset).await?;
            anyhow::Ok((partition, offset, attempts))
        }
        .await;
        let mut a = active.lock().expect("lock");
        match sent {
            Ok((partition, offset, attempts)) => {
                a.sent(tile, Placement { partition, offset }, attempts);
                Ok(true)
            }
            Err(e) => {
                a.send_failed(tile);
                Err(e)
            }
        }
    }

    /// Assembles a job whose tiles are all done. Taken out of the active map
    /// first, so results still arriving change nothing (tile files are
    /// replaced atomically anyway). If the result cannot be written (a full
    /// disk), the job stays running with its tiles and tries again later,
    /// unless it is cancelled meanwhile.
    async fn finish(&self, id: &str) {
        let encode_started = Instant::now();
        let (active, clock) = loop {
            let Some(active) = self.active.lock().expect("lock").remove(id) else {
                return;
            };
            let finishing = active.lock().expect("lock").finishing();
            let clock = finishing.clock;
            match self.write_result(id, finishing).await {
                Ok(()) => break (active, clock),
                Err(e) => {
                    let retry = FINISH_RETRY.as_secs();
                    warn!(job = %id, error = %e, "writing the result failed; trying again in {retry}s");
                    self.active.lock().expect("lock").insert(id.to_owned(), active);
                    tokio::time::sleep(FINISH_RETRY).await;
                }
            }
        };
        drop(active); // the input is no longer needed
        if let Err(e) = self.store.set_stages(id, &clock.stages(encode_started)).await {
            warn!(job = %id, error = %e, "recording stage times");
        }
        match self.store.finish_job(id, JobStatus::Done, None, now_ms()).await {
            Ok(true) => {
                info!(job = %id, "job done");
                self.remove_tiles(id).await;
                self.emit_job(id).await;
            }
            Ok(false) => {} // cancelled meanwhile
            Err(e) => warn!(job = %id, error = %e, "marking job done"),
        }
    }

    /// Puts the job's result in place: the one encoded while the results
    /// arrived, most of the time; written now from the tiles otherwise (a
    /// WebP, a resumed job, a failed encoder).
    async fn write_result(&self, id: &str, Finishing { shape, encoder, .. }: Finishing) -> anyhow::Result<()> {
        let path = self.result_path(id, shape.output);
        let tiles_dir = self.tiles_dir(id);
        let streamed = match encoder {
            Some(encoder) => match encoder.await {
                Ok(Ok(())) => tokio::fs::rename(streamed_result(&tiles_dir), &path).await.is_ok(),
                Ok(Err(e)) => {
                    warn!(job = %id, error = %e, "encoding the result as the tiles arrived failed; writing it now");
                    false
                }
                Err(_) => false,
            },
            None => false,
        };
        if streamed {
            return Ok(());
        }
        // Write then rename: a reader never sees half a file.
        let partial = path.with_extension("partial");
        let target = partial.clone();
        let written = tokio::task::spawn_blocking(move || {
            let path = |t| tile_file(&tiles_dir, t);
            let tiles = crate::assemble::Tiles { grid: shape.grid, channels: shape.channels, path, progress: None };
            crate::assemble::write(shape.output, &tiles, &target)
        })
        .await
        .map_err(anyhow::Error::from)
        .and_then(|written| written);
        let placed = match written {
            Ok(()) => tokio::fs::rename(&partial, &path).await.map_err(anyhow::Error::from),
            Err(e) => Err(e),
        };
        if placed.is_err() {
            let _ = tokio::fs::remove_file(&partial).await;
        }
        placed
    }

    /// Stops an unfinished job: its unsent tiles are not sent and results
    /// still in flight are ignored. False if it had already finished.
    pub async fn cancel(&self, id: &str) -> anyhow::Result<bool> {
        let cancelled = self.store.finish_job(id, JobStatus::Cancelled, None, now_ms()).await?;
        if cancelled {
            self.active.lock().expect("lock").remove(id);
            info!(job = %id, "job cancelled");
            self.announce_stopped(id).await;
            self.remove_tiles(id).await;
            self.emit_job(id).await;
        }
        Ok(cancelled)
    }

    /// Removes a finished job's rows and files together.
    pub async fn delete(&self, id: &str) -> anyhow::Result<()> {
        self.store.delete_job(id).await?;
        match tokio::fs::remove_dir_all(self.settings.jobs_dir.join(id)).await {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.into()),
            _ => {}
        }
        self.events.emit(Event::JobDeleted(id.to_owned()));
        Ok(())
    }

    async fn fail(&self, id: &str, reason: &str) {
        self.active.lock().expect("lock").remove(id);
        match self.store.finish_job(id, JobStatus::Failed, Some(reason), now_ms()).await {
            Ok(true) => {
                warn!(job = %id, reason, "job failed");
                self.announce_stopped(id).await;
                self.remove_tiles(id).await;
            }
            Ok(false) => {}
            Err(e) => warn!(job = %id, error = %e, "marking job failed"),
        }
        self.emit_job(id).await;
    }

    /// Tells the workers to skip the job's remaining tiles. Best effort: a
    /// worker that misses it processes tiles whose results are ignored.
    async fn announce_stopped(&self, id: &str) {
        let payload = Control::JobStopped { job_id: id.to_owned() }.encode();
        let record = FutureRecord::to(&self.topics.control).key(id).payload(&payload);
        if let Err((e, _)) = self.producer.send(record, Duration::from_secs(10)).await {
            warn!(job = %id, error = %e, "announcing a stopped job");
        }
    }

    /// A finished job's tiles are in its result (or no longer wanted).
    async fn remove_tiles(&self, id: &str) {
        match tokio::fs::remove_dir_all(self.tiles_dir(id)).await {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                warn!(job = %id, error = %e, "removing tile files")
            }
            _ => {}
        }
    }

    async fn emit_job(&self, id: &str) {
        if let Ok(Some(job)) = self.store.job(id).await {
            self.events.emit(Event::Job(job));
        }
    }
}

/// Where the result is written while the tiles arrive: among them, so that a
/// stopped job's half-written result goes with them.
fn streamed_result(tiles_dir: &std::path::Path) -> PathBuf {
    tiles_dir.join("result.partial")
}

/// Where a finished tile's raw RGB pixels are kept until the result is written.
fn tile_file(tiles_dir: &std::path::Path, tile: u32) -> PathBuf {
    tiles_dir.join(format!("{tile}.rgb"))
}

/// Tile indices below `total` that are not among `pending`.
fn tiles_not_in(pending: &[crate::store::PendingTile], total: u32) -> Vec<u32> {
    let mut done = vec![true; total as usize];
    for p in pending {
        if let Some(d) = done.get_mut(p.idx as usize) {
            *d = false;
        }
    }
    (0..total).filter(|&t| done[t as usize]).collect()
}
