//! [`StreamRetention`]: deleting old streams of a bookkeeping category, in one
//! `BEGIN IMMEDIATE` transaction on the writer (so appends, here or in another
//! process, are never interleaved with it).
//!
//! The next position is the highest stored one plus one, so deleting the
//! store's newest event would hand its position out again, and a feed reader
//! past it would skip the new event: a stream holding that event is kept
//! until something else has been appended.

use eslab_core::{FeedFilter, Result, StreamRetention};
use sqlx::{QueryBuilder, Sqlite};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::SqliteStore;

/// Stream ids per `IN (..)` list, far below SQLite's bound-variable limit.
const IDS_PER_DELETE: usize = 500;

impl StreamRetention for SqliteStore {
    /// `recorded_at` is compared with `julianday`, to the millisecond.
    async fn purge_category_before(
        &self,
        category: &str,
        recorded_before: OffsetDateTime,
        limit: usize,
    ) -> Result<u64> {
        FeedFilter::category(category)?;
        let before = recorded_before.format(&Rfc3339).map_err(eslab_core::Error::backend)?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let mut tx = self.inner.writer.begin_with("BEGIN IMMEDIATE").await.map_err(|e| self.core(e))?;
        let victims: Vec<String> = sqlx::query_scalar(
            "SELECT stream_id FROM events WHERE category = ? GROUP BY stream_id \
             HAVING MAX(julianday(recorded_at)) < julianday(?) \
                AND MAX(global_position) < (SELECT MAX(global_position) FROM events) \
             ORDER BY MIN(global_position) LIMIT ?",
        )
        .bind(category)
        .bind(&before)
        .bind(limit)
        .fetch_all(&mut *tx)
        .await
        .map_err(|e| self.core(e))?;
        for chunk in victims.chunks(IDS_PER_DELETE) {
            for delete in ["DELETE FROM events WHERE stream_id IN ", "DELETE FROM snapshots WHERE stream_id IN "] {
                let mut query = QueryBuilder::<Sqlite>::new(delete);
                query.push_tuples(chunk, |mut b, id| {
                    b.push_bind(id.as_str());
                });
                query.build().execute(&mut *tx).await.map_err(|e| self.core(e))?;
            }
        }
        tx.commit().await.map_err(|e| self.core(e))?;
        Ok(victims.len() as u64)
    }
}
