//! Database outage: a private PostgreSQL cluster (initdb into a temporary
//! directory, its own port; the shared server is never touched) is stopped in
//! immediate mode in the middle of a load of deposits and started again. While
//! it is down, requests answer 503 problem+json within the request timeout and
//! `/ready` says not ready; once it is back, the same `eslab serve` process
//! recovers by itself, and every deposit acknowledged with a 2xx is in the
//! store exactly once (retries with the idempotency keys add nothing twice).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use reqwest::header::CONTENT_TYPE;
use serde_json::{Value, json};

use crate::helpers::{ServeProcess, free_port};

/// The service's request timeout in this test.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// What a request may take beyond it (scheduling on a busy machine).
const MARGIN: Duration = Duration::from_millis(1_500);

/// PostgreSQL's server programs: `PG_BIN`, else `pg_config --bindir`, else Debian's path.
fn pg_bin() -> PathBuf {
    if let Some(dir) = std::env::var_os("PG_BIN") {
        return PathBuf::from(dir);
    }
    let from_pg_config = Command::new("pg_config")
        .arg("--bindir")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
    let dir = from_pg_config.unwrap_or_else(|| PathBuf::from("/usr/lib/postgresql/15/bin"));
    assert!(
        dir.join("initdb").exists() && dir.join("pg_ctl").exists(),
        "no initdb/pg_ctl in {} (install the PostgreSQL server, e.g. `apt-get install postgresql-15`, or set PG_BIN)",
        dir.display()
    );
    dir
}

/// A throw-away PostgreSQL cluster: its own data directory, port and socket
/// directory. Dropping it stops it (immediate) and removes the directory.
struct Cluster {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
    /// initdb refuses to run as root: then everything runs as `postgres`.
    as_postgres: bool,
}

impl Cluster {
    fn command(&self, program: &str) -> Command {
        let program = self.bin.join(program);
        if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(program);
            c
        } else {
            Command::new(program)
        }
    }

    fn run(&self, mut command: Command, what: &str) {
        let out = command.stdin(Stdio::null()).output().unwrap_or_else(|e| panic!("{what}: cannot run: {e}"));
        assert!(
            out.status.success(),
            "{what} failed ({}): {}{}\nserver log:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(self.log()).unwrap_or_default()
        );
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn log(&self) -> PathBuf {
        self.dir.path().join("postgres.log")
    }

    fn init() -> Cluster {
        let as_postgres = Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.trim_ascii() == b"0");
        let dir = tempfile::tempdir().unwrap();
        if as_postgres {
            let chown = Command::new("chown").arg("postgres:postgres").arg(dir.path()).status().unwrap();
            assert!(chown.success(), "chown postgres {}", dir.path().display());
        }
        let cluster = Cluster { dir, bin: pg_bin(), port: free_port(), as_postgres };
        let mut initdb = cluster.command("initdb");
        initdb.args(["-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8", "-D"]).arg(cluster.data());
        cluster.run(initdb, "initdb");
        cluster.start();
        cluster
    }

    fn start(&self) {
        let mut start = self.command("pg_ctl");
        // -l: the postmaster must not inherit this process's stdout (the
        // output would never end).
        start.args(["-w", "-t", "30", "-D"]).arg(self.data()).arg("-l").arg(self.log()).arg("-o").arg(format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c max_connections=60",
            self.port,
            self.dir.path().display()
        ));
        start.arg("start");
        self.run(start, "pg_ctl start");
    }

    /// Like a crash of the server: no checkpoint, recovery from the WAL on the next start.
    fn stop_immediate(&self) {
        let mut stop = self.command("pg_ctl");
        stop.args(["-w", "-m", "immediate", "-D"]).arg(self.data()).arg("stop");
        self.run(stop, "pg_ctl stop -m immediate");
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let mut stop = self.command("pg_ctl");
        stop.args(["-w", "-m", "immediate", "-D"]).arg(self.data()).arg("stop");
        let _ = stop.stdout(Stdio::null()).stderr(Stdio::null()).status();
        // The TempDir removes the directory after this.
    }
}

/// `eslab serve` on `database_url` with the test's request timeout.
async fn start(database_url: &str, log: &Path) -> ServeProcess {
    let port = free_port();
    let log = std::fs::File::create(log).unwrap();
    let mut command = ServeProcess::command();
    command
        .args(["serve", "--request-timeout-secs", &REQUEST_TIMEOUT.as_secs().to_string()])
        .env("DATABASE_URL", database_url)
        .env("ESLAB_SCHEMA", "eslab_outage")
        .env("ESLAB_BIND", format!("127.0.0.1:{port}"))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(log);
    ServeProcess::start(command, port, "see the log in the test's cluster directory").await
}

/// One deposit request and what came of it.
#[derive(Debug)]
struct Sent {
    key: String,
    status: Option<StatusCode>,
    problem_json: bool,
    took: Duration,
}

async fn deposit(client: &reqwest::Client, base: &str, account: &str, key: &str) -> Sent {
    let started = Instant::now();
    let r = client
        .post(format!("{base}/accounts/{account}/deposits"))
        .header("Idempotency-Key", key)
        .json(&json!({"amount": 100, "currency": "EUR"}))
        .timeout(Duration::from_secs(15))
        .send()
        .await;
    let took = started.elapsed();
    let (status, problem_json) = match &r {
        Ok(r) => (Some(r.status()), r.headers().get(CONTENT_TYPE).is_some_and(|v| v == "application/problem+json")),
        Err(_) => (None, false),
    };
    Sent { key: key.to_owned(), status, problem_json, took }
}

async fn ready(client: &reqwest::Client, base: &str) -> (Option<StatusCode>, Duration) {
    let started = Instant::now();
    let r = client.get(format!("{base}/ready")).timeout(Duration::from_secs(15)).send().await;
    (r.ok().map(|r| r.status()), started.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_stopped_and_started_mid_load_is_503_fast_then_recovers_losing_nothing() {
    let cluster = tokio::task::spawn_blocking(Cluster::init).await.unwrap();
    let server = start(&cluster.url(), &cluster.dir.path().join("eslab.log")).await;
    let client = reqwest::Client::new();

    let mut accounts = Vec::new();
    for n in 0..4 {
        let r = client
            .post(format!("{}/accounts", server.base))
            .json(&json!({"owner": format!("outage {n}"), "currency": "EUR"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::CREATED);
        accounts.push(r.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned());
    }

    // 4 clients deposit with fresh keys until told to stop; a refused
    // deposit is left for the retry at the end.
    let stop = Arc::new(AtomicBool::new(false));
    let mut load = tokio::task::JoinSet::new();
    for (n, account) in accounts.iter().enumerate() {
        let (client, base, account, stop) = (client.clone(), server.base.clone(), account.clone(), stop.clone());
        load.spawn(async move {
            let mut sent = Vec::new();
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let done = deposit(&client, &base, &account, &format!("outage-{n}-{i}")).await;
                let failed = !done.status.is_some_and(|s| s.is_success());
                sent.push((Instant::now(), done));
                i += 1;
                if failed {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
            (account, sent)
        });
    }

    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let cluster = tokio::task::spawn_blocking(move || {
        cluster.stop_immediate();
        cluster
    })
    .await
    .unwrap();
    let stopped_at = Instant::now();
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Down: /ready says so, in bounded time, while the load keeps going.
    let (status, took) = ready(&client, &server.base).await;
    assert_eq!(status, Some(StatusCode::SERVICE_UNAVAILABLE), "/ready with the database down");
    assert!(took <= REQUEST_TIMEOUT + MARGIN, "/ready took {took:?} with the database down");
    tokio::time::sleep(Duration::from_millis(3_000)).await;

    let cluster = tokio::task::spawn_blocking(move || {
        cluster.start();
        cluster
    })
    .await
    .unwrap();
    let started_at = Instant::now();
    // Back: the same process becomes ready by itself.
    let mut recovered = None;
    while started_at.elapsed() < Duration::from_secs(20) {
        if ready(&client, &server.base).await.0 == Some(StatusCode::OK) {
            recovered = Some(started_at.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let recovered = recovered.unwrap_or_else(|| {
        panic!(
            "/ready never came back within 20 s of the restart; service log:\n{}",
            std::fs::read_to_string(cluster.dir.path().join("eslab.log")).unwrap_or_default()
        )
    });
    // Let the load run on the recovered service for a while.
    tokio::time::sleep(Duration::from_millis(2_000)).await;
    stop.store(true, Ordering::Relaxed);
    let mut sent = Vec::new();
    while let Some(done) = load.join_next().await {
        sent.push(done.unwrap());
    }

    let all = sent.iter().flat_map(|(_, s)| s.iter());
    let slowest = all.clone().map(|(_, s)| s.took).max().unwrap_or_default();
    let acknowledged = all.clone().filter(|(_, s)| s.status.is_some_and(|s| s.is_success())).count();
    let refused: Vec<&Sent> =
        all.clone().map(|(_, s)| s).filter(|s| !s.status.is_some_and(|s| s.is_success())).collect();
    let after_restart = all.clone().filter(|(at, s)| *at > started_at && s.status == Some(StatusCode::OK)).count();
    eprintln!(
        "outage: {} deposits, {acknowledged} acknowledged, {} refused, slowest {slowest:?}, ready {recovered:?} after \
         the restart (database down {:?}), {after_restart} acknowledged after it",
        acknowledged + refused.len(),
        refused.len(),
        started_at - stopped_at,
    );
    assert!(!refused.is_empty(), "no request saw the outage");
    for s in &refused {
        assert!(
            s.status == Some(StatusCode::SERVICE_UNAVAILABLE) && s.problem_json,
            "a deposit during the outage answered {:?} (problem+json: {}) instead of a 503 problem",
            s.status,
            s.problem_json
        );
    }
    assert!(slowest <= REQUEST_TIMEOUT + MARGIN, "a deposit took {slowest:?} (request timeout {REQUEST_TIMEOUT:?})");
    assert!(after_restart > 0, "no deposit succeeded after the database came back");

    // Nothing acknowledged is lost: each account holds at least its
    // acknowledged deposits (a 503 may still have committed)...
    for (account, keys) in &sent {
        let r = client.get(format!("{}/accounts/{account}?consistency=strong", server.base)).send().await.unwrap();
        let strong: Value = r.json().await.unwrap();
        let acked = keys.iter().filter(|(_, s)| s.status.is_some_and(|s| s.is_success())).count();
        let balance = strong["balance"].as_i64().unwrap();
        let acked = i64::try_from(acked).unwrap();
        let all = i64::try_from(keys.len()).unwrap();
        assert!((100 * acked..=100 * all).contains(&balance), "account {account}: {acked} acknowledged: {strong}");
    }
    // ...and after retrying every deposit with its key, each took effect exactly once.
    for (account, keys) in &sent {
        for (_, s) in keys {
            let retry = deposit(&client, &server.base, account, &s.key).await;
            assert!(retry.status.is_some_and(|s| s.is_success()), "retry of {}: {:?}", s.key, retry.status);
        }
        let r = client.get(format!("{}/accounts/{account}?consistency=strong", server.base)).send().await.unwrap();
        let strong: Value = r.json().await.unwrap();
        let deposits = i64::try_from(keys.len()).unwrap();
        assert_eq!(strong["balance"], json!(100 * deposits), "account {account}: {strong}");
        assert_eq!(strong["version"], json!(1 + deposits), "account {account}: {strong}");
    }
    drop(server);
    drop(cluster);
}
