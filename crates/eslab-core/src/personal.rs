//! Personal data, and forgetting it: crypto-shredding.
//!
//! Events are immutable, so personal data written into them cannot be
//! deleted. It can be made unreadable: every [`Personal`] value is encrypted
//! with a key of its own data [`Subject`] before it reaches the store, and
//! [`KeyStore::forget`] deletes that key. From then on every read yields
//! [`Personal::Forgotten`] in the value's place: aggregates still load and
//! decide, projections rebuilt from scratch equal the live ones, and no
//! copy of the value, wherever the events travelled (Kafka topics, backups
//! of the events table), can be read again.
//!
//! # How it flows
//!
//! - A domain marks a field `Personal<T>` and names the subject of its
//!   stream ([`Aggregate::subject`](crate::Aggregate::subject); or
//!   [`Metadata::with_subject`](crate::Metadata::with_subject) on a hand-made
//!   event). In JSON a value is an envelope, `{"$personal": <value>}`.
//! - [`EventStore`](crate::EventStore) seals every envelope of an event it
//!   appends (`{"$sealed": "<base64 of nonce and ciphertext>"}`, XChaCha20-Poly1305,
//!   a fresh random 192-bit nonce per value, the subject as associated data),
//!   with the subject's key, which the store's [`KeyStore`] creates with the
//!   subject's first personal value. An event holding personal data but no
//!   subject, or a store without a key store, is refused: nothing is
//!   stored in clear by mistake.
//! - Every read through [`EventStore`](crate::EventStore) opens the envelopes
//!   (one key lookup per page of events that carry personal data) before the
//!   upcasters run, so upcasters and handlers see `{"$personal": <value>}`;
//!   an envelope whose key is gone becomes `{"$forgotten": true}`, which
//!   decodes as [`Personal::Forgotten`]. A sealed value that does not open
//!   with its key (tampered, or moved to another subject) is an
//!   [`Error::Personal`] ([`PersonalError::Tampered`]),
//!   never plaintext.
//! - [`EventStore::sealed`](crate::EventStore::sealed) reads without opening:
//!   the Kafka relay publishes ciphertext, and a consumer opens it with
//!   [`open_events`] and the store's keys.
//! - Snapshots are sealed the same way ([`Repository::with_snapshots`](crate::Repository::with_snapshots)).
//!
//! ```
//! use eslab_core::personal::{Personal, Subject, SubjectKey, open_value, seal_value};
//! let subject = Subject::new("customer-7").unwrap();
//! let mut value = serde_json::to_value(Personal::Known("Ada Lovelace".to_owned())).unwrap();
//! let key = SubjectKey::generate();
//! assert_eq!(seal_value(&key, &subject, &mut value).unwrap(), 1);
//! assert!(!value.to_string().contains("Ada"));
//! open_value(Some(&key), &subject, &mut value).unwrap();
//! let back: Personal<String> = serde_json::from_value(value.clone()).unwrap();
//! assert_eq!(back, Personal::Known("Ada Lovelace".to_owned()));
//! seal_value(&key, &subject, &mut value).unwrap();
//! open_value(None, &subject, &mut value).unwrap(); // the key was deleted
//! let gone: Personal<String> = serde_json::from_value(value).unwrap();
//! assert!(gone.is_forgotten());
//! ```

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::sync::{Arc, Mutex};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use futures_util::future::BoxFuture;
use serde::de::{DeserializeOwned, Error as _};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};
use time::OffsetDateTime;
use zeroize::Zeroizing;

use crate::error::{Error, Result};
use crate::event::{LeanEvent, NewEvent, RecordedEvent};
use crate::stream::StreamId;
pub use crate::subject::{InvalidSubject, MAX_SUBJECT_LEN, PersonalError, Subject};

/// The key of an open personal value's envelope: `{"$personal": <value>}`.
pub const PERSONAL: &str = "$personal";
/// The key of a sealed value's envelope: `{"$sealed": "<base64>"}`.
pub const SEALED: &str = "$sealed";
/// The key of a forgotten value's envelope: `{"$forgotten": true}`.
pub const FORGOTTEN: &str = "$forgotten";
/// The size of a subject's key, in bytes (XChaCha20-Poly1305).
pub const KEY_LEN: usize = 32;
const NONCE_LEN: usize = 24;

/// A value about a person, sealed with their subject's key in every event
/// and snapshot it is stored in, and [`Forgotten`](Personal::Forgotten) once
/// the subject is.
///
/// In JSON (and other human-readable formats) it is an envelope,
/// `{"$personal": <value>}` or `{"$forgotten": true}`;
/// a bare value (written before the field was personal) reads as
/// [`Known`](Personal::Known). A sealed envelope does not decode: read it
/// through an [`EventStore`](crate::EventStore), which opens it. Binary
/// formats (postcard, MessagePack) carry it as an `Option<T>` (`None`: forgotten).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Personal<T> {
    /// The value.
    Known(T),
    /// The subject was forgotten: the value is gone for good.
    Forgotten,
}

impl<T> Personal<T> {
    /// The value, unless forgotten.
    pub fn known(&self) -> Option<&T> {
        match self {
            Personal::Known(value) => Some(value),
            Personal::Forgotten => None,
        }
    }

    /// The value, unless forgotten.
    pub fn into_known(self) -> Option<T> {
        match self {
            Personal::Known(value) => Some(value),
            Personal::Forgotten => None,
        }
    }

    /// Whether the subject was forgotten.
    pub fn is_forgotten(&self) -> bool {
        matches!(self, Personal::Forgotten)
    }
}

impl<T> From<T> for Personal<T> {
    fn from(value: T) -> Self {
        Personal::Known(value)
    }
}

impl From<&str> for Personal<String> {
    fn from(value: &str) -> Self {
        Personal::Known(value.to_owned())
    }
}

impl<T: Serialize> Serialize for Personal<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        // Binary formats (postcard, MessagePack) carry no envelopes: the
        // store's codec is JSON; there a value is an `Option`.
        if !serializer.is_human_readable() {
            return self.known().serialize(serializer);
        }
        let mut map = serializer.serialize_map(Some(1))?;
        match self {
            Personal::Known(value) => map.serialize_entry(PERSONAL, value)?,
            Personal::Forgotten => map.serialize_entry(FORGOTTEN, &true)?,
        }
        map.end()
    }
}

impl<'de, T: DeserializeOwned> Deserialize<'de> for Personal<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        if !deserializer.is_human_readable() {
            return Ok(Option::<T>::deserialize(deserializer)?.map_or(Personal::Forgotten, Personal::Known));
        }
        let value = Value::deserialize(deserializer)?;
        match envelope(&value) {
            Some(Envelope::Open(inner)) => T::deserialize(inner).map(Personal::Known).map_err(D::Error::custom),
            Some(Envelope::Forgotten) => Ok(Personal::Forgotten),
            Some(Envelope::Sealed(_)) => Err(D::Error::custom(
                "sealed personal data: read it through an EventStore, which opens it with the store's keys",
            )),
            None => T::deserialize(value).map(Personal::Known).map_err(D::Error::custom),
        }
    }
}

enum Envelope<'a> {
    Open(&'a Value),
    Sealed(&'a Value),
    Forgotten,
}

/// The envelope `value` is, if it is one (an object of exactly one marker key).
fn envelope(value: &Value) -> Option<Envelope<'_>> {
    let Value::Object(map) = value else { return None };
    if map.len() != 1 {
        return None;
    }
    let (key, inner) = map.iter().next()?;
    match key.as_str() {
        PERSONAL => Some(Envelope::Open(inner)),
        SEALED => Some(Envelope::Sealed(inner)),
        FORGOTTEN => Some(Envelope::Forgotten),
        _ => None,
    }
}

/// Calls `f` on every envelope in `value` (depth first; not inside envelopes).
fn each_envelope(value: &mut Value, f: &mut dyn FnMut(&mut Value) -> Result<()>) -> Result<()> {
    if envelope(value).is_some() {
        return f(value);
    }
    match value {
        Value::Object(map) => map.values_mut().try_for_each(|v| each_envelope(v, f)),
        Value::Array(items) => items.iter_mut().try_for_each(|v| each_envelope(v, f)),
        _ => Ok(()),
    }
}

fn any_envelope(value: &Value, wanted: &dyn Fn(&Envelope<'_>) -> bool) -> bool {
    if let Some(found) = envelope(value) {
        return wanted(&found);
    }
    match value {
        Value::Object(map) => map.values().any(|v| any_envelope(v, wanted)),
        Value::Array(items) => items.iter().any(|v| any_envelope(v, wanted)),
        _ => false,
    }
}

/// Whether `value` holds an open personal value (one that needs sealing).
pub fn holds_personal(value: &Value) -> bool {
    any_envelope(value, &|e| matches!(e, Envelope::Open(_)))
}

/// Whether `value` holds a sealed personal value (one that needs opening).
pub fn holds_sealed(value: &Value) -> bool {
    any_envelope(value, &|e| matches!(e, Envelope::Sealed(_)))
}

fn single(key: &str, value: Value) -> Value {
    let mut map = Map::with_capacity(1);
    map.insert(key.to_owned(), value);
    Value::Object(map)
}

/// The key of one data subject (256 bits), wiped from memory when dropped.
#[derive(Clone)]
pub struct SubjectKey(Zeroizing<[u8; KEY_LEN]>);

impl SubjectKey {
    /// A fresh random key, from the operating system's generator.
    pub fn generate() -> Self {
        let key = XChaCha20Poly1305::generate_key(&mut OsRng);
        let mut bytes = Zeroizing::new([0u8; KEY_LEN]);
        bytes.copy_from_slice(&key);
        SubjectKey(bytes)
    }

    /// A key read back from a key store; `None` unless `bytes` is [`KEY_LEN`] long.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        let array: [u8; KEY_LEN] = bytes.try_into().ok()?;
        Some(SubjectKey(Zeroizing::new(array)))
    }

    /// A key store's row, checked: the subject's name and its key's bytes.
    ///
    /// # Errors
    /// [`PersonalError::InvalidSubject`] or [`PersonalError::BadKey`] for a malformed row.
    pub fn from_row(subject: &str, bytes: &[u8]) -> Result<(Subject, SubjectKey)> {
        let subject = Subject::new(subject).map_err(|e| Error::Personal(e.into()))?;
        let key =
            SubjectKey::from_bytes(bytes).ok_or_else(|| Error::Personal(PersonalError::BadKey(subject.clone())))?;
        Ok((subject, key))
    }

    /// The key's bytes, for a key store to keep.
    pub fn as_bytes(&self) -> &[u8] {
        self.0.as_slice()
    }

    fn cipher(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new(self.0.as_slice().into())
    }
}

impl fmt::Debug for SubjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SubjectKey(..)")
    }
}

/// Seals every open envelope in `value` with `key`, bound to `subject`;
/// returns how many it sealed. Sealed and forgotten envelopes are left as they are.
///
/// # Errors
/// [`Error::Personal`] if a value does not serialize (never for a `Value`).
pub fn seal_value(key: &SubjectKey, subject: &Subject, value: &mut Value) -> Result<usize> {
    let cipher = key.cipher();
    let mut sealed = 0;
    each_envelope(value, &mut |envelope| {
        let Value::Object(map) = envelope else { return Ok(()) };
        let Some(inner) = map.get(PERSONAL) else { return Ok(()) };
        let plain = Zeroizing::new(serde_json::to_vec(inner).map_err(|e| Error::backend(e.to_string()))?);
        let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
        let ciphertext = cipher
            .encrypt(&nonce, Payload { msg: &plain, aad: subject.as_str().as_bytes() })
            .map_err(|_| Error::backend("personal data: encryption failed"))?;
        let mut out = Vec::with_capacity(NONCE_LEN + ciphertext.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ciphertext);
        *envelope = single(SEALED, Value::String(BASE64.encode(out)));
        sealed += 1;
        Ok(())
    })?;
    Ok(sealed)
}

/// Opens every sealed envelope in `value` with `key` (`None`: the subject
/// was forgotten, and every sealed value becomes `{"$forgotten": true}`).
///
/// # Errors
/// [`PersonalError::Tampered`] (as [`Error::Personal`], naming `place`) for
/// a sealed value that does not open with `key`.
pub fn open_value(key: Option<&SubjectKey>, subject: &Subject, value: &mut Value) -> Result<()> {
    open_at(key, subject, value, &|| format!("a value of data subject {subject}"))
}

fn open_at(key: Option<&SubjectKey>, subject: &Subject, value: &mut Value, place: &dyn Fn() -> String) -> Result<()> {
    let cipher = key.map(SubjectKey::cipher);
    each_envelope(value, &mut |node| {
        let Some(Envelope::Sealed(sealed)) = envelope(node) else { return Ok(()) };
        let tampered = || Error::Personal(PersonalError::Tampered(place()));
        let bytes = sealed.as_str().and_then(|text| BASE64.decode(text).ok()).ok_or_else(tampered);
        let Some(cipher) = &cipher else {
            *node = single(FORGOTTEN, Value::Bool(true));
            return Ok(());
        };
        let bytes = bytes?;
        if bytes.len() < NONCE_LEN {
            return Err(tampered());
        }
        let (nonce, ciphertext) = bytes.split_at(NONCE_LEN);
        let plain = Zeroizing::new(
            cipher
                .decrypt(XNonce::from_slice(nonce), Payload { msg: ciphertext, aad: subject.as_str().as_bytes() })
                .map_err(|_| tampered())?,
        );
        let inner: Value = serde_json::from_slice(&plain).map_err(|_| tampered())?;
        *node = single(PERSONAL, inner);
        Ok(())
    })
}

/// Replaces every open or sealed envelope in `value` by `{"$forgotten": true}`
/// (a copy kept outside the events, such as a parked event, once its subject
/// is forgotten).
pub fn forget_value(value: &mut Value) {
    let _ = each_envelope(value, &mut |envelope| {
        *envelope = single(FORGOTTEN, Value::Bool(true));
        Ok(())
    });
}

/// Turns every envelope in `value` into what a client is shown: an open
/// value becomes the value itself, a forgotten (or sealed) one `null`.
/// For answers built from [`Personal`] fields (an HTTP body).
pub fn reveal(value: &mut Value) {
    let _ = each_envelope(value, &mut |envelope| {
        *envelope = match std::mem::take(envelope) {
            Value::Object(mut map) => map.remove(PERSONAL).unwrap_or(Value::Null),
            _ => Value::Null,
        };
        Ok(())
    });
}

/// When and by whom a subject was forgotten.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Forgetting {
    /// The subject.
    pub subject: Subject,
    /// When its key was deleted.
    #[serde(with = "time::serde::rfc3339")]
    pub forgotten_at: OffsetDateTime,
    /// Who asked (an operator, a service).
    pub forgotten_by: String,
}

/// Where a store keeps its subjects' keys: in its own database, beside the
/// events (memory, SQLite and PostgreSQL each have one).
///
/// A subject's row outlives its key: forgetting deletes the key and records
/// when and by whom, so a forgotten subject is never given a new key (its
/// new personal data is refused with [`PersonalError::Forgotten`]).
pub trait KeyStore: Send + Sync {
    /// The key of `subject`, created now if it has none yet.
    ///
    /// # Errors
    /// [`PersonalError::Forgotten`] for a forgotten subject; a store failure.
    fn subject_key<'a>(&'a self, subject: &'a Subject) -> BoxFuture<'a, Result<SubjectKey>>;

    /// The keys of those of `subjects` that have one (forgotten and unknown
    /// subjects are absent), in one lookup.
    ///
    /// # Errors
    /// A store failure; [`PersonalError::BadKey`] for a malformed stored key.
    fn find_keys<'a>(&'a self, subjects: &'a [Subject]) -> BoxFuture<'a, Result<HashMap<Subject, SubjectKey>>>;

    /// Deletes `subject`'s key and records when and by whom. Forgetting a
    /// forgotten subject again changes nothing and answers the first forgetting.
    ///
    /// # Errors
    /// [`PersonalError::UnknownSubject`] if the subject never had a key; a store failure.
    fn forget<'a>(&'a self, subject: &'a Subject, by: &'a str) -> BoxFuture<'a, Result<Forgetting>>;
}

/// A key store in memory (the memory store's, and one for tests).
#[derive(Debug, Default)]
pub struct MemoryKeys {
    subjects: Mutex<BTreeMap<Subject, Entry>>,
}

#[derive(Debug)]
enum Entry {
    Key(SubjectKey),
    Forgotten(Forgetting),
}

impl MemoryKeys {
    /// An empty key store.
    pub fn new() -> Self {
        MemoryKeys::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<Subject, Entry>> {
        // A panic while holding the lock cannot leave the map half-written
        // (every change is one insert), so a poisoned lock is still usable.
        self.subjects.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl KeyStore for MemoryKeys {
    fn subject_key<'a>(&'a self, subject: &'a Subject) -> BoxFuture<'a, Result<SubjectKey>> {
        Box::pin(async move {
            let mut subjects = self.lock();
            match subjects.entry(subject.clone()).or_insert_with(|| Entry::Key(SubjectKey::generate())) {
                Entry::Key(key) => Ok(key.clone()),
                Entry::Forgotten(_) => Err(Error::Personal(PersonalError::Forgotten(subject.clone()))),
            }
        })
    }

    fn find_keys<'a>(&'a self, subjects: &'a [Subject]) -> BoxFuture<'a, Result<HashMap<Subject, SubjectKey>>> {
        Box::pin(async move {
            let known = self.lock();
            Ok(subjects
                .iter()
                .filter_map(|s| match known.get(s) {
                    Some(Entry::Key(key)) => Some((s.clone(), key.clone())),
                    _ => None,
                })
                .collect())
        })
    }

    fn forget<'a>(&'a self, subject: &'a Subject, by: &'a str) -> BoxFuture<'a, Result<Forgetting>> {
        Box::pin(async move {
            let mut subjects = self.lock();
            let Some(entry) = subjects.get_mut(subject) else {
                return Err(Error::Personal(PersonalError::UnknownSubject(subject.clone())));
            };
            if let Entry::Forgotten(done) = entry {
                return Ok(done.clone());
            }
            let done = Forgetting {
                subject: subject.clone(),
                forgotten_at: OffsetDateTime::now_utc(),
                forgotten_by: by.to_owned(),
            };
            *entry = Entry::Forgotten(done.clone());
            Ok(done)
        })
    }
}

/// Seals the personal data of `events` (each with its metadata's subject)
/// with `keys`, creating the subjects' keys as needed. Events without
/// personal data are untouched (and cost no key lookup).
///
/// # Errors
/// [`PersonalError::NoSubject`] / [`PersonalError::NoKeyStore`] for personal
/// data that cannot be sealed; [`PersonalError::Forgotten`]; a store failure.
pub async fn seal_events(keys: Option<&Arc<dyn KeyStore>>, events: &mut [NewEvent]) -> Result<()> {
    seal_events_with(keys, &mut HashMap::new(), events).await
}

/// [`seal_events`], taking keys from `used` first and keeping there the keys
/// it fetched: the appends of one call share their lookups, and the store's
/// echo of the appended events opens without another.
pub(crate) async fn seal_events_with(
    keys: Option<&Arc<dyn KeyStore>>,
    used: &mut HashMap<Subject, SubjectKey>,
    events: &mut [NewEvent],
) -> Result<()> {
    for event in events.iter_mut() {
        let place = || format!("event {} ({})", event.event_id, event.event_type);
        seal_for(keys, used, event.metadata.subject.as_ref(), &place, &mut event.payload).await?;
    }
    Ok(())
}

/// Seals the open personal values of `value` for `subject`, with its key from
/// `used` or the key store (then kept in `used`); `place` names the value in errors.
async fn seal_for(
    keys: Option<&Arc<dyn KeyStore>>,
    used: &mut HashMap<Subject, SubjectKey>,
    subject: Option<&Subject>,
    place: &(dyn Fn() -> String + Sync),
    value: &mut Value,
) -> Result<()> {
    if !holds_personal(value) {
        return Ok(());
    }
    let Some(subject) = subject else { return Err(Error::Personal(PersonalError::NoSubject(place()))) };
    let Some(keys) = keys else { return Err(Error::Personal(PersonalError::NoKeyStore(place()))) };
    let key = match used.get(subject) {
        Some(key) => key.clone(),
        None => {
            let key = keys.subject_key(subject).await?;
            used.insert(subject.clone(), key.clone());
            key
        }
    };
    seal_value(&key, subject, value).map(drop)
}

/// Opens the sealed personal data of `events` with `keys`: one lookup for
/// every subject of the page. Values of forgotten subjects become
/// `{"$forgotten": true}`. Events without a subject are untouched.
///
/// # Errors
/// [`PersonalError::Tampered`] for a value that does not open; a store failure.
pub async fn open_events(keys: &dyn KeyStore, events: &mut [RecordedEvent]) -> Result<()> {
    let sealed = events.iter().map(|e| (e.metadata.subject.as_ref(), &e.payload));
    let Some(found) = find_sealed(keys, sealed).await? else { return Ok(()) };
    open_with(&found, events)
}

/// [`open_events`] for a page of `stream` read for replay.
pub(crate) async fn open_lean(keys: &dyn KeyStore, stream: &StreamId, events: &mut [LeanEvent]) -> Result<()> {
    let sealed = events.iter().map(|e| (e.subject.as_ref(), &e.payload));
    let Some(found) = find_sealed(keys, sealed).await? else { return Ok(()) };
    for event in events.iter_mut() {
        let Some(subject) = &event.subject else { continue };
        let place = || format!("{stream} version {}", event.stream_version);
        open_at(found.get(subject), subject, &mut event.payload, &place)?;
    }
    Ok(())
}

/// The keys of the subjects whose values in `values` are sealed, in one
/// lookup; `None` when no value is sealed (no lookup).
async fn find_sealed<'a>(
    keys: &dyn KeyStore,
    values: impl Iterator<Item = (Option<&'a Subject>, &'a Value)>,
) -> Result<Option<HashMap<Subject, SubjectKey>>> {
    let subjects: BTreeSet<&Subject> =
        values.filter_map(|(subject, payload)| subject.filter(|_| holds_sealed(payload))).collect();
    if subjects.is_empty() {
        return Ok(None);
    }
    let subjects: Vec<Subject> = subjects.into_iter().cloned().collect();
    keys.find_keys(&subjects).await.map(Some)
}

/// Opens `events` with keys already found (a subject absent from `found` is forgotten).
pub(crate) fn open_with(found: &HashMap<Subject, SubjectKey>, events: &mut [RecordedEvent]) -> Result<()> {
    for event in events.iter_mut() {
        let Some(subject) = &event.metadata.subject else { continue };
        let place = || format!("{} version {}", event.stream_id, event.stream_version);
        open_at(found.get(subject), subject, &mut event.payload, &place)?;
    }
    Ok(())
}

/// Seals a value outside an event (a snapshot's state) for `subject`.
///
/// # Errors
/// As [`seal_events`].
pub(crate) async fn seal_state(
    keys: Option<&Arc<dyn KeyStore>>,
    subject: Option<Subject>,
    place: &(dyn Fn() -> String + Sync),
    value: &mut Value,
) -> Result<()> {
    seal_for(keys, &mut HashMap::new(), subject.as_ref(), place, value).await
}

/// Opens a value sealed by [`seal_state`].
///
/// # Errors
/// As [`open_events`]; [`PersonalError::NoKeyStore`] if sealed data is read without keys.
pub(crate) async fn open_state(
    keys: Option<&Arc<dyn KeyStore>>,
    subject: Option<&Subject>,
    place: &(dyn Fn() -> String + Sync),
    value: &mut Value,
) -> Result<()> {
    if !holds_sealed(value) {
        return Ok(());
    }
    let (Some(keys), Some(subject)) = (keys, subject) else {
        return Err(Error::Personal(PersonalError::NoKeyStore(place())));
    };
    let found = keys.find_keys(std::slice::from_ref(subject)).await?;
    open_at(found.get(subject), subject, value, place)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use serde_json::json;

    use super::*;

    fn subject() -> Subject {
        Subject::new("customer-1").unwrap()
    }

    #[test]
    fn subjects_are_validated() {
        assert_eq!(Subject::new(""), Err(InvalidSubject::Empty));
        assert_eq!(Subject::new("x".repeat(257)), Err(InvalidSubject::TooLong(257)));
        assert_eq!(Subject::new("a\u{0}b"), Err(InvalidSubject::ControlCharacter));
        assert!(serde_json::from_value::<Subject>(json!("")).is_err());
        assert_eq!(Subject::of_stream(&"account-9".parse().unwrap()).as_str(), "account-9");
    }

    #[test]
    fn envelopes_round_trip_and_bare_values_read_as_known() {
        let known = serde_json::to_value(Personal::Known("Ada")).unwrap();
        assert_eq!(known, json!({"$personal": "Ada"}));
        assert_eq!(serde_json::to_value(Personal::<String>::Forgotten).unwrap(), json!({"$forgotten": true}));
        assert_eq!(serde_json::from_value::<Personal<String>>(known).unwrap(), Personal::Known("Ada".into()));
        assert_eq!(serde_json::from_value::<Personal<String>>(json!("Bob")).unwrap(), Personal::Known("Bob".into()));
        assert_eq!(
            serde_json::from_value::<Personal<String>>(json!({"$forgotten": true})).unwrap(),
            Personal::Forgotten
        );
        let sealed = serde_json::from_value::<Personal<String>>(json!({"$sealed": "AAAA"}));
        assert!(sealed.unwrap_err().to_string().contains("sealed personal data"));
    }

    #[test]
    fn every_envelope_is_sealed_with_a_fresh_nonce_and_opens_again() {
        let key = SubjectKey::generate();
        let mut value =
            json!({"a": {"$personal": "Ada"}, "b": [{"$personal": {"x": 1}}, 3], "c": {"$personal": "Ada"}});
        assert_eq!(seal_value(&key, &subject(), &mut value).unwrap(), 3);
        let text = value.to_string();
        assert!(!text.contains("Ada") && !text.contains(PERSONAL), "{text}");
        assert_ne!(value["a"], value["c"], "the same plaintext seals differently each time");
        assert!(holds_sealed(&value) && !holds_personal(&value));
        open_value(Some(&key), &subject(), &mut value).unwrap();
        assert_eq!(
            value,
            json!({"a": {"$personal": "Ada"}, "b": [{"$personal": {"x": 1}}, 3], "c": {"$personal": "Ada"}})
        );
    }

    #[test]
    fn a_tampered_or_foreign_ciphertext_is_an_error_never_plaintext() {
        let key = SubjectKey::generate();
        let mut value = json!({"name": {"$personal": "Ada"}});
        seal_value(&key, &subject(), &mut value).unwrap();
        let text = value["name"][SEALED].as_str().unwrap().to_owned();
        let mut bytes = BASE64.decode(&text).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        let mut tampered = json!({"name": {"$sealed": BASE64.encode(&bytes)}});
        let err = open_value(Some(&key), &subject(), &mut tampered).unwrap_err();
        assert!(matches!(err, Error::Personal(PersonalError::Tampered(_))), "{err}");
        let mut moved = value.clone();
        let other = Subject::new("customer-2").unwrap();
        assert!(open_value(Some(&key), &other, &mut moved).is_err(), "bound to its subject");
        for junk in [json!("!!!"), json!(7), json!("AAAA")] {
            let mut v = json!({"$sealed": junk});
            assert!(open_value(Some(&key), &subject(), &mut v).is_err());
        }
        let mut wrong_key = value.clone();
        assert!(open_value(Some(&SubjectKey::generate()), &subject(), &mut wrong_key).is_err());
    }

    #[test]
    fn without_the_key_a_sealed_value_reads_as_forgotten() {
        let key = SubjectKey::generate();
        let mut value = json!({"owner": {"name": {"$personal": "Ada"}}});
        seal_value(&key, &subject(), &mut value).unwrap();
        open_value(None, &subject(), &mut value).unwrap();
        assert_eq!(value, json!({"owner": {"name": {"$forgotten": true}}}));
    }

    #[test]
    fn reveal_and_forget_rewrite_envelopes() {
        let mut value = json!({"owner": {"$personal": "Ada"}, "gone": {"$forgotten": true}, "n": 1});
        let mut forgotten = value.clone();
        reveal(&mut value);
        assert_eq!(value, json!({"owner": "Ada", "gone": null, "n": 1}));
        forget_value(&mut forgotten);
        assert_eq!(forgotten, json!({"owner": {"$forgotten": true}, "gone": {"$forgotten": true}, "n": 1}));
    }

    #[tokio::test]
    async fn memory_keys_create_once_and_forget_for_good() {
        let keys = MemoryKeys::new();
        let s = subject();
        let err = keys.forget(&s, "ops").await.unwrap_err();
        assert!(matches!(err, Error::Personal(PersonalError::UnknownSubject(_))));
        let key = keys.subject_key(&s).await.unwrap();
        assert_eq!(keys.subject_key(&s).await.unwrap().as_bytes(), key.as_bytes());
        assert_eq!(keys.find_keys(std::slice::from_ref(&s)).await.unwrap().len(), 1);
        let first = keys.forget(&s, "ops").await.unwrap();
        let again = keys.forget(&s, "someone else").await.unwrap();
        assert_eq!(first, again, "idempotent: the first forgetting is kept");
        assert!(keys.find_keys(std::slice::from_ref(&s)).await.unwrap().is_empty());
        let refused = keys.subject_key(&s).await.unwrap_err();
        assert!(matches!(refused, Error::Personal(PersonalError::Forgotten(_))));
    }
}
