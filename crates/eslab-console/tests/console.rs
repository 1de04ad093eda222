//! The console's pages and `GET /events/stream` over the memory store,
//! driven without a socket (`tower::ServiceExt::oneshot`). The browser tests
//! (a real Chromium) are the app's (`apps/eslab/tests/it/console.rs`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use eslab_console::{CONTENT_SECURITY_POLICY, Console, OperationError, Operations};
use eslab_core::{Checkpoint, EventAppender, EventStore, ExpectedVersion, Metadata, NewEvent, Repository, StreamId};
use eslab_memory::MemoryStore;
use eslab_projection::{Lag, ParkedEvent, Status};
use eslab_testing::repository::{Tally, TallyCommand};
use futures_util::future::BoxFuture;
use http_body_util::BodyExt;
use serde_json::json;
use tower::ServiceExt;
use uuid::Uuid;

const HOSTILE: &str = "<script>alert(1)</script>\"><img src=x onerror=alert(2)>";

async fn get(app: &axum::Router, uri: &str) -> (StatusCode, axum::http::HeaderMap, String) {
    let response = app.clone().oneshot(Request::get(uri).body(Body::empty()).unwrap()).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, headers, String::from_utf8(body.to_vec()).unwrap())
}

fn store() -> EventStore<MemoryStore> {
    EventStore::new(MemoryStore::new())
}

async fn append(
    store: &EventStore<MemoryStore>,
    stream: &str,
    event_type: &str,
    payload: serde_json::Value,
    m: Metadata,
) {
    let s: StreamId = stream.parse().unwrap();
    store.append(&s, ExpectedVersion::Any, vec![NewEvent::new(event_type, 1, payload, m)]).await.unwrap();
}

#[tokio::test]
async fn pages_show_categories_streams_and_events_with_hostile_data_as_text() {
    let store = store();
    append(&store, "account-1", "Opened", json!({ "owner": HOSTILE }), Metadata::now()).await;
    append(&store, "account-2", "Opened", json!({ "owner": "Bob" }), Metadata::now()).await;
    append(&store, "order-1", "Placed", json!({}), Metadata::now()).await;
    let app = Console::new(store).router();

    let (status, headers, body) = get(&app, "/console").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers[header::CONTENT_SECURITY_POLICY], CONTENT_SECURITY_POLICY);
    assert!(body.contains("href=\"/console/streams?category=account\""), "{body}");
    assert!(body.contains(">order<"), "{body}");

    let (status, _, body) = get(&app, "/console/streams?category=account").await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains("/console/streams/account-1") && body.contains("/console/streams/account-2"), "{body}");

    let (status, _, body) = get(&app, "/console/streams/account-1").await;
    assert_eq!(status, StatusCode::OK);
    assert!(!body.contains("<script>alert"), "the owner's name is markup: {body}");
    assert!(!body.contains("<img src=x"), "the owner's name is markup: {body}");
    assert!(body.contains("&lt;script&gt;alert(1)&lt;/script&gt;"), "{body}");
    assert!(body.contains("Opened"));

    let (status, _, _) = get(&app, "/console/find?id=account-2").await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let (status, _, body) = get(&app, "/console/find?id=%3Cbad%3E").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body.contains("&lt;bad&gt;"), "{body}");
    let (status, _, _) = get(&app, "/console/streams?category=bad%20one").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _, _) = get(&app, "/console/requests/not-a-uuid").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    for bad in ["/console/?after=%00", "/console/?after=no%20way", "/console/streams/account-1?from=x"] {
        assert_eq!(get(&app, bad).await.0, StatusCode::BAD_REQUEST, "{bad}");
    }
    let (status, _, _) = get(&app, "/console/nothing-here").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, headers, body) = get(&app, "/console/assets/console.js").await;
    assert_eq!(status, StatusCode::OK);
    assert!(headers[header::CONTENT_TYPE].to_str().unwrap().starts_with("text/javascript"));
    assert!(!body.contains("innerHTML"), "the script never builds markup from data");
}

#[tokio::test]
async fn a_request_is_followed_across_streams_and_aggregates_travel_in_time() {
    let store = store();
    let request = Uuid::now_v7();
    let caused_by = Uuid::now_v7();
    let m = Metadata::now().with_correlation_id(request).with_causation_id(caused_by);
    append(&store, "transfer-7", "Requested", json!({}), m.clone()).await;
    append(&store, "account-a", "Withdrawn", json!({}), m.clone()).await;
    append(&store, "account-b", "Deposited", json!({}), m).await;
    append(&store, "account-c", "Deposited", json!({}), Metadata::now()).await;
    let tally: Repository<Tally, _> = Repository::new(store.clone());
    for n in [5, 7, -2] {
        tally.execute("t1", &TallyCommand::Add(n), Metadata::now()).await.unwrap();
    }
    let app = Console::new(store).with_aggregate::<Tally>().router();

    let (status, _, body) = get(&app, &format!("/console/requests/{request}")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains("3 events in 3 streams"), "{body}");
    for stream in ["transfer-7", "account-a", "account-b"] {
        assert!(body.contains(&format!("/console/streams/{stream}")), "{stream}: {body}");
    }
    assert!(!body.contains("account-c"));
    assert!(body.contains(&format!("#e-{caused_by}")), "causation links: {body}");

    let (status, _, body) = get(&app, "/console/state/tally-t1?version=2").await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains("&quot;total&quot;: 12") || body.contains("\"total\": 12"), "{body}");
    let (_, _, body) = get(&app, "/console/state/tally-t1").await;
    assert!(body.contains("&quot;total&quot;: 10") || body.contains("\"total\": 10"), "{body}");
    let (status, _, _) = get(&app, "/console/state/account-a").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "no aggregate registered for account");
    let (_, _, body) = get(&app, "/console/streams/tally-t1").await;
    assert!(body.contains("/console/state/tally-t1?version=3"), "time travel from each event: {body}");
}

/// Operations that record what they were asked.
#[derive(Default, Clone)]
struct Recorded {
    asked: Arc<Mutex<Vec<String>>>,
}

impl Operations for Recorded {
    fn projections(&self) -> BoxFuture<'_, Result<Vec<Status>, OperationError>> {
        Box::pin(async {
            Ok(vec![Status {
                name: "views".into(),
                checkpoint: Checkpoint::START,
                lag: Lag { events: 3, seconds: 1.5 },
                lease_owner: Some("host-1".into()),
                parked: 1,
            }])
        })
    }

    fn parked(&self) -> BoxFuture<'_, Result<Vec<ParkedEvent>, OperationError>> {
        Box::pin(async {
            let store = MemoryStore::new();
            let s: StreamId = "account-9".parse().unwrap();
            let event = NewEvent::new("Deposited", 1, json!({ "note": HOSTILE }), Metadata::now());
            let recorded = store.append(&s, ExpectedVersion::Any, vec![event]).await.unwrap().events.remove(0);
            Ok(vec![ParkedEvent {
                projection: "views".into(),
                event: recorded,
                reason: HOSTILE.into(),
                parked_at: time::OffsetDateTime::now_utc(),
            }])
        })
    }

    fn retry<'a>(&'a self, projection: &'a str, stream: &'a StreamId) -> BoxFuture<'a, Result<usize, OperationError>> {
        Box::pin(async move {
            self.asked.lock().unwrap().push(format!("retry {projection} {stream}"));
            Ok(1)
        })
    }

    fn skip<'a>(&'a self, projection: &'a str, stream: &'a StreamId) -> BoxFuture<'a, Result<usize, OperationError>> {
        Box::pin(async move {
            self.asked.lock().unwrap().push(format!("skip {projection} {stream}"));
            Ok(1)
        })
    }
}

async fn post(app: &axum::Router, uri: &str, token: Option<&str>, body: &str) -> (StatusCode, String) {
    let mut request = Request::post(uri).header(header::CONTENT_TYPE, "application/json");
    if let Some(token) = token {
        request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    let response = app.clone().oneshot(request.body(Body::from(body.to_owned())).unwrap()).await.unwrap();
    let status = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8(body.to_vec()).unwrap())
}

#[tokio::test]
async fn projections_show_parked_events_and_actions_need_the_token() {
    let ops = Recorded::default();
    let app = Console::new(store()).with_operations(ops.clone()).with_token(Some("s3cret".into())).router();
    let (status, _, body) = get(&app, "/console/projections").await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains("host-1") && body.contains("account-9"), "{body}");
    assert!(!body.contains("<script>alert") && !body.contains("<img src=x"), "{body}");
    assert!(body.contains("data-action=\"/console/projections/views/retry\""), "{body}");

    let retry = "/console/projections/views/retry";
    assert_eq!(post(&app, retry, None, r#"{"stream":"account-9"}"#).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(post(&app, retry, Some("wrong"), r#"{"stream":"account-9"}"#).await.0, StatusCode::UNAUTHORIZED);
    assert!(ops.asked.lock().unwrap().is_empty(), "nothing done without the token");
    assert_eq!(post(&app, retry, Some("s3cret"), "{junk").await.0, StatusCode::BAD_REQUEST);
    assert_eq!(post(&app, retry, Some("s3cret"), r#"{"stream":"<x>"}"#).await.0, StatusCode::BAD_REQUEST);
    let (status, body) = post(&app, retry, Some("s3cret"), r#"{"stream":"account-9"}"#).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, _) = post(&app, "/console/projections/views/skip", Some("s3cret"), r#"{"stream":"account-9"}"#).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(*ops.asked.lock().unwrap(), ["retry views account-9", "skip views account-9"]);
}

/// The first `n` SSE messages' `id:` and `data:` lines of a response body.
async fn messages(body: Body, n: usize) -> Vec<(String, serde_json::Value)> {
    let mut stream = body.into_data_stream();
    let mut text = String::new();
    let mut found = Vec::new();
    while found.len() < n {
        let chunk = tokio::time::timeout(Duration::from_secs(5), futures_util::StreamExt::next(&mut stream))
            .await
            .expect("an event within 5 s")
            .expect("the stream goes on")
            .unwrap();
        text.push_str(std::str::from_utf8(&chunk).unwrap());
        while let Some(end) = text.find("\n\n") {
            let message: String = text.drain(..end + 2).collect();
            let id = message.lines().find_map(|l| l.strip_prefix("id:")).map(|s| s.trim().to_owned());
            let data = message.lines().find_map(|l| l.strip_prefix("data:")).map(|s| s.trim().to_owned());
            if let (Some(id), Some(data)) = (id, data) {
                found.push((id, serde_json::from_str(&data).unwrap()));
            }
        }
    }
    found
}

#[tokio::test]
async fn the_events_stream_follows_filters_and_resumes_from_last_event_id() {
    let store = store();
    append(&store, "account-1", "Opened", json!({ "n": 1 }), Metadata::now()).await;
    append(&store, "order-1", "Placed", json!({ "n": 2 }), Metadata::now()).await;
    append(&store, "account-1", "Deposited", json!({ "n": 3 }), Metadata::now()).await;
    let app = Console::new(store.clone()).router();

    let request = Request::get("/events/stream?category=account").body(Body::empty()).unwrap();
    let response = app.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()[header::CONTENT_TYPE], "text/event-stream");
    let body = response.into_body();
    let got = messages(body, 2).await;
    assert_eq!(got.iter().map(|(_, e)| e["payload"]["n"].as_u64().unwrap()).collect::<Vec<_>>(), [1, 3]);

    // Resume after the first: the second, then one appended live.
    let request = Request::get("/events/stream?after=0:0")
        .header("last-event-id", got[0].0.as_str())
        .body(Body::empty())
        .unwrap();
    let body = app.clone().oneshot(request).await.unwrap().into_body();
    let writer = {
        let store = store.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            append(&store, "account-2", "Opened", json!({ "n": 4 }), Metadata::now()).await;
        })
    };
    let resumed = messages(body, 3).await;
    writer.await.unwrap();
    assert_eq!(resumed.iter().map(|(_, e)| e["payload"]["n"].as_u64().unwrap()).collect::<Vec<_>>(), [2, 3, 4]);

    let request = Request::get("/events/stream?type=Placed,Opened").body(Body::empty()).unwrap();
    let body = app.clone().oneshot(request).await.unwrap().into_body();
    let typed = messages(body, 3).await;
    let types: Vec<&str> = typed.iter().map(|(_, e)| e["event_type"].as_str().unwrap()).collect();
    assert_eq!(types, ["Opened", "Placed", "Opened"]);

    for bad in ["/events/stream?category=no%20way", "/events/stream?after=junk"] {
        let response = app.clone().oneshot(Request::get(bad).body(Body::empty()).unwrap()).await.unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{bad}");
        assert_eq!(response.headers()[header::CONTENT_TYPE], "application/problem+json");
    }
}

#[tokio::test]
async fn event_streams_beyond_the_cap_are_refused_until_one_closes() {
    let store = store();
    append(&store, "account-1", "Opened", json!({}), Metadata::now()).await;
    let app = Console::new(store).with_max_streams(2).router();
    let open =
        || async { app.clone().oneshot(Request::get("/events/stream").body(Body::empty()).unwrap()).await.unwrap() };
    let first = open().await;
    let second = open().await;
    assert_eq!((first.status(), second.status()), (StatusCode::OK, StatusCode::OK));
    let third = open().await;
    assert_eq!(third.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(third.headers()[header::RETRY_AFTER], "5");
    assert_eq!(third.headers()[header::CONTENT_TYPE], "application/problem+json");
    drop(first);
    let again = open().await;
    assert_eq!(again.status(), StatusCode::OK, "a closed stream gives its slot back");
    assert_eq!(messages(again.into_body(), 1).await.len(), 1);
}

#[tokio::test]
async fn the_console_mounts_where_it_is_told() {
    let store = store();
    append(&store, "account-1", "Opened", json!({}), Metadata::now()).await;
    let app = Console::new(store).at("/ops/console/").router();
    let (status, _, body) = get(&app, "/ops/console/").await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains("href=\"/ops/console/streams?category=account\""), "{body}");
    assert!(body.contains("src=\"/ops/console/assets/console.js\""), "{body}");
    assert_eq!(get(&app, "/ops/console").await.0, StatusCode::OK);
    assert_eq!(get(&app, "/console").await.0, StatusCode::NOT_FOUND);
    // A base that is not a path below `/` keeps the default.
    let app = Console::new(self::store()).at("/").router();
    assert_eq!(get(&app, "/console").await.0, StatusCode::OK);
}
