//! [`Roster`] in Redis: sockets with their node, the rooms of each (with mute), users present per room
//! counted over every node's sockets, the offline grace as a sorted set of departures that one script hands
//! out (so each is announced once, whichever node asks), users online. Each operation is one Lua script: the
//! counting of `domain::occupancy` (first socket in, last socket out, a grace on disconnect that a return
//! cancels), done where the counts live.
//!
//! Keys under `<prefix>:roster:` (parts escaped, see `esc`):
//! `sock:<sid>` hash {a account, u user, n node, nm name, av avatar, r:<room> → 0|1 muted};
//! `socks` hash sid → node; `node:<node>`, `acct:<account>`, `user:<account>:<user>` sets of sids;
//! `online` set of `<account>:<user>`, `online:<account>` set of users; `room:<account>:<room>` hash user →
//! sockets in the room; `room-socks:<account>:<room>` set of sids; `leaving` sorted set of
//! `<account>:<room>:<user>` by the end of their grace (ms); `leaving-who` hash of the same → {n, a} (name and
//! avatar to announce the departure with).

use std::time::Duration;

use ::redis::{RedisResult, Script};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::Deserialize;

use super::{POLL_INTERVAL, Redis, esc, first_deadline, parts, script};
use crate::cluster::{Departure, Entered, Left, Roster, SocketEntry, SocketRooms};

/// Closing a socket, shared by disconnect and purge. `R` is the key base (`<prefix>:roster:`).
const CLOSE: &str = r#"
local R = ARGV[1]
local function close(sid, now, grace)
  local sk = R .. 'sock:' .. esc(sid)
  local h = redis.call('HGETALL', sk)
  if #h == 0 then return nil end
  local f, rooms = {}, {}
  for i = 1, #h, 2 do
    if string.sub(h[i], 1, 2) == 'r:' then rooms[#rooms + 1] = string.sub(h[i], 3) else f[h[i]] = h[i + 1] end
  end
  local ea = esc(f.a)
  redis.call('DEL', sk)
  redis.call('HDEL', R .. 'socks', sid)
  redis.call('SREM', R .. 'node:' .. esc(f.n), sid)
  redis.call('SREM', R .. 'acct:' .. ea, sid)
  if f.u then
    local uk = R .. 'user:' .. ea .. ':' .. esc(f.u)
    redis.call('SREM', uk, sid)
    if redis.call('SCARD', uk) == 0 then
      redis.call('SREM', R .. 'online', ea .. ':' .. esc(f.u))
      redis.call('SREM', R .. 'online:' .. ea, f.u)
    end
  end
  for _, room in ipairs(rooms) do
    local er = ea .. ':' .. esc(room)
    redis.call('SREM', R .. 'room-socks:' .. er, sid)
    if f.u then
      local rk = R .. 'room:' .. er
      local n = tonumber(redis.call('HGET', rk, f.u) or '0')
      if n > 1 then
        redis.call('HSET', rk, f.u, n - 1)
      elseif n == 1 then
        redis.call('HDEL', rk, f.u)
        local m = er .. ':' .. esc(f.u)
        redis.call('ZADD', R .. 'leaving', now + grace, m)
        redis.call('HSET', R .. 'leaving-who', m, cjson.encode({n = f.nm, a = f.av}))
      end
    end
  end
  return f, rooms
end
"#;

const CONNECT: &str = r#"
local R, sid, acc, node, user, name, avatar = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7]
local sk = R .. 'sock:' .. esc(sid)
redis.call('HSET', sk, 'a', acc, 'n', node)
if user ~= '' then redis.call('HSET', sk, 'u', user) end
if name ~= '' then redis.call('HSET', sk, 'nm', name) end
if avatar ~= '' then redis.call('HSET', sk, 'av', avatar) end
redis.call('HSET', R .. 'socks', sid, node)
redis.call('SADD', R .. 'node:' .. esc(node), sid)
redis.call('SADD', R .. 'acct:' .. esc(acc), sid)
if user ~= '' then
  local ea, eu = esc(acc), esc(user)
  redis.call('SADD', R .. 'user:' .. ea .. ':' .. eu, sid)
  redis.call('SADD', R .. 'online', ea .. ':' .. eu)
  redis.call('SADD', R .. 'online:' .. ea, user)
end
return 1
"#;

/// {0} when the socket was not connected, else {1, rooms...}.
const DISCONNECT: &str = r#"
local f, rooms = close(ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4]))
if not f then return {0} end
local out = {1}
for _, r in ipairs(rooms) do out[#out + 1] = r end
return out
"#;

/// ARGV[2] sid, then (room, muted) pairs. One code per room: 0 closed, 1 already, 2 present, 3 arrived.
const ENTER: &str = r#"
local R, sid = ARGV[1], ARGV[2]
local sk = R .. 'sock:' .. esc(sid)
local out = {}
if redis.call('EXISTS', sk) == 0 then
  for i = 3, #ARGV, 2 do out[#out + 1] = 0 end
  return out
end
local user = redis.call('HGET', sk, 'u')
local ea = esc(redis.call('HGET', sk, 'a'))
for i = 3, #ARGV, 2 do
  local room, muted = ARGV[i], ARGV[i + 1]
  if redis.call('HEXISTS', sk, 'r:' .. room) == 1 then
    out[#out + 1] = 1
  else
    redis.call('HSET', sk, 'r:' .. room, muted)
    local er = ea .. ':' .. esc(room)
    redis.call('SADD', R .. 'room-socks:' .. er, sid)
    if not user then
      out[#out + 1] = 2
    else
      local m = er .. ':' .. esc(user)
      local back = redis.call('ZREM', R .. 'leaving', m)
      redis.call('HDEL', R .. 'leaving-who', m)
      local n = redis.call('HINCRBY', R .. 'room:' .. er, user, 1)
      if n == 1 and back == 0 then out[#out + 1] = 3 else out[#out + 1] = 2 end
    end
  end
end
return out
"#;

/// 0 not in, 1 still present, 2 the user left.
const EXIT: &str = r#"
local R, sid, room = ARGV[1], ARGV[2], ARGV[3]
local sk = R .. 'sock:' .. esc(sid)
if redis.call('HEXISTS', sk, 'r:' .. room) == 0 then return 0 end
redis.call('HDEL', sk, 'r:' .. room)
local user = redis.call('HGET', sk, 'u')
local er = esc(redis.call('HGET', sk, 'a')) .. ':' .. esc(room)
redis.call('SREM', R .. 'room-socks:' .. er, sid)
if not user then return 1 end
local rk = R .. 'room:' .. er
local n = tonumber(redis.call('HGET', rk, user) or '0')
if n > 1 then
  redis.call('HSET', rk, user, n - 1)
  return 1
elseif n == 1 then
  redis.call('HDEL', rk, user)
  return 2
end
return 1
"#;

/// Hands out the departures due by ARGV[2] (at most ARGV[3]): {member, who}...
const DEPARTURES: &str = r#"
local R = ARGV[1]
local out = {}
for _, m in ipairs(redis.call('ZRANGEBYSCORE', R .. 'leaving', '-inf', ARGV[2], 'LIMIT', 0, tonumber(ARGV[3]))) do
  redis.call('ZREM', R .. 'leaving', m)
  out[#out + 1] = m
  out[#out + 1] = redis.call('HGET', R .. 'leaving-who', m) or ''
  redis.call('HDEL', R .. 'leaving-who', m)
end
return out
"#;

const SET_MUTED: &str = r#"
local R, acc, user, room, muted = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
for _, sid in ipairs(redis.call('SMEMBERS', R .. 'user:' .. esc(acc) .. ':' .. esc(user))) do
  local sk = R .. 'sock:' .. esc(sid)
  if redis.call('HEXISTS', sk, 'r:' .. room) == 1 then redis.call('HSET', sk, 'r:' .. room, muted) end
end
return 1
"#;

/// The sockets of ARGV[2]'s account (all when ''): {sid, account, user, node, name, avatar}...
const SOCKETS: &str = r#"
local R = ARGV[1]
local sids
if ARGV[2] == '' then sids = redis.call('HKEYS', R .. 'socks') else sids = redis.call('SMEMBERS', R .. 'acct:' .. esc(ARGV[2])) end
local out = {}
for _, sid in ipairs(sids) do
  local h = redis.call('HMGET', R .. 'sock:' .. esc(sid), 'a', 'u', 'n', 'nm', 'av')
  if h[1] then
    out[#out + 1] = sid
    for i = 1, 5 do out[#out + 1] = h[i] end
  end
end
return out
"#;

const FORGET_ROOM: &str = r#"
local R, room = ARGV[1], ARGV[3]
local er = esc(ARGV[2]) .. ':' .. esc(room)
for _, sid in ipairs(redis.call('SMEMBERS', R .. 'room-socks:' .. er)) do
  redis.call('HDEL', R .. 'sock:' .. esc(sid), 'r:' .. room)
end
redis.call('DEL', R .. 'room-socks:' .. er, R .. 'room:' .. er)
local p = er .. ':'
for _, m in ipairs(redis.call('ZRANGE', R .. 'leaving', 0, -1)) do
  if string.sub(m, 1, #p) == p then
    redis.call('ZREM', R .. 'leaving', m)
    redis.call('HDEL', R .. 'leaving-who', m)
  end
end
return 1
"#;

/// Closes up to ARGV[5] sockets of node ARGV[2] at ARGV[3] (grace ARGV[4]): {how many looked at, then
/// sid, account, user, node, name, avatar per socket closed}.
const PURGE: &str = r#"
local nk = R .. 'node:' .. esc(ARGV[2])
local sids = redis.call('SRANDMEMBER', nk, tonumber(ARGV[5]))
local out = {#sids}
for _, sid in ipairs(sids) do
  local f = close(sid, tonumber(ARGV[3]), tonumber(ARGV[4]))
  if f then
    out[#out + 1] = sid
    out[#out + 1] = f.a
    out[#out + 1] = f.u or false
    out[#out + 1] = f.n
    out[#out + 1] = f.nm or false
    out[#out + 1] = f.av or false
  else
    redis.call('SREM', nk, sid)
  end
end
return out
"#;

/// Longest grace kept (a year), so `now + grace` stays a plain number.
const MAX_GRACE_MS: i64 = 365 * 24 * 3_600_000;
/// Sockets closed per script call of a purge (the rest in further calls, so Redis never blocks long).
const PURGE_BATCH: usize = 500;
/// Departures handed out per script call.
const DEPARTURE_BATCH: usize = 500;

struct Scripts {
    connect: Script,
    disconnect: Script,
    enter: Script,
    exit: Script,
    departures: Script,
    set_muted: Script,
    sockets: Script,
    forget_room: Script,
    purge: Script,
}

pub struct RedisRoster {
    redis: Redis,
    /// `<prefix>:roster:`
    base: String,
    grace_ms: i64,
    scripts: Scripts,
}

#[derive(Deserialize, Default)]
struct Who {
    n: Option<String>,
    a: Option<String>,
}

fn opt(s: &Option<String>) -> &str {
    s.as_deref().unwrap_or("")
}

fn entry(chunk: &[Option<String>]) -> SocketEntry {
    SocketEntry {
        sid: chunk[0].clone().unwrap_or_default(),
        account: chunk[1].clone().unwrap_or_default(),
        user: chunk[2].clone(),
        node: chunk[3].clone().unwrap_or_default(),
        name: chunk[4].clone(),
        avatar: chunk[5].clone(),
    }
}

impl RedisRoster {
    /// `grace`: how long a user whose last socket closed stays present in its rooms.
    pub fn new(redis: Redis, grace: Duration) -> RedisRoster {
        let with_close = |body: &str| script(&format!("{CLOSE}\n{body}"));
        RedisRoster {
            base: redis.key("roster:"),
            grace_ms: i64::try_from(grace.as_millis()).unwrap_or(MAX_GRACE_MS).min(MAX_GRACE_MS),
            scripts: Scripts {
                connect: script(CONNECT),
                disconnect: with_close(DISCONNECT),
                enter: script(ENTER),
                exit: script(EXIT),
                departures: script(DEPARTURES),
                set_muted: script(SET_MUTED),
                sockets: script(SOCKETS),
                forget_room: script(FORGET_ROOM),
                purge: with_close(PURGE),
            },
            redis,
        }
    }

    fn key(&self, rest: &str) -> String {
        format!("{}{rest}", self.base)
    }

    /// A query's answer; a failure is noted and answered with `fallback`.
    fn ok<T>(&self, what: &str, fallback: T, q: RedisResult<T>) -> T {
        match q {
            Ok(v) => v,
            Err(e) => {
                self.redis.failed(what, &e);
                fallback
            }
        }
    }

    async fn enter_codes(&self, sid: &str, rooms: &[(String, bool)]) -> RedisResult<Vec<i64>> {
        let mut inv = self.scripts.enter.arg(&self.base);
        inv.arg(sid);
        for (room, muted) in rooms {
            inv.arg(room).arg(if *muted { "1" } else { "0" });
        }
        inv.invoke_async(&mut self.redis.conn()).await
    }
}

fn entered(code: i64) -> Entered {
    match code {
        0 => Entered::Closed,
        1 => Entered::Already,
        3 => Entered::Arrived,
        _ => Entered::Present,
    }
}

#[async_trait]
impl Roster for RedisRoster {
    async fn connect(&self, socket: SocketEntry) {
        let q = self
            .scripts
            .connect
            .arg(&self.base)
            .arg(&socket.sid)
            .arg(&socket.account)
            .arg(&socket.node)
            .arg(opt(&socket.user))
            .arg(opt(&socket.name))
            .arg(opt(&socket.avatar))
            .invoke_async::<i64>(&mut self.redis.conn())
            .await;
        if let Err(e) = q {
            self.redis.failed("roster connect", &e);
        }
    }

    async fn disconnect(&self, sid: &str, now: DateTime<Utc>) -> Option<Vec<String>> {
        let q = self
            .scripts
            .disconnect
            .arg(&self.base)
            .arg(sid)
            .arg(now.timestamp_millis())
            .arg(self.grace_ms)
            .invoke_async::<Vec<::redis::Value>>(&mut self.redis.conn())
            .await;
        let reply = self.ok("roster disconnect", Vec::new(), q);
        let mut it = reply.into_iter();
        match it.next().map(::redis::from_redis_value::<i64>) {
            Some(Ok(1)) => Some(it.filter_map(|v| ::redis::from_redis_value::<String>(v).ok()).collect()),
            _ => None,
        }
    }

    async fn enter(&self, sid: &str, room: &str, muted: bool) -> Entered {
        self.enter_all(sid, &[(room.to_string(), muted)]).await.pop().unwrap_or(Entered::Present)
    }

    /// A failure answers `Present` for every room: the socket joins locally, nothing is announced.
    async fn enter_all(&self, sid: &str, rooms: &[(String, bool)]) -> Vec<Entered> {
        if rooms.is_empty() {
            return Vec::new();
        }
        let codes = self.ok("roster enter", vec![2; rooms.len()], self.enter_codes(sid, rooms).await);
        codes.into_iter().map(entered).collect()
    }

    /// A failure answers `StillPresent`: the socket leaves locally, nothing is announced.
    async fn exit(&self, sid: &str, room: &str) -> Left {
        let q = self.scripts.exit.arg(&self.base).arg(sid).arg(room).invoke_async::<i64>(&mut self.redis.conn()).await;
        match self.ok("roster exit", 1, q) {
            0 => Left::NotIn,
            2 => Left::UserLeft,
            _ => Left::StillPresent,
        }
    }

    async fn departures(&self, now: DateTime<Utc>) -> Vec<Departure> {
        let mut out = Vec::new();
        loop {
            let q = self
                .scripts
                .departures
                .arg(&self.base)
                .arg(now.timestamp_millis())
                .arg(DEPARTURE_BATCH)
                .invoke_async::<Vec<String>>(&mut self.redis.conn())
                .await;
            let flat = self.ok("roster departures", Vec::new(), q);
            let n = flat.len() / 2;
            for pair in flat.chunks_exact(2) {
                let p = parts(&pair[0]);
                let [account, room, user] = <[String; 3]>::try_from(p).unwrap_or_default();
                let who: Who = serde_json::from_str(&pair[1]).unwrap_or_default();
                out.push(Departure { account, room, user, name: who.n, avatar: who.a });
            }
            if n < DEPARTURE_BATCH {
                return out;
            }
        }
    }

    async fn next_departure(&self) -> Option<DateTime<Utc>> {
        first_deadline(&self.redis, &self.key("leaving"), "roster next departure").await
    }

    async fn set_muted(&self, account: &str, user: &str, room: &str, muted: bool) {
        let q = self
            .scripts
            .set_muted
            .arg(&self.base)
            .arg(account)
            .arg(user)
            .arg(room)
            .arg(if muted { "1" } else { "0" })
            .invoke_async::<i64>(&mut self.redis.conn())
            .await;
        self.ok("roster set muted", 0, q);
    }

    async fn rooms_of(&self, sid: &str) -> Option<SocketRooms> {
        let q = ::redis::cmd("HGETALL")
            .arg(self.key(&format!("sock:{}", esc(sid))))
            .query_async::<Vec<(String, String)>>(&mut self.redis.conn())
            .await;
        let fields = self.ok("roster rooms of", Vec::new(), q);
        if fields.is_empty() {
            return None;
        }
        let mut rooms = SocketRooms::default();
        for (k, v) in fields {
            if let Some(room) = k.strip_prefix("r:") {
                rooms.rooms.push(room.to_string());
                if v == "1" {
                    rooms.muted.push(room.to_string());
                }
            }
        }
        rooms.rooms.sort();
        rooms.muted.sort();
        Some(rooms)
    }

    async fn sockets_of(&self, account: &str, user: &str) -> Vec<String> {
        let q = ::redis::cmd("SMEMBERS")
            .arg(self.key(&format!("user:{}:{}", esc(account), esc(user))))
            .query_async::<Vec<String>>(&mut self.redis.conn())
            .await;
        self.ok("roster sockets of", Vec::new(), q)
    }

    async fn users_in(&self, account: &str, room: &str) -> Vec<String> {
        let q = ::redis::cmd("HKEYS")
            .arg(self.key(&format!("room:{}:{}", esc(account), esc(room))))
            .query_async::<Vec<String>>(&mut self.redis.conn())
            .await;
        self.ok("roster users in", Vec::new(), q)
    }

    async fn present(&self, account: &str, room: &str) -> usize {
        let q = ::redis::cmd("HLEN")
            .arg(self.key(&format!("room:{}:{}", esc(account), esc(room))))
            .query_async::<usize>(&mut self.redis.conn())
            .await;
        self.ok("roster present", 0, q)
    }

    async fn sockets(&self, account: Option<&str>) -> Vec<SocketEntry> {
        let q = self
            .scripts
            .sockets
            .arg(&self.base)
            .arg(account.unwrap_or(""))
            .invoke_async::<Vec<Option<String>>>(&mut self.redis.conn())
            .await;
        self.ok("roster sockets", Vec::new(), q).chunks_exact(6).map(entry).collect()
    }

    async fn connections(&self) -> usize {
        let q = ::redis::cmd("HLEN").arg(self.key("socks")).query_async::<usize>(&mut self.redis.conn()).await;
        self.ok("roster connections", 0, q)
    }

    async fn users_online(&self, account: Option<&str>) -> usize {
        let key = match account {
            None => self.key("online"),
            Some(a) => self.key(&format!("online:{}", esc(a))),
        };
        let q = ::redis::cmd("SCARD").arg(key).query_async::<usize>(&mut self.redis.conn()).await;
        self.ok("roster users online", 0, q)
    }

    async fn forget_room(&self, account: &str, room: &str) {
        let q = self
            .scripts
            .forget_room
            .arg(&self.base)
            .arg(account)
            .arg(room)
            .invoke_async::<i64>(&mut self.redis.conn())
            .await;
        self.ok("roster forget room", 0, q);
    }

    async fn purge_node(&self, node: &str, now: DateTime<Utc>) -> Vec<SocketEntry> {
        let mut out = Vec::new();
        loop {
            let q = self
                .scripts
                .purge
                .arg(&self.base)
                .arg(node)
                .arg(now.timestamp_millis())
                .arg(self.grace_ms)
                .arg(PURGE_BATCH)
                .invoke_async::<Vec<Option<String>>>(&mut self.redis.conn())
                .await;
            let flat = self.ok("roster purge node", Vec::new(), q);
            let Some((looked, closed)) = flat.split_first() else { return out };
            out.extend(closed.chunks_exact(6).map(entry));
            if looked.as_deref().and_then(|n| n.parse::<usize>().ok()).unwrap_or(0) == 0 {
                return out;
            }
        }
    }

    fn poll_interval(&self) -> Option<Duration> {
        Some(POLL_INTERVAL)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::super::testing::RedisServer;

    #[tokio::test]
    async fn meets_the_roster_contract() {
        let server = RedisServer::start();
        let redis = server.redis().await;
        crate::cluster::suite::roster(|grace| Arc::new(redis.roster(grace))).await;
        assert_eq!(redis.failures().count(), 0, "{:?}", redis.failures().last_error());
    }

    #[tokio::test]
    async fn meets_the_shared_roster_contract() {
        let server = RedisServer::start();
        let redis = server.redis().await;
        crate::cluster::suite::roster_cluster(|grace| Arc::new(redis.roster(grace))).await;
        assert_eq!(redis.failures().count(), 0, "{:?}", redis.failures().last_error());
    }
}
