//! Snapshots of aggregate state and the stores that keep them.

use std::future::Future;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::error::Result;
use crate::stream::StreamId;
use crate::version::Version;

/// A serialized aggregate state as of a stream version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// The stream whose state this is.
    pub stream_id: StreamId,
    /// The stream version the state reflects.
    pub version: Version,
    /// The schema version of the serialized state; a snapshot whose schema
    /// version differs from the code's is ignored and the state is replayed.
    pub state_schema_version: u32,
    /// The serialized state.
    pub state: serde_json::Value,
    /// When it was taken.
    #[serde(with = "time::serde::rfc3339")]
    pub taken_at: OffsetDateTime,
}

/// Keeps the latest snapshot per stream.
pub trait SnapshotStore: Send + Sync {
    /// The latest snapshot of `stream`, if any.
    fn load_snapshot(&self, stream: &StreamId) -> impl Future<Output = Result<Option<Snapshot>>> + Send;

    /// Stores `snapshot` unless a snapshot at the same or a later version is
    /// already stored (so racing writers never move a snapshot backwards).
    fn save_snapshot(&self, snapshot: Snapshot) -> impl Future<Output = Result<()>> + Send;
}
