//! `eslab worker`: a member of a Kafka consumer group that applies the
//! relay's events to the bank read models (account summaries, history,
//! transfer status) in the database of `DATABASE_URL`, exactly once in
//! effect: duplicates are skipped by stream version, offsets are committed
//! after the read model's transaction. Start more workers (and give the
//! topics more partitions) for more throughput.

use std::future::Future;
use std::sync::Arc;

use anyhow::{Context, bail};
use eslab_bank::{BankViews, SqlViews, ViewsTx};
use eslab_kafka::{Worker, WorkerOptions, WorkerTables, WorkerTx};
use eslab_projection::{Backend, PgBackend, SqliteBackend};

use crate::relay::KafkaArgs;
use crate::store::AnyStore;

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

/// Runs a worker until `shutdown`.
pub async fn run(store: AnyStore, args: WorkerArgs, shutdown: impl Future<Output = ()> + Send) -> anyhow::Result<()> {
    match &store {
        AnyStore::Postgres(pg) => {
            let pool = pg.pool().clone();
            SqlViews::new(pool.clone()).ensure_schema().await?;
            WorkerTables::new(pool.clone()).ensure_schema().await?;
            let backend = PgBackend::new(pool);
            backend.ensure_schema().await?;
            run_on(backend, &args, shutdown).await
        }
        AnyStore::Sqlite(sqlite) => {
            let pool = sqlite.writer_pool().clone();
            SqlViews::new(pool.clone()).ensure_schema().await?;
            WorkerTables::new(pool.clone()).ensure_schema().await?;
            let backend = SqliteBackend::new(pool);
            backend.ensure_schema().await?;
            run_on(backend, &args, shutdown).await
        }
        AnyStore::Memory(_) => {
            bail!("the worker needs a durable read-model database: set DATABASE_URL to postgres://… or sqlite://…")
        }
    }
}

async fn run_on<B>(backend: B, args: &WorkerArgs, shutdown: impl Future<Output = ()> + Send) -> anyhow::Result<()>
where
    B: Backend,
    B::Tx: ViewsTx + WorkerTx,
{
    let options =
        WorkerOptions { batch_size: args.batch.max(1), ..WorkerOptions::new(&args.group, &["account", "transfer"]) };
    let worker = Worker::new(&args.kafka.options(), Arc::new(backend), Arc::new(BankViews), options)
        .context("creating the Kafka consumer")?;
    tracing::info!(group = %args.group, brokers = %args.kafka.brokers, "worker started");
    worker.run(shutdown).await?;
    // Hand the partitions over now rather than after the session timeout.
    worker.leave_group();
    let totals = worker.totals();
    tracing::info!(?totals, "worker stopped");
    Ok(())
}
