//! How an event travels through Kafka: topic `<prefix><category>`, key = the
//! stream id (so one stream stays in one partition, in order), value = the
//! JSON payload as stored, headers = the rest of the envelope, so consumers
//! that are not eslab can route and filter without parsing the payload.
//!
//! | header | value |
//! |---|---|
//! | `event-id` | UUID |
//! | `event-type` | the stable type name |
//! | `schema-version` | the payload's schema version |
//! | `stream-version` | the event's version in its stream |
//! | `transaction`, `position` | its place in the store's feed (the relay's checkpoint) |
//! | `recorded-at`, `occurred-at` | RFC 3339 |
//! | `correlation-id`, `causation-id`, `actor` | when the metadata has them |
//! | `metadata-extra` | the free-form metadata map as JSON, when not empty |
//! | `tags` | the event's tags as a JSON array of strings, when it has any |
//! | `subject` | the data subject whose key seals the value's personal data, when it has one |

use std::collections::BTreeMap;

use eslab_core::{Metadata, Position, RecordedEvent, StreamId, Version};
use rdkafka::Message;
use rdkafka::message::{Header, Headers, OwnedHeaders};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Header names.
pub mod header {
    /// The event id.
    pub const EVENT_ID: &str = "event-id";
    /// The event type.
    pub const EVENT_TYPE: &str = "event-type";
    /// The payload's schema version.
    pub const SCHEMA_VERSION: &str = "schema-version";
    /// The version in the stream.
    pub const STREAM_VERSION: &str = "stream-version";
    /// The feed transaction.
    pub const TRANSACTION: &str = "transaction";
    /// The feed position.
    pub const POSITION: &str = "position";
    /// When the store recorded it.
    pub const RECORDED_AT: &str = "recorded-at";
    /// When it happened, per its writer.
    pub const OCCURRED_AT: &str = "occurred-at";
    /// The correlation id.
    pub const CORRELATION_ID: &str = "correlation-id";
    /// The causation id.
    pub const CAUSATION_ID: &str = "causation-id";
    /// Who asked for it.
    pub const ACTOR: &str = "actor";
    /// Free-form metadata (JSON object).
    pub const METADATA_EXTRA: &str = "metadata-extra";
    /// The event's tags (JSON array of strings).
    pub const TAGS: &str = "tags";
    /// The data subject of the event's sealed personal data.
    pub const SUBJECT: &str = "subject";
}

/// The topic of `category` under `prefix`.
pub fn topic_for(prefix: &str, category: &str) -> String {
    format!("{prefix}{category}")
}

/// An event ready to be produced.
#[derive(Debug)]
pub struct Outgoing {
    /// The key: the stream id.
    pub key: String,
    /// The value: the JSON payload.
    pub payload: Vec<u8>,
    /// The envelope.
    pub headers: OwnedHeaders,
}

fn format_time(t: OffsetDateTime) -> Result<String, String> {
    t.format(&Rfc3339).map_err(|e| format!("cannot format time {t}: {e}"))
}

/// Encodes an event's key, value and headers.
///
/// # Errors
/// A time that RFC 3339 cannot express (a year outside 0..=9999) or a
/// payload serde cannot serialize; the message says which.
pub fn encode(event: &RecordedEvent) -> Result<Outgoing, String> {
    let payload = serde_json::to_vec(&event.payload).map_err(|e| format!("cannot serialize payload: {e}"))?;
    let mut headers = OwnedHeaders::new_with_capacity(12);
    let mut add = |key: &str, value: &str| {
        headers = std::mem::take(&mut headers).insert(Header { key, value: Some(value) });
    };
    add(header::EVENT_ID, &event.event_id.to_string());
    add(header::EVENT_TYPE, &event.event_type);
    add(header::SCHEMA_VERSION, &event.schema_version.to_string());
    add(header::STREAM_VERSION, &event.stream_version.get().to_string());
    add(header::TRANSACTION, &event.transaction.to_string());
    add(header::POSITION, &event.position.get().to_string());
    add(header::RECORDED_AT, &format_time(event.recorded_at)?);
    add(header::OCCURRED_AT, &format_time(event.metadata.occurred_at)?);
    if let Some(id) = event.metadata.correlation_id {
        add(header::CORRELATION_ID, &id.to_string());
    }
    if let Some(id) = event.metadata.causation_id {
        add(header::CAUSATION_ID, &id.to_string());
    }
    if let Some(actor) = &event.metadata.actor {
        add(header::ACTOR, actor);
    }
    if !event.metadata.extra.is_empty() {
        let extra =
            serde_json::to_string(&event.metadata.extra).map_err(|e| format!("cannot serialize metadata: {e}"))?;
        add(header::METADATA_EXTRA, &extra);
    }
    if !event.metadata.tags.is_empty() {
        let tags = serde_json::to_string(&event.metadata.tags).map_err(|e| format!("cannot serialize tags: {e}"))?;
        add(header::TAGS, &tags);
    }
    if let Some(subject) = &event.metadata.subject {
        add(header::SUBJECT, subject.as_str());
    }
    Ok(Outgoing { key: event.stream_id.as_str().to_owned(), payload, headers })
}

/// Decodes a consumed message back into the event the relay published.
///
/// # Errors
/// A message that is not an eslab event (no key, a missing or malformed
/// header, a value that is not JSON): the reason names the culprit.
pub fn decode<M: Message>(message: &M) -> Result<RecordedEvent, String> {
    let key = message.key().ok_or("no key")?;
    let key = std::str::from_utf8(key).map_err(|_| "key is not UTF-8".to_owned())?;
    let stream_id: StreamId = key.parse().map_err(|e| format!("key {key:?} is not a stream id: {e}"))?;
    let mut found: BTreeMap<&str, &str> = BTreeMap::new();
    if let Some(headers) = message.headers() {
        for h in headers.iter() {
            if let Some(value) = h.value {
                let value = std::str::from_utf8(value).map_err(|_| format!("header {} is not UTF-8", h.key))?;
                found.insert(h.key, value);
            }
        }
    }
    let get = |name: &str| found.get(name).copied().ok_or_else(|| format!("missing header {name}"));
    let opt = |name: &str| found.get(name).copied();
    fn parse<T: std::str::FromStr>(name: &str, value: &str) -> Result<T, String>
    where
        T::Err: std::fmt::Display,
    {
        value.parse().map_err(|e| format!("header {name} = {value:?}: {e}"))
    }
    let time = |name: &str| -> Result<OffsetDateTime, String> {
        let value = get(name)?;
        OffsetDateTime::parse(value, &Rfc3339).map_err(|e| format!("header {name} = {value:?}: {e}"))
    };
    let uuid = |name: &str| -> Result<Option<uuid::Uuid>, String> { opt(name).map(|v| parse(name, v)).transpose() };
    let extra = match opt(header::METADATA_EXTRA) {
        Some(v) => serde_json::from_str(v).map_err(|e| format!("header {}: {e}", header::METADATA_EXTRA))?,
        None => BTreeMap::new(),
    };
    let tags = match opt(header::TAGS) {
        Some(v) => serde_json::from_str(v).map_err(|e| format!("header {}: {e}", header::TAGS))?,
        None => Vec::new(),
    };
    let payload = match message.payload() {
        Some(bytes) => serde_json::from_slice(bytes).map_err(|e| format!("value is not JSON: {e}"))?,
        None => return Err("no value".into()),
    };
    Ok(RecordedEvent {
        event_id: parse(header::EVENT_ID, get(header::EVENT_ID)?)?,
        stream_id,
        stream_version: Version::new(parse(header::STREAM_VERSION, get(header::STREAM_VERSION)?)?),
        position: Position::new(parse(header::POSITION, get(header::POSITION)?)?),
        transaction: parse(header::TRANSACTION, get(header::TRANSACTION)?)?,
        event_type: get(header::EVENT_TYPE)?.to_owned(),
        schema_version: parse(header::SCHEMA_VERSION, get(header::SCHEMA_VERSION)?)?,
        payload,
        metadata: Metadata {
            correlation_id: uuid(header::CORRELATION_ID)?,
            causation_id: uuid(header::CAUSATION_ID)?,
            actor: opt(header::ACTOR).map(str::to_owned),
            occurred_at: time(header::OCCURRED_AT)?,
            extra,
            tags,
            subject: opt(header::SUBJECT)
                .map(|s| s.parse().map_err(|e| format!("header {}: {e}", header::SUBJECT)))
                .transpose()?,
        },
        recorded_at: time(header::RECORDED_AT)?,
    })
}

#[cfg(test)]
mod tests {
    use rdkafka::Timestamp;
    use rdkafka::message::OwnedMessage;
    use serde_json::json;

    use super::*;

    fn event() -> RecordedEvent {
        RecordedEvent {
            event_id: uuid::Uuid::now_v7(),
            stream_id: "account-42".parse().unwrap(),
            stream_version: Version::new(3),
            position: Position::new(17),
            transaction: 900,
            event_type: "MoneyDeposited".into(),
            schema_version: 2,
            payload: json!({ "amount": 100, "balance": 300 }),
            metadata: Metadata::now()
                .with_correlation_id(uuid::Uuid::now_v7())
                .with_causation_id(uuid::Uuid::now_v7())
                .with_actor("ada")
                .with_extra("ip", json!("10.0.0.1")),
            recorded_at: OffsetDateTime::now_utc(),
        }
    }

    fn message(out: Outgoing) -> OwnedMessage {
        OwnedMessage::new(
            Some(out.payload),
            Some(out.key.into_bytes()),
            "eslab.account".into(),
            Timestamp::NotAvailable,
            0,
            5,
            Some(out.headers),
        )
    }

    #[test]
    fn an_event_survives_the_trip_exactly() {
        for e in [event(), RecordedEvent { metadata: Metadata::now(), ..event() }] {
            let decoded = decode(&message(encode(&e).unwrap())).unwrap();
            assert_eq!(decoded, e);
        }
    }

    #[test]
    fn foreign_messages_are_refused_with_the_reason() {
        let mut out = encode(&event()).unwrap();
        out.key = "no dash".into();
        assert!(decode(&message(out)).unwrap_err().contains("not a stream id"));

        let out = encode(&event()).unwrap();
        let bare = OwnedMessage::new(
            Some(out.payload),
            Some(out.key.into_bytes()),
            "t".into(),
            Timestamp::NotAvailable,
            0,
            0,
            None,
        );
        assert!(decode(&bare).unwrap_err().contains("missing header"));

        let mut out = encode(&event()).unwrap();
        out.payload = b"not json".to_vec();
        assert!(decode(&message(out)).unwrap_err().contains("not JSON"));
    }
}
