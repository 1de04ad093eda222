//! Every public future of the store is `Send`, so it can run in a spawned
//! task or an `#[async_trait]` method (a benchmark harness creates its
//! adapters in spawned tasks). Compiling is most of the test: the futures are
//! named in a function that is type-checked and never run.

use eslab_core::{Checkpoint, EventAppender, EventReader, ExpectedVersion, FeedFilter, NewEvent, StreamId, Version};
use eslab_postgres::{Listener, PostgresOptions, PostgresStore};
use eslab_testing::pg::{SchemaStore, database_url};
use eslab_testing::send::{assert_send, assert_store_futures_send};
use sqlx::PgConnection;

use crate::helpers::{event, stream};

#[test]
fn every_public_future_is_send() {
    let _ = futures_are_send;
}

fn futures_are_send(store: PostgresStore, conn: &mut PgConnection, listener: &mut Listener) {
    assert_send(PostgresStore::connect("postgres://", "send"));
    assert_send(PostgresStore::connect_with(PostgresOptions::new("postgres://", "send")));
    assert_send(store.migrate());
    assert_send(store.append_in_tx(conn, Vec::new()));
    assert_send(store.read_feed_now(&FeedFilter::All, Checkpoint::START, 1));
    assert_send(store.import(Vec::<(StreamId, NewEvent)>::new()));
    assert_send(store.listener());
    assert_send(listener.wait());
    assert_store_futures_send(&store);
    assert_send(store.drop_schema());
}

/// What such a harness does: `migrate` creates the missing schema and its
/// tables (and is idempotent), and `connect_with` reaches the migrated
/// schema, each in a spawned task.
#[tokio::test]
async fn migrate_and_connect_run_in_spawned_tasks() {
    let lazy = SchemaStore::lazy();
    let (store, s) = (lazy.store.clone(), stream("spawned"));
    let appended = tokio::spawn(async move {
        store.migrate().await?;
        store.migrate().await?;
        store.append(&s, ExpectedVersion::NoStream, vec![event(1)]).await
    });
    assert_eq!(appended.await.unwrap().unwrap().version, Version::FIRST);

    let options = PostgresOptions::new(database_url(), lazy.schema());
    let connected = tokio::spawn(PostgresStore::connect_with(options)).await.unwrap().unwrap();
    assert_eq!(connected.stream_version(&stream("spawned")).await.unwrap(), Version::FIRST);
}
