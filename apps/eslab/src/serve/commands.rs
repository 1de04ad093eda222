//! The command side over HTTP. The headers become the library's
//! [`CommandOptions`] (`If-Match` an expected version, `Idempotency-Key` an
//! [`IdempotencyKey`] fingerprinting method, path and body, `x-request-id`
//! the correlation id); the bank's application services
//! ([`eslab_bank::Bank`]) run the command through the library's one command
//! path ([`eslab_core::Repository::run`]); the outcome becomes the response
//! (a replay says `Idempotent-Replayed: true`) and every error a problem.
//!
//! The idempotency design (key-as-stream in the same atomic append; every
//! retry gets the first answer, also when a concurrent retry is refused by a
//! rule on the state the first one left; retention) is the library's: see
//! [`eslab_core::idempotency`]. The service stores an HTTP response
//! ([`StoredResponse`]) with each key, and runs the compaction job
//! ([`idempotency::spawn_compaction`](super::idempotency::spawn_compaction)).
//! Commands on one aggregate queue on the bank's in-process stream locks and
//! start from its state cache; conflicts with other processes are caught by
//! the append's version check and retried with backoff (409 when retries run out).

use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::Response;
use eslab_bank::{AccountError, AtomicTransferError, TransferError};
use eslab_core::{
    Aggregate, CommandError, CommandOptions, IdempotencyKey, MAX_KEY_LEN, Metadata, Outcome, Settled, Version,
};

use super::AppState;
use super::error::ApiError;
pub use super::idempotency::{StoredResponse, etag};
pub use eslab_core::idempotency::{IDEMPOTENCY_CATEGORY, IDEMPOTENCY_EVENT};

/// A domain error with a stable rule name (the `rule` of a 422 problem).
pub trait Rule: std::error::Error + Send + Sync {
    /// The rule's name.
    fn rule_name(&self) -> &'static str;
}

impl Rule for AccountError {
    fn rule_name(&self) -> &'static str {
        self.rule()
    }
}

impl Rule for AtomicTransferError {
    fn rule_name(&self) -> &'static str {
        self.rule()
    }
}

impl Rule for TransferError {
    fn rule_name(&self) -> &'static str {
        self.rule()
    }
}

/// The write's preconditions and idempotency, read from its headers.
#[derive(Debug, Clone, Default)]
pub struct WriteOptions {
    /// `If-Match: "<version>"`.
    pub if_match: Option<Version>,
    /// The idempotency key with the request's fingerprint.
    pub idempotency: Option<IdempotencyKey>,
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
                let key = IdempotencyKey::new(key, &[method.as_bytes(), path.as_bytes(), body]).map_err(|_| {
                    ApiError::BadRequest(format!("Idempotency-Key must have 1 to {MAX_KEY_LEN} characters"))
                })?;
                Some(key)
            }
        };
        let request_id =
            headers.get("x-request-id").and_then(|v| v.to_str().ok()).and_then(|v| uuid::Uuid::parse_str(v).ok());
        Ok(WriteOptions { if_match, idempotency, request_id })
    }

    /// The library's options of this write: its events' metadata (actor
    /// `http`, the request id as correlation id), `If-Match`, the key.
    pub fn command_options(&self) -> CommandOptions {
        let mut metadata = Metadata::now().with_actor("http");
        if let Some(request_id) = self.request_id {
            metadata = metadata.with_correlation_id(request_id);
        }
        CommandOptions::new(metadata).expecting(self.if_match).idempotent(self.idempotency.clone())
    }
}

fn parse_if_match(v: &HeaderValue) -> Result<Version, ApiError> {
    let bad = || ApiError::BadRequest("If-Match must be a version in quotes, e.g. \"3\"".into());
    let s = v.to_str().map_err(|_| bad())?.trim();
    let s = s.strip_prefix("W/").unwrap_or(s);
    let inner = s.strip_prefix('"').and_then(|s| s.strip_suffix('"')).ok_or_else(bad)?;
    inner.parse::<u64>().map(Version::new).map_err(|_| bad())
}

/// The HTTP answer of a command of aggregate kind `A`: its response (a
/// replay marked as such), or its error as a problem.
pub fn respond<A: Aggregate, E: Rule + 'static>(
    state: &AppState,
    result: Result<Outcome<A, StoredResponse>, CommandError<E>>,
) -> Result<Response, ApiError> {
    match result {
        Ok(Outcome::Executed(done)) => {
            metrics::counter!("eslab_commands_total", "kind" => A::KIND, "outcome" => "ok").increment(1);
            if done.attempts > 1 {
                metrics::counter!("eslab_command_conflicts_total", "kind" => A::KIND)
                    .increment(u64::from(done.attempts - 1));
            }
            Ok(done.response.into_http(false))
        }
        Ok(Outcome::Replayed(response)) => Ok(response.into_http(true)),
        Err(error) => Err(problem(error, state.bank().accounts().retry_policy().max_attempts.max(1))),
    }
}

/// The HTTP answer of an atomic transfer: its stored response (201 with the
/// transfer's location; a replay marked as such, whichever path answered the
/// key first), or its error as a problem (an unknown account 404, a refusal
/// 422 with its rule, conflicts past the retries 409).
pub fn respond_atomic(
    state: &AppState,
    result: Result<Settled<StoredResponse>, CommandError<AtomicTransferError>>,
) -> Result<Response, ApiError> {
    match result {
        Ok(Settled::Executed { output, attempts, .. }) => {
            metrics::counter!("eslab_commands_total", "kind" => "transfer-atomic", "outcome" => "ok").increment(1);
            if attempts > 1 {
                metrics::counter!("eslab_command_conflicts_total", "kind" => "transfer-atomic")
                    .increment(u64::from(attempts - 1));
            }
            Ok(output.into_http(false))
        }
        Ok(Settled::Replayed(response)) => Ok(response.into_http(true)),
        Err(CommandError::Rejected(AtomicTransferError::UnknownAccount(stream))) => {
            Err(ApiError::NotFound(format!("no {} with id {}", stream.category(), stream.id())))
        }
        Err(error) => Err(problem(error, state.bank().accounts().retry_policy().max_attempts.max(1))),
    }
}

/// A command's error as the API's error.
fn problem<E: Rule + 'static>(error: CommandError<E>, attempts: u32) -> ApiError {
    match error {
        CommandError::Rejected(e) => ApiError::rule(e.rule_name(), &e),
        CommandError::NotFound { stream } => {
            ApiError::NotFound(format!("no {} with id {}", stream.category(), stream.id()))
        }
        CommandError::WrongVersion { stream, expected, actual } => ApiError::PreconditionFailed(format!(
            "If-Match names version {expected} but {stream} is at version {actual}"
        )),
        CommandError::KeyReused { .. } => ApiError::rule(
            "idempotency-key-reused",
            "this Idempotency-Key was used for a different request (method, path or body)",
        ),
        CommandError::Store(e) if e.is_conflict() => {
            ApiError::Conflict(format!("{e}: the stream kept changing; gave up after {attempts} attempts, try again"))
        }
        CommandError::Store(e) => e.into(),
        other => ApiError::Internal(Box::new(other)),
    }
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
        let key = |method, path, body| {
            WriteOptions::from_request(&headers, method, path, body).ok().and_then(|o| o.idempotency)
        };
        let (a, b, c) =
            (key("POST", "/a", b"{}").unwrap(), key("POST", "/a", b"{ }").unwrap(), key("POST", "/b", b"{}").unwrap());
        assert_eq!(a.stream(), b.stream(), "same key, same stream");
        assert_eq!(a.stream().category(), IDEMPOTENCY_CATEGORY);
        assert_ne!(a.fingerprint(), b.fingerprint());
        assert_ne!(a.fingerprint(), c.fingerprint());
    }
}
