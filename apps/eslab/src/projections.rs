//! `eslab projections list|parked|retry|skip`: the bank's projections as an
//! operator sees them (checkpoint, lag, lease owner, parked events), and the
//! two ways to resume a parked stream.
//!
//! The projections live next to the events: on PostgreSQL in the store's
//! schema, on SQLite in the store's file (the saga's checkpoints through a
//! connection of their own, since the saga appends while its batch is open).

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Subcommand;
use eslab_bank::{BankViews, TransferProcess, ViewsTx, upcasters};
use eslab_core::{EventStorage, EventStore, FeedFilter, StreamId};
use eslab_projection::memory::MemoryBackend;
use eslab_projection::{Backend, ParkedEvent, PgBackend, Runner, RunnerOptions, SqliteBackend, Status};

use crate::store::AnyStore;

/// The projection that keeps the account summary, history and transfer status.
pub const BANK_VIEWS: &str = BankViews::NAME;
/// The transfer saga.
pub const TRANSFER_PROCESS: &str = "transfer-process";
/// Every projection the bank runs, with the feed each reads.
pub fn known() -> [(&'static str, FeedFilter); 2] {
    [(BANK_VIEWS, FeedFilter::All), (TRANSFER_PROCESS, FeedFilter::Category("transfer".to_owned()))]
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
#[derive(Debug, Clone)]
pub enum AnyProjections {
    /// In memory (nothing kept between runs).
    Memory(Projections<eslab_memory::MemoryStore, MemoryBackend>),
    /// SQLite.
    Sqlite(Projections<eslab_sqlite::SqliteStore, SqliteBackend>),
    /// PostgreSQL.
    Postgres(Projections<eslab_postgres::PostgresStore, PgBackend>),
}

impl AnyProjections {
    /// The projections of `store`, creating their tables if needed.
    pub async fn open(store: &AnyStore) -> anyhow::Result<AnyProjections> {
        Ok(match store {
            AnyStore::Memory(m) => {
                let backend = Arc::new(MemoryBackend::new());
                AnyProjections::Memory(Projections::new(m.clone(), backend.clone(), backend))
            }
            AnyStore::Sqlite(s) => {
                let views = SqliteBackend::new(s.writer_pool().clone());
                views.ensure_schema().await?;
                eslab_bank::SqlViews::new(s.writer_pool().clone()).ensure_schema().await?;
                let options = (*s.writer_pool().connect_options()).clone().busy_timeout(Duration::from_secs(10));
                let saga_pool = sqlx::sqlite::SqlitePoolOptions::new()
                    .max_connections(1)
                    .connect_with(options)
                    .await
                    .context("opening the saga's connection")?;
                AnyProjections::Sqlite(Projections::new(
                    s.clone(),
                    Arc::new(views),
                    Arc::new(SqliteBackend::new(saga_pool)),
                ))
            }
            AnyStore::Postgres(p) => {
                let backend = PgBackend::new(p.pool().clone());
                backend.ensure_schema().await?;
                eslab_bank::SqlViews::new(p.pool().clone()).ensure_schema().await?;
                let backend = Arc::new(backend);
                AnyProjections::Postgres(Projections::new(p.clone(), backend.clone(), backend))
            }
        })
    }
}

macro_rules! any {
    ($self:ident, $p:ident => $call:expr) => {
        match $self {
            AnyProjections::Memory($p) => $call,
            AnyProjections::Sqlite($p) => $call,
            AnyProjections::Postgres($p) => $call,
        }
    };
}

impl AnyProjections {
    /// See [`Projections::catch_up`].
    pub async fn catch_up(&self) -> anyhow::Result<usize> {
        any!(self, p => p.catch_up().await)
    }

    /// See [`Projections::list`].
    pub async fn list(&self) -> anyhow::Result<Vec<Status>> {
        any!(self, p => p.list().await)
    }

    /// See [`Projections::parked`].
    pub async fn parked(&self, projection: Option<&str>) -> anyhow::Result<Vec<ParkedEvent>> {
        any!(self, p => p.parked(projection).await)
    }

    /// See [`Projections::retry`].
    pub async fn retry(&self, projection: &str, stream: &StreamId) -> anyhow::Result<usize> {
        any!(self, p => p.retry(projection, stream).await)
    }

    /// See [`Projections::skip`].
    pub async fn skip(&self, projection: &str, stream: &StreamId) -> anyhow::Result<usize> {
        any!(self, p => p.skip(projection, stream).await)
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
