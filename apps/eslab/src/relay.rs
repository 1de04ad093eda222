//! `eslab relay`: the transactional outbox relay. Follows the store's
//! gap-safe feed from its checkpoint and publishes every event to Kafka (topic
//! `<prefix><category>`, key = stream id, the envelope in headers); the
//! checkpoint advances only after the broker acknowledged. One active relay
//! per name, by lease: start several for fail-over, one publishes.

use std::future::Future;
use std::sync::Arc;

use anyhow::Context;
use eslab_core::EventStore;
use eslab_kafka::{DEFAULT_BROKERS, DEFAULT_TOPIC_PREFIX, KafkaOptions, relay};
use eslab_projection::RunnerOptions;
use eslab_runtime::{AnyStore, Store, StoreVisitor, StoreWakeUps};

/// Where the broker is and how topics are named (shared by `relay` and `worker`).
#[derive(Debug, Clone, clap::Args)]
pub struct KafkaArgs {
    /// Kafka bootstrap servers, host:port[,host:port..].
    #[arg(long, env = "KAFKA_BROKERS", default_value = DEFAULT_BROKERS)]
    pub brokers: String,
    /// Topic prefix: category `account` goes to `<prefix>account`.
    #[arg(long, env = "ESLAB_TOPIC_PREFIX", default_value = DEFAULT_TOPIC_PREFIX)]
    pub topic_prefix: String,
}

impl KafkaArgs {
    /// The library's options.
    pub fn options(&self) -> KafkaOptions {
        KafkaOptions::new(&self.brokers).with_topic_prefix(&self.topic_prefix)
    }
}

/// `eslab relay` flags.
#[derive(Debug, Clone, clap::Args)]
pub struct RelayArgs {
    /// The broker and topics.
    #[command(flatten)]
    pub kafka: KafkaArgs,
    /// Partitions of the topics the relay creates.
    #[arg(long, env = "ESLAB_TOPIC_PARTITIONS", default_value_t = 4)]
    pub partitions: i32,
    /// Events per batch (one checkpoint commit, after all of them are acknowledged).
    #[arg(long, default_value_t = 2000)]
    pub batch: usize,
    /// Publish what is there and exit, instead of following the feed.
    #[arg(long)]
    pub once: bool,
}

/// Runs the relay on `store` until `shutdown` (or, with `--once`, until the feed is drained).
pub async fn run(store: AnyStore, args: RelayArgs, shutdown: impl Future<Output = ()> + Send) -> anyhow::Result<()> {
    store.visit_durable(Publish { args, shutdown }).await.context("the relay needs a durable store")?
}

/// [`run`] on the concrete store: the checkpoint beside the events, woken by the store's commits.
struct Publish<F> {
    args: RelayArgs,
    shutdown: F,
}

impl<S: Store, F: Future<Output = ()> + Send> StoreVisitor<S> for Publish<F> {
    type Output = anyhow::Result<()>;

    async fn visit(self, store: S) -> Self::Output {
        let Publish { args, shutdown } = self;
        let options = args.kafka.options().with_partitions(args.partitions);
        let backend = store.backends().await?.views;
        // Sealed: the topics carry personal data as ciphertext only, so that
        // forgetting a subject makes its copies in Kafka unreadable too.
        let feed = EventStore::new(store.clone()).with_upcasters(eslab_bank::upcasters()).sealed();
        let relay = relay::relay(feed, Arc::new(backend), &options)
            .context("creating the Kafka producer")?
            .with_options(RunnerOptions { batch_size: args.batch.max(1), ..RunnerOptions::default() });
        tracing::info!(brokers = %options.brokers, prefix = %options.topic_prefix, "relay started");
        if args.once {
            let published = relay.drain().await?;
            eprintln!("published {published} events");
            return Ok(());
        }
        relay.run(StoreWakeUps::of(&store).await, shutdown).await?;
        Ok(())
    }
}
