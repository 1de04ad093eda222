//! The store's wake-ups for live readers: its commit watch.

use eslab_core::{WakeUpStream, WakeUps};

use crate::SqliteStore;

/// A wake-up after every append made through this store or one of its clones
/// (see [`SqliteStore::subscribe`]). Writers in other processes do not fire
/// it: subscribers poll as well ([`EventStore::subscribe`](eslab_core::EventStore::subscribe) does).
impl WakeUps for SqliteStore {
    async fn wake_ups(&self) -> WakeUpStream {
        eslab_core::watch_wake_ups(self.subscribe())
    }
}
