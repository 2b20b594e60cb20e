//! This node's place in a cluster (several nodes on one Redis): the heartbeat, the purge of nodes that
//! stopped beating, and the repair after Redis lost this node's state.
//!
//! Every [`BEAT`] the node writes its heartbeat and reads the others' ([`Nodes::beat`]). A node whose last
//! beat is older than `REALTIME_NODE_TIMEOUT` is dead: one survivor claims it and purges what it had
//! registered (its sockets leave the rooms, presence and typing as if they had disconnected then, so its
//! users go offline after the grace unless they reconnected to another node) and closes its rows in the
//! connections table. A node that starts purges its own id first (what its previous run left behind).
//!
//! While Redis is unreachable the beats fail: the node keeps serving its own sockets (`/health` says
//! `degraded`). When a beat succeeds again, or finds this node's own heartbeat key gone (Redis restarted
//! empty, however briefly; or the others took this node for dead during a long outage and purged it), the
//! node re-registers each of its sockets that the shared state no longer knows, so presence and occupancy
//! converge without a restart.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use super::connections::Connections;
use super::presence::Presence;
use super::receipts::{ReceiptBus, ReceiptOp, Receipts};
use super::rooms::Rooms;
use super::session::Sessions;
use super::typing::Typing;
use super::worker::Worker;
use crate::cluster::redis::nodes::{BEAT, NodeInfo, Nodes};
use crate::cluster::redis::pubsub::{Bus, LinkStats, PubSubDriver};
use crate::store::Store;

pub struct Cluster {
    nodes: Nodes,
    stats: Arc<LinkStats>,
    store: Store,
    sessions: Arc<Sessions>,
    connections: Arc<Connections>,
    rooms: Arc<Rooms>,
    presence: Arc<Presence>,
    typing: Arc<Typing>,
    /// The last beat failed: the next one that succeeds repairs this node's state.
    down: AtomicBool,
    last_error: parking_lot::Mutex<Option<String>>,
    worker: Worker,
    receipts_task: parking_lot::Mutex<Option<tokio::task::JoinHandle<()>>>,
    census_task: parking_lot::Mutex<Option<tokio::task::JoinHandle<()>>>,
    latency_task: parking_lot::Mutex<Option<tokio::task::JoinHandle<()>>>,
    probe: std::sync::OnceLock<Bus>,
}

/// What nodes tell each other about the dialects of their sockets.
#[derive(serde::Serialize, serde::Deserialize)]
enum CensusNote {
    /// The sender got its first socket of this dialect.
    First(usize),
    /// The sender joined: each node answers with the dialects it has sockets of.
    Hello,
}

struct ReceiptsOverBus(Bus);

impl ReceiptBus for ReceiptsOverBus {
    fn publish(&self, op: &ReceiptOp) {
        self.0.send(op);
    }
}

impl Cluster {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        nodes: Nodes,
        stats: Arc<LinkStats>,
        store: Store,
        sessions: Arc<Sessions>,
        connections: Arc<Connections>,
        rooms: Arc<Rooms>,
        presence: Arc<Presence>,
        typing: Arc<Typing>,
    ) -> Cluster {
        Cluster {
            nodes,
            stats,
            store,
            sessions,
            connections,
            rooms,
            presence,
            typing,
            down: AtomicBool::new(false),
            last_error: parking_lot::Mutex::new(None),
            worker: Worker::default(),
            receipts_task: parking_lot::Mutex::new(None),
            census_task: parking_lot::Mutex::new(None),
            latency_task: parking_lot::Mutex::new(None),
            probe: std::sync::OnceLock::new(),
        }
    }

    /// Before the node serves: what a previous run of this node left in the shared state goes (its users go
    /// offline after the grace unless they reconnect), then the first heartbeat.
    pub async fn join(&self) {
        self.purge(self.nodes.id(), "restarted").await;
        self.beat().await;
    }

    pub fn start(self: &Arc<Self>) {
        self.worker.every(self, BEAT, BEAT, |c| async move { c.beat().await });
    }

    /// A wire dialect's first socket on a node is announced to the others at once (see `RedisCensus`), and
    /// a node that joins asks the others for the dialects they speak: between heartbeats no node renders an
    /// event without a dialect that another node's sockets need.
    pub async fn share_census(&self, bus: Bus) {
        let bus = Arc::new(bus);
        let census = self.nodes.census().clone();
        let mut heard = bus.listen::<CensusNote>().await;
        let (listener, replies) = (census.clone(), bus.clone());
        self.census_task.lock().replace(tokio::spawn(async move {
            while let Some(note) = heard.recv().await {
                match note {
                    CensusNote::First(d) => listener.heard(d),
                    CensusNote::Hello => {
                        for d in listener.local_dialects() {
                            replies.send(&CensusNote::First(d));
                        }
                    }
                }
            }
        }));
        // The answers count only once this node's subscriptions are live (at start they are being made).
        for _ in 0..100 {
            if self.stats.subscribed.load(Ordering::Relaxed) {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        bus.send(&CensusNote::Hello);
        census.on_first(move |d| bus.send(&CensusNote::First(d)));
    }

    /// Receipt changes made on the other nodes are applied here (see `receipts::ReceiptOp`); this node's go
    /// to them.
    pub async fn share_receipts(&self, bus: Bus, receipts: &Arc<Receipts>) {
        let mut from_others = bus.listen::<ReceiptOp>().await;
        let weak = Arc::downgrade(receipts);
        self.receipts_task.lock().replace(tokio::spawn(async move {
            while let Some(op) = from_others.recv().await {
                let Some(r) = weak.upgrade() else { return };
                r.apply_remote(op).await;
            }
        }));
        receipts.attach_bus(Arc::new(ReceiptsOverBus(bus)));
    }

    pub async fn stop(&self) {
        self.worker.stop().await;
        for task in [&self.receipts_task, &self.census_task, &self.latency_task] {
            if let Some(t) = task.lock().take() {
                t.abort();
            }
        }
        self.nodes.leave().await;
    }

    /// Every heartbeat also sends a probe through Redis pub/sub to this node, whose travel time is the
    /// cross-node hop (`realtime_cluster_latency_ms`).
    pub async fn probe_latency(&self, driver: &PubSubDriver, prefix: &str, metrics: Arc<crate::metrics::Metrics>) {
        let chan = format!("latency:{}", self.nodes.id());
        let mut back = Bus::new(driver.clone(), prefix, &chan, "in").listen::<i64>().await;
        self.latency_task.lock().replace(tokio::spawn(async move {
            while let Some(sent) = back.recv().await {
                let micros = crate::store::now_micros() - sent;
                metrics.observe_cluster_latency(micros.max(0) as f64 / 1000.0);
            }
        }));
        let _ = self.probe.set(Bus::new(driver.clone(), prefix, &chan, "out"));
    }

    pub fn stats(&self) -> &Arc<LinkStats> {
        &self.stats
    }

    /// The live nodes as of the last heartbeat.
    pub fn nodes(&self) -> Vec<NodeInfo> {
        self.nodes.live()
    }

    /// The latest heartbeat error, while Redis does not answer.
    pub fn error(&self) -> Option<String> {
        self.last_error.lock().clone()
    }

    async fn beat(&self) {
        if let Some(probe) = self.probe.get() {
            probe.send(&crate::store::now_micros());
        }
        match self.nodes.beat(self.sessions.len()).await {
            Ok(beaten) => {
                *self.last_error.lock() = None;
                let was_down = self.down.swap(false, Ordering::SeqCst);
                if was_down || beaten.lost {
                    let n = self.connections.republish().await;
                    if n > 0 {
                        tracing::info!(
                            sockets = n,
                            "Redis had lost this node's state; its sockets are registered again"
                        );
                    }
                }
                for id in beaten.dead {
                    self.purge(&id, "stopped answering").await;
                }
            }
            Err(e) => {
                if !self.down.swap(true, Ordering::SeqCst) {
                    tracing::warn!(
                        error = %e,
                        "cannot heartbeat on Redis: this node serves its own sockets only until Redis answers"
                    );
                }
                *self.last_error.lock() = Some(e.to_string());
            }
        }
    }

    /// Removes what node `id` had registered.
    async fn purge(&self, id: &str, why: &str) {
        let sockets = self.rooms.purge_node(id).await.len();
        let devices = self.presence.purge_node(id).await;
        let typists = self.typing.purge_node(id).await;
        let rows = self.store.close_stale_connections(Some(id), &format!("node {why}")).await.unwrap_or(0);
        if sockets + devices + typists > 0 || rows > 0 {
            tracing::info!(node = id, sockets, devices, typists, rows, "removed the sockets of a node that {why}");
        }
    }
}
