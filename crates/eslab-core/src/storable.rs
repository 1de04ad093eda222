//! What every store can hold, checked once for all of them.
//!
//! PostgreSQL cannot store a NUL character (U+0000) in `text` or `jsonb`,
//! while SQLite and the memory store can. So that the stores agree (and an
//! event written to one can be copied to any other), every store refuses an
//! append holding text with a NUL, with [`Error::InvalidRequest`], before it
//! writes anything: each store calls [`check_storable`] first. A NUL-free
//! string is stored and read back exactly.

use serde_json::Value;

use crate::error::{Error, Result};
use crate::event::NewEvent;
use crate::store::StreamAppend;

/// Checks that every store can hold the events of `appends`: no NUL character
/// (U+0000) in an event type, a payload or metadata string, or an object key.
///
/// # Errors
/// [`Error::InvalidRequest`] naming the event and the place of the first NUL
/// (e.g. `payload.owner.name`).
///
/// ```
/// use eslab_core::{ExpectedVersion, Metadata, NewEvent, StreamAppend, StreamId, check_storable};
/// let append = |payload| {
///     let event = NewEvent::new("Renamed", 1, payload, Metadata::now());
///     [StreamAppend::new(StreamId::new("user", "1").unwrap(), ExpectedVersion::Any, vec![event])]
/// };
/// assert!(check_storable(&append(serde_json::json!({ "name": "Ada" }))).is_ok());
/// assert!(check_storable(&append(serde_json::json!({ "name": "A\u{0}da" }))).is_err());
/// ```
pub fn check_storable(appends: &[StreamAppend]) -> Result<()> {
    appends.iter().flat_map(|append| &append.events).try_for_each(NewEvent::check_storable)
}

impl NewEvent {
    /// Checks that every store can hold this event (see [`check_storable`]).
    ///
    /// # Errors
    /// [`Error::InvalidRequest`] naming the place of the first NUL.
    pub fn check_storable(&self) -> Result<()> {
        let refuse = |place: String| {
            Err(Error::InvalidRequest(format!(
                "event {} ({:?}): {place} contains a NUL character (U+0000), which not every store can hold",
                self.event_id,
                self.event_type.replace('\0', "\\u0000")
            )))
        };
        if self.event_type.contains('\0') {
            return refuse("the event type".to_owned());
        }
        if let Some(path) = nul_path(&self.payload) {
            return refuse(format!("payload{path}"));
        }
        let metadata = &self.metadata;
        if metadata.tags.len() > crate::boundary::MAX_TAGS_PER_EVENT {
            return Err(Error::InvalidQuery(crate::InvalidQuery::TooManyTags(metadata.tags.len())));
        }
        if metadata.actor.as_deref().is_some_and(|a| a.contains('\0')) {
            return refuse("metadata.actor".to_owned());
        }
        for (key, value) in &metadata.extra {
            if key.contains('\0') {
                return refuse("a metadata key".to_owned());
            }
            if let Some(path) = nul_path(value) {
                return refuse(format!("metadata.{key}{path}"));
            }
        }
        Ok(())
    }
}

/// Where in `value` the first string or object key holding a NUL character
/// (U+0000) is, as a path from the root (`""` for the root itself,
/// `.owner.name`, `[2]`, `.tags[0]`), or `None` when there is none.
///
/// ```
/// use serde_json::json;
/// assert_eq!(eslab_core::nul_path(&json!({ "a": [1, "x\u{0}"] })).as_deref(), Some(".a[1]"));
/// assert_eq!(eslab_core::nul_path(&json!({ "a": "fine" })), None);
/// ```
pub fn nul_path(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => s.contains('\0').then(String::new),
        Value::Array(items) => {
            items.iter().enumerate().find_map(|(i, item)| nul_path(item).map(|rest| format!("[{i}]{rest}")))
        }
        Value::Object(map) => map.iter().find_map(|(key, item)| {
            if key.contains('\0') {
                Some(format!(".{}", key.replace('\0', "\\u0000")))
            } else {
                nul_path(item).map(|rest| format!(".{key}{rest}"))
            }
        }),
        Value::Null | Value::Bool(_) | Value::Number(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::{ExpectedVersion, Metadata, StreamId};

    fn appends(event: NewEvent) -> Vec<StreamAppend> {
        vec![StreamAppend::new(StreamId::new("t", "1").unwrap(), ExpectedVersion::Any, vec![event])]
    }

    fn refused(event: NewEvent) -> String {
        match check_storable(&appends(event)) {
            Err(Error::InvalidRequest(message)) => message,
            other => panic!("expected InvalidRequest, got {other:?}"),
        }
    }

    #[test]
    fn every_place_a_nul_can_hide_is_named() {
        let event = |payload| NewEvent::new("E", 1, payload, Metadata::now());
        assert!(refused(event(json!("\0"))).contains("payload contains a NUL"));
        assert!(refused(event(json!({ "owner": { "name": "A\0" } }))).contains("payload.owner.name contains"));
        assert!(refused(event(json!({ "list": ["ok", "\0"] }))).contains("payload.list[1] contains"));
        assert!(refused(event(json!({ "k\0": 1 }))).contains("payload.k\\u0000 contains"));
        assert!(refused(NewEvent::new("E\0", 1, json!({}), Metadata::now())).contains("the event type"));
        let meta = Metadata::now().with_actor("a\0");
        assert!(refused(NewEvent::new("E", 1, json!({}), meta)).contains("metadata.actor"));
        let meta = Metadata::now().with_extra("ip", json!(["\0"]));
        assert!(refused(NewEvent::new("E", 1, json!({}), meta)).contains("metadata.ip[0]"));
        let meta = Metadata::now().with_extra("\0", json!(1));
        assert!(refused(NewEvent::new("E", 1, json!({}), meta)).contains("a metadata key"));
    }

    #[test]
    fn text_without_nul_passes() {
        let payload = json!({ "text": "\\u0000 is six characters here, \u{1} and 🦀 are fine", "n": [1, null, true] });
        let meta = Metadata::now().with_actor("alice").with_extra("x", json!({ "y": "z" }));
        assert!(check_storable(&appends(NewEvent::new("Ünïcode", 1, payload, meta))).is_ok());
        assert!(check_storable(&[]).is_ok());
    }
}
