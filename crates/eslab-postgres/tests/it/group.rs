//! The group-commit appender: the whole store conformance suite through it,
//! plus what only a group can get wrong (one caller's conflict or duplicate
//! id failing its neighbours).

use std::collections::HashMap;
use std::sync::Arc;

use eslab_core::{Error, EventAppender, EventReader, EventReaderExt, ExpectedVersion, StreamId, Version};
use eslab_postgres::{GroupCommitOptions, Notify, PostgresOptions, PostgresStore};
use eslab_testing::pg::SchemaStore;
use futures_util::{FutureExt, StreamExt};

use crate::helpers::{event, stream};

/// A group-committing store over a fresh schema (kept alive with it).
#[derive(Debug, Clone)]
pub struct GroupStore {
    group: PostgresStore,
    _schema: SchemaStore,
}

eslab_testing::forward_store! {
    impl EventAppender + EventReader + WakeUps for GroupStore => group {}
}

async fn new_store() -> GroupStore {
    let schema = SchemaStore::new().await;
    let group = schema.store.with_group_commit(GroupCommitOptions::default()).unwrap();
    assert!(group.is_group_commit());
    GroupStore { group, _schema: schema }
}

eslab_testing::store_conformance_tests!(new_store);
eslab_testing::subscription_conformance_tests!(new_store);

/// Many callers at once, so groups really form: every append either lands
/// at the version its caller expected or fails with a conflict naming the
/// actual version; no version is taken twice or skipped.
#[test]
fn concurrent_callers_each_get_their_own_verdict() {
    eslab_testing::block_on(async {
        let store = new_store().await;
        let streams: Vec<StreamId> = (0..8).map(|i| stream(&format!("g{i}"))).collect();
        let mut tasks = Vec::new();
        for task in 0..64_u64 {
            let store = store.clone();
            let s = streams[usize::try_from(task % 8).unwrap()].clone();
            tasks.push(tokio::spawn(async move {
                let mut landed = Vec::new();
                let mut conflicts = 0;
                for n in 0..10 {
                    let current = store.stream_version(&s).await.unwrap();
                    match store.append(&s, ExpectedVersion::Exact(current), vec![event(task * 100 + n)]).await {
                        Ok(r) => {
                            assert_eq!(Some(r.version), current.next());
                            landed.push(r.version);
                        }
                        Err(Error::Conflict { actual, .. }) => {
                            assert!(actual > current, "a conflict reports a newer actual version");
                            conflicts += 1;
                        }
                        Err(e) => panic!("unexpected error: {e:?}"),
                    }
                }
                (s, landed, conflicts)
            }));
        }
        let mut per_stream: HashMap<StreamId, Vec<Version>> = HashMap::new();
        for t in tasks {
            let (s, landed, _) = t.await.unwrap();
            per_stream.entry(s).or_default().extend(landed);
        }
        for s in &streams {
            let mut landed = per_stream.remove(s).unwrap_or_default();
            landed.sort();
            let stored: Vec<Version> =
                store.stream_events(s, Version::FIRST).map(|e| e.unwrap().stream_version).collect().await;
            assert_eq!(landed, stored, "each acknowledged append is stored once, at its version, with no gaps");
            assert_eq!(stored.first(), Some(&Version::FIRST));
        }
    });
}

/// A conflict, a duplicate event id and a good append queued together:
/// only the good one lands, and each bad one gets its precise error.
#[test]
fn a_bad_append_does_not_fail_its_group() {
    eslab_testing::block_on(async {
        let store = new_store().await;
        let taken = stream("taken");
        let first = event(1);
        let duplicate_id = first.event_id;
        store.append(&taken, ExpectedVersion::NoStream, vec![first]).await.unwrap();

        for round in 0..20_u64 {
            let store = Arc::new(store.clone());
            let good = stream(&format!("good{round}"));
            let conflict = {
                let store = Arc::clone(&store);
                let taken = taken.clone();
                tokio::spawn(async move { store.append(&taken, ExpectedVersion::NoStream, vec![event(2)]).await })
            };
            let dup = {
                let store = Arc::clone(&store);
                let s = stream(&format!("dup{round}"));
                let mut e = event(3);
                e.event_id = duplicate_id;
                tokio::spawn(async move { store.append(&s, ExpectedVersion::Any, vec![e]).await })
            };
            let ok = {
                let store = Arc::clone(&store);
                let good = good.clone();
                tokio::spawn(async move { store.append(&good, ExpectedVersion::NoStream, vec![event(4)]).await })
            };
            match conflict.await.unwrap() {
                Err(Error::Conflict { actual, .. }) => assert_eq!(actual, Version::FIRST),
                other => panic!("expected a conflict, got {other:?}"),
            }
            assert!(matches!(dup.await.unwrap(), Err(Error::DuplicateEventId(id)) if id == duplicate_id));
            assert_eq!(ok.await.unwrap().unwrap().version, Version::FIRST);
            assert_eq!(store.stream_version(&good).await.unwrap(), Version::FIRST);
        }
        assert_eq!(store.stream_version(&taken).await.unwrap(), Version::FIRST);
    });
}

/// Every kind of expectation, on existing and on missing streams, queued at
/// once so that they share statements: each gets the verdict a lone append
/// would get (the group statement checks and claims each stream on its own).
#[test]
fn every_expectation_gets_its_lone_verdict_inside_a_group() {
    eslab_testing::block_on(async {
        let store = Arc::new(new_store().await);
        let v = Version::new;
        for round in 0..10_u64 {
            // (stream exists beforehand, expectation, the verdict: Ok(new version) or Err(actual))
            let cases: [(bool, ExpectedVersion, std::result::Result<Version, Version>); 10] = [
                (true, ExpectedVersion::Any, Ok(v(2))),
                (true, ExpectedVersion::StreamExists, Ok(v(2))),
                (true, ExpectedVersion::Exact(v(1)), Ok(v(2))),
                (true, ExpectedVersion::NoStream, Err(v(1))),
                (true, ExpectedVersion::Exact(v(5)), Err(v(1))),
                (false, ExpectedVersion::Any, Ok(v(1))),
                (false, ExpectedVersion::NoStream, Ok(v(1))),
                (false, ExpectedVersion::Exact(Version::NONE), Ok(v(1))),
                (false, ExpectedVersion::StreamExists, Err(Version::NONE)),
                (false, ExpectedVersion::Exact(v(3)), Err(Version::NONE)),
            ];
            let mut tasks = Vec::new();
            for (i, (exists, expected, verdict)) in cases.into_iter().enumerate() {
                let s = stream(&format!("kind{round}x{i}"));
                if exists {
                    store.append(&s, ExpectedVersion::NoStream, vec![event(1)]).await.unwrap();
                }
                tasks.push((s, expected, verdict));
            }
            let handles: Vec<_> = tasks
                .iter()
                .map(|(s, expected, _)| {
                    let (store, s, expected) = (Arc::clone(&store), s.clone(), *expected);
                    tokio::spawn(async move { store.append(&s, expected, vec![event(2)]).await })
                })
                .collect();
            for ((s, expected, verdict), handle) in tasks.into_iter().zip(handles) {
                let got = handle.await.unwrap();
                match (verdict, got) {
                    (Ok(version), Ok(r)) => assert_eq!(r.version, version, "{s} {expected:?}"),
                    (Err(actual), Err(Error::Conflict { actual: got, .. })) => {
                        assert_eq!(got, actual, "{s} {expected:?}");
                    }
                    (verdict, got) => panic!("{s} {expected:?}: expected {verdict:?}, got {got:?}"),
                }
                let stored = store.stream_version(&s).await.unwrap();
                let want = match verdict {
                    Ok(version) => version,
                    Err(actual) => actual,
                };
                assert_eq!(stored, want, "{s} {expected:?}: the stream holds exactly what was acknowledged");
            }
        }
    });
}

/// The backends of the group-commit flushers of the store in `schema`, by pid.
async fn flusher_backends(pool: &sqlx::PgPool, schema: &str) -> Vec<i32> {
    sqlx::query_scalar("SELECT pid FROM pg_stat_activity WHERE application_name = $1 ORDER BY pid")
        .bind(format!("eslab-group-{schema}"))
        .fetch_all(pool)
        .await
        .unwrap()
}

/// `callers` concurrent callers, each appending `appends` single events to a
/// stream of its own (`<tag><caller>`): every append lands at the version
/// after the one its caller saw.
async fn burst(store: &PostgresStore, tag: &str, callers: u64, appends: u64) {
    let tasks: Vec<_> = (0..callers)
        .map(|c| {
            let store = store.clone();
            let s = stream(&format!("{tag}{c}"));
            tokio::spawn(async move {
                for n in 0..appends {
                    let r = store.append(&s, ExpectedVersion::Exact(Version::new(n)), vec![event(n)]).await;
                    assert_eq!(r.unwrap().version, Version::new(n + 1), "{s}");
                }
                assert_eq!(store.stream_version(&s).await.unwrap(), Version::new(appends), "{s}");
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
}

/// Each flusher sends its statements on one connection of its own, named
/// for the store's schema (not on whichever pooled connection is free); a
/// flusher whose connection was killed answers its callers through the
/// store's own path and opens a new one; the connections close with the
/// flushers.
#[test]
fn flushers_keep_their_own_connections_and_replace_a_killed_one() {
    eslab_testing::block_on(async {
        let schema = SchemaStore::new().await;
        let (pool, name) = (schema.store.pool().clone(), schema.store.schema().to_owned());
        let group = schema.store.with_group_commit(GroupCommitOptions::default().flushers(2)).unwrap();
        burst(&group, "before", 16, 10).await;
        let before = flusher_backends(&pool, &name).await;
        assert!((1..=2).contains(&before.len()), "at most one connection per flusher: {before:?}");

        let killed: Vec<bool> = sqlx::query_scalar("SELECT pg_terminate_backend(pid) FROM unnest($1::int[]) AS pid")
            .bind(&before)
            .fetch_all(&pool)
            .await
            .unwrap();
        assert!(killed.iter().all(|k| *k), "{killed:?}");
        burst(&group, "after", 16, 10).await;
        let after = flusher_backends(&pool, &name).await;
        assert!((1..=2).contains(&after.len()), "the flushers connected again: {after:?}");
        assert!(after.iter().all(|pid| !before.contains(pid)), "new backends: {before:?} then {after:?}");

        drop(group);
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        while !flusher_backends(&pool, &name).await.is_empty() {
            assert!(tokio::time::Instant::now() < deadline, "the flushers' connections outlived the store");
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    });
}

/// A flusher that cannot open a connection of its own (here the store's
/// role is at its connection limit, with both of the pool's connections
/// open) sends its batch through the pool's connections, one append at a
/// time, instead of failing its callers.
#[test]
fn a_flusher_without_a_connection_of_its_own_goes_through_the_pool() {
    eslab_testing::block_on(async {
        let schema = SchemaStore::new().await;
        let (pool, name) = (schema.store.pool().clone(), schema.store.schema().to_owned());
        let role = format!("{name}_limited");
        // sql-ident: `name` comes from eslab_testing::pg::unique_name ([a-z0-9_] only).
        let grants = format!(
            "CREATE ROLE \"{role}\" LOGIN; GRANT USAGE ON SCHEMA \"{name}\" TO \"{role}\"; \
             GRANT ALL ON ALL TABLES IN SCHEMA \"{name}\" TO \"{role}\"; \
             GRANT ALL ON ALL SEQUENCES IN SCHEMA \"{name}\" TO \"{role}\""
        );
        sqlx::raw_sql(&grants).execute(&pool).await.unwrap();
        // The role is the cluster's, not the schema's: dropped even if the test fails.
        let tried = std::panic::AssertUnwindSafe(async {
            let mut url = url::Url::parse(schema.fresh_schema().url()).unwrap();
            url.set_username(&role).unwrap();
            let options = PostgresOptions::new(url.as_str(), &name).max_connections(2).notify(Notify::Off);
            let limited = PostgresStore::connect_lazy(options).unwrap();
            // Both pooled connections open, then the role may open no more.
            let (a, b) = tokio::join!(limited.pool().acquire(), limited.pool().acquire());
            drop((a.unwrap(), b.unwrap()));
            // sql-ident: as above.
            let limit = format!("ALTER ROLE \"{role}\" CONNECTION LIMIT 2");
            sqlx::raw_sql(&limit).execute(&pool).await.unwrap();

            let group = limited.with_group_commit(GroupCommitOptions::default().flushers(2)).unwrap();
            burst(&group, "limited", 8, 5).await;
            assert_eq!(flusher_backends(&pool, &name).await, Vec::<i32>::new(), "no flusher could connect");
            drop((group, limited));
        })
        .catch_unwind()
        .await;

        // sql-ident: as above.
        let cleanup = format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{role}'; \
             DROP OWNED BY \"{role}\"; DROP ROLE \"{role}\""
        );
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        while let Err(e) = sqlx::raw_sql(&cleanup).execute(&pool).await {
            assert!(tokio::time::Instant::now() < deadline, "cannot drop role {role}: {e}");
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        if let Err(panic) = tried {
            std::panic::resume_unwind(panic);
        }
    });
}

/// The suite again, grouping over the unique-index append strategy.
mod unique_index {
    use eslab_postgres::{AppendStrategy, GroupCommitOptions};
    use eslab_testing::pg::SchemaStore;

    use super::GroupStore;

    async fn new_store() -> GroupStore {
        let schema = SchemaStore::with_options(|o| o.append_strategy(AppendStrategy::UniqueIndex)).await;
        let group = schema.store.with_group_commit(GroupCommitOptions::default()).unwrap();
        assert!(group.is_group_commit());
        GroupStore { group, _schema: schema }
    }

    eslab_testing::store_conformance_tests!(new_store);
}
