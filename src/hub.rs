//! The hub: the server's shared state, handed to socket handlers and HTTP handlers alike.

use std::net::IpAddr;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use dashmap::DashMap;
use parking_lot::Mutex;
use socketioxide::SocketIo;
use socketioxide::operators::BroadcastOperators;

use crate::auth::Verifier;
use crate::config::Config;
use crate::domain::occupancy::Occupancy;
use crate::domain::ratelimit::{Rate, TokenBucket};
use crate::metrics::Metrics;
use crate::service::presence::PresenceHub;
use crate::service::receipts::ReceiptsHub;
use crate::service::typing::TypingHub;
use crate::store::Store;
use crate::store::ledger::Ledger;
use crate::store::writer::MessageWriter;
use crate::transport::session::Session;

pub type App = Arc<Hub>;

pub struct Hub {
    pub cfg: Config,
    pub store: Store,
    pub writer: MessageWriter,
    pub ledger: Ledger,
    pub verifier: Verifier,
    pub metrics: Metrics,
    /// This node in the connections table: host and port, stable across restarts so a restart can close
    /// the rows its previous run left open.
    pub node_id: String,
    pub started: Instant,
    pub io: OnceLock<SocketIo>,
    pub redis: Option<redis::Client>,
    /// Live sessions of this node by socket id.
    pub sessions: DashMap<String, Arc<Session>>,
    /// Live socket count per (account, user), for users-online counts.
    pub users: DashMap<(String, String), u32>,
    pub occupancy: Mutex<Occupancy>,
    pub presence: PresenceHub,
    pub typing: TypingHub,
    pub receipts: ReceiptsHub,
    event_buckets: DashMap<(String, String), TokenBucket>,
    connect_buckets: DashMap<IpAddr, TokenBucket>,
    /// Handshakes in progress (admitted against `REALTIME_MAX_CONNECTIONS` with the open sessions).
    pub handshakes: std::sync::atomic::AtomicUsize,
    /// Turns true when shutdown begins (new connections are refused, open long-polls are ended).
    pub stopping: tokio::sync::watch::Sender<bool>,
}

impl Hub {
    pub fn new(cfg: Config, store: Store) -> anyhow::Result<Hub> {
        let verifier = Verifier::new(&cfg)?;
        let writer = MessageWriter::spawn(store.clone(), cfg.batch_size);
        let ledger = Ledger::spawn(store.clone());
        let redis = match &cfg.redis_url {
            Some(url) => Some(redis::Client::open(url.as_str()).map_err(|e| {
                anyhow::anyhow!("REALTIME_REDIS_URL is not usable ({e}); fix it or unset it to run without Redis")
            })?),
            None => None,
        };
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_else(|_| "localhost".into());
        Ok(Hub {
            node_id: format!("{}:{}", host.trim(), cfg.port),
            store,
            writer,
            ledger,
            verifier,
            metrics: Metrics::new(),
            started: Instant::now(),
            io: OnceLock::new(),
            redis,
            sessions: DashMap::new(),
            users: DashMap::new(),
            occupancy: Mutex::new(Occupancy::default()),
            presence: PresenceHub::new(&cfg),
            typing: TypingHub::new(&cfg),
            receipts: ReceiptsHub::default(),
            event_buckets: DashMap::new(),
            connect_buckets: DashMap::new(),
            handshakes: std::sync::atomic::AtomicUsize::new(0),
            stopping: tokio::sync::watch::Sender::new(false),
            cfg,
        })
    }

    pub fn io(&self) -> &SocketIo {
        self.io.get().expect("socket.io is set up before the server accepts connections")
    }

    /// The default namespace, to emit to rooms and find sockets. None once shutdown has closed it: grace timers
    /// and flushes still running then have nobody left to tell (socketioxide's `io.to()` would panic there).
    pub fn ns(&self) -> Option<BroadcastOperators> {
        self.io().of("/")
    }

    /// Takes one point of the user's event budget (sockets and HTTP routes share it), or says why not.
    pub fn check_rate(&self, account: &str, subject: &str) -> crate::error::AppResult<()> {
        if self.allow_event(account, subject) {
            return Ok(());
        }
        self.metrics.rate_limited.inc();
        Err(crate::error::AppError::new(
            crate::error::ErrorCode::RateLimited,
            format!(
                "more than {} events in {} s; slow down",
                self.cfg.rate_limit_points,
                self.cfg.rate_limit_duration.as_secs()
            ),
        ))
    }

    /// Takes one point of the user's event budget; false when the user is over the limit.
    pub fn allow_event(&self, account: &str, subject: &str) -> bool {
        if !self.cfg.rate_limit_enabled {
            return true;
        }
        let rate = Rate { capacity: self.cfg.rate_limit_points, period: self.cfg.rate_limit_duration };
        let now = Instant::now();
        self.event_buckets
            .entry((account.to_string(), subject.to_string()))
            .or_insert_with(|| TokenBucket::full(rate, now))
            .take(rate, now)
    }

    /// Takes one point of the IP's connection budget (`REALTIME_RATE_LIMIT` per minute).
    pub fn allow_connect(&self, ip: IpAddr) -> bool {
        if self.cfg.connect_rate_per_ip == 0 {
            return true;
        }
        let rate = Rate { capacity: self.cfg.connect_rate_per_ip, period: std::time::Duration::from_secs(60) };
        let now = Instant::now();
        self.connect_buckets.entry(ip).or_insert_with(|| TokenBucket::full(rate, now)).take(rate, now)
    }

    /// Forgets rate-limit buckets that have refilled, so idle users cost nothing.
    pub fn sweep_buckets(&self) {
        let now = Instant::now();
        let rate = Rate { capacity: self.cfg.rate_limit_points, period: self.cfg.rate_limit_duration };
        self.event_buckets.retain(|_, b| !b.is_idle(rate, now));
        let rate = Rate { capacity: self.cfg.connect_rate_per_ip.max(1), period: std::time::Duration::from_secs(60) };
        self.connect_buckets.retain(|_, b| !b.is_idle(rate, now));
    }

    pub fn is_stopping(&self) -> bool {
        *self.stopping.borrow()
    }

    pub fn connection_count(&self) -> usize {
        self.sessions.len()
    }

    pub fn users_online(&self, account: Option<&str>) -> usize {
        match account {
            None => self.users.len(),
            Some(a) => self.users.iter().filter(|e| e.key().0 == a).count(),
        }
    }
}
