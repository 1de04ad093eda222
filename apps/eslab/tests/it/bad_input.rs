//! Bad input, as a table run on every store (memory, SQLite, PostgreSQL):
//! each case gets its status (and rule), a problem body, never a 5xx, and
//! changes nothing (the event count is the same afterwards); the odd-but-valid
//! owner names are stored exactly as sent. Text with a NUL character and
//! numbers beyond `i64::MAX` are 400 on every store alike. And a page of
//! accounts with long owners (stored before the owner limit) stays under
//! `MAX_PAGE_BYTES`, and paging still reaches every account.

use eslab::serve::handlers::MAX_PAGE_BYTES;
use eslab_bank::{AccountEvent, Currency, MAX_OWNER_CHARS, OverdraftLimit, Owner};
use eslab_core::{EventAppender, ExpectedVersion, Metadata, StreamId};
use reqwest::header::{CONTENT_TYPE, IF_MATCH};
use reqwest::{Method, StatusCode};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::{Backend, TestApp, on_every_store};

struct Case {
    name: &'static str,
    method: Method,
    path: String,
    content_type: Option<&'static str>,
    if_match: Option<&'static str>,
    body: String,
    status: StatusCode,
    rule: Option<&'static str>,
    /// A word the problem's `detail` must contain (e.g. the field it names).
    names: Option<&'static str>,
}

fn case(name: &'static str, path: &str, body: &str, status: u16, rule: Option<&'static str>) -> Case {
    Case {
        name,
        method: Method::POST,
        path: path.to_owned(),
        content_type: Some("application/json"),
        if_match: None,
        body: body.to_owned(),
        status: StatusCode::from_u16(status).unwrap(),
        rule,
        names: None,
    }
}

fn get(name: &'static str, path: &str, status: u16, names: Option<&'static str>) -> Case {
    Case { method: Method::GET, content_type: None, names, ..case(name, path, "", status, None) }
}

/// Beyond `i64::MAX`, the largest number the SQL stores hold.
const BEYOND: &str = "9223372036854775808";

async fn bad_input_changes_nothing(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let a = app.open("Ada", 0).await;
    let b = app.open("Bob", 0).await;
    assert_eq!(app.deposit(&a, 100).await.status(), StatusCode::OK);
    let deposits = format!("/accounts/{a}/deposits");
    let unknown = uuid::Uuid::now_v7();
    let just_over = format!("{{\"owner\": \"{}\", \"currency\": \"EUR\"}}", "x".repeat(70 * 1024));
    let too_long = format!(r#"{{"owner": "{}", "currency": "EUR"}}"#, "x".repeat(MAX_OWNER_CHARS + 1));
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
        case("owner over the limit", "/accounts", &too_long, 422, Some("owner-too-long")),
        Case {
            names: Some("owner"),
            ..case("NUL in the owner", "/accounts", r#"{"owner": "A\u0000da", "currency": "EUR"}"#, 400, None)
        },
        Case {
            names: Some("currency"),
            ..case("NUL in the currency", &deposits, r#"{"amount": 1, "currency": "EU\u0000"}"#, 400, None)
        },
        Case {
            names: Some("from"),
            ..case(
                "NUL in a transfer's account",
                "/transfers",
                &format!(r#"{{"from": "\u0000", "to": "{b}", "amount": 1, "currency": "EUR"}}"#),
                400,
                None,
            )
        },
        Case {
            if_match: Some("\"9223372036854775808\""),
            names: Some("If-Match"),
            ..case("If-Match beyond i64", &deposits, r#"{"amount": 1, "currency": "EUR"}"#, 400, None)
        },
        Case {
            if_match: Some("\"9223372036854775807\""),
            ..case("If-Match at i64::MAX", &deposits, r#"{"amount": 1, "currency": "EUR"}"#, 412, None)
        },
        Case {
            if_match: Some("\"9223372036854775808\""),
            ..case("If-Match beyond i64, close", &format!("/accounts/{a}/close"), "", 400, None)
        },
        get("NUL in after", "/accounts?after=%00", 400, Some("after")),
        get("NUL in after, with a limit", "/accounts?limit=5&after=a%00", 400, Some("after")),
        get("NUL in consistency", &format!("/accounts/{a}?consistency=%00"), 400, Some("consistency")),
        get("events from beyond i64", &format!("/accounts/{a}/events?from={BEYOND}"), 400, Some("from")),
        get("events from beyond u64", &format!("/accounts/{a}/events?from=18446744073709551616"), 400, Some("from")),
        get("events limit beyond i64", &format!("/accounts/{a}/events?limit={BEYOND}"), 400, Some("limit")),
        get("state at a version beyond i64", &format!("/accounts/{a}/state?version={BEYOND}"), 400, Some("version")),
        get("state at i64::MAX", &format!("/accounts/{a}/state?version=9223372036854775807"), 404, None),
        get("NUL in a transfer id", "/transfers/%00", 400, None),
        get("unknown query parameter", "/accounts?colour=red", 400, None),
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

    // A connection per case: the server closes the one whose body it refused
    // unread (413), and a pooled client could send the next case on it.
    let client = reqwest::Client::builder().pool_max_idle_per_host(0).build().unwrap();
    for case in cases {
        let before = app.event_count().await;
        let mut request = match case.method {
            Method::GET => client.get(app.url(&case.path)),
            _ => client.post(app.url(&case.path)).body(case.body.clone()),
        };
        if let Some(content_type) = case.content_type {
            request = request.header(CONTENT_TYPE, content_type);
        }
        if let Some(if_match) = case.if_match {
            request = request.header(IF_MATCH, if_match);
        }
        let r = request.send().await.unwrap();
        assert!(!r.status().is_server_error(), "{}: {}", case.name, r.status());
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
        if let Some(word) = case.names {
            assert!(problem["detail"].as_str().unwrap().contains(word), "{}: {problem}", case.name);
        }
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

    // In range, past the end of the stream: an empty page, on every store.
    let r = app.get(&format!("/accounts/{a}/events?from=9223372036854775807")).await;
    assert_eq!(r.status(), StatusCode::OK);
    let page: Value = r.json().await.unwrap();
    assert_eq!((page["items"].as_array().map(Vec::len), &page["next"]), (Some(0), &Value::Null));

    // Odd but valid names are data, stored and shown exactly as sent: among
    // them the text `\u0000` (an escaped backslash, not a NUL) and the
    // longest owner allowed, in two-byte characters.
    let longest = "é".repeat(MAX_OWNER_CHARS);
    for owner in
        ["Robert'); DROP TABLE events;--", "Zoë 山田 🚀 \u{202e}", "\"quoted\" \\ back", "A\\u0000da", longest.as_str()]
    {
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

/// Accounts opened before the owner limit, with owners of 60 KiB (appended
/// directly: the service refuses them now), are still served: `GET /accounts`
/// pages stay under `MAX_PAGE_BYTES` (cut early, with `next`), and following
/// `next` reaches every account exactly once.
async fn long_owners_page_under_the_byte_limit(backend: Backend) {
    const LONG: usize = 20;
    let app = TestApp::spawn(backend).await;
    let mut ids = vec![app.open("Ada", 0).await, app.open("Bob", 0).await];
    let events = app.running.as_ref().unwrap().state.events();
    for i in 0..LONG {
        let id = uuid::Uuid::now_v7().hyphenated().to_string();
        let opened = AccountEvent::AccountOpened {
            owner: Owner { name: format!("{i:02}").repeat(30 * 1024).into() },
            currency: "EUR".parse::<Currency>().unwrap(),
            overdraft_limit: OverdraftLimit::NONE,
        };
        let stream = StreamId::new("account", &id).unwrap();
        let event = eslab_core::encode_events::<eslab_bank::Account>(&stream, &[opened], &Metadata::now(), None, 0);
        events.append(&stream, ExpectedVersion::NoStream, event.unwrap()).await.unwrap();
        ids.push(id);
    }
    for id in &ids {
        app.eventually(id, 1).await;
    }
    let mut seen = Vec::new();
    let mut pages = 0;
    let mut path = "/accounts?limit=1000".to_owned();
    loop {
        let r = app.get(&path).await;
        assert_eq!(r.status(), StatusCode::OK);
        let body = r.bytes().await.unwrap();
        assert!(body.len() <= MAX_PAGE_BYTES, "a page of {} bytes", body.len());
        let page: Value = serde_json::from_slice(&body).unwrap();
        let items = page["items"].as_array().unwrap();
        assert!(!items.is_empty(), "every page holds an account");
        seen.extend(items.iter().map(|a| a["id"].as_str().unwrap().to_owned()));
        pages += 1;
        match page["next"].as_str() {
            Some(next) => path = format!("/accounts?limit=1000&after={next}"),
            None => break,
        }
    }
    assert!(pages >= 2, "{LONG} owners of 60 KiB do not fit one page");
    ids.sort();
    assert_eq!(seen, ids, "every account once, in id order");
    app.stop().await;
}

on_every_store!(long_owners_page_under_the_byte_limit_on_every_store, long_owners_page_under_the_byte_limit);
