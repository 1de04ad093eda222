//! Bad input, as a table: each case gets its status (and rule), a problem
//! body, and changes nothing (the event count is the same afterwards); the
//! odd-but-valid owner names are stored exactly as sent.

use reqwest::StatusCode;
use reqwest::header::CONTENT_TYPE;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::{Backend, TestApp, on_every_store};

struct Case {
    name: &'static str,
    path: String,
    content_type: Option<&'static str>,
    body: String,
    status: StatusCode,
    rule: Option<&'static str>,
}

fn case(name: &'static str, path: &str, body: &str, status: u16, rule: Option<&'static str>) -> Case {
    Case {
        name,
        path: path.to_owned(),
        content_type: Some("application/json"),
        body: body.to_owned(),
        status: StatusCode::from_u16(status).unwrap(),
        rule,
    }
}

async fn bad_input_changes_nothing(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let a = app.open("Ada", 0).await;
    let b = app.open("Bob", 0).await;
    assert_eq!(app.deposit(&a, 100).await.status(), StatusCode::OK);
    let deposits = format!("/accounts/{a}/deposits");
    let unknown = uuid::Uuid::now_v7();
    let just_over = format!("{{\"owner\": \"{}\", \"currency\": \"EUR\"}}", "x".repeat(70 * 1024));
    let mut cases = vec![
        case("malformed JSON", "/accounts", r#"{"owner": "Ada", "currency": "#, 400, None),
        case("not an object", "/accounts", r#"[1, 2]"#, 400, None),
        case("wrong type: owner", "/accounts", r#"{"owner": 5, "currency": "EUR"}"#, 400, None),
        case("wrong type: amount", &deposits, r#"{"amount": "10", "currency": "EUR"}"#, 400, None),
        case("fractional amount", &deposits, r#"{"amount": 10.5, "currency": "EUR"}"#, 400, None),
        case("missing field: currency", "/accounts", r#"{"owner": "Ada"}"#, 400, None),
        case("missing field: amount", &deposits, r#"{"currency": "EUR"}"#, 400, None),
        case("unknown field", &deposits, r#"{"amount": 1, "currency": "EUR", "memo": "x"}"#, 400, None),
        case("zero amount", &deposits, r#"{"amount": 0, "currency": "EUR"}"#, 422, Some("non-positive-amount")),
        case("negative amount", &deposits, r#"{"amount": -5, "currency": "EUR"}"#, 422, Some("non-positive-amount")),
        case("amount beyond i64", &deposits, r#"{"amount": 9223372036854775808, "currency": "EUR"}"#, 400, None),
        case(
            "balance overflow",
            &deposits,
            r#"{"amount": 9223372036854775807, "currency": "EUR"}"#,
            422,
            Some("money-overflow"),
        ),
        case("unknown currency", &deposits, r#"{"amount": 1, "currency": "ABC"}"#, 422, Some("unknown-currency")),
        case(
            "lower-case currency",
            "/accounts",
            r#"{"owner": "Ada", "currency": "eur"}"#,
            422,
            Some("unknown-currency"),
        ),
        case("currency mismatch", &deposits, r#"{"amount": 1, "currency": "USD"}"#, 422, Some("currency-mismatch")),
        case(
            "negative overdraft",
            "/accounts",
            r#"{"owner": "Ada", "currency": "EUR", "overdraft_limit": -1}"#,
            422,
            Some("negative-overdraft-limit"),
        ),
        case("blank owner", "/accounts", r#"{"owner": "  ", "currency": "EUR"}"#, 422, Some("blank-owner")),
        case(
            "insufficient funds",
            &format!("/accounts/{a}/withdrawals"),
            r#"{"amount": 101, "currency": "EUR"}"#,
            422,
            Some("insufficient-funds"),
        ),
        case(
            "unknown account",
            &format!("/accounts/{unknown}/deposits"),
            r#"{"amount": 1, "currency": "EUR"}"#,
            404,
            None,
        ),
        case("malformed id", "/accounts/42/deposits", r#"{"amount": 1, "currency": "EUR"}"#, 400, None),
        case(
            "SQL in the id",
            "/accounts/1'%3B%20DROP%20TABLE%20events%3B--/deposits",
            r#"{"amount": 1, "currency": "EUR"}"#,
            400,
            None,
        ),
        case("body over 64 KiB", "/accounts", &just_over, 413, None),
        case(
            "transfer to itself",
            "/transfers",
            &format!(r#"{{"from": "{a}", "to": "{a}", "amount": 1, "currency": "EUR"}}"#),
            422,
            Some("same-account"),
        ),
        case(
            "transfer from unknown",
            "/transfers",
            &format!(r#"{{"from": "{unknown}", "to": "{b}", "amount": 1, "currency": "EUR"}}"#),
            404,
            None,
        ),
        case(
            "transfer, malformed id",
            "/transfers",
            &format!(r#"{{"from": "x", "to": "{b}", "amount": 1, "currency": "EUR"}}"#),
            400,
            None,
        ),
        case("close with money", &format!("/accounts/{a}/close"), "", 422, Some("non-zero-balance")),
        case("unknown endpoint", "/nope", "{}", 404, None),
    ];
    cases.push(Case {
        content_type: Some("text/plain"),
        ..case("wrong content type", "/accounts", r#"{"owner": "Ada", "currency": "EUR"}"#, 415, None)
    });
    cases.push(Case {
        content_type: None,
        ..case("no content type", &deposits, r#"{"amount": 1, "currency": "EUR"}"#, 415, None)
    });

    for case in cases {
        let before = app.event_count().await;
        let mut request = app.post(&case.path).body(case.body.clone());
        if let Some(content_type) = case.content_type {
            request = request.header(CONTENT_TYPE, content_type);
        }
        let r = request.send().await.unwrap();
        assert_eq!(r.status(), case.status, "{}", case.name);
        assert_eq!(r.headers()[CONTENT_TYPE], "application/problem+json", "{}", case.name);
        let problem: Value = r.json().await.unwrap();
        assert_eq!(problem["status"], case.status.as_u16(), "{}", case.name);
        assert!(
            problem["title"].is_string() && problem["detail"].is_string() && problem["type"].is_string(),
            "{}",
            case.name
        );
        assert_eq!(problem["rule"].as_str(), case.rule, "{}: {problem}", case.name);
        assert_eq!(app.event_count().await, before, "{} changed the store", case.name);
    }

    // 10 MB, sent the way a careful client sends a big body (Expect:
    // 100-continue): refused from its Content-Length, before it is sent.
    let before = app.event_count().await;
    let addr = app.base.trim_start_matches("http://").to_owned();
    let mut socket = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let head = format!(
        "POST /accounts HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
         Expect: 100-continue\r\nConnection: close\r\n\r\n",
        10 * 1024 * 1024
    );
    socket.write_all(head.as_bytes()).await.unwrap();
    let mut answer = String::new();
    tokio::time::timeout(std::time::Duration::from_secs(10), socket.read_to_string(&mut answer))
        .await
        .unwrap()
        .unwrap();
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.to_ascii_lowercase().contains("content-type: application/problem+json"), "{answer}");
    assert_eq!(app.event_count().await, before);

    // Odd but valid names are data, stored and shown exactly as sent.
    for owner in ["Robert'); DROP TABLE events;--", "Zoë 山田 🚀 \u{202e}", "\"quoted\" \\ back"] {
        let before = app.event_count().await;
        let r = app.post_json("/accounts", serde_json::json!({"owner": owner, "currency": "EUR"})).await;
        assert_eq!(r.status(), StatusCode::CREATED, "{owner}");
        let id = r.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned();
        assert_eq!(app.event_count().await, before + 1, "{owner}");
        assert_eq!(app.strong(&id).await["owner"], owner);
        assert_eq!(app.eventually(&id, 1).await["owner"], owner);
    }
    assert_eq!(app.strong(&a).await["balance"], 100, "nothing moved");
    app.stop().await;
}

on_every_store!(bad_input_gets_its_status_and_changes_nothing, bad_input_changes_nothing);
