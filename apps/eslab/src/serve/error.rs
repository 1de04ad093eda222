//! [`ApiError`]: every way a request can fail, as an HTTP status and an
//! `application/problem+json` body (RFC 9457). Internals are logged (inside
//! the request's span, so with its request id), never put in the body.

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The media type of error bodies.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// A problem details body (RFC 9457).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Problem {
    /// A URI naming the kind of problem (`about:blank` style tags under `urn:eslab:problem:`).
    #[serde(rename = "type")]
    pub kind: String,
    /// A short summary of the kind of problem.
    pub title: String,
    /// The HTTP status.
    pub status: u16,
    /// What went wrong with this request, for people.
    pub detail: String,
    /// For 422: the name of the domain rule that refused the command (e.g. `insufficient-funds`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
}

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: the request is malformed (bad JSON, wrong types, missing fields, bad id or query).
    #[error("{0}")]
    BadRequest(String),
    /// 401: a write without the right bearer token.
    #[error("a valid bearer token is required for writes")]
    Unauthorized,
    /// 404: no such resource.
    #[error("{0}")]
    NotFound(String),
    /// 409: concurrent writes outlasted the retries.
    #[error("{0}")]
    Conflict(String),
    /// 412: `If-Match` named another version than the resource's.
    #[error("{0}")]
    PreconditionFailed(String),
    /// 413: the body is larger than the limit.
    #[error("the request body is larger than the {0} bytes allowed")]
    PayloadTooLarge(usize),
    /// 415: the body is not `application/json`.
    #[error("the request body must be application/json")]
    UnsupportedMediaType,
    /// 422: a domain rule refused the command (or the same idempotency key came with another request).
    #[error("{detail}")]
    Unprocessable {
        /// The rule's stable name.
        rule: &'static str,
        /// What it said.
        detail: String,
    },
    /// 429: this client made more requests than its rate limit allows; try again after this many seconds.
    #[error("too many requests from this client; try again in {0} s")]
    TooManyRequests(u64),
    /// 503: the store cannot be reached.
    #[error("the store is unavailable; try again later")]
    Unavailable(#[source] eslab_core::Error),
    /// 500: anything else (logged, not shown).
    #[error("internal error")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl ApiError {
    /// The HTTP status of this error.
    pub fn status_code(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::PreconditionFailed(_) => StatusCode::PRECONDITION_FAILED,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Unprocessable { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::TooManyRequests(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// A 422 for a refused domain rule.
    pub fn rule(rule: &'static str, detail: impl ToString) -> Self {
        ApiError::Unprocessable { rule, detail: detail.to_string() }
    }

    /// The problem body shown to the client.
    pub fn problem(&self) -> Problem {
        let status = self.status_code();
        let (kind, rule) = match self {
            ApiError::Unprocessable { rule, .. } => ("rule-refused", Some((*rule).to_owned())),
            ApiError::BadRequest(_) => ("malformed-request", None),
            ApiError::Unauthorized => ("unauthorized", None),
            ApiError::NotFound(_) => ("not-found", None),
            ApiError::Conflict(_) => ("conflict", None),
            ApiError::PreconditionFailed(_) => ("precondition-failed", None),
            ApiError::PayloadTooLarge(_) => ("payload-too-large", None),
            ApiError::UnsupportedMediaType => ("unsupported-media-type", None),
            ApiError::TooManyRequests(_) => ("too-many-requests", None),
            ApiError::Unavailable(_) => ("unavailable", None),
            ApiError::Internal(_) => ("internal", None),
        };
        Problem {
            kind: format!("urn:eslab:problem:{kind}"),
            title: status.canonical_reason().unwrap_or("Error").to_owned(),
            status: status.as_u16(),
            // Display of Unavailable/Internal is generic on purpose: their
            // sources (SQL, paths, hosts) go to the log only.
            detail: self.to_string(),
            rule,
        }
    }
}

/// A response with a problem body.
pub fn problem_response(problem: &Problem) -> Response {
    let status = StatusCode::from_u16(problem.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = serde_json::to_vec(problem).unwrap_or_default();
    let mut response = (status, body).into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
    response
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match &self {
            ApiError::Internal(e) => tracing::error!(error = %e, source = ?e, "request failed"),
            ApiError::Unavailable(e) => tracing::warn!(error = %e, source = ?e, "store unavailable"),
            _ => tracing::debug!(error = %self, "request refused"),
        }
        problem_response(&self.problem())
    }
}

impl From<eslab_core::Error> for ApiError {
    fn from(e: eslab_core::Error) -> Self {
        match e {
            e if e.is_unavailable() => ApiError::Unavailable(e),
            eslab_core::Error::InvalidStreamId(e) => ApiError::BadRequest(e.to_string()),
            eslab_core::Error::InvalidQuery(e) => ApiError::BadRequest(e.to_string()),
            eslab_core::Error::Personal(eslab_core::PersonalError::UnknownSubject(subject)) => {
                ApiError::NotFound(format!("no personal data of {subject} is stored"))
            }
            e if e.is_conflict() => ApiError::Conflict(e.to_string()),
            e => ApiError::Internal(Box::new(e)),
        }
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        match e {
            sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => {
                ApiError::Unavailable(eslab_core::Error::Unavailable(Box::new(e)))
            }
            e => ApiError::Internal(Box::new(e)),
        }
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        match r {
            JsonRejection::MissingJsonContentType(_) => ApiError::UnsupportedMediaType,
            JsonRejection::BytesRejection(b) if b.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                ApiError::PayloadTooLarge(super::BODY_LIMIT)
            }
            // Syntax errors, wrong types, missing fields: axum's message names
            // the place (line, column, field), which is what a client needs.
            other => ApiError::BadRequest(other.body_text()),
        }
    }
}

impl From<PathRejection> for ApiError {
    fn from(r: PathRejection) -> Self {
        ApiError::BadRequest(r.body_text())
    }
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> Self {
        ApiError::BadRequest(r.body_text())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_errors_map_to_precise_statuses() {
        let status = |e: eslab_core::Error| ApiError::from(e).status_code();
        assert_eq!(status(eslab_core::InvalidQuery::EmptyQuery.into()), StatusCode::BAD_REQUEST);
        let failed = eslab_core::Error::ConditionFailed {
            event_id: uuid::Uuid::nil(),
            event_type: "MoneyDeposited".into(),
            position: eslab_core::Position::new(7),
        };
        assert_eq!(status(failed), StatusCode::CONFLICT);
        assert_eq!(status(eslab_core::Error::backend("boom")), StatusCode::INTERNAL_SERVER_ERROR);
    }
}
