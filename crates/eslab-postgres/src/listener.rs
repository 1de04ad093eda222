//! Wake-ups for live feed readers: `LISTEN eslab_events`, with a polling
//! fallback whose interval backs off while nothing happens.

use std::time::Duration;

use eslab_core::Result;
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
