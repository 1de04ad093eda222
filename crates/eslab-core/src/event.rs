//! Events: the typed [`DomainEvent`], its metadata, and the serialized rows
//! stores keep ([`NewEvent`] before an append, [`RecordedEvent`] after).

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::stream::StreamId;
use crate::tag::Tag;
use crate::version::{Checkpoint, Position, Version};

/// A domain event: a serde type with a stable name per variant and a schema version.
///
/// The JSON codec stores an event as its serde *externally tagged* form split in
/// two: the tag is the event type, the content is the payload. So for an enum,
/// `event_type()` must return the serde variant name (keep it stable with
/// `#[serde(rename = "...")]` if you rename the Rust variant).
///
/// ```
/// use eslab_core::DomainEvent;
/// #[derive(serde::Serialize, serde::Deserialize)]
/// enum CounterEvent { Incremented { by: u32 }, Reset }
///
/// impl DomainEvent for CounterEvent {
///     const EVENT_TYPES: &'static [&'static str] = &["Incremented", "Reset"];
///     fn event_type(&self) -> &'static str {
///         match self { Self::Incremented { .. } => "Incremented", Self::Reset => "Reset" }
///     }
/// }
/// assert_eq!(CounterEvent::Reset.schema_version(), 1);
/// ```
pub trait DomainEvent: Serialize + DeserializeOwned + Send + Sync + 'static {
    /// Every type name this event type can carry; a stored event of any other
    /// type is reported as [`Error::UnknownEventType`](crate::Error::UnknownEventType).
    const EVENT_TYPES: &'static [&'static str];

    /// The stable name of this event's type (the serde variant name).
    fn event_type(&self) -> &'static str;

    /// The schema version this code writes for this event's type (default 1).
    ///
    /// Bump it when the payload's shape changes, and register an upcaster that
    /// turns the previous version's payload into this one.
    fn schema_version(&self) -> u32 {
        1
    }

    /// The tags this event carries (none by default): what a
    /// [dynamic consistency boundary](crate::Query) finds it by, such as
    /// `account:<id>` for every event about an account. The codec puts them in
    /// the event's [`Metadata::tags`].
    fn tags(&self) -> Vec<Tag> {
        Vec::new()
    }
}

/// Identifies one event; UUID v7 so ids sort by creation time.
pub type EventId = Uuid;

/// Context that travels with an event: who caused it, in answer to what.
///
/// `correlation_id` ties together everything that follows from one original
/// request; `causation_id` names the message (command or event) that directly
/// caused this one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metadata {
    /// The id shared by every message that follows from one original request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<Uuid>,
    /// The id of the message that directly caused this event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub causation_id: Option<Uuid>,
    /// Who (user, service) asked for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
    /// When the fact happened, according to the writer.
    #[serde(with = "time::serde::rfc3339")]
    pub occurred_at: OffsetDateTime,
    /// Anything else, as free-form JSON values.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub extra: BTreeMap<String, serde_json::Value>,
    /// The event's tags, which [queries](crate::Query) find it by (a dynamic
    /// consistency boundary). Set per event from [`DomainEvent::tags`]; every
    /// store indexes them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<Tag>,
    /// Whom the event's personal data is about: its [`Personal`](crate::Personal)
    /// values are sealed with this subject's key. Set from
    /// [`Aggregate::subject`](crate::Aggregate::subject) on events that hold personal data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<crate::subject::Subject>,
}

impl Default for Metadata {
    fn default() -> Self {
        Metadata::now()
    }
}

impl Metadata {
    /// Empty metadata that occurred now.
    pub fn now() -> Self {
        Metadata {
            correlation_id: None,
            causation_id: None,
            actor: None,
            occurred_at: OffsetDateTime::now_utc(),
            extra: BTreeMap::new(),
            tags: Vec::new(),
            subject: None,
        }
    }

    /// Sets the data subject the event's personal data is about.
    #[must_use]
    pub fn with_subject(mut self, subject: crate::subject::Subject) -> Self {
        self.subject = Some(subject);
        self
    }

    /// Sets the correlation id.
    #[must_use]
    pub fn with_correlation_id(mut self, id: Uuid) -> Self {
        self.correlation_id = Some(id);
        self
    }

    /// Sets the causation id.
    #[must_use]
    pub fn with_causation_id(mut self, id: Uuid) -> Self {
        self.causation_id = Some(id);
        self
    }

    /// Sets the actor.
    #[must_use]
    pub fn with_actor(mut self, actor: impl Into<String>) -> Self {
        self.actor = Some(actor.into());
        self
    }

    /// Adds a free-form entry.
    #[must_use]
    pub fn with_extra(mut self, key: impl Into<String>, value: serde_json::Value) -> Self {
        self.extra.insert(key.into(), value);
        self
    }

    /// Sets the tags.
    #[must_use]
    pub fn with_tags(mut self, tags: impl IntoIterator<Item = Tag>) -> Self {
        self.tags = tags.into_iter().collect();
        self
    }

    /// Metadata for a message caused by `cause`: same correlation (or the
    /// cause's own id when it had none), causation = `cause_id`, same actor.
    #[must_use]
    pub fn caused_by(cause: &Metadata, cause_id: Uuid) -> Self {
        Metadata {
            correlation_id: Some(cause.correlation_id.unwrap_or(cause_id)),
            causation_id: Some(cause_id),
            actor: cause.actor.clone(),
            ..Metadata::now()
        }
    }
}

/// A serialized event about to be appended.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    /// Unique id; a store rejects an id it already holds.
    pub event_id: EventId,
    /// The stable type name.
    pub event_type: String,
    /// The payload's schema version.
    pub schema_version: u32,
    /// The payload, as JSON.
    pub payload: serde_json::Value,
    /// The event's metadata.
    pub metadata: Metadata,
}

impl NewEvent {
    /// A new event with a fresh UUID v7 id.
    pub fn new(
        event_type: impl Into<String>,
        schema_version: u32,
        payload: serde_json::Value,
        metadata: Metadata,
    ) -> Self {
        NewEvent { event_id: Uuid::now_v7(), event_type: event_type.into(), schema_version, payload, metadata }
    }

    /// Replaces the event id (for deterministic ids, e.g. idempotent process steps).
    #[must_use]
    pub fn with_id(mut self, id: EventId) -> Self {
        self.event_id = id;
        self
    }
}

/// A serialized event as the store recorded it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordedEvent {
    /// Unique id.
    pub event_id: EventId,
    /// The stream it belongs to.
    pub stream_id: StreamId,
    /// Its version within the stream (from 1, no gaps).
    pub stream_version: Version,
    /// Its place in the global feed.
    pub position: Position,
    /// The commit order key of the transaction that wrote it (see [`Checkpoint`]).
    pub transaction: u64,
    /// The stable type name.
    pub event_type: String,
    /// The payload's schema version (after upcasting, when read through an upcasting layer).
    pub schema_version: u32,
    /// The payload, as JSON.
    pub payload: serde_json::Value,
    /// The event's metadata.
    pub metadata: Metadata,
    /// When the store recorded it.
    #[serde(with = "time::serde::rfc3339")]
    pub recorded_at: OffsetDateTime,
}

impl RecordedEvent {
    /// The feed checkpoint just after this event.
    pub fn checkpoint(&self) -> Checkpoint {
        Checkpoint::new(self.transaction, self.position)
    }
}

/// What replaying a stream into state needs of one of its events, and no
/// more: its version, type, schema version, payload and the subject its
/// personal data is sealed for (no position, ids, timestamps or other
/// metadata). Read with [`EventReader::read_stream_lean`](crate::EventReader::read_stream_lean),
/// which a store answers with fewer columns than a full page: the read a
/// [`Repository`](crate::Repository) load makes.
#[derive(Debug, Clone, PartialEq)]
pub struct LeanEvent {
    /// Its version within the stream (from 1, no gaps).
    pub stream_version: Version,
    /// The stable type name.
    pub event_type: String,
    /// The payload's schema version (after upcasting, when read through an upcasting layer).
    pub schema_version: u32,
    /// The payload, as JSON.
    pub payload: serde_json::Value,
    /// Whom its personal data is about ([`Metadata::subject`]).
    pub subject: Option<crate::subject::Subject>,
}

impl From<RecordedEvent> for LeanEvent {
    fn from(event: RecordedEvent) -> Self {
        LeanEvent {
            stream_version: event.stream_version,
            event_type: event.event_type,
            schema_version: event.schema_version,
            payload: event.payload,
            subject: event.metadata.subject,
        }
    }
}
