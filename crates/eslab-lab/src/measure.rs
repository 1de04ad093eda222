//! Measuring: latency histograms (HdrHistogram, nanoseconds) and time budgets
//! that bound every measurement loop by count and by time.

use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

/// Latencies recorded in nanoseconds, 3 significant digits, up to one hour.
#[derive(Debug, Clone)]
pub struct Latencies {
    hist: Histogram<u64>,
}

impl Latencies {
    /// An empty histogram.
    pub fn new() -> anyhow::Result<Latencies> {
        let hist = Histogram::new_with_bounds(1, 3_600_000_000_000, 3).map_err(|e| anyhow::anyhow!("{e}"))?;
        Ok(Latencies { hist })
    }

    /// Records one duration (clamped into the histogram's range).
    pub fn record(&mut self, d: Duration) {
        self.hist.saturating_record(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX).max(1));
    }

    /// Records `d / n`, `n` times' worth: the per-item time of a batch of `n`.
    pub fn record_per_item(&mut self, d: Duration, n: u32) {
        if n > 0 {
            self.record(d / n);
        }
    }

    /// Adds another histogram's values.
    pub fn merge(&mut self, other: &Latencies) -> anyhow::Result<()> {
        self.hist.add(&other.hist).map_err(|e| anyhow::anyhow!("{e}"))
    }

    /// How many values were recorded.
    pub fn count(&self) -> u64 {
        self.hist.len()
    }

    /// The value at quantile `q` (0..=1).
    pub fn quantile(&self, q: f64) -> Duration {
        Duration::from_nanos(self.hist.value_at_quantile(q))
    }

    /// The median, in milliseconds.
    pub fn p50_ms(&self) -> f64 {
        ms(self.quantile(0.5))
    }

    /// The 99th percentile, in milliseconds.
    pub fn p99_ms(&self) -> f64 {
        ms(self.quantile(0.99))
    }

    /// The median, in microseconds.
    pub fn p50_us(&self) -> f64 {
        us(self.quantile(0.5))
    }

    /// The 99th percentile, in microseconds.
    pub fn p99_us(&self) -> f64 {
        us(self.quantile(0.99))
    }
}

/// A duration in milliseconds.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// A duration in microseconds.
pub fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// `count` per second of `elapsed`.
pub fn per_second(count: u64, elapsed: Duration) -> f64 {
    let secs = elapsed.as_secs_f64();
    #[allow(clippy::cast_precision_loss)] // counts far below 2^52
    let count = count as f64;
    if secs > 0.0 { count / secs } else { f64::NAN }
}

/// How long a measurement loop runs: at least `min` iterations, then until
/// `time` has passed or `max` iterations are done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// Iterations always done.
    pub min: u64,
    /// Iterations never exceeded.
    pub max: u64,
    /// Time after which no new iteration starts (once `min` are done).
    pub time: Duration,
}

impl Budget {
    /// A budget.
    pub const fn new(min: u64, max: u64, time: Duration) -> Budget {
        Budget { min, max, time }
    }

    /// Whether iteration `done + 1` should start.
    pub fn more(&self, done: u64, started: Instant) -> bool {
        done < self.min || (done < self.max && started.elapsed() < self.time)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_come_from_the_recorded_values() {
        let mut l = Latencies::new().unwrap();
        for i in 1..=100_u64 {
            l.record(Duration::from_micros(i));
        }
        assert_eq!(l.count(), 100);
        assert!((l.p50_us() - 50.0).abs() < 0.1, "{}", l.p50_us());
        assert!((l.p99_us() - 99.0).abs() < 0.1, "{}", l.p99_us());
        let mut other = Latencies::new().unwrap();
        other.record(Duration::from_secs(1));
        l.merge(&other).unwrap();
        assert_eq!(l.count(), 101);
        assert!((per_second(10, Duration::from_millis(500)) - 20.0).abs() < 1e-9);
    }

    #[test]
    fn budgets_bound_by_count_and_time() {
        let b = Budget::new(2, 5, Duration::ZERO);
        let t = Instant::now();
        assert!(b.more(0, t) && b.more(1, t));
        assert!(!b.more(2, t), "time is up after the minimum");
        let b = Budget::new(0, 3, Duration::from_secs(60));
        assert!(b.more(2, t) && !b.more(3, t));
    }
}
