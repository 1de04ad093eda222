//! The outbox relay: a projection whose sink is Kafka.
//!
//! It is an [`eslab_projection::Runner`] (so it inherits checkpoints, the
//! lease, batching, parked events and live mode) over a [`RelayBackend`]: a
//! read-model backend wrapper whose transaction also collects the delivery
//! futures of the batch's messages, and whose commit waits for the broker to
//! acknowledge every one of them *before* committing the checkpoint. A failed
//! delivery fails the commit: the checkpoint stays, and the batch is published
//! again (duplicates, never losses; the worker dedupes by stream version).
//!
//! The producer is idempotent (`enable.idempotence=true`: no duplicates or
//! reordering from its own retries) and keys each message by stream id, so a
//! stream's events land in one partition in stream order.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use eslab_core::{Checkpoint, FeedFilter, RecordedEvent, StreamId};
use eslab_projection::{Backend, HandlerError, ParkedEvent, Projection, Runner, RunnerOptions, UpcastingStore};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};

use crate::message::{self, Outgoing};
use crate::{Error, KafkaOptions, Result};

/// The relay's default name (its checkpoint, lease and parked events).
pub const DEFAULT_NAME: &str = "kafka-relay";

/// The relay: the runner of a [`Publisher`] over a [`RelayBackend`].
pub type Relay<S, B> = Runner<S, RelayBackend<B>, Publisher>;

/// A relay named [`DEFAULT_NAME`] publishing every category of `store`'s
/// feed, with its checkpoint in `backend` (batches of 2000 events).
///
/// `store` is an upcasting [`eslab_core::EventStore`]
/// ([`UpcastingStore`]): messages carry each event at its current schema
/// version, which is what the [`Worker`](crate::Worker)'s handlers decode.
///
/// # Errors
/// Unusable options or a producer librdkafka refuses to create.
pub fn relay<S, B>(store: S, backend: Arc<B>, options: &KafkaOptions) -> Result<Relay<S, B>>
where
    S: UpcastingStore,
    B: Backend,
{
    let publisher = Publisher::new(options, DEFAULT_NAME, FeedFilter::All)?;
    let runner = Runner::new(store, Arc::new(RelayBackend::new(backend)), Arc::new(publisher))
        .with_options(RunnerOptions { batch_size: 2000, ..RunnerOptions::default() });
    Ok(runner)
}

/// A transaction of the [`RelayBackend`]: the inner backend's transaction
/// (for the checkpoint and parked events) and the deliveries still awaited.
pub struct RelayTx<T> {
    inner: T,
    pending: Vec<DeliveryFuture>,
    /// The checkpoint to save once every delivery is acknowledged. Writing it
    /// only then keeps the database transaction read-only (no transaction id)
    /// while the broker is slow or down, so it never holds back the gap-safe
    /// feed's horizon for every other reader.
    checkpoint: Option<(String, Checkpoint)>,
    /// The publisher's count of batches failed in a row, told how this one went.
    failures: Option<Arc<AtomicU32>>,
}

impl<T> std::fmt::Debug for RelayTx<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RelayTx").field("pending", &self.pending.len()).finish_non_exhaustive()
    }
}

impl<T> RelayTx<T> {
    /// The inner backend's transaction.
    pub fn inner(&mut self) -> &mut T {
        &mut self.inner
    }
}

/// Wraps a backend so that committing a batch first waits for the broker's
/// acknowledgement of every message the batch produced.
#[derive(Debug)]
pub struct RelayBackend<B> {
    inner: Arc<B>,
}

impl<B> RelayBackend<B> {
    /// Wraps `inner`.
    pub fn new(inner: Arc<B>) -> Self {
        RelayBackend { inner }
    }
}

fn delivery_error(e: KafkaError) -> eslab_projection::Error {
    eslab_projection::Error::Backend(Box::new(e))
}

impl<B: Backend> Backend for RelayBackend<B> {
    type Tx = RelayTx<B::Tx>;

    async fn begin(&self) -> eslab_projection::Result<Self::Tx> {
        Ok(RelayTx { inner: self.inner.begin().await?, pending: Vec::new(), checkpoint: None, failures: None })
    }

    async fn commit(&self, tx: Self::Tx) -> eslab_projection::Result<()> {
        let RelayTx { mut inner, pending, checkpoint, failures } = tx;
        for delivery in pending {
            let failed = match delivery.await {
                Ok(Ok(_)) => continue,
                Ok(Err((e, _message))) => e,
                // The producer dropped the message without a report (it is shutting down).
                Err(_canceled) => KafkaError::Canceled,
            };
            if let Some(failures) = &failures {
                failures.fetch_add(1, Ordering::Relaxed);
            }
            return Err(delivery_error(failed));
        }
        if let Some(failures) = &failures {
            failures.store(0, Ordering::Relaxed);
        }
        if let Some((name, at)) = checkpoint {
            self.inner.save_checkpoint(&mut inner, &name, at).await?;
        }
        self.inner.commit(inner).await
    }

    async fn checkpoint(&self, name: &str) -> eslab_projection::Result<Checkpoint> {
        self.inner.checkpoint(name).await
    }

    async fn save_checkpoint(&self, tx: &mut Self::Tx, name: &str, at: Checkpoint) -> eslab_projection::Result<()> {
        // Written in `commit`, after the broker acknowledged the batch.
        tx.checkpoint = Some((name.to_owned(), at));
        Ok(())
    }

    async fn parked_streams(&self, projection: &str) -> eslab_projection::Result<HashSet<StreamId>> {
        self.inner.parked_streams(projection).await
    }

    async fn park(
        &self,
        tx: &mut Self::Tx,
        projection: &str,
        event: &RecordedEvent,
        reason: &str,
    ) -> eslab_projection::Result<()> {
        self.inner.park(&mut tx.inner, projection, event, reason).await
    }

    async fn parked(&self, projection: &str, stream: Option<&StreamId>) -> eslab_projection::Result<Vec<ParkedEvent>> {
        self.inner.parked(projection, stream).await
    }

    async fn unpark(&self, tx: &mut Self::Tx, projection: &str, event: &RecordedEvent) -> eslab_projection::Result<()> {
        self.inner.unpark(&mut tx.inner, projection, event).await
    }

    async fn forget_parked(&self, tx: &mut Self::Tx, subject: &eslab_core::Subject) -> eslab_projection::Result<u64> {
        self.inner.forget_parked(&mut tx.inner, subject).await
    }

    async fn acquire_lease(&self, name: &str, owner: &str, ttl: Duration) -> eslab_projection::Result<bool> {
        self.inner.acquire_lease(name, owner, ttl).await
    }

    async fn release_lease(&self, name: &str, owner: &str) -> eslab_projection::Result<()> {
        self.inner.release_lease(name, owner).await
    }

    async fn checkpoints(&self) -> eslab_projection::Result<Vec<(String, Checkpoint)>> {
        self.inner.checkpoints().await
    }

    async fn lease(&self, name: &str) -> eslab_projection::Result<Option<eslab_projection::Lease>> {
        self.inner.lease(name).await
    }
}

/// The relay's projection: produces each event to its category's topic.
pub struct Publisher {
    name: String,
    filter: FeedFilter,
    prefix: String,
    partitions: i32,
    /// The producer's settings, to build a new one when it fails for good.
    options: KafkaOptions,
    /// The producer; replaced after a fatal error (see [`Publisher::send`]).
    producer: RwLock<FutureProducer>,
    admin: AdminClient<DefaultClientContext>,
    /// Topics known to exist (created or found by this publisher).
    topics: Mutex<HashSet<String>>,
    /// Batches whose deliveries failed in a row (reset by one that succeeds).
    failed_batches: Arc<AtomicU32>,
}

/// After this many batches failed in a row, the relay's next batch goes
/// through a new producer (a new idempotent producer id): a broker that lost
/// the producer's sequence state can refuse every batch of the old one
/// without ever reporting a fatal error. Duplicates are possible across the
/// switch, losses are not.
pub const REPLACE_PRODUCER_AFTER: u32 = 3;

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher")
            .field("name", &self.name)
            .field("filter", &self.filter)
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

/// The producer settings the relay's guarantees rest on.
pub fn producer_config(options: &KafkaOptions) -> rdkafka::ClientConfig {
    let mut config = rdkafka::ClientConfig::new();
    config
        .set("bootstrap.servers", &options.brokers)
        // No duplicates or reordering from the producer's own retries; implies acks=all.
        .set("enable.idempotence", "true")
        .set("message.timeout.ms", options.message_timeout.as_millis().to_string())
        // Batch on the wire: the relay hands over thousands of messages at once.
        .set("linger.ms", "5")
        .set("batch.num.messages", "10000")
        .set("compression.type", "lz4");
    for (k, v) in &options.extra {
        config.set(k, v);
    }
    config
}

impl Publisher {
    /// A publisher named `name` (its checkpoint, lease and parked events)
    /// for the events `filter` lets through.
    ///
    /// # Errors
    /// Unusable options, or librdkafka refusing the configuration.
    pub fn new(options: &KafkaOptions, name: impl Into<String>, filter: FeedFilter) -> Result<Self> {
        options.validate()?;
        let producer: FutureProducer = producer_config(options).create()?;
        let admin: AdminClient<DefaultClientContext> = options.client_config().create()?;
        Ok(Publisher {
            name: name.into(),
            filter,
            prefix: options.topic_prefix.clone(),
            partitions: options.partitions,
            options: options.clone(),
            producer: RwLock::new(producer),
            admin,
            topics: Mutex::new(HashSet::new()),
            failed_batches: Arc::new(AtomicU32::new(0)),
        })
    }

    /// The producer (to flush it, warm it up, or read its statistics); a
    /// handle to the one in use now.
    pub fn producer(&self) -> FutureProducer {
        self.producer.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Replaces a producer that reported a fatal error with a new one (a new
    /// idempotent producer id). A fatal error (e.g. the broker lost the
    /// producer's sequence state across a crash) fails every later send of
    /// that producer, so without this the relay would never resume.
    /// Duplicates are possible across the switch; losses are not (the batch
    /// is published again, the checkpoint has not moved).
    fn replace_if_fatal(&self, failed: &FutureProducer) -> bool {
        let Some((code, reason)) = failed.client().fatal_error() else { return false };
        let mut current = self.producer.write().unwrap_or_else(PoisonError::into_inner);
        // Another task may have replaced it already.
        if current.client().fatal_error().is_none() {
            return true;
        }
        let Some(fresh) = self.new_producer() else { return false };
        tracing::warn!(relay = %self.name, %code, %reason, "the producer failed for good; using a new one");
        *current = fresh;
        true
    }

    /// A new producer with the relay's settings (`None`, logged, if librdkafka refuses it).
    fn new_producer(&self) -> Option<FutureProducer> {
        producer_config(&self.options)
            .create::<FutureProducer>()
            .inspect_err(|e| tracing::warn!(relay = %self.name, error = %e, "cannot create a new producer"))
            .ok()
    }

    /// Replaces the producer when [`REPLACE_PRODUCER_AFTER`] batches in a row
    /// failed, and counts again from zero. Not every producer that can no
    /// longer deliver reports a fatal error: a broker that restarted without
    /// the idempotent producer's sequence state may answer each of its
    /// batches with an error (tansu answers "unknown broker error") while
    /// the producer itself stays healthy, so the relay would retry the same
    /// batch for ever. A new producer gets a new producer id and starts its
    /// sequences afresh. As with a fatal error: duplicates are possible
    /// across the switch, losses are not. Returns whether it replaced it.
    fn replace_if_failing(&self) -> bool {
        let due = self
            .failed_batches
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| (n >= REPLACE_PRODUCER_AFTER).then_some(0))
            .is_ok();
        if !due {
            return false;
        }
        let Some(fresh) = self.new_producer() else { return false };
        tracing::warn!(relay = %self.name, batches = REPLACE_PRODUCER_AFTER, "deliveries kept failing; using a new producer");
        *self.producer.write().unwrap_or_else(PoisonError::into_inner) = fresh;
        true
    }

    /// Creates `topic` with the configured partitions unless it is known to exist.
    async fn ensure_topic(&self, topic: &str) -> Result<()> {
        if self.topics.lock().unwrap_or_else(PoisonError::into_inner).contains(topic) {
            return Ok(());
        }
        ensure_topics(&self.admin, &[topic], self.partitions).await?;
        self.topics.lock().unwrap_or_else(PoisonError::into_inner).insert(topic.to_owned());
        Ok(())
    }

    /// Hands one event to the producer; returns its delivery future.
    async fn send(&self, topic: &str, out: &Outgoing) -> Result<DeliveryFuture, KafkaError> {
        let mut record = FutureRecord::to(topic).key(&out.key).payload(&out.payload).headers(out.headers.clone());
        let mut producer = self.producer();
        let mut replaced = false;
        loop {
            match producer.send_result(record) {
                Ok(delivery) => return Ok(delivery),
                // The local queue is full: let the producer drain it a little.
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                // Once per call: a producer that failed for good is replaced
                // and the record goes to the new one.
                Err((_, back)) if !replaced && self.replace_if_fatal(&producer) => {
                    replaced = true;
                    record = back;
                    producer = self.producer();
                }
                Err((e, _)) => return Err(e),
            }
        }
    }
}

/// Creates the topics that do not exist yet, with `partitions` partitions
/// and replication factor 1 (or the broker's default replication when it has
/// more nodes: `-1`). Topics that already exist are left alone.
///
/// # Errors
/// The broker unreachable, or refusing a topic for another reason than its existence.
pub async fn ensure_topics(admin: &AdminClient<DefaultClientContext>, topics: &[&str], partitions: i32) -> Result<()> {
    let new: Vec<NewTopic<'_>> =
        topics.iter().map(|t| NewTopic::new(t, partitions, TopicReplication::Fixed(-1))).collect();
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    for result in admin.create_topics(new.iter(), &options).await? {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => return Err(Error::CreateTopic { topic, reason: code.to_string() }),
        }
    }
    Ok(())
}

impl<B: Backend> Projection<RelayBackend<B>> for Publisher {
    fn name(&self) -> &str {
        &self.name
    }

    fn filter(&self) -> FeedFilter {
        self.filter.clone()
    }

    async fn apply(&self, tx: &mut RelayTx<B::Tx>, event: &RecordedEvent) -> Result<(), HandlerError> {
        let topic = message::topic_for(&self.prefix, event.stream_id.category());
        // A broker that cannot be reached now may be back for the next attempt.
        self.ensure_topic(&topic).await.map_err(|e| HandlerError::transient(e.to_string()).with_source(e))?;
        // An event that cannot be encoded never will be: park its stream.
        let out = message::encode(event).map_err(HandlerError::new)?;
        if tx.failures.is_none() {
            // The batch's first event: its commit will say how it went.
            tx.failures = Some(Arc::clone(&self.failed_batches));
            self.replace_if_failing();
        }
        match self.send(&topic, &out).await {
            Ok(delivery) => {
                tx.pending.push(delivery);
                Ok(())
            }
            // Refused outright (e.g. larger than message.max.bytes): retrying cannot help.
            Err(e @ KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge)) => {
                Err(HandlerError::new(e.to_string()).with_source(e))
            }
            Err(e) => Err(HandlerError::transient(e.to_string()).with_source(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_producer_whose_batches_keep_failing_is_replaced_once_per_run_of_failures() {
        // Creating a producer does not connect: no broker is needed.
        let publisher = Publisher::new(&KafkaOptions::new("127.0.0.1:1"), "t", FeedFilter::All).unwrap();
        let first = publisher.producer().client().native_ptr();
        publisher.failed_batches.store(REPLACE_PRODUCER_AFTER - 1, Ordering::Relaxed);
        assert!(!publisher.replace_if_failing(), "not yet");
        assert_eq!(publisher.producer().client().native_ptr(), first);
        publisher.failed_batches.store(REPLACE_PRODUCER_AFTER, Ordering::Relaxed);
        assert!(publisher.replace_if_failing());
        let second = publisher.producer().client().native_ptr();
        assert_ne!(second, first, "a new producer");
        assert_eq!(publisher.failed_batches.load(Ordering::Relaxed), 0, "counting starts again");
        assert!(!publisher.replace_if_failing(), "once per run of failures");
        assert_eq!(publisher.producer().client().native_ptr(), second);
    }
}
