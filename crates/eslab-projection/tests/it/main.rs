//! The projection runner on the memory store and memory backend.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use eslab_core::{EventAppender, ExpectedVersion, Metadata, NewEvent, RecordedEvent, StreamId};

#[cfg(all(feature = "postgres", feature = "sqlite"))]
mod inline;
mod lag;
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
    for round in 0..per_stream {
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
fn runner(store: &MemoryStore, backend: &MemoryBackend, batch: usize) -> Runner<MemoryStore, MemoryBackend, Tally> {
    runner_as(store, backend, batch, "worker-1")
}

fn runner_as(
    store: &MemoryStore,
    backend: &MemoryBackend,
    batch: usize,
    owner: &str,
) -> Runner<MemoryStore, MemoryBackend, Tally> {
    Runner::new(store.clone(), Arc::new(backend.clone()), Arc::new(Tally)).with_options(RunnerOptions {
        batch_size: batch,
        owner: owner.to_owned(),
        ..RunnerOptions::default()
    })
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
    let r = Runner::new(store.clone(), Arc::new(backend.clone()), flaky.clone());
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
    let r = Runner::new(store.clone(), Arc::new(backend.clone()), Arc::new(Tally)).with_options(RunnerOptions {
        max_idle_poll: Duration::from_secs(3600), // only the signal can wake it
        ..RunnerOptions::default()
    });
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
