//! [`AnyStore`]: the store a URL named, whichever it is, behind the store
//! traits; and the only match over the stores.

use std::time::Duration;

use eslab_core::{
    AppendResult, CategorySummary, Checkpoint, CheckpointStore, EventAppender, EventReader, ExpectedVersion, Explore,
    FeedFilter, LeanEvent, NewEvent, RecordedEvent, Result, Snapshot, SnapshotStore, StreamAppend, StreamId,
    StreamRetention, StreamSummary, Version, WakeUpStream, WakeUps,
};
use eslab_memory::MemoryStore;
use eslab_postgres::PostgresStore;
use eslab_sqlite::SqliteStore;

use crate::nats::OnNats;
use crate::wiring::Durable;
use crate::{Error, Store, StoreSettings, StoreVisitor};

/// One of the stores, chosen at run time ([`StoreSettings::open`]).
///
/// It forwards the store traits, so generic code (repositories, feeds,
/// projections) runs on it as is; code that needs the concrete store is a
/// [`StoreVisitor`], run by [`AnyStore::visit`].
#[derive(Debug, Clone)]
pub enum AnyStore {
    /// In memory: gone when the process ends.
    Memory(MemoryStore),
    /// SQLite file.
    Sqlite(SqliteStore),
    /// PostgreSQL.
    Postgres(PostgresStore),
    /// Events on NATS JetStream, the rest in SQLite.
    NatsSqlite(OnNats<SqliteStore>),
    /// Events on NATS JetStream, the rest in PostgreSQL.
    NatsPostgres(OnNats<PostgresStore>),
}

/// The one match over the stores: `$body` with `$s` bound to the store,
/// whichever it is.
macro_rules! each {
    ($store:expr, $s:ident => $body:expr) => {
        match $store {
            AnyStore::Memory($s) => $body,
            AnyStore::Sqlite($s) => $body,
            AnyStore::Postgres($s) => $body,
            AnyStore::NatsSqlite($s) => $body,
            AnyStore::NatsPostgres($s) => $body,
        }
    };
}

fn description<S: Store>(_: &S) -> &'static str {
    S::DESCRIPTION
}

impl AnyStore {
    /// Makes data just erased leave the store's files (after forgetting a
    /// data subject and erasing it from the read models): on SQLite,
    /// checkpoints and truncates the write-ahead log, which still holds the
    /// pages as they were; nothing elsewhere (PostgreSQL's old row versions
    /// go with vacuum, see docs/patterns/crypto-shredding.md).
    pub async fn settle_erasure(&self) {
        match self {
            AnyStore::Sqlite(store) => store.truncate_wal().await,
            AnyStore::NatsSqlite(store) => store.side().truncate_wal().await,
            _ => {}
        }
    }

    /// Opens (and migrates) the store at `url` with the default settings:
    /// `StoreSettings::new(url).open()` ([`StoreSettings::open`]).
    pub async fn open(url: &str) -> std::result::Result<AnyStore, Error> {
        StoreSettings::new(url).open().await
    }

    /// A short description for people ([`Store::DESCRIPTION`]).
    pub fn describe(&self) -> &'static str {
        each!(self, s => description(s))
    }

    /// Runs `visitor` on the concrete store (a clone of it): code written
    /// once, generic over [`Store`], for every store.
    pub async fn visit<V, O>(&self, visitor: V) -> O
    where
        V: StoreVisitor<MemoryStore, Output = O>
            + StoreVisitor<SqliteStore, Output = O>
            + StoreVisitor<PostgresStore, Output = O>
            + StoreVisitor<OnNats<SqliteStore>, Output = O>
            + StoreVisitor<OnNats<PostgresStore>, Output = O>,
    {
        each!(self, s => StoreVisitor::visit(visitor, s.clone()).await)
    }

    /// [`visit`](Self::visit) for work that needs what outlives the process
    /// (a read-model database, a checkpoint, shadow tables): on SQLite,
    /// PostgreSQL or JetStream; on the memory store [`Error::NotDurable`],
    /// and `visitor` is not run.
    pub async fn visit_durable<V, O>(&self, visitor: V) -> std::result::Result<O, Error>
    where
        V: StoreVisitor<SqliteStore, Output = O>
            + StoreVisitor<PostgresStore, Output = O>
            + StoreVisitor<OnNats<SqliteStore>, Output = O>
            + StoreVisitor<OnNats<PostgresStore>, Output = O>,
    {
        self.visit(Durable(visitor)).await
    }

    /// The PostgreSQL store, if it is one (for what only PostgreSQL does, such as `COPY`).
    pub fn postgres(&self) -> Option<&PostgresStore> {
        if let AnyStore::Postgres(pg) = self { Some(pg) } else { None }
    }
}

/// The URL with every secret masked, for messages ([`eslab_postgres::redact_url`]).
pub use eslab_postgres::redact_url as redact;

impl EventAppender for AnyStore {
    async fn append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<AppendResult> {
        each!(self, s => s.append(stream, expected, events).await)
    }

    async fn append_streams(&self, appends: Vec<StreamAppend>) -> Result<Vec<AppendResult>> {
        each!(self, s => s.append_streams(appends).await)
    }

    async fn append_if(
        &self,
        appends: Vec<StreamAppend>,
        condition: eslab_core::AppendCondition,
    ) -> Result<Vec<AppendResult>> {
        each!(self, s => s.append_if(appends, condition).await)
    }
}

impl EventReader for AnyStore {
    fn personal_keys(&self) -> Option<std::sync::Arc<dyn eslab_core::KeyStore>> {
        each!(self, s => s.personal_keys())
    }

    async fn read_stream(&self, stream: &StreamId, from: Version, limit: usize) -> Result<Vec<RecordedEvent>> {
        each!(self, s => s.read_stream(stream, from, limit).await)
    }

    async fn read_stream_lean(&self, stream: &StreamId, from: Version, limit: usize) -> Result<Vec<LeanEvent>> {
        each!(self, s => s.read_stream_lean(stream, from, limit).await)
    }

    async fn read_feed(&self, filter: &FeedFilter, after: Checkpoint, limit: usize) -> Result<Vec<RecordedEvent>> {
        each!(self, s => s.read_feed(filter, after, limit).await)
    }

    async fn stream_version(&self, stream: &StreamId) -> Result<Version> {
        each!(self, s => s.stream_version(stream).await)
    }

    async fn read_query(&self, query: &eslab_core::Query) -> Result<eslab_core::QueryRead> {
        each!(self, s => s.read_query(query).await)
    }

    async fn feed_head(&self, filter: &FeedFilter) -> Result<Option<eslab_core::FeedHead>> {
        each!(self, s => s.feed_head(filter).await)
    }
}

impl Explore for AnyStore {
    async fn categories(&self, after: Option<&str>, limit: usize) -> Result<Vec<CategorySummary>> {
        each!(self, s => s.categories(after, limit).await)
    }

    async fn streams(&self, category: &str, after: Option<&StreamId>, limit: usize) -> Result<Vec<StreamSummary>> {
        each!(self, s => s.streams(category, after, limit).await)
    }

    async fn correlated(
        &self,
        correlation_id: uuid::Uuid,
        after: eslab_core::Position,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>> {
        each!(self, s => s.correlated(correlation_id, after, limit).await)
    }
}

impl StreamRetention for AnyStore {
    async fn purge_category_before(
        &self,
        category: &str,
        recorded_before: time::OffsetDateTime,
        limit: usize,
    ) -> Result<u64> {
        each!(self, s => s.purge_category_before(category, recorded_before, limit).await)
    }
}

impl SnapshotStore for AnyStore {
    async fn load_snapshot(&self, stream: &StreamId) -> Result<Option<Snapshot>> {
        each!(self, s => s.load_snapshot(stream).await)
    }

    async fn save_snapshot(&self, snapshot: Snapshot) -> Result<()> {
        each!(self, s => s.save_snapshot(snapshot).await)
    }
}

impl WakeUps for AnyStore {
    async fn wake_ups(&self) -> WakeUpStream {
        each!(self, s => s.wake_ups().await)
    }
}

impl CheckpointStore for AnyStore {
    async fn load_checkpoint(&self, name: &str) -> Result<Checkpoint> {
        each!(self, s => s.load_checkpoint(name).await)
    }

    async fn save_checkpoint(&self, name: &str, checkpoint: Checkpoint) -> Result<()> {
        each!(self, s => s.save_checkpoint(name, checkpoint).await)
    }

    async fn acquire_lease(&self, name: &str, owner: &str, ttl: Duration) -> Result<bool> {
        each!(self, s => s.acquire_lease(name, owner, ttl).await)
    }

    async fn release_lease(&self, name: &str, owner: &str) -> Result<()> {
        each!(self, s => s.release_lease(name, owner).await)
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
