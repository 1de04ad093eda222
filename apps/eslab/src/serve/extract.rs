//! Request extractors whose every rejection is an [`ApiError`]: a JSON write
//! (content type, size, syntax, types) with its preconditions and idempotency
//! key, and path ids.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use serde::de::DeserializeOwned;

use super::commands::WriteOptions;
use super::error::ApiError;

/// A write with a JSON body: the parsed body and the write's options.
#[derive(Debug)]
pub struct Write<T> {
    /// The parsed body.
    pub body: T,
    /// `If-Match`, `Idempotency-Key`, request id.
    pub options: WriteOptions,
}

/// A write without a body (e.g. closing an account): only its options.
#[derive(Debug)]
pub struct BodilessWrite(pub WriteOptions);

async fn read(req: Request) -> Result<(Parts, Bytes), ApiError> {
    let (parts, body) = req.into_parts();
    let bytes = Bytes::from_request(Request::from_parts(parts.clone(), body), &()).await.map_err(|r| {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::PayloadTooLarge(super::BODY_LIMIT)
        } else {
            ApiError::BadRequest(r.body_text())
        }
    })?;
    Ok((parts, bytes))
}

fn options(parts: &Parts, bytes: &[u8]) -> Result<WriteOptions, ApiError> {
    WriteOptions::from_request(&parts.headers, parts.method.as_str(), parts.uri.path(), bytes)
}

fn is_json(headers: &axum::http::HeaderMap) -> bool {
    let Some(content_type) = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let essence = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    essence == "application/json" || (essence.starts_with("application/") && essence.ends_with("+json"))
}

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Write<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, _state: &S) -> Result<Self, ApiError> {
        if !is_json(req.headers()) {
            return Err(ApiError::UnsupportedMediaType);
        }
        let (parts, bytes) = read(req).await?;
        let body =
            serde_json::from_slice(&bytes).map_err(|e| ApiError::BadRequest(format!("invalid JSON body: {e}")))?;
        Ok(Write { options: options(&parts, &bytes)?, body })
    }
}

impl<S: Send + Sync> FromRequest<S> for BodilessWrite {
    type Rejection = ApiError;

    async fn from_request(req: Request, _state: &S) -> Result<Self, ApiError> {
        let (parts, bytes) = read(req).await?;
        Ok(BodilessWrite(options(&parts, &bytes)?))
    }
}

/// An id from the path: a UUID (as the service creates them), else 400.
#[derive(Debug, Clone)]
pub struct Id(pub String);

impl<S: Send + Sync> FromRequestParts<S> for Id {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let axum::extract::Path(raw) = axum::extract::Path::<String>::from_request_parts(parts, state).await?;
        parse_id(&raw).map(Id)
    }
}

/// Checks that `raw` is a UUID and returns its canonical (lower-case, hyphenated) form.
pub fn parse_id(raw: &str) -> Result<String, ApiError> {
    uuid::Uuid::parse_str(raw)
        .map(|u| u.hyphenated().to_string())
        .map_err(|_| ApiError::BadRequest(format!("malformed id {:?}: ids are UUIDs", truncate(raw))))
}

fn truncate(s: &str) -> String {
    s.chars().take(64).collect()
}
