//! The one error type of the core and of every store backend.

use crate::stream::{InvalidStreamId, StreamId};
use crate::version::{ExpectedVersion, Version};

/// A boxed error from a backend (database driver, I/O).
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// `Result` with [`Error`] as the default error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong storing, reading or decoding events.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The stream was not at the version the append expected; nothing was written.
    #[error("conflict on stream {stream}: expected {expected}, actual version {actual}")]
    Conflict {
        /// The stream whose expectation failed.
        stream: StreamId,
        /// What the append expected.
        expected: ExpectedVersion,
        /// The stream's version when the append was refused.
        actual: Version,
    },
    /// An append's [condition](crate::AppendCondition) no longer held: an
    /// event matching its query was committed that the decision's read did
    /// not see. Nothing was written. A conflict: decide again on a new read.
    #[error("condition failed: event {event_id} ({event_type}) at position {position} matches the query")]
    ConditionFailed {
        /// The first such event (in feed order).
        event_id: uuid::Uuid,
        /// Its type.
        event_type: String,
        /// Its global position.
        position: crate::Position,
    },
    /// A tag, query or condition was refused (see [`InvalidQuery`](crate::InvalidQuery)); nothing was written.
    #[error(transparent)]
    InvalidQuery(#[from] crate::InvalidQuery),
    /// An event with this id is already stored; nothing was written.
    #[error("event id {0} is already stored")]
    DuplicateEventId(uuid::Uuid),
    /// The request itself is malformed (e.g. the same stream twice in one
    /// multi-stream append); nothing was written.
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// A stream id failed validation.
    #[error(transparent)]
    InvalidStreamId(#[from] InvalidStreamId),
    /// A typed event could not be serialized.
    #[error("cannot encode event {event_type}: {source}")]
    Encode {
        /// The event's type.
        event_type: String,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
    /// A stored event's type is not one the reading code knows.
    #[error("unknown event type {event_type:?} at {stream} version {version}")]
    UnknownEventType {
        /// Stream of the event.
        stream: StreamId,
        /// Version of the event in its stream.
        version: Version,
        /// The stored type name.
        event_type: String,
    },
    /// A stored event has a newer schema version than the reading code knows.
    #[error(
        "event {event_type} at {stream} version {version} has schema version {found}, newer than the {supported} this code knows"
    )]
    UnsupportedSchemaVersion {
        /// Stream of the event.
        stream: StreamId,
        /// Version of the event in its stream.
        version: Version,
        /// The stored type name.
        event_type: String,
        /// The stored schema version (after upcasting).
        found: u32,
        /// The newest schema version this code writes.
        supported: u32,
    },
    /// An upcaster refused a stored payload.
    #[error("cannot upcast {event_type} v{from} at {stream} version {version}: {reason}")]
    Upcast {
        /// Stream of the event.
        stream: StreamId,
        /// Version of the event in its stream.
        version: Version,
        /// The stored type name.
        event_type: String,
        /// The schema version the failing upcaster starts from.
        from: u32,
        /// The upcaster's explanation.
        reason: String,
    },
    /// A stored payload does not decode into the event type.
    #[error("cannot decode {event_type} at {stream} version {version}: {source}")]
    Decode {
        /// Stream of the event.
        stream: StreamId,
        /// Version of the event in its stream.
        version: Version,
        /// The stored type name.
        event_type: String,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
    /// An aggregate state could not be serialized into a snapshot.
    #[error("cannot encode the state of {stream} for a snapshot: {source}")]
    EncodeState {
        /// The stream whose state it is.
        stream: StreamId,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
    /// Personal data could not be stored or read: no subject or key store,
    /// a forgotten or unknown subject, a tampered ciphertext
    /// (see [`personal`](crate::personal)). Nothing was written.
    #[error(transparent)]
    Personal(#[from] crate::subject::PersonalError),
    /// A number does not fit the store's representation (e.g. a version above `i64::MAX`).
    #[error("value out of range: {0}")]
    OutOfRange(String),
    /// The store cannot be reached (connection refused, pool timed out, database shut down).
    #[error("event store unavailable")]
    Unavailable(#[source] BoxError),
    /// Any other backend failure.
    #[error("event store backend error")]
    Backend(#[source] BoxError),
}

impl Error {
    /// Whether this is an optimistic-concurrency conflict: a stream's
    /// expectation or an append condition failed.
    pub fn is_conflict(&self) -> bool {
        matches!(self, Error::Conflict { .. } | Error::ConditionFailed { .. })
    }

    /// Whether the store could not be reached (worth a retry later; HTTP 503).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Error::Unavailable(_))
    }

    /// Wraps a backend error.
    pub fn backend(e: impl Into<BoxError>) -> Self {
        Error::Backend(e.into())
    }
}
