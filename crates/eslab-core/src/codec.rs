//! Turning typed events into stored payloads and back.
//!
//! JSON is the default (readable, and queryable as JSONB in Postgres). The codec
//! uses serde's externally tagged form of an event enum, `{"<type>": <payload>}`,
//! and stores the tag and the payload apart.

use serde::de::value::{MapAccessDeserializer, MapDeserializer, StrDeserializer};
use serde_json::Value;

use crate::error::{Error, Result};
use crate::event::{DomainEvent, LeanEvent, Metadata, NewEvent, RecordedEvent};
use crate::stream::StreamId;
use crate::version::Version;

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
        let tags = event.tags();
        let metadata = if tags.is_empty() { metadata } else { metadata.with_tags(tags) };
        Ok(NewEvent::new(event_type, event.schema_version(), payload, metadata))
    }

    fn decode<E: DomainEvent>(&self, event: &RecordedEvent) -> Result<E> {
        decode_json(&event.stream_id, event.stream_version, &event.event_type, event.schema_version, &event.payload)
    }
}

impl JsonCodec {
    /// Decodes an event of `stream` read for replay (already upcast) into `E`.
    pub(crate) fn decode_lean<E: DomainEvent>(self, stream: &StreamId, event: &LeanEvent) -> Result<E> {
        decode_json(stream, event.stream_version, &event.event_type, event.schema_version, &event.payload)
    }
}

/// The JSON decoding of one event, from its parts.
fn decode_json<E: DomainEvent>(
    stream: &StreamId,
    version: Version,
    event_type: &str,
    schema_version: u32,
    payload: &Value,
) -> Result<E> {
    let failed = || (stream.clone(), version, event_type.to_owned());
    if !E::EVENT_TYPES.contains(&event_type) {
        let (stream, version, event_type) = failed();
        return Err(Error::UnknownEventType { stream, version, event_type });
    }
    // The externally tagged form `{"<type>": <payload>}` (or `"<type>"`
    // for a unit variant), read straight from the stored payload: no copy
    // of it, no map built for the tag.
    let decoded = match payload {
        Value::Null => E::deserialize(StrDeserializer::<serde_json::Error>::new(event_type)),
        payload => {
            let tagged = MapDeserializer::new(std::iter::once((event_type, payload)));
            E::deserialize(MapAccessDeserializer::new(tagged))
        }
    };
    let decoded: E = decoded.map_err(|source| {
        let (stream, version, event_type) = failed();
        Error::Decode { stream, version, event_type, source }
    })?;
    let supported = decoded.schema_version();
    if schema_version > supported {
        let (stream, version, event_type) = failed();
        return Err(Error::UnsupportedSchemaVersion { stream, version, event_type, found: schema_version, supported });
    }
    Ok(decoded)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::{Position, StreamId, Version};

    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    enum Ev {
        Opened { owner: String, limit: i64 },
        Renamed(String),
        Moved(i64, i64),
        Archived,
    }

    impl DomainEvent for Ev {
        const EVENT_TYPES: &'static [&'static str] = &["Opened", "Renamed", "Moved", "Archived"];
        fn event_type(&self) -> &'static str {
            match self {
                Ev::Opened { .. } => "Opened",
                Ev::Renamed(_) => "Renamed",
                Ev::Moved(..) => "Moved",
                Ev::Archived => "Archived",
            }
        }
    }

    fn recorded(event_type: &str, payload: Value) -> RecordedEvent {
        RecordedEvent {
            event_id: uuid::Uuid::nil(),
            stream_id: StreamId::new("thing", "1").unwrap(),
            stream_version: Version::new(1),
            position: Position::new(1),
            transaction: 1,
            event_type: event_type.to_owned(),
            schema_version: 1,
            payload,
            metadata: Metadata::now(),
            recorded_at: time::OffsetDateTime::now_utc(),
        }
    }

    #[test]
    fn every_variant_shape_round_trips() {
        for event in
            [Ev::Opened { owner: "Ada".into(), limit: -5 }, Ev::Renamed("Grace".into()), Ev::Moved(3, -4), Ev::Archived]
        {
            let new = JsonCodec.encode(&event, Metadata::now()).unwrap();
            let back: Ev = JsonCodec.decode(&recorded(&new.event_type, new.payload)).unwrap();
            assert_eq!(back, event);
        }
    }

    #[test]
    fn a_payload_of_the_wrong_shape_is_a_decode_error() {
        for (event_type, payload) in [
            ("Opened", json!({ "owner": 7 })),
            ("Opened", Value::Null),
            ("Renamed", json!({ "name": "x" })),
            ("Moved", json!([1])),
            ("Archived", json!({ "extra": true })),
        ] {
            let err = JsonCodec.decode::<Ev>(&recorded(event_type, payload.clone())).unwrap_err();
            assert!(matches!(err, Error::Decode { .. }), "{event_type} {payload}: {err:?}");
        }
    }

    #[test]
    fn an_unknown_event_type_is_named() {
        let err = JsonCodec.decode::<Ev>(&recorded("Exploded", json!({}))).unwrap_err();
        assert!(matches!(err, Error::UnknownEventType { ref event_type, .. } if event_type == "Exploded"), "{err:?}");
    }
}
