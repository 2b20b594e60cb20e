//! The node: handles to this process's application parts and the backends they share. No logic lives
//! here; `server.rs` builds it (choosing the backends once) and the edges (Socket.IO, HTTP) hold it.

use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::Instant;

use crate::app::Fanout;
use crate::app::calls::Calls;
use crate::app::connections::Connections;
use crate::app::messages::Messages;
use crate::app::presence::Presence;
use crate::app::reactions::Reactions;
use crate::app::receipts::Receipts;
use crate::app::rooms::Rooms;
use crate::app::session::{Audit, Sessions};
use crate::app::typing::Typing;
use crate::app::upkeep::Upkeep;
use crate::auth::Verifier;
use crate::cluster::{RateLimiter, Roster};
use crate::config::Config;
use crate::metrics::Metrics;
use crate::store::Store;
use crate::store::writer::MessageWriter;

pub struct Node {
    pub cfg: Config,
    /// This node in the connections table: host and port, stable across restarts so a restart can close the
    /// rows its previous run left open.
    pub id: String,
    pub started: Instant,
    pub store: Store,
    pub writer: MessageWriter,
    pub verifier: Arc<Verifier>,
    pub metrics: Arc<Metrics>,
    pub redis: Option<redis::Client>,
    /// This node's membership of a cluster (Redis configured).
    pub cluster: Option<Arc<crate::app::cluster::Cluster>>,

    pub roster: Arc<dyn Roster>,
    pub limiter: Arc<dyn RateLimiter>,
    pub fanout: Arc<Fanout>,

    pub sessions: Arc<Sessions>,
    pub audit: Arc<Audit>,
    pub connections: Arc<Connections>,
    pub rooms: Arc<Rooms>,
    pub messages: Arc<Messages>,
    pub presence: Arc<Presence>,
    pub typing: Arc<Typing>,
    pub receipts: Arc<Receipts>,
    pub reactions: Arc<Reactions>,
    pub calls: Arc<Calls>,
    pub upkeep: Arc<Upkeep>,

    /// Handshakes in progress (admitted against `REALTIME_MAX_CONNECTIONS` with the open sessions).
    pub handshakes: AtomicUsize,
    /// Wrong API keys per client address (`/api/*`): past the budget the address hears 429.
    /// Turns true when shutdown begins (new connections are refused, open long-polls are ended).
    pub stopping: tokio::sync::watch::Sender<bool>,
}

impl Node {
    pub fn is_stopping(&self) -> bool {
        *self.stopping.borrow()
    }
}
