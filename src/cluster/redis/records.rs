//! Versioned records with compare-and-set: the way presence and typing keep domain state in Redis.
//!
//! A record is a hash `{v: version, s: serialized state}`. A node reads it (or uses the version it last saw,
//! kept in a small local cache), computes the new state with the domain's pure functions, and writes it with
//! [`CAS`]: the script writes only if the version is still the one read, and runs the side commands (the
//! deadline in a sorted set, index sets) in the same atomic step. When another node wrote first, the script
//! answers the current record instead, and the change is computed again on it. Versions come from one
//! counter per kind, so a record deleted and made again never reuses a version.

use std::collections::HashMap;
use std::marker::PhantomData;

use ::redis::{RedisResult, Script, Value};
use parking_lot::Mutex;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::Redis;

/// KEYS[1] the record, KEYS[2] the version counter. ARGV[1] the expected version ('' = absent), ARGV[2] the
/// new state ('' = delete), ARGV[3] how many side commands follow, each as its length then its words.
/// Returns {1, new version, ''} when written, {0, current version, current state} when not.
const CAS: &str = r#"
local cur = redis.call('HGET', KEYS[1], 'v') or ''
if cur ~= ARGV[1] then
  return {0, cur, redis.call('HGET', KEYS[1], 's') or ''}
end
local nv = ''
if ARGV[2] == '' then
  redis.call('DEL', KEYS[1])
else
  nv = tostring(redis.call('INCR', KEYS[2]))
  redis.call('HSET', KEYS[1], 'v', nv, 's', ARGV[2])
end
local i = 4
for _ = 1, tonumber(ARGV[3]) do
  local n = tonumber(ARGV[i])
  redis.call(unpack(ARGV, i + 1, i + n))
  i = i + n + 1
end
return {1, nv, ''}
"#;

/// KEYS[1] a sorted set of deadlines, ARGV[1] the key prefix of the records, ARGV[2] now (ms), ARGV[3] how
/// many: the due ids with their records: {id, version or false, state or false}...
const READ_DUE: &str = r#"
local out = {}
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[2], 'LIMIT', 0, tonumber(ARGV[3]))) do
  local r = redis.call('HMGET', ARGV[1] .. id, 'v', 's')
  out[#out + 1] = id
  out[#out + 1] = r[1]
  out[#out + 1] = r[2]
end
return out
"#;

/// KEYS[1] a set of ids, ARGV[1] the key prefix of the records: every member's record, as READ_DUE.
const READ_SET: &str = r#"
local out = {}
for _, id in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local r = redis.call('HMGET', ARGV[1] .. id, 'v', 's')
  out[#out + 1] = id
  out[#out + 1] = r[1]
  out[#out + 1] = r[2]
end
return out
"#;

/// How many times a change is computed again before it is given up (it would take that many other nodes
/// writing the same record at the same moment).
const ATTEMPTS: usize = 32;
/// Records remembered locally before the cache starts over.
const CACHE_LIMIT: usize = 50_000;

/// A record as read: its version ('' when absent) and state.
#[derive(Clone, Debug)]
pub struct Versioned<R> {
    pub version: String,
    pub record: Option<R>,
}

/// A change to write: the record's id, the version it was computed from, the new state (None: delete), and
/// the side commands that go with it.
pub struct Write<'a, R> {
    pub id: &'a str,
    pub base: &'a Versioned<R>,
    pub after: Option<&'a R>,
    pub side: Vec<Vec<String>>,
}

/// What a write did.
pub enum Written<R> {
    /// Written; the new version.
    Done(Versioned<R>),
    /// Another node wrote first: the record as it is now.
    Conflict(Versioned<R>),
}

/// One kind of record (`<prefix>:<kind>:<id>`), with the version counter `<prefix>:<kind>-seq`.
pub struct Records<R> {
    redis: Redis,
    /// `<prefix>:<kind>:`
    key_prefix: String,
    seq: String,
    cas: Script,
    read_due: Script,
    read_set: Script,
    cache: Mutex<HashMap<String, Versioned<R>>>,
    _kind: PhantomData<R>,
}

impl<R: Clone + Serialize + DeserializeOwned> Records<R> {
    pub fn new(redis: Redis, kind: &str) -> Records<R> {
        Records {
            key_prefix: redis.key(&format!("{kind}:")),
            seq: redis.key(&format!("{kind}-seq")),
            redis,
            cas: Script::new(CAS),
            read_due: Script::new(READ_DUE),
            read_set: Script::new(READ_SET),
            cache: Mutex::new(HashMap::new()),
            _kind: PhantomData,
        }
    }

    pub fn key(&self, id: &str) -> String {
        format!("{}{id}", self.key_prefix)
    }

    /// The version last seen here, if any.
    pub fn cached(&self, id: &str) -> Option<Versioned<R>> {
        self.cache.lock().get(id).cloned()
    }

    fn remember(&self, id: &str, v: &Versioned<R>) {
        let mut cache = self.cache.lock();
        if cache.len() >= CACHE_LIMIT && !cache.contains_key(id) {
            cache.clear();
        }
        cache.insert(id.to_string(), v.clone());
    }

    /// Keeps in the local cache only the records `keep` says (the others are read again when next changed).
    pub fn retain_cached(&self, keep: impl Fn(&R) -> bool) {
        self.cache.lock().retain(|_, v| v.record.as_ref().is_some_and(&keep));
    }

    fn decode(&self, version: Option<String>, state: Option<String>) -> Versioned<R> {
        let record = match (version.as_deref(), state) {
            (Some(v), Some(s)) if !v.is_empty() && !s.is_empty() => match serde_json::from_str(&s) {
                Ok(r) => Some(r),
                Err(e) => {
                    // Written by another version of the server: treated as absent, replaced on the next write.
                    tracing::warn!(error = %e, "unreadable cluster record; it is replaced");
                    None
                }
            },
            _ => None,
        };
        Versioned { version: version.unwrap_or_default(), record }
    }

    /// Reads a record.
    pub async fn fetch(&self, id: &str) -> RedisResult<Versioned<R>> {
        let (v, s): (Option<String>, Option<String>) =
            ::redis::cmd("HMGET").arg(self.key(id)).arg("v").arg("s").query_async(&mut self.redis.conn()).await?;
        let got = self.decode(v, s);
        self.remember(id, &got);
        Ok(got)
    }

    fn decode_many(&self, flat: Vec<Option<String>>) -> Vec<(String, Versioned<R>)> {
        let mut out = Vec::with_capacity(flat.len() / 3);
        let mut it = flat.into_iter();
        while let (Some(id), Some(v), Some(s)) = (it.next(), it.next(), it.next()) {
            let got = self.decode(v, s);
            let id = id.unwrap_or_default();
            self.remember(&id, &got);
            out.push((id, got));
        }
        out
    }

    /// The records whose deadline in `zset` is due by `now_ms` (at most `limit`), in one exchange.
    pub async fn fetch_due(&self, zset: &str, now_ms: i64, limit: usize) -> RedisResult<Vec<(String, Versioned<R>)>> {
        let flat: Vec<Option<String>> = self
            .read_due
            .key(zset)
            .arg(&self.key_prefix)
            .arg(now_ms)
            .arg(limit)
            .invoke_async(&mut self.redis.conn())
            .await?;
        Ok(self.decode_many(flat))
    }

    /// The records of every id in the set `set`, in one exchange.
    pub async fn fetch_set(&self, set: &str) -> RedisResult<Vec<(String, Versioned<R>)>> {
        let flat: Vec<Option<String>> =
            self.read_set.key(set).arg(&self.key_prefix).invoke_async(&mut self.redis.conn()).await?;
        Ok(self.decode_many(flat))
    }

    fn cas_cmd(&self, w: &Write<'_, R>) -> RedisResult<::redis::Cmd> {
        let state = match w.after {
            Some(r) => serde_json::to_string(r).map_err(|e| {
                ::redis::RedisError::from((::redis::ErrorKind::Client, "cannot serialize a record", e.to_string()))
            })?,
            None => String::new(),
        };
        let mut cmd = ::redis::cmd("EVALSHA");
        cmd.arg(self.cas.get_hash()).arg(2).arg(self.key(w.id)).arg(&self.seq);
        cmd.arg(&w.base.version).arg(state).arg(w.side.len());
        for c in &w.side {
            cmd.arg(c.len()).arg(c);
        }
        Ok(cmd)
    }

    fn outcome(&self, w: &Write<'_, R>, reply: Value) -> RedisResult<Written<R>> {
        let (done, version, state): (i64, String, String) = ::redis::from_redis_value(reply)?;
        let got = if done == 1 {
            Versioned { version, record: w.after.cloned() }
        } else {
            self.decode(Some(version), Some(state))
        };
        self.remember(w.id, &got);
        Ok(if done == 1 { Written::Done(got) } else { Written::Conflict(got) })
    }

    /// Writes several changes in one exchange (each atomic on its own). One result per write, in order.
    pub async fn write_many(&self, writes: &[Write<'_, R>]) -> RedisResult<Vec<RedisResult<Written<R>>>> {
        if writes.is_empty() {
            return Ok(Vec::new());
        }
        let mut conn = self.redis.conn();
        let mut replies: Vec<Option<RedisResult<Value>>> = (0..writes.len()).map(|_| None).collect();
        for round in 0..2 {
            let mut pipe = ::redis::pipe();
            pipe.ignore_errors();
            let mut sent = Vec::new();
            for (i, w) in writes.iter().enumerate() {
                if replies[i].is_none() {
                    pipe.add_command(self.cas_cmd(w)?);
                    sent.push(i);
                }
            }
            if sent.is_empty() {
                break;
            }
            let got: Vec<Value> = pipe.query_async(&mut conn).await?;
            let mut missing = false;
            for (i, v) in sent.into_iter().zip(got) {
                match v {
                    Value::ServerError(e) if e.kind() == Some(::redis::ServerErrorKind::NoScript) && round == 0 => {
                        missing = true;
                    }
                    Value::ServerError(e) => replies[i] = Some(Err(e.into())),
                    v => replies[i] = Some(Ok(v)),
                }
            }
            if !missing {
                break;
            }
            // Redis restarted (or its script cache was flushed): load the script, send the rest again (a
            // NOSCRIPT write did nothing).
            self.cas.load_async(&mut conn).await?;
        }
        writes
            .iter()
            .zip(replies)
            .map(|(w, r)| match r {
                Some(Ok(v)) => Ok(self.outcome(w, v)),
                Some(Err(e)) => Ok(Err(e)),
                None => Err(::redis::RedisError::from((::redis::ErrorKind::Client, "script not loaded"))),
            })
            .collect()
    }

    /// Writes one change.
    pub async fn write(&self, w: Write<'_, R>) -> RedisResult<Written<R>> {
        self.write_many(std::slice::from_ref(&w)).await?.pop().expect("one reply")
    }

    /// Applies a change to record `id` until it holds: `change` gets the record (None when absent) and gives
    /// the new one (None: absent) and a result; `side` the commands that go with going from the one to the
    /// other; `same` whether the new one need not be written (then nothing is). Starts from the version
    /// cached here when there is one (one exchange when no other node wrote since), and from `base` when
    /// given.
    pub async fn apply<T>(
        &self,
        id: &str,
        base: Option<Versioned<R>>,
        mut change: impl FnMut(Option<&R>) -> (Option<R>, T),
        side: impl Fn(Option<&R>, Option<&R>) -> Vec<Vec<String>>,
        same: impl Fn(Option<&R>, Option<&R>) -> bool,
    ) -> RedisResult<T> {
        let mut base = match base.or_else(|| self.cached(id)) {
            Some(b) => b,
            None => self.fetch(id).await?,
        };
        for _ in 0..ATTEMPTS {
            let (after, out) = change(base.record.as_ref());
            if same(base.record.as_ref(), after.as_ref()) {
                return Ok(out);
            }
            let side = side(base.record.as_ref(), after.as_ref());
            match self.write(Write { id, base: &base, after: after.as_ref(), side }).await? {
                Written::Done(_) => return Ok(out),
                Written::Conflict(now) => base = now,
            }
        }
        Err(::redis::RedisError::from((
            ::redis::ErrorKind::Client,
            "a cluster record kept changing under this node's write; the change is dropped",
        )))
    }

    /// Applies a change to several records read together (`items`), writing them in one exchange; those
    /// another node wrote meanwhile are done again one by one, as [`Records::apply`] does. `change`, `side`
    /// and `same` get the record's id first. One result per record, in order.
    pub async fn apply_many<T>(
        &self,
        items: Vec<(String, Versioned<R>)>,
        change: impl Fn(&str, Option<&R>) -> (Option<R>, T),
        side: impl Fn(&str, Option<&R>, Option<&R>) -> Vec<Vec<String>>,
        same: impl Fn(Option<&R>, Option<&R>) -> bool,
    ) -> Vec<(String, RedisResult<T>)> {
        let mut planned = Vec::with_capacity(items.len());
        let mut out: Vec<(String, Option<RedisResult<T>>)> = Vec::with_capacity(items.len());
        for (id, base) in items {
            let (after, value) = change(&id, base.record.as_ref());
            if same(base.record.as_ref(), after.as_ref()) {
                out.push((id, Some(Ok(value))));
            } else {
                let side = side(&id, base.record.as_ref(), after.as_ref());
                planned.push((out.len(), base, after, value, side));
                out.push((id, None));
            }
        }
        let writes: Vec<Write<'_, R>> = planned
            .iter()
            .map(|(i, base, after, _, side)| Write { id: &out[*i].0, base, after: after.as_ref(), side: side.clone() })
            .collect();
        let results = match self.write_many(&writes).await {
            Ok(r) => r,
            Err(e) => {
                let msg = e.to_string();
                let kind = e.kind();
                (0..writes.len())
                    .map(|_| Err(::redis::RedisError::from((kind, "cluster records not written", msg.clone()))))
                    .collect()
            }
        };
        drop(writes);
        let mut again = Vec::new();
        for ((i, _, _, value, _), result) in planned.into_iter().zip(results) {
            match result {
                Ok(Written::Done(_)) => out[i].1 = Some(Ok(value)),
                Ok(Written::Conflict(now)) => again.push((i, now)),
                Err(e) => out[i].1 = Some(Err(e)),
            }
        }
        for (i, now) in again {
            let id = out[i].0.clone();
            let r = self.apply(&id, Some(now), |b| change(&id, b), |b, a| side(&id, b, a), &same).await;
            out[i].1 = Some(r);
        }
        out.into_iter().map(|(id, r)| (id, r.expect("every record answered"))).collect()
    }
}
