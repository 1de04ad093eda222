//! The store interface: what every backend implements over serialized rows, and
//! the [`EventStore`] layer that adds upcasting and streaming on top, once for all.
//!
//! Reads and writes are separate traits ([`EventReader`], [`EventAppender`]); a
//! type implementing both is an [`EventStorage`] by blanket impl.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;

use futures_core::Stream;
use futures_util::{TryStreamExt, stream};

use crate::boundary::{AppendCondition, Query, QueryRead};
use crate::codec::{Codec, JsonCodec};
use crate::error::Result;
use crate::event::{DomainEvent, LeanEvent, NewEvent, RecordedEvent};
use crate::personal::{Forgetting, KeyStore, Subject, SubjectKey, open_events, open_lean, open_with, seal_events_with};
use crate::stream::{InvalidStreamId, StreamId, validate_kind};
use crate::upcast::Upcasters;
use crate::version::{Checkpoint, ExpectedVersion, Version};

/// The default page size of the streaming helpers.
pub const DEFAULT_PAGE_SIZE: usize = 512;

/// The page size of [`EventReaderExt::stream_events`], which loads replay:
/// larger than a feed page, so that loading an aggregate of up to this many
/// events (past its snapshot) takes one read.
pub const STREAM_PAGE_SIZE: usize = 2048;

/// One stream's part of an append.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamAppend {
    /// The stream to append to.
    pub stream_id: StreamId,
    /// What the stream's version must be.
    pub expected: ExpectedVersion,
    /// The events, in order.
    pub events: Vec<NewEvent>,
}

impl StreamAppend {
    /// Bundles one stream's append.
    pub fn new(stream_id: StreamId, expected: ExpectedVersion, events: Vec<NewEvent>) -> Self {
        StreamAppend { stream_id, expected, events }
    }
}

/// What an append wrote to one stream.
#[derive(Debug, Clone, PartialEq)]
pub struct AppendResult {
    /// The stream appended to.
    pub stream_id: StreamId,
    /// The stream's version after the append.
    pub version: Version,
    /// The events as recorded (versions, positions, recorded-at filled in).
    pub events: Vec<RecordedEvent>,
}

/// Which events a feed carries.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum FeedFilter {
    /// Every event of the store.
    All,
    /// Only events of streams of this category (the `<kind>` of `<kind>-<id>`).
    Category(String),
}

impl FeedFilter {
    /// A category filter, validated like a stream kind.
    pub fn category(category: &str) -> std::result::Result<Self, InvalidStreamId> {
        validate_kind(category)?;
        Ok(FeedFilter::Category(category.to_owned()))
    }

    /// Whether an event of `stream` passes the filter.
    pub fn matches(&self, stream: &StreamId) -> bool {
        match self {
            FeedFilter::All => true,
            FeedFilter::Category(c) => stream.category() == c,
        }
    }
}

/// The newest event of a feed: where a reader that has caught up stands, and
/// when that event was recorded (for lag: events and seconds behind).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FeedHead {
    /// The checkpoint just after the newest event ([`RecordedEvent::checkpoint`]).
    pub checkpoint: Checkpoint,
    /// When the store recorded it.
    pub recorded_at: time::OffsetDateTime,
}

impl FeedHead {
    /// The head of a feed whose newest event is `event`.
    pub fn of(event: &RecordedEvent) -> Self {
        FeedHead { checkpoint: event.checkpoint(), recorded_at: event.recorded_at }
    }
}

/// Appending events. Implemented by every backend.
///
/// # Contract (checked by `eslab-testing`'s conformance suite)
/// - An append is atomic: all its events are written, or none.
/// - The expectation is checked against the stream's current version in the
///   same atomic step; on mismatch the append fails with
///   [`Error::Conflict`](crate::Error::Conflict) carrying the actual version.
/// - An event id already stored fails the whole append with
///   [`Error::DuplicateEventId`](crate::Error::DuplicateEventId).
/// - **The empty append** (no events) checks the expectation, writes nothing
///   and returns the current version with no events.
/// - Text no store can hold (a NUL character, see [`check_storable`](crate::check_storable))
///   fails the whole append with [`Error::InvalidRequest`](crate::Error::InvalidRequest)
///   before anything is written.
pub trait EventAppender: Send + Sync {
    /// Appends `events` to one stream if it is at the `expected` version.
    ///
    /// By default, a one-stream [`append_streams`](Self::append_streams);
    /// backends override it only for a faster single-stream path.
    fn append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> impl Future<Output = Result<AppendResult>> + Send {
        let append = StreamAppend::new(stream.clone(), expected, events);
        async move {
            let mut results = self.append_streams(vec![append]).await?;
            results.pop().ok_or_else(|| crate::Error::backend("append produced no result"))
        }
    }

    /// Appends to several streams in one atomic step: if any stream's
    /// expectation fails, nothing is written. A stream may appear once.
    /// Results come back in the order of `appends`.
    fn append_streams(&self, appends: Vec<StreamAppend>) -> impl Future<Output = Result<Vec<AppendResult>>> + Send;

    /// [`append_streams`](Self::append_streams) if `condition` still holds:
    /// no event matching its query was committed that the read at its
    /// position did not see (a [dynamic consistency boundary](crate::boundary)).
    /// The check and the append are one atomic step, also against concurrent
    /// conditional appends on overlapping queries, which the store serializes;
    /// appends on disjoint queries do not wait for each other.
    ///
    /// # Errors
    /// [`Error::ConditionFailed`](crate::Error::ConditionFailed) naming the
    /// first such event; [`Error::InvalidQuery`](crate::Error::InvalidQuery)
    /// for a position that no read of this store gave; everything
    /// [`append_streams`](Self::append_streams) fails with. Nothing is written.
    fn append_if(
        &self,
        appends: Vec<StreamAppend>,
        condition: AppendCondition,
    ) -> impl Future<Output = Result<Vec<AppendResult>>> + Send;
}

/// Reading events. Implemented by every backend.
///
/// # Contract
/// - `read_stream` returns the stream's events with version `>= from`, in
///   version order, at most `limit` of them; none when `from` is beyond the
///   stream's version, however large (also beyond `i64::MAX`).
/// - `read_feed` returns events strictly after `after` in feed order
///   (`(transaction, position)`), at most `limit`. It never returns an event
///   and later a different event that sorts before it: a reader that resumes
///   from the last event's [`checkpoint`](RecordedEvent::checkpoint) sees every
///   committed event exactly once.
pub trait EventReader: Send + Sync {
    /// A page of one stream, from version `from` (inclusive).
    fn read_stream(
        &self,
        stream: &StreamId,
        from: Version,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<RecordedEvent>>> + Send;

    /// A page of one stream from version `from` (inclusive), with only what
    /// replaying it into state needs ([`LeanEvent`]): the read behind every
    /// [`Repository`](crate::Repository) load.
    ///
    /// The default takes [`read_stream`](Self::read_stream)'s page apart;
    /// backends override it with a narrower read (PostgreSQL sends five
    /// columns instead of ten, and no metadata document).
    fn read_stream_lean(
        &self,
        stream: &StreamId,
        from: Version,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<LeanEvent>>> + Send {
        async move { Ok(self.read_stream(stream, from, limit).await?.into_iter().map(LeanEvent::from).collect()) }
    }

    /// A page of the global (or per-category) feed after `after`.
    fn read_feed(
        &self,
        filter: &FeedFilter,
        after: Checkpoint,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<RecordedEvent>>> + Send;

    /// The stream's current version ([`Version::NONE`] if it has no events).
    fn stream_version(&self, stream: &StreamId) -> impl Future<Output = Result<Version>> + Send;

    /// Every event matching `query`, in feed order, and the position the read
    /// stood at: hand it to [`EventAppender::append_if`] in an
    /// [`AppendCondition`] (see [`QueryRead::condition`]). One consistent read:
    /// keep boundaries small (an account's events, not a category's).
    fn read_query(&self, query: &Query) -> impl Future<Output = Result<QueryRead>> + Send;

    /// The newest committed event of the feed (of the category), `None` for
    /// an empty feed. It may lie beyond what [`read_feed`](Self::read_feed)
    /// returns yet (a store may hold back events behind an older transaction
    /// still in flight).
    ///
    /// The default pages through the whole feed; backends override it with
    /// one indexed read.
    fn feed_head(&self, filter: &FeedFilter) -> impl Future<Output = Result<Option<FeedHead>>> + Send {
        async move {
            let mut head = None;
            let mut after = Checkpoint::START;
            loop {
                let page = self.read_feed(filter, after, DEFAULT_PAGE_SIZE).await?;
                let Some(last) = page.last() else { return Ok(head) };
                head = Some(FeedHead::of(last));
                after = last.checkpoint();
            }
        }
    }

    /// The store's own [`KeyStore`] for [personal data](crate::personal),
    /// kept in its database beside the events; [`EventStore::new`] seals and
    /// opens with it. `None` (the default): personal data is refused.
    fn personal_keys(&self) -> Option<Arc<dyn KeyStore>> {
        None
    }
}

/// A complete backend: reader and appender.
pub trait EventStorage: EventReader + EventAppender {}

impl<T: EventReader + EventAppender> EventStorage for T {}

/// Streams over any [`EventReader`], paging under the hood so that replaying a
/// long stream or feed never buffers it whole.
pub trait EventReaderExt: EventReader {
    /// Every event of `stream` from version `from`, page by page.
    fn stream_events<'a>(
        &'a self,
        stream: &'a StreamId,
        from: Version,
    ) -> impl Stream<Item = Result<RecordedEvent>> + Send + 'a
    where
        Self: Sized,
    {
        stream_pages(from, move |from| self.read_stream(stream, from, STREAM_PAGE_SIZE), |e| e.stream_version)
    }

    /// Every event of `stream` from version `from`, page by page, with only
    /// what replaying it needs ([`EventReader::read_stream_lean`]).
    fn stream_events_lean<'a>(
        &'a self,
        stream: &'a StreamId,
        from: Version,
    ) -> impl Stream<Item = Result<LeanEvent>> + Send + 'a
    where
        Self: Sized,
    {
        stream_pages(from, move |from| self.read_stream_lean(stream, from, STREAM_PAGE_SIZE), |e| e.stream_version)
    }

    /// The feed after `after`, up to the events committed now (the stream
    /// ends when the reader has caught up; call again to follow).
    fn feed<'a>(
        &'a self,
        filter: &'a FeedFilter,
        after: Checkpoint,
    ) -> impl Stream<Item = Result<RecordedEvent>> + Send + 'a
    where
        Self: Sized,
    {
        stream::try_unfold(Some(after), move |next| async move {
            let Some(after) = next else { return Ok::<_, crate::Error>(None) };
            let page = self.read_feed(filter, after, DEFAULT_PAGE_SIZE).await?;
            let next = match page.last() {
                Some(last) if page.len() == DEFAULT_PAGE_SIZE => Some(last.checkpoint()),
                _ => None,
            };
            Ok(Some((stream::iter(page.into_iter().map(Ok)), next)))
        })
        .try_flatten()
    }
}

impl<T: EventReader> EventReaderExt for T {}

/// The events of pages of [`STREAM_PAGE_SIZE`] read by `read` from a version
/// on, until a page comes back short.
fn stream_pages<'a, T, F, Fut>(
    from: Version,
    read: F,
    version: fn(&T) -> Version,
) -> impl Stream<Item = Result<T>> + Send + 'a
where
    T: Send + 'a,
    F: Fn(Version) -> Fut + Send + 'a,
    Fut: Future<Output = Result<Vec<T>>> + Send + 'a,
{
    stream::try_unfold(Some(from), move |next| {
        let page = next.map(&read);
        async move {
            let Some(page) = page else { return Ok::<_, crate::Error>(None) };
            let page = page.await?;
            let next = match page.last() {
                Some(last) if page.len() == STREAM_PAGE_SIZE => version(last).next(),
                _ => None,
            };
            Ok(Some((stream::iter(page.into_iter().map(Ok)), next)))
        }
    })
    .try_flatten()
}

/// The typed layer over a backend: seals and opens [personal data](crate::personal)
/// and applies [`Upcasters`] on every read path, and decodes typed events.
/// Cheap to clone when the backend is.
///
/// `EventStore<S>` is itself an [`EventReader`] and [`EventAppender`], so
/// anything that takes a backend also takes the upcasting store.
#[derive(Clone)]
pub struct EventStore<S> {
    backend: S,
    upcasters: Arc<Upcasters>,
    keys: Option<Arc<dyn KeyStore>>,
    open: bool,
}

impl<S: std::fmt::Debug> std::fmt::Debug for EventStore<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventStore")
            .field("backend", &self.backend)
            .field("upcasters", &self.upcasters)
            .field("keys", &self.keys.is_some())
            .field("open", &self.open)
            .finish()
    }
}

impl<S: EventReader> EventStore<S> {
    /// Wraps a backend, with no upcasters, sealing and opening personal data
    /// with the backend's own [`KeyStore`] ([`EventReader::personal_keys`]).
    pub fn new(backend: S) -> Self {
        let keys = backend.personal_keys();
        EventStore { backend, upcasters: Arc::new(Upcasters::new()), keys, open: true }
    }
}

impl<S> EventStore<S> {
    /// Sets the upcaster chain applied on every read.
    #[must_use]
    pub fn with_upcasters(mut self, upcasters: Upcasters) -> Self {
        self.upcasters = Arc::new(upcasters);
        self
    }

    /// Seals and opens personal data with `keys` instead of the backend's own.
    #[must_use]
    pub fn with_keys(mut self, keys: Arc<dyn KeyStore>) -> Self {
        self.keys = Some(keys);
        self
    }

    /// Reads without opening personal data: events keep their sealed values
    /// (`{"$sealed": ...}`), for a reader that passes them on, such as the
    /// Kafka relay (consumers open them with [`open_events`](crate::personal::open_events)).
    /// Appends still seal.
    #[must_use]
    pub fn sealed(mut self) -> Self {
        self.open = false;
        self
    }

    /// The wrapped backend.
    pub fn backend(&self) -> &S {
        &self.backend
    }

    /// The upcaster chain.
    pub fn upcasters(&self) -> &Upcasters {
        &self.upcasters
    }

    /// The key store personal data is sealed with, if any.
    pub fn keys(&self) -> Option<&Arc<dyn KeyStore>> {
        self.keys.as_ref()
    }

    /// Forgets `subject`: deletes its key (recording when, and `by` whom),
    /// so that every read yields [`Personal::Forgotten`](crate::Personal::Forgotten)
    /// for its data from now on. Forgetting twice answers the first forgetting.
    ///
    /// Copies outside the events are the caller's to erase: read models
    /// (an erasure hook), parked events, caches of other processes.
    ///
    /// # Errors
    /// [`PersonalError::UnknownSubject`](crate::PersonalError::UnknownSubject)
    /// for a subject that never had personal data stored;
    /// [`PersonalError::NoKeyStore`](crate::PersonalError::NoKeyStore); a store failure.
    pub async fn forget(&self, subject: &Subject, by: &str) -> Result<Forgetting> {
        let keys = self
            .keys
            .as_ref()
            .ok_or_else(|| crate::Error::Personal(crate::PersonalError::NoKeyStore(format!("forgetting {subject}"))))?;
        keys.forget(subject, by).await
    }

    /// Decodes a recorded (already upcast) event into a typed one, with the JSON codec.
    pub fn decode<E: DomainEvent>(&self, event: &RecordedEvent) -> Result<E> {
        JsonCodec.decode(event)
    }

    /// Opens the personal data of a page of events read from the backend
    /// (unless [`sealed`](Self::sealed)); one key lookup for the page.
    pub(crate) async fn open_page(&self, events: &mut [RecordedEvent]) -> Result<()> {
        match self.opening_keys() {
            Some(keys) => open_events(keys, events).await,
            None => Ok(()),
        }
    }

    /// The keys reads open personal data with: none when [`sealed`](Self::sealed) or without a key store.
    fn opening_keys(&self) -> Option<&dyn KeyStore> {
        self.keys.as_deref().filter(|_| self.open)
    }

    /// Opens (unless [`sealed`](Self::sealed)) and upcasts a page of events.
    pub(crate) async fn prepare(&self, mut events: Vec<RecordedEvent>) -> Result<Vec<RecordedEvent>> {
        self.open_page(&mut events).await?;
        for event in &mut events {
            self.upcasters.upcast(event)?;
        }
        Ok(events)
    }

    /// Seals the personal data of `appends` (one key-store call per subject
    /// for them all); returns the keys used.
    async fn seal(&self, appends: &mut [StreamAppend]) -> Result<HashMap<Subject, SubjectKey>> {
        let mut used = HashMap::new();
        for append in appends {
            seal_events_with(self.keys.as_ref(), &mut used, &mut append.events).await?;
        }
        Ok(used)
    }

    /// The store's echo of appended events, opened again with the keys that
    /// sealed them (no lookup): callers get back what they appended.
    fn reopen(used: &HashMap<Subject, SubjectKey>, results: &mut [AppendResult]) -> Result<()> {
        if used.is_empty() {
            return Ok(());
        }
        results.iter_mut().try_for_each(|result| open_with(used, &mut result.events))
    }
}

impl<S: EventReader> EventReader for EventStore<S> {
    async fn read_stream(&self, stream: &StreamId, from: Version, limit: usize) -> Result<Vec<RecordedEvent>> {
        let page = self.backend.read_stream(stream, from, limit).await?;
        self.prepare(page).await
    }

    async fn read_stream_lean(&self, stream: &StreamId, from: Version, limit: usize) -> Result<Vec<LeanEvent>> {
        let mut page = self.backend.read_stream_lean(stream, from, limit).await?;
        if let Some(keys) = self.opening_keys() {
            open_lean(keys, stream, &mut page).await?;
        }
        for event in &mut page {
            self.upcasters.upcast_lean(stream, event)?;
        }
        Ok(page)
    }

    async fn read_feed(&self, filter: &FeedFilter, after: Checkpoint, limit: usize) -> Result<Vec<RecordedEvent>> {
        let page = self.backend.read_feed(filter, after, limit).await?;
        self.prepare(page).await
    }

    async fn stream_version(&self, stream: &StreamId) -> Result<Version> {
        self.backend.stream_version(stream).await
    }

    async fn read_query(&self, query: &Query) -> Result<QueryRead> {
        let QueryRead { events, position } = self.backend.read_query(query).await?;
        Ok(QueryRead { events: self.prepare(events).await?, position })
    }

    async fn feed_head(&self, filter: &FeedFilter) -> Result<Option<FeedHead>> {
        self.backend.feed_head(filter).await
    }

    fn personal_keys(&self) -> Option<Arc<dyn KeyStore>> {
        self.keys.clone()
    }
}

impl<S: EventAppender> EventAppender for EventStore<S> {
    async fn append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        mut events: Vec<NewEvent>,
    ) -> Result<AppendResult> {
        let mut used = HashMap::new();
        seal_events_with(self.keys.as_ref(), &mut used, &mut events).await?;
        let mut result = self.backend.append(stream, expected, events).await?;
        Self::reopen(&used, std::slice::from_mut(&mut result))?;
        Ok(result)
    }

    async fn append_streams(&self, mut appends: Vec<StreamAppend>) -> Result<Vec<AppendResult>> {
        let used = self.seal(&mut appends).await?;
        let mut results = self.backend.append_streams(appends).await?;
        Self::reopen(&used, &mut results)?;
        Ok(results)
    }

    async fn append_if(&self, mut appends: Vec<StreamAppend>, condition: AppendCondition) -> Result<Vec<AppendResult>> {
        let used = self.seal(&mut appends).await?;
        let mut results = self.backend.append_if(appends, condition).await?;
        Self::reopen(&used, &mut results)?;
        Ok(results)
    }
}
