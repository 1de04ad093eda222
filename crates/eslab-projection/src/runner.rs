//! The runner: batches from the feed, one transaction per batch, checkpoints,
//! parked streams, partitions, lease, live mode.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use eslab_core::{Checkpoint, EventId, EventReader, RecordedEvent, StreamId, Version};

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

/// How often a busy [`Runner::run`] updates its lag gauges.
const LAG_REPORT_INTERVAL: Duration = Duration::from_secs(1);

/// Tuning of a [`Runner`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunnerOptions {
    /// Events per batch (per transaction). Default 500.
    pub batch_size: usize,
    /// Parallel partitions (by stream-id hash). Default 1.
    pub partitions: u16,
    /// Who this runner is, for the lease. Default: a random id.
    pub owner: String,
    /// How long a lease lasts without renewal. Default 30 s.
    pub lease_ttl: Duration,
    /// Longest wait between polls when idle, in live mode (wake-ups cut it short). Default 1 s.
    pub max_idle_poll: Duration,
}

impl Default for RunnerOptions {
    fn default() -> Self {
        RunnerOptions {
            batch_size: 500,
            partitions: 1,
            owner: format!("runner-{}", uuid::Uuid::now_v7()),
            lease_ttl: Duration::from_secs(30),
            max_idle_poll: Duration::from_secs(1),
        }
    }
}

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
#[derive(Debug)]
pub struct Runner<S, B, P> {
    store: S,
    backend: Arc<B>,
    projection: Arc<P>,
    options: RunnerOptions,
    /// Until when this runner's lease needs no renewal (half its TTL after
    /// the last renewal was asked for), shared by clones (same owner).
    lease_fresh_until: Arc<Mutex<Option<Instant>>>,
}

impl<S: Clone, B, P> Clone for Runner<S, B, P> {
    fn clone(&self) -> Self {
        Runner {
            store: self.store.clone(),
            backend: self.backend.clone(),
            projection: self.projection.clone(),
            options: self.options.clone(),
            lease_fresh_until: self.lease_fresh_until.clone(),
        }
    }
}

impl<S, B, P> Runner<S, B, P>
where
    S: EventReader + Clone + 'static,
    B: Backend,
    P: Projection<B>,
{
    /// A runner of `projection`, reading `store`'s feed, writing to `backend`.
    pub fn new(store: S, backend: Arc<B>, projection: Arc<P>) -> Self {
        Runner {
            store,
            backend,
            projection,
            options: RunnerOptions::default(),
            lease_fresh_until: Arc::new(Mutex::new(None)),
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
        held
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
                return Err(Error::RetryFailed {
                    stream: stream.clone(),
                    event_id: p.event.event_id,
                    reason: e.message,
                });
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
    /// 10 ms to `max_idle_poll`). Errors are logged and retried with backoff.
    /// The lag gauges are updated at most once a second while busy, and when
    /// the runner goes idle. Releases the lease on the way out.
    pub async fn run(&self, mut wakeup: impl Wakeup, shutdown: impl Future<Output = ()> + Send) -> Result<()> {
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
                Ok(Outcome::Processed { .. }) => {
                    idle = Duration::from_millis(10);
                    continue;
                }
                Ok(Outcome::Idle) => idle,
                Ok(Outcome::NotLeader) => self.options.lease_ttl / 2,
                Err(e) => {
                    tracing::warn!(projection = self.projection.name(), error = %e, "projection batch failed; will retry");
                    idle
                }
            };
            tokio::select! {
                () = &mut shutdown => break,
                () = wakeup.wait() => idle = Duration::from_millis(10),
                () = tokio::time::sleep(wait) => idle = (idle * 2).min(self.options.max_idle_poll),
            }
        }
        *self.lease_fresh_until.lock().unwrap_or_else(PoisonError::into_inner) = None;
        self.backend.release_lease(self.projection.name(), &self.options.owner).await
    }

    /// Processes batches until the feed is drained (or another owner holds the lease).
    pub async fn drain(&self) -> Result<usize> {
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
