//! What only the JetStream store promises: its subject mapping, its limits,
//! wake-ups across processes and its errors.

use std::time::Duration;

use eslab_core::{
    Checkpoint, Error, EventAppender, EventReader, ExpectedVersion, FeedFilter, Metadata, NewEvent, StreamId, Version,
    WakeUps,
};
use eslab_nats::{MAX_APPEND_EVENTS, NatsOptions, NatsStore};
use eslab_testing::block_on;
use eslab_testing::nats::{JetStreamStore, open};
use futures_util::StreamExt;
use serde_json::json;

fn event(n: u64) -> NewEvent {
    NewEvent::new("Counted", 1, json!({ "n": n }), Metadata::now())
}

/// Ids that hold subject syntax (`.`, `*`, `>`, spaces, the escape `=`) each
/// get a stream of their own, and round-trip.
#[test]
fn ids_with_subject_syntax_stay_apart() {
    block_on(async {
        let store = JetStreamStore::new().await;
        let ids = ["a.b", "a=2Eb", "*", ">", "a b", "ünï 🦀", "a", "a.*"];
        for (n, id) in ids.iter().enumerate() {
            let stream = StreamId::new("test", id).unwrap();
            store.append(&stream, ExpectedVersion::NoStream, vec![event(n as u64)]).await.unwrap();
        }
        for (n, id) in ids.iter().enumerate() {
            let stream = StreamId::new("test", id).unwrap();
            let read = store.read_stream(&stream, Version::FIRST, 10).await.unwrap();
            assert_eq!(read.len(), 1, "{id}");
            assert_eq!((read[0].stream_id.as_str(), read[0].payload["n"].as_u64()), (stream.as_str(), Some(n as u64)));
        }
        let feed = store.read_feed(&FeedFilter::All, Checkpoint::START, 100).await.unwrap();
        assert_eq!(feed.len(), ids.len());
    });
}

/// An append beyond JetStream's atomic batch limit is refused before
/// anything is written; one at the limit is stored whole.
#[test]
fn appends_beyond_the_batch_limit_are_refused_and_write_nothing() {
    block_on(async {
        let store = JetStreamStore::new().await;
        let stream: StreamId = "test-big".parse().unwrap();
        let too_many = (0..=MAX_APPEND_EVENTS as u64).map(event).collect();
        match store.append(&stream, ExpectedVersion::Any, too_many).await {
            Err(Error::InvalidRequest(m)) => assert!(m.contains("at most"), "{m}"),
            other => panic!("expected a refusal, got {other:?}"),
        }
        assert_eq!(store.stream_version(&stream).await.unwrap(), Version::NONE);
        let at_limit = (0..MAX_APPEND_EVENTS as u64).map(event).collect();
        let done = store.append(&stream, ExpectedVersion::NoStream, at_limit).await.unwrap();
        assert_eq!(done.version, Version::new(MAX_APPEND_EVENTS as u64));
    });
}

/// A second handle (another process, as far as the store can tell) is woken
/// by the first one's append and reads it at once.
#[test]
fn another_handle_is_woken_and_reads_the_append() {
    block_on(async {
        let store = JetStreamStore::new().await;
        let other = open(store.options().clone()).await;
        let mut wake_ups = other.wake_ups().await;
        let stream: StreamId = "test-woken".parse().unwrap();
        store.append(&stream, ExpectedVersion::NoStream, vec![event(1)]).await.unwrap();
        tokio::time::timeout(Duration::from_secs(10), wake_ups.next())
            .await
            .expect("woken within 10 s")
            .expect("a wake-up");
        let feed = other.read_feed(&FeedFilter::All, Checkpoint::START, 10).await.unwrap();
        assert_eq!(feed.len(), 1, "the woken reader sees the append");
        assert_eq!(other.stream_version(&stream).await.unwrap(), Version::FIRST);
    });
}

/// Positions are the stream sequence: gap-free, with the checkpoint's
/// transaction at 0, across single and batched appends.
#[test]
fn positions_are_gap_free_sequences() {
    block_on(async {
        let store = JetStreamStore::new().await;
        let a: StreamId = "test-a".parse().unwrap();
        let b: StreamId = "test-b".parse().unwrap();
        store.append(&a, ExpectedVersion::NoStream, vec![event(1)]).await.unwrap();
        store.append(&b, ExpectedVersion::NoStream, (2..6).map(event).collect()).await.unwrap();
        store.append(&a, ExpectedVersion::Exact(Version::FIRST), vec![event(6)]).await.unwrap();
        let feed = store.read_feed(&FeedFilter::All, Checkpoint::START, 100).await.unwrap();
        let positions: Vec<u64> = feed.iter().map(|e| e.position.get()).collect();
        assert_eq!(positions, (1..=6).collect::<Vec<_>>());
        assert!(feed.iter().all(|e| e.transaction == 0));
    });
}

/// A stream name taken by a stream with another configuration is refused
/// with a typed error, not used.
#[test]
fn a_foreign_stream_of_the_same_name_is_refused() {
    block_on(async {
        let store = JetStreamStore::new().await;
        let options = store.options().clone().subject_prefix("elsewhere.entirely");
        match NatsStore::connect(options).await {
            Err(Error::InvalidRequest(m)) => assert!(m.contains("does not capture"), "{m}"),
            other => panic!("expected a refusal, got {other:?}"),
        }
    });
}

/// Bad names are refused before anything is sent; a cluster that does not
/// answer is `Unavailable`, promptly.
#[test]
fn bad_options_and_a_missing_cluster_are_typed_errors() {
    block_on(async {
        for options in [
            NatsOptions::new("nats://127.0.0.1:1").stream("has.dot"),
            NatsOptions::new("nats://127.0.0.1:1").subject_prefix("a.*"),
            NatsOptions::new("nats://127.0.0.1:1").replicas(0),
        ] {
            assert!(matches!(NatsStore::connect(options).await, Err(Error::InvalidRequest(_))));
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let started = std::time::Instant::now();
        let options = NatsOptions::new(format!("nats://127.0.0.1:{port}")).request_timeout(Duration::from_secs(1));
        match NatsStore::connect(options).await {
            Err(e) => assert!(e.is_unavailable(), "{e:?}"),
            Ok(_) => panic!("connected to nothing"),
        }
        assert!(started.elapsed() < Duration::from_secs(20));
    });
}

/// Conditional appends from two handles (as two processes: each keeps its
/// own index of types and tags): 8 racers, alternating handles, read one
/// boundary, then all append on it; exactly one commits per round, the
/// others fail the condition, whichever handle wrote; a handle that wrote
/// nothing reads every event; a position from no read is refused.
#[test]
fn racers_on_one_boundary_through_two_handles_one_commits() {
    use eslab_core::{Query, QueryItem, StreamAppend, Tag};
    block_on(async {
        let store = JetStreamStore::new().await;
        let other = NatsStore::connect(store.options().clone()).await.unwrap();
        let handle = |i: usize| if i.is_multiple_of(2) { store.store.clone() } else { other.clone() };
        for round in 0..20 {
            let tag: Tag = format!("seat:{round}").parse().unwrap();
            let query = Query::new([QueryItem::tagged([tag.clone()])]).unwrap();
            let mut reads = Vec::new();
            for i in 0..8 {
                reads.push(handle(i).read_query(&query).await.unwrap());
            }
            let racers = reads.into_iter().enumerate().map(|(i, read)| {
                let store = handle(i);
                let condition = read.condition(query.clone());
                let stream = StreamId::new("seat", &format!("{round}-{i}")).unwrap();
                let event = NewEvent::new("Booked", 1, json!({ "racer": i }), Metadata::now().with_tags([tag.clone()]));
                tokio::spawn(async move {
                    store
                        .append_if(vec![StreamAppend::new(stream, ExpectedVersion::NoStream, vec![event])], condition)
                        .await
                })
            });
            let mut committed = 0;
            for racer in racers.collect::<Vec<_>>() {
                match racer.await.unwrap() {
                    Ok(_) => committed += 1,
                    Err(Error::ConditionFailed { .. }) => {}
                    Err(e) => panic!("round {round}: {e:?}"),
                }
            }
            assert_eq!(committed, 1, "round {round}");
        }
        let fresh = NatsStore::connect(store.options().clone()).await.unwrap();
        let booked = Query::new([QueryItem::of_types(["Booked"])]).unwrap();
        assert_eq!(fresh.read_query(&booked).await.unwrap().events.len(), 20, "a new handle indexes the whole stream");
        let query = Query::new([QueryItem::of_types(["Booked"])]).unwrap();
        let read = store.read_query(&query).await.unwrap();
        assert_eq!(read.events.len(), 20);
        let ahead = eslab_core::AppendCondition::new(
            query,
            eslab_core::ReadPosition::at(eslab_core::Position::new(read.position.position.get() + 100)),
        );
        let append = StreamAppend::new("seat-x".parse().unwrap(), ExpectedVersion::Any, vec![event(1)]);
        assert!(matches!(store.append_if(vec![append], ahead).await, Err(Error::InvalidQuery(_))));
    });
}
