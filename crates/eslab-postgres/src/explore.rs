//! Browsing the store ([`Explore`]): every call one bounded, indexed statement.

use eslab_core::{
    COUNT_CAP, CategorySummary, Explore, Position, RecordedEvent, Result, StreamId, StreamSummary, Version,
    category_range, explore_page,
};
use sqlx::Row;
use uuid::Uuid;

use crate::PostgresStore;
use crate::error::db;
use crate::rows::{event_columns, limit, recorded, to_i64, to_u64};

/// The categories after `$1`: a skip scan of the category index (one probe
/// per category, not a walk over its events), each counted up to `$3` events.
const CATEGORIES_SQL: &str = "WITH RECURSIVE c(category) AS ( \
        (SELECT category FROM events WHERE category > $1 ORDER BY category LIMIT 1) \
      UNION ALL \
        SELECT (SELECT e.category FROM events e WHERE e.category > c.category ORDER BY e.category LIMIT 1) \
        FROM c WHERE c.category IS NOT NULL \
    ) \
    SELECT category, (SELECT count(*) FROM (SELECT 1 FROM events e WHERE e.category = c.category LIMIT $3) n) \
    FROM c WHERE category IS NOT NULL LIMIT $2";

/// The streams with ids in `($1, $2)`, in byte order (`streams_id_bytes_idx`).
const STREAMS_SQL: &str = "SELECT stream_id, version FROM streams \
    WHERE stream_id COLLATE \"C\" > $1 AND stream_id COLLATE \"C\" < $2 \
    ORDER BY stream_id COLLATE \"C\" LIMIT $3";

/// The events of one correlation id after a position (`events_correlation_idx`).
const CORRELATED_SQL: &str = concat!(
    "SELECT ",
    event_columns!(),
    " FROM events WHERE metadata ? 'correlation_id' AND metadata ->> 'correlation_id' = $1 \
     AND global_position > $2 ORDER BY global_position LIMIT $3"
);

impl Explore for PostgresStore {
    /// In the order of the database's collation (byte order under `C` and `C.UTF-8`).
    async fn categories(&self, after: Option<&str>, n: usize) -> Result<Vec<CategorySummary>> {
        let rows = sqlx::query(CATEGORIES_SQL)
            .bind(after.unwrap_or(""))
            .bind(limit(explore_page(n)))
            .bind(to_i64(COUNT_CAP + 1, "count cap")?)
            .fetch_all(self.pool())
            .await
            .map_err(db)?;
        rows.iter()
            .map(|row| {
                let category: String = row.try_get(0).map_err(db)?;
                let counted: i64 = row.try_get(1).map_err(db)?;
                Ok(CategorySummary::counted(category, to_u64(counted, "event count")?))
            })
            .collect()
    }

    async fn streams(&self, category: &str, after: Option<&StreamId>, n: usize) -> Result<Vec<StreamSummary>> {
        let (low, high) = category_range(category, after);
        let rows = sqlx::query(STREAMS_SQL)
            .bind(&low)
            .bind(&high)
            .bind(limit(explore_page(n)))
            .fetch_all(self.pool())
            .await
            .map_err(db)?;
        rows.iter()
            .map(|row| {
                let id: &str = row.try_get(0).map_err(db)?;
                let version: i64 = row.try_get(1).map_err(db)?;
                Ok(StreamSummary {
                    stream_id: id.parse().map_err(eslab_core::Error::backend)?,
                    version: Version::new(to_u64(version, "stream version")?),
                })
            })
            .collect()
    }

    async fn correlated(&self, correlation_id: Uuid, after: Position, n: usize) -> Result<Vec<RecordedEvent>> {
        let rows = sqlx::query(CORRELATED_SQL)
            .bind(correlation_id.to_string())
            .bind(i64::try_from(after.get()).unwrap_or(i64::MAX))
            .bind(limit(explore_page(n)))
            .fetch_all(self.pool())
            .await
            .map_err(db)?;
        rows.iter().map(|row| recorded(row, 0, None)).collect()
    }
}
