//! `/ready`: whether the service can do its work, for load balancers and
//! orchestrators.
//!
//! It computes: a one-row query to the store (a stream's version), then for
//! each in-process projection its checkpoint and how many events of its feed
//! follow it (counted up to [`LAG_CAP`]); each step gets [`READY_TIMEOUT`].
//! 503 when the store or a checkpoint cannot be read.
//!
//! That costs a few queries, so the answer is cached for [`READY_CACHE_TTL`]
//! and computed by one request at a time: concurrent probes wait for the one
//! in progress and share its answer. However often `/ready` is called, the
//! store sees at most one readiness check a second. Like every endpoint but
//! `/health`, it is subject to the per-client rate limit when one is set.

use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use eslab_core::EventReader;

use super::AppState;
use super::dto::{ProjectionLag, Readiness};

/// `/ready` counts at most this many events behind a projection.
pub const LAG_CAP: usize = 1_000;
/// `/ready` gives the store this long to answer each of its queries.
pub const READY_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a computed answer is served again.
pub const READY_CACHE_TTL: Duration = Duration::from_secs(1);

/// The last answer, and the lock that makes one request compute at a time.
#[derive(Debug, Default)]
pub(crate) struct Cached {
    last: tokio::sync::Mutex<Option<(Instant, StatusCode, Readiness)>>,
}

/// Readiness: the store answers, and how far each in-process projection is behind.
#[utoipa::path(get, path = "/ready", tag = "operations",
    responses((status = 200, body = Readiness), (status = 503, body = Readiness)))]
pub async fn ready(State(state): State<AppState>) -> Response {
    let mut last = state.inner.readiness.last.lock().await;
    if let Some((at, status, body)) = last.as_ref()
        && at.elapsed() < READY_CACHE_TTL
    {
        return (*status, Json(body.clone())).into_response();
    }
    let (status, body) = compute(&state).await;
    *last = Some((Instant::now(), status, body.clone()));
    drop(last);
    (status, Json(body)).into_response()
}

async fn compute(state: &AppState) -> (StatusCode, Readiness) {
    let events = state.events();
    // A one-row query: reading the feed could wait for in-flight appends to settle.
    let probe = async {
        let stream = eslab_core::StreamId::new("health", "probe")?;
        events.stream_version(&stream).await
    };
    let probe = tokio::time::timeout(READY_TIMEOUT, probe).await;
    if !matches!(probe, Ok(Ok(_))) {
        if let Ok(Err(error)) = probe {
            tracing::warn!(%error, "readiness: store unreachable");
        }
        return (StatusCode::SERVICE_UNAVAILABLE, Readiness { status: "unavailable".into(), projections: Vec::new() });
    }
    let mut projections = Vec::new();
    for tracked in state.tracked() {
        let checkpoint = match tokio::time::timeout(READY_TIMEOUT, tracked.checkpoint()).await {
            Ok(Ok(checkpoint)) => checkpoint,
            other => {
                if let Ok(Err(error)) = other {
                    tracing::warn!(projection = tracked.name(), %error, "readiness: cannot read the checkpoint");
                }
                return (StatusCode::SERVICE_UNAVAILABLE, Readiness { status: "unavailable".into(), projections });
            }
        };
        // Counting may wait while appends are in flight (PostgreSQL's feed
        // settles); then the lag is reported unknown rather than failing readiness.
        let behind =
            match tokio::time::timeout(READY_TIMEOUT, events.read_feed(&tracked.filter(), checkpoint, LAG_CAP)).await {
                Ok(Ok(page)) => Some(page.len()),
                Ok(Err(error)) => {
                    tracing::warn!(projection = tracked.name(), %error, "readiness: cannot count the lag");
                    None
                }
                Err(_) => None,
            };
        if let Some(behind) = behind {
            metrics::gauge!("eslab_projection_behind_events", "projection" => tracked.name().to_owned())
                .set(u32::try_from(behind).unwrap_or(u32::MAX));
        }
        projections.push(ProjectionLag {
            name: tracked.name().to_owned(),
            checkpoint: checkpoint.to_string(),
            behind,
            capped: behind.is_some_and(|b| b >= LAG_CAP),
        });
    }
    (StatusCode::OK, Readiness { status: "ok".into(), projections })
}
