//! Request extractors whose every rejection is an [`ApiError`]: a JSON write
//! (content type, size, syntax, types) with its preconditions and idempotency
//! key, a query string, and path ids.
//!
//! They also apply the one rule of what the stores can hold, at the edge, so
//! every store answers the same (400) instead of one of them failing (500):
//! no text with a NUL character (U+0000, which PostgreSQL cannot store) in a
//! body or a query string, and no number beyond [`MAX_NUMBER`] (`i64::MAX`,
//! the largest the SQL stores hold) in a query string or `If-Match`. JSON
//! numbers are typed `i64` in the bodies, so a larger one is already a type
//! error. The stores enforce the NUL rule themselves as well
//! ([`eslab_core::check_storable`]).

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Query, Request};
use axum::http::request::Parts;
use axum::http::{StatusCode, Uri, header};
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

/// The largest number a request may carry in a query string or `If-Match`
/// (`i64::MAX`: versions and positions are `BIGINT`/`INTEGER` in the SQL stores).
pub const MAX_NUMBER: u64 = i64::MAX.unsigned_abs();

/// The JSON escape of a NUL character, as it appears in a raw body.
const NUL_ESCAPE: &[u8] = b"\\u0000";

fn options(parts: &Parts, bytes: &[u8]) -> Result<WriteOptions, ApiError> {
    let options = WriteOptions::from_request(&parts.headers, parts.method.as_str(), parts.uri.path(), bytes)?;
    if let Some(version) = options.if_match
        && version.get() > MAX_NUMBER
    {
        return Err(ApiError::BadRequest(format!("If-Match version {version} is beyond the largest, {MAX_NUMBER}")));
    }
    Ok(options)
}

fn nul_in(place: &str) -> ApiError {
    ApiError::BadRequest(format!("{place} contains a NUL character (U+0000), which is not accepted"))
}

/// Parses a JSON body, refusing text with a NUL character (naming the field).
/// A raw NUL byte is already a JSON syntax error; the escape `\u0000` is
/// looked for in the raw bytes first (cheap), and only when it is there is
/// the body walked to find a string or key that really holds a NUL (the text
/// `\\u0000`, an escaped backslash, does not).
fn parse_body<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.windows(NUL_ESCAPE.len()).any(|w| w == NUL_ESCAPE) {
        let value: serde_json::Value =
            serde_json::from_slice(bytes).map_err(|e| ApiError::BadRequest(format!("invalid JSON body: {e}")))?;
        if let Some(path) = eslab_core::nul_path(&value) {
            let place = match path.strip_prefix('.') {
                Some(field) => format!("field {field}"),
                None if path.is_empty() => "the body".to_owned(),
                None => format!("the body at {path}"),
            };
            return Err(nul_in(&place));
        }
    }
    serde_json::from_slice(bytes).map_err(|e| ApiError::BadRequest(format!("invalid JSON body: {e}")))
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
        let body = parse_body(&bytes)?;
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

/// A query string parsed into `T` (`deny_unknown_fields` structs of optional
/// fields). Any parameter with a NUL character, or whose value is a whole
/// number beyond [`MAX_NUMBER`], is refused with 400 naming it, whatever `T`
/// makes of it: one rule for every query of the service.
#[derive(Debug, Clone)]
pub struct ValidQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for ValidQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        parse_query(&parts.uri).map(ValidQuery)
    }
}

/// See [`ValidQuery`].
fn parse_query<T: DeserializeOwned>(uri: &Uri) -> Result<T, ApiError> {
    let Query(pairs) = Query::<Vec<(String, String)>>::try_from_uri(uri)?;
    for (name, value) in &pairs {
        let shown = truncate(name);
        if name.contains('\0') || value.contains('\0') {
            return Err(nul_in(&format!("query parameter {shown:?}")));
        }
        let digits = value.strip_prefix('+').unwrap_or(value);
        let whole = !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit());
        if whole && !digits.parse::<u64>().is_ok_and(|n| n <= MAX_NUMBER) {
            return Err(ApiError::BadRequest(format!(
                "query parameter {shown:?} is {}, beyond the largest number accepted, {MAX_NUMBER}",
                truncate(value)
            )));
        }
    }
    let Query(query) = Query::<T>::try_from_uri(uri)?;
    Ok(query)
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
