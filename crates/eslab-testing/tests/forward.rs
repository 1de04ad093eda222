//! `forward_store!`: every method of the store traits reaches the inner
//! store's own implementation (the defaulted `append` and `feed_head`
//! included, not the trait defaults), and an overridden method is the
//! wrapper's.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::time::Duration;

use eslab_core::{
    AppendCondition, AppendResult, Checkpoint, CheckpointStore, Error, EventAppender, EventReader, ExpectedVersion,
    FeedFilter, FeedHead, NewEvent, Query, QueryRead, RecordedEvent, Result, Snapshot, SnapshotStore, StreamAppend,
    StreamId, StreamRetention, Tag, Version,
};

/// Fails every call with the name of the method called.
struct Named;

fn called<T>(method: &str) -> Result<T> {
    Err(Error::backend(method.to_owned()))
}

impl EventAppender for Named {
    async fn append(&self, _: &StreamId, _: ExpectedVersion, _: Vec<NewEvent>) -> Result<AppendResult> {
        called("append")
    }
    async fn append_streams(&self, _: Vec<StreamAppend>) -> Result<Vec<AppendResult>> {
        called("append_streams")
    }
    async fn append_if(&self, _: Vec<StreamAppend>, _: AppendCondition) -> Result<Vec<AppendResult>> {
        called("append_if")
    }
}

impl EventReader for Named {
    async fn read_stream(&self, _: &StreamId, _: Version, _: usize) -> Result<Vec<RecordedEvent>> {
        called("read_stream")
    }
    async fn read_stream_lean(&self, _: &StreamId, _: Version, _: usize) -> Result<Vec<eslab_core::LeanEvent>> {
        called("read_stream_lean")
    }
    async fn read_feed(&self, _: &FeedFilter, _: Checkpoint, _: usize) -> Result<Vec<RecordedEvent>> {
        called("read_feed")
    }
    async fn stream_version(&self, _: &StreamId) -> Result<Version> {
        called("stream_version")
    }
    async fn feed_head(&self, _: &FeedFilter) -> Result<Option<FeedHead>> {
        called("feed_head")
    }
    async fn read_query(&self, _: &Query) -> Result<QueryRead> {
        called("read_query")
    }
}

impl SnapshotStore for Named {
    async fn load_snapshot(&self, _: &StreamId) -> Result<Option<Snapshot>> {
        called("load_snapshot")
    }
    async fn save_snapshot(&self, _: Snapshot) -> Result<()> {
        called("save_snapshot")
    }
}

impl CheckpointStore for Named {
    async fn load_checkpoint(&self, _: &str) -> Result<Checkpoint> {
        called("load_checkpoint")
    }
    async fn save_checkpoint(&self, _: &str, _: Checkpoint) -> Result<()> {
        called("save_checkpoint")
    }
    async fn acquire_lease(&self, _: &str, _: &str, _: Duration) -> Result<bool> {
        called("acquire_lease")
    }
    async fn release_lease(&self, _: &str, _: &str) -> Result<()> {
        called("release_lease")
    }
}

impl StreamRetention for Named {
    async fn purge_category_before(&self, _: &str, _: time::OffsetDateTime, _: usize) -> Result<u64> {
        called("purge_category_before")
    }
}

/// Three wake-ups, then the end: not what a default or a stand-in would give.
impl eslab_core::WakeUps for Named {
    async fn wake_ups(&self) -> eslab_core::WakeUpStream {
        futures_util::StreamExt::boxed(futures_util::stream::iter([(), (), ()]))
    }
}

/// Forwards everything to a named field.
struct Plain {
    inner: Named,
}

eslab_testing::forward_store! {
    impl EventAppender + EventReader + SnapshotStore + CheckpointStore + StreamRetention + WakeUps
        for Plain => inner {}
}

/// A generic tuple wrapper that intercepts one method of two traits.
struct Intercepting<S>(S);

eslab_testing::forward_store! {
    impl[S: EventReader] EventReader for Intercepting<S> => 0 {
        /// The wrapper's own.
        async fn feed_head(&self, _: &FeedFilter) -> Result<Option<FeedHead>> {
            called("wrapper feed_head")
        }
    }
    impl[S: CheckpointStore] CheckpointStore for Intercepting<S> => 0 {
        async fn acquire_lease(&self, name: &str, owner: &str, ttl: Duration) -> Result<bool> {
            let inner = message(self.0.acquire_lease(name, owner, ttl).await);
            called(&format!("wrapper then {inner}"))
        }
    }
}

fn message<T: std::fmt::Debug>(result: Result<T>) -> String {
    match result.unwrap_err() {
        Error::Backend(source) => source.to_string(),
        other => panic!("expected a backend error, got {other:?}"),
    }
}

fn query() -> Query {
    Query::tagged([Tag::new("t:1").unwrap()]).unwrap()
}

fn snapshot(stream: &StreamId) -> Snapshot {
    Snapshot {
        stream_id: stream.clone(),
        version: Version::FIRST,
        state_schema_version: 1,
        state: serde_json::json!({}),
        taken_at: time::OffsetDateTime::now_utc(),
    }
}

#[tokio::test]
async fn every_method_reaches_the_inner_store_s_own() {
    let store = Plain { inner: Named };
    let s: StreamId = "test-1".parse().unwrap();
    let all = FeedFilter::All;
    let got = [
        message(store.append(&s, ExpectedVersion::Any, Vec::new()).await),
        message(store.append_streams(Vec::new()).await),
        message(store.append_if(Vec::new(), AppendCondition::none_matching(query())).await),
        message(store.read_query(&query()).await),
        message(store.read_stream(&s, Version::FIRST, 1).await),
        message(store.read_stream_lean(&s, Version::FIRST, 1).await),
        message(store.read_feed(&all, Checkpoint::START, 1).await),
        message(store.stream_version(&s).await),
        message(store.feed_head(&all).await),
        message(store.load_snapshot(&s).await),
        message(store.save_snapshot(snapshot(&s)).await),
        message(store.load_checkpoint("p").await),
        message(store.save_checkpoint("p", Checkpoint::START).await),
        message(store.acquire_lease("p", "me", Duration::from_secs(1)).await),
        message(store.release_lease("p", "me").await),
        message(store.purge_category_before("test", time::OffsetDateTime::now_utc(), 1).await),
    ];
    let want = [
        "append",
        "append_streams",
        "append_if",
        "read_query",
        "read_stream",
        "read_stream_lean",
        "read_feed",
        "stream_version",
        "feed_head",
        "load_snapshot",
        "save_snapshot",
        "load_checkpoint",
        "save_checkpoint",
        "acquire_lease",
        "release_lease",
        "purge_category_before",
    ];
    assert_eq!(got, want);
    let wake_ups = eslab_core::WakeUps::wake_ups(&store).await;
    assert_eq!(futures_util::StreamExt::collect::<Vec<()>>(wake_ups).await.len(), 3, "wake_ups");
}

#[tokio::test]
async fn an_overridden_method_is_the_wrapper_s_and_the_rest_forward() {
    let store = Intercepting(Named);
    let all = FeedFilter::All;
    assert_eq!(message(store.feed_head(&all).await), "wrapper feed_head");
    assert_eq!(message(store.read_feed(&all, Checkpoint::START, 1).await), "read_feed");
    assert_eq!(message(store.acquire_lease("p", "me", Duration::from_secs(1)).await), "wrapper then acquire_lease");
    assert_eq!(message(store.release_lease("p", "me").await), "release_lease");
}
