//! Faults of a cluster of the test's own: the stream's leader killed
//! (`SIGKILL`) under a load of appends from several writers and restarted;
//! a follower killed and restarted.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use eslab_core::{
    Checkpoint, Error, EventAppender, EventReader, EventReaderExt, ExpectedVersion, FeedFilter, Metadata, NewEvent,
    RecordedEvent, StreamId, Version,
};
use eslab_nats::NatsStore;
use eslab_testing::block_on;
use eslab_testing::nats::{Cluster, fresh_options, open};
use futures_util::TryStreamExt;
use serde_json::json;

/// What one writer saw.
#[derive(Debug, Default)]
struct Tally {
    /// Acknowledged appends: (stream, version) -> event id.
    acked: HashMap<(StreamId, u64), uuid::Uuid>,
    conflicts: usize,
    unavailable: usize,
}

const WRITERS: usize = 4;
const PER_WRITER: usize = 150;

/// One writer: `PER_WRITER` acknowledged one-event appends, each at the
/// version it read, over two streams of its own and one all writers share;
/// a conflict or an unavailable cluster is retried after reading again.
async fn writer(store: NatsStore, w: usize, errors: Arc<AtomicUsize>) -> Tally {
    let streams = [
        StreamId::new("fault", &format!("w{w}-a")).unwrap(),
        StreamId::new("fault", &format!("w{w}-b")).unwrap(),
        StreamId::new("fault", "shared").unwrap(),
    ];
    let mut tally = Tally::default();
    let mut n = 0u64;
    while tally.acked.len() < PER_WRITER {
        n += 1;
        let stream = &streams[(n % 3) as usize];
        let (version, unavailable) = retry_unavailable(Duration::from_secs(240), || store.stream_version(stream)).await;
        tally.unavailable += unavailable;
        let version = version.unwrap_or_else(|e| panic!("writer {w}: read failed with {e:?}"));
        let event = NewEvent::new("Tick", 1, json!({ "w": w, "n": n }), Metadata::now());
        let id = event.event_id;
        match store.append(stream, ExpectedVersion::Exact(version), vec![event]).await {
            Ok(done) => {
                let previous = tally.acked.insert((stream.clone(), done.version.get()), id);
                assert!(previous.is_none(), "writer {w}: {stream} version {} acknowledged twice", done.version);
            }
            Err(Error::Conflict { .. }) => tally.conflicts += 1,
            Err(e) if e.is_unavailable() => {
                tally.unavailable += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => {
                errors.fetch_add(1, Ordering::SeqCst);
                panic!("writer {w}: an append failed with an untyped error: {e:?}");
            }
        }
    }
    tally
}

/// Runs `op` until it answers anything but `Unavailable` (a server killed or
/// just restarted, a leader being elected), 50 ms apart, for at most
/// `within`; its last answer, and how many answers were `Unavailable`.
async fn retry_unavailable<T, F: Future<Output = Result<T, Error>>>(
    within: Duration,
    mut op: impl FnMut() -> F,
) -> (Result<T, Error>, usize) {
    let deadline = Instant::now() + within;
    let mut unavailable = 0;
    loop {
        match op().await {
            Err(e) if e.is_unavailable() && Instant::now() < deadline => {
                unavailable += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            answer => return (answer, unavailable),
        }
    }
}

/// Appends `events` to `stream` at `expected`, retried while the cluster is
/// unavailable (within 30 s). A try whose answer was lost may have landed, so
/// each try reads the stream first and stops when it is at `landed`.
async fn append_once(
    store: &NatsStore,
    stream: &StreamId,
    expected: ExpectedVersion,
    events: Vec<NewEvent>,
    landed: Version,
) {
    let events = &events;
    let (answer, _) = retry_unavailable(Duration::from_secs(30), || async move {
        if store.stream_version(stream).await? == landed {
            return Ok(());
        }
        store.append(stream, expected, events.clone()).await.map(drop)
    })
    .await;
    answer.unwrap_or_else(|e| panic!("append to {stream} at {expected:?}: {e:?}"));
}

/// Waits until the cluster names a leader for `stream`.
fn wait_for_leader(cluster: &Cluster, stream: &str) -> usize {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(leader) = cluster.leader_of(stream) {
            return leader;
        }
        assert!(Instant::now() < deadline, "no leader for {stream} within 60 s");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Every acknowledged (stream, version) is in the feed exactly once with its
/// event; versions per stream are gap-free from 1; positions strictly
/// increase; no event id appears twice.
fn check_history(feed: &[RecordedEvent], acked: &HashMap<(StreamId, u64), uuid::Uuid>) {
    let mut last_position = 0;
    let mut versions: HashMap<&StreamId, u64> = HashMap::new();
    let mut ids = HashSet::new();
    let mut at: HashMap<(StreamId, u64), uuid::Uuid> = HashMap::new();
    for e in feed {
        assert!(e.position.get() > last_position, "positions strictly increase");
        last_position = e.position.get();
        let v = versions.entry(&e.stream_id).or_default();
        assert_eq!(e.stream_version.get(), *v + 1, "{} versions are gap-free", e.stream_id);
        *v += 1;
        assert!(ids.insert(e.event_id), "event {} stored twice", e.event_id);
        at.insert((e.stream_id.clone(), e.stream_version.get()), e.event_id);
    }
    for (key, id) in acked {
        assert_eq!(at.get(key), Some(id), "acknowledged {} version {} is stored with its event", key.0, key.1);
    }
}

#[test]
fn leader_killed_under_load_loses_no_acknowledged_append() {
    let mut cluster = Cluster::start();
    let options = fresh_options(&cluster.url(), 3).request_timeout(Duration::from_secs(2));
    let name = unique(&options);
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(4).enable_all().build().unwrap();
    let store = runtime.block_on(open(options));
    let leader = wait_for_leader(&cluster, &name);
    let errors = Arc::new(AtomicUsize::new(0));
    let writers: Vec<_> = (0..WRITERS).map(|w| runtime.spawn(writer(store.clone(), w, errors.clone()))).collect();
    // Let the load run, kill the leader mid-stream, keep it down for a while.
    std::thread::sleep(Duration::from_millis(1500));
    cluster.kill(leader);
    let killed_at = Instant::now();
    std::thread::sleep(Duration::from_secs(3));
    cluster.restart(leader);
    let tallies: Vec<Tally> = runtime.block_on(async {
        let mut out = Vec::new();
        for w in writers {
            out.push(tokio::time::timeout(Duration::from_secs(240), w).await.expect("writers finish").expect("writer"));
        }
        out
    });
    let new_leader = wait_for_leader(&cluster, &name);
    let acked: HashMap<_, _> = tallies.iter().flat_map(|t| t.acked.clone()).collect();
    let (conflicts, unavailable): (usize, usize) =
        tallies.iter().fold((0, 0), |(c, u), t| (c + t.conflicts, u + t.unavailable));
    eprintln!(
        "leader n{leader} killed {:.1} s ago, new leader n{new_leader}; {} acknowledged, {conflicts} conflicts, {unavailable} unavailable",
        killed_at.elapsed().as_secs_f64(),
        acked.len()
    );
    assert_eq!(acked.len(), WRITERS * PER_WRITER);
    assert_eq!(errors.load(Ordering::SeqCst), 0);
    let feed: Vec<RecordedEvent> =
        runtime.block_on(store.feed(&FeedFilter::All, Checkpoint::START).try_collect()).expect("read the feed");
    check_history(&feed, &acked);
    // Appends go on without restarting the writers' store: as the writers do,
    // an append that finds the stream unavailable (a server that just came
    // back, not yet answering for it) is retried, within a bound.
    let stream = StreamId::new("fault", "after").unwrap();
    let event = NewEvent::new("Tick", 1, json!({}), Metadata::now());
    runtime.block_on(append_once(&store, &stream, ExpectedVersion::NoStream, vec![event], Version::new(1)));
}

#[test]
fn a_killed_follower_catches_up_after_restart() {
    let mut cluster = Cluster::start();
    let options = fresh_options(&cluster.url(), 3).request_timeout(Duration::from_secs(5));
    let name = unique(&options);
    block_on(async {
        let store = open(options).await;
        let leader = wait_for_leader(&cluster, &name);
        let follower = (leader + 1) % 3;
        let stream = StreamId::new("fault", "follow").unwrap();
        let batch = |from: u64| (from..from + 50).map(|n| NewEvent::new("Tick", 1, json!({ "n": n }), Metadata::now()));
        store.append(&stream, ExpectedVersion::NoStream, batch(0).collect()).await.unwrap();
        cluster.kill(follower);
        // The client may have been connected to the killed server: its
        // requests time out until it reconnects, so appends are retried.
        for round in 1..5u64 {
            let (from, to) = (Version::new(round * 50), Version::new(round * 50 + 50));
            append_once(&store, &stream, ExpectedVersion::Exact(from), batch(round * 50).collect(), to).await;
        }
        cluster.restart(follower);
        let deadline = Instant::now() + Duration::from_secs(60);
        let caught_up = Arc::new(AtomicBool::new(false));
        while Instant::now() < deadline {
            if cluster.last_seq_on(follower, &name) == Some(250) {
                caught_up.store(true, Ordering::SeqCst);
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(caught_up.load(Ordering::SeqCst), "follower n{follower} holds all 250 events within 60 s");
        let read = store.read_stream(&stream, Version::FIRST, 1000).await.unwrap();
        assert_eq!(read.len(), 250);
    });
}

/// The JetStream stream name a fresh store uses.
fn unique(options: &eslab_nats::NatsOptions) -> String {
    options.stream_name().to_owned()
}
