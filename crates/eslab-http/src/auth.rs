//! Bearer-token checks: the one way an eslab service compares the token a
//! request carries with its own.

use axum::http::{HeaderMap, header};
use subtle::ConstantTimeEq;

/// The bearer token of an `Authorization` header (the scheme is
/// case-insensitive, RFC 9110 §11.1), or `""`.
pub fn bearer_token(headers: &HeaderMap) -> &str {
    let Some((scheme, token)) =
        headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.split_once(' '))
    else {
        return "";
    };
    if scheme.eq_ignore_ascii_case("bearer") { token.trim_start_matches(' ') } else { "" }
}

/// Whether `headers` carry `Authorization: Bearer <token>` (compared in
/// constant time).
pub fn bearer_matches(headers: &HeaderMap, token: &str) -> bool {
    bool::from(bearer_token(headers).as_bytes().ct_eq(token.as_bytes()))
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn headers(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, HeaderValue::from_str(value).unwrap_or_else(|_| unreachable!()));
        headers
    }

    #[test]
    fn only_the_bearer_token_matches() {
        assert!(bearer_matches(&headers("Bearer s3cret"), "s3cret"));
        assert!(bearer_matches(&headers("bearer  s3cret"), "s3cret"));
        assert!(!bearer_matches(&headers("Bearer wrong"), "s3cret"));
        assert!(!bearer_matches(&headers("Basic s3cret"), "s3cret"));
        assert!(!bearer_matches(&HeaderMap::new(), "s3cret"));
    }
}
