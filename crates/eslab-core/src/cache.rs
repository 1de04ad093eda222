//! The repository's optional state cache (cargo feature `cache`): the latest
//! known `(state, version)` per stream, bounded, verified by every append.

use std::fmt;
use std::sync::Arc;

use moka::ops::compute::Op;

use crate::aggregate::{Aggregate, Loaded};
use crate::stream::StreamId;
use crate::version::Version;

/// A bounded map from stream to its latest known state. Entries may be stale
/// (another process appended since); the repository never acts on one without
/// the store's confirmation.
pub(crate) struct StateCache<A> {
    entries: moka::sync::Cache<StreamId, Arc<Loaded<A>>>,
}

impl<A> Clone for StateCache<A> {
    fn clone(&self) -> Self {
        StateCache { entries: self.entries.clone() }
    }
}

impl<A> fmt::Debug for StateCache<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StateCache")
            .field("entries", &self.entries.entry_count())
            .field("max_capacity", &self.entries.policy().max_capacity())
            .finish()
    }
}

impl<A: Aggregate> StateCache<A> {
    /// At most `max_entries` streams.
    pub(crate) fn with_capacity(max_entries: u64) -> Self {
        StateCache { entries: moka::sync::Cache::new(max_entries) }
    }

    /// At most `max_weight` in all, each state weighed by `weigher`.
    pub(crate) fn weighted(max_weight: u64, weigher: impl Fn(&A) -> u32 + Send + Sync + 'static) -> Self {
        let entries = moka::sync::Cache::builder()
            .max_capacity(max_weight)
            .weigher(move |_: &StreamId, loaded: &Arc<Loaded<A>>| weigher(&loaded.state))
            .build();
        StateCache { entries }
    }

    pub(crate) fn get(&self, stream: &StreamId) -> Option<Loaded<A>> {
        self.entries.get(stream).map(|hit| Loaded::clone(&hit))
    }

    /// Stores `state` at `version` unless the entry is already at that
    /// version or later: a state at a given version never changes, so the
    /// higher version is always the better entry, whichever task wrote last.
    pub(crate) fn offer(&self, stream: &StreamId, state: &A, version: Version) {
        if version.is_none() {
            return;
        }
        self.entries.entry(stream.clone()).and_compute_with(|existing| match existing {
            Some(entry) if entry.value().version >= version => Op::Nop,
            _ => Op::Put(Arc::new(Loaded { state: state.clone(), version })),
        });
    }

    pub(crate) fn evict(&self, stream: &StreamId) {
        self.entries.invalidate(stream);
    }

    pub(crate) fn entry_count(&self) -> u64 {
        self.entries.run_pending_tasks();
        self.entries.entry_count()
    }
}
