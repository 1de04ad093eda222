//! Experiment 12: consistency across streams. A transfer storm among a few
//! accounts, carried out three ways through the bank's own code: the saga
//! (request, then the process manager's debit and credit steps, each its own
//! append, run in line by the writer so that a transfer's latency is its
//! whole life), one multi-stream append with the accounts' expected versions
//! (load both, decide both, append the legs and the transfer's record at
//! once), and the dynamic consistency boundary (read both accounts' events
//! by tag, decide, append on the condition that neither changed). At 1, 8 and
//! 32 writers on PostgreSQL, and on SQLite for reference: transfers/s, p50
//! and p99 per transfer, conflicts (retried attempts) and refusals, and
//! whether the money is conserved (the balances add up to what was
//! deposited, none below zero, every transfer final).

use std::time::{Duration, Instant};

use eslab_bank::{
    Account, AccountCommand, AtomicTransfer, AtomicTransferDone, Bank, BankOptions, Currency, OverdraftLimit, Transfer,
    TransferCommand, TransferEvent, TransferProcess, TransferRequest, TransferStatus,
};
use eslab_core::{
    Aggregate, CommandError, CommandOptions, Decide, Decided, Decision, Error, EventReader, EventStorage, EventStore,
    ExpectedVersion, Loaded, Outcome, Repository, StreamAppend, Version,
};
use futures_util::future::LocalBoxFuture;

use super::chart::Chart;
use super::measure::{Budget, Latencies, per_second};
use super::report::{Cell, Report, Table, ratio};
use super::{Experiment, Lab};

/// Experiment 12.
pub(super) struct CrossStream;

/// How a transfer is carried out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Path {
    Saga,
    MultiStream,
    Boundary,
}

const PATHS: [Path; 3] = [Path::Saga, Path::MultiStream, Path::Boundary];

impl Path {
    fn name(self) -> &'static str {
        match self {
            Path::Saga => "saga (3 appends)",
            Path::MultiStream => "multi-stream append, expected versions",
            Path::Boundary => "dynamic consistency boundary",
        }
    }
}

/// Accounts in the storm, and what each starts with (minor units).
const ACCOUNTS: usize = 16;
const OPENING: i64 = 1_000_000;

#[derive(Default)]
struct Tally {
    done: u64,
    refused: u64,
    conflicts: u64,
    gave_up: u64,
}

/// How one transfer ended.
enum Ended {
    /// Done after this many attempts.
    Done(u32),
    /// Refused by a rule (nothing moved).
    Refused,
    /// Conflicts outlasted the retry policy (nothing moved).
    GaveUp,
}

struct Measured {
    store: &'static str,
    writers: u64,
    path: Path,
    tally: Tally,
    per_s: f64,
    latencies: Latencies,
    conserved: bool,
    /// Events per account at the end of the cell (mean): what one account's
    /// replay reads, and half of what a boundary read returns.
    events_per_account: f64,
}

fn eur() -> anyhow::Result<Currency> {
    Ok("EUR".parse()?)
}

fn account_id(i: usize) -> String {
    format!("acc{i}")
}

/// The multi-stream path as a decision on the transfer: load both accounts
/// (latest), decide both legs, append the transfer's record with both legs
/// at their expected versions in one atomic append (retried by the command
/// path on a conflict).
struct AtOnce<'a, S> {
    accounts: &'a Repository<Account, S>,
    from: String,
    to: String,
    amount: eslab_bank::Amount,
    currency: Currency,
}

impl<S: EventStorage + Clone + 'static> Decide<Transfer> for AtOnce<'_, S> {
    type Output = ();
    type Error = Error;

    async fn decide(&self, _: &Loaded<Transfer>) -> Decided<Transfer, Self> {
        let from = self.accounts.load_latest(&self.from).await?;
        let to = self.accounts.load_latest(&self.to).await?;
        let refused = |e: eslab_bank::AccountError| CommandError::Rejected(Error::InvalidRequest(e.rule().to_owned()));
        let withdrawn = from
            .state
            .decide(&AccountCommand::Withdraw { amount: self.amount, currency: self.currency })
            .map_err(refused)?;
        let deposited = to
            .state
            .decide(&AccountCommand::Deposit { amount: self.amount, currency: self.currency })
            .map_err(refused)?;
        let leg = |id: &str, version: Version, events: &[eslab_bank::AccountEvent]| -> Result<StreamAppend, Error> {
            let stream = Account::stream_id(id)?;
            let encoded = eslab_core::encode_events::<Account>(&stream, events, &eslab_core::Metadata::now(), None, 0)?;
            Ok(StreamAppend::new(stream, ExpectedVersion::Exact(version), encoded))
        };
        let record = TransferEvent::done_at_once(&TransferRequest {
            from: self.from.clone(),
            to: self.to.clone(),
            amount: self.amount,
            currency: self.currency,
        });
        Ok(Decision::new(record.to_vec(), ())
            .also(leg(&self.from, from.version, &withdrawn)?)
            .also(leg(&self.to, to.version, &deposited)?))
    }
}

/// One transfer by `path`.
async fn transfer<S: EventStorage + Clone + 'static>(
    path: Path,
    bank: &Bank<S>,
    process: &TransferProcess<S>,
    id: &str,
    from: &str,
    to: &str,
    amount: eslab_bank::Amount,
) -> anyhow::Result<Ended> {
    let currency = eur()?;
    let options = CommandOptions::default();
    match path {
        Path::Boundary => {
            let t = AtomicTransfer { transfer_id: id.into(), from: from.into(), to: to.into(), amount, currency };
            match bank.transfer_atomically(&t, &options, AtomicTransferDone::clone).await {
                Ok(eslab_core::Settled::Executed { attempts, .. }) => Ok(Ended::Done(attempts)),
                Ok(eslab_core::Settled::Replayed(_)) => Ok(Ended::Done(1)),
                Err(CommandError::Rejected(_)) => Ok(Ended::Refused),
                Err(e) if e.is_conflict() => Ok(Ended::GaveUp),
                Err(e) => Err(e.into()),
            }
        }
        Path::MultiStream => {
            let decision = AtOnce { accounts: bank.accounts(), from: from.into(), to: to.into(), amount, currency };
            match bank.transfers().run_with(id, &decision, &options, |_, _, ()| ()).await {
                Ok(Outcome::Executed(done)) => Ok(Ended::Done(done.attempts)),
                Ok(Outcome::Replayed(())) => Ok(Ended::Done(1)),
                Err(CommandError::Rejected(_)) => Ok(Ended::Refused),
                Err(e) if e.is_conflict() => Ok(Ended::GaveUp),
                Err(e) => Err(e.into()),
            }
        }
        Path::Saga => {
            let request = TransferCommand::Request { from: from.into(), to: to.into(), amount, currency };
            let requested = match bank.request_transfer(id, &request, options, |_, _| ()).await {
                Ok(Outcome::Executed(done)) => done,
                Ok(Outcome::Replayed(())) => return Ok(Ended::Done(1)),
                Err(e) if e.is_conflict() => return Ok(Ended::GaveUp),
                Err(e) => return Err(e.into()),
            };
            // The process manager's steps, in line: each event of the
            // transfer's stream is handled as the runner would.
            let stream = Transfer::stream_id(id)?;
            let mut next = Version::FIRST;
            loop {
                let events = bank.store().read_stream(&stream, next, 16).await?;
                let Some(last) = events.last() else { break };
                next = last.stream_version.next().ok_or_else(|| anyhow::anyhow!("version overflow"))?;
                for event in &events {
                    process.handle(event).await?;
                }
            }
            let status = bank.transfer_now(id).await?.state.status;
            // The steps retry inside the process manager: only the request's count.
            let attempts = requested.attempts;
            Ok(if status == TransferStatus::Completed { Ended::Done(attempts) } else { Ended::Refused })
        }
    }
}

async fn writer<S: EventStorage + Clone + 'static>(
    path: Path,
    bank: Bank<S>,
    budget: Budget,
    seed: u64,
) -> anyhow::Result<(Tally, Latencies)> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let process = TransferProcess::with_bank(bank.clone());
    let mut latencies = Latencies::new()?;
    let mut tally = Tally::default();
    let started = Instant::now();
    let mut n = 0;
    while budget.more(n, started) {
        let from = rng.usize(0..ACCOUNTS);
        let to = (from + rng.usize(1..ACCOUNTS)) % ACCOUNTS;
        let amount = eslab_bank::Amount::new(rng.i64(1..=5_000))?;
        let id = uuid::Uuid::now_v7().hyphenated().to_string();
        let t = Instant::now();
        match transfer(path, &bank, &process, &id, &account_id(from), &account_id(to), amount).await? {
            Ended::Done(attempts) => {
                tally.done += 1;
                tally.conflicts += u64::from(attempts.saturating_sub(1));
            }
            Ended::Refused => tally.refused += 1,
            Ended::GaveUp => tally.gave_up += 1,
        }
        latencies.record(t.elapsed());
        n += 1;
    }
    Ok((tally, latencies))
}

/// Opens the accounts with their opening balance.
async fn open<S: EventStorage + Clone + 'static>(bank: &Bank<S>) -> anyhow::Result<()> {
    let currency = eur()?;
    for i in 0..ACCOUNTS {
        let id = account_id(i);
        let open = AccountCommand::Open { owner: id.clone(), currency, overdraft_limit: OverdraftLimit::NONE };
        bank.account(&id, &open, CommandOptions::default(), |_, _| ()).await?;
        let deposit = AccountCommand::Deposit { amount: eslab_bank::Amount::new(OPENING)?, currency };
        bank.account(&id, &deposit, CommandOptions::default(), |_, _| ()).await?;
    }
    Ok(())
}

/// Whether the balances add up to what was deposited with none negative,
/// and the accounts' mean number of events.
async fn conserved<S: EventStorage + Clone + 'static>(bank: &Bank<S>) -> anyhow::Result<(bool, f64)> {
    let mut total = 0i64;
    let mut events = 0u64;
    let mut negative = false;
    for i in 0..ACCOUNTS {
        let account = bank.account_now(&account_id(i)).await?;
        let balance = account.state.balance.minor();
        negative |= balance < 0;
        events += account.version.get();
        total = total.checked_add(balance).ok_or_else(|| anyhow::anyhow!("balance overflow"))?;
    }
    #[allow(clippy::cast_precision_loss)] // counts far below 2^52
    let mean = events as f64 / ACCOUNTS as f64;
    Ok((!negative && total == OPENING * i64::try_from(ACCOUNTS)?, mean))
}

async fn measure<S: EventStorage + Clone + 'static>(
    store_name: &'static str,
    store: S,
    path: Path,
    writers: u64,
    budget: Budget,
) -> anyhow::Result<Measured> {
    let bank = Bank::new(EventStore::new(store).with_upcasters(eslab_bank::upcasters()), &BankOptions::default());
    open(&bank).await?;
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..writers {
        tasks.spawn(writer(path, bank.clone(), budget, w + 1));
    }
    let mut tally = Tally::default();
    let mut latencies = Latencies::new()?;
    while let Some(joined) = tasks.join_next().await {
        let (t, l) = joined??;
        tally.done += t.done;
        tally.refused += t.refused;
        tally.conflicts += t.conflicts;
        tally.gave_up += t.gave_up;
        latencies.merge(&l)?;
    }
    let elapsed = started.elapsed();
    let (conserved, events_per_account) = conserved(&bank).await?;
    Ok(Measured {
        store: store_name,
        writers,
        path,
        per_s: per_second(tally.done, elapsed),
        tally,
        latencies,
        conserved,
        events_per_account,
    })
}

impl Experiment for CrossStream {
    fn number(&self) -> u8 {
        12
    }

    fn id(&self) -> &'static str {
        "cross-stream"
    }

    fn title(&self) -> &'static str {
        "Consistency across streams: saga, multi-stream append, dynamic consistency boundary"
    }

    fn question(&self) -> &'static str {
        "A transfer moves money between two accounts: what do a saga, one multi-stream append with expected \
         versions and a dynamic consistency boundary cost in transfers/s, latency and conflicts at 1, 8 and 32 \
         writers, and is the money conserved?"
    }

    fn run<'a>(&'a self, lab: &'a Lab) -> LocalBoxFuture<'a, anyhow::Result<Report>> {
        Box::pin(async move {
            let scale = lab.scale();
            let levels: Vec<u64> = scale.pick(vec![1, 4], vec![1, 8, 32], vec![1, 8, 32]);
            let budget = scale.pick(
                Budget::new(5, 5, Duration::ZERO),
                Budget::new(5, 1_000_000, Duration::from_secs(3)),
                Budget::new(20, 10_000_000, Duration::from_secs(10)),
            );
            lab.steps((levels.len() * PATHS.len() * 2) as u64);
            let mut measured = Vec::new();
            for &writers in &levels {
                for path in PATHS {
                    lab.doing(format!("PostgreSQL · {} · {writers} writers", path.name()));
                    let connections = u32::try_from(writers)? + 4;
                    let store = lab.pg_store(|o| o.max_connections(connections)).await?;
                    measured.push(measure("PostgreSQL", store, path, writers, budget).await?);
                    lab.step("");
                    lab.doing(format!("SQLite · {} · {writers} writers", path.name()));
                    let dir = tempfile::tempdir()?;
                    let url = format!("sqlite://{}", dir.path().join("lab.db").display());
                    let sqlite = eslab_sqlite::SqliteStore::connect(&url).await?;
                    measured.push(measure("SQLite", sqlite.clone(), path, writers, budget).await?);
                    sqlite.close().await;
                    lab.step("");
                }
            }
            Ok(report(&levels, &measured, budget))
        })
    }
}

fn report(levels: &[u64], measured: &[Measured], budget: Budget) -> Report {
    let mut table = Table::new(&[
        "store",
        "writers",
        "path",
        "transfers",
        "transfers/s",
        "refused",
        "conflicts",
        "conflicts/transfer",
        "gave up",
        "p50 (ms)",
        "p99 (ms)",
        "events per account (end)",
        "money conserved",
    ]);
    for m in measured {
        #[allow(clippy::cast_precision_loss)] // counts far below 2^52
        let per = ratio(m.tally.conflicts as f64, m.tally.done as f64);
        table.push(vec![
            Cell::text(m.store),
            Cell::Int(m.writers),
            Cell::text(m.path.name()),
            Cell::Int(m.tally.done),
            Cell::num(m.per_s, 0),
            Cell::Int(m.tally.refused),
            Cell::Int(m.tally.conflicts),
            Cell::num(per, 3),
            Cell::Int(m.tally.gave_up),
            Cell::num(m.latencies.p50_ms(), 2),
            Cell::num(m.latencies.p99_ms(), 2),
            Cell::num(m.events_per_account, 0),
            Cell::text(if m.conserved { "yes" } else { "NO" }),
        ]);
    }
    let categories: Vec<String> = levels.iter().map(|w| format!("{w} writers")).collect();
    let chart = Chart {
        title: "Transfers/s on PostgreSQL, by writers".into(),
        x_label: "writers".into(),
        y_label: "transfers/s".into(),
        categories,
        series: PATHS
            .iter()
            .map(|p| {
                let values = levels
                    .iter()
                    .map(|w| {
                        measured
                            .iter()
                            .find(|m| m.store == "PostgreSQL" && m.writers == *w && m.path == *p)
                            .map_or(f64::NAN, |m| m.per_s)
                    })
                    .collect();
                (p.name().to_owned(), values)
            })
            .collect(),
        log_y: false,
    };
    let mut findings = Vec::new();
    for store in ["PostgreSQL", "SQLite"] {
        for w in levels {
            let of = |p: Path| measured.iter().find(|m| m.store == store && m.writers == *w && m.path == p);
            if let (Some(saga), Some(multi), Some(dcb)) = (of(Path::Saga), of(Path::MultiStream), of(Path::Boundary)) {
                findings.push(format!(
                    "{store}, {w} writers: boundary {:.0} transfers/s = {:.2}× the saga, {:.2}× the multi-stream \
                     append (p99 {:.1} ms vs {:.1} / {:.1} ms; {:.3} vs {:.3} / {:.3} conflicts per transfer)",
                    dcb.per_s,
                    ratio(dcb.per_s, saga.per_s),
                    ratio(dcb.per_s, multi.per_s),
                    dcb.latencies.p99_ms(),
                    saga.latencies.p99_ms(),
                    multi.latencies.p99_ms(),
                    ratio(dcb.tally.conflicts as f64, dcb.tally.done as f64),
                    ratio(saga.tally.conflicts as f64, saga.tally.done as f64),
                    ratio(multi.tally.conflicts as f64, multi.tally.done as f64),
                ));
            }
        }
    }
    if let Some(dcb) = measured
        .iter()
        .filter(|m| m.path == Path::Boundary)
        .max_by(|a, b| a.events_per_account.total_cmp(&b.events_per_account))
    {
        findings.push(format!(
            "Why the boundary trails the multi-stream append: each decision reads and folds both accounts' whole \
             histories (up to {:.0} events per read by the end of a cell here), where the multi-stream path starts \
             from the repository's state cache and reads only what is new. Overlapping decisions of one process \
             queue on the in-process locks of their boundary's keys instead of conflicting (0 conflicts); across \
             processes the store's condition catches them.",
            2.0 * dcb.events_per_account
        ));
    }
    if measured.iter().all(|m| m.conserved) {
        findings.push("Money conserved on every path, store and level (no balance below zero).".to_owned());
    } else {
        findings.push("MONEY NOT CONSERVED in at least one cell: see the table.".to_owned());
    }
    let method = vec![
        format!(
            "{ACCOUNTS} accounts opened with {OPENING} minor units each (EUR, no overdraft); each writer (a tokio \
             task) transfers 1 to 5 000 between two distinct accounts drawn at random, one transfer after the other, \
             at least {} transfers and then until {:.1} s have passed.",
            budget.min,
            budget.time.as_secs_f64()
        ),
        "Saga: the transfer's request (one append), then the process manager's debit and credit steps, each one \
         atomic append of the account's event and the transfer's next event, run in line by the writer (as the \
         projection runner would run them): the latency is the whole transfer's. Its conflicts count the \
         request's retries only (the steps retry inside the process manager, uncounted)."
            .to_owned(),
        "Multi-stream append: both accounts loaded, both legs decided, the legs at their expected versions and \
         the transfer's record in one append (the library's command path retries a conflict). Boundary: \
         `Bank::transfer_atomically`, a read of both accounts' events by tag and an append on the condition that \
         neither changed (retried with backoff). Conflicts are the retried attempts; a transfer whose conflicts \
         outlast the retry policy (16 attempts, backoff up to 100 ms) gives up, moving nothing."
            .to_owned(),
        "Each cell runs on its own fresh store (PostgreSQL schema, SQLite file). Conserved: the balances add up to \
         what was deposited and none is negative, after the cell."
            .to_owned(),
    ];
    Report { table, chart, findings, method }
}
