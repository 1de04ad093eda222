//! Integration tests of the PostgreSQL store, against the server at
//! `DATABASE_URL` (default `postgres://postgres@127.0.0.1:5432/postgres`),
//! each in a fresh schema. They fail, never skip, when the server is down.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs, unreachable_pub)]

mod append;
mod feed;
mod group;
mod helpers;
mod import;
mod listener;
mod send;
mod subscribe;

use eslab_testing::pg::SchemaStore;

async fn new_store() -> SchemaStore {
    SchemaStore::new().await
}

eslab_testing::store_conformance_tests!(new_store);
eslab_testing::side_store_conformance_tests!(new_store);
eslab_testing::repository_conformance_tests!(new_store);
eslab_testing::retention_conformance_tests!(new_store);
eslab_testing::subscription_conformance_tests!(new_store);
eslab_testing::boundary_conformance_tests!(new_store);
eslab_testing::personal_conformance_tests!(new_store);
eslab_testing::explore_conformance_tests!(new_store);

/// The same suites with the unique-index append strategy.
mod unique_index {
    use eslab_postgres::AppendStrategy;
    use eslab_testing::pg::SchemaStore;

    async fn new_store() -> SchemaStore {
        SchemaStore::with_options(|o| o.append_strategy(AppendStrategy::UniqueIndex)).await
    }

    eslab_testing::store_conformance_tests!(new_store);
    eslab_testing::retention_conformance_tests!(new_store);
    eslab_testing::subscription_conformance_tests!(new_store);
    eslab_testing::boundary_conformance_tests!(new_store);
}
