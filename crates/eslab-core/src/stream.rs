//! Stream identifiers: `<kind>-<id>`, where the kind is the stream's category.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The longest stream id accepted, in bytes.
pub const MAX_STREAM_ID_LEN: usize = 255;

/// Why a string is not a valid [`StreamId`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidStreamId {
    /// The kind (category) is empty or has characters other than `[a-z0-9_]`.
    #[error("stream kind {0:?} must be non-empty and use only a-z, 0-9 and _")]
    Kind(String),
    /// The id part is empty or has control characters.
    #[error("stream id part {0:?} must be non-empty and have no control characters")]
    Id(String),
    /// The string has no `-` between kind and id.
    #[error("stream id {0:?} must look like <kind>-<id>")]
    Shape(String),
    /// The whole id is longer than [`MAX_STREAM_ID_LEN`].
    #[error("stream id is {0} bytes long, more than the {MAX_STREAM_ID_LEN} allowed")]
    TooLong(usize),
}

/// The identity of an event stream, `<kind>-<id>` (e.g. `account-42`).
///
/// The kind is the stream's category: per-category feeds and Kafka topics are
/// keyed by it. The id part may itself contain `-` (UUIDs do).
///
/// ```
/// use eslab_core::StreamId;
/// let s = StreamId::new("account", "0190-abc").unwrap();
/// assert_eq!(s.as_str(), "account-0190-abc");
/// assert_eq!(s.category(), "account");
/// assert_eq!(s.id(), "0190-abc");
/// assert_eq!("account-0190-abc".parse::<StreamId>().unwrap(), s);
/// assert!("Account-1".parse::<StreamId>().is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct StreamId {
    full: String,
    kind_len: usize,
}

impl StreamId {
    /// Builds `<kind>-<id>`, validating both parts.
    pub fn new(kind: &str, id: &str) -> Result<Self, InvalidStreamId> {
        validate_kind(kind)?;
        if id.is_empty() || id.chars().any(char::is_control) {
            return Err(InvalidStreamId::Id(id.to_owned()));
        }
        let full = format!("{kind}-{id}");
        if full.len() > MAX_STREAM_ID_LEN {
            return Err(InvalidStreamId::TooLong(full.len()));
        }
        Ok(StreamId { full, kind_len: kind.len() })
    }

    /// The whole id, `<kind>-<id>`.
    pub fn as_str(&self) -> &str {
        &self.full
    }

    /// The kind part, which is the stream's category.
    pub fn category(&self) -> &str {
        &self.full[..self.kind_len]
    }

    /// The part after the kind.
    pub fn id(&self) -> &str {
        &self.full[self.kind_len + 1..]
    }
}

/// Checks a category (stream kind) name.
pub(crate) fn validate_kind(kind: &str) -> Result<(), InvalidStreamId> {
    if kind.is_empty() || !kind.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_') {
        return Err(InvalidStreamId::Kind(kind.to_owned()));
    }
    Ok(())
}

impl FromStr for StreamId {
    type Err = InvalidStreamId;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (kind, id) = s.split_once('-').ok_or_else(|| InvalidStreamId::Shape(s.to_owned()))?;
        StreamId::new(kind, id)
    }
}

impl TryFrom<String> for StreamId {
    type Error = InvalidStreamId;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<StreamId> for String {
    fn from(s: StreamId) -> String {
        s.full
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.full)
    }
}

impl AsRef<str> for StreamId {
    fn as_ref(&self) -> &str {
        &self.full
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_rejects() {
        assert!("account-".parse::<StreamId>().is_err());
        assert!("-1".parse::<StreamId>().is_err());
        assert!("account".parse::<StreamId>().is_err());
        assert!("acc ount-1".parse::<StreamId>().is_err());
        assert!("account-a\nb".parse::<StreamId>().is_err());
        let long = format!("a-{}", "x".repeat(300));
        assert!(matches!(long.parse::<StreamId>(), Err(InvalidStreamId::TooLong(_))));
        let s: StreamId = "transfer-a-b-c".parse().unwrap();
        assert_eq!((s.category(), s.id()), ("transfer", "a-b-c"));
        let json = serde_json::to_string(&s).unwrap();
        assert_eq!(json, "\"transfer-a-b-c\"");
        assert_eq!(serde_json::from_str::<StreamId>(&json).unwrap(), s);
        assert!(serde_json::from_str::<StreamId>("\"bad\"").is_err());
    }
}
