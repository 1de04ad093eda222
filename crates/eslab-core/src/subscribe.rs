//! Live subscriptions: catch up on the feed, then follow it as events commit.
//!
//! A store says "something was committed" through [`WakeUps`]; the one follow
//! loop of the library, [`EventStore::subscribe`], reads the feed page by page,
//! then waits for a wake-up or a polling timeout and reads again. Wake-ups only
//! cut the wait short: the feed's checkpoints decide what is delivered, so a
//! lost, late or spurious wake-up never loses or repeats an event.

use std::future::Future;
use std::time::Duration;

use futures_core::Stream;
use futures_util::future::BoxFuture;
use futures_util::stream::{self, BoxStream};
use futures_util::{FutureExt, StreamExt};

use crate::error::Result;
use crate::event::RecordedEvent;
use crate::store::{DEFAULT_PAGE_SIZE, EventReader, EventStore, FeedFilter};
use crate::version::Checkpoint;

/// A stream of wake-ups: each item means "the feed may have new events".
///
/// Wake-ups may be spurious and are coalesced (one item for many commits); a
/// stream that ends sends no more (its reader then only polls).
pub type WakeUpStream = BoxStream<'static, ()>;

/// A store that can wake its live readers when events commit.
///
/// Implemented by every store of eslab (memory: an append signal; SQLite: its
/// commit watch; PostgreSQL: `LISTEN`), and forwarded by [`EventStore`].
///
/// # Contract
/// - [`wake_ups`](Self::wake_ups) returns a stream armed *before* the future
///   resolves: a commit that happens after it resolved yields an item (on
///   PostgreSQL, once the `LISTEN` connection is up).
/// - Wake-ups are best effort: commits made by other processes (SQLite,
///   memory), a dropped `LISTEN` connection or a store without notifications
///   may give none, so readers must also poll, as [`EventStore::subscribe`]
///   does. A store that cannot offer wake-ups at all returns [`no_wake_ups`].
/// - Dropping the stream releases whatever it holds (a receiver, a connection).
pub trait WakeUps: Send + Sync {
    /// A fresh wake-up stream for one reader.
    fn wake_ups(&self) -> impl Future<Output = WakeUpStream> + Send;
}

impl<S: WakeUps> WakeUps for EventStore<S> {
    fn wake_ups(&self) -> impl Future<Output = WakeUpStream> + Send {
        self.backend().wake_ups()
    }
}

/// Wake-ups that never come: the reader only polls.
pub fn no_wake_ups() -> WakeUpStream {
    stream::pending().boxed()
}

/// The wake-ups of a [`tokio::sync::watch`] channel: one item each time the
/// value changes after the receiver was made (or last seen). The stream ends
/// when the sender is dropped.
///
/// A watch is level-triggered: a change that happens while nobody waits is
/// still seen by the next wait, so no wake-up is lost between a read and a wait.
pub fn watch_wake_ups<T: Send + Sync + 'static>(receiver: tokio::sync::watch::Receiver<T>) -> WakeUpStream {
    stream::unfold(receiver, |mut receiver| async move {
        // `changed` marks the value seen: the next wait is for the next change.
        receiver.changed().await.ok()?;
        Some(((), receiver))
    })
    .boxed()
}

/// How a subscription reads and waits. Start from [`SubscribeOptions::default`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SubscribeOptions {
    /// The first polling interval once caught up, and after each wake-up
    /// (default 10 ms).
    pub min_poll: Duration,
    /// The longest polling interval: it doubles from `min_poll` up to this
    /// while nothing happens (default 1 s). Bounds how late an event whose
    /// wake-up was lost (or never sent) is seen.
    pub max_poll: Duration,
    /// Events per read (default [`DEFAULT_PAGE_SIZE`]).
    pub page_size: usize,
}

impl Default for SubscribeOptions {
    fn default() -> Self {
        SubscribeOptions {
            min_poll: Duration::from_millis(10),
            max_poll: Duration::from_secs(1),
            page_size: DEFAULT_PAGE_SIZE,
        }
    }
}

impl SubscribeOptions {
    /// Sets the polling interval: `min` after a wake-up, doubling up to `max`
    /// (at least `min`) while idle.
    #[must_use]
    pub fn poll(mut self, min: Duration, max: Duration) -> Self {
        self.min_poll = min;
        self.max_poll = max.max(min);
        self
    }

    /// Sets how many events one read asks for (at least 1).
    #[must_use]
    pub fn page_size(mut self, page_size: usize) -> Self {
        self.page_size = page_size.max(1);
        self
    }
}

/// Where the wake-ups of a subscription come from.
enum Wake {
    /// Not asked for yet (the store's, resolved on the first poll).
    Pending(BoxFuture<'static, WakeUpStream>),
    /// Armed.
    Ready(WakeUpStream),
}

/// What the subscription does before its next read.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Then {
    /// Read at once (a full page came back: there may be more).
    Read,
    /// Caught up: wait for a wake-up or the polling interval.
    Wait,
}

/// The state of one subscription, owned by its stream.
struct Follow<S> {
    store: EventStore<S>,
    filter: FeedFilter,
    after: Checkpoint,
    options: SubscribeOptions,
    wake: Wake,
    /// The current polling interval.
    idle: Duration,
    then: Then,
}

impl<S: EventReader> Follow<S> {
    /// The next batch of items to yield: events (opened and upcast), ending with an
    /// error if a read or an upcast failed. Never empty.
    async fn next_batch(&mut self) -> Vec<Result<RecordedEvent>> {
        if let Wake::Pending(arming) = &mut self.wake {
            self.wake = Wake::Ready(arming.await);
        }
        loop {
            if self.then == Then::Wait {
                self.wait().await;
            }
            let page_size = self.options.page_size.max(1);
            let read = self.store.backend().read_feed(&self.filter, self.after, page_size).await;
            let page = match read {
                Ok(mut page) => match self.store.open_page(&mut page).await {
                    Ok(()) => page,
                    Err(e) => {
                        self.then = Then::Wait;
                        return vec![Err(e)];
                    }
                },
                Err(e) => {
                    // Retry from the same checkpoint after the interval, which
                    // keeps backing off while the errors go on.
                    self.then = Then::Wait;
                    return vec![Err(e)];
                }
            };
            let full = page.len() >= page_size;
            let mut batch = Vec::with_capacity(page.len());
            for mut event in page {
                if let Err(e) = self.store.upcasters().upcast(&mut event) {
                    // The events before it are delivered; the next read starts at it again.
                    batch.push(Err(e));
                    self.then = Then::Wait;
                    return batch;
                }
                self.after = event.checkpoint();
                batch.push(Ok(event));
            }
            // A full page: read on at once. A short one: caught up, wait.
            self.then = if full { Then::Read } else { Then::Wait };
            if !batch.is_empty() {
                // Events are flowing: watch closely again.
                self.idle = self.options.min_poll;
                return batch;
            }
        }
    }

    /// Waits for a wake-up (the interval starts over) or the polling interval
    /// (which then doubles, up to `max_poll`).
    async fn wait(&mut self) {
        let Wake::Ready(wake_ups) = &mut self.wake else { return };
        let sleep = tokio::time::sleep(self.idle);
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                woke = wake_ups.next() => match woke {
                    Some(()) => {
                        self.idle = self.options.min_poll;
                        return;
                    }
                    // No more wake-ups: poll only.
                    None => *wake_ups = no_wake_ups(),
                },
                () = &mut sleep => {
                    // Not `clamp`: it panics if the fields were set with min > max.
                    self.idle = self.idle.saturating_mul(2).min(self.options.max_poll).max(self.options.min_poll);
                    return;
                }
            }
        }
    }
}

fn follow<S>(
    store: EventStore<S>,
    wake: Wake,
    filter: FeedFilter,
    after: Checkpoint,
    options: SubscribeOptions,
) -> impl Stream<Item = Result<RecordedEvent>> + Send + 'static
where
    S: EventReader + 'static,
{
    let idle = options.min_poll;
    let state = Follow { store, filter, after, options, wake, idle, then: Then::Read };
    stream::unfold(state, |mut state| async move {
        let batch = state.next_batch().await;
        Some((stream::iter(batch), state))
    })
    .flatten()
}

impl<S> EventStore<S>
where
    S: EventReader + Clone + 'static,
{
    /// Every event of the feed after `after`, then every event committed
    /// later, for as long as the stream is polled: catches up page by page,
    /// then waits for the store's [`WakeUps`] or a polling timeout (10 ms,
    /// doubling to 1 s while idle) and reads again. Events are upcast like on
    /// every read path of the `EventStore`.
    ///
    /// # Guarantees
    /// - Events come in feed order, each exactly once (the subscription
    ///   resumes from the last delivered event's [`checkpoint`](RecordedEvent::checkpoint),
    ///   which is what makes PostgreSQL's feed gap-safe); a wake-up only
    ///   decides *when* to read.
    /// - Commits no wake-up announces (another process, a lost notification)
    ///   are seen within `max_poll`.
    /// - Nothing runs in the background: dropping the stream stops the
    ///   subscription and releases its wake-up source (on PostgreSQL, its
    ///   `LISTEN` connection).
    ///
    /// # Errors
    /// A failed read (or upcast) is **yielded as an item, and the stream goes
    /// on**: it retries from the same checkpoint after the polling interval,
    /// which keeps backing off while the errors last, so a store that is down
    /// for a while gives an error per attempt and then the events, none lost.
    /// The events of a page before an event that fails to upcast are yielded
    /// first; that event keeps failing until the upcasters are fixed. A caller
    /// that cannot wait stops at the first error (drops the stream); one that
    /// can logs it and keeps polling. The stream itself never ends.
    ///
    /// ```
    /// use eslab_core::{Checkpoint, EventAppender, EventStore, ExpectedVersion, FeedFilter, Metadata, NewEvent, StreamId};
    /// use futures_util::StreamExt;
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let store = EventStore::new(eslab_memory::MemoryStore::new());
    /// let mut live = std::pin::pin!(store.subscribe(FeedFilter::All, Checkpoint::START));
    /// let stream: StreamId = "account-1".parse()?;
    /// let opened = NewEvent::new("Opened", 1, serde_json::json!({}), Metadata::now());
    /// store.append(&stream, ExpectedVersion::NoStream, vec![opened]).await?;
    /// let event = live.next().await.expect("the stream never ends")?;
    /// assert_eq!(event.event_type, "Opened");
    /// // Resume later, after the last event handled, with nothing missed or repeated:
    /// let resume_from = event.checkpoint();
    /// # let _ = resume_from;
    /// # Ok::<_, Box<dyn std::error::Error>>(())
    /// # }).unwrap();
    /// ```
    pub fn subscribe(
        &self,
        filter: FeedFilter,
        after: Checkpoint,
    ) -> impl Stream<Item = Result<RecordedEvent>> + Send + use<S>
    where
        S: WakeUps,
    {
        self.subscribe_with(filter, after, SubscribeOptions::default())
    }

    /// [`subscribe`](Self::subscribe) with options (polling interval, page size).
    pub fn subscribe_with(
        &self,
        filter: FeedFilter,
        after: Checkpoint,
        options: SubscribeOptions,
    ) -> impl Stream<Item = Result<RecordedEvent>> + Send + use<S>
    where
        S: WakeUps,
    {
        let backend = self.backend().clone();
        let arming = async move { backend.wake_ups().await }.boxed();
        follow(self.clone(), Wake::Pending(arming), filter, after, options)
    }

    /// [`subscribe_with`](Self::subscribe_with), woken by `wake_ups` instead
    /// of the store's own (e.g. [`no_wake_ups`] to poll only, or a signal of
    /// your application's). Arm `wake_ups` before calling, so that no commit
    /// after the call goes unannounced.
    pub fn subscribe_woken_by(
        &self,
        wake_ups: WakeUpStream,
        filter: FeedFilter,
        after: Checkpoint,
        options: SubscribeOptions,
    ) -> impl Stream<Item = Result<RecordedEvent>> + Send + use<S> {
        follow(self.clone(), Wake::Ready(wake_ups), filter, after, options)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};

    use serde_json::json;

    use super::*;
    use crate::error::Error;
    use crate::event::Metadata;
    use crate::stream::StreamId;
    use crate::upcast::Upcasters;
    use crate::version::{Position, Version};

    /// A feed in memory whose next `failures` reads fail.
    #[derive(Clone, Default)]
    struct Flaky {
        events: Arc<Mutex<Vec<RecordedEvent>>>,
        failures: Arc<AtomicUsize>,
    }

    impl Flaky {
        fn push(&self, event_type: &str) {
            let mut events = self.events.lock().unwrap();
            let n = events.len() as u64 + 1;
            events.push(RecordedEvent {
                event_id: uuid::Uuid::now_v7(),
                stream_id: StreamId::new("test", "1").unwrap(),
                stream_version: Version::new(n),
                position: Position::new(n),
                transaction: 0,
                event_type: event_type.to_owned(),
                schema_version: 1,
                payload: json!({ "n": n }),
                metadata: Metadata::now(),
                recorded_at: time::OffsetDateTime::now_utc(),
            });
        }
    }

    impl EventReader for Flaky {
        async fn read_stream(&self, _: &StreamId, _: Version, _: usize) -> Result<Vec<RecordedEvent>> {
            Ok(Vec::new())
        }

        async fn read_feed(&self, _: &FeedFilter, after: Checkpoint, limit: usize) -> Result<Vec<RecordedEvent>> {
            if self.failures.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok() {
                return Err(Error::Unavailable("the database is down".into()));
            }
            let events = self.events.lock().unwrap();
            Ok(events.iter().filter(|e| e.position > after.position).take(limit).cloned().collect())
        }

        async fn stream_version(&self, _: &StreamId) -> Result<Version> {
            Ok(Version::NONE)
        }

        async fn read_query(&self, _: &crate::Query) -> Result<crate::QueryRead> {
            Err(Error::backend("not needed here"))
        }
    }

    fn fast() -> SubscribeOptions {
        SubscribeOptions::default().poll(Duration::from_millis(1), Duration::from_millis(5)).page_size(2)
    }

    async fn next<T>(live: &mut (impl Stream<Item = T> + Unpin)) -> T {
        tokio::time::timeout(Duration::from_secs(10), live.next()).await.expect("an item in time").expect("no end")
    }

    #[tokio::test]
    async fn read_errors_are_items_and_the_subscription_resumes_where_it_was() {
        let feed = Flaky::default();
        feed.push("E");
        let store = EventStore::new(feed.clone());
        let mut live =
            std::pin::pin!(store.subscribe_woken_by(no_wake_ups(), FeedFilter::All, Checkpoint::START, fast()));
        assert_eq!(next(&mut live).await.unwrap().position, Position::new(1));
        feed.failures.store(2, Ordering::SeqCst);
        feed.push("E");
        feed.push("E");
        for _ in 0..2 {
            assert!(next(&mut live).await.unwrap_err().is_unavailable());
        }
        // Neither lost nor repeated around the errors.
        assert_eq!(next(&mut live).await.unwrap().position, Position::new(2));
        assert_eq!(next(&mut live).await.unwrap().position, Position::new(3));
        feed.push("E");
        assert_eq!(next(&mut live).await.unwrap().position, Position::new(4));
    }

    #[tokio::test]
    async fn events_are_upcast_and_one_that_fails_is_an_error_after_those_before_it() {
        let feed = Flaky::default();
        feed.push("Old");
        feed.push("Bad");
        let upcasters = Upcasters::new()
            .register("Old", 1, 2, |p| Ok(json!({ "v2": p })))
            .unwrap()
            .register("Bad", 1, 2, |_| Err("cannot".to_owned()))
            .unwrap();
        let store = EventStore::new(feed).with_upcasters(upcasters);
        let options = fast().page_size(10);
        let mut live =
            std::pin::pin!(store.subscribe_woken_by(no_wake_ups(), FeedFilter::All, Checkpoint::START, options));
        let old = next(&mut live).await.unwrap();
        assert_eq!((old.schema_version, old.payload), (2, json!({ "v2": { "n": 1 } })));
        // The failing event is retried, never skipped.
        for _ in 0..2 {
            assert!(matches!(next(&mut live).await, Err(Error::Upcast { .. })));
        }
    }

    /// Sets its flag when dropped.
    struct Guard(Arc<AtomicBool>);

    impl Drop for Guard {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    #[tokio::test]
    async fn dropping_the_subscription_releases_its_wake_ups() {
        let feed = Flaky::default();
        feed.push("E");
        let dropped = Arc::new(AtomicBool::new(false));
        let guard = Guard(dropped.clone());
        let wake_ups = stream::pending::<()>()
            .inspect(move |()| {
                let _held = &guard;
            })
            .boxed();
        let store = EventStore::new(feed);
        let mut live = Box::pin(store.subscribe_woken_by(wake_ups, FeedFilter::All, Checkpoint::START, fast()));
        next(&mut live).await.unwrap();
        // Now waiting on the wake-ups (and polling).
        assert!(tokio::time::timeout(Duration::from_millis(20), live.next()).await.is_err());
        assert!(!dropped.load(Ordering::SeqCst));
        drop(live);
        assert!(dropped.load(Ordering::SeqCst), "the wake-up source went with the subscription");
    }

    #[tokio::test]
    async fn a_watch_wakes_once_per_change_seen() {
        let (tx, rx) = tokio::sync::watch::channel(0_u32);
        let mut wake_ups = watch_wake_ups(rx);
        tx.send_replace(1);
        tx.send_replace(2);
        // Coalesced: one wake-up for both changes.
        assert_eq!(wake_ups.next().await, Some(()));
        assert!(wake_ups.next().now_or_never().is_none());
        tx.send_replace(3);
        assert_eq!(wake_ups.next().await, Some(()));
        drop(tx);
        assert_eq!(wake_ups.next().await, None);
    }
}
