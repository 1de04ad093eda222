//! Experiment 13: what crypto-shredding costs. The same commands and loads
//! with a personal field (sealed with its subject's key on append, opened on
//! read) and with the same field as plain text, on PostgreSQL, with the key
//! store's calls counted.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use eslab_core::personal::{Forgetting, KeyStore, Subject, SubjectKey};
use eslab_core::{Aggregate, DomainEvent, EventStore, Metadata, Personal, Repository, StreamId};
use eslab_postgres::PostgresStore;
use futures_util::future::{BoxFuture, LocalBoxFuture};
use serde::{Deserialize, Serialize};

use super::chart::Chart;
use super::measure::{Budget, Latencies, per_second};
use super::report::{Cell, Report, Table, ratio};
use super::{Experiment, Lab};

/// Experiment 13.
pub(super) struct Shredding;

/// Events of a customer whose name is personal data (`Personal`) or not.
#[derive(Debug, Clone, Serialize, Deserialize)]
enum Event<N> {
    Registered { name: N },
    Renamed { name: N },
    Noted { n: u64 },
}

impl<N: Serialize + serde::de::DeserializeOwned + Send + Sync + std::fmt::Debug + 'static> DomainEvent for Event<N> {
    const EVENT_TYPES: &'static [&'static str] = &["Registered", "Renamed", "Noted"];
    fn event_type(&self) -> &'static str {
        match self {
            Event::Registered { .. } => "Registered",
            Event::Renamed { .. } => "Renamed",
            Event::Noted { .. } => "Noted",
        }
    }
}

/// The commands both customers take.
#[derive(Debug, Clone)]
enum Command {
    Register(String),
    Rename(String),
    Note,
}

/// A customer; `SEALED` says whether its name is personal data.
#[derive(Debug, Clone, Default)]
struct Customer<const SEALED: bool> {
    name_len: usize,
    notes: u64,
}

macro_rules! customer {
    ($sealed:literal, $name:ty, $wrap:expr, $len:expr, $subject:expr) => {
        impl Aggregate for Customer<$sealed> {
            const KIND: &'static str = "customer";
            type Command = Command;
            type Event = Event<$name>;
            type Error = std::convert::Infallible;

            fn subject(stream: &StreamId) -> Option<Subject> {
                $subject(stream)
            }

            fn decide(&self, command: &Command) -> Result<Vec<Event<$name>>, Self::Error> {
                let wrap = $wrap;
                Ok(vec![match command {
                    Command::Register(name) => Event::Registered { name: wrap(name.clone()) },
                    Command::Rename(name) => Event::Renamed { name: wrap(name.clone()) },
                    Command::Note => Event::Noted { n: self.notes + 1 },
                }])
            }

            fn evolve(&mut self, event: &Event<$name>) {
                let len = $len;
                match event {
                    Event::Registered { name } | Event::Renamed { name } => self.name_len = len(name),
                    Event::Noted { n } => self.notes = *n,
                }
            }
        }
    };
}

customer!(true, Personal<String>, Personal::Known, |n: &Personal<String>| n.known().map_or(0, String::len), |s| Some(
    Subject::of_stream(s)
));
customer!(false, String, |n: String| n, |n: &String| n.len(), |_| None);

/// The store's key store, its calls counted.
struct Counting {
    inner: Arc<dyn KeyStore>,
    creations: AtomicU64,
    lookups: AtomicU64,
}

impl KeyStore for Counting {
    fn subject_key<'a>(&'a self, subject: &'a Subject) -> BoxFuture<'a, eslab_core::Result<SubjectKey>> {
        self.creations.fetch_add(1, Ordering::Relaxed);
        self.inner.subject_key(subject)
    }

    fn find_keys<'a>(
        &'a self,
        subjects: &'a [Subject],
    ) -> BoxFuture<'a, eslab_core::Result<std::collections::HashMap<Subject, SubjectKey>>> {
        self.lookups.fetch_add(1, Ordering::Relaxed);
        self.inner.find_keys(subjects)
    }

    fn forget<'a>(&'a self, subject: &'a Subject, by: &'a str) -> BoxFuture<'a, eslab_core::Result<Forgetting>> {
        self.inner.forget(subject, by)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Workload {
    /// One command per new customer: a new subject, its key created (a sealing key call).
    Register,
    /// A personal value appended to a known customer: its key looked up.
    Rename,
    /// An event without personal data on a customer that has some.
    Note,
    /// Loading a customer of `LOAD_EVENTS` events, the first one personal.
    LoadOnePersonal,
    /// Loading a customer of `LOAD_EVENTS` events, every one personal.
    LoadAllPersonal,
}

const WORKLOADS: [Workload; 5] =
    [Workload::Register, Workload::Rename, Workload::Note, Workload::LoadOnePersonal, Workload::LoadAllPersonal];
const LOAD_EVENTS: usize = 100;

impl Workload {
    fn name(self) -> String {
        match self {
            Workload::Register => "register (new subject)".into(),
            Workload::Rename => "append a personal value (known subject)".into(),
            Workload::Note => "append without personal data".into(),
            Workload::LoadOnePersonal => format!("load {LOAD_EVENTS} events, 1 personal"),
            Workload::LoadAllPersonal => format!("load {LOAD_EVENTS} events, all personal"),
        }
    }

    fn is_load(self) -> bool {
        matches!(self, Workload::LoadOnePersonal | Workload::LoadAllPersonal)
    }
}

struct Measured {
    workload: Workload,
    sealed: bool,
    ops: u64,
    per_s: f64,
    latencies: Latencies,
    creations: u64,
    lookups: u64,
}

/// Runs `workload` through `repo` (customer ids under `prefix`) within `budget`.
async fn measure<A>(
    repo: &Repository<A, PostgresStore>,
    counting: &Counting,
    workload: Workload,
    prefix: &str,
    budget: Budget,
) -> anyhow::Result<(u64, f64, Latencies, u64, u64)>
where
    A: Aggregate<Command = Command, Error = std::convert::Infallible>,
{
    let name = |i: u64| format!("Customer Name Number {i:08}");
    let loaded = format!("{prefix}-loaded");
    // Set-up, not measured: the customer the other workloads write to or load.
    repo.execute(&loaded, &Command::Register(name(0)), Metadata::now()).await?;
    if workload.is_load() {
        for i in 1..LOAD_EVENTS {
            let command =
                if workload == Workload::LoadAllPersonal { Command::Rename(name(i as u64)) } else { Command::Note };
            repo.execute(&loaded, &command, Metadata::now()).await?;
        }
    }
    let (creations, lookups) = (counting.creations.load(Ordering::Relaxed), counting.lookups.load(Ordering::Relaxed));
    let mut latencies = Latencies::new()?;
    let (started, mut busy, mut done) = (Instant::now(), Duration::ZERO, 0_u64);
    while budget.more(done, started) {
        let t = Instant::now();
        match workload {
            Workload::Register => {
                repo.execute(&format!("{prefix}-{done}"), &Command::Register(name(done)), Metadata::now()).await?;
            }
            Workload::Rename => {
                repo.execute(&loaded, &Command::Rename(name(done)), Metadata::now()).await?;
            }
            Workload::Note => {
                repo.execute(&loaded, &Command::Note, Metadata::now()).await?;
            }
            Workload::LoadOnePersonal | Workload::LoadAllPersonal => {
                let got = repo.load(&loaded).await?;
                anyhow::ensure!(got.version.get() == LOAD_EVENTS as u64, "{loaded}: version {}", got.version);
            }
        }
        let took = t.elapsed();
        busy += took;
        latencies.record(took);
        done += 1;
    }
    Ok((
        done,
        per_second(done, busy),
        latencies,
        counting.creations.load(Ordering::Relaxed) - creations,
        counting.lookups.load(Ordering::Relaxed) - lookups,
    ))
}

impl Experiment for Shredding {
    fn number(&self) -> u8 {
        13
    }

    fn id(&self) -> &'static str {
        "personal-data"
    }

    fn title(&self) -> &'static str {
        "Personal data: what crypto-shredding costs"
    }

    fn question(&self) -> &'static str {
        "What do sealing personal values on append (XChaCha20-Poly1305, a key per data subject) and opening them on \
         every read cost, against the same commands and loads with the field in clear, and how many key-store calls \
         does each take?"
    }

    fn run<'a>(&'a self, lab: &'a Lab) -> LocalBoxFuture<'a, anyhow::Result<Report>> {
        Box::pin(async move {
            let budget = lab.scale().pick(
                Budget::new(3, 3, Duration::ZERO),
                Budget::new(20, 100_000, Duration::from_millis(1_500)),
                Budget::new(100, 1_000_000, Duration::from_secs(5)),
            );
            let store = lab.pg_store(|o| o.max_connections(4)).await?;
            let keys = store.key_store();
            lab.steps((WORKLOADS.len() * 2) as u64);
            let mut measured = Vec::new();
            for workload in WORKLOADS {
                for sealed in [false, true] {
                    let counting = Arc::new(Counting {
                        inner: keys.clone(),
                        creations: AtomicU64::new(0),
                        lookups: AtomicU64::new(0),
                    });
                    let events = EventStore::new(store.clone()).with_keys(counting.clone());
                    let prefix = format!("{}{}", if sealed { "s" } else { "p" }, measured.len());
                    lab.doing(format!("{} · {}", workload.name(), if sealed { "sealed" } else { "plain" }));
                    let (ops, per_s, latencies, creations, lookups) = if sealed {
                        let repo: Repository<Customer<true>, _> = Repository::new(events);
                        measure(&repo, &counting, workload, &prefix, budget).await?
                    } else {
                        let repo: Repository<Customer<false>, _> = Repository::new(events);
                        measure(&repo, &counting, workload, &prefix, budget).await?
                    };
                    measured.push(Measured { workload, sealed, ops, per_s, latencies, creations, lookups });
                    lab.step("");
                }
            }
            Ok(report(&measured, budget))
        })
    }
}

fn report(measured: &[Measured], budget: Budget) -> Report {
    let mut table = Table::new(&[
        "workload",
        "personal field",
        "operations",
        "ops/s",
        "p50 (µs)",
        "p99 (µs)",
        "sealing key calls per op",
        "opening key lookups per op",
        "ops/s / plain",
    ]);
    let plain = |w: Workload| measured.iter().find(|m| m.workload == w && !m.sealed).map_or(f64::NAN, |m| m.per_s);
    let per_op = |n: u64, ops: u64| if ops == 0 { f64::NAN } else { n as f64 / ops as f64 };
    for m in measured {
        table.push(vec![
            Cell::text(m.workload.name()),
            Cell::text(if m.sealed { "sealed (Personal)" } else { "plain text" }),
            Cell::Int(m.ops),
            Cell::num(m.per_s, 0),
            Cell::num(m.latencies.p50_us(), 1),
            Cell::num(m.latencies.p99_us(), 1),
            Cell::num(per_op(m.creations, m.ops), 2),
            Cell::num(per_op(m.lookups, m.ops), 2),
            Cell::num(ratio(m.per_s, plain(m.workload)), 2),
        ]);
    }
    let chart = Chart {
        title: "Operations per second, sealed vs plain (one caller)".into(),
        x_label: "workload".into(),
        y_label: "operations/s".into(),
        categories: WORKLOADS.iter().map(|w| w.name()).collect(),
        series: [false, true]
            .iter()
            .map(|&sealed| {
                let values = WORKLOADS
                    .iter()
                    .map(|w| {
                        measured.iter().find(|m| m.workload == *w && m.sealed == sealed).map_or(f64::NAN, |m| m.per_s)
                    })
                    .collect();
                ((if sealed { "sealed (Personal)" } else { "plain text" }).to_owned(), values)
            })
            .collect(),
        log_y: false,
    };
    let mut findings = Vec::new();
    for w in WORKLOADS {
        let (Some(p), Some(s)) = (
            measured.iter().find(|m| m.workload == w && !m.sealed),
            measured.iter().find(|m| m.workload == w && m.sealed),
        ) else {
            continue;
        };
        findings.push(format!(
            "{}: sealed {:.0} ops/s = {:.2}× plain ({:.0}); p50 {:.0} vs {:.0} µs; {:.2} sealing key calls (get or \
             create) and {:.2} opening key lookups per operation",
            w.name(),
            s.per_s,
            ratio(s.per_s, p.per_s),
            p.per_s,
            s.latencies.p50_us(),
            p.latencies.p50_us(),
            per_op(s.creations, s.ops),
            per_op(s.lookups, s.ops),
        ));
    }
    findings.push(
        "Where the cost comes from: a key-store call is a round trip to PostgreSQL (an append of a new subject's \
         value creates its key first, in its own statement; a load looks the keys up once per page of events that \
         hold personal data); the cipher itself costs microseconds per value. Events without personal data carry \
         no subject and cost nothing."
            .to_owned(),
    );
    findings.push(
        "Not built: a per-process key cache would take the key-store round trip off most commands and loads, at \
         the price of a window in which another process's forgetting does not yet stop this one from opening (or \
         sealing with) the deleted key; every call goes to the store today."
            .to_owned(),
    );
    let method = vec![
        "PostgreSQL store, one caller, the Repository's command path (load, decide, append) without cache. Two \
         customers identical but for the name's type: `Personal<String>` (subject = the stream; sealed with \
         XChaCha20-Poly1305 by the EventStore, opened on read) and `String`. The store's key store is wrapped to \
         count calls. Baseline: the plain-text customer, same run."
            .to_owned(),
        format!(
            "Per cell: at least {} operations, then until {:.1} s have passed. Register = one command per new stream; \
             the other workloads act on one customer set up first (not timed): renames and notes append to it, loads \
             read its {LOAD_EVENTS} events.",
            budget.min,
            budget.time.as_secs_f64()
        ),
    ];
    Report { table, chart, findings, method }
}
