//! [`DmClaims`] in memory: pending claims per dm id, expiring, bounded.

use std::collections::HashMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use parking_lot::Mutex;

use crate::cluster::{DM_CLAIM_TTL, DmClaims};

/// Claims kept at most (a flood of claims for made-up ids cannot grow memory without end).
const MAX_CLAIMS: usize = 100_000;
/// Claims kept per dm id at most.
const MAX_PER_DM: usize = 8;

/// (from, to, at).
type Claim = (String, String, DateTime<Utc>);

#[derive(Default)]
pub struct MemoryDmClaims {
    claims: Mutex<HashMap<(String, String), Vec<Claim>>>,
}

#[async_trait]
impl DmClaims for MemoryDmClaims {
    async fn claim(&self, account: &str, dm: &str, from: &str, to: &str, now: DateTime<Utc>) -> bool {
        let mut all = self.claims.lock();
        let total: usize = all.values().map(Vec::len).sum();
        if total >= MAX_CLAIMS {
            all.retain(|_, list| {
                list.retain(|(_, _, at)| *at + DM_CLAIM_TTL > now);
                !list.is_empty()
            });
        }
        let key = (account.to_string(), dm.to_string());
        let list = all.entry(key.clone()).or_default();
        list.retain(|(_, _, at)| *at + DM_CLAIM_TTL > now);
        if list.iter().any(|(f, t, _)| f == to && t == from) {
            all.remove(&key);
            return true;
        }
        list.retain(|(f, t, _)| !(f == from && t == to));
        if list.len() < MAX_PER_DM {
            list.push((from.to_string(), to.to_string(), now));
        }
        if list.is_empty() {
            all.remove(&key);
        }
        false
    }
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn meets_the_dm_claims_contract() {
        crate::cluster::suite::dm_claims(|| std::sync::Arc::new(super::MemoryDmClaims::default())).await;
    }
}
