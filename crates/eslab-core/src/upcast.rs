//! Schema evolution: a chain of payload transforms applied on read, before decoding.
//!
//! An upcaster turns the payload of `(event_type, from_version)` into the
//! payload of a later version. [`Upcasters`] applies them in a chain until no
//! upcaster matches, on every read path of an [`EventStore`](crate::EventStore)
//! (stream reads, feeds, the repository), whatever the backend.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use serde_json::Value;

use crate::error::{Error, Result};
use crate::event::{LeanEvent, RecordedEvent};
use crate::stream::StreamId;
use crate::version::Version;

type Transform = Arc<dyn Fn(Value) -> std::result::Result<Value, String> + Send + Sync>;

struct Step {
    to_version: u32,
    transform: Transform,
}

/// A registry of upcasters, keyed by `(event_type, from_version)`.
///
/// ```
/// use eslab_core::Upcasters;
/// use serde_json::json;
/// // v1 {"owner": "Ada"}  ->  v2 {"owner": {"name": "Ada"}}
/// let upcasters = Upcasters::new()
///     .register("AccountOpened", 1, 2, |mut p| {
///         let name = p.get("owner").cloned().ok_or("missing owner")?;
///         p["owner"] = json!({ "name": name });
///         Ok(p)
///     })
///     .unwrap();
/// let (v, p) = upcasters.upcast_payload("AccountOpened", 1, json!({"owner": "Ada"})).unwrap();
/// assert_eq!((v, p), (2, json!({"owner": {"name": "Ada"}})));
/// ```
#[derive(Clone, Default)]
pub struct Upcasters {
    steps: HashMap<(String, u32), Arc<Step>>,
}

impl fmt::Debug for Upcasters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut keys: Vec<_> =
            self.steps.iter().map(|((t, from), s)| format!("{t} v{from}->v{}", s.to_version)).collect();
        keys.sort();
        f.debug_struct("Upcasters").field("steps", &keys).finish()
    }
}

impl Upcasters {
    /// No upcasters: payloads are read as stored.
    pub fn new() -> Self {
        Upcasters::default()
    }

    /// Adds the transform of `event_type` payloads from `from_version` to
    /// `to_version`. Fails if `to_version <= from_version` or if an upcaster
    /// for `(event_type, from_version)` is already registered.
    pub fn register<F>(mut self, event_type: &str, from_version: u32, to_version: u32, transform: F) -> Result<Self>
    where
        F: Fn(Value) -> std::result::Result<Value, String> + Send + Sync + 'static,
    {
        if to_version <= from_version {
            return Err(Error::InvalidRequest(format!(
                "upcaster for {event_type} must go forward, not v{from_version} -> v{to_version}"
            )));
        }
        let key = (event_type.to_owned(), from_version);
        if self.steps.contains_key(&key) {
            return Err(Error::InvalidRequest(format!(
                "an upcaster for {event_type} v{from_version} is already registered"
            )));
        }
        self.steps.insert(key, Arc::new(Step { to_version, transform: Arc::new(transform) }));
        Ok(self)
    }

    /// Whether no upcaster is registered.
    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }

    /// Runs the chain on one payload; returns the final schema version and payload.
    /// On failure, returns the version the failing step started from and its reason.
    pub fn upcast_payload(
        &self,
        event_type: &str,
        mut version: u32,
        mut payload: Value,
    ) -> std::result::Result<(u32, Value), (u32, String)> {
        // Versions strictly increase, so the chain ends; bound it anyway.
        for _ in 0..=self.steps.len() {
            let Some(step) = self.steps.get(&(event_type.to_owned(), version)) else {
                return Ok((version, payload));
            };
            payload = (step.transform)(payload).map_err(|reason| (version, reason))?;
            version = step.to_version;
        }
        Ok((version, payload))
    }

    /// Upcasts a recorded event in place.
    pub fn upcast(&self, event: &mut RecordedEvent) -> Result<()> {
        self.upcast_parts(
            &event.stream_id,
            event.stream_version,
            &event.event_type,
            &mut event.schema_version,
            &mut event.payload,
        )
    }

    /// Upcasts an event of `stream` read for replay, in place.
    pub fn upcast_lean(&self, stream: &StreamId, event: &mut LeanEvent) -> Result<()> {
        self.upcast_parts(
            stream,
            event.stream_version,
            &event.event_type,
            &mut event.schema_version,
            &mut event.payload,
        )
    }

    fn upcast_parts(
        &self,
        stream: &StreamId,
        at: Version,
        event_type: &str,
        schema_version: &mut u32,
        payload: &mut Value,
    ) -> Result<()> {
        if self.steps.is_empty() {
            return Ok(());
        }
        match self.upcast_payload(event_type, *schema_version, std::mem::take(payload)) {
            Ok((version, upcast)) => {
                *schema_version = version;
                *payload = upcast;
                Ok(())
            }
            Err((from, reason)) => Err(Error::Upcast {
                stream: stream.clone(),
                version: at,
                event_type: event_type.to_owned(),
                from,
                reason,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn chains_and_rejects() {
        let u = Upcasters::new()
            .register("E", 1, 2, |v| Ok(json!({ "v2": v })))
            .unwrap()
            .register("E", 2, 4, |v| Ok(json!({ "v4": v })))
            .unwrap()
            .register("F", 1, 2, |_| Err("nope".into()))
            .unwrap();
        assert_eq!(u.upcast_payload("E", 1, json!(0)).unwrap(), (4, json!({"v4": {"v2": 0}})));
        assert_eq!(u.upcast_payload("E", 3, json!(0)).unwrap(), (3, json!(0)));
        assert_eq!(u.upcast_payload("F", 1, json!(0)).unwrap_err(), (1, "nope".to_owned()));
        assert!(Upcasters::new().register("E", 2, 2, Ok).is_err());
        assert!(u.register("E", 1, 3, Ok).is_err());
    }
}
