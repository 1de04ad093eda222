//! The in-process projections: the bank's read models ([`BankViews`]) and the
//! transfer saga ([`TransferProcess`]), each a projection runner in a tokio
//! task, woken by the store (SQLite's commit signal, PostgreSQL's NOTIFY, or
//! the service's own signal in memory) with a polling fallback. On shutdown
//! each finishes its batch, drains what is left (bounded in time) and
//! releases its lease.

use std::sync::Arc;
use std::time::Duration;

use eslab_bank::{BankViews, SqlViews, TransferProcess};
use eslab_core::{Checkpoint, EventStore, FeedFilter};
use eslab_projection::memory::MemoryBackend;
use eslab_projection::{Backend, PgBackend, Projection, Runner, RunnerOptions, SqliteBackend, Wakeup};
use futures_util::future::BoxFuture;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::read::ReadModels;
use crate::store::AnyStore;

/// A running projection whose position `/ready` reports.
pub trait Tracked: Send + Sync {
    /// The projection's name.
    fn name(&self) -> &str;
    /// The events it reads.
    fn filter(&self) -> FeedFilter;
    /// Its checkpoint.
    fn checkpoint(&self) -> BoxFuture<'_, Result<Checkpoint, eslab_projection::Error>>;
}

struct TrackedRunner<B, P> {
    runner: Runner<EventStore<AnyStore>, B, P>,
    filter: FeedFilter,
}

impl<B: Backend, P: Projection<B>> Tracked for TrackedRunner<B, P> {
    fn name(&self) -> &str {
        self.runner.name()
    }

    fn filter(&self) -> FeedFilter {
        self.filter.clone()
    }

    fn checkpoint(&self) -> BoxFuture<'_, Result<Checkpoint, eslab_projection::Error>> {
        Box::pin(self.runner.checkpoint())
    }
}

/// PostgreSQL's LISTEN/NOTIFY as a runner wake-up.
struct Notified(eslab_postgres::Listener);

impl Wakeup for Notified {
    async fn wait(&mut self) {
        self.0.wait().await;
    }
}

/// The projections started for a store, and what the HTTP side needs of them.
pub struct Background {
    /// The read models' query side.
    pub views: ReadModels,
    /// The projections, for `/ready`.
    pub tracked: Vec<Arc<dyn Tracked>>,
    /// Their tasks.
    pub tasks: Vec<JoinHandle<()>>,
}

fn options(name: &str) -> RunnerOptions {
    RunnerOptions {
        // Unique to this process (host, pid, random): several services may
        // share a store, and two runners with one owner would both lead. A
        // graceful stop releases the lease, so a successor takes over at once.
        owner: format!("eslab-serve-{name}@{}", RunnerOptions::process_owner()),
        max_idle_poll: Duration::from_millis(250),
        // Bounds the flush on shutdown: what was committed before it reaches the read models.
        stop_timeout: Duration::from_secs(10),
        ..RunnerOptions::default()
    }
}

/// Runs `runner` until `shutdown`, then stops it gracefully: it drains what
/// was committed (bounded in time) and releases its lease.
fn spawn<B: Backend, P: Projection<B>>(
    runner: Runner<EventStore<AnyStore>, B, P>,
    wakeup: impl Wakeup + 'static,
    mut shutdown: watch::Receiver<bool>,
) -> JoinHandle<()> {
    let running = runner.spawn(wakeup);
    tokio::spawn(async move {
        // A dropped sender also means stop.
        let _ = shutdown.wait_for(|stop| *stop).await;
        let name = running.name().to_owned();
        match running.stop().await {
            Ok(events) => tracing::info!(projection = name, events, "projection flushed and stopped"),
            Err(error) => tracing::warn!(projection = name, %error, "projection flush failed"),
        }
    })
}

fn track<B: Backend, P: Projection<B>>(
    runner: &Runner<EventStore<AnyStore>, B, P>,
    filter: FeedFilter,
) -> Arc<dyn Tracked> {
    Arc::new(TrackedRunner { runner: runner.clone(), filter })
}

/// Starts the read models and the saga for `events` (whose backend is `store`).
///
/// `signal` is the service's own after-append signal, used where the store has
/// none (memory).
pub async fn start(
    store: &AnyStore,
    events: &EventStore<AnyStore>,
    sqlite_url: Option<&str>,
    signal: &watch::Sender<()>,
    shutdown: &watch::Receiver<bool>,
) -> anyhow::Result<Background> {
    let saga = TransferProcess::new(events.clone());
    let saga_filter = FeedFilter::Category("transfer".to_owned());
    match store {
        AnyStore::Memory(_) => {
            let backend = Arc::new(MemoryBackend::new());
            let views =
                Runner::new(events.clone(), backend.clone(), Arc::new(BankViews)).with_options(options("views"));
            let process = Runner::new(events.clone(), backend.clone(), Arc::new(saga)).with_options(options("saga"));
            let tracked = vec![track(&views, FeedFilter::All), track(&process, saga_filter)];
            let tasks = vec![
                spawn(views, signal.subscribe(), shutdown.clone()),
                spawn(process, signal.subscribe(), shutdown.clone()),
            ];
            Ok(Background { views: ReadModels::Memory((*backend).clone()), tracked, tasks })
        }
        AnyStore::Sqlite(sqlite) => {
            // The views write through the store's single writer so their
            // batches queue behind appends. The saga appends from inside its
            // batch, so it must not hold that writer: its checkpoints go
            // through a connection of its own.
            let backend = SqliteBackend::new(sqlite.writer_pool().clone());
            backend.ensure_schema().await?;
            let queries = SqlViews::new(sqlite.reader_pool().clone());
            SqlViews::new(sqlite.writer_pool().clone()).ensure_schema().await?;
            let url = sqlite_url.unwrap_or(crate::store::DEFAULT_DATABASE_URL);
            let saga_options = <sqlx::sqlite::SqliteConnectOptions as std::str::FromStr>::from_str(url)?
                .busy_timeout(Duration::from_secs(10));
            let saga_pool =
                sqlx::sqlite::SqlitePoolOptions::new().max_connections(1).connect_with(saga_options).await?;
            let saga_backend = SqliteBackend::new(saga_pool);
            let views =
                Runner::new(events.clone(), Arc::new(backend), Arc::new(BankViews)).with_options(options("views"));
            let process =
                Runner::new(events.clone(), Arc::new(saga_backend), Arc::new(saga)).with_options(options("saga"));
            let tracked = vec![track(&views, FeedFilter::All), track(&process, saga_filter)];
            let tasks = vec![
                spawn(views, sqlite.subscribe(), shutdown.clone()),
                spawn(process, sqlite.subscribe(), shutdown.clone()),
            ];
            Ok(Background { views: ReadModels::Sqlite(queries), tracked, tasks })
        }
        AnyStore::Postgres(pg) => {
            let backend = PgBackend::new(pg.pool().clone());
            backend.ensure_schema().await?;
            let queries = SqlViews::new(pg.pool().clone());
            queries.ensure_schema().await?;
            let views = Runner::new(events.clone(), Arc::new(backend.clone()), Arc::new(BankViews))
                .with_options(options("views"));
            let process = Runner::new(events.clone(), Arc::new(backend), Arc::new(saga)).with_options(options("saga"));
            let tracked = vec![track(&views, FeedFilter::All), track(&process, saga_filter)];
            let tasks = vec![
                spawn(views, Notified(pg.listener().await?), shutdown.clone()),
                spawn(process, Notified(pg.listener().await?), shutdown.clone()),
            ];
            Ok(Background { views: ReadModels::Postgres(queries), tracked, tasks })
        }
    }
}
