//! The command side of the service: load, decide, append with the loaded
//! version, retry on conflict; `If-Match` preconditions; idempotency keys
//! stored durably in the same atomic append as the command's events.
//!
//! An idempotency key is an event on the stream `idempotency-<sha256 of key>`,
//! appended with `ExpectedVersion::NoStream` in the **same multi-stream
//! append** as the command's events. Its payload is the request's fingerprint
//! (sha256 of method, path and body) and the response (status, body, headers).
//! The response is known before the append: the new version is the loaded
//! version plus the number of decided events, and the append only succeeds if
//! the stream is still at the loaded version. So either both the events and
//! the key are stored, or neither. A conflict on the key stream means "seen
//! before": the stored response is replayed (same fingerprint) or the request
//! is refused with 422 (another request reused the key). This needs no new
//! table and works the same on every backend; the read models ignore the
//! `idempotency` category (their handlers skip unknown categories, and the
//! saga only reads `transfer`).
//!
//! **Every retry gets the first answer.** A retry that looked the key up
//! before the first request committed decides on the state that request left
//! and may be *refused* (a withdrawal of the whole balance: 422
//! `insufficient-funds`), with no append to conflict on. So every refusal of
//! a request that carries a key (404, 412, a domain rule) looks the key up
//! again and replays what it finds. That is enough: the refusal was decided on
//! a state that includes the first request's events, and its key was
//! committed in the same append, so it is visible. This holds across
//! processes too, where the in-process lock orders nothing. A refused request
//! stores no key, so a retry once the rule allows it goes through.
//!
//! **Retention.** A key answers retries for [`Config::idempotency_retention`]
//! (default 24 h, `--idempotency-retention`). A key whose newest record is
//! older is a new request, at once, whether or not the record is still
//! stored: the request is decided again, and its record is appended to the
//! key's stream after the expired one (`ExpectedVersion::Exact` of its
//! version instead of `NoStream`; concurrent retries still race on it). So a
//! retry that comes after the retention is *not* a replay: it may take effect
//! a second time, or be refused, and the same key may name another request.
//! Clients must not retry with a key older than the retention. A background
//! job ([`idempotency::spawn_compaction`]) deletes expired keys through
//! [`eslab_core::StreamRetention`]: at start, then every quarter of the
//! retention (at most every 10 minutes), up to 1 000 keys per store call and
//! 100 calls per run. Storage is then bounded by the keys of one retention
//! period (plus one compaction interval). Expiry compares the record's
//! `recorded_at` (the database's clock on PostgreSQL) with this process's
//! clock: skew between them shifts the boundary.
//!
//! [`Config::idempotency_retention`]: super::Config::idempotency_retention
//!
//! Commands on the same aggregate are serialized in-process by a striped lock
//! (`eslab_core::StreamLocks`),
//! so concurrent requests to one account do not spin on conflicts; conflicts
//! with other processes are still caught by the append's version check and
//! retried. Under that lock, the state a command left is cached (bounded,
//! per stream), so the next command on the aggregate skips the load; a stale
//! entry (another process wrote) fails the append's `Exact` check, is
//! dropped, and the command is retried on a fresh load.

use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::Response;
use eslab_bank::{AccountError, TransferError};
use eslab_core::{
    Aggregate, Codec, DomainEvent, EventAppender, EventReader, ExpectedVersion, JsonCodec, Loaded, Metadata, NewEvent,
    StreamAppend, StreamId, Version,
};
use sha2::{Digest, Sha256};

use super::AppState;
use super::error::ApiError;
use super::idempotency::{self, KeyRecord, KeyState};

/// The longest idempotency key accepted, in bytes.
pub const MAX_KEY_LEN: usize = 255;

/// A domain error with a stable rule name (the `rule` of a 422 problem).
pub trait Rule: std::error::Error {
    /// The rule's name.
    fn rule_name(&self) -> &'static str;
}

impl Rule for AccountError {
    fn rule_name(&self) -> &'static str {
        self.rule()
    }
}

impl Rule for TransferError {
    fn rule_name(&self) -> &'static str {
        self.rule()
    }
}

pub use super::idempotency::{IDEMPOTENCY_CATEGORY, IDEMPOTENCY_EVENT, StoredResponse, etag};

/// The write's preconditions and idempotency, read from its headers.
#[derive(Debug, Clone, Default)]
pub struct WriteOptions {
    /// `If-Match: "<version>"`.
    pub if_match: Option<Version>,
    /// The idempotency key stream and the request's fingerprint.
    pub idempotency: Option<(StreamId, String)>,
    /// The request id (becomes the events' correlation id).
    pub request_id: Option<uuid::Uuid>,
}

impl WriteOptions {
    /// Reads `If-Match`, `Idempotency-Key` and `x-request-id`; the fingerprint
    /// covers `method`, `path` and `body`.
    pub fn from_request(headers: &HeaderMap, method: &str, path: &str, body: &[u8]) -> Result<Self, ApiError> {
        let if_match = match headers.get(header::IF_MATCH) {
            None => None,
            Some(v) => Some(parse_if_match(v)?),
        };
        let idempotency = match headers.get("idempotency-key") {
            None => None,
            Some(key) => {
                let key =
                    key.to_str().map_err(|_| ApiError::BadRequest("Idempotency-Key must be visible ASCII".into()))?;
                if key.is_empty() || key.len() > MAX_KEY_LEN {
                    return Err(ApiError::BadRequest(format!(
                        "Idempotency-Key must have 1 to {MAX_KEY_LEN} characters"
                    )));
                }
                let stream = StreamId::new(IDEMPOTENCY_CATEGORY, &hex(&Sha256::digest(key.as_bytes())))
                    .map_err(|e| ApiError::Internal(Box::new(e)))?;
                let mut fingerprint = Sha256::new();
                for part in [method.as_bytes(), b"\n", path.as_bytes(), b"\n", body] {
                    fingerprint.update(part);
                }
                Some((stream, hex(&fingerprint.finalize())))
            }
        };
        let request_id =
            headers.get("x-request-id").and_then(|v| v.to_str().ok()).and_then(|v| uuid::Uuid::parse_str(v).ok());
        Ok(WriteOptions { if_match, idempotency, request_id })
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn parse_if_match(v: &HeaderValue) -> Result<Version, ApiError> {
    let bad = || ApiError::BadRequest("If-Match must be a version in quotes, e.g. \"3\"".into());
    let s = v.to_str().map_err(|_| bad())?.trim();
    let s = s.strip_prefix("W/").unwrap_or(s);
    let inner = s.strip_prefix('"').and_then(|s| s.strip_suffix('"')).ok_or_else(bad)?;
    inner.parse::<u64>().map(Version::new).map_err(|_| bad())
}

/// A request refused (404, 412, a domain rule): if it carries a key that a
/// concurrent request with the same key has stored meanwhile, that request's
/// answer, else the refusal. The refusal was decided on a state that may
/// already include the winner's events, and the winner's key is committed
/// with them, so the key is visible here: every retry gets the first answer.
async fn refused(state: &AppState, options: &WriteOptions, refusal: ApiError) -> Result<Response, ApiError> {
    if let Some(key) = &options.idempotency
        && let KeyState::Replay(response) = idempotency::lookup(state, key).await?
    {
        return Ok(response.into_http(true));
    }
    Err(refusal)
}

/// Whether the aggregate must already exist for the command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// A command on an existing aggregate (404 otherwise).
    Existing,
    /// A command that creates it (the aggregate itself refuses a second creation).
    New,
}

/// Runs `command` on aggregate `id` of kind `A` with the write's options, and
/// builds the response with `respond(new state, new version)`.
pub async fn execute<A>(
    state: &AppState,
    id: &str,
    target: Target,
    command: &A::Command,
    options: &WriteOptions,
    respond: impl Fn(&A, Version) -> StoredResponse,
) -> Result<Response, ApiError>
where
    A: Aggregate,
    A::Error: Rule,
{
    // The expectation on the key's stream: no stream, or the expired record it replaces.
    let mut key_expected = ExpectedVersion::NoStream;
    if let Some(key) = &options.idempotency {
        match idempotency::lookup(state, key).await? {
            KeyState::Replay(response) => return Ok(response.into_http(true)),
            KeyState::New(expected) => key_expected = expected,
        }
    }
    let stream = A::stream_id(id).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let _guard = state.lock(&stream).await;
    let repository: eslab_core::Repository<A, _> = eslab_core::Repository::new(state.events().clone());
    let mut metadata = Metadata::now().with_actor("http");
    if let Some(request_id) = options.request_id {
        metadata = metadata.with_correlation_id(request_id);
    }
    let attempts = state.max_attempts().max(1);
    for attempt in 1..=attempts {
        // An If-Match is checked against the store, never against a cached state.
        let cached = if options.if_match.is_none() { state.cached::<A>(&stream) } else { None };
        let from_cache = cached.is_some();
        let loaded = match cached {
            Some(loaded) => loaded,
            None => repository.load(id).await?,
        };
        if target == Target::Existing && loaded.version.is_none() {
            return refused(state, options, ApiError::NotFound(format!("no {} with id {id}", A::KIND))).await;
        }
        if let Some(expected) = options.if_match
            && expected != loaded.version
        {
            return refused(state, options, precondition(&stream, expected, loaded.version)).await;
        }
        let events = match loaded.state.decide(command) {
            Ok(events) => events,
            // A refusal must rest on the stored state, not on a cached one that
            // another writer (the saga, another process) may have outdated.
            Err(_) if from_cache => {
                state.forget(&stream);
                let fresh = repository.load(id).await?;
                if let Err(e) = fresh.state.decide(command) {
                    return refused(state, options, ApiError::rule(e.rule_name(), &e)).await;
                }
                continue;
            }
            Err(e) => return refused(state, options, ApiError::rule(e.rule_name(), &e)).await,
        };
        let mut after = loaded.state.clone();
        for event in &events {
            after.evolve(event);
        }
        let version =
            loaded.version.advance(events.len()).ok_or_else(|| ApiError::Internal("stream version overflow".into()))?;
        let response = respond(&after, version);
        let new_events = encode(&events, &metadata)?;
        let mut appends = vec![StreamAppend::new(stream.clone(), ExpectedVersion::Exact(loaded.version), new_events)];
        if let Some((key_stream, fingerprint)) = &options.idempotency {
            let record = KeyRecord { fingerprint: fingerprint.clone(), response: response.clone() };
            let payload = serde_json::to_value(&record).map_err(|e| ApiError::Internal(Box::new(e)))?;
            appends.push(StreamAppend::new(
                key_stream.clone(),
                key_expected,
                vec![NewEvent::new(IDEMPOTENCY_EVENT, 1, payload, metadata.clone())],
            ));
        }
        match state.events().append_streams(appends).await {
            Ok(_) => {
                state.cache(&stream, Loaded { state: after, version });
                state.appended();
                metrics::counter!("eslab_commands_total", "kind" => A::KIND, "outcome" => "ok").increment(1);
                return Ok(response.into_http(false));
            }
            Err(e) if e.is_conflict() => {
                // Someone else (another process) wrote: the cached state is stale.
                state.forget(&stream);
                // The key may have been stored by a concurrent request with the
                // same key: then that request's response is the answer. (Or
                // compaction deleted the expired record this one replaced.)
                if let Some(key) = &options.idempotency {
                    match idempotency::lookup(state, key).await? {
                        KeyState::Replay(response) => return Ok(response.into_http(true)),
                        KeyState::New(expected) => key_expected = expected,
                    }
                }
                if let Some(expected) = options.if_match {
                    let actual = state.events().stream_version(&stream).await?;
                    return Err(precondition(&stream, expected, actual));
                }
                metrics::counter!("eslab_command_conflicts_total", "kind" => A::KIND).increment(1);
                tracing::debug!(%stream, attempt, "conflict; retrying");
            }
            Err(e) => {
                state.forget(&stream);
                return Err(e.into());
            }
        }
    }
    Err(ApiError::Conflict(format!("{stream} kept changing; gave up after {attempts} attempts, try again")))
}

fn precondition(stream: &StreamId, expected: Version, actual: Version) -> ApiError {
    ApiError::PreconditionFailed(format!("If-Match names version {expected} but {stream} is at version {actual}"))
}

fn encode<E: DomainEvent>(events: &[E], metadata: &Metadata) -> Result<Vec<NewEvent>, ApiError> {
    events.iter().map(|e| JsonCodec.encode(e, metadata.clone()).map_err(|e| ApiError::Internal(Box::new(e)))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn if_match_takes_quoted_versions_only() {
        assert_eq!(parse_if_match(&HeaderValue::from_static("\"3\"")).ok(), Some(Version::new(3)));
        assert_eq!(parse_if_match(&HeaderValue::from_static("W/\"4\"")).ok(), Some(Version::new(4)));
        assert!(parse_if_match(&HeaderValue::from_static("3")).is_err());
        assert!(parse_if_match(&HeaderValue::from_static("\"x\"")).is_err());
        assert!(parse_if_match(&HeaderValue::from_static("\"-1\"")).is_err());
    }

    #[test]
    fn the_fingerprint_covers_method_path_and_body() {
        let mut headers = HeaderMap::new();
        headers.insert("idempotency-key", HeaderValue::from_static("k1"));
        let a = WriteOptions::from_request(&headers, "POST", "/a", b"{}").unwrap().idempotency.unwrap();
        let b = WriteOptions::from_request(&headers, "POST", "/a", b"{ }").unwrap().idempotency.unwrap();
        let c = WriteOptions::from_request(&headers, "POST", "/b", b"{}").unwrap().idempotency.unwrap();
        assert_eq!(a.0, b.0, "same key, same stream");
        assert_eq!(a.0.category(), IDEMPOTENCY_CATEGORY);
        assert_ne!(a.1, b.1);
        assert_ne!(a.1, c.1);
    }
}
