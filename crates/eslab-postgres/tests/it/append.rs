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

/// The statements `make bench-append-instructions` measures run as it runs
/// them: each, prepared with the parameter types it declares and executed
/// with its expectation kind, appends one event to a stream at version 1.
#[tokio::test]
async fn bench_statements_append_as_the_instruction_count_runs_them() {
    use eslab_postgres::statements::{ONE_EVENT, ONE_EVENT_PARAMS, RAW_INSERT};
    let store = SchemaStore::new().await;
    let mut conn = store.pool().acquire().await.unwrap();
    for (i, s) in ONE_EVENT.iter().enumerate() {
        let id = stream(&format!("bench{i}"));
        store.append(&id, ExpectedVersion::NoStream, vec![event(0)]).await.unwrap();
        let params = ONE_EVENT_PARAMS.join(", ");
        sqlx::raw_sql(&format!("PREPARE q{i}({params}) AS {}", s.sql)).execute(&mut *conn).await.unwrap();
        let event_id = uuid::Uuid::now_v7();
        let appended = sqlx::raw_sql(&format!(
            "EXECUTE q{i}('{}', {}, 1, 1, 'test', 1, '{event_id}', 'Counted', 1, '{{}}', '{{}}', false)",
            id.as_str(),
            s.kind
        ))
        .execute(&mut *conn)
        .await
        .unwrap();
        assert_eq!(appended.rows_affected(), 1, "{}", s.name);
        assert_eq!(store.stream_version(&id).await.unwrap(), Version::new(2), "{}", s.name);
    }
    sqlx::query(RAW_INSERT)
        .bind("raw-1")
        .bind(1_i64)
        .bind(uuid::Uuid::now_v7())
        .bind(serde_json::json!({}))
        .bind(serde_json::json!({}))
        .execute(store.pool())
        .await
        .unwrap();
}
