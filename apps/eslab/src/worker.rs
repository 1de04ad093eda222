//! `eslab worker`: a member of a Kafka consumer group that applies the
//! relay's events to the bank read models (account summaries, history,
//! transfer status) in the database of `DATABASE_URL`, exactly once in
//! effect: duplicates are skipped by stream version, offsets are committed
//! after the read model's transaction. Start more workers (and give the
//! topics more partitions) for more throughput.

use std::future::Future;
use std::sync::Arc;

use anyhow::Context;
use eslab_bank::BankViews;
use eslab_kafka::{Worker, WorkerOptions, WorkerTables, WorkerTx};
use eslab_projection::{PgBackend, SqliteBackend};
use eslab_runtime::{AnyStore, Store, StoreVisitor};

use crate::projections::BankBackend;
use crate::relay::KafkaArgs;

/// The default consumer group (`ESLAB_WORKER_GROUP`).
pub const DEFAULT_GROUP: &str = "eslab-bank-views";

/// `eslab worker` flags.
#[derive(Debug, Clone, clap::Args)]
pub struct WorkerArgs {
    /// The broker and topics.
    #[command(flatten)]
    pub kafka: KafkaArgs,
    /// The consumer group (workers of one group share the partitions).
    #[arg(long, env = "ESLAB_WORKER_GROUP", default_value = DEFAULT_GROUP)]
    pub group: String,
    /// Messages per read-model transaction at most.
    #[arg(long, default_value_t = 1000)]
    pub batch: usize,
}

/// A backend the worker writes through: the bank's read models, and the
/// worker's own books (applied versions, gaps, dead letters) in the same
/// transaction.
trait WorkerBackend: BankBackend<Tx: WorkerTx> {
    /// Creates the worker's tables if they do not exist.
    async fn create_worker_tables(&self) -> anyhow::Result<()>;
}

impl WorkerBackend for SqliteBackend {
    async fn create_worker_tables(&self) -> anyhow::Result<()> {
        Ok(WorkerTables::new(self.pool().clone()).ensure_schema().await?)
    }
}

impl WorkerBackend for PgBackend {
    async fn create_worker_tables(&self) -> anyhow::Result<()> {
        Ok(WorkerTables::new(self.pool().clone()).ensure_schema().await?)
    }
}

/// Runs a worker until `shutdown`.
pub async fn run(store: AnyStore, args: WorkerArgs, shutdown: impl Future<Output = ()> + Send) -> anyhow::Result<()> {
    store.visit_durable(Work { args, shutdown }).await.context("the worker needs a durable read-model database")?
}

/// [`run`] on the concrete store, whose database keeps the read models.
struct Work<F> {
    args: WorkerArgs,
    shutdown: F,
}

impl<S: Store, F: Future<Output = ()> + Send> StoreVisitor<S> for Work<F>
where
    S::Backend: WorkerBackend,
{
    type Output = anyhow::Result<()>;

    async fn visit(self, store: S) -> Self::Output {
        let Work { args, shutdown } = self;
        let backend = store.backends().await?.views;
        backend.create_views().await?;
        backend.create_worker_tables().await?;
        let options = WorkerOptions {
            batch_size: args.batch.max(1),
            ..WorkerOptions::new(&args.group, &["account", "transfer"])
        };
        let mut worker = Worker::new(&args.kafka.options(), Arc::new(backend), Arc::new(BankViews), options)
            .context("creating the Kafka consumer")?;
        if let Some(keys) = eslab_core::EventReader::personal_keys(&store) {
            worker = worker.with_keys(keys);
        }
        tracing::info!(group = %args.group, brokers = %args.kafka.brokers, "worker started");
        worker.run(shutdown).await?;
        // Hand the partitions over now rather than after the session timeout.
        worker.leave_group();
        let totals = worker.totals();
        tracing::info!(?totals, "worker stopped");
        Ok(())
    }
}
