//! The projection runner on the memory store and memory backend.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use eslab_core::{
    EventAppender, EventStore, ExpectedVersion, Metadata, NewEvent, RecordedEvent, StreamId, Upcasters, WakeUps,
};

#[cfg(all(feature = "postgres", feature = "sqlite"))]
mod inline;
mod lag;
#[cfg(all(feature = "postgres", feature = "sqlite"))]
mod rebuild;
#[cfg(all(feature = "postgres", feature = "sqlite"))]
mod sql;
use eslab_memory::MemoryStore;
use eslab_projection::memory::{MemoryBackend, MemoryTx};
use eslab_projection::{HandlerError, Outcome, Projection, Runner, RunnerOptions};
use serde_json::json;

/// Per stream: the last version seen and the sum of `n`; refuses gaps and
/// events whose payload says `poison`.
struct Tally;

impl Projection<MemoryBackend> for Tally {
    fn name(&self) -> &str {
        "tally"
    }

    async fn apply(&self, tx: &mut MemoryTx, event: &RecordedEvent) -> Result<(), HandlerError> {
        tokio::task::yield_now().await; // give aborts a place to land mid-batch
        if event.payload["poison"] == json!(true) {
            return Err(HandlerError::new("poison"));
        }
        let key = event.stream_id.as_str();
        let doc = tx.get("tally", key).unwrap_or_else(|| json!({ "version": 0, "sum": 0 }));
        let last = doc["version"].as_u64().unwrap_or(0);
        if event.stream_version.get() != last + 1 {
            return Err(HandlerError::new(format!("gap: saw {last}, got {}", event.stream_version)));
        }
        let sum = doc["sum"].as_u64().unwrap_or(0) + event.payload["n"].as_u64().unwrap_or(0);
        tx.put("tally", key, json!({ "version": event.stream_version.get(), "sum": sum }));
        Ok(())
    }
}

fn stream(i: u64) -> StreamId {
    StreamId::new("acc", &i.to_string()).unwrap()
}

async fn seed(store: &MemoryStore, streams: u64, per_stream: u64) {
    seed_rounds(store, streams, 0..per_stream).await;
}

/// Rounds `rounds` of [`seed`] (round `r` adds `n = r + 1` to every stream), so
/// that seeding in steps adds up to the sums [`assert_exact`] expects.
async fn seed_rounds(store: &MemoryStore, streams: u64, rounds: std::ops::Range<u64>) {
    for round in rounds {
        for s in 0..streams {
            let e = NewEvent::new("Counted", 1, json!({ "n": round + 1 }), Metadata::now());
            store.append(&stream(s), ExpectedVersion::Any, vec![e]).await.unwrap();
        }
    }
}

fn expected_sum(per_stream: u64) -> u64 {
    per_stream * (per_stream + 1) / 2
}

fn assert_exact(backend: &MemoryBackend, streams: u64, per_stream: u64) {
    let table = backend.table("tally");
    assert_eq!(table.len() as u64, streams);
    for s in 0..streams {
        let doc = &table[stream(s).as_str()];
        assert_eq!(doc["version"], json!(per_stream), "stream {s}");
        assert_eq!(doc["sum"], json!(expected_sum(per_stream)), "stream {s}: no event applied twice or lost");
    }
}

/// A runner with a stable owner, as a restarted process would have: a crashed
/// runner's lease would otherwise block its successor until it expires.
fn runner(
    store: &MemoryStore,
    backend: &MemoryBackend,
    batch: usize,
) -> Runner<EventStore<MemoryStore>, MemoryBackend, Tally> {
    runner_as(store, backend, batch, "worker-1")
}

fn runner_as(
    store: &MemoryStore,
    backend: &MemoryBackend,
    batch: usize,
    owner: &str,
) -> Runner<EventStore<MemoryStore>, MemoryBackend, Tally> {
    Runner::new(EventStore::new(store.clone()), Arc::new(backend.clone()), Arc::new(Tally))
        .with_options(RunnerOptions { batch_size: batch, owner: owner.to_owned(), ..RunnerOptions::default() })
}

#[tokio::test]
async fn catches_up_in_batches_and_checkpoints() {
    let (store, backend) = (MemoryStore::new(), MemoryBackend::new());
    seed(&store, 10, 30).await;
    let r = runner(&store, &backend, 37);
    let mut batches = 0;
    loop {
        match r.run_once().await.unwrap() {
            Outcome::Processed { events, parked, .. } => {
                assert!(events <= 37);
                assert_eq!(parked, 0);
                batches += 1;
            }
            Outcome::Idle => break,
            Outcome::NotLeader => panic!("sole runner must lead"),
        }
    }
    assert_eq!(batches, 300usize.div_ceil(37));
    assert_exact(&backend, 10, 30);
    assert_eq!(r.checkpoint().await.unwrap().position.get(), 300);
    assert_eq!(r.run_once().await.unwrap(), Outcome::Idle);
}

#[tokio::test]
async fn a_crash_mid_batch_never_loses_or_doubles_an_event() {
    let (store, backend) = (MemoryStore::new(), MemoryBackend::new());
    seed(&store, 7, 40).await;
    // Abort the runner at many points; each restart resumes from the checkpoint.
    for (i, ms) in [0u64, 1, 2, 3, 5, 8, 13].into_iter().cycle().take(40).enumerate() {
        let r = runner(&store, &backend, 23 + i);
        let task = tokio::spawn(async move { r.drain().await });
        tokio::time::sleep(Duration::from_micros(ms * 150)).await;
        task.abort();
        let _ = task.await;
    }
    runner(&store, &backend, 50).drain().await.unwrap();
    assert_exact(&backend, 7, 40);
}

#[tokio::test]
async fn a_failing_event_parks_its_stream_only() {
    let (store, backend) = (MemoryStore::new(), MemoryBackend::new());
    seed(&store, 3, 2).await;
    let poison = NewEvent::new("Counted", 1, json!({ "n": 100, "poison": true }), Metadata::now());
    store.append(&stream(1), ExpectedVersion::Any, vec![poison]).await.unwrap();
    seed(&store, 3, 1).await; // one more event on every stream, after the poison
    let r = runner(&store, &backend, 4);
    r.drain().await.unwrap();
    let table = backend.table("tally");
    assert_eq!(table["acc-0"]["version"], json!(3), "other streams go on");
    assert_eq!(table["acc-2"]["version"], json!(3));
    assert_eq!(table["acc-1"]["version"], json!(2), "the parked stream stops before the poison");
    let parked = backend_parked(&backend).await;
    assert_eq!(parked, [(3, "poison".to_owned()), (4, "stream parked".to_owned())]);

    // Retrying fails while the event is still poison, and changes nothing.
    assert!(r.retry(&stream(1)).await.is_err());
    assert_eq!(backend.table("tally")["acc-1"]["version"], json!(2));
    // Skipping drops the poison event; the rest of the stream then fails on the gap it leaves...
    assert!(r.skip(&stream(1)).await.is_err());
    assert_eq!(backend_parked(&backend).await.len(), 1);
    // ...which is this projection's own rule; a stream with only poison to skip resumes fully.
    let s9 = stream(9);
    store
        .append(
            &s9,
            ExpectedVersion::Any,
            vec![NewEvent::new("Counted", 1, json!({ "poison": true }), Metadata::now())],
        )
        .await
        .unwrap();
    r.drain().await.unwrap();
    assert_eq!(r.skip(&s9).await.unwrap(), 0);
    assert!(eslab_projection::Backend::parked(&backend, "tally", Some(&s9)).await.unwrap().is_empty());
}

async fn backend_parked(backend: &MemoryBackend) -> Vec<(u64, String)> {
    eslab_projection::Backend::parked(backend, "tally", Some(&stream(1)))
        .await
        .unwrap()
        .into_iter()
        .map(|p| (p.event.stream_version.get(), p.reason))
        .collect()
}

#[tokio::test]
async fn retry_applies_parked_events_in_order_once_the_handler_accepts_them() {
    let (store, backend) = (MemoryStore::new(), MemoryBackend::new());
    // A projection that refuses events until a flag flips.
    struct Flaky(std::sync::atomic::AtomicBool);
    impl Projection<MemoryBackend> for Flaky {
        fn name(&self) -> &str {
            "flaky"
        }
        async fn apply(&self, tx: &mut MemoryTx, event: &RecordedEvent) -> Result<(), HandlerError> {
            if event.payload["n"] == json!(2) && !self.0.load(std::sync::atomic::Ordering::SeqCst) {
                return Err(HandlerError::new("not yet"));
            }
            let key = event.stream_id.as_str();
            let mut seen = tx.get("seen", key).unwrap_or_else(|| json!([]));
            seen.as_array_mut().unwrap().push(json!(event.stream_version.get()));
            tx.put("seen", key, seen);
            Ok(())
        }
    }
    seed(&store, 2, 4).await;
    let flaky = Arc::new(Flaky(false.into()));
    let r = Runner::new(EventStore::new(store.clone()), Arc::new(backend.clone()), flaky.clone());
    r.drain().await.unwrap();
    assert_eq!(backend.table("seen")["acc-0"], json!([1]));
    flaky.0.store(true, std::sync::atomic::Ordering::SeqCst);
    assert_eq!(r.retry(&stream(0)).await.unwrap(), 3);
    assert_eq!(backend.table("seen")["acc-0"], json!([1, 2, 3, 4]), "parked events applied in order");
    assert_eq!(backend.table("seen")["acc-1"], json!([1]), "retry is per stream");
    store
        .append(&stream(0), ExpectedVersion::Any, vec![NewEvent::new("Counted", 1, json!({ "n": 5 }), Metadata::now())])
        .await
        .unwrap();
    r.drain().await.unwrap();
    assert_eq!(backend.table("seen")["acc-0"], json!([1, 2, 3, 4, 5]), "the stream goes on after a retry");
}

#[tokio::test]
async fn partitions_keep_stream_order_and_agree_with_a_single_runner() {
    for partitions in [2u16, 4, 8] {
        let (store, backend) = (MemoryStore::new(), MemoryBackend::new());
        seed(&store, 25, 12).await;
        let r = runner(&store, &backend, 64).partitioned(partitions);
        r.drain().await.unwrap();
        assert_exact(&backend, 25, 12);
        assert_eq!(r.checkpoint().await.unwrap().position.get(), 300);
        assert!(eslab_projection::Backend::parked(&backend, "tally", None).await.unwrap().is_empty(), "no gaps seen");
    }
}

#[tokio::test]
async fn a_crashed_partitioned_runner_resumes_exactly() {
    let (store, backend) = (MemoryStore::new(), MemoryBackend::new());
    seed(&store, 16, 25).await;
    for ms in [0u64, 1, 2, 3, 4, 6, 9, 12, 15, 20] {
        let r = runner(&store, &backend, 40).partitioned(4);
        let task = tokio::spawn(async move { r.drain().await });
        tokio::time::sleep(Duration::from_micros(ms * 200)).await;
        task.abort();
        let _ = task.await;
    }
    runner(&store, &backend, 40).partitioned(4).drain().await.unwrap();
    assert_exact(&backend, 16, 25);
}

#[tokio::test]
async fn one_runner_per_projection_by_lease() {
    let (store, backend) = (MemoryStore::new(), MemoryBackend::new());
    seed(&store, 1, 3).await;
    let a = runner_as(&store, &backend, 10, "a");
    let b = runner_as(&store, &backend, 10, "b");
    assert!(matches!(a.run_once().await.unwrap(), Outcome::Processed { .. }));
    assert_eq!(b.run_once().await.unwrap(), Outcome::NotLeader);
    assert!(b.drain().await.is_err());
}

#[tokio::test]
async fn live_mode_wakes_on_a_signal_and_stops_on_shutdown() {
    let (store, backend) = (MemoryStore::new(), MemoryBackend::new());
    let (signal, wakeup) = tokio::sync::watch::channel(0u64);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let r = Runner::new(EventStore::new(store.clone()), Arc::new(backend.clone()), Arc::new(Tally)).with_options(
        RunnerOptions {
            max_idle_poll: Duration::from_secs(3600), // only the signal can wake it
            ..RunnerOptions::default()
        },
    );
    let task = tokio::spawn(async move {
        r.run(wakeup, async {
            let _ = stopped.await;
        })
        .await
    });
    tokio::time::sleep(Duration::from_millis(100)).await; // let it go idle
    seed(&store, 2, 3).await;
    signal.send_modify(|n| *n += 1);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while backend.table("tally").len() < 2 || backend.table("tally")["acc-1"]["version"] != json!(3) {
        assert!(tokio::time::Instant::now() < deadline, "the runner did not wake");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.send(()).unwrap();
    task.await.unwrap().unwrap();
    // The lease was released: another owner can take over at once.
    let other = runner_as(&store, &backend, 10, "someone-else");
    assert_eq!(other.run_once().await.unwrap(), Outcome::Idle);
}

/// `Counted` v1 carried `{"amount": n}`; v2 (what `Tally` reads) carries `{"n": n}`.
fn counted_v1_to_v2() -> Upcasters {
    Upcasters::new()
        .register("Counted", 1, 2, |p| {
            let n = p.get("amount").cloned().ok_or("no amount")?;
            Ok(json!({ "n": n }))
        })
        .unwrap()
}

/// Issue 16, defect 2: the runner reads through the upcasting `EventStore`
/// (a raw store does not compile, see the `compile_fail` example on
/// `Runner::new`), so old events reach the handler at their current version.
#[tokio::test]
async fn an_upcast_event_reaches_the_projection() {
    let (store, backend) = (MemoryStore::new(), MemoryBackend::new());
    for n in 1..=4 {
        let old = NewEvent::new("Counted", 1, json!({ "amount": n }), Metadata::now());
        store.append(&stream(0), ExpectedVersion::Any, vec![old]).await.unwrap();
    }
    let feed = EventStore::new(store.clone()).with_upcasters(counted_v1_to_v2());
    let r = Runner::new(feed, Arc::new(backend.clone()), Arc::new(Tally));
    assert_eq!(r.drain().await.unwrap(), 4);
    assert_eq!(backend.table("tally")["acc-0"], json!({ "version": 4, "sum": 10 }), "every v1 event applied as v2");
    assert!(eslab_projection::Backend::parked(&backend, "tally", None).await.unwrap().is_empty());
}

/// Issue 16, defect 3: a drained runner releases its lease, so a runner of
/// another owner takes over at once. Both leases last an hour: the second
/// runner cannot get in by waiting one out.
#[tokio::test]
async fn a_drained_runner_hands_the_lease_over_at_once() {
    let (store, backend) = (MemoryStore::new(), MemoryBackend::new());
    seed(&store, 3, 2).await;
    let with_owner = |owner: &str| {
        runner_as(&store, &backend, 10, owner).with_options(RunnerOptions {
            owner: owner.into(),
            lease_ttl: HOUR,
            ..RunnerOptions::default()
        })
    };
    assert_eq!(with_owner("a").drain().await.unwrap(), 6);
    seed_rounds(&store, 3, 2..3).await;
    let b = with_owner("b");
    assert_eq!(b.drain().await.unwrap(), 3, "b took the lease a released");
    assert_exact(&backend, 3, 3);
    assert!(eslab_projection::Backend::lease(&backend, "tally").await.unwrap().is_none(), "b released it too");
}

const HOUR: Duration = Duration::from_secs(3600);

/// Issue 16, deliverable 3: `stop()` on a spawned runner drains what was
/// committed before the stop and releases the lease.
#[tokio::test]
async fn a_spawned_runner_stops_by_draining_and_releasing_its_lease() {
    let (store, backend) = (MemoryStore::new(), MemoryBackend::new());
    seed(&store, 5, 6).await;
    let a = runner_as(&store, &backend, 5, "a").with_options(RunnerOptions {
        batch_size: 5,
        owner: "a".into(),
        lease_ttl: HOUR,
        max_idle_poll: HOUR, // no wake-up and no poll: only the stop's drain can apply the rest
        ..RunnerOptions::default()
    });
    // Stopped before its task first runs (one thread): the loop applies its
    // first batch, sees the stop, and the drain applies the other 25 events.
    let drained = a.spawn(()).stop().await.unwrap();
    assert_eq!(drained, 25);
    assert_exact(&backend, 5, 6);
    assert!(eslab_projection::Backend::lease(&backend, "tally").await.unwrap().is_none(), "lease released");
    seed_rounds(&store, 5, 6..7).await;
    let b = runner_as(&store, &backend, 50, "b").with_options(RunnerOptions {
        owner: "b".into(),
        lease_ttl: HOUR,
        ..RunnerOptions::default()
    });
    assert!(matches!(b.run_once().await.unwrap(), Outcome::Processed { events: 5, .. }));
    // A standby stops cleanly too: the lease is b's, nothing of its own to drain.
    let standby = runner_as(&store, &backend, 5, "c");
    assert_eq!(standby.spawn(()).stop().await.unwrap(), 0);
    assert_eq!(eslab_projection::Backend::lease(&backend, "tally").await.unwrap().unwrap().owner, "b");
}

use eslab_testing::logs::Captured;

/// Issue 16, defect 3: a runner kept out by another owner's lease says so,
/// once per holder, with the holder and the lease's end; and when it takes over.
#[tokio::test]
async fn waiting_on_another_owners_lease_is_logged_once() {
    let (store, backend) = (MemoryStore::new(), MemoryBackend::new());
    seed(&store, 2, 2).await;
    let logs = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer({
            let logs = logs.clone();
            move || logs.clone()
        })
        .with_ansi(false)
        .with_max_level(tracing::Level::INFO)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let holder = runner_as(&store, &backend, 1, "holder-1");
    assert!(matches!(holder.run_once().await.unwrap(), Outcome::Processed { .. }));
    let waiting = runner_as(&store, &backend, 10, "waiting");
    for _ in 0..3 {
        assert_eq!(waiting.run_once().await.unwrap(), Outcome::NotLeader);
    }
    let until = eslab_projection::Backend::lease(&backend, "tally").await.unwrap().unwrap().until;
    let told = logs.lines_with("another owner holds the projection's lease");
    assert_eq!(told.len(), 1, "once per holder: {told:?}");
    // (The memory backend shows its monotonic deadline as wall-clock time anew on each read.)
    assert!(told[0].contains("holder=holder-1") && told[0].contains(&format!("until={}", until.date())), "{}", told[0]);

    // A new holder is news again.
    holder.drain().await.unwrap();
    let other = runner_as(&store, &backend, 1, "holder-2");
    seed(&store, 1, 1).await;
    assert!(matches!(other.run_once().await.unwrap(), Outcome::Processed { .. }));
    assert_eq!(waiting.run_once().await.unwrap(), Outcome::NotLeader);
    assert_eq!(waiting.run_once().await.unwrap(), Outcome::NotLeader);
    let told = logs.lines_with("another owner holds the projection's lease");
    assert_eq!(told.len(), 2, "{told:?}");
    assert!(told[1].contains("holder=holder-2"), "{}", told[1]);

    other.drain().await.unwrap();
    assert_eq!(waiting.drain().await.unwrap(), 0);
    assert_eq!(logs.lines_with("took over the projection's lease").len(), 1);
}

/// Issue 16, deliverable 3: a handler's error keeps its cause, through the
/// runner's errors (a transient failure, a failed retry).
#[tokio::test]
async fn handler_errors_keep_their_source() {
    use std::error::Error as _;
    struct Failing;
    impl Projection<MemoryBackend> for Failing {
        fn name(&self) -> &str {
            "failing"
        }
        async fn apply(&self, _: &mut MemoryTx, event: &RecordedEvent) -> Result<(), HandlerError> {
            let cause = std::io::Error::other("disk on fire");
            if event.payload["n"] == json!(1) {
                Err(HandlerError::transient("cannot write").with_source(cause))
            } else {
                Err(HandlerError::new("cannot write").with_source(cause))
            }
        }
    }
    let cause_of = |e: &eslab_projection::Error| {
        let handler = e.source().and_then(|s| s.downcast_ref::<HandlerError>()).expect("a handler error");
        handler.source().and_then(|s| s.downcast_ref::<std::io::Error>()).map(ToString::to_string)
    };
    let (store, backend) = (MemoryStore::new(), MemoryBackend::new());
    seed(&store, 1, 1).await;
    let r = Runner::new(EventStore::new(store.clone()), Arc::new(backend.clone()), Arc::new(Failing));
    let transient = r.run_once().await.unwrap_err();
    assert!(matches!(transient, eslab_projection::Error::Transient { .. }), "{transient}");
    assert_eq!(cause_of(&transient).as_deref(), Some("disk on fire"));

    // Permanent: the stream is parked; retrying it fails with the same cause.
    let (store, backend) = (MemoryStore::new(), MemoryBackend::new());
    store
        .append(&stream(0), ExpectedVersion::Any, vec![NewEvent::new("Counted", 1, json!({ "n": 2 }), Metadata::now())])
        .await
        .unwrap();
    let r = Runner::new(EventStore::new(store.clone()), Arc::new(backend.clone()), Arc::new(Failing));
    r.drain().await.unwrap();
    let retried = r.retry(&stream(0)).await.unwrap_err();
    assert!(matches!(retried, eslab_projection::Error::RetryFailed { .. }), "{retried}");
    assert_eq!(cause_of(&retried).as_deref(), Some("disk on fire"));
}

/// Records the size of every batch it is given.
#[derive(Clone, Default)]
struct Batches(Arc<std::sync::Mutex<Vec<usize>>>);

impl Batches {
    fn sizes(&self) -> Vec<usize> {
        self.0.lock().unwrap().clone()
    }
}

impl Projection<MemoryBackend> for Batches {
    fn name(&self) -> &str {
        "batches"
    }

    async fn apply(&self, _tx: &mut MemoryTx, _event: &RecordedEvent) -> Result<(), HandlerError> {
        Ok(())
    }

    async fn apply_all(&self, _tx: &mut MemoryTx, events: &[&RecordedEvent]) -> Result<(), (usize, HandlerError)> {
        self.0.lock().unwrap().push(events.len());
        Ok(())
    }
}

fn lingering(
    store: &MemoryStore,
    batches: &Batches,
    batch_size: usize,
    linger: Duration,
) -> Runner<EventStore<MemoryStore>, MemoryBackend, Batches> {
    Runner::new(EventStore::new(store.clone()), Arc::new(MemoryBackend::new()), Arc::new(batches.clone())).with_options(
        RunnerOptions { batch_size, linger, max_idle_poll: HOUR, lease_ttl: HOUR, ..RunnerOptions::default() },
    )
}

/// `RunnerOptions::linger`: appends that arrive one by one, each waking the
/// runner, within the linger after the first wake-up reach the projection
/// as one batch (without lingering, each would be a batch of its own; one
/// more batch is allowed for a poll that found the first append alone).
#[tokio::test]
async fn a_lingering_runner_reads_appends_that_arrive_one_by_one_in_one_batch() {
    let store = MemoryStore::new();
    let batches = Batches::default();
    let running = lingering(&store, &batches, 100, Duration::from_secs(3)).spawn(store.wake_ups().await);
    tokio::time::sleep(Duration::from_millis(50)).await; // the runner has seen an empty feed and waits
    for s in 0..10 {
        let e = NewEvent::new("Counted", 1, json!({ "n": 1 }), Metadata::now());
        store.append(&stream(s), ExpectedVersion::Any, vec![e]).await.unwrap();
        tokio::time::sleep(Duration::from_millis(10)).await; // the runner wakes up in between
    }
    for _ in 0..200 {
        if batches.sizes().iter().sum::<usize>() == 10 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let sizes = batches.sizes();
    assert_eq!(sizes.iter().sum::<usize>(), 10, "every append applied once: {sizes:?}");
    assert!(sizes.len() <= 2, "the appends of the linger were read together: {sizes:?}");
    assert_eq!(running.stop().await.unwrap(), 0);
}

/// A backlog never lingers: full batches follow each other at once (only the
/// last, partial one waits), and a stop cuts a linger short, draining first.
#[tokio::test]
async fn a_lingering_runner_follows_a_backlog_at_once_and_stops_without_waiting_out_its_linger() {
    let store = MemoryStore::new();
    seed(&store, 3, 4).await; // 12 events
    let batches = Batches::default();
    let running = lingering(&store, &batches, 5, HOUR).spawn(store.wake_ups().await);
    for _ in 0..200 {
        if batches.sizes().iter().sum::<usize>() == 12 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(batches.sizes(), vec![5, 5, 2], "the full batches did not wait an hour");
    // Now lingering for an hour after its partial batch: an append wakes it into another hour's linger.
    seed_rounds(&store, 1, 4..5).await;
    let stopped = tokio::time::timeout(Duration::from_secs(30), running.stop()).await;
    assert_eq!(stopped.expect("the stop did not wait out the linger").unwrap(), 1, "the stop drained the append");
    assert_eq!(batches.sizes(), vec![5, 5, 2, 1]);
}
