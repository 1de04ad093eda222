//! Rebuilding a projection's read model while the live one keeps serving:
//! replay the whole feed into **shadow tables**, then **swap** them in
//! atomically, together with what tells the live runner where to go on.
//!
//! A projection opts in by implementing [`ReadModel`]: the names of the tables
//! it owns, and how to create them (its usual idempotent DDL, run through a
//! backend whose connections point at the shadow). Its handlers stay as they
//! are: they write unqualified table names, which resolve to the shadow.
//!
//! - PostgreSQL ([`PgBackend`](crate::PgBackend)): the shadow is a schema of
//!   its own, `<schema>_rebuild_<projection>`; the swap is one transaction
//!   that locks the live tables, drops them and moves the shadow tables into
//!   the live schema (`ALTER TABLE … SET SCHEMA`). Readers wait only for the
//!   swap itself.
//! - SQLite ([`SqliteBackend`](crate::SqliteBackend)): the shadow is a file
//!   beside the database, `<file>.rebuild-<projection>`; the swap attaches it
//!   to the writer and copies its rows over the live ones in one write
//!   transaction (WAL readers keep reading the old rows until the commit).
//!
//! The projection's parked events are swapped with the tables. Events
//! appended during the rebuild are neither lost nor applied twice:
//!
//! - When no live runner holds the projection's lease, the rebuild takes it
//!   for the swap and sets the projection's checkpoints (every partition's) to
//!   the shadow's, in the swap's transaction: whoever runs the projection next
//!   goes on exactly after what the swapped-in tables reflect.
//! - When a live runner holds it, the live checkpoints stay where they are and
//!   the swap brings the shadow to exactly those checkpoints first (under the
//!   swap's lock, so the live runner cannot move meanwhile): a batch the live
//!   runner read before the swap and commits after it then fits the new
//!   tables. If the live runner is behind the shadow, the swap waits for it
//!   (at most [`RebuildOptions::live_wait`], then [`RebuildError::LiveBehind`]).
//!
//! One rebuild of a projection at a time: a rebuild holds the lease
//! `<projection>#rebuild` in the live backend ([`RebuildError::Busy`]).
//! Nothing of the live read model changes unless the swap commits; a failed
//! rebuild drops its shadow. A [`Shadow`] dropped without [`Shadow::swap`] or
//! [`Shadow::discard`] leaves its schema or file behind until the next rebuild
//! of the projection replaces it.
//!
//! ```no_run
//! # #[cfg(feature = "postgres")]
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//!
//! use eslab_core::{EventStore, RecordedEvent, Upcasters};
//! use eslab_projection::{HandlerError, PgBackend, Projection, ReadModel, Rebuild, RebuildOptions};
//!
//! /// Counts events per stream in one table.
//! struct Counts;
//!
//! impl Projection<PgBackend> for Counts {
//!     fn name(&self) -> &str {
//!         "counts"
//!     }
//!
//!     async fn apply(
//!         &self,
//!         tx: &mut sqlx::Transaction<'static, sqlx::Postgres>,
//!         event: &RecordedEvent,
//!     ) -> Result<(), HandlerError> {
//!         sqlx::query(
//!             "INSERT INTO counts (stream_id, n) VALUES ($1, 1)
//!              ON CONFLICT (stream_id) DO UPDATE SET n = counts.n + 1",
//!         )
//!         .bind(event.stream_id.as_str())
//!         .execute(&mut **tx)
//!         .await
//!         .map_err(|e| HandlerError::transient(e.to_string()).with_source(e))?;
//!         Ok(())
//!     }
//! }
//!
//! impl ReadModel<PgBackend> for Counts {
//!     fn tables(&self) -> Vec<String> {
//!         vec!["counts".to_owned()]
//!     }
//!
//!     async fn create_tables(&self, backend: &PgBackend) -> Result<(), eslab_core::BoxError> {
//!         sqlx::query("CREATE TABLE IF NOT EXISTS counts (stream_id TEXT PRIMARY KEY, n BIGINT NOT NULL)")
//!             .execute(backend.pool())
//!             .await?;
//!         Ok(())
//!     }
//! }
//!
//! let store = eslab_postgres::PostgresStore::connect("postgres://postgres@localhost/postgres", "app").await?;
//! let live = Arc::new(PgBackend::new(store.pool().clone()));
//! let events = EventStore::new(store).with_upcasters(Upcasters::new());
//! let rebuild = Rebuild::new(events, live, Arc::new(Counts))
//!     .with_options(RebuildOptions { batch_size: 5_000, ..RebuildOptions::default() });
//! let done = rebuild
//!     .run(|p| eprintln!("{} events replayed, at {} of {}", p.events, p.checkpoint, p.head))
//!     .await?;
//! println!("swapped in at {} after {} events", done.checkpoint, done.events);
//! # Ok(())
//! # }
//! ```

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use eslab_core::{BoxError, Checkpoint, EventId, RecordedEvent, StreamId, Version};

use crate::backend::{Backend, Projection};
use crate::runner::{Outcome, Runner, RunnerOptions, UpcastingStore, partition_of};

#[cfg(feature = "postgres")]
mod postgres;
#[cfg(feature = "sqlite")]
mod sqlite;

/// What a projection tells a [`Rebuild`] about its read model.
///
/// The tables must hold nothing but what the projection writes from the feed:
/// the swap replaces them whole.
pub trait ReadModel<B: Backend>: Projection<B> {
    /// The tables the projection owns, unqualified (`[A-Za-z_][A-Za-z0-9_]*`),
    /// swapped together.
    fn tables(&self) -> Vec<String>;

    /// Creates the tables if they do not exist, through `backend` (the live
    /// one, or a shadow whose connections resolve unqualified names to the
    /// shadow): the projection's usual idempotent DDL, unqualified.
    fn create_tables(&self, backend: &B) -> impl Future<Output = Result<(), BoxError>> + Send;
}

/// Where a rebuild is, reported after each replayed batch (and once before the first).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Events replayed so far.
    pub events: u64,
    /// The checkpoint the shadow has reached.
    pub checkpoint: Checkpoint,
    /// The feed's head when the replay started ([`Checkpoint::START`] for an
    /// empty feed); with [`FeedFilter::All`](eslab_core::FeedFilter::All) its
    /// position is the number of events to replay.
    pub head: Checkpoint,
}

/// What a rebuild did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rebuilt {
    /// Events replayed into the shadow (plus, after a swap beside a live
    /// runner, those applied to bring the shadow to its checkpoints).
    pub events: u64,
    /// The checkpoint the (swapped-in) tables reflect: the lowest over the
    /// projection's partitions after a swap beside a live runner.
    pub checkpoint: Checkpoint,
}

/// Tuning of a [`Rebuild`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RebuildOptions {
    /// Events per replayed batch (per transaction of the shadow). Default 2 000.
    pub batch_size: usize,
    /// Who rebuilds, for the leases it takes. Default: `rebuild:` and a
    /// [`RunnerOptions::process_owner`].
    pub owner: String,
    /// The partition count of the live runner ([`Runner::partitioned`]), whose
    /// checkpoints the swap reads or sets. Default 1.
    pub partitions: u16,
    /// How long the rebuild's leases last without renewal. Default 30 s.
    pub lease_ttl: Duration,
    /// How long a swap beside a live runner waits for it to reach the
    /// shadow's checkpoint (and how long a swap retries lock conflicts, such
    /// as a deadlock with a live batch). Default 60 s.
    pub live_wait: Duration,
}

impl Default for RebuildOptions {
    fn default() -> Self {
        RebuildOptions {
            batch_size: 2_000,
            owner: format!("rebuild:{}", RunnerOptions::process_owner()),
            partitions: 1,
            lease_ttl: Duration::from_secs(30),
            live_wait: Duration::from_secs(60),
        }
    }
}

/// Why a rebuild failed. The live read model is untouched in every case.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RebuildError {
    /// The event store, a backend or the replay failed (a transient handler
    /// error included: the rebuild gives up rather than retrying).
    #[error(transparent)]
    Projection(#[from] crate::Error),
    /// The database refused a statement of the rebuild itself.
    #[error("rebuilding {projection}: {doing}: {source}")]
    Database {
        /// The projection.
        projection: String,
        /// What the rebuild was doing.
        doing: &'static str,
        /// The database's error.
        #[source]
        source: sqlx::Error,
    },
    /// The projection's [`ReadModel::create_tables`] failed.
    #[error("creating the tables of {projection}: {source}")]
    CreateTables {
        /// The projection.
        projection: String,
        /// Its error.
        #[source]
        source: BoxError,
    },
    /// A table named by [`ReadModel::tables`] is missing after [`ReadModel::create_tables`].
    #[error("table {table} of projection {projection} does not exist in {place}")]
    MissingTable {
        /// The projection.
        projection: String,
        /// The table.
        table: String,
        /// The live or shadow schema or file.
        place: String,
    },
    /// A name that cannot be an identifier of the rebuild's SQL.
    #[error("{what} {name:?} cannot be used by a rebuild: {why}")]
    InvalidName {
        /// What it names (table, schema).
        what: &'static str,
        /// The name.
        name: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// The database is in memory: its read models do not outlive the process.
    #[error("an in-memory database keeps no read models between runs: nothing to rebuild")]
    InMemory,
    /// Another rebuild of the projection holds its rebuild lease.
    #[error("projection {projection} is being rebuilt by {holder}")]
    Busy {
        /// The projection.
        projection: String,
        /// Who rebuilds it.
        holder: String,
    },
    /// A live runner holds the projection's lease and stayed behind the
    /// shadow for [`RebuildOptions::live_wait`]: the shadow was dropped.
    #[error("the live runner of {projection} stayed at {live}, behind the rebuilt {shadow}, for {waited:?}")]
    LiveBehind {
        /// The projection.
        projection: String,
        /// The live runner's (lowest) checkpoint.
        live: Checkpoint,
        /// The shadow's.
        shadow: Checkpoint,
        /// How long the swap waited.
        waited: Duration,
    },
    /// The SQLite shadow file could not be removed.
    #[error("removing {}: {source}", path.display())]
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

impl RebuildError {
    /// A lock conflict (deadlock, busy database) the swap may retry.
    fn is_conflict(&self) -> bool {
        let RebuildError::Database { source: sqlx::Error::Database(e), .. } = self else { return false };
        // PostgreSQL: deadlock_detected, lock_not_available; SQLite: SQLITE_BUSY, SQLITE_LOCKED (and extended codes).
        matches!(e.code().as_deref(), Some("40P01" | "55P03" | "5" | "6" | "261" | "262" | "517" | "773"))
    }
}

/// `Result` of the rebuild.
type Result<T, E = RebuildError> = std::result::Result<T, E>;

/// A database statement's error, with what the rebuild was doing.
pub(crate) fn db<'a>(projection: &'a str, doing: &'static str) -> impl FnOnce(sqlx::Error) -> RebuildError + 'a {
    move |source| RebuildError::Database { projection: projection.to_owned(), doing, source }
}

/// `name` if it is a plain SQL identifier (safe unquoted, and inside double quotes).
pub(crate) fn ident<'a>(what: &'static str, name: &'a str) -> Result<&'a str> {
    let invalid = |why| RebuildError::InvalidName { what, name: name.to_owned(), why };
    if name.is_empty() || name.len() > 63 {
        return Err(invalid("an identifier has 1 to 63 characters"));
    }
    if name.starts_with(|c: char| c.is_ascii_digit()) || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(invalid("an identifier is [A-Za-z_][A-Za-z0-9_]*"));
    }
    Ok(name)
}

/// `projection` reduced to identifier characters, for shadow names.
pub(crate) fn suffix(projection: &str) -> String {
    projection.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '_' }).collect()
}

mod sealed {
    use std::future::Future;

    use eslab_core::Checkpoint;

    use super::Result;

    /// The projection's stored checkpoints, by name.
    pub(crate) type Checkpoints = Vec<(String, Checkpoint)>;

    /// A swap to finish: the checkpoints to set, when the rebuild holds the projection's lease.
    pub struct Finish<'a> {
        pub name: &'a str,
        pub tables: &'a [String],
        pub checkpoints: Option<(&'a [String], Checkpoint)>,
    }

    /// What a backend does for a rebuild (implemented for the SQL backends).
    pub trait ShadowOps: crate::Backend + Sized {
        /// Where a shadow lives.
        type Place: Send + Sync + std::fmt::Debug;
        /// An open swap: the live tables locked, the live checkpoints read.
        type Swap: Send;

        /// Creates the backend's own tables in the live database.
        fn ensure_live(&self, name: &str) -> impl Future<Output = Result<()>> + Send;

        /// Drops any old shadow of `name` and creates an empty one with the backend's tables.
        fn open_shadow(&self, name: &str) -> impl Future<Output = Result<(Self, Self::Place)>> + Send;

        /// Fails unless every table exists where this backend (live or shadow) writes.
        fn check_tables(&self, name: &str, tables: &[String]) -> impl Future<Output = Result<()>> + Send;

        /// Opens the swap: locks the live tables (and checkpoints) and reads
        /// the projection's live checkpoints.
        fn begin_swap(
            &self,
            place: &Self::Place,
            name: &str,
            tables: &[String],
        ) -> impl Future<Output = Result<(Self::Swap, Checkpoints)>> + Send;

        /// Moves the shadow's tables and parked events in, sets the
        /// checkpoints if asked, and commits.
        fn finish_swap(
            swap: Self::Swap,
            place: &Self::Place,
            finish: Finish<'_>,
        ) -> impl Future<Output = Result<()>> + Send;

        /// Rolls the swap back.
        fn abort_swap(swap: Self::Swap) -> impl Future<Output = ()> + Send;

        /// Closes the shadow's connections and drops it.
        fn drop_shadow(&self, shadow: Self, place: Self::Place, name: &str) -> impl Future<Output = Result<()>> + Send;
    }
}

/// A backend whose read models can be rebuilt beside the live ones:
/// [`PgBackend`](crate::PgBackend) (shadow schema) and
/// [`SqliteBackend`](crate::SqliteBackend) (shadow file). Sealed.
pub trait ShadowBackend: sealed::ShadowOps {}

impl<B: sealed::ShadowOps> ShadowBackend for B {}

/// Rebuilds one projection's read model: [`prepare`](Rebuild::prepare) a
/// shadow, then [`Shadow::swap`] it in; [`run`](Rebuild::run) does both.
#[derive(Debug)]
pub struct Rebuild<S, B, P> {
    store: S,
    live: Arc<B>,
    projection: Arc<P>,
    options: RebuildOptions,
}

impl<S, B, P> Rebuild<S, B, P>
where
    S: UpcastingStore,
    B: ShadowBackend,
    P: ReadModel<B>,
{
    /// A rebuild of `projection`, whose live read model `live` holds, from
    /// `store`'s feed (an upcasting store, as a [`Runner`] reads).
    pub fn new(store: S, live: Arc<B>, projection: Arc<P>) -> Self {
        Rebuild { store, live, projection, options: RebuildOptions::default() }
    }

    /// Sets the options.
    #[must_use]
    pub fn with_options(mut self, options: RebuildOptions) -> Self {
        self.options = options;
        self
    }

    /// Replays the whole feed into a fresh shadow (the live read model keeps
    /// serving, untouched), calling `progress` before the first batch and
    /// after each. On failure the shadow is dropped.
    pub async fn prepare(&self, mut progress: impl FnMut(Progress) + Send) -> Result<Shadow<S, B, P>> {
        let name = self.projection.name().to_owned();
        let tables = self.projection.tables();
        for table in &tables {
            ident("table", table)?;
        }
        self.live.ensure_live(&name).await?;
        self.projection
            .create_tables(&self.live)
            .await
            .map_err(|source| RebuildError::CreateTables { projection: name.clone(), source })?;
        self.live.check_tables(&name, &tables).await?;
        let guard = Guard { live: self.live.clone(), name: format!("{name}#rebuild"), options: self.options.clone() };
        guard.renew(&name).await?;
        let (shadow, place) = match self.live.open_shadow(&name).await {
            Ok(opened) => opened,
            Err(e) => {
                guard.release().await;
                return Err(e);
            }
        };
        let shadow = Arc::new(shadow);
        match self.replay(&shadow, &tables, &guard, &mut progress).await {
            Ok(rebuilt) => Ok(Shadow {
                store: self.store.clone(),
                live: self.live.clone(),
                projection: self.projection.clone(),
                options: self.options.clone(),
                shadow,
                place,
                tables,
                guard,
                rebuilt,
            }),
            Err(e) => {
                discard(self.live.as_ref(), shadow, place, &name).await;
                guard.release().await;
                Err(e)
            }
        }
    }

    /// Creates the shadow's tables and replays the feed into them.
    async fn replay(
        &self,
        shadow: &Arc<B>,
        tables: &[String],
        guard: &Guard<B>,
        progress: &mut (impl FnMut(Progress) + Send),
    ) -> Result<Rebuilt> {
        let name = self.projection.name();
        self.projection
            .create_tables(shadow)
            .await
            .map_err(|source| RebuildError::CreateTables { projection: name.to_owned(), source })?;
        shadow.check_tables(name, tables).await?;
        let head = self
            .store
            .feed_head(&self.projection.filter())
            .await
            .map_err(crate::Error::from)?
            .map_or(Checkpoint::START, |h| h.checkpoint);
        let runner =
            Runner::new(self.store.clone(), shadow.clone(), self.projection.clone()).with_options(RunnerOptions {
                batch_size: self.options.batch_size.max(1),
                owner: self.options.owner.clone(),
                lease_ttl: self.options.lease_ttl,
                ..RunnerOptions::default()
            });
        let mut events = 0_u64;
        let mut checkpoint = Checkpoint::START;
        progress(Progress { events, checkpoint, head });
        loop {
            match runner.run_once().await? {
                Outcome::Processed { events: n, checkpoint: at, .. } => {
                    events = events.saturating_add(u64::try_from(n).unwrap_or(u64::MAX));
                    checkpoint = at;
                    guard.renew(name).await?;
                    progress(Progress { events, checkpoint, head });
                }
                Outcome::Idle => break,
                Outcome::NotLeader => return Err(crate::Error::NotLeader(name.to_owned()).into()),
            }
        }
        Ok(Rebuilt { events, checkpoint })
    }

    /// [`prepare`](Self::prepare), then [`Shadow::swap`].
    pub async fn run(&self, progress: impl FnMut(Progress) + Send) -> Result<Rebuilt> {
        self.prepare(progress).await?.swap().await
    }
}

/// The rebuild lease of a projection (`<name>#rebuild`), held from prepare to swap.
#[derive(Debug)]
struct Guard<B> {
    live: Arc<B>,
    name: String,
    options: RebuildOptions,
}

impl<B: Backend> Guard<B> {
    /// Takes or renews it; [`RebuildError::Busy`] while another rebuild holds it.
    async fn renew(&self, projection: &str) -> Result<()> {
        if self.live.acquire_lease(&self.name, &self.options.owner, self.options.lease_ttl).await? {
            return Ok(());
        }
        let holder = self.live.lease(&self.name).await?.map_or_else(|| "another rebuild".to_owned(), |l| l.owner);
        Err(RebuildError::Busy { projection: projection.to_owned(), holder })
    }

    async fn release(&self) {
        if let Err(e) = self.live.release_lease(&self.name, &self.options.owner).await {
            tracing::warn!(lease = %self.name, error = %e, "cannot release the rebuild's lease; it runs out by itself");
        }
    }
}

/// Drops a shadow, logging a failure (the next rebuild replaces it anyway).
async fn discard<B: ShadowBackend>(live: &B, shadow: Arc<B>, place: B::Place, name: &str) {
    // The replay's runner is gone: the shadow backend has no other owner.
    let shadow = match Arc::try_unwrap(shadow) {
        Ok(shadow) => shadow,
        Err(_) => {
            tracing::warn!(projection = name, "the shadow is still in use; the next rebuild replaces it");
            return;
        }
    };
    if let Err(e) = live.drop_shadow(shadow, place, name).await {
        tracing::warn!(projection = name, error = %e, "cannot drop the rebuild's shadow; the next rebuild replaces it");
    }
}

/// A replayed shadow copy of a projection's read model, ready to be swapped in.
#[derive(Debug)]
pub struct Shadow<S, B: ShadowBackend, P> {
    store: S,
    live: Arc<B>,
    projection: Arc<P>,
    options: RebuildOptions,
    shadow: Arc<B>,
    place: B::Place,
    tables: Vec<String>,
    guard: Guard<B>,
    rebuilt: Rebuilt,
}

impl<S, B, P> Shadow<S, B, P>
where
    S: UpcastingStore,
    B: ShadowBackend,
    P: ReadModel<B>,
{
    /// What the shadow holds.
    pub fn rebuilt(&self) -> Rebuilt {
        self.rebuilt
    }

    /// Drops the shadow without swapping it in.
    pub async fn discard(self) {
        discard(self.live.as_ref(), self.shadow, self.place, self.projection.name()).await;
        self.guard.release().await;
    }

    /// Swaps the shadow's tables and parked events in, atomically, with the
    /// checkpoints as the [module documentation](crate::rebuild) says. On
    /// failure nothing live changes. The shadow is dropped either way.
    pub async fn swap(self) -> Result<Rebuilt> {
        let swapped = self.swap_in().await;
        discard(self.live.as_ref(), self.shadow, self.place, self.projection.name()).await;
        self.guard.release().await;
        swapped
    }

    /// Tries the swap until it is done, fails, or the live runner stayed
    /// behind for [`RebuildOptions::live_wait`].
    async fn swap_in(&self) -> Result<Rebuilt> {
        let name = self.projection.name();
        let at = self.rebuilt.checkpoint;
        let started = Instant::now();
        let mut pause = Duration::from_millis(10);
        loop {
            self.guard.renew(name).await?;
            let exclusive = self.live.acquire_lease(name, &self.options.owner, self.options.lease_ttl).await?;
            let attempt = self.try_swap(exclusive).await;
            if exclusive && let Err(e) = self.live.release_lease(name, &self.options.owner).await {
                tracing::warn!(projection = name, error = %e, "cannot release the projection's lease after the swap");
            }
            let waited = started.elapsed();
            match attempt {
                Ok(Attempt::Swapped(rebuilt)) => return Ok(rebuilt),
                Ok(Attempt::Behind(live)) if waited >= self.options.live_wait => {
                    return Err(RebuildError::LiveBehind { projection: name.to_owned(), live, shadow: at, waited });
                }
                Ok(Attempt::Behind(live)) => {
                    tracing::info!(projection = name, live = %live, shadow = %at,
                        "waiting for the live runner to reach the rebuilt checkpoint");
                }
                Err(e) if e.is_conflict() && waited < self.options.live_wait => {
                    tracing::info!(projection = name, error = %e, "the swap met a lock conflict; trying again");
                }
                Err(e) => return Err(e),
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(1));
        }
    }

    /// One attempt at the swap: with the projection's lease (`exclusive`),
    /// the checkpoints follow the shadow; without it, the shadow is brought
    /// to the live checkpoints, unless the live runner is behind it.
    async fn try_swap(&self, exclusive: bool) -> Result<Attempt> {
        let name = self.projection.name();
        let (swap, rows) = self.live.begin_swap(&self.place, name, &self.tables).await?;
        let decided = if exclusive {
            let mut names = checkpoint_names(name, self.options.partitions);
            names.extend(rows.into_iter().map(|(n, _)| n));
            names.sort();
            names.dedup();
            Ok(Decision::Swap { checkpoints: Some(names), rebuilt: self.rebuilt })
        } else {
            let live = live_checkpoints(name, self.options.partitions, &rows);
            let lowest = live.iter().copied().min().unwrap_or(Checkpoint::START);
            if lowest < self.rebuilt.checkpoint {
                Ok(Decision::Behind(lowest))
            } else {
                self.bring_up(&live).await.map(|applied| Decision::Swap {
                    checkpoints: None,
                    rebuilt: Rebuilt { events: self.rebuilt.events.saturating_add(applied), checkpoint: lowest },
                })
            }
        };
        match decided {
            Ok(Decision::Swap { checkpoints, rebuilt }) => {
                let checkpoints = checkpoints.as_deref().map(|names| (names, self.rebuilt.checkpoint));
                let finish = sealed::Finish { name, tables: &self.tables, checkpoints };
                B::finish_swap(swap, &self.place, finish).await.map(|()| Attempt::Swapped(rebuilt))
            }
            Ok(Decision::Behind(live)) => {
                B::abort_swap(swap).await;
                Ok(Attempt::Behind(live))
            }
            Err(e) => {
                B::abort_swap(swap).await;
                Err(e)
            }
        }
    }

    /// Applies to the shadow the events after its checkpoint up to each
    /// partition's live checkpoint `live[p]`, parking as the runner does.
    /// Returns how many were applied or parked.
    async fn bring_up(&self, live: &[Checkpoint]) -> Result<u64> {
        let name = self.projection.name();
        let filter = self.projection.filter();
        let partitions = u16::try_from(live.len()).unwrap_or(u16::MAX);
        let upto = live.iter().copied().max().unwrap_or(Checkpoint::START);
        let mut cursor = self.rebuilt.checkpoint;
        let mut applied = 0_u64;
        while cursor < upto {
            let batch = self
                .store
                .read_feed(&filter, cursor, self.options.batch_size.max(1))
                .await
                .map_err(crate::Error::from)?;
            let Some(last) = batch.last().map(RecordedEvent::checkpoint) else { break };
            let events: Vec<&RecordedEvent> = batch
                .iter()
                .filter(|e| {
                    let p = usize::from(partition_of(&e.stream_id, partitions));
                    live.get(p).is_some_and(|at| e.checkpoint() <= *at)
                })
                .collect();
            apply_parking(self.shadow.as_ref(), self.projection.as_ref(), name, &events).await?;
            applied = applied.saturating_add(u64::try_from(events.len()).unwrap_or(u64::MAX));
            cursor = last;
        }
        Ok(applied)
    }
}

/// What a swap attempt found under its lock.
enum Decision {
    /// Swap in; set these checkpoints (to the shadow's) if any.
    Swap { checkpoints: Option<Vec<String>>, rebuilt: Rebuilt },
    /// The live runner is behind the shadow (its lowest checkpoint).
    Behind(Checkpoint),
}

/// How one swap attempt ended.
enum Attempt {
    Swapped(Rebuilt),
    /// The live runner is behind the shadow (its lowest checkpoint).
    Behind(Checkpoint),
}

/// The checkpoint names of a runner of `name` with `partitions` partitions (as the runner names them).
fn checkpoint_names(name: &str, partitions: u16) -> Vec<String> {
    match partitions {
        0 | 1 => vec![name.to_owned()],
        n => (0..n).map(|p| format!("{name}#{p}/{n}")).collect(),
    }
}

/// Per partition, the live checkpoint among `rows` ([`Checkpoint::START`] if missing).
fn live_checkpoints(name: &str, partitions: u16, rows: &[(String, Checkpoint)]) -> Vec<Checkpoint> {
    checkpoint_names(name, partitions)
        .iter()
        .map(|n| rows.iter().find(|(stored, _)| stored == n).map_or(Checkpoint::START, |(_, at)| *at))
        .collect()
}

/// Applies `events` in one transaction of `backend`, parking the streams
/// already parked there and any whose handler fails (as the runner does).
async fn apply_parking<B: Backend, P: Projection<B>>(
    backend: &B,
    projection: &P,
    name: &str,
    events: &[&RecordedEvent],
) -> Result<()> {
    let mut parked_from: HashMap<StreamId, Version> =
        backend.parked_streams(name).await?.into_iter().map(|s| (s, Version::NONE)).collect();
    let mut reasons: HashMap<EventId, String> = HashMap::new();
    // Each round parks one more stream, so this ends within (streams + 1) rounds.
    loop {
        let mut tx = backend.begin().await?;
        let mut apply = Vec::with_capacity(events.len());
        for event in events {
            if parked_from.get(&event.stream_id).is_some_and(|from| event.stream_version >= *from) {
                let reason = reasons.get(&event.event_id).map_or("stream parked", String::as_str);
                backend.park(&mut tx, name, event, reason).await?;
            } else {
                apply.push(*event);
            }
        }
        let (i, e) = match projection.apply_all(&mut tx, &apply).await {
            Ok(()) => return Ok(backend.commit(tx).await?),
            Err(failed) => failed,
        };
        drop(tx);
        if e.transient {
            return Err(crate::Error::Transient { projection: name.to_owned(), source: e }.into());
        }
        let Some(event) = apply.get(i) else {
            let n = apply.len();
            return Err(
                crate::Error::Backend(format!("projection {name} reported failing event {i} of {n}").into()).into()
            );
        };
        tracing::warn!(projection = name, stream = %event.stream_id, version = %event.stream_version,
            error = %e, "handler failed; parking the stream");
        parked_from.insert(event.stream_id.clone(), event.stream_version);
        reasons.insert(event.event_id, e.message);
    }
}

#[cfg(test)]
mod tests {
    use eslab_core::{Checkpoint, Position};

    #[test]
    fn identifiers_are_plain() {
        assert!(super::ident("table", "account_summary").is_ok());
        assert!(super::ident("table", "T2").is_ok());
        for bad in ["", "2t", "a-b", "a\"b", "a b", &"x".repeat(64)] {
            assert!(super::ident("table", bad).is_err(), "{bad:?}");
        }
        assert_eq!(super::suffix("Bank-Views"), "bank_views");
    }

    #[test]
    fn live_checkpoints_follow_the_runner_names() {
        let at = |p| Checkpoint::new(p, Position::new(p));
        let rows = vec![("v".to_owned(), at(9)), ("v#0/2".to_owned(), at(3)), ("v#1/2".to_owned(), at(4))];
        assert_eq!(super::live_checkpoints("v", 1, &rows), [at(9)]);
        assert_eq!(super::live_checkpoints("v", 2, &rows), [at(3), at(4)]);
        assert_eq!(super::live_checkpoints("v", 3, &rows), [Checkpoint::START; 3]);
        assert_eq!(super::checkpoint_names("v", 2), ["v#0/2", "v#1/2"]);
    }
}
