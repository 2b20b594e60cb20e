//! [`CallRegistry`] in memory: the calls behind a mutex, with an index by user and a queue of ringing
//! deadlines.

use std::collections::{BTreeSet, HashMap, HashSet};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use parking_lot::Mutex;

use crate::cluster::{CallChange, CallRegistry};
use crate::domain::calls::{Call, CallError};

type Key = (String, String);

#[derive(Default)]
struct State {
    calls: HashMap<Key, Call>,
    /// (account, user) → call ids.
    by_user: HashMap<Key, HashSet<String>>,
    /// (ring deadline, account, call id).
    ringing: BTreeSet<(DateTime<Utc>, String, String)>,
}

impl State {
    fn unindex(&mut self, account: &str, call: &Call) {
        for u in call.parties() {
            let k = (account.to_string(), u);
            if let Some(ids) = self.by_user.get_mut(&k) {
                ids.remove(&call.id);
                if ids.is_empty() {
                    self.by_user.remove(&k);
                }
            }
        }
        if let Some(at) = call.ring_until {
            self.ringing.remove(&(at, account.to_string(), call.id.clone()));
        }
    }

    fn index(&mut self, account: &str, call: &Call) {
        for u in call.parties() {
            self.by_user.entry((account.to_string(), u)).or_default().insert(call.id.clone());
        }
        if let Some(at) = call.ring_until {
            self.ringing.insert((at, account.to_string(), call.id.clone()));
        }
    }
}

#[derive(Default)]
pub struct MemoryCalls {
    state: Mutex<State>,
}

#[async_trait]
impl CallRegistry for MemoryCalls {
    async fn get(&self, account: &str, call_id: &str) -> Option<Call> {
        self.state.lock().calls.get(&(account.to_string(), call_id.to_string())).cloned()
    }

    async fn update(
        &self,
        account: &str,
        call_id: &str,
        change: &CallChange<'_>,
    ) -> Result<(Option<Call>, Option<Call>), CallError> {
        let mut s = self.state.lock();
        let key = (account.to_string(), call_id.to_string());
        let before = s.calls.get(&key).cloned();
        let after = change(before.as_ref())?;
        if let Some(b) = &before {
            s.unindex(account, b);
        }
        match &after {
            Some(a) => {
                s.index(account, a);
                s.calls.insert(key, a.clone());
            }
            None => {
                s.calls.remove(&key);
            }
        }
        Ok((before, after))
    }

    async fn calls_of(&self, account: &str, user: &str) -> Vec<String> {
        let s = self.state.lock();
        let mut ids: Vec<String> = s
            .by_user
            .get(&(account.to_string(), user.to_string()))
            .map(|ids| ids.iter().cloned().collect())
            .unwrap_or_default();
        ids.sort();
        ids
    }

    async fn expired(&self, now: DateTime<Utc>) -> Vec<(String, Call)> {
        let mut s = self.state.lock();
        let mut out = Vec::new();
        while let Some((at, account, id)) = s.ringing.first().cloned() {
            if at > now {
                break;
            }
            s.ringing.pop_first();
            if let Some(call) = s.calls.remove(&(account.clone(), id)) {
                s.unindex(&account, &call);
                out.push((account, call));
            }
        }
        out
    }

    async fn next_deadline(&self) -> Option<DateTime<Utc>> {
        self.state.lock().ringing.first().map(|(at, _, _)| *at)
    }
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn meets_the_call_registry_contract() {
        crate::cluster::suite::calls(|| std::sync::Arc::new(super::MemoryCalls::default())).await;
    }
}
