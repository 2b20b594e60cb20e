//! [`PresenceBackend`] in Redis. Each user's presence is one record: the domain's [`UserState`] (their devices
//! on every node, custom status, last seen, grace, what was published and what is pending), with the node of
//! each device. A change reads it, applies the domain function (`connect`, `update`, `tick`, …) and writes it
//! back with a compare-and-set ([`Records`]), so the rules are exactly those of `domain::presence`, whichever
//! node acts, and `due` hands each publication or session end out once: of two nodes ticking one user, one
//! writes and the other finds the work done.
//!
//! Keys under `<prefix>:presence:` (`<user>` is `<account>:<user id>`, parts escaped):
//! `user:<user>` the record {v, s}; `user-seq` its version counter; `due` sorted set of users by their next
//! deadline (ms); `node:<node>` set of users with a device on the node, or whose grace the node started;
//! `status:<account>` hash user id → published status, of connected users (for `breakdown`);
//! `subs:<account>:<target>` hash viewer → subscribing sockets; `sock-subs:<sid>` set of the socket's targets;
//! `node-subs:<node>` hash sid → {a account, v viewer} of the node's subscribing sockets; `aux:<user>` hash
//! {settings, seen (ms), r:<room>} — privacy settings, remembered last seen, the rooms of the user's audience;
//! `aux-index` set of users with an `aux` hash (for `sweep`).

use std::collections::{BTreeMap, BTreeSet};

use ::redis::Script;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::records::Versioned;
use super::{POLL_INTERVAL, Records, Redis, esc, first_deadline, member, parts, score, script};
use crate::cluster::PresenceBackend;
use crate::domain::presence::{
    ConnectOutcome, CustomStatus, DisconnectOutcome, Presence, PresenceConfig, PresenceEvent, PresenceUpdate,
    PrivacySettings, StatusBreakdown, UpdateOutcome, UserState, ViewedPresence,
};

/// One user's record.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Record {
    state: UserState,
    /// device → the node that holds it.
    nodes: BTreeMap<String, String>,
    /// While the offline grace runs: the node whose device went last.
    grace_node: Option<String>,
}

impl Record {
    fn new(state: UserState) -> Record {
        Record { state, nodes: BTreeMap::new(), grace_node: None }
    }

    /// The nodes this user is indexed under: those with a device, and the one whose grace runs.
    fn nodes(&self) -> BTreeSet<&str> {
        let mut out: BTreeSet<&str> = self.nodes.values().map(String::as_str).collect();
        if self.state.in_grace()
            && let Some(n) = &self.grace_node
        {
            out.insert(n);
        }
        out
    }

    /// Brings the device → node map in line with the state after a change made by `node`: new devices are
    /// the node's; a grace that starts now is the node's whose device went last.
    fn settle(&mut self, before: Option<&Record>, node: &str) {
        let live: BTreeSet<String> = self.state.devices().map(str::to_string).collect();
        let gone: Vec<String> = self.nodes.iter().filter(|(d, _)| !live.contains(*d)).map(|(_, n)| n.clone()).collect();
        self.nodes.retain(|d, _| live.contains(d));
        for d in live {
            self.nodes.entry(d).or_insert_with(|| node.to_string());
        }
        self.grace_node = if !self.state.in_grace() {
            None
        } else if let Some(b) = before.filter(|b| b.state.in_grace()) {
            b.grace_node.clone()
        } else {
            Some(gone.last().cloned().unwrap_or_else(|| node.to_string()))
        };
    }
}

/// ARGV: base, account, viewer, sid, node, targets...
const SUBSCRIBE: &str = r#"
local B, acc, viewer, sid, node = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local sk = B .. 'sock-subs:' .. esc(sid)
for i = 6, #ARGV do
  if redis.call('SADD', sk, ARGV[i]) == 1 then
    redis.call('HINCRBY', B .. 'subs:' .. esc(acc) .. ':' .. esc(ARGV[i]), viewer, 1)
  end
end
if redis.call('SCARD', sk) > 0 then
  redis.call('HSET', B .. 'node-subs:' .. esc(node), sid, cjson.encode({a = acc, v = viewer}))
end
return 1
"#;

const UNSUB: &str = r#"
local function unsub(B, acc, viewer, sk, target)
  if redis.call('SREM', sk, target) == 1 then
    local hk = B .. 'subs:' .. esc(acc) .. ':' .. esc(target)
    if redis.call('HINCRBY', hk, viewer, -1) <= 0 then redis.call('HDEL', hk, viewer) end
  end
end
local function drop(B, acc, viewer, sid, node)
  local sk = B .. 'sock-subs:' .. esc(sid)
  for _, t in ipairs(redis.call('SMEMBERS', sk)) do unsub(B, acc, viewer, sk, t) end
  redis.call('DEL', sk)
  redis.call('HDEL', B .. 'node-subs:' .. esc(node), sid)
end
"#;

/// ARGV: base, account, viewer, sid, node, targets...
const UNSUBSCRIBE: &str = r#"
local B, acc, viewer, sid, node = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local sk = B .. 'sock-subs:' .. esc(sid)
for i = 6, #ARGV do unsub(B, acc, viewer, sk, ARGV[i]) end
if redis.call('SCARD', sk) == 0 then redis.call('HDEL', B .. 'node-subs:' .. esc(node), sid) end
return 1
"#;

/// ARGV: base, account, viewer, sid, node.
const DROP: &str = r#"
drop(ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5])
return 1
"#;

/// ARGV: base, node: every subscription of the node's sockets ends. Returns how many sockets.
const DROP_NODE: &str = r#"
local B, node = ARGV[1], ARGV[2]
local h = redis.call('HGETALL', B .. 'node-subs:' .. esc(node))
for i = 1, #h, 2 do
  local who = cjson.decode(h[i + 1])
  drop(B, who.a, who.v, h[i], node)
end
redis.call('DEL', B .. 'node-subs:' .. esc(node))
return #h / 2
"#;

/// ARGV: base, users...: forgets the aux hash of each user with no record and no subscriber.
const SWEEP: &str = r#"
local B = ARGV[1]
for i = 2, #ARGV do
  local u = ARGV[i]
  if redis.call('EXISTS', B .. 'user:' .. u) == 0 and redis.call('EXISTS', B .. 'subs:' .. u) == 0 then
    redis.call('DEL', B .. 'aux:' .. u)
    redis.call('SREM', B .. 'aux-index', u)
  end
end
return 1
"#;

/// Records handled per exchange by `due` and `purge_node`.
const BATCH: usize = 200;
/// Rounds of `due` in one call at most (a backlog left is taken at the next call).
const MAX_ROUNDS: usize = 50;

struct Scripts {
    subscribe: Script,
    unsubscribe: Script,
    drop: Script,
    drop_node: Script,
    sweep: Script,
}

pub struct RedisPresence {
    redis: Redis,
    node: String,
    cfg: PresenceConfig,
    /// `<prefix>:presence:`
    base: String,
    users: Records<Record>,
    /// Activity newer than this on a device whose record was written since is not written again (it only
    /// moves the idle deadline): idle is detected at most this much early.
    touch_within: chrono::Duration,
    scripts: Scripts,
}

fn word(status: crate::domain::presence::PublicStatus) -> &'static str {
    status.as_str()
}

impl RedisPresence {
    /// `node`: this node's id.
    pub fn new(redis: Redis, node: &str, cfg: PresenceConfig) -> RedisPresence {
        let with_unsub = |body: &str| script(&format!("{UNSUB}\n{body}"));
        RedisPresence {
            base: redis.key("presence:"),
            users: Records::new(redis.clone(), "presence:user"),
            node: node.to_string(),
            touch_within: (cfg.idle_timeout / 10).min(chrono::Duration::seconds(10)),
            cfg,
            scripts: Scripts {
                subscribe: script(SUBSCRIBE),
                unsubscribe: with_unsub(UNSUBSCRIBE),
                drop: with_unsub(DROP),
                drop_node: with_unsub(DROP_NODE),
                sweep: script(SWEEP),
            },
            redis,
        }
    }

    fn key(&self, rest: &str) -> String {
        format!("{}{rest}", self.base)
    }

    /// The commands that keep the indexes in line with a record going from `before` to `after`.
    fn side(&self, id: &str, before: Option<&Record>, after: Option<&Record>) -> Vec<Vec<String>> {
        let mut cmds = Vec::new();
        let due = self.key("due");
        match after.and_then(|r| r.state.next_deadline(&self.cfg)) {
            Some(t) => cmds.push(vec!["ZADD".into(), due, score(t).to_string(), id.to_string()]),
            None => cmds.push(vec!["ZREM".into(), due, id.to_string()]),
        }
        let old = before.map(Record::nodes).unwrap_or_default();
        let new = after.map(Record::nodes).unwrap_or_default();
        for n in old.difference(&new) {
            cmds.push(vec!["SREM".into(), self.key(&format!("node:{}", esc(n))), id.to_string()]);
        }
        for n in new.difference(&old) {
            cmds.push(vec!["SADD".into(), self.key(&format!("node:{}", esc(n))), id.to_string()]);
        }
        let p = parts(id);
        if let [account, user] = &p[..] {
            let status = self.key(&format!("status:{}", esc(account)));
            match after.filter(|r| r.state.is_connected()) {
                Some(r) => {
                    cmds.push(vec!["HSET".into(), status, user.clone(), word(r.state.published_status()).into()])
                }
                None if before.is_some_and(|b| b.state.is_connected()) => {
                    cmds.push(vec!["HDEL".into(), status, user.clone()])
                }
                None => {}
            }
        }
        cmds
    }

    /// Applies a domain change to a user's record (made when absent and `create`), one exchange when this
    /// node has the current version; `same` decides when nothing needs writing.
    async fn change<T: Copy>(
        &self,
        what: &str,
        (account, user): (&str, &str),
        create: bool,
        fallback: T,
        op: impl Fn(&mut UserState, &PresenceConfig) -> T,
        same: impl Fn(Option<&Record>, Option<&Record>) -> bool,
    ) -> T {
        let id = member(account, user);
        let r = self
            .users
            .apply(
                &id,
                None,
                |before| {
                    let mut rec = match before {
                        Some(r) => r.clone(),
                        None if create => Record::new(UserState::new(user)),
                        None => return (None, fallback),
                    };
                    let out = op(&mut rec.state, &self.cfg);
                    rec.settle(before, &self.node);
                    (Some(rec), out)
                },
                |b, a| self.side(&id, b, a),
                same,
            )
            .await;
        match r {
            Ok(v) => v,
            Err(e) => {
                self.redis.failed(what, &e);
                fallback
            }
        }
    }

    async fn read(&self, what: &str, account: &str, user: &str) -> Option<Record> {
        match self.users.fetch(&member(account, user)).await {
            Ok(v) => v.record,
            Err(e) => {
                self.redis.failed(what, &e);
                None
            }
        }
    }

    async fn aux_write(&self, what: &str, account: &str, user: &str, fields: &[(String, String)]) {
        let id = member(account, user);
        let mut pipe = ::redis::pipe();
        pipe.atomic();
        pipe.cmd("HSET").arg(self.key(&format!("aux:{id}"))).arg(fields).ignore();
        pipe.cmd("SADD").arg(self.key("aux-index")).arg(&id).ignore();
        if let Err(e) = pipe.query_async::<()>(&mut self.redis.conn()).await {
            self.redis.failed(what, &e);
        }
    }

    async fn aux_read(&self, what: &str, account: &str, user: &str, field: &str) -> Option<String> {
        let q = ::redis::cmd("HGET")
            .arg(self.key(&format!("aux:{}", member(account, user))))
            .arg(field)
            .query_async::<Option<String>>(&mut self.redis.conn())
            .await;
        q.unwrap_or_else(|e| {
            self.redis.failed(what, &e);
            None
        })
    }

    async fn subscription(&self, what: &str, s: &Script, account: &str, viewer: &str, sid: &str, targets: &[String]) {
        let q = s
            .arg(&self.base)
            .arg(account)
            .arg(viewer)
            .arg(sid)
            .arg(&self.node)
            .arg(targets)
            .invoke_async::<i64>(&mut self.redis.conn())
            .await;
        if let Err(e) = q {
            self.redis.failed(what, &e);
        }
    }

    fn never_same(_: Option<&Record>, _: Option<&Record>) -> bool {
        false
    }
}

fn same(b: Option<&Record>, a: Option<&Record>) -> bool {
    b == a
}

#[async_trait]
impl PresenceBackend for RedisPresence {
    async fn connect(&self, account: &str, user: &str, device: &str, now: DateTime<Utc>) {
        let op = |u: &mut UserState, cfg: &PresenceConfig| u.connect(device, now, cfg);
        let out = ConnectOutcome { new_session: false };
        self.change("presence connect", (account, user), true, out, op, same).await;
    }

    async fn disconnect(&self, account: &str, user: &str, device: &str, now: DateTime<Utc>) {
        let op = |u: &mut UserState, cfg: &PresenceConfig| u.disconnect(device, now, cfg);
        let out = DisconnectOutcome { last_socket: false };
        self.change("presence disconnect", (account, user), false, out, op, same).await;
    }

    async fn update(
        &self,
        account: &str,
        user: &str,
        device: &str,
        update: PresenceUpdate,
        now: DateTime<Utc>,
    ) -> UpdateOutcome {
        let op = |u: &mut UserState, cfg: &PresenceConfig| u.update(device, update.clone(), now, cfg);
        self.change("presence update", (account, user), true, UpdateOutcome::Unchanged, op, same).await
    }

    /// Written only when it changes more than the device's activity by less than `touch_within` (most
    /// activity of a busy device costs no exchange).
    async fn touch(&self, account: &str, user: &str, device: &str, now: DateTime<Utc>) -> UpdateOutcome {
        let within = self.touch_within;
        let op = |u: &mut UserState, cfg: &PresenceConfig| u.touch(device, now, cfg);
        let quiet = |b: Option<&Record>, a: Option<&Record>| match (b, a) {
            (Some(b), Some(a)) => {
                a.nodes == b.nodes && a.grace_node == b.grace_node && a.state.differs_only_in_activity(&b.state, within)
            }
            (b, a) => b == a,
        };
        self.change("presence touch", (account, user), false, UpdateOutcome::Unchanged, op, quiet).await
    }

    async fn restore(
        &self,
        account: &str,
        user: &str,
        last_seen: Option<DateTime<Utc>>,
        custom: Option<CustomStatus>,
        now: DateTime<Utc>,
    ) {
        let id = member(account, user);
        let r = self
            .users
            .apply(
                &id,
                Some(Versioned { version: String::new(), record: None }),
                |before| match before {
                    Some(r) => (Some(r.clone()), ()),
                    None => (UserState::restored(user, last_seen, custom.clone(), now).map(Record::new), ()),
                },
                |b, a| self.side(&id, b, a),
                same,
            )
            .await;
        if let Err(e) = r {
            self.redis.failed("presence restore", &e);
        }
    }

    async fn published(&self, account: &str, user: &str) -> Option<Presence> {
        self.read("presence published", account, user).await.map(|r| r.state.published())
    }

    async fn current(&self, account: &str, user: &str) -> Option<Presence> {
        self.read("presence current", account, user).await.map(|r| r.state.current())
    }

    /// Remembered in the user's record (written only when the answer is remembered, i.e. inside a window).
    async fn answer(
        &self,
        account: &str,
        target: &str,
        viewer: Option<&str>,
        view: &(dyn for<'p> Fn(&'p Presence) -> ViewedPresence + Send + Sync),
    ) -> Option<ViewedPresence> {
        let id = member(account, target);
        let r = self
            .users
            .apply(
                &id,
                None,
                |before| match before {
                    None => (None, None),
                    Some(b) => {
                        let mut rec = b.clone();
                        let (shown, _) = rec.state.answer(viewer, view);
                        (Some(rec), Some(shown))
                    }
                },
                |b, a| self.side(&id, b, a),
                same,
            )
            .await;
        r.unwrap_or_else(|e| {
            self.redis.failed("presence answer", &e);
            None
        })
    }

    async fn is_connected(&self, account: &str, user: &str) -> bool {
        self.read("presence is connected", account, user).await.is_some_and(|r| r.state.is_connected())
    }

    async fn due(&self, now: DateTime<Utc>) -> Vec<PresenceEvent> {
        let mut events = Vec::new();
        let due = self.key("due");
        for _ in 0..MAX_ROUNDS {
            let batch = match self.users.fetch_due(&due, now.timestamp_millis(), BATCH).await {
                Ok(b) => b,
                Err(e) => {
                    self.redis.failed("presence due", &e);
                    return events;
                }
            };
            let n = batch.len();
            let results = self
                .users
                .apply_many(
                    batch,
                    |id, before| {
                        let Some(b) = before else { return (None, Vec::new()) };
                        let account = parts(id).into_iter().next().unwrap_or_default();
                        let mut rec = b.clone();
                        let evs = rec.state.tick(&account, now, &self.cfg);
                        rec.settle(before, &self.node);
                        ((!rec.state.removable()).then_some(rec), evs)
                    },
                    |id, b, a| self.side(id, b, a),
                    // Always written: the deadline moves on even when nothing else changed.
                    Self::never_same,
                )
                .await;
            for (_, r) in results {
                match r {
                    Ok(evs) => events.extend(evs),
                    Err(e) => self.redis.failed("presence due", &e),
                }
            }
            if n < BATCH {
                break;
            }
        }
        events
    }

    async fn next_deadline(&self) -> Option<DateTime<Utc>> {
        first_deadline(&self.redis, &self.key("due"), "presence next deadline").await
    }

    async fn end_all_graces(&self) -> Vec<PresenceEvent> {
        let mine = self.key(&format!("node:{}", esc(&self.node)));
        let records = match self.users.fetch_set(&mine).await {
            Ok(r) => r,
            Err(e) => {
                self.redis.failed("presence end graces", &e);
                return Vec::new();
            }
        };
        records
            .into_iter()
            .filter_map(|(id, v)| {
                let rec = v.record?;
                if rec.grace_node.as_deref() != Some(self.node.as_str()) {
                    return None;
                }
                let account = parts(&id).into_iter().next().unwrap_or_default();
                // Reported, not written: the grace runs on for the nodes that remain.
                rec.state.clone().end_grace(&account)
            })
            .collect()
    }

    async fn breakdown(&self, account: &str) -> StatusBreakdown {
        let q = ::redis::cmd("HVALS")
            .arg(self.key(&format!("status:{}", esc(account))))
            .query_async::<Vec<String>>(&mut self.redis.conn())
            .await;
        let mut b = StatusBreakdown::default();
        match q {
            Ok(words) => {
                for w in words {
                    b.add(match w.as_str() {
                        "online" => crate::domain::presence::PublicStatus::Online,
                        "away" => crate::domain::presence::PublicStatus::Away,
                        "busy" => crate::domain::presence::PublicStatus::Busy,
                        _ => crate::domain::presence::PublicStatus::Offline,
                    });
                }
            }
            Err(e) => self.redis.failed("presence breakdown", &e),
        }
        b
    }

    async fn subscribe(&self, account: &str, viewer: &str, sid: &str, targets: &[String]) {
        self.subscription("presence subscribe", &self.scripts.subscribe, account, viewer, sid, targets).await;
    }

    async fn unsubscribe(&self, account: &str, viewer: &str, sid: &str, targets: &[String]) {
        self.subscription("presence unsubscribe", &self.scripts.unsubscribe, account, viewer, sid, targets).await;
    }

    async fn drop_subscriptions(&self, account: &str, viewer: &str, sid: &str) {
        self.subscription("presence drop subscriptions", &self.scripts.drop, account, viewer, sid, &[]).await;
    }

    async fn subscribers(&self, account: &str, target: &str) -> Vec<String> {
        let q = ::redis::cmd("HKEYS")
            .arg(self.key(&format!("subs:{}", member(account, target))))
            .query_async::<Vec<String>>(&mut self.redis.conn())
            .await;
        q.unwrap_or_else(|e| {
            self.redis.failed("presence subscribers", &e);
            Vec::new()
        })
    }

    async fn joined_room(&self, account: &str, user: &str, room: &str) {
        self.joined_rooms(account, user, &[room.to_string()]).await;
    }

    async fn joined_rooms(&self, account: &str, user: &str, rooms: &[String]) {
        if rooms.is_empty() {
            return;
        }
        let fields: Vec<(String, String)> = rooms.iter().map(|r| (format!("r:{r}"), "1".to_string())).collect();
        self.aux_write("presence joined room", account, user, &fields).await;
    }

    async fn left_room(&self, account: &str, user: &str, room: &str) {
        let q = ::redis::cmd("HDEL")
            .arg(self.key(&format!("aux:{}", member(account, user))))
            .arg(format!("r:{room}"))
            .query_async::<i64>(&mut self.redis.conn())
            .await;
        if let Err(e) = q {
            self.redis.failed("presence left room", &e);
        }
    }

    async fn rooms_of(&self, account: &str, user: &str) -> Vec<String> {
        let q = ::redis::cmd("HKEYS")
            .arg(self.key(&format!("aux:{}", member(account, user))))
            .query_async::<Vec<String>>(&mut self.redis.conn())
            .await;
        let mut rooms: Vec<String> = q
            .unwrap_or_else(|e| {
                self.redis.failed("presence rooms of", &e);
                Vec::new()
            })
            .into_iter()
            .filter_map(|f| f.strip_prefix("r:").map(str::to_string))
            .collect();
        rooms.sort();
        rooms
    }

    async fn settings(&self, account: &str, user: &str) -> Option<PrivacySettings> {
        let raw = self.aux_read("presence settings", account, user, "settings").await?;
        serde_json::from_str(&raw).ok()
    }

    async fn set_settings(&self, account: &str, user: &str, settings: PrivacySettings) {
        let json = serde_json::to_string(&settings).expect("settings serialize");
        self.aux_write("presence set settings", account, user, &[("settings".into(), json)]).await;
    }

    async fn remembered_last_seen(&self, account: &str, user: &str) -> Option<DateTime<Utc>> {
        let raw = self.aux_read("presence last seen", account, user, "seen").await?;
        raw.parse().ok().and_then(DateTime::from_timestamp_millis)
    }

    async fn remember_last_seen(&self, account: &str, user: &str, at: DateTime<Utc>) {
        let fields = [("seen".to_string(), at.timestamp_millis().to_string())];
        self.aux_write("presence remember last seen", account, user, &fields).await;
    }

    async fn sweep(&self) {
        let index = self.key("aux-index");
        let mut cursor: u64 = 0;
        loop {
            let q = ::redis::cmd("SSCAN")
                .arg(&index)
                .arg(cursor)
                .arg("COUNT")
                .arg(BATCH)
                .query_async::<(u64, Vec<String>)>(&mut self.redis.conn())
                .await;
            let (next, users) = match q {
                Ok(v) => v,
                Err(e) => return self.redis.failed("presence sweep", &e),
            };
            if !users.is_empty() {
                let q =
                    self.scripts.sweep.arg(&self.base).arg(&users).invoke_async::<i64>(&mut self.redis.conn()).await;
                if let Err(e) = q {
                    return self.redis.failed("presence sweep", &e);
                }
            }
            if next == 0 {
                break;
            }
            cursor = next;
        }
        // The local cache keeps only users still connected.
        self.users.retain_cached(|r| r.state.is_connected());
    }

    async fn purge_node(&self, node: &str, now: DateTime<Utc>) -> usize {
        let set = self.key(&format!("node:{}", esc(node)));
        let mut devices = 0;
        match self.users.fetch_set(&set).await {
            Ok(records) => {
                let results = self
                    .users
                    .apply_many(
                        records,
                        |_, before| {
                            let Some(b) = before else { return (None, 0) };
                            let mut rec = b.clone();
                            let gone: Vec<String> =
                                rec.nodes.iter().filter(|(_, n)| *n == node).map(|(d, _)| d.clone()).collect();
                            for d in &gone {
                                rec.state.disconnect(d, now, &self.cfg);
                            }
                            rec.settle(before, node);
                            (Some(rec), gone.len())
                        },
                        |id, b, a| {
                            let mut cmds = self.side(id, b, a);
                            if b.is_none() {
                                cmds.push(vec!["SREM".into(), set.clone(), id.to_string()]);
                            }
                            cmds
                        },
                        |b, a| b.is_some() && b == a,
                    )
                    .await;
                for (_, r) in results {
                    match r {
                        Ok(n) => devices += n,
                        Err(e) => self.redis.failed("presence purge node", &e),
                    }
                }
            }
            Err(e) => self.redis.failed("presence purge node", &e),
        }
        let q = self.scripts.drop_node.arg(&self.base).arg(node).invoke_async::<i64>(&mut self.redis.conn()).await;
        if let Err(e) = q {
            self.redis.failed("presence purge node", &e);
        }
        devices
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
    async fn meets_the_presence_contract() {
        let server = RedisServer::start();
        let redis = server.redis().await;
        crate::cluster::suite::presence(|node, cfg| Arc::new(redis.presence(node, cfg))).await;
        assert_eq!(redis.failures().count(), 0, "{:?}", redis.failures().last_error());
    }

    #[tokio::test]
    async fn meets_the_shared_presence_contract() {
        let server = RedisServer::start();
        let redis = server.redis().await;
        crate::cluster::suite::presence_cluster(|node, cfg| Arc::new(redis.presence(node, cfg))).await;
        assert_eq!(redis.failures().count(), 0, "{:?}", redis.failures().last_error());
    }
}
