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
        self.refill(rate, now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Points left at `now` (refilled to then); negative while a debt is being repaid.
    pub fn tokens(&mut self, rate: Rate, now: Instant) -> f64 {
        self.refill(rate, now);
        self.tokens
    }

    /// How long until a point is back (None: one is there now).
    pub fn wait(&mut self, rate: Rate, now: Instant) -> Option<Duration> {
        let tokens = self.tokens(rate, now);
        (tokens < 1.0).then(|| {
            let per_sec = rate.capacity as f64 / rate.period.as_secs_f64().max(0.001);
            Duration::from_secs_f64((1.0 - tokens) / per_sec)
        })
    }

    /// Lowers the points left to `max` if there are more (a shared budget was spent elsewhere); `max` may be
    /// negative: the bucket refuses until it has refilled past it.
    pub fn limit(&mut self, rate: Rate, max: f64, now: Instant) {
        self.refill(rate, now);
        self.tokens = self.tokens.min(max);
    }

    fn refill(&mut self, rate: Rate, now: Instant) {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        let per_sec = rate.capacity as f64 / rate.period.as_secs_f64().max(0.001);
        self.tokens = (self.tokens + elapsed * per_sec).min(rate.capacity as f64);
        self.updated = self.updated.max(now);
    }

    /// True when the bucket has refilled completely, so its entry can be forgotten.
    pub fn is_idle(&self, rate: Rate, now: Instant) -> bool {
        now.saturating_duration_since(self.updated) >= rate.period
    }
}

/// Wrong API keys an address may present: 10 a minute (one more every 6 s), then every request from it is
/// refused, right key or not (a guess cannot be confirmed), until a point refills.
pub const KEY_GUESSES: Rate = Rate { capacity: 10, period: Duration::from_secs(60) };

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wait_says_how_long_until_a_point_is_back() {
        let t0 = Instant::now();
        let rate = Rate { capacity: 3, period: Duration::from_secs(30) };
        let mut b = TokenBucket::full(rate, t0);
        for _ in 0..3 {
            assert_eq!(b.wait(rate, t0), None);
            assert!(b.take(rate, t0));
        }
        let wait = b.wait(rate, t0).expect("empty after 3 points");
        assert!(wait > Duration::from_secs(9) && wait <= Duration::from_secs(10), "{wait:?}");
        let wait = b.wait(rate, t0 + Duration::from_secs(5)).expect("half a point refilled");
        assert!(
            wait > Duration::from_millis(4_900) && wait <= Duration::from_millis(5_001),
            "the other half: {wait:?}"
        );
        assert_eq!(b.wait(rate, t0 + Duration::from_secs(10)), None, "one point refilled");
        b.limit(rate, -2.0, t0 + Duration::from_secs(10));
        let wait = b.wait(rate, t0 + Duration::from_secs(10)).expect("a debt");
        assert!(wait > Duration::from_secs(29) && wait <= Duration::from_secs(30), "3 points to repay: {wait:?}");
    }

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
        assert!(!b.is_idle(rate, t0 + Duration::from_secs(71)), "used at 12 s: idle a period later");
        assert!(b.is_idle(rate, t0 + Duration::from_secs(72)));
    }

    #[test]
    fn a_limit_lowers_the_points_and_a_debt_is_repaid_by_refill() {
        let rate = Rate { capacity: 5, period: Duration::from_secs(5) };
        let t0 = Instant::now();
        let mut b = TokenBucket::full(rate, t0);
        b.limit(rate, 10.0, t0);
        assert_eq!(b.tokens(rate, t0), 5.0, "a limit never raises");
        b.limit(rate, -2.0, t0);
        assert!(!b.take(rate, t0 + Duration::from_secs(2)), "-2 + 2 refilled: still under one point");
        assert!(b.take(rate, t0 + Duration::from_secs(3)));
    }
}
