//! The command side's workhorse: load an aggregate, decide, append with the
//! loaded version, retry on conflict.

use std::marker::PhantomData;

use futures_util::TryStreamExt;

use crate::aggregate::Aggregate;
use crate::codec::{Codec, JsonCodec};
use crate::error::{Error, Result};
use crate::event::{Metadata, RecordedEvent};
use crate::store::{EventAppender, EventReaderExt, EventStorage, EventStore};
use crate::version::{ExpectedVersion, Version};

/// How often `execute` retries after an optimistic-concurrency conflict.
///
/// Retries reload the stream and decide again, so a command that is still valid
/// after a concurrent write succeeds; one that no longer is gets its domain error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Total attempts, the first included (at least 1).
    pub max_attempts: u32,
}

impl RetryPolicy {
    /// Never retry: a conflict is returned at once.
    pub const NEVER: RetryPolicy = RetryPolicy { max_attempts: 1 };

    /// Up to `max_attempts` attempts in all (0 is treated as 1).
    pub const fn attempts(max_attempts: u32) -> Self {
        RetryPolicy { max_attempts }
    }
}

impl Default for RetryPolicy {
    /// Five attempts.
    fn default() -> Self {
        RetryPolicy { max_attempts: 5 }
    }
}

/// An aggregate as loaded: its state and the version it is at.
#[derive(Debug, Clone, PartialEq)]
pub struct Loaded<A> {
    /// The state, folded from the events.
    pub state: A,
    /// The stream version the state reflects ([`Version::NONE`] if new).
    pub version: Version,
}

/// What a successful `execute` did.
#[derive(Debug, Clone, PartialEq)]
pub struct Executed<A: Aggregate> {
    /// The decided events, typed.
    pub events: Vec<A::Event>,
    /// The same events as recorded (ids, versions, positions).
    pub recorded: Vec<RecordedEvent>,
    /// The stream version after the command.
    pub version: Version,
    /// The state after the command.
    pub state: A,
    /// How many attempts it took (1 without conflicts).
    pub attempts: u32,
}

/// Why `execute` failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CommandError<E: std::error::Error + 'static> {
    /// The aggregate refused the command (a domain rule); nothing was written.
    #[error("command rejected: {0}")]
    Rejected(#[source] E),
    /// The store failed, or conflicts outlasted the retry policy
    /// ([`Error::Conflict`]); nothing was written.
    #[error(transparent)]
    Store(#[from] Error),
}

impl<E: std::error::Error + 'static> CommandError<E> {
    /// Whether this is a conflict (after retries, or on an explicit expected version).
    pub fn is_conflict(&self) -> bool {
        matches!(self, CommandError::Store(e) if e.is_conflict())
    }
}

/// Loads and changes aggregates of type `A` stored in `S`.
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
#[derive(Debug, Clone)]
pub struct Repository<A, S> {
    store: EventStore<S>,
    retry: RetryPolicy,
    _aggregate: PhantomData<fn() -> A>,
}

impl<A: Aggregate, S: EventStorage> Repository<A, S> {
    /// A repository over `store` with the default retry policy.
    pub fn new(store: EventStore<S>) -> Self {
        Repository { store, retry: RetryPolicy::default(), _aggregate: PhantomData }
    }

    /// Sets the retry policy.
    #[must_use]
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// The store it reads and writes.
    pub fn store(&self) -> &EventStore<S> {
        &self.store
    }

    /// Loads the aggregate `id` by replaying its stream (upcast and decoded).
    pub async fn load(&self, id: &str) -> Result<Loaded<A>> {
        self.load_until(id, None).await
    }

    /// Loads the aggregate as it was at `version` (or now, with `None`).
    pub async fn load_until(&self, id: &str, version: Option<Version>) -> Result<Loaded<A>> {
        let stream = A::stream_id(id)?;
        let mut loaded = Loaded { state: A::default(), version: Version::NONE };
        let mut events = std::pin::pin!(self.store.stream_events(&stream, Version::FIRST));
        while let Some(recorded) = events.try_next().await? {
            if version.is_some_and(|v| recorded.stream_version > v) {
                break;
            }
            let event: A::Event = JsonCodec.decode(&recorded)?;
            loaded.state.evolve(&event);
            loaded.version = recorded.stream_version;
        }
        Ok(loaded)
    }

    /// Loads, decides and appends with `Exact(loaded version)`, retrying on
    /// conflict per the retry policy. Every event gets `metadata`.
    pub async fn execute(
        &self,
        id: &str,
        command: &A::Command,
        metadata: Metadata,
    ) -> Result<Executed<A>, CommandError<A::Error>> {
        self.execute_expecting(id, None, command, metadata).await
    }

    /// Like [`execute`](Self::execute), but if `expected` is given the aggregate
    /// must be at exactly that version (e.g. from an HTTP `If-Match`); a
    /// mismatch is a conflict at once, never retried.
    pub async fn execute_expecting(
        &self,
        id: &str,
        expected: Option<Version>,
        command: &A::Command,
        metadata: Metadata,
    ) -> Result<Executed<A>, CommandError<A::Error>> {
        let stream = A::stream_id(id).map_err(Error::from)?;
        let max_attempts = self.retry.max_attempts.max(1);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let Loaded { mut state, version } = self.load(id).await?;
            if let Some(expected) = expected
                && expected != version
            {
                return Err(
                    Error::Conflict { stream, expected: ExpectedVersion::Exact(expected), actual: version }.into()
                );
            }
            let events = state.decide(command).map_err(CommandError::Rejected)?;
            let new_events =
                events.iter().map(|e| JsonCodec.encode(e, metadata.clone())).collect::<Result<Vec<_>>>()?;
            match self.store.append(&stream, ExpectedVersion::Exact(version), new_events).await {
                Ok(result) => {
                    for event in &events {
                        state.evolve(event);
                    }
                    return Ok(Executed {
                        events,
                        recorded: result.events,
                        version: result.version,
                        state,
                        attempts: attempt,
                    });
                }
                Err(e) if e.is_conflict() && attempt < max_attempts && expected.is_none() => {
                    tracing::debug!(%stream, attempt, "conflict, retrying");
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
}
