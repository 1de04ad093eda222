//! Retry safety: ETags, If-Match (412), Idempotency-Key (replay, 422 on reuse
//! with another body, one effect under concurrent retries, the first answer
//! for every retry even when the others are refused, expiry and compaction).

use std::collections::BTreeSet;
use std::time::Duration;

use axum::body::Body;
use eslab::serve::commands::{IDEMPOTENCY_CATEGORY, WriteOptions};
use eslab::serve::{self, AppState, Config};
use eslab_core::{Checkpoint, EventReader, EventReaderExt, FeedFilter, StreamId, Version};
use eslab_runtime::AnyStore;
use futures_util::TryStreamExt;
use http_body_util::BodyExt;
use reqwest::StatusCode;
use reqwest::header::{ETAG, IF_MATCH};
use serde_json::{Value, json};
use tower::ServiceExt;

use crate::helpers::{Backend, TestApp, on_every_store};

async fn if_match(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let a = app.open("Ada", 0).await;
    let r = app.get(&format!("/accounts/{a}?consistency=strong")).await;
    assert_eq!(r.headers()[ETAG], "\"1\"");
    let deposit = json!({"amount": 10, "currency": "EUR"});
    let path = format!("/accounts/{a}/deposits");
    let r = app.post(&path).header(IF_MATCH, "\"1\"").json(&deposit).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()[ETAG], "\"2\"");
    let before = app.event_count().await;
    let r = app.post(&path).header(IF_MATCH, "\"1\"").json(&deposit).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::PRECONDITION_FAILED);
    let problem: Value = r.json().await.unwrap();
    assert!(problem["detail"].as_str().unwrap().contains("version 2"), "{problem}");
    let r = app.post(&path).header(IF_MATCH, "2").json(&deposit).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST, "unquoted If-Match is malformed");
    assert_eq!(app.event_count().await, before);
    let r =
        app.post(&format!("/accounts/{a}/withdrawals")).header(IF_MATCH, "\"2\"").json(&deposit).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(app.strong(&a).await["balance"], 0);
    app.stop().await;
}

async fn idempotency(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let a = app.open("Ada", 0).await;
    let path = format!("/accounts/{a}/deposits");
    let body = json!({"amount": 250, "currency": "EUR"});
    let before = app.event_count().await;
    let first = app.post(&path).header("Idempotency-Key", "dep-1").json(&body).send().await.unwrap();
    assert_eq!(first.status(), StatusCode::OK);
    assert!(first.headers().get("idempotent-replayed").is_none());
    let first_etag = first.headers()[ETAG].clone();
    let first_body: Value = first.json().await.unwrap();
    let after_first = app.event_count().await;
    assert_eq!(after_first, before + 2, "the deposit and its key, in one append");
    let again = app.post(&path).header("Idempotency-Key", "dep-1").json(&body).send().await.unwrap();
    assert_eq!(again.status(), StatusCode::OK);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    assert_eq!(again.headers()[ETAG], first_etag);
    assert_eq!(again.json::<Value>().await.unwrap(), first_body);
    assert_eq!(app.event_count().await, after_first, "no second effect");
    assert_eq!(app.strong(&a).await["balance"], 250);

    let other = json!({"amount": 999, "currency": "EUR"});
    let r = app.post(&path).header("Idempotency-Key", "dep-1").json(&other).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(r.json::<Value>().await.unwrap()["rule"], "idempotency-key-reused");
    let r = app
        .post(&format!("/accounts/{a}/withdrawals"))
        .header("Idempotency-Key", "dep-1")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY, "same key, another path");
    assert_eq!(app.event_count().await, after_first);

    // Opening with a key: the retry gets the same account, not a second one.
    let open = json!({"owner": "Bob", "currency": "EUR"});
    let r1 = app.post("/accounts").header("Idempotency-Key", "open-bob").json(&open).send().await.unwrap();
    let r2 = app.post("/accounts").header("Idempotency-Key", "open-bob").json(&open).send().await.unwrap();
    assert_eq!((r1.status(), r2.status()), (StatusCode::CREATED, StatusCode::CREATED));
    assert_eq!(r1.headers()["location"], r2.headers()["location"]);

    // Ten concurrent retries of one request: one effect, ten equal answers.
    let tasks: Vec<_> = (0..10)
        .map(|_| {
            let request = app.post(&path).header("Idempotency-Key", "dep-2").json(&body);
            tokio::spawn(async move {
                let r = request.send().await.unwrap();
                (r.status(), r.json::<Value>().await.unwrap())
            })
        })
        .collect();
    let mut answers = Vec::new();
    for task in tasks {
        answers.push(task.await.unwrap());
    }
    assert!(answers.iter().all(|a| a == &answers[0]), "{answers:?}");
    assert_eq!(answers[0].0, StatusCode::OK);
    assert_eq!(app.strong(&a).await["balance"], 500);

    // A refused command stores no key: once the rule allows it, the same key goes through.
    let withdraw = json!({"amount": 800, "currency": "EUR"});
    let wpath = format!("/accounts/{a}/withdrawals");
    let r = app.post(&wpath).header("Idempotency-Key", "w-1").json(&withdraw).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    app.deposit(&a, 300).await;
    let r = app.post(&wpath).header("Idempotency-Key", "w-1").json(&withdraw).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(app.strong(&a).await["balance"], 0);

    // The read model ignores the keys' streams.
    let v = app.strong(&a).await["version"].as_u64().unwrap();
    assert_eq!(app.eventually(&a, v).await["balance"], 0);
    app.stop().await;
}

on_every_store!(if_match_guards_writes, if_match);
on_every_store!(idempotency_keys_make_retries_safe, idempotency);

/// Issue 16: four concurrent withdrawals of the whole balance with one key.
/// The ones that queue behind the first decide on the state it left and are
/// refused by the domain (422 insufficient-funds) unless the refusal looks
/// the key up again: every retry must get the first answer, never a second
/// decision. 40 rounds, each on a fresh account.
async fn same_key_withdrawals_of_the_whole_balance(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    for round in 0..40 {
        let a = app.open("Ada", 0).await;
        assert_eq!(app.deposit(&a, 100).await.status(), StatusCode::OK);
        let path = format!("/accounts/{a}/withdrawals");
        let key = format!("withdraw-all-{round}");
        let tasks: Vec<_> = (0..4)
            .map(|_| {
                let request =
                    app.post(&path).header("Idempotency-Key", &key).json(&json!({"amount": 100, "currency": "EUR"}));
                tokio::spawn(async move {
                    let r = request.send().await.unwrap();
                    let replayed = r.headers().get("idempotent-replayed").is_some();
                    (r.status(), replayed, r.json::<Value>().await.unwrap())
                })
            })
            .collect();
        let mut answers = Vec::new();
        for task in tasks {
            answers.push(task.await.unwrap());
        }
        assert!(
            answers.iter().all(|(status, _, body)| *status == StatusCode::OK && *body == answers[0].2),
            "round {round}: every retry gets the first answer: {answers:?}"
        );
        assert_eq!(answers.iter().filter(|(_, replayed, _)| !replayed).count(), 1, "round {round}: {answers:?}");
        assert_eq!(app.strong(&a).await["balance"], 0, "round {round}");
        let events: Value = app.get(&format!("/accounts/{a}/events?limit=100")).await.json().await.unwrap();
        let withdrawals =
            events["items"].as_array().unwrap().iter().filter(|e| e["event_type"] == "MoneyWithdrawn").count();
        assert_eq!(withdrawals, 1, "round {round}: one withdrawal event");
    }
    app.stop().await;
}

on_every_store!(every_retry_with_one_key_gets_the_first_answer, same_key_withdrawals_of_the_whole_balance);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_retry_with_one_key_gets_the_first_answer_on_memory() {
    same_key_withdrawals_of_the_whole_balance(Backend::Memory).await;
}

/// The same race across two services on one PostgreSQL schema, where the
/// in-process lock does not order the requests: two of the four go to each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_retry_with_one_key_gets_the_first_answer_across_two_services() {
    let one = TestApp::spawn(Backend::Postgres).await;
    let schema = match one.running.as_ref().unwrap().state.events().backend() {
        AnyStore::Postgres(pg) => pg.schema().to_owned(),
        _ => unreachable!(),
    };
    let two = TestApp::spawn_with(Backend::Postgres, |c| c.store.schema = Some(schema)).await;
    for round in 0..20 {
        let a = one.open("Ada", 0).await;
        assert_eq!(one.deposit(&a, 100).await.status(), StatusCode::OK);
        let path = format!("/accounts/{a}/withdrawals");
        let key = format!("withdraw-all-{round}");
        let tasks: Vec<_> = [&one, &two, &one, &two]
            .into_iter()
            .map(|app| {
                let request =
                    app.post(&path).header("Idempotency-Key", &key).json(&json!({"amount": 100, "currency": "EUR"}));
                tokio::spawn(async move {
                    let r = request.send().await.unwrap();
                    let replayed = r.headers().get("idempotent-replayed").is_some();
                    (r.status(), replayed, r.json::<Value>().await.unwrap())
                })
            })
            .collect();
        let mut answers = Vec::new();
        for task in tasks {
            answers.push(task.await.unwrap());
        }
        assert!(
            answers.iter().all(|(status, _, body)| *status == StatusCode::OK && *body == answers[0].2),
            "round {round}: {answers:?}"
        );
        assert_eq!(answers.iter().filter(|(_, replayed, _)| !replayed).count(), 1, "round {round}: {answers:?}");
        assert_eq!(two.strong(&a).await["balance"], 0, "round {round}");
    }
    let mut two = two;
    two.running.take().unwrap().stop().await.unwrap();
    one.stop().await;
}

/// The ids of the streams of the idempotency category.
async fn key_streams(app: &TestApp) -> BTreeSet<String> {
    let events = app.running.as_ref().unwrap().state.events();
    let filter = FeedFilter::category(IDEMPOTENCY_CATEGORY).unwrap();
    let feed: Vec<_> = events.feed(&filter, Checkpoint::START).try_collect().await.unwrap();
    feed.into_iter().map(|e| e.stream_id.to_string()).collect()
}

/// The stream that stores `key`.
fn key_stream(key: &str) -> StreamId {
    let mut headers = axum::http::HeaderMap::new();
    headers.insert("idempotency-key", key.parse().unwrap());
    WriteOptions::from_request(&headers, "POST", "/", b"").unwrap().idempotency.unwrap().stream().clone()
}

/// Issue 15: a key older than the retention is a new request (a new
/// decision, not a replay), and the compaction job deletes every expired key:
/// afterwards the category holds only the key used again since.
async fn keys_expire_and_are_compacted(backend: Backend) {
    let retention = Duration::from_secs(4);
    let app = TestApp::spawn_with(backend, |c| c.idempotency_retention = retention).await;
    let a = app.open("Ada", 0).await;
    let path = format!("/accounts/{a}/deposits");
    let body = json!({"amount": 10, "currency": "EUR"});
    let deposit = |key: &str| app.post(&path).header("Idempotency-Key", key).json(&body).send();
    for key in ["k-1", "k-2", "k-3"] {
        let r = deposit(key).await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        assert!(r.headers().get("idempotent-replayed").is_none());
    }
    let r = deposit("k-1").await.unwrap();
    assert_eq!(r.headers()["idempotent-replayed"], "true", "within the retention: replayed");
    assert_eq!(key_streams(&app).await.len(), 3);
    assert_eq!(app.strong(&a).await["balance"], 30);

    tokio::time::sleep(retention + Duration::from_millis(500)).await;
    let r = deposit("k-1").await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.headers().get("idempotent-replayed").is_none(), "beyond the retention: a new decision");
    assert_eq!(app.strong(&a).await["balance"], 40);

    if backend == Backend::Nats {
        // The JetStream stream denies purges: compaction deletes nothing
        // there (documented), and expiry still holds, as above.
        assert_eq!(key_streams(&app).await.len(), 3, "nothing is compacted on JetStream");
        app.stop().await;
        return;
    }
    let only_k1 = BTreeSet::from([key_stream("k-1").to_string()]);
    let mut streams = key_streams(&app).await;
    for _ in 0..300 {
        if streams == only_k1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        streams = key_streams(&app).await;
    }
    assert_eq!(streams, only_k1, "compaction deleted every expired key, and only those");
    let r = deposit("k-1").await.unwrap();
    assert_eq!(r.headers()["idempotent-replayed"], "true", "the renewed key answers retries");
    assert_eq!(app.strong(&a).await["balance"], 40);
    app.stop().await;
}

on_every_store!(expired_keys_are_new_requests_and_compacted, keys_expire_and_are_compacted);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_keys_are_new_requests_and_compacted_on_memory() {
    keys_expire_and_are_compacted(Backend::Memory).await;
}

/// Sends `request` through the router of `state`: status, replayed, body.
async fn call(state: &AppState, request: axum::http::Request<Body>) -> (StatusCode, bool, Value) {
    let response = serve::app(state.clone()).oneshot(request).await.unwrap();
    let status = StatusCode::from_u16(response.status().as_u16()).unwrap();
    let replayed = response.headers().get("idempotent-replayed").is_some();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (status, replayed, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

fn post(uri: &str, key: Option<&str>, body: &Value) -> axum::http::Request<Body> {
    let mut request = axum::http::Request::post(uri).header("content-type", "application/json");
    if let Some(key) = key {
        request = request.header("idempotency-key", key);
    }
    request.body(Body::from(body.to_string())).unwrap()
}

/// An expired key is a new request even while its record is still stored
/// (no compaction job runs here: the state is built without `prepare`): the
/// new record is appended after the expired one, and the same key may then
/// name another request.
#[tokio::test]
async fn an_expired_key_is_a_new_request_before_compaction() {
    let mut config = Config::new("memory:");
    config.idempotency_retention = Duration::from_millis(1);
    let store = AnyStore::open("memory:").await.unwrap();
    let views = serve::read::ReadModels::from(eslab_projection::memory::MemoryBackend::new());
    let state = AppState::new(store, views, Vec::new(), &config);
    let (status, _, opened) = call(&state, post("/accounts", None, &json!({"owner": "Ada", "currency": "EUR"}))).await;
    assert_eq!(status, StatusCode::CREATED);
    let id = opened["id"].as_str().unwrap();
    let deposit = json!({"amount": 10, "currency": "EUR"});
    let path = format!("/accounts/{id}/deposits");
    for round in 1..=2 {
        let (status, replayed, body) = call(&state, post(&path, Some("k"), &deposit)).await;
        assert_eq!((status, replayed), (StatusCode::OK, false), "round {round}: expired, so decided again");
        assert_eq!(body["balance"], 10 * round);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let withdraw = json!({"amount": 5, "currency": "EUR"});
    let (status, replayed, body) =
        call(&state, post(&format!("/accounts/{id}/withdrawals"), Some("k"), &withdraw)).await;
    assert_eq!((status, replayed), (StatusCode::OK, false), "an expired key may name another request: {body}");
    let records = state.events().read_stream(&key_stream("k"), Version::FIRST, 10).await.unwrap();
    assert_eq!(records.len(), 3, "each new record follows the expired one on the key's stream");
}
