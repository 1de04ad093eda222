//! Every endpoint, on the happy path.

use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::{ETAG, LOCATION};
use serde_json::{Value, json};

use crate::helpers::{Backend, TestApp, on_every_store};

async fn every_endpoint(backend: Backend) {
    let app = TestApp::spawn(backend).await;

    let r = app.post_json("/accounts", json!({"owner": "Ada", "currency": "EUR"})).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(r.headers()[ETAG], "\"1\"");
    let location = r.headers()[LOCATION].to_str().unwrap().to_owned();
    let ada: Value = r.json().await.unwrap();
    let a = ada["id"].as_str().unwrap().to_owned();
    assert_eq!(location, format!("/accounts/{a}"));
    assert_eq!(
        (ada["owner"].as_str(), ada["balance"].as_i64(), ada["status"].as_str()),
        (Some("Ada"), Some(0), Some("open"))
    );
    let b = app.open("Bob", 0).await;

    let r = app.deposit(&a, 10_000).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()[ETAG], "\"2\"");
    assert_eq!(r.json::<Value>().await.unwrap()["balance"], 10_000);
    let r = app.post_json(&format!("/accounts/{a}/withdrawals"), json!({"amount": 2_500, "currency": "EUR"})).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.json::<Value>().await.unwrap()["balance"], 7_500);

    // Read model (eventually) and event store (strong) agree.
    let eventual = app.eventually(&a, 3).await;
    assert_eq!(eventual, app.strong(&a).await);
    let r = app.get(&format!("/accounts/{a}")).await;
    assert_eq!(r.headers()[ETAG], "\"3\"");

    // The list, a page at a time.
    app.eventually(&b, 1).await;
    let page: Value = app.get("/accounts?limit=1").await.json().await.unwrap();
    assert_eq!(page["items"].as_array().unwrap().len(), 1);
    let next = page["next"].as_str().unwrap().to_owned();
    let rest: Value = app.get(&format!("/accounts?limit=1&after={next}")).await.json().await.unwrap();
    assert_eq!(rest["items"].as_array().unwrap().len(), 1);
    assert_ne!(rest["items"][0]["id"], page["items"][0]["id"]);
    let all: Value = app.get("/accounts").await.json().await.unwrap();
    assert_eq!(all["items"].as_array().unwrap().len(), 2);
    assert_eq!(all["next"], Value::Null);

    // The stream, paginated, and the state at a version.
    let r = app.get(&format!("/accounts/{a}/events?limit=2")).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()[ETAG], "\"3\"");
    let events: Value = r.json().await.unwrap();
    let types: Vec<_> = events["items"].as_array().unwrap().iter().map(|e| e["event_type"].as_str().unwrap()).collect();
    assert_eq!(types, ["AccountOpened", "MoneyDeposited"]);
    assert_eq!(events["next"], 3);
    let events: Value = app.get(&format!("/accounts/{a}/events?from=3")).await.json().await.unwrap();
    assert_eq!(events["items"][0]["event_type"], "MoneyWithdrawn");
    assert_eq!(events["next"], Value::Null);
    let r = app.get(&format!("/accounts/{a}/state?version=2")).await;
    assert_eq!(r.headers()[ETAG], "\"2\"");
    let then: Value = r.json().await.unwrap();
    assert_eq!((then["balance"].as_i64(), then["version"].as_u64()), (Some(10_000), Some(2)));
    assert_eq!(app.get(&format!("/accounts/{a}/state?version=9")).await.status(), StatusCode::NOT_FOUND);

    // A transfer: 202, then the saga completes it.
    let r = app.post_json("/transfers", json!({"from": a, "to": b, "amount": 1_500, "currency": "EUR"})).await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let location = r.headers()[LOCATION].to_str().unwrap().to_owned();
    let accepted: Value = r.json().await.unwrap();
    assert_eq!(location, format!("/transfers/{}", accepted["id"].as_str().unwrap()));
    let mut status = Value::Null;
    for _ in 0..200 {
        let body: Value = app.get(&location).await.json().await.unwrap();
        status = body["status"].clone();
        if status == "completed" {
            assert_eq!(
                (body["from"].as_str(), body["to"].as_str(), body["amount"].as_i64()),
                (Some(a.as_str()), Some(b.as_str()), Some(1_500))
            );
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(status, "completed");
    assert_eq!(app.strong(&a).await["balance"], 6_000);
    assert_eq!(app.strong(&b).await["balance"], 1_500);
    app.eventually(&b, 2).await;

    // Close needs a zero balance.
    let r = app.post(&format!("/accounts/{b}/close")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let r = app.post_json(&format!("/accounts/{b}/withdrawals"), json!({"amount": 1_500, "currency": "EUR"})).await;
    assert_eq!(r.status(), StatusCode::OK);
    let r = app.post(&format!("/accounts/{b}/close")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.json::<Value>().await.unwrap()["status"], "closed");

    // Operations.
    assert_eq!(app.get("/health").await.status(), StatusCode::OK);
    let mut ready = Value::Null;
    for _ in 0..200 {
        let r = app.get("/ready").await;
        assert_eq!(r.status(), StatusCode::OK);
        ready = r.json().await.unwrap();
        if ready["projections"].as_array().unwrap().iter().all(|p| p["behind"] == 0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let names: Vec<_> = ready["projections"].as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["bank-views", "transfer-process"]);
    assert!(ready["projections"].as_array().unwrap().iter().all(|p| p["behind"] == 0), "{ready}");
    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert!(metrics.contains("http_requests_total"), "{metrics}");
    assert!(metrics.contains("route=\"/accounts/{id}/deposits\""), "{metrics}");
    let doc: Value = app.get("/openapi.json").await.json().await.unwrap();
    for path in ["/accounts", "/accounts/{id}", "/accounts/{id}/deposits", "/transfers/{id}", "/ready"] {
        assert!(doc["paths"][path].is_object(), "{path} missing from the OpenAPI document");
    }
    assert!(doc["components"]["schemas"]["AccountBody"].is_object());
    app.stop().await;
}

on_every_store!(every_endpoint_works, every_endpoint);

#[tokio::test]
async fn a_transfer_to_a_closed_account_is_refunded_on_memory_too() {
    let app = TestApp::spawn(Backend::Memory).await;
    let a = app.open("Ada", 0).await;
    let b = app.open("Bob", 0).await;
    app.deposit(&a, 100).await;
    let r = app.post(&format!("/accounts/{b}/close")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = app.post_json("/transfers", json!({"from": a, "to": b, "amount": 40, "currency": "EUR"})).await;
    let location = r.headers()[LOCATION].to_str().unwrap().to_owned();
    let mut body = Value::Null;
    for _ in 0..200 {
        body = app.get(&location).await.json().await.unwrap();
        if body["status"] == "failed" && body["refunded"] == true {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        (body["status"].as_str(), body["reason"].as_str(), body["refunded"].as_bool()),
        (Some("failed"), Some("closed"), Some(true))
    );
    assert_eq!(app.strong(&a).await["balance"], 100);
    app.stop().await;
}
