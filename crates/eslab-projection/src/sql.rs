//! Read-model backends on SQL databases (sqlx): PostgreSQL and SQLite.
//!
//! Both keep three tables next to the read models, created by
//! `ensure_schema()` (idempotent):
//! `projection_checkpoints(name, transaction_id, global_position, updated_at_ms)`,
//! `projection_leases(name, owner, lease_until_ms)` and
//! `parked_events(projection, event_id, stream_id, stream_version, event, reason, parked_at_ms)`.
//! The batch's read-model writes and its checkpoint share one database
//! transaction. On SQLite, give the backend the store's *writer* pool so that
//! projection transactions queue behind appends instead of meeting `SQLITE_BUSY`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use eslab_core::{Checkpoint, Position, RecordedEvent};

use crate::{Error, Result};

fn backend_err(e: sqlx::Error) -> Error {
    Error::Backend(Box::new(e))
}

fn to_i64(v: u64, what: &str) -> Result<i64> {
    i64::try_from(v).map_err(|_| Error::Backend(format!("{what} {v} does not fit in BIGINT").into()))
}

fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

pub(crate) fn now_ms() -> i64 {
    let ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis());
    i64::try_from(ms).unwrap_or(i64::MAX)
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

fn from_ms(ms: i64) -> time::OffsetDateTime {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
}

fn checkpoint_of(row: Option<(i64, i64)>) -> Checkpoint {
    row.map_or(Checkpoint::START, |(t, p)| Checkpoint::new(to_u64(t), Position::new(to_u64(p))))
}

/// Rows of `projection_checkpoints` (name, transaction id, position) as named checkpoints.
pub(crate) fn named_checkpoints(rows: Vec<(String, i64, i64)>) -> Vec<(String, Checkpoint)> {
    rows.into_iter().map(|(name, t, p)| (name, checkpoint_of(Some((t, p))))).collect()
}

fn parked_of(projection: String, event: &str, reason: String, parked_at_ms: i64) -> Result<crate::ParkedEvent> {
    let event: RecordedEvent =
        serde_json::from_str(event).map_err(|e| Error::Backend(format!("corrupt parked event: {e}").into()))?;
    let parked_at = from_ms(parked_at_ms);
    Ok(crate::ParkedEvent { projection, event, reason, parked_at })
}

/// The DDL shared by both dialects (types that both accept).
const SCHEMA: [&str; 3] = [
    "CREATE TABLE IF NOT EXISTS projection_checkpoints (
        name TEXT PRIMARY KEY,
        transaction_id BIGINT NOT NULL,
        global_position BIGINT NOT NULL,
        updated_at_ms BIGINT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS projection_leases (
        name TEXT PRIMARY KEY,
        owner TEXT NOT NULL,
        lease_until_ms BIGINT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS parked_events (
        projection TEXT NOT NULL,
        event_id TEXT NOT NULL,
        stream_id TEXT NOT NULL,
        stream_version BIGINT NOT NULL,
        event TEXT NOT NULL,
        reason TEXT NOT NULL,
        parked_at_ms BIGINT NOT NULL,
        PRIMARY KEY (projection, event_id))",
];

macro_rules! sql_backend {
    ($(#[$doc:meta])* $name:ident, $db:ty, $pool:ty) => {
        $(#[$doc])*
        #[derive(Debug, Clone)]
        pub struct $name {
            pool: $pool,
            /// The statement that opens a transaction.
            begin: &'static str,
        }

        impl $name {
            /// A backend over `pool`. Call [`ensure_schema`](Self::ensure_schema) once.
            pub fn new(pool: $pool) -> Self {
                $name { pool, begin: "BEGIN" }
            }

            /// The pool it writes through.
            pub fn pool(&self) -> &$pool {
                &self.pool
            }

            /// Creates the runner's tables if they do not exist.
            pub async fn ensure_schema(&self) -> Result<()> {
                for ddl in SCHEMA {
                    sqlx::query(ddl).execute(&self.pool).await.map_err(backend_err)?;
                }
                Ok(())
            }
        }

        impl crate::Backend for $name {
            type Tx = sqlx::Transaction<'static, $db>;

            async fn begin(&self) -> Result<Self::Tx> {
                // `BEGIN` is not cancel-safe in sqlx: a runner cancelled while
                // it is in flight can hand the connection back to the pool
                // inside a transaction nobody will end, whose locks then block
                // every later batch. In a task of its own, BEGIN always
                // completes; if our caller is gone, the finished transaction is
                // dropped and rolled back properly.
                let pool = self.pool.clone();
                let begin = self.begin;
                tokio::spawn(async move { pool.begin_with(begin).await })
                    .await
                    .map_err(|e| Error::Backend(Box::new(e)))?
                    .map_err(backend_err)
            }

            async fn commit(&self, tx: Self::Tx) -> Result<()> {
                tx.commit().await.map_err(backend_err)
            }

            async fn checkpoint(&self, name: &str) -> Result<Checkpoint> {
                let row: Option<(i64, i64)> = sqlx::query_as(
                    "SELECT transaction_id, global_position FROM projection_checkpoints WHERE name = $1",
                )
                .bind(name)
                .fetch_optional(&self.pool)
                .await
                .map_err(backend_err)?;
                Ok(checkpoint_of(row))
            }

            async fn save_checkpoint(&self, tx: &mut Self::Tx, name: &str, at: Checkpoint) -> Result<()> {
                sqlx::query(
                    "INSERT INTO projection_checkpoints (name, transaction_id, global_position, updated_at_ms)
                     VALUES ($1, $2, $3, $4)
                     ON CONFLICT (name) DO UPDATE SET transaction_id = excluded.transaction_id,
                         global_position = excluded.global_position, updated_at_ms = excluded.updated_at_ms",
                )
                .bind(name)
                .bind(to_i64(at.transaction, "transaction id")?)
                .bind(to_i64(at.position.get(), "position")?)
                .bind(now_ms())
                .execute(&mut **tx)
                .await
                .map_err(backend_err)?;
                Ok(())
            }

            async fn parked_streams(&self, projection: &str) -> Result<std::collections::HashSet<eslab_core::StreamId>> {
                let rows: Vec<(String,)> =
                    sqlx::query_as("SELECT DISTINCT stream_id FROM parked_events WHERE projection = $1")
                        .bind(projection)
                        .fetch_all(&self.pool)
                        .await
                        .map_err(backend_err)?;
                rows.into_iter()
                    .map(|(s,)| s.parse().map_err(|e: eslab_core::InvalidStreamId| Error::Backend(Box::new(e))))
                    .collect()
            }

            async fn park(&self, tx: &mut Self::Tx, projection: &str, event: &RecordedEvent, reason: &str) -> Result<()> {
                let json = serde_json::to_string(event).map_err(|e| Error::Backend(Box::new(e)))?;
                sqlx::query(
                    "INSERT INTO parked_events (projection, event_id, stream_id, stream_version, event, reason, parked_at_ms)
                     VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (projection, event_id) DO NOTHING",
                )
                .bind(projection)
                .bind(event.event_id.to_string())
                .bind(event.stream_id.as_str())
                .bind(to_i64(event.stream_version.get(), "version")?)
                .bind(json)
                .bind(reason)
                .bind(now_ms())
                .execute(&mut **tx)
                .await
                .map_err(backend_err)?;
                Ok(())
            }

            async fn parked(
                &self,
                projection: &str,
                stream: Option<&eslab_core::StreamId>,
            ) -> Result<Vec<crate::ParkedEvent>> {
                let rows: Vec<(String, String, String, i64)> = sqlx::query_as(
                    "SELECT projection, event, reason, parked_at_ms FROM parked_events
                     WHERE projection = $1 AND ($2 IS NULL OR stream_id = $2)
                     ORDER BY stream_id, stream_version",
                )
                .bind(projection)
                .bind(stream.map(|s| s.as_str().to_owned()))
                .fetch_all(&self.pool)
                .await
                .map_err(backend_err)?;
                rows.into_iter().map(|(p, e, r, at)| parked_of(p, &e, r, at)).collect()
            }

            async fn forget_parked(&self, tx: &mut Self::Tx, subject: &eslab_core::Subject) -> Result<u64> {
                // Parked events are few (stuck ones): read them all, rewrite those of the subject.
                let rows: Vec<(String, String, String)> =
                    sqlx::query_as("SELECT projection, event_id, event FROM parked_events")
                        .fetch_all(&mut **tx)
                        .await
                        .map_err(backend_err)?;
                let mut rewritten = 0;
                for (projection, event_id, json) in rows {
                    let event: RecordedEvent = serde_json::from_str(&json).map_err(|e| Error::Backend(Box::new(e)))?;
                    let Some(event) = crate::forget_parked_event(&event, subject) else { continue };
                    let json = serde_json::to_string(&event).map_err(|e| Error::Backend(Box::new(e)))?;
                    sqlx::query("UPDATE parked_events SET event = $1, reason = $2 WHERE projection = $3 AND event_id = $4")
                        .bind(json)
                        .bind(crate::FORGOTTEN_REASON)
                        .bind(projection)
                        .bind(event_id)
                        .execute(&mut **tx)
                        .await
                        .map_err(backend_err)?;
                    rewritten += 1;
                }
                Ok(rewritten)
            }

            async fn unpark(&self, tx: &mut Self::Tx, projection: &str, event: &RecordedEvent) -> Result<()> {
                sqlx::query("DELETE FROM parked_events WHERE projection = $1 AND event_id = $2")
                    .bind(projection)
                    .bind(event.event_id.to_string())
                    .execute(&mut **tx)
                    .await
                    .map_err(backend_err)?;
                Ok(())
            }

            async fn acquire_lease(&self, name: &str, owner: &str, ttl: Duration) -> Result<bool> {
                let now = now_ms();
                let done = sqlx::query(
                    "INSERT INTO projection_leases (name, owner, lease_until_ms) VALUES ($1, $2, $3)
                     ON CONFLICT (name) DO UPDATE SET owner = excluded.owner, lease_until_ms = excluded.lease_until_ms
                     WHERE projection_leases.owner = excluded.owner OR projection_leases.lease_until_ms < $4",
                )
                .bind(name)
                .bind(owner)
                .bind(now.saturating_add(ms(ttl)))
                .bind(now)
                .execute(&self.pool)
                .await
                .map_err(backend_err)?;
                Ok(done.rows_affected() == 1)
            }

            async fn checkpoints(&self) -> Result<Vec<(String, Checkpoint)>> {
                let rows: Vec<(String, i64, i64)> = sqlx::query_as(
                    "SELECT name, transaction_id, global_position FROM projection_checkpoints ORDER BY name",
                )
                .fetch_all(&self.pool)
                .await
                .map_err(backend_err)?;
                Ok(rows.into_iter().map(|(n, t, p)| (n, checkpoint_of(Some((t, p))))).collect())
            }

            async fn lease(&self, name: &str) -> Result<Option<crate::Lease>> {
                let row: Option<(String, i64)> =
                    sqlx::query_as("SELECT owner, lease_until_ms FROM projection_leases WHERE name = $1")
                        .bind(name)
                        .fetch_optional(&self.pool)
                        .await
                        .map_err(backend_err)?;
                Ok(row.map(|(owner, until_ms)| crate::Lease { owner, until: from_ms(until_ms) }))
            }

            async fn release_lease(&self, name: &str, owner: &str) -> Result<()> {
                sqlx::query("DELETE FROM projection_leases WHERE name = $1 AND owner = $2")
                    .bind(name)
                    .bind(owner)
                    .execute(&self.pool)
                    .await
                    .map_err(backend_err)?;
                Ok(())
            }
        }
    };
}

#[cfg(feature = "postgres")]
sql_backend!(
    /// Read models, checkpoints, parked events and leases in PostgreSQL.
    PgBackend,
    sqlx::Postgres,
    sqlx::PgPool
);

#[cfg(feature = "sqlite")]
sql_backend!(
    /// Read models, checkpoints, parked events and leases in SQLite.
    SqliteBackend,
    sqlx::Sqlite,
    sqlx::SqlitePool
);

impl SqliteBackend {
    /// Opens its transactions with `BEGIN IMMEDIATE`, taking the write lock
    /// at once. Use it for a backend on the store's writer pool when another
    /// process may write the same file (e.g. `eslab forget` beside a running
    /// service): a deferred transaction that reads before it writes cannot
    /// take the write lock once another connection committed since its read,
    /// and SQLite then answers `SQLITE_BUSY` at once instead of waiting out
    /// the busy timeout. Not for a backend whose handlers append to the
    /// store through another connection inside the transaction (they would
    /// wait for the lock it holds).
    #[must_use]
    pub fn immediate(mut self) -> Self {
        self.begin = "BEGIN IMMEDIATE";
        self
    }
}
