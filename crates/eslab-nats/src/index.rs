//! What [`read_query`](eslab_core::EventReader::read_query) knows of the
//! stream without reading it again.
//!
//! JetStream has no index on an event's type or tags, and the stream's
//! history is immutable (deletes and purges denied, sequences gap-free from
//! 1). So a handle reads every event once, keeps its type and tags here, and
//! later queries read only what was appended since: the index answers which
//! sequences match, and only those events are fetched. It costs the handle
//! memory per event of the stream (its type, shared, and its tags).

use std::collections::HashMap;
use std::sync::Arc;

use eslab_core::{Query, QueryItem, RecordedEvent, Tag};

#[derive(Debug)]
struct Entry {
    event_type: Arc<str>,
    tags: Box<[Tag]>,
}

/// The type and tags of every event from sequence 1 up to [`upto`](Self::upto).
#[derive(Debug, Default)]
pub(crate) struct QueryIndex {
    /// `entries[i]` is the event at sequence `i + 1`.
    entries: Vec<Entry>,
    by_type: HashMap<Arc<str>, Vec<u64>>,
    by_tag: HashMap<Tag, Vec<u64>>,
}

impl QueryIndex {
    /// The last sequence indexed (0: none).
    pub(crate) fn upto(&self) -> u64 {
        self.entries.len() as u64
    }

    /// Adds the events of a scan that started at most one past
    /// [`upto`](Self::upto) and read every sequence it returns in order;
    /// those already indexed are skipped. Returns `false`, adding nothing
    /// more, at a sequence that would leave a hole (the scan started past
    /// the index's end).
    pub(crate) fn extend<'a>(&mut self, events: impl IntoIterator<Item = &'a RecordedEvent>) -> bool {
        for event in events {
            let seq = event.position.get();
            if seq <= self.upto() {
                continue;
            }
            if seq != self.upto() + 1 {
                return false;
            }
            let event_type = match self.by_type.get_key_value(event.event_type.as_str()) {
                Some((interned, _)) => Arc::clone(interned),
                None => Arc::from(event.event_type.as_str()),
            };
            self.by_type.entry(Arc::clone(&event_type)).or_default().push(seq);
            for tag in &event.metadata.tags {
                self.by_tag.entry(tag.clone()).or_default().push(seq);
            }
            self.entries.push(Entry { event_type, tags: event.metadata.tags.clone().into_boxed_slice() });
        }
        true
    }

    /// The sequences up to `upto` of the events `query` matches, ascending.
    pub(crate) fn matching(&self, query: &Query, upto: u64) -> Vec<u64> {
        let mut out = Vec::new();
        for item in query.items() {
            for seq in self.candidates(item) {
                if seq <= upto && self.entry(seq).is_some_and(|e| item.matches(&e.event_type, &e.tags)) {
                    out.push(seq);
                }
            }
        }
        out.sort_unstable();
        out.dedup();
        out
    }

    /// A superset of the sequences `item` matches: the postings of its
    /// rarest tag, or of its types when it names no tag.
    fn candidates(&self, item: &QueryItem) -> Vec<u64> {
        if !item.tags.is_empty() {
            let rarest =
                item.tags.iter().map(|t| self.by_tag.get(t).map_or(&[][..], Vec::as_slice)).min_by_key(|p| p.len());
            return rarest.unwrap_or_default().to_vec();
        }
        item.types.iter().filter_map(|t| self.by_type.get(t.as_str())).flatten().copied().collect()
    }

    fn entry(&self, seq: u64) -> Option<&Entry> {
        let i = usize::try_from(seq.checked_sub(1)?).ok()?;
        self.entries.get(i)
    }
}

#[cfg(test)]
mod tests {
    use eslab_core::{Metadata, Position, StreamId, Version};

    use super::*;

    fn tag(s: &str) -> Tag {
        Tag::new(s).unwrap_or_else(|e| panic!("{e}"))
    }

    fn event(seq: u64, event_type: &str, tags: &[&str]) -> RecordedEvent {
        let stream: StreamId = "t-1".parse().unwrap_or_else(|e| panic!("{e}"));
        RecordedEvent {
            event_id: uuid::Uuid::now_v7(),
            stream_id: stream,
            stream_version: Version::new(seq),
            event_type: event_type.into(),
            schema_version: 1,
            position: Position::new(seq),
            transaction: 0,
            payload: serde_json::Value::Null,
            metadata: Metadata::now().with_tags(tags.iter().map(|t| tag(t))),
            recorded_at: time::OffsetDateTime::UNIX_EPOCH,
        }
    }

    #[test]
    fn queries_are_answered_from_the_postings() {
        let mut index = QueryIndex::default();
        let events = [
            event(1, "Joined", &["a", "b"]),
            event(2, "Joined", &["a", "c"]),
            event(3, "Left", &["a", "b"]),
            event(4, "Other", &[]),
        ];
        assert!(index.extend(&events[..2]));
        assert!(index.extend(&events[1..]), "already indexed events are skipped");
        assert_eq!(index.upto(), 4);
        let q = |items: Vec<QueryItem>| Query::new(items).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(index.matching(&q(vec![QueryItem::tagged([tag("a")])]), 4), [1, 2, 3]);
        assert_eq!(index.matching(&q(vec![QueryItem::tagged([tag("a"), tag("b")])]), 4), [1, 3]);
        assert_eq!(index.matching(&q(vec![QueryItem::tagged([tag("b")]).with_types(["Joined"])]), 4), [1]);
        assert_eq!(index.matching(&q(vec![QueryItem::of_types(["Other", "Left"])]), 4), [3, 4]);
        assert_eq!(
            index.matching(&q(vec![QueryItem::tagged([tag("c")]), QueryItem::tagged([tag("b")])]), 4),
            [1, 2, 3]
        );
        assert_eq!(
            index.matching(&q(vec![QueryItem::tagged([tag("a")])]), 2),
            [1, 2],
            "only up to the read's position"
        );
        assert!(index.matching(&q(vec![QueryItem::tagged([tag("a"), tag("zzz")])]), 4).is_empty());
    }

    #[test]
    fn a_scan_past_the_end_adds_nothing() {
        let mut index = QueryIndex::default();
        assert!(!index.extend(&[event(2, "Joined", &["a"])]));
        assert_eq!(index.upto(), 0);
    }
}
