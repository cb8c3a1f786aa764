//! What the kit sees of the worker through the broker: every message on
//! the results, heartbeats and dead-letter topics, and the workers' group's
//! committed offsets on the tasks topic.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use pipeline::wire::{MAX_MESSAGE_BYTES, Topics};
use plumbing::kafka::client_config;
use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;

/// A message the kit read, with when it arrived.
#[derive(Debug, Clone)]
pub struct Seen {
    pub at: Instant,
    pub key: Option<String>,
    pub payload: Vec<u8>,
    /// The `error` header, for dead letters.
    pub error: Option<String>,
}

#[derive(Debug, Default)]
pub struct Log {
    pub results: Vec<Seen>,
    pub heartbeats: Vec<Seen>,
    pub dead_letters: Vec<Seen>,
    /// The next offset to read, per topic and partition.
    pub next: HashMap<(String, i32), i64>,
}

impl Log {
    /// Whether every message up to `ends` (next offsets per topic and
    /// partition) has been read.
    pub fn has_read(&self, ends: &HashMap<(String, i32), i64>) -> bool {
        ends.iter().all(|(at, &end)| self.next.get(at).copied().unwrap_or(0) >= end)
    }
}

/// Reads the three topics from their start into a shared [`Log`].
pub struct Observer {
    pub log: Arc<Mutex<Log>>,
    stop: CancellationToken,
}

impl Observer {
    pub fn start(brokers: &str, topics: &Topics, group: &str) -> anyhow::Result<Self> {
        let consumer: StreamConsumer = client_config(brokers)
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .set("fetch.message.max.bytes", MAX_MESSAGE_BYTES.to_string())
            .set("fetch.wait.max.ms", "25")
            .create()
            .context("creating the kit's consumer")?;
        let mut assignment = TopicPartitionList::new();
        for p in 0..plumbing::kafka::RESULT_PARTITIONS {
            assignment.add_partition_offset(&topics.results, p, Offset::Beginning)?;
        }
        assignment.add_partition_offset(&topics.heartbeats, 0, Offset::Beginning)?;
        assignment.add_partition_offset(&topics.dead_letters, 0, Offset::Beginning)?;
        consumer.assign(&assignment).context("assigning the kit's partitions")?;
        let log = Arc::new(Mutex::new(Log::default()));
        let stop = CancellationToken::new();
        let (shared, stopped, topics) = (Arc::clone(&log), stop.clone(), topics.clone());
        tokio::spawn(async move {
            loop {
                let message = tokio::select! {
                    _ = stopped.cancelled() => return,
                    m = consumer.recv() => m,
                };
                let Ok(message) = message else { continue };
                let error = message.headers().and_then(|h| {
                    h.iter()
                        .find(|h| h.key == "error")
                        .and_then(|h| h.value)
                        .map(|v| String::from_utf8_lossy(v).into_owned())
                });
                let seen = Seen {
                    at: Instant::now(),
                    key: message.key().map(|k| String::from_utf8_lossy(k).into_owned()),
                    payload: message.payload().unwrap_or_default().to_vec(),
                    error,
                };
                let mut log = shared.lock().expect("lock");
                log.next.insert((message.topic().to_owned(), message.partition()), message.offset() + 1);
                match message.topic() {
                    t if t == topics.results => log.results.push(seen),
                    t if t == topics.heartbeats => log.heartbeats.push(seen),
                    _ => log.dead_letters.push(seen),
                }
            }
        });
        Ok(Observer { log, stop })
    }
}

impl Drop for Observer {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Reads the workers' group's committed offsets and topics' ends (blocking calls).
pub struct Offsets {
    consumer: BaseConsumer,
    topics: Topics,
    task_partitions: i32,
}

const TIMEOUT: Duration = Duration::from_secs(5);

impl Offsets {
    /// A client of the workers' group that never joins it: it only reads
    /// what the group committed.
    pub fn new(brokers: &str, topics: &Topics, task_partitions: i32) -> anyhow::Result<Self> {
        let consumer: BaseConsumer = client_config(brokers)
            .set("group.id", &topics.workers_group)
            .set("enable.auto.commit", "false")
            .create()
            .context("creating the kit's offsets client")?;
        Ok(Offsets { consumer, topics: topics.clone(), task_partitions })
    }

    /// The group's committed offset on each tasks partition (0 when none).
    pub fn committed(&self) -> anyhow::Result<Vec<i64>> {
        let mut list = TopicPartitionList::new();
        for p in 0..self.task_partitions {
            list.add_partition(&self.topics.tasks, p);
        }
        let committed = self.consumer.committed_offsets(list, TIMEOUT)?;
        Ok((0..self.task_partitions)
            .map(|p| match committed.find_partition(&self.topics.tasks, p).map(|e| e.offset()) {
                Some(Offset::Offset(o)) => o,
                _ => 0,
            })
            .collect())
    }

    /// The end (next offset) of every partition of the topics a worker writes to.
    pub fn reply_ends(&self) -> anyhow::Result<HashMap<(String, i32), i64>> {
        let mut ends = HashMap::new();
        let partitions = (0..plumbing::kafka::RESULT_PARTITIONS)
            .map(|p| (&self.topics.results, p))
            .chain([(&self.topics.dead_letters, 0)]);
        for (topic, p) in partitions {
            let (_, high) = self.consumer.fetch_watermarks(topic, p, TIMEOUT)?;
            ends.insert((topic.clone(), p), high);
        }
        Ok(ends)
    }

    /// The end of every tasks partition.
    pub fn task_ends(&self) -> anyhow::Result<Vec<i64>> {
        (0..self.task_partitions)
            .map(|p| Ok(self.consumer.fetch_watermarks(&self.topics.tasks, p, TIMEOUT)?.1))
            .collect()
    }
}
