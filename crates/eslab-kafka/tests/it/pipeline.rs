//! Command -> store -> relay -> Kafka -> worker -> read model, and the crashes
//! on the way: the relay killed mid-batch, the worker killed, the broker
//! stopped under load. Every test is bounded by a timeout.

use std::sync::Arc;
use std::time::Duration;

use eslab_core::{
    Aggregate, Checkpoint, EventAppender, EventReader, EventStore, ExpectedVersion, FeedFilter, Metadata, NewEvent,
    Repository,
};
use eslab_kafka::relay;
use eslab_projection::{Outcome, RunnerOptions};
use eslab_testing::repository::{Tally, TallyCommand, tally_upcasters};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};

use crate::helpers::{
    Env, Expected, OwnBroker, TallyViews, assert_all_published, assert_read_model, read_topics, run_worker_until, seed,
};

/// Bounds a test: nothing in this file may hang the suite.
async fn within<F: std::future::Future<Output = ()>>(limit: Duration, test: F) {
    tokio::time::timeout(limit, test).await.unwrap_or_else(|_| panic!("test did not finish within {limit:?}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn commands_reach_the_read_model_through_kafka() {
    within(Duration::from_secs(90), async {
        let env = Env::new().await;
        let store = EventStore::new(env.store.clone()).with_upcasters(tally_upcasters());
        let tallies: Repository<Tally, _> = Repository::new(store.clone());

        // The relay and the worker run live, as in production.
        let relay = relay::relay(store.clone(), env.backend(), &env.kafka).unwrap();
        let (stop_tx, stop) = tokio::sync::watch::channel(false);
        let relay_task = {
            let mut stop = stop.clone();
            let wakeup = env.store.listener().await.unwrap();
            tokio::spawn(async move {
                struct W(eslab_postgres::Listener);
                impl eslab_projection::Wakeup for W {
                    async fn wait(&mut self) {
                        self.0.wait().await;
                    }
                }
                relay
                    .run(W(wakeup), async move {
                        while !*stop.borrow_and_update() {
                            let _ = stop.changed().await;
                        }
                    })
                    .await
            })
        };
        let worker = Arc::new(env.worker(100));
        let worker_task = {
            let worker = worker.clone();
            let mut stop = stop.clone();
            tokio::spawn(async move {
                worker
                    .run(async move {
                        while !*stop.borrow_and_update() {
                            let _ = stop.changed().await;
                        }
                    })
                    .await
            })
        };

        let correlation = uuid::Uuid::now_v7();
        let meta = || Metadata::now().with_correlation_id(correlation).with_actor("ada");
        // An event written before the schema change (`Added` v1, `{"value": n}`):
        // the relay publishes it upcast, or the read model (which decodes v2
        // only) would park a2.
        let old = NewEvent::new("Added", 1, serde_json::json!({ "value": 3 }), meta());
        env.store.append(&Tally::stream_id("a2").unwrap(), ExpectedVersion::NoStream, vec![old]).await.unwrap();
        // a1: one event per command, and four in one append.
        tallies.execute("a1", &TallyCommand::Add(100), meta()).await.unwrap();
        tallies.execute("a1", &TallyCommand::AddMany(vec![200, 300, 400, 500]), meta()).await.unwrap();
        tallies.execute("a1", &TallyCommand::Add(-250), meta()).await.unwrap();
        tallies.execute("a1", &TallyCommand::Close, meta()).await.unwrap();
        tallies.execute("a2", &TallyCommand::Add(4), meta()).await.unwrap();

        let views = env.views();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let a1 = views.tally("a1").await;
            let a2 = views.tally("a2").await;
            if a1.as_ref().is_some_and(|r| r.version == 7) && a2.as_ref().is_some_and(|r| r.version == 2) {
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "read model not updated: {a1:?} {a2:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let a1 = views.tally("a1").await.unwrap();
        assert_eq!((a1.total, a1.closed), (1500 - 250, true));
        let folded = tallies.load("a1").await.unwrap().state;
        assert_eq!((a1.total, a1.closed), (folded.total, folded.closed));
        assert_eq!(views.tally("a2").await.unwrap().total, 7);
        assert_eq!(views.tally("a2").await.unwrap().total, tallies.load("a2").await.unwrap().state.total);
        // The events arrived in stream order (the history is in the order of
        // the additions), and the headers carried the metadata through Kafka.
        let history = views.history("a1").await;
        assert_eq!(history.iter().map(|h| h.n).collect::<Vec<_>>(), [100, 200, 300, 400, 500, -250]);
        assert!(history.iter().all(|h| h.correlation_id == Some(correlation)));
        // The relay's checkpoint is at the end of the feed.
        let feed = store.read_feed(&FeedFilter::All, Checkpoint::START, 1000).await.unwrap();
        assert_eq!(feed.len(), 9);

        stop_tx.send(true).unwrap();
        relay_task.await.unwrap().unwrap();
        worker_task.await.unwrap().unwrap();
        assert_eq!(worker.totals().applied, 9);
        env.cleanup().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_relay_killed_mid_batch_loses_nothing_and_the_worker_dedupes() {
    within(Duration::from_secs(120), async {
        let env = Env::new().await;
        let expected = seed(&env.store, "r", 60, 50).await; // 3000 events
        let relay_with = |batch: usize| {
            relay::relay(env.feed(), env.backend(), &env.kafka).unwrap().with_options(RunnerOptions {
                batch_size: batch,
                owner: "relay".into(),
                ..RunnerOptions::default()
            })
        };
        // Killed at several points, some of them inside a batch's deliveries.
        for (i, millis) in [5_u64, 40, 120, 250].into_iter().enumerate() {
            let r = relay_with(300 + 100 * i);
            let task = tokio::spawn(async move { r.drain().await });
            tokio::time::sleep(Duration::from_millis(millis)).await;
            task.abort();
            let _ = task.await;
        }
        let r = relay_with(1000);
        r.drain().await.unwrap();
        let end = env.store.read_feed(&FeedFilter::All, Checkpoint::START, 10_000).await.unwrap();
        assert_eq!(end.len(), expected.events);
        assert_eq!(r.checkpoint().await.unwrap(), end.last().unwrap().checkpoint());

        // Every event reached its topic (some more than once).
        let published = read_topics(&env.kafka, &[Tally::KIND], expected.events, Duration::from_secs(60)).await;
        assert!(published.len() >= expected.events);
        assert_all_published(&expected, &published);

        // Publish everything a second time (a relay with a checkpoint of its
        // own): the worker must still apply each event exactly once.
        let second = eslab_projection::Runner::new(
            env.feed(),
            Arc::new(relay::RelayBackend::new(env.backend())),
            Arc::new(relay::Publisher::new(&env.kafka, "second-relay", FeedFilter::All).unwrap()),
        );
        assert_eq!(second.drain().await.unwrap(), expected.events);

        let worker = env.worker(500);
        run_worker_until(&env, &worker, &expected, Duration::from_secs(60)).await;
        drain_worker(&worker).await;
        let totals = worker.totals();
        assert_eq!(totals.applied, expected.events, "{totals:?}");
        assert!(totals.duplicates >= expected.events, "{totals:?}");
        assert_read_model(&env, &expected).await;
        env.cleanup().await;
    })
    .await;
}

/// Runs the worker until two polls in a row bring nothing.
async fn drain_worker(worker: &eslab_kafka::Worker<eslab_projection::PgBackend, TallyViews>) {
    let mut quiet = 0;
    while quiet < 2 {
        let outcome = worker.run_once(Duration::from_millis(1000)).await.unwrap();
        quiet = if outcome.messages == 0 { quiet + 1 } else { 0 };
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_worker_killed_and_restarted_leaves_the_read_model_exact() {
    within(Duration::from_secs(120), async {
        // A broker of the test's own, with SQLite storage: tansu 0.6's memory
        // storage (the shared test broker's) serves a fetch only from the
        // first offset of a stored record batch, so a member resuming from a
        // committed offset inside a batch is given nothing (or skips to the
        // next batch). SQLite storage keeps records one by one and fetches
        // from any offset, as Apache Kafka does. See
        // docs/patterns/outbox-and-kafka.md.
        let broker = OwnBroker::start();
        let env = Env::on(&broker.brokers()).await;
        let expected = seed(&env.store, "w", 40, 50).await; // 2000 events
        let r = relay::relay(env.feed(), env.backend(), &env.kafka).unwrap();
        assert_eq!(r.drain().await.unwrap(), expected.events);

        // Workers of the group killed once each has joined and applied
        // batches, a few milliseconds later (inside a batch, or between a
        // batch's commit and its offset commit). The killed worker's consumer
        // then leaves the group, as a dead process's session would expire;
        // whoever comes next resumes each partition from its committed offset,
        // usually inside a record batch the relay produced.
        for millis in [0_u64, 7, 23] {
            let worker = Arc::new(env.worker(50));
            let task = {
                let worker = worker.clone();
                tokio::spawn(async move { worker.run(std::future::pending()).await })
            };
            let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
            while worker.totals().messages == 0 {
                assert!(tokio::time::Instant::now() < deadline, "worker never got messages");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            tokio::time::sleep(Duration::from_millis(millis)).await;
            task.abort();
            let _ = task.await;
            worker.leave_group();
            drop(worker);
        }
        let worker = env.worker(200);
        run_worker_until(&env, &worker, &expected, Duration::from_secs(60)).await;
        drain_worker(&worker).await;
        assert_read_model(&env, &expected).await;
        env.cleanup().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_relay_resumes_by_itself_after_the_broker_restarts() {
    within(Duration::from_secs(150), async {
        let mut broker = OwnBroker::start();
        let env = Env::on(&broker.brokers()).await;
        let mut kafka = env.kafka.clone();
        // Deliveries that fail while the broker is away fail the batch; it is published again.
        kafka.message_timeout = Duration::from_secs(5);
        let r = relay::relay(env.feed(), env.backend(), &kafka)
            .unwrap()
            .with_options(RunnerOptions { batch_size: 100, ..RunnerOptions::default() });
        let (stop_tx, mut stop) = tokio::sync::watch::channel(false);
        let relay_task = {
            let r = r.clone();
            tokio::spawn(async move {
                r.run((), async move {
                    while !*stop.borrow_and_update() {
                        let _ = stop.changed().await;
                    }
                })
                .await
            })
        };
        // A load: 30 rounds of 20 tallies of 5 events each, one every 100 ms.
        let load = {
            let store = env.store.clone();
            tokio::spawn(async move {
                let mut expected = Expected { tallies: Default::default(), events: 0 };
                for round in 0..30 {
                    let e = seed(&store, &format!("b{round}x"), 20, 5).await;
                    expected.tallies.extend(e.tallies);
                    expected.events += e.events;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                expected
            })
        };
        tokio::time::sleep(Duration::from_millis(800)).await;
        broker.stop();
        tokio::time::sleep(Duration::from_secs(2)).await;
        broker.restart();
        let expected = load.await.unwrap();

        // The relay catches up with no help. (The gap-safe feed may lag
        // behind the load for as long as a transaction elsewhere is open.)
        let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
        let end = loop {
            let page = env.store.read_feed(&FeedFilter::All, Checkpoint::START, 100_000).await.unwrap();
            if page.len() >= expected.events {
                break page;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the feed shows {} of {} events",
                page.len(),
                expected.events
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        assert_eq!(end.len(), expected.events);
        let last = end.last().unwrap().checkpoint();
        while r.checkpoint().await.unwrap() < last {
            assert!(tokio::time::Instant::now() < deadline, "relay stuck at {:?}", r.checkpoint().await);
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        stop_tx.send(true).unwrap();
        relay_task.await.unwrap().unwrap();

        let published = read_topics(&kafka, &[Tally::KIND], expected.events, Duration::from_secs(60)).await;
        assert_all_published(&expected, &published);
        drop(broker);
        env.cleanup().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn poison_messages_are_kept_aside_and_bad_events_park_their_stream() {
    within(Duration::from_secs(90), async {
        let env = Env::new().await;
        let expected = seed(&env.store, "p", 3, 3).await;
        relay::relay(env.feed(), env.backend(), &env.kafka).unwrap().drain().await.unwrap();

        // A foreign message on the topic, and an eslab event the read model
        // cannot decode (its handler fails: the stream parks).
        let producer: FutureProducer = relay::producer_config(&env.kafka).create().unwrap();
        let topic = env.kafka.topic(Tally::KIND);
        producer
            .send(FutureRecord::<str, str>::to(&topic).key("not a stream id").payload("{}"), Duration::from_secs(5))
            .await
            .unwrap();
        let ghost: eslab_core::RecordedEvent = eslab_core::RecordedEvent {
            event_id: uuid::Uuid::now_v7(),
            stream_id: Tally::stream_id("ghost").unwrap(),
            stream_version: eslab_core::Version::new(1),
            position: eslab_core::Position::new(1),
            transaction: 1,
            event_type: "Added".into(),
            schema_version: 2,
            payload: serde_json::json!({ "n": "one hundred" }),
            metadata: Metadata::now(),
            recorded_at: time::OffsetDateTime::now_utc(),
        };
        let out = eslab_kafka::message::encode(&ghost).unwrap();
        let headers: OwnedHeaders = out.headers.insert(Header { key: "x-test", value: Some("ghost") });
        producer
            .send(FutureRecord::to(&topic).key(&out.key).payload(&out.payload).headers(headers), Duration::from_secs(5))
            .await
            .unwrap();

        let worker = env.worker(100);
        run_worker_until(&env, &worker, &expected, Duration::from_secs(60)).await;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while worker.totals().dead_letters == 0 || worker.totals().parked == 0 {
            assert!(tokio::time::Instant::now() < deadline, "{:?}", worker.totals());
            worker.run_once(Duration::from_millis(200)).await.unwrap();
        }
        let letters = env.tables().dead_letters(&env.group).await.unwrap();
        assert_eq!(letters.len(), 1);
        assert!(letters[0].reason.contains("not a stream id"), "{letters:?}");
        let parked = worker.parked(None).await.unwrap();
        assert_eq!(parked.len(), 1);
        assert_eq!(parked[0].event, ghost);
        // The other streams went on.
        assert_read_model(&env, &expected).await;
        // Skipping the bad event unparks the stream.
        assert_eq!(worker.skip(&ghost.stream_id).await.unwrap(), 0);
        assert!(worker.parked(None).await.unwrap().is_empty());
        env.cleanup().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_relay_publishes_at_a_time() {
    within(Duration::from_secs(60), async {
        let env = Env::new().await;
        seed(&env.store, "l", 2, 2).await;
        let with_owner = |owner: &str| {
            relay::relay(env.feed(), env.backend(), &env.kafka)
                .unwrap()
                .with_options(RunnerOptions { owner: owner.into(), ..RunnerOptions::default() })
        };
        let (first, second) = (with_owner("one"), with_owner("two"));
        assert!(matches!(first.run_once().await.unwrap(), Outcome::Processed { events: 4, .. }));
        assert_eq!(second.run_once().await.unwrap(), Outcome::NotLeader);
        env.cleanup().await;
    })
    .await;
}

/// Records what the worker hands it (the payloads, as the projection sees them).
#[derive(Default)]
struct Recorder(std::sync::Mutex<Vec<(String, serde_json::Value)>>);

impl eslab_projection::Projection<eslab_projection::PgBackend> for Recorder {
    fn name(&self) -> &str {
        "recorder"
    }

    async fn apply(
        &self,
        _: &mut <eslab_projection::PgBackend as eslab_projection::Backend>::Tx,
        event: &eslab_core::RecordedEvent,
    ) -> Result<(), eslab_projection::HandlerError> {
        let mut seen = self.0.lock().unwrap();
        seen.push((event.stream_id.id().to_owned(), event.payload.clone()));
        Ok(())
    }
}

/// Personal data crosses Kafka sealed: the relay publishes ciphertext, a
/// worker with the store's keys opens it (forgotten subjects read as
/// forgotten), a value that does not open becomes a dead letter.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn personal_data_crosses_kafka_sealed_and_the_worker_opens_it_with_the_keys() {
    use eslab_testing::personal::{Customer, CustomerCommand};
    within(Duration::from_secs(90), async {
        let env = Env::new().await;
        let events = EventStore::new(env.store.clone());
        let customers: Repository<Customer, _> = Repository::new(events.clone());
        let tag = uuid::Uuid::new_v4().simple().to_string();
        let (kim, lou) = (format!("Kim {tag}"), format!("Lou {tag}"));
        customers.execute("kim", &CustomerCommand::Register(kim.clone()), Metadata::now()).await.unwrap();
        customers.execute("lou", &CustomerCommand::Register(lou.clone()), Metadata::now()).await.unwrap();
        // A sealed value of kim's, tampered with, on a stream of its own.
        let kim_stream = Customer::stream_id("kim").unwrap();
        let stored = env.store.read_stream(&kim_stream, eslab_core::Version::FIRST, 1).await.unwrap();
        let mut payload = stored[0].payload.clone();
        let sealed = payload["name"]["$sealed"].as_str().unwrap().to_owned();
        payload["name"]["$sealed"] = serde_json::json!(format!("{}AAAA", &sealed[..sealed.len() - 4]));
        let subject = eslab_core::Subject::of_stream(&kim_stream);
        let bad = NewEvent::new("Registered", 1, payload, Metadata::now().with_subject(subject.clone()));
        env.store.append(&Customer::stream_id("bad").unwrap(), ExpectedVersion::NoStream, vec![bad]).await.unwrap();

        relay::relay(events.clone().sealed(), env.backend(), &env.kafka).unwrap().drain().await.unwrap();
        let published = read_topics(&env.kafka, &[Customer::KIND], 3, Duration::from_secs(30)).await;
        let text = format!("{published:?}");
        assert!(!text.contains(&kim) && !text.contains(&lou), "the topic holds ciphertext only: {text}");

        // Until `records` were applied and `dead` dead-lettered.
        let run = |group: String, records: usize, dead: usize| {
            let recorder = Arc::new(Recorder::default());
            let options = eslab_kafka::WorkerOptions::new(&group, &[Customer::KIND]);
            let worker = eslab_kafka::Worker::new(&env.kafka, env.backend(), recorder.clone(), options)
                .unwrap()
                .with_keys(env.store.key_store());
            async move {
                let deadline = tokio::time::Instant::now() + Duration::from_secs(45);
                while recorder.0.lock().unwrap().len() < records || worker.totals().dead_letters < dead {
                    assert!(tokio::time::Instant::now() < deadline, "{:?}", worker.totals());
                    worker.run_once(Duration::from_millis(200)).await.unwrap();
                }
                let seen: std::collections::BTreeMap<String, serde_json::Value> =
                    recorder.0.lock().unwrap().iter().map(|(id, p)| (id.clone(), p["name"].clone())).collect();
                (seen, worker.totals().dead_letters)
            }
        };
        let (seen, dead) = run(format!("{}-a", env.group), 2, 1).await;
        assert_eq!(seen["kim"], serde_json::json!({ "$personal": kim }));
        assert_eq!(seen["lou"], serde_json::json!({ "$personal": lou }));
        assert!(!seen.contains_key("bad") && dead == 1, "the tampered value is a dead letter: {seen:?}");

        events.forget(&subject, "test").await.unwrap();
        // Without the key nothing opens, tampered or not: both read as forgotten.
        let (seen, _) = run(format!("{}-b", env.group), 3, 0).await;
        assert_eq!(seen["kim"], serde_json::json!({ "$forgotten": true }), "read again after forgetting");
        assert_eq!(seen["bad"], serde_json::json!({ "$forgotten": true }));
        assert_eq!(seen["lou"], serde_json::json!({ "$personal": lou }));
        env.cleanup().await;
    })
    .await;
}
