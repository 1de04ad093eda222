//! Browsing a store: its categories, the streams of a category, the events of
//! one request across streams. What an operator's console (or a support
//! tool) needs beside the stream and feed reads, for any domain.
//!
//! Every list is keyset-paged (`after` the last item of the previous page)
//! and every call does a bounded amount of work whatever the store's size:
//! a category's event count stops at [`COUNT_CAP`].

use std::future::Future;

use uuid::Uuid;

use crate::error::Result;
use crate::event::RecordedEvent;
use crate::store::{EventReader, EventStore};
use crate::stream::StreamId;
use crate::version::{Position, Version};

/// Where counting a category's events stops: a category with more shows
/// [`CategorySummary::capped`].
pub const COUNT_CAP: u64 = 10_000;

/// The largest page any [`Explore`] call returns, whatever `limit` asks.
pub const MAX_EXPLORE_PAGE: usize = 1_000;

/// One category of the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CategorySummary {
    /// Its name (the part of its stream ids before the first `-`).
    pub category: String,
    /// How many events it holds, up to [`COUNT_CAP`].
    pub events: u64,
    /// Whether it holds more than [`COUNT_CAP`] events (`events` is then the cap).
    pub capped: bool,
}

impl CategorySummary {
    /// A summary from a count that went up to `COUNT_CAP + 1`.
    pub fn counted(category: impl Into<String>, counted: u64) -> Self {
        CategorySummary { category: category.into(), events: counted.min(COUNT_CAP), capped: counted > COUNT_CAP }
    }
}

/// One stream of a category.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamSummary {
    /// Its id.
    pub stream_id: StreamId,
    /// Its current version (its number of events).
    pub version: Version,
}

/// Browsing a store. Implemented by every backend of eslab and forwarded by
/// [`EventStore`] (which opens personal data and upcasts what it returns).
///
/// # Contract (checked by `eslab-testing`'s explore conformance tests)
/// - [`categories`](Self::categories): the categories holding events, in
///   order of their names, after `after`, at most `limit` (and
///   [`MAX_EXPLORE_PAGE`]): byte order, except on PostgreSQL, where it is the
///   database's collation (byte order under `C` and `C.UTF-8`); the pages
///   follow that order either way.
/// - [`streams`](Self::streams): the streams of `category` in byte order of
///   their ids, after `after`, with their current versions.
/// - [`correlated`](Self::correlated): the events whose metadata carries
///   `correlation_id`, in position order, after `after`, across streams.
pub trait Explore: Send + Sync {
    /// A page of the categories after `after`.
    fn categories(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<CategorySummary>>> + Send;

    /// A page of the streams of `category` after `after`.
    fn streams(
        &self,
        category: &str,
        after: Option<&StreamId>,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<StreamSummary>>> + Send;

    /// A page of the events of one request (its correlation id) after position `after`.
    fn correlated(
        &self,
        correlation_id: Uuid,
        after: Position,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<RecordedEvent>>> + Send;
}

/// A page of [`Explore::streams`] from summaries in any order, for stores
/// without an ordered index: those after `after` (byte order of the id),
/// sorted, at most [`explore_page`]`(limit)`.
pub fn streams_page(
    streams: impl IntoIterator<Item = StreamSummary>,
    after: Option<&StreamId>,
    limit: usize,
) -> Vec<StreamSummary> {
    let mut page: Vec<StreamSummary> =
        streams.into_iter().filter(|s| after.is_none_or(|after| s.stream_id.as_str() > after.as_str())).collect();
    page.sort_by(|a, b| a.stream_id.as_str().cmp(b.stream_id.as_str()));
    page.truncate(explore_page(limit));
    page
}

/// `limit` within [`MAX_EXPLORE_PAGE`].
pub fn explore_page(limit: usize) -> usize {
    limit.min(MAX_EXPLORE_PAGE)
}

/// The range of stream ids (exclusive at both ends, byte order) that a page
/// of `category`'s streams after `after` reads: stream ids of a category are
/// `category-...`, and `.` follows `-` in byte order, so the category's ids
/// are exactly those in `(category + "-", category + ".")`; `after` raises the
/// lower end when it lies inside.
pub fn category_range(category: &str, after: Option<&StreamId>) -> (String, String) {
    let low = format!("{category}-");
    let low = match after {
        Some(after) if after.as_str() > low.as_str() => after.as_str().to_owned(),
        _ => low,
    };
    (low, format!("{category}."))
}

impl<S: Explore + EventReader> Explore for EventStore<S> {
    async fn categories(&self, after: Option<&str>, limit: usize) -> Result<Vec<CategorySummary>> {
        self.backend().categories(after, limit).await
    }

    async fn streams(&self, category: &str, after: Option<&StreamId>, limit: usize) -> Result<Vec<StreamSummary>> {
        self.backend().streams(category, after, limit).await
    }

    async fn correlated(&self, correlation_id: Uuid, after: Position, limit: usize) -> Result<Vec<RecordedEvent>> {
        let page = self.backend().correlated(correlation_id, after, limit).await?;
        self.prepare(page).await
    }
}
