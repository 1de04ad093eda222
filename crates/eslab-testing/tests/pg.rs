//! `pg::FreshSchema` and `pg::SchemaStore` against the test database: a
//! schema exists once opened and is gone after an explicit drop, after the
//! guard is dropped, and after the last clone of a store.
#![cfg(feature = "postgres")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use eslab_core::{EventAppender, EventReader, ExpectedVersion, Metadata, NewEvent, StreamId, Version};
use eslab_testing::pg::{FreshSchema, SchemaStore, database_url, unique_name};
use sqlx::Connection;

async fn exists(name: &str) -> bool {
    let mut conn = sqlx::PgConnection::connect(&database_url()).await.unwrap();
    let found: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)")
        .bind(name)
        .fetch_one(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
    found
}

fn event() -> NewEvent {
    NewEvent::new("Counted", 1, serde_json::json!({ "n": 1 }), Metadata::now())
}

#[test]
fn names_are_unique_and_carry_the_prefix() {
    let (a, b) = (unique_name("eslab_x"), unique_name("eslab_x"));
    assert_ne!(a, b);
    assert!(a.starts_with("eslab_x_") && a.len() == "eslab_x_".len() + 32, "{a}");
}

#[test]
fn a_prefix_that_is_no_identifier_is_refused() {
    for bad in ["", "Eslab", "eslab-test", "eslab\"x", "1eslab", "a_prefix_longer_than_thirty_bytes"] {
        assert!(std::panic::catch_unwind(|| unique_name(bad)).is_err(), "{bad:?} was accepted");
    }
    assert!(unique_name("_eslab_2").starts_with("_eslab_2_"));
}

#[tokio::test]
async fn an_explicit_drop_removes_the_schema() {
    let schema = FreshSchema::new("eslab_test");
    let name = schema.name().to_owned();
    assert!(!exists(&name).await, "making the guard creates nothing");
    let store = schema.open().await;
    let s: StreamId = "test-1".parse().unwrap();
    store.append(&s, ExpectedVersion::NoStream, vec![event()]).await.unwrap();
    assert!(exists(&name).await);
    drop(store);
    schema.drop_schema().await;
    assert!(!exists(&name).await);
}

#[tokio::test]
async fn dropping_the_guard_removes_the_schema() {
    let schema = FreshSchema::new("eslab_test");
    let name = schema.name().to_owned();
    let _store = schema.open().await;
    assert!(exists(&name).await);
    drop(schema);
    assert!(!exists(&name).await);
}

#[tokio::test]
async fn a_schema_store_is_dropped_with_its_last_clone() {
    let store = SchemaStore::new().await;
    let name = store.schema().to_owned();
    let clone = store.clone();
    let s: StreamId = "test-1".parse().unwrap();
    clone.append(&s, ExpectedVersion::NoStream, vec![event()]).await.unwrap();
    assert_eq!(store.stream_version(&s).await.unwrap(), Version::FIRST);
    drop(store);
    assert!(exists(&name).await, "a clone still holds it");
    drop(clone);
    assert!(!exists(&name).await);
}

#[tokio::test]
async fn a_lazy_store_creates_its_schema_on_migrate() {
    let store = SchemaStore::lazy();
    let name = store.schema().to_owned();
    assert!(!exists(&name).await);
    store.migrate().await.unwrap();
    assert!(exists(&name).await);
}
