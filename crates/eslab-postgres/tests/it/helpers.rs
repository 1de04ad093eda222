//! Fresh schemas on the test database, dropped when the last handle goes.

use std::sync::Arc;
use std::time::Duration;

use eslab_core::{
    AppendResult, Checkpoint, CheckpointStore, EventAppender, EventReader, ExpectedVersion, FeedFilter, FeedHead,
    NewEvent, RecordedEvent, Result, Snapshot, SnapshotStore, StreamAppend, StreamId, StreamRetention, Version,
};
use eslab_postgres::{PostgresOptions, PostgresStore};
use sqlx::Connection;

/// The test database: `DATABASE_URL`, or the local cluster.
pub fn database_url() -> String {
    std::env::var("DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// A fresh schema name: `eslab_test_<uuid v7, simple>`.
pub fn schema_name() -> String {
    format!("eslab_test_{}", uuid::Uuid::now_v7().simple())
}

/// Connects to a fresh schema with `tweak`ed options; fails the test with
/// instructions when PostgreSQL cannot be reached.
pub async fn fresh_with(tweak: impl FnOnce(PostgresOptions) -> PostgresOptions) -> TestStore {
    let url = database_url();
    let schema = schema_name();
    let options = tweak(PostgresOptions::new(&url, &schema).acquire_timeout(Duration::from_secs(30)));
    match PostgresStore::connect_with(options).await {
        Ok(store) => TestStore { store, _guard: Arc::new(SchemaGuard { url, schema }) },
        Err(e) if e.is_unavailable() => panic!(
            "PostgreSQL is not reachable at {url} ({e}: {:?}).\n\
             Start the local cluster with `pg_ctlcluster 15 main start` (or `sudo service postgresql start`), \
             or point DATABASE_URL at a running server.",
            std::error::Error::source(&e)
        ),
        Err(e) => panic!("cannot prepare schema {schema} on {url}: {e} ({:?})", std::error::Error::source(&e)),
    }
}

/// A fresh store with default options.
pub async fn fresh() -> TestStore {
    fresh_with(|o| o).await
}

/// A store on a fresh schema that does not exist yet: nothing is connected,
/// created or migrated until it is used (call it inside a Tokio runtime).
pub fn unmigrated() -> TestStore {
    let (url, schema) = (database_url(), schema_name());
    let store = PostgresStore::connect_lazy(PostgresOptions::new(&url, &schema)).expect("a valid schema name");
    TestStore { store, _guard: Arc::new(SchemaGuard { url, schema }) }
}

/// Drops the schema when dropped.
#[derive(Debug)]
struct SchemaGuard {
    url: String,
    schema: String,
}

impl Drop for SchemaGuard {
    fn drop(&mut self) {
        let (url, schema) = (self.url.clone(), self.schema.clone());
        // Drop runs inside the test's runtime: do the async work on a thread
        // with its own runtime, and wait for it.
        let done = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().ok()?;
            rt.block_on(async {
                let mut conn = sqlx::PgConnection::connect(&url).await.ok()?;
                // sql-ident: `schema_name()` makes the name from a UUID.
                sqlx::query(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE")).execute(&mut conn).await.ok()?;
                conn.close().await.ok()
            })
        })
        .join();
        if !matches!(done, Ok(Some(()))) {
            eprintln!("could not drop test schema {}", self.schema);
        }
    }
}

/// A [`PostgresStore`] on its own schema, dropped with the last clone.
#[derive(Debug, Clone)]
pub struct TestStore {
    pub store: PostgresStore,
    _guard: Arc<SchemaGuard>,
}

impl std::ops::Deref for TestStore {
    type Target = PostgresStore;
    fn deref(&self) -> &PostgresStore {
        &self.store
    }
}

impl EventAppender for TestStore {
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

impl EventReader for TestStore {
    async fn read_stream(&self, stream: &StreamId, from: Version, limit: usize) -> Result<Vec<RecordedEvent>> {
        self.store.read_stream(stream, from, limit).await
    }
    async fn read_feed(&self, filter: &FeedFilter, after: Checkpoint, limit: usize) -> Result<Vec<RecordedEvent>> {
        self.store.read_feed(filter, after, limit).await
    }
    async fn stream_version(&self, stream: &StreamId) -> Result<Version> {
        self.store.stream_version(stream).await
    }
    async fn feed_head(&self, filter: &FeedFilter) -> Result<Option<FeedHead>> {
        self.store.feed_head(filter).await
    }
}

impl StreamRetention for TestStore {
    async fn purge_category_before(
        &self,
        category: &str,
        recorded_before: time::OffsetDateTime,
        limit: usize,
    ) -> Result<u64> {
        self.store.purge_category_before(category, recorded_before, limit).await
    }
}

impl eslab_core::WakeUps for TestStore {
    async fn wake_ups(&self) -> eslab_core::WakeUpStream {
        eslab_core::WakeUps::wake_ups(&self.store).await
    }
}

impl SnapshotStore for TestStore {
    async fn load_snapshot(&self, stream: &StreamId) -> Result<Option<Snapshot>> {
        self.store.load_snapshot(stream).await
    }
    async fn save_snapshot(&self, snapshot: Snapshot) -> Result<()> {
        self.store.save_snapshot(snapshot).await
    }
}

impl CheckpointStore for TestStore {
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

/// A small event `{"n": n}`.
pub fn event(n: u64) -> NewEvent {
    NewEvent::new("Counted", 1, serde_json::json!({ "n": n }), eslab_core::Metadata::now())
}

/// `test-<name>`.
pub fn stream(name: &str) -> StreamId {
    StreamId::new("test", name).unwrap()
}
