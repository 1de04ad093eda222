//! `eslab projections list|parked|retry|skip`: the bank's projections as an
//! operator sees them (checkpoint, lag, lease owner, parked events), and the
//! two ways to resume a parked stream.
//!
//! The projections live next to the events: on PostgreSQL in the store's
//! schema, on SQLite in the store's file (the saga's checkpoints through a
//! connection of their own, since the saga appends while its batch is open:
//! [`eslab_runtime::Backends`]).

use std::fmt::Debug;
use std::future::Future;
use std::io::Write;
use std::sync::Arc;

use anyhow::bail;
use clap::Subcommand;
use eslab_bank::{BankViews, SqlViews, TransferProcess, ViewsTx, upcasters};
use eslab_core::{EventStorage, EventStore, FeedFilter, Forgetting, StreamId, Subject};
use eslab_projection::memory::MemoryBackend;
use eslab_projection::{Backend, ParkedEvent, PgBackend, Runner, RunnerOptions, SqliteBackend, Status};
use eslab_runtime::{AnyStore, Store, StoreVisitor};
use futures_util::future::BoxFuture;

/// The projection that keeps the account summary, history and transfer status.
pub const BANK_VIEWS: &str = BankViews::NAME;
/// The transfer saga.
pub const TRANSFER_PROCESS: &str = "transfer-process";
/// Every projection the bank runs, with the feed each reads.
pub fn known() -> [(&'static str, FeedFilter); 2] {
    [(BANK_VIEWS, FeedFilter::All), (TRANSFER_PROCESS, FeedFilter::Category("transfer".to_owned()))]
}

/// A projection backend the bank's projections run on (its transaction
/// writes the bank's read models), with where their tables are made.
pub trait BankBackend: Backend<Tx: ViewsTx> + Clone + Debug {
    /// Creates the bank's read-model tables if they do not exist (in memory there are none).
    fn create_views(&self) -> impl Future<Output = anyhow::Result<()>> + Send;
}

impl BankBackend for MemoryBackend {
    async fn create_views(&self) -> anyhow::Result<()> {
        Ok(())
    }
}

impl BankBackend for SqliteBackend {
    async fn create_views(&self) -> anyhow::Result<()> {
        Ok(SqlViews::new(self.pool().clone()).ensure_schema().await?)
    }
}

impl BankBackend for PgBackend {
    async fn create_views(&self) -> anyhow::Result<()> {
        Ok(SqlViews::new(self.pool().clone()).ensure_schema().await?)
    }
}

/// `eslab projections …`
#[derive(Debug, Subcommand)]
pub enum ProjectionsCommand {
    /// Every projection: checkpoint, events and seconds behind, lease owner, parked events.
    List,
    /// The parked events (of one projection, or all), per stream in order.
    Parked {
        /// The projection (default: all).
        projection: Option<String>,
    },
    /// Apply a parked stream's events again, in order (after fixing the cause).
    Retry {
        /// The projection.
        projection: String,
        /// The parked stream, `<kind>-<id>`.
        stream: StreamId,
    },
    /// Drop a parked stream's failing event, then apply the rest again.
    Skip {
        /// The projection.
        projection: String,
        /// The parked stream, `<kind>-<id>`.
        stream: StreamId,
    },
}

/// The bank's projections over one store, with their backends.
#[derive(Debug, Clone)]
pub struct Projections<S, B> {
    store: EventStore<S>,
    views: Arc<B>,
    saga: Arc<B>,
}

/// [`Projections`] over whichever store `DATABASE_URL` chose.
#[derive(Clone)]
pub struct AnyProjections(Arc<dyn Operate>);

impl std::fmt::Debug for AnyProjections {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AnyProjections").finish_non_exhaustive()
    }
}

/// [`Projections`] with the store and backend types erased.
trait Operate: Send + Sync {
    fn catch_up(&self) -> BoxFuture<'_, anyhow::Result<usize>>;
    fn list(&self) -> BoxFuture<'_, anyhow::Result<Vec<Status>>>;
    fn parked<'a>(&'a self, projection: Option<&'a str>) -> BoxFuture<'a, anyhow::Result<Vec<ParkedEvent>>>;
    fn resume<'a>(
        &'a self,
        projection: &'a str,
        stream: &'a StreamId,
        skip: bool,
    ) -> BoxFuture<'a, anyhow::Result<usize>>;
    fn forget<'a>(&'a self, subject: &'a Subject, by: &'a str) -> BoxFuture<'a, anyhow::Result<(Forgetting, u64)>>;
}

impl<S: EventStorage + Clone + Send + Sync + 'static, B: BankBackend> Operate for Projections<S, B> {
    fn catch_up(&self) -> BoxFuture<'_, anyhow::Result<usize>> {
        Box::pin(Projections::catch_up(self))
    }

    fn list(&self) -> BoxFuture<'_, anyhow::Result<Vec<Status>>> {
        Box::pin(Projections::list(self))
    }

    fn parked<'a>(&'a self, projection: Option<&'a str>) -> BoxFuture<'a, anyhow::Result<Vec<ParkedEvent>>> {
        Box::pin(Projections::parked(self, projection))
    }

    fn resume<'a>(
        &'a self,
        projection: &'a str,
        stream: &'a StreamId,
        skip: bool,
    ) -> BoxFuture<'a, anyhow::Result<usize>> {
        Box::pin(Projections::resume(self, projection, stream, skip))
    }

    fn forget<'a>(&'a self, subject: &'a Subject, by: &'a str) -> BoxFuture<'a, anyhow::Result<(Forgetting, u64)>> {
        Box::pin(Projections::forget(self, subject, by))
    }
}

/// Opens the bank's projections on the concrete store.
struct Open;

impl<S: Store> StoreVisitor<S> for Open
where
    S::Backend: BankBackend,
{
    type Output = anyhow::Result<AnyProjections>;

    async fn visit(self, store: S) -> Self::Output {
        let backends = store.backends().await?;
        backends.views.create_views().await?;
        let projections = Projections::new(store, Arc::new(backends.views), Arc::new(backends.appending));
        Ok(AnyProjections(Arc::new(projections)))
    }
}

impl AnyProjections {
    /// The projections of `store`, creating their tables if needed.
    pub async fn open(store: &AnyStore) -> anyhow::Result<AnyProjections> {
        store.visit(Open).await
    }

    /// See [`Projections::catch_up`].
    pub async fn catch_up(&self) -> anyhow::Result<usize> {
        self.0.catch_up().await
    }

    /// See [`Projections::list`].
    pub async fn list(&self) -> anyhow::Result<Vec<Status>> {
        self.0.list().await
    }

    /// See [`Projections::parked`].
    pub async fn parked(&self, projection: Option<&str>) -> anyhow::Result<Vec<ParkedEvent>> {
        self.0.parked(projection).await
    }

    /// See [`Projections::retry`].
    pub async fn retry(&self, projection: &str, stream: &StreamId) -> anyhow::Result<usize> {
        self.0.resume(projection, stream, false).await
    }

    /// See [`Projections::forget`].
    pub async fn forget(&self, subject: &Subject, by: &str) -> anyhow::Result<(Forgetting, u64)> {
        self.0.forget(subject, by).await
    }

    /// See [`Projections::skip`].
    pub async fn skip(&self, projection: &str, stream: &StreamId) -> anyhow::Result<usize> {
        self.0.resume(projection, stream, true).await
    }
}

fn check_name(name: &str) -> anyhow::Result<()> {
    if known().iter().any(|(n, _)| *n == name) {
        Ok(())
    } else {
        bail!("unknown projection {name:?}; the projections are {BANK_VIEWS} and {TRANSFER_PROCESS}")
    }
}

impl<S, B> Projections<S, B>
where
    S: EventStorage + Clone + 'static,
    B: Backend,
    B::Tx: ViewsTx,
{
    /// The bank views writing through `views`, the saga checkpointing through `saga`.
    pub fn new(store: S, views: Arc<B>, saga: Arc<B>) -> Self {
        Projections { store: EventStore::new(store).with_upcasters(upcasters()), views, saga }
    }

    fn backend(&self, name: &str) -> &B {
        if name == TRANSFER_PROCESS { &self.saga } else { &self.views }
    }

    /// Forgets `subject` (deletes its key, recording `by` whom), then erases
    /// it from the bank's read models and from every parked event; returns
    /// the forgetting and how many parked events were rewritten.
    ///
    /// # Errors
    /// `UnknownSubject` for a subject that never had personal data; the store's.
    pub async fn forget(&self, subject: &Subject, by: &str) -> anyhow::Result<(Forgetting, u64)> {
        let done = self.store.forget(subject, by).await?;
        // The saga's parked events are in the same tables (the same database,
        // or the one in-memory backend): one pass erases them all.
        let rewritten = eslab_projection::forget_subject(self.views.as_ref(), &BankViews, subject).await?;
        Ok((done, rewritten))
    }

    /// The status of every projection.
    pub async fn list(&self) -> anyhow::Result<Vec<Status>> {
        let mut all = Vec::new();
        for (name, filter) in known() {
            all.push(eslab_projection::status(&self.store, self.backend(name), name, &filter).await?);
        }
        Ok(all)
    }

    /// Runs the saga and the views until neither has anything left to do
    /// (the saga's steps append events the views then read), as owner
    /// `eslab-cli`, releasing the leases afterwards.
    pub async fn catch_up(&self) -> anyhow::Result<usize> {
        let options = RunnerOptions { owner: "eslab-cli".to_owned(), ..RunnerOptions::default() };
        let saga =
            Runner::new(self.store.clone(), self.saga.clone(), Arc::new(TransferProcess::new(self.store.clone())))
                .with_options(options.clone());
        let views = Runner::new(self.store.clone(), self.views.clone(), Arc::new(BankViews)).with_options(options);
        let mut total = 0;
        let outcome = async {
            loop {
                let n = saga.drain().await? + views.drain().await?;
                total += n;
                if n == 0 {
                    return Ok::<_, eslab_projection::Error>(());
                }
            }
        }
        .await;
        self.saga.release_lease(TRANSFER_PROCESS, "eslab-cli").await?;
        self.views.release_lease(BANK_VIEWS, "eslab-cli").await?;
        outcome?;
        Ok(total)
    }

    /// The parked events of `projection` (all projections if `None`).
    pub async fn parked(&self, projection: Option<&str>) -> anyhow::Result<Vec<ParkedEvent>> {
        let mut all = Vec::new();
        for (name, _) in known() {
            if projection.is_none_or(|p| p == name) {
                all.extend(self.backend(name).parked(name, None).await?);
            }
        }
        if let Some(p) = projection {
            check_name(p)?;
        }
        Ok(all)
    }

    /// Applies the parked events of `stream` again; returns how many were applied.
    pub async fn retry(&self, projection: &str, stream: &StreamId) -> anyhow::Result<usize> {
        self.resume(projection, stream, false).await
    }

    /// Drops the failing parked event of `stream`, then applies the rest; returns how many were applied.
    pub async fn skip(&self, projection: &str, stream: &StreamId) -> anyhow::Result<usize> {
        self.resume(projection, stream, true).await
    }

    async fn resume(&self, projection: &str, stream: &StreamId, skip: bool) -> anyhow::Result<usize> {
        check_name(projection)?;
        let backend = self.backend(projection);
        if backend.parked(projection, Some(stream)).await?.is_empty() {
            bail!("{stream} has no parked events in {projection}");
        }
        let n = if projection == TRANSFER_PROCESS {
            let runner =
                Runner::new(self.store.clone(), self.saga.clone(), Arc::new(TransferProcess::new(self.store.clone())));
            if skip { runner.skip(stream).await? } else { runner.retry(stream).await? }
        } else {
            let runner = Runner::new(self.store.clone(), self.views.clone(), Arc::new(BankViews));
            if skip { runner.skip(stream).await? } else { runner.retry(stream).await? }
        };
        Ok(n)
    }
}

/// Prints statuses as an aligned table.
pub fn print_list(statuses: &[Status], out: &mut impl Write) -> std::io::Result<()> {
    writeln!(
        out,
        "{:<18} {:>22} {:>14} {:>14} {:<40} {:>6}",
        "PROJECTION", "CHECKPOINT", "EVENTS BEHIND", "SECONDS BEHIND", "LEASE OWNER", "PARKED"
    )?;
    for s in statuses {
        writeln!(
            out,
            "{:<18} {:>22} {:>14} {:>14.1} {:<40} {:>6}",
            s.name,
            s.checkpoint.to_string(),
            s.lag.events,
            s.lag.seconds,
            s.lease_owner.as_deref().unwrap_or("-"),
            s.parked
        )?;
    }
    out.flush()
}

/// Prints parked events, one line each: projection, stream, version, event type, reason.
pub fn print_parked(parked: &[ParkedEvent], out: &mut impl Write) -> std::io::Result<()> {
    for p in parked {
        writeln!(
            out,
            "{}\t{}\t{}\t{}\t{}\t{}",
            p.projection, p.event.stream_id, p.event.stream_version, p.event.event_type, p.event.event_id, p.reason
        )?;
    }
    if parked.is_empty() {
        writeln!(out, "no parked events")?;
    }
    out.flush()
}

/// Runs one `eslab projections` subcommand.
pub async fn command(store: &AnyStore, command: ProjectionsCommand, out: &mut impl Write) -> anyhow::Result<()> {
    let projections = AnyProjections::open(store).await?;
    match command {
        ProjectionsCommand::List => print_list(&projections.list().await?, out)?,
        ProjectionsCommand::Parked { projection } => {
            print_parked(&projections.parked(projection.as_deref()).await?, out)?
        }
        ProjectionsCommand::Retry { projection, stream } => {
            let n = projections.retry(&projection, &stream).await?;
            writeln!(out, "{projection}: {stream} resumed, {n} parked events applied")?;
        }
        ProjectionsCommand::Skip { projection, stream } => {
            let n = projections.skip(&projection, &stream).await?;
            writeln!(out, "{projection}: skipped the failing event of {stream}, {n} parked events applied")?;
        }
    }
    Ok(())
}

/// The console's projections page and its retry / skip buttons.
impl eslab_console::Operations for AnyProjections {
    fn projections(&self) -> BoxFuture<'_, Result<Vec<Status>, eslab_console::OperationError>> {
        Box::pin(async move { self.list().await.map_err(Into::into) })
    }

    fn parked(&self) -> BoxFuture<'_, Result<Vec<ParkedEvent>, eslab_console::OperationError>> {
        Box::pin(async move { AnyProjections::parked(self, None).await.map_err(Into::into) })
    }

    fn retry<'a>(
        &'a self,
        projection: &'a str,
        stream: &'a StreamId,
    ) -> BoxFuture<'a, Result<usize, eslab_console::OperationError>> {
        Box::pin(async move { AnyProjections::retry(self, projection, stream).await.map_err(Into::into) })
    }

    fn skip<'a>(
        &'a self,
        projection: &'a str,
        stream: &'a StreamId,
    ) -> BoxFuture<'a, Result<usize, eslab_console::OperationError>> {
        Box::pin(async move { AnyProjections::skip(self, projection, stream).await.map_err(Into::into) })
    }
}
