//! `POST /transfers` with `"mode": "atomic"` (or `--transfer-mode atomic`):
//! one decision over both accounts, answered at once; refusals and unknown
//! accounts write nothing; racing retries with one key move the money once;
//! a storm of atomic and saga transfers beside plain withdrawals conserves
//! the money.

use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::LOCATION;
use serde_json::{Value, json};

use crate::helpers::{Backend, TestApp, on_every_store};

fn transfer(from: &str, to: &str, amount: i64, mode: &str) -> Value {
    json!({"from": from, "to": to, "amount": amount, "currency": "EUR", "mode": mode})
}

async fn problem_rule(r: reqwest::Response) -> (StatusCode, Value) {
    let status = r.status();
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    (status, r.json().await.unwrap())
}

async fn atomic_transfers(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (a, b) = (app.open("Ada", 0).await, app.open("Bob", 0).await);
    assert_eq!(app.deposit(&a, 1_000).await.status(), StatusCode::OK);

    let r = app.post_json("/transfers", transfer(&a, &b, 300, "atomic")).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let location = r.headers()[LOCATION].to_str().unwrap().to_owned();
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["status"], "completed");
    assert_eq!(location, format!("/transfers/{}", body["id"].as_str().unwrap()));
    // Moved when answered: no saga to wait for.
    assert_eq!(
        (app.strong(&a).await["balance"].as_i64(), app.strong(&b).await["balance"].as_i64()),
        (Some(700), Some(300))
    );
    let record: Value = app.get(&location).await.json().await.unwrap();
    assert_eq!(record["status"], "completed");

    let events = app.event_count().await;
    let (status, problem) = problem_rule(app.post_json("/transfers", transfer(&a, &b, 701, "atomic")).await).await;
    assert_eq!((status, problem["rule"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("insufficient-funds")));
    let nobody = uuid::Uuid::now_v7().to_string();
    let (status, _) = problem_rule(app.post_json("/transfers", transfer(&a, &nobody, 1, "atomic")).await).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, problem) = problem_rule(app.post_json("/transfers", transfer(&a, &a, 1, "atomic")).await).await;
    assert_eq!((status, problem["rule"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("same-account")));
    let (status, _) = problem_rule(app.post_json("/transfers", transfer(&a, &b, 1, "teleport")).await).await;
    assert!(status.is_client_error(), "{status}");
    assert_eq!(app.event_count().await, events, "refusals write nothing");

    // Racing retries with one key: one transfer, the same answer twice.
    let send =
        || app.post("/transfers").header("idempotency-key", "once").json(&transfer(&a, &b, 100, "atomic")).send();
    let (first, second) = tokio::join!(send(), send());
    let (first, second) = (first.unwrap(), second.unwrap());
    assert_eq!((first.status(), second.status()), (StatusCode::CREATED, StatusCode::CREATED));
    let replayed = [&first, &second].iter().filter(|r| r.headers().get("idempotent-replayed").is_some()).count();
    assert_eq!(replayed, 1);
    assert_eq!(first.headers()[LOCATION], second.headers()[LOCATION]);
    assert_eq!(app.strong(&a).await["balance"], 600, "moved once");

    // A key first used by another kind of request (found by schemathesis: a
    // 500, the stored answer decoded as the wrong type) is a reused key.
    let open = json!({"owner": "Cy", "currency": "EUR"});
    let r = app.post("/accounts").header("idempotency-key", "shared").json(&open).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = app.post("/transfers").header("idempotency-key", "shared").json(&transfer(&a, &b, 1, "atomic")).send();
    let (status, problem) = problem_rule(r.await.unwrap()).await;
    assert_eq!((status, problem["rule"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("idempotency-key-reused")));
    app.stop().await;
}

on_every_store!(atomic_transfers_answer_at_once_and_refusals_write_nothing, atomic_transfers);

/// The service configured atomic: a request that does not say is atomic;
/// one that says saga still goes through the saga.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_mode_is_configurable() {
    let app = TestApp::spawn_with(Backend::Memory, |c| c.transfer_mode = eslab::serve::dto::TransferMode::Atomic).await;
    let (a, b) = (app.open("Ada", 0).await, app.open("Bob", 0).await);
    app.deposit(&a, 100).await;
    let r = app.post_json("/transfers", json!({"from": a, "to": b, "amount": 10, "currency": "EUR"})).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = app.post_json("/transfers", transfer(&a, &b, 10, "saga")).await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    app.stop().await;
}

/// Atomic and saga transfers and withdrawals racing over four accounts:
/// after the saga settles, the balances plus what was withdrawn equal what
/// was deposited, and none is below zero.
async fn storm(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let mut accounts = Vec::new();
    for i in 0..4 {
        let id = app.open(&format!("owner{i}"), 0).await;
        assert_eq!(app.deposit(&id, 1_000).await.status(), StatusCode::OK);
        accounts.push(id);
    }
    let mut requests = Vec::new();
    let client = &app;
    for (n, amount) in (0..60usize).zip((0..60i64).map(|k| 50 + (k * 37) % 300)) {
        let (from, to) = (&accounts[n % 4], &accounts[(n * 3 + 1) % 4]);
        requests.push(async move {
            match n % 3 {
                0 if from != to => {
                    (0, client.post_json("/transfers", transfer(from, to, amount, "atomic")).await.status())
                }
                1 if from != to => {
                    (0, client.post_json("/transfers", transfer(from, to, amount, "saga")).await.status())
                }
                _ => {
                    let body = json!({"amount": amount, "currency": "EUR"});
                    let status = client.post_json(&format!("/accounts/{from}/withdrawals"), body).await.status();
                    (if status == StatusCode::OK { amount } else { 0 }, status)
                }
            }
        });
    }
    let results = futures_util::future::join_all(requests).await;
    for (_, status) in &results {
        assert!(
            [
                StatusCode::OK,
                StatusCode::CREATED,
                StatusCode::ACCEPTED,
                StatusCode::UNPROCESSABLE_ENTITY,
                StatusCode::CONFLICT
            ]
            .contains(status),
            "{status}"
        );
    }
    let withdrawn: i64 = results.iter().map(|(w, _)| w).sum();
    // Let the saga finish every transfer.
    let mut total = 0;
    for _ in 0..200 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let ready: Value = app.get("/ready").await.json().await.unwrap();
        if ready["projections"].as_array().unwrap().iter().all(|p| p["behind"] == 0) {
            total = 0;
            for id in &accounts {
                let balance = app.strong(id).await["balance"].as_i64().unwrap();
                assert!(balance >= 0, "{id}: {balance}");
                total += balance;
            }
            if total + withdrawn == 4_000 {
                break;
            }
        }
    }
    assert_eq!(total + withdrawn, 4_000, "money is conserved");
    app.stop().await;
}

on_every_store!(money_is_conserved_under_a_storm_of_both_modes, storm);
