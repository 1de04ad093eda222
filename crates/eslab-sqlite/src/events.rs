//! Appending and reading events: the version check and multi-row inserts in
//! one `BEGIN IMMEDIATE` transaction on the writer; reads on the read pool.

use std::collections::HashSet;

use eslab_core::{
    AppendCondition, AppendResult, COUNT_CAP, CategorySummary, Checkpoint, Error, EventAppender, EventId, EventReader,
    ExpectedVersion, Explore, FeedFilter, InvalidQuery, LeanEvent, Metadata, NewEvent, Position, Query, QueryRead,
    ReadPosition, RecordedEvent, Result, StreamAppend, StreamId, StreamSummary, Tag, Version, category_range,
    explore_page,
};
use sqlx::pool::PoolConnection;
use sqlx::sqlite::SqliteRow;
use sqlx::{QueryBuilder, Row, Sqlite, SqliteConnection};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::SqliteStore;
use crate::error::{SqliteError, Timeouts, is_unique_violation, to_i64, to_u64};

/// Rows per INSERT statement: 250 rows × 10 columns = 2 500 bound variables,
/// far below the bundled SQLite's limit of 32 766, and enough that a typical
/// append (and the 100-event bench) is a single statement.
const ROWS_PER_INSERT: usize = 250;

/// `SELECT <every event column> FROM events <rest>`, as a literal.
macro_rules! select_events {
    ($rest:literal) => {
        concat!(
            "SELECT global_position, stream_id, stream_version, event_id, event_type, schema_version, payload, \
             metadata, recorded_at FROM events ",
            $rest
        )
    };
}

/// One event ready to insert: the recorded event plus its serialized columns.
struct PendingRow {
    event: RecordedEvent,
    position: i64,
    version: i64,
    schema_version: i64,
    payload: String,
    metadata: String,
}

impl SqliteStore {
    async fn append_all(
        &self,
        appends: Vec<StreamAppend>,
        condition: Option<&AppendCondition>,
    ) -> Result<Vec<AppendResult>> {
        eslab_core::check_storable(&appends)?;
        let mut streams = HashSet::new();
        for append in &appends {
            if !streams.insert(&append.stream_id) {
                return Err(Error::InvalidRequest(format!("stream {} appears twice in one append", append.stream_id)));
            }
        }
        let timeouts = self.inner.timeouts;
        // BEGIN IMMEDIATE takes the write lock now, so the version check below
        // and the inserts see the same database; a dropped transaction rolls back.
        let mut tx = self.inner.writer.begin_with("BEGIN IMMEDIATE").await.map_err(|e| timeouts.core(e))?;
        if let Some(condition) = condition {
            check_condition(&mut tx, condition).await.map_err(|e| e.into_core(timeouts))?;
        }
        let (results, last) = write(&mut tx, appends).await.map_err(|e| e.into_core(timeouts))?;
        tx.commit().await.map_err(|e| timeouts.core(e))?;
        if let Some(last) = last {
            self.committed(last);
        }
        Ok(results)
    }

    pub(crate) fn core(&self, e: sqlx::Error) -> Error {
        self.inner.timeouts.core(e)
    }

    /// A connection of the read pool.
    pub(crate) async fn reader(&self) -> Result<PoolConnection<Sqlite>> {
        self.inner.reader.acquire().await.map_err(|e| self.core(e))
    }
}

/// A failure inside the write transaction.
pub(crate) enum Write {
    Core(Error),
    Sqlx(sqlx::Error),
}

impl Write {
    /// The core error, classifying a driver error with `timeouts`.
    pub(crate) fn into_core(self, timeouts: Timeouts) -> Error {
        match self {
            Write::Core(e) => e,
            Write::Sqlx(e) => timeouts.core(e),
        }
    }
}

impl From<Error> for Write {
    fn from(e: Error) -> Self {
        Write::Core(e)
    }
}

impl From<sqlx::Error> for Write {
    fn from(e: sqlx::Error) -> Self {
        Write::Sqlx(e)
    }
}

/// Checks and writes every stream's part; returns the results and the last
/// position written (if any). The caller commits.
pub(crate) async fn write(
    conn: &mut SqliteConnection,
    appends: Vec<StreamAppend>,
) -> Result<(Vec<AppendResult>, Option<Position>), Write> {
    let recorded_at = OffsetDateTime::now_utc();
    let recorded_text = recorded_at.format(&Rfc3339).map_err(Error::backend)?;
    // The feed's head: read with the first stream's version (one round trip
    // fewer), then advanced as rows are added.
    let mut head: Option<u64> = None;
    let mut ids = HashSet::new();
    let mut results = Vec::with_capacity(appends.len());
    let mut last = None;
    for StreamAppend { stream_id, expected, events } in appends {
        let (mut position, actual) = match head {
            Some(head) => (head, version_of(&mut *conn, &stream_id).await?),
            None => head_and_version(&mut *conn, &stream_id).await?,
        };
        if !expected.accepts(actual) {
            return Err(Error::Conflict { stream: stream_id, expected, actual }.into());
        }
        actual.advance(events.len()).ok_or_else(|| Error::OutOfRange("stream version".into()))?;
        let mut rows = Vec::with_capacity(events.len());
        let mut version = actual;
        for NewEvent { event_id, event_type, schema_version, payload, metadata } in events {
            if !ids.insert(event_id) {
                return Err(Error::DuplicateEventId(event_id).into());
            }
            version = Version::new(version.get() + 1);
            position = position.checked_add(1).ok_or_else(|| Error::OutOfRange("global position".into()))?;
            let payload_text = serde_json::to_string(&payload).map_err(|e| encode(&event_type, e))?;
            let metadata_text = serde_json::to_string(&metadata).map_err(|e| encode(&event_type, e))?;
            rows.push(PendingRow {
                position: to_i64(position, "global position")?,
                version: to_i64(version.get(), "stream version")?,
                schema_version: i64::from(schema_version),
                payload: payload_text,
                metadata: metadata_text,
                event: RecordedEvent {
                    event_id,
                    stream_id: stream_id.clone(),
                    stream_version: version,
                    position: Position::new(position),
                    transaction: 0,
                    event_type,
                    schema_version,
                    payload,
                    metadata,
                    recorded_at,
                },
            });
        }
        head = Some(position);
        for chunk in rows.chunks(ROWS_PER_INSERT) {
            insert(&mut *conn, &stream_id, expected, &recorded_text, chunk).await?;
        }
        if let Some(row) = rows.last() {
            last = Some(row.event.position);
        }
        results.push(AppendResult { stream_id, version, events: rows.into_iter().map(|r| r.event).collect() });
    }
    Ok((results, last))
}

fn encode(event_type: &str, source: serde_json::Error) -> Error {
    Error::Encode { event_type: event_type.to_owned(), source }
}

/// One multi-row INSERT; a unique violation becomes the typed error it means.
async fn insert(
    conn: &mut SqliteConnection,
    stream: &StreamId,
    expected: ExpectedVersion,
    recorded_at: &str,
    rows: &[PendingRow],
) -> Result<(), Write> {
    let mut query = QueryBuilder::<Sqlite>::new(
        "INSERT INTO events (category, global_position, stream_id, stream_version, event_id, event_type, \
         schema_version, payload, metadata, recorded_at) ",
    );
    query.push_values(rows, |mut b, row| {
        b.push_bind(stream.category())
            .push_bind(row.position)
            .push_bind(stream.as_str())
            .push_bind(row.version)
            .push_bind(row.event.event_id)
            .push_bind(row.event.event_type.as_str())
            .push_bind(row.schema_version)
            .push_bind(row.payload.as_str())
            .push_bind(row.metadata.as_str())
            .push_bind(recorded_at);
    });
    let inserted = query.build().execute(&mut *conn).await;
    if inserted.is_ok() {
        let tags: Vec<(&str, i64)> =
            rows.iter().flat_map(|r| r.event.metadata.tags.iter().map(|t| (t.as_str(), r.position))).collect();
        // Two bound variables per row: far below the limit at 250 events of 16 tags.
        if !tags.is_empty() {
            let mut insert_tags = QueryBuilder::<Sqlite>::new("INSERT INTO event_tags (tag, global_position) ");
            insert_tags.push_values(&tags, |mut b, (tag, position)| {
                b.push_bind(*tag).push_bind(*position);
            });
            insert_tags.build().execute(&mut *conn).await?;
        }
    }
    match inserted {
        Ok(_) => Ok(()),
        Err(e) if is_unique_violation(&e) => {
            // Which constraint? Ask the database rather than parse the message:
            // a stored id means a duplicate event, otherwise the stream moved.
            let ids: Vec<EventId> = rows.iter().map(|r| r.event.event_id).collect();
            if let Some(id) = first_stored(&mut *conn, &ids).await? {
                return Err(Error::DuplicateEventId(id).into());
            }
            let actual = version_of(&mut *conn, stream).await?;
            Err(Error::Conflict { stream: stream.clone(), expected, actual }.into())
        }
        Err(e) => Err(e.into()),
    }
}

/// The first of `ids` (in order) already stored.
async fn first_stored(conn: &mut SqliteConnection, ids: &[EventId]) -> Result<Option<EventId>, Write> {
    let mut query = QueryBuilder::<Sqlite>::new("SELECT event_id FROM events WHERE event_id IN ");
    query.push_tuples(ids, |mut b, id| {
        b.push_bind(*id);
    });
    let stored: HashSet<EventId> = query.build_query_scalar().fetch_all(&mut *conn).await?.into_iter().collect();
    Ok(ids.iter().find(|id| stored.contains(id)).copied())
}

/// The feed's head position and `stream`'s version, in one query.
async fn head_and_version(conn: &mut SqliteConnection, stream: &StreamId) -> Result<(u64, Version), Write> {
    let (head, version): (Option<i64>, Option<i64>) = sqlx::query_as(
        "SELECT (SELECT MAX(global_position) FROM events), \
         (SELECT MAX(stream_version) FROM events WHERE stream_id = ?)",
    )
    .bind(stream.as_str())
    .fetch_one(&mut *conn)
    .await?;
    let head = to_u64(head.unwrap_or(0), "global position").map_err(Error::from)?;
    let version = to_u64(version.unwrap_or(0), "stream version").map_err(Error::from)?;
    Ok((head, Version::new(version)))
}

async fn version_of(conn: &mut SqliteConnection, stream: &StreamId) -> Result<Version, Write> {
    let v: Option<i64> = sqlx::query_scalar("SELECT MAX(stream_version) FROM events WHERE stream_id = ?")
        .bind(stream.as_str())
        .fetch_one(&mut *conn)
        .await?;
    Ok(Version::new(to_u64(v.unwrap_or(0), "stream version").map_err(Error::from)?))
}

/// Decodes rows of `select_events!` (columns by index, in its order). Rows of
/// one page mostly share their stream and their append's timestamp, so the
/// last parsed stream id and timestamp are reused.
#[derive(Default)]
struct Decoder {
    stream: Option<StreamId>,
    recorded: Option<(String, OffsetDateTime)>,
}

impl Decoder {
    fn decode(&mut self, row: &SqliteRow) -> Result<RecordedEvent, SqliteError> {
        let invalid = |what: &str, e: &dyn std::fmt::Display| SqliteError::InvalidRow(format!("{what}: {e}"));
        let stream_text: &str = row.try_get(1)?;
        let stream_id = match &self.stream {
            Some(s) if s.as_str() == stream_text => s.clone(),
            _ => {
                let s: StreamId = stream_text.parse().map_err(|e| invalid("stream_id", &e))?;
                self.stream = Some(s.clone());
                s
            }
        };
        let recorded_text: &str = row.try_get(8)?;
        let recorded_at = match &self.recorded {
            Some((text, at)) if text == recorded_text => *at,
            _ => {
                let at = OffsetDateTime::parse(recorded_text, &Rfc3339).map_err(|e| invalid("recorded_at", &e))?;
                self.recorded = Some((recorded_text.to_owned(), at));
                at
            }
        };
        let schema_version: i64 = row.try_get(5)?;
        let payload: &str = row.try_get(6)?;
        let metadata: &str = row.try_get(7)?;
        Ok(RecordedEvent {
            event_id: row.try_get(3)?,
            stream_version: Version::new(to_u64(row.try_get(2)?, "stream version")?),
            position: Position::new(to_u64(row.try_get(0)?, "global position")?),
            transaction: 0,
            event_type: row.try_get(4)?,
            schema_version: u32::try_from(schema_version).map_err(|e| invalid("schema_version", &e))?,
            payload: serde_json::from_str(payload).map_err(|e| invalid("payload", &e))?,
            metadata: serde_json::from_str::<Metadata>(metadata).map_err(|e| invalid("metadata", &e))?,
            recorded_at,
            stream_id,
        })
    }
}

/// Decodes a row of a lean stream read: `stream_version, event_type,
/// schema_version, payload` and the metadata's subject.
fn decode_lean(row: &SqliteRow) -> Result<LeanEvent, SqliteError> {
    let invalid = |what: &str, e: &dyn std::fmt::Display| SqliteError::InvalidRow(format!("{what}: {e}"));
    let schema_version: i64 = row.try_get(2)?;
    let payload: &str = row.try_get(3)?;
    let subject: Option<String> = row.try_get(4)?;
    Ok(LeanEvent {
        stream_version: Version::new(to_u64(row.try_get(0)?, "stream version")?),
        event_type: row.try_get(1)?,
        schema_version: u32::try_from(schema_version).map_err(|e| invalid("schema_version", &e))?,
        payload: serde_json::from_str(payload).map_err(|e| invalid("payload", &e))?,
        subject: subject.map(eslab_core::Subject::try_from).transpose().map_err(|e| invalid("subject", &e))?,
    })
}

fn decode_all(rows: &[SqliteRow]) -> Result<Vec<RecordedEvent>> {
    let mut decoder = Decoder::default();
    rows.iter().map(|r| decoder.decode(r).map_err(Error::from)).collect()
}

/// A page limit as SQLite's LIMIT (`usize::MAX` means no limit).
fn limit(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

/// A read bound (version, position) as an INTEGER: beyond `i64::MAX` nothing
/// is stored, so `i64::MAX` reads the same (nothing), as the memory store does.
fn saturate(bound: u64) -> i64 {
    i64::try_from(bound).unwrap_or(i64::MAX)
}

/// Pushes `(<item> OR <item> ...)` matching `query`'s events (columns of
/// `events`): an item's types as `event_type IN (...)`, its tags through
/// `event_tags` (every tag present).
fn push_match(b: &mut QueryBuilder<'_, Sqlite>, query: &Query) {
    b.push("(");
    for (i, item) in query.items().iter().enumerate() {
        if i > 0 {
            b.push(" OR ");
        }
        b.push("(1 = 1");
        if !item.types.is_empty() {
            b.push(" AND event_type IN (");
            let mut types = b.separated(", ");
            for t in &item.types {
                types.push_bind(t.clone());
            }
            b.push(")");
        }
        if !item.tags.is_empty() {
            let mut tags: Vec<&str> = item.tags.iter().map(Tag::as_str).collect();
            tags.sort_unstable();
            tags.dedup();
            b.push(" AND global_position IN (SELECT global_position FROM event_tags WHERE tag IN (");
            let mut list = b.separated(", ");
            for t in &tags {
                list.push_bind(t.to_string());
            }
            b.push(") GROUP BY global_position HAVING count(*) = ");
            b.push_bind(i64::try_from(tags.len()).unwrap_or(i64::MAX));
            b.push(")");
        }
        b.push(")");
    }
    b.push(")");
}

/// The newest position committed (0 for an empty store).
async fn head_position(conn: &mut SqliteConnection) -> Result<u64, Write> {
    let head: Option<i64> = sqlx::query_scalar("SELECT MAX(global_position) FROM events").fetch_one(&mut *conn).await?;
    Ok(to_u64(head.unwrap_or(0), "global position").map_err(Error::from)?)
}

/// Fails if an event matching the condition's query lies after its position.
/// Runs in the write transaction (`BEGIN IMMEDIATE`): no other append can
/// commit between this check and the append's commit.
async fn check_condition(conn: &mut SqliteConnection, condition: &AppendCondition) -> Result<(), Write> {
    let after = match &condition.after {
        None => 0,
        Some(read) => {
            let head = head_position(&mut *conn).await?;
            if read.unseen.is_some() || read.position.get() > head {
                return Err(Error::from(InvalidQuery::PositionAhead {
                    position: format!("{read:?}"),
                    head: head.to_string(),
                })
                .into());
            }
            read.position.get()
        }
    };
    let mut b = QueryBuilder::<Sqlite>::new(
        "SELECT event_id, event_type, global_position FROM events WHERE global_position > ",
    );
    b.push_bind(saturate(after)).push(" AND ");
    push_match(&mut b, &condition.query);
    b.push(" ORDER BY global_position LIMIT 1");
    let found: Option<(EventId, String, i64)> = b.build_query_as().fetch_optional(&mut *conn).await?;
    match found {
        Some((event_id, event_type, position)) => Err(Error::ConditionFailed {
            event_id,
            event_type,
            position: Position::new(to_u64(position, "global position").map_err(Error::from)?),
        }
        .into()),
        None => Ok(()),
    }
}

impl EventAppender for SqliteStore {
    async fn append_streams(&self, appends: Vec<StreamAppend>) -> Result<Vec<AppendResult>> {
        self.append_all(appends, None).await
    }

    /// The condition is checked in the append's `BEGIN IMMEDIATE`
    /// transaction, which holds the database's one write lock: appends are
    /// serialized, and positions commit in order, so "an event after the
    /// read's position" is exactly "an event the read did not see".
    async fn append_if(&self, appends: Vec<StreamAppend>, condition: AppendCondition) -> Result<Vec<AppendResult>> {
        self.append_all(appends, Some(&condition)).await
    }
}

impl EventReader for SqliteStore {
    fn personal_keys(&self) -> Option<std::sync::Arc<dyn eslab_core::KeyStore>> {
        Some(self.key_store())
    }

    async fn read_stream(&self, stream: &StreamId, from: Version, max: usize) -> Result<Vec<RecordedEvent>> {
        const SQL: &str = select_events!("WHERE stream_id = ? AND stream_version >= ? ORDER BY stream_version LIMIT ?");
        decode_all(&self.stream_rows(SQL, stream, from, max).await?)
    }

    async fn read_stream_lean(&self, stream: &StreamId, from: Version, max: usize) -> Result<Vec<LeanEvent>> {
        const SQL: &str = "SELECT stream_version, event_type, schema_version, payload, \
             json_extract(metadata, '$.subject') FROM events \
             WHERE stream_id = ? AND stream_version >= ? ORDER BY stream_version LIMIT ?";
        let rows = self.stream_rows(SQL, stream, from, max).await?;
        rows.iter().map(|row| decode_lean(row).map_err(Error::from)).collect()
    }

    /// The feed is ordered by position alone: SQLite commits in position order,
    /// so `after.transaction` (always 0 for this store) is not consulted.
    async fn read_feed(&self, filter: &FeedFilter, after: Checkpoint, max: usize) -> Result<Vec<RecordedEvent>> {
        let after_position = saturate(after.position.get());
        let query = match filter {
            FeedFilter::All => {
                sqlx::query(select_events!("WHERE global_position > ? ORDER BY global_position LIMIT ?"))
            }
            FeedFilter::Category(category) => sqlx::query(select_events!(
                "WHERE category = ? AND global_position > ? ORDER BY global_position LIMIT ?"
            ))
            .bind(category.as_str()),
        };
        let query = query.bind(after_position).bind(limit(max));
        let mut conn = self.reader().await?;
        let rows = query.fetch_all(&mut *conn).await.map_err(|e| self.core(e))?;
        decode_all(&rows)
    }

    async fn stream_version(&self, stream: &StreamId) -> Result<Version> {
        let mut conn = self.reader().await?;
        version_of(&mut conn, stream).await.map_err(|e| e.into_core(self.inner.timeouts))
    }

    async fn feed_head(&self, filter: &FeedFilter) -> Result<Option<eslab_core::FeedHead>> {
        self.head_of(filter).await
    }

    /// The head and the events in one read transaction (one snapshot).
    async fn read_query(&self, query: &Query) -> Result<QueryRead> {
        let mut conn = self.reader().await?;
        let mut tx = sqlx::Connection::begin(&mut *conn).await.map_err(|e| self.core(e))?;
        let head = head_position(&mut tx).await.map_err(|e| e.into_core(self.inner.timeouts))?;
        let mut b = QueryBuilder::<Sqlite>::new(select_events!("WHERE global_position <= "));
        b.push_bind(saturate(head)).push(" AND ");
        push_match(&mut b, query);
        b.push(" ORDER BY global_position");
        let rows = b.build().fetch_all(&mut *tx).await.map_err(|e| self.core(e))?;
        tx.commit().await.map_err(|e| self.core(e))?;
        Ok(QueryRead { events: decode_all(&rows)?, position: ReadPosition::at(Position::new(head)) })
    }
}

impl SqliteStore {
    /// The rows of a page of `stream` from version `from` on, read by `sql`
    /// (its parameters: the stream, the first version, the limit).
    async fn stream_rows(
        &self,
        sql: &'static str,
        stream: &StreamId,
        from: Version,
        max: usize,
    ) -> Result<Vec<SqliteRow>> {
        let mut conn = self.reader().await?;
        sqlx::query(sql)
            .bind(stream.as_str())
            .bind(saturate(from.get()))
            .bind(limit(max))
            .fetch_all(&mut *conn)
            .await
            .map_err(|e| self.core(e))
    }
}

/// Every call one bounded, indexed statement.
impl Explore for SqliteStore {
    /// A skip scan of `events_category_position` (one probe per category),
    /// each category counted up to [`COUNT_CAP`] events.
    async fn categories(&self, after: Option<&str>, max: usize) -> Result<Vec<CategorySummary>> {
        let mut conn = self.reader().await?;
        let rows = sqlx::query(
            "WITH RECURSIVE c(category) AS ( \
                 SELECT (SELECT category FROM events WHERE category > ?1 ORDER BY category LIMIT 1) \
               UNION ALL \
                 SELECT (SELECT e.category FROM events e WHERE e.category > c.category ORDER BY e.category LIMIT 1) \
                 FROM c WHERE c.category IS NOT NULL \
               LIMIT ?2 \
             ) \
             SELECT category, (SELECT count(*) FROM (SELECT 1 FROM events e WHERE e.category = c.category LIMIT ?3)) \
             FROM c WHERE category IS NOT NULL LIMIT ?4",
        )
        .bind(after.unwrap_or(""))
        .bind(limit(explore_page(max)).saturating_add(1))
        .bind(saturate(COUNT_CAP + 1))
        .bind(limit(explore_page(max)))
        .fetch_all(&mut *conn)
        .await
        .map_err(|e| self.core(e))?;
        rows.iter()
            .map(|row| {
                let category: String = row.try_get(0).map_err(|e| self.core(e))?;
                let counted: i64 = row.try_get(1).map_err(|e| self.core(e))?;
                Ok(CategorySummary::counted(category, to_u64(counted, "event count")?))
            })
            .collect()
    }

    /// A range of the `(stream_id, stream_version)` index (byte order).
    async fn streams(&self, category: &str, after: Option<&StreamId>, max: usize) -> Result<Vec<StreamSummary>> {
        let (low, high) = category_range(category, after);
        let mut conn = self.reader().await?;
        let rows = sqlx::query(
            "SELECT stream_id, max(stream_version) FROM events WHERE stream_id > ? AND stream_id < ? \
             GROUP BY stream_id ORDER BY stream_id LIMIT ?",
        )
        .bind(&low)
        .bind(&high)
        .bind(limit(explore_page(max)))
        .fetch_all(&mut *conn)
        .await
        .map_err(|e| self.core(e))?;
        rows.iter()
            .map(|row| {
                let id: &str = row.try_get(0).map_err(|e| self.core(e))?;
                let version: i64 = row.try_get(1).map_err(|e| self.core(e))?;
                Ok(StreamSummary {
                    stream_id: id.parse().map_err(Error::backend)?,
                    version: Version::new(to_u64(version, "stream version")?),
                })
            })
            .collect()
    }

    /// The `events_correlation` index.
    async fn correlated(&self, correlation_id: uuid::Uuid, after: Position, max: usize) -> Result<Vec<RecordedEvent>> {
        let mut conn = self.reader().await?;
        let rows = sqlx::query(select_events!(
            "WHERE json_extract(metadata, '$.correlation_id') = ? AND global_position > ? \
             ORDER BY global_position LIMIT ?"
        ))
        .bind(correlation_id.to_string())
        .bind(saturate(after.get()))
        .bind(limit(explore_page(max)))
        .fetch_all(&mut *conn)
        .await
        .map_err(|e| self.core(e))?;
        decode_all(&rows)
    }
}
