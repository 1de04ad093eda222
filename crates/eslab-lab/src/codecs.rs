//! Experiment 7: the bank's events through JSON (eslab's default),
//! MessagePack (rmp-serde, compact and with field names) and postcard: bytes
//! per event, encode and decode speed, and an exact round trip.

use std::hint::black_box;
use std::time::{Duration, Instant};

use eslab_bank::{AccountEvent, Amount, Balance, OverdraftLimit, Owner};
use futures_util::future::LocalBoxFuture;

use super::chart::Chart;
use super::measure::{Budget, Latencies, per_second};
use super::report::{Cell, Report, Table, ratio};
use super::{Experiment, Lab};

/// Experiment 7.
pub(super) struct Codecs;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Codec {
    Json,
    MsgPack,
    MsgPackNamed,
    Postcard,
}

const CODECS: [Codec; 4] = [Codec::Json, Codec::MsgPack, Codec::MsgPackNamed, Codec::Postcard];

impl Codec {
    fn name(self) -> &'static str {
        match self {
            Codec::Json => "JSON (serde_json)",
            Codec::MsgPack => "MessagePack (rmp-serde, compact)",
            Codec::MsgPackNamed => "MessagePack (rmp-serde, named fields)",
            Codec::Postcard => "postcard",
        }
    }

    fn encode(self, event: &AccountEvent) -> anyhow::Result<Vec<u8>> {
        Ok(match self {
            Codec::Json => serde_json::to_vec(event)?,
            Codec::MsgPack => rmp_serde::to_vec(event)?,
            Codec::MsgPackNamed => rmp_serde::to_vec_named(event)?,
            Codec::Postcard => postcard::to_allocvec(event)?,
        })
    }

    fn decode(self, bytes: &[u8]) -> anyhow::Result<AccountEvent> {
        Ok(match self {
            Codec::Json => serde_json::from_slice(bytes)?,
            Codec::MsgPack | Codec::MsgPackNamed => rmp_serde::from_slice(bytes)?,
            Codec::Postcard => postcard::from_bytes(bytes)?,
        })
    }
}

/// A mix like an account's life: opened, then deposits and withdrawals, closed.
fn events(n: usize) -> anyhow::Result<Vec<AccountEvent>> {
    let mut out = Vec::with_capacity(n);
    let mut balance = Balance::ZERO;
    for i in 0..n {
        let event = if i == 0 {
            AccountEvent::AccountOpened {
                owner: Owner { name: format!("Customer {i:06}").into() },
                currency: "EUR".parse().map_err(|e| anyhow::anyhow!("{e}"))?,
                overdraft_limit: OverdraftLimit::new(10_000)?,
            }
        } else if i + 1 == n && n > 2 {
            AccountEvent::AccountClosed {}
        } else if i % 3 == 2 {
            let amount = Amount::new(i64::try_from(i % 50 + 1)? * 10)?;
            balance = balance.minus(amount)?;
            AccountEvent::MoneyWithdrawn { amount, balance }
        } else {
            let amount = Amount::new(i64::try_from(i % 977 + 1)? * 100)?;
            balance = balance.plus(amount)?;
            AccountEvent::MoneyDeposited { amount, balance }
        };
        out.push(event);
    }
    Ok(out)
}

/// Events per timed batch (a single event is too short to time).
const BATCH: usize = 100;

struct Measured {
    codec: Codec,
    bytes_per_event: f64,
    encode: Latencies,
    encode_per_s: f64,
    decode: Latencies,
    decode_per_s: f64,
    exact: bool,
}

fn measure(codec: Codec, events: &[AccountEvent], budget: Budget) -> anyhow::Result<Measured> {
    let encoded: Vec<Vec<u8>> = events.iter().map(|e| codec.encode(e)).collect::<anyhow::Result<_>>()?;
    let decoded: Vec<AccountEvent> = encoded.iter().map(|b| codec.decode(b)).collect::<anyhow::Result<_>>()?;
    let exact = decoded == events;
    let bytes: usize = encoded.iter().map(Vec::len).sum();
    #[allow(clippy::cast_precision_loss)] // sizes far below 2^52
    let bytes_per_event = bytes as f64 / events.len().max(1) as f64;
    let batch = u32::try_from(BATCH)?;
    let run = |decode: bool| -> anyhow::Result<(Latencies, f64)> {
        let mut latencies = Latencies::new()?;
        let started = Instant::now();
        let mut busy = Duration::ZERO;
        let mut done = 0_u64;
        let mut items = 0_u64;
        while budget.more(done, started) {
            for (chunk, raw) in events.chunks(BATCH).zip(encoded.chunks(BATCH)) {
                let t = Instant::now();
                if decode {
                    for b in raw {
                        black_box(codec.decode(black_box(b))?);
                    }
                } else {
                    for e in chunk {
                        black_box(codec.encode(black_box(e))?);
                    }
                }
                let took = t.elapsed();
                busy += took;
                if chunk.len() == BATCH {
                    latencies.record_per_item(took, batch);
                }
                items += u64::try_from(chunk.len())?;
            }
            done += 1;
        }
        Ok((latencies, per_second(items, busy)))
    };
    let (encode, encode_per_s) = run(false)?;
    let (decode, decode_per_s) = run(true)?;
    Ok(Measured { codec, bytes_per_event, encode, encode_per_s, decode, decode_per_s, exact })
}

impl Experiment for Codecs {
    fn number(&self) -> u8 {
        7
    }

    fn id(&self) -> &'static str {
        "codecs"
    }

    fn title(&self) -> &'static str {
        "Event codecs"
    }

    fn question(&self) -> &'static str {
        "How many bytes does a bank event take, and how fast is it encoded and decoded, in JSON (eslab's default), \
         MessagePack (rmp-serde) and postcard?"
    }

    fn needs_postgres(&self) -> bool {
        false
    }

    fn run<'a>(&'a self, lab: &'a Lab) -> LocalBoxFuture<'a, anyhow::Result<Report>> {
        Box::pin(async move {
            let scale = lab.scale();
            let n = scale.pick(300, 10_000, 10_000);
            let budget = scale.pick(
                Budget::new(1, 1, Duration::ZERO),
                Budget::new(3, 10_000, Duration::from_millis(1500)),
                Budget::new(10, 100_000, Duration::from_secs(8)),
            );
            let events = events(n)?;
            lab.steps(CODECS.len() as u64);
            let mut measured = Vec::new();
            for codec in CODECS {
                lab.doing(codec.name());
                let events = events.clone();
                // CPU-bound: off the async workers.
                measured.push(tokio::task::spawn_blocking(move || measure(codec, &events, budget)).await??);
                lab.step("");
            }
            Ok(report(&measured, n, budget))
        })
    }
}

fn report(measured: &[Measured], n: usize, budget: Budget) -> Report {
    let mut table = Table::new(&[
        "codec",
        "bytes/event",
        "× JSON size",
        "encode events/s",
        "encode p50 (ns/event)",
        "encode p99 (ns/event)",
        "decode events/s",
        "decode p50 (ns/event)",
        "decode p99 (ns/event)",
        "round trip exact",
    ]);
    let json = measured.iter().find(|m| m.codec == Codec::Json);
    let json_bytes = json.map_or(f64::NAN, |m| m.bytes_per_event);
    let ns = |l: &Latencies, q: f64| l.quantile(q).as_secs_f64() * 1e9;
    for m in measured {
        table.push(vec![
            Cell::text(m.codec.name()),
            Cell::num(m.bytes_per_event, 1),
            Cell::num(ratio(m.bytes_per_event, json_bytes), 2),
            Cell::num(m.encode_per_s, 0),
            Cell::num(ns(&m.encode, 0.5), 0),
            Cell::num(ns(&m.encode, 0.99), 0),
            Cell::num(m.decode_per_s, 0),
            Cell::num(ns(&m.decode, 0.5), 0),
            Cell::num(ns(&m.decode, 0.99), 0),
            Cell::text(if m.exact { "yes" } else { "NO" }),
        ]);
    }
    let chart = Chart {
        title: "Per-event cost by codec (p50) and size".into(),
        x_label: "codec".into(),
        y_label: "ns per event / bytes per event".into(),
        categories: measured.iter().map(|m| m.codec.name().to_owned()).collect(),
        series: vec![
            ("encode ns/event".to_owned(), measured.iter().map(|m| ns(&m.encode, 0.5)).collect()),
            ("decode ns/event".to_owned(), measured.iter().map(|m| ns(&m.decode, 0.5)).collect()),
            ("bytes/event".to_owned(), measured.iter().map(|m| m.bytes_per_event).collect()),
        ],
        log_y: false,
    };
    let mut findings = Vec::new();
    if let Some(json) = json {
        for m in measured.iter().filter(|m| m.codec != Codec::Json) {
            findings.push(format!(
                "{}: {:.2}× JSON's size, encodes {:.2}× and decodes {:.2}× as fast as JSON",
                m.codec.name(),
                ratio(m.bytes_per_event, json.bytes_per_event),
                ratio(m.encode_per_s, json.encode_per_s),
                ratio(m.decode_per_s, json.decode_per_s),
            ));
        }
    }
    let method = vec![
        format!(
            "{n} AccountEvent values as one account's life (opened, deposits and every third a withdrawal, closed), \
             each encoded as the whole externally tagged enum. One thread; timed in batches of {BATCH} events, \
             latency = batch time / {BATCH}. At least {} passes over the events, then until {:.1} s have passed, \
             per codec and direction.",
            budget.min,
            budget.time.as_secs_f64()
        ),
        "Compact MessagePack writes structs as arrays (field order is the schema, like postcard); named \
         MessagePack and JSON carry field names, so a reader can tolerate added or reordered fields. eslab stores \
         JSON (queryable as JSONB, and what the upcasters rewrite). Baseline: JSON."
            .to_owned(),
    ];
    Report { table, chart, findings, method }
}
