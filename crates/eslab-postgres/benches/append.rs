//! Criterion benches of the PostgreSQL store, each group with a raw-SQL
//! baseline on the same pool, table and row shape, so results read as ratios.
//!
//! `cargo bench -p eslab-postgres --bench append` (uses `DATABASE_URL`, a
//! fresh schema, dropped at the end).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput};
use eslab_core::{
    Checkpoint, EventAppender, EventReader, EventReaderExt, ExpectedVersion, FeedFilter, Metadata, NewEvent, StreamId,
    Version,
};
use eslab_postgres::{AppendStrategy, GroupCommitOptions, Notify, PostgresOptions, PostgresStore};
use futures_util::TryStreamExt;
use serde_json::json;
use sqlx::PgPool;
use tokio::runtime::Runtime;
use uuid::Uuid;

const RAW_INSERT_ONE: &str = "INSERT INTO events (stream_id, category, stream_version, event_id, event_type, \
     schema_version, payload, metadata) VALUES ($1, 'raw', 1, $2, 'Counted', 1, $3, $4)";
const RAW_INSERT_MANY: &str = "INSERT INTO events (stream_id, category, stream_version, event_id, event_type, \
     schema_version, payload, metadata) \
     SELECT $1, 'raw', v, id, 'Counted', 1, p, m FROM unnest($2::bigint[], $3::uuid[], $4::jsonb[], $5::jsonb[]) \
     AS t(v, id, p, m)";

/// The row shape of the raw feed baseline.
type RawRow = (i64, String, String, i64, Uuid, String, i32, serde_json::Value, serde_json::Value);

fn event(n: u64) -> NewEvent {
    NewEvent::new("Counted", 1, json!({ "n": n, "note": "a typical small payload" }), Metadata::now())
}

fn metadata() -> serde_json::Value {
    serde_json::to_value(Metadata::now()).unwrap()
}

async fn raw_one(pool: &PgPool, n: u64) {
    sqlx::query(RAW_INSERT_ONE)
        .bind(format!("raw-{}", Uuid::now_v7().simple()))
        .bind(Uuid::now_v7())
        .bind(json!({ "n": n, "note": "a typical small payload" }))
        .bind(metadata())
        .execute(pool)
        .await
        .unwrap();
}

async fn raw_many(pool: &PgPool, n: usize) {
    let versions: Vec<i64> = (1..=i64::try_from(n).unwrap()).collect();
    let ids: Vec<Uuid> = (0..n).map(|_| Uuid::now_v7()).collect();
    let payloads: Vec<_> = (0..n).map(|i| json!({ "n": i, "note": "a typical small payload" })).collect();
    let metas: Vec<_> = (0..n).map(|_| metadata()).collect();
    sqlx::query(RAW_INSERT_MANY)
        .bind(format!("raw-{}", Uuid::now_v7().simple()))
        .bind(versions)
        .bind(ids)
        .bind(payloads)
        .bind(metas)
        .execute(pool)
        .await
        .unwrap();
}

fn stream(name: String) -> StreamId {
    StreamId::new("bench", &name).unwrap()
}

fn bench_append_batch(c: &mut Criterion, rt: &Runtime, store: &PostgresStore, unique: &PostgresStore) {
    let mut group = c.benchmark_group("append_batch");
    for n in [1_usize, 10, 100] {
        group.throughput(Throughput::Elements(n as u64));
        for (name, s) in [("store", store), ("store_unique_index", unique)] {
            group.bench_with_input(BenchmarkId::new(name, n), &n, |b, &n| {
                b.to_async(rt).iter(|| async move {
                    let events = (0..n as u64).map(event).collect();
                    let id = stream(Uuid::now_v7().simple().to_string());
                    s.append(&id, ExpectedVersion::NoStream, events).await.unwrap();
                });
            });
        }
        group.bench_with_input(BenchmarkId::new("raw", n), &n, |b, &n| {
            b.to_async(rt).iter(|| async move {
                if n == 1 { raw_one(store.pool(), 0).await } else { raw_many(store.pool(), n).await }
            });
        });
    }
    group.finish();
}

/// One iteration = `PER_ITER` single-event appends spread over `tasks` tasks.
const PER_ITER: usize = 256;

fn bench_concurrent(c: &mut Criterion, rt: &Runtime, store: &PostgresStore, variants: &[(&str, PostgresOptions)]) {
    let mut group = c.benchmark_group("concurrent_single_appends");
    group.throughput(Throughput::Elements(PER_ITER as u64));
    for tasks in [1_usize, 8, 32] {
        for (name, options) in variants {
            // One pool at a time: the server allows 100 connections.
            let owned = PostgresStore::connect_lazy(options.clone()).unwrap();
            let s = &owned;
            group.bench_with_input(BenchmarkId::new(*name, tasks), &tasks, |b, &tasks| {
                b.to_async(rt).iter(|| async move {
                    let handles: Vec<_> = (0..tasks)
                        .map(|t| {
                            let s = s.clone();
                            tokio::spawn(async move {
                                let id = stream(format!("c{t}-{}", Uuid::now_v7().simple()));
                                for i in 0..PER_ITER / tasks {
                                    s.append(&id, ExpectedVersion::Any, vec![event(i as u64)]).await.unwrap();
                                }
                            })
                        })
                        .collect();
                    for h in handles {
                        h.await.unwrap();
                    }
                });
            });
            rt.block_on(owned.pool().close());
        }
        group.bench_with_input(BenchmarkId::new("raw_insert_commit", tasks), &tasks, |b, &tasks| {
            b.to_async(rt).iter(|| async move {
                let handles: Vec<_> = (0..tasks)
                    .map(|_| {
                        let pool = store.pool().clone();
                        tokio::spawn(async move {
                            for i in 0..PER_ITER / tasks {
                                raw_one(&pool, i as u64).await;
                            }
                        })
                    })
                    .collect();
                for h in handles {
                    h.await.unwrap();
                }
            });
        });
    }
    group.finish();
}

fn bench_reads(c: &mut Criterion, rt: &Runtime, store: &PostgresStore) {
    const STREAM_LEN: u64 = 10_000;
    const FEED_LEN: u64 = 100_000;
    let long = stream("long".into());
    rt.block_on(async {
        let batch = (0..STREAM_LEN).map(|n| (long.clone(), event(n))).collect();
        store.import(batch).await.unwrap();
        let batch = (0..FEED_LEN - STREAM_LEN).map(|n| (stream(format!("f{}", n % 1000)), event(n))).collect();
        store.import(batch).await.unwrap();
        sqlx::query("ANALYZE events").execute(store.pool()).await.unwrap();
    });

    let mut group = c.benchmark_group("read_stream_10k");
    group.throughput(Throughput::Elements(STREAM_LEN));
    group.bench_function("store", |b| {
        b.to_async(rt).iter(|| async {
            let n = store.stream_events(&long, Version::FIRST).try_fold(0_u64, |n, _| async move { Ok(n + 1) });
            assert_eq!(n.await.unwrap(), STREAM_LEN);
        });
    });
    group.bench_function("raw", |b| {
        b.to_async(rt).iter(|| async {
            let rows = sqlx::query(
                "SELECT global_position, transaction_id::text, stream_id, stream_version, event_id, event_type, \
                 schema_version, payload, metadata, recorded_at FROM events WHERE stream_id = $1 ORDER BY stream_version",
            )
            .bind(long.as_str())
            .fetch_all(store.pool())
            .await
            .unwrap();
            assert_eq!(rows.len() as u64, STREAM_LEN);
        });
    });
    group.finish();

    const PAGE: usize = 1000;
    let mut group = c.benchmark_group("read_feed_100k");
    group.throughput(Throughput::Elements(FEED_LEN));
    group.bench_function("store", |b| {
        b.to_async(rt).iter(|| async {
            let mut at = Checkpoint::START;
            let mut n = 0_u64;
            while n < FEED_LEN {
                let page = store.read_feed(&FeedFilter::All, at, PAGE).await.unwrap();
                at = page.last().unwrap().checkpoint();
                n += page.len() as u64;
            }
        });
    });
    group.bench_function("raw_keyset_by_position", |b| {
        b.to_async(rt).iter(|| async {
            let mut after = 0_i64;
            let mut n = 0_u64;
            while n < FEED_LEN {
                let rows: Vec<RawRow> = sqlx::query_as(
                    "SELECT global_position, transaction_id::text, stream_id, stream_version, event_id, \
                         event_type, schema_version, payload, metadata FROM events \
                         WHERE global_position > $1 ORDER BY global_position LIMIT $2",
                )
                .bind(after)
                .bind(i64::try_from(PAGE).unwrap())
                .fetch_all(store.pool())
                .await
                .unwrap();
                after = rows.last().unwrap().0;
                n += rows.len() as u64;
            }
        });
    });
    group.finish();
}

fn bench_import(c: &mut Criterion, rt: &Runtime, store: &PostgresStore) {
    const N: usize = 10_000;
    let mut group = c.benchmark_group("import_10k");
    group.throughput(Throughput::Elements(N as u64));
    group.bench_function("store_copy", |b| {
        b.to_async(rt).iter(|| async {
            let batch = (0..N as u64).map(|n| (stream(format!("i{}", n % 100)), event(n))).collect();
            store.import(batch).await.unwrap();
        });
    });
    group.bench_function("raw_unnest_insert", |b| {
        b.to_async(rt).iter(|| async { raw_many(store.pool(), N).await });
    });
    group.finish();
}

fn main() {
    let rt = Runtime::new().unwrap();
    let _in_runtime = rt.enter();
    let url = std::env::var("DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let schema = format!("eslab_bench_{}", Uuid::now_v7().simple());
    let options = PostgresOptions::new(&url, &schema).max_connections(40);
    let store = rt
        .block_on(PostgresStore::connect_with(options.clone()))
        .unwrap_or_else(|e| panic!("PostgreSQL at {url}: {e}; start it with `pg_ctlcluster 15 main start`"));
    let unique = PostgresStore::connect_lazy(options.clone().append_strategy(AppendStrategy::UniqueIndex)).unwrap();
    let variant = |strategy, notify| options.clone().max_connections(34).append_strategy(strategy).notify(notify);
    let variants = [
        ("store", variant(AppendStrategy::VersionRow, Notify::AfterCommit)),
        ("store_notify_in_tx", variant(AppendStrategy::VersionRow, Notify::InTransaction)),
        ("store_unique_index", variant(AppendStrategy::UniqueIndex, Notify::AfterCommit)),
        ("store_unique_index_notify_in_tx", variant(AppendStrategy::UniqueIndex, Notify::InTransaction)),
        (
            "group_commit",
            variant(AppendStrategy::VersionRow, Notify::AfterCommit).group_commit(GroupCommitOptions::default()),
        ),
    ];

    let mut c = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    bench_append_batch(&mut c, &rt, &store, &unique);
    rt.block_on(unique.pool().close());
    bench_concurrent(&mut c, &rt, &store, &variants);
    bench_reads(&mut c, &rt, &store);
    bench_import(&mut c, &rt, &store);
    c.final_summary();
    rt.block_on(store.drop_schema()).unwrap();
}
