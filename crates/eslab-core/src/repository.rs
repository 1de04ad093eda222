//! The command side's workhorse: load an aggregate (snapshot + later events,
//! or a cached state), decide, append with the loaded version, retry on conflict.

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use futures_util::TryStreamExt;
use futures_util::future::BoxFuture;

use crate::aggregate::{Aggregate, Loaded};
use crate::codec::JsonCodec;
use crate::error::{Error, Result};
use crate::locks::StreamLocks;
use crate::snapshot::{Snapshot, SnapshotPolicy, SnapshotStore, Snapshotting};
use crate::store::{EventReaderExt, EventStorage, EventStore};
use crate::stream::StreamId;
use crate::version::Version;

/// How `execute` retries after an optimistic-concurrency conflict: how many
/// attempts in all, and how long it waits before each retry.
///
/// Retries reload the stream and decide again, so a command that is still valid
/// after a concurrent write succeeds; one that no longer is gets its domain error.
///
/// The waits are exponential backoff with full jitter: the wait before retry
/// `k` (`k` = 1 for the second attempt) is drawn uniformly from
/// `[0, min(max_delay, base_delay × 2^(k-1))]`. The randomness spreads out
/// writers that conflicted together, so they do not collide again in
/// lockstep; the growth thins out a crowd of them. The
/// [default](RetryPolicy::default) is 16 attempts, `base_delay` 2 ms and
/// `max_delay` 100 ms: at most about 1 s of waiting in all (half that on
/// average) before a conflict is returned. Sized for 8 tasks each making 5
/// commands back to back on one stream, with 1 to 4 ms between a command's
/// load and its append: in 300 runs no command needed more than 12. Waits use a
/// runtime-independent timer (`futures-timer`), so commands need no
/// particular async runtime.
///
/// Conflicts between commands of one process can be avoided altogether with
/// [`Repository::with_stream_locks`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Total attempts, the first included (at least 1).
    pub max_attempts: u32,
    /// The largest wait before the first retry; each later retry's largest
    /// wait doubles, up to `max_delay`. Zero retries at once.
    pub base_delay: Duration,
    /// The cap on the largest wait before any retry.
    pub max_delay: Duration,
}

impl RetryPolicy {
    /// Never retry: a conflict is returned at once.
    pub const NEVER: RetryPolicy = RetryPolicy::attempts(1);

    /// The default [`max_attempts`](Self::max_attempts): 16.
    pub const DEFAULT_MAX_ATTEMPTS: u32 = 16;

    /// The default [`base_delay`](Self::base_delay): 2 ms.
    pub const DEFAULT_BASE_DELAY: Duration = Duration::from_millis(2);

    /// The default [`max_delay`](Self::max_delay): 100 ms.
    pub const DEFAULT_MAX_DELAY: Duration = Duration::from_millis(100);

    /// Up to `max_attempts` attempts in all (0 is treated as 1), with the
    /// default backoff between them.
    pub const fn attempts(max_attempts: u32) -> Self {
        RetryPolicy { max_attempts, base_delay: Self::DEFAULT_BASE_DELAY, max_delay: Self::DEFAULT_MAX_DELAY }
    }

    /// The same attempts, with waits starting at up to `base_delay` and
    /// capped at `max_delay`.
    #[must_use]
    pub const fn with_backoff(mut self, base_delay: Duration, max_delay: Duration) -> Self {
        self.base_delay = base_delay;
        self.max_delay = max_delay;
        self
    }

    /// The same attempts, retried at once (no waiting between them).
    #[must_use]
    pub const fn without_backoff(self) -> Self {
        self.with_backoff(Duration::ZERO, Duration::ZERO)
    }

    /// The waits before each retry, one per retry (so `max_attempts - 1` of
    /// them), freshly jittered: the iterator's end means "give up".
    pub(crate) fn waits(&self) -> impl Iterator<Item = Duration> + Send + use<> {
        let retries = usize::try_from(self.max_attempts.max(1) - 1).unwrap_or(usize::MAX);
        let max_delay = self.max_delay;
        // The ceilings (base, 2 base, 4 base, ... up to max) come from backon
        // without its own jitter, which adds up to one delay on top (up to
        // twice the cap); full jitter draws below the ceiling instead.
        ExponentialBuilder::new()
            .with_min_delay(self.base_delay)
            .with_max_delay(max_delay)
            .with_max_times(retries)
            .build()
            .map(move |ceiling| full_jitter(ceiling.min(max_delay)))
    }
}

/// A duration drawn uniformly from `[0, ceiling]` (at nanosecond resolution).
fn full_jitter(ceiling: Duration) -> Duration {
    let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
    Duration::from_nanos(fastrand::u64(..=nanos))
}

impl Default for RetryPolicy {
    /// 16 attempts, waits of up to 2 ms before the first retry, doubling up
    /// to 100 ms (see [`RetryPolicy`]).
    fn default() -> Self {
        RetryPolicy::attempts(Self::DEFAULT_MAX_ATTEMPTS)
    }
}

/// Loads and changes aggregates of type `A` stored in `S`.
///
/// Two optional speed-ups keep loads cheap however long a stream grows:
/// - **snapshots** ([`with_snapshots`](Self::with_snapshots)): a load starts
///   from the latest valid snapshot and replays only the events after it;
/// - **a state cache** (`with_cache`, cargo feature
///   `cache`): a command on a cached stream skips the load entirely; the
///   append's `Exact(version)` check catches a stale entry, which is evicted
///   and the command retried on a fresh load.
///
/// Neither changes what a command decides or what a load returns (the state
/// folded from every event), only how much is read.
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
/// #     fn decide(&self, by: &u32) -> Result<Vec<CounterEvent>, Overflow> {
/// #         self.value.checked_add(*by).ok_or(Overflow)?;
/// #         Ok(vec![CounterEvent::Incremented { by: *by }])
/// #     }
/// #     fn evolve(&mut self, e: &CounterEvent) { let CounterEvent::Incremented { by } = e; self.value += by; }
/// # }
/// use eslab_core::{EventStore, Metadata, Repository, Version};
/// use eslab_memory::MemoryStore;
///
/// # tokio_test();
/// # fn tokio_test() { tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let repo: Repository<Counter, _> = Repository::new(EventStore::new(MemoryStore::new()));
/// let done = repo.execute("c1", &5, Metadata::now()).await.unwrap();
/// assert_eq!(done.version, Version::new(1));
/// repo.execute("c1", &2, Metadata::now()).await.unwrap();
/// let loaded = repo.load("c1").await.unwrap();
/// assert_eq!((loaded.state.value, loaded.version), (7, Version::new(2)));
/// # }) }
/// ```
pub struct Repository<A, S> {
    pub(crate) store: EventStore<S>,
    pub(crate) retry: RetryPolicy,
    pub(crate) locks: Option<StreamLocks>,
    pub(crate) snapshots: Option<Arc<dyn SnapshotHook<A>>>,
    pub(crate) idempotency_retention: Duration,
    #[cfg(feature = "cache")]
    pub(crate) cache: Option<crate::cache::StateCache<A>>,
    _aggregate: PhantomData<fn() -> A>,
}

impl<A, S: Clone> Clone for Repository<A, S> {
    fn clone(&self) -> Self {
        Repository {
            store: self.store.clone(),
            retry: self.retry,
            locks: self.locks.clone(),
            snapshots: self.snapshots.clone(),
            idempotency_retention: self.idempotency_retention,
            #[cfg(feature = "cache")]
            cache: self.cache.clone(),
            _aggregate: PhantomData,
        }
    }
}

impl<A, S: fmt::Debug> fmt::Debug for Repository<A, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Repository");
        d.field("store", &self.store)
            .field("retry", &self.retry)
            .field("stream_locks", &self.locks.as_ref().map_or(0, StreamLocks::stripes))
            .field("snapshots", &self.snapshots.as_ref().map(|s| s.policy()));
        #[cfg(feature = "cache")]
        d.field("cache", &self.cache);
        d.finish()
    }
}

/// The snapshot side of a repository, type-erased so that `Repository<A, S>`
/// keeps one shape whether or not `A` snapshots (and whatever store keeps the
/// snapshots). One boxed future per load is noise next to a store round trip.
pub(crate) trait SnapshotHook<A>: Send + Sync {
    fn policy(&self) -> SnapshotPolicy;

    /// The latest usable snapshot at or before `until`, if any. Never fails:
    /// an unusable snapshot only costs a full replay.
    fn load<'a>(&'a self, stream: &'a StreamId, until: Option<Version>) -> BoxFuture<'a, Option<Loaded<A>>>;

    fn save<'a>(&'a self, stream: &'a StreamId, state: &'a A, version: Version) -> BoxFuture<'a, Result<()>>;
}

struct SnapshotsIn<SS> {
    store: SS,
    policy: SnapshotPolicy,
    /// Seals the state's personal data, as the events' (the event store's keys).
    keys: Option<Arc<dyn crate::KeyStore>>,
}

impl<A: Snapshotting, SS: SnapshotStore> SnapshotHook<A> for SnapshotsIn<SS> {
    fn policy(&self) -> SnapshotPolicy {
        self.policy
    }

    fn load<'a>(&'a self, stream: &'a StreamId, until: Option<Version>) -> BoxFuture<'a, Option<Loaded<A>>> {
        Box::pin(async move {
            let snapshot = match self.store.load_snapshot(stream).await {
                Ok(Some(snapshot)) => snapshot,
                Ok(None) => return None,
                Err(error) => {
                    tracing::warn!(%stream, %error, "cannot read the snapshot; replaying every event");
                    return None;
                }
            };
            if until.is_some_and(|until| snapshot.version > until) {
                return None;
            }
            if snapshot.stream_id != *stream {
                tracing::warn!(%stream, found = %snapshot.stream_id, "snapshot of another stream ignored; replaying every event");
                return None;
            }
            if snapshot.state_schema_version != A::STATE_SCHEMA_VERSION {
                tracing::warn!(
                    %stream,
                    version = %snapshot.version,
                    found = snapshot.state_schema_version,
                    current = A::STATE_SCHEMA_VERSION,
                    "outdated snapshot ignored; replaying every event"
                );
                return None;
            }
            let mut state = snapshot.state;
            let place = || format!("the snapshot of {stream} at version {}", snapshot.version);
            let subject = A::subject(stream);
            if let Err(error) =
                crate::personal::open_state(self.keys.as_ref(), subject.as_ref(), &place, &mut state).await
            {
                tracing::warn!(%stream, version = %snapshot.version, %error, "snapshot not opened; replaying every event");
                return None;
            }
            match serde_json::from_value::<A>(state) {
                Ok(state) => Some(Loaded { state, version: snapshot.version }),
                Err(error) => {
                    tracing::warn!(%stream, version = %snapshot.version, %error, "undecodable snapshot ignored; replaying every event");
                    None
                }
            }
        })
    }

    fn save<'a>(&'a self, stream: &'a StreamId, state: &'a A, version: Version) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let mut state =
                serde_json::to_value(state).map_err(|source| Error::EncodeState { stream: stream.clone(), source })?;
            let place = || format!("the state of {stream} at version {version}");
            crate::personal::seal_state(self.keys.as_ref(), A::subject(stream), &place, &mut state).await?;
            let snapshot = Snapshot {
                stream_id: stream.clone(),
                version,
                state_schema_version: A::STATE_SCHEMA_VERSION,
                state,
                taken_at: time::OffsetDateTime::now_utc(),
            };
            self.store.save_snapshot(snapshot).await
        })
    }
}

/// Where a command's starting state came from.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Source {
    Store,
    #[cfg(feature = "cache")]
    Cache,
}

impl<A: Aggregate, S: EventStorage> Repository<A, S> {
    /// A repository over `store` with the default retry policy, no stream
    /// locks, no snapshots and no cache.
    pub fn new(store: EventStore<S>) -> Self {
        Repository {
            store,
            retry: RetryPolicy::default(),
            locks: None,
            snapshots: None,
            idempotency_retention: crate::idempotency::DEFAULT_RETENTION,
            #[cfg(feature = "cache")]
            cache: None,
            _aggregate: PhantomData,
        }
    }

    /// Sets the retry policy.
    #[must_use]
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// The retry policy.
    pub fn retry_policy(&self) -> RetryPolicy {
        self.retry
    }

    /// Serializes commands on the same stream within this process: each
    /// [`execute`](Self::execute) first takes an async lock (FIFO) on its
    /// stream's stripe, one of `stripes` locks the streams are hashed onto,
    /// and holds it until it returns. Commands on one aggregate then queue
    /// instead of conflicting and retrying; only writers in other processes
    /// (or other repositories) can still cause a conflict. Clones of the
    /// repository share the locks; loads never take them.
    ///
    /// Two streams on one stripe also wait for each other, so use a few
    /// times more stripes than commands expected in flight at once (e.g.
    /// 256). `0` turns the locks off (the default).
    #[must_use]
    pub fn with_stream_locks(mut self, stripes: usize) -> Self {
        self.locks = (stripes > 0).then(|| StreamLocks::new(stripes));
        self
    }

    /// Like [`with_stream_locks`](Self::with_stream_locks), with locks shared
    /// with other repositories (one set of locks for a process's aggregates).
    #[must_use]
    pub fn with_locks(mut self, locks: StreamLocks) -> Self {
        self.locks = Some(locks);
        self
    }

    /// Keeps snapshots of `A` in `snapshots` (often the event store's backend
    /// itself), taken per `policy` after each command and on demand with
    /// [`snapshot`](Self::snapshot).
    ///
    /// Loads then start from the latest snapshot whose
    /// [`state_schema_version`](Snapshot::state_schema_version) is
    /// [`A::STATE_SCHEMA_VERSION`](Snapshotting::STATE_SCHEMA_VERSION) and
    /// that decodes; any other snapshot is ignored with a warning and the state
    /// is replayed from the first event (and, with
    /// [`EveryNEvents(n)`](SnapshotPolicy::EveryNEvents), re-snapshotted by
    /// that load if it replayed at least `n` events). A snapshot that cannot be
    /// saved is logged and never fails the command.
    ///
    /// ```
    /// # use eslab_core::{Aggregate, DomainEvent};
    /// # #[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
    /// # enum CounterEvent { Incremented { by: u32 } }
    /// # impl DomainEvent for CounterEvent {
    /// #     const EVENT_TYPES: &'static [&'static str] = &["Incremented"];
    /// #     fn event_type(&self) -> &'static str { "Incremented" }
    /// # }
    /// # #[derive(Debug, thiserror::Error)] #[error("overflow")] struct Overflow;
    /// # #[derive(Debug, Default, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
    /// # struct Counter { value: u32 }
    /// # impl Aggregate for Counter {
    /// #     const KIND: &'static str = "counter";
    /// #     type Command = u32; type Event = CounterEvent; type Error = Overflow;
    /// #     fn decide(&self, by: &u32) -> Result<Vec<CounterEvent>, Overflow> { Ok(vec![CounterEvent::Incremented { by: *by }]) }
    /// #     fn evolve(&mut self, e: &CounterEvent) { let CounterEvent::Incremented { by } = e; self.value += by; }
    /// # }
    /// # impl eslab_core::Snapshotting for Counter { const STATE_SCHEMA_VERSION: u32 = 1; }
    /// use eslab_core::{EventStore, Metadata, Repository, SnapshotPolicy, SnapshotStore, StreamId, Version};
    /// use eslab_memory::MemoryStore;
    ///
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let backend = MemoryStore::new();
    /// let repo: Repository<Counter, _> = Repository::new(EventStore::new(backend.clone()))
    ///     .with_snapshots(backend.clone(), SnapshotPolicy::EveryNEvents(2));
    /// for _ in 0..3 {
    ///     repo.execute("c1", &1, Metadata::now()).await.unwrap();
    /// }
    /// let stream: StreamId = "counter-c1".parse().unwrap();
    /// let snapshot = backend.load_snapshot(&stream).await.unwrap().unwrap();
    /// assert_eq!(snapshot.version, Version::new(2));
    /// assert_eq!(repo.load("c1").await.unwrap().state.value, 3);
    /// # });
    /// ```
    #[must_use]
    pub fn with_snapshots<SS>(mut self, snapshots: SS, policy: SnapshotPolicy) -> Self
    where
        A: Snapshotting,
        SS: SnapshotStore + 'static,
    {
        let keys = self.store.keys().cloned();
        self.snapshots = Some(Arc::new(SnapshotsIn { store: snapshots, policy, keys }));
        self
    }

    /// The store it reads and writes.
    pub fn store(&self) -> &EventStore<S> {
        &self.store
    }

    /// Loads the aggregate `id`: from the cache if it holds the stream, else
    /// from the latest valid snapshot (if any) plus the events after it.
    ///
    /// With a cache, the state may lag writes made behind this repository's
    /// back (by another process or repository); commands never act on such a
    /// lag unchecked. [`load_latest`](Self::load_latest) never lags.
    pub async fn load(&self, id: &str) -> Result<Loaded<A>> {
        let stream = A::stream_id(id)?;
        #[cfg(feature = "cache")]
        if let Some(hit) = self.cache.as_ref().and_then(|c| c.get(&stream)) {
            return Ok(hit);
        }
        let loaded = self.load_from_store(&stream, None).await?;
        #[cfg(feature = "cache")]
        if let Some(cache) = &self.cache {
            cache.offer(&stream, &loaded.state, loaded.version);
        }
        Ok(loaded)
    }

    /// Loads the aggregate `id` as stored now (a strong read): with a cache
    /// holding the stream, the cached state plus the events stored after it
    /// (usually none: one short read instead of a replay); otherwise as
    /// [`load`](Self::load). Never older than the store; refreshes the cache.
    pub async fn load_latest(&self, id: &str) -> Result<Loaded<A>> {
        let stream = A::stream_id(id)?;
        #[cfg(feature = "cache")]
        if let Some(cache) = &self.cache {
            let loaded = match cache.get(&stream) {
                Some(hit) => self.replay(&stream, hit, None).await?.0,
                None => self.load_from_store(&stream, None).await?,
            };
            cache.offer(&stream, &loaded.state, loaded.version);
            return Ok(loaded);
        }
        self.load_from_store(&stream, None).await
    }

    /// Loads the aggregate as it was at `version` (or now, with `None`).
    ///
    /// A snapshot taken after `version` is not used, and neither is the
    /// cache: the state is the fold of exactly the events up to `version`.
    pub async fn load_until(&self, id: &str, version: Option<Version>) -> Result<Loaded<A>> {
        match version {
            None => self.load(id).await,
            Some(_) => self.load_from_store(&A::stream_id(id)?, version).await,
        }
    }

    /// Latest usable snapshot, then the events after it, up to `until`.
    async fn load_from_store(&self, stream: &StreamId, until: Option<Version>) -> Result<Loaded<A>> {
        let snapshot = match &self.snapshots {
            Some(hook) => hook.load(stream, until).await,
            None => None,
        };
        let from_snapshot = snapshot.is_some();
        let start = snapshot.unwrap_or_else(|| Loaded { state: A::default(), version: Version::NONE });
        let (loaded, replayed) = self.replay(stream, start, until).await?;
        // A load that had no usable snapshot and replayed a policy's worth of
        // events (a new stream type, or a bumped state schema version) leaves
        // a snapshot behind, so the next load is cheap again.
        if let Some(hook) = &self.snapshots
            && until.is_none()
            && !from_snapshot
            && let SnapshotPolicy::EveryNEvents(n) = hook.policy()
            && n > 0
            && replayed >= n
        {
            self.save_snapshot_logged(hook.as_ref(), stream, &loaded.state, loaded.version).await;
        }
        Ok(loaded)
    }

    /// `loaded` plus the events of `stream` after it, up to `until`; also
    /// says how many events it replayed.
    async fn replay(
        &self,
        stream: &StreamId,
        mut loaded: Loaded<A>,
        until: Option<Version>,
    ) -> Result<(Loaded<A>, u64)> {
        let from = loaded.version.next().ok_or_else(|| Error::OutOfRange("stream version".into()))?;
        let mut replayed: u64 = 0;
        let mut events = std::pin::pin!(self.store.stream_events_lean(stream, from));
        while let Some(recorded) = events.try_next().await? {
            if until.is_some_and(|v| recorded.stream_version > v) {
                break;
            }
            let event: A::Event = JsonCodec.decode_lean(stream, &recorded)?;
            loaded.state.evolve(&event);
            loaded.version = recorded.stream_version;
            replayed += 1;
        }
        Ok((loaded, replayed))
    }

    pub(crate) async fn save_snapshot_logged(
        &self,
        hook: &dyn SnapshotHook<A>,
        stream: &StreamId,
        state: &A,
        version: Version,
    ) {
        if let Err(error) = hook.save(stream, state, version).await {
            tracing::warn!(%stream, %version, %error, "cannot save a snapshot; loads replay more events until the next one");
        }
    }

    /// Takes a snapshot of the aggregate `id` now, whatever the policy, and
    /// returns its version (`None` for a stream with no events: nothing to keep).
    ///
    /// # Errors
    /// [`Error::InvalidRequest`] if the repository has no snapshot store
    /// ([`with_snapshots`](Self::with_snapshots)); a load or save failure.
    pub async fn snapshot(&self, id: &str) -> Result<Option<Version>> {
        let Some(hook) = &self.snapshots else {
            return Err(Error::InvalidRequest("this repository keeps no snapshots (see with_snapshots)".into()));
        };
        let stream = A::stream_id(id)?;
        let loaded = self.load(id).await?;
        if loaded.version.is_none() {
            return Ok(None);
        }
        hook.save(&stream, &loaded.state, loaded.version).await?;
        Ok(Some(loaded.version))
    }

    /// The state a command starts from: the cached one when allowed and
    /// present, else a load from the store (which refreshes the cache).
    pub(crate) async fn load_for_command(&self, stream: &StreamId, use_cache: bool) -> Result<(Loaded<A>, Source)> {
        #[cfg(feature = "cache")]
        if let Some(cache) = &self.cache {
            if use_cache && let Some(hit) = cache.get(stream) {
                return Ok((hit, Source::Cache));
            }
            let loaded = self.load_from_store(stream, None).await?;
            cache.offer(stream, &loaded.state, loaded.version);
            return Ok((loaded, Source::Store));
        }
        let _ = use_cache;
        Ok((self.load_from_store(stream, None).await?, Source::Store))
    }

    pub(crate) fn forget(&self, stream: &StreamId) {
        #[cfg(feature = "cache")]
        if let Some(cache) = &self.cache {
            cache.evict(stream);
        }
        let _ = stream;
    }
}

#[cfg(feature = "cache")]
/// The state cache (feature `cache`).
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
    /// made behind the repository's back; [`load_latest`](Self::load_latest)
    /// reads the events after the cached state, and
    /// [`load_until`](Self::load_until) with a version never uses it.
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
        self.cache = Some(crate::cache::StateCache::with_capacity(max_entries));
        self
    }

    /// Like [`with_cache`](Self::with_cache), but bounded by the total weight
    /// of the cached states, each weighed by `weigher` (e.g. an estimate of
    /// its size in bytes; feature `cache`).
    #[must_use]
    pub fn with_weighted_cache(mut self, max_weight: u64, weigher: impl Fn(&A) -> u32 + Send + Sync + 'static) -> Self {
        self.cache = Some(crate::cache::StateCache::weighted(max_weight, weigher));
        self
    }

    /// How many streams the cache holds now (`None` without a cache; feature
    /// `cache`). Settles pending evictions first, so the count is exact.
    pub fn cached_streams(&self) -> Option<u64> {
        self.cache.as_ref().map(crate::cache::StateCache::entry_count)
    }

    /// Drops the cached state of `id`, e.g. after writing to its stream
    /// outside this repository (feature `cache`). A no-op without a cache.
    pub fn evict(&self, id: &str) {
        if let (Some(cache), Ok(stream)) = (&self.cache, A::stream_id(id)) {
            cache.evict(&stream);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn waits_are_full_jitter_below_doubling_capped_ceilings() {
        let ceilings = [1, 2, 4, 8, 16, 32, 64, 100, 100].map(ms);
        let policy = RetryPolicy::attempts(10).with_backoff(ms(1), ms(100));
        let mut drawn = Vec::new();
        for _ in 0..200 {
            let waits: Vec<Duration> = policy.waits().collect();
            assert_eq!(waits.len(), ceilings.len(), "one wait per retry: 10 attempts, 9 waits");
            for (wait, ceiling) in waits.iter().zip(ceilings) {
                // backon doubles in f32 seconds: allow for its rounding.
                assert!(*wait <= ceiling + Duration::from_micros(1), "{wait:?} above its ceiling {ceiling:?}");
            }
            drawn.extend(waits);
        }
        // Full jitter draws from the whole range, not just near the ceiling:
        // of 200 draws below 100 ms, some fall in its lower half (each does
        // with probability 1/2).
        let last: Vec<&Duration> = drawn.iter().skip(8).step_by(9).collect();
        assert!(last.iter().any(|w| **w < ms(50)), "no draw below half the cap in 200");
        assert!(last.iter().any(|w| **w >= ms(50)), "no draw above half the cap in 200");
    }

    #[test]
    fn attempt_counts_and_edge_policies() {
        assert_eq!(RetryPolicy::NEVER.waits().count(), 0);
        assert_eq!(RetryPolicy::attempts(0).waits().count(), 0, "0 attempts is 1");
        assert_eq!(RetryPolicy::attempts(4).waits().count(), 3);
        let immediate: Vec<Duration> = RetryPolicy::attempts(5).without_backoff().waits().collect();
        assert_eq!(immediate, [Duration::ZERO; 4]);
        let capped = RetryPolicy::attempts(4).with_backoff(ms(50), ms(10));
        assert!(capped.waits().all(|w| w <= ms(10)), "the cap holds even below the base");
        let default = RetryPolicy::default();
        assert_eq!((default.max_attempts, default.base_delay, default.max_delay), (16, ms(2), ms(100)));
        assert_eq!(default.waits().count(), 15);
        assert_eq!(RetryPolicy::attempts(3).with_backoff(ms(2), ms(100)), RetryPolicy::attempts(3));
    }
}
