//! Idempotency keys over HTTP: the response stored with a key
//! ([`StoredResponse`]) and the compaction job that deletes expired keys.
//! The design is the library's ([`eslab_core::idempotency`]).

use std::time::Duration;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::AppState;

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
    /// Personal values in the body (kept as envelopes, so that they are
    /// sealed where the answer is stored) are shown as their values, or
    /// `null` once forgotten.
    pub fn into_http(self, replayed: bool) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::OK);
        let mut body = self.body;
        eslab_core::personal::reveal(&mut body);
        let mut response = (status, axum::Json(body)).into_response();
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
pub use eslab_core::idempotency::DEFAULT_RETENTION;
/// Keys deleted per store call (one short transaction each).
pub use eslab_core::idempotency::PURGE_BATCH;
/// The longest time between two compaction runs.
pub const MAX_COMPACTION_INTERVAL: Duration = Duration::from_secs(10 * 60);
/// The shortest time between two compaction runs (a tiny retention must not spin).
const MIN_COMPACTION_INTERVAL: Duration = Duration::from_millis(100);
/// Store calls per compaction run: a run deletes at most
/// `PURGE_BATCH * PURGE_BATCHES_PER_RUN` keys; a larger backlog waits for the next run.
pub const PURGE_BATCHES_PER_RUN: usize = 100;

impl AppState {
    /// How long an idempotency key answers retries.
    pub fn idempotency_retention(&self) -> Duration {
        self.bank().accounts().idempotency_retention()
    }
}

/// The time between compaction runs: a quarter of the retention, between
/// 100 ms and [`MAX_COMPACTION_INTERVAL`].
pub fn compaction_interval(retention: Duration) -> Duration {
    (retention / 4).clamp(MIN_COMPACTION_INTERVAL, MAX_COMPACTION_INTERVAL)
}

/// One compaction run: deletes the keys whose newest record is older than
/// the retention ([`eslab_core::idempotency::purge_expired_keys`]), at most
/// [`PURGE_BATCHES_PER_RUN`] store calls. Returns how many keys it deleted.
pub async fn compact(state: &AppState) -> eslab_core::Result<u64> {
    let purged = eslab_core::idempotency::purge_expired_keys(
        state.events(),
        state.idempotency_retention(),
        PURGE_BATCHES_PER_RUN,
    )
    .await?;
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
}
