//! The command path of a [dynamic consistency boundary](crate::boundary):
//! read the events of a query → decide → append with the condition "nothing
//! of the boundary changed since the read" → on a conflict read and decide
//! again, with backoff. The counterpart of [`Repository::run`](crate::Repository::run)
//! for decisions that span several streams without a saga, with the same
//! [`CommandOptions`] (metadata, idempotency key, derived event ids).
//!
//! ```
//! use eslab_core::{
//!     BoundaryDecision, Boundaries, CommandOptions, DecideOnBoundary, DomainEvent, EventStore, InvalidQuery, Query, Seen,
//!     StreamId, Tag,
//! };
//! #[derive(serde::Serialize, serde::Deserialize)]
//! enum Seat { Booked { seat: u32 } }
//! impl DomainEvent for Seat {
//!     const EVENT_TYPES: &'static [&'static str] = &["Booked"];
//!     fn event_type(&self) -> &'static str { "Booked" }
//!     fn tags(&self) -> Vec<Tag> { vec![Tag::new("show:42").unwrap()] }
//! }
//! #[derive(Debug, thiserror::Error)]
//! #[error("sold out")]
//! struct SoldOut;
//! /// Book a seat of show 42, whatever stream holds the earlier bookings.
//! struct Book;
//! impl DecideOnBoundary for Book {
//!     type Event = Seat;
//!     type Output = u32;
//!     type Error = SoldOut;
//!     fn query(&self) -> Result<Query, InvalidQuery> { Query::tagged([Tag::new("show:42")?]) }
//!     fn decide(&self, booked: &[Seen<Seat>]) -> Result<BoundaryDecision<u32>, SoldOut> {
//!         let seat = u32::try_from(booked.len()).map_err(|_| SoldOut)?;
//!         if seat >= 2 { return Err(SoldOut) }
//!         let stream = StreamId::new("booking", &format!("42-{seat}")).unwrap();
//!         Ok(BoundaryDecision::new(seat).append(stream, &[Seat::Booked { seat }]))
//!     }
//! }
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let boundaries = Boundaries::new(EventStore::new(eslab_memory::MemoryStore::new()));
//! let options = CommandOptions::default();
//! assert_eq!(*boundaries.run(&Book, &options, |seat| *seat).await.unwrap().response(), 0);
//! assert_eq!(*boundaries.run(&Book, &options, |seat| *seat).await.unwrap().response(), 1);
//! assert!(boundaries.run(&Book, &options, |seat| *seat).await.is_err());
//! # });
//! ```

use std::time::Duration;

use backon::{FuturesTimerSleeper, Sleeper};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::aggregate::Aggregate;
use crate::boundary::{AppendCondition, InvalidQuery, Query, Tag};
use crate::codec::{Codec, JsonCodec};
use crate::command::{CommandError, CommandOptions, derived_event_id, encode_events, lookup_key};
use crate::error::Result;
use crate::event::{DomainEvent, Metadata, NewEvent};
use crate::idempotency::KeyState;
use crate::locks::StreamLocks;
use crate::repository::RetryPolicy;
use crate::store::{AppendResult, EventAppender, EventReader, EventStorage, EventStore, StreamAppend};
use crate::stream::StreamId;
use crate::version::{ExpectedVersion, Version};

/// A decision over a dynamic consistency boundary: the events it reads (its
/// [`query`](Self::query)) and what it appends given them.
pub trait DecideOnBoundary: Sync {
    /// The events of the boundary, decoded; a stored event of another type
    /// in the boundary is an error ([`Error::UnknownEventType`](crate::Error::UnknownEventType)).
    type Event: DomainEvent;
    /// What the decision answers (the caller's `respond` turns it into what
    /// an idempotency key stores).
    type Output: Send;
    /// Why the decision refuses (a domain rule).
    type Error: std::error::Error + Send + Sync + 'static;

    /// The boundary: which events the decision reads, and which, appended
    /// by someone else meanwhile, invalidate it.
    ///
    /// # Errors
    /// A query that cannot be built (reported as [`Error::InvalidQuery`](crate::Error::InvalidQuery)).
    fn query(&self) -> Result<Query, InvalidQuery>;

    /// Decides from the boundary's events, in feed order.
    ///
    /// # Errors
    /// A refusal: nothing is appended.
    fn decide(&self, events: &[Seen<Self::Event>]) -> Result<BoundaryDecision<Self::Output>, Self::Error>;
}

/// An event of a boundary as a decision sees it: decoded, with where it is.
#[derive(Debug, Clone, PartialEq)]
pub struct Seen<E> {
    /// Its stream.
    pub stream_id: StreamId,
    /// Its version in the stream.
    pub stream_version: Version,
    /// Its tags.
    pub tags: Vec<Tag>,
    /// The event.
    pub event: E,
}

/// What a boundary decision appends (to any streams, events of any types,
/// in one atomic append) and answers.
#[derive(Debug)]
pub struct BoundaryDecision<O> {
    appends: Vec<(StreamId, ExpectedVersion, Result<Vec<NewEvent>>)>,
    output: O,
}

impl<O> BoundaryDecision<O> {
    /// A decision answering `output` that appends nothing (yet).
    pub fn new(output: O) -> Self {
        BoundaryDecision { appends: Vec::new(), output }
    }

    /// Also appends `events` to `stream`, whatever its version (the
    /// condition guards the boundary), tagged with their [`DomainEvent::tags`].
    #[must_use]
    pub fn append<E: DomainEvent>(self, stream: StreamId, events: &[E]) -> Self {
        self.append_expecting(stream, ExpectedVersion::Any, events)
    }

    /// Also appends `events` to `stream` if it is at `expected`, tagged with
    /// their [`DomainEvent::tags`].
    #[must_use]
    pub fn append_expecting<E: DomainEvent>(self, stream: StreamId, expected: ExpectedVersion, events: &[E]) -> Self {
        let encoded = events.iter().map(|event| JsonCodec.encode(event, Metadata::now())).collect();
        self.push(stream, expected, encoded)
    }

    /// Also appends events of aggregate `A` to its stream `stream` if it is
    /// at `expected`, encoded as `A`'s own commands encode them
    /// ([`encode_events`](crate::encode_events), tagged by [`Aggregate::tags`]),
    /// so that the aggregate and the boundaries see the same events.
    #[must_use]
    pub fn append_to<A: Aggregate>(self, stream: StreamId, expected: ExpectedVersion, events: &[A::Event]) -> Self {
        let encoded = encode_events::<A>(&stream, events, &Metadata::now(), None, 0);
        self.push(stream, expected, encoded)
    }

    /// The metadata and ids are the command's, set by [`Boundaries::run`];
    /// only the events' tags are kept.
    fn push(mut self, stream: StreamId, expected: ExpectedVersion, encoded: Result<Vec<NewEvent>>) -> Self {
        self.appends.push((stream, expected, encoded));
        self
    }

    /// The answer.
    pub fn output(&self) -> &O {
        &self.output
    }
}

/// How a boundary command ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Settled<O> {
    /// Decided and appended now.
    Executed {
        /// The decision's answer.
        output: O,
        /// What the append wrote, per stream (the key's record last).
        results: Vec<AppendResult>,
        /// How many attempts it took (1 without conflicts).
        attempts: u32,
    },
    /// The idempotency key answered this request before: its answer.
    Replayed(O),
}

impl<O> Settled<O> {
    /// The answer, executed now or replayed.
    pub fn response(&self) -> &O {
        match self {
            Settled::Executed { output, .. } | Settled::Replayed(output) => output,
        }
    }

    /// Whether the idempotency key answered.
    pub fn is_replayed(&self) -> bool {
        matches!(self, Settled::Replayed(_))
    }
}

/// Runs [`DecideOnBoundary`] decisions against a store: the DCB command path.
#[derive(Debug, Clone)]
pub struct Boundaries<S> {
    store: EventStore<S>,
    retry: RetryPolicy,
    idempotency_retention: Duration,
    locks: Option<StreamLocks>,
}

impl<S: EventStorage> Boundaries<S> {
    /// Decisions on `store`, with the default retry policy and key retention.
    pub fn new(store: EventStore<S>) -> Self {
        Boundaries {
            store,
            retry: RetryPolicy::default(),
            idempotency_retention: crate::idempotency::DEFAULT_RETENTION,
            locks: None,
        }
    }

    /// Sets the retry policy on conflicts.
    #[must_use]
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// Sets how long idempotency keys answer (see [`crate::idempotency`]).
    #[must_use]
    pub fn with_idempotency_retention(mut self, retention: Duration) -> Self {
        self.idempotency_retention = retention;
        self
    }

    /// Queues decisions of this process whose boundaries overlap (share a
    /// [lock key](Query::lock_keys)) on `locks`, instead of letting them race
    /// to the store and retry: the same in-process serialization as
    /// [`Repository::with_locks`](crate::Repository::with_locks) for
    /// aggregates. Correctness never depends on it (the store's condition
    /// does that, also across processes); it saves the conflicts.
    #[must_use]
    pub fn with_locks(mut self, locks: StreamLocks) -> Self {
        self.locks = Some(locks);
        self
    }

    /// The store.
    pub fn store(&self) -> &EventStore<S> {
        &self.store
    }

    /// Reads the decision's boundary, decides, appends under the condition
    /// that the boundary did not change since the read, and answers
    /// `respond(output)` (what an idempotency key stores and replays); on a conflict (the
    /// condition, or a stream's expectation) reads and decides again, with
    /// the retry policy's backoff. With an idempotency key, a retry of the
    /// same request gets the first answer ([`Settled::Replayed`]), also
    /// when it races the first.
    ///
    /// # Errors
    /// [`CommandError::Rejected`] for a refusal, [`CommandError::KeyReused`],
    /// [`CommandError::Store`] (conflicts that outlasted the retries among them).
    pub async fn run<D, R>(
        &self,
        decider: &D,
        options: &CommandOptions,
        respond: impl Fn(&D::Output) -> R + Send + Sync,
    ) -> Result<Settled<R>, CommandError<D::Error>>
    where
        D: DecideOnBoundary,
        R: Serialize + DeserializeOwned + Send,
    {
        let query = decider.query().map_err(crate::Error::from)?;
        let mut key_expected = ExpectedVersion::NoStream;
        if let Some(key) = &options.idempotency {
            match lookup_key(&self.store, key, self.idempotency_retention).await? {
                KeyState::Replay(output) => return Ok(Settled::Replayed(output)),
                KeyState::Reused => return Err(CommandError::KeyReused { key: key.stream().clone() }),
                KeyState::New(expected) => key_expected = expected,
            }
        }
        let _serialized = match &self.locks {
            Some(locks) => Some(locks.lock_keys(query.lock_keys()).await),
            None => None,
        };
        let mut waits = self.retry.waits();
        let mut attempts = 1;
        loop {
            let read = self.store.read_query(&query).await?;
            let events = read
                .events
                .iter()
                .map(|e| {
                    Ok(Seen {
                        stream_id: e.stream_id.clone(),
                        stream_version: e.stream_version,
                        tags: e.metadata.tags.clone(),
                        event: JsonCodec.decode(e)?,
                    })
                })
                .collect::<Result<Vec<Seen<D::Event>>>>()?;
            let decision = match decider.decide(&events) {
                Ok(decision) => decision,
                Err(refusal) => {
                    // A concurrent run with the same key may have committed: its answer.
                    if let Some(key) = &options.idempotency
                        && let KeyState::Replay(output) =
                            lookup_key(&self.store, key, self.idempotency_retention).await?
                    {
                        return Ok(Settled::Replayed(output));
                    }
                    return Err(CommandError::Rejected(refusal));
                }
            };
            let BoundaryDecision { appends: decided, output } = decision;
            let output = respond(&output);
            let mut appends = Vec::with_capacity(decided.len() + 1);
            let mut index = 0u64;
            for (stream, expected, encoded) in decided {
                let events = encoded?
                    .into_iter()
                    .map(|mut new| {
                        new.metadata = options.metadata.clone().with_tags(new.metadata.tags);
                        if let Some(namespace) = options.event_ids {
                            new.event_id = derived_event_id(namespace, index);
                        }
                        index += 1;
                        new
                    })
                    .collect();
                appends.push(StreamAppend::new(stream, expected, events));
            }
            if let Some(key) = &options.idempotency {
                let record = key.record(&output, options.metadata.clone(), None)?;
                appends.push(StreamAppend::new(key.stream().clone(), key_expected, vec![record]));
            }
            if appends.iter().all(|a| a.events.is_empty()) {
                return Ok(Settled::Executed { output, results: Vec::new(), attempts });
            }
            let condition = AppendCondition::new(query.clone(), read.position);
            match self.store.append_if(appends, condition).await {
                Ok(results) => return Ok(Settled::Executed { output, results, attempts }),
                Err(error) if error.is_conflict() => {
                    if let Some(key) = &options.idempotency {
                        match lookup_key(&self.store, key, self.idempotency_retention).await? {
                            KeyState::Replay(output) => return Ok(Settled::Replayed(output)),
                            KeyState::Reused => return Err(CommandError::KeyReused { key: key.stream().clone() }),
                            KeyState::New(expected) => key_expected = expected,
                        }
                    }
                    let Some(wait) = waits.next() else { return Err(error.into()) };
                    attempts += 1;
                    tracing::debug!(attempts, ?wait, "boundary condition failed, deciding again");
                    if !wait.is_zero() {
                        FuturesTimerSleeper.sleep(wait).await;
                    }
                }
                Err(error) => return Err(error.into()),
            }
        }
    }
}
