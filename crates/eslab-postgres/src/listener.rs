//! Wake-ups for live feed readers: `LISTEN eslab_events`, with a polling
//! fallback whose interval backs off while nothing happens.

use std::time::Duration;

use eslab_core::{Result, WakeUpStream, WakeUps, watch_wake_ups};
use futures_util::{StreamExt, stream};
use sqlx::postgres::{PgListener, PgPoolOptions};

use crate::error::db;
use crate::{NOTIFY_CHANNEL, PostgresStore};

/// Why [`Listener::wait`] returned. In every case the caller should read the feed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wake {
    /// An append in this store's schema committed.
    Notified,
    /// No notification within the current poll interval (or the listening
    /// connection failed): poll anyway, in case a notification was lost.
    Poll,
}

/// Waits for appends to this store (see [`PostgresStore::listener`]).
#[derive(Debug)]
pub struct Listener {
    inner: PgListener,
    prefix: String,
    application_name: String,
    min_poll: Duration,
    max_poll: Duration,
    poll: Duration,
}

impl PostgresStore {
    /// A listener on its own connection (not taken from the pool), polling
    /// every 100 ms at first and backing off to 5 s while idle.
    pub async fn listener(&self) -> Result<Listener> {
        // Named, so operators (and tests) can find the listening backend.
        let mut application_name = format!("eslab-listen-{}", self.schema());
        application_name.truncate(63);
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .max_lifetime(None)
            .idle_timeout(None)
            .connect_with(self.pool().connect_options().as_ref().clone().application_name(&application_name))
            .await
            .map_err(db)?;
        let mut inner = PgListener::connect_with(&pool).await.map_err(db)?;
        inner.listen(NOTIFY_CHANNEL).await.map_err(db)?;
        let (min_poll, max_poll) = (Duration::from_millis(100), Duration::from_secs(5));
        Ok(Listener {
            inner,
            prefix: format!("{}:", self.schema()),
            application_name,
            min_poll,
            max_poll,
            poll: min_poll,
        })
    }
}

impl Listener {
    /// Sets the polling fallback: first `min` after a wake-up, doubling up to `max`.
    #[must_use]
    pub fn with_poll(mut self, min: Duration, max: Duration) -> Self {
        self.min_poll = min;
        self.max_poll = max.max(min);
        self.poll = min;
        self
    }

    /// The `application_name` of the listening connection.
    pub fn application_name(&self) -> &str {
        &self.application_name
    }

    /// Waits for the next append in this schema, or for the poll interval.
    ///
    /// A dropped connection is re-established by sqlx on the next wait; since
    /// notifications sent meanwhile are lost, a reconnect returns [`Wake::Poll`].
    pub async fn wait(&mut self) -> Wake {
        let deadline = tokio::time::Instant::now() + self.poll;
        loop {
            // `try_recv` is cancel-safe since sqlx 0.8.1 (launchbadge/sqlx#3467),
            // so the timeout cannot tear a message in half.
            match tokio::time::timeout_at(deadline, self.inner.try_recv()).await {
                Ok(Ok(Some(n))) if n.payload().starts_with(&self.prefix) => {
                    // Drain what is already buffered: one read serves them all.
                    while let Some(_more) = self.inner.next_buffered() {}
                    self.poll = self.min_poll;
                    return Wake::Notified;
                }
                // Another schema's append: keep waiting until the deadline.
                Ok(Ok(Some(_))) => {}
                Ok(Ok(None)) => return Wake::Poll,
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "listener connection failed; polling");
                    tokio::time::sleep_until(deadline).await;
                    self.back_off();
                    return Wake::Poll;
                }
                Err(_elapsed) => {
                    self.back_off();
                    return Wake::Poll;
                }
            }
        }
    }

    fn back_off(&mut self) {
        self.poll = (self.poll * 2).min(self.max_poll);
    }
}

/// How long the wake-ups of a failed `LISTEN` connection wait before the
/// first reconnection attempt, doubling up to [`MAX_RECONNECT_PAUSE`].
const MIN_RECONNECT_PAUSE: Duration = Duration::from_millis(100);
const MAX_RECONNECT_PAUSE: Duration = Duration::from_secs(30);

/// The state of [`Listener::into_wake_ups`].
struct Waking {
    inner: PgListener,
    prefix: String,
    /// A payload to skip: the store's own coalesced NOTIFYs, when its
    /// subscribers are already woken in process.
    ignore: Option<String>,
    /// Whether the connection is down (and that was logged).
    down: bool,
    pause: Duration,
}

impl Listener {
    /// This listener as a stream of wake-ups ([`eslab_core::WakeUps`]): an
    /// item for each notification of this schema's appends (a burst already
    /// buffered gives one), and one after the connection was lost, since
    /// notifications sent meanwhile are lost. While the connection cannot be
    /// re-established, it logs a warning once, yields an item (so that the
    /// reader polls) and retries with a pause backing off from 100 ms to
    /// 30 s; it logs again once it listens again. The poll interval of
    /// [`with_poll`](Self::with_poll) does not apply: the reader polls on its
    /// own timer. Dropping the stream closes the connection.
    pub fn into_wake_ups(self) -> WakeUpStream {
        self.wake_ups_ignoring(None)
    }

    fn wake_ups_ignoring(self, ignore: Option<String>) -> WakeUpStream {
        let state = Waking { inner: self.inner, prefix: self.prefix, ignore, down: false, pause: MIN_RECONNECT_PAUSE };
        stream::unfold(state, |mut state| async move {
            state.next().await;
            Some(((), state))
        })
        .boxed()
    }
}

impl Waking {
    /// Returns at the next wake-up: a notification, or a connection lost
    /// (and, if it could be, re-established).
    async fn next(&mut self) {
        loop {
            match self.inner.try_recv().await {
                Ok(Some(n)) if n.payload().starts_with(&self.prefix) && !self.ignored(n.payload()) => {
                    while let Some(_more) = self.inner.next_buffered() {}
                    self.listening_again();
                    return;
                }
                // Another schema's append, or our own store's (woken in process).
                Ok(Some(_)) => self.listening_again(),
                // The connection dropped; sqlx has already reconnected and
                // listens again (eager reconnect), or the next call fails.
                Ok(None) => return,
                Err(e) => {
                    if !self.down {
                        tracing::warn!(error = %e, "the LISTEN connection failed; subscribers poll until it is back");
                        self.down = true;
                    }
                    tokio::time::sleep(self.pause).await;
                    self.pause = (self.pause * 2).min(MAX_RECONNECT_PAUSE);
                    // Reconnect (and LISTEN) before the reader reads, so that
                    // nothing committed after that read goes unannounced.
                    if sqlx::Executor::execute(&mut self.inner, "SELECT 1").await.is_ok() {
                        self.listening_again();
                    }
                    return;
                }
            }
        }
    }

    fn ignored(&self, payload: &str) -> bool {
        self.ignore.as_deref() == Some(payload)
    }

    fn listening_again(&mut self) {
        if self.down {
            tracing::info!("the LISTEN connection is back; subscribers are woken by NOTIFY again");
            self.down = false;
            self.pause = MIN_RECONNECT_PAUSE;
        }
    }
}

/// A wake-up per append in this schema: the appends of this store (any
/// clone) in this process wake at once, without a round trip; everyone
/// else's (other processes, other store instances) through NOTIFY, on a
/// `LISTEN` connection of its own (see [`PostgresStore::listener`] and
/// [`Listener::into_wake_ups`]), which skips this store's own coalesced
/// NOTIFYs. If that connection cannot be opened, logs a warning and keeps
/// only the in-process wake-ups: the subscriber polls for the others.
impl WakeUps for PostgresStore {
    async fn wake_ups(&self) -> WakeUpStream {
        let local = watch_wake_ups(self.notifier.subscribe());
        match self.listener().await {
            Ok(listener) => {
                let remote = listener.wake_ups_ignoring(Some(self.notifier.own_payload().to_owned()));
                stream::select(local, remote).boxed()
            }
            Err(e) => {
                tracing::warn!(schema = self.schema(), error = %e,
                    "cannot LISTEN for appends; this subscriber polls for other processes' appends");
                local
            }
        }
    }
}
