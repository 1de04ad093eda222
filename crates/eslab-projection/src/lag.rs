//! How far a projection is behind the feed: events and seconds, computed
//! from the feed's head ([`EventReader::feed_head`]) and the oldest event not
//! yet applied, and reported as `metrics` gauges labelled by projection.

use eslab_core::{Checkpoint, EventReader, FeedFilter};
use time::OffsetDateTime;

use crate::Result;

/// Gauge: events between a projection's checkpoint and the feed's head.
pub const EVENTS_BEHIND: &str = "eslab_projection_events_behind";
/// Gauge: age in seconds of the oldest event a projection has not applied yet.
pub const SECONDS_BEHIND: &str = "eslab_projection_seconds_behind";

/// A projection's lag.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Lag {
    /// Global positions between the checkpoint and the head of the
    /// projection's feed. Exact for the whole feed on memory and SQLite; on
    /// PostgreSQL, positions of rolled-back appends count too, and for a
    /// per-category feed so do other categories' events in between (both
    /// vanish once the projection has caught up).
    pub events: u64,
    /// How long ago the oldest event not yet applied was recorded (0 when caught up).
    pub seconds: f64,
}

impl Lag {
    /// Caught up.
    pub const NONE: Lag = Lag { events: 0, seconds: 0.0 };
}

/// The lag of a reader of `filter` standing at `at`: one read of the head and,
/// when behind, one of the next event.
pub async fn lag<S: EventReader>(store: &S, filter: &FeedFilter, at: Checkpoint) -> Result<Lag> {
    let Some(head) = store.feed_head(filter).await? else { return Ok(Lag::NONE) };
    if head.checkpoint <= at {
        return Ok(Lag::NONE);
    }
    let events = head.checkpoint.position.get().saturating_sub(at.position.get()).max(1);
    let next = store.read_feed(filter, at, 1).await?;
    let oldest = next.first().map_or(head.recorded_at, |e| e.recorded_at);
    let seconds = (OffsetDateTime::now_utc() - oldest).as_seconds_f64().max(0.0);
    Ok(Lag { events, seconds })
}

/// Sets the projection's two lag gauges ([`EVENTS_BEHIND`], [`SECONDS_BEHIND`],
/// label `projection`) on the installed `metrics` recorder.
pub fn record_lag(projection: &str, lag: &Lag) {
    #[allow(clippy::cast_precision_loss)] // a gauge is an f64; 2^53 events behind is not a concern
    let events = lag.events as f64;
    metrics::gauge!(EVENTS_BEHIND, "projection" => projection.to_owned()).set(events);
    metrics::gauge!(SECONDS_BEHIND, "projection" => projection.to_owned()).set(lag.seconds);
}
