//! A tilepipe worker: a member of the workers' consumer group that processes
//! tiles from the tasks topic and publishes them on the results topic.
//!
//! A task's offset is stored only after its result was acknowledged by the
//! broker, so a worker that dies mid-tile leaves the tile to another member.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

mod stopped;
pub mod usage;

use anyhow::Context;
use clap::Parser;
use futures::StreamExt;
use futures::stream::FuturesOrdered;
use pipeline::codec::{self, Encoding};
use pipeline::ops;
use pipeline::wire::{
    Heartbeat, MAX_MESSAGE_BYTES, ResultHeader, Task, TaskHeader, TaskIds, TileFailure, TileKey, Topics,
};
use plumbing::kafka::{EnvOverrides, Logged, LoggedConsumer, client_config};
use rdkafka::Message;
use rdkafka::consumer::Consumer;
use rdkafka::message::{BorrowedMessage, Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

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
    loop {
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            Some(reply) = in_flight.next(), if !in_flight.is_empty() => {
                let reply: Reply = reply;
                if !reply.sent {
                    break;
                }
                reply.acknowledge(&consumer, &status);
            }
            message = consumer.recv(), if in_flight.len() < IN_FLIGHT => {
                let message = match message {
                    Ok(m) => m,
                    Err(e) => {
                        warn!(error = %e, "tasks consumer");
                        tokio::time::sleep(Duration::from_millis(500)).await;
                        continue;
                    }
                };
                let task = TaskAt { topic: message.topic().to_owned(), partition: message.partition(), offset: message.offset() };
                let outgoing = handle(&message, &id, &topics, &stopped, &status).await;
                in_flight.push_back(send_reply(&producer, outgoing, task, &shutdown));
            }
        }
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
            if !reply.sent {
                break;
            }
            reply.acknowledge(consumer, status);
        }
    };
    if tokio::time::timeout(Duration::from_secs(10), drain).await.is_err() {
        warn!(worker = %id, "replies not acknowledged in time; their tiles go to other workers");
    }
}

/// The worker's Kafka clients.
struct Clients {
    producer: FutureProducer,
    /// A member of the workers' group on the tasks topic.
    consumer: LoggedConsumer,
    /// Reads `control` from its start (assigned, never committing).
    control: LoggedConsumer,
}

impl Clients {
    fn create(config: &Config, id: &str, topics: &Topics) -> anyhow::Result<Self> {
        let mut client = client_config(&config.brokers);
        let producer: FutureProducer = client
            .clone()
            .set("message.max.bytes", MAX_MESSAGE_BYTES.to_string())
            .set("linger.ms", "0")
            .set("acks", "all")
            .env_overrides()
            .create()
            .context("creating Kafka producer")?;
        let consumer: LoggedConsumer = client
            .set("group.id", &topics.workers_group)
            .set("client.id", id)
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
            // The master keeps only a window of tasks queued, so a worker must
            // hear of a new one soon.
            .set("fetch.wait.max.ms", plumbing::kafka::PROMPT_FETCH_WAIT_MS.to_string())
            .env_overrides()
            .create_with_context(Logged::new("tasks"))
            .context("creating Kafka consumer")?;
        // librdkafka wants a group even for assigned partitions; this one never
        // joins or commits.
        let control: LoggedConsumer = client_config(&config.brokers)
            .set("group.id", format!("{}-control-{id}", topics.workers_group))
            .set("enable.auto.commit", "false")
            .set("topic.metadata.refresh.interval.ms", "5000")
            .set("fetch.wait.max.ms", plumbing::kafka::RELAXED_FETCH_WAIT_MS.to_string())
            .env_overrides()
            .create_with_context(Logged::new("control"))
            .context("creating Kafka control consumer")?;
        Ok(Clients { producer, consumer, control })
    }
}

/// Flushes the producer, then leaves the group.
async fn leave(id: &str, producer: FutureProducer, consumer: LoggedConsumer) {
    let _ = producer.flush(Duration::from_secs(5));
    // Dropping the consumer commits stored offsets and leaves the group
    // (blocking), so the others get its partitions at once. Bounded: with the
    // broker gone there is no group to leave.
    let leave = tokio::task::spawn_blocking(move || drop(consumer));
    if tokio::time::timeout(Duration::from_secs(10), leave).await.is_err() {
        warn!(worker = %id, "could not leave the group in time (broker unreachable?)");
    }
}

/// Runs a task's operations and encodes the result message, off the async
/// threads. For a JPEG result the tile travels as a JPEG of the job's
/// quality, which the master joins without decoding; otherwise as PNG:
/// processed tiles compress to about a fifth (blurred noise), and the broker
/// carries fewer bytes (see the README).
async fn process(task: Task, worker_id: &str) -> anyhow::Result<Vec<u8>> {
    let Task { header, input } = task;
    ops::validate_chain(&header.ops)?;
    anyhow::ensure!(header.halo == ops::chain_halo(&header.ops), "halo does not match the operations");
    let worker_id = worker_id.to_owned();
    tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        let output = ops::process_tile(&header.ops, input, header.halo);
        let elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
        let jpeg = header.jpeg_quality.and_then(|quality| pipeline::jpeg::encode_tile(&output, quality).ok());
        let (encoding, pixels) = match jpeg {
            Some(jpeg) => (Encoding::Jpeg, jpeg),
            None => (Encoding::Png, codec::encode(&output, Encoding::Png)),
        };
        let result = ResultHeader {
            job_id: header.job_id,
            tile: header.tile,
            rect: header.rect,
            worker_id,
            elapsed_ms,
            channels: output.channels,
            encoding,
        };
        result.encode(&pixels)
    })
    .await
    .map_err(|e| anyhow::anyhow!("the operations panicked: {}", panic_message(e)))
}

fn panic_message(e: tokio::task::JoinError) -> String {
    match e.try_into_panic() {
        Ok(panic) => panic
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "no message".to_owned()),
        Err(e) => e.to_string(),
    }
}

/// Replies sent and not yet acknowledged, at most.
const IN_FLIGHT: usize = 8;

/// A record to send for a task.
struct Outgoing {
    topic: String,
    key: Option<Vec<u8>>,
    payload: Vec<u8>,
    headers: Option<OwnedHeaders>,
    /// A tile processed (rather than a failure reported or a task parked).
    processed: bool,
}

/// What to send for a task: its result, a failure report, or the task itself
/// to the dead-letter topic; nothing for a tile of a stopped job.
async fn handle(
    message: &BorrowedMessage<'_>,
    id: &str,
    topics: &Topics,
    stopped: &stopped::Stopped,
    status: &Status,
) -> Option<Outgoing> {
    let payload = message.payload().unwrap_or_default();
    let failure = match Task::decode(payload) {
        Ok(task) if stopped.contains(&task.header.job_id) => {
            debug!(job = %task.header.job_id, tile = task.header.tile, "skipping a tile of a stopped job");
            return None;
        }
        Ok(task) => match run_task(task, id, status).await {
            Ok((key, payload)) => {
                let (topic, key) = (topics.results.clone(), Some(key.into_bytes()));
                return Some(Outgoing { topic, key, payload, headers: None, processed: true });
            }
            Err(failure) => failure,
        },
        Err(e) => {
            warn!(error = %e, offset = message.offset(), "a malformed task");
            // Tell the master if the task says whose it is; else park it.
            let Some(TaskIds { job_id, tile, attempt }) = TaskHeader::peek(payload) else {
                let headers = OwnedHeaders::new().insert(Header { key: "error", value: Some(&e.to_string()) });
                return Some(Outgoing {
                    topic: topics.dead_letters.clone(),
                    key: message.key().map(<[u8]>::to_vec),
                    payload: payload.to_vec(),
                    headers: Some(headers),
                    processed: false,
                });
            };
            TileFailure {
                job_id,
                tile,
                worker_id: id.to_owned(),
                error: format!("malformed task: {e}"),
                attempt,
                unsupported: TaskHeader::unknown_op(payload),
            }
        }
    };
    let key = TileKey::new(&failure.job_id, failure.tile).to_string();
    Some(Outgoing {
        topic: topics.results.clone(),
        key: Some(key.into_bytes()),
        payload: failure.encode(),
        headers: None,
        processed: false,
    })
}

/// Processes a task, named in the heartbeats meanwhile: its key and result
/// message, or the failure to report.
async fn run_task(task: Task, id: &str, status: &Status) -> Result<(String, Vec<u8>), TileFailure> {
    let (job, tile, attempt) = (task.header.job_id.clone(), task.header.tile, task.header.attempt);
    let key = TileKey::new(&job, tile).to_string();
    *status.current.lock().expect("lock") = Some(key.clone());
    let result = process(task, id).await;
    *status.current.lock().expect("lock") = None;
    result.map(|payload| (key, payload)).map_err(|e| {
        warn!(job = %job, tile, error = %e, "a tile failed");
        TileFailure { job_id: job, tile, worker_id: id.to_owned(), error: format!("{e:#}"), attempt, unsupported: None }
    })
}

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
    /// Counts the tile and stores its task's offset, to be committed.
    fn acknowledge(&self, consumer: &LoggedConsumer, status: &Status) {
        if self.processed {
            status.done.fetch_add(1, Ordering::Relaxed);
        }
        let TaskAt { topic, partition, offset } = &self.task;
        if let Err(e) = consumer.store_offset(topic, *partition, *offset) {
            warn!(error = %e, "storing task offset");
        }
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

async fn heartbeats(
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
