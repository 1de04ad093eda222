//! Mapping sqlx errors onto the store's [`Error`]: unreachable database vs.
//! everything else, and the unique violations an append must tell apart.

use eslab_core::Error;
use sqlx::error::ErrorKind;

/// The unique constraint on `events.event_id` (named in the migration).
pub(crate) const EVENT_ID_KEY: &str = "events_event_id_key";

/// Maps a sqlx error: connection trouble is [`Error::Unavailable`], the rest [`Error::Backend`].
pub(crate) fn db(e: sqlx::Error) -> Error {
    let unavailable = match &e {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        // Callers should treat these as a retryable 503.
        sqlx::Error::Database(d) => d.code().is_some_and(|c| server_gone(&c)),
        _ => false,
    };
    if unavailable { Error::Unavailable(Box::new(e)) } else { Error::Backend(Box::new(e)) }
}

/// Whether a SQLSTATE means "the server went away": class 08 (connection
/// exception) and 57P01..57P03 (admin shutdown, crash shutdown, cannot
/// connect now). sqlx has no error kind for these.
fn server_gone(code: &str) -> bool {
    code.starts_with("08") || code.starts_with("57P0")
}

/// Whether a connection is still usable after a statement failed on it with
/// `e`: the server refused the statement (a constraint, a deadlock, …), not
/// the session. Anything else (I/O, protocol, the server going away) may
/// have left it broken or out of step.
pub(crate) fn connection_survives(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if !d.code().is_some_and(|c| server_gone(&c)))
}

/// Whether the server aborted the statement so that it can simply be retried:
/// deadlock victim (`40P01`) or serialization failure (`40001`). sqlx has no
/// error kind for these, hence the codes. With
/// [`AppendStrategy::UniqueIndex`](crate::AppendStrategy::UniqueIndex), two
/// multi-stream appends naming the same streams in opposite orders can
/// deadlock on the unique index.
pub(crate) fn is_transient(e: &sqlx::Error) -> bool {
    let sqlx::Error::Database(d) = e else { return false };
    d.code().is_some_and(|c| c == "40P01" || c == "40001")
}

/// What a failed append statement ran into.
#[derive(Debug)]
pub(crate) enum Violation {
    /// An event id is already stored (or appears twice).
    EventId,
    /// A stream version or a stream row was taken by a concurrent append.
    StreamVersion,
}

/// Classifies a unique violation by its constraint, by error kind (not SQLSTATE).
pub(crate) fn unique_violation(e: &sqlx::Error) -> Option<Violation> {
    let sqlx::Error::Database(d) = e else { return None };
    if !matches!(d.kind(), ErrorKind::UniqueViolation) {
        return None;
    }
    match d.constraint() {
        Some(EVENT_ID_KEY) => Some(Violation::EventId),
        // `streams_pkey` (two creators of one stream) or
        // `events_stream_version_key` (a writer that bypassed `streams`).
        _ => Some(Violation::StreamVersion),
    }
}
