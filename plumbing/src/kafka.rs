//! Kafka client settings both sides use, and a consumer context that logs
//! what librdkafka would otherwise keep to itself: rebalances (which
//! partitions a member got or lost) and failed offset commits.

use std::time::Duration;

use anyhow::Context;
use pipeline::wire::{MAX_MESSAGE_BYTES, Topics};
use rdkafka::TopicPartitionList;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::error::{KafkaResult, RDKafkaErrorCode};

/// Environment variables with this prefix set Kafka client properties:
/// `TILEPIPE_KAFKA_SASL_USERNAME=u` sets `sasl.username=u`.
pub const ENV_PREFIX: &str = "TILEPIPE_KAFKA_";

/// `fetch.wait.max.ms` of the master's results consumer. nisshi answers a
/// fetch that finds nothing by reading again after half the wait, then half
/// the rest, and so on: a shorter wait hears of a new message sooner but
/// costs the broker more reads. With 25 ms an idle system kept nisshi at 80
/// to 90% of a core. The last result of a job is heard of up to half of
/// this late, so it stays short.
pub const PROMPT_FETCH_WAIT_MS: u32 = 50;

/// `fetch.wait.max.ms` of a worker's tasks consumer. A worker has the
/// dispatch window's tasks queued ahead of it, so hearing of the next one
/// up to 100 ms late costs it nothing, and each poll round costs the broker
/// a read of every partition the worker has. Against 50 ms: an idle system's
/// broker at 12% of a core instead of 26%, and a third less broker CPU per
/// job (docs/performance.md, "Polls").
pub const TASKS_FETCH_WAIT_MS: u32 = 200;

/// `fetch.wait.max.ms` of consumers that a few hundred ms do not hurt
/// (the master's heartbeats reader): librdkafka's default.
pub const RELAXED_FETCH_WAIT_MS: u32 = 500;

/// `fetch.wait.max.ms` of a worker's control reader (stopped jobs). Hearing
/// of a stop up to a second late costs at most a few tiles the master
/// ignores, and each worker's reader polls four times less than at 500 ms
/// (an idle broker's CPU falls with it, more so the more workers there are).
pub const CONTROL_FETCH_WAIT_MS: u32 = 2000;

/// A consumer that logs its rebalances and failed commits.
pub type LoggedConsumer = StreamConsumer<Logged>;

/// A client for `brokers`, with any `TILEPIPE_KAFKA_*` settings (security
/// protocol, SASL, TLS files) from the environment.
pub fn client_config(brokers: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", brokers);
    config.env_overrides();
    config
}

/// Settings from `TILEPIPE_KAFKA_*` variables win over tilepipe's own:
/// called last, just before a client is created, an operator can tune
/// for example `fetch.wait.max.ms` for a broker that long-polls well.
pub trait EnvOverrides {
    fn env_overrides(&mut self) -> &mut Self;
}

impl EnvOverrides for ClientConfig {
    fn env_overrides(&mut self) -> &mut Self {
        for (property, value) in properties(std::env::vars()) {
            self.set(property, value);
        }
        self
    }
}

/// The Kafka client properties named by `TILEPIPE_KAFKA_*` variables among
/// `vars`: the rest of the name, lower-cased, with `_` for `.`.
pub fn properties(vars: impl IntoIterator<Item = (String, String)>) -> Vec<(String, String)> {
    let mut properties: Vec<_> = vars
        .into_iter()
        .filter_map(|(name, value)| {
            let property = name.strip_prefix(ENV_PREFIX)?.to_ascii_lowercase().replace('_', ".");
            (!property.is_empty()).then_some((property, value))
        })
        .collect();
    properties.sort();
    properties
}

/// The context of a consumer named `name` in the logs (`results`, `tasks`, ...).
pub struct Logged {
    name: &'static str,
}

impl Logged {
    pub fn new(name: &'static str) -> Self {
        Logged { name }
    }
}

impl ClientContext for Logged {}

impl ConsumerContext for Logged {
    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let partitions = |list: &TopicPartitionList| {
            list.elements().iter().map(|e| e.partition().to_string()).collect::<Vec<_>>().join(",")
        };
        match rebalance {
            Rebalance::Assign(list) => {
                tracing::info!(consumer = self.name, partitions = %partitions(list), "partitions assigned")
            }
            Rebalance::Revoke(list) => {
                tracing::info!(consumer = self.name, partitions = %partitions(list), "partitions revoked")
            }
            Rebalance::Error(e) => tracing::warn!(consumer = self.name, error = %e, "rebalance failed"),
        }
    }

    fn commit_callback(&self, result: KafkaResult<()>, _offsets: &TopicPartitionList) {
        if let Err(e) = result {
            // Nothing to commit is not a failure.
            if !matches!(e.rdkafka_error_code(), Some(rdkafka::types::RDKafkaErrorCode::NoOffset)) {
                tracing::warn!(consumer = self.name, error = %e, "committing offsets failed");
            }
        }
    }
}

/// Partitions of the results topic the server creates.
pub const RESULT_PARTITIONS: i32 = 1;

/// Creates the five topics if they do not exist. The tasks topic gets
/// `task_partitions` (the most workers that can share a job), the others
/// one each: one reader each, and every partition costs the broker reads on
/// each poll. Every topic accepts messages as large as the largest tile.
pub async fn ensure_topics(brokers: &str, topics: &Topics, task_partitions: i32) -> anyhow::Result<()> {
    let admin: AdminClient<_> = client_config(brokers).create().context("creating Kafka admin client")?;
    let max_bytes = MAX_MESSAGE_BYTES.to_string();
    let new = |name, partitions| {
        NewTopic::new(name, partitions, TopicReplication::Fixed(1)).set("max.message.bytes", &max_bytes)
    };
    let wanted = [
        new(&topics.tasks, task_partitions),
        new(&topics.results, RESULT_PARTITIONS),
        new(&topics.heartbeats, 1),
        new(&topics.dead_letters, 1),
        new(&topics.control, 1),
    ];
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let results = admin.create_topics(&wanted, &options).await.context("creating Kafka topics")?;
    for result in results {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => anyhow::bail!("creating topic {topic}: {code}"),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn properties_come_from_prefixed_variables() {
        let vars = [
            ("TILEPIPE_KAFKA_SECURITY_PROTOCOL", "SASL_SSL"),
            ("TILEPIPE_KAFKA_SSL_CA_LOCATION", "/etc/ca.pem"),
            ("TILEPIPE_BROKERS", "elsewhere:9092"),
            ("TILEPIPE_KAFKA_", "ignored"),
            ("PATH", "/bin"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned()));
        let expected = [("security.protocol", "SASL_SSL"), ("ssl.ca.location", "/etc/ca.pem")]
            .map(|(k, v)| (k.to_owned(), v.to_owned()));
        assert_eq!(properties(vars), expected);
    }
}
