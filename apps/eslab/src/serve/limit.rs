//! Per-client rate limits: a token bucket per peer IP address
//! ([`governor`]'s keyed GCRA limiter), 429 with a problem body and
//! `Retry-After` when a client's bucket is empty.
//!
//! The key is the TCP peer's address: behind a reverse proxy every client
//! shares the proxy's bucket, so limit at the proxy there (or raise this one).
//! `/health` is not limited (a liveness probe that touches nothing); `/ready`
//! (cached, see [`super::ready`]) and `/metrics` are, like every other endpoint.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::clock::Clock;
use governor::{DefaultKeyedRateLimiter, Quota};

use super::AppState;
use super::error::ApiError;

/// Forget idle clients every this many checks (keeps the table bounded).
const SWEEP_EVERY: u64 = 4_096;

/// A per-client request rate: `per_second` on average, up to `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Requests per second a client may make, sustained.
    pub per_second: NonZeroU32,
    /// Requests a client may make at once after being idle (the bucket's size).
    pub burst: NonZeroU32,
}

impl RateLimit {
    /// `per_second` sustained with a burst of `burst` (at least 1); `None`
    /// when `per_second` is 0 (no limit).
    pub fn new(per_second: u32, burst: u32) -> Option<Self> {
        let per_second = NonZeroU32::new(per_second)?;
        Some(RateLimit { per_second, burst: NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN) })
    }
}

/// The limiter the service shares between requests.
pub(crate) struct Limiter {
    buckets: DefaultKeyedRateLimiter<IpAddr>,
    checks: AtomicU64,
}

impl std::fmt::Debug for Limiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limiter").field("clients", &self.buckets.len()).finish_non_exhaustive()
    }
}

impl Limiter {
    pub(crate) fn new(limit: RateLimit) -> Self {
        let quota = Quota::per_second(limit.per_second).allow_burst(limit.burst);
        Limiter { buckets: governor::RateLimiter::keyed(quota), checks: AtomicU64::new(0) }
    }

    /// `Ok` when `client` may make a request now, else how long until it may.
    fn check(&self, client: IpAddr) -> Result<(), Duration> {
        if self.checks.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY == SWEEP_EVERY - 1 {
            self.buckets.retain_recent();
            self.buckets.shrink_to_fit();
        }
        self.buckets.check_key(&client).map_err(|not_until| not_until.wait_time_from(self.buckets.clock().now()))
    }
}

/// Seconds to put in `Retry-After` (whole seconds, at least 1).
fn retry_after_secs(wait: Duration) -> u64 {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    secs.max(1)
}

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
            let secs = retry_after_secs(wait);
            let mut response = ApiError::TooManyRequests(secs).into_response();
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
            response
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(10)), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1_000)), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1_001)), 2);
    }

    #[test]
    fn zero_per_second_is_no_limit() {
        assert_eq!(RateLimit::new(0, 10), None);
        assert_eq!(RateLimit::new(5, 0).map(|l| l.burst.get()), Some(1));
    }

    #[test]
    fn the_bucket_empties_per_client() {
        let Some(limit) = RateLimit::new(1, 2) else { panic!("a limit") };
        let limiter = Limiter::new(limit);
        let (a, b) = (IpAddr::from([10, 0, 0, 1]), IpAddr::from([10, 0, 0, 2]));
        assert_eq!(limiter.check(a), Ok(()));
        assert_eq!(limiter.check(a), Ok(()));
        assert!(limiter.check(a).is_err_and(|wait| wait <= Duration::from_secs(1)));
        assert_eq!(limiter.check(b), Ok(()), "another client has its own bucket");
    }
}
