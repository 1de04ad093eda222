//! Dynamic consistency boundaries: [`read_query`](eslab_core::EventReader::read_query)
//! and [`append_if`](eslab_core::EventAppender::append_if) at READ COMMITTED.
//!
//! ## What a read returns
//!
//! One statement reads the matching events and its own snapshot
//! (`pg_current_snapshot()`): the position is the snapshot's `xmax` and its
//! in-flight transaction ids ([`Unseen`]). An event the read did not see is
//! exactly one whose transaction the snapshot hides: at or above `xmax`, or
//! in flight. A sequence-number position (the newest `global_position` seen)
//! would not do: identity values are handed out at insert time, so an event
//! with a lower position can commit after the read, and a check for
//! "anything matching after position P" misses it.
//!
//! ## How an append checks its condition
//!
//! One transaction:
//! 1. **Locks.** Transaction-scoped advisory locks, taken in one statement in
//!    the order of their 64-bit keys (so two appends never wait for each other
//!    in a cycle): exclusive on the condition's keys (per query item its tags,
//!    or its types when it names no tag), shared on the keys of the events it
//!    writes (their tags and type) that are not among those. Two conditional
//!    appends that could invalidate each other share a key: one whose query
//!    matches an event of the other holds that event's tag or type key
//!    exclusively. Appends on disjoint boundaries take disjoint keys.
//! 2. **The check**, a new statement and so, at READ COMMITTED, a new
//!    snapshot taken after every lock above was granted: every conditional
//!    append on an overlapping boundary has committed (it is visible) or
//!    waits for this one. It looks for a matching event, not this
//!    transaction's own, that the read's snapshot hid. Found: the transaction
//!    rolls back and the append fails with [`Error::ConditionFailed`], before
//!    anything is written (so the losers of a race insert nothing). Checking
//!    in the append's own statement would not do: a statement's snapshot is
//!    taken before the locks it waits for, so it would miss the commit it
//!    waited for.
//! 3. **The append**, the store's own multi-stream statement (row locks on the
//!    streams' version rows, expectations, inserts).
//! 4. **The check again**: the append may have waited for a writer of one of
//!    its streams, whose events the first check could not see.
//! 5. Commit.
//!
//! Plain appends (no condition) take no advisory lock, so the hot path is
//! unchanged. One that writes a stream a conditional append also writes is
//! ordered by the stream's row lock. One that writes only other streams and
//! commits while a conditional append is between its check and its commit is
//! serialized after that append (it did not read the boundary), though its
//! transaction id may sort first in the feed.

use eslab_core::boundary::event_lock_keys;
use eslab_core::{
    AppendCondition, AppendResult, Error, InvalidQuery, Position, Query, QueryRead, ReadPosition, Result, StreamAppend,
    Unseen,
};
use sqlx::postgres::PgRow;
use sqlx::types::Json;
use sqlx::{Connection, PgConnection, Postgres, QueryBuilder, Row};

use crate::append::{Batch, Failure, classify};
use crate::error::db;
use crate::rows::{event_columns, parse_xid, recorded, to_u64};
use crate::{Notify, PostgresStore, RACE_RETRIES};

/// Takes the advisory locks of `$1` keys (`$2`: exclusive or shared), in key order.
const LOCK_SQL: &str = r#"
SELECT CASE WHEN k.exclusive THEN pg_advisory_xact_lock(k.h) ELSE pg_advisory_xact_lock_shared(k.h) END
FROM (SELECT hashtextextended(current_schema() || ':' || u.key, 0) AS h, bool_or(u.exclusive) AS exclusive
      FROM unnest($1::text[], $2::bool[]) AS u(key, exclusive) GROUP BY 1) k
ORDER BY k.h
"#;

/// Pushes `(<item> OR <item> ...)`, matching `query`'s events: an item's
/// types as `event_type = ANY(..)`, its tags by containment in
/// `metadata -> 'tags'` (the partial GIN index `events_tags_idx`). The text
/// depends only on the query's shape (items, and which of types and tags
/// each names), so the statements are prepared once per shape and
/// connection (sqlx's bounded statement cache): planning them on every
/// read cost about as much as running them.
fn push_match(b: &mut QueryBuilder<'_, Postgres>, query: &Query) {
    b.push("(");
    for (i, item) in query.items().iter().enumerate() {
        if i > 0 {
            b.push(" OR ");
        }
        b.push("(true");
        if !item.types.is_empty() {
            b.push(" AND event_type = ANY(").push_bind(item.types.clone()).push("::text[])");
        }
        if !item.tags.is_empty() {
            b.push(" AND metadata ? 'tags' AND metadata -> 'tags' @> ")
                .push_bind(Json(item.tags.clone()))
                .push("::jsonb");
        }
        b.push(")");
    }
    b.push(")");
}

/// The matching events and the snapshot of the statement that read them.
pub(crate) async fn read_query(conn: &mut PgConnection, query: &Query) -> Result<QueryRead> {
    let mut b = QueryBuilder::<Postgres>::new(concat!(
        "SELECT pg_snapshot_xmax(s.snap)::text AS xmax, ",
        "ARRAY(SELECT x::text FROM pg_snapshot_xip(s.snap) AS x) AS xip, ",
        "(SELECT max(global_position) FROM events) AS head, e.* ",
        "FROM (SELECT pg_current_snapshot() AS snap) s LEFT JOIN LATERAL (SELECT ",
        event_columns!(),
        " FROM events WHERE "
    ));
    push_match(&mut b, query);
    b.push(") e ON true");
    let rows = b.build().fetch_all(&mut *conn).await.map_err(db)?;
    let first = rows.first().ok_or_else(|| Error::backend("the query read returned no row"))?;
    let xmax: String = first.try_get(0).map_err(db)?;
    let xip: Vec<String> = first.try_get(1).map_err(db)?;
    let head: Option<i64> = first.try_get(2).map_err(db)?;
    let mut events = Vec::with_capacity(rows.len());
    for row in &rows {
        if row.try_get::<Option<i64>, _>(3).map_err(db)?.is_some() {
            events.push(recorded(row, 3, None)?);
        }
    }
    events.sort_unstable_by_key(|e| (e.transaction, e.position));
    let unseen =
        Unseen { from: parse_xid(&xmax)?, in_flight: xip.iter().map(|x| parse_xid(x)).collect::<Result<_>>()? };
    let position =
        ReadPosition { position: Position::new(to_u64(head.unwrap_or(0), "global position")?), unseen: Some(unseen) };
    Ok(QueryRead { events, position })
}

/// The lock keys of a conditional append: exclusive for the condition,
/// shared for the events written.
fn lock_keys(appends: &[StreamAppend], condition: &AppendCondition) -> (Vec<String>, Vec<bool>) {
    let mut keys = condition.query.lock_keys();
    let mut exclusive = vec![true; keys.len()];
    for event in appends.iter().flat_map(|a| &a.events) {
        for key in event_lock_keys(&event.event_type, &event.metadata.tags) {
            keys.push(key);
            exclusive.push(false);
        }
    }
    (keys, exclusive)
}

/// The third statement: is the store ahead of the condition's position, and
/// the first matching event the read did not see (not this transaction's).
async fn check(conn: &mut PgConnection, condition: &AppendCondition) -> Result<Option<Error>> {
    let mut b = QueryBuilder::<Postgres>::new(
        "SELECT pg_snapshot_xmax(pg_current_snapshot())::text AS xmax, \
         (SELECT max(global_position) FROM events) AS head, c.event_id, c.event_type, c.global_position \
         FROM (SELECT 1) one LEFT JOIN LATERAL (SELECT event_id, event_type, global_position FROM events \
         WHERE transaction_id <> pg_current_xact_id() AND ",
    );
    if let Some(after) = &condition.after {
        let unseen = after.unseen.as_ref().ok_or_else(|| {
            Error::from(InvalidQuery::PositionAhead {
                position: format!("{after:?}"),
                head: "a PostgreSQL snapshot (this position comes from another store)".into(),
            })
        })?;
        let texts: Vec<String> = unseen.in_flight.iter().map(u64::to_string).collect();
        let lowest = unseen.in_flight.iter().copied().chain([unseen.from]).min().unwrap_or(unseen.from);
        b.push("transaction_id >= ")
            .push_bind(lowest.to_string())
            .push("::text::xid8 AND (transaction_id >= ")
            .push_bind(unseen.from.to_string())
            .push("::text::xid8 OR transaction_id = ANY(")
            .push_bind(texts)
            .push("::text[]::xid8[])) AND ");
    }
    push_match(&mut b, &condition.query);
    b.push(" ORDER BY transaction_id, global_position LIMIT 1) c ON true");
    let row: PgRow = b.build().fetch_one(&mut *conn).await.map_err(db)?;
    let xmax = parse_xid(row.try_get::<&str, _>(0).map_err(db)?)?;
    let head = to_u64(row.try_get::<Option<i64>, _>(1).map_err(db)?.unwrap_or(0), "global position")?;
    // Only the snapshot decides (the position is informative, and retention
    // may delete the newest events, so the highest position can go down).
    if let Some(after) = &condition.after
        && let Some(unseen) = &after.unseen
        && unseen.from > xmax
    {
        return Ok(Some(
            InvalidQuery::PositionAhead {
                position: format!("{after:?}"),
                head: format!("xmax {xmax}, position {head}"),
            }
            .into(),
        ));
    }
    let Some(event_id) = row.try_get::<Option<uuid::Uuid>, _>(2).map_err(db)? else { return Ok(None) };
    let event_type: String = row.try_get(3).map_err(db)?;
    let position: i64 = row.try_get(4).map_err(db)?;
    Ok(Some(Error::ConditionFailed {
        event_id,
        event_type,
        position: Position::new(to_u64(position, "global position")?),
    }))
}

impl PostgresStore {
    /// A conditional append: locks, append, check, in one transaction (see the module docs).
    pub(crate) async fn append_if_all(
        &self,
        appends: Vec<StreamAppend>,
        condition: AppendCondition,
    ) -> Result<Vec<AppendResult>> {
        eslab_core::check_storable(&appends)?;
        let (keys, exclusive) = lock_keys(&appends, &condition);
        let batch = Batch::new(appends)?;
        let notify = self.options.notify == Notify::InTransaction;
        let mut attempt = 0_u32;
        loop {
            let mut conn = self.pool.acquire().await.map_err(db)?;
            let mut tx = conn.begin().await.map_err(db)?;
            sqlx::query(LOCK_SQL).bind(&keys).bind(&exclusive).execute(&mut *tx).await.map_err(db)?;
            // Fail fast, before writing anything: the losers of a race, who
            // waited for the winner's locks, see its events here.
            if let Some(refusal) = check(&mut tx, &condition).await? {
                return Err(refusal);
            }
            let failure = match batch.execute(&mut tx, self.options.strategy, notify).await {
                Ok(rows) => {
                    // A refused expectation writes nothing and reports it.
                    let results = batch.results(&rows)?;
                    // Again, after the append: it may have waited for a
                    // writer of one of its streams, whose events the first
                    // check could not see.
                    if let Some(refusal) = check(&mut tx, &condition).await? {
                        return Err(refusal);
                    }
                    tx.commit().await.map_err(db)?;
                    self.notify_committed(&results);
                    return Ok(results);
                }
                Err(e) => {
                    drop(tx);
                    drop(conn);
                    classify(&self.pool, &batch, e).await
                }
            };
            match failure {
                Failure::Fail(e) => return Err(e),
                Failure::Retry | Failure::Transient(_) if attempt < RACE_RETRIES => attempt += 1,
                Failure::Transient(e) => return Err(db(e)),
                Failure::Retry => return Err(Error::backend("append kept losing version races")),
            }
        }
    }
}
