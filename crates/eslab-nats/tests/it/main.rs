//! The JetStream store against the store conformance suites, on the shared
//! 3-server test cluster (each test on a stream of its own, three replicas),
//! plus what only this store promises and the faults of a cluster.
//!
//! The boundary suite is not run here: every `read_query` on JetStream scans
//! the whole stream (no tag index), and its races (1,000 rounds of up to 64
//! racers, each reading the boundary) take more than the 180 s a test may
//! run on this machine; the conditional append is checked by
//! `nats::racers_on_one_boundary_one_commits` instead (correctness, fewer
//! rounds).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod faults;
mod nats;

use eslab_testing::nats::JetStreamStore;

async fn new_store() -> JetStreamStore {
    JetStreamStore::new().await
}

eslab_testing::store_conformance_tests!(new_store);
eslab_testing::subscription_conformance_tests!(new_store);
eslab_testing::explore_conformance_tests!(new_store);
eslab_testing::repository_conformance_tests!(new_store);

#[test]
fn snapshots_keep_the_latest() {
    eslab_testing::block_on(eslab_testing::conformance::snapshots_keep_the_latest(new_store));
}
