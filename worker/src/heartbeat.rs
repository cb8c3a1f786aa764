//! The worker's heartbeats: who it is, what it is doing, and what it costs.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pipeline::wire::Heartbeat;
use rdkafka::producer::{FutureProducer, FutureRecord};
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::usage;

/// What the heartbeats report.
#[derive(Default)]
pub(crate) struct Status {
    pub current: Mutex<Option<String>>,
    pub done: AtomicU64,
}

pub(crate) async fn heartbeats(
    producer: FutureProducer,
    topic: String,
    id: String,
    status: Arc<Status>,
    every: Duration,
    shutdown: CancellationToken,
) {
    let host = gethostname::gethostname().to_string_lossy().into_owned();
    let runtime = format!("tilepipe-worker {} (Rust)", env!("CARGO_PKG_VERSION"));
    let mut usage = usage::Usage::default();
    let mut tick = tokio::time::interval(every);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tick.tick() => {}
        }
        let (cpu_percent, rss_bytes) = usage.sample();
        let beat = Heartbeat {
            worker_id: id.clone(),
            host: host.clone(),
            pid: std::process::id(),
            current_tile: status.current.lock().expect("lock").clone(),
            tiles_done: status.done.load(Ordering::Relaxed),
            sent_at_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64),
            cpu_percent,
            rss_bytes,
            runtime: Some(runtime.clone()),
        };
        let payload = beat.encode();
        let record = FutureRecord::to(&topic).key(&id).payload(&payload);
        if let Err((e, _)) = producer.send(record, Duration::from_secs(5)).await {
            warn!(error = %e, "sending heartbeat");
        }
    }
}
