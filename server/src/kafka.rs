//! Kafka plumbing of the master: topic creation, the producer, the consumers.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use pipeline::wire::{MAX_MESSAGE_BYTES, Topics};
use plumbing::kafka::{EnvOverrides, Logged, LoggedConsumer, client_config};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaResult;
use rdkafka::message::BorrowedMessage;
use rdkafka::producer::{FutureProducer, Producer};
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::warn;

pub fn producer(brokers: &str) -> anyhow::Result<FutureProducer> {
    client_config(brokers)
        .set("message.max.bytes", MAX_MESSAGE_BYTES.to_string())
        // Tasks refilled as a group of results comes in share a produce
        // request: nisshi's cost is per partition written in a request (a
        // transaction and four statements). 2 ms: 1.5 tasks a write; 10 ms:
        // 3.3 (docs/performance.md, "Fewer broker statements").
        .set("linger.ms", "10")
        .set("acks", "all")
        .env_overrides()
        .create()
        .context("creating Kafka producer")
}

/// A consumer whose offsets are stored by the application only after a
/// message's effects are durable, then committed in the background; `name`
/// tells it apart in the logs, `fetch_wait_ms` is how promptly it hears of
/// a new message (see [`plumbing::kafka::PROMPT_FETCH_WAIT_MS`]).
pub fn consumer(
    brokers: &str,
    (group, topic): (&str, &str),
    from_earliest: bool,
    fetch_wait_ms: u32,
    name: &'static str,
) -> anyhow::Result<LoggedConsumer> {
    let consumer: LoggedConsumer = client_config(brokers)
        .set("group.id", group)
        .set("enable.auto.commit", "true")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", if from_earliest { "earliest" } else { "latest" })
        .set("session.timeout.ms", "10000")
        .set("fetch.message.max.bytes", MAX_MESSAGE_BYTES.to_string())
        .set("fetch.wait.max.ms", fetch_wait_ms.to_string())
        // librdkafka prefetches up to 64 MB by default: results are read as
        // fast as they are stored, so a few MB ahead is plenty.
        .set("queued.max.messages.kbytes", "8192")
        .env_overrides()
        .create_with_context(Logged::new(name))
        .context("creating Kafka consumer")?;
    consumer.subscribe(&[topic]).context("subscribing")?;
    Ok(consumer)
}

/// How many partitions `topic` has (at least one).
pub async fn partitions(producer: &FutureProducer, topic: &str) -> anyhow::Result<usize> {
    let (producer, name) = (producer.clone(), topic.to_owned());
    let metadata = tokio::task::spawn_blocking(move || producer.client().fetch_metadata(Some(&name), TIMEOUT))
        .await?
        .with_context(|| format!("reading the metadata of {topic}"))?;
    let count = metadata.topics().iter().find(|t| t.name() == topic).map_or(0, |t| t.partitions().len());
    anyhow::ensure!(count > 0, "the topic {topic} has no partitions");
    Ok(count)
}

const TIMEOUT: Duration = Duration::from_secs(10);

/// Whether the broker answers a metadata request within `timeout`.
pub async fn check_reachable(producer: &FutureProducer, timeout: Duration) -> anyhow::Result<()> {
    let producer = producer.clone();
    tokio::task::spawn_blocking(move || producer.client().fetch_metadata(None, timeout))
        .await?
        .context("the broker does not answer")?;
    Ok(())
}

/// Where the workers' group stands in a partition of the tasks topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    /// The group's committed offset (the next task it will take), if any.
    pub committed: Option<i64>,
    /// The partition's end: one past its last task.
    pub end: i64,
}

/// Reads the workers' group's progress through the tasks topic. Its consumer
/// never subscribes, so it never joins (or disturbs) that group.
#[derive(Clone)]
pub struct TaskProgress {
    consumer: Arc<BaseConsumer>,
    topic: String,
}

impl TaskProgress {
    pub fn new(brokers: &str, topics: &Topics) -> anyhow::Result<Self> {
        let consumer = client_config(brokers)
            .set("group.id", &topics.workers_group)
            .set("enable.auto.commit", "false")
            .env_overrides()
            .create()
            .context("creating Kafka progress reader")?;
        Ok(Self { consumer: Arc::new(consumer), topic: topics.tasks.clone() })
    }

    /// Blocking: a round trip to the broker per partition.
    pub fn read(&self, partitions: &BTreeSet<i32>) -> KafkaResult<HashMap<i32, Position>> {
        const TIMEOUT: Duration = Duration::from_secs(5);
        let mut list = TopicPartitionList::new();
        for &p in partitions {
            list.add_partition(&self.topic, p);
        }
        let committed = self.consumer.committed_offsets(list, TIMEOUT)?;
        partitions
            .iter()
            .map(|&p| {
                let (_, end) = self.consumer.fetch_watermarks(&self.topic, p, TIMEOUT)?;
                let committed = match committed.find_partition(&self.topic, p).map(|e| e.offset()) {
                    Some(Offset::Offset(o)) => Some(o),
                    _ => None,
                };
                Ok((p, Position { committed, end }))
            })
            .collect()
    }
}

/// The consumer's next message, or `None` once `shutdown` is cancelled.
/// Errors (the broker away, a rebalance) are logged and waited out: librdkafka
/// reconnects by itself.
pub async fn next_message<'a>(
    consumer: &'a LoggedConsumer,
    shutdown: &CancellationToken,
    what: &str,
) -> Option<BorrowedMessage<'a>> {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return None,
            message = consumer.recv() => match message {
                Ok(message) => return Some(message),
                Err(e) => {
                    warn!(error = %e, consumer = what, "Kafka consumer");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            },
        }
    }
}

/// Makes librdkafka fetch a resumed partition now. Resuming only clears a
/// flag: the thread that fetches from the broker sees it when something
/// else wakes it, or after up to a second of waiting on its socket (seen
/// here as 0.2 to 0.9 s before the first result of a job that followed an
/// idle spell; confluent-kafka-go#630). Any request to that broker wakes
/// it, so ask for each resumed partition's watermarks: a cheap read.
async fn wake_fetcher(consumer: Arc<LoggedConsumer>) {
    let woken = tokio::task::spawn_blocking(move || {
        let assignment = consumer.assignment()?;
        for element in assignment.elements() {
            consumer.fetch_watermarks(element.topic(), element.partition(), TIMEOUT)?;
        }
        Ok::<_, rdkafka::error::KafkaError>(())
    })
    .await;
    if let Ok(Err(e)) = woken {
        warn!(error = %e, "waking the results reader");
    }
}

/// How long no task may be outstanding before the results reader stops
/// polling: long enough that jobs one after another do not toggle it.
const IDLE_PAUSE: Duration = Duration::from_secs(2);

/// Pauses `consumer` while no task has been outstanding for [`IDLE_PAUSE`],
/// and resumes it as soon as one is, until `shutdown`: nisshi answers an
/// empty fetch by reading its storage again and again, so an idle reader
/// still costs the broker CPU (see `PROMPT_FETCH_WAIT_MS`). A paused
/// partition is fetched again from the next result not yet read.
pub async fn pause_while_idle(
    consumer: Arc<LoggedConsumer>,
    mut busy: watch::Receiver<bool>,
    paused: prometheus_client::metrics::gauge::Gauge,
    shutdown: CancellationToken,
) {
    // Says whether there was anything to pause (the group may not have
    // assigned the partitions yet: then it is tried again later).
    let toggle = |pause: bool| {
        let assignment = consumer.assignment()?;
        if pause { consumer.pause(&assignment) } else { consumer.resume(&assignment) }?;
        Ok::<_, rdkafka::error::KafkaError>(assignment.count() > 0)
    };
    loop {
        let idle_long = async {
            busy.wait_for(|b| !*b).await?;
            // Idle: it must stay so for a while.
            match tokio::time::timeout(IDLE_PAUSE, busy.wait_for(|b| *b)).await {
                Ok(changed) => changed.map(|_| false),
                Err(_) => Ok(true),
            }
        };
        tokio::select! {
            _ = shutdown.cancelled() => return,
            idle_long = idle_long => match idle_long {
                Ok(true) => {}
                Ok(false) => continue,
                Err(_) => return, // the window is gone
            },
        }
        match toggle(true) {
            Ok(true) => {}
            Ok(false) => continue,
            Err(e) => {
                warn!(error = %e, "pausing the results reader");
                continue;
            }
        }
        paused.set(1);
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = busy.wait_for(|b| *b) => {}
        }
        match toggle(false) {
            // In the background: a broker that does not answer must not
            // hold up pausing again.
            Ok(_) => {
                tokio::spawn(wake_fetcher(Arc::clone(&consumer)));
            }
            Err(e) => warn!(error = %e, "resuming the results reader"),
        }
        paused.set(0);
    }
}
