//! Appending inside a transaction the caller holds on the writer connection,
//! so that other writes (an inline projection's read models) commit or roll
//! back with the events.

use std::collections::HashSet;

use eslab_core::{AppendResult, Error, Result, StreamAppend};
use sqlx::{Sqlite, SqliteConnection, Transaction};

use crate::SqliteStore;
use crate::events::write;

impl SqliteStore {
    /// Opens a write transaction (`BEGIN IMMEDIATE`) on the single writer
    /// connection. Append with [`append_in_tx`](Self::append_in_tx), write
    /// anything else on the same transaction, commit, then call
    /// [`notify_committed`](Self::notify_committed). Dropping it rolls back.
    ///
    /// `BEGIN` runs in a task of its own: sqlx's `begin` is not cancel-safe,
    /// and a caller cancelled while it is in flight could otherwise return the
    /// writer connection to the pool inside a transaction nobody ends.
    pub async fn begin_write(&self) -> Result<Transaction<'static, Sqlite>> {
        let writer = self.inner.writer.clone();
        let timeouts = self.inner.timeouts;
        tokio::spawn(async move { writer.begin_with("BEGIN IMMEDIATE").await })
            .await
            .map_err(Error::backend)?
            .map_err(|e| timeouts.core(e))
    }

    /// Appends inside the caller's write transaction (see
    /// [`begin_write`](Self::begin_write)): the same checks and errors as
    /// [`append_streams`](eslab_core::EventAppender::append_streams), but
    /// nothing is visible until the caller commits.
    pub async fn append_in_tx(
        &self,
        conn: &mut SqliteConnection,
        appends: Vec<StreamAppend>,
    ) -> Result<Vec<AppendResult>> {
        eslab_core::check_storable(&appends)?;
        let mut streams = HashSet::new();
        for append in &appends {
            if !streams.insert(&append.stream_id) {
                return Err(Error::InvalidRequest(format!("stream {} appears twice in one append", append.stream_id)));
            }
        }
        let (results, _) = write(conn, appends).await.map_err(|e| e.into_core(self.inner.timeouts))?;
        Ok(results)
    }

    /// Wakes [`subscribe`](Self::subscribe)rs after a transaction that
    /// appended with [`append_in_tx`](Self::append_in_tx) committed.
    pub fn notify_committed(&self, results: &[AppendResult]) {
        if let Some(last) = results.iter().flat_map(|r| r.events.iter()).map(|e| e.position).max() {
            self.committed(last);
        }
    }
}
