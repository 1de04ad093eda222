//! The repository conformance suite: snapshots, the state cache and upcasting
//! through [`Repository`], over any store that keeps events and snapshots.
//!
//! Like [`conformance`](crate::conformance), each test is a public async
//! function taking a factory of *fresh, empty* stores, and
//! [`repository_conformance_tests!`](crate::repository_conformance_tests)
//! turns them all into `#[test]`s:
//!
//! ```
//! async fn new_store() -> eslab_memory::MemoryStore {
//!     eslab_memory::MemoryStore::new()
//! }
//! eslab_testing::repository_conformance_tests!(new_store);
//! # fn main() {}
//! ```
//!
//! The tests use [`Tally`], a small snapshotting aggregate whose state depends
//! on the order of its events, and [`CountingStore`], which counts what a
//! load reads, to prove that snapshots and the cache actually save reads (and
//! can pause after each read, to make concurrent commands interleave).

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use eslab_core::{
    Aggregate, DomainEvent, Error, EventAppender, EventReader, EventStorage, EventStore, ExpectedVersion, LeanEvent,
    Metadata, NewEvent, RecordedEvent, Repository, Result, Snapshot, SnapshotPolicy, SnapshotStore, Snapshotting,
    StreamId, Upcasters, Version,
};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, TestRng, TestRunner};
use serde::{Deserialize, Serialize};
use serde_json::json;

/// What the suite needs of a store: events and snapshots, cloneable, shared across tasks.
pub trait RepositoryTestStore: EventStorage + SnapshotStore + Clone + 'static {}
impl<T: EventStorage + SnapshotStore + Clone + 'static> RepositoryTestStore for T {}

/// Expands to one `#[test]` per repository conformance test, in a module
/// named `repository_conformance`, each calling `$factory().await` for a
/// fresh store that keeps events and snapshots.
#[macro_export]
macro_rules! repository_conformance_tests {
    ($factory:path) => {
        $crate::repository_conformance_tests!(@tests $factory;
            snapshots_every_n,
            load_starts_from_the_snapshot,
            outdated_snapshot_is_ignored_and_replaced,
            undecodable_snapshot_is_ignored,
            load_until_ignores_later_snapshots,
            snapshot_on_demand,
            failing_snapshot_store_never_fails_a_command,
            cache_hit_skips_reads,
            cache_conflict_evicts_and_reloads,
            cache_refusal_is_rechecked_on_a_fresh_load,
            cache_expected_version_is_rechecked_on_a_fresh_load,
            cache_is_bounded,
            upcasting_through_the_repository,
            unknown_or_newer_events_are_typed_errors,
            random_commands_snapshots_and_cache_agree_with_replay,
            contended_commands_succeed_with_default_retries,
            stream_locks_queue_contended_commands,
            idempotent_commands_replay_the_first_answer,
            concurrent_retries_with_one_key_get_one_answer,
            expected_version_and_existence_are_checked,
            decisions_append_other_streams_atomically,
            cached_load_catches_up_with_writes_behind_its_back
        );
    };
    (@tests $factory:path; $($name:ident),* $(,)?) => {
        #[allow(missing_docs)]
        mod repository_conformance {
            #[allow(unused_imports)]
            use super::*;
            $(
                #[test]
                fn $name() {
                    $crate::block_on($crate::repository::$name(|| $factory()));
                }
            )*
        }
    };
}

// ---------------------------------------------------------------------------
// The test aggregate

/// A running total whose state depends on the order of its events (the
/// checksum), so a wrong snapshot or a skipped event shows.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tally {
    /// Sum of the added numbers.
    pub total: i64,
    /// How many numbers were added.
    pub count: u64,
    /// An order-sensitive hash of the added numbers.
    pub checksum: u64,
    /// Closed tallies refuse every command.
    pub closed: bool,
}

/// What a [`Tally`] is asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TallyCommand {
    /// Add one number (one event).
    Add(i64),
    /// Add several numbers (one event each, one append).
    AddMany(Vec<i64>),
    /// Close the tally.
    Close,
}

/// What happened to a [`Tally`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TallyEvent {
    /// A number was added. Schema version 2: version 1 called the field
    /// `value` (see [`tally_upcasters`]).
    Added {
        /// The number.
        n: i64,
    },
    /// The tally was closed.
    Closed,
}

impl DomainEvent for TallyEvent {
    const EVENT_TYPES: &'static [&'static str] = &["Added", "Closed"];

    fn event_type(&self) -> &'static str {
        match self {
            TallyEvent::Added { .. } => "Added",
            TallyEvent::Closed => "Closed",
        }
    }

    fn schema_version(&self) -> u32 {
        match self {
            TallyEvent::Added { .. } => 2,
            TallyEvent::Closed => 1,
        }
    }
}

/// Why a [`Tally`] refused a command.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TallyError {
    /// The tally is closed.
    #[error("the tally is closed")]
    Closed,
    /// The total would overflow.
    #[error("the total would overflow")]
    Overflow,
}

impl Aggregate for Tally {
    const KIND: &'static str = "tally";
    type Command = TallyCommand;
    type Event = TallyEvent;
    type Error = TallyError;

    fn decide(&self, command: &TallyCommand) -> Result<Vec<TallyEvent>, TallyError> {
        if self.closed {
            return Err(TallyError::Closed);
        }
        let added = |ns: &[i64]| {
            ns.iter().try_fold(self.total, |t, n| t.checked_add(*n)).ok_or(TallyError::Overflow)?;
            Ok(ns.iter().map(|&n| TallyEvent::Added { n }).collect())
        };
        match command {
            TallyCommand::Add(n) => added(&[*n]),
            TallyCommand::AddMany(ns) => added(ns),
            TallyCommand::Close => Ok(vec![TallyEvent::Closed]),
        }
    }

    fn evolve(&mut self, event: &TallyEvent) {
        match event {
            TallyEvent::Added { n } => {
                self.total = self.total.saturating_add(*n);
                self.count += 1;
                self.checksum = self.checksum.wrapping_mul(31).wrapping_add(n.cast_unsigned());
            }
            TallyEvent::Closed => self.closed = true,
        }
    }
}

impl Snapshotting for Tally {
    const STATE_SCHEMA_VERSION: u32 = 1;
}

/// The upcaster of [`TallyEvent::Added`]: v1 `{"value": n}` → v2 `{"n": n}`.
pub fn tally_upcasters() -> Upcasters {
    Upcasters::new()
        .register("Added", 1, 2, |mut payload| {
            let value = payload.as_object_mut().and_then(|p| p.remove("value")).ok_or("no value")?;
            Ok(json!({ "n": value }))
        })
        .expect("one upcaster per (type, version)")
}

// ---------------------------------------------------------------------------
// The counting store

#[derive(Debug, Default)]
struct Counts {
    stream_reads: AtomicU64,
    events_read: AtomicU64,
}

/// Wraps a store and counts stream reads and the events they return, so a
/// test can prove what a load did (or did not) read. Clones share the counts.
///
/// With [`with_read_pause`](Self::with_read_pause) each stream read also
/// waits before returning, which widens the window between a command's load
/// and its append: concurrent commands on one stream then really conflict,
/// however fast the store.
#[derive(Debug, Clone)]
pub struct CountingStore<S> {
    inner: S,
    counts: Arc<Counts>,
    read_pause: Option<Duration>,
}

impl<S> CountingStore<S> {
    /// Wraps `inner`, counts at zero, no pause.
    pub fn new(inner: S) -> Self {
        CountingStore { inner, counts: Arc::default(), read_pause: None }
    }

    /// Makes every `read_stream` sleep `pause` (on Tokio's timer) after reading.
    #[must_use]
    pub fn with_read_pause(mut self, pause: Duration) -> Self {
        self.read_pause = Some(pause);
        self
    }

    /// Events returned by `read_stream` since the last reset.
    pub fn events_read(&self) -> u64 {
        self.counts.events_read.load(Ordering::SeqCst)
    }

    /// `read_stream` calls since the last reset.
    pub fn stream_reads(&self) -> u64 {
        self.counts.stream_reads.load(Ordering::SeqCst)
    }

    /// Sets both counts to zero.
    pub fn reset(&self) {
        self.counts.events_read.store(0, Ordering::SeqCst);
        self.counts.stream_reads.store(0, Ordering::SeqCst);
    }

    /// The wrapped store.
    pub fn inner(&self) -> &S {
        &self.inner
    }

    /// Counts a stream read of `events` events, then pauses if asked to.
    async fn counted(&self, events: usize) {
        self.counts.stream_reads.fetch_add(1, Ordering::SeqCst);
        self.counts.events_read.fetch_add(u64::try_from(events).unwrap_or(u64::MAX), Ordering::SeqCst);
        if let Some(pause) = self.read_pause {
            tokio::time::sleep(pause).await;
        }
    }
}

crate::forward_store! {
    impl[S: EventReader] EventReader for CountingStore<S> => inner {
        async fn read_stream(&self, stream: &StreamId, from: Version, limit: usize) -> Result<Vec<RecordedEvent>> {
            let page = self.inner.read_stream(stream, from, limit).await?;
            self.counted(page.len()).await;
            Ok(page)
        }

        async fn read_stream_lean(&self, stream: &StreamId, from: Version, limit: usize) -> Result<Vec<LeanEvent>> {
            let page = self.inner.read_stream_lean(stream, from, limit).await?;
            self.counted(page.len()).await;
            Ok(page)
        }
    }
    impl[S: EventAppender] EventAppender for CountingStore<S> => inner {}
    impl[S: SnapshotStore] SnapshotStore for CountingStore<S> => inner {}
}

/// A snapshot store whose every call fails.
#[derive(Debug, Clone, Copy, Default)]
pub struct FailingSnapshots;

impl SnapshotStore for FailingSnapshots {
    async fn load_snapshot(&self, _: &StreamId) -> Result<Option<Snapshot>> {
        Err(Error::backend("snapshot store down"))
    }

    async fn save_snapshot(&self, _: Snapshot) -> Result<()> {
        Err(Error::backend("snapshot store down"))
    }
}

// ---------------------------------------------------------------------------
// Helpers

type Repo<S> = Repository<Tally, CountingStore<S>>;

fn plain<S: RepositoryTestStore>(store: &CountingStore<S>) -> Repo<S> {
    Repository::new(EventStore::new(store.clone()).with_upcasters(tally_upcasters()))
}

fn snapshotting<S: RepositoryTestStore>(store: &CountingStore<S>, policy: SnapshotPolicy) -> Repo<S> {
    plain(store).with_snapshots(store.clone(), policy)
}

fn stream_of(id: &str) -> StreamId {
    Tally::stream_id(id).expect("valid id")
}

async fn run<S: RepositoryTestStore>(repo: &Repo<S>, id: &str, command: TallyCommand) -> eslab_core::Executed<Tally> {
    repo.execute(id, &command, Metadata::now()).await.unwrap_or_else(|e| panic!("{command:?} on {id}: {e}"))
}

async fn add_each<S: RepositoryTestStore>(repo: &Repo<S>, id: &str, ns: impl IntoIterator<Item = i64>) {
    for n in ns {
        run(repo, id, TallyCommand::Add(n)).await;
    }
}

/// The state folded from every stored event (upcast and decoded), up to `until`.
async fn fold_stored<S: RepositoryTestStore>(store: &CountingStore<S>, id: &str, until: Option<Version>) -> Tally {
    let events = EventStore::new(store.inner().clone()).with_upcasters(tally_upcasters());
    let page = events.read_stream(&stream_of(id), Version::FIRST, usize::MAX).await.expect("read");
    let typed: Vec<TallyEvent> = page
        .iter()
        .filter(|e| until.is_none_or(|u| e.stream_version <= u))
        .map(|e| events.decode(e).expect("decode"))
        .collect();
    Tally::fold(&typed)
}

async fn snapshot_of<S: RepositoryTestStore>(store: &CountingStore<S>, id: &str) -> Option<Snapshot> {
    store.load_snapshot(&stream_of(id)).await.expect("load snapshot")
}

fn fake_snapshot(id: &str, version: u64, state_schema_version: u32, state: serde_json::Value) -> Snapshot {
    Snapshot {
        stream_id: stream_of(id),
        version: Version::new(version),
        state_schema_version,
        state,
        taken_at: time::OffsetDateTime::now_utc(),
    }
}

fn bogus_state() -> serde_json::Value {
    serde_json::to_value(Tally { total: 1_000_000, count: 1, checksum: 7, closed: false }).expect("encode")
}

// ---------------------------------------------------------------------------
// Snapshots

/// With `EveryNEvents(5)`, a snapshot is taken when a command crosses a
/// multiple of 5 (also by a multi-event command), holding the folded state.
pub async fn snapshots_every_n<S: RepositoryTestStore, F: Future<Output = S>>(new: impl Fn() -> F) {
    let store = CountingStore::new(new().await);
    let repo = snapshotting(&store, SnapshotPolicy::EveryNEvents(5));
    // Handlers run on multi-threaded runtimes (axum): the futures must be Send.
    fn send<T: Send>(future: T) -> T {
        future
    }
    send(repo.execute("n", &TallyCommand::Add(1), Metadata::now())).await.expect("add");
    send(repo.load("n")).await.expect("load");
    add_each(&repo, "n", 2..=4).await;
    assert!(snapshot_of(&store, "n").await.is_none(), "no snapshot before version 5");
    add_each(&repo, "n", 5..=5).await;
    let snap = snapshot_of(&store, "n").await.expect("snapshot at 5");
    assert_eq!((snap.version, snap.state_schema_version), (Version::new(5), Tally::STATE_SCHEMA_VERSION));
    assert_eq!(serde_json::from_value::<Tally>(snap.state).expect("decodes"), fold_stored(&store, "n", None).await);
    add_each(&repo, "n", 6..=9).await;
    assert_eq!(snapshot_of(&store, "n").await.expect("snapshot").version, Version::new(5));
    let done = run(&repo, "n", TallyCommand::AddMany(vec![10, 11, 12, 13])).await;
    assert_eq!(done.version, Version::new(13));
    let snap = snapshot_of(&store, "n").await.expect("snapshot");
    assert_eq!(snap.version, Version::new(13), "a command crossing 10 snapshots at its end version");
    assert_eq!(serde_json::from_value::<Tally>(snap.state).expect("decodes"), done.state);
    let never = snapshotting(&store, SnapshotPolicy::Never);
    add_each(&never, "never", 1..=20).await;
    assert!(snapshot_of(&store, "never").await.is_none(), "Never takes none");
}

/// A load reads only the events after the snapshot, and really starts from
/// the snapshot's state (a planted snapshot shows through).
pub async fn load_starts_from_the_snapshot<S: RepositoryTestStore, F: Future<Output = S>>(new: impl Fn() -> F) {
    let store = CountingStore::new(new().await);
    let repo = snapshotting(&store, SnapshotPolicy::EveryNEvents(10));
    add_each(&repo, "a", 1..=25).await;
    store.reset();
    let loaded = snapshotting(&store, SnapshotPolicy::EveryNEvents(10)).load("a").await.expect("load");
    assert_eq!(store.events_read(), 5, "only events 21..=25 are read");
    assert_eq!(loaded.state, fold_stored(&store, "a", None).await);
    assert_eq!(loaded.version, Version::new(25));
    store.reset();
    let full = plain(&store).load("a").await.expect("load");
    assert_eq!(store.events_read(), 25, "without snapshots every event is read");
    assert_eq!(full, loaded);

    // Plant a snapshot with a state no replay could produce: it must show.
    let never = snapshotting(&store, SnapshotPolicy::Never);
    add_each(&never, "planted", 1..=5).await;
    store.save_snapshot(fake_snapshot("planted", 3, Tally::STATE_SCHEMA_VERSION, bogus_state())).await.expect("plant");
    store.reset();
    let loaded = never.load("planted").await.expect("load");
    assert_eq!(store.events_read(), 2);
    assert_eq!((loaded.state.total, loaded.state.count, loaded.version), (1_000_000 + 4 + 5, 3, Version::new(5)));
}

/// A snapshot of another state schema version is ignored (full replay), and a
/// load that replayed a policy's worth of events replaces it.
pub async fn outdated_snapshot_is_ignored_and_replaced<S: RepositoryTestStore, F: Future<Output = S>>(
    new: impl Fn() -> F,
) {
    let store = CountingStore::new(new().await);
    add_each(&plain(&store), "old", 1..=8).await;
    let outdated = Tally::STATE_SCHEMA_VERSION + 1;
    store.save_snapshot(fake_snapshot("old", 6, outdated, bogus_state())).await.expect("plant");
    store.reset();
    let repo = snapshotting(&store, SnapshotPolicy::EveryNEvents(4));
    let loaded = repo.load("old").await.expect("load");
    assert_eq!(store.events_read(), 8, "full replay");
    assert_eq!((loaded.state, loaded.version), (fold_stored(&store, "old", None).await, Version::new(8)));
    let snap = snapshot_of(&store, "old").await.expect("a snapshot");
    assert_eq!((snap.version, snap.state_schema_version), (Version::new(8), Tally::STATE_SCHEMA_VERSION));
    store.reset();
    repo.load("old").await.expect("load");
    assert_eq!(store.events_read(), 0, "the replacement snapshot is used");
}

/// A snapshot whose state does not decode is ignored: full replay, right state.
pub async fn undecodable_snapshot_is_ignored<S: RepositoryTestStore, F: Future<Output = S>>(new: impl Fn() -> F) {
    let store = CountingStore::new(new().await);
    add_each(&plain(&store), "bad", 1..=8).await;
    let garbage = json!({ "total": "not a number", "checksum": [1, 2] });
    store.save_snapshot(fake_snapshot("bad", 6, Tally::STATE_SCHEMA_VERSION, garbage)).await.expect("plant");
    store.reset();
    let loaded = snapshotting(&store, SnapshotPolicy::EveryNEvents(100)).load("bad").await.expect("load");
    assert_eq!(store.events_read(), 8, "full replay");
    assert_eq!((loaded.state, loaded.version), (fold_stored(&store, "bad", None).await, Version::new(8)));
    let loaded = snapshotting(&store, SnapshotPolicy::Never)
        .execute("bad", &TallyCommand::Add(9), Metadata::now())
        .await
        .expect("a command on a stream with a broken snapshot");
    assert_eq!(loaded.state, fold_stored(&store, "bad", None).await);
}

/// `load_until` folds exactly the events up to the version asked, whether the
/// snapshot lies before, at or after it.
pub async fn load_until_ignores_later_snapshots<S: RepositoryTestStore, F: Future<Output = S>>(new: impl Fn() -> F) {
    let store = CountingStore::new(new().await);
    let repo = snapshotting(&store, SnapshotPolicy::EveryNEvents(5));
    add_each(&repo, "u", 1..=12).await;
    assert_eq!(snapshot_of(&store, "u").await.expect("snapshot").version, Version::new(10));
    for until in [1, 3, 9, 10, 11, 12] {
        let v = Version::new(until);
        let loaded = repo.load_until("u", Some(v)).await.expect("load until");
        assert_eq!(loaded.version, v);
        assert_eq!(loaded.state, fold_stored(&store, "u", Some(v)).await, "state at version {until}");
    }
    let loaded = repo.load_until("u", Some(Version::new(50))).await.expect("beyond the end");
    assert_eq!((loaded.state, loaded.version), (fold_stored(&store, "u", None).await, Version::new(12)));
    let loaded = repo.load_until("u", None).await.expect("now");
    assert_eq!(loaded.version, Version::new(12));
}

/// `snapshot(id)` takes one whatever the policy; nothing for an empty stream;
/// an error for a repository without a snapshot store.
pub async fn snapshot_on_demand<S: RepositoryTestStore, F: Future<Output = S>>(new: impl Fn() -> F) {
    let store = CountingStore::new(new().await);
    let repo = snapshotting(&store, SnapshotPolicy::Never);
    add_each(&repo, "d", 1..=7).await;
    assert_eq!(repo.snapshot("d").await.expect("snapshot"), Some(Version::new(7)));
    let snap = snapshot_of(&store, "d").await.expect("snapshot");
    assert_eq!(snap.version, Version::new(7));
    store.reset();
    let loaded = repo.load("d").await.expect("load");
    assert_eq!((store.events_read(), loaded.state), (0, fold_stored(&store, "d", None).await));
    assert_eq!(repo.snapshot("empty").await.expect("snapshot"), None);
    assert!(snapshot_of(&store, "empty").await.is_none());
    assert!(matches!(plain(&store).snapshot("d").await, Err(Error::InvalidRequest(_))));
}

/// A snapshot store that fails on every call slows loads down (full replay)
/// but never fails a command or a load.
pub async fn failing_snapshot_store_never_fails_a_command<S: RepositoryTestStore, F: Future<Output = S>>(
    new: impl Fn() -> F,
) {
    let store = CountingStore::new(new().await);
    let repo = plain(&store).with_snapshots(FailingSnapshots, SnapshotPolicy::EveryNEvents(2));
    add_each(&repo, "f", 1..=5).await;
    let loaded = repo.load("f").await.expect("load");
    assert_eq!((loaded.state, loaded.version), (fold_stored(&store, "f", None).await, Version::new(5)));
    assert!(repo.snapshot("f").await.is_err(), "an explicit snapshot reports the failure");
}

// ---------------------------------------------------------------------------
// Cache

/// A command or a load on a cached stream reads nothing from the store.
pub async fn cache_hit_skips_reads<S: RepositoryTestStore, F: Future<Output = S>>(new: impl Fn() -> F) {
    let store = CountingStore::new(new().await);
    let repo = plain(&store).with_cache(100);
    add_each(&repo, "c", 1..=3).await;
    store.reset();
    let done = run(&repo, "c", TallyCommand::Add(4)).await;
    assert_eq!((store.stream_reads(), store.events_read()), (0, 0), "a command on a cached stream skips the load");
    assert_eq!(done.state, fold_stored(&store, "c", None).await);
    store.reset();
    let loaded = repo.load("c").await.expect("load");
    assert_eq!(store.stream_reads(), 0, "a load on a cached stream reads nothing");
    assert_eq!((loaded.state, loaded.version), (done.state, Version::new(4)));
    // A load fills the cache too.
    add_each(&plain(&store), "warm", 1..=3).await;
    let cold = plain(&store).with_cache(100);
    cold.load("warm").await.expect("load");
    store.reset();
    run(&cold, "warm", TallyCommand::Add(4)).await;
    assert_eq!(store.stream_reads(), 0, "loaded once, then served from the cache");
}

/// Another writer appends behind the cache's back: the cached repository's
/// next command conflicts, evicts, reloads and succeeds on the right state.
pub async fn cache_conflict_evicts_and_reloads<S: RepositoryTestStore, F: Future<Output = S>>(new: impl Fn() -> F) {
    let store = CountingStore::new(new().await);
    let cached = plain(&store).with_cache(100);
    let other = plain(&store);
    add_each(&cached, "x", [1, 2]).await;
    add_each(&other, "x", [30]).await;
    let stale = cached.load("x").await.expect("load");
    assert_eq!(stale.version, Version::new(2), "load may lag writes made behind the cache's back");
    store.reset();
    let done = run(&cached, "x", TallyCommand::Add(400)).await;
    assert_eq!(done.attempts, 2, "the stale entry cost one conflict");
    assert_eq!(store.events_read(), 3, "one reload");
    assert_eq!(done.version, Version::new(4));
    assert_eq!(done.state, fold_stored(&store, "x", None).await);
    assert_eq!(done.state.total, 433);
    let loaded = cached.load("x").await.expect("load");
    assert_eq!((loaded.state, loaded.version), (done.state, done.version), "the cache holds the new state");
    // With no retries left, the conflict surfaces and the entry is gone.
    let no_retry = plain(&store).with_cache(100).with_retry(eslab_core::RetryPolicy::NEVER);
    no_retry.load("x").await.expect("warm");
    add_each(&other, "x", [5]).await;
    let err = no_retry.execute("x", &TallyCommand::Add(1), Metadata::now()).await.expect_err("conflict");
    assert!(err.is_conflict(), "{err}");
    let done = run(&no_retry, "x", TallyCommand::Add(1)).await;
    assert_eq!((done.attempts, done.state.total), (1, 439), "reloaded after the eviction");
}

/// A refusal decided on a cached state is checked again on a fresh load: the
/// cached state may be stale, and the fresh one accept the command.
pub async fn cache_refusal_is_rechecked_on_a_fresh_load<S: RepositoryTestStore, F: Future<Output = S>>(
    new: impl Fn() -> F,
) {
    let store = CountingStore::new(new().await);
    let cached = plain(&store).with_cache(100);
    run(&cached, "r", TallyCommand::Add(i64::MAX)).await;
    run(&plain(&store), "r", TallyCommand::Add(-10)).await;
    let done = run(&cached, "r", TallyCommand::Add(5)).await;
    assert_eq!((done.state.total, done.version), (i64::MAX - 5, Version::new(3)));
    let refused = cached.execute("r", &TallyCommand::Add(100), Metadata::now()).await;
    assert!(
        matches!(refused, Err(eslab_core::CommandError::Rejected(TallyError::Overflow))),
        "a refusal confirmed by the store is returned: {refused:?}"
    );
}

/// `execute_expecting` on a stale cached version re-checks on a fresh load.
pub async fn cache_expected_version_is_rechecked_on_a_fresh_load<S: RepositoryTestStore, F: Future<Output = S>>(
    new: impl Fn() -> F,
) {
    let store = CountingStore::new(new().await);
    let cached = plain(&store).with_cache(100);
    run(&cached, "e", TallyCommand::Add(1)).await;
    run(&plain(&store), "e", TallyCommand::Add(2)).await;
    let done = cached
        .execute_expecting("e", Some(Version::new(2)), &TallyCommand::Add(3), Metadata::now())
        .await
        .expect("the store is at 2, whatever the cache said");
    assert_eq!((done.version, done.state.total), (Version::new(3), 6));
    let err = cached
        .execute_expecting("e", Some(Version::new(2)), &TallyCommand::Add(3), Metadata::now())
        .await
        .expect_err("the store is at 3");
    assert!(err.is_conflict());
}

/// The cache holds at most its capacity, by entry count or by weight.
pub async fn cache_is_bounded<S: RepositoryTestStore, F: Future<Output = S>>(new: impl Fn() -> F) {
    let store = CountingStore::new(new().await);
    let repo = plain(&store).with_cache(8);
    for i in 0..40 {
        run(&repo, &format!("b{i}"), TallyCommand::Add(i)).await;
    }
    let held = repo.cached_streams().expect("a cache");
    assert!(held <= 8, "holds {held} streams, capacity 8");
    let weighted = plain(&store).with_weighted_cache(10, |_| 4);
    for i in 0..40 {
        weighted.load(&format!("b{i}")).await.expect("load");
    }
    let held = weighted.cached_streams().expect("a cache");
    assert!(held <= 2, "holds {held} streams weighing 4 each, capacity 10");
    assert_eq!(plain(&store).cached_streams(), None);
    // Correctness never depends on what was evicted.
    for i in 0..40 {
        let loaded = repo.load(&format!("b{i}")).await.expect("load");
        assert_eq!(loaded.state.total, i);
    }
}

// ---------------------------------------------------------------------------
// Upcasting

/// Stored v1 events are upcast before decoding, on a full replay and after a
/// snapshot alike.
pub async fn upcasting_through_the_repository<S: RepositoryTestStore, F: Future<Output = S>>(new: impl Fn() -> F) {
    let store = CountingStore::new(new().await);
    let s = stream_of("v1");
    let v1 = |value: i64| NewEvent::new("Added", 1, json!({ "value": value }), Metadata::now());
    store.append(&s, ExpectedVersion::NoStream, (1..=6).map(v1).collect()).await.expect("append v1");
    let repo = snapshotting(&store, SnapshotPolicy::EveryNEvents(3));
    let loaded = repo.load("v1").await.expect("load v1 events");
    let expected = Tally::fold(&(1..=6).map(|n| TallyEvent::Added { n }).collect::<Vec<_>>());
    assert_eq!((loaded.state, loaded.version), (expected.clone(), Version::new(6)));
    let done = run(&repo, "v1", TallyCommand::AddMany(vec![7, 8])).await;
    store.append(&s, ExpectedVersion::Exact(done.version), vec![v1(9)]).await.expect("append v1");
    let loaded = snapshotting(&store, SnapshotPolicy::Never).load("v1").await.expect("load");
    let expected = Tally::fold(&(1..=9).map(|n| TallyEvent::Added { n }).collect::<Vec<_>>());
    assert_eq!((loaded.state, loaded.version), (expected, Version::new(9)));
    let raw = store.read_stream(&s, Version::new(7), 2).await.expect("read raw");
    assert_eq!(raw.iter().map(|e| e.schema_version).collect::<Vec<_>>(), [2, 2], "new events are written as v2");
}

/// An event of an unknown type, or of a newer schema version than the code
/// knows, fails the load with a typed error naming stream, version and type.
pub async fn unknown_or_newer_events_are_typed_errors<S: RepositoryTestStore, F: Future<Output = S>>(
    new: impl Fn() -> F,
) {
    let store = CountingStore::new(new().await);
    let repo = snapshotting(&store, SnapshotPolicy::EveryNEvents(2));
    add_each(&repo, "unknown", [1, 2, 3]).await;
    let s = stream_of("unknown");
    let odd = NewEvent::new("Multiplied", 1, json!({ "by": 2 }), Metadata::now());
    store.append(&s, ExpectedVersion::Exact(Version::new(3)), vec![odd]).await.expect("append");
    match repo.load("unknown").await {
        Err(Error::UnknownEventType { stream, version, event_type }) => {
            assert_eq!((stream, version, event_type.as_str()), (s, Version::new(4), "Multiplied"));
        }
        other => panic!("expected an unknown event type, got {other:?}"),
    }
    add_each(&repo, "newer", [1]).await;
    let s = stream_of("newer");
    let v3 = NewEvent::new("Added", 3, json!({ "n": 2, "unit": "kg" }), Metadata::now());
    store.append(&s, ExpectedVersion::Exact(Version::new(1)), vec![v3]).await.expect("append");
    match repo.load("newer").await {
        Err(Error::UnsupportedSchemaVersion { stream, version, event_type, found, supported }) => {
            assert_eq!((stream, version, event_type.as_str()), (s, Version::new(2), "Added"));
            assert_eq!((found, supported), (3, 2));
        }
        other => panic!("expected an unsupported schema version, got {other:?}"),
    }
    let refused = repo.execute("newer", &TallyCommand::Add(1), Metadata::now()).await;
    assert!(matches!(refused, Err(eslab_core::CommandError::Store(Error::UnsupportedSchemaVersion { .. }))));
}

// ---------------------------------------------------------------------------
// Property

/// One step of a [`RepositoryCase`]: a command through one of two writers.
#[derive(Debug, Clone)]
pub enum Step {
    /// Through the repository with snapshots and a cache.
    Cached(TallyCommand),
    /// Through a plain repository (another writer, behind the cache's back).
    Other(TallyCommand),
}

/// A random scenario: snapshots every `k` events, then these steps.
#[derive(Debug, Clone)]
pub struct RepositoryCase {
    /// The snapshot interval.
    pub k: u64,
    /// The commands, in order.
    pub steps: Vec<Step>,
}

/// Random [`TallyCommand`]s, mostly adds, sometimes a close.
pub fn tally_command() -> impl Strategy<Value = TallyCommand> {
    prop_oneof![
        12 => (-1_000i64..1_000).prop_map(TallyCommand::Add),
        4 => prop::collection::vec(-1_000i64..1_000, 0..5).prop_map(TallyCommand::AddMany),
        1 => Just(TallyCommand::Close),
    ]
}

/// Random [`RepositoryCase`]s: `k` in 1..8, up to 40 steps, one in five by the other writer.
pub fn repository_case() -> impl Strategy<Value = RepositoryCase> {
    let step = prop_oneof![
        4 => tally_command().prop_map(Step::Cached),
        1 => tally_command().prop_map(Step::Other),
    ];
    (1u64..8, prop::collection::vec(step, 0..40)).prop_map(|(k, steps)| RepositoryCase { k, steps })
}

/// Runs `case` on stream `id` of `store` and checks that every way of loading
/// agrees with the fold of all stored events: each command's resulting state,
/// a fresh load with snapshots every `k`, a full replay, and the cached
/// repository's load (the fold up to its version, current if it wrote last).
///
/// # Panics
/// On any disagreement, naming the case.
pub async fn check_repository_case<S: RepositoryTestStore>(store: S, id: &str, case: &RepositoryCase) {
    let store = CountingStore::new(store);
    let RepositoryCase { k, steps } = case;
    let cached = snapshotting(&store, SnapshotPolicy::EveryNEvents(*k)).with_cache(4);
    let other = plain(&store);
    for step in steps {
        let (repo, command) = match step {
            Step::Cached(c) => (&cached, c),
            Step::Other(c) => (&other, c),
        };
        match repo.execute(id, command, Metadata::now()).await {
            Ok(done) => {
                assert_eq!(done.state, fold_stored(&store, id, Some(done.version)).await, "{case:?}");
            }
            Err(eslab_core::CommandError::Rejected(_)) => {}
            Err(e) => panic!("{e} in {case:?}"),
        }
    }
    let truth = fold_stored(&store, id, None).await;
    let fresh = snapshotting(&store, SnapshotPolicy::EveryNEvents(*k)).load(id).await.expect("load");
    assert_eq!(fresh.state, truth, "snapshot load, {case:?}");
    let replayed = plain(&store).load(id).await.expect("load");
    assert_eq!((replayed.state, replayed.version), (truth, fresh.version), "full replay, {case:?}");
    let from_cache = cached.load(id).await.expect("load");
    assert_eq!(
        from_cache.state,
        fold_stored(&store, id, Some(from_cache.version)).await,
        "a cached state is the fold up to its version, {case:?}"
    );
    if !matches!(steps.last(), Some(Step::Other(_))) {
        assert_eq!(from_cache.version, fresh.version, "the cache is current when it wrote last, {case:?}");
    }
}

/// [`check_repository_case`] on 24 random cases from a fixed seed
/// (reproducible; no shrinking here, see `eslab-memory`'s proptest for that).
pub async fn random_commands_snapshots_and_cache_agree_with_replay<S: RepositoryTestStore, F: Future<Output = S>>(
    new: impl Fn() -> F,
) {
    const CASES: usize = 24;
    let config = Config::default();
    let mut runner = TestRunner::new_with_rng(config.clone(), TestRng::deterministic_rng(config.rng_algorithm));
    let store = new().await;
    for case_no in 0..CASES {
        let case = repository_case().new_tree(&mut runner).expect("generate a case").current();
        check_repository_case(store.clone(), &format!("prop{case_no}"), &case).await;
    }
}

// ---------------------------------------------------------------------------
// Contention

/// Tasks and commands per task of the contention tests (the shape of the
/// case in which the old default policy gave up, issue 16).
const CONTENDING_TASKS: usize = 8;
const COMMANDS_PER_TASK: usize = 5;

/// What one contending command ended with: its attempts, or the error.
type Outcome = std::result::Result<u32, String>;

/// Runs [`CONTENDING_TASKS`] tasks at once (released together by a barrier),
/// each executing [`COMMANDS_PER_TASK`] one-unit reservations
/// (`Add(-1)`) on the tally `id` through its own clone of `repo`.
async fn contend<S: RepositoryTestStore>(repo: &Repo<S>, id: &str) -> Vec<Outcome> {
    let start = Arc::new(tokio::sync::Barrier::new(CONTENDING_TASKS));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..CONTENDING_TASKS {
        let (repo, start, id) = (repo.clone(), start.clone(), id.to_owned());
        tasks.spawn(async move {
            start.wait().await;
            let mut outcomes = Vec::with_capacity(COMMANDS_PER_TASK);
            for _ in 0..COMMANDS_PER_TASK {
                let done = repo.execute(&id, &TallyCommand::Add(-1), Metadata::now()).await;
                outcomes.push(done.map(|d| d.attempts).map_err(|e| e.to_string()));
            }
            outcomes
        });
    }
    tasks.join_all().await.into_iter().flatten().collect()
}

/// Checks that the stream `id` holds the opening stock (its first event)
/// plus exactly `reserved` reservations, and agrees with the stored events.
async fn assert_stock<S: RepositoryTestStore>(store: &CountingStore<S>, id: &str, stock: i64, reserved: usize) {
    let loaded = plain(store).load(id).await.expect("load");
    let reserved = u64::try_from(reserved).expect("a small count");
    assert_eq!(loaded.version, Version::new(1 + reserved), "one event per reservation");
    assert_eq!(loaded.state.total, stock - i64::try_from(reserved).expect("a small count"));
    assert_eq!(loaded.state, fold_stored(store, id, None).await);
}

/// 8 tasks × 5 one-unit reservations at once on one tally with plenty of
/// stock, through repositories with the default retry policy: every command
/// succeeds (a conflict reloads and decides again, after a backoff), and
/// the stream holds exactly the 40 reservations. Loads pause 1 ms, so the
/// commands really contend on any store (checked: more than 40 attempts).
pub async fn contended_commands_succeed_with_default_retries<S: RepositoryTestStore, F: Future<Output = S>>(
    new: impl Fn() -> F,
) {
    let store = CountingStore::new(new().await).with_read_pause(Duration::from_millis(1));
    let repo = plain(&store);
    run(&repo, "stock", TallyCommand::Add(1_000)).await;
    let outcomes = contend(&repo, "stock").await;
    let failed: Vec<&String> = outcomes.iter().filter_map(|o| o.as_ref().err()).collect();
    assert!(
        failed.is_empty(),
        "{} of {} commands failed while stock remained: {failed:?}",
        failed.len(),
        outcomes.len()
    );
    let attempts: u32 = outcomes.iter().filter_map(|o| o.as_ref().ok()).sum();
    let commands = u32::try_from(outcomes.len()).expect("a small count");
    assert!(attempts > commands, "{commands} commands took {attempts} attempts: no contention, nothing proved");
    assert_stock(&store, "stock", 1_000, CONTENDING_TASKS * COMMANDS_PER_TASK).await;
}

/// The same contention through repositories with
/// [`with_stream_locks`](Repository::with_stream_locks) and no retries at
/// all: the commands queue on their stream's lock instead of conflicting, so
/// each succeeds on its first attempt. Clones share the locks (each task has
/// its own clone). With a state cache as well, each command finds the state
/// its predecessor left in the cache, so none reads the store.
pub async fn stream_locks_queue_contended_commands<S: RepositoryTestStore, F: Future<Output = S>>(new: impl Fn() -> F) {
    let store = CountingStore::new(new().await).with_read_pause(Duration::from_millis(1));
    let repo = plain(&store).with_retry(eslab_core::RetryPolicy::NEVER).with_stream_locks(16);
    run(&repo, "locked", TallyCommand::Add(1_000)).await;
    let outcomes = contend(&repo, "locked").await;
    let attempts: Vec<&Outcome> = outcomes.iter().filter(|o| **o != Ok(1)).collect();
    assert!(attempts.is_empty(), "every command takes exactly one attempt, but: {attempts:?}");
    assert_eq!(outcomes.len(), CONTENDING_TASKS * COMMANDS_PER_TASK);
    assert_stock(&store, "locked", 1_000, CONTENDING_TASKS * COMMANDS_PER_TASK).await;
    let cached = plain(&store).with_retry(eslab_core::RetryPolicy::NEVER).with_stream_locks(16).with_cache(10);
    run(&cached, "cached", TallyCommand::Add(1_000)).await;
    store.reset();
    let outcomes = contend(&cached, "cached").await;
    assert!(outcomes.iter().all(|o| *o == Ok(1)), "{outcomes:?}");
    assert_eq!(store.stream_reads(), 0, "every command started from the entry its predecessor cached");
    assert_stock(&store, "cached", 1_000, CONTENDING_TASKS * COMMANDS_PER_TASK).await;
}

// ---------------------------------------------------------------------------
// The command path's options: idempotency keys, expected versions, existence,
// decisions over several streams.

fn keyed(key: &str, request: &str) -> eslab_core::CommandOptions {
    let key = eslab_core::IdempotencyKey::new(key, &[request.as_bytes()]).expect("a valid key");
    eslab_core::CommandOptions::new(Metadata::now()).idempotent(key)
}

/// A keyed command runs once: a retry with the same key and request gets the
/// stored response and writes nothing; the key with another request is
/// [`KeyReused`](eslab_core::CommandError::KeyReused); a refused command
/// stores no key (a retry once the rule allows it goes through); an expired
/// key is a new request.
pub async fn idempotent_commands_replay_the_first_answer<S: RepositoryTestStore, F: Future<Output = S>>(
    new: impl Fn() -> F,
) {
    use eslab_core::{CommandError, Outcome};
    let store = CountingStore::new(new().await);
    let repo = plain(&store);
    let total = |t: &Tally, v: Version| (t.total, v.get());
    let options = keyed("k1", "add 5");
    let first = repo.run("i", &TallyCommand::Add(5), &options, total).await.expect("runs");
    assert!(matches!(&first, Outcome::Executed(done) if done.response == (5, 1)), "{first:?}");
    let again = repo.run("i", &TallyCommand::Add(5), &options, total).await.expect("replays");
    assert_eq!(again, Outcome::Replayed((5, 1)));
    assert_eq!(fold_stored(&store, "i", None).await.total, 5, "the retry wrote nothing");
    let reused = repo.run("i", &TallyCommand::Add(6), &keyed("k1", "add 6"), total).await;
    assert!(matches!(reused, Err(CommandError::KeyReused { .. })), "{reused:?}");
    // A refusal stores no key.
    let overflow = keyed("k2", "add max");
    let refused = repo.run("i", &TallyCommand::Add(i64::MAX), &overflow, total).await;
    assert!(matches!(refused, Err(CommandError::Rejected(TallyError::Overflow))), "{refused:?}");
    run(&repo, "i", TallyCommand::Add(-10)).await;
    let later = repo.run("i", &TallyCommand::Add(i64::MAX), &overflow, total).await.expect("allowed now");
    assert!(!later.is_replayed());
    // An expired key is a new request: its record goes after the old one.
    let forgetful = plain(&store).with_idempotency_retention(Duration::ZERO);
    let rerun = forgetful.run("i", &TallyCommand::Add(-1), &options, total).await.expect("a new request");
    assert!(!rerun.is_replayed(), "an expired key does not replay");
    let key_stream = options.idempotency.as_ref().map(|k| k.stream().clone()).expect("a key");
    assert_eq!(store.stream_version(&key_stream).await.expect("readable"), Version::new(2));
}

/// Defect 1 of issue 16, in the library: several runs of one keyed command
/// race (the last command of a stream: a second one is refused). Every one
/// gets the first answer (run or replayed), never a refusal decided on the
/// state the winner left, and the command is applied once. Reads pause, so
/// the runs interleave between the key lookup and the append.
pub async fn concurrent_retries_with_one_key_get_one_answer<S: RepositoryTestStore, F: Future<Output = S>>(
    new: impl Fn() -> F,
) {
    use eslab_core::Outcome;
    let store = CountingStore::new(new().await).with_read_pause(Duration::from_millis(1));
    let repo = plain(&store);
    for round in 0..10 {
        let id = format!("close-{round}");
        run(&repo, &id, TallyCommand::Add(1)).await;
        let options = keyed(&format!("close-key-{round}"), "close");
        let racers = (0..4).map(|_| {
            let (repo, id, options) = (repo.clone(), id.clone(), options.clone());
            tokio::spawn(async move {
                repo.run(&id, &TallyCommand::Close, &options, |t: &Tally, v: Version| (t.closed, v.get())).await
            })
        });
        let mut executed = 0;
        for racer in racers {
            match racer.await.expect("no panic") {
                Ok(Outcome::Executed(done)) => {
                    executed += 1;
                    assert_eq!(done.response, (true, 2));
                }
                Ok(Outcome::Replayed(response)) => assert_eq!(response, (true, 2)),
                Err(e) => panic!("round {round}: a retry got {e:?} instead of the first answer"),
            }
        }
        assert_eq!(executed, 1, "round {round}: decided once");
        assert_eq!(store.stream_version(&stream_of(&id)).await.expect("readable"), Version::new(2));
    }
}

/// An expected version is checked against the store (a mismatch is
/// [`WrongVersion`](eslab_core::CommandError::WrongVersion), never retried);
/// `existing()` refuses a stream with no events
/// ([`NotFound`](eslab_core::CommandError::NotFound)). Both write nothing.
pub async fn expected_version_and_existence_are_checked<S: RepositoryTestStore, F: Future<Output = S>>(
    new: impl Fn() -> F,
) {
    use eslab_core::{CommandError, CommandOptions};
    let store = CountingStore::new(new().await);
    let repo = plain(&store);
    let none = |_: &Tally, _: Version| ();
    let missing = repo.run("v", &TallyCommand::Add(1), &CommandOptions::default().existing(), none).await;
    assert!(matches!(missing, Err(CommandError::NotFound { .. })), "{missing:?}");
    assert_eq!(store.stream_version(&stream_of("v")).await.expect("readable"), Version::NONE);
    run(&repo, "v", TallyCommand::Add(1)).await;
    let wrong = repo.run("v", &TallyCommand::Add(1), &CommandOptions::default().expecting(Version::new(5)), none).await;
    match wrong {
        Err(CommandError::WrongVersion { expected, actual, .. }) => {
            assert_eq!((expected, actual), (Version::new(5), Version::new(1)));
        }
        other => panic!("expected WrongVersion, got {other:?}"),
    }
    let options = CommandOptions::default().expecting(Version::new(1)).existing();
    let done = repo.run("v", &TallyCommand::Add(1), &options, none).await.expect("at version 1");
    assert!(!done.is_replayed());
    assert_eq!(fold_stored(&store, "v", None).await.total, 2);
}

/// Copies every event of a tally, as it decides, to a ledger stream (a
/// decision that reads another stream and appends to it).
struct Ledgered<'a, S> {
    repo: &'a Repo<S>,
    n: i64,
}

impl<S: RepositoryTestStore> eslab_core::Decide<Tally> for Ledgered<'_, S> {
    type Output = Version;
    type Error = TallyError;

    async fn decide(
        &self,
        current: &eslab_core::Loaded<Tally>,
    ) -> std::result::Result<eslab_core::Decision<TallyEvent, Version>, eslab_core::CommandError<TallyError>> {
        let events = current.state.decide(&TallyCommand::Add(self.n)).map_err(eslab_core::CommandError::Rejected)?;
        let ledger = stream_of("ledger");
        let at = self.repo.store().stream_version(&ledger).await?;
        let entry = NewEvent::new("Added", 2, json!({ "n": self.n }), Metadata::now())
            .with_id(eslab_core::derived_event_id(uuid::Uuid::from_u128(7), u64::try_from(self.n).unwrap_or(0)));
        let append = eslab_core::StreamAppend::new(ledger, ExpectedVersion::Exact(at), vec![entry]);
        Ok(eslab_core::Decision::new(events, at).also(append))
    }
}

/// [`run_with`](Repository::run_with): a decision's other appends go in the
/// same atomic append (a conflict on any stream retries the whole decision),
/// its output reaches `respond`, and derived event ids make a re-run a
/// [`DuplicateEventId`](Error::DuplicateEventId).
pub async fn decisions_append_other_streams_atomically<S: RepositoryTestStore, F: Future<Output = S>>(
    new: impl Fn() -> F,
) {
    use eslab_core::{CommandError, CommandOptions, Outcome};
    let store = CountingStore::new(new().await).with_read_pause(Duration::from_millis(1));
    let repo = plain(&store);
    let tasks = (1..=6).map(|n| {
        let repo = repo.clone();
        tokio::spawn(async move {
            repo.run_with(
                &format!("t{}", n % 2),
                &Ledgered { repo: &repo, n },
                &CommandOptions::default(),
                |_, v, at| (v, at),
            )
            .await
            .map(|o| matches!(o, Outcome::Executed(_)))
        })
    });
    for task in tasks {
        assert!(task.await.expect("no panic").expect("retried until it fits"), "executed, not replayed");
    }
    let ledger = fold_stored(&store, "ledger", None).await;
    assert_eq!((ledger.total, ledger.count), (21, 6), "every decision reached the ledger once");
    assert_eq!(fold_stored(&store, "t0", None).await.total + fold_stored(&store, "t1", None).await.total, 21);
    // Derived ids: the same decision again is refused by the store, whole.
    let options = CommandOptions::default().with_event_ids(uuid::Uuid::from_u128(9));
    let once = repo.run("d", &TallyCommand::Add(1), &options, |_, _| ()).await;
    assert!(once.is_ok(), "{once:?}");
    let twice = repo.run("d", &TallyCommand::Add(1), &options, |_, _| ()).await;
    assert!(matches!(twice, Err(CommandError::Store(Error::DuplicateEventId(_)))), "{twice:?}");
    assert_eq!(fold_stored(&store, "d", None).await.total, 1);
}

/// With a cache, [`load_latest`](Repository::load_latest) starts from the
/// cached state and reads only the events stored after it: never older than
/// the store, one short read instead of a replay.
pub async fn cached_load_catches_up_with_writes_behind_its_back<S: RepositoryTestStore, F: Future<Output = S>>(
    new: impl Fn() -> F,
) {
    let store = CountingStore::new(new().await);
    let cached = plain(&store).with_cache(10);
    add_each(&cached, "c", [1, 2]).await;
    add_each(&plain(&store), "c", [3, 4]).await;
    store.reset();
    let loaded = cached.load_latest("c").await.expect("loads");
    assert_eq!(store.events_read(), 2, "only the two events after the cached entry were read");
    assert_eq!((loaded.state, loaded.version), (fold_stored(&store, "c", None).await, Version::new(4)));
    store.reset();
    let again = cached.load("c").await.expect("loads");
    assert_eq!((again.version, store.stream_reads()), (Version::new(4), 0), "the catch-up refreshed the cache");
}
