//! [`TypingBackend`] in Redis: each room's list is one record, the domain's [`RoomState`] with the node of
//! each typing socket, changed with the domain functions and written back with a compare-and-set
//! ([`Records`]). Starts on any node merge into the one list; the coalesced event and the expiry push are
//! handed out by whichever node's `flush` writes the room first (the others find nothing due). Never the
//! database.
//!
//! Keys under `<prefix>:typing:` (parts escaped): `room:<room>` the record {v, s}, where `<room>` is
//! `<account>:<type>:<bare 0|1>:<room name>:<thread id>`; `room-seq` its version counter; `due` sorted set of
//! rooms by their next deadline (ms); `user:<account>:<user>` set of rooms where the user has an entry (for
//! a socket's close); `node:<node>` set of rooms where a socket of the node types (for its purge).

use std::collections::{BTreeMap, BTreeSet};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{POLL_INTERVAL, Records, Redis, esc, first_deadline, score};
use crate::cluster::TypingBackend;
use crate::domain::typing::{RoomState, TypingConfig, TypingEvent, TypingRoom, TypingUser, Typist};

/// One room's record.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Room {
    room: TypingRoom,
    state: RoomState,
    /// socket → the node that holds it.
    nodes: BTreeMap<String, String>,
}

impl Room {
    /// Brings the socket → node map in line with the list after a change made by `node`.
    fn settle(&mut self, node: &str) {
        let live: BTreeSet<String> = self.state.sockets().map(|(_, s)| s.to_string()).collect();
        self.nodes.retain(|s, _| live.contains(s));
        for s in live {
            self.nodes.entry(s).or_insert_with(|| node.to_string());
        }
    }
}

fn room_id(room: &TypingRoom) -> String {
    format!(
        "{}:{}:{}:{}:{}",
        esc(&room.account),
        room.room_type.as_str(),
        u8::from(room.bare),
        esc(&room.room_name),
        esc(room.thread_id.as_deref().unwrap_or(""))
    )
}

/// Records handled per exchange by `flush`, `remove_socket` and `purge_node`.
const BATCH: usize = 200;
/// Rounds of `flush` in one call at most (a backlog left is taken at the next call).
const MAX_ROUNDS: usize = 50;

pub struct RedisTyping {
    redis: Redis,
    node: String,
    cfg: TypingConfig,
    /// `<prefix>:typing:`
    base: String,
    rooms: Records<Room>,
}

fn same(b: Option<&Room>, a: Option<&Room>) -> bool {
    b == a
}

impl RedisTyping {
    /// `node`: this node's id.
    pub fn new(redis: Redis, node: &str, cfg: TypingConfig) -> RedisTyping {
        RedisTyping {
            base: redis.key("typing:"),
            rooms: Records::new(redis.clone(), "typing:room"),
            node: node.to_string(),
            cfg,
            redis,
        }
    }

    fn key(&self, rest: &str) -> String {
        format!("{}{rest}", self.base)
    }

    /// The commands that keep the indexes in line with a room going from `before` to `after`.
    fn side(&self, id: &str, before: Option<&Room>, after: Option<&Room>) -> Vec<Vec<String>> {
        let mut cmds = Vec::new();
        let due = self.key("due");
        match after.and_then(|r| r.state.next_deadline(&self.cfg)) {
            Some(t) => cmds.push(vec!["ZADD".into(), due, score(t).to_string(), id.to_string()]),
            None => cmds.push(vec!["ZREM".into(), due, id.to_string()]),
        }
        let Some(account) = after.or(before).map(|r| r.room.account.as_str()) else { return cmds };
        let users = |r: Option<&Room>| -> BTreeSet<String> {
            r.map(|r| r.state.users().map(str::to_string).collect()).unwrap_or_default()
        };
        let (old, new) = (users(before), users(after));
        for u in old.difference(&new) {
            cmds.push(vec!["SREM".into(), self.key(&format!("user:{}:{}", esc(account), esc(u))), id.to_string()]);
        }
        for u in new.difference(&old) {
            cmds.push(vec!["SADD".into(), self.key(&format!("user:{}:{}", esc(account), esc(u))), id.to_string()]);
        }
        let nodes = |r: Option<&Room>| -> BTreeSet<String> {
            r.map(|r| r.nodes.values().cloned().collect()).unwrap_or_default()
        };
        let (old, new) = (nodes(before), nodes(after));
        for n in old.difference(&new) {
            cmds.push(vec!["SREM".into(), self.key(&format!("node:{}", esc(n))), id.to_string()]);
        }
        for n in new.difference(&old) {
            cmds.push(vec!["SADD".into(), self.key(&format!("node:{}", esc(n))), id.to_string()]);
        }
        cmds
    }

    /// Withdraws sockets from the rooms listed in the set `set` (`which` picks the (user, socket) pairs of a
    /// room); a room no longer there leaves the set. Returns how many sockets went.
    async fn withdraw_all(
        &self,
        what: &str,
        set: &str,
        now: DateTime<Utc>,
        which: impl Fn(&Room) -> Vec<(String, String)>,
    ) -> usize {
        let records = match self.rooms.fetch_set(set).await {
            Ok(r) => r,
            Err(e) => {
                self.redis.failed(what, &e);
                return 0;
            }
        };
        let mut total = 0;
        for chunk in records.chunks(BATCH) {
            let results = self
                .rooms
                .apply_many(
                    chunk.to_vec(),
                    |_, before| {
                        let Some(b) = before else { return (None, 0) };
                        let mut rec = b.clone();
                        let gone = which(&rec);
                        for (user, sid) in &gone {
                            rec.state.withdraw(user, sid, None, now, &self.cfg, false);
                        }
                        rec.settle(&self.node);
                        (Some(rec), gone.len())
                    },
                    |id, b, a| {
                        let mut cmds = self.side(id, b, a);
                        if b.is_none() {
                            cmds.push(vec!["SREM".into(), set.to_string(), id.to_string()]);
                        }
                        cmds
                    },
                    |b, a| b.is_some() && b == a,
                )
                .await;
            for (_, r) in results {
                match r {
                    Ok(n) => total += n,
                    Err(e) => self.redis.failed(what, &e),
                }
            }
        }
        total
    }
}

#[async_trait]
impl TypingBackend for RedisTyping {
    async fn start(&self, room: &TypingRoom, typist: &Typist, recipient: Option<&str>, now: DateTime<Utc>) {
        let id = room_id(room);
        let r = self
            .rooms
            .apply(
                &id,
                None,
                |before| {
                    let mut rec = before.cloned().unwrap_or_else(|| Room {
                        room: room.clone(),
                        state: RoomState::default(),
                        nodes: BTreeMap::new(),
                    });
                    rec.state.start(typist, recipient, now, &self.cfg);
                    rec.settle(&self.node);
                    (Some(rec), ())
                },
                |b, a| self.side(&id, b, a),
                same,
            )
            .await;
        if let Err(e) = r {
            self.redis.failed("typing start", &e);
        }
    }

    async fn stop(
        &self,
        room: &TypingRoom,
        user: &str,
        sid: &str,
        recipient: Option<&str>,
        now: DateTime<Utc>,
    ) -> bool {
        let id = room_id(room);
        let r = self
            .rooms
            .apply(
                &id,
                None,
                |before| {
                    let Some(b) = before else { return (None, false) };
                    let mut rec = b.clone();
                    let stopped = rec.state.withdraw(user, sid, recipient, now, &self.cfg, true);
                    rec.settle(&self.node);
                    (Some(rec), stopped)
                },
                |b, a| self.side(&id, b, a),
                same,
            )
            .await;
        r.unwrap_or_else(|e| {
            self.redis.failed("typing stop", &e);
            false
        })
    }

    async fn remove_socket(&self, account: &str, user: &str, sid: &str, now: DateTime<Utc>) {
        let set = self.key(&format!("user:{}:{}", esc(account), esc(user)));
        let which = |r: &Room| -> Vec<(String, String)> {
            r.state.sockets().filter(|(u, s)| *u == user && *s == sid).map(|(u, s)| (u.into(), s.into())).collect()
        };
        self.withdraw_all("typing remove socket", &set, now, which).await;
    }

    async fn flush(&self, now: DateTime<Utc>) -> Vec<TypingEvent> {
        let mut events = Vec::new();
        let due = self.key("due");
        for _ in 0..MAX_ROUNDS {
            let batch = match self.rooms.fetch_due(&due, now.timestamp_millis(), BATCH).await {
                Ok(b) => b,
                Err(e) => {
                    self.redis.failed("typing flush", &e);
                    return events;
                }
            };
            let n = batch.len();
            let results = self
                .rooms
                .apply_many(
                    batch,
                    |_, before| {
                        let Some(b) = before else { return (None, None) };
                        let mut rec = b.clone();
                        let (event, _expired) = rec.state.flush(&rec.room, now, &self.cfg);
                        rec.settle(&self.node);
                        let keep = !rec.state.removable(now, &self.cfg);
                        (keep.then_some(rec), event)
                    },
                    |id, b, a| self.side(id, b, a),
                    // Always written: the deadline moves on even when nothing else changed.
                    |_, _| false,
                )
                .await;
            for (_, r) in results {
                match r {
                    Ok(ev) => events.extend(ev),
                    Err(e) => self.redis.failed("typing flush", &e),
                }
            }
            if n < BATCH {
                break;
            }
        }
        events
    }

    async fn next_deadline(&self) -> Option<DateTime<Utc>> {
        first_deadline(&self.redis, &self.key("due"), "typing next deadline").await
    }

    async fn typing_users(&self, room: &TypingRoom, now: DateTime<Utc>) -> Vec<TypingUser> {
        match self.rooms.fetch(&room_id(room)).await {
            Ok(v) => v.record.map(|r| r.state.typing_users(now, &self.cfg)).unwrap_or_default(),
            Err(e) => {
                self.redis.failed("typing users", &e);
                Vec::new()
            }
        }
    }

    async fn purge_node(&self, node: &str, now: DateTime<Utc>) -> usize {
        let set = self.key(&format!("node:{}", esc(node)));
        let which = |r: &Room| -> Vec<(String, String)> {
            r.state
                .sockets()
                .filter(|(_, s)| r.nodes.get(*s).is_some_and(|n| n == node))
                .map(|(u, s)| (u.into(), s.into()))
                .collect()
        };
        self.withdraw_all("typing purge node", &set, now, which).await
    }

    fn poll_interval(&self) -> Option<std::time::Duration> {
        Some(POLL_INTERVAL)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::super::testing::RedisServer;

    #[tokio::test]
    async fn meets_the_typing_contract() {
        let server = RedisServer::start();
        let redis = server.redis().await;
        crate::cluster::suite::typing(|node, cfg| Arc::new(redis.typing(node, cfg))).await;
        assert_eq!(redis.failures().count(), 0, "{:?}", redis.failures().last_error());
    }

    #[tokio::test]
    async fn meets_the_shared_typing_contract() {
        let server = RedisServer::start();
        let redis = server.redis().await;
        crate::cluster::suite::typing_cluster(|node, cfg| Arc::new(redis.typing(node, cfg))).await;
        assert_eq!(redis.failures().count(), 0, "{:?}", redis.failures().last_error());
    }
}
