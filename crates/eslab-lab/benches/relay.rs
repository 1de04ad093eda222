//! The outbox relay against the local broker (`make services`) and PostgreSQL.
//!
//! - `relay_throughput/relay`: 20 000 stored events published by a relay with
//!   a fresh checkpoint (feed reads, encoding, idempotent produce, waiting for
//!   every acknowledgement, checkpoint commits); its producer warmed up first,
//!   as a long-running relay's is. Raw baseline in the same
//!   group: `raw_producer`, a bare idempotent rdkafka producer sending the same
//!   20 000 messages (same keys, payloads, headers; events already in memory).
//! - `end_to_end/kafka`: one deposit appended, until the read model shows it,
//!   through relay -> Kafka -> worker, both running live. Baseline
//!   `end_to_end/in_process_runner`: the same through the projection runner
//!   (no Kafka). p50/p99 of each are printed after the group.
//!
//! `make services && cargo bench -p eslab-kafka --bench relay` (uses
//! `DATABASE_URL` and `KAFKA_BROKERS`; fresh schemas and topics).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use eslab_bank::{Account, AccountCommand, AccountEvent, Amount, Balance, BankViews, OverdraftLimit, Owner, SqlViews};
use eslab_core::{
    Checkpoint, Codec, EventAppender, EventReader, EventStore, ExpectedVersion, FeedFilter, JsonCodec, Metadata,
    RecordedEvent, Repository, StreamAppend,
};
use eslab_kafka::rdkafka::producer::{FutureProducer, FutureRecord};
use eslab_kafka::{KafkaOptions, Worker, WorkerOptions, WorkerTables, message, relay};
use eslab_postgres::{Listener, PostgresStore};
use eslab_projection::{PgBackend, Runner, RunnerOptions, Wakeup};

const EVENTS_PER_ACCOUNT: usize = 50;
const ACCOUNTS: usize = 400;

struct Bench {
    store: PostgresStore,
    kafka: KafkaOptions,
    events: Vec<RecordedEvent>,
}

/// The store as the relay and the runner read it: with the bank's upcasters.
fn feed(store: &PostgresStore) -> EventStore<PostgresStore> {
    EventStore::new(store.clone()).with_upcasters(eslab_bank::upcasters())
}

fn brokers() -> String {
    std::env::var("KAFKA_BROKERS").unwrap_or_else(|_| eslab_kafka::DEFAULT_BROKERS.into())
}

async fn setup() -> Bench {
    let url = std::env::var("DATABASE_URL")
        .ok()
        .filter(|u| u.starts_with("postgres"))
        .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let id = uuid::Uuid::now_v7().simple().to_string();
    let store = eslab_runtime::open_postgres(&url, &format!("eslab_bench_{id}"), |o| o)
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL is not reachable at {url}: {e}"));
    let backend = PgBackend::new(store.pool().clone());
    backend.ensure_schema().await.unwrap();
    SqlViews::new(store.pool().clone()).ensure_schema().await.unwrap();
    WorkerTables::new(store.pool().clone()).ensure_schema().await.unwrap();
    let eur = "EUR".parse().unwrap();
    let mut appends = Vec::new();
    for n in 0..ACCOUNTS {
        let meta = || Metadata::now().with_correlation_id(uuid::Uuid::now_v7()).with_actor("bench");
        let opened = AccountEvent::AccountOpened {
            owner: Owner { name: format!("owner {n}").into() },
            currency: eur,
            overdraft_limit: OverdraftLimit::NONE,
        };
        let mut events = vec![JsonCodec.encode(&opened, meta()).unwrap()];
        for d in 1..EVENTS_PER_ACCOUNT {
            let balance = Balance::new(i64::try_from(d).unwrap() * 100);
            let deposit = AccountEvent::MoneyDeposited { amount: Amount::new(100).unwrap(), balance };
            events.push(JsonCodec.encode(&deposit, meta()).unwrap());
        }
        appends.push(StreamAppend::new(format!("account-b{n}").parse().unwrap(), ExpectedVersion::NoStream, events));
    }
    for chunk in appends.chunks(50) {
        store.append_streams(chunk.to_vec()).await.unwrap();
    }
    let events = store.read_feed(&FeedFilter::All, Checkpoint::START, ACCOUNTS * EVENTS_PER_ACCOUNT).await.unwrap();
    assert_eq!(events.len(), ACCOUNTS * EVENTS_PER_ACCOUNT);
    let kafka = KafkaOptions::new(brokers()).with_topic_prefix(format!("bench{id}.")).with_partitions(4);
    Bench { store, kafka, events }
}

async fn raw_produce(producer: &FutureProducer, topic: &str, events: &[RecordedEvent]) {
    let mut deliveries = Vec::with_capacity(events.len());
    for event in events {
        let out = message::encode(event).unwrap();
        let mut record = FutureRecord::to(topic).key(&out.key).payload(&out.payload).headers(out.headers);
        loop {
            match producer.send_result(record) {
                Ok(d) => {
                    deliveries.push(d);
                    break;
                }
                Err((_, back)) => {
                    record = back;
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
        }
    }
    for d in deliveries {
        d.await.unwrap().unwrap();
    }
}

fn throughput(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let bench = rt.block_on(setup());
    let n = bench.events.len();
    let mut group = c.benchmark_group("relay_throughput");
    group.throughput(Throughput::Elements(u64::try_from(n).unwrap()));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(10));

    let producer: FutureProducer = relay::producer_config(&bench.kafka).create().unwrap();
    let raw_topic = bench.kafka.topic("raw");
    rt.block_on(async {
        let mut config = eslab_kafka::rdkafka::ClientConfig::new();
        config.set("bootstrap.servers", &bench.kafka.brokers);
        let admin: eslab_kafka::rdkafka::admin::AdminClient<eslab_kafka::rdkafka::client::DefaultClientContext> =
            config.create().unwrap();
        relay::ensure_topics(&admin, &[raw_topic.as_str()], bench.kafka.partitions).await.unwrap();
        raw_produce(&producer, &raw_topic, &bench.events[..10]).await;
    });
    group.bench_function("raw_producer", |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let (producer, topic, events) = (&producer, &raw_topic, &bench.events);
            async move {
                let start = Instant::now();
                for _ in 0..iters {
                    raw_produce(producer, topic, events).await;
                }
                start.elapsed()
            }
        });
    });

    let round = std::sync::atomic::AtomicUsize::new(0);
    group.bench_function("relay", |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let bench = &bench;
            let round = &round;
            let raw_topic = &raw_topic;
            async move {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    // A fresh checkpoint each time: the relay publishes all n events.
                    let name = format!("bench-relay-{}", round.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
                    let publisher = relay::Publisher::new(&bench.kafka, name, FeedFilter::All).unwrap();
                    // A relay is a long-lived process: its producer's start-up
                    // (connecting, the idempotent producer id, metadata; about
                    // 0.5-1 s on tansu) is paid once, not per batch, so it is
                    // paid here before the clock starts.
                    publisher
                        .producer()
                        .send(FutureRecord::to(raw_topic).key("warm-up").payload("warm-up"), Duration::from_secs(10))
                        .await
                        .unwrap();
                    let backend =
                        Arc::new(relay::RelayBackend::new(Arc::new(PgBackend::new(bench.store.pool().clone()))));
                    let runner = Runner::new(feed(&bench.store), backend, Arc::new(publisher))
                        .with_options(RunnerOptions { batch_size: 5000, ..RunnerOptions::default() });
                    let start = Instant::now();
                    let published = runner.drain().await.unwrap();
                    total += start.elapsed();
                    assert_eq!(published, n);
                }
                total
            }
        });
    });
    group.finish();
    rt.block_on(bench.store.drop_schema()).unwrap();
}

struct Notified(Listener);

impl Wakeup for Notified {
    async fn wait(&mut self) {
        self.0.wait().await;
    }
}

/// The `pct`-th percentile (nearest rank below) of sorted samples.
fn percentile(sorted: &[Duration], pct: usize) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[(sorted.len() - 1) * pct / 100]
}

/// One deposit, then wait until the read model shows its version.
async fn one_round_trip(
    accounts: &Repository<Account, PostgresStore>,
    views: &SqlViews<sqlx::PgPool>,
    id: &str,
) -> Duration {
    let eur = "EUR".parse().unwrap();
    let deposit = AccountCommand::Deposit { amount: Amount::new(1).unwrap(), currency: eur };
    let start = Instant::now();
    let done = accounts.execute(id, &deposit, Metadata::now()).await.unwrap();
    let version = done.version.get();
    loop {
        if views.account(id).await.unwrap().is_some_and(|r| r.version >= version) {
            return start.elapsed();
        }
        tokio::time::sleep(Duration::from_micros(500)).await;
    }
}

/// `iters` round trips on the account `kafka`, each recorded in `samples`; their total.
async fn round_trips(
    iters: u64,
    accounts: &Repository<Account, PostgresStore>,
    views: &SqlViews<sqlx::PgPool>,
    samples: &std::sync::Mutex<Vec<Duration>>,
) -> Duration {
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        let d = one_round_trip(accounts, views, "kafka").await;
        samples.lock().unwrap().push(d);
        total += d;
    }
    total
}

fn latency(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let bench = rt.block_on(setup());
    let store = bench.store.clone();
    let accounts: Repository<Account, PostgresStore> = Repository::new(EventStore::new(store.clone()));
    let views = SqlViews::new(store.pool().clone());
    let eur = "EUR".parse().unwrap();
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let stopped = |mut stop: tokio::sync::watch::Receiver<bool>| async move {
        while !*stop.borrow_and_update() {
            let _ = stop.changed().await;
        }
    };

    let mut group = c.benchmark_group("end_to_end");
    group.sample_size(50);
    group.measurement_time(Duration::from_secs(10));
    let mut report = Vec::new();

    // Through Kafka: relay and worker live.
    let (relay_task, worker_task) = rt.block_on(async {
        let relay = relay::relay(feed(&store), Arc::new(PgBackend::new(store.pool().clone())), &bench.kafka).unwrap();
        let wakeup = Notified(store.listener().await.unwrap());
        let relay_task = tokio::spawn({
            let stop = stop.clone();
            async move { relay.run(wakeup, stopped(stop)).await }
        });
        let options = WorkerOptions { linger: Duration::from_millis(1), ..WorkerOptions::new("bench", &["account"]) };
        let worker =
            Worker::new(&bench.kafka, Arc::new(PgBackend::new(store.pool().clone())), Arc::new(BankViews), options)
                .unwrap();
        let worker_task = tokio::spawn({
            let stop = stop.clone();
            async move { worker.run(stopped(stop)).await }
        });
        let open = AccountCommand::Open { owner: "k".into(), currency: eur, overdraft_limit: OverdraftLimit::NONE };
        accounts.execute("kafka", &open, Metadata::now()).await.unwrap();
        // The worker has joined its group and caught up with the seeded events.
        let deadline = Instant::now() + Duration::from_secs(120);
        while views.account("kafka").await.unwrap().is_none() {
            assert!(Instant::now() < deadline, "the Kafka pipeline did not deliver");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        (relay_task, worker_task)
    });
    let samples = std::sync::Mutex::new(Vec::new());
    group.bench_function("kafka", |b| {
        b.to_async(&rt).iter_custom(|iters| round_trips(iters, &accounts, &views, &samples));
    });
    report.push(("kafka", std::mem::take(&mut *samples.lock().unwrap())));
    stop_tx.send(true).unwrap();
    rt.block_on(async {
        relay_task.await.unwrap().unwrap();
        worker_task.await.unwrap().unwrap();
    });

    // Baseline: the projection runner in process, no Kafka (its own checkpoint).
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let runner_task = rt
        .block_on(async {
            let runner = Runner::new(feed(&store), Arc::new(PgBackend::new(store.pool().clone())), Arc::new(BankViews));
            runner.drain().await.unwrap();
            let wakeup = Notified(store.listener().await.unwrap());
            let task = tokio::spawn(async move { runner.run(wakeup, stopped(stop)).await });
            Ok::<_, ()>(task)
        })
        .unwrap();
    group.bench_function("in_process_runner", |b| {
        b.to_async(&rt).iter_custom(|iters| round_trips(iters, &accounts, &views, &samples));
    });
    report.push(("in_process_runner", std::mem::take(&mut *samples.lock().unwrap())));
    stop_tx.send(true).unwrap();
    rt.block_on(async { runner_task.await.unwrap().unwrap() });
    group.finish();

    for (name, mut s) in report {
        s.sort();
        println!(
            "end_to_end/{name}: n={} p50={:.2} ms p99={:.2} ms",
            s.len(),
            percentile(&s, 50).as_secs_f64() * 1e3,
            percentile(&s, 99).as_secs_f64() * 1e3
        );
    }
    rt.block_on(bench.store.drop_schema()).unwrap();
}

criterion_group!(benches, throughput, latency);
criterion_main!(benches);
