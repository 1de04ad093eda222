//! Reads: one stream by version, and the gap-safe global (or per-category) feed.

use std::time::Duration;

use eslab_core::{Checkpoint, FeedFilter, LeanEvent, RecordedEvent, Result, StreamId, Version};
use sqlx::postgres::PgRow;
use sqlx::{PgPool, Row};

use crate::error::db;
use crate::rows::{event_columns, lean, lean_columns, limit, parse_xid, recorded, to_i64};

/// One feed page. `horizon` is the oldest transaction still in flight
/// (`pg_snapshot_xmin`): every transaction below it has committed or rolled
/// back, so rows below it can be handed out without a later commit ever
/// landing before them. `top` is the newest committed transaction with events
/// (of the category), used only to decide whether waiting would help.
macro_rules! feed_sql {
    ($category:literal) => {
        concat!(
            "WITH h AS (SELECT pg_snapshot_xmin(pg_current_snapshot()) AS horizon, \
                (SELECT transaction_id FROM events WHERE true ",
            $category,
            " ORDER BY transaction_id DESC LIMIT 1) AS top) \
             SELECT h.horizon::text AS horizon, h.top::text AS top, e.* FROM h LEFT JOIN LATERAL ( \
                SELECT transaction_id AS tx_order, global_position, transaction_id::text AS transaction_id, \
                       stream_id, stream_version, event_id, event_type, schema_version, payload, metadata, recorded_at \
                FROM events \
                WHERE (transaction_id, global_position) > ($1::text::xid8, $2::bigint) \
                  AND transaction_id < h.horizon ",
            $category,
            // Qualified: the bare name would be the text alias above, and
            // sort xids as strings.
            " ORDER BY events.transaction_id, events.global_position LIMIT $3) e ON true \
             ORDER BY e.tx_order, e.global_position"
        )
    };
}

/// Where [`event_columns!`]' order starts in a feed row (after horizon, top, tx_order).
const FEED_EVENT_COLUMNS: usize = 3;
const FEED_ALL_SQL: &str = feed_sql!("");
const FEED_CATEGORY_SQL: &str = feed_sql!("AND category = $4");

/// The rows of one page of a stream: `columns` of its events from version `from` on.
macro_rules! stream_page_sql {
    ($columns:expr) => {
        concat!(
            "SELECT ",
            $columns,
            " FROM events WHERE stream_id = $1 AND stream_version >= $2 ORDER BY stream_version LIMIT $3"
        )
    };
}

/// Runs a [`stream_page_sql!`] statement.
async fn stream_rows(
    pool: &PgPool,
    sql: &'static str,
    stream: &StreamId,
    from: Version,
    n: usize,
) -> Result<Vec<PgRow>> {
    sqlx::query(sql)
        .bind(stream.as_str())
        // Beyond BIGINT nothing is stored: read from i64::MAX (nothing), as the other stores answer.
        .bind(i64::try_from(from.get()).unwrap_or(i64::MAX))
        .bind(limit(n))
        .fetch_all(pool)
        .await
        .map_err(db)
}

/// One page of a stream.
pub(crate) async fn read_stream(
    pool: &PgPool,
    stream: &StreamId,
    from: Version,
    n: usize,
) -> Result<Vec<RecordedEvent>> {
    let rows = stream_rows(pool, stream_page_sql!(event_columns!()), stream, from, n).await?;
    rows.iter().map(|row| recorded(row, 0, Some(stream))).collect()
}

/// A page of one stream for replay (see [`lean_columns!`]).
pub(crate) async fn read_stream_lean(
    pool: &PgPool,
    stream: &StreamId,
    from: Version,
    n: usize,
) -> Result<Vec<LeanEvent>> {
    let rows = stream_rows(pool, stream_page_sql!(lean_columns!()), stream, from, n).await?;
    rows.iter().map(lean).collect()
}

/// One page of the feed after `after`, waiting up to `settle` for in-flight
/// transactions older than already committed events (see the crate docs).
pub(crate) async fn read_feed(
    pool: &PgPool,
    filter: &FeedFilter,
    after: Checkpoint,
    n: usize,
    settle: Duration,
) -> Result<Vec<RecordedEvent>> {
    let deadline = tokio::time::Instant::now() + settle;
    let mut target: Option<Option<u64>> = None;
    let mut pause = Duration::from_micros(500);
    loop {
        let (page, horizon, top) = feed_page(pool, filter, after, n).await?;
        // What must become visible before a short page is final: whatever was
        // committed when this call began.
        let target = *target.get_or_insert(top);
        let settled = match target {
            None => true,
            Some(t) => t < horizon || t <= after.transaction,
        };
        if page.len() >= n || settled || tokio::time::Instant::now() + pause > deadline {
            return Ok(page);
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(20));
    }
}

/// One feed query: the page, the horizon, the newest committed transaction.
pub(crate) async fn feed_page(
    pool: &PgPool,
    filter: &FeedFilter,
    after: Checkpoint,
    n: usize,
) -> Result<(Vec<RecordedEvent>, u64, Option<u64>)> {
    let query = sqlx::query(match filter {
        FeedFilter::All => FEED_ALL_SQL,
        FeedFilter::Category(_) => FEED_CATEGORY_SQL,
    })
    .bind(after.transaction.to_string())
    .bind(to_i64(after.position.get(), "position")?)
    .bind(limit(n));
    let query = match filter {
        FeedFilter::All => query,
        FeedFilter::Category(c) => query.bind(c.as_str()),
    };
    let rows = query.fetch_all(pool).await.map_err(db)?;
    let mut horizon = 0;
    let mut top = None;
    let mut page = Vec::with_capacity(rows.len());
    for row in &rows {
        let h: String = row.try_get("horizon").map_err(db)?;
        horizon = parse_xid(&h)?;
        let t: Option<String> = row.try_get("top").map_err(db)?;
        top = t.as_deref().map(parse_xid).transpose()?;
        let position: Option<i64> = row.try_get("global_position").map_err(db)?;
        if position.is_some() {
            page.push(recorded(row, FEED_EVENT_COLUMNS, None)?);
        }
    }
    Ok((page, horizon, top))
}
