//! The memory store against the store conformance suite.

use eslab_memory::MemoryStore;

async fn new_store() -> MemoryStore {
    MemoryStore::new()
}

eslab_testing::store_conformance_tests!(new_store);
eslab_testing::side_store_conformance_tests!(new_store);
eslab_testing::repository_conformance_tests!(new_store);
