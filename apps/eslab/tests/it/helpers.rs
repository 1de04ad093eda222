//! `TestApp`: the service on port 0 against a fresh memory store, SQLite file,
//! PostgreSQL schema or JetStream stream (read models in an SQLite file), with
//! a client and a few shortcuts.

use std::time::Duration;

use eslab::serve::{self, Config, Running};
use eslab_core::{Checkpoint, EventReaderExt, FeedFilter};
use eslab_runtime::AnyStore;
use eslab_testing::pg;
use futures_util::TryStreamExt;
use reqwest::{Response, StatusCode};
use serde_json::{Value, json};

/// Which store a test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Backend {
    Sqlite,
    Postgres,
    Memory,
    /// Events on the NATS test cluster (a stream of the test's own, three
    /// replicas), read models in an SQLite file.
    Nats,
}

pub(crate) struct TestApp {
    pub(crate) base: String,
    pub(crate) client: reqwest::Client,
    pub(crate) running: Option<Running>,
    token: Option<String>,
    pub(crate) dir: tempfile::TempDir,
}

impl TestApp {
    pub(crate) async fn spawn(backend: Backend) -> TestApp {
        TestApp::spawn_with(backend, |_| {}).await
    }

    pub(crate) async fn spawn_with(backend: Backend, configure: impl FnOnce(&mut Config)) -> TestApp {
        let dir = tempfile::tempdir().unwrap();
        let mut config = match backend {
            Backend::Sqlite => Config::new(format!("sqlite://{}", dir.path().join("eslab.db").display())),
            Backend::Memory => Config::new("memory:"),
            Backend::Postgres => {
                let mut c = Config::new(pg::database_url());
                c.store.schema = Some(pg::unique_name("eslab_http"));
                c
            }
            Backend::Nats => {
                let mut c = Config::new(eslab_testing::nats::nats_url());
                c.store.side_database_url = format!("sqlite://{}", dir.path().join("side.db").display());
                c.store.nats.stream = eslab_testing::nats::unique_stream("ESLAB_HTTP");
                c.store.nats.replicas = 3;
                c
            }
        };
        config.bind = "127.0.0.1:0".into();
        configure(&mut config);
        let token = config.api_token.clone();
        let store = config.store.open().await.unwrap_or_else(|e| {
            panic!(
                "cannot open the store ({e:#}); for PostgreSQL start it (e.g. `pg_ctlcluster 15 main start` or \
                 `make ensure-postgres`) or set DATABASE_URL; for NATS run `make services`"
            )
        });
        let running = serve::start_with(store, config).await.unwrap();
        TestApp {
            base: format!("http://{}", running.addr),
            client: reqwest::Client::new(),
            running: Some(running),
            token,
            dir,
        }
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub(crate) fn post(&self, path: &str) -> reqwest::RequestBuilder {
        let request = self.client.post(self.url(path));
        match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    pub(crate) async fn get(&self, path: &str) -> Response {
        self.client.get(self.url(path)).send().await.unwrap()
    }

    pub(crate) async fn post_json(&self, path: &str, body: Value) -> Response {
        self.post(path).json(&body).send().await.unwrap()
    }

    /// Opens an account and returns its id.
    pub(crate) async fn open(&self, owner: &str, overdraft_limit: i64) -> String {
        let r = self
            .post_json("/accounts", json!({"owner": owner, "currency": "EUR", "overdraft_limit": overdraft_limit}))
            .await;
        assert_eq!(r.status(), StatusCode::CREATED);
        r.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned()
    }

    pub(crate) async fn deposit(&self, id: &str, amount: i64) -> Response {
        self.post_json(&format!("/accounts/{id}/deposits"), json!({"amount": amount, "currency": "EUR"})).await
    }

    /// The account folded from the event store.
    pub(crate) async fn strong(&self, id: &str) -> Value {
        let r = self.get(&format!("/accounts/{id}?consistency=strong")).await;
        assert_eq!(r.status(), StatusCode::OK);
        r.json().await.unwrap()
    }

    /// Waits until the read model shows the account at `version`.
    pub(crate) async fn eventually(&self, id: &str, version: u64) -> Value {
        for _ in 0..200 {
            let r = self.get(&format!("/accounts/{id}")).await;
            if r.status() == StatusCode::OK {
                let body: Value = r.json().await.unwrap();
                if body["version"] == json!(version) {
                    return body;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the read model never showed account {id} at version {version}");
    }

    /// Every event in the store.
    pub(crate) async fn event_count(&self) -> usize {
        let events = self.running.as_ref().unwrap().state.events();
        let filter = FeedFilter::All;
        events.feed(&filter, Checkpoint::START).try_collect::<Vec<_>>().await.unwrap().len()
    }

    /// Graceful shutdown, then drops the PostgreSQL schema or the JetStream stream.
    pub(crate) async fn stop(mut self) {
        let running = self.running.take().unwrap();
        let store = running.state.events().backend().clone();
        running.stop().await.unwrap();
        match store {
            AnyStore::Postgres(pg) => pg.drop_schema().await.unwrap(),
            AnyStore::NatsSqlite(on) => on.events().destroy().await.unwrap(),
            _ => {}
        }
    }
}

/// Defines `mod $name { memory, sqlite, postgres, nats }` running `$test(Backend)` on each store.
macro_rules! on_every_store {
    ($name:ident, $test:ident) => {
        mod $name {
            use crate::helpers::Backend;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn memory() {
                super::$test(Backend::Memory).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$test(Backend::Sqlite).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::$test(Backend::Postgres).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn nats() {
                super::$test(Backend::Nats).await;
            }
        }
    };
}
pub(crate) use on_every_store;

/// A free TCP port on 127.0.0.1 (free when asked; a test binds it soon after).
pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A real `eslab serve` process (the crate's own binary); killed when dropped.
pub(crate) struct ServeProcess {
    child: std::process::Child,
    pub(crate) base: String,
}

impl ServeProcess {
    /// The crate's `eslab` binary, to be given `serve` and its settings.
    pub(crate) fn command() -> std::process::Command {
        std::process::Command::new(env!("CARGO_BIN_EXE_eslab"))
    }

    /// Spawns `command` (an `eslab serve` listening on 127.0.0.1:`port`) and
    /// waits up to 15 s until `/health` answers; `hint` goes in the panic
    /// message when it does not.
    pub(crate) async fn start(mut command: std::process::Command, port: u16, hint: &str) -> ServeProcess {
        let mut child = command.spawn().unwrap();
        let base = format!("http://127.0.0.1:{port}");
        let client = reqwest::Client::new();
        for _ in 0..300 {
            if client.get(format!("{base}/health")).send().await.is_ok_and(|r| r.status().is_success()) {
                return ServeProcess { child, base };
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("eslab serve did not answer on {base} within 15 s ({hint})");
    }

    /// The process id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Resident memory (VmRSS) in KiB, from /proc.
    pub(crate) fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    }

    /// Open file descriptors (sockets included), from /proc.
    pub(crate) fn open_files(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid())).unwrap().count()
    }

    /// SIGKILL: no graceful shutdown, no flush.
    pub(crate) fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
