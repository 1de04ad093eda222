//! The memory store against the store conformance suite.

mod send;

use eslab_memory::MemoryStore;

async fn new_store() -> MemoryStore {
    MemoryStore::new()
}

eslab_testing::store_conformance_tests!(new_store);
eslab_testing::side_store_conformance_tests!(new_store);
eslab_testing::repository_conformance_tests!(new_store);
eslab_testing::retention_conformance_tests!(new_store);
eslab_testing::subscription_conformance_tests!(new_store);
eslab_testing::boundary_conformance_tests!(new_store);
eslab_testing::personal_conformance_tests!(new_store);
eslab_testing::explore_conformance_tests!(new_store);

mod properties {
    use eslab_memory::MemoryStore;
    use eslab_testing::repository::{check_repository_case, repository_case};
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// Loading with snapshots every random k and with a cache, with a
        /// second writer behind the cache's back, equals folding every event.
        #[test]
        fn snapshots_and_cache_agree_with_replay(case in repository_case()) {
            eslab_testing::block_on(check_repository_case(MemoryStore::new(), "p", &case));
        }
    }
}
