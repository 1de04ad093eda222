//! The one command path: load (snapshot + events, or the cache) → decide →
//! append (with an idempotency key, extra streams, deterministic ids) →
//! retry on conflict with backoff. [`Repository::run`] for a command of the
//! aggregate, [`Repository::run_with`] for any decision that can be made from
//! the aggregate's state (a process manager's step).

use std::future::Future;
use std::marker::PhantomData;
use std::time::Duration;

use backon::{FuturesTimerSleeper, Sleeper};
use serde::Serialize;
use serde::de::DeserializeOwned;
use uuid::Uuid;

use crate::aggregate::{Aggregate, Loaded};
use crate::codec::{Codec, JsonCodec};
use crate::error::{Error, Result};
use crate::event::{Metadata, NewEvent, RecordedEvent};
use crate::idempotency::{self, IdempotencyKey, KeyState};
use crate::repository::{Repository, Source};
use crate::store::{EventAppender, EventReader, EventStorage, StreamAppend};
use crate::stream::StreamId;
use crate::version::{ExpectedVersion, Version};

/// What a command that ran did ([`Repository::execute`], or
/// [`Outcome::Executed`](crate::Outcome::Executed) of [`Repository::run`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Executed<A: Aggregate, R = ()> {
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
    /// What the command answered (stored with an idempotency key; `()` for
    /// [`Repository::execute`]).
    pub response: R,
}

/// Why `execute` failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CommandError<E: std::error::Error + 'static> {
    /// The aggregate refused the command (a domain rule); nothing was written.
    #[error("command rejected: {0}")]
    Rejected(#[source] E),
    /// The command must act on an existing aggregate
    /// ([`CommandOptions::existing`](crate::CommandOptions::existing)) and the
    /// stream has no events; nothing was written.
    #[error("{stream} does not exist")]
    NotFound {
        /// The aggregate's stream.
        stream: StreamId,
    },
    /// The aggregate is not at the version the command expected
    /// ([`CommandOptions::expecting`](crate::CommandOptions::expecting), e.g.
    /// an HTTP `If-Match`); never retried, nothing was written.
    #[error("{stream} is at version {actual}, not at the expected version {expected}")]
    WrongVersion {
        /// The aggregate's stream.
        stream: StreamId,
        /// The version the command expected.
        expected: Version,
        /// The version found.
        actual: Version,
    },
    /// The idempotency key was used before for another request (another
    /// fingerprint) and has not expired; nothing was written.
    #[error("the idempotency key {key} was used for a different request")]
    KeyReused {
        /// The key's stream.
        key: StreamId,
    },
    /// The store failed, or conflicts outlasted the retry policy
    /// ([`Error::Conflict`]); nothing was written.
    #[error(transparent)]
    Store(#[from] Error),
}

impl<E: std::error::Error + 'static> CommandError<E> {
    /// Whether this is a conflict (after retries, or on an explicit expected version).
    pub fn is_conflict(&self) -> bool {
        match self {
            CommandError::Store(e) => e.is_conflict(),
            CommandError::WrongVersion { .. } => true,
            _ => false,
        }
    }
}

/// The options of one command: its metadata, an expected version, whether
/// the aggregate must exist, an idempotency key, deterministic event ids.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct CommandOptions {
    /// Metadata of every event the command appends (and of its key record).
    pub metadata: Metadata,
    /// The version the aggregate must be at (e.g. an HTTP `If-Match`):
    /// checked against the store, a mismatch is
    /// [`CommandError::WrongVersion`], never retried.
    pub expected: Option<Version>,
    /// The aggregate must already exist ([`CommandError::NotFound`] otherwise).
    pub must_exist: bool,
    /// The idempotency key: stored in the same atomic append as the events;
    /// a retry with the same key and request gets the first response
    /// ([`Outcome::Replayed`]). See [`crate::idempotency`].
    pub idempotency: Option<IdempotencyKey>,
    /// Derive the events' ids from this namespace (UUID v5 of the namespace
    /// and the event's index in the decision, see [`derived_event_id`])
    /// instead of fresh ones: a process manager re-running a step then
    /// writes the same ids, and the store refuses the duplicate
    /// ([`Error::DuplicateEventId`]).
    pub event_ids: Option<Uuid>,
}

impl Default for CommandOptions {
    fn default() -> Self {
        CommandOptions::new(Metadata::now())
    }
}

impl CommandOptions {
    /// No expectation, no key, fresh ids; every event gets `metadata`.
    pub fn new(metadata: Metadata) -> Self {
        CommandOptions { metadata, expected: None, must_exist: false, idempotency: None, event_ids: None }
    }

    /// The aggregate must be at `version` (`None`: no expectation).
    #[must_use]
    pub fn expecting(mut self, version: impl Into<Option<Version>>) -> Self {
        self.expected = version.into();
        self
    }

    /// The aggregate must already exist.
    #[must_use]
    pub fn existing(mut self) -> Self {
        self.must_exist = true;
        self
    }

    /// Answers retries with `key` (`None`: no key).
    #[must_use]
    pub fn idempotent(mut self, key: impl Into<Option<IdempotencyKey>>) -> Self {
        self.idempotency = key.into();
        self
    }

    /// Derives the events' ids from `namespace` (see [`Self::event_ids`]).
    #[must_use]
    pub fn with_event_ids(mut self, namespace: Uuid) -> Self {
        self.event_ids = Some(namespace);
        self
    }
}

/// The id of the `index`-th event derived from `namespace` (UUID v5).
pub fn derived_event_id(namespace: Uuid, index: u64) -> Uuid {
    Uuid::new_v5(&namespace, &index.to_be_bytes())
}

/// What a successful command did: it ran now, or its idempotency key
/// answered it before.
pub enum Outcome<A: Aggregate, R = ()> {
    /// The command was decided and its events (and key) appended now.
    Executed(Executed<A, R>),
    /// The key had answered this request before: its stored response, and
    /// nothing was written.
    Replayed(R),
}

impl<A: Aggregate, R> std::fmt::Debug for Outcome<A, R>
where
    Executed<A, R>: std::fmt::Debug,
    R: std::fmt::Debug,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Outcome::Executed(done) => f.debug_tuple("Executed").field(done).finish(),
            Outcome::Replayed(response) => f.debug_tuple("Replayed").field(response).finish(),
        }
    }
}

impl<A: Aggregate, R: Clone> Clone for Outcome<A, R>
where
    Executed<A, R>: Clone,
{
    fn clone(&self) -> Self {
        match self {
            Outcome::Executed(done) => Outcome::Executed(done.clone()),
            Outcome::Replayed(response) => Outcome::Replayed(response.clone()),
        }
    }
}

impl<A: Aggregate, R: PartialEq> PartialEq for Outcome<A, R>
where
    Executed<A, R>: PartialEq,
{
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Outcome::Executed(a), Outcome::Executed(b)) => a == b,
            (Outcome::Replayed(a), Outcome::Replayed(b)) => a == b,
            _ => false,
        }
    }
}

impl<A: Aggregate, R> Outcome<A, R> {
    /// The response, whether new or replayed.
    pub fn response(&self) -> &R {
        match self {
            Outcome::Executed(done) => &done.response,
            Outcome::Replayed(response) => response,
        }
    }

    /// The response, whether new or replayed.
    pub fn into_response(self) -> R {
        match self {
            Outcome::Executed(done) => done.response,
            Outcome::Replayed(response) => response,
        }
    }

    /// Whether the stored response of an earlier run answered.
    pub fn is_replayed(&self) -> bool {
        matches!(self, Outcome::Replayed(_))
    }
}

/// What a decision appends: the aggregate's events, other streams' appends
/// in the same atomic append, and a value for the caller.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision<E, O = ()> {
    /// The aggregate's new events (appended with the loaded version expected).
    pub events: Vec<E>,
    /// Appends to other streams, in the same atomic append (each with its own
    /// expectation: a conflict on any of them retries the whole decision).
    pub also: Vec<StreamAppend>,
    /// Handed to the `respond` function of [`Repository::run_with`].
    pub output: O,
}

impl<E, O> Decision<E, O> {
    /// The aggregate's `events`, nothing else.
    pub fn new(events: Vec<E>, output: O) -> Self {
        Decision { events, also: Vec::new(), output }
    }

    /// Nothing to append.
    pub fn nothing(output: O) -> Self {
        Decision::new(Vec::new(), output)
    }

    /// Also appends `append` in the same atomic append.
    #[must_use]
    pub fn also(mut self, append: StreamAppend) -> Self {
        self.also.push(append);
        self
    }

    fn is_empty(&self) -> bool {
        self.events.is_empty() && self.also.is_empty()
    }
}

/// A decision made from an aggregate's state: an aggregate command
/// ([`Repository::run`]), or anything that also reads other streams or
/// appends to them (a process manager's step, [`Repository::run_with`]).
///
/// `decide` may be called several times (once per attempt, each on a fresh
/// state): it must not have effects of its own.
pub trait Decide<A: Aggregate>: Sync {
    /// What the decision hands to `respond`.
    type Output: Send;
    /// A refusal ([`CommandError::Rejected`]).
    type Error: std::error::Error + Send + Sync + 'static;

    /// Decides on `current`. A refusal is `Err(CommandError::Rejected(_))`;
    /// a failed read `Err(CommandError::Store(_))`.
    fn decide(&self, current: &Loaded<A>) -> impl Future<Output = Decided<A, Self>> + Send;
}

/// What [`Decide::decide`] returns: a decision, or why there is none.
pub type Decided<A, D> =
    Result<Decision<<A as Aggregate>::Event, <D as Decide<A>>::Output>, CommandError<<D as Decide<A>>::Error>>;

/// An aggregate's own command as a [`Decide`].
struct Command<'c, A: Aggregate>(&'c A::Command, PhantomData<fn() -> A>);

impl<A: Aggregate> Decide<A> for Command<'_, A> {
    type Output = ();
    type Error = A::Error;

    async fn decide(&self, current: &Loaded<A>) -> Decided<A, Self> {
        current.state.decide(self.0).map(|events| Decision::new(events, ())).map_err(CommandError::Rejected)
    }
}

impl<A: Aggregate, S: EventStorage> Repository<A, S> {
    /// How long idempotency keys answer retries (default
    /// [`DEFAULT_RETENTION`](crate::idempotency::DEFAULT_RETENTION), 24 h);
    /// an older key is a new request. See [`crate::idempotency`].
    #[must_use]
    pub fn with_idempotency_retention(mut self, retention: Duration) -> Self {
        self.idempotency_retention = retention;
        self
    }

    /// How long idempotency keys answer retries.
    pub fn idempotency_retention(&self) -> Duration {
        self.idempotency_retention
    }

    /// Loads, decides and appends with `Exact(loaded version)`, retrying on
    /// conflict per the [retry policy](crate::RetryPolicy) (with
    /// [stream locks](Self::with_stream_locks), after waiting for its
    /// stream's lock). Every event gets `metadata`. The shorthand of
    /// [`run`](Self::run) without options.
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
    /// mismatch is [`CommandError::WrongVersion`] at once, never retried.
    pub async fn execute_expecting(
        &self,
        id: &str,
        expected: Option<Version>,
        command: &A::Command,
        metadata: Metadata,
    ) -> Result<Executed<A>, CommandError<A::Error>> {
        let mut options = CommandOptions::new(metadata);
        options.expected = expected;
        match self.run(id, command, &options, |_, _| ()).await? {
            Outcome::Executed(done) => Ok(done),
            // Only a command with an idempotency key is ever replayed.
            Outcome::Replayed(()) => {
                Err(Error::InvalidRequest("a command without an idempotency key was replayed".into()).into())
            }
        }
    }

    /// Runs `command` on aggregate `id` with `options`: load (snapshot and
    /// events, or the cache) → decide → append with the loaded version (and
    /// the idempotency key, in the same atomic append) → retry on conflict
    /// per the [retry policy](crate::RetryPolicy). `respond(new state, new
    /// version)` builds the response, which is stored with the key and
    /// returned to every retry with it.
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
    /// use eslab_core::{CommandOptions, EventStore, IdempotencyKey, Metadata, Outcome, Repository};
    /// use eslab_memory::MemoryStore;
    ///
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let repo: Repository<Counter, _> = Repository::new(EventStore::new(MemoryStore::new()));
    /// let key = IdempotencyKey::new("client-key-1", &[b"add 5"]).unwrap();
    /// let options = CommandOptions::new(Metadata::now()).idempotent(key);
    /// let first = repo.run("c1", &5, &options, |counter, _| counter.value).await.unwrap();
    /// let retry = repo.run("c1", &5, &options, |counter, _| counter.value).await.unwrap();
    /// assert_eq!((first.is_replayed(), retry.is_replayed()), (false, true));
    /// assert_eq!(retry, Outcome::Replayed(5)); // the first answer, decided once
    /// assert_eq!(repo.load("c1").await.unwrap().state.value, 5);
    /// # });
    /// ```
    ///
    /// # Errors
    /// [`CommandError::Rejected`] (a domain rule), [`CommandError::NotFound`],
    /// [`CommandError::WrongVersion`], [`CommandError::KeyReused`], or the
    /// store's error (a conflict once retries are spent). Nothing is written
    /// on any error. A refusal of a keyed command first looks the key up
    /// again: if a concurrent run with the same key committed meanwhile, its
    /// response is replayed instead (see [`crate::idempotency`]).
    pub async fn run<R>(
        &self,
        id: &str,
        command: &A::Command,
        options: &CommandOptions,
        respond: impl Fn(&A, Version) -> R + Send + Sync,
    ) -> Result<Outcome<A, R>, CommandError<A::Error>>
    where
        R: Serialize + DeserializeOwned + Send,
    {
        self.run_with(id, &Command(command, PhantomData), options, |state, version, ()| respond(state, version)).await
    }

    /// Like [`run`](Self::run), for any [`Decide`]: its events go to the
    /// aggregate's stream, its [`also`](Decision::also) appends in the same
    /// atomic append; `respond(new state, new version, output)` builds the
    /// response. A decision with nothing to append writes nothing (but its
    /// idempotency key); one resting on a cached state is confirmed on a
    /// fresh load first, as is any refusal.
    ///
    /// # Errors
    /// As for [`run`](Self::run).
    pub async fn run_with<D, R>(
        &self,
        id: &str,
        decider: &D,
        options: &CommandOptions,
        respond: impl Fn(&A, Version, D::Output) -> R + Send + Sync,
    ) -> Result<Outcome<A, R>, CommandError<D::Error>>
    where
        D: Decide<A>,
        R: Serialize + DeserializeOwned + Send,
    {
        let stream = A::stream_id(id).map_err(Error::from)?;
        // The expectation on the key's stream: no stream, or the expired record it replaces.
        let mut key_expected = ExpectedVersion::NoStream;
        if let Some(key) = &options.idempotency {
            match self.lookup_key(key).await? {
                KeyState::Replay(response) => return Ok(Outcome::Replayed(response)),
                KeyState::Reused => return Err(CommandError::KeyReused { key: key.stream().clone() }),
                KeyState::New(expected) => key_expected = expected,
            }
        }
        let _serialized = match &self.locks {
            Some(locks) => Some(locks.lock(&stream).await),
            None => None,
        };
        let mut waits = self.retry.waits();
        let mut attempt = 1;
        let mut use_cache = true;
        loop {
            let (current, source) = self.load_for_command(&stream, use_cache).await?;
            let cached = source != Source::Store;
            let refusal = if options.must_exist && current.version.is_none() {
                Some(CommandError::NotFound { stream: stream.clone() })
            } else if let Some(expected) = options.expected
                && expected != current.version
            {
                Some(CommandError::WrongVersion { stream: stream.clone(), expected, actual: current.version })
            } else {
                None
            };
            let decided = match refusal {
                Some(refusal) => Err(refusal),
                None => decider.decide(&current).await,
            };
            let decision = match decided {
                // A refusal, or nothing to do, must rest on the stored state,
                // not on a cached one another writer may have outdated.
                Err(CommandError::Rejected(_) | CommandError::NotFound { .. } | CommandError::WrongVersion { .. })
                    if cached =>
                {
                    self.forget(&stream);
                    use_cache = false;
                    continue;
                }
                Ok(decision) if cached && decision.is_empty() => {
                    self.forget(&stream);
                    use_cache = false;
                    continue;
                }
                Ok(decision) => decision,
                Err(
                    refusal @ (CommandError::Rejected(_)
                    | CommandError::NotFound { .. }
                    | CommandError::WrongVersion { .. }),
                ) => return self.refused(options, refusal).await,
                Err(error) => return Err(error),
            };
            let Decision { events, also, output } = decision;
            let Loaded { mut state, version } = current;
            for event in &events {
                state.evolve(event);
            }
            let new_version =
                version.advance(events.len()).ok_or_else(|| Error::OutOfRange("stream version".into()))?;
            let response = respond(&state, new_version, output);
            let mut appends = Vec::with_capacity(also.len() + 2);
            if !events.is_empty() {
                let new_events = encode_events::<A>(&stream, &events, &options.metadata, options.event_ids, 0)?;
                appends.push(StreamAppend::new(stream.clone(), ExpectedVersion::Exact(version), new_events));
            }
            appends.extend(also);
            if let Some(key) = &options.idempotency {
                let record = key.record(&response, options.metadata.clone(), A::subject(&stream))?;
                appends.push(StreamAppend::new(key.stream().clone(), key_expected, vec![record]));
            }
            if appends.is_empty() {
                return Ok(Outcome::Executed(Executed {
                    events,
                    recorded: Vec::new(),
                    version,
                    state,
                    attempts: attempt,
                    response,
                }));
            }
            match self.store.append_streams(appends).await {
                Ok(results) => {
                    let recorded = match results.into_iter().next() {
                        Some(first) if !events.is_empty() => first.events,
                        _ => Vec::new(),
                    };
                    if !events.is_empty()
                        && let Some(hook) = &self.snapshots
                        && hook.policy().should_snapshot(version, new_version)
                    {
                        self.save_snapshot_logged(hook.as_ref(), &stream, &state, new_version).await;
                    }
                    #[cfg(feature = "cache")]
                    if !events.is_empty()
                        && let Some(cache) = &self.cache
                    {
                        cache.offer(&stream, &state, new_version);
                    }
                    return Ok(Outcome::Executed(Executed {
                        events,
                        recorded,
                        version: new_version,
                        state,
                        attempts: attempt,
                        response,
                    }));
                }
                Err(error) if error.is_conflict() => {
                    // Someone else wrote: the start state is stale.
                    self.forget(&stream);
                    // A concurrent run with the same key may have won: then
                    // its response is the answer. (Or compaction deleted the
                    // expired record this one replaced.)
                    if let Some(key) = &options.idempotency {
                        match self.lookup_key(key).await? {
                            KeyState::Replay(response) => return Ok(Outcome::Replayed(response)),
                            KeyState::Reused => return Err(CommandError::KeyReused { key: key.stream().clone() }),
                            KeyState::New(expected) => key_expected = expected,
                        }
                    }
                    if let Some(expected) = options.expected {
                        let actual = self.store.stream_version(&stream).await?;
                        if actual != expected {
                            return Err(CommandError::WrongVersion { stream, expected, actual });
                        }
                    }
                    let Some(wait) = waits.next() else {
                        return Err(error.into());
                    };
                    attempt += 1;
                    tracing::debug!(%stream, attempt, ?wait, "conflict, retrying");
                    if !wait.is_zero() {
                        FuturesTimerSleeper.sleep(wait).await;
                    }
                }
                Err(error) => {
                    // The outcome is unknown: drop the cached state.
                    self.forget(&stream);
                    return Err(error.into());
                }
            }
        }
    }

    /// A refused keyed command: if a concurrent run with the same key has
    /// committed meanwhile, its response; else the refusal.
    async fn refused<R, E>(
        &self,
        options: &CommandOptions,
        refusal: CommandError<E>,
    ) -> Result<Outcome<A, R>, CommandError<E>>
    where
        R: DeserializeOwned,
        E: std::error::Error + 'static,
    {
        if let Some(key) = &options.idempotency
            && let KeyState::Replay(response) = self.lookup_key(key).await?
        {
            return Ok(Outcome::Replayed(response));
        }
        Err(refusal)
    }

    async fn lookup_key<R: DeserializeOwned>(&self, key: &IdempotencyKey) -> Result<KeyState<R>> {
        lookup_key(&self.store, key, self.idempotency_retention).await
    }
}

/// What the store holds for `key`.
pub(crate) async fn lookup_key<R: DeserializeOwned>(
    store: &impl EventReader,
    key: &IdempotencyKey,
    retention: Duration,
) -> Result<KeyState<R>> {
    // A key stream holds one record, or a few if the key came back after expiring.
    let records = store.read_stream(key.stream(), Version::FIRST, usize::MAX).await?;
    idempotency::judge(key, &records, retention)
}

/// Encodes events that aggregate `A` decided on `stream`, as the command
/// path appends them: JSON, `metadata` with the events' tags as `A` gives them
/// ([`Aggregate::tags`]; the metadata's own when it gives none), ids derived
/// from `namespace` (the first event being the decision's `first`-th, see
/// [`derived_event_id`]) or fresh. Use it to append an aggregate's events
/// from elsewhere (a process manager's step, a boundary decision).
///
/// # Errors
/// [`Error::Encode`] for an event that does not serialize.
pub fn encode_events<A: Aggregate>(
    stream: &StreamId,
    events: &[A::Event],
    metadata: &Metadata,
    namespace: Option<Uuid>,
    first: u64,
) -> Result<Vec<NewEvent>> {
    events
        .iter()
        .zip(first..)
        .map(|(event, index)| {
            let mut new = JsonCodec.encode(event, metadata.clone())?;
            let tags = A::tags(stream, event);
            if !tags.is_empty() {
                new.metadata.tags = tags;
            }
            if crate::personal::holds_personal(&new.payload) {
                new.metadata.subject = A::subject(stream);
            }
            Ok(match namespace {
                Some(namespace) => new.with_id(derived_event_id(namespace, index)),
                None => new,
            })
        })
        .collect()
}
