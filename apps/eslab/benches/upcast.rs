//! What upcasting costs on read: loading a stream whose events are all stored
//! at schema v1 (each upcast to v2 on read) against the same stream stored at
//! v2 (no upcast), with a registry that has the upcaster in both cases. The
//! baseline is the v2 load; read the v1 figure as a ratio to it.
//!
//! `cargo bench -p eslab --bench upcast`
#![allow(clippy::unwrap_used, clippy::expect_used)] // a bench aborts on setup failure

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, criterion_main};
use eslab_core::{EventAppender, EventStore, ExpectedVersion, Metadata, NewEvent, Repository, StreamId};
use eslab_memory::MemoryStore;
use eslab_testing::repository::{Tally, tally_upcasters};
use serde_json::json;

const SIZES: [u64; 2] = [1_000, 10_000];

async fn seed(store: &MemoryStore, id: &str, count: u64, v1: bool) {
    let stream: StreamId = format!("tally-{id}").parse().unwrap();
    for chunk in (0..count).collect::<Vec<_>>().chunks(500) {
        let events = chunk
            .iter()
            .map(|&i| {
                let n = i64::try_from(i).unwrap();
                if v1 {
                    NewEvent::new("Added", 1, json!({ "value": n }), Metadata::now())
                } else {
                    NewEvent::new("Added", 2, json!({ "n": n }), Metadata::now())
                }
            })
            .collect();
        store.append(&stream, ExpectedVersion::Any, events).await.unwrap();
    }
}

fn upcast(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let store = MemoryStore::new();
    let repo: Repository<Tally, _> = Repository::new(EventStore::new(store.clone()).with_upcasters(tally_upcasters()));
    rt.block_on(async {
        for n in SIZES {
            seed(&store, &format!("v1-{n}"), n, true).await;
            seed(&store, &format!("v2-{n}"), n, false).await;
        }
    });
    let mut group = c.benchmark_group("upcast/memory");
    group.sample_size(10).warm_up_time(Duration::from_millis(300)).measurement_time(Duration::from_secs(2));
    for n in SIZES {
        group.bench_with_input(BenchmarkId::new("load_stored_v2", n), &format!("v2-{n}"), |b, id| {
            b.iter(|| black_box(rt.block_on(repo.load(id)).unwrap().version));
        });
        group.bench_with_input(BenchmarkId::new("load_stored_v1_upcast", n), &format!("v1-{n}"), |b, id| {
            b.iter(|| black_box(rt.block_on(repo.load(id)).unwrap().version));
        });
    }
    group.finish();
}

#[allow(missing_docs)]
mod entry {
    criterion::criterion_group!(benches, super::upcast);
}
criterion_main!(entry::benches);
