//! # eslab-core
//!
//! The kernel of eslab, an event-sourcing and CQRS toolkit. It does no I/O:
//! it defines what an aggregate, an event and a store are, and supplies the
//! typed layer (JSON codec, upcasting, [`Repository`]) once for every backend.
//!
//! - [`Aggregate`]: a decider with pure [`decide`](Aggregate::decide) and
//!   [`evolve`](Aggregate::evolve).
//! - [`DomainEvent`]: a serde enum with stable type names and schema versions.
//! - [`StreamId`] (`<kind>-<id>`), [`Version`] (from 1), [`ExpectedVersion`],
//!   [`Position`] and [`Checkpoint`] (a resumable place in the global feed).
//! - [`NewEvent`] / [`RecordedEvent`] with [`Metadata`] (correlation,
//!   causation, actor, occurred-at, free map).
//! - Backends implement [`EventAppender`] and [`EventReader`] over serialized
//!   rows; [`EventStore`] wraps one and applies [`Upcasters`] on every read.
//! - [`check_storable`]: what every store can hold (no NUL in text); each
//!   store calls it before an append, so the stores agree.
//! - Live subscriptions: [`EventStore::subscribe`] catches up on the feed, then
//!   follows it, woken by the store's [`WakeUps`] with a polling fallback.
//! - [`Repository`]: load, decide, append with the loaded version, retry on
//!   conflict; optionally from [`Snapshot`]s ([`Snapshotting`] aggregates, a
//!   [`SnapshotPolicy`]) and a bounded state cache (cargo feature `cache`).
//! - [`StreamRetention`]: deleting old streams of a bookkeeping category
//!   (idempotency keys), never domain events.
//!
//! Stores live in their own crates (`eslab-memory`, ...); `eslab-testing` holds
//! the conformance suite every store passes.

mod aggregate;
#[cfg(feature = "cache")]
mod cache;
mod checkpoint;
mod codec;
mod error;
mod event;
mod locks;
mod repository;
mod retention;
mod snapshot;
mod storable;
mod store;
mod stream;
mod subscribe;
mod upcast;
mod version;

pub use aggregate::{Aggregate, Loaded};
pub use checkpoint::CheckpointStore;
pub use codec::{Codec, JsonCodec};
pub use error::{BoxError, Error, Result};
pub use event::{DomainEvent, EventId, Metadata, NewEvent, RecordedEvent};
pub use locks::{StreamGuard, StreamLocks};
pub use repository::{CommandError, Executed, Repository, RetryPolicy};
pub use retention::StreamRetention;
pub use snapshot::{Snapshot, SnapshotPolicy, SnapshotStore, Snapshotting};
pub use storable::{check_storable, nul_path};
pub use store::{
    AppendResult, DEFAULT_PAGE_SIZE, EventAppender, EventReader, EventReaderExt, EventStorage, EventStore, FeedFilter,
    FeedHead, StreamAppend,
};
pub use stream::{InvalidStreamId, MAX_STREAM_ID_LEN, StreamId};
pub use subscribe::{SubscribeOptions, WakeUpStream, WakeUps, no_wake_ups, watch_wake_ups};
pub use upcast::Upcasters;
pub use version::{Checkpoint, ExpectedVersion, InvalidCheckpoint, Position, Version};
