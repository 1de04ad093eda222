//! The pages: streams, a stream, a request's journey, time travel, the live
//! feed, projections and their actions.

use std::collections::BTreeSet;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use eslab_core::{EventReader, Explore, Position, StreamId, Version};
use maud::html;
use serde::Deserialize;
use uuid::Uuid;

use crate::Console;
use crate::view::{encode, error, event, next, page, pretty, when};

/// Items per page of every list.
pub(crate) const PAGE: usize = 50;

use crate::ConsoleStore as Store;

impl<S: Store> Console<S> {
    pub(crate) fn base(&self) -> &str {
        &self.inner.base
    }

    pub(crate) fn site(&self) -> &str {
        &self.inner.title
    }

    pub(crate) fn fail(&self, status: StatusCode, message: &str) -> Response {
        error(self.base(), self.site(), status, message)
    }

    /// A store failure: logged in full, shown without details (they may name
    /// the database).
    pub(crate) fn failed(&self, what: &str, failure: &dyn std::fmt::Display) -> Response {
        tracing::warn!(error = %failure, "console: {what} failed");
        self.fail(StatusCode::SERVICE_UNAVAILABLE, &format!("{what} failed; the service's log says why"))
    }

    pub(crate) fn render(&self, title: &str, body: maud::Markup) -> Response {
        page(self.base(), self.site(), title, body).into_response()
    }

    /// `text` as a stream id, or the 400 page saying why not.
    fn stream_id(&self, text: &str) -> Result<StreamId, Box<Response>> {
        text.parse().map_err(|e: eslab_core::InvalidStreamId| {
            Box::new(self.fail(StatusCode::BAD_REQUEST, &format!("{text:?} is not a stream id: {e}")))
        })
    }
}

#[derive(Debug, Deserialize)]
pub(crate) struct After {
    after: Option<String>,
}

/// The categories, with their event counts.
pub(crate) async fn overview<S: Store>(State(console): State<Console<S>>, Query(q): Query<After>) -> Response {
    if let Some(after) = q.after.as_deref()
        && let Err(e) = eslab_core::FeedFilter::category(after)
    {
        return console.fail(StatusCode::BAD_REQUEST, &format!("{after:?} is not a category: {e}"));
    }
    let categories = match console.inner.store.categories(q.after.as_deref(), PAGE).await {
        Ok(categories) => categories,
        Err(e) => return console.failed("reading the categories", &e),
    };
    let base = console.base();
    let more = (categories.len() == PAGE)
        .then(|| categories.last().map(|c| format!("{base}/?after={}", encode(&c.category))))
        .flatten();
    let body = html! {
        @if categories.is_empty() {
            p.empty { "No events yet." }
        } @else {
            table.categories {
                thead { tr { th { "category" } th.num { "events" } } }
                tbody {
                    @for c in &categories {
                        tr {
                            td { a href={ (base) "/streams?category=" (encode(&c.category)) } { (c.category) } }
                            td.num { (c.events) @if c.capped { "+" } }
                        }
                    }
                }
            }
        }
        (next(more))
    };
    console.render("Categories", body)
}

#[derive(Debug, Deserialize)]
pub(crate) struct StreamsQuery {
    category: Option<String>,
    after: Option<String>,
}

/// A category's streams.
pub(crate) async fn streams<S: Store>(State(console): State<Console<S>>, Query(q): Query<StreamsQuery>) -> Response {
    let Some(category) = q.category.filter(|c| !c.is_empty()) else {
        return console.fail(StatusCode::BAD_REQUEST, "which category? (`?category=`)");
    };
    if let Err(e) = eslab_core::FeedFilter::category(&category) {
        return console.fail(StatusCode::BAD_REQUEST, &format!("{category:?} is not a category: {e}"));
    }
    let after = match q.after.as_deref().map(|a| console.stream_id(a)).transpose() {
        Ok(after) => after,
        Err(response) => return *response,
    };
    let streams = match console.inner.store.streams(&category, after.as_ref(), PAGE).await {
        Ok(streams) => streams,
        Err(e) => return console.failed("reading the streams", &e),
    };
    let base = console.base();
    let more = (streams.len() == PAGE)
        .then(|| {
            streams.last().map(|s| {
                format!("{base}/streams?category={}&after={}", encode(&category), encode(s.stream_id.as_str()))
            })
        })
        .flatten();
    let travel = console.registered(&category).is_some();
    let body = html! {
        @if streams.is_empty() {
            p.empty { "No streams in " (category) "." }
        } @else {
            table.streams {
                thead { tr { th { "stream" } th.num { "version" } @if travel { th { "state" } } } }
                tbody {
                    @for s in &streams {
                        tr {
                            td { a href={ (base) "/streams/" (encode(s.stream_id.as_str())) } { (s.stream_id) } }
                            td.num { (s.version) }
                            @if travel {
                                td { a href={ (base) "/state/" (encode(s.stream_id.as_str())) } { "now" } }
                            }
                        }
                    }
                }
            }
        }
        (next(more))
    };
    console.render(&format!("Streams of {category}"), body)
}

#[derive(Debug, Deserialize)]
pub(crate) struct FindQuery {
    id: Option<String>,
}

/// Finds a stream by id: its page.
pub(crate) async fn find<S: Store>(State(console): State<Console<S>>, Query(q): Query<FindQuery>) -> Response {
    let id = q.id.unwrap_or_default();
    let id = id.trim();
    match console.stream_id(id) {
        Ok(stream) => Redirect::to(&format!("{}/streams/{}", console.base(), encode(stream.as_str()))).into_response(),
        Err(response) => *response,
    }
}

#[derive(Debug, Deserialize)]
pub(crate) struct FromQuery {
    from: Option<u64>,
}

/// One stream's events, a page from version `from`.
pub(crate) async fn stream<S: Store>(
    State(console): State<Console<S>>,
    Path(stream): Path<String>,
    Query(q): Query<FromQuery>,
) -> Response {
    let stream = match console.stream_id(&stream) {
        Ok(stream) => stream,
        Err(response) => return *response,
    };
    let from = Version::new(q.from.unwrap_or(1).max(1));
    let events = match console.inner.store.read_stream(&stream, from, PAGE).await {
        Ok(events) => events,
        Err(e) => return console.failed("reading the stream", &e),
    };
    let base = console.base();
    let travel = console.registered(stream.category()).is_some();
    let more = (events.len() == PAGE)
        .then(|| {
            events
                .last()
                .and_then(|e| e.stream_version.next())
                .map(|v| format!("{base}/streams/{}?from={v}", encode(stream.as_str())))
        })
        .flatten();
    let body = html! {
        p.crumbs {
            a href={ (base) "/streams?category=" (encode(stream.category())) } { "category " (stream.category()) }
            @if travel {
                " · "
                a href={ (base) "/state/" (encode(stream.as_str())) } { "state now" }
            }
        }
        @if events.is_empty() {
            p.empty { "No events at or after version " (from) "." }
        }
        section.events {
            @for e in &events { (event(base, e, travel, false)) }
        }
        (next(more))
    };
    console.render(&format!("Stream {stream}"), body)
}

/// Every event of one request (correlation id), across streams, in feed order.
pub(crate) async fn journey<S: Store>(
    State(console): State<Console<S>>,
    Path(correlation): Path<String>,
    Query(q): Query<After>,
) -> Response {
    let Ok(correlation) = Uuid::parse_str(&correlation) else {
        return console.fail(StatusCode::BAD_REQUEST, &format!("{correlation:?} is not a correlation id (a UUID)"));
    };
    let after = match q.after.as_deref().map(str::parse::<u64>).transpose() {
        Ok(after) => Position::new(after.unwrap_or(0)),
        Err(_) => return console.fail(StatusCode::BAD_REQUEST, "`after` is a position (a whole number)"),
    };
    let events = match console.inner.store.correlated(correlation, after, PAGE).await {
        Ok(events) => events,
        Err(e) => return console.failed("reading the request's events", &e),
    };
    let base = console.base();
    let streams: BTreeSet<&str> = events.iter().map(|e| e.stream_id.as_str()).collect();
    let more = (events.len() == PAGE)
        .then(|| events.last().map(|e| format!("{base}/requests/{correlation}?after={}", e.position)))
        .flatten();
    let body = html! {
        @if events.is_empty() {
            p.empty { "No events carry this correlation id." }
        } @else {
            p.summary { (events.len()) " events in " (streams.len()) " streams: "
                @for (i, s) in streams.iter().enumerate() {
                    @if i > 0 { ", " }
                    a.stream href={ (base) "/streams/" (encode(s)) } { (s) }
                }
            }
            ol.timeline {
                @for e in &events {
                    li { (event(base, e, console.registered(e.stream_id.category()).is_some(), true)) }
                }
            }
        }
        (next(more))
    };
    console.render(&format!("Request {correlation}"), body)
}

#[derive(Debug, Deserialize)]
pub(crate) struct VersionQuery {
    version: Option<u64>,
}

/// The state of a registered aggregate's stream at a version.
pub(crate) async fn state<S: Store>(
    State(console): State<Console<S>>,
    Path(stream): Path<String>,
    Query(q): Query<VersionQuery>,
) -> Response {
    let stream = match console.stream_id(&stream) {
        Ok(stream) => stream,
        Err(response) => return *response,
    };
    let Some(travel) = console.registered(stream.category()) else {
        return console.fail(
            StatusCode::NOT_FOUND,
            &format!("no aggregate is registered for the category {:?}", stream.category()),
        );
    };
    let asked = q.version.map(Version::new);
    let (state, version) = match travel.state_at(stream.id(), asked).await {
        Ok(found) => found,
        Err(e @ eslab_core::Error::InvalidStreamId(_)) => return console.fail(StatusCode::BAD_REQUEST, &e.to_string()),
        Err(e) => return console.failed("loading the state", &e),
    };
    if version == Version::NONE {
        return console.fail(StatusCode::NOT_FOUND, &format!("{stream} has no events"));
    }
    let base = console.base();
    let href = |v: u64| format!("{base}/state/{}?version={v}", encode(stream.as_str()));
    let body = html! {
        p.crumbs {
            a href={ (base) "/streams/" (encode(stream.as_str())) } { "events of " (stream) }
        }
        p.versions {
            @if version.get() > 1 { a.previous href=(href(version.get() - 1)) { "← v" (version.get() - 1) } " " }
            strong.at { "at version " (version) }
            @if asked.is_some() { " " a.next href=(href(version.get() + 1)) { "v" (version.get() + 1) " →" } }
        }
        pre.state { (pretty(&state)) }
    };
    console.render(&format!("State of {stream}"), body)
}

/// The live feed page (its script follows `GET /events/stream`).
pub(crate) async fn live<S: Store>(State(console): State<Console<S>>) -> Response {
    let head = match console.inner.store.feed_head(&eslab_core::FeedFilter::All).await {
        Ok(head) => head.map(|h| h.checkpoint.to_string()),
        Err(e) => return console.failed("reading the feed's head", &e),
    };
    let body = html! {
        form id="live-filter" {
            label { "category " input name="category" placeholder="all"; }
            " "
            label { "event type " input name="type" placeholder="all"; }
            " "
            button type="submit" { "Follow" }
            " "
            span id="live-status" { "connecting…" }
        }
        ol id="live-feed" data-stream=(crate::sse::PATH) data-after=[head] {}
    };
    console.render("Live feed", body)
}

/// Projections: status, lag, lease, parked events with retry and skip.
pub(crate) async fn projections<S: Store>(State(console): State<Console<S>>) -> Response {
    let Some(operations) = &console.inner.operations else {
        return console.render("Projections", html! { p.empty { "This console has no projections to show." } });
    };
    let statuses = match operations.projections().await {
        Ok(statuses) => statuses,
        Err(e) => return console.failed("reading the projections", &e),
    };
    let parked = match operations.parked().await {
        Ok(parked) => parked,
        Err(e) => return console.failed("reading the parked events", &e),
    };
    let base = console.base();
    let body = html! {
        table.projections {
            thead { tr { th { "projection" } th { "checkpoint" } th.num { "lag (events)" } th.num { "lag (s)" } th { "lease owner" } th.num { "parked" } } }
            tbody {
                @for s in &statuses {
                    tr data-projection=(s.name) {
                        td { (s.name) }
                        td { (s.checkpoint) }
                        td.num { (s.lag.events) }
                        td.num { (format!("{:.1}", s.lag.seconds)) }
                        td { (s.lease_owner.as_deref().unwrap_or("-")) }
                        td.num { (s.parked) }
                    }
                }
            }
        }
        h2 { "Parked events" }
        @if parked.is_empty() {
            p.empty { "None." }
        } @else {
            p.token {
                label { "API token (for the actions) " input id="token" type="password" autocomplete="off"; }
                " "
                span id="action-status" {}
            }
            @for p in &parked {
                section.parked data-projection=(p.projection) data-stream=(p.event.stream_id) {
                    h3 { (p.projection) " · " (p.event.stream_id) " v" (p.event.stream_version) }
                    p.reason { "error: " code { (p.reason) } " · parked " (when(p.parked_at)) }
                    p.actions {
                        button.action.retry type="button"
                            data-action={ (base) "/projections/" (encode(&p.projection)) "/retry" }
                            data-stream=(p.event.stream_id) { "Retry" }
                        " "
                        button.action.skip type="button"
                            data-action={ (base) "/projections/" (encode(&p.projection)) "/skip" }
                            data-stream=(p.event.stream_id) { "Skip" }
                    }
                    (event(base, &p.event, false, true))
                }
            }
        }
    };
    console.render("Projections", body)
}

/// The body of an action: which stream.
#[derive(Debug, Deserialize)]
pub(crate) struct ActionBody {
    stream: String,
}

/// The answer of an action.
#[derive(Debug, serde::Serialize)]
struct ActionDone {
    projection: String,
    stream: String,
    events: usize,
}

/// `POST …/projections/{name}/retry`.
pub(crate) async fn retry<S: Store>(
    State(console): State<Console<S>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Result<Json<ActionBody>, axum::extract::rejection::JsonRejection>,
) -> Response {
    act(&console, &name, &headers, body, false).await
}

/// `POST …/projections/{name}/skip`.
pub(crate) async fn skip<S: Store>(
    State(console): State<Console<S>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Result<Json<ActionBody>, axum::extract::rejection::JsonRejection>,
) -> Response {
    act(&console, &name, &headers, body, true).await
}

/// A JSON answer with `status` (`{"error": …}` for failures).
fn answer(status: StatusCode, body: serde_json::Value) -> Response {
    (status, Json(body)).into_response()
}

async fn act<S: Store>(
    console: &Console<S>,
    name: &str,
    headers: &HeaderMap,
    body: Result<Json<ActionBody>, axum::extract::rejection::JsonRejection>,
    skip: bool,
) -> Response {
    if let Some(token) = &console.inner.token
        && !eslab_http::auth::bearer_matches(headers, token)
    {
        let mut response =
            answer(StatusCode::UNAUTHORIZED, serde_json::json!({ "error": "this action needs the API token" }));
        response.headers_mut().insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer"));
        return response;
    }
    let Some(operations) = &console.inner.operations else {
        return answer(StatusCode::NOT_FOUND, serde_json::json!({ "error": "this console has no projections" }));
    };
    let Json(body) = match body {
        Ok(body) => body,
        Err(e) => return answer(StatusCode::BAD_REQUEST, serde_json::json!({ "error": e.body_text() })),
    };
    let stream: StreamId = match body.stream.parse() {
        Ok(stream) => stream,
        Err(e) => return answer(StatusCode::BAD_REQUEST, serde_json::json!({ "error": format!("{e}") })),
    };
    let done = if skip { operations.skip(name, &stream).await } else { operations.retry(name, &stream).await };
    match done {
        Ok(events) => answer(
            StatusCode::OK,
            serde_json::to_value(ActionDone { projection: name.to_owned(), stream: stream.to_string(), events })
                .unwrap_or_default(),
        ),
        Err(e) => {
            tracing::warn!(projection = name, %stream, error = %e, "console action failed");
            answer(StatusCode::UNPROCESSABLE_ENTITY, serde_json::json!({ "error": e.to_string() }))
        }
    }
}
