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
//! - [`Repository`]: the one command path. [`Repository::run`] loads,
//!   decides, appends with the loaded version and retries on conflict, with
//!   [`CommandOptions`]: an expected version (`If-Match`), an
//!   [`IdempotencyKey`] stored in the same atomic append ([`Outcome::Executed`]
//!   or [`Outcome::Replayed`]), deterministic event ids; [`Repository::run_with`]
//!   takes any [`Decide`] (a process manager's step appending to other streams
//!   too). Loads start from [`Snapshot`]s ([`Snapshotting`] aggregates, a
//!   [`SnapshotPolicy`]) and a bounded state cache (cargo feature `cache`);
//!   per-stream [`StreamLocks`] serialize a process's commands.
//! - [`Personal`] data and crypto-shredding ([`personal`]): personal fields
//!   sealed with a key per data [`Subject`] kept in the store's [`KeyStore`];
//!   [`KeyStore::forget`] deletes the key, and every read then yields
//!   [`Personal::Forgotten`].
//! - [`StreamRetention`]: deleting old streams of a bookkeeping category
//!   (idempotency keys), never domain events.
//!
//! Stores live in their own crates (`eslab-memory`, ...); `eslab-testing` holds
//! the conformance suite every store passes.

mod aggregate;
pub mod boundary;
#[cfg(feature = "cache")]
mod cache;
mod checkpoint;
mod codec;
mod command;
mod decide;
mod error;
mod event;
mod explore;
pub mod idempotency;
mod locks;
pub mod personal;
mod repository;
mod retention;
mod snapshot;
mod storable;
mod store;
mod stream;
mod subject;
mod subscribe;
mod tag;
mod upcast;
mod version;

pub use aggregate::{Aggregate, Loaded};
pub use boundary::{AppendCondition, InvalidQuery, Query, QueryItem, QueryRead, ReadPosition, Tag, Unseen};
pub use checkpoint::CheckpointStore;
pub use codec::{Codec, JsonCodec};
pub use command::{
    CommandError, CommandOptions, Decide, Decided, Decision, Executed, Outcome, derived_event_id, encode_events,
};
pub use decide::{Boundaries, BoundaryDecision, DecideOnBoundary, Seen, Settled};
pub use error::{BoxError, Error, Result};
pub use event::{DomainEvent, EventId, LeanEvent, Metadata, NewEvent, RecordedEvent};
pub use explore::{
    COUNT_CAP, CategorySummary, Explore, MAX_EXPLORE_PAGE, StreamSummary, category_range, explore_page, streams_page,
};
pub use idempotency::{IdempotencyKey, InvalidKey, MAX_KEY_LEN};
pub use locks::{StreamGuard, StreamLocks};
pub use personal::{Forgetting, KeyStore, Personal, PersonalError, Subject};
pub use repository::{Repository, RetryPolicy};
pub use retention::StreamRetention;
pub use snapshot::{Snapshot, SnapshotPolicy, SnapshotStore, Snapshotting};
pub use storable::{check_storable, nul_path};
pub use store::{
    AppendResult, DEFAULT_PAGE_SIZE, EventAppender, EventReader, EventReaderExt, EventStorage, EventStore, FeedFilter,
    FeedHead, STREAM_PAGE_SIZE, StreamAppend,
};
pub use stream::{InvalidStreamId, MAX_STREAM_ID_LEN, StreamId};
pub use subscribe::{SubscribeOptions, WakeUpStream, WakeUps, no_wake_ups, watch_wake_ups};
pub use upcast::Upcasters;
pub use version::{Checkpoint, ExpectedVersion, InvalidCheckpoint, Position, Version};
