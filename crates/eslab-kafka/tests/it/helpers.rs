//! Fresh schemas, fresh topics, fresh consumer groups; the test domain's read
//! model; seeding events; reading a topic back; a broker of the test's own.
//!
//! The domain is eslab-testing's [`Tally`] (a running total: `Added { n }`,
//! `Closed`), not the example bank: this crate is generic and its tests stay so.

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use eslab_core::{
    Aggregate, Codec, EventAppender, EventStore, ExpectedVersion, JsonCodec, Metadata, RecordedEvent, StreamAppend,
};
use eslab_kafka::{KafkaOptions, Worker, WorkerOptions, WorkerTables};
use eslab_postgres::PostgresStore;
use eslab_projection::{Backend, HandlerError, PgBackend, Projection};
use eslab_testing::pg::FreshSchema;
use eslab_testing::repository::{Tally, TallyEvent, tally_upcasters};
use rdkafka::consumer::{Consumer, StreamConsumer};

/// A category the worker subscribes to but nothing is ever published to: its
/// topic does not exist, and the worker must take that in stride (a consumer
/// notice, nothing to apply).
pub(crate) const NEVER_PUBLISHED: &str = "quiet";

/// The stream id of tally `id`, as a string (`tally-<id>`).
pub(crate) fn stream(id: &str) -> String {
    Tally::stream_id(id).unwrap().as_str().to_owned()
}

/// The read model the worker keeps: per tally its total, version and whether
/// it is closed (`tally_summary`), and one history row per `Added`
/// (`tally_history`, with the correlation id that crossed Kafka in the
/// headers). Events at or below a summary's version are ignored; a gap, or an
/// event it cannot decode, is a permanent handler failure (the stream parks).
pub(crate) struct TallyViews;

impl TallyViews {
    const DDL: [&str; 2] = [
        "CREATE TABLE IF NOT EXISTS tally_summary (
            id TEXT PRIMARY KEY, total BIGINT NOT NULL, version BIGINT NOT NULL, closed BOOLEAN NOT NULL)",
        "CREATE TABLE IF NOT EXISTS tally_history (
            id TEXT NOT NULL, version BIGINT NOT NULL, n BIGINT NOT NULL, total BIGINT NOT NULL,
            correlation_id UUID, PRIMARY KEY (id, version))",
    ];
}

impl Projection<PgBackend> for TallyViews {
    fn name(&self) -> &str {
        "tally-views"
    }

    async fn apply(&self, tx: &mut <PgBackend as Backend>::Tx, event: &RecordedEvent) -> Result<(), HandlerError> {
        if event.stream_id.category() != Tally::KIND {
            return Ok(());
        }
        let err = |e: sqlx::Error| HandlerError::transient(e.to_string());
        let id = event.stream_id.id();
        let row: Option<(i64, i64, bool)> =
            sqlx::query_as("SELECT total, version, closed FROM tally_summary WHERE id = $1")
                .bind(id)
                .fetch_optional(&mut **tx)
                .await
                .map_err(err)?;
        let (total, seen, closed) = row.unwrap_or((0, 0, false));
        let version = i64::try_from(event.stream_version.get()).map_err(|e| HandlerError::new(e.to_string()))?;
        if version <= seen {
            return Ok(());
        }
        if version != seen + 1 {
            return Err(HandlerError::new(format!("{}: gap, saw {seen}, got {version}", event.stream_id)));
        }
        let decoded: TallyEvent =
            JsonCodec.decode(event).map_err(|e| HandlerError::new(e.to_string()).with_source(e))?;
        let (total, closed) = match decoded {
            TallyEvent::Added { n } => {
                let total = total.saturating_add(n);
                sqlx::query(
                    "INSERT INTO tally_history (id, version, n, total, correlation_id) VALUES ($1, $2, $3, $4, $5)",
                )
                .bind(id)
                .bind(version)
                .bind(n)
                .bind(total)
                .bind(event.metadata.correlation_id)
                .execute(&mut **tx)
                .await
                .map_err(err)?;
                (total, closed)
            }
            TallyEvent::Closed => (total, true),
        };
        sqlx::query(
            "INSERT INTO tally_summary (id, total, version, closed) VALUES ($1, $2, $3, $4)
             ON CONFLICT (id) DO UPDATE SET total = excluded.total, version = excluded.version, closed = excluded.closed",
        )
        .bind(id)
        .bind(total)
        .bind(version)
        .bind(closed)
        .execute(&mut **tx)
        .await
        .map_err(err)?;
        Ok(())
    }
}

/// A row of `tally_summary`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Summary {
    pub(crate) total: i64,
    pub(crate) version: u64,
    pub(crate) closed: bool,
}

/// A row of `tally_history`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HistoryRow {
    pub(crate) version: u64,
    pub(crate) n: i64,
    pub(crate) correlation_id: Option<uuid::Uuid>,
}

/// Queries of the [`TallyViews`] read model.
pub(crate) struct Views(sqlx::PgPool);

impl Views {
    pub(crate) async fn tally(&self, id: &str) -> Option<Summary> {
        let row: Option<(i64, i64, bool)> =
            sqlx::query_as("SELECT total, version, closed FROM tally_summary WHERE id = $1")
                .bind(id)
                .fetch_optional(&self.0)
                .await
                .unwrap();
        row.map(|(total, version, closed)| Summary { total, version: u64::try_from(version).unwrap(), closed })
    }

    /// Its history, by version.
    pub(crate) async fn history(&self, id: &str) -> Vec<HistoryRow> {
        let rows: Vec<(i64, i64, Option<uuid::Uuid>)> =
            sqlx::query_as("SELECT version, n, correlation_id FROM tally_history WHERE id = $1 ORDER BY version")
                .bind(id)
                .fetch_all(&self.0)
                .await
                .unwrap();
        rows.into_iter()
            .map(|(version, n, correlation_id)| HistoryRow {
                version: u64::try_from(version).unwrap(),
                n,
                correlation_id,
            })
            .collect()
    }
}

/// The shared test broker: `KAFKA_BROKERS`, or 127.0.0.1:9092.
pub(crate) fn brokers() -> String {
    std::env::var("KAFKA_BROKERS").unwrap_or_else(|_| eslab_kafka::DEFAULT_BROKERS.into())
}

/// Fails the test with instructions when nothing answers at `brokers`.
pub(crate) fn require_broker(brokers: &str) {
    let first = brokers.split(',').next().unwrap_or_default();
    let reachable = std::net::ToSocketAddrs::to_socket_addrs(first)
        .ok()
        .and_then(|mut a| a.next())
        .is_some_and(|a| std::net::TcpStream::connect_timeout(&a, Duration::from_secs(2)).is_ok());
    assert!(
        reachable,
        "no Kafka broker answers at {brokers}: start the test broker with `make services` \
         (scripts/services.sh start), or set KAFKA_BROKERS"
    );
}

/// A fresh PostgreSQL schema holding the events, the read models, the
/// checkpoints and the worker's tables. Call [`Env::cleanup`] at the end (a
/// failed test's schema is dropped with the `Env`).
pub(crate) struct Env {
    pub(crate) store: PostgresStore,
    pub(crate) kafka: KafkaOptions,
    pub(crate) group: String,
    schema: FreshSchema,
}

impl Env {
    /// A fresh schema, topic prefix `t<uuid>.` and consumer group, on the shared broker.
    pub(crate) async fn new() -> Env {
        let brokers = brokers();
        require_broker(&brokers);
        Env::on(&brokers).await
    }

    /// The same on the broker at `brokers`.
    pub(crate) async fn on(brokers: &str) -> Env {
        // The relay's and worker's warnings (a failed batch and why) go into
        // the test's captured output, shown when it fails. RUST_LOG overrides.
        let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into());
        let _ = tracing_subscriber::fmt().with_test_writer().with_env_filter(filter).try_init();
        let schema = FreshSchema::new("eslab_test");
        let store = schema.open().await;
        let id = uuid::Uuid::now_v7().simple().to_string();
        let backend = PgBackend::new(store.pool().clone());
        backend.ensure_schema().await.unwrap();
        for ddl in TallyViews::DDL {
            sqlx::query(ddl).execute(store.pool()).await.unwrap();
        }
        WorkerTables::new(store.pool().clone()).ensure_schema().await.unwrap();
        let kafka = KafkaOptions::new(brokers)
            .with_topic_prefix(format!("t{id}."))
            .with_partitions(4)
            .with("client.id", format!("eslab-test-{id}"))
            .with("debug", "cgrp");
        Env { store, kafka, group: format!("g{id}"), schema }
    }

    /// The store as a relay reads it: with the domain's upcasters.
    pub(crate) fn feed(&self) -> EventStore<PostgresStore> {
        EventStore::new(self.store.clone()).with_upcasters(tally_upcasters())
    }

    pub(crate) fn backend(&self) -> Arc<PgBackend> {
        Arc::new(PgBackend::new(self.store.pool().clone()))
    }

    pub(crate) fn views(&self) -> Views {
        Views(self.store.pool().clone())
    }

    pub(crate) fn tables(&self) -> WorkerTables<sqlx::PgPool> {
        WorkerTables::new(self.store.pool().clone())
    }

    /// A worker of this test's group applying [`TallyViews`].
    pub(crate) fn worker(&self, batch: usize) -> Worker<PgBackend, TallyViews> {
        let options =
            WorkerOptions { batch_size: batch, ..WorkerOptions::new(&self.group, &[Tally::KIND, NEVER_PUBLISHED]) };
        Worker::new(&self.kafka, self.backend(), Arc::new(TallyViews), options).unwrap()
    }

    pub(crate) async fn cleanup(self) {
        self.schema.drop_schema().await;
    }
}

/// What the seeded tallies must look like in the read model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Expected {
    /// Tally id -> (total, version).
    pub(crate) tallies: BTreeMap<String, (i64, u64)>,
    /// Every event appended.
    pub(crate) events: usize,
}

/// Appends, for each of `tallies` tallies with ids `<tag><n>`, `events`
/// events `Added { n: v }` at versions v = 1..=events (one append per tally).
pub(crate) async fn seed(store: &PostgresStore, tag: &str, tallies: usize, events: usize) -> Expected {
    let mut expected = Expected { tallies: BTreeMap::new(), events: 0 };
    let mut appends = Vec::new();
    for t in 0..tallies {
        let id = format!("{tag}{t}");
        let correlation = uuid::Uuid::now_v7();
        let meta = || Metadata::now().with_correlation_id(correlation).with_actor("seed");
        let new: Vec<_> = (1..=i64::try_from(events).unwrap())
            .map(|n| JsonCodec.encode(&TallyEvent::Added { n }, meta()).unwrap())
            .collect();
        expected.events += new.len();
        let total = (1..=i64::try_from(events).unwrap()).sum();
        expected.tallies.insert(id.clone(), (total, u64::try_from(events).unwrap()));
        appends.push(StreamAppend::new(Tally::stream_id(&id).unwrap(), ExpectedVersion::Any, new));
    }
    for chunk in appends.chunks(50) {
        store.append_streams(chunk.to_vec()).await.unwrap();
    }
    expected
}

/// Whether the read model holds exactly `expected` (totals and versions).
pub(crate) async fn read_model_is(env: &Env, expected: &Expected) -> bool {
    let views = env.views();
    for (id, (total, version)) in &expected.tallies {
        match views.tally(id).await {
            Some(row) if row.total == *total && row.version == *version => {}
            _ => return false,
        }
    }
    true
}

/// Asserts the read model is exact, history included (one row per event, in
/// version order, each with its own `n`), and the worker's applied versions.
pub(crate) async fn assert_read_model(env: &Env, expected: &Expected) {
    let views = env.views();
    for (id, (total, version)) in &expected.tallies {
        let row = views.tally(id).await.unwrap_or_else(|| panic!("no summary for {id}"));
        assert_eq!((row.total, row.version), (*total, *version), "tally {id}");
        let history = views.history(id).await;
        let versions: Vec<u64> = history.iter().map(|h| h.version).collect();
        assert_eq!(versions, (1..=*version).collect::<Vec<_>>(), "history of {id}: in order, no repeat, none missing");
        assert!(history.iter().all(|h| h.n == i64::try_from(h.version).unwrap()), "history of {id}: {history:?}");
        let applied = env.tables().applied_version(&env.group, &stream(id)).await.unwrap();
        assert_eq!(applied, *version, "applied version of {id}");
    }
    assert!(env.tables().gaps(&env.group).await.unwrap().is_empty(), "no gaps");
}

/// Runs `worker` until the read model holds `expected` (or `within` passes).
pub(crate) async fn run_worker_until(
    env: &Env,
    worker: &Worker<PgBackend, TallyViews>,
    expected: &Expected,
    within: Duration,
) {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        worker.run_once(Duration::from_millis(200)).await.unwrap();
        if read_model_is(env, expected).await {
            return;
        }
        if tokio::time::Instant::now() >= deadline {
            let gaps = env.tables().gaps(&env.group).await.unwrap();
            let mut wrong = Vec::new();
            for (id, want) in &expected.tallies {
                let row = env.views().tally(id).await.map(|r| (r.total, r.version));
                let applied = env.tables().applied_version(&env.group, &stream(id)).await.unwrap();
                if row != Some(*want) {
                    wrong.push((id.clone(), row, *want, applied));
                }
            }
            panic!(
                "read model not complete after {within:?}: {:?}; gaps {:?}; wrong {} {:?}",
                worker.totals(),
                &gaps[..gaps.len().min(4)],
                wrong.len(),
                &wrong[..wrong.len().min(4)]
            );
        }
    }
}

/// Reads every message of the category topics (from the beginning, with a
/// throwaway group) until `at_least` distinct events (stream, version)
/// arrived and nothing more comes for a second, or `within` passes. Returns
/// the decoded events, duplicates included.
///
/// Distinct, not messages: the relay is at-least-once, so a batch published
/// again after a broker outage puts duplicates on the topic; counting them
/// let the reader stop early while a partition was still unread (seen when
/// the reader's group session timed out on a loaded machine and it paused to
/// rejoin for more than the quiet second).
pub(crate) async fn read_topics(
    kafka: &KafkaOptions,
    categories: &[&str],
    at_least: usize,
    within: Duration,
) -> Vec<RecordedEvent> {
    let group = format!("reader-{}", uuid::Uuid::now_v7().simple());
    let consumer: StreamConsumer = eslab_kafka::worker::consumer_config(kafka, &group).create().unwrap();
    let topics: Vec<String> = categories.iter().map(|c| kafka.topic(c)).collect();
    consumer.subscribe(&topics.iter().map(String::as_str).collect::<Vec<_>>()).unwrap();
    let deadline = tokio::time::Instant::now() + within;
    let mut out: Vec<RecordedEvent> = Vec::new();
    let mut distinct = std::collections::HashSet::new();
    loop {
        let quiet = if distinct.len() >= at_least { Duration::from_secs(1) } else { Duration::from_secs(5) };
        let wait = quiet.min(deadline.saturating_duration_since(tokio::time::Instant::now()));
        match tokio::time::timeout(wait, consumer.recv()).await {
            Ok(Ok(m)) => {
                let event = eslab_kafka::message::decode(&m).unwrap();
                distinct.insert((event.stream_id.clone(), event.stream_version));
                out.push(event);
            }
            Ok(Err(e)) => panic!("reading {topics:?}: {e}"),
            Err(_) if distinct.len() >= at_least || tokio::time::Instant::now() >= deadline => return out,
            Err(_) => {}
        }
    }
}

/// Asserts every seeded event (stream, version) is among `events`.
pub(crate) fn assert_all_published(expected: &Expected, events: &[RecordedEvent]) {
    let mut seen: BTreeMap<String, std::collections::BTreeSet<u64>> = BTreeMap::new();
    for e in events {
        seen.entry(e.stream_id.id().to_owned()).or_default().insert(e.stream_version.get());
    }
    for (id, (_, version)) in &expected.tallies {
        let versions = seen.get(id).cloned().unwrap_or_default();
        let all: std::collections::BTreeSet<u64> = (1..=*version).collect();
        assert_eq!(versions, all, "versions of {} on the topic", stream(id));
    }
}

/// A tansu broker of the test's own, on a free port, storing in SQLite under
/// a temp dir so it can be stopped and started again with its data.
pub(crate) struct OwnBroker {
    pub(crate) port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

/// The tansu binary: `TANSU`, on `PATH`, or in `~/.cargo/bin`.
fn tansu() -> std::path::PathBuf {
    if let Ok(p) = std::env::var("TANSU") {
        return p.into();
    }
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join("tansu"))
        .find(|p| p.is_file());
    let home = std::env::var_os("HOME").map(|h| std::path::PathBuf::from(h).join(".cargo/bin/tansu"));
    on_path.or(home.filter(|p| p.is_file())).unwrap_or_else(|| {
        panic!("tansu is not installed: run `make services` (it installs it) or set TANSU to its path")
    })
}

impl OwnBroker {
    pub(crate) fn start() -> OwnBroker {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut broker = OwnBroker { port, dir: tempfile::tempdir().unwrap(), child: None };
        broker.restart();
        broker
    }

    pub(crate) fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Starts the broker (again) and waits until it answers.
    pub(crate) fn restart(&mut self) {
        let url = format!("tcp://127.0.0.1:{}", self.port);
        let log = std::fs::File::create(self.dir.path().join("tansu.log")).unwrap();
        let child = Command::new(tansu())
            .current_dir(self.dir.path())
            .args(["broker", "--listener-url", &url, "--advertised-listener-url", &url])
            .args(["--storage-engine", "sqlite://tansu.db"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("own tansu broker did not answer on port {}", self.port);
    }

    /// Stops the broker as an operator's restart does: SIGTERM, then SIGKILL
    /// if it is still there after 5 s. Not SIGKILL at once: tansu's SQLite
    /// storage does not recover its idempotent-producer state from a crash
    /// (seen in loaded CI runs: afterwards it answered the relay's producer
    /// with "unknown broker error" and reset the connection of every new
    /// producer, so nothing could be published again), and this test is of
    /// the relay, not of the test broker's crash recovery.
    pub(crate) fn stop(&mut self) {
        if let Some(child) = &self.child {
            let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
        }
        for _ in 0..50 {
            let exited = self.child.as_mut().is_none_or(|c| matches!(c.try_wait(), Ok(Some(_))));
            if exited {
                self.child = None;
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        self.kill();
    }

    /// Kills the broker (SIGKILL: no clean shutdown).
    pub(crate) fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for OwnBroker {
    fn drop(&mut self) {
        self.kill();
    }
}
