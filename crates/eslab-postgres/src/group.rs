//! Group commit: an opt-in mode of the store that coalesces the
//! single-stream appends of concurrent callers into one statement and one
//! commit, so a burst of small commands pays for one WAL flush instead of one
//! each.
//!
//! Each append is still judged on its own expectation: a conflict on one
//! stream fails that caller only (see the crate's `GROUP_SQL`).
//!
//! Every batch a flusher takes records, through the `metrics` facade (a
//! no-op until the application installs a recorder),
//! `eslab_group_commit_appends` (appends in it; 1 is a lone append, sent
//! through the store's one-stream path) and `eslab_group_commit_queued_seconds`
//! (how long its oldest append waited in the queue); every grouped statement
//! `eslab_group_commit_statement_seconds` (connection, statement and commit).

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use eslab_core::{AppendResult, Error, EventAppender, Result, StreamAppend};
use futures_util::future::join_all;
use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, PgConnection};
use tokio::sync::{Mutex, mpsc, oneshot};

use crate::append::{Batch, GroupOutcome};
use crate::error::connection_survives;
use crate::{Notify, PostgresStore};

/// Settings of group commit ([`PostgresOptions::group_commit`](crate::PostgresOptions::group_commit),
/// [`PostgresStore::with_group_commit`]).
///
/// Semantics stay the store's: the same optimistic concurrency per stream
/// (one stream's conflict fails only its own caller), the same gap-safe feed
/// (a group is one transaction), the same wake-ups. What changes is cost: at
/// 32 concurrent callers a group carries tens of appends per commit.
/// Multi-stream appends and empty appends are never grouped.
///
/// ```no_run
/// # async fn run() -> eslab_core::Result<()> {
/// use eslab_postgres::{GroupCommitOptions, PostgresOptions, PostgresStore};
///
/// let url = "postgres://postgres@127.0.0.1:5432/postgres";
/// let options = PostgresOptions::new(url, "eslab").group_commit(GroupCommitOptions::default());
/// let store = PostgresStore::connect_with(options).await?;
/// // Use `store` as any store: `EventStore::new(store)`, `Repository`, …
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct GroupCommitOptions {
    max_batch: usize,
    flushers: usize,
    queue: usize,
}

/// The default [`GroupCommitOptions::flushers`].
pub const DEFAULT_GROUP_FLUSHERS: usize = 2;

impl Default for GroupCommitOptions {
    fn default() -> Self {
        GroupCommitOptions { max_batch: 512, flushers: DEFAULT_GROUP_FLUSHERS, queue: 8192 }
    }
}

impl GroupCommitOptions {
    /// At most this many appends per statement (default 512; at least 1).
    #[must_use]
    pub fn max_batch(mut self, n: usize) -> Self {
        self.max_batch = n.max(1);
        self
    }

    /// How many statements may be in flight at once, each on its own
    /// connection (default 2; at least 1). A flusher takes its share of the
    /// waiting appends, split among the flushers free to send, so that
    /// concurrent callers go out as that many statements side by side rather
    /// than as one large statement executed by one PostgreSQL backend while
    /// the others wait.
    ///
    /// Each flusher keeps one connection of its own, outside the store's
    /// pool, named `eslab-group-<schema>` (`application_name`): opened with
    /// the pool's settings for its first statement (within the pool's
    /// acquire timeout) and again after a failure that may have broken it,
    /// closed when the flushers stop. So the server sees up to
    /// `max_connections` plus this many connections from the store. A
    /// flusher that cannot open its connection (the server or the role at
    /// its connection limit) sends its batches through the pool instead, one
    /// append per statement, logs a warning, and tries again a second later.
    /// Taking a pooled connection per statement instead spreads the
    /// statements over every backend the pool has open, each with cold
    /// caches: at 32 callers that cost about 40% more server CPU per append
    /// (see `docs/lab.md`, experiment 4).
    ///
    /// More flushers cut the same callers' appends into smaller statements,
    /// each paying the statement's fixed cost: at 32 HTTP connections, 3 or
    /// 4 flushers cost about 28% more CPU per deposit than 2 and served
    /// fewer (`docs/patterns/http-api.md`).
    #[must_use]
    pub fn flushers(mut self, n: usize) -> Self {
        self.flushers = n.max(1);
        self
    }

    /// How many appends may wait before callers wait to enqueue (default 8192; at least 1).
    #[must_use]
    pub fn queue(mut self, n: usize) -> Self {
        self.queue = n.max(1);
        self
    }
}

/// Histogram: appends per group-commit statement.
pub(crate) const BATCH_APPENDS: &str = "eslab_group_commit_appends";
/// Histogram: seconds the oldest append of a group waited in the queue before its statement was sent.
pub(crate) const QUEUED_SECONDS: &str = "eslab_group_commit_queued_seconds";
/// Histogram: seconds from the flusher's connection (opened first when it has none) to the committed statement's rows, per group.
pub(crate) const STATEMENT_SECONDS: &str = "eslab_group_commit_statement_seconds";

/// One caller's append, waiting for its statement.
pub(crate) struct Request {
    append: StreamAppend,
    reply: oneshot::Sender<Result<AppendResult>>,
    queued: Instant,
}

impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Request").field("stream", &self.append.stream_id).finish_non_exhaustive()
    }
}

/// The sending end of a store's group-commit queue.
pub(crate) type Queue = mpsc::Sender<Request>;

/// Starts the flusher tasks of a queue on the current Tokio runtime; they
/// append through `direct` (a store without a queue).
pub(crate) fn spawn(direct: PostgresStore, options: &GroupCommitOptions) -> Result<Queue> {
    let runtime = tokio::runtime::Handle::try_current()
        .map_err(|_| Error::InvalidRequest("group commit must be started inside a Tokio runtime".into()))?;
    let (queue, rx) = mpsc::channel(options.queue);
    let shared = Arc::new(Shared { rx: Mutex::new(rx), flushers: options.flushers, sending: AtomicUsize::new(0) });
    // Named, so operators (and tests) can find the flushers' backends.
    let mut name = format!("eslab-group-{}", direct.schema());
    name.truncate(63);
    let connect = direct.pool().connect_options().as_ref().clone().application_name(&name);
    for _ in 0..options.flushers {
        runtime.spawn(flusher(direct.clone(), connect.clone(), Arc::clone(&shared), options.max_batch));
    }
    Ok(queue)
}

/// Queues a single-stream append with events and waits for its group's
/// verdict; gives any other request back untouched.
pub(crate) async fn enqueue(
    queue: &Queue,
    mut appends: Vec<StreamAppend>,
) -> Result<std::result::Result<Vec<AppendResult>, Vec<StreamAppend>>> {
    let single = appends.len() == 1 && appends.first().is_some_and(|a| !a.events.is_empty());
    if !single {
        return Ok(Err(appends));
    }
    let Some(append) = appends.pop() else {
        return Ok(Err(appends));
    };
    let (reply, result) = oneshot::channel();
    queue
        .send(Request { append, reply, queued: Instant::now() })
        .await
        .map_err(|_| Error::Unavailable("the group-commit flushers have stopped".into()))?;
    let appended = result.await.map_err(|_| {
        // The flusher task ended without answering (runtime shutting down):
        // the append may or may not have committed.
        Error::Unavailable("the group-commit flusher ended before answering".into())
    })??;
    Ok(Ok(vec![appended]))
}

/// What a store's flushers share: the queue, and how many of them have a
/// statement in flight.
struct Shared {
    rx: Mutex<mpsc::Receiver<Request>>,
    flushers: usize,
    sending: AtomicUsize,
}

impl Shared {
    /// The flushers free to send a statement now (the asking one included).
    fn idle(&self) -> usize {
        self.flushers.saturating_sub(self.sending.load(Ordering::Relaxed)).max(1)
    }

    /// Counts a flusher as sending until the guard is dropped.
    fn sending(&self) -> Sending<'_> {
        self.sending.fetch_add(1, Ordering::Relaxed);
        Sending(&self.sending)
    }
}

/// A flusher with a statement in flight (see [`Shared::sending`]).
struct Sending<'a>(&'a AtomicUsize);

impl Drop for Sending<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Takes batches off the shared queue and commits them, until every sender
/// is gone and nothing is left.
async fn flusher(store: PostgresStore, connect: PgConnectOptions, shared: Arc<Shared>, max_batch: usize) {
    // Appends to a stream already in the batch wait for the next one: the
    // statement judges each stream once.
    let mut carried: VecDeque<Request> = VecDeque::new();
    let mut own = OwnConnection { conn: None, connect, refused: None };
    loop {
        // With appends carried over, never wait for the queue: another
        // flusher may hold it while waiting for new work, and the carried
        // callers would wait for ever.
        let queue = if carried.is_empty() { Some(shared.rx.lock().await) } else { shared.rx.try_lock().ok() };
        // Counted as sending before the queue is let go, so that the next
        // flusher's share leaves nothing behind for a flusher that is busy.
        let sending = match queue {
            Some(mut queue) => {
                if carried.is_empty() {
                    match queue.recv().await {
                        Some(request) => carried.push_back(request),
                        None => return own.close().await,
                    }
                }
                gather(&mut queue, &mut carried, max_batch, || shared.idle()).await;
                shared.sending()
            }
            None => shared.sending(),
        };
        let mut streams = HashSet::new();
        let mut batch = Vec::with_capacity(carried.len());
        let mut later = VecDeque::new();
        for request in carried.drain(..) {
            if streams.insert(request.append.stream_id.clone()) {
                batch.push(request);
            } else {
                later.push_back(request);
            }
        }
        carried = later;
        flush(&store, &mut own, batch).await;
        drop(sending);
    }
}

/// At most this many times a flusher lets the callers it just answered run
/// before it sends its batch (see [`gather`]).
const GATHER_YIELDS: usize = 8;

/// Fills `carried` from the queue: first lets the queue fill, yielding to
/// the runtime until a yield brings nothing new (or [`GATHER_YIELDS`]
/// yields, or `max_batch` appends), because the callers a flush has just
/// answered are runnable, not yet queued: without the yields the next
/// flusher would send their first one or two appends alone and pay a whole
/// commit for them. A lone caller costs one yield.
///
/// Then it takes its share: what is waiting divided by the flushers free to
/// send (`idle`, itself included), at most `max_batch`. Taking everything
/// would put every caller into one statement, executed by one PostgreSQL
/// backend on one core, while the other flushers and cores wait for the
/// callers to come back: the batches travel in a convoy, one at a time.
/// Split, the statements run side by side (and still share one WAL flush
/// when they commit together).
async fn gather(
    queue: &mut mpsc::Receiver<Request>,
    carried: &mut VecDeque<Request>,
    max_batch: usize,
    idle: impl Fn() -> usize,
) {
    let waiting = |queue: &mpsc::Receiver<Request>, carried: &VecDeque<Request>| carried.len() + queue.len();
    for _ in 0..GATHER_YIELDS {
        let before = waiting(queue, carried);
        if before >= max_batch.saturating_mul(idle()) {
            break;
        }
        tokio::task::yield_now().await;
        if waiting(queue, carried) == before {
            break;
        }
    }
    let share = waiting(queue, carried).div_ceil(idle()).clamp(1, max_batch);
    while carried.len() < share {
        match queue.try_recv() {
            Ok(request) => carried.push_back(request),
            Err(_) => break,
        }
    }
}

/// How long a flusher whose connection was refused sends its batches
/// through the pool before it tries to open one again.
const RECONNECT_AFTER: Duration = Duration::from_secs(1);

/// A flusher's own connection, kept from one statement to the next (see
/// [`GroupCommitOptions::flushers`]).
struct OwnConnection {
    /// Open, or `None` before the first statement and after one broke it.
    conn: Option<PgConnection>,
    connect: PgConnectOptions,
    /// When the last attempt to open it failed (warned once, until one succeeds).
    refused: Option<Instant>,
}

impl OwnConnection {
    /// The connection, opened first if needed (within `timeout`); `None`
    /// when it cannot be opened, or was refused less than
    /// [`RECONNECT_AFTER`] ago: a refused connection still costs the server
    /// a process, so it is not tried for every batch.
    async fn get(&mut self, timeout: Duration) -> Option<&mut PgConnection> {
        if self.conn.is_none() {
            if self.refused.is_some_and(|at| at.elapsed() < RECONNECT_AFTER) {
                return None;
            }
            let opened = tokio::time::timeout(timeout, PgConnection::connect_with(&self.connect))
                .await
                .unwrap_or(Err(sqlx::Error::PoolTimedOut));
            match opened {
                Ok(conn) => {
                    if self.refused.take().is_some() {
                        tracing::info!("group commit: the flusher has its own connection again");
                    }
                    self.conn = Some(conn);
                }
                Err(e) => {
                    // The server or the role may be at its connection limit
                    // while the pool holds connections of its own.
                    if self.refused.replace(Instant::now()).is_none() {
                        tracing::warn!(error = %e, "group commit: a flusher cannot open its connection; its batches go through the pool until it can");
                    }
                    return None;
                }
            }
        }
        self.conn.as_mut()
    }

    /// After an error that may have broken the connection: the next
    /// statement opens a new one.
    fn broken(&mut self) {
        self.conn = None;
    }

    /// Closes the connection, if open (the flusher stops).
    async fn close(&mut self) {
        if let Some(conn) = self.conn.take() {
            let _ = conn.close().await;
        }
    }
}

/// Commits `requests` in one statement on the flusher's own connection and
/// answers each caller; without that connection, through the pool (each
/// append alone).
async fn flush(store: &PostgresStore, own: &mut OwnConnection, requests: Vec<Request>) {
    let started = Instant::now();
    if let Some(oldest) = requests.iter().map(|r| r.queued).min() {
        metrics::histogram!(QUEUED_SECONDS).record(started.duration_since(oldest).as_secs_f64());
    }
    metrics::histogram!(BATCH_APPENDS).record(requests.len() as f64);
    let (appends, replies): (Vec<_>, Vec<_>) = requests.into_iter().map(|r| (r.append, r.reply)).unzip();
    if appends.len() == 1 {
        // Nobody to group with: the store's one-stream fast path is cheaper.
        return alone(store, appends, replies).await;
    }
    let batch = match Batch::try_new(appends) {
        Ok(batch) => batch,
        // A duplicate event id across callers, an out-of-range version: let
        // each append meet its own verdict alone.
        Err((_, appends)) => return alone(store, appends, replies).await,
    };
    let notify = store.options().notify == Notify::InTransaction;
    let Some(conn) = own.get(store.options().acquire_timeout).await else {
        return alone(store, batch.into_appends(), replies).await;
    };
    let executed = batch.execute_group(conn, store.options().strategy, notify).await;
    if executed.as_ref().is_err_and(|e| !connection_survives(e)) {
        own.broken();
    }
    metrics::histogram!(STATEMENT_SECONDS).record(started.elapsed().as_secs_f64());
    match executed {
        Ok(rows) => {
            store.poke_notifier();
            match batch.group_results(&rows) {
                Ok(outcomes) => {
                    let mut retries = Vec::new();
                    for (outcome, reply) in outcomes.into_iter().zip(replies) {
                        match outcome {
                            GroupOutcome::Appended(result) => {
                                let _ = reply.send(Ok(result));
                            }
                            GroupOutcome::Conflict(e) => {
                                let _ = reply.send(Err(e));
                            }
                            GroupOutcome::Retry(append) => retries.push((append, reply)),
                        }
                    }
                    let (appends, replies) = retries.into_iter().unzip();
                    alone(store, appends, replies).await;
                }
                Err(e) => {
                    // Committed, but the result did not decode: say so to everyone.
                    let message = format!("group commit result: {e}");
                    for reply in replies {
                        let _ = reply.send(Err(Error::backend(message.clone())));
                    }
                }
            }
        }
        // The statement failed as a whole (a unique violation on an event id
        // or a version a concurrent writer took, a deadlock victim, …): it
        // wrote nothing, so each append runs alone and gets its precise verdict.
        Err(_) => alone(store, batch.into_appends(), replies).await,
    }
}

/// Runs each append through the store's own path, concurrently.
async fn alone(store: &PostgresStore, appends: Vec<StreamAppend>, replies: Vec<oneshot::Sender<Result<AppendResult>>>) {
    join_all(appends.into_iter().zip(replies).map(|(append, reply)| async move {
        let result = store.append_streams(vec![append]).await.and_then(|mut results| {
            results.pop().ok_or_else(|| Error::backend("the store returned no result for an append"))
        });
        let _ = reply.send(result);
    }))
    .await;
}
