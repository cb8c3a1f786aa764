//! Sending tiles again: after a worker reports a failure, and after a missed
//! deadline. A tile sent `max_attempts` times goes to the dead-letter topic
//! and its job fails with the reason.
//!
//! Deadlines are read from the broker rather than from a clock started at
//! dispatch, so a long backlog never looks like a lost tile: a tile's clock
//! starts when the workers' group commits past its task (a worker says it is
//! done). Until then the group itself redelivers it if its worker dies.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::FutureRecord;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::Jobs;
use super::active::Shared;
use super::tile::Placement;

/// How often deadlines are checked.
const SWEEP_EVERY: Duration = Duration::from_secs(2);

impl Jobs {
    /// Sends a tile again, unless it has used up its attempts: then it is
    /// dead-lettered and its job fails.
    pub(super) async fn retry(self: &Arc<Self>, id: &str, tile: u32, reason: &str) {
        let Some(active) = self.get(id) else { return };
        let (attempts, spent) = active.lock().expect("lock").attempts(tile);
        if spent >= self.settings.max_attempts {
            self.metrics.tiles_dead_lettered.inc();
            if let Err(e) = self.dead_letter(id, tile, reason).await {
                warn!(job = %id, tile, error = %e, "dead-lettering a tile");
            }
            let reason = format!("tile {tile} failed {attempts} times; last: {reason}");
            return self.fail(id, &reason).await;
        }
        match self.publish(id, tile, None).await {
            // Counted only when sent: a sweep and a failure report can race for one tile.
            Ok(true) => {
                info!(job = %id, tile, attempt = attempts + 1, reason, "sent a tile again");
                self.metrics.tiles_retried.inc();
            }
            Ok(false) => {}
            Err(e) => warn!(job = %id, tile, error = %e, "sending a tile again failed; the next sweep will retry"),
        }
    }

    /// Parks a tile's task on the dead-letter topic, with why, for inspection
    /// and replay.
    async fn dead_letter(&self, id: &str, tile: u32, reason: &str) -> anyhow::Result<()> {
        let Some((header, payload)) = self.get(id).and_then(|a| a.lock().expect("lock").task(id, tile)) else {
            return Ok(());
        };
        let payload = tokio::task::spawn_blocking(move || payload.encode(header)).await??;
        let key = pipeline::wire::TileKey::new(id, tile).to_string();
        let headers = OwnedHeaders::new().insert(Header { key: "error", value: Some(reason) });
        let record = FutureRecord::to(&self.topics.dead_letters).key(&key).payload(&payload).headers(headers);
        self.producer.send(record, Duration::from_secs(30)).await.map_err(|(e, _)| e)?;
        warn!(job = %id, tile, topic = %self.topics.dead_letters, "tile dead-lettered");
        Ok(())
    }

    /// Checks every placed tile against the workers' progress until `shutdown`.
    pub async fn watch_deadlines(self: Arc<Self>, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(SWEEP_EVERY);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            for (id, tile, reason) in self.overdue().await {
                let this = Arc::clone(&self);
                tokio::spawn(async move { this.retry(&id, tile, &reason).await });
            }
        }
    }

    /// Tiles to send again: those whose task the broker no longer has, and
    /// those committed by a worker longer than the tile timeout ago without
    /// a result.
    async fn overdue(&self) -> Vec<(String, u32, String)> {
        // Placements first, then the broker's positions: a tile placed after
        // the positions were read is never judged against them.
        let placed: Vec<(String, Shared, u32, Placement)> = {
            let jobs = self.active.lock().expect("lock");
            jobs.iter()
                .flat_map(|(id, active)| {
                    let placements = active.lock().expect("lock").placements();
                    placements.into_iter().map(|(tile, at)| (id.clone(), Arc::clone(active), tile, at))
                })
                .collect()
        };
        if placed.is_empty() {
            return Vec::new();
        }
        let partitions: BTreeSet<i32> = placed.iter().map(|(.., at)| at.partition).collect();
        let progress = self.progress.clone();
        let positions = match tokio::task::spawn_blocking(move || progress.read(&partitions)).await {
            Ok(Ok(positions)) => positions,
            Ok(Err(e)) => return warn_empty(&e),
            Err(e) => return warn_empty(&e),
        };
        let clock = (Instant::now(), self.settings.tile_timeout);
        let mut overdue = Vec::new();
        for (id, active, tile, at) in placed {
            let Some(&position) = positions.get(&at.partition) else { continue };
            if let Some(why) = active.lock().expect("lock").overdue(tile, at, position, clock) {
                overdue.push((id, tile, why.to_string()));
            }
        }
        overdue
    }
}

fn warn_empty<T>(e: &dyn std::fmt::Display) -> Vec<T> {
    warn!(error = %e, "reading the workers' progress");
    Vec::new()
}
