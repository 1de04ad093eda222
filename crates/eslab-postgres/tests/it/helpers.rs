//! Small events and stream ids. Fresh schemas come from
//! `eslab_testing::pg::SchemaStore`.

use eslab_core::{NewEvent, StreamId};

/// A small event `{"n": n}`.
pub fn event(n: u64) -> NewEvent {
    NewEvent::new("Counted", 1, serde_json::json!({ "n": n }), eslab_core::Metadata::now())
}

/// `test-<name>`.
pub fn stream(name: &str) -> StreamId {
    StreamId::new("test", name).unwrap()
}
