//! Tags, what [dynamic consistency boundaries](crate::boundary) find
//! events by, and the error of every refused tag, query or condition.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::stream::StreamId;

/// The longest tag, in bytes.
pub const MAX_TAG_LEN: usize = 256;
/// The most tags one event may carry.
pub const MAX_TAGS_PER_EVENT: usize = 16;
/// The most items one [`Query`](crate::Query) may have.
pub const MAX_QUERY_ITEMS: usize = 64;
/// The most event types or tags one [`QueryItem`](crate::QueryItem) may name.
pub const MAX_ITEM_TERMS: usize = 64;
/// The longest event type a query may name, in bytes.
pub const MAX_EVENT_TYPE_LEN: usize = 256;

/// Why a tag, a query or a condition was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidQuery {
    /// A tag is empty.
    #[error("a tag must not be empty")]
    EmptyTag,
    /// A tag is longer than [`MAX_TAG_LEN`].
    #[error("tag is {0} bytes long, more than the {MAX_TAG_LEN} allowed")]
    TagTooLong(usize),
    /// A tag or event type holds a control character (NUL included).
    #[error("{0:?} holds a control character")]
    ControlCharacter(String),
    /// An event carries more than [`MAX_TAGS_PER_EVENT`] tags.
    #[error("an event carries {0} tags, more than the {MAX_TAGS_PER_EVENT} allowed")]
    TooManyTags(usize),
    /// A query without items (it would match nothing, or everything).
    #[error("a query needs at least one item")]
    EmptyQuery,
    /// A query item that names neither an event type nor a tag.
    #[error("query item {0} names neither an event type nor a tag")]
    EmptyItem(usize),
    /// A query or an item larger than the limits.
    #[error("query too large: {0}")]
    TooLarge(String),
    /// An event type that is empty or longer than [`MAX_EVENT_TYPE_LEN`].
    #[error("event type {0:?} is empty or longer than {MAX_EVENT_TYPE_LEN} bytes")]
    BadEventType(String),
    /// A condition's position lies beyond what the store has committed (it
    /// does not come from a read of this store).
    #[error("the condition's position {position} is ahead of the store's feed (at {head})")]
    PositionAhead {
        /// The condition's position, as the store describes it.
        position: String,
        /// Where the store's feed stands.
        head: String,
    },
    /// An event type the decision's event type does not know.
    #[error("event type {event_type:?} is not one of {known:?}")]
    UnknownEventType {
        /// The type named.
        event_type: String,
        /// The types the decision's event type knows.
        known: &'static [&'static str],
    },
}

/// A label an event carries so that decisions can find it, such as
/// `account:42` or `course:math-101`: 1 to [`MAX_TAG_LEN`] bytes, no control
/// characters. Set by the domain when it decides ([`DomainEvent::tags`](crate::DomainEvent::tags)).
///
/// ```
/// use eslab_core::{StreamId, Tag};
/// assert_eq!(Tag::new("account:42").unwrap().as_str(), "account:42");
/// assert!(Tag::new("").is_err());
/// let stream: StreamId = "account-42".parse().unwrap();
/// assert_eq!(Tag::of_stream(&stream).as_str(), "account:42");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Tag(String);

impl Tag {
    /// A tag, validated.
    ///
    /// # Errors
    /// [`InvalidQuery::EmptyTag`], [`InvalidQuery::TagTooLong`] or
    /// [`InvalidQuery::ControlCharacter`].
    pub fn new(tag: impl Into<String>) -> Result<Self, InvalidQuery> {
        let tag = tag.into();
        if tag.is_empty() {
            return Err(InvalidQuery::EmptyTag);
        }
        if tag.len() > MAX_TAG_LEN {
            return Err(InvalidQuery::TagTooLong(tag.len()));
        }
        if tag.chars().any(char::is_control) {
            return Err(InvalidQuery::ControlCharacter(tag));
        }
        Ok(Tag(tag))
    }

    /// The tag `<kind>:<id>` naming a stream `<kind>-<id>`: always valid, since
    /// stream ids are shorter than [`MAX_TAG_LEN`] and hold no control characters.
    pub fn of_stream(stream: &StreamId) -> Self {
        Tag(format!("{}:{}", stream.category(), stream.id()))
    }

    /// The tag as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for Tag {
    type Error = InvalidQuery;
    fn try_from(tag: String) -> Result<Self, InvalidQuery> {
        Tag::new(tag)
    }
}

impl From<Tag> for String {
    fn from(tag: Tag) -> String {
        tag.0
    }
}

impl std::str::FromStr for Tag {
    type Err = InvalidQuery;
    fn from_str(s: &str) -> Result<Self, InvalidQuery> {
        Tag::new(s)
    }
}
