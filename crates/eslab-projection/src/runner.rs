//! The runner: batches from the feed, one transaction per batch, checkpoints,
//! parked streams, partitions, lease, live mode.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use eslab_core::{Checkpoint, EventId, EventReader, EventStore, RecordedEvent, StreamId, Version};

use crate::backend::{Backend, Projection};
use crate::{Error, Result};

/// What one [`Runner::run_once`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Nothing new in the feed.
    Idle,
    /// A batch was committed.
    Processed {
        /// Events read in the batch.
        events: usize,
        /// Of those, how many were parked (their stream is parked).
        parked: usize,
        /// The checkpoint now stored (the lowest over partitions).
        checkpoint: Checkpoint,
    },
    /// Another owner holds the lease; nothing was done.
    NotLeader,
}

/// Waits `linger` ([`RunnerOptions::linger`]); no time at all (and no
/// timer) when it is zero.
async fn lingering(linger: Duration) {
    if !linger.is_zero() {
        tokio::time::sleep(linger).await;
    }
}

/// How often a busy [`Runner::run`] updates its lag gauges.
const LAG_REPORT_INTERVAL: Duration = Duration::from_secs(1);

/// Tuning of a [`Runner`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunnerOptions {
    /// Events per batch (per transaction). Default 500.
    pub batch_size: usize,
    /// Parallel partitions (by stream-id hash). Default 1.
    pub partitions: u16,
    /// Who this runner is, for the lease. Default: unique to this process
    /// ([`RunnerOptions::process_owner`]); see [`RunnerOptions::stable_owner`]
    /// for one a restarted process shares with its predecessor.
    pub owner: String,
    /// How long a lease lasts without renewal. Default 30 s.
    pub lease_ttl: Duration,
    /// Longest wait between polls when idle, in live mode (wake-ups cut it
    /// short); also how often a runner whose lease another owner holds checks
    /// whether it was released (at most every half `lease_ttl`). Default 1 s.
    pub max_idle_poll: Duration,
    /// How long a graceful stop ([`RunnerHandle::stop`]) may spend draining
    /// what was committed before it gives up (the lease is released either
    /// way). Default 10 s.
    pub stop_timeout: Duration,
    /// In live mode ([`Runner::run`], [`Runner::spawn`]): how long to wait
    /// after a wake-up, or after a batch that was not full, before reading
    /// the feed again, so that the appends of that interval are read and
    /// committed as one batch instead of one per wake-up (as a Kafka
    /// producer's `linger.ms` does). Each batch costs the backend a few
    /// statements and a commit whatever its size: under a steady load of
    /// small appends, lingering trades at most this much read-model
    /// staleness for fewer of them. A full batch is followed at once (a
    /// backlog never waits), and a stop is honoured during the wait.
    /// Default zero: every wake-up is read at once.
    pub linger: Duration,
}

impl Default for RunnerOptions {
    fn default() -> Self {
        RunnerOptions {
            batch_size: 500,
            partitions: 1,
            owner: RunnerOptions::process_owner(),
            lease_ttl: Duration::from_secs(30),
            max_idle_poll: Duration::from_secs(1),
            stop_timeout: Duration::from_secs(10),
            linger: Duration::ZERO,
        }
    }
}

impl RunnerOptions {
    /// An owner unique to this process and this call: `<host>:<pid>:<random>`
    /// (the default). Two processes never share it, so they never both lead;
    /// but a process that crashed keeps its lease until the TTL runs out, and
    /// its successor (another owner) waits that long (saying so in the log).
    pub fn process_owner() -> String {
        // The random tail of a v7 id (its head is the clock).
        let id = uuid::Uuid::now_v7().simple().to_string();
        format!("{}:{}:{}", host_name(), std::process::id(), &id[20..])
    }

    /// An owner that stays the same across restarts: `<host>/<instance>`.
    ///
    /// A restarted process with the same owner takes its own lease back at
    /// once, even after a crash that left the lease behind. `instance` must
    /// name the process uniquely on its host (e.g. the service's name, or its
    /// port when several run on one host): two live processes with one owner
    /// would both think they lead and apply batches twice. Where the host name
    /// is not stable (a container replaced on redeploy), pass a name that is,
    /// such as a StatefulSet pod's, as [`owner`](Self::owner) directly.
    pub fn stable_owner(instance: &str) -> String {
        format!("{}/{instance}", host_name())
    }
}

/// This machine's host name (`unknown-host` if it cannot be read as UTF-8).
fn host_name() -> String {
    gethostname::gethostname().into_string().unwrap_or_else(|_| "unknown-host".to_owned())
}

mod sealed {
    /// Only [`eslab_core::EventStore`] implements [`super::UpcastingStore`].
    pub trait Sealed {}

    impl<S> Sealed for eslab_core::EventStore<S> {}
}

/// What a [`Runner`] reads: an [`eslab_core::EventStore`], the layer that
/// applies the upcasters on every read. It is sealed, so that type is the only
/// one: a raw backend (`MemoryStore`, `PostgresStore`, ...) handed to a runner
/// would feed old event versions to the handlers, whose decoding fails and
/// parks the streams; here it does not compile.
#[diagnostic::on_unimplemented(
    message = "a projection runner reads an upcasting `eslab_core::EventStore`, not `{Self}`",
    label = "not an `EventStore`",
    note = "wrap the store: `EventStore::new(store).with_upcasters(upcasters)`"
)]
pub trait UpcastingStore: EventReader + Clone + sealed::Sealed + 'static {}

impl<S: EventReader + Clone + 'static> UpcastingStore for EventStore<S> {}

/// Something that says "there may be new events" (an in-process signal fired
/// after appends, or Postgres NOTIFY relayed into a channel).
pub trait Wakeup: Send {
    /// Resolves at the next signal (may resolve spuriously).
    fn wait(&mut self) -> impl Future<Output = ()> + Send;
}

impl<T: Send + Sync> Wakeup for tokio::sync::watch::Receiver<T> {
    async fn wait(&mut self) {
        if self.changed().await.is_err() {
            // The sender is gone: no more signals, fall back to polling.
            std::future::pending::<()>().await;
        }
    }
}

/// A store's own wake-ups ([`eslab_core::WakeUps::wake_ups`]): SQLite's
/// commit signal, PostgreSQL's notifications, the memory store's appends.
/// When they end, the runner polls.
impl Wakeup for eslab_core::WakeUpStream {
    async fn wait(&mut self) {
        use futures_util::StreamExt;
        if self.next().await.is_none() {
            std::future::pending::<()>().await;
        }
    }
}

/// No signal at all: the runner only polls.
impl Wakeup for () {
    async fn wait(&mut self) {
        std::future::pending::<()>().await;
    }
}

/// The partition (of `partitions`) that handles `stream`: FNV-1a over the
/// stream id's bytes, so that the assignment is the same in every process and
/// every Rust version (std's hasher promises neither).
pub fn partition_of(stream: &StreamId, partitions: u16) -> u16 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0100_0000_01b3;
    let hash = stream.as_str().bytes().fold(OFFSET, |h, b| (h ^ u64::from(b)).wrapping_mul(PRIME));
    let n = u64::from(partitions.max(1));
    u16::try_from(hash % n).unwrap_or(0)
}

/// Runs one projection over a store's feed.
///
/// # The lease
///
/// One runner per projection is active at a time, across processes: each
/// batch first takes (or renews) the projection's lease for
/// [`RunnerOptions::owner`]. While another owner holds it, [`run_once`](Self::run_once)
/// returns [`Outcome::NotLeader`] and the runner says so in the log (once per
/// holder: who, and until when). [`drain`](Self::drain), [`run`](Self::run) and
/// [`RunnerHandle::stop`] release the lease when they end, so another process
/// takes over at once; a lease left behind by a crash runs out after
/// [`RunnerOptions::lease_ttl`], unless the restarted process has the same
/// owner: give a long-lived process a stable one ([`RunnerOptions::stable_owner`])
/// and it takes its lease back at once.
#[derive(Debug)]
pub struct Runner<S, B, P> {
    store: S,
    backend: Arc<B>,
    projection: Arc<P>,
    options: RunnerOptions,
    /// Until when this runner's lease needs no renewal (half its TTL after
    /// the last renewal was asked for), shared by clones (same owner).
    lease_fresh_until: Arc<Mutex<Option<Instant>>>,
    /// The other owner last seen holding the lease (and logged), shared by clones.
    other_owner: Arc<Mutex<Option<String>>>,
}

impl<S: Clone, B, P> Clone for Runner<S, B, P> {
    fn clone(&self) -> Self {
        Runner {
            store: self.store.clone(),
            backend: self.backend.clone(),
            projection: self.projection.clone(),
            options: self.options.clone(),
            lease_fresh_until: self.lease_fresh_until.clone(),
            other_owner: self.other_owner.clone(),
        }
    }
}

impl<S, B, P> Runner<S, B, P>
where
    S: UpcastingStore,
    B: Backend,
    P: Projection<B>,
{
    /// A runner of `projection`, reading `store`'s feed, writing to `backend`.
    ///
    /// `store` is an upcasting [`EventStore`] (see [`UpcastingStore`]), so the
    /// handlers see every event at its current schema version:
    ///
    /// ```
    /// use std::sync::Arc;
    /// use eslab_core::{EventStore, RecordedEvent, Upcasters};
    /// use eslab_projection::memory::{MemoryBackend, MemoryTx};
    /// use eslab_projection::{HandlerError, Projection, Runner};
    ///
    /// struct Count;
    /// impl Projection<MemoryBackend> for Count {
    ///     fn name(&self) -> &str { "count" }
    ///     async fn apply(&self, _: &mut MemoryTx, _: &RecordedEvent) -> Result<(), HandlerError> { Ok(()) }
    /// }
    ///
    /// let store = EventStore::new(eslab_memory::MemoryStore::new()).with_upcasters(Upcasters::new());
    /// let runner = Runner::new(store, Arc::new(MemoryBackend::new()), Arc::new(Count));
    /// ```
    ///
    /// A raw store, whose reads skip the upcasters, does not compile:
    ///
    /// ```compile_fail,E0277
    /// # use std::sync::Arc;
    /// # use eslab_core::RecordedEvent;
    /// # use eslab_projection::memory::{MemoryBackend, MemoryTx};
    /// # use eslab_projection::{HandlerError, Projection, Runner};
    /// # struct Count;
    /// # impl Projection<MemoryBackend> for Count {
    /// #     fn name(&self) -> &str { "count" }
    /// #     async fn apply(&self, _: &mut MemoryTx, _: &RecordedEvent) -> Result<(), HandlerError> { Ok(()) }
    /// # }
    /// let store = eslab_memory::MemoryStore::new();
    /// let runner = Runner::new(store, Arc::new(MemoryBackend::new()), Arc::new(Count));
    /// ```
    pub fn new(store: S, backend: Arc<B>, projection: Arc<P>) -> Self {
        Runner {
            store,
            backend,
            projection,
            options: RunnerOptions::default(),
            lease_fresh_until: Arc::new(Mutex::new(None)),
            other_owner: Arc::new(Mutex::new(None)),
        }
    }

    /// Sets the options.
    #[must_use]
    pub fn with_options(mut self, options: RunnerOptions) -> Self {
        self.options = options;
        self
    }

    /// The same runner split into `partitions` parallel partitions.
    ///
    /// The partition count is part of the checkpoints' identity: to change it
    /// for an existing projection, rebuild the projection.
    #[must_use]
    pub fn partitioned(mut self, partitions: u16) -> Self {
        self.options.partitions = partitions.max(1);
        self
    }

    /// The projection's name.
    pub fn name(&self) -> &str {
        self.projection.name()
    }

    fn checkpoint_names(&self) -> Vec<String> {
        let name = self.projection.name();
        match self.options.partitions {
            0 | 1 => vec![name.to_owned()],
            n => (0..n).map(|p| format!("{name}#{p}/{n}")).collect(),
        }
    }

    /// The projection's position: the lowest checkpoint over its partitions.
    pub async fn checkpoint(&self) -> Result<Checkpoint> {
        let mut lowest: Option<Checkpoint> = None;
        for name in self.checkpoint_names() {
            let at = self.backend.checkpoint(&name).await?;
            lowest = Some(lowest.map_or(at, |l| l.min(at)));
        }
        Ok(lowest.unwrap_or(Checkpoint::START))
    }

    /// How far behind the feed the projection is (from its lowest partition checkpoint).
    pub async fn lag(&self) -> Result<crate::Lag> {
        let at = self.checkpoint().await?;
        crate::lag(&self.store, &self.projection.filter(), at).await
    }

    /// Measures the lag and sets the projection's gauges (see [`crate::record_lag`]).
    pub async fn report_lag(&self) -> Result<crate::Lag> {
        let lag = self.lag().await?;
        crate::record_lag(self.projection.name(), &lag);
        Ok(lag)
    }

    /// Holds the lease: renews it in the backend only once half its TTL has
    /// passed since the last renewal was asked for. The lease cannot expire
    /// before a full TTL after that request (the backend stamps it later
    /// still), so skipping the write in between leaves half a TTL of margin
    /// and saves a committed write per batch (per wake-up, for a projection
    /// whose events are rare).
    async fn ensure_lease(&self, name: &str) -> Result<bool> {
        let now = Instant::now();
        let fresh = *self.lease_fresh_until.lock().unwrap_or_else(PoisonError::into_inner);
        if fresh.is_some_and(|until| now < until) {
            return Ok(true);
        }
        let held = self.backend.acquire_lease(name, &self.options.owner, self.options.lease_ttl).await;
        *self.lease_fresh_until.lock().unwrap_or_else(PoisonError::into_inner) =
            matches!(held, Ok(true)).then(|| now + self.options.lease_ttl / 2);
        match held {
            Ok(true) => {
                let before = self.other_owner.lock().unwrap_or_else(PoisonError::into_inner).take();
                if let Some(before) = before {
                    tracing::info!(projection = name, owner = %self.options.owner, previous_owner = %before,
                        "took over the projection's lease");
                }
            }
            Ok(false) => self.note_other_owner(name).await,
            Err(_) => {}
        }
        held
    }

    /// Logs who holds the lease instead of this runner, once per holder.
    async fn note_other_owner(&self, name: &str) {
        let lease = match self.backend.lease(name).await {
            Ok(Some(lease)) => lease,
            Ok(None) => return, // released in between: the next attempt takes it
            Err(e) => {
                tracing::debug!(projection = name, error = %e, "cannot read the projection's lease");
                return;
            }
        };
        let mut seen = self.other_owner.lock().unwrap_or_else(PoisonError::into_inner);
        if seen.as_deref() == Some(lease.owner.as_str()) {
            return;
        }
        tracing::info!(projection = name, owner = %self.options.owner, holder = %lease.owner, until = %lease.until,
            "another owner holds the projection's lease; waiting until it is released or runs out");
        *seen = Some(lease.owner);
    }

    /// Gives up this runner's lease (another owner's is left alone).
    async fn release_lease(&self) -> Result<()> {
        *self.lease_fresh_until.lock().unwrap_or_else(PoisonError::into_inner) = None;
        self.backend.release_lease(self.projection.name(), &self.options.owner).await
    }

    /// Processes at most one batch: reads the feed after the checkpoint, applies
    /// the events and advances the checkpoint in one transaction (per partition).
    pub async fn run_once(&self) -> Result<Outcome> {
        let name = self.projection.name().to_owned();
        if !self.ensure_lease(&name).await? {
            return Ok(Outcome::NotLeader);
        }
        let names = self.checkpoint_names();
        let mut at = Vec::with_capacity(names.len());
        for n in &names {
            at.push(self.backend.checkpoint(n).await?);
        }
        let from = at.iter().copied().min().unwrap_or(Checkpoint::START);
        let batch = self.store.read_feed(&self.projection.filter(), from, self.options.batch_size.max(1)).await?;
        let Some(end) = batch.last().map(RecordedEvent::checkpoint) else {
            return Ok(Outcome::Idle);
        };
        let events = batch.len();
        let parked = if names.len() == 1 {
            self.apply_batch(&name, &names[0], batch.iter().collect(), end).await?
        } else {
            let partitions = self.options.partitions;
            let mut split: Vec<Vec<RecordedEvent>> = vec![Vec::new(); names.len()];
            for event in batch {
                let p = usize::from(partition_of(&event.stream_id, partitions));
                if event.checkpoint() > at[p] {
                    split[p].push(event);
                }
            }
            let mut tasks = tokio::task::JoinSet::new();
            for (events, checkpoint_name) in split.into_iter().zip(names) {
                let this = self.clone();
                let name = name.clone();
                tasks.spawn(
                    async move { this.apply_batch(&name, &checkpoint_name, events.iter().collect(), end).await },
                );
            }
            let mut parked = 0;
            let mut first_error = None;
            while let Some(joined) = tasks.join_next().await {
                match joined {
                    Ok(Ok(n)) => parked += n,
                    Ok(Err(e)) => first_error = first_error.or(Some(e)),
                    Err(join) => first_error = first_error.or(Some(Error::Backend(Box::new(join)))),
                }
            }
            if let Some(e) = first_error {
                return Err(e);
            }
            parked
        };
        Ok(Outcome::Processed { events, parked, checkpoint: end })
    }

    /// Applies `events` and sets checkpoint `checkpoint_name` to `end`, in one
    /// transaction. A handler error rolls back, parks the stream, and tries again.
    async fn apply_batch(
        &self,
        name: &str,
        checkpoint_name: &str,
        events: Vec<&RecordedEvent>,
        end: Checkpoint,
    ) -> Result<usize> {
        // Per parked stream, the first version that waits: streams parked by an
        // earlier batch wait entirely; a stream parked now waits from its failing event.
        let mut parked_from: HashMap<StreamId, Version> =
            self.backend.parked_streams(name).await?.into_iter().map(|s| (s, Version::NONE)).collect();
        let mut reasons: HashMap<EventId, String> = HashMap::new();
        // Each retry parks one more stream, so this ends within (streams + 1) rounds.
        loop {
            let mut tx = self.backend.begin().await?;
            let mut parked = 0;
            let mut apply = Vec::with_capacity(events.len());
            for event in &events {
                if parked_from.get(&event.stream_id).is_some_and(|from| event.stream_version >= *from) {
                    let reason = reasons.get(&event.event_id).map_or("stream parked", String::as_str);
                    self.backend.park(&mut tx, name, event, reason).await?;
                    parked += 1;
                } else {
                    apply.push(*event);
                }
            }
            let failed = match self.projection.apply_all(&mut tx, &apply).await {
                Ok(()) => None,
                Err((i, e)) => match apply.get(i) {
                    Some(event) => Some((*event, e)),
                    None => {
                        return Err(Error::Backend(
                            format!("projection {name} reported failing event {i} of a batch of {}", apply.len())
                                .into(),
                        ));
                    }
                },
            };
            match failed {
                None => {
                    self.backend.save_checkpoint(&mut tx, checkpoint_name, end).await?;
                    self.backend.commit(tx).await?;
                    return Ok(parked);
                }
                Some((_, e)) if e.transient => {
                    drop(tx);
                    return Err(Error::Transient { projection: name.to_owned(), source: e });
                }
                Some((event, e)) => {
                    drop(tx);
                    tracing::warn!(projection = name, stream = %event.stream_id, version = %event.stream_version,
                        error = %e, "handler failed; parking the stream");
                    parked_from.insert(event.stream_id.clone(), event.stream_version);
                    reasons.insert(event.event_id, e.message);
                }
            }
        }
    }

    /// Applies the parked events of `stream` again, in order, in one
    /// transaction; on success they are unparked and the stream goes on.
    /// Returns how many were applied.
    pub async fn retry(&self, stream: &StreamId) -> Result<usize> {
        let name = self.projection.name();
        let parked = self.backend.parked(name, Some(stream)).await?;
        let mut tx = self.backend.begin().await?;
        for p in &parked {
            if let Err(e) = self.projection.apply(&mut tx, &p.event).await {
                return Err(Error::RetryFailed { stream: stream.clone(), event_id: p.event.event_id, source: e });
            }
            self.backend.unpark(&mut tx, name, &p.event).await?;
        }
        self.backend.commit(tx).await?;
        Ok(parked.len())
    }

    /// Drops the first parked event of `stream` (the one that failed) without
    /// applying it, then retries the rest. Returns how many were applied.
    pub async fn skip(&self, stream: &StreamId) -> Result<usize> {
        let name = self.projection.name();
        let parked = self.backend.parked(name, Some(stream)).await?;
        let Some(first) = parked.first() else { return Ok(0) };
        tracing::warn!(projection = name, %stream, event_id = %first.event.event_id, "skipping a parked event");
        let mut tx = self.backend.begin().await?;
        self.backend.unpark(&mut tx, name, &first.event).await?;
        self.backend.commit(tx).await?;
        self.retry(stream).await
    }

    /// Runs until `shutdown` resolves: processes batches while there are any,
    /// then waits for a wake-up or the polling interval (backing off from
    /// 10 ms to `max_idle_poll`); after a wake-up or a batch that was not
    /// full it first waits [`RunnerOptions::linger`], if any. Errors are logged and retried with backoff.
    /// The lag gauges are updated at most once a second while busy, and when
    /// the runner goes idle. While another owner holds the lease, checks it
    /// every `max_idle_poll` (at most every half `lease_ttl`). Finishes the
    /// batch in hand, then releases the lease on the way out (see
    /// [`spawn`](Self::spawn) for a stop that also drains).
    pub async fn run(&self, wakeup: impl Wakeup, shutdown: impl Future<Output = ()> + Send) -> Result<()> {
        self.follow(wakeup, shutdown).await;
        self.release_lease().await
    }

    /// The loop of [`run`](Self::run), keeping the lease at the end.
    async fn follow(&self, mut wakeup: impl Wakeup, shutdown: impl Future<Output = ()> + Send) {
        let mut shutdown = std::pin::pin!(shutdown);
        let mut idle = Duration::from_millis(10);
        let mut reported: Option<std::time::Instant> = None;
        loop {
            let outcome = self.run_once().await;
            let due = match &outcome {
                Ok(Outcome::Processed { .. }) => reported.is_none_or(|at| at.elapsed() >= LAG_REPORT_INTERVAL),
                Ok(Outcome::Idle) => reported.is_none() || idle == Duration::from_millis(10),
                _ => false,
            };
            if due {
                reported = Some(std::time::Instant::now());
                if let Err(e) = self.report_lag().await {
                    tracing::debug!(projection = self.projection.name(), error = %e, "cannot measure the lag");
                }
            }
            let wait = match outcome {
                Ok(Outcome::Processed { events, .. }) => {
                    idle = Duration::from_millis(10);
                    // Busy: straight on to the next batch, unless stopped; a
                    // batch that was not full first lingers for more.
                    let linger =
                        if events < self.options.batch_size.max(1) { self.options.linger } else { Duration::ZERO };
                    tokio::select! {
                        biased;
                        () = &mut shutdown => break,
                        () = lingering(linger) => continue,
                    }
                }
                Ok(Outcome::Idle) => idle,
                Ok(Outcome::NotLeader) => self.options.max_idle_poll.min(self.options.lease_ttl / 2),
                Err(e) => {
                    tracing::warn!(projection = self.projection.name(), error = %e, "projection batch failed; will retry");
                    idle
                }
            };
            tokio::select! {
                // A stop is honoured before another poll.
                biased;
                () = &mut shutdown => break,
                () = wakeup.wait() => idle = Duration::from_millis(10),
                () = tokio::time::sleep(wait) => {
                    idle = (idle * 2).min(self.options.max_idle_poll);
                    continue;
                }
            }
            // Woken: let the appends of the next `linger` join this one's batch.
            tokio::select! {
                biased;
                () = &mut shutdown => break,
                () = lingering(self.options.linger) => {}
            }
        }
    }

    /// Processes batches until the feed is drained, then releases the lease
    /// (also after an error), so that another process can take over at once.
    /// Returns how many events were read. Fails with [`Error::NotLeader`] if
    /// another owner holds the lease.
    pub async fn drain(&self) -> Result<usize> {
        let drained = self.drain_holding().await;
        let released = self.release_lease().await;
        let events = drained?;
        released?;
        Ok(events)
    }

    /// Starts the runner in a task of its own, following the feed live as
    /// [`run`](Self::run) does, woken by `wakeup`. [`RunnerHandle::stop`] stops
    /// it gracefully: it finishes the batch in hand, drains what was committed
    /// (for at most [`RunnerOptions::stop_timeout`]) and releases the lease.
    /// Dropping the handle stops it the same way, without waiting for it.
    ///
    /// # Panics
    /// Outside a Tokio runtime, as [`tokio::spawn`] does.
    pub fn spawn(self, wakeup: impl Wakeup + 'static) -> RunnerHandle {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let name = self.projection.name().to_owned();
        let task = tokio::spawn(async move {
            // A dropped handle (the sender gone) also means stop.
            self.follow(wakeup, async {
                let _ = stopped.await;
            })
            .await;
            self.flush().await
        });
        RunnerHandle { name, stop, task }
    }

    /// After a stop: drains (bounded by `stop_timeout`), then releases the lease.
    async fn flush(&self) -> Result<usize> {
        let name = self.projection.name();
        let timeout = self.options.stop_timeout;
        let drained = match tokio::time::timeout(timeout, self.drain_retrying()).await {
            Ok(Err(Error::NotLeader(_))) => Ok(0), // another owner runs it: nothing of ours to flush
            Ok(drained) => drained,
            Err(_) => Err(Error::StopTimedOut { projection: name.to_owned(), timeout }),
        };
        let released = self.release_lease().await;
        match (drained, released) {
            (Ok(events), Ok(())) => Ok(events),
            (Ok(_), Err(e)) => Err(e),
            (Err(e), released) => {
                if let Err(release) = released {
                    tracing::warn!(projection = name, error = %release, "cannot release the projection's lease");
                }
                Err(e)
            }
        }
    }

    /// [`drain_holding`](Self::drain_holding), retrying a failed batch (e.g.
    /// SQLite's "database is locked" while another runner of the process
    /// writes its last checkpoint) after a short pause, as the live loop does:
    /// a stop must not lose what was committed to a passing failure. Bounded
    /// by the caller's timeout; another owner's lease ends it at once.
    async fn drain_retrying(&self) -> Result<usize> {
        let mut pause = Duration::from_millis(10);
        loop {
            match self.drain_holding().await {
                Ok(events) => return Ok(events),
                Err(e @ Error::NotLeader(_)) => return Err(e),
                Err(e) => {
                    tracing::debug!(projection = self.projection.name(), error = %e, "draining on stop: batch failed; retrying");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_millis(250));
                }
            }
        }
    }

    /// Processes batches until the feed is drained, keeping the lease.
    async fn drain_holding(&self) -> Result<usize> {
        let mut total = 0;
        loop {
            match self.run_once().await? {
                Outcome::Processed { events, .. } => total += events,
                Outcome::Idle => return Ok(total),
                Outcome::NotLeader => return Err(Error::NotLeader(self.projection.name().to_owned())),
            }
        }
    }
}

/// A [`Runner`] started in a task of its own by [`Runner::spawn`].
#[derive(Debug)]
pub struct RunnerHandle {
    name: String,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<usize>>,
}

impl RunnerHandle {
    /// The projection's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether the runner's task has ended.
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }

    /// Stops the runner gracefully and waits for it: it finishes the batch in
    /// hand, drains what was committed before the stop (for at most
    /// [`RunnerOptions::stop_timeout`]) and releases its lease, so another
    /// process takes over at once. Returns how many events the drain read
    /// (0 if another owner held the lease).
    ///
    /// # Errors
    /// The drain failing or timing out ([`Error::StopTimedOut`]; the lease is
    /// released all the same), the lease's release failing, or the task
    /// panicking.
    pub async fn stop(self) -> Result<usize> {
        // The task may have ended already (it panicked): its result is what counts.
        let _ = self.stop.send(());
        match self.task.await {
            Ok(result) => result,
            Err(join) => Err(Error::Backend(Box::new(join))),
        }
    }
}
