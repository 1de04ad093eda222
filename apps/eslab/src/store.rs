//! Opening the store named by `DATABASE_URL`: `sqlite://…` (the default, a
//! file under `./data/`), `postgres://…` (schema `ESLAB_SCHEMA`, default
//! `eslab`), or `memory:` (nothing kept).
//!
//! [`AnyStore`] delegates to the backend, so every generic piece of eslab
//! (repository, feeds, projections) runs on whichever the user chose.

use std::time::Duration;

use anyhow::{Context, bail};
use eslab_core::{
    AppendResult, Checkpoint, CheckpointStore, EventAppender, EventReader, ExpectedVersion, FeedFilter, NewEvent,
    RecordedEvent, Result, Snapshot, SnapshotStore, StreamAppend, StreamId, StreamRetention, Version,
};
use eslab_memory::MemoryStore;
use eslab_postgres::PostgresStore;
use eslab_sqlite::SqliteStore;

/// The default `DATABASE_URL`: an SQLite file under `./data/`, created on first use.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://data/eslab.db";

/// One of the stores, chosen at run time.
#[derive(Debug, Clone)]
pub enum AnyStore {
    /// In memory: gone when the process ends.
    Memory(MemoryStore),
    /// SQLite file.
    Sqlite(SqliteStore),
    /// PostgreSQL.
    Postgres(PostgresStore),
}

impl AnyStore {
    /// Opens (and migrates) the store at `url`.
    pub async fn open(url: &str) -> anyhow::Result<AnyStore> {
        if url == "memory:" {
            return Ok(AnyStore::Memory(MemoryStore::new()));
        }
        if url.starts_with("sqlite:") {
            let store = SqliteStore::connect(url).await.with_context(|| format!("opening {}", redact(url)))?;
            return Ok(AnyStore::Sqlite(store));
        }
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let schema = std::env::var("ESLAB_SCHEMA").unwrap_or_else(|_| "eslab".to_owned());
            let store = PostgresStore::connect(url, &schema).await.with_context(|| {
                format!("connecting to PostgreSQL (schema {schema}); is it running at {}?", redact(url))
            })?;
            return Ok(AnyStore::Postgres(store));
        }
        bail!("unsupported DATABASE_URL {url:?}: use sqlite://<file>, postgres://… or memory:")
    }

    /// A short description for people.
    pub fn describe(&self) -> &'static str {
        match self {
            AnyStore::Memory(_) => "in memory (nothing is kept)",
            AnyStore::Sqlite(_) => "SQLite",
            AnyStore::Postgres(_) => "PostgreSQL",
        }
    }
}

/// The URL with every secret masked, for messages ([`eslab_postgres::redact_url`]).
pub use eslab_postgres::redact_url as redact;

macro_rules! delegate {
    ($self:ident, $s:ident => $call:expr) => {
        match $self {
            AnyStore::Memory($s) => $call,
            AnyStore::Sqlite($s) => $call,
            AnyStore::Postgres($s) => $call,
        }
    };
}

impl EventAppender for AnyStore {
    async fn append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<AppendResult> {
        delegate!(self, s => s.append(stream, expected, events).await)
    }

    async fn append_streams(&self, appends: Vec<StreamAppend>) -> Result<Vec<AppendResult>> {
        delegate!(self, s => s.append_streams(appends).await)
    }
}

impl EventReader for AnyStore {
    async fn read_stream(&self, stream: &StreamId, from: Version, limit: usize) -> Result<Vec<RecordedEvent>> {
        delegate!(self, s => s.read_stream(stream, from, limit).await)
    }

    async fn read_feed(&self, filter: &FeedFilter, after: Checkpoint, limit: usize) -> Result<Vec<RecordedEvent>> {
        delegate!(self, s => s.read_feed(filter, after, limit).await)
    }

    async fn stream_version(&self, stream: &StreamId) -> Result<Version> {
        delegate!(self, s => s.stream_version(stream).await)
    }

    async fn feed_head(&self, filter: &FeedFilter) -> Result<Option<eslab_core::FeedHead>> {
        delegate!(self, s => s.feed_head(filter).await)
    }
}

impl StreamRetention for AnyStore {
    async fn purge_category_before(
        &self,
        category: &str,
        recorded_before: time::OffsetDateTime,
        limit: usize,
    ) -> Result<u64> {
        delegate!(self, s => s.purge_category_before(category, recorded_before, limit).await)
    }
}

impl SnapshotStore for AnyStore {
    async fn load_snapshot(&self, stream: &StreamId) -> Result<Option<Snapshot>> {
        delegate!(self, s => s.load_snapshot(stream).await)
    }

    async fn save_snapshot(&self, snapshot: Snapshot) -> Result<()> {
        delegate!(self, s => s.save_snapshot(snapshot).await)
    }
}

impl CheckpointStore for AnyStore {
    async fn load_checkpoint(&self, name: &str) -> Result<Checkpoint> {
        delegate!(self, s => s.load_checkpoint(name).await)
    }

    async fn save_checkpoint(&self, name: &str, checkpoint: Checkpoint) -> Result<()> {
        delegate!(self, s => s.save_checkpoint(name, checkpoint).await)
    }

    async fn acquire_lease(&self, name: &str, owner: &str, ttl: Duration) -> Result<bool> {
        delegate!(self, s => s.acquire_lease(name, owner, ttl).await)
    }

    async fn release_lease(&self, name: &str, owner: &str) -> Result<()> {
        delegate!(self, s => s.release_lease(name, owner).await)
    }
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn passwords_never_reach_messages() {
        assert_eq!(redact("postgres://u:secret@h:5432/db"), "postgres://u:***@h:5432/db");
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact("sqlite://data/x.db"), "sqlite://data/x.db");
        assert_eq!(redact("memory:"), "memory:");
        assert_eq!(
            redact("postgres://u@h/db?password=secret&sslmode=disable"),
            "postgres://u@h/db?password=***&sslmode=disable"
        );
        assert_eq!(
            redact("postgresql://h/db?PassWord=s%20x&sslpassword=k"),
            "postgresql://h/db?PassWord=***&sslpassword=***"
        );
        assert_eq!(redact("postgres://u:p%40ss@h/db?password=x"), "postgres://u:***@h/db?password=***");
        for url in ["postgres://u:secret@h/db?password=secret", "postgres://h/db?password=secret", "not a url secret"] {
            assert!(!redact(url).contains("secret"), "{url} -> {}", redact(url));
        }
    }
}
