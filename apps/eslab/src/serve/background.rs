//! The in-process projections: the bank's read models ([`BankViews`]) and the
//! transfer saga ([`TransferProcess`]), each a projection runner in a tokio
//! task, woken by the store ([`StoreWakeUps`]: SQLite's and memory's commit
//! signal, PostgreSQL's NOTIFY) with a polling fallback. On shutdown
//! each finishes its batch, drains what is left (bounded in time) and
//! releases its lease.

use std::sync::Arc;
use std::time::Duration;

use eslab_bank::{Bank, BankViews, TransferProcess};
use eslab_core::{Checkpoint, EventStore, FeedFilter};
use eslab_projection::{Backend, Projection, Runner, RunnerOptions, Wakeup};
use eslab_runtime::{AnyStore, Store, StoreVisitor, StoreWakeUps};
use futures_util::future::BoxFuture;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::read::ReadModels;
use crate::projections::BankBackend;

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

/// The projections started for a store, and what the HTTP side needs of them.
pub struct Background {
    /// The read models' query side.
    pub views: ReadModels,
    /// The projections, for `/ready`.
    pub tracked: Vec<Arc<dyn Tracked>>,
    /// Their tasks.
    pub tasks: Vec<JoinHandle<()>>,
}

fn options(name: &str, linger: Duration) -> RunnerOptions {
    RunnerOptions {
        linger,
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

/// Starts the read models and the saga (sharing `bank`'s repositories) over
/// `bank`'s store, whose backend is `store`.
pub async fn start(
    store: &AnyStore,
    bank: &Bank<AnyStore>,
    shutdown: &watch::Receiver<bool>,
    linger: Duration,
) -> anyhow::Result<Background> {
    store.visit(Start { bank, shutdown, linger }).await
}

/// [`start`] on the concrete store.
struct Start<'a> {
    bank: &'a Bank<AnyStore>,
    shutdown: &'a watch::Receiver<bool>,
    linger: Duration,
}

impl<S: Store> StoreVisitor<S> for Start<'_>
where
    S::Backend: BankBackend,
    ReadModels: From<S::Reader>,
{
    type Output = anyhow::Result<Background>;

    async fn visit(self, store: S) -> Self::Output {
        // The views write through the store's writer; the saga, which appends
        // from inside its batch, through the backend for that.
        let backends = store.backends().await?;
        backends.views.create_views().await?;
        let (events, shutdown) = (self.bank.store(), self.shutdown);
        let saga = TransferProcess::with_bank(self.bank.clone());
        let read_models = ReadModels::from(backends.reader).with_eraser(backends.views.clone());
        let views = Runner::new(events.clone(), Arc::new(backends.views), Arc::new(BankViews))
            .with_options(options("views", self.linger));
        let process = Runner::new(events.clone(), Arc::new(backends.appending), Arc::new(saga))
            .with_options(options("saga", self.linger));
        let tracked =
            vec![track(&views, FeedFilter::All), track(&process, FeedFilter::Category("transfer".to_owned()))];
        let tasks = vec![
            spawn(views, StoreWakeUps::of(&store).await, shutdown.clone()),
            spawn(process, StoreWakeUps::of(&store).await, shutdown.clone()),
        ];
        Ok(Background { views: read_models, tracked, tasks })
    }
}
