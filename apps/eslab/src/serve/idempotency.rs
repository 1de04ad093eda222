//! Idempotency keys: what a stored key says about a request (answer it
//! again, refuse its reuse, or treat it as new once it expired), and the
//! compaction job that deletes expired keys. The design is in [`commands`]'s
//! module doc.
//!
//! [`commands`]: super::commands

use std::time::Duration;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use eslab_core::{EventReader, ExpectedVersion, StreamId, StreamRetention, Version};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use tokio::sync::watch;

use super::AppState;
use super::error::ApiError;

/// The stream category of idempotency keys.
pub const IDEMPOTENCY_CATEGORY: &str = "idempotency";
/// The event type of a stored idempotency key.
pub const IDEMPOTENCY_EVENT: &str = "IdempotentResponseRecorded";
/// A response a write produced: what an idempotent retry gets again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredResponse {
    /// HTTP status.
    pub status: u16,
    /// JSON body.
    pub body: serde_json::Value,
    /// `Location`, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    /// The version for the `ETag`, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
}

impl StoredResponse {
    /// An HTTP response; `replayed` adds `Idempotent-Replayed: true`.
    pub fn into_http(self, replayed: bool) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::OK);
        let mut response = (status, axum::Json(self.body)).into_response();
        let headers = response.headers_mut();
        if let Some(location) = self.location.and_then(|l| HeaderValue::from_str(&l).ok()) {
            headers.insert(header::LOCATION, location);
        }
        if let Some(version) = self.version {
            headers.insert(header::ETAG, etag(version));
        }
        if replayed {
            headers.insert("idempotent-replayed", HeaderValue::from_static("true"));
        }
        response
    }
}

/// `"<version>"` as a header value.
pub fn etag(version: u64) -> HeaderValue {
    // Digits and quotes are always a valid header value.
    HeaderValue::from_str(&format!("\"{version}\"")).unwrap_or_else(|_| HeaderValue::from_static("\"0\""))
}

/// How long a key answers retries by default: 24 hours.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(24 * 60 * 60);
/// The longest time between two compaction runs.
pub const MAX_COMPACTION_INTERVAL: Duration = Duration::from_secs(10 * 60);
/// The shortest time between two compaction runs (a tiny retention must not spin).
const MIN_COMPACTION_INTERVAL: Duration = Duration::from_millis(100);
/// Keys deleted per store call (one short transaction each).
pub const PURGE_BATCH: usize = 1_000;
/// Store calls per compaction run: a run deletes at most
/// `PURGE_BATCH * PURGE_BATCHES_PER_RUN` keys; a larger backlog waits for the next run.
pub const PURGE_BATCHES_PER_RUN: usize = 100;

/// The idempotency event's payload.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct KeyRecord {
    /// The request's fingerprint (sha256 of method, path and body).
    pub(crate) fingerprint: String,
    /// What the request was answered.
    pub(crate) response: StoredResponse,
}

/// What the stored key says about a request.
#[derive(Debug)]
pub(crate) enum KeyState {
    /// No live key: the request is new. Its record is appended with this
    /// expectation on the key's stream (`NoStream`, or the version of the
    /// expired record it replaces).
    New(ExpectedVersion),
    /// The key answered this very request: the answer, to replay.
    Replay(StoredResponse),
}

impl AppState {
    /// How long an idempotency key answers retries.
    pub fn idempotency_retention(&self) -> Duration {
        self.inner.idempotency_retention
    }
}

/// Records recorded before this instant are expired (`None`: nothing expires,
/// the retention reaching before the calendar's start).
fn expiry_cutoff(now: OffsetDateTime, retention: Duration) -> Option<OffsetDateTime> {
    now.checked_sub(time::Duration::try_from(retention).ok()?)
}

/// Looks the key up: its newest record, unless expired, replays (same
/// fingerprint) or refuses (another request used the key: 422
/// `idempotency-key-reused`).
pub(crate) async fn lookup(state: &AppState, key: &(StreamId, String)) -> Result<KeyState, ApiError> {
    let (stream, fingerprint) = key;
    // A key stream holds one record, or a few if the key came back after expiring.
    let records = state.events().read_stream(stream, Version::FIRST, usize::MAX).await?;
    let Some(newest) = records.last() else { return Ok(KeyState::New(ExpectedVersion::NoStream)) };
    let cutoff = expiry_cutoff(OffsetDateTime::now_utc(), state.idempotency_retention());
    if cutoff.is_some_and(|cutoff| newest.recorded_at < cutoff) {
        return Ok(KeyState::New(ExpectedVersion::Exact(newest.stream_version)));
    }
    let record: KeyRecord =
        serde_json::from_value(newest.payload.clone()).map_err(|e| ApiError::Internal(Box::new(e)))?;
    if record.fingerprint == *fingerprint {
        Ok(KeyState::Replay(record.response))
    } else {
        Err(ApiError::rule(
            "idempotency-key-reused",
            "this Idempotency-Key was used for a different request (method, path or body)",
        ))
    }
}

/// The time between compaction runs: a quarter of the retention, between
/// 100 ms and [`MAX_COMPACTION_INTERVAL`].
pub fn compaction_interval(retention: Duration) -> Duration {
    (retention / 4).clamp(MIN_COMPACTION_INTERVAL, MAX_COMPACTION_INTERVAL)
}

/// One compaction run: deletes the keys whose newest record is older than
/// the retention, [`PURGE_BATCH`] per store call, at most
/// [`PURGE_BATCHES_PER_RUN`] calls. Returns how many keys it deleted.
pub async fn compact(state: &AppState) -> eslab_core::Result<u64> {
    let Some(cutoff) = expiry_cutoff(OffsetDateTime::now_utc(), state.idempotency_retention()) else {
        return Ok(0);
    };
    let batch = u64::try_from(PURGE_BATCH).unwrap_or(u64::MAX);
    let mut purged = 0;
    for _ in 0..PURGE_BATCHES_PER_RUN {
        let n = state.events().purge_category_before(IDEMPOTENCY_CATEGORY, cutoff, PURGE_BATCH).await?;
        purged += n;
        if n < batch {
            break;
        }
    }
    metrics::counter!("eslab_idempotency_keys_purged_total").increment(purged);
    Ok(purged)
}

/// Starts the compaction job: a run at once, then one every
/// [`compaction_interval`] of the retention, until `stop` turns `true` (or
/// its sender is dropped). A failed run is logged and retried at the next tick.
pub fn spawn_compaction(state: AppState, mut stop: watch::Receiver<bool>) {
    let period = compaction_interval(state.idempotency_retention());
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(period);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.wait_for(|stop| *stop) => return,
                _ = ticks.tick() => {}
            }
            match compact(&state).await {
                Ok(0) => {}
                Ok(purged) => tracing::debug!(purged, "expired idempotency keys deleted"),
                Err(error) => tracing::warn!(%error, "idempotency key compaction failed; retrying at the next run"),
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_interval_is_a_quarter_of_the_retention_within_bounds() {
        assert_eq!(compaction_interval(DEFAULT_RETENTION), MAX_COMPACTION_INTERVAL);
        assert_eq!(compaction_interval(Duration::from_secs(8)), Duration::from_secs(2));
        assert_eq!(compaction_interval(Duration::ZERO), MIN_COMPACTION_INTERVAL);
    }

    #[test]
    fn a_retention_beyond_the_calendar_expires_nothing() {
        let now = OffsetDateTime::now_utc();
        assert_eq!(expiry_cutoff(now, Duration::from_secs(60)), Some(now - time::Duration::seconds(60)));
        assert_eq!(expiry_cutoff(now, Duration::MAX), None);
    }
}
