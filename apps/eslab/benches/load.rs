//! Load latency on every store, for streams of 10 to 10 000 events: the raw
//! rows read page by page (baseline: no decoding, no evolve), a full replay,
//! a load from a snapshot taken every 100 events, the same 99 events past the
//! snapshot (the policy's worst case), and a cache hit. Each store's group
//! reads as ratios to its own raw baseline.
//!
//! `cargo bench -p eslab --bench load` (PostgreSQL at `DATABASE_URL`, default
//! the local cluster; each run uses a fresh schema and drops it).
#![allow(clippy::unwrap_used, clippy::expect_used)] // a bench aborts on setup failure

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, criterion_main};
use eslab_core::{
    Aggregate, Codec, EventReaderExt, EventStorage, EventStore, ExpectedVersion, JsonCodec, Metadata, Repository,
    SnapshotPolicy, SnapshotStore, StreamId, Version,
};
use eslab_testing::repository::{Tally, TallyEvent};
use futures_util::TryStreamExt;

const SIZES: [u64; 4] = [10, 100, 1_000, 10_000];

/// Appends `count` events to `id`'s stream, in batches of 500.
async fn seed<S: EventStorage>(store: &S, id: &str, count: u64) {
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

fn bench_store<S>(c: &mut Criterion, rt: &tokio::runtime::Runtime, name: &str, store: S)
where
    S: EventStorage + SnapshotStore + Clone + 'static,
{
    let plain: Repository<Tally, _> = Repository::new(EventStore::new(store.clone()));
    let snapshots = plain.clone().with_snapshots(store.clone(), SnapshotPolicy::EveryNEvents(100));
    let cached = plain.clone().with_cache(1_000);
    rt.block_on(async {
        for n in SIZES {
            seed(&store, &format!("full{n}"), n).await;
            let at = n / 100 * 100;
            seed(&store, &format!("snap{n}"), at).await;
            if at > 0 {
                snapshots.snapshot(&format!("snap{n}")).await.unwrap();
            }
            seed(&store, &format!("snap{n}"), n - at).await;
            let at = n.saturating_sub(99);
            seed(&store, &format!("tail{n}"), at).await;
            if at > 0 && n >= 100 {
                snapshots.snapshot(&format!("tail{n}")).await.unwrap();
            }
            seed(&store, &format!("tail{n}"), n - at).await;
            cached.load(&format!("full{n}")).await.unwrap();
        }
    });
    let mut group = c.benchmark_group(format!("load/{name}"));
    group.sample_size(10).warm_up_time(Duration::from_millis(300)).measurement_time(Duration::from_secs(2));
    for n in SIZES {
        let full = format!("full{n}");
        let stream: StreamId = Tally::stream_id(&full).unwrap();
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

fn load(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    bench_store(c, &rt, "memory", eslab_memory::MemoryStore::new());
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("bench.db").display());
    let sqlite = rt.block_on(eslab_sqlite::SqliteStore::connect(&url)).unwrap();
    bench_store(c, &rt, "sqlite", sqlite);
    let url = std::env::var("DATABASE_URL")
        .ok()
        .filter(|u| u.starts_with("postgres"))
        .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
    let schema = format!("eslab_bench_{}", uuid::Uuid::now_v7().simple());
    let postgres = rt.block_on(eslab_runtime::open_postgres(&url, &schema, |o| o)).unwrap();
    bench_store(c, &rt, "postgres", postgres.clone());
    rt.block_on(postgres.drop_schema()).unwrap();
}

#[allow(missing_docs)]
mod entry {
    criterion::criterion_group!(benches, super::load);
}
criterion_main!(entry::benches);
