//! Turning typed events into stored payloads and back.
//!
//! JSON is the default (readable, and queryable as JSONB in Postgres). The codec
//! uses serde's externally tagged form of an event enum, `{"<type>": <payload>}`,
//! and stores the tag and the payload apart.

use serde_json::Value;

use crate::error::{Error, Result};
use crate::event::{DomainEvent, Metadata, NewEvent, RecordedEvent};

/// Converts between a typed [`DomainEvent`] and its stored form.
pub trait Codec: Send + Sync {
    /// Serializes an event into a [`NewEvent`] (fresh id, given metadata).
    fn encode<E: DomainEvent>(&self, event: &E, metadata: Metadata) -> Result<NewEvent>;

    /// Decodes a recorded event (already upcast) into `E`.
    fn decode<E: DomainEvent>(&self, event: &RecordedEvent) -> Result<E>;
}

/// The JSON codec.
///
/// ```
/// use eslab_core::{Codec, DomainEvent, JsonCodec, Metadata};
/// #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
/// enum Ev { Renamed { name: String }, Archived }
/// impl DomainEvent for Ev {
///     const EVENT_TYPES: &'static [&'static str] = &["Renamed", "Archived"];
///     fn event_type(&self) -> &'static str {
///         match self { Ev::Renamed { .. } => "Renamed", Ev::Archived => "Archived" }
///     }
/// }
/// let new = JsonCodec.encode(&Ev::Renamed { name: "x".into() }, Metadata::now()).unwrap();
/// assert_eq!(new.event_type, "Renamed");
/// assert_eq!(new.payload, serde_json::json!({ "name": "x" }));
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct JsonCodec;

impl Codec for JsonCodec {
    fn encode<E: DomainEvent>(&self, event: &E, metadata: Metadata) -> Result<NewEvent> {
        let event_type = event.event_type();
        let encode_err = |reason: &str| Error::Encode {
            event_type: event_type.to_owned(),
            source: serde::ser::Error::custom(reason),
        };
        let value = serde_json::to_value(event)
            .map_err(|source| Error::Encode { event_type: event_type.to_owned(), source })?;
        let payload = match value {
            // Struct, tuple and newtype variants: {"<type>": payload}.
            Value::Object(mut map) if map.len() == 1 => match map.remove(event_type) {
                Some(payload) => payload,
                None => return Err(encode_err("serde tag differs from event_type()")),
            },
            // Unit variants serialize as the bare tag.
            Value::String(tag) if tag == event_type => Value::Null,
            _ => return Err(encode_err("event must serialize as an externally tagged enum")),
        };
        Ok(NewEvent::new(event_type, event.schema_version(), payload, metadata))
    }

    fn decode<E: DomainEvent>(&self, event: &RecordedEvent) -> Result<E> {
        if !E::EVENT_TYPES.contains(&event.event_type.as_str()) {
            return Err(Error::UnknownEventType {
                stream: event.stream_id.clone(),
                version: event.stream_version,
                event_type: event.event_type.clone(),
            });
        }
        let tagged = match &event.payload {
            Value::Null => Value::String(event.event_type.clone()),
            payload => {
                let mut map = serde_json::Map::with_capacity(1);
                map.insert(event.event_type.clone(), payload.clone());
                Value::Object(map)
            }
        };
        let decoded: E = serde_json::from_value(tagged).map_err(|source| Error::Decode {
            stream: event.stream_id.clone(),
            version: event.stream_version,
            event_type: event.event_type.clone(),
            source,
        })?;
        let supported = decoded.schema_version();
        if event.schema_version > supported {
            return Err(Error::UnsupportedSchemaVersion {
                stream: event.stream_id.clone(),
                version: event.stream_version,
                event_type: event.event_type.clone(),
                found: event.schema_version,
                supported,
            });
        }
        Ok(decoded)
    }
}
