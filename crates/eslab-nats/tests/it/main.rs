//! The JetStream store against the store conformance suites, on the shared
//! 3-server test cluster (each test on a stream of its own, three replicas),
//! plus what only this store promises and the faults of a cluster.
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
eslab_testing::boundary_conformance_tests!(new_store);

#[test]
fn snapshots_keep_the_latest() {
    eslab_testing::block_on(eslab_testing::conformance::snapshots_keep_the_latest(new_store));
}
