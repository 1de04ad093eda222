//! Experiment 8: the outbox relay (eslab-kafka) publishing a stored feed to
//! Kafka over a grid of batching settings (events per relay batch × the
//! producer's `linger.ms`, and `batch.num.messages` at the full scale), next
//! to a bare rdkafka producer sending the same messages from memory. Skipped,
//! with a note in its report, when no broker answers.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use eslab_core::{
    Checkpoint, EventAppender, EventReader, EventStore, ExpectedVersion, FeedFilter, RecordedEvent, StreamAppend,
};
use eslab_kafka::rdkafka::admin::{AdminClient, AdminOptions};
use eslab_kafka::rdkafka::client::DefaultClientContext;
use eslab_kafka::rdkafka::error::{KafkaError, RDKafkaErrorCode};
use eslab_kafka::rdkafka::producer::{FutureProducer, FutureRecord};
use eslab_kafka::{KafkaOptions, message, relay};
use eslab_projection::{Outcome, PgBackend, Runner, RunnerOptions};
use futures_util::future::LocalBoxFuture;

use super::chart::Chart;
use super::measure::{Latencies, per_second};
use super::report::{Cell, Report, Table, ratio};
use super::workload::account_rows;
use super::{Experiment, Lab};

/// Experiment 8.
pub(super) struct KafkaRelay;

/// The longest one relay pass may take (an open transaction elsewhere on the
/// cluster holds the gap-safe feed back until it ends).
const PATIENCE: Duration = Duration::from_secs(120);

/// How long the broker gets to answer a TCP connect before the experiment is skipped.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// How long an admin request (create or delete topics) may take.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(30);

/// Partitions of every topic the experiment creates (the relay's default).
const PARTITIONS: i32 = 4;

/// The relay's own producer settings (`relay::producer_config`), which a cell
/// overrides: the baseline producer uses these.
const DEFAULT_LINGER_MS: u32 = 5;
const DEFAULT_BATCH_MESSAGES: u32 = 10_000;

/// One cell of the grid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Setting {
    /// Events per relay batch (one checkpoint commit, after every ack).
    batch: usize,
    /// librdkafka `linger.ms`.
    linger_ms: u32,
    /// librdkafka `batch.num.messages`.
    batch_messages: u32,
}

struct Measured {
    setting: Setting,
    events: u64,
    batches: u64,
    per_s: f64,
    latencies: Latencies,
    /// A fresh producer's first acknowledged message (not timed in `per_s`).
    start: Duration,
}

impl Experiment for KafkaRelay {
    fn number(&self) -> u8 {
        8
    }

    fn id(&self) -> &'static str {
        "kafka-relay"
    }

    fn title(&self) -> &'static str {
        "Kafka relay batching: relay batch × producer linger"
    }

    fn question(&self) -> &'static str {
        "How fast does the outbox relay publish the store's feed to Kafka (every event acknowledged before its \
         batch's checkpoint commits), by events per relay batch and by the producer's batching settings, next \
         to a bare producer sending the same messages?"
    }

    fn uses_if_reachable(&self) -> Option<&'static str> {
        Some("Kafka")
    }

    fn run<'a>(&'a self, lab: &'a Lab) -> LocalBoxFuture<'a, anyhow::Result<Report>> {
        Box::pin(async move {
            let brokers = lab.kafka_brokers().to_owned();
            lab.doing(format!("looking for a Kafka broker at {brokers}"));
            if let Err(why) = broker_answers(&brokers).await {
                return Ok(skipped(&brokers, &why));
            }
            let scale = lab.scale();
            let (accounts, per_account) = scale.pick((8_usize, 25_usize), (200, 50), (1_000, 50));
            let settings = grid(scale);
            let raw_passes: u32 = scale.pick(1, 3, 5);
            lab.steps(u64::try_from(2 + settings.len())?);

            lab.doing("seeding the feed");
            let store = lab.pg_store(|o| o.max_connections(4)).await?;
            let appends = (0..accounts)
                .map(|a| {
                    Ok(StreamAppend::new(
                        format!("account-k{a}").parse()?,
                        ExpectedVersion::NoStream,
                        account_rows(per_account)?,
                    ))
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            for chunk in appends.chunks(50) {
                store.append_streams(chunk.to_vec()).await.context("seeding the feed")?;
            }
            let total = accounts * per_account;
            let events = read_all(&store, total).await?;
            let backend = PgBackend::new(store.pool().clone());
            backend.ensure_schema().await?;
            lab.step("bare producer");

            let prefix = lab.topic_prefix();
            let admin: AdminClient<DefaultClientContext> = eslab_kafka::rdkafka::ClientConfig::new()
                .set("bootstrap.servers", &brokers)
                .create()
                .context("creating a Kafka admin client")?;
            let mut topics = Vec::new();
            let result = async {
                let baseline = bare_producer(&admin, &brokers, &prefix, &events, raw_passes, &mut topics).await?;
                lab.step("");
                let mut measured = Vec::with_capacity(settings.len());
                for (i, setting) in settings.iter().enumerate() {
                    lab.doing(format!(
                        "relay batch {} × linger.ms {} × batch.num.messages {}",
                        setting.batch, setting.linger_ms, setting.batch_messages
                    ));
                    let kafka = KafkaOptions::new(&brokers)
                        .with_topic_prefix(format!("{prefix}c{i}."))
                        .with_partitions(PARTITIONS)
                        .with("linger.ms", setting.linger_ms.to_string())
                        .with("batch.num.messages", setting.batch_messages.to_string());
                    let topic = kafka.topic("account");
                    topics.push(topic.clone());
                    // Created here so that the first batch does not time topic creation.
                    create_topic(&admin, &topic).await?;
                    measured.push(relay_pass(&store, &backend, &kafka, *setting, i, total).await?);
                    lab.step("");
                }
                anyhow::Ok((baseline, measured))
            }
            .await;
            lab.doing("deleting the topics");
            let cleanup = delete_topics(&admin, &topics).await;
            let (baseline, measured) = result?;
            Ok(report(&settings, &baseline, &measured, accounts, per_account, raw_passes, &brokers, &cleanup))
        })
    }
}

/// The grid: relay batch × `linger.ms` (× `batch.num.messages` at the full scale).
fn grid(scale: super::Scale) -> Vec<Setting> {
    let batches: Vec<usize> = scale.pick(vec![20, 200], vec![100, 2000], vec![100, 1000, 5000]);
    let lingers: Vec<u32> = scale.pick(vec![0, 5], vec![0, 5, 50], vec![0, 5, 50]);
    let batch_messages: Vec<u32> =
        scale.pick(vec![DEFAULT_BATCH_MESSAGES], vec![DEFAULT_BATCH_MESSAGES], vec![1_000, DEFAULT_BATCH_MESSAGES]);
    let mut grid = Vec::new();
    for &batch in &batches {
        for &linger_ms in &lingers {
            for &n in &batch_messages {
                grid.push(Setting { batch, linger_ms, batch_messages: n });
            }
        }
    }
    grid
}

/// Whether any of `brokers` (`host:port[,host:port..]`) accepts a TCP
/// connection within [`CONNECT_TIMEOUT`]; if none does, why.
async fn broker_answers(brokers: &str) -> Result<(), String> {
    let mut why = Vec::new();
    for broker in brokers.split(',').map(str::trim).filter(|b| !b.is_empty()) {
        let address = broker.split_once("://").map_or(broker, |(_, rest)| rest);
        match tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(address)).await {
            Ok(Ok(_)) => return Ok(()),
            Ok(Err(e)) => why.push(format!("{address}: {e}")),
            Err(_) => why.push(format!("{address}: no answer within {} s", CONNECT_TIMEOUT.as_secs())),
        }
    }
    if why.is_empty() {
        why.push("no broker given".to_owned());
    }
    Err(why.join("; "))
}

/// The report of a run without a broker: the table's columns, no rows, and the note.
fn skipped(brokers: &str, why: &str) -> Report {
    Report {
        table: columns(),
        chart: Chart {
            title: "Kafka relay throughput (skipped: no broker)".into(),
            x_label: "events per relay batch".into(),
            y_label: "events/s".into(),
            ..Chart::default()
        },
        findings: vec![format!(
            "skipped: no Kafka broker answered at {brokers} ({why}). Start one (`bash scripts/services.sh start` \
             runs tansu on 127.0.0.1:9092) or pass --kafka-brokers HOST:PORT (or set KAFKA_BROKERS), then rerun \
             `eslab lab run kafka-relay`."
        )],
        method: vec![format!(
            "The experiment needs a Kafka-compatible broker; a TCP connect to {brokers} is tried for {} s first, \
             and without an answer nothing is measured (this is not a failure of the run).",
            CONNECT_TIMEOUT.as_secs()
        )],
    }
}

/// The whole feed, in order (waiting for commits the gap-safe feed does not show yet).
async fn read_all<S: EventReader>(store: &S, total: usize) -> anyhow::Result<Vec<RecordedEvent>> {
    let started = Instant::now();
    let mut events: Vec<RecordedEvent> = Vec::with_capacity(total);
    let mut at = Checkpoint::START;
    while events.len() < total {
        anyhow::ensure!(
            started.elapsed() < PATIENCE,
            "the feed showed {} of {total} events in {PATIENCE:?}",
            events.len()
        );
        let page = store.read_feed(&FeedFilter::All, at, 1000).await?;
        match page.last() {
            Some(last) => at = last.checkpoint(),
            None => tokio::time::sleep(Duration::from_millis(10)).await,
        }
        events.extend(page);
    }
    Ok(events)
}

async fn create_topic(admin: &AdminClient<DefaultClientContext>, topic: &str) -> anyhow::Result<()> {
    tokio::time::timeout(ADMIN_TIMEOUT, relay::ensure_topics(admin, &[topic], PARTITIONS))
        .await
        .map_err(|_| anyhow::anyhow!("the broker did not create topic {topic} within {ADMIN_TIMEOUT:?}"))?
        .with_context(|| format!("creating topic {topic}"))
}

/// Deletes the run's topics; says what became of them.
async fn delete_topics(admin: &AdminClient<DefaultClientContext>, topics: &[String]) -> String {
    if topics.is_empty() {
        return "no topics were created".to_owned();
    }
    let names: Vec<&str> = topics.iter().map(String::as_str).collect();
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    match tokio::time::timeout(ADMIN_TIMEOUT, admin.delete_topics(&names, &options)).await {
        Err(_) => format!("the broker did not delete the run's {} topics within {ADMIN_TIMEOUT:?}", topics.len()),
        Ok(Err(e)) => format!("the run's {} topics could not be deleted ({e})", topics.len()),
        Ok(Ok(results)) => {
            let failed: Vec<String> = results
                .into_iter()
                .filter_map(|r| r.err())
                .filter(|(_, code)| *code != RDKafkaErrorCode::UnknownTopicOrPartition)
                .map(|(topic, code)| format!("{topic}: {code}"))
                .collect();
            if failed.is_empty() {
                format!("its {} topics were deleted afterwards", topics.len())
            } else {
                format!("{} of its {} topics could not be deleted ({})", failed.len(), topics.len(), failed.join(", "))
            }
        }
    }
}

/// The baseline: a bare producer with the relay's producer settings sending
/// the same messages (key, payload, headers; encoded in the loop as the relay
/// does) from memory, `passes` times, each pass waiting for every ack.
async fn bare_producer(
    admin: &AdminClient<DefaultClientContext>,
    brokers: &str,
    prefix: &str,
    events: &[RecordedEvent],
    passes: u32,
    topics: &mut Vec<String>,
) -> anyhow::Result<Measured> {
    let kafka = KafkaOptions::new(brokers).with_topic_prefix(format!("{prefix}raw.")).with_partitions(PARTITIONS);
    let topic = kafka.topic("account");
    topics.push(topic.clone());
    create_topic(admin, &topic).await?;
    // Warm-up: connections, metadata, the idempotent producer's id.
    let t = Instant::now();
    let producer: FutureProducer = relay::producer_config(&kafka).create().context("creating a Kafka producer")?;
    warm_up(&producer, &topic).await?;
    let start = t.elapsed();
    produce(&producer, &topic, events.get(..10).unwrap_or(events)).await?;
    let mut latencies = Latencies::new()?;
    let mut elapsed = Duration::ZERO;
    for pass in 0..passes {
        // Like each relay cell, each pass fills a fresh topic (a broker may
        // slow down as a topic grows), warmed up with one untimed message.
        let topic = format!("{topic}.{pass}");
        topics.push(topic.clone());
        create_topic(admin, &topic).await?;
        warm_up(&producer, &topic).await?;
        let t = Instant::now();
        produce(&producer, &topic, events).await?;
        latencies.record(t.elapsed());
        elapsed += t.elapsed();
    }
    let sent = u64::try_from(events.len())?.saturating_mul(u64::from(passes));
    Ok(Measured {
        setting: Setting { batch: events.len(), linger_ms: DEFAULT_LINGER_MS, batch_messages: DEFAULT_BATCH_MESSAGES },
        events: sent,
        batches: u64::from(passes),
        per_s: per_second(sent, elapsed),
        latencies,
        start,
    })
}

/// Sends every event and waits for every acknowledgement.
async fn produce(producer: &FutureProducer, topic: &str, events: &[RecordedEvent]) -> anyhow::Result<()> {
    let mut deliveries = Vec::with_capacity(events.len());
    for event in events {
        let out = message::encode(event).map_err(|e| anyhow::anyhow!("encoding an event: {e}"))?;
        let mut record = FutureRecord::to(topic).key(&out.key).payload(&out.payload).headers(out.headers);
        loop {
            match producer.send_result(record) {
                Ok(delivery) => {
                    deliveries.push(delivery);
                    break;
                }
                // The local queue is full: let the producer drain it (as the relay does).
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                Err((e, _)) => return Err(anyhow::anyhow!("producing to {topic}: {e}")),
            }
        }
    }
    for delivery in deliveries {
        match delivery.await {
            Ok(Ok(_)) => {}
            Ok(Err((e, _))) => return Err(anyhow::anyhow!("delivery to {topic} failed: {e}")),
            Err(_) => return Err(anyhow::anyhow!("the producer dropped a message to {topic}")),
        }
    }
    Ok(())
}

/// Sends one (non-eslab) message to `topic` and waits for its acknowledgement.
async fn warm_up(producer: &FutureProducer, topic: &str) -> anyhow::Result<()> {
    let record: FutureRecord<'_, str, [u8]> = FutureRecord::to(topic).key("lab-warm-up").payload(&[]);
    producer
        .send(record, ADMIN_TIMEOUT)
        .await
        .map_err(|(e, _)| anyhow::anyhow!("warming the producer up on {topic}: {e}"))?;
    Ok(())
}

/// One relay, with a fresh checkpoint, publishing the whole feed.
async fn relay_pass(
    store: &eslab_postgres::PostgresStore,
    backend: &PgBackend,
    kafka: &KafkaOptions,
    setting: Setting,
    cell: usize,
    total: usize,
) -> anyhow::Result<Measured> {
    let t = Instant::now();
    let publisher = relay::Publisher::new(kafka, format!("lab-relay-{cell}"), FeedFilter::All)
        .context("creating the relay's producer")?;
    // A fresh producer spends its first request on the connection, its
    // idempotent producer id and the topic's metadata: not the batching this
    // measures (the bare producer warms up too).
    warm_up(&publisher.producer(), &kafka.topic("account")).await?;
    let start = t.elapsed();
    let feed = EventStore::new(store.clone()).with_upcasters(eslab_bank::upcasters());
    let runner = Runner::new(feed, Arc::new(relay::RelayBackend::new(Arc::new(backend.clone()))), Arc::new(publisher))
        .with_options(RunnerOptions { batch_size: setting.batch, ..RunnerOptions::default() });
    let mut latencies = Latencies::new()?;
    let mut published = 0_usize;
    let mut batches = 0_u64;
    let started = Instant::now();
    while published < total {
        anyhow::ensure!(
            started.elapsed() < PATIENCE,
            "the relay published {published} of {total} events in {PATIENCE:?}"
        );
        let t = Instant::now();
        match runner.run_once().await.context("running the relay")? {
            Outcome::Processed { events, .. } => {
                latencies.record(t.elapsed());
                published += events;
                batches += 1;
            }
            Outcome::Idle => tokio::time::sleep(Duration::from_millis(5)).await,
            Outcome::NotLeader => anyhow::bail!("another relay holds the lab's relay lease"),
        }
    }
    let elapsed = started.elapsed();
    let events = u64::try_from(published)?;
    Ok(Measured { setting, events, batches, per_s: per_second(events, elapsed), latencies, start })
}

fn columns() -> Table {
    Table::new(&[
        "run",
        "relay batch",
        "linger.ms",
        "batch.num.messages",
        "events",
        "batches",
        "events/s",
        "× bare producer",
        "batch p50 (ms)",
        "batch p99 (ms)",
        "producer start (ms)",
        "all acknowledged",
    ])
}

#[allow(clippy::too_many_arguments)]
fn report(
    settings: &[Setting],
    baseline: &Measured,
    measured: &[Measured],
    accounts: usize,
    per_account: usize,
    passes: u32,
    brokers: &str,
    cleanup: &str,
) -> Report {
    let total = accounts * per_account;
    let mut table = columns();
    let row = |run: &str, m: &Measured, expected: u64| {
        vec![
            Cell::text(run),
            Cell::Int(m.setting.batch as u64),
            Cell::Int(u64::from(m.setting.linger_ms)),
            Cell::Int(u64::from(m.setting.batch_messages)),
            Cell::Int(m.events),
            Cell::Int(m.batches),
            Cell::num(m.per_s, 0),
            Cell::num(ratio(m.per_s, baseline.per_s), 3),
            Cell::num(m.latencies.p50_ms(), 2),
            Cell::num(m.latencies.p99_ms(), 2),
            Cell::num(super::measure::ms(m.start), 1),
            Cell::text(if m.events == expected { "yes" } else { "NO" }),
        ]
    };
    table.push(row("bare producer (baseline)", baseline, baseline.events));
    for m in measured {
        table.push(row("relay", m, total as u64));
    }

    let mut batches: Vec<usize> = settings.iter().map(|s| s.batch).collect();
    batches.dedup();
    let mut producers: Vec<(u32, u32)> = Vec::new();
    for s in settings {
        if !producers.contains(&(s.linger_ms, s.batch_messages)) {
            producers.push((s.linger_ms, s.batch_messages));
        }
    }
    let varies_batch_messages = producers.iter().any(|p| p.1 != DEFAULT_BATCH_MESSAGES);
    let producer_name = |linger: u32, n: u32| {
        if varies_batch_messages {
            format!("linger.ms {linger}, batch.num.messages {n}")
        } else {
            format!("linger.ms {linger}")
        }
    };
    let mut series: Vec<(String, Vec<f64>)> = producers
        .iter()
        .map(|&(linger, n)| {
            let name = producer_name(linger, n);
            let values = batches
                .iter()
                .map(|b| {
                    measured
                        .iter()
                        .find(|m| m.setting == Setting { batch: *b, linger_ms: linger, batch_messages: n })
                        .map_or(f64::NAN, |m| m.per_s)
                })
                .collect();
            (name, values)
        })
        .collect();
    series.push(("bare producer (baseline)".to_owned(), batches.iter().map(|_| baseline.per_s).collect()));
    let chart = Chart {
        title: "Kafka relay throughput".into(),
        x_label: "events per relay batch".into(),
        y_label: "events/s (log)".into(),
        categories: batches.iter().map(ToString::to_string).collect(),
        series,
        log_y: true,
    };

    let mut findings = Vec::new();
    if let Some(best) = measured.iter().max_by(|a, b| a.per_s.total_cmp(&b.per_s)) {
        findings.push(format!(
            "fastest relay: batch {} with linger.ms {} (batch.num.messages {}) at {:.0} events/s, {:.3}× the bare \
             producer ({:.0} msg/s); batch p50 {:.1} ms, p99 {:.1} ms",
            best.setting.batch,
            best.setting.linger_ms,
            best.setting.batch_messages,
            best.per_s,
            ratio(best.per_s, baseline.per_s),
            baseline.per_s,
            best.latencies.p50_ms(),
            best.latencies.p99_ms()
        ));
    }
    if let Some(worst) = measured.iter().min_by(|a, b| a.per_s.total_cmp(&b.per_s)) {
        findings.push(format!(
            "slowest: batch {} with linger.ms {} at {:.0} events/s ({:.3}× the bare producer)",
            worst.setting.batch,
            worst.setting.linger_ms,
            worst.per_s,
            ratio(worst.per_s, baseline.per_s)
        ));
    }
    for &(linger, n) in &producers {
        let of = |b: usize| {
            measured.iter().find(|m| m.setting == Setting { batch: b, linger_ms: linger, batch_messages: n })
        };
        if let (Some(small), Some(large)) = (batches.first().and_then(|b| of(*b)), batches.last().and_then(|b| of(*b)))
            && small.setting.batch != large.setting.batch
        {
            findings.push(format!(
                "{}: relay batch {} is {:.1}× batch {} (batch p50 {:.1} vs {:.1} ms)",
                producer_name(linger, n),
                large.setting.batch,
                ratio(large.per_s, small.per_s),
                small.setting.batch,
                large.latencies.p50_ms(),
                small.latencies.p50_ms()
            ));
        }
    }
    let mut starts: Vec<Duration> = measured.iter().map(|m| m.start).chain([baseline.start]).collect();
    starts.sort_unstable();
    if let (Some(first), Some(last)) = (starts.first(), starts.last()) {
        findings.push(format!(
            "a fresh producer's first acknowledged message took {:.0} to {:.0} ms (connection, idempotent producer \
             id, topic metadata): not timed above, but paid by every relay (re)start",
            super::measure::ms(*first),
            super::measure::ms(*last)
        ));
    }
    if measured.iter().any(|m| m.events != total as u64) {
        findings.push("some relay runs did not publish every event: see 'all acknowledged'".to_owned());
    }

    let method = vec![
        format!(
            "{accounts} accounts × {per_account} events ({total} events, the bank's JSON events) in a fresh \
             PostgreSQL schema. Each cell runs eslab-kafka's relay (a projection Runner over a RelayBackend and a \
             Publisher) with a fresh checkpoint from the start of the feed to its end, publishing to its own topic \
             ({PARTITIONS} partitions, created before timing; the relay's producer sends one warm-up message \
             first, so that its connection, producer id and topic metadata are not timed: 'producer start' is how long \
             that took) on {brokers}; {cleanup}."
        ),
        "A relay batch is one `run_once`: read the batch from the gap-safe feed, encode and hand every event to \
         the idempotent producer, wait for the broker's acknowledgement of all of them, then commit the \
         checkpoint. 'batch p50/p99' are that whole round's latency: the longest an event waits in the relay \
         once the relay has read it. events/s = events / the pass's wall time."
            .to_owned(),
        format!(
            "The producer settings are the relay's own (idempotent, acks=all, lz4; linger.ms {DEFAULT_LINGER_MS}, \
             batch.num.messages {DEFAULT_BATCH_MESSAGES}) with each cell's linger.ms and batch.num.messages \
             applied over them."
        ),
        format!(
            "Baseline: a bare rdkafka producer with the relay's default settings sending the same {total} messages \
             (same keys, payloads and headers, encoded in the loop) from memory, {passes} pass(es), each to a \
             fresh topic (warmed up with one untimed message) and waiting for every acknowledgement; its 'relay \
             batch' is the whole pass. '× bare producer' divides by its rate: the relay's price for reading the \
             feed and committing checkpoints."
        ),
    ];
    Report { table, chart, findings, method }
}
