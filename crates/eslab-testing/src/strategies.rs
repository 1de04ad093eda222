//! proptest strategies for events, metadata and command sequences.

use eslab_core::{Metadata, NewEvent, StreamId};
use proptest::prelude::*;
use serde_json::{Value, json};

/// Arbitrary JSON payloads: unicode strings, integers, booleans, nulls, nested
/// arrays and objects (no floats, so values compare exactly after a round trip).
pub fn payload() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        "\\PC{0,24}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-z_]{1,8}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Arbitrary metadata: optional correlation, causation and actor.
pub fn metadata() -> impl Strategy<Value = Metadata> {
    (any::<Option<u128>>(), any::<Option<u128>>(), proptest::option::of("\\PC{1,16}")).prop_map(|(c, k, actor)| {
        let mut m = Metadata::now();
        m.correlation_id = c.map(uuid::Uuid::from_u128);
        m.causation_id = k.map(uuid::Uuid::from_u128);
        m.actor = actor;
        m
    })
}

/// Arbitrary serialized events with fresh ids.
pub fn new_event() -> impl Strategy<Value = NewEvent> {
    ("[A-Z][A-Za-z]{0,15}", 1u32..4, payload(), metadata())
        .prop_map(|(event_type, version, payload, metadata)| NewEvent::new(event_type, version, payload, metadata))
}

/// Arbitrary stream ids of one category.
pub fn stream_id(category: &'static str) -> impl Strategy<Value = StreamId> {
    "[a-z0-9]{1,12}".prop_filter_map("valid stream id", move |id| StreamId::new(category, &id).ok())
}

/// Sequences of up to `max_len` commands drawn from `command`.
pub fn commands<C: std::fmt::Debug>(
    command: impl Strategy<Value = C>,
    max_len: usize,
) -> impl Strategy<Value = Vec<C>> {
    prop::collection::vec(command, 0..=max_len)
}

#[cfg(test)]
mod tests {
    use super::*;
    use eslab_core::{Checkpoint, EventAppender, EventReader, ExpectedVersion, FeedFilter, Version};

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]
        /// Any batch of events round-trips through a store, versions without gaps.
        #[test]
        fn events_round_trip_through_the_memory_store(batch in prop::collection::vec(new_event(), 1..8), s in stream_id("prop")) {
            let store = eslab_memory::MemoryStore::new();
            let expected: Vec<_> = batch.iter().map(|e| (e.event_id, e.payload.clone())).collect();
            let read = crate::block_on(async {
                store.append(&s, ExpectedVersion::NoStream, batch).await.unwrap();
                store.read_feed(&FeedFilter::All, Checkpoint::START, 100).await.unwrap()
            });
            prop_assert_eq!(read.iter().map(|e| (e.event_id, e.payload.clone())).collect::<Vec<_>>(), expected);
            let versions: Vec<_> = read.iter().map(|e| e.stream_version).collect();
            prop_assert_eq!(versions, (1..=read.len() as u64).map(Version::new).collect::<Vec<_>>());
        }
    }
}
