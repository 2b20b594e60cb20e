//! Node liveness and the cluster-wide census of wire dialects.
//!
//! Every node heartbeats every [`BEAT`]: it writes `<prefix>:node:<id>` (its socket counts per dialect, with
//! an expiry of `REALTIME_NODE_TIMEOUT`) and its time in the sorted set `<prefix>:nodes` (the members ever
//! seen). From the same round trip it learns the other nodes: those whose key is still there are alive (their
//! count feeds the Socket.IO adapter, their dialects the [`RedisCensus`]); one whose key expired is dead, and
//! the first node to remove it from the set (`ZREM` answers 1 to one node only) purges what it had
//! registered. Expiry is by Redis's clock, so the nodes' clocks need not agree.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use super::pubsub::LinkStats;
use super::{Redis, esc};
use crate::cluster::{Census, DIALECT_SLOTS};

/// How often a node heartbeats.
pub const BEAT: Duration = Duration::from_secs(3);

/// What a node says about itself in its heartbeat.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Beat {
    pub dialects: Vec<usize>,
    pub sockets: usize,
    /// Epoch ms of the node's start.
    pub started: i64,
}

/// A live node, as `/health` lists it.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct NodeInfo {
    pub id: String,
    /// Ms since its last heartbeat.
    pub last_beat_ms: i64,
    pub sockets: usize,
    pub started: i64,
}

/// The census of this node's sockets per dialect, united with the other nodes' (as of their last beat):
/// a dialect with a socket anywhere is rendered by every node.
///
/// A heartbeat comes every 3 s: so that a dialect's first socket on a node is not missed by the others
/// meanwhile, the node announces it at once ([`RedisCensus::on_first`]) and the others count the dialect as
/// present for two beats ([`RedisCensus::heard`]), until their heartbeats say it themselves.
#[derive(Default)]
pub struct RedisCensus {
    local: [AtomicUsize; DIALECT_SLOTS],
    remote: [AtomicBool; DIALECT_SLOTS],
    /// Epoch ms until which a dialect announced by another node counts as present.
    heard_until: [std::sync::atomic::AtomicI64; DIALECT_SLOTS],
    announce: std::sync::OnceLock<Box<dyn Fn(usize) + Send + Sync>>,
}

impl RedisCensus {
    /// `announce` is called when a dialect gets its first socket on this node.
    pub fn on_first(&self, announce: impl Fn(usize) + Send + Sync + 'static) {
        let _ = self.announce.set(Box::new(announce));
    }

    /// Another node announced its first socket of `dialect`.
    pub fn heard(&self, dialect: usize) {
        if let Some(slot) = self.heard_until.get(dialect) {
            let until = crate::store::now_ms() + 2 * BEAT.as_millis() as i64;
            slot.fetch_max(until, Ordering::SeqCst);
        }
    }

    /// The dialects with a socket on this node.
    pub fn local_dialects(&self) -> Vec<usize> {
        (0..DIALECT_SLOTS).filter(|d| self.local[*d].load(Ordering::SeqCst) > 0).collect()
    }

    fn heard_recently(&self, dialect: usize) -> bool {
        self.heard_until.get(dialect).is_some_and(|t| t.load(Ordering::SeqCst) > crate::store::now_ms())
    }

    fn local_counts(&self) -> Vec<usize> {
        self.local.iter().map(|c| c.load(Ordering::SeqCst)).collect()
    }

    fn set_remote(&self, present: &[bool; DIALECT_SLOTS]) {
        for (slot, p) in self.remote.iter().zip(present) {
            slot.store(*p, Ordering::SeqCst);
        }
    }
}

impl Census for RedisCensus {
    fn arrived(&self, dialect: usize) {
        if let Some(c) = self.local.get(dialect)
            && c.fetch_add(1, Ordering::SeqCst) == 0
            && let Some(announce) = self.announce.get()
        {
            announce(dialect);
        }
    }

    fn left(&self, dialect: usize) {
        if let Some(c) = self.local.get(dialect) {
            let _ = c.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
        }
    }

    fn present(&self, dialect: usize) -> bool {
        self.local.get(dialect).is_some_and(|c| c.load(Ordering::SeqCst) > 0)
            || self.remote.get(dialect).is_some_and(|p| p.load(Ordering::SeqCst))
            || self.heard_recently(dialect)
    }
}

/// This node's membership of the cluster.
pub struct Nodes {
    redis: Redis,
    id: String,
    timeout: Duration,
    started: i64,
    census: Arc<RedisCensus>,
    stats: Arc<LinkStats>,
    live: Mutex<Vec<NodeInfo>>,
    /// A beat has succeeded before.
    beaten: AtomicBool,
}

/// What a heartbeat found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Beaten {
    /// Dead nodes this node claimed: it purges them.
    pub dead: Vec<String>,
    /// This node's state is gone from Redis: its sockets must be registered again.
    pub lost: bool,
}

impl Nodes {
    pub fn new(redis: Redis, id: &str, timeout: Duration, census: Arc<RedisCensus>, stats: Arc<LinkStats>) -> Nodes {
        stats.nodes.store(1, Ordering::Relaxed);
        Nodes {
            redis,
            id: id.to_string(),
            timeout,
            started: crate::store::now_ms(),
            census,
            stats,
            live: Mutex::new(Vec::new()),
            beaten: AtomicBool::new(false),
        }
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn census(&self) -> &Arc<RedisCensus> {
        &self.census
    }

    fn set_key(&self) -> String {
        self.redis.key("nodes")
    }

    fn node_key(&self, id: &str) -> String {
        self.redis.key(&format!("node:{}", esc(id)))
    }

    /// The live nodes as of the last beat (this one included once it has beaten).
    pub fn live(&self) -> Vec<NodeInfo> {
        self.live.lock().clone()
    }

    /// One heartbeat: writes this node's, reads the others'. Returns the dead nodes this node claimed (it
    /// must purge them), and whether this node's own state was lost since its previous beat (Redis
    /// restarted empty, or the others took this node for dead and purged it): the node must register its
    /// sockets again. Err: Redis did not answer (nothing is claimed; the census keeps its last view).
    pub async fn beat(&self, sockets: usize) -> Result<Beaten, redis::RedisError> {
        let now = crate::store::now_ms();
        let me = Beat { dialects: self.census.local_counts(), sockets, started: self.started };
        let mut conn = self.redis.conn();
        let (previous, members): (Option<String>, Vec<(String, i64)>) = redis::pipe()
            .cmd("SET")
            .arg(self.node_key(&self.id))
            .arg(serde_json::to_string(&me).unwrap_or_default())
            .arg("PX")
            .arg(self.timeout.as_millis() as u64)
            .arg("GET")
            .cmd("ZADD")
            .arg(self.set_key())
            .arg(now)
            .arg(&self.id)
            .ignore()
            .cmd("ZRANGE")
            .arg(self.set_key())
            .arg(0)
            .arg(-1)
            .arg("WITHSCORES")
            .query_async(&mut conn)
            .await?;
        // Alive: its heartbeat key has not expired. Redis's clock decides, so nodes whose clocks differ do
        // not take each other for dead.
        let beats: Vec<Option<String>> = if members.is_empty() {
            Vec::new()
        } else {
            let mut mget = redis::cmd("MGET");
            for (id, _) in &members {
                mget.arg(self.node_key(id));
            }
            mget.query_async(&mut conn).await?
        };
        let (alive, dead): (Vec<_>, Vec<_>) = members.into_iter().zip(beats).partition(|(_, b)| b.is_some());
        let mut claimed = Vec::new();
        for ((id, _), _) in dead {
            let removed: i64 = redis::cmd("ZREM").arg(self.set_key()).arg(&id).query_async(&mut conn).await?;
            if removed == 1 && id != self.id {
                claimed.push(id);
            }
        }
        let mut remote = [false; DIALECT_SLOTS];
        let mut live = Vec::with_capacity(alive.len());
        for ((id, at), beat) in alive {
            let beat: Beat = beat.and_then(|b| serde_json::from_str(&b).ok()).unwrap_or_default();
            if id != self.id {
                for (slot, n) in remote.iter_mut().zip(&beat.dialects) {
                    *slot |= *n > 0;
                }
            }
            live.push(NodeInfo { id, last_beat_ms: now - at, sockets: beat.sockets, started: beat.started });
        }
        self.census.set_remote(&remote);
        self.stats.nodes.store(live.len().max(1), Ordering::Relaxed);
        *self.live.lock() = live;
        let lost = previous.is_none() && self.beaten.swap(true, Ordering::SeqCst);
        Ok(Beaten { dead: claimed, lost })
    }

    /// Leaves the cluster at shutdown: the others stop counting this node at once.
    pub async fn leave(&self) {
        let _: redis::RedisResult<()> = redis::pipe()
            .cmd("DEL")
            .arg(self.node_key(&self.id))
            .ignore()
            .cmd("ZREM")
            .arg(self.set_key())
            .arg(&self.id)
            .ignore()
            .query_async(&mut self.redis.conn())
            .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::redis::testing::RedisServer;

    #[tokio::test]
    async fn nodes_see_each_other_and_one_claims_the_dead() {
        let server = RedisServer::start();
        let redis = server.redis().await;
        let timeout = Duration::from_millis(400);
        let (ca, cb) = (Arc::new(RedisCensus::default()), Arc::new(RedisCensus::default()));
        let a = Nodes::new(redis.clone(), "a:1", timeout, ca.clone(), Arc::default());
        let b = Nodes::new(redis.clone(), "b:1", timeout, cb.clone(), Arc::default());
        cb.arrived(2);
        assert!(!ca.present(2));
        assert_eq!(a.beat(0).await.unwrap(), Beaten::default());
        assert_eq!(b.beat(1).await.unwrap(), Beaten::default());
        assert_eq!(a.beat(0).await.unwrap(), Beaten::default());
        assert_eq!(a.live().len(), 2);
        assert_eq!(a.stats.nodes.load(Ordering::Relaxed), 2);
        assert!(ca.present(2), "a dialect present on another node is present here");
        assert!(!cb.present(1));
        // b stops beating: after the timeout a claims it, once.
        tokio::time::sleep(Duration::from_millis(500)).await;
        // a's own key expired as well (it did not beat for longer than the timeout): a learns it was lost
        assert_eq!(a.beat(0).await.unwrap(), Beaten { dead: vec!["b:1".to_string()], lost: true });
        assert_eq!(a.beat(0).await.unwrap(), Beaten::default());
        assert_eq!(a.live().len(), 1);
        assert!(!ca.present(2), "the dead node's dialects are gone");
        // a first socket announced by another node counts at once
        let announced = Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = announced.clone();
        cb.on_first(move |d| seen.lock().unwrap().push(d));
        cb.arrived(5);
        cb.arrived(5);
        assert_eq!(*announced.lock().unwrap(), vec![5], "announced once, on the first socket");
        assert!(!ca.present(5));
        ca.heard(5);
        assert!(ca.present(5));
        // Redis loses everything: the next beat says so
        let _: () = ::redis::cmd("FLUSHALL").query_async(&mut redis.conn()).await.unwrap();
        assert!(a.beat(0).await.unwrap().lost);
    }
}
