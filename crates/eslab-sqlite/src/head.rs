//! The head of the feed (its newest event) in one indexed read: the rowid's
//! maximum, or the last entry of the category index.

use eslab_core::{Checkpoint, Error, FeedFilter, FeedHead, Position, Result};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::SqliteStore;
use crate::error::to_u64;

impl SqliteStore {
    pub(crate) async fn head_of(&self, filter: &FeedFilter) -> Result<Option<FeedHead>> {
        let query = match filter {
            FeedFilter::All => sqlx::query_as::<_, (i64, String)>(
                "SELECT global_position, recorded_at FROM events ORDER BY global_position DESC LIMIT 1",
            ),
            FeedFilter::Category(category) => sqlx::query_as::<_, (i64, String)>(
                "SELECT global_position, recorded_at FROM events WHERE category = ? \
                 ORDER BY global_position DESC LIMIT 1",
            )
            .bind(category.as_str()),
        };
        let mut conn = self.reader().await?;
        let Some((position, recorded_at)) = query.fetch_optional(&mut *conn).await.map_err(|e| self.core(e))? else {
            return Ok(None);
        };
        let recorded_at = OffsetDateTime::parse(&recorded_at, &Rfc3339).map_err(Error::backend)?;
        let position = Position::new(to_u64(position, "global position")?);
        Ok(Some(FeedHead { checkpoint: Checkpoint::new(0, position), recorded_at }))
    }
}
