//! Worker health: heartbeats from Kafka into the store, and a sweep that
//! announces workers turning lost (silent past the timeout) or alive again.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use app::api::{Event, WorkerStatus};
use pipeline::wire::Heartbeat;
use plumbing::kafka::LoggedConsumer;
use rdkafka::Message;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::jobs::Window;
use crate::sse::Events;
use crate::store::Store;
use plumbing::{ms_ago, now_ms};

pub async fn consume_heartbeats(
    consumer: LoggedConsumer,
    store: Store,
    events: Events,
    timeout: Duration,
    shutdown: CancellationToken,
) {
    while let Some(message) = crate::kafka::next_message(&consumer, &shutdown, "heartbeats").await {
        match Heartbeat::decode(message.payload().unwrap_or_default()) {
            Ok(hb) => match store.record_heartbeat(&hb, now_ms(), timeout).await {
                Ok(worker) => events.emit(Event::Worker(worker)),
                Err(e) => warn!(error = %e, "recording heartbeat"),
            },
            Err(e) => warn!(error = %e, "skipping malformed heartbeat"),
        }
        // No offsets are stored: a restarted master reads only new heartbeats,
        // so replayed old ones never show a dead worker alive.
    }
    tokio::task::spawn_blocking(move || drop(consumer));
}

/// Emits a worker event whenever a worker's status changes by the passing of
/// time alone (heartbeats announce themselves), forgets workers unseen for
/// `retention`, and sizes the dispatch window for the workers alive.
pub async fn sweep_liveness(
    store: Store,
    events: Events,
    (timeout, retention): (Duration, Duration),
    window: Arc<Window>,
    shutdown: CancellationToken,
) {
    let mut known: HashMap<String, WorkerStatus> = HashMap::new();
    let mut alive_before = 0;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tick.tick() => {}
        }
        match store.forget_workers(ms_ago(retention)).await {
            Ok(gone) => {
                for id in gone {
                    info!(worker = %id, "worker forgotten after the retention period");
                    known.remove(&id);
                    events.emit(Event::WorkerGone(id));
                }
            }
            Err(e) => warn!(error = %e, "forgetting old workers"),
        }
        let Ok(workers) = store.workers(now_ms(), timeout).await else {
            continue;
        };
        let alive = workers.iter().filter(|w| w.status == WorkerStatus::Alive).count();
        window.resize(alive);
        let partitions = window.partitions();
        if alive != alive_before && alive > partitions {
            warn!(
                alive,
                partitions,
                "more workers than task partitions: {} of them get no tasks; give a new topic prefix a tasks \
                 topic with more partitions (TILEPIPE_TASK_PARTITIONS)",
                alive - partitions
            );
        }
        alive_before = alive;
        for worker in workers {
            let previous = known.insert(worker.id.clone(), worker.status);
            if previous.is_some_and(|p| p != worker.status) {
                info!(worker = %worker.id, status = ?worker.status, "worker status changed");
                events.emit(Event::Worker(worker));
            }
        }
    }
}
