//! [`RateLimiter`] shared through Redis, with the hot path off the network.
//!
//! `allow` is asked on every inbound event, synchronously: it takes a point from a local token bucket, exactly
//! as the memory limiter does, and counts it. A background task ([`RedisRateLimiter::spawn_sync`], every
//! [`SYNC_INTERVAL`]) sends the points spent since its last round to a shared bucket per budget in Redis (one
//! script for every budget of the round: refill by Redis time, subtract), and lowers each local bucket to
//! what the shared one has left. A budget that another node also spends (its shared value came back lower
//! than the local one) is also read back in the rounds where this node spent nothing, until it refills.
//!
//! Accuracy, for a budget of capacity C refilling at r points per second, spent through N nodes, with the
//! sync interval I (plus one round trip): each node admits at most what its local bucket holds, and learns
//! what the others spent within one interval. So in any window the nodes together admit at most what one
//! bucket would, plus (N − 1)·(C + r·I) — each other node's local view, spent before it hears of the rest.
//! That excess is charged to the shared bucket as a debt (it goes below zero), so the user is refused on
//! every node until it has refilled past it: over time the budget holds exactly. A user on one node is
//! limited exactly as without Redis. While Redis is unreachable each node limits on its own (at most N·C in a
//! burst), and the points spent meanwhile are sent once it answers.
//!
//! Keys: `<prefix>:rate:ev:<account>:<subject>`, `<prefix>:rate:ip:<address>` (connects) and
//! `<prefix>:rate:key:<address>` (wrong API keys) hashes {t tokens, u updated
//! (ms, Redis time)}, expiring when they would have refilled completely.

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use ::redis::Script;
use dashmap::DashMap;

use super::{Redis, esc};
use crate::cluster::{Budget, RateLimiter};
use crate::domain::ratelimit::{KEY_GUESSES, Rate, TokenBucket};

/// How often a node reconciles its budgets with the shared ones.
pub const SYNC_INTERVAL: Duration = Duration::from_millis(250);
/// Budgets per script call of a round.
const BATCH: usize = 500;

/// KEYS: the budgets; ARGV: capacity, period (ms), points spent, for each. Returns the points left of each.
const SYNC: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local out = {}
for i, key in ipairs(KEYS) do
  local cap, per, spent = tonumber(ARGV[3 * i - 2]), tonumber(ARGV[3 * i - 1]), tonumber(ARGV[3 * i])
  local h = redis.call('HMGET', key, 't', 'u')
  local tokens, at = tonumber(h[1]), tonumber(h[2])
  if not tokens then tokens, at = cap, now end
  tokens = math.min(cap, tokens + math.max(0, now - at) * cap / per) - spent
  if spent > 0 or h[1] then
    redis.call('HSET', key, 't', tostring(tokens), 'u', now)
    redis.call('PEXPIRE', key, math.max(1, math.ceil((cap - tokens) * per / cap)))
  end
  out[i] = tostring(tokens)
end
return out
"#;

struct Local {
    bucket: TokenBucket,
    /// Points taken here since the last round sent them.
    unsynced: u32,
    /// Another node spends this budget too: read it back every round until it refills.
    shared: bool,
}

pub struct RedisRateLimiter {
    redis: Redis,
    events: Option<Rate>,
    connects: Option<Rate>,
    /// `<prefix>:rate:`
    base: String,
    buckets: DashMap<Budget, Local>,
    sync: Script,
}

impl RedisRateLimiter {
    /// `events`: per user (or anonymous socket), `connects`: per address; None: unlimited.
    pub fn new(redis: Redis, events: Option<Rate>, connects: Option<Rate>) -> RedisRateLimiter {
        RedisRateLimiter {
            base: redis.key("rate:"),
            redis,
            events,
            connects,
            buckets: DashMap::new(),
            sync: Script::new(SYNC),
        }
    }

    fn rate(&self, budget: &Budget) -> Option<Rate> {
        match budget {
            Budget::Events { .. } => self.events,
            Budget::Connects(_) => self.connects,
            Budget::KeyGuesses(_) => Some(KEY_GUESSES),
        }
    }

    fn key(&self, budget: &Budget) -> String {
        match budget {
            Budget::Events { account, subject } => format!("{}ev:{}:{}", self.base, esc(account), esc(subject)),
            Budget::Connects(ip) => format!("{}ip:{}", self.base, esc(&ip.to_string())),
            Budget::KeyGuesses(ip) => format!("{}key:{}", self.base, esc(&ip.to_string())),
        }
    }

    /// Reconciles with the shared budgets in Redis every `every`, until the limiter is dropped (or the task
    /// aborted).
    pub fn spawn_sync(self: &Arc<Self>, every: Duration) -> tokio::task::JoinHandle<()> {
        let me: Weak<Self> = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let Some(l) = me.upgrade() else { return };
                l.sync().await;
            }
        })
    }

    /// One round: sends the points spent here, lowers the local buckets to what is left cluster-wide.
    pub async fn sync(&self) {
        let now = Instant::now();
        let mut round: Vec<(Budget, Rate, u32)> = Vec::new();
        for mut e in self.buckets.iter_mut() {
            let Some(rate) = self.rate(e.key()) else { continue };
            let (budget, l) = e.pair_mut();
            if l.unsynced > 0 || (l.shared && !l.bucket.is_idle(rate, now)) {
                round.push((budget.clone(), rate, std::mem::take(&mut l.unsynced)));
            }
        }
        for chunk in round.chunks(BATCH) {
            let mut inv = self.sync.prepare_invoke();
            for (budget, rate, spent) in chunk {
                let period_ms = u64::try_from(rate.period.as_millis()).unwrap_or(u64::MAX).max(1);
                inv.key(self.key(budget)).arg(rate.capacity).arg(period_ms).arg(*spent);
            }
            match inv.invoke_async::<Vec<String>>(&mut self.redis.conn()).await {
                Ok(left) => {
                    let now = Instant::now();
                    for ((budget, rate, _), left) in chunk.iter().zip(left) {
                        let Ok(left) = left.parse::<f64>() else { continue };
                        if let Some(mut l) = self.buckets.get_mut(budget) {
                            // What is left cluster-wide, less what was taken here since the round was sent.
                            let target = left - f64::from(l.unsynced);
                            if target < l.bucket.tokens(*rate, now) - 0.5 {
                                l.shared = true;
                            }
                            l.bucket.limit(*rate, target, now);
                        }
                    }
                }
                Err(e) => {
                    self.redis.failed("rate limit sync", &e);
                    // Sent again next round.
                    for (budget, _, spent) in chunk {
                        if let Some(mut l) = self.buckets.get_mut(budget) {
                            l.unsynced += spent;
                        }
                    }
                }
            }
        }
    }
}

impl RateLimiter for RedisRateLimiter {
    fn allow(&self, budget: &Budget, now: Instant) -> bool {
        let Some(rate) = self.rate(budget) else { return true };
        let mut l = self.buckets.entry(budget.clone()).or_insert_with(|| Local {
            bucket: TokenBucket::full(rate, now),
            unsynced: 0,
            shared: false,
        });
        let ok = l.bucket.take(rate, now);
        if ok {
            l.unsynced += 1;
        }
        ok
    }

    /// The local view: what this node spent, lowered by every round to what is left cluster-wide.
    fn exhausted(&self, budget: &Budget, now: Instant) -> Option<Duration> {
        let rate = self.rate(budget)?;
        self.buckets.get_mut(budget)?.bucket.wait(rate, now)
    }

    fn sweep(&self, now: Instant) {
        let never = Rate { capacity: 1, period: Duration::MAX };
        self.buckets.retain(|b, l| l.unsynced > 0 || !l.bucket.is_idle(self.rate(b).unwrap_or(never), now));
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::super::testing::RedisServer;
    use crate::domain::ratelimit::Rate;

    #[tokio::test]
    async fn meets_the_rate_limiter_contract() {
        let server = RedisServer::start();
        let redis = server.redis().await;
        crate::cluster::suite::rate_limiter(|events, connects| Arc::new(redis.rate_limiter(events, connects)));
        assert_eq!(redis.failures().count(), 0, "{:?}", redis.failures().last_error());
    }

    #[tokio::test]
    async fn meets_the_shared_rate_limiter_contract() {
        let server = RedisServer::start();
        let redis = server.redis().await;
        let rate = Some(Rate { capacity: 4, period: Duration::from_secs(600) });
        let (a, b) = (Arc::new(redis.rate_limiter(rate, None)), Arc::new(redis.rate_limiter(rate, None)));
        let settle = || {
            let (a, b) = (a.clone(), b.clone());
            async move {
                a.sync().await;
                b.sync().await;
                a.sync().await;
            }
        };
        crate::cluster::suite::rate_limiter_cluster(a.clone(), b.clone(), settle).await;
        assert_eq!(redis.failures().count(), 0);
    }
}
