//! Experiment 9: the same bank workload on every store: in memory (the
//! reference), SQLite (a temporary file), PostgreSQL (a fresh schema) and
//! NATS JetStream (a fresh stream, one replica and three). Without
//! PostgreSQL or a JetStream cluster the others still run, and the report
//! says why a row is missing.

use std::time::{Duration, Instant};

use eslab_bank::{Account, AccountCommand, Amount, Currency, OverdraftLimit};
use eslab_core::{
    Checkpoint, DEFAULT_PAGE_SIZE, EventStorage, EventStore, FeedFilter, Metadata, Repository, RetryPolicy,
};
use eslab_memory::MemoryStore;
use eslab_nats::{NatsOptions, NatsStore};
use eslab_runtime::OnNats;
use eslab_sqlite::SqliteStore;
use futures_util::future::LocalBoxFuture;

use super::chart::Chart;
use super::measure::{Budget, Latencies, per_second};
use super::report::{Cell, Report, Table, ratio};
use super::{Experiment, Lab};

/// Experiment 9.
pub(super) struct Stores;

struct Measured {
    store: &'static str,
    commands: u64,
    per_s: f64,
    command: Latencies,
    retries: u64,
    load: Latencies,
    feed_events: u64,
    feed_per_s: f64,
}

#[derive(Debug, Clone, Copy)]
struct Workload {
    accounts: usize,
    tasks: u64,
    budget: Budget,
}

async fn commands<S: EventStorage + Clone + 'static>(
    repo: Repository<Account, S>,
    accounts: usize,
    budget: Budget,
    seed: u64,
    eur: Currency,
) -> anyhow::Result<(u64, u64, Latencies)> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut latencies = Latencies::new()?;
    let (mut done, mut retries) = (0_u64, 0_u64);
    let started = Instant::now();
    while budget.more(done, started) {
        let id = format!("a{}", rng.usize(0..accounts));
        let command = if done % 2 == 0 {
            AccountCommand::Deposit { amount: Amount::new(10_000)?, currency: eur }
        } else {
            AccountCommand::Withdraw { amount: Amount::new(1_000)?, currency: eur }
        };
        let t = Instant::now();
        let executed = repo.execute(&id, &command, Metadata::now()).await?;
        latencies.record(t.elapsed());
        retries += u64::from(executed.attempts.saturating_sub(1));
        done += 1;
    }
    Ok((done, retries, latencies))
}

async fn measure<S: EventStorage + Clone + 'static>(
    lab: &Lab,
    name: &'static str,
    store: S,
    w: Workload,
) -> anyhow::Result<Measured> {
    let repo: Repository<Account, S> =
        Repository::new(EventStore::new(store.clone())).with_retry(RetryPolicy::attempts(100));
    let eur: Currency = "EUR".parse().map_err(|e| anyhow::anyhow!("{e}"))?;
    lab.doing(format!("{name}: opening {} accounts", w.accounts));
    for a in 0..w.accounts {
        let open = AccountCommand::Open {
            owner: format!("Owner {a}"),
            currency: eur,
            overdraft_limit: OverdraftLimit::new(100_000_000)?,
        };
        repo.execute(&format!("a{a}"), &open, Metadata::now()).await?;
    }
    lab.doing(format!("{name}: {} concurrent command tasks", w.tasks));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for t in 0..w.tasks {
        tasks.spawn(commands(repo.clone(), w.accounts, w.budget, t + 1, eur));
    }
    let (mut commands_done, mut retries, mut command) = (0, 0, Latencies::new()?);
    while let Some(joined) = tasks.join_next().await {
        let (n, r, l) = joined??;
        commands_done += n;
        retries += r;
        command.merge(&l)?;
    }
    let per_s = per_second(commands_done, started.elapsed());
    lab.doing(format!("{name}: loading every account"));
    let mut load = Latencies::new()?;
    for a in 0..w.accounts {
        let t = Instant::now();
        repo.load(&format!("a{a}")).await?;
        load.record(t.elapsed());
    }
    lab.doing(format!("{name}: reading the feed"));
    // Every account's opening and every command's event; PostgreSQL shows
    // them once no older transaction on the server is still open.
    let expected = u64::try_from(w.accounts)? + commands_done;
    let t = Instant::now();
    let (mut feed_events, mut at) = (0_u64, Checkpoint::START);
    while feed_events < expected && t.elapsed() < Duration::from_secs(60) {
        let page = store.read_feed(&FeedFilter::All, at, DEFAULT_PAGE_SIZE).await?;
        match page.last() {
            Some(last) => at = last.checkpoint(),
            None => tokio::time::sleep(Duration::from_millis(10)).await,
        }
        feed_events += u64::try_from(page.len())?;
    }
    let feed_per_s = per_second(feed_events, t.elapsed());
    Ok(Measured { store: name, commands: commands_done, per_s, command, retries, load, feed_events, feed_per_s })
}

impl Experiment for Stores {
    fn number(&self) -> u8 {
        9
    }

    fn id(&self) -> &'static str {
        "stores"
    }

    fn title(&self) -> &'static str {
        "Stores: memory vs SQLite vs PostgreSQL vs NATS JetStream"
    }

    fn question(&self) -> &'static str {
        "What do the same bank commands, loads and feed reads cost on the in-memory store, the embedded SQLite \
         store, the PostgreSQL store and the replicated JetStream store (one replica and three)?"
    }

    fn needs_postgres(&self) -> bool {
        false
    }

    fn uses_if_reachable(&self) -> Option<&'static str> {
        Some("PostgreSQL, a NATS JetStream cluster")
    }

    fn run<'a>(&'a self, lab: &'a Lab) -> LocalBoxFuture<'a, anyhow::Result<Report>> {
        Box::pin(async move {
            let scale = lab.scale();
            let w = Workload {
                accounts: scale.pick(10, 100, 1_000),
                tasks: scale.pick(2, 4, 8),
                budget: scale.pick(
                    Budget::new(10, 10, Duration::ZERO),
                    Budget::new(10, 1_000_000, Duration::from_secs(3)),
                    Budget::new(50, 10_000_000, Duration::from_secs(15)),
                ),
            };
            lab.steps(5);
            let mut measured = vec![measure(lab, "memory", MemoryStore::new(), w).await?];
            lab.step("");
            let dir = tempfile::tempdir()?;
            let url = format!("sqlite://{}", dir.path().join("lab.db").display());
            let sqlite = SqliteStore::connect(&url).await?;
            measured.push(measure(lab, "SQLite (file, WAL)", sqlite.clone(), w).await?);
            sqlite.close().await;
            drop(dir);
            lab.step("");
            let mut skipped = Vec::new();
            match lab.postgres() {
                Ok(_) => {
                    let connections = u32::try_from(w.tasks)? + 2;
                    let pg = lab.pg_store(|o| o.max_connections(connections)).await?;
                    measured.push(measure(lab, "PostgreSQL", pg, w).await?);
                }
                Err(why) => skipped.push(format!("PostgreSQL was not measured: {why}")),
            }
            lab.step("");
            for (name, replicas) in [("JetStream R1", 1), ("JetStream R3", 3)] {
                match jetstream(lab, replicas).await {
                    Ok((store, side_dir)) => {
                        let result = measure(lab, name, store.clone(), w).await;
                        store.side().close().await;
                        drop(side_dir);
                        if let Err(e) = store.events().destroy().await {
                            lab.doing(format!("could not delete the lab's JetStream stream: {e}"));
                        }
                        measured.push(result?);
                    }
                    Err(why) => skipped.push(format!(
                        "{name} was not measured: {why} (no JetStream cluster at {}; `make services` starts one)",
                        lab.nats_url()
                    )),
                }
                lab.step("");
            }
            Ok(report(&measured, w, skipped))
        })
    }
}

/// The store `eslab serve` runs on `nats://`: a fresh JetStream stream of
/// `replicas` replicas (deleted by the caller) with the personal-data keys
/// and snapshots in an SQLite file of a temporary directory.
async fn jetstream(lab: &Lab, replicas: usize) -> anyhow::Result<(OnNats<SqliteStore>, tempfile::TempDir)> {
    let name = format!("ESLAB_LAB_{}", uuid::Uuid::now_v7().simple()).to_uppercase();
    let options = NatsOptions::new(lab.nats_url())
        .stream(name.clone())
        .subject_prefix(format!("eslablab.{}", name.to_lowercase()))
        .replicas(replicas)
        .request_timeout(Duration::from_secs(10));
    let events = NatsStore::connect(options).await?;
    let dir = tempfile::tempdir()?;
    let side = SqliteStore::connect(&format!("sqlite://{}", dir.path().join("side.db").display())).await?;
    Ok((OnNats::new(events, side), dir))
}

fn report(measured: &[Measured], w: Workload, skipped: Vec<String>) -> Report {
    let mut table = Table::new(&[
        "store",
        "commands",
        "commands/s",
        "× memory",
        "command p50 (ms)",
        "command p99 (ms)",
        "conflict retries",
        "load p50 (µs)",
        "load p99 (µs)",
        "feed events",
        "feed events/s",
    ]);
    let memory = measured.first().map_or(f64::NAN, |m| m.per_s);
    for m in measured {
        table.push(vec![
            Cell::text(m.store),
            Cell::Int(m.commands),
            Cell::num(m.per_s, 0),
            Cell::num(ratio(m.per_s, memory), 3),
            Cell::num(m.command.p50_ms(), 3),
            Cell::num(m.command.p99_ms(), 3),
            Cell::Int(m.retries),
            Cell::num(m.load.p50_us(), 1),
            Cell::num(m.load.p99_us(), 1),
            Cell::Int(m.feed_events),
            Cell::num(m.feed_per_s, 0),
        ]);
    }
    let chart = Chart {
        title: "Bank commands and feed reads per second, by store (log scale)".into(),
        x_label: "store".into(),
        y_label: "per second".into(),
        categories: measured.iter().map(|m| m.store.to_owned()).collect(),
        series: vec![
            ("commands/s".to_owned(), measured.iter().map(|m| m.per_s).collect()),
            ("feed events/s".to_owned(), measured.iter().map(|m| m.feed_per_s).collect()),
        ],
        log_y: true,
    };
    let mut findings: Vec<String> = measured
        .iter()
        .skip(1)
        .map(|m| {
            format!(
                "{}: {:.0} commands/s ({:.3}× memory), command p99 {:.2} ms, load p50 {:.0} µs",
                m.store,
                m.per_s,
                ratio(m.per_s, memory),
                m.command.p99_ms(),
                m.load.p50_us()
            )
        })
        .collect();
    findings.extend(skipped.clone());
    let mut method = vec![
        format!(
            "Per store: {} accounts opened, then {} concurrent tasks execute deposit and withdraw commands on \
             accounts chosen uniformly, through eslab-core's Repository<Account> (load, decide, append with the \
             loaded version, retry on conflict). Each task does at least {} commands, then goes on until {:.1} s \
             have passed. Then every account is loaded once, and the whole feed read in pages of 512 until every \
             event is seen (up to 60 s: on PostgreSQL a transaction still open elsewhere on the server holds the \
             feed back).",
            w.accounts,
            w.tasks,
            w.budget.min,
            w.budget.time.as_secs_f64()
        ),
        "SQLite: a temporary file (WAL, synchronous=NORMAL, one writer); PostgreSQL: a fresh schema, default \
         options (fsync on commit); JetStream: a fresh file-backed stream on the cluster at --nats-url \
         (`make services`: three nats-server processes on this machine, sync_interval: always, so every write is \
         fsynced on each replica that stores it), one replica (R1) and three (R3), the personal-data keys in an SQLite \
         file beside it (as `eslab serve` runs on nats://). Baseline: the in-memory store."
            .to_owned(),
    ];
    method.extend(skipped);
    Report { table, chart, findings, method }
}
