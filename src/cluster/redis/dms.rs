//! [`DmClaims`] in Redis: the pending claims on one dm id are one hash, checked and changed by one Lua
//! script, so of two users claiming a dm on two nodes at once the second confirms the pair, exactly once.
//!
//! Keys under `<prefix>:dm-claims:` (parts escaped): `<account>:<dm>` hash of `<from>:<to>` → when claimed
//! (ms). The hash expires [`DM_CLAIM_TTL`] after its latest claim, and holds [`MAX_PER_DM`] claims at most (a
//! flood of claims for made-up ids costs Redis memory only until they expire).

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::{Redis, esc, member, script};
use crate::cluster::{DM_CLAIM_TTL, DmClaims};

/// Claims kept per dm id at most.
const MAX_PER_DM: usize = 8;

/// KEYS[1] the dm's claims. ARGV[1] the claimant's field, ARGV[2] the counterpart's, ARGV[3] now (ms),
/// ARGV[4] the claims' lifetime (ms), ARGV[5] how many claims a dm keeps. 1 when the counterpart's live claim
/// confirms the pair (every claim on the dm is used up), 0 when the claim is recorded.
const CLAIM: &str = r#"
local now, ttl = tonumber(ARGV[3]), tonumber(ARGV[4])
local at = redis.call('HGET', KEYS[1], ARGV[2])
if at and tonumber(at) + ttl > now then
  redis.call('DEL', KEYS[1])
  return 1
end
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  if tonumber(all[i + 1]) + ttl <= now then
    redis.call('HDEL', KEYS[1], all[i])
  end
end
redis.call('HDEL', KEYS[1], ARGV[1])
if redis.call('HLEN', KEYS[1]) < tonumber(ARGV[5]) then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
end
if redis.call('HLEN', KEYS[1]) > 0 then
  redis.call('PEXPIRE', KEYS[1], ttl)
end
return 0
"#;

pub struct RedisDmClaims {
    redis: Redis,
    claim: ::redis::Script,
}

impl RedisDmClaims {
    pub fn new(redis: Redis) -> RedisDmClaims {
        RedisDmClaims { redis, claim: script(CLAIM) }
    }
}

#[async_trait]
impl DmClaims for RedisDmClaims {
    async fn claim(&self, account: &str, dm: &str, from: &str, to: &str, now: DateTime<Utc>) -> bool {
        let key = self.redis.key(&format!("dm-claims:{}", member(account, dm)));
        let r: ::redis::RedisResult<i64> = self
            .claim
            .key(key)
            .arg(format!("{}:{}", esc(from), esc(to)))
            .arg(format!("{}:{}", esc(to), esc(from)))
            .arg(now.timestamp_millis())
            .arg(DM_CLAIM_TTL.num_milliseconds())
            .arg(MAX_PER_DM)
            .invoke_async(&mut self.redis.conn())
            .await;
        match r {
            Ok(n) => n == 1,
            Err(e) => {
                self.redis.failed("dm claim", &e);
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::super::testing::RedisServer;
    use crate::cluster::DmClaims;

    #[tokio::test]
    async fn meets_the_dm_claims_contract() {
        let server = RedisServer::start();
        let redis = server.redis().await;
        crate::cluster::suite::dm_claims(|| Arc::new(redis.dm_claims())).await;
        assert_eq!(redis.failures().count(), 0, "{:?}", redis.failures().last_error());
    }

    #[tokio::test]
    async fn a_claim_on_one_node_is_confirmed_on_another() {
        let server = RedisServer::start();
        let redis = server.redis().await;
        let (a, b) = (redis.dm_claims(), redis.dm_claims());
        let now = chrono::Utc::now();
        assert!(!a.claim("acc", "dm:1", "ann", "bob", now).await);
        assert!(b.claim("acc", "dm:1", "bob", "ann", now).await, "the other node confirms");
        assert!(!a.claim("acc", "dm:1", "ann", "bob", now).await, "once");
        assert_eq!(redis.failures().count(), 0, "{:?}", redis.failures().last_error());
    }
}
