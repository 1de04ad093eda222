//! The runner on the SQL backends (real PostgreSQL and SQLite): exact
//! catch-up, crash-and-resume, parking and partitions, with a projection
//! that writes a real table in the batch's transaction.

use std::sync::Arc;
use std::time::Duration;

use eslab_core::{EventAppender, EventStore, ExpectedVersion, Metadata, NewEvent, RecordedEvent};
use eslab_memory::MemoryStore;
use eslab_projection::{Backend, HandlerError, Outcome, PgBackend, Projection, Runner, RunnerOptions, SqliteBackend};
use eslab_testing::pg::FreshSchema;
use serde_json::json;

use super::{counted_v1_to_v2, seed, seed_rounds, stream};

/// Per stream: last version and sum, refusing gaps and `poison` payloads.
pub(crate) struct SqlTally;

macro_rules! tally_for {
    ($backend:ty) => {
        impl Projection<$backend> for SqlTally {
            fn name(&self) -> &str {
                "sql-tally"
            }

            async fn apply(
                &self,
                tx: &mut <$backend as Backend>::Tx,
                event: &RecordedEvent,
            ) -> Result<(), HandlerError> {
                tokio::task::yield_now().await;
                if event.payload["poison"] == json!(true) {
                    return Err(HandlerError::new("poison"));
                }
                let err = |e: sqlx::Error| HandlerError::transient(e.to_string());
                let row: Option<(i64, i64)> = sqlx::query_as("SELECT version, total FROM tally WHERE stream_id = $1")
                    .bind(event.stream_id.as_str())
                    .fetch_optional(&mut **tx)
                    .await
                    .map_err(err)?;
                let (last, total) = row.unwrap_or((0, 0));
                let version = i64::try_from(event.stream_version.get()).unwrap();
                if version != last + 1 {
                    return Err(HandlerError::new(format!("gap: saw {last}, got {version}")));
                }
                let n = event.payload["n"].as_i64().unwrap_or(0);
                sqlx::query(
                    "INSERT INTO tally (stream_id, version, total) VALUES ($1, $2, $3)
                     ON CONFLICT (stream_id) DO UPDATE SET version = excluded.version, total = excluded.total",
                )
                .bind(event.stream_id.as_str())
                .bind(version)
                .bind(total + n)
                .execute(&mut **tx)
                .await
                .map_err(err)?;
                Ok(())
            }
        }
    };
}
tally_for!(PgBackend);
tally_for!(SqliteBackend);

pub(crate) const TALLY_DDL: &str =
    "CREATE TABLE IF NOT EXISTS tally (stream_id TEXT PRIMARY KEY, version BIGINT NOT NULL, total BIGINT NOT NULL)";

/// A fresh schema (created and migrated by the PostgreSQL store, dropped
/// with the returned guard) and a backend on its pool.
pub(crate) async fn pg_backend(_dir: &tempfile::TempDir) -> (PgBackend, Option<FreshSchema>) {
    let schema = FreshSchema::new("eslab_test");
    let backend = PgBackend::new(schema.open().await.pool().clone());
    backend.ensure_schema().await.unwrap();
    sqlx::query(TALLY_DDL).execute(backend.pool()).await.unwrap();
    (backend, Some(schema))
}

pub(crate) async fn sqlite_backend(dir: &tempfile::TempDir) -> (SqliteBackend, Option<FreshSchema>) {
    let url = format!("sqlite://{}", dir.path().join("views.db").display());
    let store = eslab_sqlite::SqliteStore::connect(&url).await.unwrap();
    let backend = SqliteBackend::new(store.writer_pool().clone());
    backend.ensure_schema().await.unwrap();
    sqlx::query(TALLY_DDL).execute(backend.pool()).await.unwrap();
    (backend, None)
}

macro_rules! sql_runner_tests {
    ($module:ident, $backend:ty, $make:expr) => {
        mod $module {
            use super::*;

            async fn tallies(backend: &$backend) -> Vec<(String, i64, i64)> {
                sqlx::query_as("SELECT stream_id, version, total FROM tally ORDER BY stream_id")
                    .fetch_all(backend.pool())
                    .await
                    .unwrap()
            }

            fn runner(store: &MemoryStore, backend: &$backend, batch: usize, partitions: u16) -> Runner<EventStore<MemoryStore>, $backend, SqlTally> {
                Runner::new(EventStore::new(store.clone()), Arc::new(backend.clone()), Arc::new(SqlTally))
                    .with_options(RunnerOptions { batch_size: batch, owner: "worker-1".into(), ..RunnerOptions::default() })
                    .partitioned(partitions)
            }

            async fn assert_exact(backend: &$backend, streams: u64, per_stream: i64) {
                let rows = tallies(backend).await;
                assert_eq!(rows.len() as u64, streams);
                for (stream, version, total) in rows {
                    assert_eq!((version, total), (per_stream, per_stream * (per_stream + 1) / 2), "{stream}");
                }
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn crash_and_resume_is_exact() {
                let dir = tempfile::tempdir().unwrap();
                let (backend, _schema) = $make(&dir).await;
                let store = MemoryStore::new();
                seed(&store, 6, 30).await;
                for (i, micros) in [0u64, 200, 500, 900, 1500, 2500, 4000].into_iter().cycle().take(14).enumerate() {
                    let r = runner(&store, &backend, 17 + i, 1);
                    let task = tokio::spawn(async move { r.drain().await });
                    tokio::time::sleep(Duration::from_micros(micros)).await;
                    task.abort();
                    let _ = task.await;
                }
                runner(&store, &backend, 50, 1).drain().await.unwrap();
                assert_exact(&backend, 6, 30).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn partitions_are_exact_after_crashes() {
                let dir = tempfile::tempdir().unwrap();
                let (backend, _schema) = $make(&dir).await;
                let store = MemoryStore::new();
                seed(&store, 12, 10).await;
                for micros in [0u64, 300, 800, 1600, 3000] {
                    let r = runner(&store, &backend, 25, 4);
                    let task = tokio::spawn(async move { r.drain().await });
                    tokio::time::sleep(Duration::from_micros(micros)).await;
                    task.abort();
                    let _ = task.await;
                }
                let r = runner(&store, &backend, 25, 4);
                r.drain().await.unwrap();
                assert_exact(&backend, 12, 10).await;
                assert_eq!(r.checkpoint().await.unwrap().position.get(), 120);
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn poison_parks_its_stream_and_skip_resumes_it() {
                let dir = tempfile::tempdir().unwrap();
                let (backend, _schema) = $make(&dir).await;
                let store = MemoryStore::new();
                seed(&store, 2, 2).await;
                let s9 = stream(9);
                let poison = NewEvent::new("Counted", 1, json!({ "poison": true }), Metadata::now());
                store.append(&s9, ExpectedVersion::Any, vec![poison]).await.unwrap();
                let r = runner(&store, &backend, 3, 1);
                r.drain().await.unwrap();
                assert_eq!(tallies(&backend).await.len(), 2, "other streams went on");
                let parked = backend.parked("sql-tally", None).await.unwrap();
                assert_eq!(parked.len(), 1);
                assert_eq!((parked[0].event.stream_id.clone(), parked[0].reason.as_str()), (s9.clone(), "poison"));
                assert!(r.retry(&s9).await.is_err(), "still poison");
                assert_eq!(r.skip(&s9).await.unwrap(), 0);
                assert!(backend.parked("sql-tally", None).await.unwrap().is_empty());
                assert_eq!(r.run_once().await.unwrap(), Outcome::Idle);
                let other = runner_as(&store, &backend, "other", Duration::from_secs(30));
                assert_eq!(other.run_once().await.unwrap(), Outcome::NotLeader, "lease held by worker-1");
            }

            fn runner_as(store: &MemoryStore, backend: &$backend, owner: &str, lease_ttl: Duration) -> Runner<EventStore<MemoryStore>, $backend, SqlTally> {
                runner(store, backend, 50, 1)
                    .with_options(RunnerOptions { owner: owner.into(), lease_ttl, ..RunnerOptions::default() })
            }

            /// Issue 16, defect 2: v1 events reach the handler upcast to v2.
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn upcast_events_reach_the_projection() {
                let dir = tempfile::tempdir().unwrap();
                let (backend, _schema) = $make(&dir).await;
                let store = MemoryStore::new();
                for n in 1..=3 {
                    let old = NewEvent::new("Counted", 1, json!({ "amount": n }), Metadata::now());
                    store.append(&stream(0), ExpectedVersion::Any, vec![old]).await.unwrap();
                }
                let feed = EventStore::new(store.clone()).with_upcasters(counted_v1_to_v2());
                let r = Runner::new(feed, Arc::new(backend.clone()), Arc::new(SqlTally));
                assert_eq!(r.drain().await.unwrap(), 3);
                assert_eq!(tallies(&backend).await, [(stream(0).as_str().to_owned(), 3, 6)]);
                assert!(backend.parked("sql-tally", None).await.unwrap().is_empty());
            }

            /// Issue 16, defect 3: drain and a spawned runner's stop release
            /// the lease; a runner of another owner takes over at once, though
            /// every lease here lasts an hour.
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn a_stopped_runner_hands_the_lease_over_at_once() {
                const HOUR: Duration = Duration::from_secs(3600);
                let dir = tempfile::tempdir().unwrap();
                let (backend, _schema) = $make(&dir).await;
                let store = MemoryStore::new();
                seed(&store, 3, 2).await;
                assert_eq!(runner_as(&store, &backend, "a", HOUR).drain().await.unwrap(), 6);
                seed_rounds(&store, 3, 2..3).await;
                assert_eq!(runner_as(&store, &backend, "b", HOUR).drain().await.unwrap(), 3, "b took a's lease");

                let c = runner_as(&store, &backend, "c", HOUR).spawn(());
                seed_rounds(&store, 3, 3..4).await;
                c.stop().await.unwrap();
                assert_exact(&backend, 3, 4).await; // drained on stop
                assert!(backend.lease("sql-tally").await.unwrap().is_none(), "released on stop");
                seed_rounds(&store, 3, 4..5).await;
                let d = runner_as(&store, &backend, "d", HOUR);
                assert!(matches!(d.run_once().await.unwrap(), Outcome::Processed { events: 3, .. }), "d leads at once");
            }
        }
    };
}

sql_runner_tests!(postgres, PgBackend, pg_backend);
sql_runner_tests!(sqlite, SqliteBackend, sqlite_backend);

/// Two backends on one SQLite file (as a service and `eslab forget` in
/// another process): a transaction that reads before it writes, while the
/// other commits a write, still commits; the other waits for it instead of
/// either meeting `SQLITE_BUSY` (a deferred transaction cannot upgrade its
/// read once another connection has committed since).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_then_write_transaction_survives_another_process_s_commit() {
    let dir = tempfile::tempdir().unwrap();
    let (service, _) = sqlite_backend(&dir).await;
    let service = service.immediate();
    let url = format!("sqlite://{}", dir.path().join("views.db").display());
    let cli =
        SqliteBackend::new(eslab_sqlite::SqliteStore::connect(&url).await.unwrap().writer_pool().clone()).immediate();
    let mut tx = cli.begin().await.unwrap();
    let before: i64 = sqlx::query_scalar("SELECT count(*) FROM tally").fetch_one(&mut *tx).await.unwrap();
    let other = tokio::spawn(async move {
        let mut tx = service.begin().await?;
        sqlx::query("INSERT INTO tally VALUES ('service', 1, 1)")
            .execute(&mut *tx)
            .await
            .map_err(|e| eslab_projection::Error::Backend(Box::new(e)))?;
        service.commit(tx).await
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    sqlx::query("INSERT INTO tally VALUES ('cli', 1, 1)").execute(&mut *tx).await.unwrap();
    cli.commit(tx).await.unwrap();
    other.await.unwrap().unwrap();
    let after: i64 = sqlx::query_scalar("SELECT count(*) FROM tally").fetch_one(cli.pool()).await.unwrap();
    assert_eq!((before, after), (0, 2));
}
