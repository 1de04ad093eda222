//! Retry safety: ETags, If-Match (412), Idempotency-Key (replay, 422 on reuse
//! with another body, one effect under concurrent retries, the first answer
//! for every retry even when the others are refused).

use eslab::store::AnyStore;
use reqwest::StatusCode;
use reqwest::header::{ETAG, IF_MATCH};
use serde_json::{Value, json};

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
    let two = TestApp::spawn_with(Backend::Postgres, |c| c.schema = Some(schema)).await;
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
