//! The repository's optional state cache (cargo feature `cache`): the latest
//! known `(state, version)` per stream, bounded, verified by every append.

use std::fmt;
use std::sync::Arc;

use moka::ops::compute::Op;

use crate::aggregate::Aggregate;
use crate::repository::{Loaded, Repository};
use crate::store::EventStorage;
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
    fn new(entries: moka::sync::Cache<StreamId, Arc<Loaded<A>>>) -> Self {
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

    fn entry_count(&self) -> u64 {
        self.entries.run_pending_tasks();
        self.entries.entry_count()
    }
}

impl<A: Aggregate, S: EventStorage> Repository<A, S> {
    /// Keeps the states of up to `max_entries` streams in memory (least
    /// recently and least frequently used evicted first), so that a command on
    /// a cached stream skips the load (feature `cache`).
    ///
    /// Every append is still checked against the cached version
    /// (`Exact(version)`): if another writer got there first the append
    /// conflicts, the entry is evicted and the retry loads from the store. A
    /// refusal decided on a cached state is re-checked on a fresh load.
    /// [`load`](Self::load) also answers from the cache, and so may lag writes
    /// made behind the repository's back; [`load_until`](Self::load_until)
    /// with a version never uses it.
    ///
    /// ```
    /// # use eslab_core::{Aggregate, DomainEvent};
    /// # #[derive(Debug, Default, Clone, PartialEq)]
    /// # struct Counter { value: u32 }
    /// # #[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
    /// # enum CounterEvent { Incremented { by: u32 } }
    /// # impl DomainEvent for CounterEvent {
    /// #     const EVENT_TYPES: &'static [&'static str] = &["Incremented"];
    /// #     fn event_type(&self) -> &'static str { "Incremented" }
    /// # }
    /// # #[derive(Debug, thiserror::Error)] #[error("overflow")] struct Overflow;
    /// # impl Aggregate for Counter {
    /// #     const KIND: &'static str = "counter";
    /// #     type Command = u32; type Event = CounterEvent; type Error = Overflow;
    /// #     fn decide(&self, by: &u32) -> Result<Vec<CounterEvent>, Overflow> { Ok(vec![CounterEvent::Incremented { by: *by }]) }
    /// #     fn evolve(&mut self, e: &CounterEvent) { let CounterEvent::Incremented { by } = e; self.value += by; }
    /// # }
    /// use eslab_core::{EventStore, Metadata, Repository};
    /// use eslab_memory::MemoryStore;
    ///
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let backend = MemoryStore::new();
    /// let cached: Repository<Counter, _> = Repository::new(EventStore::new(backend.clone())).with_cache(10_000);
    /// let other: Repository<Counter, _> = Repository::new(EventStore::new(backend));
    /// cached.execute("c1", &1, Metadata::now()).await.unwrap(); // cached at version 1
    /// other.execute("c1", &10, Metadata::now()).await.unwrap(); // behind the cache's back
    /// let done = cached.execute("c1", &100, Metadata::now()).await.unwrap();
    /// assert_eq!((done.state.value, done.attempts), (111, 2)); // conflict, evict, reload
    /// # });
    /// ```
    #[must_use]
    pub fn with_cache(mut self, max_entries: u64) -> Self {
        self.cache = Some(StateCache::new(moka::sync::Cache::new(max_entries)));
        self
    }

    /// Like [`with_cache`](Self::with_cache), but bounded by the total weight
    /// of the cached states, each weighed by `weigher` (e.g. an estimate of
    /// its size in bytes; feature `cache`).
    #[must_use]
    pub fn with_weighted_cache(mut self, max_weight: u64, weigher: impl Fn(&A) -> u32 + Send + Sync + 'static) -> Self {
        let entries = moka::sync::Cache::builder()
            .max_capacity(max_weight)
            .weigher(move |_: &StreamId, loaded: &Arc<Loaded<A>>| weigher(&loaded.state))
            .build();
        self.cache = Some(StateCache::new(entries));
        self
    }

    /// How many streams the cache holds now (`None` without a cache; feature
    /// `cache`). Settles pending evictions first, so the count is exact.
    pub fn cached_streams(&self) -> Option<u64> {
        self.cache.as_ref().map(StateCache::entry_count)
    }

    /// Drops the cached state of `id`, e.g. after writing to its stream
    /// outside this repository (feature `cache`). A no-op without a cache.
    pub fn evict(&self, id: &str) {
        if let (Some(cache), Ok(stream)) = (&self.cache, A::stream_id(id)) {
            cache.evict(&stream);
        }
    }
}
