//! What the fuzz targets run, as plain functions: every input either decodes
//! or is refused with a typed error; none panics.

use eslab_bank::{AccountEvent, TransferEvent, upcasters};
use eslab_core::{Codec, DomainEvent, EventId, JsonCodec, Metadata, Position, RecordedEvent, StreamId, Version};
use time::OffsetDateTime;

/// A stored row as bytes (a line of `eslab events feed`): parse it, upcast
/// it with the bank's chain, decode it as each of the bank's event types.
pub fn decode_event(data: &[u8]) {
    let Ok(mut event) = serde_json::from_slice::<RecordedEvent>(data) else {
        return;
    };
    if upcasters().upcast(&mut event).is_err() {
        return;
    }
    let _ = JsonCodec.decode::<AccountEvent>(&event);
    let _ = JsonCodec.decode::<TransferEvent>(&event);
}

/// Any JSON document as the payload of every schema version of every bank
/// event type, through the upcasters and the decoder.
pub fn upcast_payload(data: &[u8]) {
    let Ok(payload) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    let Ok(stream_id) = StreamId::new("account", "fuzz") else {
        return;
    };
    let chain = upcasters();
    for &event_type in AccountEvent::EVENT_TYPES.iter().chain(TransferEvent::EVENT_TYPES) {
        for version in 0..4 {
            let Ok((schema_version, payload)) = chain.upcast_payload(event_type, version, payload.clone()) else {
                continue;
            };
            let event = RecordedEvent {
                event_id: EventId::nil(),
                stream_id: stream_id.clone(),
                stream_version: Version::FIRST,
                position: Position::new(1),
                transaction: 1,
                event_type: event_type.to_owned(),
                schema_version,
                payload,
                metadata: Metadata::default(),
                recorded_at: OffsetDateTime::UNIX_EPOCH,
            };
            let _ = JsonCodec.decode::<AccountEvent>(&event);
            let _ = JsonCodec.decode::<TransferEvent>(&event);
        }
    }
}
