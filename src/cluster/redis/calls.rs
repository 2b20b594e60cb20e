//! [`CallRegistry`] in Redis: each call is one record (the domain's [`Call`] with its account), changed with
//! the caller's change and written back with a compare-and-set ([`Records`]), so two nodes changing one call
//! at once (a callee accepting on one node while the caller cancels on another) never both win. An unanswered
//! call whose ringing ran out is handed out by whichever node's timer deletes its record first (the others
//! find it gone). Session descriptions are never stored (they are relayed).
//!
//! Keys under `<prefix>:calls:` (parts escaped): `call:<account>:<call id>` the record {v, s}; `call-seq` its
//! version counter; `ringing` sorted set of `<account>:<call id>` by ringing deadline (ms);
//! `user:<account>:<user>` set of the call ids the user takes part in or is invited to.

use std::collections::BTreeSet;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{POLL_INTERVAL, Records, Redis, esc, first_deadline, member, score};
use crate::cluster::{CallChange, CallRegistry};
use crate::domain::calls::{Call, CallError};

/// One call's record.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Entry {
    account: String,
    call: Call,
}

/// Calls handed out per round of `expired`.
const BATCH: usize = 200;
/// Rounds of `expired` in one call at most (a backlog left is taken at the next call).
const MAX_ROUNDS: usize = 50;

pub struct RedisCalls {
    redis: Redis,
    /// `<prefix>:calls:`
    base: String,
    calls: Records<Entry>,
}

impl RedisCalls {
    pub fn new(redis: Redis) -> RedisCalls {
        RedisCalls { base: redis.key("calls:"), calls: Records::new(redis.clone(), "calls:call"), redis }
    }

    fn key(&self, rest: &str) -> String {
        format!("{}{rest}", self.base)
    }

    fn user_key(&self, account: &str, user: &str) -> String {
        self.key(&format!("user:{}:{}", esc(account), esc(user)))
    }

    /// The commands that keep the indexes in line with a call going from `before` to `after`.
    fn side(&self, id: &str, before: Option<&Entry>, after: Option<&Entry>) -> Vec<Vec<String>> {
        let mut cmds = Vec::new();
        let ringing = self.key("ringing");
        match after.and_then(|e| e.call.ring_until) {
            Some(t) => cmds.push(vec!["ZADD".into(), ringing, score(t).to_string(), id.to_string()]),
            None => cmds.push(vec!["ZREM".into(), ringing, id.to_string()]),
        }
        let parties = |e: Option<&Entry>| -> BTreeSet<String> {
            e.map(|e| e.call.parties().into_iter().collect()).unwrap_or_default()
        };
        let Some(entry) = after.or(before) else { return cmds };
        let (old, new) = (parties(before), parties(after));
        for u in old.difference(&new) {
            cmds.push(vec!["SREM".into(), self.user_key(&entry.account, u), entry.call.id.clone()]);
        }
        for u in new.difference(&old) {
            cmds.push(vec!["SADD".into(), self.user_key(&entry.account, u), entry.call.id.clone()]);
        }
        cmds
    }
}

fn unreachable_redis() -> CallError {
    CallError::Invalid("the call could not be changed: the cluster's Redis did not answer; try again".into())
}

#[async_trait]
impl CallRegistry for RedisCalls {
    async fn get(&self, account: &str, call_id: &str) -> Option<Call> {
        match self.calls.fetch(&member(account, call_id)).await {
            Ok(v) => v.record.map(|e| e.call),
            Err(e) => {
                self.redis.failed("calls get", &e);
                None
            }
        }
    }

    async fn update(
        &self,
        account: &str,
        call_id: &str,
        change: &CallChange<'_>,
    ) -> Result<(Option<Call>, Option<Call>), CallError> {
        let id = member(account, call_id);
        // Read fresh, never from this node's cache: a refusal, or a change that leaves the call as it was,
        // writes nothing, so it must be judged on the call as it is now (a call ended on another node refuses
        // the signals that came after).
        let base = match self.calls.fetch(&id).await {
            Ok(b) => b,
            Err(e) => {
                self.redis.failed("calls update", &e);
                return Err(unreachable_redis());
            }
        };
        let r = self
            .calls
            .apply(
                &id,
                Some(base),
                |before| {
                    let b = before.map(|e| &e.call);
                    match change(b) {
                        Ok(after) => {
                            let entry = after.clone().map(|call| Entry { account: account.to_string(), call });
                            (entry, Ok((b.cloned(), after)))
                        }
                        // Refused: nothing is written.
                        Err(e) => (before.cloned(), Err(e)),
                    }
                },
                |b, a| self.side(&id, b, a),
                |b, a| b == a,
            )
            .await;
        match r {
            Ok(out) => out,
            Err(e) => {
                self.redis.failed("calls update", &e);
                Err(unreachable_redis())
            }
        }
    }

    async fn calls_of(&self, account: &str, user: &str) -> Vec<String> {
        let r: ::redis::RedisResult<Vec<String>> =
            ::redis::cmd("SMEMBERS").arg(self.user_key(account, user)).query_async(&mut self.redis.conn()).await;
        match r {
            Ok(mut ids) => {
                ids.sort();
                ids
            }
            Err(e) => {
                self.redis.failed("calls of a user", &e);
                Vec::new()
            }
        }
    }

    async fn expired(&self, now: DateTime<Utc>) -> Vec<(String, Call)> {
        let mut out = Vec::new();
        let ringing = self.key("ringing");
        for _ in 0..MAX_ROUNDS {
            let batch = match self.calls.fetch_due(&ringing, now.timestamp_millis(), BATCH).await {
                Ok(b) => b,
                Err(e) => {
                    self.redis.failed("calls expired", &e);
                    return out;
                }
            };
            let n = batch.len();
            let results = self
                .calls
                .apply_many(
                    batch,
                    |_, before| match before {
                        // Still ringing with its time up: this node removes it, and hands it out.
                        Some(e) if e.call.ring_until.is_some_and(|t| t <= now) => (None, Some(e.clone())),
                        // Answered meanwhile, or not due (another node moved it): left as it is.
                        Some(e) => (Some(e.clone()), None),
                        // Gone (ended, or handed out by another node): only the deadline is dropped.
                        None => (None, None),
                    },
                    |id, b, a| self.side(id, b, a),
                    // A record missing while its deadline stays is written (as a deletion) to drop the deadline.
                    |b, a| b.is_some() && b == a,
                )
                .await;
            for (_, r) in results {
                match r {
                    Ok(Some(e)) => out.push((e.account, e.call)),
                    Ok(None) => {}
                    Err(e) => self.redis.failed("calls expired", &e),
                }
            }
            if n < BATCH {
                break;
            }
        }
        out
    }

    async fn next_deadline(&self) -> Option<DateTime<Utc>> {
        first_deadline(&self.redis, &self.key("ringing"), "calls next deadline").await
    }

    fn poll_interval(&self) -> Option<std::time::Duration> {
        Some(POLL_INTERVAL)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::super::testing::RedisServer;
    use crate::cluster::CallRegistry;
    use crate::domain::calls::{Call, CallError};

    #[tokio::test]
    async fn meets_the_call_registry_contract() {
        let server = RedisServer::start();
        let redis = server.redis().await;
        crate::cluster::suite::calls(|| Arc::new(redis.calls())).await;
        assert_eq!(redis.failures().count(), 0, "{:?}", redis.failures().last_error());
    }

    #[tokio::test]
    async fn nodes_share_calls_and_one_node_takes_an_expired_one() {
        let server = RedisServer::start();
        let redis = server.redis().await;
        let (a, b) = (redis.calls(), redis.calls());
        let t = |ms: i64| chrono::DateTime::from_timestamp_millis(1_700_000_000_000 + ms).unwrap();
        let open = |_: Option<&Call>| -> Result<Option<Call>, CallError> {
            Call::new("c1", "ann", "bob", "voice", None, t(0), t(1_000)).map(Some)
        };
        a.update("acc", "c1", &open).await.expect("opened on one node");
        assert_eq!(b.get("acc", "c1").await.map(|c| c.caller), Some("ann".into()), "seen on the other");
        assert_eq!(b.next_deadline().await, Some(t(1_000)));
        let (ga, gb) = tokio::join!(a.expired(t(1_000)), b.expired(t(1_000)));
        assert_eq!(ga.len() + gb.len(), 1, "handed out to exactly one node");
        // A call ended on one node refuses, on another that saw it going on, a change that would leave it as is.
        a.update("acc", "c2", &|_| Call::new("c2", "ann", "bob", "voice", None, t(0), t(9_000)).map(Some))
            .await
            .expect("opened");
        let keep = |c: Option<&Call>| c.cloned().map(Some).ok_or_else(|| CallError::NoCall("gone".into()));
        b.update("acc", "c2", &keep).await.expect("seen going on");
        a.update("acc", "c2", &|_| Ok(None)).await.expect("ended");
        assert!(matches!(b.update("acc", "c2", &keep).await, Err(CallError::NoCall(_))), "judged on the call as it is");
        assert!(a.get("acc", "c1").await.is_none() && b.calls_of("acc", "bob").await.is_empty());
        assert_eq!(redis.failures().count(), 0, "{:?}", redis.failures().last_error());
    }
}
