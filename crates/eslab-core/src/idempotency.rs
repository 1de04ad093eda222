//! Idempotency keys, stored as events in the same atomic append as the
//! command they answer.
//!
//! A key is a stream `idempotency-<sha256 of the key>`. Its event
//! ([`IDEMPOTENCY_EVENT`]) holds the request's fingerprint and the response
//! the command produced (any serde type the caller chooses, e.g. an HTTP
//! status and body). [`Repository::run`](crate::Repository::run) appends it
//! with `ExpectedVersion::NoStream` in the **same multi-stream append** as
//! the command's events, so either both are stored or neither, on every
//! backend, with no extra table. The response is known before the append:
//! the new version is the loaded version plus the number of decided events,
//! and the append only succeeds if the stream is still at the loaded version.
//!
//! **Every retry gets the first answer.** A retry that arrives while the first
//! request is still running either conflicts on the key's stream (it lost the
//! race: it replays the winner's response) or is *refused* by a rule on the
//! state the winner left (a withdrawal of the whole balance). So every refusal
//! of a keyed command looks the key up again and replays what it finds: the
//! refusal was decided on a state that includes the winner's events, and the
//! winner's key was committed with them, so it is visible. This holds across
//! processes too. A refused command stores no key: a retry once the rule
//! allows it goes through.
//!
//! **Retention.** A key answers retries for the repository's retention
//! ([`Repository::with_idempotency_retention`](crate::Repository::with_idempotency_retention),
//! default [`DEFAULT_RETENTION`], 24 h). A key whose newest record is older is
//! a new request: it is decided again and its record appended after the
//! expired one. [`purge_expired_keys`] deletes expired keys through
//! [`StreamRetention`]; run it periodically. Expiry compares the record's
//! `recorded_at` (the database's clock on PostgreSQL) with this process's
//! clock.

use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use crate::error::{Error, Result};
use crate::event::{Metadata, NewEvent, RecordedEvent};
use crate::retention::StreamRetention;
use crate::stream::StreamId;
use crate::version::ExpectedVersion;

/// The stream category of idempotency keys.
pub const IDEMPOTENCY_CATEGORY: &str = "idempotency";
/// The event type of a stored idempotency key.
pub const IDEMPOTENCY_EVENT: &str = "IdempotentResponseRecorded";
/// The longest idempotency key accepted, in bytes.
pub const MAX_KEY_LEN: usize = 255;
/// How long a key answers retries by default: 24 hours.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(24 * 60 * 60);
/// Keys deleted per store call by [`purge_expired_keys`] (one short transaction each).
pub const PURGE_BATCH: usize = 1_000;

/// A client's idempotency key together with the fingerprint of the request
/// it came with. The same key with another fingerprint is refused
/// ([`CommandError::KeyReused`](crate::CommandError::KeyReused)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey {
    stream: StreamId,
    fingerprint: String,
}

/// A key that cannot be used: empty or longer than [`MAX_KEY_LEN`] bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("an idempotency key must have 1 to {MAX_KEY_LEN} bytes, this one has {0}")]
pub struct InvalidKey(pub usize);

impl IdempotencyKey {
    /// The key `key` for a request identified by `request` (its parts are
    /// hashed in order, separated by newlines: e.g. method, path and body).
    ///
    /// # Errors
    /// [`InvalidKey`] if `key` is empty or longer than [`MAX_KEY_LEN`] bytes.
    pub fn new(key: &str, request: &[&[u8]]) -> Result<Self, InvalidKey> {
        if key.is_empty() || key.len() > MAX_KEY_LEN {
            return Err(InvalidKey(key.len()));
        }
        let mut fingerprint = Sha256::new();
        for (i, part) in request.iter().enumerate() {
            if i > 0 {
                fingerprint.update(b"\n");
            }
            fingerprint.update(part);
        }
        let stream = StreamId::new(IDEMPOTENCY_CATEGORY, &hex(&Sha256::digest(key.as_bytes())))
            .map_err(|_| InvalidKey(key.len()))?;
        Ok(IdempotencyKey { stream, fingerprint: hex(&fingerprint.finalize()) })
    }

    /// The key's stream (`idempotency-<sha256 of the key>`).
    pub fn stream(&self) -> &StreamId {
        &self.stream
    }

    /// The request's fingerprint (hex sha256).
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// The record of this key answering with `response`, as an event. A
    /// response holding [`Personal`](crate::Personal) values is sealed with
    /// `subject`'s key (unless the metadata names one already), as the
    /// command's own events are.
    pub(crate) fn record<R: Serialize>(
        &self,
        response: &R,
        mut metadata: Metadata,
        subject: Option<crate::Subject>,
    ) -> Result<NewEvent> {
        let record = KeyRecord { fingerprint: self.fingerprint.clone(), response };
        let payload = serde_json::to_value(&record)
            .map_err(|source| Error::Encode { event_type: IDEMPOTENCY_EVENT.to_owned(), source })?;
        if metadata.subject.is_none() && crate::personal::holds_personal(&payload) {
            metadata.subject = subject;
        }
        Ok(NewEvent::new(IDEMPOTENCY_EVENT, 1, payload, metadata))
    }
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut out, b| {
        let _ = write!(out, "{b:02x}");
        out
    })
}

/// The idempotency event's payload.
#[derive(Serialize, Deserialize)]
struct KeyRecord<R> {
    fingerprint: String,
    response: R,
}

/// The fingerprint of a stored [`KeyRecord`], whatever its response's type.
#[derive(Deserialize)]
struct Fingerprint {
    fingerprint: String,
}

/// What the stored key says about a request.
#[derive(Debug)]
pub(crate) enum KeyState<R> {
    /// No live key: the request is new. Its record is appended with this
    /// expectation on the key's stream (`NoStream`, or the version of the
    /// expired record it replaces).
    New(ExpectedVersion),
    /// The key answered this very request: the answer, to replay.
    Replay(R),
    /// Another request (another fingerprint) holds the key.
    Reused,
}

/// Records recorded before this instant are expired (`None`: nothing
/// expires, the retention reaching before the calendar's start).
pub(crate) fn expiry_cutoff(now: OffsetDateTime, retention: Duration) -> Option<OffsetDateTime> {
    now.checked_sub(time::Duration::try_from(retention).ok()?)
}

/// What the key's records (oldest first) say about a request with `key`.
pub(crate) fn judge<R: DeserializeOwned>(
    key: &IdempotencyKey,
    records: &[RecordedEvent],
    retention: Duration,
) -> Result<KeyState<R>> {
    let Some(newest) = records.last() else { return Ok(KeyState::New(ExpectedVersion::NoStream)) };
    let cutoff = expiry_cutoff(OffsetDateTime::now_utc(), retention);
    if cutoff.is_some_and(|cutoff| newest.recorded_at < cutoff) {
        return Ok(KeyState::New(ExpectedVersion::Exact(newest.stream_version)));
    }
    let decode = |source| Error::Decode {
        stream: newest.stream_id.clone(),
        version: newest.stream_version,
        event_type: newest.event_type.clone(),
        source,
    };
    // The fingerprint first: a key reused by another kind of request holds
    // a response of another type, which must not fail to decode as this one's.
    let stored = Fingerprint::deserialize(&newest.payload).map_err(decode)?;
    if stored.fingerprint != key.fingerprint {
        return Ok(KeyState::Reused);
    }
    let record = KeyRecord::<R>::deserialize(&newest.payload).map_err(decode)?;
    Ok(KeyState::Replay(record.response))
}

/// Deletes the idempotency keys whose newest record is older than
/// `retention`, [`PURGE_BATCH`] per store call, at most `max_calls` calls
/// (a larger backlog waits for the next run). Returns how many keys went.
///
/// # Errors
/// The store's errors.
pub async fn purge_expired_keys<S: StreamRetention>(store: &S, retention: Duration, max_calls: usize) -> Result<u64> {
    let Some(cutoff) = expiry_cutoff(OffsetDateTime::now_utc(), retention) else {
        return Ok(0);
    };
    let batch = u64::try_from(PURGE_BATCH).unwrap_or(u64::MAX);
    let mut purged = 0;
    for _ in 0..max_calls {
        let n = store.purge_category_before(IDEMPOTENCY_CATEGORY, cutoff, PURGE_BATCH).await?;
        purged += n;
        if n < batch {
            break;
        }
    }
    Ok(purged)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_bounded_and_fingerprints_cover_every_part() {
        assert_eq!(IdempotencyKey::new("", &[]), Err(InvalidKey(0)));
        assert!(IdempotencyKey::new(&"k".repeat(MAX_KEY_LEN + 1), &[]).is_err());
        let a = IdempotencyKey::new("k1", &[b"POST", b"/a", b"{}"]).unwrap();
        let b = IdempotencyKey::new("k1", &[b"POST", b"/a", b"{ }"]).unwrap();
        let c = IdempotencyKey::new("k1", &[b"POST", b"/b", b"{}"]).unwrap();
        assert_eq!(a.stream(), b.stream(), "same key, same stream");
        assert_eq!(a.stream().category(), IDEMPOTENCY_CATEGORY);
        assert_ne!(a.fingerprint(), b.fingerprint());
        assert_ne!(a.fingerprint(), c.fingerprint());
        assert_eq!(a.fingerprint().len(), 64);
    }

    #[test]
    fn a_retention_beyond_the_calendar_expires_nothing() {
        let now = OffsetDateTime::now_utc();
        assert_eq!(expiry_cutoff(now, Duration::from_secs(60)), Some(now - time::Duration::seconds(60)));
        assert_eq!(expiry_cutoff(now, Duration::MAX), None);
    }

    #[test]
    fn a_key_reused_by_another_kind_of_request_is_reused_not_undecodable() {
        let first = IdempotencyKey::new("k1", &[b"POST", b"/accounts", b"{}"]).unwrap();
        let record = first.record(&serde_json::json!({ "status": 201 }), Metadata::now(), None).unwrap();
        let stored = RecordedEvent {
            event_id: record.event_id,
            stream_id: first.stream().clone(),
            stream_version: crate::Version::FIRST,
            position: crate::Position::new(1),
            transaction: 1,
            event_type: record.event_type,
            schema_version: 1,
            payload: record.payload,
            metadata: record.metadata,
            recorded_at: OffsetDateTime::now_utc(),
        };
        #[derive(Debug, Deserialize)]
        struct Other {
            #[allow(dead_code)]
            transfer_id: String,
        }
        let other = IdempotencyKey::new("k1", &[b"POST", b"/transfers", b"{}"]).unwrap();
        assert!(matches!(
            judge::<Other>(&other, std::slice::from_ref(&stored), DEFAULT_RETENTION),
            Ok(KeyState::Reused)
        ));
        // The same request whose stored answer no longer decodes is an error, not a replay.
        assert!(judge::<Other>(&first, &[stored], DEFAULT_RETENTION).is_err());
    }
}
