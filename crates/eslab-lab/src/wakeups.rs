//! Experiment 10: wake-ups. What the NOTIFY that wakes live readers costs
//! concurrent appends (sent in the append's transaction, coalesced after the
//! commit, or not at all, readers polling), and how soon a follower in
//! another process handles an appended event under each choice.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::pin::pin;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use eslab_core::{
    Checkpoint, EventAppender, EventStore, ExpectedVersion, FeedFilter, StreamId, SubscribeOptions, Version,
    WakeUps as _, no_wake_ups,
};
use eslab_postgres::{DEFAULT_NOTIFY_WINDOW, Notify, PostgresOptions, PostgresStore};
use futures_util::StreamExt;
use futures_util::future::LocalBoxFuture;
use sqlx::PgPool;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use uuid::Uuid;

use super::measure::{Budget, Latencies, per_second};
use super::report::{Cell, Report, Table, ratio, ratio_range};
use super::workload::{self, Appended, Appender, event, single_appends};
use super::{Experiment, Lab};

/// Experiment 10.
pub(super) struct WakeUpsExperiment;

/// How appends announce their commits to live readers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Variant {
    /// A raw one-row `INSERT`, committed alone, no NOTIFY: the baseline.
    Raw,
    /// The store with [`Notify::InTransaction`].
    InTransaction,
    /// The store with [`Notify::AfterCommit`] (the default, with the default window).
    AfterCommit,
    /// The store with [`Notify::Off`]: readers poll.
    NoNotify,
}

impl Variant {
    fn name(self) -> &'static str {
        match self {
            Variant::Raw => "raw INSERT + COMMIT",
            Variant::InTransaction => "NOTIFY in the transaction",
            Variant::AfterCommit => "NOTIFY after commit, coalesced",
            Variant::NoNotify => "no NOTIFY (polling only)",
        }
    }

    /// The store's options for this variant.
    fn options(self, options: PostgresOptions) -> PostgresOptions {
        options.notify(self.notify()).notify_window(DEFAULT_NOTIFY_WINDOW)
    }

    fn notify(self) -> Notify {
        match self {
            Variant::InTransaction => Notify::InTransaction,
            Variant::AfterCommit => Notify::AfterCommit,
            Variant::Raw | Variant::NoNotify => Notify::Off,
        }
    }
}

/// The variants of the throughput part, in table order. The poll interval
/// concerns only readers, so one row without NOTIFY stands for both.
const THROUGHPUT: [Variant; 4] = [Variant::Raw, Variant::InTransaction, Variant::AfterCommit, Variant::NoNotify];

/// How the follower of the latency part is woken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Follower {
    /// How the writer notifies.
    variant: Variant,
    /// How often the follower polls: only as a backstop when notified.
    poll: Duration,
}

impl Follower {
    fn listens(self) -> bool {
        self.variant != Variant::NoNotify
    }

    fn name(self) -> String {
        if self.listens() {
            self.variant.name().to_owned()
        } else {
            format!("polling every {} ms", self.poll.as_millis())
        }
    }
}

/// A notified follower's polling interval: long, so that its latency is the
/// wake-up's, with polling left as the backstop for a lost notification.
const BACKSTOP: Duration = Duration::from_secs(1);

const FOLLOWERS: [Follower; 4] = [
    Follower { variant: Variant::InTransaction, poll: BACKSTOP },
    Follower { variant: Variant::AfterCommit, poll: BACKSTOP },
    Follower { variant: Variant::NoNotify, poll: Duration::from_millis(10) },
    Follower { variant: Variant::NoNotify, poll: Duration::from_millis(100) },
];

/// Connections of each throughput measurement's own pool (as experiment 4's).
const POOL: u64 = 64;

/// The appends/s of one variant at one caller count, summed over the rounds.
struct Throughput {
    variant: Variant,
    callers: u64,
    appends: u64,
    elapsed: Duration,
    latency: Latencies,
    /// Events found in the store's streams afterwards (`None` for the raw baseline).
    stored: Option<u64>,
    /// Appends/s of each round, in round order.
    rounds: Vec<f64>,
}

impl Throughput {
    fn per_s(&self) -> f64 {
        per_second(self.appends, self.elapsed)
    }

    /// Adds a later round of the same variant and callers.
    fn absorb(&mut self, round: Throughput) -> anyhow::Result<()> {
        self.appends += round.appends;
        self.elapsed += round.elapsed;
        self.latency.merge(&round.latency)?;
        self.stored = self.stored.zip(round.stored).map(|(a, b)| a + b);
        self.rounds.extend(round.rounds);
        Ok(())
    }
}

/// Opens `n` of the pool's connections before the clock starts.
async fn warm(pool: &PgPool, n: u64) -> anyhow::Result<()> {
    let held = futures_util::future::try_join_all((0..n).map(|_| pool.acquire())).await?;
    drop(held);
    Ok(())
}

async fn throughput(
    lab: &Lab,
    base: &PostgresOptions,
    variant: Variant,
    callers: u64,
    budget: Budget,
) -> anyhow::Result<Throughput> {
    lab.doing(format!("{} with {callers} callers", variant.name()));
    // A pool of its own, closed afterwards: four pools of 64 kept open
    // would pass PostgreSQL's default limit of 100 connections.
    let store = PostgresStore::connect_lazy(variant.options(base.clone()).max_connections(u32::try_from(POOL)?))?;
    warm(store.pool(), callers.min(POOL)).await?;
    static RUN: AtomicU64 = AtomicU64::new(0);
    let prefix = format!("w{}s", RUN.fetch_add(1, Ordering::Relaxed));
    let appender = match variant {
        Variant::Raw => Appender::Raw(store.pool().clone()),
        _ => Appender::Store { store: store.clone(), prefix, streams: callers },
    };
    let Appended { appends, latency, elapsed, .. } = single_appends(&appender, callers, budget).await?;
    let stored = appender.stored().await?;
    drop(appender);
    store.pool().close().await;
    let per_s = per_second(appends, elapsed);
    Ok(Throughput { variant, callers, appends, elapsed, latency, stored, rounds: vec![per_s] })
}

/// `eslab lab follow` (hidden): the follower of experiment 10 run as a
/// process of its own. It subscribes to the feed of the store in `schema`
/// from the start and prints `ready` once it listens, then one line
/// `<event id> <unix nanoseconds>` per event its handler got, and exits
/// after `count` events.
#[derive(Debug, Clone, clap::Args)]
pub struct FollowArgs {
    /// The PostgreSQL URL (from the environment, so that a password stays
    /// out of the process list).
    #[arg(long, env = "ESLAB_LAB_FOLLOW_URL", hide_env_values = true)]
    pub url: String,
    /// The store's schema.
    #[arg(long)]
    pub schema: String,
    /// The polling interval in milliseconds (the backstop when woken by NOTIFY).
    #[arg(long)]
    pub poll_ms: u64,
    /// Poll only: no `LISTEN`.
    #[arg(long)]
    pub no_wake_ups: bool,
    /// How many events to handle before exiting.
    #[arg(long)]
    pub count: u64,
}

/// What a follower says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Line {
    /// It listens (and polls): appends may start.
    Ready,
    /// Its handler got this event at this wall-clock time (Unix nanoseconds).
    Handled(Uuid, u128),
}

impl std::fmt::Display for Line {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Line::Ready => f.write_str("ready"),
            Line::Handled(id, at) => write!(f, "{id} {at}"),
        }
    }
}

impl std::str::FromStr for Line {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> anyhow::Result<Line> {
        if s == "ready" {
            return Ok(Line::Ready);
        }
        let (id, at) = s.split_once(' ').with_context(|| format!("not a follower line: {s:?}"))?;
        Ok(Line::Handled(id.parse()?, at.parse()?))
    }
}

/// Now, in nanoseconds since the Unix epoch: comparable across processes of one machine.
fn unix_nanos() -> anyhow::Result<u128> {
    Ok(SystemTime::now().duration_since(UNIX_EPOCH)?.as_nanos())
}

/// Follows the feed as [`FollowArgs`] says, telling `emit` each [`Line`].
async fn follow(args: &FollowArgs, mut emit: impl FnMut(Line) -> anyhow::Result<()>) -> anyhow::Result<()> {
    // A store instance of its own (pool and LISTEN connection): never the
    // writer's, whose own subscribers may be woken without a round trip.
    let backend = PostgresStore::connect_lazy(
        PostgresOptions::new(&args.url, &args.schema).notify(Notify::Off).max_connections(2),
    )?;
    let store = EventStore::new(backend.clone());
    // Armed before `ready`: no append after it goes unannounced.
    let wake_ups = if args.no_wake_ups { no_wake_ups() } else { backend.wake_ups().await };
    let poll = Duration::from_millis(args.poll_ms);
    let options = SubscribeOptions::default().poll(poll, poll);
    let mut feed = pin!(store.subscribe_woken_by(wake_ups, FeedFilter::All, Checkpoint::START, options));
    emit(Line::Ready)?;
    for _ in 0..args.count {
        match feed.next().await {
            Some(Ok(event)) => emit(Line::Handled(event.event_id, unix_nanos()?))?,
            Some(Err(e)) => return Err(e).context("following the feed"),
            None => bail!("the subscription ended"),
        }
    }
    backend.pool().close().await;
    Ok(())
}

/// Runs `eslab lab follow`: the lines go to `out`.
pub(super) async fn follow_command(args: &FollowArgs, out: &mut (dyn Write + Send)) -> anyhow::Result<()> {
    follow(args, |line| {
        writeln!(out, "{line}")?;
        out.flush()?;
        Ok(())
    })
    .await
}

/// A running follower: its lines, and its end.
struct Following {
    lines: mpsc::UnboundedReceiver<Line>,
    done: JoinHandle<anyhow::Result<()>>,
}

/// The `eslab` binary, when this process is it: the follower then runs as a
/// process of its own (`eslab lab follow`); elsewhere (the lab's tests) there is
/// no such subcommand to start.
fn eslab_binary() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    (exe.file_stem()? == "eslab").then_some(exe)
}

/// Starts `eslab lab follow` as a child process (killed if dropped early).
fn follow_in_process_of_its_own(exe: &Path, args: &FollowArgs) -> anyhow::Result<Following> {
    let mut child = tokio::process::Command::new(exe)
        .args(["lab", "follow", "--schema", &args.schema])
        .args(["--poll-ms", &args.poll_ms.to_string(), "--count", &args.count.to_string()])
        .args(args.no_wake_ups.then_some("--no-wake-ups"))
        .env("ESLAB_LAB_FOLLOW_URL", &args.url)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {} lab follow", exe.display()))?;
    let stdout = child.stdout.take().context("the follower's stdout")?;
    let mut stderr = child.stderr.take().context("the follower's stderr")?;
    let (tx, lines) = mpsc::unbounded_channel();
    let done = tokio::spawn(async move {
        let errors = tokio::spawn(async move {
            let mut text = String::new();
            let _ = stderr.read_to_string(&mut text).await;
            text
        });
        let mut out = BufReader::new(stdout).lines();
        while let Some(line) = out.next_line().await? {
            if tx.send(line.parse()?).is_err() {
                break;
            }
        }
        let status = child.wait().await?;
        let errors = errors.await.unwrap_or_default();
        if status.success() { Ok(()) } else { bail!("the follower process failed ({status}): {}", errors.trim()) }
    });
    Ok(Following { lines, done })
}

/// The fallback: the follower as a task of this process, on a store instance of its own.
fn follow_in_this_process(args: FollowArgs) -> Following {
    let (tx, lines) = mpsc::unbounded_channel();
    let done = tokio::spawn(async move {
        follow(&args, |line| tx.send(line).map_err(|_| anyhow::anyhow!("nobody reads the follower"))).await
    });
    Following { lines, done }
}

/// The fixed append rate of the latency part.
#[derive(Debug, Clone, Copy)]
struct Pace {
    /// Concurrent callers, each on its own stream.
    callers: u64,
    /// Each caller's interval between appends.
    every: Duration,
    /// Appends per caller per measurement.
    per_caller: u64,
}

impl Pace {
    fn per_s(self) -> f64 {
        per_second(self.callers, self.every)
    }

    fn appends(self) -> u64 {
        self.callers * self.per_caller
    }
}

/// One caller at the fixed pace: each append's id and when it was acknowledged (Unix nanoseconds).
async fn paced_caller(store: PostgresStore, caller: u64, pace: Pace) -> anyhow::Result<(Vec<(Uuid, u128)>, Latencies)> {
    let stream = StreamId::new("lab", &format!("paced{caller}"))?;
    // Callers spread over the interval, not all at once.
    let offset = pace.every * u32::try_from(caller)? / u32::try_from(pace.callers.max(1))?;
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + offset, pace.every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut acks = Vec::new();
    let mut latency = Latencies::new()?;
    for n in 0..pace.per_caller {
        ticks.tick().await;
        let event = event(n);
        let id = event.event_id;
        let t = Instant::now();
        store.append(&stream, ExpectedVersion::Exact(Version::new(n)), vec![event]).await?;
        acks.push((id, unix_nanos()?));
        latency.record(t.elapsed());
    }
    Ok((acks, latency))
}

/// Append-to-handler latency of one follower, summed over the rounds.
struct Handled {
    follower: Follower,
    appended: u64,
    /// Appended events the follower handled (once each, if `duplicates` is 0).
    handled: u64,
    duplicates: u64,
    /// Events handled before the writer had its acknowledgement (counted as 0).
    early: u64,
    elapsed: Duration,
    append: Latencies,
    latency: Latencies,
}

impl Handled {
    fn absorb(&mut self, round: Handled) -> anyhow::Result<()> {
        self.appended += round.appended;
        self.handled += round.handled;
        self.duplicates += round.duplicates;
        self.early += round.early;
        self.elapsed += round.elapsed;
        self.append.merge(&round.append)?;
        self.latency.merge(&round.latency)
    }

    fn all_once(&self) -> bool {
        self.handled == self.appended && self.duplicates == 0
    }
}

async fn handled(lab: &Lab, follower: Follower, pace: Pace, exe: Option<&Path>) -> anyhow::Result<Handled> {
    lab.doing(format!("append to handler: {}", follower.name()));
    let connections = u32::try_from(pace.callers + 1)?;
    let store = lab.pg_store(|o| follower.variant.options(o).max_connections(connections)).await?;
    let args = FollowArgs {
        url: lab.postgres_url().to_owned(),
        schema: store.schema().to_owned(),
        poll_ms: u64::try_from(follower.poll.as_millis())?,
        no_wake_ups: !follower.listens(),
        count: pace.appends(),
    };
    let mut following = match exe {
        Some(exe) => follow_in_process_of_its_own(exe, &args)?,
        None => follow_in_this_process(args),
    };
    match tokio::time::timeout(Duration::from_secs(30), following.lines.recv()).await {
        Ok(Some(Line::Ready)) => {}
        Ok(other) => {
            let why = following.done.await.map_err(anyhow::Error::from).and_then(|r| r);
            bail!("the follower did not start ({other:?}): {why:?}")
        }
        Err(_) => bail!("the follower was not ready within 30 s"),
    }
    let started = Instant::now();
    let mut callers = tokio::task::JoinSet::new();
    for c in 0..pace.callers {
        callers.spawn(paced_caller(store.clone(), c, pace));
    }
    let (mut acks, mut append) = (Vec::new(), Latencies::new()?);
    while let Some(joined) = callers.join_next().await {
        let (a, l) = joined??;
        acks.extend(a);
        append.merge(&l)?;
    }
    let elapsed = started.elapsed();
    // Polling, the feed's settling of in-flight transactions (2 s at most)
    // and a lost wake-up's backstop all end well within this.
    let deadline = tokio::time::Instant::now() + follower.poll + Duration::from_secs(10);
    let mut seen: HashMap<Uuid, u128> = HashMap::with_capacity(acks.len());
    let mut duplicates = 0;
    while seen.len() < acks.len() {
        match tokio::time::timeout_at(deadline, following.lines.recv()).await {
            Ok(Some(Line::Handled(id, at))) => {
                if seen.insert(id, at).is_some() {
                    duplicates += 1;
                }
            }
            Ok(Some(Line::Ready)) => {}
            Ok(None) | Err(_) => break,
        }
    }
    if seen.len() == acks.len() {
        // It exits after its count: its errors, if any, are the experiment's.
        match tokio::time::timeout(Duration::from_secs(10), &mut following.done).await {
            Ok(done) => done??,
            Err(_) => bail!("the follower did not exit after its last event"),
        }
    } else {
        following.done.abort();
    }
    store.pool().close().await;
    let (mut latency, mut early, mut handled) = (Latencies::new()?, 0, 0);
    for (id, acked) in &acks {
        if let Some(&at) = seen.get(id) {
            handled += 1;
            if at < *acked {
                early += 1;
            }
            latency.record(Duration::from_nanos(u64::try_from(at.saturating_sub(*acked))?));
        }
    }
    let appended = u64::try_from(acks.len())?;
    Ok(Handled { follower, appended, handled, duplicates, early, elapsed, append, latency })
}

impl Experiment for WakeUpsExperiment {
    fn number(&self) -> u8 {
        10
    }

    fn id(&self) -> &'static str {
        "wake-ups"
    }

    fn title(&self) -> &'static str {
        "Wake-ups: NOTIFY in the transaction vs after the commit vs polling"
    }

    fn question(&self) -> &'static str {
        "What does waking live readers cost concurrent appends when the NOTIFY is sent in the append's \
         transaction, coalesced after the commit, or not at all (readers poll), beside raw INSERT + COMMIT; and \
         how long after an append is acknowledged does a follower in another process handle it?"
    }

    fn run<'a>(&'a self, lab: &'a Lab) -> LocalBoxFuture<'a, anyhow::Result<Report>> {
        Box::pin(async move {
            let scale = lab.scale();
            let callers: Vec<u64> = scale.pick(vec![1, 8], vec![1, 8, 32, 128], vec![1, 8, 32, 128]);
            let budget = scale.pick(
                Budget::new(5, 5, Duration::ZERO),
                Budget::new(5, 1_000_000, Duration::from_millis(700)),
                Budget::new(20, 10_000_000, Duration::from_secs(2)),
            );
            let rounds: usize = scale.pick(1, 3, 5);
            // 400 appends/s from 4 callers: far below what any variant
            // sustains, so the latency is the wake-up's, not a queue's.
            let pace = Pace { callers: 4, every: Duration::from_millis(10), per_caller: scale.pick(10, 150, 500) };
            lab.steps(u64::try_from((callers.len() * THROUGHPUT.len() + FOLLOWERS.len()) * rounds)?);

            // Throughput: every variant on the same events table.
            let base = lab.pg_store(|o| o.notify(Notify::Off).max_connections(1)).await?;
            let options = base.options().clone();
            base.pool().close().await;
            let mut measured: Vec<Throughput> = Vec::new();
            for &n in &callers {
                let first = measured.len();
                for _ in 0..rounds {
                    // Each variant once per round, so that a change in the
                    // machine's load falls on all of them alike.
                    for (i, variant) in THROUGHPUT.into_iter().enumerate() {
                        let round = throughput(lab, &options, variant, n, budget).await?;
                        match measured.get_mut(first + i) {
                            Some(total) => total.absorb(round)?,
                            None => measured.push(round),
                        }
                        lab.step("");
                    }
                }
            }

            // Latency: a follower per variant, in rounds as well.
            let exe = eslab_binary();
            let mut followed: Vec<Handled> = Vec::new();
            for _ in 0..rounds {
                for (i, follower) in FOLLOWERS.into_iter().enumerate() {
                    let round = handled(lab, follower, pace, exe.as_deref()).await?;
                    match followed.get_mut(i) {
                        Some(total) => total.absorb(round)?,
                        None => followed.push(round),
                    }
                    lab.step("");
                }
            }
            Ok(report(&measured, &followed, &callers, &Setup { budget, rounds, pace, own_process: exe.is_some() }))
        })
    }
}

/// How the experiment ran, for the method text.
struct Setup {
    budget: Budget,
    rounds: usize,
    pace: Pace,
    /// Whether the follower ran as a process of its own (else a task here).
    own_process: bool,
}

fn where_followed(own_process: bool) -> &'static str {
    if own_process { "latency, follower process" } else { "latency, follower task (own store)" }
}

fn report(measured: &[Throughput], followed: &[Handled], callers: &[u64], setup: &Setup) -> Report {
    let mut table = Table::new(&[
        "measure",
        "variant",
        "callers",
        "appends",
        "appends/s",
        "× raw",
        "× raw per round (min-max)",
        "append p50 (ms)",
        "append p99 (ms)",
        "append→handler p50 (ms)",
        "append→handler p99 (ms)",
        "every append stored / handled once",
    ]);
    let at = |n: u64, v: Variant| measured.iter().find(|m| m.callers == n && m.variant == v);
    for m in measured {
        let raw = at(m.callers, Variant::Raw);
        let (lo, hi) = raw.map_or((f64::NAN, f64::NAN), |raw| ratio_range(&m.rounds, &raw.rounds));
        table.push(vec![
            Cell::text("appends/s"),
            Cell::text(m.variant.name()),
            Cell::Int(m.callers),
            Cell::Int(m.appends),
            Cell::num(m.per_s(), 0),
            Cell::num(ratio(m.per_s(), raw.map_or(f64::NAN, Throughput::per_s)), 2),
            Cell::text(format!("{lo:.2}-{hi:.2}")),
            Cell::num(m.latency.p50_ms(), 3),
            Cell::num(m.latency.p99_ms(), 3),
            Cell::num(f64::NAN, 3),
            Cell::num(f64::NAN, 3),
            match m.stored {
                None => Cell::text("n/a"),
                Some(s) if s == m.appends => Cell::text("yes"),
                Some(s) => Cell::text(format!("NO: {s} stored")),
            },
        ]);
    }
    for f in followed {
        table.push(vec![
            Cell::text(where_followed(setup.own_process)),
            Cell::text(f.follower.name()),
            Cell::Int(setup.pace.callers),
            Cell::Int(f.appended),
            Cell::num(per_second(f.appended, f.elapsed), 0),
            Cell::num(f64::NAN, 2),
            Cell::text("-"),
            Cell::num(f.append.p50_ms(), 3),
            Cell::num(f.append.p99_ms(), 3),
            Cell::num(f.latency.p50_ms(), 3),
            Cell::num(f.latency.p99_ms(), 3),
            Cell::text(if f.all_once() {
                "yes".to_owned()
            } else {
                format!("NO: {} of {} handled, {} twice", f.handled, f.appended, f.duplicates)
            }),
        ]);
    }
    let series = THROUGHPUT
        .iter()
        .map(|&v| {
            let values = callers.iter().map(|&n| at(n, v).map_or(f64::NAN, Throughput::per_s)).collect();
            (v.name().to_owned(), values)
        })
        .collect();
    let chart = workload::appends_by_callers(
        "Single-event appends per second by concurrent callers, by how readers are woken",
        callers,
        series,
    );
    let ordered = workload::findings_order(callers);
    let mut findings: Vec<String> = ordered
        .iter()
        .filter_map(|&n| {
            let (raw, in_tx, after, off) = (
                at(n, Variant::Raw)?,
                at(n, Variant::InTransaction)?,
                at(n, Variant::AfterCommit)?,
                at(n, Variant::NoNotify)?,
            );
            let x = |m: &Throughput| ratio(m.per_s(), raw.per_s());
            let range = |m: &Throughput| {
                let (lo, hi) = ratio_range(&m.rounds, &raw.rounds);
                format!("{lo:.2}-{hi:.2}")
            };
            // Serialized commits go at one caller's pace, however many callers wait.
            let one = at(1, Variant::InTransaction)
                .filter(|_| n > 1)
                .map(|one| {
                    format!(
                        ": the {n} callers together commit {:.2}× as fast as one caller alone ({:.0}/s)",
                        ratio(in_tx.per_s(), one.per_s()),
                        one.per_s()
                    )
                })
                .unwrap_or_default();
            let cause = if n == 1 {
                "one caller's commits never overlap, so nothing queues on the lock that NOTIFY takes".to_owned()
            } else if x(in_tx) < 0.8 * x(after) {
                format!(
                    "PostgreSQL serializes the commits of transactions that sent a NOTIFY (one lock, held through \
                     the WAL flush), so appends notifying in their transaction commit one at a time{one}, and lose \
                     the group commit that the NOTIFY after the commit keeps"
                )
            } else {
                "no cost of the in-transaction NOTIFY shows at this caller count (too few commits overlap to \
                 queue on its lock)"
                    .to_owned()
            };
            Some(format!(
                "{n} callers: NOTIFY in the transaction {:.0} appends/s = {:.2}× raw INSERT + COMMIT ({:.0}/s; \
                 {} round by round); NOTIFY after commit, coalesced: {:.0}/s = {:.2}× ({}); no NOTIFY: {:.0}/s = \
                 {:.2}×; {cause}",
                in_tx.per_s(),
                x(in_tx),
                raw.per_s(),
                range(in_tx),
                after.per_s(),
                x(after),
                range(after),
                off.per_s(),
                x(off),
            ))
        })
        .collect();
    if !followed.is_empty() {
        let each: Vec<String> = followed
            .iter()
            .map(|f| {
                format!(
                    "{} p50 {:.2} ms, p99 {:.2} ms{}",
                    f.follower.name(),
                    f.latency.p50_ms(),
                    f.latency.p99_ms(),
                    if f.all_once() { "" } else { " (NOT every event handled once)" }
                )
            })
            .collect();
        let latency = format!(
            "append to handler, follower {} ({:.0} appends/s from {} callers): {}",
            if setup.own_process { "in another process" } else { "on its own store instance in this process" },
            setup.pace.per_s(),
            setup.pace.callers,
            each.join("; ")
        );
        // Second: after the headline throughput finding.
        findings.insert(findings.len().min(1), latency);
    }
    let Setup { budget, rounds, pace, own_process } = setup;
    let method = vec![
        format!(
            "Appends/s: each caller appends one event at a time to its own stream with PostgresStore::append \
             (ExpectedVersion::Exact, one statement and one commit each, no group commit), at least {} appends per \
             caller, then until {:.1} s have passed; {rounds} rounds, each running every variant once per caller \
             count, one after another, so that the machine's changing load falls on every variant alike ('per \
             round' pairs each round with the raw round beside it). The baseline is experiment 4's: a raw one-row \
             INSERT into the same events table, autocommit, each caller on its own stream. Every measurement gets a \
             fresh pool of {POOL} connections, opened before the clock starts. The poll interval concerns only \
             readers, so one row without NOTIFY stands for both polling variants.",
            budget.min,
            budget.time.as_secs_f64()
        ),
        format!(
            "Variants: Notify::InTransaction (pg_notify in the append's statement); Notify::AfterCommit, eslab's \
             default (one task per store, on a connection of its own, gathers the appends of notify_window = {} ms, \
             the default, into one pg_notify in a transaction that writes nothing: a reader in another process \
             hears of an append at most the window plus one NOTIFY round trip later); Notify::Off (no NOTIFY; \
             readers poll). PostgreSQL default settings (fsync on, synchronous_commit on).",
            DEFAULT_NOTIFY_WINDOW.as_millis()
        ),
        format!(
            "Append to handler: {} callers, each on its own stream, append every {} ms ({:.0} appends/s, {} per \
             round, fresh schema each time); the writer records the wall clock (SystemTime) when each append \
             returned. The follower {}, subscribes to the whole feed (EventStore::subscribe_woken_by) and records the \
             wall clock when its handler gets each event; latency = handled − acknowledged ({} events were handled \
             before their writer saw the acknowledgement: counted as 0). Notified followers are woken by LISTEN on \
             their own connection and poll every {} s only as a backstop; the polling followers use no_wake_ups() \
             and poll every 10 or 100 ms. The follower's feed reads wait for older in-flight transactions to \
             finish (feed_settle), as every reader of the gap-safe feed does.",
            pace.callers,
            pace.every.as_millis(),
            pace.per_s(),
            pace.appends(),
            if *own_process {
                "runs as a process of its own (`eslab lab follow`, the running eslab binary) on its own \
                 PostgresStore"
            } else {
                "runs as a task of this process on a PostgresStore instance of its own (own pool and LISTEN \
                 connection), since this executable is not the eslab binary (the lab's tests)"
            },
            followed.iter().map(|f| f.early).sum::<u64>(),
            BACKSTOP.as_secs(),
        ),
    ];
    Report { table, chart, findings, method }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn follower_lines_round_trip() {
        let id = Uuid::now_v7();
        for line in [Line::Ready, Line::Handled(id, 1_764_000_000_123_456_789)] {
            assert_eq!(line.to_string().parse::<Line>().unwrap(), line);
        }
        assert!("nonsense".parse::<Line>().is_err());
    }

    fn throughput(variant: Variant, callers: u64, appends: u64) -> Throughput {
        let elapsed = Duration::from_secs(1);
        Throughput {
            variant,
            callers,
            appends,
            elapsed,
            latency: Latencies::new().unwrap(),
            stored: (variant != Variant::Raw).then_some(appends),
            rounds: vec![per_second(appends, elapsed)],
        }
    }

    #[test]
    fn the_finding_names_the_serialized_commits_only_when_they_show() {
        let callers = [1, 32];
        let measured = vec![
            throughput(Variant::Raw, 1, 500),
            throughput(Variant::InTransaction, 1, 480),
            throughput(Variant::AfterCommit, 1, 490),
            throughput(Variant::NoNotify, 1, 495),
            throughput(Variant::Raw, 32, 5_000),
            throughput(Variant::InTransaction, 32, 2_200),
            throughput(Variant::AfterCommit, 32, 4_800),
            throughput(Variant::NoNotify, 32, 4_900),
        ];
        let setup = Setup {
            budget: Budget::new(5, 5, Duration::ZERO),
            rounds: 1,
            pace: Pace { callers: 4, every: Duration::from_millis(10), per_caller: 10 },
            own_process: true,
        };
        let r = report(&measured, &[], &callers, &setup);
        assert_eq!(r.table.rows.len(), 8);
        assert!(r.findings[0].starts_with("32 callers: NOTIFY in the transaction 2200 appends/s = 0.44× raw"));
        assert!(r.findings[0].contains("coalesced: 4800/s = 0.96×") && r.findings[0].contains("serializes"));
        assert!(r.findings[0].contains("commit 4.58× as fast as one caller alone (480/s)"), "{:?}", r.findings);
        assert!(r.findings[1].starts_with("1 callers") && !r.findings[1].contains("serializes"), "{:?}", r.findings);
    }
}
