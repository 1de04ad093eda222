//! Experiment 4: group commit. Single-event appends from 1 to 128 concurrent
//! callers, each committed alone (eslab's store, and a raw one-row INSERT
//! per commit as the baseline) or coalesced by eslab-postgres's
//! group commit ([`PostgresStore::with_group_commit`]) into one statement and one commit per batch,
//! with optimistic concurrency per stream kept: callers share streams, and a
//! caller whose expected version is stale gets its own conflict while the
//! rest of its batch commits.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use eslab_postgres::{AppendStrategy, GroupCommitOptions, PostgresStore};
use futures_util::future::LocalBoxFuture;

use super::cpu::{CpuMeter, CpuUse};
use super::measure::{Budget, Latencies, per_second};
use super::report::{Cell, Report, Table, ratio, ratio_range};
use super::workload::{self, Appended, Appender, single_appends};
use super::{Experiment, Lab};

/// Experiment 4.
pub(super) struct GroupCommitExperiment;

/// How the appends are committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Variant {
    /// A raw `INSERT` of one row, committed alone (autocommit): the baseline.
    Raw,
    /// eslab's store: one statement and one commit per append.
    Store,
    /// The same with [`AppendStrategy::UniqueIndex`] (in a schema of its own):
    /// no version row, the unique index arbitrates.
    StoreUnique,
    /// eslab's group commit.
    Group,
    /// Group commit on the [`AppendStrategy::UniqueIndex`] store.
    GroupUnique,
    /// Group commit with four callers per stream: conflicts, each failing
    /// only its own caller.
    GroupShared,
}

impl Variant {
    fn name(self) -> &'static str {
        match self {
            Variant::Raw => "raw INSERT + COMMIT",
            Variant::Store => "store (one commit each)",
            Variant::StoreUnique => "store, UniqueIndex (one commit each)",
            Variant::Group => "GroupCommit",
            Variant::GroupUnique => "GroupCommit, UniqueIndex",
            Variant::GroupShared => "GroupCommit, 4 callers per stream",
        }
    }
}

struct Measured {
    variant: Variant,
    callers: u64,
    appends: u64,
    conflicts: u64,
    elapsed: Duration,
    per_s: f64,
    latency: Latencies,
    stored: u64,
    /// Appends per second of each round, in round order.
    rounds: Vec<f64>,
    /// CPU spent while the callers ran.
    cpu: CpuUse,
}

impl Measured {
    /// Adds a later round of the same variant and callers.
    fn absorb(&mut self, round: Measured) -> anyhow::Result<()> {
        self.appends += round.appends;
        self.conflicts += round.conflicts;
        self.elapsed += round.elapsed;
        self.per_s = per_second(self.appends, self.elapsed);
        self.latency.merge(&round.latency)?;
        self.stored += round.stored;
        self.rounds.extend(round.rounds);
        self.cpu.add(round.cpu);
        Ok(())
    }
}

/// The stores the variants append through: the default strategy's, and
/// [`AppendStrategy::UniqueIndex`]'s in a schema of its own.
struct Stores {
    version_row: PostgresStore,
    unique: PostgresStore,
}

/// Connections of each of the two stores' pools: both stay open through the
/// run, within PostgreSQL's default 100 (`max_connections`, 3 reserved).
const POOL: u32 = 44;

/// Every variant, in the order a round runs them.
const VARIANTS: [Variant; 6] =
    [Variant::Raw, Variant::Store, Variant::StoreUnique, Variant::Group, Variant::GroupUnique, Variant::GroupShared];

async fn measure(
    lab: &Lab,
    stores: &Stores,
    variant: Variant,
    callers: u64,
    budget: Budget,
) -> anyhow::Result<Measured> {
    lab.doing(format!("{} with {callers} callers", variant.name()));
    static RUN: AtomicU64 = AtomicU64::new(0);
    let prefix = format!("r{}s", RUN.fetch_add(1, Ordering::Relaxed));
    // Own streams, as the raw baseline; or four callers per stream, so that
    // conflicts happen and must stay per caller.
    let streams = if variant == Variant::GroupShared { callers.div_ceil(4) } else { callers };
    // The store of the variant's append strategy, one schema each.
    let store = match variant {
        Variant::StoreUnique | Variant::GroupUnique => &stores.unique,
        Variant::Raw | Variant::Store | Variant::Group | Variant::GroupShared => &stores.version_row,
    };
    let appender = match variant {
        Variant::Raw => Appender::Raw(store.pool().clone()),
        Variant::Store | Variant::StoreUnique => Appender::Store { store: store.clone(), prefix, streams },
        Variant::Group | Variant::GroupUnique | Variant::GroupShared => {
            Appender::Store { store: store.with_group_commit(GroupCommitOptions::default())?, prefix, streams }
        }
    };
    let meter = CpuMeter::start();
    let Appended { appends, conflicts, latency, elapsed } = single_appends(&appender, callers, budget).await?;
    let cpu = meter.map(CpuMeter::finish).unwrap_or_default();
    let per_s = per_second(appends, elapsed);
    // Every acknowledged append is stored exactly once.
    let stored = appender.stored().await?.unwrap_or(0);
    Ok(Measured { variant, callers, appends, conflicts, elapsed, per_s, latency, stored, rounds: vec![per_s], cpu })
}

impl Experiment for GroupCommitExperiment {
    fn number(&self) -> u8 {
        4
    }

    fn id(&self) -> &'static str {
        "group-commit"
    }

    fn title(&self) -> &'static str {
        "Group commit: one commit per append vs appends coalesced into one commit"
    }

    fn question(&self) -> &'static str {
        "How many single-event appends per second do 1 to 128 concurrent callers get when each append commits \
         alone, and when eslab's group commit coalesces them into one statement and one commit, with \
         optimistic concurrency kept per stream?"
    }

    fn run<'a>(&'a self, lab: &'a Lab) -> LocalBoxFuture<'a, anyhow::Result<Report>> {
        Box::pin(async move {
            let scale = lab.scale();
            let callers: Vec<u64> = scale.pick(vec![1, 8], vec![1, 8, 32, 128], vec![1, 8, 32, 128]);
            // Per round; each variant runs once per round, so a change in the
            // machine's load falls on all of them alike, not on whichever
            // variant happened to run then.
            let budget = scale.pick(
                Budget::new(5, 5, Duration::ZERO),
                Budget::new(5, 1_000_000, Duration::from_millis(700)),
                Budget::new(20, 10_000_000, Duration::from_secs(2)),
            );
            let rounds: usize = scale.pick(1, 3, 5);
            lab.steps(u64::try_from(callers.len() * VARIANTS.len() * rounds)?);
            // Callers share the connections beyond the pool size.
            let store = lab.pg_store(|o| o.max_connections(POOL)).await?;
            // One strategy per schema.
            let unique = lab.pg_store(|o| o.max_connections(POOL).append_strategy(AppendStrategy::UniqueIndex)).await?;
            let stores = Stores { version_row: store, unique };
            let mut measured: Vec<Measured> = Vec::new();
            for &n in &callers {
                let first = measured.len();
                for _ in 0..rounds {
                    for (i, variant) in VARIANTS.into_iter().enumerate() {
                        let round = measure(lab, &stores, variant, n, budget).await?;
                        match measured.get_mut(first + i) {
                            Some(total) => total.absorb(round)?,
                            None => measured.push(round),
                        }
                        lab.step("");
                    }
                }
            }
            Ok(report(&measured, &callers, budget, rounds))
        })
    }
}

/// The lowest and highest per-round ratio of `m` to `raw` (rounds paired in order).
fn round_ratios(m: &Measured, raw: &Measured) -> (f64, f64) {
    ratio_range(&m.rounds, &raw.rounds)
}

fn report(measured: &[Measured], callers: &[u64], budget: Budget, rounds: usize) -> Report {
    let mut table = Table::new(&[
        "callers",
        "variant",
        "appends",
        "appends/s",
        "× raw",
        "× raw per round (min-max)",
        "p50 (ms)",
        "p99 (ms)",
        "conflicts",
        "stored (= appends)",
        "client CPU µs/append",
        "PostgreSQL CPU µs/append",
        "machine busy %",
    ]);
    let raw_at = |n: u64| measured.iter().find(|m| m.callers == n && m.variant == Variant::Raw);
    for m in measured {
        let raw = raw_at(m.callers);
        let (lo, hi) = raw.map_or((f64::NAN, f64::NAN), |raw| round_ratios(m, raw));
        table.push(vec![
            Cell::Int(m.callers),
            Cell::text(m.variant.name()),
            Cell::Int(m.appends),
            Cell::num(m.per_s, 0),
            Cell::num(ratio(m.per_s, raw.map_or(f64::NAN, |r| r.per_s)), 2),
            Cell::text(format!("{lo:.2}-{hi:.2}")),
            Cell::num(m.latency.p50_ms(), 3),
            Cell::num(m.latency.p99_ms(), 3),
            Cell::Int(m.conflicts),
            match m.variant {
                Variant::Raw => Cell::text("n/a"),
                _ => Cell::text(if m.stored == m.appends { "yes".to_owned() } else { format!("NO: {}", m.stored) }),
            },
            Cell::num(m.cpu.client_us(m.appends), 0),
            Cell::num(m.cpu.postgres_us(m.appends), 0),
            Cell::num(m.cpu.busy_percent(), 0),
        ]);
    }
    let series = VARIANTS
        .iter()
        .map(|&v| {
            let values = callers
                .iter()
                .map(|&n| measured.iter().find(|m| m.callers == n && m.variant == v).map_or(f64::NAN, |m| m.per_s))
                .collect();
            (v.name().to_owned(), values)
        })
        .collect();
    let chart = workload::appends_by_callers("Single-event appends per second by concurrent callers", callers, series);
    let ordered = workload::findings_order(callers);
    let findings = ordered
        .iter()
        .filter_map(|&n| {
            let at = |v| measured.iter().find(|m| m.callers == n && m.variant == v);
            let (raw, store, unique, group, group_unique, shared) = (
                at(Variant::Raw)?,
                at(Variant::Store)?,
                at(Variant::StoreUnique)?,
                at(Variant::Group)?,
                at(Variant::GroupUnique)?,
                at(Variant::GroupShared)?,
            );
            let stored_once = [store, unique, group, group_unique, shared].iter().all(|m| m.stored == m.appends);
            let (group_unique_lo, group_unique_hi) = round_ratios(group_unique, raw);
            let (lo, hi) = round_ratios(group, raw);
            let (store_lo, store_hi) = round_ratios(store, raw);
            let (unique_lo, unique_hi) = round_ratios(unique, raw);
            Some(format!(
                "{n} callers: GroupCommit {:.0} appends/s = {:.2}× raw one-commit-per-row ({:.0}/s; {lo:.2}-{hi:.2}× \
                 round by round; with UniqueIndex {:.0}/s = {:.2}× raw, {group_unique_lo:.2}-{group_unique_hi:.2}, \
                 CPU {:.0} + {:.0} µs, machine {:.0}% busy) and {:.2}× \
                 the store committing each append ({:.0}/s = {:.2}× raw, {store_lo:.2}-{store_hi:.2}; with \
                 UniqueIndex {:.0}/s = {:.2}× raw, {unique_lo:.2}-{unique_hi:.2}); p99 {:.2} ms vs {:.2} ms; with 4 \
                 callers per stream {:.0} appends/s and {} conflicts, each failing only its own caller; every \
                 acknowledged append stored once: {}; CPU per append (client + PostgreSQL) {:.0} + {:.0} µs with \
                 the machine {:.0}% busy, vs {:.0} + {:.0} µs and {:.0}% for raw",
                group.per_s,
                ratio(group.per_s, raw.per_s),
                raw.per_s,
                group_unique.per_s,
                ratio(group_unique.per_s, raw.per_s),
                group_unique.cpu.client_us(group_unique.appends),
                group_unique.cpu.postgres_us(group_unique.appends),
                group_unique.cpu.busy_percent(),
                ratio(group.per_s, store.per_s),
                store.per_s,
                ratio(store.per_s, raw.per_s),
                unique.per_s,
                ratio(unique.per_s, raw.per_s),
                group.latency.p99_ms(),
                store.latency.p99_ms(),
                shared.per_s,
                shared.conflicts,
                if stored_once { "yes" } else { "NO" },
                group.cpu.client_us(group.appends),
                group.cpu.postgres_us(group.appends),
                group.cpu.busy_percent(),
                raw.cpu.client_us(raw.appends),
                raw.cpu.postgres_us(raw.appends),
                raw.cpu.busy_percent(),
            ))
        })
        .collect();
    let method = vec![
        format!(
            "Each caller appends one event at a time with ExpectedVersion::Exact(the version it last saw) to its own \
             stream, or (the shared rows) to a stream it shares with up to three other callers, so conflicts happen \
             and the loser catches up and goes on; at least {} appends per caller, then until {:.1} s have passed, \
             in each of {rounds} rounds. A round runs every variant once, one after another, so that the machine's \
             changing load falls on every variant alike; the totals add the rounds up, and 'per round' pairs each \
             round's figure with the raw baseline of the same round.",
            budget.min,
            budget.time.as_secs_f64()
        ),
        format!(
            "Baseline: a raw one-row INSERT into the same events table, autocommit (one commit per row), each caller \
         on its own stream. Store: PostgresStore::append (one statement, one commit; the default coalesced NOTIFY after the commit), \
         with the default AppendStrategy::VersionRow and, in a schema of its own, AppendStrategy::UniqueIndex. \
         GroupCommit: PostgresStore::with_group_commit with default options (up to 512 appends per statement, two \
         statements in flight), on each of the two stores. PostgreSQL default settings (fsync on, synchronous_commit on); pools of {POOL} connections \
         (the store's, which the raw baseline uses too, and the UniqueIndex store's)."
        ),
        "CPU: this process's CPU time while the callers ran (the client: eslab, sqlx, tokio and the lab's \
         bookkeeping) and that of the processes named postgres on this machine (none when the server is \
         elsewhere; a backend that exits during the window, such as a previous variant's connection closing, is \
         left out), each divided by the appends; machine busy: the share of all cores in use over the same \
         window (sysinfo; 10 ms ticks). A variant whose machine is far from 100% busy is waiting (for commits, for \
         its callers), not computing."
            .to_owned(),
    ];
    Report { table, chart, findings, method }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round(variant: Variant, appends: u64, millis: u64) -> Measured {
        let elapsed = Duration::from_millis(millis);
        let per_s = per_second(appends, elapsed);
        Measured {
            variant,
            callers: 8,
            appends,
            conflicts: 1,
            elapsed,
            per_s,
            latency: Latencies::new().unwrap(),
            stored: appends,
            rounds: vec![per_s],
            cpu: CpuUse::default(),
        }
    }

    #[test]
    fn rounds_add_up_and_pair_with_the_raw_round_they_ran_beside() {
        let mut raw = round(Variant::Raw, 1_000, 1_000);
        raw.absorb(round(Variant::Raw, 500, 1_000)).unwrap();
        let mut group = round(Variant::Group, 1_500, 1_000);
        group.absorb(round(Variant::Group, 1_500, 1_000)).unwrap();
        assert_eq!((group.appends, group.conflicts, group.stored), (3_000, 2, 3_000));
        assert_eq!(group.elapsed, Duration::from_secs(2));
        assert!((group.per_s - 1_500.0).abs() < 1e-9);
        assert!((raw.per_s - 750.0).abs() < 1e-9);
        // Round 1: 1500 vs 1000; round 2: 1500 vs 500.
        let (lo, hi) = round_ratios(&group, &raw);
        assert!((lo - 1.5).abs() < 1e-9 && (hi - 3.0).abs() < 1e-9, "{lo} {hi}");
    }

    #[test]
    fn the_first_finding_is_the_one_at_32_callers() {
        let variants = VARIANTS;
        let callers = [1, 8, 32, 128];
        let measured: Vec<Measured> = callers
            .iter()
            .flat_map(|&n| variants.iter().map(move |&v| Measured { callers: n, ..round(v, 1_000 * n, 1_000) }))
            .collect();
        let report = report(&measured, &callers, Budget::new(5, 5, Duration::ZERO), 1);
        let starts: Vec<&str> = report.findings.iter().map(|f| f.split(':').next().unwrap_or("")).collect();
        assert_eq!(starts, ["32 callers", "128 callers", "1 callers", "8 callers"]);
    }
}
