//! Dynamic consistency boundaries (DCB): tags on events, queries over them,
//! and appends that hold only while what a decision read is still current.
//!
//! An aggregate's stream is a fixed consistency boundary. A *dynamic* one is
//! chosen per decision: the decision reads the events matching a [`Query`]
//! (event types × tags), decides, and appends with an [`AppendCondition`]:
//! "fail if any event matching this query was committed that my read did not
//! see". Two decisions whose queries overlap cannot both commit on the same
//! read; decisions on disjoint boundaries never wait for each other.
//!
//! ```
//! use eslab_core::{AppendCondition, Query, QueryItem, Tag};
//! let alice = Tag::new("account:alice").unwrap();
//! let bob = Tag::new("account:bob").unwrap();
//! // Every event tagged with alice's account, or with bob's.
//! let query = Query::new([QueryItem::tagged([alice.clone()]), QueryItem::tagged([bob])]).unwrap();
//! assert!(query.matches("Deposited", &[alice]));
//! assert!(!query.matches("Deposited", &[Tag::new("account:carol").unwrap()]));
//! // No event of the boundary may exist at all (nothing read yet):
//! let _first = AppendCondition::none_matching(query);
//! ```
//!
//! The stores hold events' tags in an index, answer [`EventReader::read_query`](crate::EventReader::read_query)
//! with the events and the [`ReadPosition`] they were read at, and check the
//! condition of [`EventAppender::append_if`](crate::EventAppender::append_if)
//! in the same atomic step as the append. How each store makes the check
//! atomic under concurrency is in its crate docs; `eslab-testing`'s
//! `boundary` kit proves it on every store.

use serde::{Deserialize, Serialize};

use crate::event::DomainEvent;
pub use crate::tag::{
    InvalidQuery, MAX_EVENT_TYPE_LEN, MAX_ITEM_TERMS, MAX_QUERY_ITEMS, MAX_TAG_LEN, MAX_TAGS_PER_EVENT, Tag,
};
use crate::version::Position;

/// One alternative of a [`Query`]: events of any of `types` (any type when
/// empty) that carry every one of `tags` (no tag needed when empty). At
/// least one of the two is not empty.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct QueryItem {
    /// The event types; empty means any type.
    #[serde(default)]
    pub types: Vec<String>,
    /// The tags an event must all carry; empty means no tag is needed.
    #[serde(default)]
    pub tags: Vec<Tag>,
}

impl QueryItem {
    /// Events carrying every one of `tags`, of any type.
    pub fn tagged(tags: impl IntoIterator<Item = Tag>) -> Self {
        QueryItem { types: Vec::new(), tags: tags.into_iter().collect() }
    }

    /// Events of any of `types`, with or without tags.
    pub fn of_types<T: Into<String>>(types: impl IntoIterator<Item = T>) -> Self {
        QueryItem { types: types.into_iter().map(Into::into).collect(), tags: Vec::new() }
    }

    /// Restricts the item to events of `types`.
    #[must_use]
    pub fn with_types<T: Into<String>>(mut self, types: impl IntoIterator<Item = T>) -> Self {
        self.types.extend(types.into_iter().map(Into::into));
        self
    }

    /// Events of `types` (names checked against `E`'s [`DomainEvent::EVENT_TYPES`])
    /// carrying every one of `tags`.
    ///
    /// # Errors
    /// [`InvalidQuery::UnknownEventType`] for a name `E` does not know.
    pub fn typed<E: DomainEvent>(types: &[&str], tags: impl IntoIterator<Item = Tag>) -> Result<Self, InvalidQuery> {
        for t in types {
            if !E::EVENT_TYPES.contains(t) {
                return Err(InvalidQuery::UnknownEventType { event_type: (*t).to_owned(), known: E::EVENT_TYPES });
            }
        }
        Ok(QueryItem { types: types.iter().map(|t| (*t).to_owned()).collect(), tags: tags.into_iter().collect() })
    }

    /// Whether an event of `event_type` carrying `tags` matches this item.
    pub fn matches(&self, event_type: &str, tags: &[Tag]) -> bool {
        (self.types.is_empty() || self.types.iter().any(|t| t == event_type))
            && self.tags.iter().all(|t| tags.contains(t))
    }
}

/// Which events a decision reads: those matching any of its items.
///
/// Built with [`Query::new`], which refuses an empty query, an item naming
/// nothing, bad event type names and queries over the limits.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct Query {
    items: Vec<QueryItem>,
}

impl Query {
    /// A query matching the events any of `items` matches.
    ///
    /// # Errors
    /// [`InvalidQuery::EmptyQuery`], [`InvalidQuery::EmptyItem`],
    /// [`InvalidQuery::BadEventType`], [`InvalidQuery::TooLarge`].
    pub fn new(items: impl IntoIterator<Item = QueryItem>) -> Result<Self, InvalidQuery> {
        let items: Vec<QueryItem> = items.into_iter().collect();
        if items.is_empty() {
            return Err(InvalidQuery::EmptyQuery);
        }
        if items.len() > MAX_QUERY_ITEMS {
            return Err(InvalidQuery::TooLarge(format!("{} items, at most {MAX_QUERY_ITEMS}", items.len())));
        }
        for (i, item) in items.iter().enumerate() {
            if item.types.is_empty() && item.tags.is_empty() {
                return Err(InvalidQuery::EmptyItem(i));
            }
            if item.types.len() > MAX_ITEM_TERMS || item.tags.len() > MAX_ITEM_TERMS {
                return Err(InvalidQuery::TooLarge(format!("item {i} names more than {MAX_ITEM_TERMS} types or tags")));
            }
            for t in &item.types {
                if t.is_empty() || t.len() > MAX_EVENT_TYPE_LEN {
                    return Err(InvalidQuery::BadEventType(t.clone()));
                }
                if t.chars().any(char::is_control) {
                    return Err(InvalidQuery::ControlCharacter(t.clone()));
                }
            }
        }
        Ok(Query { items })
    }

    /// Events carrying every one of `tags`, of any type.
    ///
    /// # Errors
    /// [`InvalidQuery::EmptyItem`] for no tags.
    pub fn tagged(tags: impl IntoIterator<Item = Tag>) -> Result<Self, InvalidQuery> {
        Query::new([QueryItem::tagged(tags)])
    }

    /// The items.
    pub fn items(&self) -> &[QueryItem] {
        &self.items
    }

    /// Whether an event of `event_type` carrying `tags` matches.
    pub fn matches(&self, event_type: &str, tags: &[Tag]) -> bool {
        self.items.iter().any(|item| item.matches(event_type, tags))
    }

    /// The lock keys of this query, sorted and without duplicates: per item
    /// its tags, or its types when it names no tag. Two queries that can match
    /// the same event share a key (an event matching an item carries the
    /// item's tags, or is of one of its types).
    pub fn lock_keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = self
            .items
            .iter()
            .flat_map(|item| {
                if item.tags.is_empty() {
                    item.types.iter().map(|t| type_key(t)).collect::<Vec<_>>()
                } else {
                    item.tags.iter().map(tag_key).collect()
                }
            })
            .collect();
        keys.sort_unstable();
        keys.dedup();
        keys
    }
}

/// The lock key of a tag (see [`Query::lock_keys`]).
pub fn tag_key(tag: &Tag) -> String {
    format!("t\u{1f}{tag}")
}

/// The lock key of an event type (see [`Query::lock_keys`]).
pub fn type_key(event_type: &str) -> String {
    format!("y\u{1f}{event_type}")
}

/// The lock keys an event of `event_type` carrying `tags` writes under: one
/// per tag and one for its type (so that a decision on tags or on types only
/// waits for it).
pub fn event_lock_keys<'a>(event_type: &str, tags: impl IntoIterator<Item = &'a Tag>) -> Vec<String> {
    let mut keys: Vec<String> = tags.into_iter().map(tag_key).collect();
    keys.push(type_key(event_type));
    keys
}

impl<'de> Deserialize<'de> for Query {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Raw {
            items: Vec<QueryItem>,
        }
        let raw = Raw::deserialize(d)?;
        Query::new(raw.items).map_err(serde::de::Error::custom)
    }
}

/// Where a [`read_query`](crate::EventReader::read_query) stood: enough for
/// the store to tell, at append time, whether an event was committed that the
/// read did not see. Hand it back unchanged in an [`AppendCondition`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ReadPosition {
    /// The newest global position the read covered: in a store that commits
    /// in position order (memory, SQLite) every later event is one the read
    /// did not see.
    pub position: Position,
    /// For a store that commits out of position order (PostgreSQL): the
    /// transactions the read could not see, by commit-order key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unseen: Option<Unseen>,
}

impl ReadPosition {
    /// A position in a store that commits in position order.
    pub const fn at(position: Position) -> Self {
        ReadPosition { position, unseen: None }
    }
}

/// The transactions a read could not see (a PostgreSQL snapshot): every
/// transaction from `from` on, and the ones in `in_flight`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Unseen {
    /// The first transaction id not yet assigned when the read ran (`xmax`).
    pub from: u64,
    /// Transactions in flight (uncommitted) when the read ran, below `from`.
    #[serde(default)]
    pub in_flight: Vec<u64>,
}

impl Unseen {
    /// Whether the read could not see the transaction `transaction`.
    pub fn hides(&self, transaction: u64) -> bool {
        transaction >= self.from || self.in_flight.contains(&transaction)
    }
}

/// The condition of an [`append_if`](crate::EventAppender::append_if): fail
/// if an event matching `query` was committed that the read at `after` did
/// not see (any matching event at all when `after` is `None`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppendCondition {
    /// The boundary the decision read.
    pub query: Query,
    /// Where the read stood; `None` when nothing was read.
    pub after: Option<ReadPosition>,
}

impl AppendCondition {
    /// Fail if any event matching `query` was committed that the read at
    /// `after` did not see.
    pub fn new(query: Query, after: ReadPosition) -> Self {
        AppendCondition { query, after: Some(after) }
    }

    /// Fail if any event matching `query` exists.
    pub fn none_matching(query: Query) -> Self {
        AppendCondition { query, after: None }
    }
}

/// The events a query matched, in feed order, and where the read stood.
#[derive(Debug, Clone, PartialEq)]
pub struct QueryRead {
    /// The matching events, in feed order.
    pub events: Vec<crate::RecordedEvent>,
    /// Where the read stood: pass it to [`AppendCondition::new`].
    pub position: ReadPosition,
}

impl QueryRead {
    /// The condition "nothing matching `query` was committed since this read".
    pub fn condition(&self, query: Query) -> AppendCondition {
        AppendCondition::new(query, self.position.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stream::StreamId;

    fn tag(s: &str) -> Tag {
        Tag::new(s).unwrap()
    }

    #[test]
    fn tags_are_validated() {
        assert_eq!(Tag::new(""), Err(InvalidQuery::EmptyTag));
        assert_eq!(Tag::new("x".repeat(MAX_TAG_LEN + 1)), Err(InvalidQuery::TagTooLong(MAX_TAG_LEN + 1)));
        assert!(Tag::new("x".repeat(MAX_TAG_LEN)).is_ok());
        assert!(matches!(Tag::new("a\u{0}b"), Err(InvalidQuery::ControlCharacter(_))));
        assert!(serde_json::from_str::<Tag>("\"\"").is_err());
        assert_eq!(serde_json::from_str::<Tag>("\"a:b\"").unwrap(), tag("a:b"));
        let longest = StreamId::new("k", &"i".repeat(253)).unwrap();
        assert_eq!(Tag::of_stream(&longest).as_str().len(), 255);
    }

    #[test]
    fn queries_are_validated() {
        assert_eq!(Query::new([]), Err(InvalidQuery::EmptyQuery));
        assert_eq!(Query::new([QueryItem::default()]), Err(InvalidQuery::EmptyItem(0)));
        assert!(matches!(Query::new([QueryItem::of_types([""])]), Err(InvalidQuery::BadEventType(_))));
        let many = (0..=MAX_QUERY_ITEMS).map(|i| QueryItem::tagged([tag(&format!("t{i}"))]));
        assert!(matches!(Query::new(many), Err(InvalidQuery::TooLarge(_))));
        assert!(serde_json::from_str::<Query>(r#"{"items":[]}"#).is_err());
    }

    #[test]
    fn items_match_any_type_and_all_tags() {
        let item = QueryItem::tagged([tag("a"), tag("b")]).with_types(["X", "Y"]);
        assert!(item.matches("X", &[tag("b"), tag("a"), tag("c")]));
        assert!(!item.matches("X", &[tag("a")]));
        assert!(!item.matches("Z", &[tag("a"), tag("b")]));
        let types_only = QueryItem::of_types(["X"]);
        assert!(types_only.matches("X", &[]));
        let q = Query::new([item, types_only]).unwrap();
        assert!(q.matches("X", &[]));
        assert!(!q.matches("Y", &[tag("a")]));
    }

    #[test]
    fn overlapping_queries_share_a_lock_key() {
        let a = Query::new([QueryItem::tagged([tag("a"), tag("b")])]).unwrap();
        let b = Query::new([QueryItem::tagged([tag("b")]).with_types(["X"])]).unwrap();
        let types = Query::new([QueryItem::of_types(["X"])]).unwrap();
        assert!(a.lock_keys().iter().any(|k| b.lock_keys().contains(k)));
        // An event of type X tagged b writes under a key of each query matching it.
        let keys = event_lock_keys("X", &[tag("b")]);
        for q in [&a, &b, &types] {
            if q.matches("X", &[tag("b")]) {
                assert!(q.lock_keys().iter().any(|k| keys.contains(k)), "{q:?}");
            }
        }
    }

    #[test]
    fn unseen_hides_later_and_in_flight_transactions() {
        let unseen = Unseen { from: 10, in_flight: vec![7] };
        assert!(unseen.hides(10) && unseen.hides(11) && unseen.hides(7));
        assert!(!unseen.hides(8) && !unseen.hides(6));
    }

    #[test]
    fn typed_items_know_their_types() {
        #[derive(serde::Serialize, serde::Deserialize)]
        enum Ev {
            A,
        }
        impl DomainEvent for Ev {
            const EVENT_TYPES: &'static [&'static str] = &["A"];
            fn event_type(&self) -> &'static str {
                "A"
            }
        }
        assert!(QueryItem::typed::<Ev>(&["A"], []).is_ok());
        assert!(matches!(QueryItem::typed::<Ev>(&["B"], []), Err(InvalidQuery::UnknownEventType { .. })));
    }
}
