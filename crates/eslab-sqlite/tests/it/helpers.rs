//! Store factories: a fresh database per test, on a temporary file kept alive
//! as long as the store.

use std::sync::Arc;

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

eslab_testing::forward_store! {
    impl EventAppender + EventReader + SnapshotStore + CheckpointStore + StreamRetention + WakeUps + Explore
        for TempStore => store {}
}
