//! `GET /events/stream`: the feed as Server-Sent Events, for any client.
//!
//! - Query: `category` (one category's feed; default all), `type` (only
//!   events of these types, comma-separated), `after` (a checkpoint, as
//!   `transaction:position`, to start after; default the start).
//! - Each event is one SSE message (of the default type, `message`): `id:`
//!   its checkpoint, `data:` the recorded event as JSON (as `GET /accounts/{id}/events`
//!   shows events). A comment every 15 s keeps idle connections open.
//! - A reconnecting client sends `Last-Event-ID` (browsers do it by
//!   themselves): the stream resumes after that checkpoint, which wins over
//!   `after`. The feed is gap-safe (on PostgreSQL it never skips an event
//!   committed late), so a dropped connection loses nothing and repeats
//!   nothing.
//!
//! Filtered-out events send nothing: a client resuming from its last
//! delivered event reads past them again, harmlessly.
//!
//! **Many clients, one wake-up source.** Every open stream is woken by one
//! shared subscription to the store's wake-ups (on PostgreSQL one `LISTEN`
//! connection for all of them, opened while at least one stream is open),
//! never one connection per client; and at most
//! [`DEFAULT_MAX_STREAMS`](crate::DEFAULT_MAX_STREAMS) streams are open at
//! once (503 with `Retry-After` beyond), so clients cannot use up the
//! database's connections or the service's memory.

use std::convert::Infallible;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use eslab_core::{Checkpoint, FeedFilter, RecordedEvent, SubscribeOptions, WakeUpStream, WakeUps, watch_wake_ups};
use futures_util::StreamExt;
use serde::Deserialize;
use tokio::sync::watch;

use crate::Console;
use crate::ConsoleStore as Store;

/// Where the endpoint is mounted.
pub const PATH: &str = "/events/stream";

/// How often an idle stream sends a comment.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// The most event types one filter may name.
const MAX_TYPES: usize = 32;

/// The query of `GET /events/stream`.
#[derive(Debug, Deserialize)]
pub(crate) struct StreamQuery {
    category: Option<String>,
    #[serde(rename = "type")]
    types: Option<String>,
    after: Option<String>,
}

/// A refused request: 400 with a problem body.
fn bad_request(detail: String) -> Response {
    problem(StatusCode::BAD_REQUEST, "bad-request", detail)
}

/// An `application/problem+json` answer.
fn problem(status: StatusCode, kind: &str, detail: String) -> Response {
    let body = serde_json::json!({
        "type": format!("urn:eslab:problem:{kind}"),
        "title": status.canonical_reason().unwrap_or("Error"),
        "status": status.as_u16(),
        "detail": detail,
    });
    let mut response = (status, axum::Json(body)).into_response();
    response
        .headers_mut()
        .insert(axum::http::header::CONTENT_TYPE, axum::http::HeaderValue::from_static("application/problem+json"));
    response
}

/// Where to start: `Last-Event-ID`, else `after`, else the start.
fn start(headers: &HeaderMap, after: Option<&str>) -> Result<Checkpoint, String> {
    let last = headers.get("last-event-id").map(|v| v.to_str().map_err(|_| "Last-Event-ID is not text".to_owned()));
    let text = match last {
        Some(Ok(text)) if !text.trim().is_empty() => Some(text.trim().to_owned()),
        Some(Err(e)) => return Err(e),
        _ => after.map(str::to_owned),
    };
    match text {
        None => Ok(Checkpoint::START),
        Some(text) => text.parse().map_err(|e| format!("{text:?} is not a checkpoint (transaction:position): {e}")),
    }
}

/// One recorded event as an SSE message.
fn message(event: &RecordedEvent) -> Event {
    let data = serde_json::to_string(event).unwrap_or_else(|_| "{}".to_owned());
    Event::default().id(event.checkpoint().to_string()).data(data)
}

/// One subscription to the store's wake-ups, shared by every open stream
/// through a watch channel; it ends (and on PostgreSQL closes its `LISTEN`
/// connection) when the last stream closes, and the next stream starts
/// another.
pub(crate) type SharedWakeUps = Arc<Mutex<Option<watch::Sender<u64>>>>;

impl<S: Store> Console<S> {
    fn shared_wake_ups(&self) -> WakeUpStream {
        let shared = &self.inner.wake_ups;
        let mut slot = shared.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(sender) = slot.as_ref() {
            return watch_wake_ups(sender.subscribe());
        }
        let (sender, receiver) = watch::channel(0u64);
        *slot = Some(sender.clone());
        let (store, shared) = (self.inner.store.clone(), Arc::clone(shared));
        tokio::spawn(async move {
            let mut wake_ups = store.wake_ups().await;
            loop {
                tokio::select! {
                    woken = wake_ups.next() => match woken {
                        Some(()) => sender.send_modify(|n| *n = n.wrapping_add(1)),
                        // The store offers no more: the streams poll.
                        None => break,
                    },
                    () = sender.closed() => {
                        // Under the lock no stream can subscribe meanwhile.
                        let mut slot = shared.lock().unwrap_or_else(PoisonError::into_inner);
                        if sender.receiver_count() == 0 {
                            *slot = None;
                            return;
                        }
                    }
                }
            }
            let mut slot = shared.lock().unwrap_or_else(PoisonError::into_inner);
            if slot.as_ref().is_some_and(|s| s.same_channel(&sender)) {
                *slot = None;
            }
        });
        watch_wake_ups(receiver)
    }
}

/// `GET /events/stream`.
pub(crate) async fn events_stream<S: Store>(
    State(console): State<Console<S>>,
    Query(q): Query<StreamQuery>,
    headers: HeaderMap,
) -> Response {
    let filter = match q.category.as_deref().filter(|c| !c.is_empty()) {
        None => FeedFilter::All,
        Some(category) => match FeedFilter::category(category) {
            Ok(filter) => filter,
            Err(e) => return bad_request(format!("{category:?} is not a category: {e}")),
        },
    };
    let types: Vec<String> = q
        .types
        .as_deref()
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_owned)
        .collect();
    if types.len() > MAX_TYPES {
        return bad_request(format!("at most {MAX_TYPES} event types"));
    }
    let after = match start(&headers, q.after.as_deref()) {
        Ok(after) => after,
        Err(detail) => return bad_request(detail),
    };
    let Ok(permit) = Arc::clone(&console.inner.streams).try_acquire_owned() else {
        let mut response = problem(
            StatusCode::SERVICE_UNAVAILABLE,
            "too-many-streams",
            format!(
                "{} event streams are open, the most this service serves at once; try again later",
                console.inner.max_streams
            ),
        );
        response.headers_mut().insert(axum::http::header::RETRY_AFTER, axum::http::HeaderValue::from_static("5"));
        return response;
    };
    let wake_ups = console.shared_wake_ups();
    let live = console.inner.store.subscribe_woken_by(wake_ups, filter, after, SubscribeOptions::default());
    let messages = live.filter_map(move |read| {
        // The slot is held as long as the stream is open.
        let _open = &permit;
        let keep = match read {
            Ok(event) if types.is_empty() || types.contains(&event.event_type) => Some(message(&event)),
            Ok(_) => None,
            Err(e) => {
                tracing::warn!(error = %e, "events stream: reading the feed failed; retrying");
                None
            }
        };
        std::future::ready(keep.map(Ok::<_, Infallible>))
    });
    Sse::new(messages).keep_alive(KeepAlive::new().interval(KEEP_ALIVE)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_event_id_wins_over_after() {
        let mut headers = HeaderMap::new();
        assert_eq!(start(&headers, None), Ok(Checkpoint::START));
        assert_eq!(start(&headers, Some("0:5")).map(|c| c.position.get()), Ok(5));
        headers.insert("last-event-id", "7:9".parse().unwrap_or_else(|_| unreachable!()));
        assert_eq!(start(&headers, Some("0:5")).map(|c| c.position.get()), Ok(9));
        headers.insert("last-event-id", "junk".parse().unwrap_or_else(|_| unreachable!()));
        assert!(start(&headers, None).is_err());
    }
}
