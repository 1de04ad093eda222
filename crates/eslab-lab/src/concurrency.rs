//! Experiment 2: concurrency control under contention. Writers append one
//! event at a time to streams chosen by a Zipf distribution, each append at
//! "the version I read + 1": optimistic (unique index, retry on violation),
//! a per-stream advisory lock, SERIALIZABLE transactions (retry on
//! serialization failure), and eslab's store (`Exact(version)`, retry on conflict).

use std::sync::Arc;
use std::time::{Duration, Instant};

use eslab_core::{EventAppender, EventReader, ExpectedVersion, StreamId};
use eslab_postgres::PostgresStore;
use futures_util::future::LocalBoxFuture;
use sqlx::PgPool;

use super::chart::Chart;
use super::measure::{Budget, Latencies, per_second};
use super::report::{Cell, Report, Table, ratio};
use super::workload::{Zipf, more_deposits};
use super::{Experiment, Lab};

/// Experiment 2.
pub(super) struct ConcurrencyControl;

const DDL: &str = "CREATE TABLE events (stream_id text NOT NULL, stream_version bigint NOT NULL, \
    payload jsonb NOT NULL, PRIMARY KEY (stream_id, stream_version))";
const READ: &str = "SELECT coalesce(max(stream_version), 0) FROM events WHERE stream_id = $1";
const INSERT: &str = "INSERT INTO events (stream_id, stream_version, payload) VALUES ($1, $2, $3)";

/// Attempts per append before a writer gives up on it.
const MAX_ATTEMPTS: u32 = 200;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Control {
    Optimistic,
    Advisory,
    Serializable,
    Eslab,
}

const CONTROLS: [Control; 4] = [Control::Optimistic, Control::Advisory, Control::Serializable, Control::Eslab];

impl Control {
    fn name(self) -> &'static str {
        match self {
            Control::Optimistic => "optimistic + retry",
            Control::Advisory => "advisory lock per stream",
            Control::Serializable => "SERIALIZABLE + retry",
            Control::Eslab => "eslab store (Exact + retry)",
        }
    }
}

#[derive(Clone)]
enum Target {
    Raw(PgPool),
    Eslab(PostgresStore),
}

/// Whether a database error means "lost the race, try again".
fn is_race(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(db) => {
            db.is_unique_violation() || matches!(db.code().as_deref(), Some("40001" | "40P01"))
        }
        _ => false,
    }
}

/// One attempt: `Ok(true)` committed, `Ok(false)` lost a race.
async fn attempt(control: Control, target: &Target, stream: &str, payload: &serde_json::Value) -> anyhow::Result<bool> {
    let outcome: Result<(), sqlx::Error> = match (control, target) {
        (Control::Eslab, Target::Eslab(store)) => {
            let id: StreamId = stream.parse()?;
            let version = store.stream_version(&id).await?;
            let (rows, _) = more_deposits(1, eslab_bank::Balance::ZERO)?;
            return match store.append(&id, ExpectedVersion::Exact(version), rows).await {
                Ok(_) => Ok(true),
                Err(e) if e.is_conflict() => Ok(false),
                Err(e) => Err(e.into()),
            };
        }
        (Control::Optimistic, Target::Raw(pool)) => {
            async {
                let v: i64 = sqlx::query_scalar(READ).bind(stream).fetch_one(pool).await?;
                sqlx::query(INSERT).bind(stream).bind(v + 1).bind(payload).execute(pool).await?;
                Ok(())
            }
            .await
        }
        (Control::Advisory, Target::Raw(pool)) => {
            async {
                let mut tx = pool.begin().await?;
                sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
                    .bind(stream)
                    .execute(&mut *tx)
                    .await?;
                let v: i64 = sqlx::query_scalar(READ).bind(stream).fetch_one(&mut *tx).await?;
                sqlx::query(INSERT).bind(stream).bind(v + 1).bind(payload).execute(&mut *tx).await?;
                tx.commit().await
            }
            .await
        }
        (Control::Serializable, Target::Raw(pool)) => {
            async {
                let mut tx = pool.begin().await?;
                sqlx::query("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE").execute(&mut *tx).await?;
                let v: i64 = sqlx::query_scalar(READ).bind(stream).fetch_one(&mut *tx).await?;
                sqlx::query(INSERT).bind(stream).bind(v + 1).bind(payload).execute(&mut *tx).await?;
                tx.commit().await
            }
            .await
        }
        _ => anyhow::bail!("{} has no target of its kind", control.name()),
    };
    match outcome {
        Ok(()) => Ok(true),
        Err(e) if is_race(&e) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// What the writers of one cell did.
#[derive(Default)]
struct Tally {
    committed: u64,
    retries: u64,
    gave_up: u64,
}

struct Measured {
    level: &'static str,
    control: Control,
    tally: Tally,
    ops_per_s: f64,
    latencies: Latencies,
    consistent: bool,
}

async fn writer(
    control: Control,
    target: Target,
    streams: Arc<Vec<String>>,
    zipf: Arc<Zipf>,
    budget: Budget,
    seed: u64,
) -> anyhow::Result<(Tally, Latencies)> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut latencies = Latencies::new()?;
    let mut tally = Tally::default();
    let payload = serde_json::json!({ "amount": 100, "note": "a typical small payload" });
    let started = Instant::now();
    let mut done = 0;
    while budget.more(done, started) {
        let stream = &streams[zipf.sample(&mut rng)];
        let t = Instant::now();
        let mut attempts = 0;
        loop {
            attempts += 1;
            if attempt(control, &target, stream, &payload).await? {
                tally.committed += 1;
                break;
            }
            tally.retries += 1;
            if attempts >= MAX_ATTEMPTS {
                tally.gave_up += 1;
                break;
            }
        }
        latencies.record(t.elapsed());
        done += 1;
    }
    Ok((tally, latencies))
}

/// Whether every stream's versions are exactly 1..=n and the rows add up to `committed`.
async fn consistent(target: &Target, committed: u64) -> anyhow::Result<bool> {
    // Both schemas name the table `events` (stream_id, stream_version).
    let pool = match target {
        Target::Raw(pool) => pool,
        Target::Eslab(store) => store.pool(),
    };
    let (rows, bad): (i64, i64) = sqlx::query_as(
        "SELECT coalesce(sum(n), 0)::bigint, count(*) FILTER (WHERE n <> top) FROM \
         (SELECT stream_id, count(*) AS n, max(stream_version) AS top FROM events GROUP BY stream_id) s",
    )
    .fetch_one(pool)
    .await?;
    Ok(bad == 0 && u64::try_from(rows)? == committed)
}

impl Experiment for ConcurrencyControl {
    fn number(&self) -> u8 {
        2
    }

    fn id(&self) -> &'static str {
        "concurrency"
    }

    fn title(&self) -> &'static str {
        "Concurrency control under contention"
    }

    fn question(&self) -> &'static str {
        "Concurrent writers append to streams chosen by a Zipf distribution, each at the version it read + 1: \
         what do optimistic concurrency with retries, a per-stream advisory lock and SERIALIZABLE transactions \
         cost in throughput, retries and p99 latency?"
    }

    fn run<'a>(&'a self, lab: &'a Lab) -> LocalBoxFuture<'a, anyhow::Result<Report>> {
        Box::pin(async move {
            let scale = lab.scale();
            let writers: u64 = scale.pick(2, 8, 16);
            let budget = scale.pick(
                Budget::new(10, 10, Duration::ZERO),
                Budget::new(5, 1_000_000, Duration::from_millis(2500)),
                Budget::new(20, 10_000_000, Duration::from_secs(10)),
            );
            // (level, streams, Zipf exponent)
            let levels: Vec<(&'static str, usize, f64)> = scale.pick(
                vec![("hot: 8 streams, s=1.2", 8, 1.2)],
                vec![("hot: 8 streams, s=1.2", 8, 1.2), ("mild: 1000 streams, s=1.0", 1000, 1.0)],
                vec![("hot: 8 streams, s=1.2", 8, 1.2), ("mild: 1000 streams, s=1.0", 1000, 1.0)],
            );
            lab.steps((levels.len() * CONTROLS.len()) as u64);
            let connections = u32::try_from(writers)? + 2;
            let mut measured = Vec::new();
            for &(level, n_streams, s) in &levels {
                let zipf = Arc::new(Zipf::new(n_streams, s));
                let streams: Arc<Vec<String>> = Arc::new(
                    (0..n_streams).map(|i| format!("account-{i}-{}", uuid::Uuid::now_v7().simple())).collect(),
                );
                for control in CONTROLS {
                    lab.doing(format!("{} · {level}", control.name()));
                    let target = if control == Control::Eslab {
                        Target::Eslab(lab.pg_store(|o| o.max_connections(connections)).await?)
                    } else {
                        let pool = lab.pg_pool(connections).await?;
                        sqlx::query(DDL).execute(&pool).await?;
                        Target::Raw(pool)
                    };
                    let started = Instant::now();
                    let mut tasks = tokio::task::JoinSet::new();
                    for w in 0..writers {
                        tasks.spawn(writer(control, target.clone(), streams.clone(), zipf.clone(), budget, w + 1));
                    }
                    let mut tally = Tally::default();
                    let mut latencies = Latencies::new()?;
                    while let Some(joined) = tasks.join_next().await {
                        let (t, l) = joined??;
                        tally.committed += t.committed;
                        tally.retries += t.retries;
                        tally.gave_up += t.gave_up;
                        latencies.merge(&l)?;
                    }
                    let elapsed = started.elapsed();
                    let consistent = consistent(&target, tally.committed).await?;
                    measured.push(Measured {
                        level,
                        control,
                        ops_per_s: per_second(tally.committed, elapsed),
                        tally,
                        latencies,
                        consistent,
                    });
                    lab.step("");
                }
            }
            Ok(report(&levels, &measured, writers, budget))
        })
    }
}

fn report(levels: &[(&'static str, usize, f64)], measured: &[Measured], writers: u64, budget: Budget) -> Report {
    let mut table = Table::new(&[
        "contention",
        "control",
        "appends",
        "appends/s",
        "retries",
        "retries/append",
        "gave up",
        "p50 (ms)",
        "p99 (ms)",
        "versions gap-free",
    ]);
    for m in measured {
        #[allow(clippy::cast_precision_loss)] // counts far below 2^52
        let per = ratio(m.tally.retries as f64, m.tally.committed as f64);
        table.push(vec![
            Cell::text(m.level),
            Cell::text(m.control.name()),
            Cell::Int(m.tally.committed),
            Cell::num(m.ops_per_s, 0),
            Cell::Int(m.tally.retries),
            Cell::num(per, 3),
            Cell::Int(m.tally.gave_up),
            Cell::num(m.latencies.p50_ms(), 2),
            Cell::num(m.latencies.p99_ms(), 2),
            Cell::text(if m.consistent { "yes" } else { "NO" }),
        ]);
    }
    let chart = Chart {
        title: format!("Appends/s with {writers} writers, by contention"),
        x_label: "contention".into(),
        y_label: "appends/s".into(),
        categories: levels.iter().map(|l| l.0.to_owned()).collect(),
        series: CONTROLS
            .iter()
            .map(|c| {
                let values = levels
                    .iter()
                    .map(|l| {
                        measured.iter().find(|m| m.level == l.0 && m.control == *c).map_or(f64::NAN, |m| m.ops_per_s)
                    })
                    .collect();
                (c.name().to_owned(), values)
            })
            .collect(),
        log_y: false,
    };
    let mut findings = Vec::new();
    for (level, _, _) in levels {
        let of = |c: Control| measured.iter().find(|m| m.level == *level && m.control == c);
        if let (Some(opt), Some(lock), Some(ser)) =
            (of(Control::Optimistic), of(Control::Advisory), of(Control::Serializable))
        {
            findings.push(format!(
                "{level}: advisory lock {:.0} appends/s ({:.2}× optimistic, p99 {:.1} ms vs {:.1} ms, 0 retries vs {} \
                 retries); SERIALIZABLE {:.2}× optimistic with {} retries",
                lock.ops_per_s,
                ratio(lock.ops_per_s, opt.ops_per_s),
                lock.latencies.p99_ms(),
                opt.latencies.p99_ms(),
                opt.tally.retries,
                ratio(ser.ops_per_s, opt.ops_per_s),
                ser.tally.retries,
            ));
        }
    }
    let zipf_text: Vec<String> = levels
        .iter()
        .map(|(l, n, s)| format!("{l} (hottest stream gets {:.0}% of appends)", Zipf::new(*n, *s).hottest() * 100.0))
        .collect();
    let method = vec![
        format!(
            "{writers} concurrent writers (tokio tasks, one pooled connection each); each append picks a stream by \
             Zipf ({}), reads its version and writes version + 1 with a small JSON payload.",
            zipf_text.join("; ")
        ),
        format!(
            "Per cell, each writer does at least {} appends, then goes on until {:.1} s have passed. A lost race \
             (unique violation, serialization failure, eslab Conflict) is retried at once, up to {MAX_ATTEMPTS} \
             attempts; latency is per append, retries included.",
            budget.min,
            budget.time.as_secs_f64()
        ),
        "Each control runs in its own fresh schema. After each cell the table is checked: every stream's versions \
         are 1..n without gaps and the rows equal the appends counted."
            .to_owned(),
        "Baseline: optimistic + retry (the plain unique-index approach); ratios are to it.".to_owned(),
    ];
    Report { table, chart, findings, method }
}
