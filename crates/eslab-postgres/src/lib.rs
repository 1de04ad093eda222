//! # eslab-postgres
//!
//! The PostgreSQL event store of eslab: [`PostgresStore`] implements
//! [`EventAppender`], [`EventReader`], [`SnapshotStore`](eslab_core::SnapshotStore)
//! and [`CheckpointStore`](eslab_core::CheckpointStore) on sqlx (runtime-checked
//! queries), in one schema of your choosing, with embedded migrations.
//!
//! ```no_run
//! use eslab_core::{Checkpoint, EventAppender, EventReader, ExpectedVersion, FeedFilter, Metadata, NewEvent, StreamId};
//! use eslab_postgres::PostgresStore;
//! # async fn run() -> eslab_core::Result<()> {
//! // Creates the schema if needed and runs the migrations into it.
//! let store = PostgresStore::connect("postgres://postgres@127.0.0.1:5432/postgres", "eslab").await?;
//! let stream: StreamId = "account-1".parse()?;
//! let opened = NewEvent::new("Opened", 1, serde_json::json!({ "owner": "ada" }), Metadata::now());
//! store.append(&stream, ExpectedVersion::NoStream, vec![opened]).await?;
//! let page = store.read_feed(&FeedFilter::All, Checkpoint::START, 100).await?;
//! let resume_from = page.last().map(|e| e.checkpoint());
//! # let _ = resume_from; Ok(()) }
//! ```
//!
//! ## Appends: one statement, one round trip
//!
//! [`append`](EventAppender::append) and [`append_streams`](EventAppender::append_streams)
//! run a single statement (in autocommit, so it is also the transaction):
//! a CTE locks the existing `streams` rows of the request with `FOR UPDATE`
//! (in `stream_id` order, so multi-stream appends cannot deadlock), which under
//! READ COMMITTED yields each stream's *latest* committed version; it checks
//! every expectation; only if all hold does it insert new `streams` rows,
//! bump existing ones and insert every event with one `INSERT .. SELECT FROM
//! UNNEST(..)`. By default the NOTIFY that wakes live readers is sent after
//! the commit, by a per-store notifier that coalesces a burst of appends into
//! one (see [`Notify`]).
//! (A one-stream append takes a shorter path: one upsert, or guarded update,
//! of its `streams` row claims the versions, and the events follow in the
//! same statement.) A failed expectation returns the actual versions and writes nothing, so
//! [`Error::Conflict`] carries the actual version.
//! Two appends creating the same stream race on the `streams` primary key: the
//! loser's unique violation (classified by error kind and constraint name)
//! triggers a re-read of the versions, giving a `Conflict` with the actual
//! version, or a retry when the expectation still holds (`Any`). An event id
//! already stored (constraint `events_event_id_key`) is
//! [`Error::DuplicateEventId`].
//!
//! [`PostgresStore::append_in_tx`] runs the same statement inside your
//! transaction (inline projections, tests that hold a transaction open).
//! [`PostgresStore::import`] bulk-loads with `COPY`.
//!
//! [`AppendStrategy::UniqueIndex`] is the alternative without the version
//! row: the unique index on `(stream_id, stream_version)` arbitrates. Because
//! the append statement costs more to plan than to run, the pool sets
//! `plan_cache_mode = force_generic_plan`. [`Notify`] chooses whether the
//! NOTIFY is sent after the append's commit, coalesced (default), or in its
//! transaction (PostgreSQL serializes the commits of notifying transactions).
//!
//! `docs/patterns/postgres-event-store.md` has the design and measurements.
//!
//! ## The gap-safe feed
//!
//! Identity values are handed out at insert time, not at commit time: a
//! transaction holding position 10 may commit after one holding position 11.
//! A reader ordered by `global_position` that has already passed 11 would
//! never see 10. This store orders the feed by `(transaction_id,
//! global_position)` (`transaction_id` is `pg_current_xact_id()`, an `xid8`)
//! and only returns rows whose transaction is below
//! `pg_snapshot_xmin(pg_current_snapshot())`, the oldest transaction still in
//! flight: every transaction below it has finished, and every transaction
//! that is yet to commit has an id at or above it, so nothing can ever appear
//! before a returned event. A [`Checkpoint`] is the
//! pair `(transaction, position)`.
//!
//! The price is that an open transaction (any transaction with an id, on any
//! table of the cluster) holds back the feed until it ends. So that a reader
//! that has caught up still sees the latest commits, `read_feed` waits up to
//! [`PostgresOptions::feed_settle`] (default 2 s) for the transactions older
//! than the newest committed event to finish before it returns a short page.
//!
//! ## Dynamic consistency boundaries
//!
//! Tags live in the events' metadata (`metadata -> 'tags'`) under a partial
//! GIN index. [`read_query`](EventReader::read_query) returns the matching
//! events with the snapshot of the statement that read them;
//! [`append_if`](EventAppender::append_if) takes advisory locks on the
//! boundary in key order, appends, and checks in a new statement (a new
//! snapshot, after the locks) that no matching event the read's snapshot hid
//! has committed. READ COMMITTED throughout; disjoint boundaries do not wait
//! for each other; plain appends take no lock. The argument is in the
//! `boundary` module's source and `docs/patterns/dcb.md`.
//!
//! ## Retention
//!
//! [`StreamRetention`](eslab_core::StreamRetention) deletes the old streams of
//! a bookkeeping category (idempotency keys; never domain events) in one
//! statement that locks their version rows as appends do; it inserts nothing,
//! so the feed stays gap-safe.
//!
//! ## Live readers
//!
//! [`PostgresStore::listener`] returns a [`Listener`] that wakes on the
//! append's NOTIFY and otherwise ticks with a backoff, so a follower polls
//! `read_feed` after each wake-up and never depends on notifications alone.
//!
//! Subscriptions of the store ([`WakeUps`](eslab_core::WakeUps)) are woken two
//! ways: by the appends of the same store (any clone) in this process at once,
//! without a round trip, and by everyone else's (other processes, other store
//! instances) through `LISTEN`. By default ([`Notify::AfterCommit`]) an
//! append's NOTIFY leaves within [`PostgresOptions::notify_window`] (2 ms by
//! default) plus a round trip or two after its commit.

mod append;
mod boundary;
mod error;
mod explore;
mod feed;
mod group;
mod head;
mod import;
mod keys;
mod listener;
mod notifier;
mod retention;
mod rows;
mod side;
#[doc(hidden)]
pub mod statements;
mod url;

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use eslab_core::{
    AppendResult, Checkpoint, Error, EventAppender, EventReader, FeedFilter, LeanEvent, RecordedEvent, Result,
    StreamAppend, StreamId, Version,
};
use sqlx::migrate::MigrateError;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, Executor, PgConnection, PgPool};

pub use group::{DEFAULT_GROUP_FLUSHERS, GroupCommitOptions};
pub use listener::{Listener, Wake};
pub use url::redact_url;

use crate::append::{Batch, Failure, classify};
use crate::error::db;

/// The embedded migrations (`crates/eslab-postgres/migrations`).
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// The channel the append's NOTIFY is sent on; the payload is
/// `<schema>:<category>,<category>..`.
pub const NOTIFY_CHANNEL: &str = "eslab_events";

/// How often an append retries after losing a race (a stream created
/// concurrently; with [`AppendStrategy::UniqueIndex`], any version claim)
/// whose expectation still holds.
const RACE_RETRIES: u32 = 64;

/// When an append sends the NOTIFY that wakes live readers in other processes.
///
/// PostgreSQL serializes the commits of all transactions that sent a NOTIFY
/// in a database (a lock held until the commit, WAL flush included), so
/// in-transaction NOTIFY costs concurrent appends their group commit: the lab's
/// `wake-ups` experiment and `docs/patterns/postgres-event-store.md` have the
/// measured price. Whatever the mode, subscriptions of the same store in this
/// process are woken directly when an append commits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Notify {
    /// In the append's own statement: the notification is delivered exactly
    /// when the events commit, and never for a rolled-back append; every
    /// notifying commit waits for the one before it.
    InTransaction,
    /// After the commit, from one background task per store that gathers the
    /// appends of [`PostgresOptions::notify_window`] into one NOTIFY, sent in a
    /// transaction of its own that writes nothing. Every append path
    /// (single, multi-stream, group commit, import) notifies this way;
    /// [`PostgresStore::append_in_tx`] leaves it to
    /// [`PostgresStore::notify_committed`] after the caller's commit. A crash
    /// between commit and NOTIFY loses a wake-up, which the listeners' polling
    /// covers. The default.
    #[default]
    AfterCommit,
    /// No NOTIFY: readers in other processes rely on polling.
    Off,
}

/// The default [`PostgresOptions::notify_window`].
pub const DEFAULT_NOTIFY_WINDOW: Duration = Duration::from_millis(2);

/// How an append checks and claims stream versions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum AppendStrategy {
    /// Lock the stream's row in `streams` (`FOR UPDATE`), check, bump it and
    /// insert: concurrent appends to one stream queue on the row lock, so
    /// `Any` appends never fail or retry. Default.
    VersionRow,
    /// No version row: read the stream's highest version in the statement's
    /// snapshot and let the unique index on `(stream_id, stream_version)`
    /// refuse a stale claim (then re-read: a conflict, or a retry for
    /// expectations that still hold). One table and one lock fewer per
    /// append; contended `Any` appends retry, and two multi-stream appends
    /// naming the same streams in opposite orders can deadlock (the server
    /// detects it after `deadlock_timeout`, 1 s by default, and the victim is
    /// retried). Use one strategy per schema:
    /// `VersionRow` trusts `streams`, which `UniqueIndex` appends leave stale.
    UniqueIndex,
}

/// How to connect: URL, schema, pool size, feed settling, NOTIFY.
#[derive(Debug, Clone)]
pub struct PostgresOptions {
    url: String,
    schema: String,
    max_connections: u32,
    feed_settle: Duration,
    notify: Notify,
    notify_window: Duration,
    strategy: AppendStrategy,
    acquire_timeout: Duration,
    group_commit: Option<GroupCommitOptions>,
}

impl PostgresOptions {
    /// Options for `url` and `schema` (a lowercase identifier: `[a-z_][a-z0-9_]*`, at most 63 bytes).
    pub fn new(url: impl Into<String>, schema: impl Into<String>) -> Self {
        PostgresOptions {
            url: url.into(),
            schema: schema.into(),
            max_connections: 10,
            feed_settle: Duration::from_secs(2),
            notify: Notify::AfterCommit,
            notify_window: DEFAULT_NOTIFY_WINDOW,
            strategy: AppendStrategy::VersionRow,
            acquire_timeout: Duration::from_secs(10),
            group_commit: None,
        }
    }

    /// Commits the single-stream appends of concurrent callers together: one
    /// statement and one commit per batch instead of one each (see
    /// [`GroupCommitOptions`]). Off by default.
    #[must_use]
    pub fn group_commit(mut self, options: GroupCommitOptions) -> Self {
        self.group_commit = Some(options);
        self
    }

    /// The pool's size (default 10).
    #[must_use]
    pub fn max_connections(mut self, n: u32) -> Self {
        self.max_connections = n;
        self
    }

    /// How long `read_feed` may wait, before returning a short page, for
    /// in-flight transactions older than committed events (default 2 s; zero
    /// returns at once what is safe to return).
    #[must_use]
    pub fn feed_settle(mut self, d: Duration) -> Self {
        self.feed_settle = d;
        self
    }

    /// When appends send their NOTIFY (default [`Notify::AfterCommit`]).
    #[must_use]
    pub fn notify(mut self, mode: Notify) -> Self {
        self.notify = mode;
        self
    }

    /// Under [`Notify::AfterCommit`], how long the notifier gathers appends
    /// after the first one before it sends their NOTIFY (default
    /// [`DEFAULT_NOTIFY_WINDOW`], 2 ms). A reader in another process hears of
    /// an append at most this long plus two NOTIFY round trips after its
    /// commit (one if no NOTIFY was in flight; more only while the notifier's
    /// own connection is being re-established); a longer window sends fewer
    /// notifications under load. Zero sends as soon as the previous NOTIFY is
    /// done.
    #[must_use]
    pub fn notify_window(mut self, window: Duration) -> Self {
        self.notify_window = window;
        self
    }

    /// How appends check versions (default [`AppendStrategy::VersionRow`]).
    #[must_use]
    pub fn append_strategy(mut self, strategy: AppendStrategy) -> Self {
        self.strategy = strategy;
        self
    }

    /// How long to wait for a pooled connection before failing with
    /// [`Error::Unavailable`] (default 10 s).
    #[must_use]
    pub fn acquire_timeout(mut self, d: Duration) -> Self {
        self.acquire_timeout = d;
        self
    }

    /// The schema.
    pub fn schema(&self) -> &str {
        &self.schema
    }

    /// When appends send their NOTIFY (see [`notify`](Self::notify)).
    pub fn notify_mode(&self) -> Notify {
        self.notify
    }

    fn connect_options(&self) -> Result<PgConnectOptions> {
        validate_schema(&self.schema)?;
        let options = PgConnectOptions::from_str(&self.url)
            .map_err(|e| Error::InvalidRequest(format!("bad database url: {e}")))?;
        // Sent in the startup packet, so every connection (pooled or
        // listening) resolves unqualified names, `_sqlx_migrations` included,
        // in the store's schema, at no extra round trip. Generic plans: the
        // append statement costs more to plan (~0.6 ms) than to run (~0.3 ms),
        // and PostgreSQL keeps re-planning it with custom plans otherwise.
        Ok(options.options([("search_path", self.schema.as_str()), ("plan_cache_mode", "force_generic_plan")]))
    }
}

fn validate_schema(schema: &str) -> Result<()> {
    let ok = !schema.is_empty()
        && schema.len() <= 63
        && schema
            .bytes()
            .enumerate()
            .all(|(i, b)| b.is_ascii_lowercase() || b == b'_' || (i > 0 && b.is_ascii_digit()));
    if ok { Ok(()) } else { Err(Error::InvalidRequest(format!("schema name {schema:?} must match [a-z_][a-z0-9_]*"))) }
}

/// The PostgreSQL event, snapshot and checkpoint store. Clones share the pool.
#[derive(Debug, Clone)]
pub struct PostgresStore {
    pool: PgPool,
    options: Arc<PostgresOptions>,
    /// Wakes the coalescing notifier task ([`Notify::AfterCommit`]) and this
    /// process's subscribers of the store.
    notifier: Arc<notifier::Notifier>,
    /// The group-commit queue, when grouping is on.
    group: Option<group::Queue>,
}

impl PostgresStore {
    /// Connects to `url`, creates `schema` if needed and runs the migrations into it.
    pub async fn connect(url: &str, schema: &str) -> Result<Self> {
        PostgresStore::connect_with(PostgresOptions::new(url, schema)).await
    }

    /// Connects with `options`, creates the schema if needed and runs the migrations.
    pub async fn connect_with(options: PostgresOptions) -> Result<Self> {
        let store = PostgresStore::connect_lazy(options)?;
        // One direct connection: an unreachable server fails at once with the
        // real cause, instead of the pool retrying until its acquire timeout.
        let mut conn = PgConnection::connect_with(&store.pool.connect_options()).await.map_err(db)?;
        conn.execute(store.create_schema_sql().as_str()).await.map_err(db)?;
        let _ = conn.close().await;
        store.run_migrations().await?;
        Ok(store)
    }

    /// A store whose pool connects on first use; runs no migrations.
    ///
    /// # Panics
    /// Outside a Tokio runtime (sqlx spawns the pool's maintenance task).
    pub fn connect_lazy(options: PostgresOptions) -> Result<Self> {
        let connect = options.connect_options()?;
        let pool = PgPoolOptions::new()
            .max_connections(options.max_connections)
            .acquire_timeout(options.acquire_timeout)
            // A ping before every checkout would double the round trips of a
            // one-statement append; a dead connection fails its query instead
            // (reported as `Unavailable`) and is dropped from the pool.
            .test_before_acquire(false)
            .connect_lazy_with(connect);
        let notifier = Arc::new(notifier::Notifier::new(&pool, &options));
        let group_commit = options.group_commit.clone();
        let store = PostgresStore { pool, options: Arc::new(options), notifier, group: None };
        match group_commit {
            Some(group) => store.with_group_commit(group),
            None => Ok(store),
        }
    }

    /// This store (sharing its pool) with group commit on: single-stream
    /// appends of concurrent callers are committed together, each still
    /// judged on its own expectation (see [`GroupCommitOptions`]). Starts the
    /// flusher tasks, which end when the last clone of the returned store is
    /// dropped, after flushing what was queued.
    ///
    /// # Errors
    /// [`Error::InvalidRequest`] when called outside a Tokio runtime.
    pub fn with_group_commit(&self, options: GroupCommitOptions) -> Result<Self> {
        // The flushers append through a clone without the queue: their
        // appends go straight to the database, and they hold no sender that
        // would keep their own queue open for ever.
        let direct = PostgresStore { group: None, ..self.clone() };
        let queue = group::spawn(direct, &options)?;
        Ok(PostgresStore { group: Some(queue), ..self.clone() })
    }

    /// Whether single-stream appends are group-committed.
    pub fn is_group_commit(&self) -> bool {
        self.group.is_some()
    }

    /// Creates the schema if needed and applies pending migrations (idempotent).
    pub async fn migrate(&self) -> Result<()> {
        self.pool.execute(self.create_schema_sql().as_str()).await.map_err(db)?;
        self.run_migrations().await
    }

    fn create_schema_sql(&self) -> String {
        // sql-ident: the schema name is checked by `validate_schema`, so quoting it is enough.
        format!("CREATE SCHEMA IF NOT EXISTS \"{}\"", self.options.schema)
    }

    /// Applies [`MIGRATOR`] on a pooled connection (the schema must exist).
    ///
    /// On the pool, never on a `&mut PgConnection`: a future awaiting
    /// `MIGRATOR.run(&mut conn)` is `Send` only if `&mut PgConnection`
    /// implements `Acquire<'a>` for *every* lifetime, which sqlx does not
    /// ("implementation of `Acquire` is not general enough",
    /// launchbadge/sqlx#2016), so `connect`, `connect_with` and `migrate` did
    /// not compile in `tokio::spawn`. `&PgPool` implements it for every
    /// lifetime. `tests/it/send.rs` checks it.
    async fn run_migrations(&self) -> Result<()> {
        MIGRATOR.run(&self.pool).await.map_err(|e| match e {
            MigrateError::Execute(e) => db(e),
            other => Error::backend(other),
        })
    }

    /// Drops the store's schema and everything in it, then closes the pool.
    pub async fn drop_schema(self) -> Result<()> {
        // sql-ident: the schema name is checked by `validate_schema`.
        sqlx::query(&format!("DROP SCHEMA IF EXISTS \"{}\" CASCADE", self.options.schema))
            .execute(&self.pool)
            .await
            .map_err(db)?;
        self.pool.close().await;
        Ok(())
    }

    /// The connection pool. Every connection has `search_path` set to the
    /// schema and `plan_cache_mode = force_generic_plan` (see the crate docs).
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The options the store was built with.
    pub fn options(&self) -> &PostgresOptions {
        &self.options
    }

    /// The schema the store lives in.
    pub fn schema(&self) -> &str {
        &self.options.schema
    }

    /// Appends inside the caller's transaction (pass `&mut *tx`): the same
    /// one-statement append, committed or rolled back with the transaction.
    ///
    /// Unlike [`append_streams`](EventAppender::append_streams), a lost
    /// stream-creation race is never retried (the failed statement aborts the
    /// transaction): it is reported as a conflict with the actual version.
    /// The events' transaction id (their feed order) is the transaction's id.
    pub async fn append_in_tx(&self, conn: &mut PgConnection, appends: Vec<StreamAppend>) -> Result<Vec<AppendResult>> {
        eslab_core::check_storable(&appends)?;
        let batch = Batch::new(appends)?;
        match batch.execute(conn, self.options.strategy, self.options.notify == Notify::InTransaction).await {
            Ok(rows) => batch.results(&rows),
            Err(e) => match classify(&self.pool, &batch, e).await {
                Failure::Fail(e) => Err(e),
                Failure::Retry => {
                    let versions = append::versions(&self.pool, batch.stream_ids()).await?;
                    Err(batch.lost_race(&versions))
                }
                Failure::Transient(e) => Err(db(e)),
            },
        }
    }

    /// A page of the feed without waiting for in-flight transactions: what
    /// is safe to return right now (used by tests and by followers that poll).
    pub async fn read_feed_now(
        &self,
        filter: &FeedFilter,
        after: Checkpoint,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>> {
        Ok(feed::feed_page(&self.pool, filter, after, limit).await?.0)
    }

    /// Announces appends made with [`append_in_tx`](Self::append_in_tx)
    /// once the caller's transaction committed: wakes this process's
    /// subscribers of the store and, under [`Notify::AfterCommit`], has the
    /// notifier send a NOTIFY (under [`Notify::InTransaction`] the append sent
    /// it in the transaction). Without it, readers see the events at their
    /// next poll. `results` are the appends' results (nothing to announce when
    /// they hold no event).
    pub fn notify_committed(&self, results: &[AppendResult]) {
        if results.iter().any(|r| !r.events.is_empty()) {
            self.poke_notifier();
        }
    }

    /// After a committed append: wake this process's subscribers and make
    /// sure a NOTIFY is due ([`Notify::AfterCommit`]).
    pub(crate) fn poke_notifier(&self) {
        self.notifier.committed();
    }

    async fn append_all(&self, appends: Vec<StreamAppend>) -> Result<Vec<AppendResult>> {
        eslab_core::check_storable(&appends)?;
        let appends = match &self.group {
            Some(queue) => match group::enqueue(queue, appends).await? {
                Ok(appended) => return Ok(appended),
                // Not a single-stream append with events: no group for it.
                Err(appends) => appends,
            },
            None => appends,
        };
        let batch = Batch::new(appends)?;
        let notify = self.options.notify == Notify::InTransaction;
        let one_stream = batch.is_one_stream();
        let mut attempt = 0_u32;
        loop {
            let mut conn = self.pool.acquire().await.map_err(db)?;
            let outcome = if one_stream {
                batch.execute_one_stream(&mut conn, self.options.strategy, notify).await
            } else {
                batch.execute(&mut conn, self.options.strategy, notify).await
            };
            drop(conn);
            let failure = match outcome {
                // A refused one-stream claim inserts nothing.
                Ok(rows) if one_stream && rows.is_empty() => append::refused(&self.pool, &batch).await,
                Ok(rows) => {
                    self.poke_notifier();
                    return if one_stream { batch.one_stream_results(&rows) } else { batch.results(&rows) };
                }
                Err(e) => classify(&self.pool, &batch, e).await,
            };
            match failure {
                Failure::Fail(e) => return Err(e),
                Failure::Retry | Failure::Transient(_) if attempt < RACE_RETRIES => {
                    attempt += 1;
                    // Contended streams: spread the retries out a little.
                    if attempt > 2 {
                        tokio::time::sleep(std::time::Duration::from_micros(100 * u64::from(attempt))).await;
                    }
                }
                Failure::Transient(e) => return Err(db(e)),
                Failure::Retry => return Err(Error::backend("append kept losing version races")),
            }
        }
    }
}

impl EventAppender for PostgresStore {
    async fn append_streams(&self, appends: Vec<StreamAppend>) -> Result<Vec<AppendResult>> {
        self.append_all(appends).await
    }

    /// Advisory locks on the boundary, the append, then the check in a new
    /// statement of the same transaction (see the crate docs, "Dynamic
    /// consistency boundaries"). Never goes through group commit.
    async fn append_if(
        &self,
        appends: Vec<StreamAppend>,
        condition: eslab_core::AppendCondition,
    ) -> Result<Vec<AppendResult>> {
        self.append_if_all(appends, condition).await
    }
}

impl EventReader for PostgresStore {
    fn personal_keys(&self) -> Option<Arc<dyn eslab_core::KeyStore>> {
        Some(self.key_store())
    }

    async fn read_stream(&self, stream: &StreamId, from: Version, limit: usize) -> Result<Vec<RecordedEvent>> {
        feed::read_stream(&self.pool, stream, from, limit).await
    }

    async fn read_stream_lean(&self, stream: &StreamId, from: Version, limit: usize) -> Result<Vec<LeanEvent>> {
        feed::read_stream_lean(&self.pool, stream, from, limit).await
    }

    async fn read_feed(&self, filter: &FeedFilter, after: Checkpoint, limit: usize) -> Result<Vec<RecordedEvent>> {
        feed::read_feed(&self.pool, filter, after, limit, self.options.feed_settle).await
    }

    async fn stream_version(&self, stream: &StreamId) -> Result<Version> {
        let version: Option<i64> = sqlx::query_scalar("SELECT max(stream_version) FROM events WHERE stream_id = $1")
            .bind(stream.as_str())
            .fetch_one(&self.pool)
            .await
            .map_err(db)?;
        Ok(Version::new(version.map(|v| rows::to_u64(v, "stream version")).transpose()?.unwrap_or(0)))
    }

    async fn feed_head(&self, filter: &FeedFilter) -> Result<Option<eslab_core::FeedHead>> {
        head::feed_head(&self.pool, filter).await
    }

    async fn read_query(&self, query: &eslab_core::Query) -> Result<eslab_core::QueryRead> {
        let mut conn = self.pool.acquire().await.map_err(db)?;
        boundary::read_query(&mut conn, query).await
    }
}
