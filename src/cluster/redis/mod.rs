//! The cluster seams in Redis: what several nodes share (the roster, presence, typing, rate budgets) lives in
//! one Redis, under one key prefix (`REALTIME_REDIS_PREFIX`), so two deployments (or two tests) can share a
//! server. The key schema is in docs/architecture.md ("Cluster state in Redis").
//!
//! The rules stay those of `domain/`: presence and typing keep each user's (each room's) state as a
//! serialized record ([`crate::domain::presence::UserState`], [`crate::domain::typing::RoomState`]) that a node
//! reads, changes with the pure domain functions, and writes back with a compare-and-set on its version (one
//! Lua script, [`Records`]) — so of two nodes acting on one record at once, one wins and the other retries on
//! the new state, and an event due on a record (a coalesced publication, an expiry, a grace) is handed out by
//! exactly one node although every node's timer asks. The roster's counting is simple enough to live in Lua
//! scripts, one per operation. The rate limiter keeps its buckets local and reconciles them in the
//! background (see [`ratelimit`]).
//!
//! Every operation is one round trip (one script, or one pipeline) where the domain allows it, never one per
//! socket. A Redis error never reaches the caller: it is counted and logged (see [`Failures`]) and the
//! operation answers as if nothing were recorded, so a node keeps serving its own sockets while Redis is away.
//!
//! Standalone Redis (with replicas or Sentinel) is supported; the scripts touch keys they compute, which
//! Redis Cluster does not allow.

pub mod nodes;
mod presence;
pub mod pubsub;
pub mod ratelimit;
mod records;
mod roster;
#[cfg(test)]
pub(crate) mod testing;
mod typing;

use std::borrow::Cow;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use ::redis::aio::{ConnectionManager, ConnectionManagerConfig};
use chrono::{DateTime, Utc};
use parking_lot::Mutex;

pub use presence::RedisPresence;
pub use ratelimit::RedisRateLimiter;
pub use roster::RedisRoster;
pub use typing::RedisTyping;

use crate::domain::presence::PresenceConfig;
use crate::domain::ratelimit::Rate;
use crate::domain::typing::TypingConfig;
pub(crate) use records::Records;

/// Default `REALTIME_REDIS_PREFIX`.
pub const DEFAULT_PREFIX: &str = "nself-realtime";

/// How often a node's timers look for deadlines set by other nodes (a node that stopped or died leaves its
/// graces and expiries to the others).
pub const POLL_INTERVAL: Duration = Duration::from_secs(1);

/// One Redis, one prefix: the connection every backend of a node shares, and where their failures are
/// counted. Build the backends from it.
#[derive(Clone)]
pub struct Redis {
    conn: ConnectionManager,
    prefix: Arc<str>,
    failures: Arc<Failures>,
}

impl Redis {
    /// A connection that opens on first use and reconnects by itself: a node starts, and keeps serving its
    /// own sockets, while Redis is unreachable. Operations time out after 2 s.
    pub fn new(client: ::redis::Client, prefix: &str) -> ::redis::RedisResult<Redis> {
        Ok(Redis::from_connection(lazy_connection(client)?, prefix))
    }

    /// Over a connection made elsewhere.
    pub fn from_connection(conn: ConnectionManager, prefix: &str) -> Redis {
        let prefix = if prefix.is_empty() { DEFAULT_PREFIX } else { prefix };
        Redis { conn, prefix: prefix.into(), failures: Arc::new(Failures::default()) }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Failed Redis operations of every backend built from this handle.
    pub fn failures(&self) -> &Arc<Failures> {
        &self.failures
    }

    /// The roster; `grace`: how long a user whose last socket closed stays present in its rooms.
    pub fn roster(&self, grace: Duration) -> RedisRoster {
        RedisRoster::new(self.clone(), grace)
    }

    /// Presence; `node`: this node's id (its devices are purged with it).
    pub fn presence(&self, node: &str, cfg: PresenceConfig) -> RedisPresence {
        RedisPresence::new(self.clone(), node, cfg)
    }

    /// Typing; `node`: this node's id (its sockets are purged with it).
    pub fn typing(&self, node: &str, cfg: TypingConfig) -> RedisTyping {
        RedisTyping::new(self.clone(), node, cfg)
    }

    /// Rate budgets (None: unlimited), reconciled by [`RedisRateLimiter::spawn_sync`].
    pub fn rate_limiter(&self, events: Option<Rate>, connects: Option<Rate>) -> RedisRateLimiter {
        RedisRateLimiter::new(self.clone(), events, connects)
    }

    /// `<prefix>:<rest>`.
    fn key(&self, rest: &str) -> String {
        format!("{}:{rest}", self.prefix)
    }

    fn conn(&self) -> ConnectionManager {
        self.conn.clone()
    }

    /// Notes a failed operation; `what` names it in the log.
    fn failed(&self, what: &str, e: &::redis::RedisError) {
        self.failures.note(what, e);
    }
}

/// A connection that opens on first use and reconnects by itself; operations time out after 2 s.
pub fn lazy_connection(client: ::redis::Client) -> ::redis::RedisResult<ConnectionManager> {
    let cfg = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(2)))
        .set_response_timeout(Some(Duration::from_secs(2)))
        .set_max_delay(Duration::from_secs(2))
        // One attempt per reconnection: while Redis refuses, an operation fails at once (and the next one
        // tries again) instead of waiting through a series of retries; callers never wait for Redis.
        .set_number_of_retries(0);
    ConnectionManager::new_lazy_with_config(client, cfg)
}

/// Failed Redis operations: counted, and logged once per 10 s (the first at once), so an outage is visible
/// without flooding the log.
#[derive(Default)]
pub struct Failures {
    count: AtomicU64,
    last: Mutex<Option<(std::time::Instant, String)>>,
}

impl Failures {
    fn note(&self, what: &str, e: &::redis::RedisError) {
        let n = self.count.fetch_add(1, Ordering::Relaxed) + 1;
        let mut last = self.last.lock();
        let quiet = last.as_ref().is_some_and(|(at, _)| at.elapsed() < Duration::from_secs(10));
        *last = Some((if quiet { last.as_ref().expect("quiet").0 } else { std::time::Instant::now() }, e.to_string()));
        if !quiet {
            tracing::warn!(
                error = %e,
                operation = what,
                failures = n,
                "Redis operation failed; cluster state is out of date until Redis answers again"
            );
        }
    }

    /// How many operations failed since start.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// The latest error, if any.
    pub fn last_error(&self) -> Option<String> {
        self.last.lock().as_ref().map(|(_, e)| e.clone())
    }
}

// ---------------------------------------------------------------------------------------------
// Key parts and time
// ---------------------------------------------------------------------------------------------

/// A key part with `:` (the separator) and `%` escaped, so `<account>:<user>` is unambiguous whatever the
/// names hold. The Lua scripts escape alike (`esc` in [`LUA_LIB`]).
fn esc(part: &str) -> Cow<'_, str> {
    if part.contains([':', '%']) {
        Cow::Owned(part.replace('%', "%25").replace(':', "%3A"))
    } else {
        Cow::Borrowed(part)
    }
}

fn unesc(part: &str) -> String {
    if part.contains('%') { part.replace("%3A", ":").replace("%25", "%") } else { part.to_string() }
}

/// `<account>:<name>`, escaped: the member naming a user (or a room) of an account.
fn member(account: &str, name: &str) -> String {
    format!("{}:{}", esc(account), esc(name))
}

/// The parts of a member made by [`member`] (or of more parts).
fn parts(member: &str) -> Vec<String> {
    member.split(':').map(unesc).collect()
}

/// A deadline as a sorted-set score: milliseconds, rounded up, so a timer woken at the score finds it due.
fn score(t: DateTime<Utc>) -> i64 {
    let ms = t.timestamp_millis();
    if t.timestamp_subsec_nanos().is_multiple_of(1_000_000) { ms } else { ms + 1 }
}

fn from_score(ms: i64) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp_millis(ms)
}

/// Lua shared by the scripts: `esc` escapes a key part as [`esc`] does.
const LUA_LIB: &str = r#"
local function esc(s)
  return (string.gsub(string.gsub(s, '%%', '%%25'), ':', '%%3A'))
end
"#;

fn script(body: &str) -> ::redis::Script {
    ::redis::Script::new(&format!("{LUA_LIB}\n{body}"))
}

/// The earliest member of a sorted set of deadlines.
async fn first_deadline(redis: &Redis, zset: &str, what: &str) -> Option<DateTime<Utc>> {
    let r: ::redis::RedisResult<Vec<(String, i64)>> =
        ::redis::cmd("ZRANGE").arg(zset).arg(0).arg(0).arg("WITHSCORES").query_async(&mut redis.conn()).await;
    match r {
        Ok(v) => v.first().and_then(|(_, s)| from_score(*s)),
        Err(e) => {
            redis.failed(what, &e);
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_parts_round_trip() {
        for name in ["plain", "channel:general", "100%", "a:%3A:b", ""] {
            assert!(!esc(name).contains(':'));
            assert_eq!(unesc(&esc(name)), name);
        }
        assert_eq!(parts(&member("acc:1", "dm:a:b")), vec!["acc:1", "dm:a:b"]);
    }

    #[test]
    fn scores_round_up_to_the_millisecond() {
        let t = DateTime::from_timestamp_millis(1_700_000_000_123).unwrap();
        assert_eq!(score(t), 1_700_000_000_123);
        assert_eq!(score(t + chrono::Duration::microseconds(1)), 1_700_000_000_124);
        assert_eq!(from_score(score(t)), Some(t));
    }
}
