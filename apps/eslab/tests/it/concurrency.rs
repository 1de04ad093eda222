//! 50 concurrent withdrawals of 10 from an account holding 100 with no
//! overdraft: exactly 10 succeed, 40 are refused with 422, the balance ends at
//! 0 in the store and in the read model and is never negative on the way.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{Backend, TestApp, on_every_store};

async fn fifty_withdrawals(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let a = app.open("Ada", 0).await;
    assert_eq!(app.deposit(&a, 100).await.status(), StatusCode::OK);
    let path = format!("/accounts/{a}/withdrawals");
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let request = app.post(&path).json(&json!({"amount": 10, "currency": "EUR"}));
            tokio::spawn(async move {
                let r = request.send().await.unwrap();
                let status = r.status();
                let body: Value = r.json().await.unwrap();
                (status, body)
            })
        })
        .collect();
    let (mut ok, mut refused) = (0, 0);
    for task in tasks {
        let (status, body) = task.await.unwrap();
        match status {
            StatusCode::OK => ok += 1,
            StatusCode::UNPROCESSABLE_ENTITY => {
                assert_eq!(body["rule"], "insufficient-funds");
                refused += 1;
            }
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert_eq!((ok, refused), (10, 40));
    let state = app.strong(&a).await;
    assert_eq!(state["balance"], 0);
    assert_eq!(app.eventually(&a, state["version"].as_u64().unwrap()).await["balance"], 0);
    let events: Value = app.get(&format!("/accounts/{a}/events?limit=1000")).await.json().await.unwrap();
    let balances: Vec<i64> =
        events["items"].as_array().unwrap().iter().filter_map(|e| e["payload"]["balance"].as_i64()).collect();
    assert_eq!(balances.len(), 11, "one deposit, ten withdrawals");
    assert!(balances.iter().all(|b| *b >= 0), "{balances:?}");
    app.stop().await;
}

on_every_store!(concurrent_withdrawals_never_overdraw, fifty_withdrawals);

/// Two service processes on one store: each one's cached states go stale when
/// the other writes; the append's version check catches it and the command
/// is retried on a fresh load, so no write is lost and no refusal rests on a
/// stale balance.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_services_on_one_store_lose_nothing() {
    let one = TestApp::spawn(Backend::Postgres).await;
    let schema = {
        let store = one.running.as_ref().unwrap().state.events().backend().clone();
        match store {
            eslab_runtime::AnyStore::Postgres(pg) => pg.schema().to_owned(),
            _ => unreachable!(),
        }
    };
    let two = TestApp::spawn_with(Backend::Postgres, |c| c.store.schema = Some(schema)).await;
    let a = one.open("Ada", 0).await;
    for round in 0..5 {
        assert_eq!(one.deposit(&a, 10).await.status(), StatusCode::OK, "round {round}");
        assert_eq!(two.deposit(&a, 10).await.status(), StatusCode::OK, "round {round}");
    }
    // One's cache says 50 (its own deposits); the store says 100.
    let r = one.post_json(&format!("/accounts/{a}/withdrawals"), json!({"amount": 100, "currency": "EUR"})).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(one.strong(&a).await["balance"], 0);
    assert_eq!(two.strong(&a).await["version"], 12);
    let mut two = two;
    two.running.take().unwrap().stop().await.unwrap();
    one.stop().await;
}

/// Two services on one store, the first allowed a single attempt: its cached
/// state is stale once the second has written, so its append conflicts and,
/// with no attempt left, it answers 409 (problem+json) and writes nothing.
/// Allowed a second attempt, the same request reloads and succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conflict_that_outlasts_the_retries_is_409_and_writes_nothing() {
    use reqwest::header::CONTENT_TYPE;

    let one = TestApp::spawn_with(Backend::Postgres, |c| c.max_attempts = 1).await;
    let schema = match one.running.as_ref().unwrap().state.events().backend().clone() {
        eslab_runtime::AnyStore::Postgres(pg) => pg.schema().to_owned(),
        _ => unreachable!(),
    };
    let two = TestApp::spawn_with(Backend::Postgres, |c| c.store.schema = Some(schema.clone())).await;
    let a = one.open("Ada", 0).await;
    assert_eq!(one.deposit(&a, 10).await.status(), StatusCode::OK); // one caches version 2
    assert_eq!(two.deposit(&a, 10).await.status(), StatusCode::OK); // the store is at 3
    let before = one.event_count().await;

    let r = one.deposit(&a, 10).await;
    assert_eq!(r.status(), StatusCode::CONFLICT);
    assert_eq!(r.headers()[CONTENT_TYPE], "application/problem+json");
    let problem: Value = r.json().await.unwrap();
    assert_eq!(problem["status"], 409);
    assert!(problem["detail"].as_str().unwrap().contains("gave up after 1 attempts"), "{problem}");
    assert_eq!(one.event_count().await, before, "a refused command writes nothing");
    assert_eq!(one.strong(&a).await["balance"], 20);

    // A third service on the same schema, with the default attempts, caches
    // version 3 through its own deposit; after `two` writes again its next
    // deposit conflicts once, reloads and succeeds.
    let three = TestApp::spawn_with(Backend::Postgres, |c| c.store.schema = Some(schema)).await;
    assert_eq!(three.deposit(&a, 10).await.status(), StatusCode::OK);
    assert_eq!(two.deposit(&a, 10).await.status(), StatusCode::OK);
    let r = three.deposit(&a, 10).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(three.strong(&a).await["balance"], 50);

    let (mut two, mut three) = (two, three);
    two.running.take().unwrap().stop().await.unwrap();
    three.running.take().unwrap().stop().await.unwrap();
    one.stop().await;
}
