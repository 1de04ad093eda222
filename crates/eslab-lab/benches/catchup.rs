//! Catch-up of the bank's account-summary projection (`BankViews`) on
//! PostgreSQL, beside the raw rate of plain batched `UPDATE`s of the same rows
//! in the same run, and the runner's throughput with 1, 2, 4 and 8 partitions.
//!
//! `cargo bench -p eslab-projection --bench catchup --features postgres`
//! (uses `DATABASE_URL`, a fresh schema, dropped at the end).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput};
use eslab_bank::{AccountEvent, Amount, Balance, BankViews, OverdraftLimit, Owner, SqlViews};
use eslab_core::{Codec, EventStore, JsonCodec, Metadata, StreamId};
use eslab_postgres::PostgresStore;
use eslab_projection::{PgBackend, Runner, RunnerOptions};
use sqlx::PgPool;
use tokio::runtime::Runtime;

const ACCOUNTS: u64 = 1_000;
/// Events per account: one opening, then deposits.
const PER_ACCOUNT: u64 = 20;
const EVENTS: u64 = ACCOUNTS * PER_ACCOUNT;
/// Events per transaction, for the runner and for the raw baseline alike.
const BATCH: usize = 1_000;

fn account(i: u64) -> StreamId {
    StreamId::new("account", &format!("b{i:05}")).unwrap()
}

/// Accounts interleaved round-robin (a batch touches many accounts, as live traffic does).
fn events() -> Vec<(StreamId, eslab_core::NewEvent)> {
    let eur = "EUR".parse().unwrap();
    let mut all = Vec::with_capacity(usize::try_from(EVENTS).unwrap());
    for round in 0..PER_ACCOUNT {
        for i in 0..ACCOUNTS {
            let event = if round == 0 {
                AccountEvent::AccountOpened {
                    owner: Owner { name: format!("owner {i}").into() },
                    currency: eur,
                    overdraft_limit: OverdraftLimit::NONE,
                }
            } else {
                let balance = i64::try_from(round * 10).unwrap();
                AccountEvent::MoneyDeposited { amount: Amount::new(10).unwrap(), balance: Balance::new(balance) }
            };
            all.push((account(i), JsonCodec.encode(&event, Metadata::now()).unwrap()));
        }
    }
    all
}

async fn reset(pool: &PgPool) {
    for sql in [
        "TRUNCATE account_summary, account_history, transfer_status",
        "DELETE FROM projection_checkpoints",
        "DELETE FROM projection_leases",
    ] {
        sqlx::query(sql).execute(pool).await.unwrap();
    }
}

/// The baseline: one plain `UPDATE` per event, `BATCH` per transaction, on rows that exist.
async fn raw_updates(pool: &PgPool, updates: &[(String, i64, i64)]) -> Duration {
    reset(pool).await;
    sqlx::query(
        "INSERT INTO account_summary (id, owner, currency, balance, overdraft_limit, status, version)
         SELECT 'b' || lpad(i::text, 5, '0'), 'o', 'EUR', 0, 0, 'open', 0 FROM generate_series(0, $1 - 1) AS i",
    )
    .bind(i64::try_from(ACCOUNTS).unwrap())
    .execute(pool)
    .await
    .unwrap();
    let start = Instant::now();
    for chunk in updates.chunks(BATCH) {
        let mut tx = pool.begin().await.unwrap();
        for (id, balance, version) in chunk {
            sqlx::query("UPDATE account_summary SET balance = $1, version = $2 WHERE id = $3")
                .bind(balance)
                .bind(version)
                .bind(id)
                .execute(&mut *tx)
                .await
                .unwrap();
        }
        tx.commit().await.unwrap();
    }
    start.elapsed()
}

async fn catch_up(store: &PostgresStore, backend: &Arc<PgBackend>, partitions: u16) -> Duration {
    reset(store.pool()).await;
    let feed = EventStore::new(store.clone()).with_upcasters(eslab_bank::upcasters());
    let runner = Runner::new(feed, backend.clone(), Arc::new(BankViews))
        .with_options(RunnerOptions { batch_size: BATCH, owner: "bench".into(), ..RunnerOptions::default() })
        .partitioned(partitions);
    let start = Instant::now();
    let n = runner.drain().await.unwrap();
    let took = start.elapsed();
    assert_eq!(n, usize::try_from(EVENTS).unwrap());
    took
}

fn bench(c: &mut Criterion) {
    let rt = Runtime::new().unwrap();
    let url = std::env::var("DATABASE_URL")
        .ok()
        .filter(|u| u.starts_with("postgres"))
        .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
    let schema = format!("eslab_bench_{}", uuid::Uuid::now_v7().simple());
    let (store, backend) = rt.block_on(async {
        let store = eslab_runtime::open_postgres(&url, &schema, |o| o)
            .await
            .unwrap_or_else(|e| panic!("PostgreSQL is not reachable at {url} ({e}); start it or set DATABASE_URL"));
        store.import(events()).await.unwrap();
        let backend = PgBackend::new(store.pool().clone());
        backend.ensure_schema().await.unwrap();
        SqlViews::new(store.pool().clone()).ensure_schema().await.unwrap();
        (store, Arc::new(backend))
    });
    // The raw baseline writes the balances the projection would.
    let updates: Vec<(String, i64, i64)> = (0..PER_ACCOUNT)
        .flat_map(|round| {
            (0..ACCOUNTS).map(move |i| {
                (format!("b{i:05}"), i64::try_from(round * 10).unwrap(), i64::try_from(round + 1).unwrap())
            })
        })
        .collect();

    let mut group = c.benchmark_group("catchup_postgres");
    group.throughput(Throughput::Elements(EVENTS)).sample_size(10).measurement_time(Duration::from_secs(10));
    group.bench_function("raw_batched_update", |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let (pool, updates) = (store.pool().clone(), &updates);
            async move {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    total += raw_updates(&pool, updates).await;
                }
                total
            }
        });
    });
    for partitions in [1u16, 2, 4, 8] {
        group.bench_with_input(BenchmarkId::new("bank_views_runner", partitions), &partitions, |b, &p| {
            b.to_async(&rt).iter_custom(|iters| {
                let (store, backend) = (&store, &backend);
                async move {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        total += catch_up(store, backend, p).await;
                    }
                    total
                }
            });
        });
    }
    group.finish();
    rt.block_on(store.drop_schema()).unwrap();
}

criterion::criterion_group!(benches, bench);
criterion::criterion_main!(benches);
