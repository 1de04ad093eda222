//! Snapshot and checkpoint stores on the same database (and schema) as the events.

use std::time::Duration;

use eslab_core::{Checkpoint, CheckpointStore, Error, Position, Result, Snapshot, SnapshotStore, StreamId, Version};
use sqlx::Row;
use time::OffsetDateTime;

use crate::PostgresStore;
use crate::error::db;
use crate::rows::{parse_xid, to_i64, to_u64};

impl SnapshotStore for PostgresStore {
    async fn load_snapshot(&self, stream: &StreamId) -> Result<Option<Snapshot>> {
        let row = sqlx::query(
            "SELECT stream_version, state_schema_version, state, taken_at FROM snapshots WHERE stream_id = $1",
        )
        .bind(stream.as_str())
        .fetch_optional(self.pool())
        .await
        .map_err(db)?;
        let Some(row) = row else { return Ok(None) };
        let version: i64 = row.try_get("stream_version").map_err(db)?;
        let schema: i32 = row.try_get("state_schema_version").map_err(db)?;
        Ok(Some(Snapshot {
            stream_id: stream.clone(),
            version: Version::new(to_u64(version, "snapshot version")?),
            state_schema_version: u32::try_from(schema)
                .map_err(|_| Error::OutOfRange(format!("state schema version {schema}")))?,
            state: row.try_get("state").map_err(db)?,
            taken_at: row.try_get::<OffsetDateTime, _>("taken_at").map_err(db)?,
        }))
    }

    async fn save_snapshot(&self, snapshot: Snapshot) -> Result<()> {
        // Racing writers never move a snapshot backwards: the update only
        // happens when the new one is strictly newer.
        sqlx::query(
            "INSERT INTO snapshots (stream_id, stream_version, state_schema_version, state, taken_at) \
             VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (stream_id) DO UPDATE SET stream_version = excluded.stream_version, \
                 state_schema_version = excluded.state_schema_version, state = excluded.state, \
                 taken_at = excluded.taken_at \
             WHERE excluded.stream_version > snapshots.stream_version",
        )
        .bind(snapshot.stream_id.as_str())
        .bind(to_i64(snapshot.version.get(), "snapshot version")?)
        .bind(
            i32::try_from(snapshot.state_schema_version)
                .map_err(|_| Error::OutOfRange(format!("state schema version {}", snapshot.state_schema_version)))?,
        )
        .bind(&snapshot.state)
        .bind(snapshot.taken_at)
        .execute(self.pool())
        .await
        .map_err(db)?;
        Ok(())
    }
}

impl CheckpointStore for PostgresStore {
    async fn load_checkpoint(&self, name: &str) -> Result<Checkpoint> {
        let row = sqlx::query("SELECT transaction_id::text AS tx, global_position FROM checkpoints WHERE name = $1")
            .bind(name)
            .fetch_optional(self.pool())
            .await
            .map_err(db)?;
        let Some(row) = row else { return Ok(Checkpoint::START) };
        let tx: String = row.try_get("tx").map_err(db)?;
        let position: i64 = row.try_get("global_position").map_err(db)?;
        Ok(Checkpoint::new(parse_xid(&tx)?, Position::new(to_u64(position, "global position")?)))
    }

    async fn save_checkpoint(&self, name: &str, checkpoint: Checkpoint) -> Result<()> {
        sqlx::query(
            "INSERT INTO checkpoints (name, transaction_id, global_position, updated_at) \
             VALUES ($1, $2::text::xid8, $3, now()) \
             ON CONFLICT (name) DO UPDATE SET transaction_id = excluded.transaction_id, \
                 global_position = excluded.global_position, updated_at = excluded.updated_at",
        )
        .bind(name)
        .bind(checkpoint.transaction.to_string())
        .bind(to_i64(checkpoint.position.get(), "global position")?)
        .execute(self.pool())
        .await
        .map_err(db)?;
        Ok(())
    }

    async fn acquire_lease(&self, name: &str, owner: &str, ttl: Duration) -> Result<bool> {
        // One atomic upsert: the row is taken only if it is free, expired or
        // already ours; otherwise nothing is returned and nothing changes.
        let micros = i64::try_from(ttl.as_micros()).map_err(|_| Error::OutOfRange("lease ttl".into()))?;
        let row = sqlx::query(
            "INSERT INTO checkpoints (name, owner, lease_until) \
             VALUES ($1, $2, clock_timestamp() + $3 * interval '1 microsecond') \
             ON CONFLICT (name) DO UPDATE SET owner = excluded.owner, lease_until = excluded.lease_until \
             WHERE checkpoints.owner IS NULL OR checkpoints.owner = excluded.owner \
                OR checkpoints.lease_until IS NULL OR checkpoints.lease_until < clock_timestamp() \
             RETURNING name",
        )
        .bind(name)
        .bind(owner)
        .bind(micros)
        .fetch_optional(self.pool())
        .await
        .map_err(db)?;
        Ok(row.is_some())
    }

    async fn release_lease(&self, name: &str, owner: &str) -> Result<()> {
        sqlx::query("UPDATE checkpoints SET owner = NULL, lease_until = NULL WHERE name = $1 AND owner = $2")
            .bind(name)
            .bind(owner)
            .execute(self.pool())
            .await
            .map_err(db)?;
        Ok(())
    }
}
