//! # eslab-kafka
//!
//! eslab past one machine: events go from the store to Kafka through the
//! **transactional outbox** (the events table *is* the outbox), and projection
//! workers in a **consumer group** apply them to read models, exactly once in
//! effect. This is the only crate that links librdkafka (through `rdkafka`).
//!
//! - [`relay`]: a projection runner ([`eslab_projection::Runner`]) whose sink is
//!   Kafka. It reads the gap-safe feed after its checkpoint and publishes each
//!   event to the topic of its category (`<prefix><category>`, e.g.
//!   `eslab.account`), key = stream id, headers = the envelope ([`message`]),
//!   with an idempotent producer. The batch's checkpoint commits only after the
//!   broker acknowledged every event of the batch: at-least-once, in stream
//!   order per key. One active relay per name, by lease.
//! - [`Worker`]: a consumer-group member that applies events to a read model
//!   through any [`eslab_projection::Projection`], in one backend transaction
//!   per batch that also records, per stream, the last version applied
//!   (duplicates are skipped, gaps are recorded and reported). Offsets are
//!   committed only after that transaction commits. A handler's permanent
//!   failure parks the stream as in the projection runner; a message that is
//!   not an eslab event is kept as a dead letter.
//!
//! ```no_run
//! use std::sync::Arc;
//! use eslab_kafka::{KafkaOptions, relay};
//! use eslab_projection::PgBackend;
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let store = eslab_postgres::PostgresStore::connect("postgres://postgres@127.0.0.1:5432/postgres", "eslab").await?;
//! let backend = PgBackend::new(store.pool().clone());
//! backend.ensure_schema().await?;
//! // The feed through your domain's upcasters, so the topics carry current event versions.
//! let upcasters = eslab_core::Upcasters::new();
//! let feed = eslab_core::EventStore::new(store).with_upcasters(upcasters);
//! let relay = relay::relay(feed, Arc::new(backend), &KafkaOptions::new("127.0.0.1:9092"))?;
//! relay.drain().await?; // publish everything committed so far
//! # Ok(()) }
//! ```

pub mod message;
pub mod relay;
pub mod worker;

use std::time::Duration;

/// The Kafka client this crate is built on, for code that needs librdkafka directly (e.g. the lab's bare-producer
/// baseline): eslab-kafka is the only crate that depends on it.
pub use rdkafka;
pub use worker::{DeadLetter, Gap, Worker, WorkerOptions, WorkerOutcome, WorkerTables, WorkerTx};

/// Errors of the Kafka relay and worker.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The Kafka client failed (broker unreachable, delivery failed, commit refused).
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    /// A topic could not be created.
    #[error("cannot create topic {topic}: {reason}")]
    CreateTopic {
        /// The topic.
        topic: String,
        /// The broker's answer.
        reason: String,
    },
    /// The projection runner (relay) or a read-model backend failed.
    #[error(transparent)]
    Projection(#[from] eslab_projection::Error),
    /// The event store failed.
    #[error(transparent)]
    Store(#[from] eslab_core::Error),
    /// The worker's tables could not be read or written.
    #[error("worker tables: {0}")]
    Database(#[from] sqlx::Error),
    /// A message is not an eslab event (a missing or malformed header).
    #[error("message at {topic}[{partition}]@{offset} is not an eslab event: {reason}")]
    Malformed {
        /// Its topic.
        topic: String,
        /// Its partition.
        partition: i32,
        /// Its offset.
        offset: i64,
        /// What is wrong with it.
        reason: String,
    },
    /// A configuration value is unusable.
    #[error("invalid configuration: {0}")]
    Config(String),
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The default broker list (`KAFKA_BROKERS`).
pub const DEFAULT_BROKERS: &str = "127.0.0.1:9092";

/// The default topic prefix (`ESLAB_TOPIC_PREFIX`): category `account` goes to `eslab.account`.
pub const DEFAULT_TOPIC_PREFIX: &str = "eslab.";

/// Where the broker is and how topics are named; shared by the relay and the worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaOptions {
    /// Bootstrap servers, `host:port[,host:port..]`.
    pub brokers: String,
    /// Prepended to a category to name its topic.
    pub topic_prefix: String,
    /// Partitions of the topics the relay creates (more partitions, more parallel workers). Default 4.
    pub partitions: i32,
    /// How long the producer keeps retrying a message before its delivery
    /// fails (the batch is then published again). Default 30 s.
    pub message_timeout: Duration,
    /// Extra librdkafka settings (`key`, `value`), applied last.
    pub extra: Vec<(String, String)>,
}

impl KafkaOptions {
    /// Options for `brokers` with the defaults above.
    pub fn new(brokers: impl Into<String>) -> Self {
        KafkaOptions {
            brokers: brokers.into(),
            topic_prefix: DEFAULT_TOPIC_PREFIX.to_owned(),
            partitions: 4,
            message_timeout: Duration::from_secs(30),
            extra: Vec::new(),
        }
    }

    /// Sets the topic prefix.
    #[must_use]
    pub fn with_topic_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.topic_prefix = prefix.into();
        self
    }

    /// Sets the partition count of created topics.
    #[must_use]
    pub fn with_partitions(mut self, partitions: i32) -> Self {
        self.partitions = partitions;
        self
    }

    /// Sets one extra librdkafka setting.
    #[must_use]
    pub fn with(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.extra.push((key.into(), value.into()));
        self
    }

    /// The topic of a category.
    pub fn topic(&self, category: &str) -> String {
        message::topic_for(&self.topic_prefix, category)
    }

    fn validate(&self) -> Result<()> {
        if self.brokers.trim().is_empty() {
            return Err(Error::Config("KAFKA_BROKERS is empty".into()));
        }
        if self.partitions < 1 {
            return Err(Error::Config(format!("partitions must be at least 1, got {}", self.partitions)));
        }
        let ok = self.topic_prefix.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
        if !ok {
            return Err(Error::Config(format!(
                "topic prefix {:?} may only hold ASCII letters, digits, '.', '_' and '-'",
                self.topic_prefix
            )));
        }
        Ok(())
    }

    fn client_config(&self) -> rdkafka::ClientConfig {
        let mut config = rdkafka::ClientConfig::new();
        config.set("bootstrap.servers", &self.brokers);
        for (k, v) in &self.extra {
            config.set(k, v);
        }
        config
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_options_are_refused_with_a_reason() {
        assert!(KafkaOptions::new("127.0.0.1:9092").validate().is_ok());
        assert!(matches!(KafkaOptions::new(" ").validate(), Err(Error::Config(m)) if m.contains("KAFKA_BROKERS")));
        let bad_prefix = KafkaOptions::new("b:1").with_topic_prefix("a/b");
        assert!(matches!(bad_prefix.validate(), Err(Error::Config(m)) if m.contains("prefix")));
        assert!(KafkaOptions::new("b:1").with_partitions(0).validate().is_err());
    }

    #[test]
    fn topics_are_prefix_and_category() {
        assert_eq!(KafkaOptions::new("b:1").topic("account"), "eslab.account");
        assert_eq!(KafkaOptions::new("b:1").with_topic_prefix("t1.").topic("transfer"), "t1.transfer");
    }
}
