//! The store's one-event append statements as text, and the raw baseline the
//! lab measures them against, for measuring them outside the store
//! (`make bench-append-instructions` counts the server's instructions per
//! statement). Not part of the stable API: the statements change with the
//! store.

use crate::append::{APPEND_UNIQUE_EXACT_SQL, APPEND_UNIQUE_ONE_SQL, APPEND_UPDATE_SQL, APPEND_UPSERT_SQL};

/// The raw baseline of the lab's append experiments: one unchecked `INSERT`
/// of an event row, nothing returned. Parameters: `$1` stream id, `$2`
/// stream version, `$3` event id, `$4` payload, `$5` metadata.
pub const RAW_INSERT: &str = "INSERT INTO events (stream_id, category, stream_version, event_id, event_type, \
     schema_version, payload, metadata) VALUES ($1, 'raw', $2, $3, 'Deposited', 1, $4, $5)";

/// The parameter types of every [`OneEventStatement`], `$1` to `$12`: stream
/// id, expectation kind (0 any, 1 no stream, 2 stream exists, 3 exact),
/// expected version, event count, category, the event's offset in the append,
/// id, type, schema version, payload, metadata, whether to NOTIFY.
pub const ONE_EVENT_PARAMS: [&str; 12] =
    ["text", "int", "bigint", "bigint", "text", "bigint", "uuid", "text", "int", "jsonb", "jsonb", "bool"];

/// One of the store's one-event append statements.
#[derive(Debug, Clone, Copy)]
pub struct OneEventStatement {
    /// Which strategy and claim it is.
    pub name: &'static str,
    /// The expectation kind (`$2`) the store runs it with in the measurement.
    pub kind: i32,
    /// The statement text (parameters: [`ONE_EVENT_PARAMS`]).
    pub sql: &'static str,
}

/// The one-event append statements of both strategies.
pub const ONE_EVENT: [OneEventStatement; 4] = [
    OneEventStatement { name: "VersionRow, Exact(v)", kind: 3, sql: APPEND_UPDATE_SQL.one_event() },
    OneEventStatement { name: "VersionRow, Any", kind: 0, sql: APPEND_UPSERT_SQL.one_event() },
    OneEventStatement { name: "UniqueIndex, Exact(v)", kind: 3, sql: APPEND_UNIQUE_EXACT_SQL.one_event() },
    OneEventStatement { name: "UniqueIndex, Any", kind: 0, sql: APPEND_UNIQUE_ONE_SQL.one_event() },
];
