//! Wake-ups after commit: an in-process signal for the store's own
//! subscribers, and (under [`Notify::AfterCommit`]) one task per store that
//! sends a coalesced NOTIFY for the appends of a short window, on a
//! connection of its own and in a transaction that writes nothing, so no
//! append's commit takes PostgreSQL's notification lock.

use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool};
use sqlx::{Connection, PgConnection};
use tokio::sync::{mpsc, watch};

use crate::{NOTIFY_CHANNEL, Notify, PostgresOptions};

/// Shared by every clone of a store (see [`crate::PostgresStore`]).
#[derive(Debug)]
pub(crate) struct Notifier {
    /// Bumped after every committed append: wakes this process's subscribers.
    local: watch::Sender<u64>,
    /// Wakes the NOTIFY task; `None` unless [`Notify::AfterCommit`].
    remote: Option<mpsc::Sender<()>>,
    /// What this store's coalesced NOTIFYs carry: `<schema>:@<instance>`, so
    /// that its own subscribers, already woken in process, skip them.
    payload: String,
}

impl Notifier {
    /// The notifier of a new store on `pool`: starts the NOTIFY task under
    /// [`Notify::AfterCommit`] (it ends when the last store clone is dropped).
    pub(crate) fn new(pool: &PgPool, options: &PostgresOptions) -> Self {
        let payload = format!("{}:@{}", options.schema(), uuid::Uuid::now_v7().simple());
        let remote = (options.notify == Notify::AfterCommit).then(|| {
            let (tx, rx) = mpsc::channel(1);
            let mut connect = pool.connect_options().as_ref().clone();
            let mut name = format!("eslab-notify-{}", options.schema());
            name.truncate(63);
            connect = connect.application_name(&name);
            tokio::spawn(send_notifications(rx, connect, payload.clone(), options.notify_window));
            tx
        });
        Notifier { local: watch::Sender::new(0), remote, payload }
    }

    /// An append committed: wake the local subscribers and make sure a NOTIFY is due.
    pub(crate) fn committed(&self) {
        self.local.send_modify(|n| *n = n.wrapping_add(1));
        if let Some(remote) = &self.remote {
            // Full means a NOTIFY is already due: this append rides on it.
            let _ = remote.try_send(());
        }
    }

    /// A receiver that changes after every committed append of the store.
    pub(crate) fn subscribe(&self) -> watch::Receiver<u64> {
        self.local.subscribe()
    }

    /// The payload of this store's own coalesced NOTIFYs.
    pub(crate) fn own_payload(&self) -> &str {
        &self.payload
    }
}

/// How long one NOTIFY (with its connection, if it must be opened) may take
/// before the task gives up on that connection.
const NOTIFY_TIMEOUT: Duration = Duration::from_secs(5);

/// The NOTIFY task: waits for a first append, gathers the others of `window`,
/// sends one NOTIFY for them all. A poke that arrives while a NOTIFY is in
/// flight gets a NOTIFY of its own (its append may have committed after the
/// readers woken by the previous one read the feed).
async fn send_notifications(
    mut appends: mpsc::Receiver<()>,
    connect: PgConnectOptions,
    payload: String,
    window: Duration,
) {
    let mut conn: Option<PgConnection> = None;
    let mut failing = false;
    while appends.recv().await.is_some() {
        if !window.is_zero() {
            tokio::time::sleep(window).await;
        }
        // Appends of the window (the channel holds one) ride on this NOTIFY.
        while appends.try_recv().is_ok() {}
        let sent = tokio::time::timeout(NOTIFY_TIMEOUT, notify(&mut conn, &connect, &payload))
            .await
            .unwrap_or_else(|_| Err(sqlx::Error::PoolTimedOut));
        match sent {
            Ok(()) if failing => {
                tracing::info!("the append NOTIFY is sent again");
                failing = false;
            }
            Ok(()) => {}
            Err(e) => {
                if !failing {
                    tracing::warn!(error = %e, "cannot send the append NOTIFY; other processes' readers poll until it works");
                    failing = true;
                }
                // Reconnect on the next append.
                conn = None;
            }
        }
    }
    if let Some(conn) = conn {
        let _ = conn.close().await;
    }
}

/// Sends one NOTIFY on the task's connection, (re)connecting first if needed.
async fn notify(conn: &mut Option<PgConnection>, connect: &PgConnectOptions, payload: &str) -> sqlx::Result<()> {
    let conn = match conn {
        Some(conn) => conn,
        None => conn.insert(PgConnection::connect_with(connect).await?),
    };
    sqlx::query("SELECT pg_notify($1, $2)").bind(NOTIFY_CHANNEL).bind(payload).execute(conn).await?;
    Ok(())
}
