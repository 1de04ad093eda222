//! `eslab relay`: the transactional outbox relay. Follows the store's
//! gap-safe feed from its checkpoint and publishes every event to Kafka (topic
//! `<prefix><category>`, key = stream id, the envelope in headers); the
//! checkpoint advances only after the broker acknowledged. One active relay
//! per name, by lease: start several for fail-over, one publishes.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use eslab_core::EventStore;
use eslab_kafka::{DEFAULT_BROKERS, DEFAULT_TOPIC_PREFIX, KafkaOptions, relay};
use eslab_postgres::Listener;
use eslab_projection::{Backend, PgBackend, RunnerOptions, SqliteBackend, UpcastingStore, Wakeup};

use crate::store::AnyStore;

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

/// Wakes the relay on the store's NOTIFY (PostgreSQL).
struct Notified(Listener);

impl Wakeup for Notified {
    async fn wait(&mut self) {
        self.0.wait().await;
    }
}

/// Runs the relay on `store` until `shutdown` (or, with `--once`, until the feed is drained).
pub async fn run(store: AnyStore, args: RelayArgs, shutdown: impl Future<Output = ()> + Send) -> anyhow::Result<()> {
    let options = args.kafka.options().with_partitions(args.partitions);
    let feed = EventStore::new(store.clone()).with_upcasters(eslab_bank::upcasters());
    match &store {
        AnyStore::Postgres(pg) => {
            let backend = PgBackend::new(pg.pool().clone());
            backend.ensure_schema().await?;
            let wakeup = Notified(pg.listener().await?.with_poll(Duration::from_millis(50), Duration::from_secs(1)));
            run_on(feed, backend, &options, &args, wakeup, shutdown).await
        }
        AnyStore::Sqlite(sqlite) => {
            let backend = SqliteBackend::new(sqlite.writer_pool().clone());
            backend.ensure_schema().await?;
            run_on(feed, backend, &options, &args, (), shutdown).await
        }
        AnyStore::Memory(_) => bail!("the relay needs a durable store: set DATABASE_URL to postgres://… or sqlite://…"),
    }
}

async fn run_on<S, B>(
    feed: S,
    backend: B,
    options: &KafkaOptions,
    args: &RelayArgs,
    wakeup: impl Wakeup,
    shutdown: impl Future<Output = ()> + Send,
) -> anyhow::Result<()>
where
    S: UpcastingStore,
    B: Backend,
{
    let relay = relay::relay(feed, Arc::new(backend), options)
        .context("creating the Kafka producer")?
        .with_options(RunnerOptions { batch_size: args.batch.max(1), ..RunnerOptions::default() });
    tracing::info!(brokers = %options.brokers, prefix = %options.topic_prefix, "relay started");
    if args.once {
        let published = relay.drain().await?;
        eprintln!("published {published} events");
        return Ok(());
    }
    relay.run(wakeup, shutdown).await?;
    Ok(())
}
