//! Token buckets: per-user events (`REALTIME_RATE_LIMIT_POINTS` per `REALTIME_RATE_LIMIT_DURATION`) and
//! per-IP new connections (`REALTIME_RATE_LIMIT` per minute). Time is passed in, so tests are exact.

use std::time::{Duration, Instant};

/// A bucket that holds up to `capacity` points and refills `capacity` points per `period`, continuously.
/// A full bucket admits a burst (a reconnecting client's joins and offline queue), then the steady rate.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    tokens: f64,
    updated: Instant,
}

#[derive(Debug, Clone, Copy)]
pub struct Rate {
    pub capacity: u32,
    pub period: Duration,
}

impl TokenBucket {
    pub fn full(rate: Rate, now: Instant) -> TokenBucket {
        TokenBucket { tokens: rate.capacity as f64, updated: now }
    }

    /// Takes one point; false when the bucket is empty.
    pub fn take(&mut self, rate: Rate, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        let per_sec = rate.capacity as f64 / rate.period.as_secs_f64().max(0.001);
        self.tokens = (self.tokens + elapsed * per_sec).min(rate.capacity as f64);
        self.updated = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// True when the bucket has refilled completely, so its entry can be forgotten.
    pub fn is_idle(&self, rate: Rate, now: Instant) -> bool {
        now.saturating_duration_since(self.updated) >= rate.period
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_steady_rate() {
        let rate = Rate { capacity: 5, period: Duration::from_secs(60) };
        let t0 = Instant::now();
        let mut b = TokenBucket::full(rate, t0);
        for _ in 0..5 {
            assert!(b.take(rate, t0));
        }
        assert!(!b.take(rate, t0), "the sixth event in the window is refused");
        assert!(!b.take(rate, t0 + Duration::from_secs(11)), "one point needs 12 s");
        assert!(b.take(rate, t0 + Duration::from_secs(12)));
        assert!(b.is_idle(rate, t0 + Duration::from_secs(80)));
    }
}
