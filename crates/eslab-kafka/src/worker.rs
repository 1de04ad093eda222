//! The projection worker: a Kafka consumer-group member that applies the
//! relay's events to a read model, exactly once in effect.
//!
//! Per batch of messages, in **one** backend transaction: each event's
//! stream version is compared with the last version applied for its stream
//! (table `kafka_applied`): at or below it, the event is a duplicate and is
//! skipped; the next one is applied through the [`Projection`]; beyond the next
//! one, it is a **gap** (an event the worker has not seen yet), recorded in
//! `kafka_gaps`, reported in the log and not applied (the relay publishes a
//! batch again when any of its deliveries failed, so the missing event and
//! this one come again). The transaction commits, *then* the offsets are
//! committed: a crash in between replays the batch, and the versions make the
//! replay harmless.
//!
//! A handler's permanent failure parks the event's stream, exactly as in the
//! projection runner (same backend tables: [`Worker::parked`],
//! [`Worker::retry`], [`Worker::skip`]); a message that is not an eslab event
//! goes to `kafka_dead_letters`. Neither stops the other streams.
//!
//! More partitions and more workers in the group give more throughput: a
//! stream's events are in one partition, and a partition is consumed by one
//! member at a time.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use eslab_core::{EventId, RecordedEvent, StreamId, Version};
use eslab_projection::{Backend, HandlerError, ParkedEvent, Projection};
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::OwnedMessage;
use rdkafka::{Message, Offset, TopicPartitionList};
use tokio::sync::Mutex;

use crate::message;
use crate::{Error, KafkaOptions, Result};

/// How a worker consumes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerOptions {
    /// The consumer group; also the key of the worker's dedupe rows, gaps,
    /// dead letters and parked events, so two groups keep separate books.
    pub group: String,
    /// The categories whose topics it consumes.
    pub categories: Vec<String>,
    /// Messages per transaction at most. Default 1000.
    pub batch_size: usize,
    /// How long to wait for more messages once one arrived. Default 20 ms.
    pub linger: Duration,
}

impl WorkerOptions {
    /// Options for `group` consuming `categories`.
    pub fn new(group: impl Into<String>, categories: &[&str]) -> Self {
        WorkerOptions {
            group: group.into(),
            categories: categories.iter().map(|c| (*c).to_owned()).collect(),
            batch_size: 1000,
            linger: Duration::from_millis(20),
        }
    }
}

/// A stream version the worker saw before the one it expected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gap {
    /// The stream.
    pub stream_id: String,
    /// The version it expected next.
    pub expected: u64,
    /// The version it got.
    pub got: u64,
    /// Where the message was.
    pub topic: String,
    /// Its partition.
    pub partition: i32,
    /// Its offset.
    pub offset: i64,
}

/// A message that is not an eslab event, kept aside.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// Its topic.
    pub topic: String,
    /// Its partition.
    pub partition: i32,
    /// Its offset.
    pub offset: i64,
    /// Its key (lossy UTF-8).
    pub key: Option<String>,
    /// Its value (lossy UTF-8).
    pub payload: Option<String>,
    /// Why it is not an event.
    pub reason: String,
}

/// What the worker keeps in the read model's transaction, besides the read
/// model: the last version applied per stream, gaps, dead letters.
pub trait WorkerTx: Send {
    /// The last version applied for `stream` by `group` (0 if none).
    fn applied_version(
        &mut self,
        group: &str,
        stream: &StreamId,
    ) -> impl Future<Output = Result<u64, HandlerError>> + Send;
    /// Records `version` as the last applied for `stream`.
    fn set_applied_version(
        &mut self,
        group: &str,
        stream: &StreamId,
        version: u64,
    ) -> impl Future<Output = Result<(), HandlerError>> + Send;
    /// Records a gap.
    fn record_gap(&mut self, group: &str, gap: &Gap) -> impl Future<Output = Result<(), HandlerError>> + Send;
    /// Keeps a message that is not an event.
    fn dead_letter(
        &mut self,
        group: &str,
        letter: &DeadLetter,
    ) -> impl Future<Output = Result<(), HandlerError>> + Send;
}

/// What one [`Worker::run_once`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WorkerOutcome {
    /// Messages in the batch (0: nothing arrived in time).
    pub messages: usize,
    /// Events applied to the read model.
    pub applied: usize,
    /// Events skipped as already applied.
    pub duplicates: usize,
    /// Events ahead of their stream (recorded as gaps).
    pub gaps: usize,
    /// Events parked (their stream is parked).
    pub parked: usize,
    /// Messages kept as dead letters.
    pub dead_letters: usize,
}

impl WorkerOutcome {
    fn add(&mut self, other: WorkerOutcome) {
        self.messages += other.messages;
        self.applied += other.applied;
        self.duplicates += other.duplicates;
        self.gaps += other.gaps;
        self.parked += other.parked;
        self.dead_letters += other.dead_letters;
    }
}

/// A consumer-group member applying events to a read model.
pub struct Worker<B, P> {
    consumer: StreamConsumer,
    backend: Arc<B>,
    projection: Arc<P>,
    options: WorkerOptions,
    /// A batch consumed but not yet committed (kept across a failed attempt,
    /// because the consumer's position is already past it).
    pending: Mutex<Vec<OwnedMessage>>,
    totals: std::sync::Mutex<WorkerOutcome>,
    /// Opens the sealed personal data of the events (the relay publishes ciphertext).
    keys: Option<Arc<dyn eslab_core::KeyStore>>,
}

impl<B, P> std::fmt::Debug for Worker<B, P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker").field("options", &self.options).finish_non_exhaustive()
    }
}

/// The consumer settings the worker's guarantees rest on.
pub fn consumer_config(kafka: &KafkaOptions, group: &str) -> rdkafka::ClientConfig {
    let mut config = rdkafka::ClientConfig::new();
    config
        .set("bootstrap.servers", &kafka.brokers)
        .set("group.id", group)
        // Offsets are committed by hand, after the read model's transaction.
        .set("enable.auto.commit", "false")
        // Nor stored implicitly as messages arrive: a consumer closing must
        // never record a position past what the read model holds.
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        // A member that died is noticed within seconds. The rebalance waits
        // for every known member up to max.poll.interval.ms, so keep it short
        // too (a batch takes far less).
        .set("session.timeout.ms", "6000")
        .set("heartbeat.interval.ms", "1000")
        .set("max.poll.interval.ms", "10000")
        // How long a fetch may wait at the broker for data. Apache Kafka answers
        // as soon as a message arrives, whatever this says; brokers that hold
        // the fetch for the whole wait (tansu does) would otherwise add
        // librdkafka's default 500 ms to every event's end-to-end latency.
        // Idle cost: one fetch per partition leader every 50 ms.
        .set("fetch.wait.max.ms", "50")
        // A worker that subscribes before the relay has created a category's
        // topic sees the topic appear at the next metadata refresh: every 2 s,
        // not librdkafka's default 5 minutes (found in CI: a worker started
        // before the relay's first publish applied nothing for over 60 s).
        .set("topic.metadata.refresh.interval.ms", "2000");
    for (k, v) in &kafka.extra {
        config.set(k, v);
    }
    config
}

impl<B, P> Worker<B, P>
where
    B: Backend,
    B::Tx: WorkerTx,
    P: Projection<B>,
{
    /// A worker of group `options.group`, subscribed to the topics of
    /// `options.categories`, writing through `projection` into `backend`.
    ///
    /// # Errors
    /// Unusable options, or librdkafka refusing the configuration.
    pub fn new(kafka: &KafkaOptions, backend: Arc<B>, projection: Arc<P>, options: WorkerOptions) -> Result<Self> {
        kafka.validate()?;
        if options.group.trim().is_empty() {
            return Err(Error::Config("the consumer group name is empty".into()));
        }
        if options.categories.is_empty() {
            return Err(Error::Config("the worker consumes no category".into()));
        }
        let consumer: StreamConsumer = consumer_config(kafka, &options.group).create()?;
        let topics: Vec<String> = options.categories.iter().map(|c| kafka.topic(c)).collect();
        let names: Vec<&str> = topics.iter().map(String::as_str).collect();
        consumer.subscribe(&names)?;
        Ok(Worker {
            consumer,
            backend,
            projection,
            options,
            pending: Mutex::new(Vec::new()),
            totals: std::sync::Mutex::new(WorkerOutcome::default()),
            keys: None,
        })
    }

    /// Opens the events' sealed personal data with `keys` (the event store's
    /// key store, e.g. `EventReader::personal_keys`) before the projection
    /// sees them; values of forgotten subjects read as forgotten. Without
    /// keys the projection sees the ciphertext envelopes, as published.
    #[must_use]
    pub fn with_keys(mut self, keys: Arc<dyn eslab_core::KeyStore>) -> Self {
        self.keys = Some(keys);
        self
    }

    /// Opens the sealed events of `decoded` (one key lookup for the batch);
    /// an event that does not open (tampered) becomes a dead letter.
    async fn open(&self, decoded: &mut [std::result::Result<RecordedEvent, String>]) -> Result<()> {
        let Some(keys) = &self.keys else { return Ok(()) };
        let sealed: Vec<usize> = decoded
            .iter()
            .enumerate()
            .filter(|(_, d)| d.as_ref().is_ok_and(|e| e.metadata.subject.is_some()))
            .map(|(i, _)| i)
            .collect();
        let mut events: Vec<RecordedEvent> =
            sealed.iter().filter_map(|&i| decoded.get(i).and_then(|d| d.as_ref().ok()).cloned()).collect();
        match eslab_core::personal::open_events(keys.as_ref(), &mut events).await {
            Ok(()) => {
                for (i, event) in sealed.into_iter().zip(events) {
                    if let Some(slot) = decoded.get_mut(i) {
                        *slot = Ok(event);
                    }
                }
            }
            Err(e @ eslab_core::Error::Personal(_)) => {
                // One of them does not open: find which, one at a time.
                tracing::warn!(error = %e, "sealed personal data that does not open in a batch");
                for i in sealed {
                    let Some(Ok(event)) = decoded.get(i).cloned() else { continue };
                    let mut one = vec![event];
                    let opened = match eslab_core::personal::open_events(keys.as_ref(), &mut one).await {
                        Ok(()) => one.pop().ok_or_else(|| "an event vanished while opened".to_owned()),
                        Err(e @ eslab_core::Error::Personal(_)) => Err(e.to_string()),
                        Err(e) => return Err(e.into()),
                    };
                    if let Some(slot) = decoded.get_mut(i) {
                        *slot = opened;
                    }
                }
            }
            Err(e) => return Err(e.into()),
        }
        Ok(())
    }

    /// Leaves the consumer group now, so its partitions go to the other
    /// members at once (instead of after the session timeout). A batch
    /// consumed but not committed is dropped: its offsets were never
    /// committed, so whoever takes the partitions reads it again.
    pub fn leave_group(&self) {
        self.consumer.unsubscribe();
    }

    /// The group (the key of this worker's books).
    pub fn group(&self) -> &str {
        &self.options.group
    }

    /// Everything this worker did so far.
    pub fn totals(&self) -> WorkerOutcome {
        *self.totals.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Waits up to `wait` for messages, applies one batch in one transaction
    /// and commits its offsets. A batch whose transaction fails (e.g. the
    /// database is down) is kept and tried again by the next call.
    ///
    /// # Errors
    /// The consumer, the backend or the offset commit failing.
    pub async fn run_once(&self, wait: Duration) -> Result<WorkerOutcome> {
        let mut pending = self.pending.lock().await;
        if pending.is_empty() {
            *pending = self.poll_batch(wait).await?;
        }
        if pending.is_empty() {
            return Ok(WorkerOutcome::default());
        }
        let outcome = self.apply_batch(&pending).await?;
        self.commit_offsets(&pending)?;
        pending.clear();
        self.totals.lock().unwrap_or_else(std::sync::PoisonError::into_inner).add(outcome);
        Ok(outcome)
    }

    /// Runs until `shutdown` resolves; failures are logged and retried with backoff.
    ///
    /// # Errors
    /// None today: every failure is retried. (The `Result` leaves room for fatal ones.)
    pub async fn run(&self, shutdown: impl Future<Output = ()> + Send) -> Result<()> {
        let mut shutdown = std::pin::pin!(shutdown);
        let mut backoff = Duration::from_millis(50);
        loop {
            tokio::select! {
                () = &mut shutdown => return Ok(()),
                result = self.run_once(Duration::from_millis(500)) => match result {
                    Ok(_) => backoff = Duration::from_millis(50),
                    Err(e) => {
                        tracing::warn!(group = %self.options.group, error = %e, "worker batch failed; will retry");
                        tokio::select! {
                            () = &mut shutdown => return Ok(()),
                            () = tokio::time::sleep(backoff) => {}
                        }
                        backoff = (backoff * 2).min(Duration::from_secs(5));
                    }
                },
            }
        }
    }

    async fn poll_batch(&self, wait: Duration) -> Result<Vec<OwnedMessage>> {
        let first = match tokio::time::timeout(wait, self.consumer.recv()).await {
            Err(_elapsed) => return Ok(Vec::new()),
            Ok(Ok(m)) => m.detach(),
            // Per-partition news (a subscribed topic that does not exist yet,
            // e.g. no transfer was ever published): nothing to apply, nothing lost.
            Ok(Err(KafkaError::MessageConsumption(code))) => {
                tracing::debug!(group = %self.options.group, %code, "consumer notice");
                return Ok(Vec::new());
            }
            Ok(Err(e)) => return Err(e.into()),
        };
        let mut batch = vec![first];
        let deadline = tokio::time::Instant::now() + self.options.linger;
        while batch.len() < self.options.batch_size.max(1) {
            match tokio::time::timeout_at(deadline, self.consumer.recv()).await {
                Ok(Ok(m)) => batch.push(m.detach()),
                // Keep what we have; the error shows again on the next poll if it lasts.
                Ok(Err(e)) => {
                    tracing::debug!(error = %e, "consumer error while filling a batch");
                    break;
                }
                Err(_elapsed) => break,
            }
        }
        Ok(batch)
    }

    fn commit_offsets(&self, batch: &[OwnedMessage]) -> Result<()> {
        let mut next: HashMap<(&str, i32), i64> = HashMap::new();
        for m in batch {
            let at = next.entry((m.topic(), m.partition())).or_insert(0);
            *at = (*at).max(m.offset() + 1);
        }
        let mut list = TopicPartitionList::with_capacity(next.len());
        for ((topic, partition), offset) in next {
            list.add_partition_offset(topic, partition, Offset::Offset(offset))?;
        }
        self.consumer.commit(&list, CommitMode::Sync)?;
        Ok(())
    }

    /// One transaction for the batch; a handler's permanent failure rolls it
    /// back, parks the stream from the failing event on, and tries again.
    async fn apply_batch(&self, batch: &[OwnedMessage]) -> Result<WorkerOutcome> {
        let group = self.options.group.as_str();
        let filter = self.projection.filter();
        let mut parked_from: HashMap<StreamId, Version> =
            self.backend.parked_streams(group).await?.into_iter().map(|s| (s, Version::NONE)).collect();
        let mut reasons: HashMap<EventId, String> = HashMap::new();
        let mut decoded: Vec<std::result::Result<RecordedEvent, String>> = batch.iter().map(message::decode).collect();
        self.open(&mut decoded).await?;
        // Each retry parks one more stream, so this ends within (streams + 1) rounds.
        loop {
            let mut tx = self.backend.begin().await?;
            let mut outcome = WorkerOutcome { messages: batch.len(), ..WorkerOutcome::default() };
            let mut last: HashMap<StreamId, u64> = HashMap::new();
            let mut dirty: HashSet<StreamId> = HashSet::new();
            let mut failed = None;
            for (m, event) in batch.iter().zip(&decoded) {
                let event = match event {
                    Ok(e) => e,
                    Err(reason) => {
                        tracing::warn!(group, topic = m.topic(), partition = m.partition(), offset = m.offset(),
                            %reason, "not an eslab event; kept as a dead letter");
                        tx.dead_letter(group, &dead_letter(m, reason)).await.map_err(handler_error)?;
                        outcome.dead_letters += 1;
                        continue;
                    }
                };
                if !filter.matches(&event.stream_id) {
                    continue;
                }
                let version = event.stream_version.get();
                if parked_from.get(&event.stream_id).is_some_and(|from| event.stream_version >= *from) {
                    let reason = reasons.get(&event.event_id).map_or("stream parked", String::as_str);
                    self.backend.park(&mut tx, group, event, reason).await?;
                    outcome.parked += 1;
                    continue;
                }
                let applied = match last.get(&event.stream_id) {
                    Some(v) => *v,
                    None => tx.applied_version(group, &event.stream_id).await.map_err(handler_error)?,
                };
                if version <= applied {
                    outcome.duplicates += 1;
                    continue;
                }
                if version > applied + 1 {
                    let gap = Gap {
                        stream_id: event.stream_id.as_str().to_owned(),
                        expected: applied + 1,
                        got: version,
                        topic: m.topic().to_owned(),
                        partition: m.partition(),
                        offset: m.offset(),
                    };
                    tracing::warn!(group, stream = %event.stream_id, expected = gap.expected, got = version,
                        "gap in a stream: event not applied (waiting for the missing ones)");
                    tx.record_gap(group, &gap).await.map_err(handler_error)?;
                    last.insert(event.stream_id.clone(), applied);
                    outcome.gaps += 1;
                    continue;
                }
                match self.projection.apply(&mut tx, event).await {
                    Ok(()) => {
                        last.insert(event.stream_id.clone(), version);
                        dirty.insert(event.stream_id.clone());
                        outcome.applied += 1;
                    }
                    Err(e) if e.transient => {
                        return Err(Error::Projection(eslab_projection::Error::Transient {
                            projection: group.to_owned(),
                            source: e,
                        }));
                    }
                    Err(e) => {
                        failed = Some((event, e));
                        break;
                    }
                }
            }
            match failed {
                None => {
                    for stream in &dirty {
                        let version = last.get(stream).copied().unwrap_or(0);
                        tx.set_applied_version(group, stream, version).await.map_err(handler_error)?;
                    }
                    self.backend.commit(tx).await?;
                    return Ok(outcome);
                }
                Some((event, e)) => {
                    drop(tx);
                    tracing::warn!(group, stream = %event.stream_id, version = %event.stream_version,
                        error = %e, "handler failed; parking the stream");
                    parked_from.insert(event.stream_id.clone(), event.stream_version);
                    reasons.insert(event.event_id, e.message);
                }
            }
        }
    }

    /// The parked events of this worker (of one stream, or all).
    ///
    /// # Errors
    /// The backend failing.
    pub async fn parked(&self, stream: Option<&StreamId>) -> Result<Vec<ParkedEvent>> {
        Ok(self.backend.parked(&self.options.group, stream).await?)
    }

    /// Applies the parked events of `stream` again, in order, in one
    /// transaction (duplicates skipped); on success they are unparked and the
    /// stream goes on. Returns how many were applied.
    ///
    /// # Errors
    /// The handler failing again ([`eslab_projection::Error::RetryFailed`]), or the backend.
    pub async fn retry(&self, stream: &StreamId) -> Result<usize> {
        let group = self.options.group.as_str();
        let parked = self.backend.parked(group, Some(stream)).await?;
        let mut tx = self.backend.begin().await?;
        let mut applied_version = tx.applied_version(group, stream).await.map_err(handler_error)?;
        let mut applied = 0;
        for p in &parked {
            let version = p.event.stream_version.get();
            if version == applied_version + 1 {
                if let Err(e) = self.projection.apply(&mut tx, &p.event).await {
                    return Err(Error::Projection(eslab_projection::Error::RetryFailed {
                        stream: stream.clone(),
                        event_id: p.event.event_id,
                        source: e,
                    }));
                }
                applied_version = version;
                applied += 1;
            }
            self.backend.unpark(&mut tx, group, &p.event).await?;
        }
        tx.set_applied_version(group, stream, applied_version).await.map_err(handler_error)?;
        self.backend.commit(tx).await?;
        Ok(applied)
    }

    /// Drops the first parked event of `stream` (the one that failed) without
    /// applying it, marks its version as passed, then retries the rest.
    ///
    /// # Errors
    /// As [`retry`](Self::retry).
    pub async fn skip(&self, stream: &StreamId) -> Result<usize> {
        let group = self.options.group.as_str();
        let parked = self.backend.parked(group, Some(stream)).await?;
        let Some(first) = parked.first() else { return Ok(0) };
        tracing::warn!(group, %stream, event_id = %first.event.event_id, "skipping a parked event");
        let mut tx = self.backend.begin().await?;
        self.backend.unpark(&mut tx, group, &first.event).await?;
        let applied = tx.applied_version(group, stream).await.map_err(handler_error)?;
        tx.set_applied_version(group, stream, applied.max(first.event.stream_version.get()))
            .await
            .map_err(handler_error)?;
        self.backend.commit(tx).await?;
        self.retry(stream).await
    }
}

fn handler_error(e: HandlerError) -> Error {
    Error::Projection(eslab_projection::Error::Backend(Box::new(e)))
}

fn dead_letter(m: &OwnedMessage, reason: &str) -> DeadLetter {
    DeadLetter {
        topic: m.topic().to_owned(),
        partition: m.partition(),
        offset: m.offset(),
        key: m.key().map(|k| String::from_utf8_lossy(k).into_owned()),
        payload: m.payload().map(|p| String::from_utf8_lossy(p).into_owned()),
        reason: reason.to_owned(),
    }
}

/// DDL of the worker's tables (types both SQL dialects accept).
const SCHEMA: [&str; 3] = [
    "CREATE TABLE IF NOT EXISTS kafka_applied (
        consumer_group TEXT NOT NULL, stream_id TEXT NOT NULL, version BIGINT NOT NULL,
        PRIMARY KEY (consumer_group, stream_id))",
    "CREATE TABLE IF NOT EXISTS kafka_gaps (
        consumer_group TEXT NOT NULL, stream_id TEXT NOT NULL, expected BIGINT NOT NULL, got BIGINT NOT NULL,
        topic TEXT NOT NULL, kafka_partition INTEGER NOT NULL, kafka_offset BIGINT NOT NULL, seen_at_ms BIGINT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS kafka_dead_letters (
        consumer_group TEXT NOT NULL, topic TEXT NOT NULL, kafka_partition INTEGER NOT NULL,
        kafka_offset BIGINT NOT NULL, message_key TEXT, payload TEXT, reason TEXT NOT NULL, kept_at_ms BIGINT NOT NULL,
        PRIMARY KEY (consumer_group, topic, kafka_partition, kafka_offset))",
];

fn transient(e: sqlx::Error) -> HandlerError {
    HandlerError::transient(e.to_string()).with_source(e)
}

fn to_i64(v: u64) -> Result<i64, HandlerError> {
    i64::try_from(v).map_err(|_| HandlerError::new(format!("version {v} does not fit in BIGINT")))
}

fn now_ms() -> i64 {
    let ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis());
    i64::try_from(ms).unwrap_or(i64::MAX)
}

/// Queries of the worker's tables (the read side of its books).
#[derive(Debug, Clone)]
pub struct WorkerTables<P> {
    pool: P,
}

impl<P> WorkerTables<P> {
    /// Queries over `pool` (the pool the worker's backend writes through).
    pub fn new(pool: P) -> Self {
        WorkerTables { pool }
    }
}

type GapRow = (String, i64, i64, String, i32, i64);
type LetterRow = (String, i32, i64, Option<String>, Option<String>, String);

macro_rules! sql_worker {
    ($db:ty, $pool:ty) => {
        impl WorkerTx for sqlx::Transaction<'static, $db> {
            async fn applied_version(&mut self, group: &str, stream: &StreamId) -> Result<u64, HandlerError> {
                let v: Option<i64> = sqlx::query_scalar(
                    "SELECT version FROM kafka_applied WHERE consumer_group = $1 AND stream_id = $2",
                )
                .bind(group)
                .bind(stream.as_str())
                .fetch_optional(&mut **self)
                .await
                .map_err(transient)?;
                Ok(v.and_then(|v| u64::try_from(v).ok()).unwrap_or(0))
            }

            async fn set_applied_version(
                &mut self,
                group: &str,
                stream: &StreamId,
                version: u64,
            ) -> Result<(), HandlerError> {
                sqlx::query(
                    "INSERT INTO kafka_applied (consumer_group, stream_id, version) VALUES ($1, $2, $3)
                     ON CONFLICT (consumer_group, stream_id) DO UPDATE SET version = excluded.version",
                )
                .bind(group)
                .bind(stream.as_str())
                .bind(to_i64(version)?)
                .execute(&mut **self)
                .await
                .map_err(transient)?;
                Ok(())
            }

            async fn record_gap(&mut self, group: &str, gap: &Gap) -> Result<(), HandlerError> {
                sqlx::query(
                    "INSERT INTO kafka_gaps (consumer_group, stream_id, expected, got, topic, kafka_partition,
                         kafka_offset, seen_at_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                )
                .bind(group)
                .bind(&gap.stream_id)
                .bind(to_i64(gap.expected)?)
                .bind(to_i64(gap.got)?)
                .bind(&gap.topic)
                .bind(gap.partition)
                .bind(gap.offset)
                .bind(now_ms())
                .execute(&mut **self)
                .await
                .map_err(transient)?;
                Ok(())
            }

            async fn dead_letter(&mut self, group: &str, letter: &DeadLetter) -> Result<(), HandlerError> {
                sqlx::query(
                    "INSERT INTO kafka_dead_letters (consumer_group, topic, kafka_partition, kafka_offset, message_key,
                         payload, reason, kept_at_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
                     ON CONFLICT (consumer_group, topic, kafka_partition, kafka_offset) DO NOTHING",
                )
                .bind(group)
                .bind(&letter.topic)
                .bind(letter.partition)
                .bind(letter.offset)
                .bind(&letter.key)
                .bind(&letter.payload)
                .bind(&letter.reason)
                .bind(now_ms())
                .execute(&mut **self)
                .await
                .map_err(transient)?;
                Ok(())
            }
        }

        impl WorkerTables<$pool> {
            /// Creates the worker's tables if they do not exist.
            ///
            /// # Errors
            /// The database refusing the DDL.
            pub async fn ensure_schema(&self) -> Result<()> {
                for ddl in SCHEMA {
                    sqlx::query(ddl).execute(&self.pool).await?;
                }
                Ok(())
            }

            /// The last version `group` applied for `stream` (0 if none).
            ///
            /// # Errors
            /// The query failing.
            pub async fn applied_version(&self, group: &str, stream: &str) -> Result<u64> {
                let v: Option<i64> = sqlx::query_scalar(
                    "SELECT version FROM kafka_applied WHERE consumer_group = $1 AND stream_id = $2",
                )
                .bind(group)
                .bind(stream)
                .fetch_optional(&self.pool)
                .await?;
                Ok(v.and_then(|v| u64::try_from(v).ok()).unwrap_or(0))
            }

            /// The gaps `group` met, oldest first.
            ///
            /// # Errors
            /// The query failing.
            pub async fn gaps(&self, group: &str) -> Result<Vec<Gap>> {
                let rows: Vec<GapRow> = sqlx::query_as(
                    "SELECT stream_id, expected, got, topic, kafka_partition, kafka_offset FROM kafka_gaps
                     WHERE consumer_group = $1 ORDER BY seen_at_ms, stream_id",
                )
                .bind(group)
                .fetch_all(&self.pool)
                .await?;
                Ok(rows
                    .into_iter()
                    .map(|(stream_id, expected, got, topic, partition, offset)| Gap {
                        stream_id,
                        expected: u64::try_from(expected).unwrap_or(0),
                        got: u64::try_from(got).unwrap_or(0),
                        topic,
                        partition,
                        offset,
                    })
                    .collect())
            }

            /// The dead letters `group` kept, by topic, partition, offset.
            ///
            /// # Errors
            /// The query failing.
            pub async fn dead_letters(&self, group: &str) -> Result<Vec<DeadLetter>> {
                let rows: Vec<LetterRow> = sqlx::query_as(
                    "SELECT topic, kafka_partition, kafka_offset, message_key, payload, reason FROM kafka_dead_letters
                     WHERE consumer_group = $1 ORDER BY topic, kafka_partition, kafka_offset",
                )
                .bind(group)
                .fetch_all(&self.pool)
                .await?;
                Ok(rows
                    .into_iter()
                    .map(|(topic, partition, offset, key, payload, reason)| DeadLetter {
                        topic,
                        partition,
                        offset,
                        key,
                        payload,
                        reason,
                    })
                    .collect())
            }
        }
    };
}

sql_worker!(sqlx::Postgres, sqlx::PgPool);
sql_worker!(sqlx::Sqlite, sqlx::SqlitePool);
