//! Bulk import with COPY.

use eslab_core::{Checkpoint, Error, EventAppender, EventReader, ExpectedVersion, FeedFilter, Version};
use eslab_testing::pg::SchemaStore;

use crate::helpers::{event, stream};

#[tokio::test]
async fn import_continues_streams_and_feeds_readers() {
    let store = SchemaStore::new().await;
    store.append(&stream("s0"), ExpectedVersion::Any, vec![event(0), event(1)]).await.unwrap();
    let batch: Vec<_> = (0..1000u64).map(|n| (stream(&format!("s{}", n % 10)), event(n))).collect();
    assert_eq!(store.import(batch).await.unwrap(), 1000);
    assert_eq!(store.stream_version(&stream("s0")).await.unwrap(), Version::new(102));
    assert_eq!(store.stream_version(&stream("s9")).await.unwrap(), Version::new(100));
    let s3 = store.read_stream(&stream("s3"), Version::FIRST, 1000).await.unwrap();
    let ns: Vec<u64> = s3.iter().map(|e| e.payload["n"].as_u64().unwrap()).collect();
    assert_eq!(ns, (0..100).map(|i| i * 10 + 3).collect::<Vec<_>>());
    let feed = store.read_feed(&FeedFilter::All, Checkpoint::START, 5000).await.unwrap();
    assert_eq!(feed.len(), 1002);
    // Appends continue after the import.
    let r = store.append(&stream("s9"), ExpectedVersion::Exact(Version::new(100)), vec![event(7)]).await.unwrap();
    assert_eq!(r.version, Version::new(101));
}

#[tokio::test]
async fn import_rejects_a_stored_event_id_and_writes_nothing() {
    let store = SchemaStore::new().await;
    let taken = event(1);
    let id = taken.event_id;
    store.append(&stream("a"), ExpectedVersion::Any, vec![taken]).await.unwrap();
    let batch = vec![(stream("b"), event(2)), (stream("b"), event(3).with_id(id))];
    match store.import(batch).await {
        Err(Error::DuplicateEventId(d)) => assert_eq!(d, id),
        other => panic!("expected a duplicate id, got {other:?}"),
    }
    assert_eq!(store.stream_version(&stream("b")).await.unwrap(), Version::NONE);
    let dup = vec![(stream("c"), event(4).with_id(id)), (stream("c"), event(5).with_id(id))];
    assert!(matches!(store.import(dup).await, Err(Error::DuplicateEventId(_))));
}
