//! # eslab-sqlite
//!
//! The embedded event store: one SQLite file (or an in-memory database) holding
//! events, snapshots and checkpoints, through sqlx. It needs no server, so it is
//! eslab's default store (`sqlite://data/eslab.db`).
//!
//! ```
//! use eslab_core::{Checkpoint, EventAppender, EventReader, ExpectedVersion, FeedFilter, Metadata, NewEvent, StreamId, Version};
//! use eslab_sqlite::SqliteStore;
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! // `SqliteStore::connect("sqlite://data/eslab.db")` for a file.
//! let store = SqliteStore::in_memory().await?;
//! let stream: StreamId = "account-1".parse()?;
//! let event = NewEvent::new("Opened", 1, serde_json::json!({ "owner": "Ada" }), Metadata::now());
//! let done = store.append(&stream, ExpectedVersion::NoStream, vec![event]).await?;
//! assert_eq!(done.version, Version::FIRST);
//! let feed = store.read_feed(&FeedFilter::All, Checkpoint::START, 10).await?;
//! assert_eq!(feed[0].payload["owner"], "Ada");
//! # Ok::<_, Box<dyn std::error::Error>>(())
//! # }).unwrap();
//! ```
//!
//! ## Design
//! - **One writer.** Every write runs on a pool of exactly one connection, so
//!   in-process writers queue for it (up to the acquire timeout) instead of
//!   fighting over SQLite's write lock. Appends run in `BEGIN IMMEDIATE`
//!   transactions, which take the write lock up front: another *process*
//!   writing the same file makes us wait up to the busy timeout, never fail
//!   half-way through with `SQLITE_BUSY`. What still cannot get through
//!   surfaces as [`eslab_core::Error::Unavailable`] with a [`SqliteError`]
//!   saying which limit was hit.
//! - **Many readers.** Reads use a separate pool of `query_only` connections;
//!   in WAL mode they read a committed snapshot and neither block nor are
//!   blocked by the writer.
//! - **WAL, `synchronous = NORMAL`.** A commit appends to the write-ahead log
//!   without an fsync; the log is synced at checkpoints. The database can
//!   never be corrupted this way, but a *power loss or OS crash* (not a process
//!   crash) may roll back the last commits before the latest checkpoint. Use
//!   [`SqliteConfig::synchronous_full`] when that matters more than latency.
//! - **The feed is the rowid order.** `global_position` is the rowid; since
//!   writes are serialised, positions commit in order and a feed reader never
//!   skips a late commit. [`Checkpoint::transaction`](eslab_core::Checkpoint)
//!   is always 0 here.
//! - **Wake-ups.** [`SqliteStore::subscribe`] returns a watch channel that
//!   moves to the latest position after every committed append *made through
//!   this store (or a clone)*. Writers in other processes do not fire it, so
//!   live readers should also poll. The store's [`WakeUps`](eslab_core::WakeUps)
//!   are this watch, so [`EventStore::subscribe`](eslab_core::EventStore::subscribe)
//!   follows the feed with it (and polls).
//!
//! - **Retention.** [`StreamRetention`](eslab_core::StreamRetention) deletes
//!   old streams of a bookkeeping category (never domain events); it keeps a
//!   stream holding the store's newest event for a later call, since the next
//!   position is derived from it.
//!
//! Migrations are embedded (`migrations/`) and applied on connect.

mod error;
mod events;
mod head;
mod inline;
mod keys;
mod retention;
mod side;
mod wake;

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use eslab_core::Position;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};
use tokio::sync::watch;

pub use error::SqliteError;
use error::Timeouts;

/// The embedded migrations (`crates/eslab-sqlite/migrations`).
static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// How a [`SqliteStore`] connects. Start from [`SqliteConfig::default`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct SqliteConfig {
    /// Connections in the read pool (default 4). In-memory stores ignore it.
    pub readers: u32,
    /// How long a caller waits for a pooled connection, the writer included,
    /// before failing with `Unavailable` (default 30 s).
    pub acquire_timeout: Duration,
    /// How long SQLite waits for a lock held by another connection (another
    /// process) before giving up with `SQLITE_BUSY` (default 5 s).
    pub busy_timeout: Duration,
    /// `synchronous = FULL` instead of `NORMAL` (default `false`; see the crate docs).
    pub synchronous_full: bool,
}

impl Default for SqliteConfig {
    fn default() -> Self {
        SqliteConfig {
            readers: 4,
            acquire_timeout: Duration::from_secs(30),
            busy_timeout: Duration::from_secs(5),
            synchronous_full: false,
        }
    }
}

impl SqliteConfig {
    /// Sets the number of read connections (at least 1).
    #[must_use]
    pub fn readers(mut self, readers: u32) -> Self {
        self.readers = readers.max(1);
        self
    }

    /// Sets the pool acquire timeout.
    #[must_use]
    pub fn acquire_timeout(mut self, timeout: Duration) -> Self {
        self.acquire_timeout = timeout;
        self
    }

    /// Sets SQLite's busy timeout.
    #[must_use]
    pub fn busy_timeout(mut self, timeout: Duration) -> Self {
        self.busy_timeout = timeout;
        self
    }

    /// Chooses `synchronous = FULL` (`true`) or `NORMAL` (`false`).
    #[must_use]
    pub fn synchronous_full(mut self, full: bool) -> Self {
        self.synchronous_full = full;
        self
    }
}

#[derive(Debug)]
struct Inner {
    /// Exactly one connection: every write goes through it.
    writer: SqlitePool,
    /// Read-only connections (the writer pool itself for in-memory stores).
    reader: SqlitePool,
    /// The highest committed position, bumped after each append that wrote.
    committed: watch::Sender<Position>,
    timeouts: Timeouts,
}

/// The SQLite event store, which is also a snapshot and checkpoint store.
/// Cheap to clone; clones share the pools and the wake-up channel.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

impl SqliteStore {
    /// The default database URL: `sqlite://data/eslab.db`, relative to the
    /// working directory.
    pub fn default_url() -> &'static str {
        "sqlite://data/eslab.db"
    }

    /// Opens (creating it and its parent directories if missing) the database
    /// at `url` (`sqlite://path/to/file.db`, or `sqlite::memory:`), applies the
    /// migrations, with the default [`SqliteConfig`].
    pub async fn connect(url: &str) -> Result<Self, SqliteError> {
        SqliteStore::connect_with(url, SqliteConfig::default()).await
    }

    /// [`connect`](Self::connect) with a configuration.
    pub async fn connect_with(url: &str, config: SqliteConfig) -> Result<Self, SqliteError> {
        let invalid =
            |source: Box<dyn std::error::Error + Send + Sync>| SqliteError::InvalidUrl { url: url.to_owned(), source };
        // sqlx would take any string as a file name; refuse other schemes up front.
        if !url.starts_with("sqlite:") {
            return Err(invalid("the URL must start with sqlite:// (or be sqlite::memory:)".into()));
        }
        let options = SqliteConnectOptions::from_str(url).map_err(|e| invalid(e.into()))?;
        if is_memory_url(url) {
            return SqliteStore::open(options, config, true).await;
        }
        if options.get_filename().as_os_str().is_empty() {
            return Err(invalid("the URL names no database file".into()));
        }
        if let Some(dir) = options.get_filename().parent().filter(|d| !d.as_os_str().is_empty()) {
            // Once per connect: a blocking call is fine here.
            std::fs::create_dir_all(dir).map_err(|e| invalid(e.into()))?;
        }
        create_private(options.get_filename()).map_err(|e| invalid(e.into()))?;
        SqliteStore::open(options, config, false).await
    }

    /// A fresh, private in-memory store (gone when the store and its clones are
    /// dropped). Reads and writes share its one connection.
    pub async fn in_memory() -> Result<Self, SqliteError> {
        SqliteStore::connect("sqlite::memory:").await
    }

    async fn open(options: SqliteConnectOptions, config: SqliteConfig, memory: bool) -> Result<Self, SqliteError> {
        let timeouts = Timeouts { acquire: config.acquire_timeout, busy: config.busy_timeout };
        let synchronous = if config.synchronous_full { SqliteSynchronous::Full } else { SqliteSynchronous::Normal };
        let options = options
            .create_if_missing(true)
            .journal_mode(if memory { SqliteJournalMode::Memory } else { SqliteJournalMode::Wal })
            .synchronous(synchronous)
            .busy_timeout(config.busy_timeout)
            .foreign_keys(true)
            // Deleted and overwritten content (a forgotten subject's key, a
            // redacted row) is zeroed in the file, not left in free pages.
            .pragma("secure_delete", "ON")
            // Inserts of 1..=250 rows are distinct statements; keep them all cached.
            .statement_cache_capacity(512);
        let pool = |max: u32| {
            let pool = SqlitePoolOptions::new().max_connections(max).acquire_timeout(config.acquire_timeout);
            // An in-memory database lives as long as its connection: never recycle it.
            if memory { pool.min_connections(1).idle_timeout(None).max_lifetime(None) } else { pool }
        };
        let writer = pool(1).connect_with(options.clone()).await.map_err(|e| timeouts.classify(e))?;
        MIGRATOR.run(&writer).await?;
        let reader = if memory {
            writer.clone()
        } else {
            pool(config.readers.max(1))
                .connect_with(options.create_if_missing(false).pragma("query_only", "ON"))
                .await
                .map_err(|e| timeouts.classify(e))?
        };
        let (committed, _) = watch::channel(Position::START);
        let store = SqliteStore { inner: Arc::new(Inner { writer, reader, committed, timeouts }) };
        let head = store.head().await.map_err(|e| timeouts.classify(e))?;
        store.inner.committed.send_replace(head);
        Ok(store)
    }

    /// Applies any embedded migration not yet applied (connecting already does).
    pub async fn migrate(&self) -> Result<(), SqliteError> {
        MIGRATOR.run(&self.inner.writer).await.map_err(SqliteError::from)
    }

    /// A receiver of the highest committed global position: it changes after
    /// every append that wrote events through this store or one of its clones.
    ///
    /// Live feed readers wait on [`changed`](watch::Receiver::changed) between
    /// polls; no wake-up is lost, since the value is the latest position, not a
    /// queue of events. Writers in other processes do not fire it: keep a
    /// polling fallback.
    pub fn subscribe(&self) -> watch::Receiver<Position> {
        self.inner.committed.subscribe()
    }

    /// The single-connection writer pool. Give it to read-model backends
    /// (`eslab_projection::SqliteBackend`) so their transactions queue behind
    /// appends instead of meeting `SQLITE_BUSY`.
    pub fn writer_pool(&self) -> &sqlx::SqlitePool {
        &self.inner.writer
    }

    /// The read-only pool (the writer pool for in-memory stores).
    pub fn reader_pool(&self) -> &sqlx::SqlitePool {
        &self.inner.reader
    }

    /// Closes both pools; later calls fail with `Unavailable` ([`SqliteError::Closed`]).
    pub async fn close(&self) {
        self.inner.writer.close().await;
        self.inner.reader.close().await;
    }

    /// The highest stored global position.
    async fn head(&self) -> Result<Position, sqlx::Error> {
        let max: Option<i64> =
            sqlx::query_scalar("SELECT MAX(global_position) FROM events").fetch_one(&self.inner.reader).await?;
        Ok(Position::new(max.and_then(|p| u64::try_from(p).ok()).unwrap_or(0)))
    }

    /// Records that `position` is committed and wakes subscribers (never moves back).
    fn committed(&self, position: Position) {
        self.inner.committed.send_if_modified(|head| {
            let newer = position > *head;
            if newer {
                *head = position;
            }
            newer
        });
    }
}

/// Creates the database file readable and writable by its owner only (0600
/// on Unix: events hold personal data) when it does not exist yet; SQLite
/// gives its `-wal` and `-shm` files the same mode. An existing file keeps
/// its mode.
fn create_private(path: &std::path::Path) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    match options.open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

/// `sqlite::memory:`, `sqlite://:memory:` or `mode=memory`.
fn is_memory_url(url: &str) -> bool {
    url.contains(":memory:") || url.contains("mode=memory")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_urls() {
        assert!(is_memory_url("sqlite::memory:"));
        assert!(is_memory_url("sqlite://?mode=memory"));
        assert!(!is_memory_url(SqliteStore::default_url()));
    }
}
