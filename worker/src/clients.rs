//! The worker's Kafka clients: made, and let go of (leaving the group).

use std::time::Duration;

use anyhow::Context;
use pipeline::wire::{MAX_MESSAGE_BYTES, Topics};
use plumbing::kafka::{EnvOverrides, Logged, LoggedConsumer, client_config};
use rdkafka::producer::{FutureProducer, Producer};
use tracing::warn;

use crate::Config;

/// The worker's Kafka clients.
pub(crate) struct Clients {
    pub producer: FutureProducer,
    /// A member of the workers' group on the tasks topic.
    pub consumer: LoggedConsumer,
    /// Reads `control` from its start (assigned, never committing).
    pub control: LoggedConsumer,
}

impl Clients {
    pub(crate) fn create(config: &Config, id: &str, topics: &Topics) -> anyhow::Result<Self> {
        let mut client = client_config(&config.brokers);
        let producer: FutureProducer = client
            .clone()
            .set("message.max.bytes", MAX_MESSAGE_BYTES.to_string())
            // Held replies are handed over together (see `held`): a
            // moment's linger makes sure they share a request.
            .set("linger.ms", "2")
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
            // Fetch only when fewer than 8 tasks are queued here (checked
            // every 20 ms), and then all that wait: a worker with work ahead
            // of it does not poll the broker, and it takes the window's
            // refills several at a time (half the broker's reads of the
            // tasks topic; docs/performance.md, "Fewer broker statements").
            .set("queued.min.messages", "8")
            .set("fetch.queue.backoff.ms", "20")
            .set("fetch.wait.max.ms", plumbing::kafka::TASKS_FETCH_WAIT_MS.to_string())
            .env_overrides()
            .create_with_context(Logged::new("tasks"))
            .context("creating Kafka consumer")?;
        // librdkafka wants a group even for assigned partitions; this one never
        // joins or commits.
        let control: LoggedConsumer = client_config(&config.brokers)
            .set("group.id", format!("{}-control-{id}", topics.workers_group))
            .set("enable.auto.commit", "false")
            .set("topic.metadata.refresh.interval.ms", "5000")
            .set("fetch.wait.max.ms", plumbing::kafka::CONTROL_FETCH_WAIT_MS.to_string())
            .env_overrides()
            .create_with_context(Logged::new("control"))
            .context("creating Kafka control consumer")?;
        Ok(Clients { producer, consumer, control })
    }
}

/// Flushes the producer, then leaves the group.
pub(crate) async fn leave(id: &str, producer: FutureProducer, consumer: LoggedConsumer) {
    let _ = producer.flush(Duration::from_secs(5));
    // Dropping the consumer commits stored offsets and leaves the group
    // (blocking), so the others get its partitions at once. Bounded: with the
    // broker gone there is no group to leave.
    let leave = tokio::task::spawn_blocking(move || drop(consumer));
    if tokio::time::timeout(Duration::from_secs(10), leave).await.is_err() {
        warn!(worker = %id, "could not leave the group in time (broker unreachable?)");
    }
}
