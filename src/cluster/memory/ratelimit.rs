//! [`RateLimiter`] in memory: one token bucket per budget.

use std::time::{Duration, Instant};

use dashmap::DashMap;

use crate::cluster::{Budget, RateLimiter};
use crate::domain::ratelimit::{KEY_GUESSES, Rate, TokenBucket};

pub struct MemoryRateLimiter {
    /// Per user (or anonymous socket); None: unlimited.
    events: Option<Rate>,
    /// Per address; None: unlimited.
    connects: Option<Rate>,
    buckets: DashMap<Budget, TokenBucket>,
}

impl MemoryRateLimiter {
    pub fn new(events: Option<Rate>, connects: Option<Rate>) -> MemoryRateLimiter {
        MemoryRateLimiter { events, connects, buckets: DashMap::new() }
    }

    fn rate(&self, budget: &Budget) -> Option<Rate> {
        match budget {
            Budget::Events { .. } => self.events,
            Budget::Connects(_) => self.connects,
            Budget::KeyGuesses(_) => Some(KEY_GUESSES),
        }
    }
}

impl RateLimiter for MemoryRateLimiter {
    fn allow(&self, budget: &Budget, now: Instant) -> bool {
        let Some(rate) = self.rate(budget) else { return true };
        self.buckets.entry(budget.clone()).or_insert_with(|| TokenBucket::full(rate, now)).take(rate, now)
    }

    fn exhausted(&self, budget: &Budget, now: Instant) -> Option<Duration> {
        let rate = self.rate(budget)?;
        self.buckets.get_mut(budget)?.wait(rate, now)
    }

    fn sweep(&self, now: Instant) {
        let never = Rate { capacity: 1, period: Duration::MAX };
        self.buckets.retain(|b, bucket| !bucket.is_idle(self.rate(b).unwrap_or(never), now));
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn meets_the_rate_limiter_contract() {
        crate::cluster::suite::rate_limiter(|events, connects| {
            std::sync::Arc::new(super::MemoryRateLimiter::new(events, connects))
        });
    }
}
