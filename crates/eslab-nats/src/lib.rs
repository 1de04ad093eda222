//! # eslab-nats
//!
//! eslab's event store on a NATS JetStream cluster: a replicated store on an
//! engine that exists and is operated widely. Every eslab stream lives in one
//! JetStream stream (default `ESLAB_EVENTS`), replicated by Raft (R3 in
//! production), with every write fsynced when the servers run with
//! `sync_interval: always`.
//!
//! ## The mapping
//! | eslab | JetStream |
//! |---|---|
//! | stream `<kind>-<id>` | subject `<prefix>.<kind>.<id, escaped>` (see below) |
//! | stream version | header `Eslab-Version`, written by the appender |
//! | global position | the stream sequence: gap-free, strictly increasing; the checkpoint's transaction is always 0 |
//! | optimistic concurrency | `Nats-Expected-Last-Subject-Sequence`, checked by the stream's leader |
//! | multi-event and multi-stream appends | one atomic batch (ADR-50, server 2.12+): all stored or none |
//! | event id uniqueness | `Nats-Msg-Id` = event id, deduplicated within the stream's duplicate window |
//! | per-category feed | a filtered direct get on `<prefix>.<kind>.*` |
//! | read-your-writes | every read carries `min_last_seq` (ADR-53): the highest sequence this handle wrote or saw |
//! | snapshots | a key-value bucket `<stream>_SNAPSHOTS` |
//! | wake-ups | a core-NATS message on `<prefix>-appended` after each append, with its last sequence |
//!
//! The stream id's `<id>` keeps `A-Z a-z 0-9 _ -` and writes every other byte
//! as `=XX` (hex), so that no id can reach another stream's subject or a
//! wildcard. The stream denies message deletes and purges: positions never
//! get holes, and a stream's history is immutable.
//!
//! ## What it does not do (typed errors, not silent differences)
//! - An append holds at most [`MAX_APPEND_EVENTS`] events (JetStream's batch
//!   limit): [`Error::InvalidRequest`] beyond.
//! - Event-id uniqueness holds within the duplicate window
//!   ([`NatsOptions::duplicate_window`], two minutes by default): a reused id
//!   is refused with [`Error::DuplicateEventId`] inside it; past it, JetStream
//!   no longer remembers the id. Within one append, ids are always checked.
//! - [`StreamRetention`](eslab_core::StreamRetention) (purging whole streams)
//!   is not implemented: the stream denies purges.
//! - Personal data: the store keeps no key store of its own
//!   ([`EventReader::personal_keys`] is `None`); give [`EventStore`](eslab_core::EventStore)
//!   one with [`with_keys`](eslab_core::EventStore::with_keys), e.g. the
//!   PostgreSQL or SQLite store's, so that forgetting deletes a row there.
//! - Conditional appends ([`EventAppender::append_if`], dynamic consistency
//!   boundaries) check the query up to the leader's head and commit expecting
//!   the whole stream's last sequence to be that head: correct, but they
//!   contend with every writer of the stream, not only with overlapping
//!   queries. JetStream has no index of types and tags: a handle reads the
//!   whole stream at its first query or condition, keeps every event's type
//!   and tags in memory (a few dozen bytes per event, plus its tags), and
//!   later reads only what was appended since.
//!
//! ```no_run
//! use eslab_core::{EventAppender, ExpectedVersion, Metadata, NewEvent, StreamId};
//! use eslab_nats::{NatsOptions, NatsStore};
//! # async fn run() -> eslab_core::Result<()> {
//! let store = NatsStore::connect(NatsOptions::new("nats://127.0.0.1:14222").replicas(3)).await?;
//! let stream: StreamId = "account-1".parse()?;
//! let opened = NewEvent::new("Opened", 1, serde_json::json!({}), Metadata::now());
//! store.append(&stream, ExpectedVersion::NoStream, vec![opened]).await?;
//! # Ok(()) }
//! ```

mod index;
mod subject;
mod wire;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_nats::jetstream::{self, kv, stream::StorageType};
use async_nats::{Client, HeaderMap};
use eslab_core::{
    AppendCondition, AppendResult, CategorySummary, Checkpoint, Error, EventAppender, EventReader, ExpectedVersion,
    Explore, FeedFilter, FeedHead, InvalidQuery, Metadata, NewEvent, Position, Query, QueryRead, ReadPosition,
    RecordedEvent, Result, Snapshot, SnapshotStore, StreamAppend, StreamId, StreamSummary, Version, WakeUpStream,
    WakeUps, explore_page, streams_page,
};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use tokio::sync::watch;

use crate::index::QueryIndex;
use crate::subject::Subjects;
use crate::wire::{DirectGet, Outgoing, Stored, WireError, code, header};

/// The three-server cluster `make services` runs on loopback
/// (`scripts/nats.sh`): the default of the tests and the lab.
pub const LOCAL_CLUSTER_URL: &str = "nats://127.0.0.1:14222,nats://127.0.0.1:14223,nats://127.0.0.1:14224";

/// The most events one append may hold: JetStream's limit on an atomic batch.
pub const MAX_APPEND_EVENTS: usize = 1000;

/// How many messages one direct get asks for.
const READ_PAGE: usize = 1024;

/// How many single-message gets `read_query` has in flight at once.
const FETCH_CONCURRENCY: usize = 32;

/// How many times an append retries after another writer moved a stream it
/// appends to with [`ExpectedVersion::Any`].
const MAX_ATTEMPTS: usize = 64;

/// Where the store keeps its messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Storage {
    /// On disk (what an event store wants).
    File,
    /// In memory: gone when the servers restart (tests, caches).
    Memory,
}

/// How to reach the cluster and which stream to use. Start from [`NatsOptions::new`].
#[derive(Debug, Clone)]
#[must_use]
pub struct NatsOptions {
    url: String,
    stream: String,
    prefix: String,
    replicas: usize,
    storage: Storage,
    duplicate_window: Duration,
    request_timeout: Duration,
}

impl NatsOptions {
    /// The servers at `url`: one `nats://host:port` or several, comma-separated
    /// (the client finds the rest of the cluster by itself). The defaults:
    /// stream `ESLAB_EVENTS` on subjects `eslab.events.>`, one replica, file
    /// storage, a two-minute duplicate window, five-second requests.
    pub fn new(url: impl Into<String>) -> Self {
        NatsOptions {
            url: url.into(),
            stream: "ESLAB_EVENTS".into(),
            prefix: "eslab.events".into(),
            replicas: 1,
            storage: Storage::File,
            duplicate_window: Duration::from_secs(120),
            request_timeout: Duration::from_secs(5),
        }
    }

    /// The JetStream stream's name (`A-Z a-z 0-9 _ -`); its snapshots bucket is `<name>_SNAPSHOTS`.
    pub fn stream(mut self, name: impl Into<String>) -> Self {
        self.stream = name.into();
        self
    }

    /// The subject prefix (dot-separated tokens of `A-Z a-z 0-9 _ -`); the
    /// stream captures `<prefix>.>`.
    pub fn subject_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// How many servers hold each message (1, 3 or 5; 3 in production). Used
    /// when the stream is created; an existing stream keeps its own.
    pub fn replicas(mut self, replicas: usize) -> Self {
        self.replicas = replicas;
        self
    }

    /// File (the default) or memory storage, when the stream is created.
    pub fn storage(mut self, storage: Storage) -> Self {
        self.storage = storage;
        self
    }

    /// How long JetStream remembers event ids to refuse a reused one.
    pub fn duplicate_window(mut self, window: Duration) -> Self {
        self.duplicate_window = window;
        self
    }

    /// How long a request may wait for its answer before the store reports
    /// [`Error::Unavailable`] (the outcome of a write is then unknown).
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// The servers' URL(s).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The JetStream stream's name.
    pub fn stream_name(&self) -> &str {
        &self.stream
    }
}

/// The event store on JetStream. Cheap to clone; clones share the connection.
#[derive(Clone)]
pub struct NatsStore {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for NatsStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsStore")
            .field("stream", &self.inner.options.stream)
            .field("prefix", &self.inner.options.prefix)
            .field("seen", &self.inner.seen.load(Ordering::Relaxed))
            .finish()
    }
}

struct Inner {
    client: Client,
    jetstream: jetstream::Context,
    options: NatsOptions,
    subjects: Subjects,
    /// The highest stream sequence this store wrote, read or was told of:
    /// every read asks for a server at least there (read-your-writes, monotonic reads).
    seen: Arc<AtomicU64>,
    /// A known `(version, sequence)` of recently used streams, the highest
    /// known: appends expecting that version need no read, and reads from a
    /// later version start past it.
    tails: moka::sync::Cache<StreamId, (u64, u64)>,
    /// Every event's type and tags read so far, for `read_query`.
    query_index: std::sync::Mutex<QueryIndex>,
    snapshots: kv::Store,
    appended: Arc<watch::Sender<()>>,
    listener: tokio::task::AbortHandle,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.listener.abort();
    }
}

/// The message body of an event: everything but its version and position.
#[derive(Serialize, Deserialize)]
struct Body<'a> {
    stream: std::borrow::Cow<'a, str>,
    id: uuid::Uuid,
    #[serde(rename = "type")]
    event_type: std::borrow::Cow<'a, str>,
    schema: u32,
    payload: std::borrow::Cow<'a, serde_json::Value>,
    metadata: std::borrow::Cow<'a, Metadata>,
    #[serde(with = "time::serde::rfc3339")]
    at: OffsetDateTime,
}

fn unavailable(e: impl std::fmt::Display) -> Error {
    Error::Unavailable(e.to_string().into())
}

fn wire_error(e: WireError) -> Error {
    match e {
        WireError::Unavailable(_) | WireError::NoResponders(_) => Error::Unavailable(Box::new(e)),
        WireError::Api { err_code: code::STREAM_NOT_FOUND, .. } => Error::Unavailable(Box::new(e)),
        other => Error::backend(other),
    }
}

impl NatsStore {
    /// Connects, and creates the events stream and the snapshots bucket if
    /// they do not exist (an existing stream must capture the same subjects
    /// and allow atomic batches).
    ///
    /// # Errors
    /// [`Error::InvalidRequest`] for a bad name or prefix, or an existing
    /// stream configured otherwise; [`Error::Unavailable`] when the servers
    /// do not answer.
    pub async fn connect(options: NatsOptions) -> Result<NatsStore> {
        if !subject::valid_name(&options.stream) {
            return Err(Error::InvalidRequest(format!(
                "JetStream stream name {:?} must use only A-Z, a-z, 0-9, _ and -",
                options.stream
            )));
        }
        if !subject::valid_prefix(&options.prefix) {
            return Err(Error::InvalidRequest(format!(
                "subject prefix {:?} must be dot-separated tokens of A-Z, a-z, 0-9, _ and -",
                options.prefix
            )));
        }
        if !matches!(options.replicas, 1..=5) {
            return Err(Error::InvalidRequest(format!("replicas must be 1 to 5, not {}", options.replicas)));
        }
        let servers = options
            .url
            .split(',')
            .map(|u| u.trim().parse::<async_nats::ServerAddr>())
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| Error::InvalidRequest(format!("NATS URL {:?}: {e}", options.url)))?;
        let client = async_nats::ConnectOptions::new()
            .request_timeout(Some(options.request_timeout))
            .connection_timeout(options.request_timeout)
            .retry_on_initial_connect()
            .max_reconnects(None)
            .connect(servers)
            .await
            .map_err(|e| unavailable(format!("cannot connect to NATS at {}: {e}", options.url)))?;
        // The first connection attempt runs in the background: wait for it, bounded.
        let deadline = tokio::time::Instant::now() + options.request_timeout;
        while client.connection_state() != async_nats::connection::State::Connected {
            if tokio::time::Instant::now() > deadline {
                return Err(unavailable(format!("cannot connect to NATS at {}", options.url)));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let mut jetstream = jetstream::new(client.clone());
        jetstream.set_timeout(options.request_timeout);
        let subjects = Subjects::new(&options.prefix);
        let storage = match options.storage {
            Storage::File => StorageType::File,
            Storage::Memory => StorageType::Memory,
        };
        ensure_stream(&jetstream, &options, &subjects, storage).await?;
        let snapshots = ensure_bucket(&jetstream, &options, storage).await?;
        let seen = Arc::new(AtomicU64::new(0));
        let appended = Arc::new(watch::Sender::new(()));
        let mut announcements = client
            .subscribe(subjects.appended())
            .await
            .map_err(|e| unavailable(format!("cannot subscribe to {}: {e}", subjects.appended())))?;
        let listener = {
            let seen = seen.clone();
            let appended = appended.clone();
            tokio::spawn(async move {
                while let Some(message) = announcements.next().await {
                    if let Some(seq) = std::str::from_utf8(&message.payload).ok().and_then(|s| s.parse().ok()) {
                        seen.fetch_max(seq, Ordering::AcqRel);
                    }
                    appended.send_modify(|()| {});
                }
            })
            .abort_handle()
        };
        Ok(NatsStore {
            inner: Arc::new(Inner {
                client,
                jetstream,
                options,
                subjects,
                seen,
                tails: moka::sync::Cache::new(100_000),
                query_index: std::sync::Mutex::default(),
                snapshots,
                appended,
                listener,
            }),
        })
    }

    /// The options the store was opened with.
    pub fn options(&self) -> &NatsOptions {
        &self.inner.options
    }

    /// The underlying NATS client (for health checks and metrics).
    pub fn client(&self) -> &Client {
        &self.inner.client
    }

    /// Deletes the events stream and the snapshots bucket, with every event
    /// in them (tests; irreversible).
    ///
    /// # Errors
    /// [`Error::Unavailable`] when the servers do not answer.
    pub async fn destroy(&self) -> Result<()> {
        let js = &self.inner.jetstream;
        js.delete_stream(&self.inner.options.stream).await.map_err(unavailable)?;
        js.delete_key_value(bucket_name(&self.inner.options)).await.map_err(unavailable)?;
        Ok(())
    }

    fn min_last_seq(&self) -> Option<u64> {
        Some(self.inner.seen.load(Ordering::Acquire)).filter(|&s| s > 0)
    }

    fn saw(&self, seq: u64) {
        self.inner.seen.fetch_max(seq, Ordering::AcqRel);
    }

    /// Remembers that `stream` was at `version` at sequence `seq`.
    fn remember(&self, stream: &StreamId, version: u64, seq: u64) {
        let tails = &self.inner.tails;
        if tails.get(stream).is_none_or(|(v, _)| v < version) {
            tails.insert(stream.clone(), (version, seq));
        }
    }

    fn decode(&self, stored: Stored) -> Result<RecordedEvent> {
        let version = stored
            .header_u64(header::VERSION)
            .ok_or_else(|| Error::backend(format!("message {} has no {} header", stored.seq, header::VERSION)))?;
        let body: Body<'static> = serde_json::from_slice(&stored.payload)
            .map_err(|e| Error::backend(format!("message {} is not an eslab event: {e}", stored.seq)))?;
        let stream_id: StreamId = body.stream.parse()?;
        self.remember(&stream_id, version, stored.seq);
        self.saw(stored.seq);
        Ok(RecordedEvent {
            event_id: body.id,
            stream_id,
            stream_version: Version::new(version),
            position: Position::new(stored.seq),
            transaction: 0,
            event_type: body.event_type.into_owned(),
            schema_version: body.schema,
            payload: body.payload.into_owned(),
            metadata: body.metadata.into_owned(),
            recorded_at: body.at,
        })
    }

    /// Up to `limit` events on `subject` from sequence `start` on that `keep`
    /// accepts (the others are read and skipped), and the sequence of the
    /// last message read (0: none), paging until a page comes back short.
    async fn scan(
        &self,
        subject: &str,
        mut start: u64,
        limit: usize,
        keep: Option<&(dyn Fn(&RecordedEvent) -> bool + Sync)>,
    ) -> Result<(Vec<RecordedEvent>, u64)> {
        let mut out = Vec::new();
        let mut last_seen = 0;
        while out.len() < limit {
            // Unfiltered, ask for what is wanted; filtered, for a full page.
            let batch = if keep.is_some() { READ_PAGE } else { READ_PAGE.min(limit - out.len()) };
            let page = self.page(subject, start, batch).await?;
            let short = page.len() < batch;
            for stored in page {
                last_seen = stored.seq;
                let event = self.decode(stored)?;
                if keep.is_none_or(|keep| keep(&event)) {
                    out.push(event);
                    if out.len() == limit {
                        return Ok((out, last_seen));
                    }
                }
            }
            if short {
                break;
            }
            start = last_seen + 1;
        }
        Ok((out, last_seen))
    }

    /// Reads what was appended since the query index's end into it, page
    /// by page; returns the sequence the index now answers up to (everything
    /// up to it is in it) and the events read that `keep` matches.
    async fn refresh_index(&self, keep: Option<&Query>) -> Result<(u64, Vec<RecordedEvent>)> {
        let from = self.query_index().upto();
        let mut kept = Vec::new();
        let mut next = from + 1;
        loop {
            let page = self.page(&self.inner.subjects.all(), next, READ_PAGE).await?;
            let short = page.len() < READ_PAGE;
            let events = page.into_iter().map(|stored| self.decode(stored)).collect::<Result<Vec<_>>>()?;
            if let Some(last) = events.last() {
                next = last.position.get() + 1;
            }
            {
                let mut index = self.query_index();
                // The scan holds every sequence from `from + 1` on; what
                // another refresh indexed meanwhile is skipped.
                if !index.extend(&events) {
                    return Err(Error::backend(format!(
                        "the stream's sequences have a hole after {}: was it purged?",
                        index.upto()
                    )));
                }
            }
            if let Some(query) = keep {
                kept.extend(events.into_iter().filter(|e| query.matches(&e.event_type, &e.metadata.tags)));
            }
            if short {
                return Ok((next - 1, kept));
            }
        }
    }

    fn query_index(&self) -> std::sync::MutexGuard<'_, QueryIndex> {
        self.inner.query_index.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The events at `seqs` (each known to exist, the highest at most
    /// `upto`), fetched by direct gets, a few at a time.
    async fn events_at(&self, seqs: &[u64], upto: u64) -> Result<HashMap<u64, RecordedEvent>> {
        let fetches: Vec<_> = seqs.iter().map(|&seq| self.event_at(seq, upto)).collect();
        futures_util::stream::iter(fetches)
            .buffer_unordered(FETCH_CONCURRENCY)
            .collect::<Vec<Result<_>>>()
            .await
            .into_iter()
            .collect()
    }

    /// The event at `seq` (known to exist, at most `upto`).
    async fn event_at(&self, seq: u64, upto: u64) -> Result<(u64, RecordedEvent)> {
        let request = DirectGet { seq: Some(seq), min_last_seq: Some(upto), ..DirectGet::default() };
        for _ in 0..MAX_ATTEMPTS {
            match wire::direct_get(&self.inner.client, &self.inner.options.stream, &request)
                .await
                .map_err(wire_error)?
            {
                Some(stored) => return Ok((seq, self.decode(stored)?)),
                // A follower behind `upto` answered in spite of `min_last_seq`.
                None => tokio::time::sleep(Duration::from_millis(2)).await,
            }
        }
        Err(Error::Unavailable(format!("no server caught up with sequence {seq}").into()))
    }

    /// Up to `batch` messages on `subject` from sequence `start`, from a
    /// server that reached this handle's `min_last_seq`.
    async fn page(&self, subject: &str, start: u64, batch: usize) -> Result<Vec<Stored>> {
        let request = DirectGet {
            seq: Some(start),
            next_by_subj: Some(subject.to_owned()),
            batch: Some(batch),
            min_last_seq: self.min_last_seq(),
            ..DirectGet::default()
        };
        wire::direct_get_batch(&self.inner.client, &self.inner.options.stream, &request, self.timeout())
            .await
            .map_err(wire_error)
    }

    fn timeout(&self) -> Duration {
        self.inner.options.request_timeout
    }

    /// The version and sequence of a stream's last event (`(0, 0)`: none),
    /// from any up-to-date server.
    async fn tail(&self, stream: &StreamId) -> Result<(u64, u64)> {
        let request = DirectGet {
            last_by_subj: Some(self.inner.subjects.stream(stream)),
            min_last_seq: self.min_last_seq(),
            ..DirectGet::default()
        };
        let found = match wire::direct_get(&self.inner.client, &self.inner.options.stream, &request)
            .await
            .map_err(wire_error)?
        {
            None => (0, 0),
            Some(stored) => self.version_of(stream, &stored.headers, stored.seq)?,
        };
        // A server behind what this handle knows: ask the leader.
        match self.inner.tails.get(stream) {
            Some((known, _)) if known > found.0 => self.leader_tail(stream).await,
            _ => Ok(found),
        }
    }

    /// [`tail`](Self::tail) as the stream's leader has it (after a failed expectation).
    async fn leader_tail(&self, stream: &StreamId) -> Result<(u64, u64)> {
        let subject = self.inner.subjects.stream(stream);
        match wire::leader_last(&self.inner.client, &self.inner.options.stream, &subject).await.map_err(wire_error)? {
            None => Ok((0, 0)),
            Some((seq, headers)) => self.version_of(stream, &headers, seq),
        }
    }

    fn version_of(&self, stream: &StreamId, headers: &HeaderMap, seq: u64) -> Result<(u64, u64)> {
        let version = headers
            .get(header::VERSION)
            .and_then(|v| v.as_str().trim().parse().ok())
            .ok_or_else(|| Error::backend(format!("message {seq} has no {} header", header::VERSION)))?;
        self.remember(stream, version, seq);
        self.saw(seq);
        Ok((version, seq))
    }

    /// Where one stream's append starts: the version it appends after and the
    /// subject sequence the leader must still have; a conflict when the
    /// expectation already fails.
    async fn plan(&self, append: &StreamAppend) -> Result<(u64, u64)> {
        let conflict = |actual: u64| Error::Conflict {
            stream: append.stream_id.clone(),
            expected: append.expected,
            actual: Version::new(actual),
        };
        match append.expected {
            ExpectedVersion::NoStream | ExpectedVersion::Exact(Version::NONE) => Ok((0, 0)),
            ExpectedVersion::Exact(v) => {
                if let Some((known, seq)) = self.inner.tails.get(&append.stream_id)
                    && known == v.get()
                {
                    return Ok((known, seq));
                }
                let (actual, seq) = self.tail(&append.stream_id).await?;
                if actual == v.get() {
                    return Ok((actual, seq));
                }
                // A follower may be behind: ask the leader before refusing.
                let (actual, seq) =
                    if actual < v.get() { self.leader_tail(&append.stream_id).await? } else { (actual, seq) };
                if actual == v.get() { Ok((actual, seq)) } else { Err(conflict(actual)) }
            }
            ExpectedVersion::Any => self.tail(&append.stream_id).await,
            ExpectedVersion::StreamExists => {
                let (actual, seq) = match self.tail(&append.stream_id).await? {
                    (0, _) => self.leader_tail(&append.stream_id).await?,
                    found => found,
                };
                if actual == 0 { Err(conflict(0)) } else { Ok((actual, seq)) }
            }
        }
    }

    /// After the leader refused an expectation: the first stream whose
    /// expectation fails at the leader, as a conflict; otherwise fresh plans.
    async fn replan(&self, appends: &[StreamAppend]) -> Result<Vec<(u64, u64)>> {
        let mut plans = Vec::with_capacity(appends.len());
        for append in appends {
            let (actual, seq) = self.leader_tail(&append.stream_id).await?;
            if !append.expected.accepts(Version::new(actual)) {
                return Err(Error::Conflict {
                    stream: append.stream_id.clone(),
                    expected: append.expected,
                    actual: Version::new(actual),
                });
            }
            plans.push((actual, seq));
        }
        Ok(plans)
    }

    fn messages(
        &self,
        appends: &[StreamAppend],
        plans: &[(u64, u64)],
        expected_last: Option<u64>,
        at: OffsetDateTime,
    ) -> Result<Vec<Outgoing>> {
        let mut out = Vec::new();
        for (append, &(base, seq)) in appends.iter().zip(plans) {
            let subject = self.inner.subjects.stream(&append.stream_id);
            for (i, event) in append.events.iter().enumerate() {
                let mut headers = HeaderMap::new();
                headers.insert(header::MSG_ID, event.event_id.to_string().as_str());
                let version = base + i as u64 + 1;
                headers.insert(header::VERSION, version.to_string().as_str());
                if i == 0 {
                    headers.insert(header::EXPECTED_LAST_SUBJECT_SEQ, seq.to_string().as_str());
                }
                if out.is_empty()
                    && let Some(last) = expected_last
                {
                    headers.insert(header::EXPECTED_LAST_SEQ, last.to_string().as_str());
                }
                let body = Body {
                    stream: append.stream_id.as_str().into(),
                    id: event.event_id,
                    event_type: event.event_type.as_str().into(),
                    schema: event.schema_version,
                    payload: std::borrow::Cow::Borrowed(&event.payload),
                    metadata: std::borrow::Cow::Borrowed(&event.metadata),
                    at,
                };
                let payload = serde_json::to_vec(&body)
                    .map_err(|source| Error::Encode { event_type: event.event_type.clone(), source })?;
                out.push(Outgoing { subject: subject.clone(), headers, payload: payload.into() });
            }
        }
        Ok(out)
    }

    /// Checks what needs no server: streams named twice, ids used twice,
    /// sizes and versions in range.
    fn check(appends: &[StreamAppend]) -> Result<usize> {
        eslab_core::check_storable(appends)?;
        let mut streams = HashSet::new();
        let mut ids = HashSet::new();
        let mut total = 0usize;
        for append in appends {
            if !streams.insert(&append.stream_id) {
                return Err(Error::InvalidRequest(format!("stream {} appears twice in one append", append.stream_id)));
            }
            for event in &append.events {
                if !ids.insert(event.event_id) {
                    return Err(Error::DuplicateEventId(event.event_id));
                }
            }
            total += append.events.len();
        }
        if total > MAX_APPEND_EVENTS {
            return Err(Error::InvalidRequest(format!(
                "an append to JetStream holds at most {MAX_APPEND_EVENTS} events (its atomic batch limit), not {total}"
            )));
        }
        Ok(total)
    }

    async fn append_all(
        &self,
        appends: Vec<StreamAppend>,
        condition: Option<&AppendCondition>,
    ) -> Result<Vec<AppendResult>> {
        let total = Self::check(&appends)?;
        let mut plans = Vec::with_capacity(appends.len());
        for append in &appends {
            plans.push(self.plan(append).await?);
        }
        if total == 0 {
            if let Some(condition) = condition {
                let head = self.leader_head().await?;
                self.check_condition(condition, head).await?;
            }
            return Ok(appends
                .into_iter()
                .zip(plans)
                .map(|(a, (version, _))| AppendResult {
                    stream_id: a.stream_id,
                    version: Version::new(version),
                    events: Vec::new(),
                })
                .collect());
        }
        let ids: Vec<uuid::Uuid> = appends.iter().flat_map(|a| &a.events).map(|e| e.event_id).collect();
        // Writers racing on one stream with `Any` spread out their retries.
        let mut pauses = backon::BackoffBuilder::build(
            backon::ExponentialBuilder::default()
                .with_min_delay(Duration::from_millis(1))
                .with_max_delay(Duration::from_millis(50))
                .with_jitter()
                .without_max_times(),
        );
        for _ in 0..MAX_ATTEMPTS {
            // A condition holds up to the leader's head, which the commit
            // then expects to be the stream's last sequence still.
            let head = match condition {
                Some(condition) => {
                    let head = self.leader_head().await?;
                    self.check_condition(condition, head).await?;
                    Some(head)
                }
                None => None,
            };
            let at = OffsetDateTime::now_utc();
            let messages = self.messages(&appends, &plans, head, at)?;
            let single = messages.len() == 1;
            let outcome = wire::publish_batch(&self.inner.client, messages).await;
            match outcome {
                Ok(ack) if ack.duplicate => {
                    return Err(Error::DuplicateEventId(ids.first().copied().unwrap_or_default()));
                }
                Ok(ack) => return Ok(self.finish(appends, &plans, ack.seq, total, at)),
                Err(e) if e.err_code() == Some(code::BATCH_DUPLICATE) => {
                    return Err(Error::DuplicateEventId(self.stored_id_among(&ids).await?));
                }
                Err(e) if e.wrong_last_sequence().is_some() => {
                    tracing::debug!(single, "JetStream refused an expectation; checking the streams again");
                    plans = self.replan(&appends).await?;
                    if let Some(pause) = pauses.next() {
                        tokio::time::sleep(pause).await;
                    }
                }
                Err(e) => return Err(wire_error(e)),
            }
        }
        Err(Error::Unavailable(
            format!("append gave up after {MAX_ATTEMPTS} attempts: other writers kept moving its streams").into(),
        ))
    }

    /// The stream's last sequence as its leader has it (`STREAM.INFO`).
    async fn leader_head(&self) -> Result<u64> {
        let stream = self.inner.jetstream.get_stream_no_info(&self.inner.options.stream).await.map_err(unavailable)?;
        let info = stream.get_info().await.map_err(unavailable)?;
        let head = info.state.last_sequence;
        self.saw(head);
        Ok(head)
    }

    /// Fails if an event matching the condition's query lies after its
    /// position, reading every event up to `head` (reads carry a
    /// `min_last_seq` of at least `head`, so no server behind it answers).
    async fn check_condition(&self, condition: &AppendCondition, head: u64) -> Result<()> {
        let after = match &condition.after {
            None => 0,
            Some(read) if read.unseen.is_some() => {
                return Err(
                    InvalidQuery::PositionAhead { position: format!("{read:?}"), head: head.to_string() }.into()
                );
            }
            Some(read) => read.position.get(),
        };
        if after > head {
            return Err(InvalidQuery::PositionAhead { position: after.to_string(), head: head.to_string() }.into());
        }
        if head == after {
            return Ok(());
        }
        for _ in 0..MAX_ATTEMPTS {
            // Every sequence up to the head holds a message: an index that
            // did not reach it was read from a server behind the leader.
            if self.refresh_index(None).await?.0 >= head {
                let first = self.query_index().matching(&condition.query, head).into_iter().find(|&seq| seq > after);
                return match first {
                    None => Ok(()),
                    Some(seq) => {
                        let e = self
                            .events_at(&[seq], head)
                            .await?
                            .remove(&seq)
                            .ok_or_else(|| Error::backend(format!("event at sequence {seq} vanished")))?;
                        Err(Error::ConditionFailed {
                            event_id: e.event_id,
                            event_type: e.event_type,
                            position: e.position,
                        })
                    }
                };
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        Err(Error::Unavailable(format!("no server caught up with the stream's head {head}").into()))
    }

    /// Which of `ids` is stored (JetStream refuses a batch holding a known id
    /// without saying which): a scan of the events of the duplicate window.
    async fn stored_id_among(&self, ids: &[uuid::Uuid]) -> Result<uuid::Uuid> {
        let since = OffsetDateTime::now_utc() - self.inner.options.duplicate_window - Duration::from_secs(10);
        let request = DirectGet {
            start_time: since.format(&time::format_description::well_known::Rfc3339).ok(),
            next_by_subj: Some(self.inner.subjects.all()),
            batch: Some(1),
            min_last_seq: self.min_last_seq(),
            ..DirectGet::default()
        };
        let first = wire::direct_get_batch(&self.inner.client, &self.inner.options.stream, &request, self.timeout())
            .await
            .map_err(wire_error)?;
        let fallback = ids.first().copied().unwrap_or_default();
        let Some(start) = first.first().map(|m| m.seq) else { return Ok(fallback) };
        let wanted: HashSet<uuid::Uuid> = ids.iter().copied().collect();
        let is_ours = |e: &RecordedEvent| wanted.contains(&e.event_id);
        let (found, _) = self.scan(&self.inner.subjects.all(), start, 1, Some(&is_ours)).await?;
        Ok(found.first().map_or(fallback, |e| e.event_id))
    }

    /// The results of a committed append whose last message got `last_seq`.
    fn finish(
        &self,
        appends: Vec<StreamAppend>,
        plans: &[(u64, u64)],
        last_seq: u64,
        total: usize,
        at: OffsetDateTime,
    ) -> Vec<AppendResult> {
        let mut seq = last_seq + 1 - total as u64;
        let mut results = Vec::with_capacity(appends.len());
        for (StreamAppend { stream_id, events, .. }, &(base, _)) in appends.into_iter().zip(plans) {
            let mut version = base;
            let mut recorded = Vec::with_capacity(events.len());
            for NewEvent { event_id, event_type, schema_version, payload, metadata } in events {
                version += 1;
                recorded.push(RecordedEvent {
                    event_id,
                    stream_id: stream_id.clone(),
                    stream_version: Version::new(version),
                    position: Position::new(seq),
                    transaction: 0,
                    event_type,
                    schema_version,
                    payload,
                    metadata,
                    recorded_at: at,
                });
                seq += 1;
            }
            if let Some(last) = recorded.last() {
                self.remember(&stream_id, version, last.position.get());
            }
            results.push(AppendResult { stream_id, version: Version::new(version), events: recorded });
        }
        self.saw(last_seq);
        self.inner.appended.send_modify(|()| {});
        let client = self.inner.client.clone();
        let subject = self.inner.subjects.appended();
        // Best effort, after the commit: other processes' readers wake on it
        // (they also poll).
        tokio::spawn(async move {
            let _ = client.publish(subject, last_seq.to_string().into()).await;
        });
        results
    }
}

fn bucket_name(options: &NatsOptions) -> String {
    format!("{}_SNAPSHOTS", options.stream)
}

async fn ensure_stream(
    js: &jetstream::Context,
    options: &NatsOptions,
    subjects: &Subjects,
    storage: StorageType,
) -> Result<()> {
    use jetstream::ErrorCode;
    use jetstream::context::{CreateStreamErrorKind, GetStreamErrorKind};
    use jetstream::stream::{Config, DiscardPolicy, RetentionPolicy};
    let wanted = subjects.all();
    match js.get_stream(&options.stream).await {
        Ok(mut stream) => {
            let info = stream.info().await.map_err(unavailable)?;
            let config = &info.config;
            if !config.subjects.contains(&wanted) || !config.allow_atomic_publish || !config.allow_direct {
                return Err(Error::InvalidRequest(format!(
                    "JetStream stream {} exists but does not capture {wanted} with atomic batches and direct gets allowed; \
                     choose another stream name",
                    options.stream
                )));
            }
            Ok(())
        }
        Err(e) if matches!(e.kind(), GetStreamErrorKind::JetStream(j) if j.error_code() == ErrorCode::STREAM_NOT_FOUND) =>
        {
            let config = Config {
                name: options.stream.clone(),
                subjects: vec![wanted],
                storage,
                num_replicas: options.replicas,
                retention: RetentionPolicy::Limits,
                discard: DiscardPolicy::Old,
                duplicate_window: options.duplicate_window,
                allow_atomic_publish: true,
                allow_direct: true,
                deny_delete: true,
                deny_purge: true,
                ..Config::default()
            };
            match js.create_stream(config).await {
                Ok(_) => Ok(()),
                // Another process created it meanwhile.
                Err(e) if matches!(e.kind(), CreateStreamErrorKind::JetStream(j) if j.error_code() == ErrorCode::STREAM_NAME_EXIST) => {
                    js.get_stream(&options.stream).await.map(|_| ()).map_err(|_| unavailable(e))
                }
                Err(e) => Err(unavailable(format!("cannot create JetStream stream {}: {e}", options.stream))),
            }
        }
        Err(e) => Err(unavailable(format!("cannot reach JetStream stream {}: {e}", options.stream))),
    }
}

async fn ensure_bucket(js: &jetstream::Context, options: &NatsOptions, storage: StorageType) -> Result<kv::Store> {
    let bucket = bucket_name(options);
    if let Ok(store) = js.get_key_value(&bucket).await {
        return Ok(store);
    }
    let config = kv::Config {
        bucket: bucket.clone(),
        history: 1,
        storage,
        num_replicas: options.replicas,
        ..kv::Config::default()
    };
    match js.create_key_value(config).await {
        Ok(store) => Ok(store),
        Err(create) => js
            .get_key_value(&bucket)
            .await
            .map_err(|_| unavailable(format!("cannot create the snapshots bucket {bucket}: {create}"))),
    }
}

impl EventAppender for NatsStore {
    async fn append_streams(&self, appends: Vec<StreamAppend>) -> Result<Vec<AppendResult>> {
        self.append_all(appends, None).await
    }

    /// Reads every event after the condition's position up to the leader's
    /// head (`STREAM.INFO`), then commits expecting the whole stream's last
    /// sequence to be that head still (`Nats-Expected-Last-Sequence`); when
    /// any writer got in between, checks again. Correct, but conditional
    /// appends contend with every writer of the stream, not only with
    /// overlapping queries.
    async fn append_if(&self, appends: Vec<StreamAppend>, condition: AppendCondition) -> Result<Vec<AppendResult>> {
        self.append_all(appends, Some(&condition)).await
    }
}

impl EventReader for NatsStore {
    /// Read-your-writes: a read that ends before a version this handle
    /// knows the stream reached (it appended or read it) came from a server
    /// still behind, and is made again.
    async fn read_stream(&self, stream: &StreamId, from: Version, limit: usize) -> Result<Vec<RecordedEvent>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let from = from.get().max(1);
        for _ in 0..MAX_ATTEMPTS {
            let known = self.inner.tails.get(stream);
            // A known event before `from` is where the read can start.
            let start = match known {
                Some((version, seq)) if version < from => seq + 1,
                _ => 1,
            };
            let subject = self.inner.subjects.stream(stream);
            let (events, _) = if start == 1 && from == 1 {
                self.scan(&subject, start, limit, None).await?
            } else {
                self.scan(&subject, start, limit, Some(&|e: &RecordedEvent| e.stream_version.get() >= from)).await?
            };
            let reached = events.last().map_or(from - 1, |e| e.stream_version.get());
            let behind = known.is_some_and(|(version, _)| reached < version);
            if events.len() == limit || !behind {
                return Ok(events);
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        Err(Error::Unavailable(format!("no server caught up with {stream}").into()))
    }

    async fn read_feed(&self, filter: &FeedFilter, after: Checkpoint, limit: usize) -> Result<Vec<RecordedEvent>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let start = after.position.get().saturating_add(1);
        let (events, _) = self.scan(&self.inner.subjects.feed(filter), start, limit, None).await?;
        Ok(events)
    }

    async fn stream_version(&self, stream: &StreamId) -> Result<Version> {
        Ok(Version::new(self.tail(stream).await?.0))
    }

    /// Reads what was appended since this handle's last query (the first
    /// query reads the whole stream), keeping every event's type and tags in
    /// the handle's index; then fetches the events the index says match.
    async fn read_query(&self, query: &Query) -> Result<QueryRead> {
        let (upto, new) = self.refresh_index(Some(query)).await?;
        let seqs = self.query_index().matching(query, upto);
        let mut scanned: HashMap<u64, RecordedEvent> = new.into_iter().map(|e| (e.position.get(), e)).collect();
        let missing: Vec<u64> = seqs.iter().copied().filter(|seq| !scanned.contains_key(seq)).collect();
        let mut fetched = self.events_at(&missing, upto).await?;
        let mut events = Vec::with_capacity(seqs.len());
        for seq in seqs {
            let event = scanned.remove(&seq).or_else(|| fetched.remove(&seq));
            events.push(event.ok_or_else(|| Error::backend(format!("event at sequence {seq} vanished")))?);
        }
        Ok(QueryRead { events, position: ReadPosition::at(Position::new(upto)) })
    }

    async fn feed_head(&self, filter: &FeedFilter) -> Result<Option<FeedHead>> {
        let request = DirectGet {
            last_by_subj: Some(self.inner.subjects.feed(filter)),
            min_last_seq: self.min_last_seq(),
            ..DirectGet::default()
        };
        let found =
            wire::direct_get(&self.inner.client, &self.inner.options.stream, &request).await.map_err(wire_error)?;
        match found {
            None => Ok(None),
            Some(stored) => Ok(Some(FeedHead::of(&self.decode(stored)?))),
        }
    }
}

/// Listings come from the stream's per-subject counts (`STREAM.INFO` with a
/// subject filter, answered by the leader); correlation lookups scan the feed.
impl Explore for NatsStore {
    async fn categories(&self, after: Option<&str>, limit: usize) -> Result<Vec<CategorySummary>> {
        let counts = self.subject_counts(&self.inner.subjects.all()).await?;
        let mut categories: BTreeMap<String, u64> = BTreeMap::new();
        for (subject, n) in counts {
            if let Some(category) = self.inner.subjects.category_of(&subject)
                && after.is_none_or(|after| category > after)
            {
                *categories.entry(category.to_owned()).or_default() += n;
            }
        }
        Ok(categories
            .into_iter()
            .take(explore_page(limit))
            .map(|(category, n)| CategorySummary::counted(category, n))
            .collect())
    }

    async fn streams(&self, category: &str, after: Option<&StreamId>, limit: usize) -> Result<Vec<StreamSummary>> {
        FeedFilter::category(category)?;
        let counts = self.subject_counts(&self.inner.subjects.category(category)).await?;
        let streams = counts.into_iter().filter_map(|(subject, n)| {
            let token = subject.rsplit_once('.')?.1;
            let stream = StreamId::new(category, &subject::decode_id(token)?).ok()?;
            Some(StreamSummary { stream_id: stream, version: Version::new(n) })
        });
        Ok(streams_page(streams, after, limit))
    }

    async fn correlated(
        &self,
        correlation_id: uuid::Uuid,
        after: Position,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>> {
        let ours = |e: &RecordedEvent| e.metadata.correlation_id == Some(correlation_id);
        let start = after.get().saturating_add(1);
        let (events, _) = self.scan(&self.inner.subjects.all(), start, explore_page(limit), Some(&ours)).await?;
        Ok(events)
    }
}

impl NatsStore {
    /// Messages per subject matching `filter`.
    async fn subject_counts(&self, filter: &str) -> Result<Vec<(String, u64)>> {
        let stream = self.inner.jetstream.get_stream_no_info(&self.inner.options.stream).await.map_err(unavailable)?;
        let mut subjects = stream.info_with_subjects(filter).await.map_err(unavailable)?;
        let mut out = Vec::new();
        while let Some(entry) = subjects.next().await {
            let (subject, n) = entry.map_err(unavailable)?;
            out.push((subject, n as u64));
        }
        Ok(out)
    }

    fn snapshot_key(stream: &StreamId) -> String {
        format!("{}.{}", stream.category(), subject::encode_id(stream.id()))
    }
}

/// Snapshots in the key-value bucket `<stream>_SNAPSHOTS`, one key per
/// stream; a save replaces the stored snapshot only if it is newer, by
/// compare-and-set on the key's revision.
impl SnapshotStore for NatsStore {
    async fn load_snapshot(&self, stream: &StreamId) -> Result<Option<Snapshot>> {
        let found = self.inner.snapshots.get(Self::snapshot_key(stream)).await.map_err(unavailable)?;
        found
            .map(|bytes| {
                serde_json::from_slice(&bytes).map_err(|e| Error::backend(format!("snapshot of {stream}: {e}")))
            })
            .transpose()
    }

    async fn save_snapshot(&self, snapshot: Snapshot) -> Result<()> {
        let key = Self::snapshot_key(&snapshot.stream_id);
        let bytes: bytes::Bytes = serde_json::to_vec(&snapshot)
            .map_err(|source| Error::EncodeState { stream: snapshot.stream_id.clone(), source })?
            .into();
        let bucket = &self.inner.snapshots;
        for _ in 0..MAX_ATTEMPTS {
            let current = bucket.entry(key.as_str()).await.map_err(unavailable)?;
            let written = match current.filter(|e| e.operation == kv::Operation::Put) {
                Some(entry) => {
                    let stored: Snapshot = serde_json::from_slice(&entry.value)
                        .map_err(|e| Error::backend(format!("snapshot of {}: {e}", snapshot.stream_id)))?;
                    if stored.version >= snapshot.version {
                        return Ok(());
                    }
                    bucket.update(key.as_str(), bytes.clone(), entry.revision).await.is_ok()
                }
                None => bucket.create(key.as_str(), bytes.clone()).await.is_ok(),
            };
            if written {
                return Ok(());
            }
        }
        Err(Error::Unavailable(format!("snapshot of {} kept racing other writers", snapshot.stream_id).into()))
    }
}

/// Wakes on this process's appends at once, and on other processes' appends
/// when their announcement arrives (core NATS, best effort: subscriptions
/// also poll).
impl WakeUps for NatsStore {
    async fn wake_ups(&self) -> WakeUpStream {
        eslab_core::watch_wake_ups(self.inner.appended.subscribe())
    }
}
