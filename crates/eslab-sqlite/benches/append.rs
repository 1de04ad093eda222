//! SQLite store appends (1 and 100 events) and a 10 000-event stream read,
//! each next to a raw-SQL baseline on the same schema and connection settings,
//! so results read as ratios. Run with `cargo bench -p eslab-sqlite --bench append`.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use eslab_core::{EventAppender, EventReader, ExpectedVersion, Metadata, NewEvent, StreamId, Version};
use eslab_sqlite::SqliteStore;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
use sqlx::{ConnectOptions, Connection, QueryBuilder, Sqlite, SqliteConnection};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokio::runtime::Runtime;
use tokio::sync::Mutex;

const READ_LEN: u64 = 10_000;

/// An event row as plain columns.
type RawRow = (i64, String, i64, uuid::Uuid, String, i64, String, String, String);

fn event(n: u64) -> NewEvent {
    NewEvent::new("Deposited", 1, serde_json::json!({ "amount": n, "currency": "EUR" }), Metadata::now())
}

fn url(dir: &tempfile::TempDir) -> String {
    format!("sqlite://{}", dir.path().join("bench.db").display())
}

/// A raw connection with the store's settings (WAL, synchronous = NORMAL).
async fn raw_connection(url: &str) -> SqliteConnection {
    let options: SqliteConnectOptions = url.parse().unwrap();
    options
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .busy_timeout(Duration::from_secs(5))
        .connect()
        .await
        .unwrap()
}

/// The baseline: the same rows in one plain multi-row INSERT inside a
/// transaction, with positions and versions the caller already knows (no
/// version check, no pool, no result building).
async fn raw_append(conn: &mut SqliteConnection, stream: &str, next: &mut (i64, i64), events: &[NewEvent]) {
    let recorded_at = OffsetDateTime::now_utc().format(&Rfc3339).unwrap();
    let rows: Vec<_> = events
        .iter()
        .map(|e| {
            next.0 += 1;
            next.1 += 1;
            let payload = serde_json::to_string(&e.payload).unwrap();
            let metadata = serde_json::to_string(&e.metadata).unwrap();
            (next.0, next.1, e, payload, metadata)
        })
        .collect();
    let mut tx = conn.begin_with("BEGIN IMMEDIATE").await.unwrap();
    let mut q = QueryBuilder::<Sqlite>::new(
        "INSERT INTO events (category, global_position, stream_id, stream_version, event_id, event_type, \
         schema_version, payload, metadata, recorded_at) ",
    );
    q.push_values(&rows, |mut b, (position, version, e, payload, metadata)| {
        b.push_bind("raw")
            .push_bind(*position)
            .push_bind(stream)
            .push_bind(*version)
            .push_bind(e.event_id)
            .push_bind(e.event_type.as_str())
            .push_bind(i64::from(e.schema_version))
            .push_bind(payload.as_str())
            .push_bind(metadata.as_str())
            .push_bind(recorded_at.as_str());
    });
    q.build().execute(&mut *tx).await.unwrap();
    tx.commit().await.unwrap();
}

fn appends(c: &mut Criterion) {
    let rt = Runtime::new().unwrap();
    let mut group = c.benchmark_group("sqlite_append");
    group.sample_size(10).warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(3));
    for size in [1u64, 100] {
        group.throughput(Throughput::Elements(size));

        let dir = tempfile::tempdir().unwrap();
        let store = rt.block_on(SqliteStore::connect(&url(&dir))).unwrap();
        let stream: StreamId = format!("bench-{size}").parse().unwrap();
        group.bench_with_input(BenchmarkId::new("eslab", size), &size, |b, &size| {
            b.to_async(&rt).iter(|| async {
                let events = (0..size).map(event).collect();
                store.append(&stream, ExpectedVersion::Any, events).await.unwrap()
            });
        });

        let raw_dir = tempfile::tempdir().unwrap();
        rt.block_on(async {
            // The schema comes from the store's migrations.
            SqliteStore::connect(&url(&raw_dir)).await.unwrap().close().await;
        });
        let conn = Arc::new(Mutex::new(rt.block_on(raw_connection(&url(&raw_dir)))));
        let next = Arc::new(Mutex::new((0i64, 0i64)));
        group.bench_with_input(BenchmarkId::new("raw_sql", size), &size, |b, &size| {
            b.to_async(&rt).iter(|| async {
                let events: Vec<_> = (0..size).map(event).collect();
                let mut conn = conn.lock().await;
                let mut next = next.lock().await;
                raw_append(&mut conn, "raw-1", &mut next, &events).await;
            });
        });
    }
    group.finish();
}

fn reads(c: &mut Criterion) {
    let rt = Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = rt.block_on(SqliteStore::connect(&url(&dir))).unwrap();
    let stream: StreamId = "bench-read".parse().unwrap();
    rt.block_on(async {
        for chunk in 0..READ_LEN / 500 {
            let events = (chunk * 500..(chunk + 1) * 500).map(event).collect();
            store.append(&stream, ExpectedVersion::Any, events).await.unwrap();
        }
    });
    let conn = Arc::new(Mutex::new(rt.block_on(raw_connection(&url(&dir)))));

    let mut group = c.benchmark_group("sqlite_read_stream");
    group.sample_size(10).warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(3));
    group.throughput(Throughput::Elements(READ_LEN));
    group.bench_function(BenchmarkId::new("eslab", READ_LEN), |b| {
        b.to_async(&rt).iter(|| async {
            let events = store.read_stream(&stream, Version::FIRST, usize::MAX).await.unwrap();
            assert_eq!(events.len() as u64, READ_LEN);
        });
    });
    group.bench_function(BenchmarkId::new("raw_sql", READ_LEN), |b| {
        // The same query, rows fetched as plain columns (no JSON parsing, no event building).
        b.to_async(&rt).iter(|| async {
            let mut conn = conn.lock().await;
            let rows: Vec<RawRow> = sqlx::query_as(
                "SELECT global_position, stream_id, stream_version, event_id, event_type, schema_version, payload, \
                 metadata, recorded_at FROM events WHERE stream_id = ? AND stream_version >= ? \
                 ORDER BY stream_version LIMIT ?",
            )
            .bind(stream.as_str())
            .bind(1i64)
            .bind(i64::MAX)
            .fetch_all(&mut *conn)
            .await
            .unwrap();
            assert_eq!(rows.len() as u64, READ_LEN);
        });
    });
    group.finish();
}

criterion_group!(benches, appends, reads);
criterion_main!(benches);
