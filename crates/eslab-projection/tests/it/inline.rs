//! Inline projections on real PostgreSQL and SQLite: the read model changes
//! in the append's transaction, and a handler error rolls the append back.

use std::sync::Arc;

use eslab_core::{EventAppender, EventReader, ExpectedVersion, FeedFilter, Metadata, NewEvent, StreamAppend, Version};
use eslab_projection::{Error, Inline, PgBackend, SqliteBackend};
use eslab_testing::pg::FreshSchema;
use serde_json::json;

use super::sql::{SqlTally, TALLY_DDL};
use super::stream;

fn counted(n: i64) -> NewEvent {
    NewEvent::new("Counted", 1, json!({ "n": n }), Metadata::now())
}

fn poison() -> NewEvent {
    NewEvent::new("Counted", 1, json!({ "poison": true }), Metadata::now())
}

macro_rules! inline_tests {
    ($module:ident, $backend:ty, $open:expr) => {
        mod $module {
            use super::*;

            async fn tally(pool: &<$backend as PoolOf>::Pool, s: &str) -> Option<(i64, i64)> {
                sqlx::query_as("SELECT version, total FROM tally WHERE stream_id = $1")
                    .bind(s)
                    .fetch_optional(pool)
                    .await
                    .unwrap()
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn the_read_model_changes_with_the_append() {
                let dir = tempfile::tempdir().unwrap();
                let (store, backend, _schema) = $open(&dir).await;
                let pool = backend.pool().clone();
                let inline = Inline::new(store.clone(), Arc::new(backend), Arc::new(SqlTally));
                inline.append(&stream(1), ExpectedVersion::NoStream, vec![counted(5)]).await.unwrap();
                assert_eq!(tally(&pool, "acc-1").await, Some((1, 5)), "read-your-writes: no runner involved");
                inline
                    .append(&stream(1), ExpectedVersion::Exact(Version::new(1)), vec![counted(2), counted(3)])
                    .await
                    .unwrap();
                assert_eq!(tally(&pool, "acc-1").await, Some((3, 10)));
                assert_eq!(inline.stream_version(&stream(1)).await.unwrap(), Version::new(3));
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn a_handler_error_rolls_the_append_back() {
                let dir = tempfile::tempdir().unwrap();
                let (store, backend, _schema) = $open(&dir).await;
                let pool = backend.pool().clone();
                let inline = Inline::new(store.clone(), Arc::new(backend), Arc::new(SqlTally));
                inline.append(&stream(1), ExpectedVersion::Any, vec![counted(5)]).await.unwrap();

                // Through the typed API: the handler's error, nothing recorded.
                let refused = inline
                    .append_inline(vec![StreamAppend::new(stream(1), ExpectedVersion::Any, vec![counted(1), poison()])])
                    .await
                    .unwrap_err();
                match refused {
                    Error::Rejected { projection, stream: s, version, source } => {
                        assert_eq!((projection.as_str(), s, version), ("sql-tally", stream(1), Version::new(3)));
                        assert_eq!(source.message, "poison");
                    }
                    other => panic!("expected Rejected, got {other:?}"),
                }
                // Through EventAppender (what a Repository sees), across two streams.
                let both = vec![
                    StreamAppend::new(stream(2), ExpectedVersion::NoStream, vec![counted(7)]),
                    StreamAppend::new(stream(3), ExpectedVersion::NoStream, vec![poison()]),
                ];
                let err = inline.append_streams(both).await.unwrap_err();
                assert!(matches!(Error::from_store(&err), Some(Error::Rejected { .. })), "{err:?}");

                assert_eq!(store.stream_version(&stream(1)).await.unwrap(), Version::new(1), "nothing recorded");
                assert_eq!(store.stream_version(&stream(2)).await.unwrap(), Version::NONE);
                assert_eq!(store.stream_version(&stream(3)).await.unwrap(), Version::NONE);
                assert_eq!(
                    store.read_feed(&FeedFilter::All, eslab_core::Checkpoint::START, 100).await.unwrap().len(),
                    1
                );
                assert_eq!(tally(&pool, "acc-1").await, Some((1, 5)), "read model rolled back too");
                assert_eq!(tally(&pool, "acc-2").await, None);
                // A conflict is the store's own error, and also leaves nothing.
                let conflict =
                    inline.append(&stream(1), ExpectedVersion::NoStream, vec![counted(1)]).await.unwrap_err();
                assert!(conflict.is_conflict(), "{conflict:?}");
                // And the store still works: the writer was not left in a transaction.
                inline.append(&stream(1), ExpectedVersion::Exact(Version::new(1)), vec![counted(1)]).await.unwrap();
                assert_eq!(tally(&pool, "acc-1").await, Some((2, 6)));
            }
        }
    };
}

/// The pool type of a backend (for the query helpers).
trait PoolOf {
    type Pool;
}
impl PoolOf for PgBackend {
    type Pool = sqlx::PgPool;
}
impl PoolOf for SqliteBackend {
    type Pool = sqlx::SqlitePool;
}

/// A fresh schema (created and migrated by the PostgreSQL store, dropped
/// with the returned guard) and a backend on its pool.
async fn postgres(_dir: &tempfile::TempDir) -> (eslab_postgres::PostgresStore, PgBackend, Option<FreshSchema>) {
    let schema = FreshSchema::new("eslab_test");
    let store = schema.open().await;
    let backend = PgBackend::new(store.pool().clone());
    backend.ensure_schema().await.unwrap();
    sqlx::query(TALLY_DDL).execute(backend.pool()).await.unwrap();
    (store, backend, Some(schema))
}

async fn sqlite(dir: &tempfile::TempDir) -> (eslab_sqlite::SqliteStore, SqliteBackend, Option<FreshSchema>) {
    let url = format!("sqlite://{}", dir.path().join("inline.db").display());
    let store = eslab_sqlite::SqliteStore::connect(&url).await.unwrap();
    let backend = SqliteBackend::new(store.writer_pool().clone());
    backend.ensure_schema().await.unwrap();
    sqlx::query(TALLY_DDL).execute(backend.pool()).await.unwrap();
    (store, backend, None)
}

inline_tests!(on_postgres, PgBackend, postgres);
inline_tests!(on_sqlite, SqliteBackend, sqlite);
