//! A tilepipe worker: a member of the workers' consumer group that processes
//! tiles from the tasks topic and publishes them on the results topic.
//!
//! A task's offset is stored only after its result was acknowledged by the
//! broker, so a worker that dies mid-tile leaves the tile to another member.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use pipeline::ops;
use pipeline::wire::{Heartbeat, MAX_MESSAGE_BYTES, ResultHeader, Task, TileResult, Topics};
use rdkafka::ClientConfig;
use rdkafka::Message;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

#[derive(Debug, Clone, Parser)]
#[command(name = "worker", about = "tilepipe worker: processes tiles from Kafka")]
pub struct Config {
    /// Kafka bootstrap servers, comma separated.
    #[arg(long, env = "TILEPIPE_BROKERS", default_value = "127.0.0.1:9092")]
    pub brokers: String,

    /// Prefix of the topic and consumer-group names; must match the server's.
    #[arg(long, env = "TILEPIPE_TOPIC_PREFIX", default_value = "")]
    pub topic_prefix: String,

    /// This worker's id, shown on the dashboard (default: host name and process id).
    #[arg(long, env = "TILEPIPE_WORKER_ID")]
    pub worker_id: Option<String>,

    /// Seconds between heartbeats.
    #[arg(long, env = "TILEPIPE_HEARTBEAT_SECS", default_value_t = 5)]
    pub heartbeat_secs: u64,

    /// Consumer-group session timeout: how long the group waits for a worker
    /// that vanished without leaving before giving its tiles to others.
    #[arg(long, env = "TILEPIPE_SESSION_TIMEOUT_MS", default_value_t = 10_000)]
    pub session_timeout_ms: u32,
}

impl Config {
    pub fn id(&self) -> String {
        self.worker_id
            .clone()
            .unwrap_or_else(|| format!("{}-{}", gethostname::gethostname().to_string_lossy(), std::process::id()))
    }
}

/// What the heartbeats report.
#[derive(Default)]
struct Status {
    current: Mutex<Option<String>>,
    done: AtomicU64,
}

/// Runs the worker until `shutdown` is cancelled, then leaves the group.
pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    let id = config.id();
    let topics = Topics::new(&config.topic_prefix);
    let mut client = ClientConfig::new();
    client.set("bootstrap.servers", &config.brokers);
    let producer: FutureProducer = client
        .clone()
        .set("message.max.bytes", MAX_MESSAGE_BYTES.to_string())
        .set("linger.ms", "0")
        .set("acks", "all")
        .create()
        .context("creating Kafka producer")?;
    let consumer: StreamConsumer = client
        .set("group.id", &topics.workers_group)
        .set("client.id", &id)
        .set("enable.auto.commit", "true")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", config.session_timeout_ms.to_string())
        .set("heartbeat.interval.ms", (config.session_timeout_ms / 4).max(100).to_string())
        .set("fetch.message.max.bytes", MAX_MESSAGE_BYTES.to_string())
        // Notice a tasks topic created after this worker started within seconds.
        .set("topic.metadata.refresh.interval.ms", "5000")
        // One tile at a time per worker: do not hoard tasks other members could take.
        .set("queued.max.messages.kbytes", "16384")
        .create()
        .context("creating Kafka consumer")?;
    consumer.subscribe(&[&topics.tasks]).context("subscribing to tasks")?;
    info!(worker = %id, brokers = %config.brokers, topic = %topics.tasks, "worker started");

    let status = Arc::new(Status::default());
    let beats = tokio::spawn(heartbeats(
        producer.clone(),
        topics.heartbeats.clone(),
        id.clone(),
        Arc::clone(&status),
        Duration::from_secs(config.heartbeat_secs.max(1)),
        shutdown.clone(),
    ));

    loop {
        let message = tokio::select! {
            _ = shutdown.cancelled() => break,
            m = consumer.recv() => m,
        };
        let message = match message {
            Ok(m) => m,
            Err(e) => {
                warn!(error = %e, "tasks consumer");
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        let task = match Task::decode(message.payload().unwrap_or_default()) {
            Ok(task) => task,
            Err(e) => {
                warn!(error = %e, offset = message.offset(), "skipping malformed task");
                let _ = consumer.store_offset_from_message(&message);
                continue;
            }
        };
        let (job, tile) = (task.header.job_id.clone(), task.header.tile);
        *status.current.lock().expect("lock") = Some(format!("{job}/{tile}"));
        let result = process(task, &id).await;
        *status.current.lock().expect("lock") = None;
        match result {
            Ok(result) => {
                if !publish(&producer, &topics.results, &result, &shutdown).await {
                    // Shutting down before the broker took it: the tile is not
                    // marked consumed, so the group hands it to someone else.
                    break;
                }
                status.done.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                warn!(job = %job, tile, error = %e, "skipping a tile that cannot be processed")
            }
        }
        if let Err(e) = consumer.store_offset_from_message(&message) {
            warn!(error = %e, "storing task offset");
        }
    }

    info!(worker = %id, "leaving the group");
    shutdown.cancel();
    let _ = beats.await;
    let _ = producer.flush(Duration::from_secs(5));
    // Dropping the consumer commits stored offsets and leaves the group
    // (blocking), so the others get its partitions at once. Bounded: with the
    // broker gone there is no group to leave.
    let leave = tokio::task::spawn_blocking(move || drop(consumer));
    if tokio::time::timeout(Duration::from_secs(10), leave).await.is_err() {
        warn!(worker = %id, "could not leave the group in time (broker unreachable?)");
    }
    Ok(())
}

async fn process(task: Task, worker_id: &str) -> anyhow::Result<TileResult> {
    let Task { header, input } = task;
    ops::validate_chain(&header.ops)?;
    anyhow::ensure!(header.halo == ops::chain_halo(&header.ops), "halo does not match the operations");
    let (ops, halo) = (header.ops, header.halo);
    let started = Instant::now();
    let output = tokio::task::spawn_blocking(move || ops::process_tile(&ops, input, halo))
        .await
        .context("the operation panicked")?;
    Ok(TileResult {
        header: ResultHeader {
            job_id: header.job_id,
            tile: header.tile,
            rect: header.rect,
            worker_id: worker_id.to_owned(),
            elapsed_ms: started.elapsed().as_secs_f64() * 1000.0,
        },
        output,
    })
}

/// Sends a result, retrying while the broker is away; false if shut down first.
async fn publish(producer: &FutureProducer, topic: &str, result: &TileResult, shutdown: &CancellationToken) -> bool {
    let payload = result.encode();
    let key = format!("{}/{}", result.header.job_id, result.header.tile);
    loop {
        let record = FutureRecord::to(topic).key(&key).payload(&payload);
        match producer.send(record, Duration::from_secs(10)).await {
            Ok(_) => return true,
            Err((e, _)) => warn!(error = %e, key = %key, "publishing result; retrying"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return false,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

async fn heartbeats(
    producer: FutureProducer,
    topic: String,
    id: String,
    status: Arc<Status>,
    every: Duration,
    shutdown: CancellationToken,
) {
    let host = gethostname::gethostname().to_string_lossy().into_owned();
    let mut tick = tokio::time::interval(every);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tick.tick() => {}
        }
        let beat = Heartbeat {
            worker_id: id.clone(),
            host: host.clone(),
            pid: std::process::id(),
            current_tile: status.current.lock().expect("lock").clone(),
            tiles_done: status.done.load(Ordering::Relaxed),
            sent_at_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64),
        };
        let payload = beat.encode();
        let record = FutureRecord::to(&topic).key(&id).payload(&payload);
        if let Err((e, _)) = producer.send(record, Duration::from_secs(5)).await {
            warn!(error = %e, "sending heartbeat");
        }
    }
}
