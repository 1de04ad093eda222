//! Conversions between Rust values and the columns of the `events` table.

use eslab_core::{Error, LeanEvent, Metadata, Position, RecordedEvent, Result, StreamId, Subject, Version};
use sqlx::Row;
use sqlx::postgres::PgRow;
use sqlx::types::Json;
use time::OffsetDateTime;
use uuid::Uuid;

/// The columns every event read selects, in the order [`recorded`] expects
/// (a macro, so statements embed it with `concat!` at compile time).
macro_rules! event_columns {
    () => {
        "global_position, transaction_id::text AS transaction_id, stream_id, \
         stream_version, event_id, event_type, schema_version, payload, metadata, recorded_at"
    };
}
pub(crate) use event_columns;

/// A `u64` (version, position, count) as a `BIGINT`.
pub(crate) fn to_i64(v: u64, what: &str) -> Result<i64> {
    i64::try_from(v).map_err(|_| Error::OutOfRange(format!("{what} {v} exceeds BIGINT")))
}

/// A `BIGINT` read back as a `u64`.
pub(crate) fn to_u64(v: i64, what: &str) -> Result<u64> {
    u64::try_from(v).map_err(|_| Error::OutOfRange(format!("negative {what} {v} in the database")))
}

/// A page size as a SQL `LIMIT`.
pub(crate) fn limit(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// An `xid8` read as text.
pub(crate) fn parse_xid(text: &str) -> Result<u64> {
    text.parse().map_err(|_| Error::OutOfRange(format!("transaction id {text:?} is not a u64")))
}

pub(crate) fn encode_metadata(metadata: &Metadata) -> Result<serde_json::Value> {
    serde_json::to_value(metadata).map_err(|e| Error::Encode { event_type: "metadata".into(), source: e })
}

fn get<'r, T: sqlx::Decode<'r, sqlx::Postgres> + sqlx::Type<sqlx::Postgres>>(row: &'r PgRow, col: usize) -> Result<T> {
    row.try_get(col).map_err(crate::error::db)
}

/// The columns of a stream read for replay, in [`lean`]'s order: no
/// metadata document (only its subject), no position, ids or timestamps.
macro_rules! lean_columns {
    () => {
        "stream_version, event_type, schema_version, payload, metadata ->> 'subject'"
    };
}
pub(crate) use lean_columns;

/// Decodes a row of [`lean_columns!`].
pub(crate) fn lean(row: &PgRow) -> Result<LeanEvent> {
    let schema_version: i32 = get(row, 2)?;
    let subject: Option<String> = get(row, 4)?;
    Ok(LeanEvent {
        stream_version: Version::new(to_u64(get(row, 0)?, "stream version")?),
        event_type: get(row, 1)?,
        schema_version: u32::try_from(schema_version)
            .map_err(|_| Error::OutOfRange(format!("schema version {schema_version}")))?,
        payload: get(row, 3)?,
        subject: subject.map(Subject::try_from).transpose().map_err(Error::backend)?,
    })
}

/// Decodes a row whose columns from `first` on are [`event_columns!`], in
/// that order (read by index: a lookup by name hashes the name, ten times a
/// row). `stream`, when the caller knows which stream every row belongs to
/// (a stream read), is cloned instead of parsing the text of each row.
pub(crate) fn recorded(row: &PgRow, first: usize, stream: Option<&StreamId>) -> Result<RecordedEvent> {
    let stream_text: &str = get(row, first + 2)?;
    let stream_id = match stream {
        Some(known) if known.as_str() == stream_text => known.clone(),
        _ => stream_text.parse().map_err(Error::backend)?,
    };
    let schema_version: i32 = get(row, first + 6)?;
    let transaction: &str = get(row, first + 1)?;
    let Json(metadata): Json<Metadata> = get(row, first + 8)?;
    Ok(RecordedEvent {
        position: Position::new(to_u64(get(row, first)?, "global position")?),
        transaction: parse_xid(transaction)?,
        stream_version: Version::new(to_u64(get(row, first + 3)?, "stream version")?),
        event_id: get::<Uuid>(row, first + 4)?,
        event_type: get(row, first + 5)?,
        schema_version: u32::try_from(schema_version)
            .map_err(|_| Error::OutOfRange(format!("schema version {schema_version}")))?,
        payload: get(row, first + 7)?,
        metadata,
        recorded_at: get::<OffsetDateTime>(row, first + 9)?,
        stream_id,
    })
}
