//! Snapshots (the latest per stream, never moving backwards) and named feed
//! checkpoints with a single-owner lease. Writes go through the one writer.

use std::time::Duration;

use eslab_core::{Checkpoint, CheckpointStore, Error, Position, Result, Snapshot, SnapshotStore, StreamId, Version};
use sqlx::Row;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::SqliteStore;
use crate::error::{SqliteError, to_i64, to_u64};

fn now_text() -> Result<String> {
    OffsetDateTime::now_utc().format(&Rfc3339).map_err(Error::backend)
}

/// Wall-clock Unix milliseconds: leases are compared across processes, so a
/// monotonic clock would not do.
fn unix_ms(at: OffsetDateTime) -> i64 {
    i64::try_from(at.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

impl SnapshotStore for SqliteStore {
    async fn load_snapshot(&self, stream: &StreamId) -> Result<Option<Snapshot>> {
        let row = sqlx::query(
            "SELECT stream_version, state_schema_version, state, taken_at FROM snapshots WHERE stream_id = ?",
        )
        .bind(stream.as_str())
        .fetch_optional(&mut *self.reader().await?)
        .await
        .map_err(|e| self.core(e))?;
        let Some(row) = row else { return Ok(None) };
        let decode = || -> std::result::Result<Snapshot, SqliteError> {
            let invalid = |what: &str, e: &dyn std::fmt::Display| SqliteError::InvalidRow(format!("{what}: {e}"));
            let schema: i64 = row.try_get("state_schema_version")?;
            let state: &str = row.try_get("state")?;
            let taken_at: &str = row.try_get("taken_at")?;
            Ok(Snapshot {
                stream_id: stream.clone(),
                version: Version::new(to_u64(row.try_get("stream_version")?, "snapshot version")?),
                state_schema_version: u32::try_from(schema).map_err(|e| invalid("state_schema_version", &e))?,
                state: serde_json::from_str(state).map_err(|e| invalid("state", &e))?,
                taken_at: OffsetDateTime::parse(taken_at, &Rfc3339).map_err(|e| invalid("taken_at", &e))?,
            })
        };
        decode().map(Some).map_err(Error::from)
    }

    async fn save_snapshot(&self, snapshot: Snapshot) -> Result<()> {
        let state = serde_json::to_string(&snapshot.state)
            .map_err(|source| Error::Encode { event_type: "snapshot".into(), source })?;
        let taken_at = snapshot.taken_at.format(&Rfc3339).map_err(Error::backend)?;
        // The WHERE on the upsert keeps racing writers from moving a snapshot back.
        sqlx::query(
            "INSERT INTO snapshots (stream_id, stream_version, state_schema_version, state, taken_at) \
             VALUES (?, ?, ?, ?, ?) \
             ON CONFLICT (stream_id) DO UPDATE SET stream_version = excluded.stream_version, \
             state_schema_version = excluded.state_schema_version, state = excluded.state, \
             taken_at = excluded.taken_at WHERE excluded.stream_version > snapshots.stream_version",
        )
        .bind(snapshot.stream_id.as_str())
        .bind(to_i64(snapshot.version.get(), "snapshot version")?)
        .bind(i64::from(snapshot.state_schema_version))
        .bind(state)
        .bind(taken_at)
        .execute(&self.inner.writer)
        .await
        .map_err(|e| self.inner.timeouts.core(e))?;
        Ok(())
    }
}

impl CheckpointStore for SqliteStore {
    async fn load_checkpoint(&self, name: &str) -> Result<Checkpoint> {
        let row: Option<(i64, i64)> =
            sqlx::query_as("SELECT transaction_id, global_position FROM checkpoints WHERE name = ?")
                .bind(name)
                .fetch_optional(&mut *self.reader().await?)
                .await
                .map_err(|e| self.core(e))?;
        let Some((transaction, position)) = row else { return Ok(Checkpoint::START) };
        Ok(Checkpoint::new(
            to_u64(transaction, "checkpoint transaction")?,
            Position::new(to_u64(position, "checkpoint position")?),
        ))
    }

    async fn save_checkpoint(&self, name: &str, checkpoint: Checkpoint) -> Result<()> {
        sqlx::query(
            "INSERT INTO checkpoints (name, transaction_id, global_position, updated_at) VALUES (?, ?, ?, ?) \
             ON CONFLICT (name) DO UPDATE SET transaction_id = excluded.transaction_id, \
             global_position = excluded.global_position, updated_at = excluded.updated_at",
        )
        .bind(name)
        .bind(to_i64(checkpoint.transaction, "checkpoint transaction")?)
        .bind(to_i64(checkpoint.position.get(), "checkpoint position")?)
        .bind(now_text()?)
        .execute(&self.inner.writer)
        .await
        .map_err(|e| self.inner.timeouts.core(e))?;
        Ok(())
    }

    async fn acquire_lease(&self, name: &str, owner: &str, ttl: Duration) -> Result<bool> {
        let now = OffsetDateTime::now_utc();
        let ttl_ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
        let until = unix_ms(now).saturating_add(ttl_ms);
        // One statement: take the lease if it is free, ours, or expired.
        let done = sqlx::query(
            "INSERT INTO checkpoints (name, updated_at, owner, lease_until) VALUES (?1, ?2, ?3, ?4) \
             ON CONFLICT (name) DO UPDATE SET owner = excluded.owner, lease_until = excluded.lease_until \
             WHERE checkpoints.owner IS NULL OR checkpoints.owner = excluded.owner \
             OR checkpoints.lease_until IS NULL OR checkpoints.lease_until <= ?5",
        )
        .bind(name)
        .bind(now_text()?)
        .bind(owner)
        .bind(until)
        .bind(unix_ms(now))
        .execute(&self.inner.writer)
        .await
        .map_err(|e| self.inner.timeouts.core(e))?;
        Ok(done.rows_affected() == 1)
    }

    async fn release_lease(&self, name: &str, owner: &str) -> Result<()> {
        sqlx::query("UPDATE checkpoints SET owner = NULL, lease_until = NULL WHERE name = ? AND owner = ?")
            .bind(name)
            .bind(owner)
            .execute(&self.inner.writer)
            .await
            .map_err(|e| self.inner.timeouts.core(e))?;
        Ok(())
    }
}
