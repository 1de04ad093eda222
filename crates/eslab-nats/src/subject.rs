//! How stream ids become NATS subjects.
//!
//! A stream `<kind>-<id>` is stored on the subject `<prefix>.<kind>.<token>`,
//! where `<token>` is the id with every byte outside `A-Z a-z 0-9 _ -` written
//! as `=` and two upper-case hex digits (so `.`, `*`, `>`, spaces and `=`
//! itself never reach the subject). The kind is already a valid token
//! (`a-z 0-9 _`). The encoding is injective, so two streams never share a
//! subject, which is what the per-subject concurrency check relies on. Events
//! carry their stream id in the message body; only the explorer's stream
//! listings decode subjects ([`decode_id`]).

use eslab_core::{FeedFilter, StreamId};

/// Whether `b` stays as is in a subject token.
fn plain(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'-'
}

/// The subject token of a stream id's `<id>` part.
pub(crate) fn encode_id(id: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(id.len());
    for &b in id.as_bytes() {
        if plain(b) {
            out.push(char::from(b));
        } else {
            out.push('=');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0x0f)]));
        }
    }
    out
}

/// The id part of a stream id from its subject token; `None` for a token
/// [`encode_id`] never makes.
pub(crate) fn decode_id(token: &str) -> Option<String> {
    let bytes = token.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'=' => {
                let hex = token.get(i + 1..i + 3)?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b if plain(b) => {
                out.push(b);
                i += 1;
            }
            _ => return None,
        }
    }
    String::from_utf8(out).ok()
}

/// The subjects of one events stream.
#[derive(Debug, Clone)]
pub(crate) struct Subjects {
    prefix: String,
}

impl Subjects {
    pub(crate) fn new(prefix: &str) -> Self {
        Subjects { prefix: prefix.to_owned() }
    }

    /// Every event: what the JetStream stream captures.
    pub(crate) fn all(&self) -> String {
        format!("{}.>", self.prefix)
    }

    /// The subject of one stream's events.
    pub(crate) fn stream(&self, stream: &StreamId) -> String {
        format!("{}.{}.{}", self.prefix, stream.category(), encode_id(stream.id()))
    }

    /// The subjects of a category's streams.
    pub(crate) fn category(&self, category: &str) -> String {
        format!("{}.{category}.*", self.prefix)
    }

    /// The subject filter of a feed.
    pub(crate) fn feed(&self, filter: &FeedFilter) -> String {
        match filter {
            FeedFilter::All => self.all(),
            FeedFilter::Category(c) => self.category(c),
        }
    }

    /// The core-NATS subject appends are announced on (outside the stream's
    /// subjects, so that JetStream does not store the announcements).
    pub(crate) fn appended(&self) -> String {
        format!("{}-appended", self.prefix)
    }

    /// The category of a subject of this stream (`<prefix>.<kind>.<token>`).
    pub(crate) fn category_of<'a>(&self, subject: &'a str) -> Option<&'a str> {
        let rest = subject.strip_prefix(self.prefix.as_str())?.strip_prefix('.')?;
        rest.split_once('.').map(|(kind, _)| kind)
    }
}

/// Whether `s` is a usable subject prefix: dot-separated tokens of
/// `A-Z a-z 0-9 _ -`, none empty.
pub(crate) fn valid_prefix(s: &str) -> bool {
    !s.is_empty() && s.split('.').all(|t| !t.is_empty() && t.bytes().all(plain))
}

/// Whether `s` is a usable JetStream stream or bucket name.
pub(crate) fn valid_name(s: &str) -> bool {
    !s.is_empty() && s.len() <= 255 && s.bytes().all(plain)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_become_single_tokens_and_stay_distinct() {
        assert_eq!(encode_id("abc-DEF_1"), "abc-DEF_1");
        assert_eq!(encode_id("a.b"), "a=2Eb");
        assert_eq!(encode_id("a=2Eb"), "a=3D2Eb");
        assert_eq!(encode_id("*>"), "=2A=3E");
        assert_eq!(encode_id("ü"), "=C3=BC");
        for id in ["a b", "a.b.c", "🦀", "x>", "=", "~"] {
            let token = encode_id(id);
            assert!(token.bytes().all(|b| plain(b) || b == b'='), "{token}");
        }
        assert_ne!(encode_id("a.b"), encode_id("a=2Eb"));
        for id in ["plain", "a.b", "ünï 🦀 *>=~", "=3D"] {
            assert_eq!(decode_id(&encode_id(id)).as_deref(), Some(id));
        }
        assert_eq!(decode_id("a=Z1"), None);
        assert_eq!(decode_id("a.b"), None);
    }

    #[test]
    fn subjects_of_streams_categories_and_feeds() {
        let s = Subjects::new("eslab.events");
        let id: StreamId = "account-1.2".parse().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s.stream(&id), "eslab.events.account.1=2E2");
        assert_eq!(s.feed(&FeedFilter::All), "eslab.events.>");
        assert_eq!(s.category("account"), "eslab.events.account.*");
        assert_eq!(s.category_of("eslab.events.account.1=2E2"), Some("account"));
        assert_eq!(s.category_of("other.account.1"), None);
        assert!(valid_prefix("eslab.events") && !valid_prefix("a..b") && !valid_prefix("a.*"));
        assert!(valid_name("ESLAB_EVENTS") && !valid_name("a.b") && !valid_name(""));
    }
}
