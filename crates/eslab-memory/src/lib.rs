//! # eslab-memory
//!
//! A thread-safe in-memory event store: the reference semantics every other
//! backend is held to by the conformance suite. Appends run under one write
//! lock, so the global feed is the append order and commits are never seen out
//! of order. Clones share the same store. Streams purged through
//! [`StreamRetention`] free their memory; positions keep counting past them.
//!
//! ```
//! use eslab_core::{EventAppender, EventReader, ExpectedVersion, FeedFilter, Checkpoint, Metadata, NewEvent, StreamId, Version};
//! use eslab_memory::MemoryStore;
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let store = MemoryStore::new();
//! let stream: StreamId = "account-1".parse().unwrap();
//! let event = NewEvent::new("Opened", 1, serde_json::json!({}), Metadata::now());
//! let done = store.append(&stream, ExpectedVersion::NoStream, vec![event]).await.unwrap();
//! assert_eq!(done.version, Version::FIRST);
//! let feed = store.read_feed(&FeedFilter::All, Checkpoint::START, 10).await.unwrap();
//! assert_eq!(feed.len(), 1);
//! # });
//! ```
//!
//! Every append that writes events bumps an in-process signal, which is the
//! store's [`WakeUps`]: live readers ([`EventStore::subscribe`](eslab_core::EventStore::subscribe))
//! wake on it.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use eslab_core::{
    AppendCondition, AppendResult, CategorySummary, Checkpoint, CheckpointStore, Error, EventAppender, EventId,
    EventReader, Explore, FeedFilter, FeedHead, InvalidQuery, NewEvent, Position, Query, QueryRead, ReadPosition,
    RecordedEvent, Result, Snapshot, SnapshotStore, StreamAppend, StreamId, StreamRetention, StreamSummary, Version,
    WakeUpStream, WakeUps, explore_page, streams_page,
};
use time::OffsetDateTime;
use tokio::sync::watch;

#[derive(Debug, Default)]
struct Inner {
    /// Every event, in feed order (position order; purged events leave gaps).
    events: Vec<RecordedEvent>,
    /// Indexes into `events`, per stream, in version order.
    streams: HashMap<StreamId, Vec<usize>>,
    ids: HashSet<EventId>,
    /// Commit counter: one per successful append call.
    transaction: u64,
    /// Events deleted by [`StreamRetention`]: positions keep counting past them.
    purged: u64,
}

impl Inner {
    /// The newest position handed out (purged events included).
    fn head(&self) -> Position {
        Position::new(self.purged + self.events.len() as u64)
    }

    /// Fails if an event matching the condition's query lies after its position.
    fn check_condition(&self, condition: &AppendCondition) -> Result<()> {
        let head = self.head();
        let after = match &condition.after {
            None => Position::START,
            Some(read) if read.unseen.is_some() || read.position > head => {
                return Err(
                    InvalidQuery::PositionAhead { position: format!("{read:?}"), head: head.to_string() }.into()
                );
            }
            Some(read) => read.position,
        };
        let start = self.events.partition_point(|e| e.position <= after);
        match self.events[start..].iter().find(|e| condition.query.matches(&e.event_type, &e.metadata.tags)) {
            Some(e) => Err(Error::ConditionFailed {
                event_id: e.event_id,
                event_type: e.event_type.clone(),
                position: e.position,
            }),
            None => Ok(()),
        }
    }

    fn version(&self, stream: &StreamId) -> Version {
        self.streams.get(stream).map_or(Version::NONE, |ix| Version::new(ix.len() as u64))
    }

    /// Checks every expectation and id before anything is written.
    fn check(&self, appends: &[StreamAppend]) -> Result<()> {
        let mut seen_streams = HashSet::new();
        let mut seen_ids = HashSet::new();
        for append in appends {
            if !seen_streams.insert(&append.stream_id) {
                return Err(Error::InvalidRequest(format!("stream {} appears twice in one append", append.stream_id)));
            }
            let actual = self.version(&append.stream_id);
            if !append.expected.accepts(actual) {
                return Err(Error::Conflict { stream: append.stream_id.clone(), expected: append.expected, actual });
            }
            actual.advance(append.events.len()).ok_or_else(|| Error::OutOfRange("stream version".into()))?;
            for event in &append.events {
                if self.ids.contains(&event.event_id) || !seen_ids.insert(event.event_id) {
                    return Err(Error::DuplicateEventId(event.event_id));
                }
            }
        }
        Ok(())
    }

    fn write(&mut self, appends: Vec<StreamAppend>) -> Vec<AppendResult> {
        let wrote_any = appends.iter().any(|a| !a.events.is_empty());
        if wrote_any {
            self.transaction += 1;
        }
        let recorded_at = OffsetDateTime::now_utc();
        let mut results = Vec::with_capacity(appends.len());
        for StreamAppend { stream_id, events, .. } in appends {
            let mut version = self.version(&stream_id);
            let mut recorded = Vec::with_capacity(events.len());
            for NewEvent { event_id, event_type, schema_version, payload, metadata } in events {
                version = Version::new(version.get() + 1);
                let index = self.events.len();
                let event = RecordedEvent {
                    event_id,
                    stream_id: stream_id.clone(),
                    stream_version: version,
                    position: Position::new(self.purged + index as u64 + 1),
                    transaction: self.transaction,
                    event_type,
                    schema_version,
                    payload,
                    metadata,
                    recorded_at,
                };
                self.ids.insert(event_id);
                self.events.push(event.clone());
                self.streams.entry(stream_id.clone()).or_default().push(index);
                recorded.push(event);
            }
            results.push(AppendResult { stream_id, version, events: recorded });
        }
        results
    }
}

#[derive(Debug, Default)]
struct Side {
    snapshots: HashMap<StreamId, Snapshot>,
    checkpoints: HashMap<String, Checkpoint>,
    leases: HashMap<String, (String, Instant)>,
}

/// The in-memory event store, which is also a snapshot and checkpoint store.
/// Clones share state.
#[derive(Debug, Clone, Default)]
pub struct MemoryStore {
    inner: Arc<RwLock<Inner>>,
    side: Arc<Mutex<Side>>,
    /// Bumped after every append that wrote events: the store's wake-ups.
    appended: Arc<watch::Sender<()>>,
    /// The data subjects' keys for personal data.
    keys: Arc<eslab_core::personal::MemoryKeys>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        MemoryStore::default()
    }

    /// How many events the store holds.
    pub fn len(&self) -> usize {
        self.read().events.len()
    }

    /// Whether the store holds no events.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    // A panic while holding the lock cannot leave `Inner` half-written (writes
    // happen only after every check passed), so a poisoned lock is safe to use.
    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(PoisonError::into_inner)
    }

    fn side(&self) -> std::sync::MutexGuard<'_, Side> {
        self.side.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn append_all(&self, appends: Vec<StreamAppend>, condition: Option<&AppendCondition>) -> Result<Vec<AppendResult>> {
        eslab_core::check_storable(&appends)?;
        let mut inner = self.write();
        if let Some(condition) = condition {
            inner.check_condition(condition)?;
        }
        inner.check(&appends)?;
        let results = inner.write(appends);
        drop(inner);
        self.wake(&results);
        Ok(results)
    }

    /// Wakes the live readers after an append that wrote events (the lock
    /// released, so that they can read them at once).
    fn wake(&self, results: &[AppendResult]) {
        if results.iter().any(|r| !r.events.is_empty()) {
            self.appended.send_modify(|()| {});
        }
    }
}

/// The wake-ups of the appends made through this store or its clones (the
/// only writers a memory store has).
impl WakeUps for MemoryStore {
    async fn wake_ups(&self) -> WakeUpStream {
        eslab_core::watch_wake_ups(self.appended.subscribe())
    }
}

fn to_index(v: u64) -> usize {
    usize::try_from(v).unwrap_or(usize::MAX)
}

impl EventAppender for MemoryStore {
    async fn append_streams(&self, appends: Vec<StreamAppend>) -> Result<Vec<AppendResult>> {
        self.append_all(appends, None)
    }

    /// Checked and written under the store's one write lock, so conditional
    /// appends are serialized with every other append.
    async fn append_if(&self, appends: Vec<StreamAppend>, condition: AppendCondition) -> Result<Vec<AppendResult>> {
        self.append_all(appends, Some(&condition))
    }
}

impl EventReader for MemoryStore {
    fn personal_keys(&self) -> Option<Arc<dyn eslab_core::KeyStore>> {
        Some(self.keys.clone())
    }

    async fn read_stream(&self, stream: &StreamId, from: Version, limit: usize) -> Result<Vec<RecordedEvent>> {
        let inner = self.read();
        let Some(indexes) = inner.streams.get(stream) else { return Ok(Vec::new()) };
        let skip = to_index(from.get().saturating_sub(1));
        Ok(indexes.iter().skip(skip).take(limit).map(|&i| inner.events[i].clone()).collect())
    }

    async fn read_feed(&self, filter: &FeedFilter, after: Checkpoint, limit: usize) -> Result<Vec<RecordedEvent>> {
        let inner = self.read();
        // Transactions and positions grow together here, so the position alone
        // orders the feed; purged events leave gaps, hence the search.
        let start = inner.events.partition_point(|e| e.position <= after.position);
        Ok(inner.events[start..].iter().filter(|e| filter.matches(&e.stream_id)).take(limit).cloned().collect())
    }

    async fn stream_version(&self, stream: &StreamId) -> Result<Version> {
        Ok(self.read().version(stream))
    }

    async fn read_query(&self, query: &Query) -> Result<QueryRead> {
        let inner = self.read();
        let events = inner.events.iter().filter(|e| query.matches(&e.event_type, &e.metadata.tags)).cloned().collect();
        Ok(QueryRead { events, position: ReadPosition::at(inner.head()) })
    }

    async fn feed_head(&self, filter: &FeedFilter) -> Result<Option<FeedHead>> {
        Ok(self.read().events.iter().rev().find(|e| filter.matches(&e.stream_id)).map(FeedHead::of))
    }
}

/// The reference semantics: a walk over every stream (this store is not for
/// big data sets).
impl Explore for MemoryStore {
    async fn categories(&self, after: Option<&str>, limit: usize) -> Result<Vec<CategorySummary>> {
        let inner = self.read();
        let mut counts: std::collections::BTreeMap<&str, u64> = std::collections::BTreeMap::new();
        for (stream, indexes) in &inner.streams {
            if !indexes.is_empty() && after.is_none_or(|after| stream.category() > after) {
                *counts.entry(stream.category()).or_default() += indexes.len() as u64;
            }
        }
        Ok(counts
            .into_iter()
            .take(explore_page(limit))
            .map(|(category, n)| CategorySummary::counted(category, n))
            .collect())
    }

    async fn streams(&self, category: &str, after: Option<&StreamId>, limit: usize) -> Result<Vec<StreamSummary>> {
        let inner = self.read();
        let streams =
            inner.streams.iter().filter(|(stream, indexes)| !indexes.is_empty() && stream.category() == category).map(
                |(stream, indexes)| StreamSummary {
                    stream_id: stream.clone(),
                    version: Version::new(indexes.len() as u64),
                },
            );
        Ok(streams_page(streams, after, limit))
    }

    async fn correlated(
        &self,
        correlation_id: uuid::Uuid,
        after: Position,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>> {
        let inner = self.read();
        let start = inner.events.partition_point(|e| e.position <= after);
        Ok(inner.events[start..]
            .iter()
            .filter(|e| e.metadata.correlation_id == Some(correlation_id))
            .take(explore_page(limit))
            .cloned()
            .collect())
    }
}

impl Inner {
    /// Deletes up to `limit` streams of `category` whose newest event was
    /// recorded before `before`, oldest first; returns them.
    fn purge(&mut self, category: &str, before: OffsetDateTime, limit: usize) -> Vec<StreamId> {
        let mut victims: Vec<(usize, &StreamId)> = self
            .streams
            .iter()
            .filter(|(stream, _)| stream.category() == category)
            .filter(|(_, indexes)| indexes.last().is_some_and(|&i| self.events[i].recorded_at < before))
            .filter_map(|(stream, indexes)| indexes.first().map(|&first| (first, stream)))
            .collect();
        victims.sort_unstable();
        victims.truncate(limit);
        let victims: Vec<StreamId> = victims.into_iter().map(|(_, stream)| stream.clone()).collect();
        let mut doomed: Vec<usize> = Vec::new();
        for stream in &victims {
            doomed.extend(self.streams.remove(stream).unwrap_or_default());
        }
        if doomed.is_empty() {
            return victims;
        }
        doomed.sort_unstable();
        for &i in &doomed {
            self.ids.remove(&self.events[i].event_id);
        }
        let mut next = doomed.iter().peekable();
        let mut index = 0;
        self.events.retain(|_| {
            let keep = next.next_if_eq(&&index).is_none();
            index += 1;
            keep
        });
        // Every remaining index moves down by the number of deleted events before it.
        for indexes in self.streams.values_mut() {
            for i in indexes.iter_mut() {
                let deleted_before = doomed.partition_point(|&d| d < *i);
                *i -= deleted_before;
            }
        }
        self.purged += doomed.len() as u64;
        victims
    }
}

impl StreamRetention for MemoryStore {
    async fn purge_category_before(
        &self,
        category: &str,
        recorded_before: OffsetDateTime,
        limit: usize,
    ) -> Result<u64> {
        FeedFilter::category(category)?;
        let mut inner = self.write();
        let victims = inner.purge(category, recorded_before, limit);
        // Under the events' lock, so no reader sees a snapshot without its stream;
        // the side lock is never held while taking the events' lock.
        let mut side = self.side();
        for stream in &victims {
            side.snapshots.remove(stream);
        }
        Ok(victims.len() as u64)
    }
}

impl SnapshotStore for MemoryStore {
    async fn load_snapshot(&self, stream: &StreamId) -> Result<Option<Snapshot>> {
        Ok(self.side().snapshots.get(stream).cloned())
    }

    async fn save_snapshot(&self, snapshot: Snapshot) -> Result<()> {
        let mut side = self.side();
        match side.snapshots.get(&snapshot.stream_id) {
            Some(existing) if existing.version >= snapshot.version => {}
            _ => {
                side.snapshots.insert(snapshot.stream_id.clone(), snapshot);
            }
        }
        Ok(())
    }
}

impl CheckpointStore for MemoryStore {
    async fn load_checkpoint(&self, name: &str) -> Result<Checkpoint> {
        Ok(self.side().checkpoints.get(name).copied().unwrap_or(Checkpoint::START))
    }

    async fn save_checkpoint(&self, name: &str, checkpoint: Checkpoint) -> Result<()> {
        self.side().checkpoints.insert(name.to_owned(), checkpoint);
        Ok(())
    }

    async fn acquire_lease(&self, name: &str, owner: &str, ttl: Duration) -> Result<bool> {
        let mut side = self.side();
        let now = Instant::now();
        if let Some((holder, until)) = side.leases.get(name)
            && holder != owner
            && *until > now
        {
            return Ok(false);
        }
        side.leases.insert(name.to_owned(), (owner.to_owned(), now + ttl));
        Ok(true)
    }

    async fn release_lease(&self, name: &str, owner: &str) -> Result<()> {
        let mut side = self.side();
        if side.leases.get(name).is_some_and(|(holder, _)| holder == owner) {
            side.leases.remove(name);
        }
        Ok(())
    }
}
