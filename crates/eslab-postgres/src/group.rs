//! Group commit: an opt-in mode of the store that coalesces the
//! single-stream appends of concurrent callers into one statement and one
//! commit, so a burst of small commands pays for one WAL flush instead of one
//! each.
//!
//! Each append is still judged on its own expectation: a conflict on one
//! stream fails that caller only (see the crate's `GROUP_SQL`).

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;

use eslab_core::{AppendResult, Error, EventAppender, Result, StreamAppend};
use futures_util::future::join_all;
use tokio::sync::{Mutex, mpsc, oneshot};

use crate::append::{Batch, GroupOutcome};
use crate::error::db;
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

impl Default for GroupCommitOptions {
    fn default() -> Self {
        GroupCommitOptions { max_batch: 512, flushers: 2, queue: 8192 }
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
    /// connection (default 2: one commits while the next batch fills; at least 1).
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

/// One caller's append, waiting for its statement.
pub(crate) struct Request {
    append: StreamAppend,
    reply: oneshot::Sender<Result<AppendResult>>,
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
    let rx = Arc::new(Mutex::new(rx));
    for _ in 0..options.flushers {
        runtime.spawn(flusher(direct.clone(), Arc::clone(&rx), options.max_batch));
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
        .send(Request { append, reply })
        .await
        .map_err(|_| Error::Unavailable("the group-commit flushers have stopped".into()))?;
    let appended = result.await.map_err(|_| {
        // The flusher task ended without answering (runtime shutting down):
        // the append may or may not have committed.
        Error::Unavailable("the group-commit flusher ended before answering".into())
    })??;
    Ok(Ok(vec![appended]))
}

/// Takes batches off the shared queue and commits them, until every sender
/// is gone and nothing is left.
async fn flusher(store: PostgresStore, rx: Arc<Mutex<mpsc::Receiver<Request>>>, max_batch: usize) {
    // Appends to a stream already in the batch wait for the next one: the
    // statement judges each stream once.
    let mut carried: VecDeque<Request> = VecDeque::new();
    loop {
        // With appends carried over, never wait for the queue: another
        // flusher may hold it while waiting for new work, and the carried
        // callers would wait for ever.
        let queue = if carried.is_empty() { Some(rx.lock().await) } else { rx.try_lock().ok() };
        if let Some(mut queue) = queue {
            if carried.is_empty() {
                match queue.recv().await {
                    Some(request) => carried.push_back(request),
                    None => return,
                }
            }
            gather(&mut queue, &mut carried, max_batch).await;
        }
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
        flush(&store, batch).await;
    }
}

/// At most this many times a flusher lets the callers it just answered run
/// before it sends its batch (see [`gather`]).
const GATHER_YIELDS: usize = 8;

/// Fills `carried` from the queue up to `max_batch`: takes what is queued,
/// then yields to the runtime and takes what arrived meanwhile, until a
/// yield brings nothing new (or [`GATHER_YIELDS`] yields). The callers a
/// flush has just answered are runnable, not yet queued: without the yields
/// the next flusher would send their first one or two appends alone and
/// pay a whole commit for them. A lone caller costs one yield.
async fn gather(queue: &mut mpsc::Receiver<Request>, carried: &mut VecDeque<Request>, max_batch: usize) {
    let drain = |queue: &mut mpsc::Receiver<Request>, carried: &mut VecDeque<Request>| {
        while carried.len() < max_batch {
            match queue.try_recv() {
                Ok(request) => carried.push_back(request),
                Err(_) => break,
            }
        }
    };
    drain(queue, carried);
    for _ in 0..GATHER_YIELDS {
        let before = carried.len();
        if before >= max_batch {
            return;
        }
        tokio::task::yield_now().await;
        drain(queue, carried);
        if carried.len() == before {
            return;
        }
    }
}

/// Commits `requests` in one statement and answers each caller.
async fn flush(store: &PostgresStore, requests: Vec<Request>) {
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
    let executed = match store.pool().acquire().await {
        Ok(mut conn) => batch.execute_group(&mut conn, store.options().strategy, notify).await,
        Err(e) => {
            let e = db(e);
            let unavailable = e.is_unavailable();
            let message =
                format!("{e}: {}", std::error::Error::source(&e).map(ToString::to_string).unwrap_or_default());
            for reply in replies {
                let _ = reply.send(Err(if unavailable {
                    Error::Unavailable(message.clone().into())
                } else {
                    Error::backend(message.clone())
                }));
            }
            return;
        }
    };
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
