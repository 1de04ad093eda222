//! What only the SQLite store promises: concurrent writers never see
//! SQLITE_BUSY, limits surface as `Unavailable`, files and wake-ups work.

use std::time::Duration;

use eslab_core::{
    Checkpoint, Error, EventAppender, EventReader, ExpectedVersion, FeedFilter, Metadata, NewEvent, Position,
    StreamAppend, StreamId, Version,
};
use eslab_sqlite::{SqliteConfig, SqliteError, SqliteStore};
use sqlx::Connection;
use sqlx::sqlite::SqliteConnection;

use crate::helpers::TempStore;

fn event(n: u64) -> NewEvent {
    NewEvent::new("Counted", 1, serde_json::json!({ "n": n }), Metadata::now())
}

fn stream(name: &str) -> StreamId {
    StreamId::new("test", name).unwrap()
}

fn url_of(store: &TempStore) -> String {
    format!("sqlite://{}", store.dir.path().join("nested").join("events.db").display())
}

async fn feed_len(store: &impl EventReader) -> usize {
    store.read_feed(&FeedFilter::All, Checkpoint::START, usize::MAX).await.unwrap().len()
}

/// Asserts the feed holds positions 1..=n with no gap.
async fn assert_dense_feed(store: &impl EventReader, n: usize) {
    let feed = store.read_feed(&FeedFilter::All, Checkpoint::START, usize::MAX).await.unwrap();
    let positions: Vec<u64> = feed.iter().map(|e| e.position.get()).collect();
    assert_eq!(positions, (1..=u64::try_from(n).unwrap()).collect::<Vec<_>>());
}

/// A raw connection on the same file, standing in for another process.
async fn other_process(url: &str) -> SqliteConnection {
    SqliteConnection::connect(url).await.unwrap()
}

fn unavailable_because(result: eslab_core::Result<impl std::fmt::Debug>) -> String {
    match result {
        Err(Error::Unavailable(source)) => {
            let e = source.downcast_ref::<SqliteError>().expect("the source is a SqliteError");
            e.to_string()
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn thirty_two_tasks_append_concurrently_to_a_file() {
    const TASKS: u64 = 32;
    const APPENDS: u64 = 10;
    let store = TempStore::new().await;
    let tasks: Vec<_> = (0..TASKS)
        .map(|t| {
            let store = store.clone();
            tokio::spawn(async move {
                for i in 0..APPENDS {
                    // Half the tasks share 4 streams, half own one each.
                    let s = if t % 2 == 0 { stream(&format!("shared-{}", t % 4)) } else { stream(&format!("own-{t}")) };
                    let batch = (0..1 + i % 3).map(|k| event(t * 1000 + i * 10 + k)).collect();
                    store.append(&s, ExpectedVersion::Any, batch).await?;
                }
                Ok::<_, Error>(())
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap().expect("every concurrent append succeeds");
    }
    let per_task: u64 = (0..APPENDS).map(|i| 1 + i % 3).sum();
    assert_dense_feed(&store, usize::try_from(TASKS * per_task).unwrap()).await;
    for shared in 0..2 {
        let events = store.read_stream(&stream(&format!("shared-{shared}")), Version::FIRST, usize::MAX).await.unwrap();
        let versions: Vec<u64> = events.iter().map(|e| e.stream_version.get()).collect();
        assert_eq!(versions, (1..=u64::try_from(events.len()).unwrap()).collect::<Vec<_>>(), "no gaps");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_stores_on_one_file_wait_for_each_other() {
    // Two stores on one file are two writer connections, as two processes would be:
    // BEGIN IMMEDIATE and the busy timeout make them take turns.
    let a = TempStore::new().await;
    let b = SqliteStore::connect(&url_of(&a)).await.unwrap();
    let stores = [a.store.clone(), b.clone()];
    let tasks: Vec<_> = (0..16u64)
        .map(|t| {
            let store = stores[usize::try_from(t % 2).unwrap()].clone();
            tokio::spawn(async move {
                for i in 0..10 {
                    store.append(&stream(&format!("s{}", t % 3)), ExpectedVersion::Any, vec![event(i)]).await?;
                }
                Ok::<_, Error>(())
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap().expect("no SQLITE_BUSY reaches the caller");
    }
    assert_dense_feed(&b, 160).await;
}

#[tokio::test]
async fn a_lock_held_past_the_busy_timeout_is_unavailable() {
    let first = TempStore::new().await;
    let url = url_of(&first);
    let config = SqliteConfig::default().busy_timeout(Duration::from_millis(100));
    let store = SqliteStore::connect_with(&url, config).await.unwrap();
    let mut other = other_process(&url).await;
    sqlx::query("BEGIN IMMEDIATE").execute(&mut other).await.unwrap();
    let why = unavailable_because(store.append(&stream("busy"), ExpectedVersion::Any, vec![event(1)]).await);
    assert!(why.contains("busy timeout"), "{why}");
    sqlx::query("ROLLBACK").execute(&mut other).await.unwrap();
    store.append(&stream("busy"), ExpectedVersion::Any, vec![event(1)]).await.expect("free again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_queue_longer_than_the_acquire_timeout_is_unavailable() {
    let first = TempStore::new().await;
    let url = url_of(&first);
    let config =
        SqliteConfig::default().busy_timeout(Duration::from_secs(2)).acquire_timeout(Duration::from_millis(100));
    let store = SqliteStore::connect_with(&url, config).await.unwrap();
    let mut other = other_process(&url).await;
    sqlx::query("BEGIN IMMEDIATE").execute(&mut other).await.unwrap();
    // The first append holds the one writer connection while it waits for the lock ...
    let holder = {
        let store = store.clone();
        tokio::spawn(async move { store.append(&stream("q"), ExpectedVersion::Any, vec![event(1)]).await })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    // ... so the second cannot get it in time.
    let why = unavailable_because(store.append(&stream("q"), ExpectedVersion::Any, vec![event(2)]).await);
    assert!(why.contains("acquire timeout"), "{why}");
    sqlx::query("ROLLBACK").execute(&mut other).await.unwrap();
    holder.await.unwrap().expect("the first append gets the lock once it is released");
}

#[tokio::test]
async fn a_closed_store_is_unavailable() {
    let store = SqliteStore::in_memory().await.unwrap();
    store.close().await;
    let why = unavailable_because(store.append(&stream("closed"), ExpectedVersion::Any, vec![event(1)]).await);
    assert!(why.contains("closed"), "{why}");
    assert!(store.stream_version(&stream("closed")).await.unwrap_err().is_unavailable());
}

#[tokio::test]
async fn connect_creates_the_file_and_reopening_keeps_the_events() {
    let first = TempStore::new().await;
    let path = first.dir.path().join("nested").join("events.db");
    assert!(path.exists(), "file and parent directory created on connect");
    first.store.append(&stream("keep"), ExpectedVersion::NoStream, vec![event(1), event(2)]).await.unwrap();
    first.store.close().await;
    let again = SqliteStore::connect(&url_of(&first)).await.unwrap();
    again.migrate().await.expect("migrating twice is a no-op");
    assert_eq!(again.stream_version(&stream("keep")).await.unwrap(), Version::new(2));
    assert_eq!(*again.subscribe().borrow(), Position::new(2), "the signal starts at the stored head");
    let mut raw = other_process(&url_of(&first)).await;
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode").fetch_one(&mut raw).await.unwrap();
    assert_eq!(mode, "wal");
}

#[test]
fn default_url_is_under_data() {
    assert_eq!(SqliteStore::default_url(), "sqlite://data/eslab.db");
}

#[tokio::test]
async fn an_invalid_url_is_refused() {
    for url in ["postgres://localhost/x", "sqlite://"] {
        let result = SqliteStore::connect(url).await;
        assert!(matches!(result, Err(SqliteError::InvalidUrl { .. })), "{url}: {result:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribers_wake_after_each_committed_append() {
    let store = SqliteStore::in_memory().await.unwrap();
    let mut rx = store.subscribe();
    assert_eq!(*rx.borrow_and_update(), Position::START);
    let writer = {
        let store = store.clone();
        tokio::spawn(async move { store.append(&stream("wake"), ExpectedVersion::Any, vec![event(1), event(2)]).await })
    };
    tokio::time::timeout(Duration::from_secs(5), rx.changed()).await.unwrap().unwrap();
    assert_eq!(*rx.borrow_and_update(), Position::new(2));
    writer.await.unwrap().unwrap();
    // A refused append wakes nobody.
    let refused = store.append(&stream("wake"), ExpectedVersion::NoStream, vec![event(3)]).await;
    assert!(refused.unwrap_err().is_conflict());
    assert!(!rx.has_changed().unwrap());
}

#[tokio::test]
async fn appends_larger_than_one_statement_are_atomic() {
    let store = TempStore::new().await;
    let s = stream("big");
    let taken = event(0);
    let taken_id = taken.event_id;
    store.append(&stream("seed"), ExpectedVersion::Any, vec![taken]).await.unwrap();
    // 600 events span three INSERTs; the duplicate is in the last one.
    let mut batch: Vec<_> = (1..=600).map(event).collect();
    batch[599] = event(600).with_id(taken_id);
    match store.append(&s, ExpectedVersion::NoStream, batch).await {
        Err(Error::DuplicateEventId(id)) => assert_eq!(id, taken_id),
        other => panic!("expected a duplicate id, got {other:?}"),
    }
    assert_eq!(feed_len(&store).await, 1, "nothing of the failed append is stored");
    let r = store.append(&s, ExpectedVersion::NoStream, (1..=600).map(event).collect()).await.unwrap();
    assert_eq!(r.version, Version::new(600));
    assert_dense_feed(&store, 601).await;
}

#[tokio::test]
async fn multi_stream_append_is_one_transaction_across_categories() {
    let store = SqliteStore::in_memory().await.unwrap();
    let (a, b) = (StreamId::new("alpha", "1").unwrap(), StreamId::new("beta", "1").unwrap());
    let results = store
        .append_streams(vec![
            StreamAppend::new(a.clone(), ExpectedVersion::NoStream, vec![event(1)]),
            StreamAppend::new(b.clone(), ExpectedVersion::NoStream, vec![event(2), event(3)]),
        ])
        .await
        .unwrap();
    assert_eq!(results.iter().map(|r| r.version.get()).collect::<Vec<_>>(), [1, 2]);
    let beta = store.read_feed(&FeedFilter::category("beta").unwrap(), Checkpoint::START, 10).await.unwrap();
    assert_eq!(beta.iter().map(|e| e.position.get()).collect::<Vec<_>>(), [2, 3]);
    assert!(beta.iter().all(|e| e.transaction == 0), "SQLite keeps Checkpoint.transaction at 0");
    let empty = store.append(&a, ExpectedVersion::Exact(Version::FIRST), vec![]).await.unwrap();
    assert_eq!((empty.version, empty.events.len()), (Version::FIRST, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_append_writes_nothing_and_frees_the_writer() {
    let first = TempStore::new().await;
    let url = url_of(&first);
    let store = SqliteStore::connect(&url).await.unwrap();
    let mut other = other_process(&url).await;
    sqlx::query("BEGIN IMMEDIATE").execute(&mut other).await.unwrap();
    // Dropped while it waits for the write lock.
    let cancelled = tokio::time::timeout(
        Duration::from_millis(100),
        store.append(&stream("cancel"), ExpectedVersion::Any, vec![event(1)]),
    )
    .await;
    assert!(cancelled.is_err(), "the append was still waiting: {cancelled:?}");
    sqlx::query("ROLLBACK").execute(&mut other).await.unwrap();
    let r = store.append(&stream("cancel"), ExpectedVersion::NoStream, vec![event(2)]).await.unwrap();
    assert_eq!(r.version, Version::FIRST, "the cancelled append left nothing behind");
    assert_dense_feed(&store, 1).await;
}

#[tokio::test]
async fn reads_past_the_integer_range_are_empty() {
    let store = SqliteStore::in_memory().await.unwrap();
    store.append(&stream("far"), ExpectedVersion::Any, vec![event(1)]).await.unwrap();
    let far = Checkpoint::new(0, Position::new(u64::MAX));
    assert!(store.read_feed(&FeedFilter::All, far, 10).await.unwrap().is_empty());
    assert!(store.read_stream(&stream("far"), Version::new(u64::MAX), 10).await.unwrap().is_empty());
    let too_far = store.append(&stream("far"), ExpectedVersion::Exact(Version::new(u64::MAX)), vec![]).await;
    assert!(too_far.unwrap_err().is_conflict(), "an expectation beyond the range is a plain conflict");
}

#[cfg(unix)]
#[tokio::test]
async fn the_database_file_is_private_to_its_owner() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("new").join("events.db");
    let store = SqliteStore::connect(&format!("sqlite://{}", path.display())).await.unwrap();
    store.append(&stream("private"), ExpectedVersion::NoStream, vec![event(1)]).await.unwrap();
    for file in [path.clone(), path.with_extension("db-wal"), path.with_extension("db-shm")] {
        let Ok(meta) = std::fs::metadata(&file) else { continue };
        assert_eq!(meta.permissions().mode() & 0o777, 0o600, "{} is readable by others", file.display());
    }
    // An existing file keeps the mode its owner gave it.
    drop(store);
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
    let _store = SqliteStore::connect(&format!("sqlite://{}", path.display())).await.unwrap();
    assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o640);
}
