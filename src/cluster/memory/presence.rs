//! [`PresenceBackend`] in memory: the presence tracker behind a mutex, and the subscription, audience,
//! settings and last-seen maps beside it.

use std::collections::{HashMap, HashSet};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use dashmap::DashMap;
use parking_lot::Mutex;

use crate::cluster::PresenceBackend;
use crate::domain::presence::{
    CustomStatus, Presence, PresenceConfig, PresenceEvent, PresenceTracker, PresenceUpdate, PrivacySettings,
    StatusBreakdown, UpdateOutcome, ViewedPresence,
};

type UserKey = (String, String);

fn key(account: &str, user: &str) -> UserKey {
    (account.to_string(), user.to_string())
}

/// What is kept beside a user's presence: one record per user rather than one map each, since every
/// connected user has settings and rooms.
#[derive(Default)]
struct Known {
    settings: Option<PrivacySettings>,
    /// Rooms the user was last seen in, so an offline announcement reaches room-mates after the user's
    /// sockets are gone. Sized to them (a user is in a handful).
    rooms: Vec<Box<str>>,
    /// Last seen of a session that ended here, known before the database write lands.
    last_seen: Option<DateTime<Utc>>,
}

pub struct MemoryPresence {
    /// The node whose devices these are (all of them: memory is one node's).
    node: String,
    tracker: Mutex<PresenceTracker>,
    known: DashMap<UserKey, Known>,
    /// target → viewer → how many of the viewer's sockets subscribed.
    subscribers: DashMap<UserKey, HashMap<String, u32>>,
    /// socket → its (account, viewer) and the targets it subscribed to (undone when it closes).
    by_socket: DashMap<String, (UserKey, HashSet<String>)>,
}

impl MemoryPresence {
    pub fn new(cfg: PresenceConfig) -> MemoryPresence {
        MemoryPresence {
            node: String::new(),
            tracker: Mutex::new(PresenceTracker::new(cfg)),
            known: DashMap::new(),
            subscribers: DashMap::new(),
            by_socket: DashMap::new(),
        }
    }

    /// Names the node these devices are on (for [`PresenceBackend::purge_node`]).
    pub fn on_node(mut self, node: &str) -> MemoryPresence {
        self.node = node.to_string();
        self
    }

    fn unsubscribe_one(&self, account: &str, viewer: &str, target: &str) {
        let k = key(account, target);
        let empty = match self.subscribers.get_mut(&k) {
            Some(mut subs) => {
                if let Some(n) = subs.get_mut(viewer) {
                    *n = n.saturating_sub(1);
                    if *n == 0 {
                        subs.remove(viewer);
                    }
                }
                subs.is_empty()
            }
            None => false,
        };
        if empty {
            self.subscribers.remove_if(&k, |_, s| s.is_empty());
        }
    }
}

#[async_trait]
impl PresenceBackend for MemoryPresence {
    async fn connect(&self, account: &str, user: &str, device: &str, now: DateTime<Utc>) {
        self.tracker.lock().connect(account, user, device, now);
    }

    async fn disconnect(&self, account: &str, user: &str, device: &str, now: DateTime<Utc>) {
        self.tracker.lock().disconnect(account, user, device, now);
    }

    async fn update(
        &self,
        account: &str,
        user: &str,
        device: &str,
        update: PresenceUpdate,
        now: DateTime<Utc>,
    ) -> UpdateOutcome {
        self.tracker.lock().update(account, user, device, update, now)
    }

    async fn touch(&self, account: &str, user: &str, device: &str, now: DateTime<Utc>) -> UpdateOutcome {
        self.tracker.lock().touch(account, user, device, now)
    }

    async fn restore(
        &self,
        account: &str,
        user: &str,
        last_seen: Option<DateTime<Utc>>,
        custom: Option<CustomStatus>,
        now: DateTime<Utc>,
    ) {
        self.tracker.lock().restore(account, user, last_seen, custom, now);
    }

    async fn published(&self, account: &str, user: &str) -> Option<Presence> {
        self.tracker.lock().get(account, user)
    }

    async fn current(&self, account: &str, user: &str) -> Option<Presence> {
        self.tracker.lock().current(account, user)
    }

    async fn answer(
        &self,
        account: &str,
        target: &str,
        viewer: Option<&str>,
        view: &(dyn for<'p> Fn(&'p Presence) -> ViewedPresence + Send + Sync),
    ) -> Option<ViewedPresence> {
        self.tracker.lock().answer(account, target, viewer, view)
    }

    async fn is_connected(&self, account: &str, user: &str) -> bool {
        self.tracker.lock().is_connected(account, user)
    }

    async fn due(&self, now: DateTime<Utc>) -> Vec<PresenceEvent> {
        self.tracker.lock().tick(now)
    }

    async fn next_deadline(&self) -> Option<DateTime<Utc>> {
        self.tracker.lock().next_deadline()
    }

    async fn end_all_graces(&self) -> Vec<PresenceEvent> {
        self.tracker.lock().end_all_graces()
    }

    async fn breakdown(&self, account: &str) -> StatusBreakdown {
        self.tracker.lock().breakdown(account)
    }

    async fn subscribe(&self, account: &str, viewer: &str, sid: &str, targets: &[String]) {
        let mut mine = self.by_socket.entry(sid.to_string()).or_insert_with(|| (key(account, viewer), HashSet::new()));
        for t in targets {
            if mine.1.insert(t.clone()) {
                *self.subscribers.entry(key(account, t)).or_default().entry(viewer.to_string()).or_insert(0) += 1;
            }
        }
    }

    async fn unsubscribe(&self, account: &str, viewer: &str, sid: &str, targets: &[String]) {
        let removed: Vec<String> = match self.by_socket.get_mut(sid) {
            Some(mut mine) => targets.iter().filter(|t| mine.1.remove(*t)).cloned().collect(),
            None => Vec::new(),
        };
        for t in removed {
            self.unsubscribe_one(account, viewer, &t);
        }
    }

    async fn drop_subscriptions(&self, account: &str, viewer: &str, sid: &str) {
        if let Some((_, (_, targets))) = self.by_socket.remove(sid) {
            for t in targets {
                self.unsubscribe_one(account, viewer, &t);
            }
        }
    }

    async fn subscribers(&self, account: &str, target: &str) -> Vec<String> {
        self.subscribers.get(&key(account, target)).map(|s| s.keys().cloned().collect()).unwrap_or_default()
    }

    async fn joined_room(&self, account: &str, user: &str, room: &str) {
        let mut known = self.known.entry(key(account, user)).or_default();
        if !known.rooms.iter().any(|r| &**r == room) {
            known.rooms.reserve_exact(1);
            known.rooms.push(room.into());
        }
    }

    async fn left_room(&self, account: &str, user: &str, room: &str) {
        if let Some(mut known) = self.known.get_mut(&key(account, user)) {
            known.rooms.retain(|r| &**r != room);
            known.rooms.shrink_to_fit();
        }
    }

    async fn rooms_of(&self, account: &str, user: &str) -> Vec<String> {
        self.known.get(&key(account, user)).map(|k| k.rooms.iter().map(|r| r.to_string()).collect()).unwrap_or_default()
    }

    async fn settings(&self, account: &str, user: &str) -> Option<PrivacySettings> {
        self.known.get(&key(account, user)).and_then(|k| k.settings)
    }

    async fn set_settings(&self, account: &str, user: &str, settings: PrivacySettings) {
        self.known.entry(key(account, user)).or_default().settings = Some(settings);
    }

    async fn remembered_last_seen(&self, account: &str, user: &str) -> Option<DateTime<Utc>> {
        self.known.get(&key(account, user)).and_then(|k| k.last_seen)
    }

    async fn remember_last_seen(&self, account: &str, user: &str, at: DateTime<Utc>) {
        self.known.entry(key(account, user)).or_default().last_seen = Some(at);
    }

    async fn sweep(&self) {
        let tracker = self.tracker.lock();
        let gone = |k: &UserKey| !tracker.knows(&k.0, &k.1) && !self.subscribers.contains_key(k);
        self.known.retain(|k, _| !gone(k));
        // After a wave of departures the table would keep its peak size.
        if self.known.capacity() > 2 * self.known.len() + 64 {
            self.known.shrink_to_fit();
        }
    }

    async fn purge_node(&self, node: &str, now: DateTime<Utc>) -> usize {
        if node != self.node {
            return 0;
        }
        let devices = self.tracker.lock().devices();
        for (account, user, device) in &devices {
            self.tracker.lock().disconnect(account, user, device, now);
        }
        let sockets: Vec<String> = self.by_socket.iter().map(|e| e.key().clone()).collect();
        for sid in sockets {
            if let Some((_, ((account, viewer), targets))) = self.by_socket.remove(&sid) {
                for t in targets {
                    self.unsubscribe_one(&account, &viewer, &t);
                }
            }
        }
        devices.len()
    }
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn meets_the_presence_contract() {
        crate::cluster::suite::presence(|node, cfg| std::sync::Arc::new(super::MemoryPresence::new(cfg).on_node(node)))
            .await;
    }
}
