//! The master's job engine: a job's life from upload to result.
//!
//! A job's input is kept on disk and every finished tile is written next to
//! it before it is recorded in SQLite (and only then is its Kafka offset
//! stored), so after a crash a job resumes from the files and the database.
//! Submodules, in a job's order: `submit` records an upload as a job (or
//! answers it from the cache), `resume` carries on those a previous run
//! left; `start` opens a job's input, registers its tiles and sends them;
//! `active` is a running job and `tile` one tile's state machine, the only
//! code that changes them; `results` takes workers' replies in; `retry`
//! sends tiles again (after failures and missed deadlines) and dead-letters
//! hopeless ones; `end` writes the result, or cancels, fails or deletes.

mod active;
mod end;
mod input;
mod raster;
mod results;
mod resume;
mod retry;
mod start;
mod submit;
mod tile;
pub mod window;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use app::api::{Event, Output};

use crate::admission::Reservation;
use pipeline::wire::{TileKey, Topics};
use rdkafka::producer::{FutureProducer, FutureRecord};

use crate::intake::Source;
use crate::kafka::TaskProgress;
use crate::metrics::Metrics;
use crate::sse::Events;
use crate::store::Store;
use active::Shared;
pub use resume::Share;
pub use submit::Submission;
use tile::Placement;
pub use window::Window;

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

    fn done_tiles_path(&self, job_id: &str) -> PathBuf {
        done_tiles_file(&self.tiles_dir(job_id))
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

/// Where the finished tiles are kept until the result is written (see
/// [`crate::done_tiles`]).
fn done_tiles_file(tiles_dir: &std::path::Path) -> PathBuf {
    tiles_dir.join("done")
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
