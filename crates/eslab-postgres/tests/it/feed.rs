//! The gap-safe feed: a transaction that commits late is never skipped.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use eslab_core::{Checkpoint, CheckpointStore, EventAppender, EventReader, ExpectedVersion, FeedFilter, StreamAppend};
use eslab_postgres::AppendStrategy;
use eslab_testing::pg::SchemaStore;
use sqlx::Row;
use uuid::Uuid;

use crate::helpers::{event, stream};

/// Follows the feed from `at` until it has `n` more events (or 20 s pass).
async fn follow_until(store: &SchemaStore, at: &mut Checkpoint, n: usize) -> Vec<Uuid> {
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while got.len() < n && tokio::time::Instant::now() < deadline {
        let page = store.read_feed(&FeedFilter::All, *at, 100).await.unwrap();
        if let Some(last) = page.last() {
            *at = last.checkpoint();
        }
        got.extend(page.into_iter().map(|e| e.event_id));
    }
    got
}

#[tokio::test]
async fn an_open_transaction_holds_back_later_commits() {
    let store = SchemaStore::with_options(|o| o.feed_settle(Duration::from_millis(200))).await;
    let (sa, sb) = (stream("a"), stream("b"));

    let mut tx_a = store.pool().begin().await.unwrap();
    let a = store.append_in_tx(&mut tx_a, vec![StreamAppend::new(sa, ExpectedVersion::Any, vec![event(1)])]).await;
    let a_id = a.unwrap()[0].events[0].event_id;
    let b = store.append(&sb, ExpectedVersion::Any, vec![event(2)]).await.unwrap();
    let b_id = b.events[0].event_id;
    assert!(b.events[0].transaction > 0);

    // A is open: B is committed but sorts after A, so neither may be handed out.
    for filter in [FeedFilter::All, FeedFilter::category("test").unwrap()] {
        let page = store.read_feed(&filter, Checkpoint::START, 100).await.unwrap();
        assert!(page.is_empty(), "the reader passed an open transaction: {page:?}");
    }

    tx_a.commit().await.unwrap();
    let mut at = Checkpoint::START;
    let got = follow_until(&store, &mut at, 2).await;
    assert_eq!(got, [a_id, b_id], "A then B, each once");
    let rest = store.read_feed(&FeedFilter::All, at, 100).await.unwrap();
    assert!(rest.is_empty(), "nothing delivered twice: {rest:?}");
}

/// Documents the problem the (transaction, position) order solves: a reader
/// ordered by `global_position` alone skips a transaction that commits late.
#[tokio::test]
async fn a_naive_position_reader_skips_a_late_commit() {
    let store = SchemaStore::with_options(|o| o.feed_settle(Duration::from_millis(200))).await;
    let mut tx_a = store.pool().begin().await.unwrap();
    let a = store
        .append_in_tx(&mut tx_a, vec![StreamAppend::new(stream("a"), ExpectedVersion::Any, vec![event(1)])])
        .await
        .unwrap();
    let b = store.append(&stream("b"), ExpectedVersion::Any, vec![event(2)]).await.unwrap();
    let (a_pos, b_pos) = (a[0].events[0].position.get(), b.events[0].position.get());
    assert!(a_pos < b_pos, "A took the lower position");

    let naive = |after: i64| {
        let pool = store.pool().clone();
        async move {
            sqlx::query("SELECT global_position FROM events WHERE global_position > $1 ORDER BY global_position")
                .bind(after)
                .fetch_all(&pool)
                .await
                .unwrap()
                .iter()
                .map(|r| r.get::<i64, _>(0))
                .collect::<Vec<_>>()
        }
    };
    let first = naive(0).await;
    assert_eq!(first, [i64::try_from(b_pos).unwrap()], "the naive reader sees B while A is open");
    let naive_checkpoint = *first.last().unwrap();
    tx_a.commit().await.unwrap();
    assert!(naive(naive_checkpoint).await.is_empty(), "...and never sees A: A is skipped");

    let mut at = Checkpoint::START;
    let got = follow_until(&store, &mut at, 2).await;
    assert_eq!(got, [a[0].events[0].event_id, b.events[0].event_id], "the gap-safe feed delivers both");
}

/// Transaction ids sort as numbers, not as text ('99' < '100'), in the feed and
/// in resumption; rows with explicit small xids stand in for a digit rollover.
#[tokio::test]
async fn feed_orders_transaction_ids_numerically() {
    let store = SchemaStore::new().await;
    for (xid, n) in [(100_i64, 1_i64), (99, 2), (1000, 3), (9, 4)] {
        sqlx::query(
            "INSERT INTO events (transaction_id, stream_id, category, stream_version, event_id, event_type, \
             schema_version, payload, metadata) \
             VALUES ($1::text::xid8, 'test-x' || $2, 'test', 1, gen_random_uuid(), 'Counted', 1, \
                     jsonb_build_object('n', $2), $3)",
        )
        .bind(xid.to_string())
        .bind(n)
        .bind(serde_json::to_value(eslab_core::Metadata::now()).unwrap())
        .execute(store.pool())
        .await
        .unwrap();
    }
    let feed = store.read_feed(&FeedFilter::All, Checkpoint::START, 100).await.unwrap();
    let order: Vec<(u64, u64)> = feed.iter().map(|e| (e.transaction, e.payload["n"].as_u64().unwrap())).collect();
    assert_eq!(order, [(9, 4), (99, 2), (100, 1), (1000, 3)]);
    let rest = store.read_feed(&FeedFilter::All, feed[1].checkpoint(), 100).await.unwrap();
    assert_eq!(rest.iter().map(|e| e.transaction).collect::<Vec<_>>(), [100, 1000]);
    let by_category = store.read_feed(&FeedFilter::category("test").unwrap(), feed[0].checkpoint(), 2).await.unwrap();
    assert_eq!(by_category.iter().map(|e| e.transaction).collect::<Vec<_>>(), [99, 100]);
}

/// xorshift64*: enough randomness for delays, no extra dependency.
struct Rng(u64);
impl Rng {
    fn next(&mut self, below: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % below
    }
}

#[tokio::test]
async fn concurrent_writers_with_late_commits_and_rollbacks_deliver_each_event_once() {
    concurrent_writers(AppendStrategy::VersionRow).await;
}

#[tokio::test]
async fn concurrent_writers_deliver_each_event_once_with_the_unique_index_strategy() {
    concurrent_writers(AppendStrategy::UniqueIndex).await;
}

async fn concurrent_writers(strategy: AppendStrategy) {
    const WRITERS: u64 = 8;
    const TXS: u64 = 30;
    let store = SchemaStore::with_options(|o| o.max_connections(12).append_strategy(strategy)).await;
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (w + 1).wrapping_mul(0x1234_5678_9ABC_DEF1));
                let mut committed = Vec::new();
                for i in 0..TXS {
                    let mut tx = store.pool().begin().await.unwrap();
                    let n = 1 + rng.next(3);
                    let events = (0..n).map(|k| event(w * 1000 + i * 10 + k)).collect();
                    let s = stream(&format!("w{w}-{}", i % 3));
                    let r = store.append_in_tx(&mut tx, vec![StreamAppend::new(s, ExpectedVersion::Any, events)]);
                    let ids: Vec<Uuid> = r.await.unwrap()[0].events.iter().map(|e| e.event_id).collect();
                    tokio::time::sleep(Duration::from_millis(rng.next(15))).await;
                    if rng.next(5) == 0 {
                        tx.rollback().await.unwrap();
                    } else {
                        tx.commit().await.unwrap();
                        committed.extend(ids);
                    }
                }
                committed
            })
        })
        .collect();

    let done = Arc::new(AtomicBool::new(false));
    let reader = {
        let (store, done) = (store.clone(), done.clone());
        tokio::spawn(async move {
            let mut seen = Vec::new();
            let mut pages = 0_u64;
            let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
            loop {
                // Resume from the stored checkpoint, as a restarted runner would.
                let at = store.load_checkpoint("follower").await.unwrap();
                let finished = done.load(Ordering::Acquire);
                let page = store.read_feed(&FeedFilter::All, at, 7).await.unwrap();
                pages += 1;
                if let Some(last) = page.last() {
                    assert!(last.checkpoint() > at);
                    store.save_checkpoint("follower", last.checkpoint()).await.unwrap();
                } else if finished {
                    return (seen, pages);
                } else {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                seen.extend(page.into_iter().map(|e| e.event_id));
                assert!(tokio::time::Instant::now() < deadline, "reader did not finish in time");
            }
        })
    };
    let mut committed = Vec::new();
    for w in writers {
        committed.extend(w.await.unwrap());
    }
    done.store(true, Ordering::Release);
    let (seen, pages) = reader.await.unwrap();

    let unique: HashSet<_> = seen.iter().copied().collect();
    assert_eq!(unique.len(), seen.len(), "no event delivered twice");
    let stored: Vec<Uuid> = sqlx::query_scalar("SELECT event_id FROM events ORDER BY transaction_id, global_position")
        .fetch_all(store.pool())
        .await
        .unwrap();
    if seen != stored {
        let seen_set: HashSet<_> = seen.iter().collect();
        let missing: Vec<_> = stored.iter().filter(|id| !seen_set.contains(id)).collect();
        let rows = sqlx::query("SELECT event_id, transaction_id::text AS tx, global_position FROM events ORDER BY transaction_id, global_position")
            .fetch_all(store.pool()).await.unwrap();
        for r in rows {
            let id: Uuid = r.get(0);
            let tx: String = r.get(1);
            let pos: i64 = r.get(2);
            let at = seen.iter().position(|s| *s == id);
            eprintln!("{tx} {pos} seen_at={at:?} missing={}", missing.contains(&&id));
        }
        panic!(
            "the reader did not get exactly the stored events in feed order: {} seen, {} stored",
            seen.len(),
            stored.len()
        );
    }
    let committed: HashSet<_> = committed.into_iter().collect();
    assert_eq!(unique, committed, "every committed event, and no rolled-back one");
    assert!(pages > 10, "the reader followed while writers wrote ({pages} pages)");
}

/// The head is the event with the greatest (transaction, position) as
/// numbers: transaction 1000 is after 999 (as text it would sort before).
#[tokio::test]
async fn the_head_orders_transactions_as_numbers() {
    let store = SchemaStore::new().await;
    let insert = "INSERT INTO events (transaction_id, stream_id, category, stream_version, event_id, event_type, \
         schema_version, payload, metadata) VALUES ($1::text::xid8, $2, 'acct', 1, $3, 'Opened', 1, '{}', '{}')";
    for (xid, stream) in [("999", "acct-a"), ("1000", "acct-b")] {
        sqlx::query(insert).bind(xid).bind(stream).bind(Uuid::now_v7()).execute(store.pool()).await.unwrap();
    }
    for filter in [FeedFilter::All, FeedFilter::Category("acct".into())] {
        let head = store.feed_head(&filter).await.unwrap().unwrap();
        assert_eq!(head.checkpoint.transaction, 1000, "{filter:?}");
    }
}
