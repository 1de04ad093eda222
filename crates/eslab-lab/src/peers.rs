//! Experiment 10: eslab beside other Rust event-sourcing libraries on the
//! same PostgreSQL, in the same run: cqrs-es with postgres-es, and
//! disintegrate with disintegrate-postgres. Each runs one tiny domain (an
//! account; command: deposit, recording `n` `Deposited` events) through its
//! own public API as its documentation shows it, on its own fresh schema;
//! eslab runs as `eslab serve` runs it (the store opened with
//! [`PostgresSettings::default`]: group commit, NOTIFY after commit; commands
//! through [`Repository`] with the service's retry policy, state cache and
//! stream locks). Workloads: one-event commands on distinct accounts at 1, 8
//! and 32 writers; four writers per account (contention, retried until done);
//! a ten-event command; loading a long account. Every library runs once per
//! round, so the machine's load falls on all alike. A wire counter (a proxy
//! between a library and PostgreSQL) measures each library's statements and
//! round trips per command.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use eslab_core::{EventStore, Metadata, Repository, RetryPolicy, StreamLocks};
use eslab_postgres::PostgresStore;
use eslab_runtime::PostgresSettings;
use futures_util::future::LocalBoxFuture;
use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgSslMode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::chart::Chart;
use super::measure::{Budget, Latencies, per_second};
use super::report::{Cell, Report, Table, ratio};
use super::{Experiment, Lab};

/// Experiment 10.
pub(super) struct Peers;

/// The amount of every deposit (minor units).
const AMOUNT: i64 = 100;
/// Commands on one account before a writer moves to a fresh one, so that the
/// replay of a library without a state cache stays short (at most 9 events
/// per writer, 39 with four writers per account).
const COMMANDS_PER_ACCOUNT: u64 = 10;
/// Writers sharing one account in the contention workload.
const WRITERS_PER_ACCOUNT: u64 = 4;
/// Retries after which a command is abandoned (and the run fails).
const MAX_RETRIES: u64 = 10_000;
/// Pool size of every library: `eslab serve`'s default ([`PostgresSettings::default`]).
const POOL: u32 = eslab_runtime::DEFAULT_PG_MAX_CONNECTIONS;
/// `eslab serve`'s command path (apps/eslab/src/serve/mod.rs): attempts per command.
const SERVE_ATTEMPTS: u32 = 10;
/// `eslab serve`'s state cache entries per aggregate type.
const SERVE_CACHE_ENTRIES: u64 = 10_000;
/// `eslab serve`'s stream-lock stripes.
const SERVE_LOCK_STRIPES: usize = 256;

/// eslab's domain: its [`eslab_core::Aggregate`].
mod with_eslab {
    use std::convert::Infallible;

    use eslab_core::{Aggregate, DomainEvent};
    use serde::{Deserialize, Serialize};

    /// An account: the sum of its deposits.
    #[derive(Debug, Default, Clone)]
    pub(super) struct Account {
        pub(super) balance: i64,
    }

    /// What happened to an account.
    #[derive(Debug, Clone, Serialize, Deserialize)]
    pub(super) enum AccountEvent {
        /// Money came in.
        Deposited { amount: i64 },
    }

    impl DomainEvent for AccountEvent {
        const EVENT_TYPES: &'static [&'static str] = &["Deposited"];
        fn event_type(&self) -> &'static str {
            "Deposited"
        }
    }

    /// Deposit `amount`, `times` times (one event each).
    #[derive(Debug)]
    pub(super) struct Deposit {
        pub(super) amount: i64,
        pub(super) times: usize,
    }

    impl Aggregate for Account {
        const KIND: &'static str = "account";
        type Command = Deposit;
        type Event = AccountEvent;
        type Error = Infallible;

        fn decide(&self, command: &Deposit) -> Result<Vec<AccountEvent>, Infallible> {
            Ok((0..command.times).map(|_| AccountEvent::Deposited { amount: command.amount }).collect())
        }

        fn evolve(&mut self, event: &AccountEvent) {
            let AccountEvent::Deposited { amount } = event;
            self.balance = self.balance.saturating_add(*amount);
        }
    }
}

/// cqrs-es's domain: its [`cqrs_es::Aggregate`] (the shape of its docs' `Customer`).
mod with_cqrs_es {
    use std::convert::Infallible;

    use cqrs_es::event_sink::EventSink;
    use cqrs_es::{Aggregate, DomainEvent};
    use serde::{Deserialize, Serialize};

    /// An account: the sum of its deposits.
    #[derive(Debug, Default, Serialize, Deserialize)]
    pub(super) struct Account {
        pub(super) balance: i64,
    }

    /// What happened to an account.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub(super) enum AccountEvent {
        /// Money came in.
        Deposited { amount: i64 },
    }

    impl DomainEvent for AccountEvent {
        fn event_type(&self) -> String {
            "Deposited".to_owned()
        }
        fn event_version(&self) -> String {
            "1.0".to_owned()
        }
    }

    /// Deposit `amount`, `times` times (one event each).
    #[derive(Debug)]
    pub(super) struct Deposit {
        pub(super) amount: i64,
        pub(super) times: usize,
    }

    impl Aggregate for Account {
        const TYPE: &'static str = "account";
        type Command = Deposit;
        type Event = AccountEvent;
        type Error = Infallible;
        type Services = ();

        async fn handle(&mut self, command: Deposit, _: &(), sink: &EventSink<Self>) -> Result<(), Infallible> {
            for _ in 0..command.times {
                sink.write(AccountEvent::Deposited { amount: command.amount }, self).await;
            }
            Ok(())
        }

        fn apply(&mut self, event: AccountEvent) {
            let AccountEvent::Deposited { amount } = event;
            self.balance = self.balance.saturating_add(amount);
        }
    }

    /// postgres-es's events table, as its `db/init.sql` creates it.
    pub(super) const CREATE_TABLE: &str = "CREATE TABLE events (
        aggregate_type text NOT NULL,
        aggregate_id text NOT NULL,
        sequence bigint CHECK (sequence >= 0) NOT NULL,
        event_type text NOT NULL,
        event_version text NOT NULL,
        payload json NOT NULL,
        metadata json NOT NULL,
        PRIMARY KEY (aggregate_type, aggregate_id, sequence))";
}

/// disintegrate's domain: an event with a stream, a [`disintegrate::StateQuery`]
/// and a [`disintegrate::Decision`] (the shape of its README's cart).
mod with_disintegrate {
    #![allow(missing_docs, unreachable_pub)] // the derive macros generate public items

    use std::convert::Infallible;

    use disintegrate::{Decision, Event, StateMutate, StateQuery};
    use serde::{Deserialize, Serialize};

    /// What happened.
    #[derive(Debug, Clone, PartialEq, Eq, Event, Serialize, Deserialize)]
    #[stream(AccountEvent, [Deposited])]
    pub enum DomainEvent {
        /// Money came into an account.
        Deposited {
            #[id]
            account_id: String,
            amount: i64,
        },
    }

    /// An account: the sum of its deposits.
    #[derive(Debug, Default, StateQuery, Clone, Serialize, Deserialize)]
    #[state_query(AccountEvent)]
    pub struct Account {
        #[id]
        pub account_id: String,
        pub balance: i64,
    }

    impl Account {
        pub fn new(account_id: &str) -> Self {
            Account { account_id: account_id.to_owned(), balance: 0 }
        }
    }

    impl StateMutate for Account {
        fn mutate(&mut self, event: Self::Event) {
            let AccountEvent::Deposited { amount, .. } = event;
            self.balance = self.balance.saturating_add(amount);
        }
    }

    /// What `PgEventStore::try_new` creates (disintegrate-postgres 4.0.1's
    /// migrator: its SQL files and the domain-id column with its index), with
    /// one change: its `begin_epoch` function writes `0xFFFFFFFF`, a hex
    /// integer literal PostgreSQL parses only from version 16 on, so on
    /// PostgreSQL 15 `try_new` fails; here it is the same number in decimal.
    pub const CREATE_SCHEMA: [&str; 7] = [
        "CREATE SEQUENCE IF NOT EXISTS seq_event_event_id",
        "CREATE TABLE IF NOT EXISTS event (
            event_id BIGINT PRIMARY KEY DEFAULT nextval('seq_event_event_id'),
            event_type VARCHAR(255),
            payload BYTEA,
            inserted_at TIMESTAMP DEFAULT now())",
        "CREATE INDEX IF NOT EXISTS idx_event_type_btree ON event(event_type)",
        "CREATE OR REPLACE FUNCTION event_store_current_epoch()
        RETURNS BIGINT AS $$
        DECLARE
            persisted_event_id BIGINT;
            pending_event_id BIGINT;
            db_id INT;
        BEGIN
            SELECT COALESCE(MAX(event_id), 0) INTO persisted_event_id FROM event;
            SELECT oid INTO db_id FROM pg_database WHERE datname = current_database();
            SELECT MIN((l3.objid::bigint << 32) + l2.objid::bigint)
            INTO pending_event_id
            FROM pg_locks l1
            INNER JOIN pg_locks l2 ON l1.pid = l2.pid
            INNER JOIN pg_locks l3 ON l1.pid = l3.pid
            WHERE
                l1.classid = db_id
                AND l2.classid = 1
                AND l3.classid = 2
                AND l1.locktype = 'advisory';
            RETURN LEAST(COALESCE(pending_event_id, persisted_event_id), persisted_event_id);
        END;
        $$ LANGUAGE plpgsql",
        "CREATE OR REPLACE FUNCTION event_store_begin_epoch()
        RETURNS void AS $$
        DECLARE
            id BIGINT;
            db_id INT;
        BEGIN
            SELECT last_value INTO id FROM seq_event_event_id;
            SELECT oid INTO db_id FROM pg_database WHERE datname = current_database();
            PERFORM pg_try_advisory_xact_lock_shared(db_id, 0);
            PERFORM pg_try_advisory_xact_lock_shared(1, (id & 4294967295)::bit(32)::integer);
            PERFORM pg_try_advisory_xact_lock_shared(2, (id >> 32)::bit(32)::integer);
        END;
        $$ LANGUAGE plpgsql",
        "ALTER TABLE event ADD COLUMN IF NOT EXISTS account_id TEXT",
        "CREATE INDEX IF NOT EXISTS idx_event_account_id ON event (account_id) WHERE account_id IS NOT NULL",
    ];

    /// Deposit `amount`, `times` times (one event each).
    pub struct Deposit {
        pub account_id: String,
        pub amount: i64,
        pub times: usize,
    }

    impl Decision for Deposit {
        type Event = DomainEvent;
        type StateQuery = Account;
        type Error = Infallible;

        fn state_query(&self) -> Account {
            Account::new(&self.account_id)
        }

        fn process(&self, _: &Account) -> Result<Vec<DomainEvent>, Infallible> {
            Ok((0..self.times)
                .map(|_| DomainEvent::Deposited { account_id: self.account_id.clone(), amount: self.amount })
                .collect())
        }
    }
}

type DisintegrateStore = disintegrate_postgres::PgEventStore<
    with_disintegrate::DomainEvent,
    disintegrate::serde::json::Json<with_disintegrate::DomainEvent>,
>;

/// One library, ready to run commands and loads.
enum Library {
    /// eslab as `eslab serve` runs it; `replay` loads without the state cache.
    Eslab {
        commands: Repository<with_eslab::Account, PostgresStore>,
        replay: Repository<with_eslab::Account, PostgresStore>,
    },
    /// cqrs-es with postgres-es: `postgres_cqrs` for commands, its event store for loads.
    CqrsEs {
        cqrs: postgres_es::PostgresCqrs<with_cqrs_es::Account>,
        store: cqrs_es::persist::PersistedEventStore<postgres_es::PostgresEventRepository, with_cqrs_es::Account>,
    },
    /// disintegrate with disintegrate-postgres: its decision maker, and its state store for loads.
    Disintegrate {
        maker: disintegrate_postgres::PgDecisionMaker<
            with_disintegrate::DomainEvent,
            disintegrate::serde::json::Json<with_disintegrate::DomainEvent>,
            disintegrate::NoSnapshot,
        >,
        states: disintegrate::EventSourcedStateStore<
            disintegrate_postgres::PgEventId,
            with_disintegrate::DomainEvent,
            DisintegrateStore,
            disintegrate::NoSnapshot,
        >,
    },
}

/// Which library (the order of the table's rows).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    Eslab,
    CqrsEs,
    Disintegrate,
}

const KINDS: [Kind; 3] = [Kind::Eslab, Kind::CqrsEs, Kind::Disintegrate];

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Eslab => "eslab (as serve)",
            Kind::CqrsEs => "cqrs-es 0.5 + postgres-es",
            Kind::Disintegrate => "disintegrate 4 + disintegrate-postgres",
        }
    }
}

impl Library {
    /// Opens `kind` on a fresh schema of the lab's PostgreSQL; returns it and the schema.
    async fn open(lab: &Lab, kind: Kind) -> anyhow::Result<(Library, String)> {
        if kind == Kind::Eslab {
            let store = lab.pg_store(|o| PostgresSettings::default().apply(o)).await?;
            let schema = store.schema().to_owned();
            return Ok((Library::eslab(store), schema));
        }
        let pool = lab.pg_pool(POOL).await?;
        let schema: String = sqlx::query_scalar("SELECT current_schema()").fetch_one(&pool).await?;
        let library = match kind {
            Kind::CqrsEs => {
                sqlx::query(with_cqrs_es::CREATE_TABLE).execute(&pool).await?;
                Library::cqrs_es(pool)
            }
            _ => Library::disintegrate(pool, true).await?,
        };
        Ok((library, schema))
    }

    /// Opens `kind` again, on the schema `self` uses, through `wire`'s proxy.
    async fn through(&self, wire: &Wire, schema: &str) -> anyhow::Result<Library> {
        match self {
            Library::Eslab { .. } => {
                let url = wire.url.clone();
                let store =
                    eslab_runtime::open_postgres(&url, schema, |o| PostgresSettings::default().apply(o)).await?;
                Ok(Library::eslab(store))
            }
            Library::CqrsEs { .. } => Ok(Library::cqrs_es(wire.pool(schema).await?)),
            Library::Disintegrate { .. } => Library::disintegrate(wire.pool(schema).await?, false).await,
        }
    }

    fn eslab(store: PostgresStore) -> Library {
        let events = EventStore::new(store);
        let commands = Repository::new(events.clone())
            .with_retry(RetryPolicy::attempts(SERVE_ATTEMPTS))
            .with_locks(StreamLocks::new(SERVE_LOCK_STRIPES))
            .with_cache(SERVE_CACHE_ENTRIES);
        Library::Eslab { commands, replay: Repository::new(events) }
    }

    fn cqrs_es(pool: PgPool) -> Library {
        let cqrs = postgres_es::postgres_cqrs(pool.clone(), Vec::new(), ());
        let store =
            cqrs_es::persist::PersistedEventStore::new_event_store(postgres_es::PostgresEventRepository::new(pool));
        Library::CqrsEs { cqrs, store }
    }

    /// disintegrate on `pool`'s schema, created first if `create`.
    async fn disintegrate(pool: PgPool, create: bool) -> anyhow::Result<Library> {
        if create {
            for statement in with_disintegrate::CREATE_SCHEMA {
                sqlx::query(statement).execute(&pool).await?;
            }
        }
        let serde = disintegrate::serde::json::Json::<with_disintegrate::DomainEvent>::default();
        let events = disintegrate_postgres::PgEventStore::new_uninitialized(pool, serde);
        let states = disintegrate::EventSourcedStateStore::new(events.clone(), disintegrate::NoSnapshot);
        let maker = disintegrate_postgres::decision_maker(events, disintegrate::NoSnapshot);
        Ok(Library::Disintegrate { maker, states })
    }

    /// Runs one command on account `id` recording `times` deposits, retried
    /// until it commits; returns the retries it needed.
    async fn deposit(&self, id: &str, times: usize) -> anyhow::Result<u64> {
        match self {
            Library::Eslab { commands, .. } => {
                let command = with_eslab::Deposit { amount: AMOUNT, times };
                let executed =
                    commands.execute(id, &command, Metadata::now()).await.map_err(|e| anyhow::anyhow!("eslab: {e}"))?;
                Ok(u64::from(executed.attempts.saturating_sub(1)))
            }
            Library::CqrsEs { cqrs, .. } => {
                let mut retries = 0;
                loop {
                    let command = with_cqrs_es::Deposit { amount: AMOUNT, times };
                    match cqrs.execute(id, command).await {
                        Ok(()) => return Ok(retries),
                        // Its docs: a conflict means another command was first; run it again.
                        Err(cqrs_es::AggregateError::AggregateConflict) if retries < MAX_RETRIES => retries += 1,
                        Err(e) => bail!("cqrs-es: {e}"),
                    }
                }
            }
            Library::Disintegrate { maker, .. } => {
                let mut retries = 0;
                loop {
                    let decision = with_disintegrate::Deposit { account_id: id.to_owned(), amount: AMOUNT, times };
                    match maker.make(decision).await {
                        Ok(_) => return Ok(retries),
                        Err(e) if disintegrate_conflict(&e) && retries < MAX_RETRIES => retries += 1,
                        Err(e) => bail!("disintegrate: {e}"),
                    }
                }
            }
        }
    }

    /// Loads account `id` by replaying its events (no cache); returns its balance.
    async fn load(&self, id: &str) -> anyhow::Result<i64> {
        match self {
            Library::Eslab { replay, .. } => Ok(replay.load(id).await?.state.balance),
            Library::CqrsEs { store, .. } => {
                use cqrs_es::{AggregateContext, EventStore};
                let mut context = store.load_aggregate(id).await.map_err(|e| anyhow::anyhow!("cqrs-es: {e}"))?;
                Ok(context.aggregate().balance)
            }
            Library::Disintegrate { states, .. } => {
                use disintegrate::LoadState;
                let loaded = states
                    .load(with_disintegrate::Account::new(id))
                    .await
                    .map_err(|e| anyhow::anyhow!("disintegrate: {e}"))?;
                Ok(loaded.state().balance)
            }
        }
    }

    /// Loads account `id` as the service answers it (eslab: the state cache).
    async fn load_cached(&self, id: &str) -> anyhow::Result<Option<i64>> {
        match self {
            Library::Eslab { commands, .. } => Ok(Some(commands.load(id).await?.state.balance)),
            Library::CqrsEs { .. } | Library::Disintegrate { .. } => Ok(None),
        }
    }
}

/// Whether disintegrate refused an append because another one was first: its
/// `Concurrency` error, or PostgreSQL's serialization failure or deadlock
/// (its appends run at SERIALIZABLE).
fn disintegrate_conflict(e: &disintegrate::DecisionError<Infallible>) -> bool {
    let (disintegrate::DecisionError::StateStore(source) | disintegrate::DecisionError::EventStore(source)) = e else {
        return false;
    };
    match source.downcast_ref::<disintegrate_postgres::Error>() {
        Some(disintegrate_postgres::Error::Concurrency) => true,
        Some(disintegrate_postgres::Error::Database(sqlx::Error::Database(db))) => {
            matches!(db.code().as_deref(), Some("40001" | "40P01"))
        }
        _ => false,
    }
}

/// What is measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Workload {
    /// One-event commands, each writer on its own accounts.
    Distinct { writers: u64 },
    /// One-event commands, four writers per account.
    Shared { writers: u64 },
    /// One command recording ten events, each writer on its own accounts.
    Ten { writers: u64 },
    /// Loading an account of `events` events, one loader.
    Load { events: usize },
    /// The same account loaded through eslab's state cache (a hit).
    LoadCached { events: usize },
}

impl Workload {
    fn label(self) -> String {
        match self {
            Workload::Distinct { .. } => "one-event commands, distinct accounts".to_owned(),
            Workload::Shared { .. } => format!("one-event commands, {WRITERS_PER_ACCOUNT} writers per account"),
            Workload::Ten { .. } => "ten-event commands, distinct accounts".to_owned(),
            Workload::Load { events } => format!("load a {events}-event account (replay)"),
            Workload::LoadCached { events } => format!("load a {events}-event account (state cache hit)"),
        }
    }

    fn writers(self) -> u64 {
        match self {
            Workload::Distinct { writers } | Workload::Shared { writers } | Workload::Ten { writers } => writers,
            Workload::Load { .. } | Workload::LoadCached { .. } => 1,
        }
    }

    fn events_per_op(self) -> u64 {
        match self {
            Workload::Distinct { .. } | Workload::Shared { .. } => 1,
            Workload::Ten { .. } => 10,
            Workload::Load { events } | Workload::LoadCached { events } => u64::try_from(events).unwrap_or(u64::MAX),
        }
    }
}

/// One library on one workload, its rounds added up.
struct Measured {
    kind: Kind,
    workload: Workload,
    ops: u64,
    retries: u64,
    elapsed: Duration,
    latency: Latencies,
    /// Operations per second of each round, in round order.
    rounds: Vec<f64>,
    /// Why this library did not run this workload.
    cannot: Option<String>,
    /// The process's CPU time while it ran (the library's client side), if known.
    cpu: Option<Duration>,
}

impl Measured {
    fn per_s(&self) -> f64 {
        if self.cannot.is_some() { f64::NAN } else { per_second(self.ops, self.elapsed) }
    }

    fn absorb(&mut self, round: Measured) -> anyhow::Result<()> {
        self.ops += round.ops;
        self.retries += round.retries;
        self.elapsed += round.elapsed;
        self.latency.merge(&round.latency)?;
        self.rounds.extend(round.rounds);
        self.cpu = self.cpu.zip(round.cpu).map(|(a, b)| a + b);
        Ok(())
    }

    /// Client CPU per operation, in microseconds.
    fn cpu_us(&self) -> f64 {
        #[allow(clippy::cast_precision_loss)] // counts far below 2^52
        self.cpu
            .map_or(f64::NAN, |cpu| if self.ops == 0 { f64::NAN } else { cpu.as_secs_f64() * 1e6 / self.ops as f64 })
    }
}

/// One writer: `budget` commands of `times` events, on account
/// `{prefix}{account(n)}` for its n-th command.
async fn writer(
    library: Arc<Library>,
    prefix: Arc<str>,
    writer: u64,
    workload: Workload,
    budget: Budget,
) -> anyhow::Result<(u64, u64, Latencies)> {
    let mut latency = Latencies::new()?;
    let (mut done, mut retries) = (0_u64, 0_u64);
    let times = if matches!(workload, Workload::Ten { .. }) { 10 } else { 1 };
    let owner = if matches!(workload, Workload::Shared { .. }) { writer / WRITERS_PER_ACCOUNT } else { writer };
    let started = Instant::now();
    while budget.more(done, started) {
        let id = format!("{prefix}w{owner}n{}", done / COMMANDS_PER_ACCOUNT);
        let t = Instant::now();
        retries += library.deposit(&id, times).await?;
        latency.record(t.elapsed());
        done += 1;
    }
    Ok((done, retries, latency))
}

/// Measures `library` on a command workload, once.
async fn commands(library: &Arc<Library>, kind: Kind, workload: Workload, budget: Budget) -> anyhow::Result<Measured> {
    static RUN: AtomicU64 = AtomicU64::new(0);
    let prefix: Arc<str> = format!("r{}", RUN.fetch_add(1, Ordering::Relaxed)).into();
    let cpu = crate::cpu::process_cpu();
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..workload.writers() {
        tasks.spawn(writer(Arc::clone(library), Arc::clone(&prefix), w, workload, budget));
    }
    let (mut ops, mut retries, mut latency) = (0, 0, Latencies::new()?);
    while let Some(joined) = tasks.join_next().await {
        let (n, r, l) = joined??;
        ops += n;
        retries += r;
        latency.merge(&l)?;
    }
    let elapsed = started.elapsed();
    let cpu = crate::cpu::process_cpu().zip(cpu).map(|(after, before)| after.saturating_sub(before));
    let rounds = vec![per_second(ops, elapsed)];
    Ok(Measured { kind, workload, ops, retries, elapsed, latency, rounds, cannot: None, cpu })
}

/// Measures loads of account `id` (`expected` balance), once.
async fn loads(
    library: &Library,
    kind: Kind,
    workload: Workload,
    id: &str,
    expected: i64,
    budget: Budget,
) -> anyhow::Result<Measured> {
    let mut latency = Latencies::new()?;
    let mut ops = 0;
    let cpu = crate::cpu::process_cpu();
    let started = Instant::now();
    while budget.more(ops, started) {
        let t = Instant::now();
        let balance = match workload {
            Workload::LoadCached { .. } => match library.load_cached(id).await? {
                Some(balance) => balance,
                None => {
                    let cannot = "no state cache: every load replays".to_owned();
                    return Ok(Measured {
                        kind,
                        workload,
                        ops: 0,
                        retries: 0,
                        elapsed: Duration::ZERO,
                        latency,
                        rounds: vec![f64::NAN],
                        cannot: Some(cannot),
                        cpu: None,
                    });
                }
            },
            _ => library.load(id).await?,
        };
        latency.record(t.elapsed());
        if balance != expected {
            bail!("{}: account {id} loaded with balance {balance}, expected {expected}", kind.name());
        }
        ops += 1;
    }
    let elapsed = started.elapsed();
    let cpu = crate::cpu::process_cpu().zip(cpu).map(|(after, before)| after.saturating_sub(before));
    Ok(Measured {
        kind,
        workload,
        ops,
        retries: 0,
        elapsed,
        latency,
        rounds: vec![per_second(ops, elapsed)],
        cannot: None,
        cpu,
    })
}

/// Counts what crosses the wire between a library and PostgreSQL: a TCP
/// proxy that reads the frontend messages (protocol 3, no TLS).
struct Wire {
    /// `postgres://` URL of the proxy (`sslmode=disable`).
    url: String,
    options: PgConnectOptions,
    /// Statements run: simple queries (`Q`) and portal executions (`E`).
    statements: Arc<AtomicU64>,
    /// Round trips: each `Sync` (`S`) and simple query waits for the server's ReadyForQuery.
    round_trips: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Wire {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Wire {
    /// A proxy to the server of `url`.
    async fn start(url: &str) -> anyhow::Result<Wire> {
        let mut parsed = url::Url::parse(url).context("parsing the PostgreSQL URL")?;
        let upstream = format!("{}:{}", parsed.host_str().unwrap_or("127.0.0.1"), parsed.port().unwrap_or(5432));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let local: SocketAddr = listener.local_addr()?;
        parsed.set_host(Some("127.0.0.1"))?;
        parsed.set_port(Some(local.port())).map_err(|()| anyhow::anyhow!("cannot set the proxy's port"))?;
        let query: Vec<(String, String)> = parsed
            .query_pairs()
            .filter(|(k, _)| k != "sslmode")
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        parsed.query_pairs_mut().clear().extend_pairs(query).append_pair("sslmode", "disable");
        let proxied = parsed.to_string();
        let options: PgConnectOptions = proxied.parse()?;
        let options = options.ssl_mode(PgSslMode::Disable);
        let (statements, round_trips) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let counters = (Arc::clone(&statements), Arc::clone(&round_trips));
        let task = tokio::spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            while let Ok((client, _)) = listener.accept().await {
                let (upstream, counters) = (upstream.clone(), (Arc::clone(&counters.0), Arc::clone(&counters.1)));
                connections.spawn(async move {
                    // A broken connection only ends itself; the library reports it.
                    let _ = relay(client, &upstream, counters).await;
                });
            }
        });
        Ok(Wire { url: proxied, options, statements, round_trips, task })
    }

    /// A pool through the proxy on `schema`.
    async fn pool(&self, schema: &str) -> anyhow::Result<PgPool> {
        Ok(PgPoolOptions::new()
            .max_connections(POOL)
            .connect_with(self.options.clone().options([("search_path", schema)]))
            .await?)
    }

    /// (statements, round trips) so far.
    fn counts(&self) -> (u64, u64) {
        (self.statements.load(Ordering::Relaxed), self.round_trips.load(Ordering::Relaxed))
    }
}

/// Copies one connection both ways, counting the frontend's messages.
async fn relay(
    client: tokio::net::TcpStream,
    upstream: &str,
    (statements, round_trips): (Arc<AtomicU64>, Arc<AtomicU64>),
) -> anyhow::Result<()> {
    let server = tokio::net::TcpStream::connect(upstream).await?;
    // Each message goes on as it comes: no waiting for more to fill a packet.
    client.set_nodelay(true)?;
    server.set_nodelay(true)?;
    let (client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let mut client_read = tokio::io::BufReader::new(client_read);
    let back = tokio::spawn(async move { tokio::io::copy(&mut server_read, &mut client_write).await });
    let forward = async {
        // The startup message: a length, then the body (no type byte).
        let len = client_read.read_u32().await?;
        let mut message = len.to_be_bytes().to_vec();
        message.resize(usize::try_from(len)?.max(4), 0);
        client_read.read_exact(&mut message[4..]).await?;
        server_write.write_all(&message).await?;
        loop {
            let kind = client_read.read_u8().await?;
            let len = client_read.read_u32().await?;
            let mut message = vec![kind];
            message.extend_from_slice(&len.to_be_bytes());
            message.resize(usize::try_from(len)?.max(4) + 1, 0);
            client_read.read_exact(&mut message[5..]).await?;
            match kind {
                b'Q' => {
                    statements.fetch_add(1, Ordering::Relaxed);
                    round_trips.fetch_add(1, Ordering::Relaxed);
                }
                b'E' => {
                    statements.fetch_add(1, Ordering::Relaxed);
                }
                b'S' => {
                    round_trips.fetch_add(1, Ordering::Relaxed);
                }
                _ => {}
            }
            server_write.write_all(&message).await?;
        }
    };
    let result: anyhow::Result<()> = forward.await;
    back.abort();
    result
}

/// Statements and round trips per operation, per library and workload.
#[derive(Debug, Clone, Copy)]
struct PerOp {
    statements: f64,
    round_trips: f64,
}

/// Runs a few operations of every kind on `library` through a proxy and
/// counts them: one-event commands (10, on one fresh account, as the
/// workloads run them), ten-event commands (10, likewise) and loads of
/// `long` (3).
async fn count_wire(
    lab: &Lab,
    library: &Library,
    schema: &str,
    long: &str,
) -> anyhow::Result<HashMap<&'static str, PerOp>> {
    let wire = Wire::start(lab.postgres_url()).await?;
    let proxied = library.through(&wire, schema).await?;
    let prefix = format!("wire{}", uuid::Uuid::now_v7().simple());
    // Warm up: the pool's first connection and its prepared statements.
    proxied.deposit(&format!("{prefix}warm"), 1).await?;
    proxied.deposit(&format!("{prefix}warm"), 10).await?;
    proxied.load(long).await?;
    let mut per_op = HashMap::new();
    let mut measure = |name: &'static str, before: (u64, u64), n: u32| {
        let (s, r) = wire.counts();
        let n = f64::from(n);
        #[allow(clippy::cast_precision_loss)] // counts far below 2^52
        per_op.insert(name, PerOp { statements: (s - before.0) as f64 / n, round_trips: (r - before.1) as f64 / n });
    };
    let before = wire.counts();
    for _ in 0..COMMANDS_PER_ACCOUNT {
        proxied.deposit(&format!("{prefix}one"), 1).await?;
    }
    measure("one", before, 10);
    let before = wire.counts();
    for _ in 0..COMMANDS_PER_ACCOUNT {
        proxied.deposit(&format!("{prefix}ten"), 10).await?;
    }
    measure("ten", before, 10);
    let before = wire.counts();
    for _ in 0..3 {
        proxied.load(long).await?;
    }
    measure("load", before, 3);
    Ok(per_op)
}

impl Experiment for Peers {
    fn number(&self) -> u8 {
        11
    }

    fn id(&self) -> &'static str {
        "peers"
    }

    fn title(&self) -> &'static str {
        "Peers: eslab beside cqrs-es and disintegrate on the same PostgreSQL"
    }

    fn question(&self) -> &'static str {
        "How many commands per second, and how fast a load, do eslab (configured as `eslab serve` runs it), \
         cqrs-es with postgres-es and disintegrate with disintegrate-postgres get on the same PostgreSQL, in the \
         same run, on the same tiny domain, each through its own public API?"
    }

    fn run<'a>(&'a self, lab: &'a Lab) -> LocalBoxFuture<'a, anyhow::Result<Report>> {
        Box::pin(async move {
            let scale = lab.scale();
            let writers: Vec<u64> = scale.pick(vec![1, 8], vec![1, 8, 32], vec![1, 8, 32]);
            let top = writers.last().copied().unwrap_or(1);
            let long: usize = scale.pick(100, 1_000, 1_000);
            let budget = scale.pick(
                Budget::new(3, 3, Duration::ZERO),
                Budget::new(3, 1_000_000, Duration::from_millis(600)),
                Budget::new(10, 10_000_000, Duration::from_secs(2)),
            );
            let load_budget = scale.pick(
                Budget::new(2, 2, Duration::ZERO),
                Budget::new(3, 1_000_000, Duration::from_millis(300)),
                Budget::new(10, 10_000_000, Duration::from_secs(1)),
            );
            let rounds: usize = scale.pick(1, 3, 5);
            let mut workloads: Vec<Workload> = writers.iter().map(|&w| Workload::Distinct { writers: w }).collect();
            workloads.push(Workload::Shared { writers: top });
            workloads.push(Workload::Ten { writers: scale.pick(2, 8, 8) });
            workloads.push(Workload::Load { events: long });
            workloads.push(Workload::LoadCached { events: long });
            lab.steps(u64::try_from(KINDS.len() * (workloads.len() * rounds + 2))?);

            // Every library on its own fresh schema; the long account written
            // through its own command path (ten events per command).
            let mut libraries = Vec::new();
            let long_id = "long";
            for kind in KINDS {
                lab.doing(format!("{}: opening, writing a {long}-event account", kind.name()));
                let (library, schema) = Library::open(lab, kind).await?;
                for _ in 0..long / 10 {
                    library.deposit(long_id, 10).await?;
                }
                libraries.push((kind, Arc::new(library), schema));
                lab.step("");
            }
            let expected = i64::try_from(long)? * AMOUNT;

            let mut measured: Vec<Measured> = Vec::new();
            for &workload in &workloads {
                let first = measured.len();
                for _ in 0..rounds {
                    for (i, (kind, library, _)) in libraries.iter().enumerate() {
                        lab.doing(format!("{}: {} ({} writers)", kind.name(), workload.label(), workload.writers()));
                        let round = match workload {
                            Workload::Load { .. } | Workload::LoadCached { .. } => {
                                loads(library, *kind, workload, long_id, expected, load_budget).await?
                            }
                            _ => commands(library, *kind, workload, budget).await?,
                        };
                        match measured.get_mut(first + i) {
                            Some(total) => total.absorb(round)?,
                            None => measured.push(round),
                        }
                        lab.step("");
                    }
                }
            }

            let mut wire = HashMap::new();
            let tls = connection_uses_tls(lab).await?;
            for (kind, library, schema) in &libraries {
                lab.doing(format!("{}: counting statements per command", kind.name()));
                wire.insert(*kind, count_wire(lab, library, schema, long_id).await?);
                lab.step("");
            }
            Ok(report(&measured, &wire, Setup { budget, load_budget, rounds, long, tls }))
        })
    }
}

/// Whether the lab's connections to PostgreSQL use TLS (the same for every library).
async fn connection_uses_tls(lab: &Lab) -> anyhow::Result<bool> {
    let pool = lab.pg_pool(1).await?;
    let tls: Option<bool> =
        sqlx::query_scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").fetch_optional(&pool).await?;
    pool.close().await;
    Ok(tls.unwrap_or(false))
}

/// How the run was set up (for the method).
#[derive(Debug, Clone, Copy)]
struct Setup {
    budget: Budget,
    load_budget: Budget,
    rounds: usize,
    long: usize,
    tls: bool,
}

/// The lowest and highest per-round ratio of `a` to `b` (rounds paired in order).
fn round_ratios(a: &Measured, b: &Measured) -> (f64, f64) {
    a.rounds
        .iter()
        .zip(&b.rounds)
        .map(|(&x, &y)| ratio(x, y))
        .fold((f64::NAN, f64::NAN), |(lo, hi), r| (lo.min(r), hi.max(r)))
}

fn wire_key(workload: Workload) -> Option<&'static str> {
    match workload {
        Workload::Distinct { .. } => Some("one"),
        Workload::Ten { .. } => Some("ten"),
        Workload::Load { .. } => Some("load"),
        Workload::Shared { .. } | Workload::LoadCached { .. } => None,
    }
}

fn report(measured: &[Measured], wire: &HashMap<Kind, HashMap<&'static str, PerOp>>, setup: Setup) -> Report {
    let mut table = Table::new(&[
        "workload",
        "writers",
        "library",
        "ops",
        "ops/s",
        "events/s",
        "eslab ÷ this",
        "eslab ÷ this per round (min-max)",
        "p50 (ms)",
        "p99 (ms)",
        "retries",
        "statements/op",
        "round trips/op",
        "client CPU µs/op",
        "note",
    ]);
    let eslab_at = |w: Workload| measured.iter().find(|m| m.workload == w && m.kind == Kind::Eslab);
    let per_op = |kind: Kind, w: Workload| wire_key(w).and_then(|k| wire.get(&kind)?.get(k)).copied();
    for m in measured {
        let eslab = eslab_at(m.workload);
        let (lo, hi) = eslab.map_or((f64::NAN, f64::NAN), |e| round_ratios(e, m));
        let wire = per_op(m.kind, m.workload);
        #[allow(clippy::cast_precision_loss)] // counts far below 2^52
        let events_per_s = m.per_s() * m.workload.events_per_op() as f64;
        table.push(vec![
            Cell::text(m.workload.label()),
            Cell::Int(m.workload.writers()),
            Cell::text(m.kind.name()),
            Cell::Int(m.ops),
            Cell::num(m.per_s(), 0),
            Cell::num(events_per_s, 0),
            Cell::num(ratio(eslab.map_or(f64::NAN, Measured::per_s), m.per_s()), 2),
            Cell::text(if lo.is_finite() { format!("{lo:.2}-{hi:.2}") } else { "-".to_owned() }),
            Cell::num(if m.cannot.is_some() { f64::NAN } else { m.latency.p50_ms() }, 3),
            Cell::num(if m.cannot.is_some() { f64::NAN } else { m.latency.p99_ms() }, 3),
            Cell::Int(m.retries),
            Cell::num(wire.map_or(f64::NAN, |w| w.statements), 1),
            Cell::num(wire.map_or(f64::NAN, |w| w.round_trips), 1),
            Cell::num(m.cpu_us(), 0),
            Cell::text(m.cannot.as_ref().map_or_else(String::new, |why| format!("cannot: {why}"))),
        ]);
    }

    let mut shown: Vec<Workload> = Vec::new();
    for m in measured {
        if !shown.contains(&m.workload) {
            shown.push(m.workload);
        }
    }
    let category = |w: Workload| match w {
        Workload::Distinct { writers } => format!("{writers} writers"),
        Workload::Shared { writers } => format!("{writers} writers, {WRITERS_PER_ACCOUNT}/account"),
        Workload::Ten { writers } => format!("10 events × {writers} writers"),
        Workload::Load { events } => format!("load {events} (replay)"),
        Workload::LoadCached { events } => format!("load {events} (cache)"),
    };
    let series = KINDS
        .iter()
        .map(|&k| {
            let values = shown
                .iter()
                .map(|&w| measured.iter().find(|m| m.workload == w && m.kind == k).map_or(f64::NAN, Measured::per_s))
                .collect();
            (k.name().to_owned(), values)
        })
        .collect();
    let chart = Chart {
        title: "Commands (or loads) per second by library and workload (log scale)".into(),
        x_label: "workload".into(),
        y_label: "operations/s".into(),
        categories: shown.iter().map(|&w| category(w)).collect(),
        series,
        log_y: true,
    };

    let mut findings = Vec::new();
    // The headline: the most writers on distinct accounts.
    if let Some(top) = shown
        .iter()
        .filter_map(|w| match w {
            Workload::Distinct { writers } => Some(*writers),
            _ => None,
        })
        .max()
    {
        let w = Workload::Distinct { writers: top };
        let fastest = measured
            .iter()
            .filter(|m| m.workload == w && m.kind != Kind::Eslab && m.cannot.is_none())
            .max_by(|a, b| a.per_s().total_cmp(&b.per_s()));
        if let (Some(eslab), Some(peer)) = (eslab_at(w), fastest) {
            let (lo, hi) = round_ratios(eslab, peer);
            let r = ratio(eslab.per_s(), peer.per_s());
            let wire = match (per_op(Kind::Eslab, w), per_op(peer.kind, w)) {
                (Some(own), Some(theirs)) => format!(
                    "{:.1} statements in {:.1} round trips vs {:.1} in {:.1}, ",
                    own.statements, own.round_trips, theirs.statements, theirs.round_trips
                ),
                _ => String::new(),
            };
            findings.push(format!(
                "{top} writers, one-event commands on distinct accounts: the fastest peer is {} at {:.0} commands/s; \
                 eslab (as serve) {:.0}/s = {r:.2}× it ({lo:.2}-{hi:.2}× round by round; target ≥ 3×: {}); per \
                 command eslab {wire}{:.0} µs of client CPU vs {:.0} µs, p50 {:.2} ms vs {:.2} ms",
                peer.kind.name(),
                peer.per_s(),
                eslab.per_s(),
                if r >= 3.0 { "met" } else { "not met" },
                eslab.cpu_us(),
                peer.cpu_us(),
                eslab.latency.p50_ms(),
                peer.latency.p50_ms(),
            ));
        }
    }
    // Every workload: eslab's ratio to each peer, and why where it is not ahead.
    for &w in &shown {
        let Some(eslab) = eslab_at(w) else { continue };
        let mut parts = Vec::new();
        let mut behind = Vec::new();
        for m in measured.iter().filter(|m| m.workload == w && m.kind != Kind::Eslab) {
            if let Some(why) = &m.cannot {
                parts.push(format!("{} cannot ({why})", m.kind.name()));
                continue;
            }
            let r = ratio(eslab.per_s(), m.per_s());
            parts.push(format!("{r:.2}× {} ({:.0}/s, {} retries)", m.kind.name(), m.per_s(), m.retries));
            if r < 1.0 {
                behind.push(m);
            }
        }
        let mut line = format!(
            "{} ({} writer{}): eslab {:.0}/s ({} retries) = {}",
            w.label(),
            w.writers(),
            if w.writers() == 1 { "" } else { "s" },
            eslab.per_s(),
            eslab.retries,
            parts.join(", ")
        );
        for m in behind {
            let wire = match (per_op(Kind::Eslab, w), per_op(m.kind, w)) {
                (Some(own), Some(theirs)) => format!(
                    "{:.1} statements in {:.1} round trips vs {:.1} in {:.1}, ",
                    own.statements, own.round_trips, theirs.statements, theirs.round_trips
                ),
                _ => String::new(),
            };
            line.push_str(&format!(
                "; NOT ahead of {}: per operation eslab {wire}{:.0} µs of client CPU vs {:.0} µs, p50 {:.2} ms vs {:.2} ms",
                m.kind.name(),
                eslab.cpu_us(),
                m.cpu_us(),
                eslab.latency.p50_ms(),
                m.latency.p50_ms()
            ));
        }
        findings.push(line);
    }
    // What crosses the wire per command.
    let wire_line = KINDS
        .iter()
        .filter_map(|&k| {
            let one = wire.get(&k)?.get("one")?;
            let ten = wire.get(&k)?.get("ten")?;
            let load = wire.get(&k)?.get("load")?;
            Some(format!(
                "{}: {:.1} statements / {:.1} round trips per one-event command, {:.1} / {:.1} per ten-event \
                 command, {:.1} / {:.1} per load",
                k.name(),
                one.statements,
                one.round_trips,
                ten.statements,
                ten.round_trips,
                load.statements,
                load.round_trips
            ))
        })
        .collect::<Vec<_>>();
    if !wire_line.is_empty() {
        findings.push(format!("On the wire (one writer, counted by a proxy): {}", wire_line.join("; ")));
    }

    let method = vec![
        format!(
            "The domain, defined once per library with its own aggregate trait: an account whose state is the sum of \
             its deposits; one command, deposit (amount {AMOUNT}, i64), records one Deposited event, or ten for the \
             ten-event workload. eslab: eslab_core::Aggregate, run through eslab_core::Repository::execute. \
             cqrs-es 0.5: cqrs_es::Aggregate (handle writes to an EventSink), run through \
             postgres_es::postgres_cqrs(..).execute, its events table created from postgres-es's db/init.sql. \
             disintegrate 4: a #[derive(Event)] enum with a stream, a #[derive(StateQuery)] state and a Decision, \
             run through disintegrate_postgres::decision_maker(PgEventStore, NoSnapshot).make. disintegrate-postgres's \
             own migration (PgEventStore::try_new) fails on PostgreSQL 15 (a hex integer literal, 0xFFFFFFFF, which \
             PostgreSQL parses from version 16 on): the lab creates the same tables, indexes and functions from its \
             SQL with that number written in decimal, then opens the store with PgEventStore::new_uninitialized."
        ),
        format!(
            "eslab as `eslab serve` runs it: the store opened through the lab with PostgresSettings::default() \
             ({POOL} connections, group commit on, NOTIFY after commit), the Repository with the service's retry \
             policy ({SERVE_ATTEMPTS} attempts), state cache ({SERVE_CACHE_ENTRIES} entries) and stream locks \
             ({SERVE_LOCK_STRIPES} stripes). Each peer gets a pool of {POOL} connections. Every library has its own \
             fresh schema in the same database. Connections use TLS: {}.",
            if setup.tls { "yes" } else { "no" }
        ),
        format!(
            "Command workloads: each writer runs commands one after another, {COMMANDS_PER_ACCOUNT} on an account \
             before moving to a fresh one (so a library without a state cache replays at most a few dozen events); \
             on distinct accounts each writer has its own, with {WRITERS_PER_ACCOUNT} writers per account they \
             share one and conflicting commands are run again until they commit (cqrs-es: AggregateConflict; \
             disintegrate: its Concurrency error or a serialization failure; eslab: its retry policy, behind its \
             stream locks), the retries counted. Each writer does at least {} commands, then goes on until {:.1} s \
             have passed, in each of {} rounds; a round runs every library once, one after another, so the \
             machine's changing load falls on all alike, and 'per round' pairs each round's figures.",
            setup.budget.min,
            setup.budget.time.as_secs_f64(),
            setup.rounds
        ),
        format!(
            "Loads: one account of {} events written through each library's own command path (ten events per \
             command), then loaded one load at a time (at least {}, then for {:.1} s per round), each load replaying \
             every event and checked against the expected balance: eslab through a Repository without cache \
             (Repository::load), cqrs-es through its PersistedEventStore::load_aggregate, disintegrate through its \
             EventSourcedStateStore::load. The cache row is eslab's service Repository answering from its state \
             cache; the peers have no state cache, so that row says they cannot.",
            setup.long,
            setup.load_budget.min,
            setup.load_budget.time.as_secs_f64()
        ),
        "Client CPU µs/op: this process's CPU time (user and system, all threads, read through sysinfo in the kernel's 10 ms \
         ticks) while the library ran the row's operations, divided by them: the library's client side, not \
         PostgreSQL's. Statements and round trips per operation: after the timed rounds, each library is opened again on its own \
         schema through a TCP proxy that reads the PostgreSQL frontend messages (no TLS): statements are simple \
         queries (Q) and portal executions (E), round trips the Sync (S) and simple-query messages, each of which \
         waits for the server. Counted over 10 one-event commands on one fresh account, 10 ten-event commands \
         likewise and 3 loads of the long account, one at a time, after a warm-up (pool connection, prepared \
         statements). eslab's group commit has one command per batch there."
            .to_owned(),
    ];
    Report { table, chart, findings, method }
}
