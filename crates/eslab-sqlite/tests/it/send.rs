//! Every public future of the store is `Send`, so it can run in a spawned
//! task or an `#[async_trait]` method. Compiling is the test: the futures are
//! named in a function that is type-checked and never run.

use eslab_sqlite::{SqliteConfig, SqliteStore};
use eslab_testing::send::{assert_send, assert_store_futures_send};
use sqlx::SqliteConnection;

#[test]
fn every_public_future_is_send() {
    let _ = futures_are_send;
}

fn futures_are_send(store: &SqliteStore, conn: &mut SqliteConnection) {
    assert_send(SqliteStore::connect("sqlite::memory:"));
    assert_send(SqliteStore::connect_with("sqlite::memory:", SqliteConfig::default()));
    assert_send(SqliteStore::in_memory());
    assert_send(store.migrate());
    assert_send(store.begin_write());
    assert_send(store.append_in_tx(conn, Vec::new()));
    assert_store_futures_send(store);
    assert_send(store.close());
}
