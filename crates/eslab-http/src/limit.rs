//! Per-client rate limits: a token bucket per client IP address
//! ([`governor`]'s keyed GCRA limiter) whose table of clients stays bounded
//! (idle clients are forgotten). A service answers 429 with `Retry-After`
//! ([`retry_after_secs`]) when [`Limiter::check`] says to wait.
//!
//! Keyed by the TCP peer's address, behind a reverse proxy every client
//! shares the proxy's bucket: limit at the proxy there (or raise this one).

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use governor::clock::Clock;
use governor::{DefaultKeyedRateLimiter, Quota};

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

/// The limiter a service shares between requests.
pub struct Limiter {
    buckets: DefaultKeyedRateLimiter<IpAddr>,
    checks: AtomicU64,
}

impl std::fmt::Debug for Limiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limiter").field("clients", &self.buckets.len()).finish_non_exhaustive()
    }
}

impl Limiter {
    /// A limiter allowing `limit` per client.
    pub fn new(limit: RateLimit) -> Self {
        let quota = Quota::per_second(limit.per_second).allow_burst(limit.burst);
        Limiter { buckets: governor::RateLimiter::keyed(quota), checks: AtomicU64::new(0) }
    }

    /// `Ok` when `client` may make a request now, else how long until it may.
    pub fn check(&self, client: IpAddr) -> Result<(), Duration> {
        if self.checks.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY == SWEEP_EVERY - 1 {
            self.buckets.retain_recent();
            self.buckets.shrink_to_fit();
        }
        self.buckets.check_key(&client).map_err(|not_until| not_until.wait_time_from(self.buckets.clock().now()))
    }
}

/// Seconds to put in `Retry-After` (whole seconds, at least 1).
pub fn retry_after_secs(wait: Duration) -> u64 {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    secs.max(1)
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
