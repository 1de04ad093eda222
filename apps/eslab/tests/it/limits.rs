//! Access and lifecycle: the bearer token on writes, the per-client rate
//! limit, and a graceful shutdown that flushes the projections.

use std::time::Duration;

use eslab::serve::limit::RateLimit;
use reqwest::StatusCode;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE};
use serde_json::json;

use crate::helpers::{Backend, TestApp, on_every_store};

#[tokio::test]
async fn writes_need_the_token_when_one_is_set() {
    let app = TestApp::spawn_with(Backend::Sqlite, |c| c.api_token = Some("s3cret-token".into())).await;
    let open = json!({"owner": "Ada", "currency": "EUR"});
    let url = app.url("/accounts");
    for auth in [None, Some("Bearer wrong"), Some("Bearer s3cret-tokenX"), Some("s3cret-token"), Some("Bearer ")] {
        let mut request = app.client.post(&url).json(&open);
        if let Some(auth) = auth {
            request = request.header(AUTHORIZATION, auth);
        }
        let r = request.send().await.unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{auth:?}");
        assert_eq!(r.headers()[WWW_AUTHENTICATE], "Bearer");
        assert_eq!(r.headers()[CONTENT_TYPE], "application/problem+json");
    }
    assert_eq!(app.event_count().await, 0);
    let r = app.client.post(&url).header(AUTHORIZATION, "Bearer s3cret-token").json(&open).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    // Reads stay open.
    assert_eq!(app.get("/accounts").await.status(), StatusCode::OK);
    app.stop().await;
}

async fn shutdown_flushes(backend: Backend) {
    let mut app = TestApp::spawn(backend).await;
    let a = app.open("Ada", 0).await;
    for _ in 0..20 {
        assert_eq!(app.deposit(&a, 5).await.status(), StatusCode::OK);
    }
    let running = app.running.take().unwrap();
    let state = running.state.clone();
    let addr = running.addr;
    running.stop().await.unwrap();
    // Stopped: nothing listens any more.
    assert!(reqwest::get(format!("http://{addr}/health")).await.is_err());
    // Everything committed before the stop reached the read model.
    let row = state.views().account(&a).await.unwrap().unwrap();
    assert_eq!((row.balance, row.version), (100, 21));
    if let eslab_runtime::AnyStore::Postgres(pg) = state.events().backend().clone() {
        drop(state);
        pg.drop_schema().await.unwrap();
    }
}

on_every_store!(graceful_shutdown_flushes_the_projections, shutdown_flushes);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_is_gone_is_503_and_not_ready() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let a = app.open("Ada", 0).await;
    let eslab_runtime::AnyStore::Sqlite(sqlite) = app.running.as_ref().unwrap().state.events().backend().clone() else {
        panic!("not SQLite");
    };
    sqlite.close().await;
    let r = app.get("/ready").await;
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    let r = app.deposit(&a, 10).await;
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.headers()[CONTENT_TYPE], "application/problem+json");
    let body = r.text().await.unwrap();
    assert!(!body.to_lowercase().contains("sqlite") && !body.contains("pool"), "no internals leak: {body}");
    assert!(app.get("/health").await.status() == StatusCode::OK, "alive, just not ready");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_that_takes_too_long_is_cut_with_503() {
    use sqlx::Connection;
    let app = TestApp::spawn_with(Backend::Sqlite, |c| c.request_timeout = std::time::Duration::from_millis(300)).await;
    let a = app.open("Ada", 0).await;
    // Another process holds the database's write lock (SQLite's writer waits up to 5 s for it).
    let path = app.dir.path().join("eslab.db");
    let mut other = sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display())).await.unwrap();
    sqlx::query("BEGIN IMMEDIATE").execute(&mut other).await.unwrap();
    let r = app.deposit(&a, 10).await;
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.headers()[CONTENT_TYPE], "application/problem+json");
    let problem: serde_json::Value = r.json().await.unwrap();
    assert_eq!(problem["detail"], "the request took too long; try again");
    sqlx::query("ROLLBACK").execute(&mut other).await.unwrap();
    assert_eq!(app.strong(&a).await["version"], 1, "the cut request wrote nothing");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_within_its_rate_limit_is_served() {
    // 50 requests a second with a burst of 20: 10 requests at once all pass.
    let app = TestApp::spawn_with(Backend::Sqlite, |c| c.rate_limit = RateLimit::new(50, 20)).await;
    let a = app.open("Ada", 0).await;
    for _ in 0..9 {
        assert_eq!(app.deposit(&a, 5).await.status(), StatusCode::OK);
    }
    assert_eq!(app.strong(&a).await["balance"], 45);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_over_its_rate_limit_gets_429_with_retry_after() {
    // 1 request a second with a burst of 3: deposits sent back to back soon
    // find the bucket empty, however slow the machine (each takes well under 1 s).
    let app = TestApp::spawn_with(Backend::Sqlite, |c| c.rate_limit = RateLimit::new(1, 3)).await;
    let a = app.open("Ada", 0).await;
    let mut served = 0;
    let mut refused = None;
    for _ in 0..50 {
        let r = app.deposit(&a, 5).await;
        if r.status() == StatusCode::TOO_MANY_REQUESTS {
            refused = Some(r);
            break;
        }
        assert_eq!(r.status(), StatusCode::OK);
        served += 1;
    }
    let r = refused.expect("no 429 after 50 back-to-back deposits at 1 request/s with a burst of 3");
    assert!(served >= 2, "the burst of 3 (the open and 2 deposits) was served: {served}");
    assert_eq!(r.headers()[CONTENT_TYPE], "application/problem+json");
    let retry_after: u64 = r.headers()[RETRY_AFTER].to_str().unwrap().parse().unwrap();
    assert_eq!(retry_after, 1, "a token comes back within a second");
    let problem: serde_json::Value = r.json().await.unwrap();
    assert_eq!(problem["status"], 429);
    assert_eq!(problem["type"], "urn:eslab:problem:too-many-requests");
    // The liveness probe is not limited; readiness (a store query) and metrics are.
    assert_eq!(app.get("/health").await.status(), StatusCode::OK);
    assert_eq!(app.get("/ready").await.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(app.get("/metrics").await.status(), StatusCode::TOO_MANY_REQUESTS);
    // After Retry-After the client is served again, and the refused deposit wrote nothing.
    tokio::time::sleep(Duration::from_secs(retry_after)).await;
    assert_eq!(app.strong(&a).await["balance"], 5 * served);
    app.stop().await;
}

#[tokio::test]
async fn the_bearer_scheme_is_case_insensitive() {
    let app = TestApp::spawn_with(Backend::Sqlite, |c| c.api_token = Some("s3cret-token".into())).await;
    let url = app.url("/accounts");
    for scheme in ["Bearer", "bearer", "BEARER", "bEaReR"] {
        let r = app
            .client
            .post(&url)
            .header(AUTHORIZATION, format!("{scheme} s3cret-token"))
            .json(&json!({"owner": "Ada", "currency": "EUR"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::CREATED, "{scheme}");
    }
    for wrong in ["Basic s3cret-token", "Bearers3cret-token", "Bearer", "s3cret-token Bearer"] {
        let r = app.client.post(&url).header(AUTHORIZATION, wrong).json(&json!({"owner": "Ada", "currency": "EUR"}));
        assert_eq!(r.send().await.unwrap().status(), StatusCode::UNAUTHORIZED, "{wrong}");
    }
    app.stop().await;
}

#[tokio::test]
async fn every_response_says_nosniff_and_no_store() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let a = app.open("Ada", 0).await;
    let responses = [
        app.get(&format!("/accounts/{a}")).await,
        app.get("/accounts").await,
        app.get("/no-such-endpoint").await,
        app.get("/metrics").await,
        app.get("/health").await,
        app.deposit(&a, 0).await,
        app.deposit(&a, 5).await,
    ];
    for r in responses {
        assert_eq!(r.headers()["x-content-type-options"], "nosniff", "{}", r.url());
        assert_eq!(r.headers()["cache-control"], "no-store", "{}", r.url());
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_is_computed_at_most_once_a_second() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    assert_eq!(app.get("/ready").await.status(), StatusCode::OK);
    let eslab_runtime::AnyStore::Sqlite(sqlite) = app.running.as_ref().unwrap().state.events().backend().clone() else {
        panic!("not SQLite");
    };
    sqlite.close().await;
    // Within the second the cached answer is served: the closed store is not asked.
    let r = app.get("/ready").await;
    assert_eq!(r.status(), StatusCode::OK, "a second /ready within the cache's second asked the store again");
    tokio::time::sleep(eslab::serve::ready::READY_CACHE_TTL + Duration::from_millis(100)).await;
    assert_eq!(app.get("/ready").await.status(), StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test]
async fn a_blank_token_or_no_token_on_an_open_address_refuses_to_start() {
    use eslab::serve::{AuthMode, Config, ConfigError};
    let with = |bind: &str, token: Option<&str>, no_auth: bool| {
        let mut c = Config::new("memory:");
        c.bind = bind.to_owned();
        c.api_token = token.map(str::to_owned);
        c.no_auth = no_auth;
        c.check()
    };
    assert_eq!(with("127.0.0.1:0", Some(""), false), Err(ConfigError::BlankToken));
    assert_eq!(with("127.0.0.1:0", Some(" \t"), false), Err(ConfigError::BlankToken));
    assert_eq!(with("127.0.0.1:0", Some("a b"), false), Err(ConfigError::UnsendableToken));
    assert_eq!(with("127.0.0.1:0", Some("t"), true), Err(ConfigError::TokenAndNoAuth));
    assert_eq!(with("127.0.0.1:0", Some("t"), false), Ok(AuthMode::Token));
    assert_eq!(with("127.0.0.1:0", None, false), Ok(AuthMode::Off));
    assert_eq!(with("[::1]:8080", None, false), Ok(AuthMode::Off));
    assert_eq!(with("localhost:8080", None, false), Ok(AuthMode::Off));
    assert!(matches!(with("0.0.0.0:8080", None, false), Err(ConfigError::NoAuthOnOpenAddress { .. })));
    assert!(matches!(with("[::]:8080", None, false), Err(ConfigError::NoAuthOnOpenAddress { .. })));
    assert_eq!(with("0.0.0.0:8080", None, true), Ok(AuthMode::Off));
    // The library refuses too, before binding anything.
    let mut config = Config::new("memory:");
    config.api_token = Some(String::new());
    let store = eslab_runtime::AnyStore::open("memory:").await.unwrap();
    let refused = eslab::serve::start_with(store, config).await.unwrap_err();
    assert!(refused.to_string().contains("empty or blank"), "{refused}");
}

#[tokio::test]
async fn warnings_and_errors_carry_the_request_id_at_the_default_level() {
    use axum::body::Body;
    use eslab_testing::logs::Captured;
    use tower::ServiceExt;
    let captured = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("warn"))
        .with_writer({
            let captured = captured.clone();
            move || captured.clone()
        })
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let dir = tempfile::tempdir().unwrap();
    let config = eslab::serve::Config::new(format!("sqlite://{}", dir.path().join("eslab.db").display()));
    let store = config.store.open().await.unwrap();
    let prepared = eslab::serve::prepare(store, &config).await.unwrap();
    let eslab_runtime::AnyStore::Sqlite(sqlite) = prepared.state.events().backend().clone() else { panic!("SQLite") };
    sqlite.close().await;
    let request_id = uuid::Uuid::now_v7().to_string();
    let request = axum::http::Request::post(format!("/accounts/{}/deposits", uuid::Uuid::now_v7()))
        .header(CONTENT_TYPE, "application/json")
        .header("x-request-id", &request_id)
        .body(Body::from(r#"{"amount": 1, "currency": "EUR"}"#))
        .unwrap();
    let response = eslab::serve::app(prepared.state.clone()).oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    let logged = captured.text();
    let line = logged
        .lines()
        .find(|l| l.contains("store unavailable") && l.contains("request{"))
        .unwrap_or_else(|| panic!("no warning: {logged}"));
    assert!(line.contains(&request_id), "the warning has no request id: {line}\nall lines:\n{logged}");
}
