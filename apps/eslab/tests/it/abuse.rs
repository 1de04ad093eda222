//! The abuse suite: hostile clients against a real `eslab serve` process on
//! loopback, bounded in counts and seconds. Each probe checks the limit that
//! stops it (docs/reliability.md, "Hostile clients"): bounded metric labels,
//! the connection cap, the header-read timeout, the write timeout, the
//! start-up checks of the configuration, and no 5xx for inputs PostgreSQL
//! refuses.

use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use eslab_testing::pg::FreshSchema;
use reqwest::{Method, StatusCode};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::{ServeProcess, free_port};

const TOKEN: &str = "abuse-suite-token";

/// `eslab serve` on a SQLite file in `dir`, writes behind [`TOKEN`], with `args`.
async fn serve(dir: &Path, args: &[&str]) -> ServeProcess {
    let port = free_port();
    let mut command = ServeProcess::command();
    command
        .arg("serve")
        .args(args)
        .env("DATABASE_URL", format!("sqlite://{}", dir.join("eslab.db").display()))
        .env("ESLAB_BIND", format!("127.0.0.1:{port}"))
        .env("ESLAB_API_TOKEN", TOKEN)
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    ServeProcess::start(command, port, "eslab serve on a SQLite file").await
}

fn addr(server: &ServeProcess) -> String {
    server.base.trim_start_matches("http://").to_owned()
}

/// A token of `len` characters that is a valid HTTP method, different for each `i`.
fn method_token(i: usize, len: usize) -> String {
    let mut token = format!("M{i}X");
    while token.len() < len {
        token.push(char::from(b'A' + u8::try_from(token.len() % 26).unwrap()));
    }
    token
}

async fn metrics_len(client: &reqwest::Client, base: &str) -> (usize, String) {
    let text = client.get(format!("{base}/metrics")).send().await.unwrap().text().await.unwrap();
    (text.len(), text)
}

/// Sends `count` requests from 16 tasks: request `i` has a method and a path made by `request(i)`.
async fn flood(base: &str, count: usize, request: fn(usize) -> (Method, String)) {
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..16 {
        let (next, base) = (next.clone(), base.to_owned());
        tasks.spawn(async move {
            let client = reqwest::Client::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= count {
                    break;
                }
                let (method, path) = request(i);
                let status = client.request(method, format!("{base}{path}")).send().await.unwrap().status();
                assert!(status.is_client_error(), "request {i}: {status}");
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
}

fn distinct_method(i: usize) -> (Method, String) {
    (Method::from_bytes(method_token(i, 2_000).as_bytes()).unwrap(), "/accounts".to_owned())
}

fn distinct_path(i: usize) -> (Method, String) {
    (Method::GET, format!("/no-such-endpoint/{i}/{}", "p".repeat(500)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn distinct_methods_and_paths_keep_metrics_and_memory_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let server = serve(dir.path(), &[]).await;
    let client = reqwest::Client::new();
    // Warm up: every series the probe can make exists, pools and arenas are filled.
    flood(&server.base, 200, distinct_method).await;
    flood(&server.base, 200, distinct_path).await;
    let (metrics_before, _) = metrics_len(&client, &server.base).await;
    let rss_before = server.rss_kib();
    // 2,000 unauthenticated requests: 1,000 distinct 2,000-byte methods, 1,000 distinct paths.
    flood(&server.base, 1_000, |i| distinct_method(i + 1_000)).await;
    flood(&server.base, 1_000, |i| distinct_path(i + 1_000)).await;
    let (metrics_after, text) = metrics_len(&client, &server.base).await;
    let rss_after = server.rss_kib();
    eprintln!(
        "measured: /metrics {metrics_before} -> {metrics_after} bytes, RSS {rss_before} -> {rss_after} KiB over 2,000 distinct methods and paths"
    );
    assert!(text.contains("method=\"other\""), "unknown methods share one label");
    assert!(!text.contains("M1500X"), "no raw method reaches the metrics");
    assert!(!text.contains("no-such-endpoint"), "no raw path reaches the metrics");
    // Histogram sums and counts change width as they grow; new series do not appear.
    assert!(
        metrics_after <= metrics_before + 2_048,
        "/metrics grew from {metrics_before} to {metrics_after} bytes with 2,000 distinct methods and paths"
    );
    assert!(
        rss_after <= rss_before + 16 * 1024,
        "RSS grew from {rss_before} KiB to {rss_after} KiB with 2,000 distinct methods and paths"
    );
}

/// Holds a connection open sending one header byte every 200 ms until `stop`
/// or until the server closes it; returns whether the server closed it.
async fn slowloris(addr: String, stop: Arc<AtomicBool>) -> bool {
    let Ok(mut stream) = TcpStream::connect(&addr).await else { return true };
    if stream.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: ").await.is_err() {
        return true;
    }
    while !stop.load(Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_millis(200)).await;
        if stream.write_all(b"x").await.is_err() {
            return true;
        }
    }
    closed_by_server(&mut stream).await
}

/// Whether the server has closed `stream` (EOF or reset within 2 s).
async fn closed_by_server(stream: &mut TcpStream) -> bool {
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout(Duration::from_secs(2), stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => {}
            Err(_) => return false,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_slow_connections_beyond_the_cap_do_not_lock_out_clients() {
    let dir = tempfile::tempdir().unwrap();
    // A long header-read timeout: only the cap can help here.
    let server = serve(dir.path(), &["--max-connections", "64", "--header-read-timeout-secs", "120"]).await;
    let addr = addr(&server);
    let files_before = server.open_files();
    let mut idle = Vec::new();
    for _ in 0..200 {
        idle.push(TcpStream::connect(&addr).await.unwrap());
    }
    let stop = Arc::new(AtomicBool::new(false));
    let slow: Vec<_> = (0..50).map(|_| tokio::spawn(slowloris(addr.clone(), stop.clone()))).collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Normal clients, each on a new connection, are served at once.
    for i in 0..20 {
        let client = reqwest::Client::builder().pool_max_idle_per_host(0).build().unwrap();
        let response =
            tokio::time::timeout(Duration::from_secs(2), client.get(format!("{}/health", server.base)).send())
                .await
                .unwrap_or_else(|_| {
                    panic!("request {i} was not answered within 2 s beside 250 idle and slow connections")
                })
                .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
    }
    let files = server.open_files();
    eprintln!(
        "measured: 20 of 20 normal requests served beside 250 idle and slow connections; {files_before} -> {files} open files (cap 64)"
    );
    assert!(files <= files_before + 64 + 4, "{files} files open with a cap of 64 connections ({files_before} before)");
    stop.store(true, Ordering::Relaxed);
    let mut closed = 0;
    for stream in &mut idle {
        closed += usize::from(closed_by_server(stream).await);
    }
    for task in slow {
        closed += usize::from(task.await.unwrap());
    }
    eprintln!("measured: the server closed {closed} of 250 idle and slow connections");
    assert!(
        closed >= 250 - 64,
        "the server closed only {closed} of 250 idle and slow connections beyond its cap of 64"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_header_read_timeout_closes_idle_slow_and_kept_alive_connections() {
    let dir = tempfile::tempdir().unwrap();
    let server = serve(dir.path(), &["--header-read-timeout-secs", "1"]).await;
    let addr = addr(&server);
    let mut idle = TcpStream::connect(&addr).await.unwrap();
    let mut kept_alive = TcpStream::connect(&addr).await.unwrap();
    kept_alive.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let mut response = [0u8; 512];
    let n = kept_alive.read(&mut response).await.unwrap();
    assert!(response[..n].starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&response[..n]));
    // A slowloris is still sending after the timeout; give it 10 s to be cut.
    let stop = Arc::new(AtomicBool::new(false));
    let slow = tokio::spawn(slowloris(addr.clone(), stop.clone()));
    tokio::time::sleep(Duration::from_secs(10)).await;
    stop.store(true, Ordering::Relaxed);
    assert!(slow.await.unwrap(), "a connection sending its head a byte at a time outlived the header-read timeout");
    assert!(closed_by_server(&mut idle).await, "a connection that sent nothing outlived the header-read timeout");
    assert!(closed_by_server(&mut kept_alive).await, "an idle kept-alive connection outlived the idle timeout");
}

/// Sends a GET of a large page on a socket with a small receive buffer and never reads.
async fn slow_reader(addr: &str) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4_096).unwrap();
    let mut stream = socket.connect(addr.parse().unwrap()).await.unwrap();
    stream.write_all(b"GET /accounts?limit=1000 HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    stream
}

/// Reads what is left of a response; returns (bytes of body received, Content-Length).
async fn drain_response(stream: &mut TcpStream) -> (usize, usize) {
    let mut received = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(n)) => received.extend_from_slice(&buf[..n]),
        }
    }
    let head_end = received.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    let head = String::from_utf8_lossy(&received[..head_end]).to_lowercase();
    let length = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .map(|v| v.trim().parse::<usize>().unwrap())
        .unwrap();
    (received.len() - head_end, length)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_readers_of_large_pages_keep_memory_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let server = serve(dir.path(), &["--write-timeout-secs", "2"]).await;
    let addr = addr(&server);
    // 1,000 accounts with long owners: a page of all of them is ~400 KB.
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let (next, base) = (next.clone(), server.base.clone());
        tasks.spawn(async move {
            let client = reqwest::Client::new();
            while next.fetch_add(1, Ordering::Relaxed) < 1_000 {
                let owner = "o".repeat(190);
                let r = client
                    .post(format!("{base}/accounts"))
                    .bearer_auth(TOKEN)
                    .json(&json!({"owner": owner, "currency": "EUR"}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), StatusCode::CREATED);
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
    // The read model catches up.
    let client = reqwest::Client::new();
    for _ in 0..200 {
        let page: serde_json::Value =
            client.get(format!("{}/accounts?limit=1000", server.base)).send().await.unwrap().json().await.unwrap();
        if page["items"].as_array().unwrap().len() == 1_000 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let rss_before = server.rss_kib();
    let mut readers = Vec::new();
    for _ in 0..20 {
        readers.push(slow_reader(&addr).await);
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_during = server.rss_kib();
    eprintln!("measured: RSS {rss_before} -> {rss_during} KiB with 20 slow readers of a 1,000-account page");
    assert!(
        rss_during <= rss_before + 64 * 1024,
        "20 slow readers of a 1,000-account page: RSS {rss_before} -> {rss_during} KiB"
    );
    // The service still serves.
    assert_eq!(client.get(format!("{}/health", server.base)).send().await.unwrap().status(), StatusCode::OK);
    drop(readers);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_cut_after_the_write_timeout() {
    use eslab::serve::server::{ConnectionLimits, serve};
    // A response far larger than the kernel's socket buffers (a page of the
    // service fits in them on loopback, so the service's own pages cannot show this).
    const BIG: usize = 64 * 1024 * 1024;
    let router = axum::Router::new().route("/big", axum::routing::get(|| async { vec![b'x'; BIG] }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let limits = ConnectionLimits { write_timeout: Duration::from_secs(1), ..ConnectionLimits::default() };
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let server = tokio::spawn(serve(listener, router, limits, stopped));
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4_096).unwrap();
    let mut reader = socket.connect(addr.parse().unwrap()).await.unwrap();
    reader.write_all(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    tokio::time::sleep(Duration::from_secs(4)).await;
    let (received, length) = drain_response(&mut reader).await;
    eprintln!("measured: a reader that stopped got {received} of {length} bytes before the write timeout cut it");
    assert_eq!(length, BIG);
    assert!(received < length, "a reader that stopped got the whole body ({received} bytes) past the write timeout");
    // A reader that reads gets all of it.
    let body = reqwest::get(format!("http://{addr}/big")).await.unwrap().bytes().await.unwrap();
    assert_eq!(body.len(), BIG);
    stop.send_replace(true);
    server.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inputs_postgres_refuses_are_never_a_5xx() {
    let schema = FreshSchema::new("eslab_abuse");
    let port = free_port();
    let mut command = ServeProcess::command();
    command
        .arg("serve")
        .env("DATABASE_URL", schema.url())
        .env("ESLAB_SCHEMA", schema.name())
        .env("ESLAB_BIND", format!("127.0.0.1:{port}"))
        .env("ESLAB_API_TOKEN", TOKEN)
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let server = ServeProcess::start(command, port, "is PostgreSQL running? `make ensure-postgres` starts it").await;
    let client = reqwest::Client::new();
    let base = &server.base;
    let r = client
        .post(format!("{base}/accounts"))
        .bearer_auth(TOKEN)
        .json(&json!({"owner": "Ada", "currency": "EUR"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let id = r.json::<serde_json::Value>().await.unwrap()["id"].as_str().unwrap().to_owned();
    for round in 0..50 {
        let gets = [
            "/accounts?after=%00".to_owned(),
            "/accounts?after=a%00b".to_owned(),
            format!("/accounts/{id}/events?from=9223372036854775808"),
            format!("/accounts/{id}/events?from=18446744073709551615"),
            format!("/accounts/{id}/state?version=9223372036854775808"),
            format!("/accounts/{id}?consistency=%00"),
        ];
        for path in &gets {
            let status = client.get(format!("{base}{path}")).send().await.unwrap().status();
            assert!(status.is_client_error(), "round {round}: GET {path}: {status}");
        }
        for body in [json!({"owner": "A\u{0}da", "currency": "EUR"}), json!({"owner": "Ada", "currency": "EU\u{0}"})] {
            let status =
                client.post(format!("{base}/accounts")).bearer_auth(TOKEN).json(&body).send().await.unwrap().status();
            assert!(status.is_client_error(), "round {round}: POST /accounts {body}: {status}");
        }
        let status = client
            .post(format!("{base}/accounts/{id}/deposits"))
            .bearer_auth(TOKEN)
            .header("If-Match", "\"9223372036854775808\"")
            .json(&json!({"amount": 1, "currency": "EUR"}))
            .send()
            .await
            .unwrap()
            .status();
        assert!(status.is_client_error(), "round {round}: If-Match beyond i64: {status}");
    }
    drop(server);
    schema.drop_schema().await;
}

/// Runs `eslab serve` with `env` until it exits (at most 60 s); returns (success, stdout + stderr).
async fn serve_exits(env: &[(&str, &str)], args: &[&str]) -> (bool, String) {
    let mut command = ServeProcess::command();
    command.arg("serve").args(args).env_remove("ESLAB_API_TOKEN").env("RUST_LOG", "warn");
    for (key, value) in env {
        command.env(key, value);
    }
    let output = tokio::time::timeout(Duration::from_secs(60), tokio::task::spawn_blocking(move || command.output()))
        .await
        .expect("eslab serve should have refused to start")
        .unwrap()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    (output.status.success(), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configuration_traps_are_start_up_errors() {
    let dir = tempfile::tempdir().unwrap();
    let sqlite = format!("sqlite://{}", dir.path().join("eslab.db").display());
    let bind = format!("127.0.0.1:{}", free_port());
    for token in ["", "   ", "\t"] {
        let (ok, text) =
            serve_exits(&[("DATABASE_URL", &sqlite), ("ESLAB_BIND", &bind), ("ESLAB_API_TOKEN", token)], &[]).await;
        assert!(!ok && text.contains("empty or blank"), "token {token:?}: {text}");
    }
    let open = format!("0.0.0.0:{}", free_port());
    let (ok, text) = serve_exits(&[("DATABASE_URL", &sqlite), ("ESLAB_BIND", &open)], &[]).await;
    assert!(!ok && text.contains("--no-auth"), "no token on 0.0.0.0: {text}");
    assert!(!dir.path().join("eslab.db").exists(), "a refused configuration opened (and created) the store");
    // A password never reaches the output, in any URL form.
    let unreachable =
        "postgres://postgres:hunter2-userinfo@127.0.0.1:1/postgres?password=hunter2-query&connect_timeout=2";
    let (ok, text) = serve_exits(&[("DATABASE_URL", unreachable), ("ESLAB_BIND", &bind)], &[]).await;
    assert!(!ok, "{text}");
    assert!(!text.contains("hunter2"), "a password was printed: {text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_off_and_query_passwords_are_said_and_hidden_at_start_up() {
    let schema = FreshSchema::new("eslab_abuse");
    let port = free_port();
    let url = format!("{}?password=hunter2-query", schema.url());
    let out = tempfile::NamedTempFile::new().unwrap();
    let mut command = ServeProcess::command();
    command
        .args(["serve", "--no-auth"])
        .env_remove("ESLAB_API_TOKEN")
        .env("DATABASE_URL", &url)
        .env("ESLAB_SCHEMA", schema.name())
        .env("ESLAB_BIND", format!("0.0.0.0:{port}"))
        .env("RUST_LOG", "warn")
        .stdout(out.reopen().unwrap())
        .stderr(Stdio::null());
    let server = ServeProcess::start(command, port, "is PostgreSQL running? `make ensure-postgres` starts it").await;
    let printed = std::fs::read_to_string(out.path()).unwrap();
    assert!(printed.contains("auth: OFF"), "{printed}");
    assert!(!printed.contains("hunter2"), "{printed}");
    assert!(printed.contains("password=***"), "{printed}");
    drop(server);
    schema.drop_schema().await;
}
