//! [`OnNats`]: the events on a NATS JetStream cluster, everything else of the
//! store (read models, checkpoints, leases, parked events, snapshots, the
//! personal-data keys) in an SQLite or PostgreSQL database beside it.
//!
//! Why the checkpoint stays exactly-once: a projection's batch writes its
//! read-model rows and its checkpoint in one transaction of the side
//! database, so either both are there or neither; the checkpoint is the
//! JetStream stream sequence of the last event applied, and the sequence is
//! gap-free and in commit order, so resuming after it misses nothing and
//! repeats nothing.

use std::time::Duration;

use eslab_core::{
    AppendCondition, AppendResult, CategorySummary, Checkpoint, CheckpointStore, Error, EventAppender, EventReader,
    ExpectedVersion, Explore, FeedFilter, FeedHead, LeanEvent, NewEvent, Position, Query, QueryRead, RecordedEvent,
    Result, Snapshot, SnapshotStore, StreamAppend, StreamId, StreamRetention, StreamSummary, Version, WakeUpStream,
    WakeUps,
};
use eslab_nats::NatsStore;

use crate::wiring::{Backends, Durable, Store, StoreVisitor};

/// Events on JetStream ([`NatsStore`]), the rest in `S` (an
/// [`SqliteStore`](eslab_sqlite::SqliteStore) or a
/// [`PostgresStore`](eslab_postgres::PostgresStore), whose own event tables
/// stay empty). Cheap to clone.
#[derive(Debug, Clone)]
pub struct OnNats<S> {
    events: NatsStore,
    side: S,
}

impl<S> OnNats<S> {
    /// Events on `events`, the rest in `side`.
    pub fn new(events: NatsStore, side: S) -> Self {
        OnNats { events, side }
    }

    /// The JetStream store of the events.
    pub fn events(&self) -> &NatsStore {
        &self.events
    }

    /// The database of the read models, checkpoints, snapshots and keys.
    pub fn side(&self) -> &S {
        &self.side
    }
}

impl<S: Send + Sync> EventAppender for OnNats<S> {
    async fn append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<AppendResult> {
        self.events.append(stream, expected, events).await
    }

    async fn append_streams(&self, appends: Vec<StreamAppend>) -> Result<Vec<AppendResult>> {
        self.events.append_streams(appends).await
    }

    async fn append_if(&self, appends: Vec<StreamAppend>, condition: AppendCondition) -> Result<Vec<AppendResult>> {
        self.events.append_if(appends, condition).await
    }
}

/// Reads from JetStream; personal data is sealed and opened with the side
/// database's keys (forgetting deletes a row there).
impl<S: EventReader> EventReader for OnNats<S> {
    fn personal_keys(&self) -> Option<std::sync::Arc<dyn eslab_core::KeyStore>> {
        self.side.personal_keys()
    }

    async fn read_stream(&self, stream: &StreamId, from: Version, limit: usize) -> Result<Vec<RecordedEvent>> {
        self.events.read_stream(stream, from, limit).await
    }

    async fn read_stream_lean(&self, stream: &StreamId, from: Version, limit: usize) -> Result<Vec<LeanEvent>> {
        self.events.read_stream_lean(stream, from, limit).await
    }

    async fn read_feed(&self, filter: &FeedFilter, after: Checkpoint, limit: usize) -> Result<Vec<RecordedEvent>> {
        self.events.read_feed(filter, after, limit).await
    }

    async fn stream_version(&self, stream: &StreamId) -> Result<Version> {
        self.events.stream_version(stream).await
    }

    async fn read_query(&self, query: &Query) -> Result<QueryRead> {
        self.events.read_query(query).await
    }

    async fn feed_head(&self, filter: &FeedFilter) -> Result<Option<FeedHead>> {
        self.events.feed_head(filter).await
    }
}

impl<S: Send + Sync> Explore for OnNats<S> {
    async fn categories(&self, after: Option<&str>, limit: usize) -> Result<Vec<CategorySummary>> {
        self.events.categories(after, limit).await
    }

    async fn streams(&self, category: &str, after: Option<&StreamId>, limit: usize) -> Result<Vec<StreamSummary>> {
        self.events.streams(category, after, limit).await
    }

    async fn correlated(
        &self,
        correlation_id: uuid::Uuid,
        after: Position,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>> {
        self.events.correlated(correlation_id, after, limit).await
    }
}

impl<S: Send + Sync> WakeUps for OnNats<S> {
    async fn wake_ups(&self) -> WakeUpStream {
        self.events.wake_ups().await
    }
}

/// Refused: the JetStream stream denies purges (its history is immutable).
impl<S: Send + Sync> StreamRetention for OnNats<S> {
    async fn purge_category_before(
        &self,
        category: &str,
        _recorded_before: time::OffsetDateTime,
        _limit: usize,
    ) -> Result<u64> {
        Err(Error::InvalidRequest(format!(
            "purging {category} is not supported: the JetStream events stream denies purges"
        )))
    }
}

/// Snapshots in the side database, beside the read models (so erasing a
/// data subject there covers them too).
impl<S: SnapshotStore> SnapshotStore for OnNats<S> {
    async fn load_snapshot(&self, stream: &StreamId) -> Result<Option<Snapshot>> {
        self.side.load_snapshot(stream).await
    }

    async fn save_snapshot(&self, snapshot: Snapshot) -> Result<()> {
        self.side.save_snapshot(snapshot).await
    }
}

impl<S: CheckpointStore> CheckpointStore for OnNats<S> {
    async fn load_checkpoint(&self, name: &str) -> Result<Checkpoint> {
        self.side.load_checkpoint(name).await
    }

    async fn save_checkpoint(&self, name: &str, checkpoint: Checkpoint) -> Result<()> {
        self.side.save_checkpoint(name, checkpoint).await
    }

    async fn acquire_lease(&self, name: &str, owner: &str, ttl: Duration) -> Result<bool> {
        self.side.acquire_lease(name, owner, ttl).await
    }

    async fn release_lease(&self, name: &str, owner: &str) -> Result<()> {
        self.side.release_lease(name, owner).await
    }
}

/// The side database's projection backends: read models and their
/// checkpoints commit together there.
impl<S: Store> Store for OnNats<S> {
    type Backend = S::Backend;
    type Reader = S::Reader;
    const DESCRIPTION: &'static str = "NATS JetStream (read models beside it)";
    const DURABLE: bool = true;

    async fn backends(&self) -> std::result::Result<Backends<Self>, crate::Error> {
        let Backends { views, appending, reader } = self.side.backends().await?;
        Ok(Backends { views, appending, reader })
    }
}

/// JetStream with its side database outlives the process: durable work runs on it.
impl<S: Store, V: StoreVisitor<OnNats<S>>> StoreVisitor<OnNats<S>> for Durable<V> {
    type Output = std::result::Result<V::Output, crate::Error>;

    async fn visit(self, store: OnNats<S>) -> Self::Output {
        Ok(self.0.visit(store).await)
    }
}
