//! Append-path behaviour beyond the conformance suite.

use std::time::Duration;

use eslab_core::{EventAppender, EventReader, ExpectedVersion, StreamAppend, Version};
use eslab_postgres::{AppendStrategy, PostgresOptions, PostgresStore};
use eslab_testing::pg::SchemaStore;

use crate::helpers::{event, stream};

/// Multi-stream appends naming the same streams in opposite orders all
/// succeed: `VersionRow` locks stream rows in `stream_id` order (no deadlock);
/// with `UniqueIndex` they can deadlock on the unique index, and the victim is
/// retried.
#[tokio::test]
async fn opposite_order_multi_stream_appends_all_succeed() {
    const ROUNDS: u64 = 20;
    for strategy in [AppendStrategy::VersionRow, AppendStrategy::UniqueIndex] {
        let store = SchemaStore::with_options(|o| o.append_strategy(strategy)).await;
        let (a, b) = (stream("a"), stream("b"));
        let tasks: Vec<_> = [(a.clone(), b.clone()), (b.clone(), a.clone())]
            .into_iter()
            .map(|(first, second)| {
                let store = store.clone();
                tokio::spawn(async move {
                    for i in 0..ROUNDS {
                        store
                            .append_streams(vec![
                                StreamAppend::new(first.clone(), ExpectedVersion::Any, vec![event(i)]),
                                StreamAppend::new(second.clone(), ExpectedVersion::Any, vec![event(i)]),
                            ])
                            .await
                            .unwrap();
                    }
                })
            })
            .collect();
        for t in tasks {
            tokio::time::timeout(Duration::from_secs(60), t).await.unwrap().unwrap();
        }
        assert_eq!(store.stream_version(&a).await.unwrap(), Version::new(2 * ROUNDS));
        assert_eq!(store.stream_version(&b).await.unwrap(), Version::new(2 * ROUNDS));
    }
}

/// Many `Any` appenders creating and growing one stream all succeed, with no gaps.
#[tokio::test]
async fn racing_any_appenders_on_a_new_stream_all_succeed() {
    for strategy in [AppendStrategy::VersionRow, AppendStrategy::UniqueIndex] {
        let store = SchemaStore::with_options(|o| o.append_strategy(strategy)).await;
        let s = stream("hot");
        let tasks: Vec<_> = (0..8)
            .map(|t| {
                let (store, s) = (store.clone(), s.clone());
                tokio::spawn(async move {
                    for i in 0..10 {
                        store.append(&s, ExpectedVersion::Any, vec![event(t * 100 + i)]).await.unwrap();
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        let versions: Vec<u64> =
            store.read_stream(&s, Version::FIRST, 1000).await.unwrap().iter().map(|e| e.stream_version.get()).collect();
        assert_eq!(versions, (1..=80).collect::<Vec<_>>());
    }
}

/// An unreachable server is `Error::Unavailable` (HTTP 503), not a backend error.
#[tokio::test]
async fn an_unreachable_server_is_unavailable() {
    let options = PostgresOptions::new("postgres://postgres@127.0.0.1:1/postgres", "eslab_nowhere")
        .acquire_timeout(Duration::from_secs(2));
    let err = PostgresStore::connect_with(options).await.unwrap_err();
    assert!(err.is_unavailable(), "got {err:?}");
}
