//! The head of the feed (its newest committed event) in one backward index
//! scan of the feed order `(transaction_id, global_position)`.

use eslab_core::{Checkpoint, FeedFilter, FeedHead, Position, Result};
use sqlx::PgPool;
use time::OffsetDateTime;

use crate::error::db;
use crate::rows::{parse_xid, to_u64};

// The ORDER BY names `events.transaction_id`: the bare name would be the
// `transaction_id::text` output column, sorting xids as strings ("999" after
// "1000") with a sequential scan and a sort on every call instead of one step
// down the feed index.
const HEAD_ALL_SQL: &str = "SELECT transaction_id::text, global_position, recorded_at FROM events \
     ORDER BY events.transaction_id DESC, events.global_position DESC LIMIT 1";
const HEAD_CATEGORY_SQL: &str = "SELECT transaction_id::text, global_position, recorded_at FROM events \
     WHERE category = $1 ORDER BY events.transaction_id DESC, events.global_position DESC LIMIT 1";

/// The newest committed event's checkpoint and recording time.
pub(crate) async fn feed_head(pool: &PgPool, filter: &FeedFilter) -> Result<Option<FeedHead>> {
    let query = match filter {
        FeedFilter::All => sqlx::query_as::<_, (String, i64, OffsetDateTime)>(HEAD_ALL_SQL),
        FeedFilter::Category(c) => sqlx::query_as(HEAD_CATEGORY_SQL).bind(c.as_str()),
    };
    let Some((transaction, position, recorded_at)) = query.fetch_optional(pool).await.map_err(db)? else {
        return Ok(None);
    };
    let position = Position::new(to_u64(position, "global position")?);
    Ok(Some(FeedHead { checkpoint: Checkpoint::new(parse_xid(&transaction)?, position), recorded_at }))
}
