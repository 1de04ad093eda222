//! The story, on SQLite in a temporary file and on PostgreSQL in a fresh schema.
#![allow(clippy::unwrap_used)]

use eslab_testing::pg::FreshSchema;
use inventory::{Product, Told, run};

fn check(told: Told) {
    let lamp = Product { name: Some("Desk lamp".to_owned()), on_hand: 10, reserved: 8 };
    assert_eq!(told.product, lamp);
    assert_eq!(
        told.level.map(|row| (row.name, row.on_hand, row.reserved, row.version)),
        Some(("Desk lamp".into(), 10, 8, 5))
    );
    assert_eq!(told.live, ["Registered", "Received", "Reserved", "Reserved", "Released"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_story_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    check(run(&format!("sqlite://{}", dir.path().join("story.db").display()), "").await.unwrap());
}

#[tokio::test(flavor = "multi_thread")]
async fn the_story_on_postgres() {
    let schema = FreshSchema::new("inventory");
    schema.open().await; // creates the schema, or fails saying how to start PostgreSQL
    check(run(schema.url(), schema.name()).await.unwrap());
    schema.drop_schema().await;
}
