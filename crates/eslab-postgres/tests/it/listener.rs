//! Live-reader wake-ups: NOTIFY from the append, polling fallback, reconnects.

use std::time::Duration;

use eslab_core::{EventAppender, ExpectedVersion};
use eslab_postgres::Wake;
use eslab_testing::pg::SchemaStore;

use crate::helpers::{event, stream};

#[tokio::test]
async fn an_append_wakes_the_listener() {
    let store = SchemaStore::with_options(|o| o.notify(eslab_postgres::Notify::InTransaction)).await;
    let mut listener = store.listener().await.unwrap().with_poll(Duration::from_secs(30), Duration::from_secs(30));
    let writer = {
        let store = store.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            store.append(&stream("live"), ExpectedVersion::Any, vec![event(1)]).await.unwrap();
        })
    };
    let woke = tokio::time::timeout(Duration::from_secs(10), listener.wait()).await;
    assert_eq!(woke.unwrap(), Wake::Notified);
    writer.await.unwrap();
}

#[tokio::test]
async fn without_appends_the_fallback_ticks_and_backs_off() {
    let store = SchemaStore::new().await;
    let mut listener = store.listener().await.unwrap().with_poll(Duration::from_millis(50), Duration::from_millis(200));
    let mut gaps = Vec::new();
    for _ in 0..4 {
        let start = std::time::Instant::now();
        assert_eq!(listener.wait().await, Wake::Poll);
        gaps.push(start.elapsed());
    }
    assert!(gaps[0] >= Duration::from_millis(45) && gaps[0] < Duration::from_secs(2), "{gaps:?}");
    assert!(gaps[2] >= Duration::from_millis(180), "the interval backs off: {gaps:?}");
}

#[tokio::test]
async fn a_dropped_listener_connection_reconnects() {
    let store = SchemaStore::new().await;
    let mut listener =
        store.listener().await.unwrap().with_poll(Duration::from_millis(200), Duration::from_millis(200));
    let killed: Vec<bool> =
        sqlx::query_scalar("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1")
            .bind(listener.application_name())
            .fetch_all(store.pool())
            .await
            .unwrap();
    assert_eq!(killed, [true], "the listener's backend was terminated");
    // The next waits notice the loss and reconnect; then notifications flow again.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        store.append(&stream("again"), ExpectedVersion::Any, vec![event(1)]).await.unwrap();
        if listener.wait().await == Wake::Notified {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "no wake-up after the reconnect");
    }
}

#[tokio::test]
async fn after_commit_notify_wakes_the_listener_too() {
    let store = SchemaStore::with_options(|o| o.notify(eslab_postgres::Notify::AfterCommit)).await;
    let mut listener = store.listener().await.unwrap().with_poll(Duration::from_secs(30), Duration::from_secs(30));
    store.append(&stream("late"), ExpectedVersion::Any, vec![event(1)]).await.unwrap();
    let woke = tokio::time::timeout(Duration::from_secs(10), listener.wait()).await;
    assert_eq!(woke.unwrap(), Wake::Notified);
}

#[tokio::test]
async fn after_commit_coalesces_a_burst_into_few_notifications() {
    // A window far longer than the burst: its appends share NOTIFYs.
    let store = SchemaStore::with_options(|o| o.notify_window(Duration::from_millis(500))).await;
    let mut listener = store.listener().await.unwrap().with_poll(Duration::from_secs(3), Duration::from_secs(3));
    let appends = 20;
    for n in 0..appends {
        store.append(&stream("burst"), ExpectedVersion::Any, vec![event(n)]).await.unwrap();
    }
    // The first NOTIFY comes after the window.
    let woke = tokio::time::timeout(Duration::from_secs(10), listener.wait()).await;
    assert_eq!(woke.unwrap(), Wake::Notified);
    let mut notified = 1;
    while listener.wait().await == Wake::Notified {
        notified += 1;
    }
    assert!(notified < appends / 2, "{notified} NOTIFYs for {appends} appends");
}

#[tokio::test]
async fn no_append_path_notifies_inside_its_transaction_by_default() {
    // With a LISTEN open and a transaction that appended but has not
    // committed, a notifying append would hold the notification queue: here
    // nothing is sent until the caller commits and announces it.
    let store = SchemaStore::with_options(|o| o.notify_window(Duration::ZERO)).await;
    let mut listener =
        store.listener().await.unwrap().with_poll(Duration::from_millis(300), Duration::from_millis(300));
    let mut tx = store.pool().begin().await.unwrap();
    let results = store
        .append_in_tx(&mut tx, vec![eslab_core::StreamAppend::new(stream("tx"), ExpectedVersion::Any, vec![event(1)])])
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(listener.wait().await, Wake::Poll, "no NOTIFY was sent in the transaction");
    store.notify_committed(&results);
    let woke = tokio::time::timeout(Duration::from_secs(10), listener.wait()).await;
    assert_eq!(woke.unwrap(), Wake::Notified, "notify_committed sends it");
}
