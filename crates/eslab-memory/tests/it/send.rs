//! Every future of the store is `Send`, so it can run in a spawned task or an
//! `#[async_trait]` method. Compiling is the test: the futures are named in a
//! function that is type-checked and never run.

use eslab_memory::MemoryStore;
use eslab_testing::send::assert_store_futures_send;

#[test]
fn every_public_future_is_send() {
    let _ = futures_are_send;
}

fn futures_are_send(store: &MemoryStore) {
    assert_store_futures_send(store);
}
