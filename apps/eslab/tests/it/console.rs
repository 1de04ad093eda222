//! The console in a real browser: headless Chromium driven over WebDriver
//! (Debian's `chromium` and `chromium-driver`, installed by `make browser`,
//! which `make test` runs) against `eslab serve` on a fresh SQLite file.
//!
//! The walk: find an account's stream, an owner named with markup shown as
//! text (no script runs), a deposit made through the API appearing in the
//! live feed, a transfer's correlation id followed across its three
//! streams, an event parked by a read model that cannot apply it, repaired
//! and retried from the page (the token asked for), time travel, the lab
//! report. With `ESLAB_CONSOLE_SCREENSHOTS=<dir>` it saves a PNG of each
//! page there (docs/console.md's pictures).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use eslab_core::{EventAppender, EventReader, ExpectedVersion, NewEvent, StreamId, Version};
use fantoccini::{Client, ClientBuilder, Locator};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{Backend, TestApp, free_port};

const TOKEN: &str = "console-test-token";
const HOSTILE: &str = "<script>alert(1)</script>\"><img src=x onerror=alert(2)>";

/// chromedriver on a free port, and a headless Chromium session through it.
struct Browser {
    driver: Child,
    client: Option<Client>,
    shots: Option<PathBuf>,
}

impl Browser {
    async fn start() -> Browser {
        let driver_path = std::env::var("CHROMEDRIVER").unwrap_or_else(|_| "/usr/bin/chromedriver".into());
        let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
        for (what, path) in [("chromedriver", &driver_path), ("chromium", &chromium)] {
            assert!(
                std::path::Path::new(path).exists(),
                "{what} is not at {path}: run `make browser` (apt-get install chromium chromium-driver), \
                 or set CHROMEDRIVER / CHROMIUM"
            );
        }
        let port = free_port();
        let driver = Command::new(&driver_path)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {driver_path}: {e}"));
        let url = format!("http://127.0.0.1:{port}");
        let mut capabilities = serde_json::Map::new();
        capabilities.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": chromium,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         "--window-size=1280,1000", "--hide-scrollbars"],
            }),
        );
        let mut last = None;
        for _ in 0..100 {
            let connector = hyper_util::client::legacy::connect::HttpConnector::new();
            match ClientBuilder::new(connector).capabilities(capabilities.clone()).connect(&url).await {
                Ok(client) => {
                    let shots = std::env::var_os("ESLAB_CONSOLE_SCREENSHOTS").map(PathBuf::from);
                    return Browser { driver, client: Some(client), shots };
                }
                Err(e) => last = Some(e),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("chromedriver on {url} did not start a Chromium session: {last:?}");
    }

    fn client(&self) -> &Client {
        self.client.as_ref().unwrap()
    }

    async fn goto(&self, url: &str) {
        self.client().goto(url).await.unwrap();
    }

    /// The text of the first element matching `css`, waiting up to 10 s for it.
    async fn text(&self, css: &str) -> String {
        let element = self.wait(css).await;
        element.text().await.unwrap()
    }

    async fn wait(&self, css: &str) -> fantoccini::elements::Element {
        self.client()
            .wait()
            .at_most(Duration::from_secs(10))
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no {css} within 10 s: {e}"))
    }

    async fn count(&self, css: &str) -> usize {
        self.client().find_all(Locator::Css(css)).await.unwrap().len()
    }

    async fn script(&self, code: &str) -> Value {
        self.client().execute(code, Vec::new()).await.unwrap()
    }

    /// Saves a screenshot of the page as `<name>.png` when asked to.
    async fn shot(&self, name: &str) {
        if let Some(dir) = &self.shots {
            std::fs::create_dir_all(dir).unwrap();
            let png = self.client().screenshot().await.unwrap();
            std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
        }
    }

    async fn close(mut self) {
        if let Some(client) = self.client.take() {
            client.close().await.unwrap();
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// Waits (up to 10 s) until `done` says yes.
async fn until<F: std::future::Future<Output = bool>>(what: &str, mut done: impl FnMut() -> F) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if done().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("{what}: not within 10 s");
}

#[tokio::test]
async fn the_console_in_a_real_browser() {
    let lab = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/lab-results");
    let app = TestApp::spawn_with(Backend::Sqlite, |c| {
        c.api_token = Some(TOKEN.into());
        c.lab_report = Some(lab);
    })
    .await;
    let browser = Browser::start().await;
    let console = app.url("/console");

    // Accounts: one owner named with markup.
    let ada = app.open("Ada Lovelace", 0).await;
    let mallory = app.open(HOSTILE, 0).await;
    let bob = app.open("Bob", 0).await;
    assert_eq!(app.deposit(&ada, 10_000).await.status(), StatusCode::OK);
    assert_eq!(app.deposit(&mallory, 500).await.status(), StatusCode::OK);

    // Streams: the categories, the account category, then find Ada's stream by id.
    browser.goto(&console).await;
    browser.wait("table.categories").await;
    browser.shot("categories").await;
    browser.client().find(Locator::LinkText("account")).await.unwrap().click().await.unwrap();
    browser.wait("table.streams").await;
    assert!(browser.count("table.streams tbody tr").await >= 3);
    browser.shot("streams").await;
    let search = browser.wait("form.find input[name=id]").await;
    search.send_keys(&format!("account-{ada}")).await.unwrap();
    browser.client().find(Locator::Css("form.find button")).await.unwrap().click().await.unwrap();
    browser.wait("section.events article.event").await;
    assert_eq!(browser.text("h1").await, format!("Stream account-{ada}"));
    assert_eq!(browser.count("article.event").await, 2, "opened and one deposit");
    assert!(browser.text("article.event pre.payload").await.contains("Ada Lovelace"));
    browser.shot("stream").await;

    // Hostile data renders as text; no script of it runs.
    browser.goto(&format!("{console}/streams/account-{mallory}")).await;
    let payload = browser.text("article.event pre.payload").await;
    assert!(payload.contains("<script>alert(1)</script>"), "the name shows as text: {payload}");
    assert!(browser.client().get_alert_text().await.is_err(), "no alert opened");
    let injected = browser
        .script("return [document.querySelectorAll('script:not([src])').length, document.querySelectorAll('img[src=\"x\"]').length]")
        .await;
    assert_eq!(injected, json!([0, 0]), "no element was made from the name");

    // Live feed: a deposit made through the API appears without a reload.
    browser.goto(&format!("{console}/live")).await;
    browser.wait("#live-feed[data-live=true]").await;
    let marker = browser.script("window.__marker = 1; return window.__marker").await;
    assert_eq!(marker, json!(1));
    assert_eq!(app.deposit(&ada, 2_500).await.status(), StatusCode::OK);
    let deposited = Instant::now();
    let selector = format!("#live-feed li.event[data-stream=\"account-{ada}\"][data-type=MoneyDeposited]");
    until("the deposit in the live feed", || async { browser.count(&selector).await > 0 }).await;
    let seen_after = deposited.elapsed();
    eprintln!("live feed: the deposit appeared {} ms after the API answered", seen_after.as_millis());
    assert_eq!(browser.script("return window.__marker").await, json!(1), "the page was not reloaded");
    browser.shot("live").await;

    // A transfer: its correlation id across its own stream and both accounts.
    let r = app.post_json("/transfers", json!({"from": ada, "to": bob, "amount": 1_500, "currency": "EUR"})).await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let transfer = r.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned();
    until("the transfer completes", || async {
        let body: Value = app.get(&format!("/transfers/{transfer}")).await.json().await.unwrap();
        body["status"] == "completed"
    })
    .await;
    browser.goto(&format!("{console}/streams/transfer-{transfer}")).await;
    browser.wait("a.correlation").await.click().await.unwrap();
    browser.wait("ol.timeline").await;
    let summary = browser.text("p.summary").await;
    assert!(summary.contains("in 3 streams"), "{summary}");
    for stream in [format!("transfer-{transfer}"), format!("account-{ada}"), format!("account-{bob}")] {
        assert!(summary.contains(&stream), "{stream} in {summary}");
    }
    browser.shot("request").await;

    // A parked event: a deposit recorded for an account the read model has
    // never seen (appended past the bank's rules), which it refuses.
    let running = app.running.as_ref().unwrap();
    let events = running.state.events();
    let ada_stream: StreamId = format!("account-{ada}").parse().unwrap();
    let deposit = events.read_stream(&ada_stream, Version::new(2), 1).await.unwrap().pop().unwrap();
    let ghost_id = uuid::Uuid::now_v7().to_string();
    let ghost: StreamId = format!("account-{ghost_id}").parse().unwrap();
    let raw = NewEvent::new(&deposit.event_type, deposit.schema_version, deposit.payload.clone(), deposit.metadata);
    events.append(&ghost, ExpectedVersion::NoStream, vec![raw]).await.unwrap();
    let parked = format!("section.parked[data-stream=\"account-{ghost_id}\"]");
    let parked = parked.as_str();
    until("the ghost deposit is parked", || async {
        browser.goto(&format!("{console}/projections")).await;
        browser.count(parked).await > 0
    })
    .await;
    assert!(browser.text(&format!("{parked} p.reason")).await.contains("does not follow"));
    browser.shot("projections").await;
    // Without the token the action is refused and nothing changes.
    browser.wait(&format!("{parked} button.retry")).await.click().await.unwrap();
    until("the refusal", || async { browser.text("#action-status").await.contains("failed (401)") }).await;
    assert_eq!(browser.count(parked).await, 1);
    // The operator repairs the read model, then retries with the token.
    let db = app.dir.path().join("eslab.db");
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", db.display())).await.unwrap();
    sqlx::query(
        "INSERT INTO account_summary (id, owner, currency, balance, overdraft_limit, status, version) \
         VALUES (?, '', 'EUR', 0, 0, 'open', 0)",
    )
    .bind(&ghost_id)
    .execute(&pool)
    .await
    .unwrap();
    pool.close().await;
    browser.wait("#token").await.send_keys(TOKEN).await.unwrap();
    browser.wait(&format!("{parked} button.retry")).await.click().await.unwrap();
    until("the retry", || async { browser.count(parked).await == 0 && browser.count("table.projections").await == 1 })
        .await;
    let ghost_view: Value = app.get(&format!("/accounts/{ghost_id}")).await.json().await.unwrap();
    assert_eq!(ghost_view["version"], 1, "the retried deposit reached the read model: {ghost_view}");

    // Time travel: Ada's account at version 1 and now.
    browser.goto(&format!("{console}/state/account-{ada}?version=1")).await;
    let state = browser.text("pre.state").await;
    assert!(state.contains("\"balance\": 0"), "{state}");
    browser.shot("state").await;
    browser.goto(&format!("{console}/state/account-{ada}")).await;
    let now = browser.text("pre.state").await;
    assert!(now.contains("\"balance\": 11000"), "10 000 + 2 500 - 1 500: {now}");

    // The lab report, its tables and a chart.
    browser.goto(&format!("{console}/lab")).await;
    browser.wait("article.lab table").await;
    browser.shot("lab").await;
    browser.goto(&format!("{console}/lab/peers")).await;
    browser.wait("article.lab img").await;
    until("the chart loads", || async {
        browser
            .script("const i = document.querySelector('article.lab img'); return i.complete && i.naturalWidth > 0")
            .await
            == json!(true)
    })
    .await;

    // Nothing shown anywhere names the database or the token.
    for path in ["", "/projections", "/live", "/lab"] {
        browser.goto(&format!("{console}{path}")).await;
        let html = browser.script("return document.documentElement.outerHTML").await;
        let html = html.as_str().unwrap();
        assert!(!html.contains(TOKEN) && !html.contains("eslab.db") && !html.contains("sqlite://"), "{path}");
    }

    browser.close().await;
    app.stop().await;
}

/// Reads SSE messages from `response` until `want` events arrived; returns
/// (checkpoint, stream, version) of each.
async fn read_events(response: &mut reqwest::Response, want: usize, buffer: &mut String) -> Vec<(String, String, u64)> {
    let mut got = Vec::new();
    while got.len() < want {
        let chunk = tokio::time::timeout(Duration::from_secs(10), response.chunk())
            .await
            .expect("an event within 10 s")
            .unwrap()
            .expect("the stream goes on");
        buffer.push_str(std::str::from_utf8(&chunk).unwrap());
        while let Some(end) = buffer.find("\n\n") {
            let message: String = buffer.drain(..end + 2).collect();
            let id = message.lines().find_map(|l| l.strip_prefix("id:")).map(|s| s.trim().to_owned());
            let data = message.lines().find_map(|l| l.strip_prefix("data:"));
            if let (Some(id), Some(data)) = (id, data) {
                let event: Value = serde_json::from_str(data.trim()).unwrap();
                let stream = event["stream_id"].as_str().unwrap().to_owned();
                got.push((id, stream, event["stream_version"].as_u64().unwrap()));
            }
        }
    }
    got
}

/// Backends of this test's schema that LISTEN (the store names them `eslab-listen-<schema>`).
async fn listeners(schema: &str) -> i64 {
    let pool = sqlx::PgPool::connect(&eslab_testing::pg::database_url()).await.unwrap();
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_stat_activity WHERE application_name = $1")
        .bind(format!("eslab-listen-{schema}"))
        .fetch_one(&pool)
        .await
        .unwrap();
    pool.close().await;
    n
}

/// `GET /events/stream` on PostgreSQL: 24 clients at once share one LISTEN
/// connection (a client per connection would let anyone use up the
/// database's); each sees every deposit made by 4 concurrent writers exactly
/// once and in each account's order, one of them across a dropped connection
/// resumed with Last-Event-ID; the shared LISTEN connection closes with the
/// last client (the service's projections keep their own).
#[tokio::test]
async fn event_streams_share_one_listen_and_resume_without_loss_on_postgres() {
    let schema = eslab_testing::pg::unique_name("console_sse");
    let app = TestApp::spawn_with(Backend::Postgres, |c| c.store.schema = Some(schema.clone())).await;
    let mut accounts = Vec::new();
    for i in 0..4 {
        accounts.push(app.open(&format!("writer {i}"), 0).await);
    }
    // The service's own projections listen too (one connection each).
    let before = listeners(&schema).await;
    let client = reqwest::Client::new();
    let open = |last: Option<String>| {
        let mut request = client.get(app.url("/events/stream?category=account"));
        if let Some(last) = last {
            request = request.header("Last-Event-ID", last);
        }
        request.send()
    };
    let mut streams = Vec::new();
    for _ in 0..24 {
        let response = open(None).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        streams.push((response, String::new()));
    }
    // Every client sees the 4 openings first.
    for (response, buffer) in &mut streams {
        assert_eq!(read_events(response, 4, buffer).await.len(), 4);
    }
    let listening = listeners(&schema).await - before;
    assert!(listening <= 1, "24 streams hold {listening} LISTEN connections");

    const DEPOSITS: usize = 10;
    let writers = accounts.iter().map(|id| async {
        for _ in 0..DEPOSITS {
            assert_eq!(app.deposit(id, 100).await.status(), StatusCode::OK);
        }
    });
    let writing = futures_util::future::join_all(writers);
    // Client 0 drops after 5 deposits and resumes from its last event.
    let resumed = async {
        let (mut response, mut buffer) = streams.remove(0);
        let mut seen = read_events(&mut response, 5, &mut buffer).await;
        drop(response);
        let last = seen.last().unwrap().0.clone();
        let mut again = open(Some(last)).await.unwrap();
        let mut buffer = String::new();
        seen.extend(read_events(&mut again, 4 * DEPOSITS - 5, &mut buffer).await);
        seen
    };
    let (_, resumed) = tokio::join!(writing, resumed);
    let mut all = vec![resumed];
    for (response, buffer) in &mut streams {
        all.push(read_events(response, 4 * DEPOSITS, buffer).await);
    }
    for seen in &all {
        let mut per_account: std::collections::HashMap<&str, Vec<u64>> = std::collections::HashMap::new();
        for (_, stream, version) in seen {
            per_account.entry(stream.as_str()).or_default().push(*version);
        }
        assert_eq!(per_account.len(), 4);
        for versions in per_account.values() {
            assert_eq!(*versions, (2..=1 + DEPOSITS as u64).collect::<Vec<_>>(), "every deposit once, in order");
        }
    }
    drop(streams);
    until("the LISTEN connection closes with the last stream", || async { listeners(&schema).await == before }).await;
    app.stop().await;
}

/// `eslab console` alone: serves the pages on loopback against DATABASE_URL,
/// and refuses an address other machines can reach without a token.
#[tokio::test]
async fn eslab_console_serves_the_console_alone() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("eslab.db").display());
    let command = |bind: &str| {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_eslab"));
        command
            .arg("console")
            .env("DATABASE_URL", &url)
            .env("ESLAB_CONSOLE_BIND", bind)
            .env_remove("ESLAB_API_TOKEN")
            .env_remove("ESLAB_NO_AUTH")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        command
    };
    let refused = command("0.0.0.0:0").output().unwrap();
    assert!(!refused.status.success());
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(said.contains("no API token"), "{said}");

    let port = free_port();
    let mut child = command(&format!("127.0.0.1:{port}")).spawn().unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let mut page = None;
    for _ in 0..300 {
        if let Ok(r) = client.get(format!("{base}/console")).send().await {
            page = Some(r);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let page = page.expect("eslab console answers within 15 s");
    assert_eq!(page.status(), StatusCode::OK);
    assert!(page.headers()["content-security-policy"].to_str().unwrap().contains("script-src 'self'"));
    assert!(page.text().await.unwrap().contains("No events yet."));
    let stream = client.get(format!("{base}/events/stream")).send().await.unwrap();
    assert_eq!(stream.headers()["content-type"], "text/event-stream");
    drop(stream);
    let _ = child.kill();
    let _ = child.wait();
}

/// Hostile URLs on every store: text a store refuses (NUL), ids past every
/// limit, paths out of the lab report. Each is a clear 4xx, never a 5xx.
async fn hostile_console_requests_are_refused(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let ada = app.open("Ada", 0).await;
    let long = "a".repeat(300);
    let cases = [
        "/console/?after=%00".to_owned(),
        "/console/?after=x%00y".to_owned(),
        "/console/streams?category=%00".to_owned(),
        "/console/streams?category=account&after=account-%00".to_owned(),
        format!("/console/streams?category=account&after=account-{long}"),
        "/console/streams/account-%00".to_owned(),
        format!("/console/streams/account-{long}"),
        format!("/console/streams/account-{ada}?from=-1"),
        "/console/find?id=%00".to_owned(),
        "/console/requests/00000000-0000-0000-0000-000000000000?after=99999999999999999999".to_owned(),
        "/console/requests/%00".to_owned(),
        "/console/state/account-%00".to_owned(),
        "/console/state/account-not-a-uuid".to_owned(),
        "/console/state/nothing-1".to_owned(),
        "/console/lab/..%2F..%2Fetc%2Fpasswd".to_owned(),
        "/console/lab/files/..%2Fsecret.svg".to_owned(),
        "/console/lab/files/x.exe".to_owned(),
        "/events/stream?category=%00".to_owned(),
        "/events/stream?after=1:2:3".to_owned(),
        format!("/events/stream?type={}", vec!["T"; 40].join(",")),
    ];
    for path in &cases {
        let r = app.get(path).await;
        let status = r.status();
        assert!(status.is_client_error(), "{backend:?} {path}: {status} {}", r.text().await.unwrap_or_default());
    }
    // Far beyond the end is an empty page, not an error.
    let r = app.get("/console/requests/00000000-0000-0000-0000-000000000000?after=18446744073709551615").await;
    assert_eq!(r.status(), StatusCode::OK);
    app.stop().await;
}

crate::helpers::on_every_store!(hostile_console_requests, hostile_console_requests_are_refused);
