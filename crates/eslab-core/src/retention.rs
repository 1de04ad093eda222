//! Retention of bookkeeping streams: deleting whole old streams of one
//! category, so that records kept only for a while (idempotency keys,
//! deduplication markers) do not grow the store for ever.
//!
//! **Never for domain events.** An event store's promise is that the history
//! is kept; purging is for categories whose streams are the store's own
//! bookkeeping, written in the same atomic append as domain events only
//! because that makes them consistent with them, and worthless after a
//! known time. A projection following the feed sees a purged stream's events
//! (if it read them before the purge) and never again; the read models and
//! the relay must not depend on them.

use std::future::Future;

use time::OffsetDateTime;

use crate::error::Result;
use crate::store::EventStore;

/// Deleting the old streams of one category. Implemented by every backend.
///
/// # Contract (checked by `eslab-testing`'s retention conformance tests)
/// - [`purge_category_before`](Self::purge_category_before) deletes **whole
///   streams** of `category` whose **newest** event was recorded before
///   `recorded_before`: every event of the stream and its snapshot. A stream
///   with any event recorded at or after `recorded_before` is kept entirely.
/// - Streams of other categories, and their snapshots, are never touched;
///   what remains of the feed keeps its order, positions and checkpoints, so
///   a reader resuming from any checkpoint still sees every remaining and
///   every later event exactly once (the PostgreSQL feed stays gap-safe: the
///   purge inserts nothing).
/// - A purged stream is as if it had never been written: its version is
///   [`Version::NONE`](crate::Version::NONE) and an `ExpectedVersion::NoStream`
///   append starts it again at version 1. Positions are never reused: events
///   appended after a purge sort after every event appended before it.
/// - At most `limit` streams go per call, the oldest (by first event) first;
///   the call returns how many it deleted, so a caller loops until it gets
///   fewer than `limit`. A store may keep for a later call a stream that
///   holds the newest event of the whole store (SQLite derives the next
///   position from it).
/// - An append racing the purge of its stream either lands first (then the
///   stream has a new event and is kept) or finds the stream gone (an
///   `Exact` expectation on it fails with a conflict). Purges may run in
///   several processes at once; each stream is counted by one of them.
pub trait StreamRetention: Send + Sync {
    /// Deletes up to `limit` streams of `category` whose newest event was
    /// recorded before `recorded_before` (with their snapshots); returns how
    /// many streams it deleted.
    ///
    /// # Errors
    /// [`Error::InvalidStreamId`](crate::Error::InvalidStreamId) for a
    /// malformed category; backend errors as for appends.
    fn purge_category_before(
        &self,
        category: &str,
        recorded_before: OffsetDateTime,
        limit: usize,
    ) -> impl Future<Output = Result<u64>> + Send;
}

impl<S: StreamRetention> StreamRetention for EventStore<S> {
    async fn purge_category_before(
        &self,
        category: &str,
        recorded_before: OffsetDateTime,
        limit: usize,
    ) -> Result<u64> {
        self.backend().purge_category_before(category, recorded_before, limit).await
    }
}
