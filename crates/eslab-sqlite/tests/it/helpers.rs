//! Store factories: a fresh database per test, on a temporary file kept alive
//! as long as the store.

use std::sync::Arc;
use std::time::Duration;

use eslab_core::{
    AppendResult, Checkpoint, CheckpointStore, EventAppender, EventReader, ExpectedVersion, FeedFilter, NewEvent,
    RecordedEvent, Result, Snapshot, SnapshotStore, StreamAppend, StreamId, StreamRetention, Version,
};
use eslab_sqlite::SqliteStore;
use tempfile::TempDir;

/// A [`SqliteStore`] on a file in its own temporary directory, deleted when
/// the last clone is dropped.
#[derive(Debug, Clone)]
pub(crate) struct TempStore {
    pub(crate) store: SqliteStore,
    pub(crate) dir: Arc<TempDir>,
}

impl TempStore {
    /// A fresh store on `<tempdir>/nested/events.db` (the directory does not exist yet).
    pub(crate) async fn new() -> TempStore {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite://{}", dir.path().join("nested").join("events.db").display());
        let store = SqliteStore::connect(&url).await.expect("connect to a temp file");
        TempStore { store, dir: Arc::new(dir) }
    }
}

pub(crate) async fn file_store() -> TempStore {
    TempStore::new().await
}

pub(crate) async fn memory_store() -> SqliteStore {
    SqliteStore::in_memory().await.expect("in-memory store")
}

impl EventAppender for TempStore {
    async fn append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<AppendResult> {
        self.store.append(stream, expected, events).await
    }

    async fn append_streams(&self, appends: Vec<StreamAppend>) -> Result<Vec<AppendResult>> {
        self.store.append_streams(appends).await
    }
}

impl EventReader for TempStore {
    async fn read_stream(&self, stream: &StreamId, from: Version, limit: usize) -> Result<Vec<RecordedEvent>> {
        self.store.read_stream(stream, from, limit).await
    }

    async fn read_feed(&self, filter: &FeedFilter, after: Checkpoint, limit: usize) -> Result<Vec<RecordedEvent>> {
        self.store.read_feed(filter, after, limit).await
    }

    async fn stream_version(&self, stream: &StreamId) -> Result<Version> {
        self.store.stream_version(stream).await
    }
}

impl StreamRetention for TempStore {
    async fn purge_category_before(
        &self,
        category: &str,
        recorded_before: time::OffsetDateTime,
        limit: usize,
    ) -> Result<u64> {
        self.store.purge_category_before(category, recorded_before, limit).await
    }
}

impl eslab_core::WakeUps for TempStore {
    async fn wake_ups(&self) -> eslab_core::WakeUpStream {
        eslab_core::WakeUps::wake_ups(&self.store).await
    }
}

impl SnapshotStore for TempStore {
    async fn load_snapshot(&self, stream: &StreamId) -> Result<Option<Snapshot>> {
        self.store.load_snapshot(stream).await
    }

    async fn save_snapshot(&self, snapshot: Snapshot) -> Result<()> {
        self.store.save_snapshot(snapshot).await
    }
}

impl CheckpointStore for TempStore {
    async fn load_checkpoint(&self, name: &str) -> Result<Checkpoint> {
        self.store.load_checkpoint(name).await
    }

    async fn save_checkpoint(&self, name: &str, checkpoint: Checkpoint) -> Result<()> {
        self.store.save_checkpoint(name, checkpoint).await
    }

    async fn acquire_lease(&self, name: &str, owner: &str, ttl: Duration) -> Result<bool> {
        self.store.acquire_lease(name, owner, ttl).await
    }

    async fn release_lease(&self, name: &str, owner: &str) -> Result<()> {
        self.store.release_lease(name, owner).await
    }
}
