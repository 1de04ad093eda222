//! [`StreamRetention`]: deleting old streams of a bookkeeping category in one
//! statement.
//!
//! The statement picks the category's streams whose newest event is older
//! than the cutoff (oldest first), locks their `streams` rows in `stream_id`
//! order (as appends do, so the two cannot deadlock on them) and keeps only
//! those still at the version it saw: under READ COMMITTED the lock waits for
//! an append in flight and returns the row it left, so a stream that was just
//! appended to is kept, and an append that comes after finds no row (an
//! `Exact` expectation then conflicts; `NoStream` starts the stream again).
//! It then locks their events in position order and deletes them, their
//! `streams` rows and their snapshots, and counts the streams whose events it
//! deleted (a concurrent purge that got there first deleted them: its lock
//! waits, then skips the deleted rows, so each stream is counted once). Nothing is
//! inserted, so the gap-safe feed is unaffected: identity positions are never
//! reused, and the remaining events keep their `(transaction, position)`.
//!
//! With [`AppendStrategy::UniqueIndex`](crate::AppendStrategy::UniqueIndex)
//! there is no `streams` row to lock: an append to a stream in the instant it
//! is purged may survive without the purged events before it. Purge only
//! streams that are no longer appended to (what the retention of bookkeeping
//! records is for).

use eslab_core::{FeedFilter, Result, StreamRetention};
use time::OffsetDateTime;

use crate::PostgresStore;
use crate::error::db;
use crate::rows::{limit as sql_limit, to_u64};

/// `$1` category, `$2` cutoff, `$3` most streams; returns the streams deleted.
const PURGE_SQL: &str = r#"
WITH candidates AS (
    SELECT stream_id, max(stream_version) AS version
    FROM events
    WHERE category = $1
    GROUP BY stream_id
    HAVING max(recorded_at) < $2
    ORDER BY min(global_position)
    LIMIT $3
),
locked AS (
    SELECT s.stream_id, s.version FROM streams s
    WHERE s.stream_id IN (SELECT stream_id FROM candidates)
    ORDER BY s.stream_id
    FOR UPDATE
),
purged AS (
    SELECT c.stream_id FROM candidates c
    LEFT JOIN locked l ON l.stream_id = c.stream_id
    WHERE l.version = c.version
       OR (l.stream_id IS NULL AND NOT EXISTS (SELECT 1 FROM streams s WHERE s.stream_id = c.stream_id))
),
doomed AS (
    SELECT e.global_position FROM events e
    WHERE e.stream_id IN (SELECT stream_id FROM purged)
    ORDER BY e.global_position
    FOR UPDATE
),
gone_events AS (
    DELETE FROM events e USING doomed d WHERE e.global_position = d.global_position
    RETURNING e.stream_id
),
gone AS (SELECT DISTINCT stream_id FROM gone_events),
gone_streams AS (DELETE FROM streams s USING purged p WHERE s.stream_id = p.stream_id),
gone_snapshots AS (DELETE FROM snapshots s USING gone g WHERE s.stream_id = g.stream_id)
SELECT count(*) FROM gone
"#;

impl StreamRetention for PostgresStore {
    async fn purge_category_before(
        &self,
        category: &str,
        recorded_before: OffsetDateTime,
        limit: usize,
    ) -> Result<u64> {
        FeedFilter::category(category)?;
        let purged: i64 = sqlx::query_scalar(PURGE_SQL)
            .bind(category)
            .bind(recorded_before)
            .bind(sql_limit(limit))
            .fetch_one(self.pool())
            .await
            .map_err(db)?;
        to_u64(purged, "purged stream count")
    }
}
