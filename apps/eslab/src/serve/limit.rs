//! Per-client rate limits (the library's [`eslab_http::limit`]): 429 with a
//! problem body and `Retry-After` when a client's bucket is empty.
//!
//! The key is the TCP peer's address: behind a reverse proxy every client
//! shares the proxy's bucket, so limit at the proxy there (or raise this one).
//! `/health` is not limited (a liveness probe that touches nothing); `/ready`
//! (cached, see [`super::ready`]) and `/metrics` are, like every other endpoint.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
pub use eslab_http::limit::{Limiter, RateLimit};

use super::AppState;
use super::error::ApiError;

/// The middleware: 429 when the peer's bucket is empty.
pub(crate) async fn rate_limit(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let Some(limiter) = state.inner.limiter.as_ref() else {
        return next.run(request).await;
    };
    if request.uri().path() == "/health" {
        return next.run(request).await;
    }
    // Without a socket (a router driven in-process) every request is one client.
    let client = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |ConnectInfo(addr)| addr.ip());
    match limiter.check(client) {
        Ok(()) => next.run(request).await,
        Err(wait) => {
            let secs = eslab_http::limit::retry_after_secs(wait);
            let mut response = ApiError::TooManyRequests(secs).into_response();
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
            response
        }
    }
}
