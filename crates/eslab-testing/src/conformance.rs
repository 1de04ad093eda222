//! The store conformance suite: one set of tests every event store must pass.
//!
//! Each test is a public async function taking a factory that returns a
//! *fresh, empty* store (its own schema, database or instance), so tests run
//! in parallel and in any order. [`store_conformance_tests!`](crate::store_conformance_tests)
//! turns the whole suite into `#[test]` functions:
//!
//! ```
//! async fn new_store() -> eslab_memory::MemoryStore {
//!     eslab_memory::MemoryStore::new()
//! }
//! eslab_testing::store_conformance_tests!(new_store);
//! # fn main() {}
//! ```

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use eslab_core::{
    Checkpoint, Error, EventAppender, EventReader, EventReaderExt, EventStore, ExpectedVersion, FeedFilter, FeedHead,
    Metadata, NewEvent, RecordedEvent, StreamAppend, StreamId, Upcasters, Version,
};
use futures_util::TryStreamExt;
use serde_json::json;
use uuid::Uuid;

/// What the suite needs of a store: a cloneable backend shared across tasks.
pub trait TestStore: EventReader + EventAppender + Clone + 'static {}
impl<T: EventReader + EventAppender + Clone + 'static> TestStore for T {}

/// Expands to one `#[test]` per conformance test, in a module named
/// `store_conformance`, each calling `$factory().await` for a fresh store.
#[macro_export]
macro_rules! store_conformance_tests {
    ($factory:path) => {
        $crate::store_conformance_tests!(@tests $factory;
            expected_any_appends_anywhere,
            expected_no_stream,
            expected_stream_exists,
            expected_exact_and_conflict_reports_actual,
            multi_event_append_is_all_or_nothing,
            multi_stream_append_is_all_or_nothing,
            multi_stream_append_writes_every_stream,
            same_stream_twice_in_one_append_is_refused,
            concurrent_exact_appenders_one_winner_per_version,
            read_stream_from_version,
            read_stream_beyond_the_largest_version_is_empty,
            lean_stream_reads_match_full_reads,
            feed_every_event_once_in_order_resumable,
            feed_by_category,
            feed_while_writers_append_concurrently,
            duplicate_event_id_rejected,
            empty_append_checks_and_writes_nothing,
            unicode_and_large_payloads_round_trip,
            text_with_nul_is_refused_and_writes_nothing,
            metadata_round_trips,
            upcasting_applies_on_stream_and_feed_reads,
            long_stream_streams_in_pages,
            feed_head_is_the_newest_event
        );
    };
    (@tests $factory:path; $($name:ident),* $(,)?) => {
        #[allow(missing_docs)]
        mod store_conformance {
            #[allow(unused_imports)]
            use super::*;
            $(
                #[test]
                fn $name() {
                    $crate::block_on($crate::conformance::$name(|| $factory()));
                }
            )*
        }
    };
}

fn stream(name: &str) -> StreamId {
    StreamId::new("test", name).expect("valid stream id")
}

/// A small event with a fresh id: `{"n": n}` of type `Counted`.
pub fn event(n: u64) -> NewEvent {
    NewEvent::new("Counted", 1, json!({ "n": n }), Metadata::now())
}

fn events(range: std::ops::Range<u64>) -> Vec<NewEvent> {
    range.map(event).collect()
}

fn ns(events: &[RecordedEvent]) -> Vec<u64> {
    events.iter().map(|e| e.payload["n"].as_u64().expect("payload has n")).collect()
}

fn versions(events: &[RecordedEvent]) -> Vec<u64> {
    events.iter().map(|e| e.stream_version.get()).collect()
}

async fn all<S: EventReader>(store: &S, s: &StreamId) -> Vec<RecordedEvent> {
    store.read_stream(s, Version::FIRST, usize::MAX).await.expect("read stream")
}

async fn feed_all<S: EventReader>(store: &S, filter: &FeedFilter) -> Vec<RecordedEvent> {
    store.feed(filter, Checkpoint::START).try_collect().await.expect("read feed")
}

fn assert_conflict(result: eslab_core::Result<impl std::fmt::Debug>, s: &StreamId, actual: u64) {
    match result {
        Err(Error::Conflict { stream, actual: a, .. }) => {
            assert_eq!(&stream, s, "conflict names the stream");
            assert_eq!(a, Version::new(actual), "conflict reports the actual version");
        }
        other => panic!("expected a conflict at actual version {actual}, got {other:?}"),
    }
}

/// `Any` appends to a new stream and to an existing one.
pub async fn expected_any_appends_anywhere<S: TestStore, F: Future<Output = S>>(new: impl Fn() -> F) {
    let store = new().await;
    let s = stream("any");
    let r = store.append(&s, ExpectedVersion::Any, events(0..2)).await.expect("first append");
    assert_eq!(r.version, Version::new(2));
    assert_eq!(versions(&r.events), [1, 2]);
    let r = store.append(&s, ExpectedVersion::Any, events(2..3)).await.expect("second append");
    assert_eq!(r.version, Version::new(3));
    assert_eq!(versions(&all(&store, &s).await), [1, 2, 3]);
    assert_eq!(store.stream_version(&s).await.expect("version"), Version::new(3));
}

/// `NoStream` succeeds once, then conflicts with the actual version.
pub async fn expected_no_stream<S: TestStore, F: Future<Output = S>>(new: impl Fn() -> F) {
    let store = new().await;
    let s = stream("nostream");
    store.append(&s, ExpectedVersion::NoStream, events(0..2)).await.expect("create");
    assert_conflict(store.append(&s, ExpectedVersion::NoStream, events(2..3)).await, &s, 2);
    assert_eq!(all(&store, &s).await.len(), 2);
}

/// `StreamExists` fails on an absent stream and succeeds on a present one.
pub async fn expected_stream_exists<S: TestStore, F: Future<Output = S>>(new: impl Fn() -> F) {
    let store = new().await;
    let s = stream("exists");
    assert_conflict(store.append(&s, ExpectedVersion::StreamExists, events(0..1)).await, &s, 0);
    assert_eq!(store.stream_version(&s).await.expect("version"), Version::NONE);
    store.append(&s, ExpectedVersion::Any, events(0..1)).await.expect("create");
    let r = store.append(&s, ExpectedVersion::StreamExists, events(1..2)).await.expect("append");
    assert_eq!(r.version, Version::new(2));
}

/// `Exact(v)` succeeds at `v`, conflicts elsewhere, and the conflict carries the actual version.
pub async fn expected_exact_and_conflict_reports_actual<S: TestStore, F: Future<Output = S>>(new: impl Fn() -> F) {
    let store = new().await;
    let s = stream("exact");
    assert_conflict(store.append(&s, ExpectedVersion::Exact(Version::new(1)), events(0..1)).await, &s, 0);
    store.append(&s, ExpectedVersion::Exact(Version::NONE), events(0..3)).await.expect("at 0");
    assert_conflict(store.append(&s, ExpectedVersion::Exact(Version::new(2)), events(3..4)).await, &s, 3);
    assert_conflict(store.append(&s, ExpectedVersion::Exact(Version::new(4)), events(3..4)).await, &s, 3);
    let r = store.append(&s, ExpectedVersion::Exact(Version::new(3)), events(3..4)).await.expect("at 3");
    assert_eq!(r.version, Version::new(4));
    assert_eq!(ns(&all(&store, &s).await), [0, 1, 2, 3]);
}

/// A multi-event append that fails (a duplicate id in its middle) writes none of its events.
pub async fn multi_event_append_is_all_or_nothing<S: TestStore, F: Future<Output = S>>(new: impl Fn() -> F) {
    let store = new().await;
    let s = stream("atomic");
    let taken = event(99);
    let taken_id = taken.event_id;
    store.append(&stream("other"), ExpectedVersion::Any, vec![taken]).await.expect("seed");
    let batch = vec![event(0), event(1).with_id(taken_id), event(2)];
    match store.append(&s, ExpectedVersion::Any, batch).await {
        Err(Error::DuplicateEventId(id)) => assert_eq!(id, taken_id),
        other => panic!("expected a duplicate event id, got {other:?}"),
    }
    assert!(all(&store, &s).await.is_empty(), "no event of a failed append is stored");
    assert_eq!(store.stream_version(&s).await.expect("version"), Version::NONE);
    assert_eq!(feed_all(&store, &FeedFilter::All).await.len(), 1);
}

/// A multi-stream append writes nothing if any stream's expectation fails.
pub async fn multi_stream_append_is_all_or_nothing<S: TestStore, F: Future<Output = S>>(new: impl Fn() -> F) {
    let store = new().await;
    let (a, b) = (stream("ms-a"), stream("ms-b"));
    store.append(&b, ExpectedVersion::Any, events(0..1)).await.expect("seed b");
    let result = store
        .append_streams(vec![
            StreamAppend::new(a.clone(), ExpectedVersion::NoStream, events(10..12)),
            StreamAppend::new(b.clone(), ExpectedVersion::NoStream, events(20..21)),
        ])
        .await;
    assert_conflict(result, &b, 1);
    assert!(all(&store, &a).await.is_empty(), "stream a untouched");
    assert_eq!(all(&store, &b).await.len(), 1, "stream b untouched");
    assert_eq!(feed_all(&store, &FeedFilter::All).await.len(), 1);
}

/// A successful multi-stream append writes every stream, results in request order.
pub async fn multi_stream_append_writes_every_stream<S: TestStore, F: Future<Output = S>>(new: impl Fn() -> F) {
    let store = new().await;
    let (a, b) = (stream("msw-a"), stream("msw-b"));
    store.append(&b, ExpectedVersion::Any, events(0..1)).await.expect("seed b");
    let results = store
        .append_streams(vec![
            StreamAppend::new(a.clone(), ExpectedVersion::NoStream, events(10..12)),
            StreamAppend::new(b.clone(), ExpectedVersion::Exact(Version::new(1)), events(20..21)),
        ])
        .await
        .expect("multi-stream append");
    assert_eq!(results.len(), 2);
    assert_eq!((&results[0].stream_id, results[0].version), (&a, Version::new(2)));
    assert_eq!((&results[1].stream_id, results[1].version), (&b, Version::new(2)));
    assert_eq!(ns(&all(&store, &a).await), [10, 11]);
    assert_eq!(ns(&all(&store, &b).await), [0, 20]);
    let feed = feed_all(&store, &FeedFilter::All).await;
    assert_eq!(ns(&feed), [0, 10, 11, 20]);
}

/// Naming one stream twice in a multi-stream append is an invalid request.
pub async fn same_stream_twice_in_one_append_is_refused<S: TestStore, F: Future<Output = S>>(new: impl Fn() -> F) {
    let store = new().await;
    let a = stream("twice");
    let result = store
        .append_streams(vec![
            StreamAppend::new(a.clone(), ExpectedVersion::Any, events(0..1)),
            StreamAppend::new(a.clone(), ExpectedVersion::Any, events(1..2)),
        ])
        .await;
    assert!(matches!(result, Err(Error::InvalidRequest(_))), "got {result:?}");
    assert!(all(&store, &a).await.is_empty());
}

/// N tasks race to append at each version with `Exact(v)`: exactly one wins
/// per version; the stream ends with no gaps and no duplicates.
pub async fn concurrent_exact_appenders_one_winner_per_version<S: TestStore, F: Future<Output = S>>(
    new: impl Fn() -> F,
) {
    const TASKS: u64 = 8;
    const ROUNDS: u64 = 10;
    let store = new().await;
    let s = stream("race");
    for round in 0..ROUNDS {
        let expected = ExpectedVersion::Exact(Version::new(round));
        let barrier = Arc::new(tokio::sync::Barrier::new(TASKS.try_into().expect("few tasks")));
        let tasks: Vec<_> = (0..TASKS)
            .map(|task| {
                let (store, s, barrier) = (store.clone(), s.clone(), barrier.clone());
                tokio::spawn(async move {
                    barrier.wait().await;
                    store.append(&s, expected, vec![event(round * 100 + task)]).await
                })
            })
            .collect();
        let mut winners = 0;
        for task in tasks {
            match task.await.expect("task panicked") {
                Ok(r) => {
                    winners += 1;
                    assert_eq!(r.version, Version::new(round + 1));
                }
                Err(Error::Conflict { actual, .. }) => assert_eq!(actual, Version::new(round + 1)),
                Err(e) => panic!("unexpected error {e:?}"),
            }
        }
        assert_eq!(winners, 1, "round {round}: exactly one appender wins");
    }
    let stored = all(&store, &s).await;
    assert_eq!(versions(&stored), (1..=ROUNDS).collect::<Vec<_>>());
    for (round, n) in ns(&stored).into_iter().enumerate() {
        assert_eq!(n / 100, round as u64, "each version holds the winner of its round");
    }
}

/// Reading a stream from a version returns that version onward; `limit` caps a page.
pub async fn read_stream_from_version<S: TestStore, F: Future<Output = S>>(new: impl Fn() -> F) {
    let store = new().await;
    let s = stream("read");
    store.append(&s, ExpectedVersion::Any, events(0..10)).await.expect("append");
    store.append(&stream("noise"), ExpectedVersion::Any, events(50..55)).await.expect("noise");
    let page = store.read_stream(&s, Version::new(4), 3).await.expect("read");
    assert_eq!(versions(&page), [4, 5, 6]);
    assert_eq!(ns(&page), [3, 4, 5]);
    assert_eq!(versions(&store.read_stream(&s, Version::new(9), 100).await.expect("read")), [9, 10]);
    assert!(store.read_stream(&s, Version::new(11), 100).await.expect("read").is_empty());
    assert!(store.read_stream(&stream("absent"), Version::FIRST, 100).await.expect("read").is_empty());
    let page = store.read_stream(&s, Version::NONE, 2).await.expect("from 0 is from the start");
    assert_eq!(versions(&page), [1, 2]);
}

/// Reading from a version beyond any a store can hold (above `i64::MAX`, up
/// to `u64::MAX`) is an empty page on every store, not an error.
pub async fn read_stream_beyond_the_largest_version_is_empty<S: TestStore, F: Future<Output = S>>(new: impl Fn() -> F) {
    let store = new().await;
    let s = stream("beyond");
    store.append(&s, ExpectedVersion::Any, events(0..3)).await.expect("append");
    let largest = i64::MAX.unsigned_abs();
    for from in [largest, largest + 1, u64::MAX] {
        for stream in [&s, &stream("beyond-absent")] {
            let page = store.read_stream(stream, Version::new(from), 10).await;
            assert!(matches!(&page, Ok(events) if events.is_empty()), "{stream} from {from}: {page:?}");
        }
    }
}

/// A lean stream read (the read of a repository's loads) holds exactly the
/// parts of the full read's events, for every start and page size: unit,
/// nested, unicode and large payloads, schema versions, subjects.
pub async fn lean_stream_reads_match_full_reads<S: TestStore, F: Future<Output = S>>(new: impl Fn() -> F) {
    let store = new().await;
    let s = stream("lean");
    let subject = eslab_core::Subject::new("person-ä 1").expect("subject");
    let batch = vec![
        NewEvent::new(
            "Opened",
            1,
            json!({ "owner": { "$personal": "Zoë" }, "limit": -5 }),
            Metadata::now().with_subject(subject).with_actor("clerk"),
        ),
        NewEvent::new("Closed", 1, serde_json::Value::Null, Metadata::now()),
        NewEvent::new(
            "Noted",
            3,
            json!({ "text": "日本語 ".repeat(2_000), "list": [1, [2, { "x": null }]] }),
            Metadata::now(),
        ),
    ];
    store.append(&s, ExpectedVersion::Any, batch).await.expect("append");
    store.append(&s, ExpectedVersion::Any, events(0..7)).await.expect("append");
    store.append(&stream("lean-noise"), ExpectedVersion::Any, events(50..53)).await.expect("noise");
    for from in [0, 1, 2, 5, 10, 11] {
        for limit in [1, 3, 100] {
            let full = store.read_stream(&s, Version::new(from), limit).await.expect("read");
            let lean = store.read_stream_lean(&s, Version::new(from), limit).await.expect("lean read");
            let want: Vec<eslab_core::LeanEvent> = full.into_iter().map(Into::into).collect();
            assert_eq!(lean, want, "from {from}, limit {limit}");
        }
    }
    assert_eq!(store.read_stream_lean(&s, Version::FIRST, 100).await.expect("lean read").len(), 10);
    assert!(store.read_stream_lean(&stream("lean-absent"), Version::FIRST, 9).await.expect("read").is_empty());
    let beyond = store.read_stream_lean(&s, Version::new(u64::MAX), 9).await;
    assert!(matches!(&beyond, Ok(page) if page.is_empty()), "{beyond:?}");
}

/// The feed yields every event exactly once, in order, and resumes from any checkpoint.
pub async fn feed_every_event_once_in_order_resumable<S: TestStore, F: Future<Output = S>>(new: impl Fn() -> F) {
    let store = new().await;
    let mut appended = Vec::new();
    for i in 0..20u64 {
        let s = stream(&format!("feed-{}", i % 3));
        let r = store.append(&s, ExpectedVersion::Any, events(i * 10..i * 10 + 1 + i % 2)).await.expect("append");
        appended.extend(r.events.into_iter().map(|e| e.event_id));
    }
    let feed = feed_all(&store, &FeedFilter::All).await;
    assert_eq!(feed.iter().map(|e| e.event_id).collect::<Vec<_>>(), appended, "feed order is commit order");
    for pair in feed.windows(2) {
        assert!(pair[0].checkpoint() < pair[1].checkpoint(), "checkpoints strictly increase");
    }
    for (i, event) in feed.iter().enumerate() {
        let rest: Vec<_> = store.feed(&FeedFilter::All, event.checkpoint()).try_collect().await.expect("resume");
        assert_eq!(rest.len(), feed.len() - i - 1, "resume after event {i}");
        assert_eq!(rest.first().map(|e| e.event_id), feed.get(i + 1).map(|e| e.event_id));
    }
    let mut paged = Vec::new();
    let mut at = Checkpoint::START;
    loop {
        let page = store.read_feed(&FeedFilter::All, at, 4).await.expect("page");
        let Some(last) = page.last() else { break };
        at = last.checkpoint();
        assert!(page.len() <= 4);
        paged.extend(page);
    }
    assert_eq!(paged, feed, "paging yields the same feed");
}

/// The per-category feed carries only that category's events, in feed order.
pub async fn feed_by_category<S: TestStore, F: Future<Output = S>>(new: impl Fn() -> F) {
    let store = new().await;
    let a = StreamId::new("alpha", "1").expect("id");
    let b = StreamId::new("beta", "1").expect("id");
    let a2 = StreamId::new("alpha", "2").expect("id");
    store.append(&a, ExpectedVersion::Any, events(0..2)).await.expect("a");
    store.append(&b, ExpectedVersion::Any, events(2..4)).await.expect("b");
    store.append(&a2, ExpectedVersion::Any, events(4..5)).await.expect("a2");
    let alpha = FeedFilter::category("alpha").expect("category");
    let feed = feed_all(&store, &alpha).await;
    assert_eq!(ns(&feed), [0, 1, 4]);
    let rest: Vec<_> = store.feed(&alpha, feed[1].checkpoint()).try_collect().await.expect("resume");
    assert_eq!(ns(&rest), [4]);
    assert!(feed_all(&store, &FeedFilter::category("gamma").expect("category")).await.is_empty());
}

/// While 8 writers append, a reader following the feed from its checkpoint
/// receives every committed event exactly once.
pub async fn feed_while_writers_append_concurrently<S: TestStore, F: Future<Output = S>>(new: impl Fn() -> F) {
    const WRITERS: u64 = 8;
    const APPENDS: u64 = 25;
    let store = new().await;
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut ids = Vec::new();
                for i in 0..APPENDS {
                    let s = stream(&format!("conc-{}", (w + i) % 5));
                    let r = store.append(&s, ExpectedVersion::Any, events(i..i + 1 + i % 3)).await.expect("append");
                    ids.extend(r.events.into_iter().map(|e| e.event_id));
                    if i % 5 == 0 {
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                }
                ids
            })
        })
        .collect();
    let writers_done = Arc::new(AtomicBool::new(false));
    let reader = {
        let (store, writers_done) = (store.clone(), writers_done.clone());
        tokio::spawn(async move {
            let mut seen = Vec::new();
            let mut at = Checkpoint::START;
            let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
            loop {
                // Read the flag before the page: if the writers were done then,
                // an empty page means the feed is drained.
                let done = writers_done.load(Ordering::Acquire);
                let page = store.read_feed(&FeedFilter::All, at, 17).await.expect("feed page");
                if let Some(last) = page.last() {
                    assert!(last.checkpoint() > at, "the feed moves forward");
                    at = last.checkpoint();
                }
                if page.is_empty() {
                    if done {
                        return seen;
                    }
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                seen.extend(page.into_iter().map(|e| e.event_id));
                assert!(tokio::time::Instant::now() < deadline, "reader did not finish in time");
            }
        })
    };
    let mut written = Vec::new();
    for w in writers {
        written.extend(w.await.expect("writer"));
    }
    writers_done.store(true, Ordering::Release);
    let seen = reader.await.expect("reader");
    let unique: HashSet<_> = seen.iter().collect();
    assert_eq!(unique.len(), seen.len(), "no event delivered twice");
    let written_set: HashSet<_> = written.iter().collect();
    assert_eq!(unique, written_set, "every committed event delivered");
}

/// An event id that is already stored fails the append.
pub async fn duplicate_event_id_rejected<S: TestStore, F: Future<Output = S>>(new: impl Fn() -> F) {
    let store = new().await;
    let first = event(1);
    let id = first.event_id;
    store.append(&stream("dup-a"), ExpectedVersion::Any, vec![first]).await.expect("first");
    let again = event(2).with_id(id);
    match store.append(&stream("dup-b"), ExpectedVersion::Any, vec![again.clone()]).await {
        Err(Error::DuplicateEventId(d)) => assert_eq!(d, id),
        other => panic!("expected a duplicate event id, got {other:?}"),
    }
    match store
        .append(
            &stream("dup-c"),
            ExpectedVersion::Any,
            vec![event(3).with_id(Uuid::nil()), event(4).with_id(Uuid::nil())],
        )
        .await
    {
        Err(Error::DuplicateEventId(d)) => assert_eq!(d, Uuid::nil()),
        other => panic!("expected a duplicate id within one append, got {other:?}"),
    }
    assert_eq!(feed_all(&store, &FeedFilter::All).await.len(), 1);
}

/// The empty append checks the expectation, writes nothing and returns the current version.
pub async fn empty_append_checks_and_writes_nothing<S: TestStore, F: Future<Output = S>>(new: impl Fn() -> F) {
    let store = new().await;
    let s = stream("empty");
    let r = store.append(&s, ExpectedVersion::NoStream, vec![]).await.expect("empty append on a new stream");
    assert_eq!((r.version, r.events.len()), (Version::NONE, 0));
    assert_eq!(store.stream_version(&s).await.expect("version"), Version::NONE);
    store.append(&s, ExpectedVersion::Any, events(0..2)).await.expect("append");
    let r = store.append(&s, ExpectedVersion::Exact(Version::new(2)), vec![]).await.expect("empty at 2");
    assert_eq!((r.version, r.events.len()), (Version::new(2), 0));
    assert_conflict(store.append(&s, ExpectedVersion::Exact(Version::new(1)), vec![]).await, &s, 2);
    assert_eq!(feed_all(&store, &FeedFilter::All).await.len(), 2);
}

/// Unicode (including NUL-free astral characters) and 1 MiB payloads round-trip exactly.
pub async fn unicode_and_large_payloads_round_trip<S: TestStore, F: Future<Output = S>>(new: impl Fn() -> F) {
    let store = new().await;
    let s = StreamId::new("test", "ünïcødé-流-🦀").expect("unicode stream id");
    let text = "héllo wörld — 日本語 — emoji 🦀🚀 — \u{200b}zero-width — \"quotes\" \\ back\\slash\ttab\nnewline";
    let big = "x".repeat(1024 * 1024);
    let payloads = [
        json!({ "text": text, "nested": { "arr": [1, 2.5, -3, null, true, "🦀"] } }),
        json!({ "big": big }),
        json!(null),
        json!([]),
    ];
    let batch: Vec<_> = payloads.iter().map(|p| NewEvent::new("Ünïcode", 1, p.clone(), Metadata::now())).collect();
    store.append(&s, ExpectedVersion::Any, batch).await.expect("append");
    let read = all(&store, &s).await;
    assert_eq!(read.iter().map(|e| e.payload.clone()).collect::<Vec<_>>(), payloads);
    assert!(read.iter().all(|e| e.event_type == "Ünïcode" && e.stream_id == s));
    let feed = feed_all(&store, &FeedFilter::All).await;
    assert_eq!(feed[1].payload["big"].as_str().map(str::len), Some(1024 * 1024));
}

/// Text with a NUL character (U+0000), which PostgreSQL cannot hold, is
/// refused by every store alike: [`Error::InvalidRequest`], and nothing of the
/// append is written (not even its other streams). The six characters
/// `\u0000` are ordinary text and round-trip.
pub async fn text_with_nul_is_refused_and_writes_nothing<S: TestStore, F: Future<Output = S>>(new: impl Fn() -> F) {
    let store = new().await;
    let (s, other) = (stream("nul"), stream("nul-other"));
    let bad = [
        NewEvent::new("Counted", 1, json!({ "owner": "A\u{0}da" }), Metadata::now()),
        NewEvent::new("Counted", 1, json!({ "names": ["ok", "\u{0}"] }), Metadata::now()),
        NewEvent::new("Counted", 1, json!({ "k\u{0}": 1 }), Metadata::now()),
        NewEvent::new("Counted", 1, json!("\u{0}"), Metadata::now()),
        NewEvent::new("Count\u{0}ed", 1, json!({}), Metadata::now()),
        NewEvent::new("Counted", 1, json!({}), Metadata::now().with_actor("al\u{0}ice")),
        NewEvent::new("Counted", 1, json!({}), Metadata::now().with_extra("ip", json!("\u{0}"))),
    ];
    for bad_event in bad {
        let what = format!("{:?} {} {:?}", bad_event.event_type, bad_event.payload, bad_event.metadata);
        // A good event first: the bad one must spoil the whole append.
        let result = store.append(&s, ExpectedVersion::Any, vec![event(0), bad_event]).await;
        assert!(matches!(result, Err(Error::InvalidRequest(_))), "{what}: got {result:?}");
    }
    let with_nul = NewEvent::new("Counted", 1, json!({ "n": 0, "text": "\u{0}" }), Metadata::now());
    let result = store
        .append_streams(vec![
            StreamAppend::new(other.clone(), ExpectedVersion::Any, events(1..2)),
            StreamAppend::new(s.clone(), ExpectedVersion::Any, vec![with_nul]),
        ])
        .await;
    assert!(matches!(result, Err(Error::InvalidRequest(_))), "multi-stream: got {result:?}");
    assert_eq!(store.stream_version(&s).await.expect("version"), Version::NONE);
    assert_eq!(store.stream_version(&other).await.expect("version"), Version::NONE);
    assert!(feed_all(&store, &FeedFilter::All).await.is_empty(), "nothing written");
    let escaped = json!({ "text": "\\u0000 is not a NUL", "control": "\u{1}\u{1f}" });
    store
        .append(&s, ExpectedVersion::NoStream, vec![NewEvent::new("Counted", 1, escaped.clone(), Metadata::now())])
        .await
        .expect("text without NUL is stored");
    assert_eq!(all(&store, &s).await[0].payload, escaped);
}

/// Metadata (correlation, causation, actor, occurred-at, extra) and schema versions round-trip.
pub async fn metadata_round_trips<S: TestStore, F: Future<Output = S>>(new: impl Fn() -> F) {
    let store = new().await;
    let s = stream("meta");
    let metadata = Metadata::now()
        .with_correlation_id(Uuid::now_v7())
        .with_causation_id(Uuid::now_v7())
        .with_actor("alice")
        .with_extra("ip", json!("127.0.0.1"))
        .with_extra("n", json!(7));
    let new_event = NewEvent::new("Meta", 3, json!({}), metadata.clone());
    let id = new_event.event_id;
    let r = store.append(&s, ExpectedVersion::Any, vec![new_event]).await.expect("append");
    let read = all(&store, &s).await;
    assert_eq!(read, r.events, "the append's result equals what is read back");
    let e = &read[0];
    assert_eq!((e.event_id, e.schema_version), (id, 3));
    assert_eq!(e.metadata.correlation_id, metadata.correlation_id);
    assert_eq!(e.metadata.causation_id, metadata.causation_id);
    assert_eq!(e.metadata.actor.as_deref(), Some("alice"));
    assert_eq!(e.metadata.extra, metadata.extra);
    let skew = (e.metadata.occurred_at - metadata.occurred_at).abs();
    assert!(skew < time_ms(1), "occurred-at kept to the millisecond, off by {skew}");
}

fn time_ms(ms: i64) -> time::Duration {
    time::Duration::milliseconds(ms)
}

/// Upcasters registered on the [`EventStore`] apply to stream reads and feed reads alike.
pub async fn upcasting_applies_on_stream_and_feed_reads<S: TestStore, F: Future<Output = S>>(new: impl Fn() -> F) {
    let backend = new().await;
    let s = stream("upcast");
    let v1 = NewEvent::new("Renamed", 1, json!({ "name": "Ada" }), Metadata::now());
    let v2 = NewEvent::new("Renamed", 2, json!({ "name": { "first": "Grace" } }), Metadata::now());
    backend.append(&s, ExpectedVersion::Any, vec![v1, v2]).await.expect("append");
    let upcasters = Upcasters::new()
        .register("Renamed", 1, 2, |mut p| {
            let name = p.get("name").cloned().ok_or("no name")?;
            p["name"] = json!({ "first": name });
            Ok(p)
        })
        .expect("register");
    let store = EventStore::new(backend.clone()).with_upcasters(upcasters);
    let expected = [json!({ "name": { "first": "Ada" } }), json!({ "name": { "first": "Grace" } })];
    let read = all(&store, &s).await;
    assert_eq!(
        read.iter().map(|e| (e.schema_version, e.payload.clone())).collect::<Vec<_>>(),
        [(2, expected[0].clone()), (2, expected[1].clone())]
    );
    let feed = feed_all(&store, &FeedFilter::All).await;
    assert_eq!(feed.iter().map(|e| e.payload.clone()).collect::<Vec<_>>(), expected);
    let streamed: Vec<_> = store.stream_events(&s, Version::FIRST).try_collect().await.expect("stream");
    assert_eq!(streamed, read);
    let lean: Vec<eslab_core::LeanEvent> =
        store.stream_events_lean(&s, Version::FIRST).try_collect().await.expect("lean stream");
    assert_eq!(lean, read.into_iter().map(Into::into).collect::<Vec<_>>(), "loads read upcast events");
    // The stored rows themselves are untouched.
    let raw = all(&backend, &s).await;
    assert_eq!(raw[0].schema_version, 1);
    assert_eq!(raw[0].payload, json!({ "name": "Ada" }));
}

/// A stream longer than one page streams completely, in order.
pub async fn long_stream_streams_in_pages<S: TestStore, F: Future<Output = S>>(new: impl Fn() -> F) {
    let store = new().await;
    let s = stream("long");
    let total = eslab_core::STREAM_PAGE_SIZE as u64 * 2 + 7;
    for chunk in (0..total).collect::<Vec<_>>().chunks(200) {
        let batch = chunk.iter().map(|&n| event(n)).collect();
        store.append(&s, ExpectedVersion::Any, batch).await.expect("append");
    }
    let streamed: Vec<_> = store.stream_events(&s, Version::FIRST).try_collect().await.expect("stream");
    assert_eq!(ns(&streamed), (0..total).collect::<Vec<_>>());
    let from_mid: Vec<_> = store.stream_events(&s, Version::new(600)).try_collect().await.expect("stream");
    assert_eq!(from_mid.len() as u64, total - 599);
    let lean: Vec<_> = store.stream_events_lean(&s, Version::new(2)).try_collect().await.expect("lean stream");
    assert_eq!(lean.iter().map(|e| e.stream_version.get()).collect::<Vec<_>>(), (2..=total).collect::<Vec<_>>());
    let mut per_stream: HashMap<StreamId, u64> = HashMap::new();
    let feed = feed_all(&store, &FeedFilter::All).await;
    for e in &feed {
        let last = per_stream.entry(e.stream_id.clone()).or_default();
        assert_eq!(e.stream_version.get(), *last + 1, "feed keeps stream order");
        *last += 1;
    }
    assert_eq!(feed.len() as u64, total);
}

/// Expands to `#[test]`s checking a [`SnapshotStore`](eslab_core::SnapshotStore)
/// and a [`CheckpointStore`](eslab_core::CheckpointStore), in a module named
/// `side_store_conformance`; `$factory().await` returns a fresh store
/// implementing both.
#[macro_export]
macro_rules! side_store_conformance_tests {
    ($factory:path) => {
        #[allow(missing_docs)]
        mod side_store_conformance {
            #[allow(unused_imports)]
            use super::*;
            #[test]
            fn snapshots_keep_the_latest() {
                $crate::block_on($crate::conformance::snapshots_keep_the_latest(|| $factory()));
            }
            #[test]
            fn checkpoints_and_leases() {
                $crate::block_on($crate::conformance::checkpoints_and_leases(|| $factory()));
            }
        }
    };
}

/// A snapshot store returns the latest snapshot and never moves backwards.
pub async fn snapshots_keep_the_latest<S, F>(new: impl Fn() -> F)
where
    S: eslab_core::SnapshotStore,
    F: Future<Output = S>,
{
    use eslab_core::Snapshot;
    let store = new().await;
    let s = stream("snap");
    assert!(store.load_snapshot(&s).await.expect("load").is_none());
    let snap = |v: u64, state: serde_json::Value| Snapshot {
        stream_id: s.clone(),
        version: Version::new(v),
        state_schema_version: 2,
        state,
        taken_at: time::OffsetDateTime::now_utc(),
    };
    store.save_snapshot(snap(5, json!({ "balance": 5, "név": "ünï" }))).await.expect("save 5");
    store.save_snapshot(snap(9, json!({ "balance": 9 }))).await.expect("save 9");
    store.save_snapshot(snap(7, json!({ "balance": 7 }))).await.expect("save 7 (ignored)");
    let got = store.load_snapshot(&s).await.expect("load").expect("a snapshot");
    assert_eq!((got.version, got.state_schema_version, got.state), (Version::new(9), 2, json!({ "balance": 9 })));
    assert!(store.load_snapshot(&stream("other")).await.expect("load").is_none());
}

/// The feed's head is its newest event (per category too), as `read_feed` returns it.
pub async fn feed_head_is_the_newest_event<S: TestStore, F: Future<Output = S>>(new: impl Fn() -> F) {
    let store = new().await;
    let alpha = FeedFilter::category("alpha").expect("category");
    assert_eq!(store.feed_head(&FeedFilter::All).await.expect("head"), None, "an empty feed has no head");
    assert_eq!(store.feed_head(&alpha).await.expect("head"), None);
    let a = StreamId::new("alpha", "1").expect("id");
    let b = StreamId::new("beta", "1").expect("id");
    store.append(&a, ExpectedVersion::Any, events(0..3)).await.expect("a");
    store.append(&b, ExpectedVersion::Any, events(3..5)).await.expect("b");
    let feed = feed_all(&store, &FeedFilter::All).await;
    let alpha_feed = feed_all(&store, &alpha).await;
    let head = store.feed_head(&FeedFilter::All).await.expect("head").expect("a head");
    assert_eq!(Some(head), feed.last().map(FeedHead::of), "the head is the last event of the feed");
    let alpha_head = store.feed_head(&alpha).await.expect("head").expect("a head");
    assert_eq!(Some(alpha_head), alpha_feed.last().map(FeedHead::of), "per category");
    assert!(alpha_head.checkpoint < head.checkpoint);
    assert_eq!(store.feed_head(&FeedFilter::category("gamma").expect("category")).await.expect("head"), None);
    // Through the upcasting layer too.
    let typed = EventStore::new(store.clone());
    assert_eq!(typed.feed_head(&FeedFilter::All).await.expect("head"), Some(head));
}

/// Checkpoints persist per name; a lease excludes other owners until released or expired.
pub async fn checkpoints_and_leases<S, F>(new: impl Fn() -> F)
where
    S: eslab_core::CheckpointStore,
    F: Future<Output = S>,
{
    use eslab_core::Position;
    let store = new().await;
    assert_eq!(store.load_checkpoint("p1").await.expect("load"), Checkpoint::START);
    let at = Checkpoint::new(12, Position::new(34));
    store.save_checkpoint("p1", at).await.expect("save");
    store.save_checkpoint("p2", Checkpoint::new(1, Position::new(1))).await.expect("save");
    assert_eq!(store.load_checkpoint("p1").await.expect("load"), at);
    let later = Checkpoint::new(13, Position::new(30));
    store.save_checkpoint("p1", later).await.expect("save");
    assert_eq!(store.load_checkpoint("p1").await.expect("load"), later);

    let ttl = Duration::from_secs(30);
    assert!(store.acquire_lease("p1", "a", ttl).await.expect("lease"));
    assert!(store.acquire_lease("p1", "a", ttl).await.expect("renew"), "the owner renews");
    assert!(!store.acquire_lease("p1", "b", ttl).await.expect("lease"), "another owner is refused");
    assert!(store.acquire_lease("p2", "b", ttl).await.expect("lease"), "leases are per name");
    store.release_lease("p1", "b").await.expect("release by non-owner is a no-op");
    assert!(!store.acquire_lease("p1", "b", ttl).await.expect("lease"));
    store.release_lease("p1", "a").await.expect("release");
    assert!(store.acquire_lease("p1", "b", ttl).await.expect("lease"), "free after release");
    assert!(store.acquire_lease("p3", "a", Duration::from_millis(50)).await.expect("short lease"));
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert!(store.acquire_lease("p3", "b", ttl).await.expect("lease"), "free after expiry");
}

/// Expands to `#[test]`s checking [`StreamRetention`](eslab_core::StreamRetention),
/// in a module named `retention_conformance`; `$factory().await` returns a
/// fresh store that also keeps snapshots.
#[macro_export]
macro_rules! retention_conformance_tests {
    ($factory:path) => {
        #[allow(missing_docs)]
        mod retention_conformance {
            #[allow(unused_imports)]
            use super::*;
            #[test]
            fn purge_deletes_whole_old_streams_of_one_category() {
                $crate::block_on($crate::conformance::purge_deletes_whole_old_streams_of_one_category(|| $factory()));
            }
            #[test]
            fn purge_never_reuses_positions() {
                $crate::block_on($crate::conformance::purge_never_reuses_positions(|| $factory()));
            }
            #[test]
            fn concurrent_purges_delete_each_stream_once() {
                $crate::block_on($crate::conformance::concurrent_purges_delete_each_stream_once(|| $factory()));
            }
        }
    };
}

// ---------------------------------------------------------------------------
// Live subscriptions (`EventStore::subscribe`), through each store's wake-ups.
// ---------------------------------------------------------------------------

/// Expands to one `#[test]` per live-subscription conformance test, in a
/// module named `subscription_conformance`, each calling `$factory().await`
/// for a fresh store, which must also implement [`eslab_core::WakeUps`].
#[macro_export]
macro_rules! subscription_conformance_tests {
    ($factory:path) => {
        $crate::subscription_conformance_tests!(@tests $factory;
            subscription_sees_every_event_once_in_order,
            subscription_from_a_checkpoint_sees_only_later_events,
            subscription_sees_concurrent_appends_exactly_once,
            category_subscription_sees_only_its_category,
            subscription_without_wake_ups_polls,
            subscription_is_woken_by_the_store
        );
    };
    (@tests $factory:path; $($name:ident),* $(,)?) => {
        #[allow(missing_docs)]
        mod subscription_conformance {
            #[allow(unused_imports)]
            use super::*;
            $(
                #[test]
                fn $name() {
                    $crate::block_on($crate::conformance::$name(|| $factory()));
                }
            )*
        }
    };
}

/// A cutoff just after every event of `feed`, once the clock has passed it:
/// events appended afterwards are recorded at or after it.
async fn cutoff_after(feed: &[RecordedEvent]) -> time::OffsetDateTime {
    let newest = feed.iter().map(|e| e.recorded_at).max().expect("a non-empty feed");
    let cutoff = newest + time_ms(5);
    // SQLite compares timestamps to the millisecond: leave a clear gap.
    tokio::time::sleep(Duration::from_millis(30)).await;
    cutoff
}

/// Purging deletes, oldest first and at most `limit` per call, the whole
/// streams of one category whose newest event is older than the cutoff, with
/// their snapshots; younger streams, streams with any young event and every
/// other category are untouched; what remains of the feed is unchanged (order,
/// positions, checkpoints) and a reader resumes from an earlier checkpoint;
/// a purged stream starts again at version 1, after every earlier position.
pub async fn purge_deletes_whole_old_streams_of_one_category<S, F>(new: impl Fn() -> F)
where
    S: TestStore + eslab_core::StreamRetention + eslab_core::SnapshotStore,
    F: Future<Output = S>,
{
    use eslab_core::Snapshot;
    let store = new().await;
    let marker = |id: &str| StreamId::new("marker", id).expect("id");
    let other = |id: &str| StreamId::new("other", id).expect("id");
    let (m1, m2, m3, m4, m5) = (marker("1"), marker("2"), marker("3"), marker("4"), marker("5"));
    let (o1, o2, o3) = (other("1"), other("2"), other("3"));
    // Old: m1 (two events), o1, m2, m3 (which gets a young event later), and
    // m4 with o2 in one atomic append (a key stored with a command's events).
    store.append(&m1, ExpectedVersion::NoStream, events(0..2)).await.expect("m1");
    store.append(&o1, ExpectedVersion::NoStream, events(2..3)).await.expect("o1");
    store.append(&m2, ExpectedVersion::NoStream, events(3..4)).await.expect("m2");
    store.append(&m3, ExpectedVersion::NoStream, events(4..5)).await.expect("m3");
    store
        .append_streams(vec![
            StreamAppend::new(o2.clone(), ExpectedVersion::NoStream, events(5..6)),
            StreamAppend::new(m4.clone(), ExpectedVersion::NoStream, events(6..7)),
        ])
        .await
        .expect("o2 and m4");
    let snapshot = |s: &StreamId| Snapshot {
        stream_id: s.clone(),
        version: Version::FIRST,
        state_schema_version: 1,
        state: json!({ "kept": s.as_str() }),
        taken_at: time::OffsetDateTime::now_utc(),
    };
    for s in [&m1, &m2, &o1] {
        store.save_snapshot(snapshot(s)).await.expect("snapshot");
    }
    let cutoff = cutoff_after(&feed_all(&store, &FeedFilter::All).await).await;
    // Young.
    store.append(&m3, ExpectedVersion::Exact(Version::FIRST), events(7..8)).await.expect("m3 again");
    store.append(&m5, ExpectedVersion::NoStream, events(8..9)).await.expect("m5");
    store.append(&o3, ExpectedVersion::NoStream, events(9..10)).await.expect("o3");
    let before = feed_all(&store, &FeedFilter::All).await;
    assert_eq!(before.len(), 10);
    assert!(before[7..].iter().all(|e| e.recorded_at >= cutoff), "the young events are recorded after the cutoff");
    let resume_from = before[2].checkpoint();
    let other_before = feed_all(&store, &FeedFilter::category("other").expect("category")).await;

    assert_eq!(store.purge_category_before("marker", cutoff, 1).await.expect("purge"), 1, "at most `limit`");
    assert!(all(&store, &m1).await.is_empty(), "the oldest stream goes first");
    assert_eq!(all(&store, &m2).await.len(), 1);
    assert_eq!(store.purge_category_before("marker", cutoff, 100).await.expect("purge"), 2, "m2 and m4");
    assert_eq!(store.purge_category_before("marker", cutoff, 100).await.expect("purge"), 0, "nothing old is left");

    let purged = [&m1, &m2, &m4];
    let expected: Vec<RecordedEvent> = before.iter().filter(|e| !purged.contains(&&e.stream_id)).cloned().collect();
    assert_eq!(feed_all(&store, &FeedFilter::All).await, expected, "the rest of the feed is unchanged");
    assert_eq!(feed_all(&store, &FeedFilter::category("other").expect("category")).await, other_before);
    let resumed: Vec<RecordedEvent> =
        store.feed(&FeedFilter::All, resume_from).try_collect().await.expect("resume the feed");
    let expected_after: Vec<RecordedEvent> =
        expected.iter().filter(|e| e.checkpoint() > resume_from).cloned().collect();
    assert_eq!(resumed, expected_after, "a reader resumes from a checkpoint taken before the purge");
    for s in purged {
        assert_eq!(store.stream_version(s).await.expect("version"), Version::NONE, "{s} is gone");
    }
    assert_eq!(versions(&all(&store, &m3).await), [1, 2], "a stream with a young event is kept whole");
    assert_eq!(ns(&all(&store, &m5).await), [8]);
    assert!(store.load_snapshot(&m1).await.expect("load").is_none(), "a purged stream's snapshot goes too");
    assert!(store.load_snapshot(&m2).await.expect("load").is_none());
    assert!(store.load_snapshot(&o1).await.expect("load").is_some(), "other categories keep theirs");

    // A purged stream starts again, after every earlier position.
    let newest = before.last().expect("events").checkpoint();
    let again = store.append(&m1, ExpectedVersion::NoStream, events(10..11)).await.expect("m1 again");
    assert_eq!(again.version, Version::FIRST);
    assert!(again.events[0].checkpoint() > newest, "positions are never reused");
    let tail: Vec<RecordedEvent> = store.feed(&FeedFilter::All, newest).try_collect().await.expect("feed");
    assert_eq!(ns(&tail), [10]);

    assert!(matches!(store.purge_category_before("Not A Category", cutoff, 1).await, Err(Error::InvalidStreamId(_))));
}

/// A purge that deletes (or keeps for later) the stream holding the store's
/// newest event never lets a later append take that event's position.
pub async fn purge_never_reuses_positions<S, F>(new: impl Fn() -> F)
where
    S: TestStore + eslab_core::StreamRetention,
    F: Future<Output = S>,
{
    let store = new().await;
    let o1 = StreamId::new("other", "1").expect("id");
    let m1 = StreamId::new("marker", "1").expect("id");
    store.append(&o1, ExpectedVersion::NoStream, events(0..1)).await.expect("o1");
    let newest = store.append(&m1, ExpectedVersion::NoStream, events(1..2)).await.expect("m1");
    let newest = newest.events[0].checkpoint();
    let cutoff = cutoff_after(&feed_all(&store, &FeedFilter::All).await).await;
    let first = store.purge_category_before("marker", cutoff, 10).await.expect("purge");
    let o2 = StreamId::new("other", "2").expect("id");
    let later = store.append(&o2, ExpectedVersion::NoStream, events(2..3)).await.expect("o2");
    assert!(later.events[0].checkpoint() > newest, "the purged event's position is not handed out again");
    let second = store.purge_category_before("marker", cutoff, 10).await.expect("purge");
    assert_eq!(first + second, 1, "the stream goes once, now or once something else was appended");
    assert!(all(&store, &m1).await.is_empty());
    assert_eq!(ns(&feed_all(&store, &FeedFilter::All).await), [0, 2]);
}

/// Purges running at once delete each old stream once: their counts add up
/// to the number of streams, and none is left.
pub async fn concurrent_purges_delete_each_stream_once<S, F>(new: impl Fn() -> F)
where
    S: TestStore + eslab_core::StreamRetention,
    F: Future<Output = S>,
{
    let store = new().await;
    let streams: Vec<StreamId> = (0..40).map(|i| StreamId::new("marker", &i.to_string()).expect("id")).collect();
    for (n, s) in (0_u64..).zip(&streams) {
        store.append(s, ExpectedVersion::NoStream, events(n..n + 1)).await.expect("append");
    }
    let keep = StreamId::new("other", "1").expect("id");
    store.append(&keep, ExpectedVersion::NoStream, events(100..101)).await.expect("append");
    let cutoff = cutoff_after(&feed_all(&store, &FeedFilter::All).await).await;
    let purgers: Vec<_> = (0..4)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut total = 0;
                loop {
                    let n = store.purge_category_before("marker", cutoff, 7).await.expect("purge");
                    if n == 0 {
                        return total;
                    }
                    total += n;
                }
            })
        })
        .collect();
    let mut total = 0;
    for purger in purgers {
        total += purger.await.expect("purger");
    }
    assert_eq!(total, 40, "each stream counted once");
    assert!(feed_all(&store, &FeedFilter::category("marker").expect("category")).await.is_empty());
    assert_eq!(ns(&feed_all(&store, &FeedFilter::All).await), [100]);
}

/// A live subscription, boxed so that it can move between tasks.
type Live = std::pin::Pin<Box<dyn futures_util::Stream<Item = eslab_core::Result<RecordedEvent>> + Send>>;

/// How long a subscription may take to deliver what was committed before the
/// test calls it stuck (a bound against hangs, not a performance check).
const LIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// The next `n` events of `live` (an error item fails the test).
async fn take_live(live: &mut Live, n: usize) -> Vec<RecordedEvent> {
    let mut seen = Vec::with_capacity(n);
    while seen.len() < n {
        let next = tokio::time::timeout(LIVE_TIMEOUT, futures_util::StreamExt::next(live)).await;
        let Ok(next) = next else {
            panic!("the subscription delivered {} of {n} committed events, then nothing", seen.len())
        };
        seen.push(next.expect("a subscription never ends").expect("no error from a healthy store"));
    }
    seen
}

/// Polls `live` until it waits for new events (its wake-ups armed, its
/// catch-up done): nothing may come out of a subscription to nothing.
async fn until_waiting(live: &mut Live) {
    let early = tokio::time::timeout(Duration::from_millis(200), futures_util::StreamExt::next(live)).await;
    assert!(early.is_err(), "a subscription after the last event delivered {early:?}");
}

/// Appends one marker event to `s` and checks that it is the next thing
/// `live` delivers: nothing was delivered twice or late in between.
async fn next_is_marker<S: EventAppender>(store: &S, live: &mut Live, s: &StreamId) {
    let marker = event(u64::MAX);
    let id = marker.event_id;
    store.append(s, ExpectedVersion::Any, vec![marker]).await.expect("append the marker");
    let next = take_live(live, 1).await;
    assert_eq!(next[0].event_id, id, "the marker comes next, nothing repeated before it");
}

fn ids(events: &[RecordedEvent]) -> Vec<Uuid> {
    events.iter().map(|e| e.event_id).collect()
}

fn checkpoints(events: &[RecordedEvent]) -> Vec<Checkpoint> {
    events.iter().map(RecordedEvent::checkpoint).collect()
}

/// A subscriber started before any append (subscribed, caught up, waiting)
/// sees every event once, in feed order, with the feed's checkpoints.
pub async fn subscription_sees_every_event_once_in_order<S, F>(new: impl Fn() -> F)
where
    S: TestStore + eslab_core::WakeUps,
    F: Future<Output = S>,
{
    let store = EventStore::new(new().await);
    let mut live: Live = Box::pin(store.subscribe(FeedFilter::All, Checkpoint::START));
    until_waiting(&mut live).await;
    let reader = tokio::spawn(async move {
        let seen = take_live(&mut live, 30).await;
        (seen, live)
    });
    for i in 0..10_u64 {
        let s = stream(&format!("sub-{}", i % 3));
        store.append(&s, ExpectedVersion::Any, events(3 * i..3 * i + 3)).await.expect("append");
    }
    let (seen, mut live) = reader.await.expect("reader");
    let feed = feed_all(&store, &FeedFilter::All).await;
    assert_eq!(ns(&seen), (0..30).collect::<Vec<_>>(), "in append order");
    assert_eq!(ids(&seen), ids(&feed), "the feed's events");
    assert_eq!(checkpoints(&seen), checkpoints(&feed), "with the feed's checkpoints");
    next_is_marker(&store, &mut live, &stream("sub-0")).await;
}

/// A subscriber from the checkpoint of the 5th of 10 events sees the 5 after
/// it, then the later appends, upcast like every read of an `EventStore`.
pub async fn subscription_from_a_checkpoint_sees_only_later_events<S, F>(new: impl Fn() -> F)
where
    S: TestStore + eslab_core::WakeUps,
    F: Future<Output = S>,
{
    let backend = new().await;
    let upcasters = Upcasters::new()
        .register("Counted", 1, 2, |mut p| {
            p["v2"] = json!(true);
            Ok(p)
        })
        .expect("upcaster");
    let store = EventStore::new(backend).with_upcasters(upcasters);
    let s = stream("later");
    store.append(&s, ExpectedVersion::Any, events(0..10)).await.expect("append");
    let feed = feed_all(&store, &FeedFilter::All).await;
    let mut live: Live = Box::pin(store.subscribe(FeedFilter::All, feed[4].checkpoint()));
    let caught_up = take_live(&mut live, 5).await;
    assert_eq!(ns(&caught_up), [5, 6, 7, 8, 9]);
    until_waiting(&mut live).await;
    store.append(&s, ExpectedVersion::Any, events(10..15)).await.expect("append more");
    let later = take_live(&mut live, 5).await;
    assert_eq!(ns(&later), [10, 11, 12, 13, 14]);
    assert!(caught_up.iter().chain(&later).all(|e| e.schema_version == 2 && e.payload["v2"] == true), "upcast");
    next_is_marker(&store, &mut live, &s).await;
}

/// While 8 tasks append 50 events each, one append at a time, a subscriber
/// sees exactly the committed events, each once, in feed order.
pub async fn subscription_sees_concurrent_appends_exactly_once<S, F>(new: impl Fn() -> F)
where
    S: TestStore + eslab_core::WakeUps,
    F: Future<Output = S>,
{
    const WRITERS: u64 = 8;
    const APPENDS: u64 = 50;
    let total = usize::try_from(WRITERS * APPENDS).expect("few events");
    let store = EventStore::new(new().await);
    let mut live: Live = Box::pin(store.subscribe(FeedFilter::All, Checkpoint::START));
    until_waiting(&mut live).await;
    let reader = tokio::spawn(async move {
        let seen = take_live(&mut live, total).await;
        (seen, live)
    });
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut ids = Vec::new();
                for i in 0..APPENDS {
                    let s = stream(&format!("live-{}", (w + i) % 5));
                    let r = store.append(&s, ExpectedVersion::Any, events(i..i + 1)).await.expect("append");
                    ids.extend(r.events.into_iter().map(|e| e.event_id));
                }
                ids
            })
        })
        .collect();
    let mut committed = HashSet::new();
    for w in writers {
        committed.extend(w.await.expect("writer"));
    }
    let (seen, mut live) = reader.await.expect("reader");
    let unique: HashSet<_> = seen.iter().map(|e| e.event_id).collect();
    assert_eq!(unique.len(), seen.len(), "no event delivered twice");
    assert_eq!(unique, committed, "every committed event delivered");
    let feed = feed_all(&store, &FeedFilter::All).await;
    assert_eq!(ids(&seen), ids(&feed), "in feed order");
    next_is_marker(&store, &mut live, &stream("live-0")).await;
}

/// A category subscription sees its category's events only, in feed order.
pub async fn category_subscription_sees_only_its_category<S, F>(new: impl Fn() -> F)
where
    S: TestStore + eslab_core::WakeUps,
    F: Future<Output = S>,
{
    let store = EventStore::new(new().await);
    let wanted = FeedFilter::category("wanted").expect("category");
    let mut live: Live = Box::pin(store.subscribe(wanted.clone(), Checkpoint::START));
    until_waiting(&mut live).await;
    for i in 0..20_u64 {
        let (w, o) = (StreamId::new("wanted", &format!("{}", i % 2)), StreamId::new("other", &format!("{}", i % 2)));
        store.append(&o.expect("id"), ExpectedVersion::Any, events(100 + i..101 + i)).await.expect("other");
        store.append(&w.expect("id"), ExpectedVersion::Any, events(i..i + 1)).await.expect("wanted");
    }
    let seen = take_live(&mut live, 20).await;
    assert!(seen.iter().all(|e| e.stream_id.category() == "wanted"), "only its category");
    assert_eq!(ns(&seen), (0..20).collect::<Vec<_>>());
    assert_eq!(ids(&seen), ids(&feed_all(&store, &wanted).await));
    // An append to another category is skipped; the next one of its own comes next.
    let other = StreamId::new("other", "marker").expect("id");
    store.append(&other, ExpectedVersion::Any, events(1000..1001)).await.expect("other");
    next_is_marker(&store, &mut live, &StreamId::new("wanted", "marker").expect("id")).await;
}

/// A subscriber whose wake-ups never fire still gets every event, by polling.
pub async fn subscription_without_wake_ups_polls<S, F>(new: impl Fn() -> F)
where
    S: TestStore + eslab_core::WakeUps,
    F: Future<Output = S>,
{
    let store = EventStore::new(new().await);
    let options = eslab_core::SubscribeOptions::default().poll(Duration::from_millis(5), Duration::from_millis(50));
    let mut live: Live =
        Box::pin(store.subscribe_woken_by(eslab_core::no_wake_ups(), FeedFilter::All, Checkpoint::START, options));
    until_waiting(&mut live).await;
    let s = stream("polled");
    for i in 0..5_u64 {
        store.append(&s, ExpectedVersion::Any, events(2 * i..2 * i + 2)).await.expect("append");
    }
    let seen = take_live(&mut live, 10).await;
    assert_eq!(ns(&seen), (0..10).collect::<Vec<_>>());
    next_is_marker(&store, &mut live, &s).await;
}

/// With a polling interval of an hour, only the store's wake-ups can deliver
/// an append: they do, for each of two appends.
pub async fn subscription_is_woken_by_the_store<S, F>(new: impl Fn() -> F)
where
    S: TestStore + eslab_core::WakeUps,
    F: Future<Output = S>,
{
    let store = EventStore::new(new().await);
    let hour = Duration::from_secs(3600);
    let options = eslab_core::SubscribeOptions::default().poll(hour, hour);
    // Armed before the subscription starts (on PostgreSQL: once LISTEN is on).
    let wake_ups = eslab_core::WakeUps::wake_ups(&store).await;
    let mut live: Live = Box::pin(store.subscribe_woken_by(wake_ups, FeedFilter::All, Checkpoint::START, options));
    until_waiting(&mut live).await;
    let s = stream("woken");
    store.append(&s, ExpectedVersion::Any, events(0..3)).await.expect("append");
    assert_eq!(ns(&take_live(&mut live, 3).await), [0, 1, 2]);
    next_is_marker(&store, &mut live, &s).await;
}
