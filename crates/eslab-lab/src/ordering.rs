//! Experiment 3: reading the global feed while writers commit out of order.
//! Writers hold each transaction open a little after inserting (as real
//! commands do), so positions commit out of order. Readers tail the feed
//! concurrently: a naive reader by `global_position`, eslab's feed (the xid8
//! watermark, `PostgresStore::read_feed`), and a naive reader over writers
//! that serialize on a per-category lock. Every event a reader never sees is
//! counted as missed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use eslab_core::{Checkpoint, EventReader, ExpectedVersion, FeedFilter, StreamAppend, StreamId};
use eslab_postgres::{Notify, PostgresStore};
use futures_util::future::LocalBoxFuture;

use super::chart::Chart;
use super::measure::{Budget, Latencies, per_second};
use super::report::{Cell, Report, Table, ratio};
use super::workload::more_deposits;
use super::{Experiment, Lab};

/// Experiment 3.
pub(super) struct FeedOrdering;

/// When each committed position became committed, per the writer.
type Commits = Arc<Mutex<HashMap<u64, Instant>>>;

struct Writes {
    events: u64,
    elapsed: Duration,
    latencies: Latencies,
}

async fn writer(
    store: PostgresStore,
    category_lock: bool,
    budget: Budget,
    seed: u64,
    commits: Commits,
) -> anyhow::Result<(u64, Latencies)> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let stream: StreamId = format!("account-{seed}-{}", uuid::Uuid::now_v7().simple()).parse()?;
    let mut latencies = Latencies::new()?;
    let mut events = 0;
    let started = Instant::now();
    let mut done = 0;
    let mut balance = eslab_bank::Balance::ZERO;
    while budget.more(done, started) {
        let (rows, after) = more_deposits(rng.usize(1..=3), balance)?;
        balance = after;
        let t = Instant::now();
        let mut tx = store.pool().begin().await?;
        if category_lock {
            sqlx::query("SELECT pg_advisory_xact_lock(hashtext('account'))").execute(&mut *tx).await?;
        }
        let appended =
            store.append_in_tx(&mut tx, vec![StreamAppend::new(stream.clone(), ExpectedVersion::Any, rows)]).await?;
        // The command's remaining work: the transaction stays open, so
        // positions taken above commit out of order across writers.
        tokio::time::sleep(Duration::from_micros(rng.u64(0..2_000))).await;
        tx.commit().await?;
        let committed = Instant::now();
        latencies.record(committed - t);
        let mut map = commits.lock().map_err(|_| anyhow::anyhow!("commit map poisoned"))?;
        for result in &appended {
            for e in &result.events {
                map.insert(e.position.get(), committed);
                events += 1;
            }
        }
        done += 1;
    }
    Ok((events, latencies))
}

/// What a reader saw: each position once, when.
#[derive(Default)]
struct Seen {
    at: HashMap<u64, Instant>,
    duplicates: u64,
}

impl Seen {
    fn saw(&mut self, position: u64) {
        if self.at.insert(position, Instant::now()).is_some() {
            self.duplicates += 1;
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Reader {
    Naive,
    Watermark,
}

/// Tails the feed until `done` is set and it has caught up (the watermark
/// reader until it has seen `expected()` events or `grace` passed).
async fn reader(
    store: PostgresStore,
    kind: Reader,
    done: Arc<std::sync::atomic::AtomicBool>,
    expected: Arc<std::sync::atomic::AtomicU64>,
    grace: Duration,
) -> anyhow::Result<Seen> {
    use std::sync::atomic::Ordering::SeqCst;
    let mut seen = Seen::default();
    let mut last_position: i64 = 0;
    let mut checkpoint = Checkpoint::START;
    let mut finished_at: Option<Instant> = None;
    loop {
        let finished = done.load(SeqCst);
        let got = match kind {
            Reader::Naive => {
                let rows: Vec<i64> = sqlx::query_scalar(
                    "SELECT global_position FROM events WHERE global_position > $1 ORDER BY global_position LIMIT 1000",
                )
                .bind(last_position)
                .fetch_all(store.pool())
                .await?;
                for p in &rows {
                    seen.saw(u64::try_from(*p)?);
                    last_position = last_position.max(*p);
                }
                rows.len()
            }
            Reader::Watermark => {
                let page = store.read_feed(&FeedFilter::All, checkpoint, 1000).await?;
                for e in &page {
                    seen.saw(e.position.get());
                    checkpoint = e.checkpoint();
                }
                page.len()
            }
        };
        if finished {
            let since = *finished_at.get_or_insert_with(Instant::now);
            let caught_up = match kind {
                // A naive reader never goes back: once it reads nothing new, it is done.
                Reader::Naive => got == 0,
                Reader::Watermark => u64::try_from(seen.at.len())? >= expected.load(SeqCst),
            };
            if caught_up || since.elapsed() > grace {
                return Ok(seen);
            }
        }
        if got == 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
}

struct Phase {
    writes: Writes,
    readers: Vec<(Reader, Seen)>,
    commits: HashMap<u64, Instant>,
}

async fn phase(
    lab: &Lab,
    writers: u64,
    budget: Budget,
    category_lock: bool,
    kinds: &[Reader],
) -> anyhow::Result<Phase> {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
    let connections = u32::try_from(writers)? + u32::try_from(kinds.len())? + 2;
    // No NOTIFY: PostgreSQL serializes the commits of notifying transactions,
    // which would hide the reordering this experiment is about.
    let store = lab
        .pg_store(|o| o.max_connections(connections).notify(Notify::Off).feed_settle(Duration::from_millis(200)))
        .await?;
    let commits: Commits = Arc::new(Mutex::new(HashMap::new()));
    let done = Arc::new(AtomicBool::new(false));
    let expected = Arc::new(AtomicU64::new(u64::MAX));
    let grace = Duration::from_secs(30);
    let readers: Vec<_> =
        kinds.iter().map(|k| tokio::spawn(reader(store.clone(), *k, done.clone(), expected.clone(), grace))).collect();
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..writers {
        tasks.spawn(writer(store.clone(), category_lock, budget, w + 1, commits.clone()));
    }
    let mut writes = Writes { events: 0, elapsed: Duration::ZERO, latencies: Latencies::new()? };
    while let Some(joined) = tasks.join_next().await {
        let (events, l) = joined??;
        writes.events += events;
        writes.latencies.merge(&l)?;
    }
    writes.elapsed = started.elapsed();
    expected.store(writes.events, SeqCst);
    done.store(true, SeqCst);
    let mut seen = Vec::new();
    for (kind, handle) in kinds.iter().zip(readers) {
        seen.push((*kind, handle.await??));
    }
    let commits = std::mem::take(&mut *commits.lock().map_err(|_| anyhow::anyhow!("commit map poisoned"))?);
    Ok(Phase { writes, readers: seen, commits })
}

struct Row {
    name: &'static str,
    events: u64,
    events_per_s: f64,
    write: Latencies,
    seen: u64,
    missed: u64,
    duplicates: u64,
    lag: Latencies,
}

fn row(name: &'static str, phase: &Phase, kind: Reader) -> anyhow::Result<Row> {
    let seen =
        phase.readers.iter().find(|(k, _)| *k == kind).map(|(_, s)| s).ok_or_else(|| anyhow::anyhow!("no reader"))?;
    let mut lag = Latencies::new()?;
    for (position, committed) in &phase.commits {
        if let Some(at) = seen.at.get(position) {
            lag.record(at.saturating_duration_since(*committed));
        }
    }
    let counted = phase.commits.keys().filter(|p| seen.at.contains_key(p)).count();
    let seen_n = u64::try_from(counted)?;
    Ok(Row {
        name,
        events: phase.writes.events,
        events_per_s: per_second(phase.writes.events, phase.writes.elapsed),
        write: phase.writes.latencies.clone(),
        seen: seen_n,
        missed: phase.writes.events.saturating_sub(seen_n),
        duplicates: seen.duplicates,
        lag,
    })
}

/// The names of the three approaches (rows of the table).
const NAIVE: &str = "naive position order";
/// eslab's feed.
const WATERMARK: &str = "eslab xid8 watermark feed";
/// Writers serialized per category.
const CATEGORY_LOCK: &str = "per-category lock + position order";

impl Experiment for FeedOrdering {
    fn number(&self) -> u8 {
        3
    }

    fn id(&self) -> &'static str {
        "ordering"
    }

    fn title(&self) -> &'static str {
        "Global-feed ordering under concurrent writers"
    }

    fn question(&self) -> &'static str {
        "While writers commit out of position order, how many events does a reader tailing the feed by \
         global_position skip, compared with eslab's xid8-watermark feed and with writers serialized by a \
         per-category lock, and what does each cost in write throughput and read lag?"
    }

    fn run<'a>(&'a self, lab: &'a Lab) -> LocalBoxFuture<'a, anyhow::Result<Report>> {
        Box::pin(async move {
            let scale = lab.scale();
            let writers: u64 = scale.pick(4, 8, 16);
            let budget = scale.pick(
                Budget::new(15, 15, Duration::ZERO),
                Budget::new(5, 1_000_000, Duration::from_secs(4)),
                Budget::new(20, 10_000_000, Duration::from_secs(20)),
            );
            lab.steps(2);
            lab.doing("writers without a lock; naive and watermark readers");
            let free = phase(lab, writers, budget, false, &[Reader::Naive, Reader::Watermark]).await?;
            lab.step("writers under a per-category lock; naive reader");
            let locked = phase(lab, writers, budget, true, &[Reader::Naive]).await?;
            lab.step("");
            let rows = vec![
                row(NAIVE, &free, Reader::Naive)?,
                row(WATERMARK, &free, Reader::Watermark)?,
                row(CATEGORY_LOCK, &locked, Reader::Naive)?,
            ];
            Ok(report(&rows, writers, budget))
        })
    }
}

fn report(rows: &[Row], writers: u64, budget: Budget) -> Report {
    let mut table = Table::new(&[
        "approach",
        "events written",
        "write events/s",
        "write p50 (ms)",
        "write p99 (ms)",
        "events seen",
        "events missed",
        "duplicates",
        "read lag p50 (ms)",
        "read lag p99 (ms)",
    ]);
    for r in rows {
        table.push(vec![
            Cell::text(r.name),
            Cell::Int(r.events),
            Cell::num(r.events_per_s, 0),
            Cell::num(r.write.p50_ms(), 2),
            Cell::num(r.write.p99_ms(), 2),
            Cell::Int(r.seen),
            Cell::Int(r.missed),
            Cell::Int(r.duplicates),
            Cell::num(r.lag.p50_ms(), 2),
            Cell::num(r.lag.p99_ms(), 2),
        ]);
    }
    let chart = Chart {
        title: "Events missed by a tailing reader, and write throughput".into(),
        x_label: "approach".into(),
        y_label: "count / events per second".into(),
        categories: rows.iter().map(|r| r.name.to_owned()).collect(),
        series: vec![
            #[allow(clippy::cast_precision_loss)] // counts far below 2^52
            ("events missed".to_owned(), rows.iter().map(|r| r.missed as f64).collect()),
            ("write events/s".to_owned(), rows.iter().map(|r| r.events_per_s).collect()),
        ],
        log_y: true,
    };
    let mut findings = Vec::new();
    if let [naive, watermark, locked] = rows {
        #[allow(clippy::cast_precision_loss)] // counts far below 2^52
        let share = ratio(naive.missed as f64, naive.events as f64) * 100.0;
        findings.push(format!(
            "the naive reader missed {} of {} events ({share:.2}%); eslab's watermark feed missed {} (read lag p99 \
             {:.1} ms vs {:.1} ms naive)",
            naive.missed,
            naive.events,
            watermark.missed,
            watermark.lag.p99_ms(),
            naive.lag.p99_ms()
        ));
        findings.push(format!(
            "a per-category lock also misses {} but writes {:.0} events/s, {:.2}× the unlocked writers' {:.0} \
             (write p99 {:.1} ms vs {:.1} ms)",
            locked.missed,
            locked.events_per_s,
            ratio(locked.events_per_s, naive.events_per_s),
            naive.events_per_s,
            locked.write.p99_ms(),
            naive.write.p99_ms()
        ));
    }
    let method = vec![
        format!(
            "{writers} writers, each on its own account stream, append 1 to 3 events per transaction with \
             PostgresStore::append_in_tx, then keep the transaction open 0 to 2 ms (uniform) before committing, so \
             identity positions commit out of order. Each writer does at least {} transactions, then goes on until \
             {:.1} s have passed. NOTIFY is off (notifying commits are serialized by PostgreSQL).",
            budget.min,
            budget.time.as_secs_f64()
        ),
        "Readers tail the feed while the writers run, pages of 1000: the naive reader asks for \
         global_position > the highest it has seen; the watermark reader is eslab's read_feed from its last \
         checkpoint (xid8, position). After the writers stop, readers catch up (the naive one until a read returns \
         nothing new; the watermark one until it has every event, or 30 s). Missed = written − seen."
            .to_owned(),
        "The per-category lock row: writers take pg_advisory_xact_lock on the category before appending, so \
         commits happen in position order; the naive reader then misses nothing, at the price of serialized \
         writers. Read lag = time from the writer's commit returning to the reader seeing the event. Baseline: \
         the naive reader over unlocked writers."
            .to_owned(),
    ];
    Report { table, chart, findings, method }
}
