//! Compile-time checks that a store's futures are `Send`, so that callers
//! can run them in `tokio::spawn`ed tasks and `#[async_trait]` methods.
//!
//! A future that holds a value that is not `Send` (or whose `Send` proof
//! needs a bound over every lifetime, like sqlx's `Acquire` on a
//! `&mut PgConnection`) compiles when awaited directly and fails only in the
//! caller that needs `Send`. These checks are that caller: a store's test
//! crate names each of its futures in a function that is type-checked, never
//! run, so the test fails by not compiling.
//!
//! ```
//! use eslab_testing::send::{assert_send, assert_store_futures_send};
//! use eslab_memory::MemoryStore;
//!
//! // Type-checked only: building the futures runs nothing.
//! fn futures_are_send(store: &MemoryStore) {
//!     assert_store_futures_send(store);
//!     assert_send(async move { MemoryStore::new() });
//! }
//! # let _ = futures_are_send;
//! ```

use std::time::Duration;

use eslab_core::{
    Checkpoint, CheckpointStore, EventAppender, EventReader, EventReaderExt, ExpectedVersion, FeedFilter, Snapshot,
    SnapshotStore, StreamId, Version,
};

/// Compiles only if `value` is `Send`; drops it unpolled.
pub fn assert_send<T: Send>(value: T) {
    drop(value);
}

/// Names every future (and stream) of the core store traits on `store`,
/// nested in an `async` block as a spawned task would hold them, and asserts
/// that they are `Send`. The futures are built and dropped, never polled.
pub fn assert_store_futures_send<S>(store: &S)
where
    S: EventReader + EventAppender + SnapshotStore + CheckpointStore,
{
    let Ok(stream) = "send-check".parse::<StreamId>() else { return };
    let filter = FeedFilter::All;
    let snapshot = Snapshot {
        stream_id: stream.clone(),
        version: Version::FIRST,
        state_schema_version: 1,
        state: serde_json::Value::Null,
        taken_at: time::OffsetDateTime::UNIX_EPOCH,
    };
    assert_send(async {
        store.append(&stream, ExpectedVersion::Any, Vec::new()).await.ok();
        store.append_streams(Vec::new()).await.ok();
        store.read_stream(&stream, Version::FIRST, 1).await.ok();
        store.read_feed(&filter, Checkpoint::START, 1).await.ok();
        store.stream_version(&stream).await.ok();
        store.feed_head(&filter).await.ok();
        store.load_snapshot(&stream).await.ok();
        store.save_snapshot(snapshot).await.ok();
        store.load_checkpoint("send-check").await.ok();
        store.save_checkpoint("send-check", Checkpoint::START).await.ok();
        store.acquire_lease("send-check", "owner", Duration::from_secs(1)).await.ok();
        store.release_lease("send-check", "owner").await.ok();
    });
    assert_send(store.stream_events(&stream, Version::FIRST));
    assert_send(store.feed(&filter, Checkpoint::START));
}
