//! Speaking to the broker directly: fake workers, producing, reading topics.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::Broker;

/// A member of the workers' group that is not a tilepipe worker: `reply`
/// decides what message, if any, goes back for each task (a faulty worker,
/// a black hole). Like a real worker it commits a task after its reply is sent.
pub struct FakeWorker {
    shutdown: CancellationToken,
    handle: tokio::task::JoinHandle<()>,
    /// Tasks received so far.
    pub seen: std::sync::Arc<std::sync::atomic::AtomicU32>,
}

impl FakeWorker {
    pub fn start(
        broker: &Broker,
        prefix: &str,
        reply: impl Fn(pipeline::wire::Task) -> Option<Vec<u8>> + Send + 'static,
    ) -> Self {
        use rdkafka::Message;
        use rdkafka::consumer::{Consumer, StreamConsumer};
        use std::sync::atomic::Ordering;

        let topics = pipeline::wire::Topics::new(prefix);
        let consumer: StreamConsumer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", &broker.addr)
            .set("group.id", &topics.workers_group)
            .set("enable.auto.offset.store", "false")
            .set("auto.commit.interval.ms", "200")
            .set("auto.offset.reset", "earliest")
            .set("session.timeout.ms", "6000")
            .set("fetch.message.max.bytes", pipeline::wire::MAX_MESSAGE_BYTES.to_string())
            .create()
            .unwrap();
        consumer.subscribe(&[&topics.tasks]).unwrap();
        let producer = producer(broker);
        let shutdown = CancellationToken::new();
        let seen = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
        let (stop, count) = (shutdown.clone(), std::sync::Arc::clone(&seen));
        let handle = tokio::spawn(async move {
            loop {
                let message = tokio::select! {
                    _ = stop.cancelled() => break,
                    m = consumer.recv() => m.unwrap(),
                };
                count.fetch_add(1, Ordering::SeqCst);
                let task = pipeline::wire::Task::decode(message.payload().unwrap()).unwrap();
                if let Some(payload) = reply(task) {
                    send(&producer, &topics.results, &payload).await;
                }
                consumer.store_offset_from_message(&message).unwrap();
            }
            tokio::task::spawn_blocking(move || drop(consumer)).await.unwrap();
        });
        Self { shutdown, handle, seen }
    }

    /// Commits what it took and leaves the group.
    pub async fn stop(self) {
        self.shutdown.cancel();
        self.handle.await.unwrap();
    }
}

/// The message a real worker would answer `task` with, or a failure saying
/// `error`: for [`FakeWorker`]s that fail some tasks and process the rest.
/// Results go raw, as a worker in another language may send them.
pub fn answer(task: pipeline::wire::Task, worker_id: &str, error: Option<&str>) -> Vec<u8> {
    use pipeline::wire::{ResultHeader, TileFailure, TileResult};
    let h = task.header;
    if let Some(error) = error {
        let (job_id, tile, attempt) = (h.job_id, h.tile, h.attempt);
        let worker_id = worker_id.into();
        return TileFailure { job_id, tile, worker_id, error: error.into(), attempt, unsupported: None }.encode();
    }
    let output = pipeline::ops::process_tile(&h.ops, task.input, h.halo);
    let header = ResultHeader {
        job_id: h.job_id,
        tile: h.tile,
        rect: h.rect,
        worker_id: worker_id.into(),
        elapsed_ms: 1.0,
        channels: output.channels,
        encoding: pipeline::codec::Encoding::Raw,
    };
    TileResult { header, output }.encode()
}

/// Members of a group once it is stable (nisshi's group descriptions carry
/// neither client ids nor assignments: a count is what there is).
pub async fn stable_group_members(broker: &Broker, group: String) -> usize {
    let brokers = broker.addr.clone();
    tokio::task::spawn_blocking(move || {
        use rdkafka::consumer::Consumer;
        let consumer: rdkafka::consumer::BaseConsumer =
            rdkafka::ClientConfig::new().set("bootstrap.servers", &brokers).create().unwrap();
        let Ok(list) = consumer.fetch_group_list(Some(&group), Duration::from_secs(5)) else { return 0 };
        list.groups().iter().filter(|g| g.state() == "Stable").map(|g| g.members().len()).sum()
    })
    .await
    .unwrap()
}

pub fn producer(broker: &Broker) -> rdkafka::producer::FutureProducer {
    rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &broker.addr)
        .set("message.max.bytes", pipeline::wire::MAX_MESSAGE_BYTES.to_string())
        .create()
        .unwrap()
}

pub async fn send(producer: &rdkafka::producer::FutureProducer, topic: &str, payload: &[u8]) {
    let record = rdkafka::producer::FutureRecord::<[u8], [u8]>::to(topic).payload(payload);
    producer.send(record, Duration::from_secs(10)).await.map_err(|(e, _)| e).unwrap();
}

/// Reads a topic from the start until `enough` says the messages seen so far
/// suffice, or fails after `deadline`.
pub async fn read_topic(
    broker: &Broker,
    topic: &str,
    deadline: Duration,
    enough: impl Fn(&[rdkafka::message::OwnedMessage]) -> bool,
) -> Vec<rdkafka::message::OwnedMessage> {
    use rdkafka::consumer::{Consumer, StreamConsumer};

    let consumer: StreamConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &broker.addr)
        .set("group.id", format!("reader-{}", uuid::Uuid::new_v4()))
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("fetch.message.max.bytes", pipeline::wire::MAX_MESSAGE_BYTES.to_string())
        .create()
        .unwrap();
    consumer.subscribe(&[topic]).unwrap();
    let mut messages = Vec::new();
    let read = async {
        while !enough(&messages) {
            messages.push(consumer.recv().await.unwrap().detach());
        }
    };
    tokio::time::timeout(deadline, read)
        .await
        .unwrap_or_else(|_| panic!("timed out reading {topic}: {} messages", messages.len()));
    tokio::task::spawn_blocking(move || drop(consumer)).await.unwrap();
    messages
}

/// How many messages `topic` holds, over all its partitions (from their
/// watermarks): read that many with [`read_topic`] to read it to its end.
pub async fn topic_length(broker: &Broker, topic: &str) -> usize {
    use rdkafka::consumer::{BaseConsumer, Consumer};

    let consumer: BaseConsumer = rdkafka::ClientConfig::new().set("bootstrap.servers", &broker.addr).create().unwrap();
    let topic = topic.to_owned();
    tokio::task::spawn_blocking(move || {
        const TIMEOUT: Duration = Duration::from_secs(10);
        let metadata = consumer.fetch_metadata(Some(&topic), TIMEOUT).unwrap();
        let partitions = metadata.topics().iter().find(|t| t.name() == topic).unwrap().partitions().len();
        (0..partitions as i32)
            .map(|p| {
                let (low, high) = consumer.fetch_watermarks(&topic, p, TIMEOUT).unwrap();
                usize::try_from(high - low).unwrap()
            })
            .sum()
    })
    .await
    .unwrap()
}
