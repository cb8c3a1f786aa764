//! A tilepipe worker: a member of the workers' consumer group that processes
//! tiles from the tasks topic and publishes them on the results topic.
//!
//! A task's offset is stored only after its result was acknowledged by the
//! broker, so a worker that dies mid-tile leaves the tile to another member.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

mod clients;
mod heartbeat;
mod held;
mod stopped;
mod task;
pub mod usage;

use anyhow::Context;
use clap::Parser;
use futures::stream::FuturesOrdered;
use futures::{FutureExt, StreamExt};
use pipeline::wire::{TileKey, Topics};
use plumbing::kafka::LoggedConsumer;
use rdkafka::Message;
use rdkafka::consumer::Consumer;
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::message::OwnedHeaders;
use rdkafka::producer::{FutureProducer, FutureRecord};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use clients::{Clients, leave};
use heartbeat::{Status, heartbeats};
use held::Held;
use task::{Outgoing, handle};

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

/// Runs the worker until `shutdown` is cancelled, then leaves the group.
pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    let id = config.id();
    let topics = Topics::new(&config.topic_prefix);
    let Clients { producer, consumer, control } = Clients::create(&config, &id, &topics)?;
    // Learn which jobs are stopped before taking their tasks.
    let stopped = Arc::new(stopped::Stopped::default());
    let follower = Arc::clone(&stopped).follow(control, topics.control.clone(), shutdown.clone()).await;
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

    // Replies sent and not yet acknowledged, oldest first: the next tile is
    // processed while the broker stores the last ones, and a task's offset
    // is stored only once its reply (and every earlier one) is acknowledged.
    let mut in_flight = FuturesOrdered::new();
    // Replies not yet sent: held while more tasks are queued, so that
    // several go in one request (see `held`).
    let mut held = Held::new(IN_FLIGHT / 2);
    // The last tile's job, and how long it took.
    let (mut last_job, mut tile) = (None::<String>, Duration::ZERO);
    'tasks: loop {
        let room = in_flight.len() + held.len() < IN_FLIGHT && !shutdown.is_cancelled();
        let queued = room.then(|| consumer.recv().now_or_never()).flatten();
        let alike = match &queued {
            Some(Ok(next)) => last_job.is_some() && job_of(next) == last_job.as_deref(),
            _ => false,
        };
        if held.due(Instant::now(), alike, tile) {
            for (outgoing, task) in held.take() {
                in_flight.push_back(send_reply(&producer, outgoing, task, &shutdown));
            }
        }
        // The acknowledgements already in; a new reply's first poll hands
        // it to the producer.
        while let Some(Some(reply)) = in_flight.next().now_or_never() {
            let reply: Reply = reply;
            if !reply.acknowledge(&consumer, &status) {
                break 'tasks;
            }
        }
        let message = match queued {
            Some(message) => message,
            None => tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                Some(reply) = in_flight.next(), if !in_flight.is_empty() => {
                    if !reply.acknowledge(&consumer, &status) {
                        break;
                    }
                    continue;
                }
                message = consumer.recv(), if in_flight.len() + held.len() < IN_FLIGHT => message,
            },
        };
        let message = match message {
            Ok(m) => m,
            Err(e) => {
                warn!(error = %e, "tasks consumer");
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        let task =
            TaskAt { topic: message.topic().to_owned(), partition: message.partition(), offset: message.offset() };
        let started = Instant::now();
        let outgoing = handle(&message, &id, &topics, &stopped, &status).await;
        (last_job, tile) = (job_of(&message).map(str::to_owned), started.elapsed());
        held.push((outgoing, task), Instant::now());
    }
    // Tiles processed are worth sending, even when stopping.
    for (outgoing, task) in held.take() {
        in_flight.push_back(send_reply(&producer, outgoing, task, &shutdown));
    }
    settle(&mut in_flight, &consumer, &status, &id).await;

    info!(worker = %id, "leaving the group");
    shutdown.cancel();
    let _ = beats.await;
    let _ = follower.await;
    drop(in_flight); // replies never acknowledged: their tasks go to the group
    leave(&id, producer, consumer).await;
    Ok(())
}

/// Sends a task's reply (nothing for a skipped task).
async fn send_reply(
    producer: &FutureProducer,
    outgoing: Option<Outgoing>,
    task: TaskAt,
    shutdown: &CancellationToken,
) -> Reply {
    let processed = matches!(outgoing, Some(Outgoing { processed: true, .. }));
    let sent = match outgoing {
        Some(o) => send(producer, &o.topic, o.key.as_deref(), &o.payload, o.headers, shutdown).await,
        None => true, // skipped: nothing to send
    };
    Reply { sent, processed, task }
}

/// Acknowledges the replies still in flight as the broker takes them, for
/// at most ten seconds: those already with the broker usually are within
/// milliseconds; a reply never acknowledged leaves its task to the group.
async fn settle(
    in_flight: &mut FuturesOrdered<impl Future<Output = Reply>>,
    consumer: &LoggedConsumer,
    status: &Status,
    id: &str,
) {
    let drain = async {
        while let Some(reply) = in_flight.next().await {
            if !reply.acknowledge(consumer, status) {
                break;
            }
        }
    };
    if tokio::time::timeout(Duration::from_secs(10), drain).await.is_err() {
        warn!(worker = %id, "replies not acknowledged in time; their tiles go to other workers");
    }
}

/// The job a task's key names, if it names one.
fn job_of(message: &impl Message) -> Option<&str> {
    let key = std::str::from_utf8(message.key()?).ok()?;
    TileKey::parse(key).map(|k| k.job_id)
}

/// Replies held, or sent and not yet acknowledged, at most. Half may be
/// held: eight replies a request rather than four cut the broker's
/// statements per job by a tenth (docs/performance.md, "Replies held").
const IN_FLIGHT: usize = 16;

/// Where a task was read from.
struct TaskAt {
    topic: String,
    partition: i32,
    offset: i64,
}

/// What became of a task's reply.
struct Reply {
    /// The broker acknowledged it (or there was nothing to send); false if
    /// the worker stopped first.
    sent: bool,
    /// The tile was processed (not skipped or failed).
    processed: bool,
    task: TaskAt,
}

impl Reply {
    /// Counts the tile and stores its task's offset, to be committed; false
    /// if the reply was never sent (the worker is stopping).
    fn acknowledge(&self, consumer: &LoggedConsumer, status: &Status) -> bool {
        if !self.sent {
            return false;
        }
        if self.processed {
            status.done.fetch_add(1, Ordering::Relaxed);
        }
        let TaskAt { topic, partition, offset } = &self.task;
        match consumer.store_offset(topic, *partition, *offset) {
            Ok(()) => {}
            // A rebalance took the partition from this worker meanwhile: its
            // next owner reads the task again from the last committed offset,
            // and the master counts the tile once.
            Err(e) if e.rdkafka_error_code() == Some(RDKafkaErrorCode::State) => {
                info!(partition, offset, "a rebalance took the task's partition before its reply was acknowledged")
            }
            Err(e) => warn!(error = %e, "storing task offset"),
        }
        true
    }
}

/// Sends a record, retrying while the broker is away; false if shut down first.
async fn send(
    producer: &FutureProducer,
    topic: &str,
    key: Option<&[u8]>,
    payload: &[u8],
    headers: Option<OwnedHeaders>,
    shutdown: &CancellationToken,
) -> bool {
    loop {
        let record = FutureRecord {
            topic,
            partition: None,
            payload: Some(payload),
            key,
            timestamp: None,
            headers: headers.clone(),
        };
        match producer.send(record, Duration::from_secs(10)).await {
            Ok(_) => return true,
            Err((e, _)) => warn!(error = %e, topic, "publishing; retrying"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return false,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}
