//! Experiment 5: how long loading an aggregate takes as its stream grows, with
//! no snapshot, snapshot policies every 100 and every 1000 events, and the
//! repository's state cache; the raw rows read without decoding are the baseline.

use std::time::{Duration, Instant};

use eslab_bank::Account;
use eslab_core::{
    Aggregate, EventAppender, EventReaderExt, EventStore, ExpectedVersion, Repository, SnapshotPolicy, StreamId,
    Version,
};
use eslab_postgres::PostgresStore;
use futures_util::TryStreamExt;
use futures_util::future::LocalBoxFuture;

use super::chart::Chart;
use super::measure::{Budget, Latencies, per_second};
use super::report::{Cell, Report, Table, ratio};
use super::workload::account_rows;
use super::{Experiment, Lab};

/// Experiment 5.
pub(super) struct SnapshotsAndCache;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Variant {
    Raw,
    Replay,
    Every(u64),
    Cache,
}

const VARIANTS: [Variant; 5] =
    [Variant::Raw, Variant::Replay, Variant::Every(100), Variant::Every(1000), Variant::Cache];

impl Variant {
    fn name(self) -> String {
        match self {
            Variant::Raw => "raw rows (no decode)".into(),
            Variant::Replay => "full replay".into(),
            Variant::Every(n) => format!("snapshot every {n}"),
            Variant::Cache => "cache hit".into(),
        }
    }
}

/// Appends `rows` to `stream` in chunks, from `at`; returns the new version.
async fn seed(
    store: &PostgresStore,
    stream: &StreamId,
    mut at: Version,
    rows: Vec<eslab_core::NewEvent>,
) -> anyhow::Result<Version> {
    let mut rows = rows.into_iter().peekable();
    while rows.peek().is_some() {
        let chunk: Vec<_> = rows.by_ref().take(500).collect();
        at = store.append(stream, ExpectedVersion::Exact(at), chunk).await?.version;
    }
    Ok(at)
}

struct Measured {
    length: u64,
    variant: Variant,
    replayed: u64,
    loads: u64,
    per_s: f64,
    latencies: Latencies,
}

impl Experiment for SnapshotsAndCache {
    fn number(&self) -> u8 {
        5
    }

    fn id(&self) -> &'static str {
        "snapshots"
    }

    fn title(&self) -> &'static str {
        "Snapshots and the state cache"
    }

    fn question(&self) -> &'static str {
        "How does loading an account grow with its stream's length, without snapshots, with snapshots every 100 \
         or 1000 events, and from the repository's state cache?"
    }

    fn run<'a>(&'a self, lab: &'a Lab) -> LocalBoxFuture<'a, anyhow::Result<Report>> {
        Box::pin(async move {
            let scale = lab.scale();
            let lengths: Vec<u64> =
                scale.pick(vec![10, 150], vec![10, 250, 2_550, 5_050], vec![10, 250, 2_550, 10_050]);
            let budget = scale.pick(
                Budget::new(3, 3, Duration::ZERO),
                Budget::new(5, 100_000, Duration::from_millis(400)),
                Budget::new(20, 1_000_000, Duration::from_secs(3)),
            );
            let store = lab.pg_store(|o| o.max_connections(4)).await?;
            let events = EventStore::new(store.clone());
            let plain: Repository<Account, _> = Repository::new(events.clone());
            let cached = plain.clone().with_cache(1_000);
            lab.steps((lengths.len() * VARIANTS.len()) as u64);
            let mut measured = Vec::new();
            for &length in &lengths {
                lab.doing(format!("seeding streams of {length} events"));
                let n = usize::try_from(length)?;
                // One stream for raw, replay and cache; one per snapshot policy,
                // snapshotted where the policy would have left its latest snapshot.
                let full_id = format!("full{length}");
                let full = Account::stream_id(&full_id)?;
                seed(&store, &full, Version::NONE, account_rows(n)?).await?;
                cached.load(&full_id).await?;
                for variant in VARIANTS {
                    lab.doing(format!("{} · {length} events", variant.name()));
                    let (id, repo, replayed) = match variant {
                        Variant::Raw | Variant::Replay => (full_id.clone(), plain.clone(), length),
                        Variant::Cache => (full_id.clone(), cached.clone(), 0),
                        Variant::Every(every) => {
                            let id = format!("every{every}-{length}");
                            let stream = Account::stream_id(&id)?;
                            let repo = plain.clone().with_snapshots(store.clone(), SnapshotPolicy::EveryNEvents(every));
                            let at = length / every * every;
                            let mut rows = account_rows(n)?;
                            let tail = rows.split_off(usize::try_from(at)?);
                            let v = seed(&store, &stream, Version::NONE, rows).await?;
                            if at > 0 {
                                repo.snapshot(&id).await?;
                            }
                            seed(&store, &stream, v, tail).await?;
                            (id, repo, length - at)
                        }
                    };
                    let mut latencies = Latencies::new()?;
                    let started = Instant::now();
                    let mut busy = Duration::ZERO;
                    let mut done = 0;
                    while budget.more(done, started) {
                        let t = Instant::now();
                        let version = if variant == Variant::Raw {
                            let n: u64 = store
                                .stream_events(&full, Version::FIRST)
                                .try_fold(0_u64, |n, _| async move { Ok(n + 1) })
                                .await?;
                            Version::new(n)
                        } else {
                            repo.load(&id).await?.version
                        };
                        let took = t.elapsed();
                        anyhow::ensure!(version.get() == length, "{id}: loaded version {version}, expected {length}");
                        busy += took;
                        latencies.record(took);
                        done += 1;
                    }
                    measured.push(Measured {
                        length,
                        variant,
                        replayed,
                        loads: done,
                        per_s: per_second(done, busy),
                        latencies,
                    });
                    lab.step("");
                }
            }
            Ok(report(&lengths, &measured, budget))
        })
    }
}

fn report(lengths: &[u64], measured: &[Measured], budget: Budget) -> Report {
    let mut table = Table::new(&[
        "events in stream",
        "load",
        "events replayed",
        "loads",
        "loads/s",
        "p50 (µs)",
        "p99 (µs)",
        "p50 / raw rows p50",
    ]);
    let raw = |length: u64| {
        measured
            .iter()
            .find(|m| m.length == length && m.variant == Variant::Raw)
            .map_or(f64::NAN, |m| m.latencies.p50_us())
    };
    for m in measured {
        table.push(vec![
            Cell::Int(m.length),
            Cell::text(m.variant.name()),
            Cell::Int(m.replayed),
            Cell::Int(m.loads),
            Cell::num(m.per_s, 0),
            Cell::num(m.latencies.p50_us(), 1),
            Cell::num(m.latencies.p99_us(), 1),
            Cell::num(ratio(m.latencies.p50_us(), raw(m.length)), 2),
        ]);
    }
    let chart = Chart {
        title: "Load latency p50 by stream length (log scale)".into(),
        x_label: "events in the stream".into(),
        y_label: "p50 load latency (µs)".into(),
        categories: lengths.iter().map(ToString::to_string).collect(),
        series: VARIANTS
            .iter()
            .map(|v| {
                let values = lengths
                    .iter()
                    .map(|l| {
                        measured
                            .iter()
                            .find(|m| m.length == *l && m.variant == *v)
                            .map_or(f64::NAN, |m| m.latencies.p50_us())
                    })
                    .collect();
                (v.name(), values)
            })
            .collect(),
        log_y: true,
    };
    let mut findings = Vec::new();
    if let Some(&longest) = lengths.last() {
        let of = |v: Variant| measured.iter().find(|m| m.length == longest && m.variant == v);
        if let (Some(replay), Some(every100), Some(cache)) =
            (of(Variant::Replay), of(Variant::Every(100)), of(Variant::Cache))
        {
            findings.push(format!(
                "{longest} events: full replay p50 {:.0} µs ({:.2}× the raw rows); snapshot every 100 p50 {:.0} µs \
                 ({:.3}× replay); cache hit p50 {:.1} µs ({:.4}× replay)",
                replay.latencies.p50_us(),
                ratio(replay.latencies.p50_us(), raw(longest)),
                every100.latencies.p50_us(),
                ratio(every100.latencies.p50_us(), replay.latencies.p50_us()),
                cache.latencies.p50_us(),
                ratio(cache.latencies.p50_us(), replay.latencies.p50_us()),
            ));
        }
    }
    let method = vec![
        "PostgreSQL store; one account stream per length (AccountOpened, then deposits), loaded by eslab-core's \
         Repository (decode, upcast chain, evolve). Snapshot streams hold the snapshot the policy would have left: \
         at the last multiple of N at or below the length, then the remaining events (the 'events replayed' column)."
            .to_owned(),
        format!(
            "Per cell: at least {} sequential loads, then until {:.1} s have passed. Raw rows = the same stream read \
             page by page without decoding (the floor any load pays); cache hit = Repository::with_cache after one \
             warming load. Baseline: raw rows.",
            budget.min,
            budget.time.as_secs_f64()
        ),
    ];
    Report { table, chart, findings, method }
}
