//! Live subscriptions on PostgreSQL: what the conformance suite cannot see,
//! the `LISTEN` connection behind the wake-ups.

use std::time::Duration;

use eslab_core::{Checkpoint, EventAppender, EventStore, ExpectedVersion, FeedFilter, SubscribeOptions, WakeUps};
use eslab_testing::pg::SchemaStore;
use futures_util::StreamExt;

use crate::helpers::{event, stream};

/// How many backends listen for `store`'s schema.
async fn listening(store: &SchemaStore) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM pg_stat_activity WHERE application_name = $1")
        .bind(format!("eslab-listen-{}", store.schema()))
        .fetch_one(store.pool())
        .await
        .unwrap()
}

#[tokio::test]
async fn dropping_a_subscription_closes_its_listen_connection() {
    let store = SchemaStore::new().await;
    store.append(&stream("drop"), ExpectedVersion::Any, vec![event(1)]).await.unwrap();
    let events = EventStore::new(store.clone());
    let mut live = Box::pin(events.subscribe(FeedFilter::All, Checkpoint::START));
    // The first event comes after the wake-ups were armed.
    tokio::time::timeout(Duration::from_secs(20), live.next()).await.unwrap().unwrap().unwrap();
    assert_eq!(listening(&store).await, 1, "one LISTEN connection per subscription");
    drop(live);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while listening(&store).await > 0 {
        assert!(tokio::time::Instant::now() < deadline, "the LISTEN connection outlived its subscription");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn wake_ups_survive_a_killed_listen_connection() {
    let store = SchemaStore::new().await;
    let events = EventStore::new(store.clone());
    // Polling once an hour: only wake-ups can deliver within the test.
    let hour = Duration::from_secs(3600);
    let wake_ups = events.wake_ups().await;
    let options = SubscribeOptions::default().poll(hour, hour);
    let mut live = Box::pin(events.subscribe_woken_by(wake_ups, FeedFilter::All, Checkpoint::START, options));
    // Caught up with the empty feed, now waiting on the wake-ups.
    assert!(tokio::time::timeout(Duration::from_millis(200), live.next()).await.is_err());
    let killed: Vec<bool> =
        sqlx::query_scalar("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1")
            .bind(format!("eslab-listen-{}", store.schema()))
            .fetch_all(store.pool())
            .await
            .unwrap();
    assert_eq!(killed, [true], "the subscription's LISTEN backend was terminated");
    // Another store instance writes (as another process would): its appends
    // reach the subscription only through NOTIFY, not the in-process signal.
    let writer = store.fresh_schema().open().await;
    for n in 0..2 {
        // Lost with the connection or not, each append is delivered: the lost
        // connection itself wakes the subscription, then NOTIFY does again.
        let id =
            writer.append(&stream("killed"), ExpectedVersion::Any, vec![event(n)]).await.unwrap().events[0].event_id;
        let next = tokio::time::timeout(Duration::from_secs(20), live.next()).await;
        assert_eq!(next.expect("delivered without polling").unwrap().unwrap().event_id, id);
    }
}

/// A subscription waiting on `store`'s wake-ups, polling once an hour: within
/// a test, only wake-ups deliver.
fn hourly(
    store: &SchemaStore,
    wake_ups: eslab_core::WakeUpStream,
) -> impl futures_util::Stream<Item = eslab_core::Result<eslab_core::RecordedEvent>> {
    let hour = Duration::from_secs(3600);
    EventStore::new(store.clone()).subscribe_woken_by(
        wake_ups,
        FeedFilter::All,
        Checkpoint::START,
        SubscribeOptions::default().poll(hour, hour),
    )
}

#[tokio::test]
async fn the_same_store_wakes_its_subscribers_without_notify() {
    // No NOTIFY at all: the in-process signal alone delivers.
    let store = SchemaStore::with_options(|o| o.notify(eslab_postgres::Notify::Off)).await;
    let wake_ups = store.wake_ups().await;
    let mut live = Box::pin(hourly(&store, wake_ups));
    assert!(tokio::time::timeout(Duration::from_millis(200), live.next()).await.is_err());
    for n in 0..3 {
        let id = store.append(&stream("local"), ExpectedVersion::Any, vec![event(n)]).await.unwrap().events[0].event_id;
        let next = tokio::time::timeout(Duration::from_secs(20), live.next()).await;
        assert_eq!(next.expect("woken in process").unwrap().unwrap().event_id, id);
    }
}

#[tokio::test]
async fn another_instance_wakes_subscribers_through_the_coalesced_notify() {
    // The default: NOTIFY after commit, coalesced.
    let store = SchemaStore::new().await;
    assert_eq!(store.options().notify_mode(), eslab_postgres::Notify::AfterCommit, "the default");
    let wake_ups = store.wake_ups().await;
    let mut live = Box::pin(hourly(&store, wake_ups));
    assert!(tokio::time::timeout(Duration::from_millis(200), live.next()).await.is_err());
    let other = store.fresh_schema().open().await;
    for n in 0..3 {
        let id =
            other.append(&stream("remote"), ExpectedVersion::Any, vec![event(n)]).await.unwrap().events[0].event_id;
        let next = tokio::time::timeout(Duration::from_secs(20), live.next()).await;
        assert_eq!(next.expect("woken by the other instance's NOTIFY").unwrap().unwrap().event_id, id);
    }
}
