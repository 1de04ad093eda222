//! # eslab-projection
//!
//! The query side of eslab: a [`Runner`] reads the event feed after a
//! projection's checkpoint, in batches, and for each batch, in **one
//! transaction** of the read-model backend, applies the events and advances the
//! checkpoint. A crash at any point therefore never loses an event and never
//! applies one twice.
//!
//! - [`Projection`]: a named handler of recorded events, generic over the
//!   backend's transaction type.
//! - [`Backend`]: where read models, checkpoints and parked events live
//!   (SQLite and Postgres backends live with their stores; [`memory::MemoryBackend`]
//!   is the in-memory equivalent).
//! - [`Runner::run_once`] processes one batch and says what it did
//!   ([`Outcome`]), so tests drain work deterministically; [`Runner::run`] loops,
//!   waking on a [`Wakeup`] signal with a polling fallback.
//! - Parked events: a handler error parks the event's stream (that event and
//!   the rest of the stream wait, in order) while other streams go on;
//!   [`Runner::retry`] and [`Runner::skip`] let an operator resume it.
//! - The runner reads an upcasting [`eslab_core::EventStore`] ([`UpcastingStore`]):
//!   handing it a raw store, whose old events would reach the handlers
//!   un-upcast, does not compile.
//! - One active runner per projection, by lease. [`Runner::spawn`] runs it in a
//!   task whose [`RunnerHandle::stop`] drains what was committed and releases
//!   the lease, so the next process takes over at once; a runner waiting on
//!   another owner's lease says so in the log; a stable owner
//!   ([`RunnerOptions::stable_owner`]) takes its own lease back after a crash.
//! - [`Inline`]: a projection applied inside the append's own transaction
//!   (read-your-writes) on PostgreSQL and SQLite.
//! - Lag: [`lag`] (events and seconds behind the feed's head), reported as
//!   `metrics` gauges by [`record_lag`] and by [`Runner::run`].
//! - [`Runner::partitioned`]: events of one stream always in order, different
//!   streams in parallel by a stable hash of the stream id; each partition keeps
//!   its own checkpoint in its own transaction, and the projection's position is
//!   the lowest of them, so it only advances past what every partition finished.
//! - [`rebuild`] (`postgres` / `sqlite` features): replays a projection whose
//!   read model implements [`ReadModel`] into shadow tables while the live
//!   ones keep serving, then swaps them in atomically with its checkpoints.

mod admin;
mod backend;
mod inline;
mod lag;
pub mod memory;
#[cfg(any(feature = "postgres", feature = "sqlite"))]
pub mod rebuild;
mod runner;
#[cfg(any(feature = "postgres", feature = "sqlite"))]
mod sql;

pub use admin::{Status, status};
pub use backend::{Backend, FORGOTTEN_REASON, Lease, ParkedEvent, Projection, forget_parked_event, forget_subject};
pub use inline::{Inline, InlineStore};
pub use lag::{EVENTS_BEHIND, Lag, SECONDS_BEHIND, lag, record_lag};
#[cfg(any(feature = "postgres", feature = "sqlite"))]
pub use rebuild::{Progress, ReadModel, Rebuild, RebuildError, RebuildOptions, Rebuilt, Shadow, ShadowBackend};
pub use runner::{Outcome, Runner, RunnerHandle, RunnerOptions, UpcastingStore, Wakeup, partition_of};
#[cfg(feature = "postgres")]
pub use sql::PgBackend;
#[cfg(feature = "sqlite")]
pub use sql::SqliteBackend;

/// Errors of the projection runner.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The event store failed.
    #[error(transparent)]
    Store(#[from] eslab_core::Error),
    /// The read-model backend failed.
    #[error("read-model backend error: {0}")]
    Backend(#[source] eslab_core::BoxError),
    /// A parked event could not be retried: its handler failed again.
    #[error("retrying parked event {event_id} of {stream} failed: {source}")]
    RetryFailed {
        /// The stream that stays parked.
        stream: eslab_core::StreamId,
        /// The event whose handler failed again.
        event_id: eslab_core::EventId,
        /// The handler's error.
        #[source]
        source: HandlerError,
    },
    /// A handler failed transiently; the batch was rolled back and will be retried.
    #[error("projection {projection}: transient handler failure: {source}")]
    Transient {
        /// The projection.
        projection: String,
        /// The handler's error.
        #[source]
        source: HandlerError,
    },
    /// Another runner holds the projection's lease.
    #[error("projection {0} is run by another owner (lease held)")]
    NotLeader(String),
    /// A graceful stop ([`RunnerHandle::stop`]) gave up draining the feed
    /// after [`RunnerOptions::stop_timeout`]; the lease was released all the
    /// same, and whoever runs the projection next goes on from its checkpoint.
    #[error("projection {projection} did not drain within {timeout:?} while stopping")]
    StopTimedOut {
        /// The projection.
        projection: String,
        /// The time it had.
        timeout: std::time::Duration,
    },
    /// An inline projection's handler refused an event: the append was
    /// rolled back and nothing was recorded.
    #[error("inline projection {projection} refused {stream} version {version}: {source}")]
    Rejected {
        /// The projection.
        projection: String,
        /// The stream of the refused event.
        stream: eslab_core::StreamId,
        /// The version the refused event would have had.
        version: eslab_core::Version,
        /// The handler's error.
        #[source]
        source: HandlerError,
    },
}

impl Error {
    /// This error as the store error an [`eslab_core::EventAppender`] returns:
    /// a store error as itself, anything else boxed in
    /// [`eslab_core::Error::Backend`] (recover it with [`Error::from_store`]).
    pub fn into_store(self) -> eslab_core::Error {
        match self {
            Error::Store(e) => e,
            other => eslab_core::Error::Backend(Box::new(other)),
        }
    }

    /// The projection error inside a store error made by [`Error::into_store`], if any.
    pub fn from_store(e: &eslab_core::Error) -> Option<&Error> {
        match e {
            eslab_core::Error::Backend(inner) => inner.downcast_ref::<Error>(),
            _ => None,
        }
    }
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A handler's failure on an event.
///
/// A permanent failure ([`HandlerError::new`]) parks the event's stream; a
/// transient one ([`HandlerError::transient`], e.g. a store that is down) rolls
/// the batch back and leaves the checkpoint where it was, so the batch is tried
/// again later and nothing is parked.
///
/// `message` is what a parked event keeps as its reason; the error that caused
/// the failure, if any, stays reachable as the [`source`](std::error::Error::source)
/// ([`HandlerError::with_source`]), so callers and logs see the whole chain:
///
/// ```
/// use std::error::Error as _;
/// use eslab_projection::HandlerError;
/// let io = std::io::Error::other("connection reset");
/// let e = HandlerError::transient("cannot read the summary").with_source(io);
/// assert_eq!(e.to_string(), "cannot read the summary");
/// assert_eq!(e.source().map(ToString::to_string).as_deref(), Some("connection reset"));
/// assert!(e.source().and_then(|s| s.downcast_ref::<std::io::Error>()).is_some());
/// ```
#[derive(Debug, Clone)]
pub struct HandlerError {
    /// What went wrong.
    pub message: String,
    /// Whether trying again later may succeed.
    pub transient: bool,
    /// The error that caused it (shared, so the error stays `Clone`).
    source: Option<std::sync::Arc<dyn std::error::Error + Send + Sync + 'static>>,
}

impl HandlerError {
    /// A permanent failure: the stream is parked.
    pub fn new(message: impl Into<String>) -> Self {
        HandlerError { message: message.into(), transient: false, source: None }
    }

    /// A transient failure: the batch is retried later.
    pub fn transient(message: impl Into<String>) -> Self {
        HandlerError { message: message.into(), transient: true, source: None }
    }

    /// The same failure, caused by `source` (returned by
    /// [`Error::source`](std::error::Error::source), and downcastable to its own type).
    #[must_use]
    pub fn with_source(mut self, source: impl Into<eslab_core::BoxError>) -> Self {
        self.source = Some(std::sync::Arc::from(source.into()));
        self
    }
}

impl std::fmt::Display for HandlerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for HandlerError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.as_deref().map(|e| e as &(dyn std::error::Error + 'static))
    }
}

/// Equal when message and kind are (sources are not compared).
impl PartialEq for HandlerError {
    fn eq(&self, other: &Self) -> bool {
        self.message == other.message && self.transient == other.transient
    }
}

impl Eq for HandlerError {}
