//! Experiment 6: catching a projection up with eslab-projection's `Runner`
//! (the bank's read models in PostgreSQL, checkpoint in the batch's
//! transaction) at several batch sizes and partition counts; reading the
//! feed without applying anything is the baseline.

use std::sync::Arc;
use std::time::{Duration, Instant};

use eslab_bank::{BankViews, SqlViews};
use eslab_core::{Checkpoint, EventAppender, EventReader, ExpectedVersion, FeedFilter, StreamId};
use eslab_projection::{Outcome, PgBackend, Runner, RunnerOptions};
use futures_util::future::LocalBoxFuture;

use super::measure::{Latencies, per_second};
use super::report::{Cell, Chart, Report, Table, ratio};
use super::workload::account_events;
use super::{Experiment, Lab};

/// Experiment 6.
pub(super) struct ProjectionBatches;

struct Measured {
    batch: usize,
    partitions: u16,
    events: u64,
    per_s: f64,
    latencies: Latencies,
    balances_match: bool,
}

/// The longest a catch-up may take before the experiment gives up (an open
/// transaction elsewhere on the cluster holds the feed back until it ends).
const PATIENCE: Duration = Duration::from_secs(120);

impl Experiment for ProjectionBatches {
    fn number(&self) -> u8 {
        6
    }

    fn id(&self) -> &'static str {
        "projections"
    }

    fn title(&self) -> &'static str {
        "Projection catch-up: batch size × partitions"
    }

    fn question(&self) -> &'static str {
        "How fast does the projection runner build the bank's read models from the feed, by events per batch \
         (per transaction) and by parallel partitions, next to reading the feed alone?"
    }

    fn run<'a>(&'a self, lab: &'a Lab) -> LocalBoxFuture<'a, anyhow::Result<Report>> {
        Box::pin(async move {
            let scale = lab.scale();
            let (accounts, per_account) = scale.pick((20_usize, 5_usize), (200, 25), (1_000, 50));
            let batches: Vec<usize> = scale.pick(vec![10, 100], vec![10, 100, 1000], vec![10, 100, 1000]);
            let partitions: Vec<u16> = scale.pick(vec![1, 2], vec![1, 4], vec![1, 2, 4, 8]);
            lab.steps((1 + batches.len() * partitions.len()) as u64);
            lab.doing("seeding the feed");
            let store = lab.pg_store(|o| o.max_connections(4)).await?;
            let mut expected_total: i64 = 0;
            for a in 0..accounts {
                let events = account_events(per_account)?;
                if let Some(eslab_bank::AccountEvent::MoneyDeposited { balance, .. }) = events.last() {
                    expected_total =
                        expected_total.checked_add(balance.minor()).ok_or_else(|| anyhow::anyhow!("overflow"))?;
                }
                let rows = super::workload::encode(&events)?;
                let stream = StreamId::new("account", &format!("a{a}"))?;
                store.append(&stream, ExpectedVersion::NoStream, rows).await?;
            }
            let total = u64::try_from(accounts * per_account)?;

            // Baseline: the feed read page by page, nothing applied.
            lab.doing("reading the feed alone");
            let started = Instant::now();
            let mut latencies = Latencies::new()?;
            let mut read = 0_u64;
            let mut at = Checkpoint::START;
            while read < total && started.elapsed() < PATIENCE {
                let t = Instant::now();
                let page = store.read_feed(&FeedFilter::All, at, 1000).await?;
                latencies.record(t.elapsed());
                match page.last() {
                    Some(last) => at = last.checkpoint(),
                    None => tokio::time::sleep(Duration::from_millis(10)).await,
                }
                read += u64::try_from(page.len())?;
            }
            let baseline = Measured {
                batch: 1000,
                partitions: 0,
                events: read,
                per_s: per_second(read, started.elapsed()),
                latencies,
                balances_match: true,
            };
            lab.step("");

            let mut measured = Vec::new();
            for &batch in &batches {
                for &parts in &partitions {
                    lab.doing(format!("batch {batch} × {parts} partitions"));
                    let pool = lab.pg_pool(u32::from(parts) + 2).await?;
                    let backend = PgBackend::new(pool.clone());
                    backend.ensure_schema().await?;
                    let views = SqlViews::new(pool.clone());
                    views.ensure_schema().await?;
                    let runner = Runner::new(store.clone(), Arc::new(backend), Arc::new(BankViews))
                        .with_options(RunnerOptions { batch_size: batch, ..RunnerOptions::default() })
                        .partitioned(parts);
                    let mut latencies = Latencies::new()?;
                    let started = Instant::now();
                    let mut applied = 0_u64;
                    while applied < total && started.elapsed() < PATIENCE {
                        let t = Instant::now();
                        match runner.run_once().await? {
                            Outcome::Processed { events, .. } => {
                                latencies.record(t.elapsed());
                                applied += u64::try_from(events)?;
                            }
                            Outcome::Idle => tokio::time::sleep(Duration::from_millis(5)).await,
                            Outcome::NotLeader => anyhow::bail!("another runner holds the lab's projection lease"),
                        }
                    }
                    let elapsed = started.elapsed();
                    anyhow::ensure!(applied == total, "the runner applied {applied} of {total} events in {PATIENCE:?}");
                    let balances_match = views.total_balance().await? == expected_total;
                    measured.push(Measured {
                        batch,
                        partitions: parts,
                        events: applied,
                        per_s: per_second(applied, elapsed),
                        latencies,
                        balances_match,
                    });
                    pool.close().await;
                    lab.step("");
                }
            }
            Ok(report(&batches, &partitions, &baseline, &measured, accounts, per_account))
        })
    }
}

fn report(
    batches: &[usize],
    partitions: &[u16],
    baseline: &Measured,
    measured: &[Measured],
    accounts: usize,
    per_account: usize,
) -> Report {
    let mut table = Table::new(&[
        "run",
        "batch",
        "partitions",
        "events",
        "events/s",
        "batch p50 (ms)",
        "batch p99 (ms)",
        "× feed read",
        "read model correct",
    ]);
    table.push(vec![
        Cell::text("feed read only (baseline)"),
        Cell::Int(baseline.batch as u64),
        Cell::text("-"),
        Cell::Int(baseline.events),
        Cell::num(baseline.per_s, 0),
        Cell::num(baseline.latencies.p50_ms(), 2),
        Cell::num(baseline.latencies.p99_ms(), 2),
        Cell::num(1.0, 2),
        Cell::text("-"),
    ]);
    for m in measured {
        table.push(vec![
            Cell::text("runner + bank views"),
            Cell::Int(m.batch as u64),
            Cell::text(m.partitions.to_string()),
            Cell::Int(m.events),
            Cell::num(m.per_s, 0),
            Cell::num(m.latencies.p50_ms(), 2),
            Cell::num(m.latencies.p99_ms(), 2),
            Cell::num(ratio(m.per_s, baseline.per_s), 3),
            Cell::text(if m.balances_match { "yes" } else { "NO" }),
        ]);
    }
    let chart = Chart {
        title: "Projection catch-up throughput".into(),
        x_label: "events per batch".into(),
        y_label: "events/s".into(),
        categories: batches.iter().map(ToString::to_string).collect(),
        series: partitions
            .iter()
            .map(|p| {
                let values = batches
                    .iter()
                    .map(|b| {
                        measured.iter().find(|m| m.batch == *b && m.partitions == *p).map_or(f64::NAN, |m| m.per_s)
                    })
                    .collect();
                (format!("{p} partition(s)"), values)
            })
            .collect(),
        log_y: false,
    };
    let mut findings = Vec::new();
    if let Some(best) = measured.iter().max_by(|a, b| a.per_s.total_cmp(&b.per_s)) {
        findings.push(format!(
            "fastest: batch {} with {} partition(s) at {:.0} events/s ({:.3}× reading the feed alone, {:.0} events/s)",
            best.batch,
            best.partitions,
            best.per_s,
            ratio(best.per_s, baseline.per_s),
            baseline.per_s
        ));
    }
    for &p in partitions {
        let of = |b: usize| measured.iter().find(|m| m.batch == b && m.partitions == p);
        if let (Some(small), Some(large)) = (batches.first().and_then(|b| of(*b)), batches.last().and_then(|b| of(*b)))
        {
            findings.push(format!(
                "{p} partition(s): batch {} is {:.1}× batch {}",
                large.batch,
                ratio(large.per_s, small.per_s),
                small.batch
            ));
        }
    }
    let method = vec![
        format!(
            "{accounts} accounts × {per_account} events ({} events) in a PostgreSQL store. Each cell builds the bank's \
             read models (account summary, history, transfer status) from the start of the feed into a fresh schema \
             with eslab-projection's Runner and PgBackend: one transaction per batch (per partition) holding the \
             read-model writes and the checkpoint.",
            accounts * per_account
        ),
        "events/s = events / catch-up time; latency is per run_once (read a batch, apply, commit). 'read model \
         correct' checks the sum of balances against the seeded events. Baseline: the same feed read in pages of \
         1000 with nothing applied."
            .to_owned(),
    ];
    Report { table, chart, findings, method }
}
