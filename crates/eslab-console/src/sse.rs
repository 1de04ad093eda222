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

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use eslab_core::{Checkpoint, FeedFilter, RecordedEvent};
use futures_util::StreamExt;
use serde::Deserialize;

use crate::Console;
use crate::pages::Store;

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
    let problem = serde_json::json!({
        "type": "urn:eslab:problem:bad-request",
        "title": "Bad Request",
        "status": 400,
        "detail": detail,
    });
    let mut response = (StatusCode::BAD_REQUEST, axum::Json(problem)).into_response();
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
    let live = console.inner.store.subscribe(filter, after);
    let messages = live.filter_map(move |read| {
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
