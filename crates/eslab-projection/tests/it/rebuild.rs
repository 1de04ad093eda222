//! Rebuilds on real PostgreSQL and SQLite, with a projection of two tables
//! whose handler refuses gaps (an event lost or applied twice parks its
//! stream): the rebuilt model equals a from-scratch build; events appended
//! during the rebuild appear exactly once after the swap, with or without a
//! live runner beside it; a rebuild that fails, in the replay or inside the
//! swap, leaves the live model untouched and drops its shadow.

use std::sync::Arc;
use std::time::Duration;

use eslab_core::{BoxError, RecordedEvent};
use eslab_core::{Checkpoint, EventAppender, EventReader, EventStore, ExpectedVersion, FeedFilter, Metadata, NewEvent};
use eslab_memory::MemoryStore;
use eslab_projection::{
    Backend, HandlerError, PgBackend, Progress, Projection, ReadModel, Rebuild, RebuildError, RebuildOptions, Runner,
    RunnerOptions, SqliteBackend,
};
use eslab_testing::pg::FreshSchema;
use serde_json::json;

use super::sql::{pg_backend, sqlite_backend};
use super::{seed_rounds, stream};

/// Per stream a running total (refusing gaps) and one entry per event;
/// `poison` payloads are refused. With `transient_at`, the event at that
/// position fails transiently (a rebuild that breaks down); with `gate`, each
/// event waits for the gate to open (a batch held between its reads and its
/// writes).
#[derive(Default)]
struct Ledger {
    transient_at: Option<u64>,
    gate: Option<Arc<Gate>>,
}

/// Holds a batch inside its transaction, before its first write.
struct Gate {
    entered: tokio::sync::Notify,
    open: tokio::sync::Semaphore,
}

impl Gate {
    fn closed() -> Gate {
        Gate { entered: tokio::sync::Notify::new(), open: tokio::sync::Semaphore::new(0) }
    }
}

const NAME: &str = "ledger";

const DDL: [&str; 2] = [
    "CREATE TABLE IF NOT EXISTS ledger_totals (stream_id TEXT PRIMARY KEY, version BIGINT NOT NULL, total BIGINT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS ledger_entries (stream_id TEXT NOT NULL, version BIGINT NOT NULL, n BIGINT NOT NULL,
        PRIMARY KEY (stream_id, version))",
];

macro_rules! ledger_for {
    ($backend:ty) => {
        impl Projection<$backend> for Ledger {
            fn name(&self) -> &str {
                NAME
            }

            async fn apply(
                &self,
                tx: &mut <$backend as Backend>::Tx,
                event: &RecordedEvent,
            ) -> Result<(), HandlerError> {
                if let Some(gate) = &self.gate {
                    gate.entered.notify_one();
                    drop(gate.open.acquire().await.unwrap());
                }
                if self.transient_at == Some(event.position.get()) {
                    return Err(HandlerError::transient("the ledger's database is down"));
                }
                if event.payload["poison"] == json!(true) {
                    return Err(HandlerError::new("poison"));
                }
                let err = |e: sqlx::Error| HandlerError::transient(e.to_string());
                let row: Option<(i64, i64)> =
                    sqlx::query_as("SELECT version, total FROM ledger_totals WHERE stream_id = $1")
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
                    "INSERT INTO ledger_totals (stream_id, version, total) VALUES ($1, $2, $3)
                     ON CONFLICT (stream_id) DO UPDATE SET version = excluded.version, total = excluded.total",
                )
                .bind(event.stream_id.as_str())
                .bind(version)
                .bind(total + n)
                .execute(&mut **tx)
                .await
                .map_err(err)?;
                sqlx::query("INSERT INTO ledger_entries (stream_id, version, n) VALUES ($1, $2, $3)")
                    .bind(event.stream_id.as_str())
                    .bind(version)
                    .bind(n)
                    .execute(&mut **tx)
                    .await
                    .map_err(err)?;
                Ok(())
            }
        }

        impl ReadModel<$backend> for Ledger {
            fn tables(&self) -> Vec<String> {
                vec!["ledger_totals".to_owned(), "ledger_entries".to_owned()]
            }

            async fn create_tables(&self, backend: &$backend) -> Result<(), BoxError> {
                for ddl in DDL {
                    sqlx::query(ddl).execute(backend.pool()).await?;
                }
                Ok(())
            }
        }
    };
}
ledger_for!(PgBackend);
ledger_for!(SqliteBackend);

type Totals = Vec<(String, i64, i64)>;
type Entries = Vec<(String, i64, i64)>;

/// Breaks the swap of `ledger_entries` (the second table): a view depends on
/// it (PostgreSQL refuses to drop it), or a trigger refuses inserts (SQLite).
trait Sabotage {
    async fn sabotage(&self, on: bool);
    async fn shadow_exists(&self, dir: &tempfile::TempDir) -> bool;
}

impl Sabotage for PgBackend {
    async fn sabotage(&self, on: bool) {
        let sql = if on {
            "CREATE VIEW ledger_entries_view AS SELECT * FROM ledger_entries"
        } else {
            "DROP VIEW ledger_entries_view"
        };
        sqlx::query(sql).execute(self.pool()).await.unwrap();
    }

    async fn shadow_exists(&self, _dir: &tempfile::TempDir) -> bool {
        let (found,): (bool,) = sqlx::query_as(
            "SELECT EXISTS (SELECT 1 FROM information_schema.schemata WHERE schema_name = current_schema() || '_rebuild_ledger')",
        )
        .fetch_one(self.pool())
        .await
        .unwrap();
        found
    }
}

impl Sabotage for SqliteBackend {
    async fn sabotage(&self, on: bool) {
        let sql = if on {
            "CREATE TRIGGER ledger_entries_refused BEFORE INSERT ON ledger_entries BEGIN SELECT RAISE(ABORT, 'refused'); END"
        } else {
            "DROP TRIGGER ledger_entries_refused"
        };
        sqlx::query(sql).execute(self.pool()).await.unwrap();
    }

    async fn shadow_exists(&self, dir: &tempfile::TempDir) -> bool {
        dir.path().join("views.db.rebuild-ledger").exists()
    }
}

/// `n = 1` for every event (each stream's total is its version).
async fn append_round(store: &MemoryStore, streams: u64) {
    for s in 0..streams {
        let e = NewEvent::new("Counted", 1, json!({ "n": 1 }), Metadata::now());
        store.append(&stream(s), ExpectedVersion::Any, vec![e]).await.unwrap();
    }
}

macro_rules! rebuild_tests {
    ($module:ident, $backend:ty, $make:expr) => {
        mod $module {
            use super::*;

            pub(super) async fn totals(backend: &$backend) -> Totals {
                sqlx::query_as("SELECT stream_id, version, total FROM ledger_totals ORDER BY stream_id")
                    .fetch_all(backend.pool())
                    .await
                    .unwrap()
            }

            pub(super) async fn entries(backend: &$backend) -> Entries {
                sqlx::query_as("SELECT stream_id, version, n FROM ledger_entries ORDER BY stream_id, version")
                    .fetch_all(backend.pool())
                    .await
                    .unwrap()
            }

            pub(super) async fn live(dir: &tempfile::TempDir) -> ($backend, Option<FreshSchema>) {
                let (backend, schema) = $make(dir).await;
                Ledger::default().create_tables(&backend).await.unwrap();
                (backend, schema)
            }

            pub(super) fn runner(store: &MemoryStore, backend: &$backend, owner: &str) -> Runner<EventStore<MemoryStore>, $backend, Ledger> {
                let options = RunnerOptions {
                    batch_size: 7,
                    owner: owner.to_owned(),
                    max_idle_poll: Duration::from_millis(20),
                    ..RunnerOptions::default()
                };
                Runner::new(EventStore::new(store.clone()), Arc::new(backend.clone()), Arc::new(Ledger::default()))
                    .with_options(options)
            }

            pub(super) fn rebuild(store: &MemoryStore, backend: &$backend, ledger: Ledger) -> Rebuild<EventStore<MemoryStore>, $backend, Ledger> {
                let options = RebuildOptions { batch_size: 5, owner: "rebuilder".to_owned(), ..RebuildOptions::default() };
                Rebuild::new(EventStore::new(store.clone()), Arc::new(backend.clone()), Arc::new(ledger)).with_options(options)
            }

            /// Every stream's total and version equal its event count, with one entry per event, nothing parked.
            pub(super) async fn assert_exactly_once(backend: &$backend, streams: u64, per_stream: i64) {
                let rows = totals(backend).await;
                assert_eq!(rows.len() as u64, streams, "{rows:?}");
                for (stream, version, total) in rows {
                    assert_eq!((version, total), (per_stream, per_stream), "{stream}: an event lost or applied twice");
                }
                assert_eq!(i64::try_from(entries(backend).await.len()).unwrap(), per_stream * i64::try_from(streams).unwrap());
                assert!(backend.parked(NAME, None).await.unwrap().is_empty(), "nothing parked");
            }

            pub(super) async fn head(store: &MemoryStore) -> Checkpoint {
                store.feed_head(&FeedFilter::All).await.unwrap().map_or(Checkpoint::START, |h| h.checkpoint)
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn a_rebuild_equals_a_build_from_scratch() {
                let (dir, scratch_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
                let (backend, _schema) = live(&dir).await;
                let store = MemoryStore::new();
                seed_rounds(&store, 5, 0..12).await;
                let poison = NewEvent::new("Counted", 1, json!({ "poison": true }), Metadata::now());
                store.append(&stream(3), ExpectedVersion::Any, vec![poison]).await.unwrap();
                append_round(&store, 5).await;
                runner(&store, &backend, "live").drain().await.unwrap();
                // The live model drifted (a bug since fixed, say); the rebuild must not keep any of it.
                sqlx::query("UPDATE ledger_totals SET total = total + 1000").execute(backend.pool()).await.unwrap();
                sqlx::query("INSERT INTO ledger_entries (stream_id, version, n) VALUES ('stray', 1, 1)")
                    .execute(backend.pool())
                    .await
                    .unwrap();

                let mut reports: Vec<Progress> = Vec::new();
                let done = rebuild(&store, &backend, Ledger::default()).run(|p| reports.push(p)).await.unwrap();
                let events = 5 * 12 + 1 + 5;
                assert_eq!((done.events, done.checkpoint), (events, head(&store).await));
                assert_eq!(reports.first().map(|p| (p.events, p.head)), Some((0, head(&store).await)));
                assert_eq!(reports.len(), 1 + usize::try_from(events.div_ceil(5)).unwrap(), "one report per batch of 5");
                assert!(reports.windows(2).all(|w| w[0].events < w[1].events && w[0].checkpoint < w[1].checkpoint));
                assert_eq!(reports.last().map(|p| (p.events, p.checkpoint)), Some((done.events, done.checkpoint)));

                let (scratch, _scratch_schema) = live(&scratch_dir).await;
                runner(&store, &scratch, "scratch").drain().await.unwrap();
                assert_eq!(totals(&backend).await, totals(&scratch).await);
                assert_eq!(entries(&backend).await, entries(&scratch).await);
                assert_eq!(totals(&backend).await.len(), 5);
                let parked = |b: $backend| async move {
                    b.parked(NAME, None).await.unwrap().into_iter().map(|p| (p.event.event_id, p.reason)).collect::<Vec<_>>()
                };
                let rebuilt_parked = parked(backend.clone()).await;
                assert_eq!(rebuilt_parked.len(), 2, "stream 3 parked from its poison on: {rebuilt_parked:?}");
                assert_eq!(rebuilt_parked, parked(scratch.clone()).await);
                assert_eq!(runner(&store, &backend, "live").checkpoint().await.unwrap(), done.checkpoint, "checkpoint swapped");
                assert!(backend.lease(NAME).await.unwrap().is_none(), "the projection's lease was released");
                assert!(backend.lease("ledger#rebuild").await.unwrap().is_none(), "the rebuild's lease was released");
                assert!(!backend.shadow_exists(&dir).await, "the shadow was dropped");
            }

            /// No live runner: the checkpoint is swapped with the tables, and
            /// the next runner applies what was appended during the rebuild.
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn events_appended_during_a_rebuild_appear_once_after_the_swap() {
                let dir = tempfile::tempdir().unwrap();
                let (backend, _schema) = live(&dir).await;
                let store = MemoryStore::new();
                for _ in 0..20 {
                    append_round(&store, 4).await;
                }
                runner(&store, &backend, "live").drain().await.unwrap();
                // Appends run beside the replay: one round per replayed batch, for the first 20.
                let (tick, mut ticks) = tokio::sync::mpsc::unbounded_channel::<()>();
                let appender = {
                    let store = store.clone();
                    tokio::spawn(async move {
                        let mut rounds = 0;
                        while ticks.recv().await.is_some() {
                            if rounds < 20 {
                                append_round(&store, 4).await;
                                rounds += 1;
                            }
                        }
                        rounds
                    })
                };
                let shadow = rebuild(&store, &backend, Ledger::default()).prepare(|_| tick.send(()).unwrap()).await.unwrap();
                drop(tick);
                let during = appender.await.unwrap();
                // At least 17 reports: before the first of the 16 batches the first 80 events take, and after each.
                assert!(during >= 17, "{during} rounds appended during the replay");
                // And more between the replay and the swap.
                append_round(&store, 4).await;
                assert!(shadow.rebuilt().checkpoint < head(&store).await, "events the shadow has not seen");
                let done = shadow.swap().await.unwrap();
                assert!(done.events >= 80);
                runner(&store, &backend, "live").drain().await.unwrap();
                assert_exactly_once(&backend, 4, 20 + during + 1).await;
            }

            /// A live runner keeps its lease through the rebuild: the swap
            /// brings the shadow to the live checkpoint under its lock, and
            /// the live runner goes on from there.
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn a_rebuild_beside_a_live_runner_loses_and_repeats_nothing() {
                let dir = tempfile::tempdir().unwrap();
                let (backend, _schema) = live(&dir).await;
                let store = MemoryStore::new();
                for _ in 0..20 {
                    append_round(&store, 4).await;
                }
                let running = runner(&store, &backend, "live").spawn(());
                let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
                let appender = {
                    let store = store.clone();
                    tokio::spawn(async move {
                        let mut rounds = 0;
                        while stopped.try_recv().is_err() {
                            append_round(&store, 4).await;
                            rounds += 1;
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                        rounds
                    })
                };
                let options = RebuildOptions { batch_size: 50, owner: "rebuilder".to_owned(), ..RebuildOptions::default() };
                let rebuild = rebuild(&store, &backend, Ledger::default()).with_options(options);
                let shadow = rebuild.prepare(|_| {}).await.unwrap();
                // The live runner gets past what the shadow has seen before the swap.
                append_round(&store, 4).await;
                let live_runner = runner(&store, &backend, "observer");
                let target = head(&store).await;
                assert!(shadow.rebuilt().checkpoint < target);
                let caught_up = async {
                    while live_runner.checkpoint().await.unwrap() < target {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                };
                tokio::time::timeout(Duration::from_secs(60), caught_up).await.expect("the live runner caught up");
                assert_eq!(backend.lease(NAME).await.unwrap().map(|l| l.owner).as_deref(), Some("live"));
                let replayed = shadow.rebuilt();
                let done = shadow.swap().await.unwrap();
                assert!(done.events > replayed.events, "brought up to the live checkpoint: {done:?} {replayed:?}");
                assert!(done.checkpoint >= target);
                stop.send(()).unwrap();
                let rounds = appender.await.unwrap();
                running.stop().await.unwrap();
                assert_exactly_once(&backend, 4, 20 + 1 + rounds).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn a_failed_rebuild_leaves_the_live_model_untouched() {
                let dir = tempfile::tempdir().unwrap();
                let (backend, _schema) = live(&dir).await;
                let store = MemoryStore::new();
                for _ in 0..10 {
                    append_round(&store, 3).await;
                }
                runner(&store, &backend, "live").drain().await.unwrap();
                let poison = NewEvent::new("Counted", 1, json!({ "poison": true }), Metadata::now());
                store.append(&stream(1), ExpectedVersion::Any, vec![poison]).await.unwrap();
                runner(&store, &backend, "live").drain().await.unwrap();
                sqlx::query("UPDATE ledger_totals SET total = total + 1000").execute(backend.pool()).await.unwrap();
                let before = (totals(&backend).await, entries(&backend).await, backend.checkpoints().await.unwrap());
                let parked_before = backend.parked(NAME, None).await.unwrap();
                assert_eq!(parked_before.len(), 1);

                // The replay breaks down half way.
                let failed = rebuild(&store, &backend, Ledger { transient_at: Some(15), ..Ledger::default() }).run(|_| {}).await;
                assert!(matches!(failed, Err(RebuildError::Projection(eslab_projection::Error::Transient { .. }))), "{failed:?}");
                assert_eq!((totals(&backend).await, entries(&backend).await, backend.checkpoints().await.unwrap()), before);
                assert_eq!(backend.parked(NAME, None).await.unwrap(), parked_before);
                assert!(!backend.shadow_exists(&dir).await, "the shadow was dropped");

                // The swap breaks down after the first table went in: it is rolled back whole.
                backend.sabotage(true).await;
                let failed = rebuild(&store, &backend, Ledger::default()).run(|_| {}).await;
                assert!(matches!(failed, Err(RebuildError::Database { .. })), "{failed:?}");
                assert_eq!((totals(&backend).await, entries(&backend).await, backend.checkpoints().await.unwrap()), before);
                assert_eq!(backend.parked(NAME, None).await.unwrap(), parked_before);
                assert!(!backend.shadow_exists(&dir).await, "the shadow was dropped");
                assert!(backend.lease(NAME).await.unwrap().is_none() && backend.lease("ledger#rebuild").await.unwrap().is_none());

                // Another rebuild of it under way is refused.
                let guard = rebuild(&store, &backend, Ledger::default());
                assert!(backend.acquire_lease("ledger#rebuild", "someone-else", Duration::from_secs(30)).await.unwrap());
                let busy = guard.run(|_| {}).await;
                assert!(matches!(&busy, Err(RebuildError::Busy { holder, .. }) if holder == "someone-else"), "{busy:?}");
                backend.release_lease("ledger#rebuild", "someone-else").await.unwrap();

                backend.sabotage(false).await;
                rebuild(&store, &backend, Ledger::default()).run(|_| {}).await.unwrap();
                let rows = totals(&backend).await;
                assert_eq!(rows.iter().map(|r| (r.1, r.2)).collect::<Vec<_>>(), [(10, 10); 3], "fixed by the rebuild");
                assert_eq!(backend.parked(NAME, None).await.unwrap().len(), 1, "the poison stays parked");
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn a_table_the_projection_does_not_create_is_refused() {
                let dir = tempfile::tempdir().unwrap();
                let (backend, _schema) = live(&dir).await;
                struct Careless;
                impl Projection<$backend> for Careless {
                    fn name(&self) -> &str {
                        "careless"
                    }
                    async fn apply(&self, _: &mut <$backend as Backend>::Tx, _: &RecordedEvent) -> Result<(), HandlerError> {
                        Ok(())
                    }
                }
                impl ReadModel<$backend> for Careless {
                    fn tables(&self) -> Vec<String> {
                        vec!["ledger_totals".to_owned(), "never_created".to_owned()]
                    }
                    async fn create_tables(&self, backend: &$backend) -> Result<(), BoxError> {
                        Ledger::default().create_tables(backend).await
                    }
                }
                let store = EventStore::new(MemoryStore::new());
                let missing = Rebuild::new(store.clone(), Arc::new(backend.clone()), Arc::new(Careless)).run(|_| {}).await;
                assert!(matches!(&missing, Err(RebuildError::MissingTable { table, .. }) if table == "never_created"), "{missing:?}");
                struct Sneaky;
                impl Projection<$backend> for Sneaky {
                    fn name(&self) -> &str {
                        "sneaky"
                    }
                    async fn apply(&self, _: &mut <$backend as Backend>::Tx, _: &RecordedEvent) -> Result<(), HandlerError> {
                        Ok(())
                    }
                }
                impl ReadModel<$backend> for Sneaky {
                    fn tables(&self) -> Vec<String> {
                        vec!["ledger_totals; DROP TABLE ledger_entries".to_owned()]
                    }
                    async fn create_tables(&self, _: &$backend) -> Result<(), BoxError> {
                        Ok(())
                    }
                }
                let invalid = Rebuild::new(store, Arc::new(backend.clone()), Arc::new(Sneaky)).run(|_| {}).await;
                assert!(matches!(invalid, Err(RebuildError::InvalidName { what: "table", .. })), "{invalid:?}");
                assert!(entries(&backend).await.is_empty(), "still there");
            }
        }
    };
}

rebuild_tests!(postgres, PgBackend, pg_backend);
rebuild_tests!(sqlite, SqliteBackend, sqlite_backend);

/// A live batch that read its checkpoint before the swap and writes after it
/// (PostgreSQL: on SQLite the swap waits for the batch's writer connection).
/// The shadow is behind the live runner; the swap brings it to the live
/// checkpoint, so the held batch fits the new tables. (Swapping the shadow's
/// checkpoint in instead would make the held batch skip what the live runner
/// had applied after the shadow: its streams would park on the gaps.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_batch_held_across_the_swap_fits_the_new_tables() {
    use postgres::{assert_exactly_once, head, live, rebuild, runner};
    let dir = tempfile::tempdir().unwrap();
    let (backend, _schema) = live(&dir).await;
    let store = MemoryStore::new();
    for _ in 0..20 {
        append_round(&store, 4).await;
    }
    runner(&store, &backend, "live").drain().await.unwrap();
    let shadow = rebuild(&store, &backend, Ledger::default()).prepare(|_| {}).await.unwrap();
    // The live runner moves past the shadow...
    append_round(&store, 4).await;
    runner(&store, &backend, "live").drain().await.unwrap();
    // ...and starts a batch that it holds before its first write.
    append_round(&store, 4).await;
    let gate = Arc::new(Gate::closed());
    let entered = gate.entered.notified();
    let held = Runner::new(
        EventStore::new(store.clone()),
        Arc::new(backend.clone()),
        Arc::new(Ledger { gate: Some(gate.clone()), ..Ledger::default() }),
    )
    .with_options(RunnerOptions { owner: "live".to_owned(), ..RunnerOptions::default() });
    let batch = tokio::spawn(async move { held.run_once().await });
    entered.await;
    let live_at = runner(&store, &backend, "observer").checkpoint().await.unwrap();
    assert!(shadow.rebuilt().checkpoint < live_at && live_at < head(&store).await);

    let done = shadow.swap().await.unwrap();
    assert_eq!(done.checkpoint, live_at, "the live checkpoint stays");
    gate.open.add_permits(1);
    assert!(matches!(batch.await.unwrap().unwrap(), eslab_projection::Outcome::Processed { events: 4, parked: 0, .. }));
    runner(&store, &backend, "live").drain().await.unwrap();
    assert_exactly_once(&backend, 4, 22).await;
}

/// The example on the projections page (docs/patterns/projections.md) is the
/// module's doc test, which `cargo test --doc` compiles, minus its hidden lines.
#[test]
fn the_documented_example_is_the_compiled_one() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let source = std::fs::read_to_string(root.join("src/rebuild.rs")).unwrap();
    let start = source.find("//! ```no_run\n").unwrap() + "//! ```no_run\n".len();
    let end = start + source[start..].find("//! ```\n").unwrap();
    let compiled: Vec<&str> = source[start..end]
        .lines()
        .map(|l| l.strip_prefix("//! ").unwrap_or_else(|| l.trim_start_matches("//!")))
        .filter(|l| !l.starts_with("# "))
        .collect();
    let page = std::fs::read_to_string(root.join("../../docs/patterns/projections.md")).unwrap();
    let block = &page[page.find("<!-- rebuild-example").unwrap()..];
    let block = &block[block.find("```rust\n").unwrap() + "```rust\n".len()..];
    let documented: Vec<&str> = block[..block.find("```\n").unwrap()].lines().collect();
    assert!(compiled.len() > 40, "the doc test was not found: {compiled:?}");
    assert_eq!(
        documented, compiled,
        "docs/patterns/projections.md's example differs from the doc test of src/rebuild.rs"
    );
}
