//! The append path: one statement checks every expectation under row locks,
//! bumps the per-stream version rows, inserts all events with `UNNEST` and
//! sends the NOTIFY, so an append outside a transaction is one round trip.

use std::collections::{HashMap, HashSet};

use eslab_core::{
    AppendResult, Error, ExpectedVersion, Metadata, NewEvent, Position, RecordedEvent, Result, StreamAppend, StreamId,
    Version,
};
use sqlx::postgres::PgRow;
use sqlx::types::Json;
use sqlx::{PgConnection, PgPool, Row};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::AppendStrategy;
use crate::error::{Violation, db, unique_violation};
use crate::rows::{parse_xid, to_i64, to_u64};

/// The append statement. `current` locks the existing stream rows (in
/// `stream_id` order, so concurrent multi-stream appends cannot deadlock) and,
/// under READ COMMITTED, returns their latest committed versions; `verdict`
/// is false if any expectation fails, and then no write happens. A stream
/// created concurrently is not seen by `current`: its second creator fails on
/// `streams_pkey`, and the caller re-reads the versions (see `append_on`).
///
/// Parameters: per stream `$1` id, `$2` expectation kind (0 any, 1 no stream,
/// 2 stream exists, 3 exact), `$3` expected version, `$4` event count; per
/// event `$5` stream id, `$6` category, `$7` 1-based offset in its stream,
/// `$8`..`$12` the event's columns; `$13` whether to NOTIFY.
pub(crate) const APPEND_SQL: &str = r#"
WITH input AS (
    SELECT * FROM unnest($1::text[], $2::int[], $3::bigint[], $4::bigint[])
        AS i(stream_id, expect_kind, expect_version, n)
),
current AS (
    SELECT s.stream_id, s.version FROM streams s
    WHERE s.stream_id = ANY($1::text[])
    ORDER BY s.stream_id
    FOR UPDATE
),
checked AS (
    SELECT i.stream_id, i.n, c.stream_id IS NOT NULL AS present, coalesce(c.version, 0) AS actual,
           CASE i.expect_kind
               WHEN 0 THEN true
               WHEN 1 THEN c.version IS NULL
               WHEN 2 THEN c.version IS NOT NULL
               ELSE coalesce(c.version, 0) = i.expect_version
           END AS ok
    FROM input i LEFT JOIN current c ON c.stream_id = i.stream_id
),
verdict AS (SELECT bool_and(ok) AS ok FROM checked),
created AS (
    INSERT INTO streams (stream_id, version)
    SELECT c.stream_id, c.n FROM checked c CROSS JOIN verdict v
    WHERE v.ok AND NOT c.present AND c.n > 0
    ORDER BY c.stream_id
    RETURNING stream_id
),
bumped AS (
    UPDATE streams s SET version = c.actual + c.n
    FROM checked c CROSS JOIN verdict v
    WHERE v.ok AND c.present AND c.n > 0 AND s.stream_id = c.stream_id
    RETURNING s.stream_id
),
inserted AS (
    INSERT INTO events (stream_id, category, stream_version, event_id, event_type, schema_version, payload, metadata)
    SELECT e.stream_id, e.category, c.actual + e.offset_in_stream, e.event_id, e.event_type, e.schema_version,
           e.payload, e.metadata
    FROM unnest($5::text[], $6::text[], $7::bigint[], $8::uuid[], $9::text[], $10::int[], $11::jsonb[], $12::jsonb[])
        WITH ORDINALITY AS e(stream_id, category, offset_in_stream, event_id, event_type, schema_version, payload,
                             metadata, ord)
    JOIN checked c ON c.stream_id = e.stream_id
    CROSS JOIN verdict v
    WHERE v.ok
    ORDER BY e.ord
    RETURNING global_position, transaction_id, event_id, stream_version, recorded_at, category
)
SELECT 's' AS row_kind, c.stream_id, c.actual AS version, c.ok, NULL::bigint AS global_position,
       NULL::text AS transaction_id, NULL::uuid AS event_id, NULL::timestamptz AS recorded_at
FROM checked c
UNION ALL
SELECT 'e', NULL, i.stream_version, NULL, i.global_position, i.transaction_id::text, i.event_id, i.recorded_at
FROM inserted i
UNION ALL
SELECT 'n', NULL, NULL, NULL, NULL, NULL, NULL, NULL
FROM (SELECT pg_notify('eslab_events', current_schema() || ':' || string_agg(DISTINCT category, ','))
      FROM inserted HAVING $13::bool AND count(*) > 0) n
"#;

/// The append statement of [`AppendStrategy::UniqueIndex`]:
/// no version row; the current version is the stream's highest
/// `stream_version` in the statement's snapshot (an index lookup), and the
/// unique index on `(stream_id, stream_version)` is the arbiter: if another
/// append took those versions after the snapshot, the insert waits for it and
/// fails with a unique violation (or succeeds if it rolled back), and the
/// caller re-reads the versions. A success therefore proves the snapshot's
/// version was the actual one. Same parameters and result rows as [`APPEND_SQL`].
pub(crate) const APPEND_UNIQUE_SQL: &str = r#"
WITH input AS (
    SELECT * FROM unnest($1::text[], $2::int[], $3::bigint[], $4::bigint[])
        AS i(stream_id, expect_kind, expect_version, n)
),
checked AS (
    SELECT i.stream_id, i.n, c.version AS actual,
           CASE i.expect_kind
               WHEN 0 THEN true
               WHEN 1 THEN c.version = 0
               WHEN 2 THEN c.version > 0
               ELSE c.version = i.expect_version
           END AS ok
    FROM input i
    CROSS JOIN LATERAL (
        SELECT coalesce(max(e.stream_version), 0) AS version FROM events e WHERE e.stream_id = i.stream_id
    ) c
),
verdict AS (SELECT bool_and(ok) AS ok FROM checked),
inserted AS (
    INSERT INTO events (stream_id, category, stream_version, event_id, event_type, schema_version, payload, metadata)
    SELECT e.stream_id, e.category, c.actual + e.offset_in_stream, e.event_id, e.event_type, e.schema_version,
           e.payload, e.metadata
    FROM unnest($5::text[], $6::text[], $7::bigint[], $8::uuid[], $9::text[], $10::int[], $11::jsonb[], $12::jsonb[])
        WITH ORDINALITY AS e(stream_id, category, offset_in_stream, event_id, event_type, schema_version, payload,
                             metadata, ord)
    JOIN checked c ON c.stream_id = e.stream_id
    CROSS JOIN verdict v
    WHERE v.ok
    ORDER BY e.ord
    RETURNING global_position, transaction_id, event_id, stream_version, recorded_at, category
)
SELECT 's' AS row_kind, c.stream_id, c.actual AS version, c.ok, NULL::bigint AS global_position,
       NULL::text AS transaction_id, NULL::uuid AS event_id, NULL::timestamptz AS recorded_at
FROM checked c
UNION ALL
SELECT 'e', NULL, i.stream_version, NULL, i.global_position, i.transaction_id::text, i.event_id, i.recorded_at
FROM inserted i
UNION ALL
SELECT 'n', NULL, NULL, NULL, NULL, NULL, NULL, NULL
FROM (SELECT pg_notify('eslab_events', current_schema() || ':' || string_agg(DISTINCT category, ','))
      FROM inserted HAVING $13::bool AND count(*) > 0) n
"#;

/// The fast path for one stream with events. Under
/// [`AppendStrategy::VersionRow`] one row write claims the versions, instead of
/// the general statement's lock plus update: `$claim` is either
/// [`APPEND_UPSERT_SQL`] (expectations that accept a missing stream) or
/// [`APPEND_UPDATE_SQL`] (expectations that need an existing one). Both check the
/// expectation against the row's latest committed version (READ COMMITTED
/// re-evaluates the `WHERE` after waiting for a concurrent writer, and the
/// upsert waits for a concurrent creator, then checks its row). Under
/// [`AppendStrategy::UniqueIndex`] the claim is [`APPEND_UNIQUE_EXACT_SQL`]
/// (`NoStream`, `Exact`) or [`APPEND_UNIQUE_ONE_SQL`] (the others). The result
/// is the inserted events, one row each (their stream versions tell the
/// version the claim saw); a refused claim inserts nothing and returns no
/// row, and the caller re-reads the version to report the conflict. Under
/// [`Notify::InTransaction`](crate::Notify::InTransaction) the `RETURNING`
/// list sends the NOTIFY (PostgreSQL delivers identical notifications of a
/// transaction once), so the statement needs no result rows of other kinds.
///
/// Parameters: `$1` stream id, `$2` expectation kind, `$3` expected version,
/// `$4` event count, `$5` category, `$6`..`$11` per-event offset, id, type,
/// schema version, payload, metadata (arrays; scalars in
/// [`OneStreamSql::one_event`]); `$12` whether to NOTIFY.
macro_rules! one_stream_sql {
    ($claim:literal) => {
        OneStreamSql {
            events: concat!(
                "WITH claimed AS (",
                $claim,
                r#")
INSERT INTO events (stream_id, category, stream_version, event_id, event_type, schema_version, payload, metadata)
SELECT $1, $5, c.actual + e.offset_in_stream, e.event_id, e.event_type, e.schema_version, e.payload, e.metadata
FROM claimed c
CROSS JOIN unnest($6::bigint[], $7::uuid[], $8::text[], $9::int[], $10::jsonb[], $11::jsonb[])
    WITH ORDINALITY AS e(offset_in_stream, event_id, event_type, schema_version, payload, metadata, ord)
ORDER BY e.ord
"#,
                one_stream_returning!()
            ),
            one_event: concat!(
                "WITH claimed AS (",
                $claim,
                r#")
INSERT INTO events (stream_id, category, stream_version, event_id, event_type, schema_version, payload, metadata)
SELECT $1, $5, c.actual + $6::bigint, $7::uuid, $8::text, $9::int, $10::jsonb, $11::jsonb
FROM claimed c
"#,
                one_stream_returning!()
            ),
        }
    };
}

/// The result of the one-stream statements (see [`one_stream_sql!`]).
macro_rules! one_stream_returning {
    () => {
        r#"RETURNING stream_version AS version, global_position, transaction_id::text AS transaction_id, event_id,
    recorded_at,
    CASE WHEN $12::bool THEN pg_notify('eslab_events', current_schema() || ':' || $5::text)::text END AS notified
"#
    };
}

/// The two texts of a one-stream statement: the one-event append (the usual
/// command) binds its event's columns as scalars, which spares PostgreSQL
/// the `unnest` scan, the sort and the join that `events` needs.
pub(crate) struct OneStreamSql {
    /// Any number of events, as arrays.
    events: &'static str,
    /// Exactly one event, as scalars.
    one_event: &'static str,
}

impl OneStreamSql {
    /// The text for exactly one event.
    pub(crate) const fn one_event(&self) -> &'static str {
        self.one_event
    }
}

/// Claim for `Any`, `NoStream`, `Exact(0)`: create the row at `n`, or bump it
/// if the expectation accepts its version (`NoStream`/`Exact(0)` never do).
pub(crate) const APPEND_UPSERT_SQL: OneStreamSql = one_stream_sql!(
    "INSERT INTO streams AS s (stream_id, version) VALUES ($1, $4::bigint)
    ON CONFLICT (stream_id) DO UPDATE SET version = s.version + $4::bigint
    WHERE CASE $2::int WHEN 0 THEN true WHEN 1 THEN false ELSE s.version = $3::bigint END
    RETURNING s.version - $4::bigint AS actual"
);

/// The one-stream claim of [`AppendStrategy::UniqueIndex`] for `Any` and
/// `StreamExists` (see [`APPEND_UNIQUE_EXACT_SQL`] for the others): the stream's
/// highest version in the statement's snapshot (one index probe), if the
/// expectation accepts it; the unique index on `(stream_id, stream_version)`
/// refuses the insert if another append took those versions since (see
/// [`APPEND_UNIQUE_SQL`]). No row to write but the events themselves.
pub(crate) const APPEND_UNIQUE_ONE_SQL: OneStreamSql = one_stream_sql!(
    "SELECT c.version AS actual
    FROM (SELECT coalesce(max(e.stream_version), 0) AS version FROM events e WHERE e.stream_id = $1) c
    WHERE $4::bigint > 0
      AND CASE $2::int WHEN 0 THEN true WHEN 1 THEN c.version = 0 WHEN 2 THEN c.version > 0
          ELSE c.version = $3::bigint END"
);

/// The one-stream claim of [`AppendStrategy::UniqueIndex`] for `NoStream` and
/// `Exact(v)`, whose expectation names the version itself (`$3`): the events
/// go in from `v + 1` if event `v` is in the statement's snapshot (one probe of
/// the unique index; `v = 0` needs none), and the unique index refuses them if
/// `v + 1` is taken, whether by a writer that committed or one in flight. No
/// `max()`: the probe finds one key instead of the stream's last, and the
/// statement reads no aggregate (server instructions per one-event append,
/// `make bench-append-instructions`: about a fifth fewer than
/// [`APPEND_UNIQUE_ONE_SQL`]). A stale expectation costs a failed insert
/// instead of an empty claim; the caller reads the versions either way.
pub(crate) const APPEND_UNIQUE_EXACT_SQL: OneStreamSql = one_stream_sql!(
    "SELECT $3::bigint AS actual
    WHERE $4::bigint > 0
      AND ($3::bigint = 0
           OR EXISTS (SELECT 1 FROM events e WHERE e.stream_id = $1 AND e.stream_version = $3::bigint))"
);

/// Claim for `StreamExists`, `Exact(v > 0)`: bump the existing row if the
/// expectation accepts its version (a missing row is refused).
pub(crate) const APPEND_UPDATE_SQL: OneStreamSql = one_stream_sql!(
    "UPDATE streams AS s SET version = s.version + $4::bigint
    WHERE s.stream_id = $1 AND CASE $2::int WHEN 2 THEN true ELSE s.version = $3::bigint END
    RETURNING s.version - $4::bigint AS actual"
);

/// The group-commit statement ([`GroupCommitOptions`](crate::GroupCommitOptions)): the
/// single-stream appends of many callers in one statement and one commit,
/// each judged on its own, as the one-stream statements judge theirs: the
/// existing stream rows are locked first, in `stream_id` order (`locked`: two
/// statements naming the same streams cannot deadlock; an `UPDATE .. FROM`
/// alone locks in whatever order its join produces, and concurrent group
/// statements did deadlock, each costing `deadlock_timeout`), one `UPDATE`
/// bumps every stream whose version its expectation accepts (checked on the
/// row's latest committed version), one `INSERT ... ON
/// CONFLICT DO NOTHING` creates the new streams that may be created, and
/// the events of the streams so claimed are inserted. A stream neither
/// bumped nor created drops only its own events and gets an `s` row with its
/// version as of the statement's snapshot: the caller judges it (a failed
/// expectation is a conflict; an accepted one means a concurrent writer got
/// there first, and the append is retried alone). Written streams get no `s`
/// row: their `e` rows carry the versions.
pub(crate) const GROUP_SQL: &str = r#"
WITH input AS (
    SELECT * FROM unnest($1::text[], $2::int[], $3::bigint[], $4::bigint[])
        AS i(stream_id, expect_kind, expect_version, n)
),
locked AS (
    SELECT s.stream_id FROM streams s
    WHERE s.stream_id = ANY($1::text[])
    ORDER BY s.stream_id
    FOR UPDATE
),
bumped AS (
    UPDATE streams s SET version = s.version + i.n
    FROM input i JOIN locked l ON l.stream_id = i.stream_id
    WHERE s.stream_id = i.stream_id AND i.n > 0
      AND CASE i.expect_kind WHEN 0 THEN true WHEN 2 THEN true WHEN 3 THEN s.version = i.expect_version ELSE false END
    RETURNING s.stream_id, s.version - i.n AS actual
),
created AS (
    INSERT INTO streams (stream_id, version)
    SELECT i.stream_id, i.n FROM input i
    WHERE i.n > 0 AND (i.expect_kind IN (0, 1) OR (i.expect_kind = 3 AND i.expect_version = 0))
    ORDER BY i.stream_id
    ON CONFLICT (stream_id) DO NOTHING
    RETURNING stream_id, 0::bigint AS actual
),
written AS (SELECT stream_id, actual FROM bumped UNION ALL SELECT stream_id, actual FROM created),
inserted AS (
    INSERT INTO events (stream_id, category, stream_version, event_id, event_type, schema_version, payload, metadata)
    SELECT e.stream_id, e.category, w.actual + e.offset_in_stream, e.event_id, e.event_type, e.schema_version,
           e.payload, e.metadata
    FROM unnest($5::text[], $6::text[], $7::bigint[], $8::uuid[], $9::text[], $10::int[], $11::jsonb[], $12::jsonb[])
        WITH ORDINALITY AS e(stream_id, category, offset_in_stream, event_id, event_type, schema_version, payload,
                             metadata, ord)
    JOIN written w ON w.stream_id = e.stream_id
    ORDER BY e.ord
    RETURNING global_position, transaction_id, event_id, stream_version, recorded_at, category
)
SELECT 's' AS row_kind, i.stream_id, coalesce(s.version, 0) AS version,
       NULL::bigint AS global_position, NULL::text AS transaction_id, NULL::uuid AS event_id,
       NULL::timestamptz AS recorded_at
FROM input i LEFT JOIN streams s ON s.stream_id = i.stream_id
WHERE NOT EXISTS (SELECT 1 FROM written w WHERE w.stream_id = i.stream_id)
UNION ALL
SELECT 'e', NULL, i.stream_version, i.global_position, i.transaction_id::text, i.event_id, i.recorded_at
FROM inserted i
UNION ALL
SELECT 'n', NULL, NULL, NULL, NULL, NULL, NULL
FROM (SELECT pg_notify('eslab_events', current_schema() || ':' || string_agg(DISTINCT category, ','))
      FROM inserted HAVING $13::bool AND count(*) > 0) n
"#;

/// [`GROUP_SQL`] for [`AppendStrategy::UniqueIndex`]:
/// the versions come from the events themselves; a concurrent writer that
/// took a version fails the whole statement on the unique index, and the
/// group then runs each append alone. Same result rows as [`GROUP_SQL`].
pub(crate) const GROUP_UNIQUE_SQL: &str = r#"
WITH input AS (
    SELECT * FROM unnest($1::text[], $2::int[], $3::bigint[], $4::bigint[])
        AS i(stream_id, expect_kind, expect_version, n)
),
checked AS (
    SELECT i.stream_id, i.n, c.version AS actual,
           CASE i.expect_kind
               WHEN 0 THEN true
               WHEN 1 THEN c.version = 0
               WHEN 2 THEN c.version > 0
               ELSE c.version = i.expect_version
           END AS ok
    FROM input i
    CROSS JOIN LATERAL (
        SELECT coalesce(max(e.stream_version), 0) AS version FROM events e WHERE e.stream_id = i.stream_id
    ) c
),
inserted AS (
    INSERT INTO events (stream_id, category, stream_version, event_id, event_type, schema_version, payload, metadata)
    SELECT e.stream_id, e.category, c.actual + e.offset_in_stream, e.event_id, e.event_type, e.schema_version,
           e.payload, e.metadata
    FROM unnest($5::text[], $6::text[], $7::bigint[], $8::uuid[], $9::text[], $10::int[], $11::jsonb[], $12::jsonb[])
        WITH ORDINALITY AS e(stream_id, category, offset_in_stream, event_id, event_type, schema_version, payload,
                             metadata, ord)
    JOIN checked c ON c.stream_id = e.stream_id
    WHERE c.ok
    ORDER BY e.ord
    RETURNING global_position, transaction_id, event_id, stream_version, recorded_at, category
)
SELECT 's' AS row_kind, c.stream_id, c.actual AS version,
       NULL::bigint AS global_position, NULL::text AS transaction_id, NULL::uuid AS event_id,
       NULL::timestamptz AS recorded_at
FROM checked c
WHERE NOT c.ok
UNION ALL
SELECT 'e', NULL, i.stream_version, i.global_position, i.transaction_id::text, i.event_id, i.recorded_at
FROM inserted i
UNION ALL
SELECT 'n', NULL, NULL, NULL, NULL, NULL, NULL
FROM (SELECT pg_notify('eslab_events', current_schema() || ':' || string_agg(DISTINCT category, ','))
      FROM inserted HAVING $13::bool AND count(*) > 0) n
"#;

/// How one append of a group-commit statement ended.
pub(crate) enum GroupOutcome {
    /// Recorded.
    Appended(AppendResult),
    /// Its expectation failed: nothing of it was written.
    Conflict(Error),
    /// Another session created its stream after the statement's snapshot:
    /// nothing was written; run it again alone.
    Retry(StreamAppend),
}

/// A statement with its parameters bound so far.
type PgQuery<'q> = sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>;

/// Per-event parameters borrowed from a [`Batch`]'s request.
struct EventRows<'a> {
    streams: Vec<&'a str>,
    categories: Vec<&'a str>,
    types: Vec<&'a str>,
    payloads: Vec<Json<&'a serde_json::Value>>,
    metadata: Vec<Json<&'a Metadata>>,
}

/// An append request flattened into the statement's array parameters.
pub(crate) struct Batch {
    appends: Vec<StreamAppend>,
    stream_ids: Vec<String>,
    kinds: Vec<i32>,
    expected: Vec<i64>,
    counts: Vec<i64>,
    ev_offsets: Vec<i64>,
    ev_ids: Vec<Uuid>,
    ev_schema_versions: Vec<i32>,
}

impl Batch {
    /// Validates the request (each stream once, each event id once) and encodes it.
    pub(crate) fn new(appends: Vec<StreamAppend>) -> Result<Self> {
        Batch::try_new(appends).map_err(|(e, _)| e)
    }

    /// [`Batch::new`] that gives the request back when it is refused.
    #[allow(clippy::result_large_err)]
    pub(crate) fn try_new(appends: Vec<StreamAppend>) -> std::result::Result<Self, (Error, Vec<StreamAppend>)> {
        let mut b = Batch::empty(&appends);
        match b.encode(&appends) {
            Ok(()) => {
                b.appends = appends;
                Ok(b)
            }
            Err(e) => Err((e, appends)),
        }
    }

    fn empty(appends: &[StreamAppend]) -> Self {
        let total: usize = appends.iter().map(|a| a.events.len()).sum();
        Batch {
            stream_ids: Vec::with_capacity(appends.len()),
            kinds: Vec::with_capacity(appends.len()),
            expected: Vec::with_capacity(appends.len()),
            counts: Vec::with_capacity(appends.len()),
            ev_offsets: Vec::with_capacity(total),
            ev_ids: Vec::with_capacity(total),
            ev_schema_versions: Vec::with_capacity(total),
            appends: Vec::new(),
        }
    }

    fn encode(&mut self, appends: &[StreamAppend]) -> Result<()> {
        let b = self;
        let mut seen_streams = HashSet::new();
        let mut seen_ids = HashSet::new();
        for append in appends {
            if !seen_streams.insert(&append.stream_id) {
                return Err(Error::InvalidRequest(format!("stream {} appears twice in one append", append.stream_id)));
            }
            let (kind, version) = match append.expected {
                ExpectedVersion::Any => (0, 0),
                ExpectedVersion::NoStream => (1, 0),
                ExpectedVersion::StreamExists => (2, 0),
                ExpectedVersion::Exact(v) => (3, to_i64(v.get(), "expected version")?),
            };
            b.stream_ids.push(append.stream_id.as_str().to_owned());
            b.kinds.push(kind);
            b.expected.push(version);
            b.counts.push(to_i64(u64::try_from(append.events.len()).unwrap_or(u64::MAX), "event count")?);
            for (offset, event) in (1_i64..).zip(&append.events) {
                if !seen_ids.insert(event.event_id) {
                    return Err(Error::DuplicateEventId(event.event_id));
                }
                b.ev_offsets.push(offset);
                b.ev_ids.push(event.event_id);
                b.ev_schema_versions.push(
                    i32::try_from(event.schema_version)
                        .map_err(|_| Error::OutOfRange(format!("schema version {}", event.schema_version)))?,
                );
            }
        }
        Ok(())
    }

    pub(crate) fn event_ids(&self) -> &[Uuid] {
        &self.ev_ids
    }

    pub(crate) fn stream_ids(&self) -> &[String] {
        &self.stream_ids
    }

    /// The per-event array parameters that borrow from the request (no copies
    /// of payloads: they are serialized straight from the caller's values).
    fn event_rows(&self) -> EventRows<'_> {
        let events = || self.appends.iter().flat_map(|a| a.events.iter().map(move |e| (&a.stream_id, e)));
        EventRows {
            streams: events().map(|(s, _)| s.as_str()).collect(),
            categories: events().map(|(s, _)| s.category()).collect(),
            types: events().map(|(_, e)| e.event_type.as_str()).collect(),
            payloads: events().map(|(_, e)| Json(&e.payload)).collect(),
            metadata: events().map(|(_, e)| Json(&e.metadata)).collect(),
        }
    }

    /// Whether the one-stream upsert applies (one stream, with events).
    pub(crate) fn is_one_stream(&self) -> bool {
        self.stream_ids.len() == 1 && self.counts.first().is_some_and(|&n| n > 0)
    }

    /// Runs the one-stream fast path of `strategy` (see [`Batch::is_one_stream`]).
    pub(crate) async fn execute_one_stream(
        &self,
        conn: &mut PgConnection,
        strategy: AppendStrategy,
        notify: bool,
    ) -> sqlx::Result<Vec<PgRow>> {
        // Kinds: any (0), no stream (1), stream exists (2), exact (3).
        let sql = match (strategy, self.kinds.first(), self.expected.first()) {
            // No stream and exact name the version they expect.
            (AppendStrategy::UniqueIndex, Some(1 | 3), _) => APPEND_UNIQUE_EXACT_SQL,
            (AppendStrategy::UniqueIndex, ..) => APPEND_UNIQUE_ONE_SQL,
            // Any, no stream and exact version 0 accept a missing stream.
            (AppendStrategy::VersionRow, Some(0 | 1), _) | (AppendStrategy::VersionRow, Some(3), Some(0)) => {
                APPEND_UPSERT_SQL
            }
            (AppendStrategy::VersionRow, ..) => APPEND_UPDATE_SQL,
        };
        let one_event = self.ev_ids.len() == 1;
        let rows = self.event_rows();
        let query = sqlx::query(if one_event { sql.one_event } else { sql.events })
            .bind(self.stream_ids.first())
            .bind(self.kinds.first())
            .bind(self.expected.first())
            .bind(self.counts.first())
            .bind(rows.categories.first());
        let query = if one_event {
            query
                .bind(self.ev_offsets.first())
                .bind(self.ev_ids.first())
                .bind(rows.types.first())
                .bind(self.ev_schema_versions.first())
                .bind(rows.payloads.first())
                .bind(rows.metadata.first())
        } else {
            self.bind_event_arrays(query, &rows)
        };
        query.bind(notify).fetch_all(conn).await
    }

    /// Binds the per-event arrays: offsets, ids, types, schema versions,
    /// payloads, metadata (`$6`..`$11` of the one-stream statements, `$7`..`$12`
    /// of the others).
    fn bind_event_arrays<'q>(&'q self, query: PgQuery<'q>, rows: &'q EventRows<'q>) -> PgQuery<'q> {
        query
            .bind(&self.ev_offsets)
            .bind(&self.ev_ids)
            .bind(&rows.types)
            .bind(&self.ev_schema_versions)
            .bind(&rows.payloads)
            .bind(&rows.metadata)
    }

    /// Runs the statement of `strategy` on `conn`.
    pub(crate) async fn execute(
        &self,
        conn: &mut PgConnection,
        strategy: AppendStrategy,
        notify: bool,
    ) -> sqlx::Result<Vec<PgRow>> {
        let sql = match strategy {
            AppendStrategy::VersionRow => APPEND_SQL,
            AppendStrategy::UniqueIndex => APPEND_UNIQUE_SQL,
        };
        self.execute_sql(conn, sql, notify).await
    }

    /// Runs the group-commit statement of `strategy` on `conn`: each stream's
    /// append stands or falls alone (see [`GROUP_SQL`]).
    pub(crate) async fn execute_group(
        &self,
        conn: &mut PgConnection,
        strategy: AppendStrategy,
        notify: bool,
    ) -> sqlx::Result<Vec<PgRow>> {
        let sql = match strategy {
            AppendStrategy::VersionRow => GROUP_SQL,
            AppendStrategy::UniqueIndex => GROUP_UNIQUE_SQL,
        };
        self.execute_sql(conn, sql, notify).await
    }

    async fn execute_sql(&self, conn: &mut PgConnection, sql: &str, notify: bool) -> sqlx::Result<Vec<PgRow>> {
        let rows = self.event_rows();
        let query = sqlx::query(sql)
            .bind(&self.stream_ids)
            .bind(&self.kinds)
            .bind(&self.expected)
            .bind(&self.counts)
            .bind(&rows.streams)
            .bind(&rows.categories);
        self.bind_event_arrays(query, &rows).bind(notify).fetch_all(conn).await
    }

    /// The first stream (in request order) whose expectation `versions` fails.
    pub(crate) fn first_conflict(&self, versions: &HashMap<String, Version>) -> Option<Error> {
        self.appends.iter().find_map(|a| {
            let actual = versions.get(a.stream_id.as_str()).copied().unwrap_or(Version::NONE);
            (!a.expected.accepts(actual)).then(|| Error::Conflict {
                stream: a.stream_id.clone(),
                expected: a.expected,
                actual,
            })
        })
    }

    /// The conflict to report for a lost stream-creation race that cannot be
    /// retried: the first stream someone else created, at its actual version.
    pub(crate) fn lost_race(&self, versions: &HashMap<String, Version>) -> Error {
        let append = self.appends.iter().find(|a| versions.contains_key(a.stream_id.as_str())).or(self.appends.first());
        match append {
            Some(a) => Error::Conflict {
                stream: a.stream_id.clone(),
                expected: a.expected,
                actual: versions.get(a.stream_id.as_str()).copied().unwrap_or(Version::NONE),
            },
            None => Error::backend("append lost a race on no stream"),
        }
    }

    /// Turns the statement's rows into results (or the conflict it reported).
    pub(crate) fn results(self, rows: &[PgRow]) -> Result<Vec<AppendResult>> {
        let mut versions = HashMap::new();
        let mut all_ok = true;
        let mut recorded: HashMap<Uuid, (Version, Position, u64, OffsetDateTime)> = HashMap::new();
        for row in rows {
            let kind: String = row.try_get("row_kind").map_err(db)?;
            match kind.as_str() {
                "s" => {
                    let stream: String = row.try_get("stream_id").map_err(db)?;
                    let version: i64 = row.try_get("version").map_err(db)?;
                    let ok: bool = row.try_get("ok").map_err(db)?;
                    all_ok &= ok;
                    versions.insert(stream, Version::new(to_u64(version, "stream version")?));
                }
                "e" => {
                    let id: Uuid = row.try_get("event_id").map_err(db)?;
                    recorded.insert(id, recorded_row(row)?);
                }
                _ => {}
            }
        }
        if !all_ok {
            return Err(self
                .first_conflict(&versions)
                .unwrap_or_else(|| Error::backend("append refused without a failing expectation")));
        }
        let mut results = Vec::with_capacity(self.appends.len());
        for StreamAppend { stream_id, events, .. } in self.appends {
            let before = versions.get(stream_id.as_str()).copied().unwrap_or(Version::NONE);
            let version = before.advance(events.len()).ok_or_else(|| Error::OutOfRange("stream version".into()))?;
            let events =
                events.into_iter().map(|e| into_recorded(&stream_id, e, &recorded)).collect::<Result<Vec<_>>>()?;
            results.push(AppendResult { stream_id, version, events });
        }
        Ok(results)
    }

    /// Turns a group-commit statement's rows into one outcome per append, in
    /// request order.
    pub(crate) fn group_results(self, rows: &[PgRow]) -> Result<Vec<GroupOutcome>> {
        // The streams the statement did not write, at their version.
        let mut unwritten: HashMap<String, Version> = HashMap::new();
        let mut recorded: HashMap<Uuid, (Version, Position, u64, OffsetDateTime)> = HashMap::new();
        for row in rows {
            let kind: String = row.try_get("row_kind").map_err(db)?;
            match kind.as_str() {
                "s" => {
                    let stream: String = row.try_get("stream_id").map_err(db)?;
                    let version: i64 = row.try_get("version").map_err(db)?;
                    unwritten.insert(stream, Version::new(to_u64(version, "stream version")?));
                }
                "e" => {
                    let id: Uuid = row.try_get("event_id").map_err(db)?;
                    recorded.insert(id, recorded_row(row)?);
                }
                _ => {}
            }
        }
        let mut outcomes = Vec::with_capacity(self.appends.len());
        for append in self.appends {
            if let Some(&actual) = unwritten.get(append.stream_id.as_str()) {
                outcomes.push(if !append.expected.accepts(actual) {
                    GroupOutcome::Conflict(Error::Conflict {
                        stream: append.stream_id,
                        expected: append.expected,
                        actual,
                    })
                } else {
                    // Accepted by the snapshot, yet not written: a concurrent
                    // writer claimed the stream first.
                    GroupOutcome::Retry(append)
                });
                continue;
            }
            outcomes.push(GroupOutcome::Appended(appended(append, &recorded)?));
        }
        Ok(outcomes)
    }

    /// Turns the rows of a granted one-stream claim (the inserted events, see
    /// [`APPEND_UPSERT_SQL`]) into the append's result.
    pub(crate) fn one_stream_results(self, rows: &[PgRow]) -> Result<Vec<AppendResult>> {
        let recorded = rows
            .iter()
            .map(|row| Ok((row.try_get("event_id").map_err(db)?, recorded_row(row)?)))
            .collect::<Result<HashMap<Uuid, _>>>()?;
        self.appends.into_iter().map(|append| appended(append, &recorded)).collect()
    }

    /// Gives the request back (to run its appends one by one).
    pub(crate) fn into_appends(self) -> Vec<StreamAppend> {
        self.appends
    }
}

/// An `e` row's stream version, global position, transaction id and time.
fn recorded_row(row: &PgRow) -> Result<(Version, Position, u64, OffsetDateTime)> {
    let version: i64 = row.try_get("version").map_err(db)?;
    let position: i64 = row.try_get("global_position").map_err(db)?;
    let tx: String = row.try_get("transaction_id").map_err(db)?;
    let at: OffsetDateTime = row.try_get("recorded_at").map_err(db)?;
    Ok((
        Version::new(to_u64(version, "stream version")?),
        Position::new(to_u64(position, "global position")?),
        parse_xid(&tx)?,
        at,
    ))
}

/// A written append with events: each event as recorded, the stream at its last event's version.
fn appended(
    append: StreamAppend,
    recorded: &HashMap<Uuid, (Version, Position, u64, OffsetDateTime)>,
) -> Result<AppendResult> {
    let StreamAppend { stream_id, events, .. } = append;
    let events = events.into_iter().map(|e| into_recorded(&stream_id, e, recorded)).collect::<Result<Vec<_>>>()?;
    let Some(version) = events.last().map(|e| e.stream_version) else {
        return Err(Error::backend(format!("stream {stream_id} missing from the append's result")));
    };
    Ok(AppendResult { stream_id, version, events })
}

fn into_recorded(
    stream: &StreamId,
    event: NewEvent,
    recorded: &HashMap<Uuid, (Version, Position, u64, OffsetDateTime)>,
) -> Result<RecordedEvent> {
    let NewEvent { event_id, event_type, schema_version, payload, metadata } = event;
    let &(stream_version, position, transaction, recorded_at) = recorded
        .get(&event_id)
        .ok_or_else(|| Error::backend(format!("event {event_id} missing from the append's result")))?;
    Ok(RecordedEvent {
        event_id,
        stream_id: stream.clone(),
        stream_version,
        position,
        transaction,
        event_type,
        schema_version,
        payload,
        metadata,
        recorded_at,
    })
}

/// The current versions of `streams` (absent streams are left out).
pub(crate) async fn versions(pool: &PgPool, streams: &[String]) -> Result<HashMap<String, Version>> {
    // From the events themselves, which both strategies keep exact.
    let rows = sqlx::query(
        "SELECT s.stream_id, v.version FROM unnest($1::text[]) AS s(stream_id) CROSS JOIN LATERAL \
             (SELECT max(stream_version) AS version FROM events e WHERE e.stream_id = s.stream_id) v \
             WHERE v.version IS NOT NULL",
    )
    .bind(streams)
    .fetch_all(pool)
    .await
    .map_err(db)?;
    rows.iter()
        .map(|r| {
            let stream: String = r.try_get("stream_id").map_err(db)?;
            let version: i64 = r.try_get("version").map_err(db)?;
            Ok((stream, Version::new(to_u64(version, "stream version")?)))
        })
        .collect()
}

/// Which of `ids` is already stored, if any.
pub(crate) async fn stored_id(pool: &PgPool, ids: &[Uuid]) -> Result<Option<Uuid>> {
    sqlx::query_scalar("SELECT event_id FROM events WHERE event_id = ANY($1) LIMIT 1")
        .bind(ids)
        .fetch_optional(pool)
        .await
        .map_err(db)
}

/// What to do after the append statement failed.
pub(crate) enum Failure {
    /// Report this error.
    Fail(Error),
    /// A concurrent creator took the stream row but every expectation still
    /// holds (e.g. `Any`): run the statement again.
    Retry,
    /// The server aborted the statement as a deadlock victim or serialization
    /// failure; nothing was written and running it again is safe.
    Transient(sqlx::Error),
}

/// A claim the one-stream upsert refused: re-read the version to report the
/// conflict, or retry if the expectation holds now.
pub(crate) async fn refused(pool: &PgPool, batch: &Batch) -> Failure {
    match versions(pool, batch.stream_ids()).await {
        Ok(v) => batch.first_conflict(&v).map_or(Failure::Retry, Failure::Fail),
        Err(read) => Failure::Fail(read),
    }
}

/// Classifies a failed append statement, re-reading what it needs from `pool`.
pub(crate) async fn classify(pool: &PgPool, batch: &Batch, e: sqlx::Error) -> Failure {
    match unique_violation(&e) {
        Some(Violation::EventId) => match stored_id(pool, batch.event_ids()).await {
            Ok(Some(id)) => Failure::Fail(Error::DuplicateEventId(id)),
            Ok(None) => Failure::Retry,
            Err(read) => Failure::Fail(read),
        },
        Some(Violation::StreamVersion) => match versions(pool, batch.stream_ids()).await {
            Ok(v) => batch.first_conflict(&v).map_or(Failure::Retry, Failure::Fail),
            Err(read) => Failure::Fail(read),
        },
        None if crate::error::is_transient(&e) => Failure::Transient(e),
        None => Failure::Fail(db(e)),
    }
}
