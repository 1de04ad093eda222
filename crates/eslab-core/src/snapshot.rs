//! Snapshots of aggregate state and the stores that keep them.

use std::future::Future;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::aggregate::Aggregate;
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

/// An aggregate whose state can be snapshotted: serializable, with a schema
/// version for the serialized state.
///
/// Opt-in: aggregates that never snapshot implement only [`Aggregate`].
///
/// Bump [`STATE_SCHEMA_VERSION`](Self::STATE_SCHEMA_VERSION) whenever the
/// serialized shape of the state (or the meaning of a field) changes: stored
/// snapshots with another schema version are then ignored and the state is
/// rebuilt by replaying the events, so no snapshot migration is ever needed.
///
/// ```
/// # use eslab_core::{Aggregate, DomainEvent};
/// # #[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
/// # enum CounterEvent { Incremented { by: u32 } }
/// # impl DomainEvent for CounterEvent {
/// #     const EVENT_TYPES: &'static [&'static str] = &["Incremented"];
/// #     fn event_type(&self) -> &'static str { "Incremented" }
/// # }
/// # #[derive(Debug, thiserror::Error)] #[error("overflow")] struct Overflow;
/// # impl Aggregate for Counter {
/// #     const KIND: &'static str = "counter";
/// #     type Command = u32; type Event = CounterEvent; type Error = Overflow;
/// #     fn decide(&self, by: &u32) -> Result<Vec<CounterEvent>, Overflow> { Ok(vec![CounterEvent::Incremented { by: *by }]) }
/// #     fn evolve(&mut self, e: &CounterEvent) { let CounterEvent::Incremented { by } = e; self.value += by; }
/// # }
/// use eslab_core::Snapshotting;
///
/// #[derive(Debug, Default, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
/// struct Counter { value: u32 }
///
/// impl Snapshotting for Counter {
///     const STATE_SCHEMA_VERSION: u32 = 1;
/// }
/// ```
pub trait Snapshotting: Aggregate + Serialize + DeserializeOwned {
    /// The schema version of the serialized state this code writes and reads.
    const STATE_SCHEMA_VERSION: u32;
}

/// When the [`Repository`](crate::Repository) takes a snapshot after a command.
///
/// Whatever the policy, [`Repository::snapshot`](crate::Repository::snapshot)
/// takes one on demand.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum SnapshotPolicy {
    /// Only on demand.
    #[default]
    Never,
    /// Whenever a command moves the stream's version across a multiple of `n`
    /// (0 behaves like [`Never`](Self::Never)). A load then replays at most
    /// about `n` events plus one command's worth after the snapshot.
    EveryNEvents(u64),
}

impl SnapshotPolicy {
    /// Whether a command that moved the stream from `before` to `after` should
    /// be followed by a snapshot at `after`.
    ///
    /// ```
    /// use eslab_core::{SnapshotPolicy, Version};
    /// let every = SnapshotPolicy::EveryNEvents(100);
    /// assert!(every.should_snapshot(Version::new(99), Version::new(100)));
    /// assert!(every.should_snapshot(Version::new(98), Version::new(103)));
    /// assert!(!every.should_snapshot(Version::new(100), Version::new(101)));
    /// assert!(!SnapshotPolicy::Never.should_snapshot(Version::NONE, Version::new(1000)));
    /// ```
    pub fn should_snapshot(self, before: Version, after: Version) -> bool {
        match self {
            SnapshotPolicy::Never | SnapshotPolicy::EveryNEvents(0) => false,
            SnapshotPolicy::EveryNEvents(n) => after.get() / n > before.get() / n,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_n_fires_once_per_crossed_multiple() {
        let v = Version::new;
        let every = |n| SnapshotPolicy::EveryNEvents(n);
        // One event at a time: exactly at the multiples.
        let fired: Vec<u64> = (1..=30).filter(|&i| every(10).should_snapshot(v(i - 1), v(i))).collect();
        assert_eq!(fired, [10, 20, 30]);
        // A multi-event command crossing a multiple fires at its end version; one that does not, does not.
        assert!(every(10).should_snapshot(v(8), v(12)));
        assert!(!every(10).should_snapshot(v(10), v(19)));
        // Crossing several multiples at once still fires (once).
        assert!(every(10).should_snapshot(v(5), v(35)));
        assert!(every(1).should_snapshot(v(0), v(1)));
        // An empty command (no events) never fires.
        assert!(!every(1).should_snapshot(v(7), v(7)));
        assert!(!every(0).should_snapshot(v(0), v(100)), "0 behaves like Never");
        assert!(!SnapshotPolicy::default().should_snapshot(v(0), v(100)));
    }
}
