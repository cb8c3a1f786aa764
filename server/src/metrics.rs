//! `GET /metrics`: Prometheus (OpenMetrics) text. Counters are bumped where
//! things happen; gauges of jobs, workers and backlog are read from the store
//! at scrape time, so they are right even just after a restart.

use std::sync::atomic::AtomicU64;
use std::time::Duration;

use app::api::WorkerStatus;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::store::Store;
use plumbing::now_ms;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Status {
    status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WorkerId {
    worker: String,
}

pub struct Metrics {
    registry: Registry,
    pub tiles_done: Counter,
    pub tiles_retried: Counter,
    pub tiles_failed: Counter,
    pub tiles_dead_lettered: Counter,
    /// Seconds workers spent on a tile's operations.
    pub tile_seconds: Histogram,
    pub upload_bytes: Counter,
    pub cache_hits: Counter,
    pub task_bytes: Counter,
    pub result_bytes: Counter,
    pub sse_clients: Gauge,
    pub results_paused: Gauge,
    jobs: Family<Status, Gauge>,
    workers: Family<Status, Gauge>,
    worker_tiles: Family<WorkerId, Gauge<u64, AtomicU64>>,
    queued_tiles: Gauge,
    window_slots: Gauge,
    outstanding_tasks: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut m = Self {
            registry: Registry::with_prefix("tilepipe"),
            tiles_done: Counter::default(),
            tiles_retried: Counter::default(),
            tiles_failed: Counter::default(),
            tiles_dead_lettered: Counter::default(),
            // 1 ms to ~16 s.
            tile_seconds: Histogram::new(exponential_buckets(0.001, 2.0, 15)),
            upload_bytes: Counter::default(),
            cache_hits: Counter::default(),
            task_bytes: Counter::default(),
            result_bytes: Counter::default(),
            sse_clients: Gauge::default(),
            results_paused: Gauge::default(),
            jobs: Family::default(),
            workers: Family::default(),
            worker_tiles: Family::default(),
            queued_tiles: Gauge::default(),
            window_slots: Gauge::default(),
            outstanding_tasks: Gauge::default(),
        };
        let r = &mut m.registry;
        r.register("tiles_done", "Tiles finished and recorded", m.tiles_done.clone());
        r.register("tiles_retried", "Tiles sent again after a failure or a missed deadline", m.tiles_retried.clone());
        r.register("tiles_failed", "Failure replies from workers", m.tiles_failed.clone());
        r.register(
            "tiles_dead_lettered",
            "Tiles given up on and parked on the dead-letter topic",
            m.tiles_dead_lettered.clone(),
        );
        r.register("tile_processing_seconds", "Time workers spent on a tile's operations", m.tile_seconds.clone());
        r.register("upload_bytes", "Bytes of accepted uploads", m.upload_bytes.clone());
        r.register("cache_hits", "Jobs answered from the result cache", m.cache_hits.clone());
        r.register("task_bytes", "Bytes of tasks sent to the broker", m.task_bytes.clone());
        r.register("result_bytes", "Bytes of replies read from the broker", m.result_bytes.clone());
        r.register("sse_clients", "Browsers following the event stream", m.sse_clients.clone());
        r.register(
            "results_paused",
            "1 while the results reader is paused: no task has been outstanding for a while",
            m.results_paused.clone(),
        );
        r.register("jobs", "Jobs by status", m.jobs.clone());
        r.register("workers", "Workers by status", m.workers.clone());
        r.register("worker_tiles_done", "Tiles each worker reports done (from heartbeats)", m.worker_tiles.clone());
        r.register("queued_tiles", "Tiles of unfinished jobs not done yet", m.queued_tiles.clone());
        r.register("dispatch_window", "Tasks that may be outstanding on the broker at once", m.window_slots.clone());
        r.register("outstanding_tasks", "Tasks sent and not yet answered", m.outstanding_tasks.clone());
        m
    }
}

impl Metrics {
    pub fn observe_tile(&self, elapsed_ms: f64) {
        self.tiles_done.inc();
        self.tile_seconds.observe(elapsed_ms / 1000.0);
    }

    /// Reads the store's view into the gauges, then encodes everything.
    /// The metrics as OpenMetrics text; `window` is the dispatch window's
    /// size and the tasks it holds.
    pub async fn render(
        &self,
        store: &Store,
        window: (usize, usize),
        worker_timeout: Duration,
    ) -> anyhow::Result<String> {
        let stats = store.stats(now_ms(), worker_timeout).await?;
        let cancelled = stats.jobs_total - stats.jobs_queued - stats.jobs_running - stats.jobs_done - stats.jobs_failed;
        for (status, n) in [
            ("queued", stats.jobs_queued),
            ("running", stats.jobs_running),
            ("done", stats.jobs_done),
            ("failed", stats.jobs_failed),
            ("cancelled", cancelled),
        ] {
            self.jobs.get_or_create(&Status { status }).set(n as i64);
        }
        let workers = store.workers(now_ms(), worker_timeout).await?;
        for (status, want) in [("alive", WorkerStatus::Alive), ("lost", WorkerStatus::Lost)] {
            let n = workers.iter().filter(|w| w.status == want).count();
            self.workers.get_or_create(&Status { status }).set(n as i64);
        }
        self.worker_tiles.clear();
        for w in &workers {
            self.worker_tiles.get_or_create(&WorkerId { worker: w.id.clone() }).set(w.tiles_done);
        }
        self.queued_tiles.set(store.backlog().await?.1 as i64);
        let (slots, held) = window;
        self.window_slots.set(slots as i64);
        self.outstanding_tasks.set(held as i64);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)?;
        Ok(text)
    }
}
