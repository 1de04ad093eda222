//! Experiment 1: how to write a batch of events. Raw SQL in the lab's own
//! table: a per-row loop in one transaction (the baseline), one multi-row
//! `INSERT .. VALUES`, one `INSERT .. SELECT FROM UNNEST(arrays)`, and `COPY`;
//! beside them eslab's own `PostgresStore::append` (version check included).

use std::time::{Duration, Instant};

use futures_util::future::LocalBoxFuture;
use sqlx::{PgPool, QueryBuilder};

use super::chart::Chart;
use super::measure::{Budget, Latencies, per_second};
use super::report::{Cell, Report, Table, ratio};
use super::workload::account_rows;
use super::{Experiment, Lab};
use eslab_core::{EventAppender, ExpectedVersion, NewEvent, StreamId};

/// Experiment 1.
pub(super) struct AppendStrategies;

const DDL: &str = "CREATE TABLE events (
    global_position bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    stream_id text NOT NULL, stream_version bigint NOT NULL, event_id uuid NOT NULL UNIQUE,
    event_type text NOT NULL, payload jsonb NOT NULL, metadata jsonb NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (stream_id, stream_version))";

const COLUMNS: &str = "stream_id, stream_version, event_id, event_type, payload, metadata";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Strategy {
    Loop,
    Values,
    Unnest,
    Copy,
    Eslab,
}

const STRATEGIES: [Strategy; 5] = [Strategy::Loop, Strategy::Values, Strategy::Unnest, Strategy::Copy, Strategy::Eslab];

impl Strategy {
    fn name(self) -> &'static str {
        match self {
            Strategy::Loop => "per-row loop (1 tx)",
            Strategy::Values => "multi-row INSERT",
            Strategy::Unnest => "INSERT .. UNNEST",
            Strategy::Copy => "COPY",
            Strategy::Eslab => "eslab append",
        }
    }
}

/// One batch as the raw statements bind it.
struct Rows {
    stream: String,
    events: Vec<NewEvent>,
    metadata: Vec<serde_json::Value>,
}

impl Rows {
    fn new(n: usize) -> anyhow::Result<Rows> {
        let events = account_rows(n)?;
        let metadata = events.iter().map(|e| serde_json::to_value(&e.metadata)).collect::<Result<_, _>>()?;
        Ok(Rows { stream: format!("account-{}", uuid::Uuid::now_v7().simple()), events, metadata })
    }

    fn version(i: usize) -> anyhow::Result<i64> {
        Ok(i64::try_from(i)? + 1)
    }
}

async fn write_raw(pool: &PgPool, strategy: Strategy, rows: &Rows) -> anyhow::Result<()> {
    match strategy {
        Strategy::Loop => {
            let mut tx = pool.begin().await?;
            for (i, (e, m)) in rows.events.iter().zip(&rows.metadata).enumerate() {
                // sql-ident: COLUMNS is a constant column list.
                sqlx::query(&format!("INSERT INTO events ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6)"))
                    .bind(&rows.stream)
                    .bind(Rows::version(i)?)
                    .bind(e.event_id)
                    .bind(&e.event_type)
                    .bind(&e.payload)
                    .bind(m)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
        }
        Strategy::Values => {
            // sql-ident: COLUMNS is a constant column list.
            let mut q = QueryBuilder::new(format!("INSERT INTO events ({COLUMNS}) "));
            let mut versions = Vec::with_capacity(rows.events.len());
            for i in 0..rows.events.len() {
                versions.push(Rows::version(i)?);
            }
            q.push_values(rows.events.iter().zip(&rows.metadata).zip(versions), |mut b, ((e, m), v)| {
                b.push_bind(&rows.stream)
                    .push_bind(v)
                    .push_bind(e.event_id)
                    .push_bind(&e.event_type)
                    .push_bind(&e.payload)
                    .push_bind(m);
            });
            q.build().execute(pool).await?;
        }
        Strategy::Unnest => {
            let n = rows.events.len();
            let versions = (0..n).map(Rows::version).collect::<anyhow::Result<Vec<_>>>()?;
            // sql-ident: COLUMNS is a constant column list.
            sqlx::query(&format!(
                "INSERT INTO events ({COLUMNS}) SELECT $1, v, id, t, p, m \
                 FROM unnest($2::bigint[], $3::uuid[], $4::text[], $5::jsonb[], $6::jsonb[]) AS u(v, id, t, p, m)"
            ))
            .bind(&rows.stream)
            .bind(versions)
            .bind(rows.events.iter().map(|e| e.event_id).collect::<Vec<_>>())
            .bind(rows.events.iter().map(|e| e.event_type.clone()).collect::<Vec<_>>())
            .bind(rows.events.iter().map(|e| e.payload.clone()).collect::<Vec<_>>())
            .bind(&rows.metadata)
            .execute(pool)
            .await?;
        }
        Strategy::Copy => {
            let mut csv = csv::Writer::from_writer(Vec::new());
            for (i, (e, m)) in rows.events.iter().zip(&rows.metadata).enumerate() {
                csv.write_record([
                    rows.stream.clone(),
                    Rows::version(i)?.to_string(),
                    e.event_id.to_string(),
                    e.event_type.clone(),
                    e.payload.to_string(),
                    m.to_string(),
                ])?;
            }
            let data = csv.into_inner().map_err(|e| anyhow::anyhow!("{e}"))?;
            let mut conn = pool.acquire().await?;
            // sql-ident: COLUMNS is a constant column list.
            let mut copy = conn.copy_in_raw(&format!("COPY events ({COLUMNS}) FROM STDIN (FORMAT csv)")).await?;
            copy.send(data).await?;
            copy.finish().await?;
        }
        Strategy::Eslab => anyhow::bail!("eslab's append goes through the store"),
    }
    Ok(())
}

struct Cellres {
    strategy: Strategy,
    batch: usize,
    batches: u64,
    events_per_s: f64,
    latencies: Latencies,
}

impl Experiment for AppendStrategies {
    fn number(&self) -> u8 {
        1
    }

    fn id(&self) -> &'static str {
        "append"
    }

    fn title(&self) -> &'static str {
        "Append strategies"
    }

    fn question(&self) -> &'static str {
        "How fast can PostgreSQL take a batch of events: a per-row loop, a multi-row INSERT, INSERT .. UNNEST, \
         or COPY, at batch sizes 1, 10, 100 and 1000, and where does eslab's append (which also checks the \
         stream's version) stand?"
    }

    fn run<'a>(&'a self, lab: &'a Lab) -> LocalBoxFuture<'a, anyhow::Result<Report>> {
        Box::pin(async move {
            let scale = lab.scale();
            let sizes: Vec<usize> = scale.pick(vec![1, 10], vec![1, 10, 100, 1000], vec![1, 10, 100, 1000]);
            let budget = scale.pick(
                Budget::new(2, 2, Duration::ZERO),
                Budget::new(3, 100_000, Duration::from_millis(1200)),
                Budget::new(10, 1_000_000, Duration::from_secs(8)),
            );
            let pool = lab.pg_pool(2).await?;
            sqlx::query(DDL).execute(&pool).await?;
            let store = lab.pg_store(|o| o.max_connections(2)).await?;
            lab.steps((sizes.len() * STRATEGIES.len()) as u64);
            let mut results = Vec::new();
            for &batch in &sizes {
                for strategy in STRATEGIES {
                    lab.doing(format!("{} × {batch}", strategy.name()));
                    // Every cell starts from an empty table.
                    sqlx::query("TRUNCATE events").execute(&pool).await?;
                    sqlx::query("TRUNCATE events, streams").execute(store.pool()).await?;
                    let mut latencies = Latencies::new()?;
                    let started = Instant::now();
                    let mut busy = Duration::ZERO;
                    let mut done = 0;
                    while budget.more(done, started) {
                        let rows = Rows::new(batch)?;
                        let t = Instant::now();
                        if strategy == Strategy::Eslab {
                            let stream: StreamId = rows.stream.parse()?;
                            store.append(&stream, ExpectedVersion::NoStream, rows.events).await?;
                        } else {
                            write_raw(&pool, strategy, &rows).await?;
                        }
                        let took = t.elapsed();
                        busy += took;
                        latencies.record(took);
                        done += 1;
                    }
                    let events = done * u64::try_from(batch)?;
                    results.push(Cellres {
                        strategy,
                        batch,
                        batches: done,
                        events_per_s: per_second(events, busy),
                        latencies,
                    });
                    lab.step("");
                }
            }
            Ok(report(&sizes, &results, budget))
        })
    }
}

fn report(sizes: &[usize], results: &[Cellres], budget: Budget) -> Report {
    let mut table =
        Table::new(&["strategy", "batch", "batches", "events/s", "batch p50 (ms)", "batch p99 (ms)", "× per-row loop"]);
    let baseline = |batch: usize| {
        results.iter().find(|r| r.batch == batch && r.strategy == Strategy::Loop).map_or(f64::NAN, |r| r.events_per_s)
    };
    for r in results {
        table.push(vec![
            Cell::text(r.strategy.name()),
            Cell::Int(r.batch as u64),
            Cell::Int(r.batches),
            Cell::num(r.events_per_s, 0),
            Cell::num(r.latencies.p50_ms(), 3),
            Cell::num(r.latencies.p99_ms(), 3),
            Cell::num(ratio(r.events_per_s, baseline(r.batch)), 2),
        ]);
    }
    let chart = Chart {
        title: "Append throughput by strategy and batch size (log scale)".into(),
        x_label: "events per batch".into(),
        y_label: "events/s".into(),
        categories: sizes.iter().map(ToString::to_string).collect(),
        series: STRATEGIES
            .iter()
            .map(|s| {
                let values = sizes
                    .iter()
                    .map(|b| {
                        results.iter().find(|r| r.batch == *b && r.strategy == *s).map_or(f64::NAN, |r| r.events_per_s)
                    })
                    .collect();
                (s.name().to_owned(), values)
            })
            .collect(),
        log_y: true,
    };
    let mut findings = Vec::new();
    for &batch in sizes {
        let best = results
            .iter()
            .filter(|r| r.batch == batch && r.strategy != Strategy::Eslab)
            .max_by(|a, b| a.events_per_s.total_cmp(&b.events_per_s));
        let eslab = results.iter().find(|r| r.batch == batch && r.strategy == Strategy::Eslab);
        if let (Some(best), Some(eslab)) = (best, eslab) {
            findings.push(format!(
                "batch {batch}: fastest raw strategy {} at {:.0} events/s ({:.1}× the per-row loop); eslab append \
                 {:.0} events/s ({:.2}× the loop, {:.2}× {})",
                best.strategy.name(),
                best.events_per_s,
                ratio(best.events_per_s, baseline(batch)),
                eslab.events_per_s,
                ratio(eslab.events_per_s, baseline(batch)),
                ratio(eslab.events_per_s, best.events_per_s),
                best.strategy.name(),
            ));
        }
    }
    let method = vec![
        "Each batch is one new account stream: an AccountOpened then deposits, JSON payload and metadata as eslab \
         stores them; one client, sequential batches, table truncated before each cell."
            .to_owned(),
        format!(
            "Per cell: at least {} batches, then until {:.1} s have passed. events/s = events / time spent in the \
             writes; latency is per batch (commit included).",
            budget.min,
            budget.time.as_secs_f64()
        ),
        "Raw strategies write the lab's own table (events with identity position, unique (stream, version) and \
         unique event id, no version check); eslab append is PostgresStore::append with ExpectedVersion::NoStream \
         in its own schema (stream row, version check, NOTIFY). Baseline: the per-row loop."
            .to_owned(),
    ];
    Report { table, chart, findings, method }
}
