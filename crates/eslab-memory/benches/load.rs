//! Load latency on the memory store, for streams of 10 to 10 000 events:
//! reading the raw rows (baseline, no decoding), a full replay, a load from a
//! snapshot taken every 100 events (right at the snapshot, and 99 events past
//! it, the policy's worst case), and a cache hit. Read the results as ratios.
//! Then the command path on a 10 000-event stream: one `execute` with a full
//! replay, from a snapshot (every 100), and on a cached stream, against a raw
//! one-event append.
//!
//! `cargo bench -p eslab-memory --bench load`
#![allow(clippy::unwrap_used, clippy::expect_used)] // a bench aborts on setup failure

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, SamplingMode, criterion_main};
use eslab_core::{
    Aggregate, Codec, EventAppender, EventReader, EventReaderExt, EventStore, ExpectedVersion, JsonCodec, Metadata,
    Repository, SnapshotPolicy, StreamId, Version,
};
use eslab_memory::MemoryStore;
use eslab_testing::repository::{Tally, TallyCommand, TallyEvent};
use futures_util::TryStreamExt;

const SIZES: [u64; 4] = [10, 100, 1_000, 10_000];

/// Appends `count` `Added` events to `id`'s stream, in batches.
async fn seed(store: &MemoryStore, id: &str, count: u64) {
    let stream: StreamId = Tally::stream_id(id).unwrap();
    let mut at = store.stream_version(&stream).await.unwrap();
    let mut left = count;
    while left > 0 {
        let batch = left.min(500);
        let events = (0..batch)
            .map(|i| {
                JsonCodec.encode(&TallyEvent::Added { n: i64::try_from(i).unwrap() - 7 }, Metadata::now()).unwrap()
            })
            .collect();
        at = store.append(&stream, ExpectedVersion::Exact(at), events).await.unwrap().version;
        left -= batch;
    }
}

fn load(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let store = MemoryStore::new();
    let plain: Repository<Tally, _> = Repository::new(EventStore::new(store.clone()));
    let snapshots = plain.clone().with_snapshots(store.clone(), SnapshotPolicy::EveryNEvents(100));
    let cached = plain.clone().with_cache(1_000);

    rt.block_on(async {
        for n in SIZES {
            seed(&store, &format!("full{n}"), n).await;
            // What `EveryNEvents(100)` leaves: a snapshot at the last multiple of 100.
            let at = n / 100 * 100;
            seed(&store, &format!("snap{n}"), at).await;
            if at > 0 {
                snapshots.snapshot(&format!("snap{n}")).await.unwrap();
            }
            seed(&store, &format!("snap{n}"), n - at).await;
            // The policy's worst case: 99 events past the snapshot.
            let at = n.saturating_sub(99);
            seed(&store, &format!("tail{n}"), at).await;
            if at > 0 && n >= 100 {
                snapshots.snapshot(&format!("tail{n}")).await.unwrap();
            }
            seed(&store, &format!("tail{n}"), n - at).await;
            cached.load(&format!("full{n}")).await.unwrap();
        }
    });

    let mut group = c.benchmark_group("load");
    group.sample_size(10).warm_up_time(Duration::from_millis(300)).measurement_time(Duration::from_secs(2));
    for n in SIZES {
        let full = format!("full{n}");
        let stream: StreamId = Tally::stream_id(&full).unwrap();
        // The same paged read a load does, without decoding or evolving.
        group.bench_with_input(BenchmarkId::new("raw_rows", n), &stream, |b, s| {
            b.iter(|| {
                rt.block_on(store.stream_events(s, Version::FIRST).try_fold(0u64, |n, _| async move { Ok(n + 1) }))
                    .unwrap()
            });
        });
        group.bench_with_input(BenchmarkId::new("replay", n), &full, |b, id| {
            b.iter(|| black_box(rt.block_on(plain.load(id)).unwrap().version));
        });
        group.bench_with_input(BenchmarkId::new("snapshot100", n), &format!("snap{n}"), |b, id| {
            b.iter(|| black_box(rt.block_on(snapshots.load(id)).unwrap().version));
        });
        group.bench_with_input(BenchmarkId::new("snapshot100_tail99", n), &format!("tail{n}"), |b, id| {
            b.iter(|| black_box(rt.block_on(snapshots.load(id)).unwrap().version));
        });
        group.bench_with_input(BenchmarkId::new("cache_hit", n), &full, |b, id| {
            b.iter(|| black_box(rt.block_on(cached.load(id)).unwrap().version));
        });
    }
    group.finish();
}

/// One command on a stream of 10 000 events. Each measurement gets a fresh
/// store and stream (the stream grows by one event per iteration).
fn execute(c: &mut Criterion) {
    const LEN: u64 = 10_000;
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let mut group = c.benchmark_group("execute_on_10000");
    group
        .sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(2));
    for variant in ["raw_append", "replay", "snapshot100", "cache_hit"] {
        group.bench_function(variant, |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let store = MemoryStore::new();
                    seed(&store, "e", LEN).await;
                    let plain: Repository<Tally, _> = Repository::new(EventStore::new(store.clone()));
                    let repo = match variant {
                        "snapshot100" => {
                            let repo = plain.with_snapshots(store.clone(), SnapshotPolicy::EveryNEvents(100));
                            repo.snapshot("e").await.unwrap();
                            repo
                        }
                        "cache_hit" => {
                            let repo = plain.with_cache(1_000);
                            repo.load("e").await.unwrap();
                            repo
                        }
                        _ => plain,
                    };
                    let stream = Tally::stream_id("e").unwrap();
                    let start = Instant::now();
                    for i in 0..iters {
                        if variant == "raw_append" {
                            let n = i64::try_from(i).unwrap();
                            let event = JsonCodec.encode(&TallyEvent::Added { n }, Metadata::now()).unwrap();
                            black_box(store.append(&stream, ExpectedVersion::Any, vec![event]).await.unwrap());
                        } else {
                            let done = repo.execute("e", &TallyCommand::Add(1), Metadata::now()).await.unwrap();
                            black_box(done.version);
                        }
                    }
                    start.elapsed()
                })
            });
        });
    }
    group.finish();
}

// criterion's macros generate undocumented items.
#[allow(missing_docs)]
mod entry {
    criterion::criterion_group!(benches, super::load, super::execute);
}
criterion_main!(entry::benches);
