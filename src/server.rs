//! The server process and composition root: open storage, repair, choose the backends, assemble the node,
//! serve Socket.IO and HTTP on one port, shut down cleanly.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::{Duration, Instant};

use tokio::net::TcpListener;

use crate::app::Fanout;
use crate::app::calls::Calls;
use crate::app::cluster::Cluster;
use crate::app::connections::Connections;
use crate::app::dms::Dms;
use crate::app::messages::Messages;
use crate::app::presence::{Presence, PresenceCfg};
use crate::app::reactions::Reactions;
use crate::app::receipts::Receipts;
use crate::app::rooms::Rooms;
use crate::app::session::{Audit, Sessions};
use crate::app::typing::Typing;
use crate::app::upkeep::Upkeep;
use crate::auth::Verifier;
use crate::cluster::memory::{
    MemoryCalls, MemoryCensus, MemoryDmClaims, MemoryPresence, MemoryRateLimiter, MemoryRoster, MemoryTyping,
};
use crate::cluster::redis::Redis;
use crate::cluster::redis::nodes::{Nodes, RedisCensus};
use crate::cluster::redis::pubsub::{Bus, LinkStats, PubSubDriver};
use crate::cluster::{CallRegistry, Census, DmClaims, PresenceBackend, RateLimiter, Roster, TypingBackend};
use crate::config::Config;
use crate::domain::names::DEFAULT_ACCOUNT;
use crate::domain::policy::Visibility;
use crate::domain::presence::PresenceConfig;
use crate::domain::ratelimit::Rate;
use crate::domain::typing::TypingConfig;
use crate::metrics::Metrics;
use crate::node::Node;
use crate::store::Store;
use crate::store::ledger::Ledger;
use crate::store::rooms::NewRoom;
use crate::store::writer::MessageWriter;
use crate::systemd;
use crate::transport::socketio::Edge;
use crate::transport::socketio::adapter::AdapterState;
use crate::transport::socketio::admin::AdminUi;
use crate::transport::socketio::fanout::SocketIoFanout;

/// Rooms every installation starts with.
pub const DEFAULT_ROOMS: &[(&str, &str)] = &[("general", "channel"), ("announcements", "broadcast")];

/// What `init` (and every start) does: schema, default rooms, repair of state a crash left behind.
pub async fn prepare(store: &Store, node: Option<&str>) -> anyhow::Result<PrepareReport> {
    let mut report = PrepareReport::default();
    for (name, kind) in DEFAULT_ROOMS {
        let room = NewRoom { name, kind, visibility: Visibility::Public, max_members: None, created_by: None };
        if store.create_room(DEFAULT_ACCOUNT, &room).await? {
            report.rooms_created.push(name.to_string());
        }
    }
    store.touch_last_seen_of_open_connections(node).await?;
    report.stale_connections = store.close_stale_connections(node, "server restarted").await?;
    report.stale_presence = store.reset_presence().await?;
    Ok(report)
}

#[derive(Debug, Default)]
pub struct PrepareReport {
    pub rooms_created: Vec<String>,
    pub stale_connections: u64,
    pub stale_presence: u64,
}

/// Runs the server in the foreground until SIGTERM or SIGINT.
pub async fn run(cfg: Config) -> anyhow::Result<()> {
    if let Some(problem) = cfg.auth_problem() {
        anyhow::bail!(problem);
    }
    raise_open_files_limit(cfg.max_connections);
    tracing::info!(database = cfg.database.dialect(), "opening storage");
    let store = Store::open(&cfg.database).await?;
    let addr: SocketAddr = format!("{}:{}", cfg.host, cfg.port)
        .parse()
        .or_else(|_| format!("[{}]:{}", cfg.host, cfg.port).parse())
        .map_err(|_| anyhow::anyhow!("REALTIME_HOST={:?} is not an IP address to bind", cfg.host))?;
    let listener = listen(addr).map_err(|e| {
        anyhow::anyhow!("cannot listen on {addr} ({e}); is another server on REALTIME_PORT={}?", cfg.port)
    })?;
    let addr = listener.local_addr()?;

    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_else(|_| "localhost".into());
    let id = format!("{}:{}", host.trim(), cfg.port);
    let link = match &cfg.redis_url {
        Some(url) => Some(ClusterLink::open(url, &cfg.redis_prefix)?),
        None => None,
    };
    let driver = link.as_ref().map(|l| l.driver.clone());
    let state = match &link {
        Some(l) => AdapterState::cluster(l.driver.clone(), l.redis.prefix()),
        None => AdapterState::Local,
    };
    let (sio_layer, io) = crate::transport::socketio::build(&cfg, state);
    // Sockets counted per wire dialect: the fan-out renders for the dialects present (on any node) only.
    let (census, redis_census): (Arc<dyn Census>, _) = match &link {
        Some(_) => {
            let c = Arc::new(RedisCensus::default());
            (c.clone(), Some(c))
        }
        None => (Arc::new(MemoryCensus::default()), None),
    };
    // The Socket.IO Admin UI's namespace, when it is on (off: no hook runs anywhere).
    let admin = cfg.admin_ui.then(|| AdminUi::new(io.clone()));
    let fanout = Arc::new(SocketIoFanout::new(io.clone(), census.clone(), admin.clone()));
    let node = assemble(cfg, id, store, fanout, link, redis_census)?;
    node.verifier.load_keys().await;
    let report = prepare(&node.store, Some(&node.id)).await?;
    if report.stale_connections > 0 || report.stale_presence > 0 {
        tracing::info!(
            connections = report.stale_connections,
            presence = report.stale_presence,
            "repaired state left by the previous run"
        );
    }
    if let (Some(cluster), Some(driver)) = (&node.cluster, &driver) {
        let bus = |name: &str| Bus::new(driver.clone(), &node.cfg.redis_prefix, name, &node.id);
        cluster.share_receipts(bus("receipts"), &node.receipts).await;
        cluster.share_census(bus("census")).await;
        cluster.probe_latency(driver, &node.cfg.redis_prefix, node.metrics.clone()).await;
        cluster.join().await;
        tracing::info!(
            node = %node.id,
            nodes = cluster.nodes().len(),
            prefix = %node.cfg.redis_prefix,
            "cluster mode: fan-out, presence, typing, occupancy, calls and dm claims are shared through Redis"
        );
    }
    start(&node);
    let edge = Edge::register(io, node.clone(), census, admin).await;

    let mut router = crate::transport::http::router(node.clone())
        .layer(sio_layer)
        .layer(axum::middleware::from_fn_with_state(
            crate::transport::http::engine::EngineGate::new(node.clone()),
            crate::transport::http::engine::admit_sessions,
        ))
        .layer(axum::middleware::from_fn_with_state(node.clone(), crate::transport::http::polls::end_at_shutdown));
    // The Admin UI's origins are allowed besides a list of origins while it is on.
    let admin_origins = if node.cfg.admin_ui { node.cfg.admin_ui_origins.clone() } else { Vec::new() };
    if let crate::config::Cors::List(origins) = &node.cfg.cors {
        router = router.layer(axum::middleware::from_fn_with_state(
            Arc::new(origins.iter().chain(&admin_origins).cloned().collect::<Vec<_>>()),
            crate::transport::http::refuse_foreign_origin,
        ));
    }
    let mut router = router.layer(crate::transport::http::cors(&node.cfg));
    if node.cfg.cors == crate::config::Cors::Any && !admin_origins.is_empty() {
        router = router.layer(axum::middleware::from_fn_with_state(
            Arc::new(admin_origins),
            crate::transport::http::admin_ui_credentials,
        ));
    }
    if node.cfg.enable_compression {
        router = router.layer(tower_http::compression::CompressionLayer::new());
    }

    crate::transport::socketio::bound_queued_bytes(node.cfg.max_buffer_bytes, node.metrics.clone());
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stall =
        crate::transport::http::serve::WriteStall { timeout: node.cfg.write_timeout, metrics: node.metrics.clone() };
    let server =
        tokio::spawn(crate::transport::http::serve::serve(listener, router, stop_rx, Duration::from_secs(10), stall));

    tracing::info!(%addr, database = node.store.dialect(), "listening on http://{addr}");
    systemd::ready(&node).await;
    let watchdog = systemd::spawn_watchdog(node.clone());

    wait_for_signal().await;
    tracing::info!("shutting down");
    systemd::stopping();
    watchdog.abort();
    node.stopping.send_replace(true);

    // Sockets first (their sessions record the closes), then HTTP, then pending writes.
    let sockets = node.sessions.len();
    edge.close().await;
    tracing::info!(sockets, "sockets closed");
    let _ = stop_tx.send(true);
    let _ = server.await;
    tracing::info!("HTTP stopped");
    node.writer.close().await;
    node.presence.end_sessions_at_shutdown().await;
    stop(&node).await;
    node.audit.ledger().flush().await;
    tracing::info!("pending writes flushed");
    let _ = node.store.close_stale_connections(Some(&node.id), "server stopped").await;
    node.store.pool.close().await;
    tracing::info!("stopped");
    Ok(())
}

/// A node's connection to the cluster: the Redis the backends share, and the adapter's pub/sub driver.
struct ClusterLink {
    client: redis::Client,
    redis: Redis,
    driver: PubSubDriver,
    stats: Arc<LinkStats>,
}

impl ClusterLink {
    /// Never waits for Redis: every connection opens (and reopens) by itself, so a node starts and serves its
    /// own sockets while Redis is unreachable.
    fn open(url: &str, prefix: &str) -> anyhow::Result<ClusterLink> {
        let unusable = |e: redis::RedisError| {
            anyhow::anyhow!(
                "the Redis URL is not usable ({e}); fix REALTIME_REDIS_URL (or REALTIME_REDIS_HOST and its parts), \
                 or unset them to run a single node"
            )
        };
        let client = redis::Client::open(url).map_err(unusable)?;
        let redis = Redis::new(client.clone(), prefix).map_err(unusable)?;
        let stats = Arc::new(LinkStats::default());
        let publisher = crate::cluster::redis::lazy_connection(client.clone()).map_err(unusable)?;
        let driver = PubSubDriver::spawn(client.clone(), publisher, stats.clone());
        Ok(ClusterLink { client, redis, driver, stats })
    }
}

/// The shared-state backends of a node.
type Backends = (Arc<dyn Roster>, Arc<dyn PresenceBackend>, Arc<dyn TypingBackend>, Arc<dyn RateLimiter>);

/// Builds the node: the backends (chosen once, here: memory alone, Redis in a cluster) and the application
/// parts on top of them.
fn assemble(
    cfg: Config,
    id: String,
    store: Store,
    fanout: Arc<Fanout>,
    link: Option<ClusterLink>,
    census: Option<Arc<RedisCensus>>,
) -> anyhow::Result<Arc<Node>> {
    let verifier = Arc::new(Verifier::new(&cfg)?);
    let writer = MessageWriter::spawn(store.clone(), cfg.batch_size);
    let ledger = Ledger::spawn(store.clone());

    let presence_cfg =
        PresenceConfig::from_std(cfg.presence_offline_grace, cfg.presence_timeout, cfg.presence_coalesce);
    let typing_cfg = TypingConfig::from_std(cfg.typing_timeout, cfg.typing_coalesce);
    let events =
        cfg.rate_limit_enabled.then_some(Rate { capacity: cfg.rate_limit_points, period: cfg.rate_limit_duration });
    let connects = (cfg.connect_rate_per_ip > 0)
        .then_some(Rate { capacity: cfg.connect_rate_per_ip, period: Duration::from_secs(60) });
    let mut metrics = Metrics::new();
    let (roster, presence_backend, typing_backend, limiter): Backends = match &link {
        // The single-node backends.
        None => (
            Arc::new(MemoryRoster::new(cfg.presence_offline_grace)),
            Arc::new(MemoryPresence::new(presence_cfg)),
            Arc::new(MemoryTyping::new(typing_cfg)),
            Arc::new(MemoryRateLimiter::new(events, connects)),
        ),
        // Shared by the nodes.
        Some(l) => {
            metrics.cluster(l.stats.clone(), l.redis.failures().clone());
            let limiter = Arc::new(l.redis.rate_limiter(events, connects));
            limiter.spawn_sync(crate::cluster::redis::ratelimit::SYNC_INTERVAL);
            (
                Arc::new(l.redis.roster(cfg.presence_offline_grace)),
                Arc::new(l.redis.presence(&id, presence_cfg)),
                Arc::new(l.redis.typing(&id, typing_cfg)),
                limiter,
            )
        }
    };
    let metrics = Arc::new(metrics);

    let sessions = Arc::new(Sessions::default());
    let audit = Arc::new(Audit::new(&cfg, ledger));
    let receipts = Arc::new(Receipts::new(store.clone(), roster.clone(), fanout.clone()));
    let presence = Arc::new(Presence::new(
        presence_backend,
        store.clone(),
        fanout.clone(),
        roster.clone(),
        receipts.clone(),
        metrics.clone(),
        PresenceCfg { enabled: cfg.enable_presence, timeout: cfg.presence_timeout },
    ));
    let rooms = Arc::new(Rooms::new(
        store.clone(),
        roster.clone(),
        fanout.clone(),
        sessions.clone(),
        presence.clone(),
        receipts.clone(),
        audit.clone(),
        cfg.auto_create_rooms,
        id.clone(),
    ));
    let (dm_claims, call_registry): (Arc<dyn DmClaims>, Arc<dyn CallRegistry>) = match &link {
        None => (Arc::new(MemoryDmClaims::default()), Arc::new(MemoryCalls::default())),
        Some(l) => (Arc::new(l.redis.dm_claims()), Arc::new(l.redis.calls())),
    };
    let dms = Arc::new(Dms::new(store.clone(), rooms.clone(), dm_claims));
    let typing = Arc::new(Typing::new(
        typing_backend,
        roster.clone(),
        store.clone(),
        fanout.clone(),
        metrics.clone(),
        dms,
        cfg.enable_typing,
    ));
    let messages = Messages::new(store.clone(), writer.clone(), fanout.clone(), receipts.clone(), metrics.clone());
    let messages = Arc::new(if link.is_some() { messages.in_cluster() } else { messages });
    let reactions = Arc::new(Reactions::new(store.clone(), fanout.clone(), metrics.clone()));
    let calls = Arc::new(Calls::new(call_registry, fanout.clone(), cfg.call_ring_timeout));
    let connections = Arc::new(Connections::new(
        store.clone(),
        sessions.clone(),
        roster.clone(),
        rooms.clone(),
        presence.clone(),
        typing.clone(),
        calls.clone(),
        audit.clone(),
        verifier.clone(),
        metrics.clone(),
        id.clone(),
    ));
    let cluster = link.as_ref().map(|l| {
        let nodes =
            Nodes::new(l.redis.clone(), &id, cfg.node_timeout, census.clone().unwrap_or_default(), l.stats.clone());
        Arc::new(Cluster::new(
            nodes,
            l.stats.clone(),
            store.clone(),
            sessions.clone(),
            connections.clone(),
            rooms.clone(),
            presence.clone(),
            typing.clone(),
        ))
    });
    let redis = link.map(|l| l.client);
    let retention = (cfg.message_retention_days, cfg.event_retention_days);
    let upkeep = Arc::new(Upkeep::new(
        store.clone(),
        presence.clone(),
        limiter.clone(),
        sessions.clone(),
        retention,
        cfg.retention_interval,
    ));
    Ok(Arc::new(Node {
        cfg,
        id,
        started: Instant::now(),
        store,
        writer,
        verifier,
        metrics,
        redis,
        cluster,
        roster,
        limiter,
        fanout,
        sessions,
        audit,
        connections,
        rooms,
        messages,
        presence,
        typing,
        receipts,
        reactions,
        calls,
        upkeep,
        handshakes: AtomicUsize::new(0),
        stopping: tokio::sync::watch::Sender::new(false),
    }))
}

/// Starts every part's timer.
fn start(node: &Node) {
    node.connections.start();
    node.rooms.start();
    node.presence.start();
    node.typing.start();
    node.calls.start();
    node.receipts.start(node.cfg.receipt_flush_interval);
    node.upkeep.start();
    if let Some(c) = &node.cluster {
        c.start();
    }
}

/// Stops every part's timer (each finishes its round); the receipts write what is pending.
async fn stop(node: &Node) {
    node.connections.stop().await;
    node.rooms.stop().await;
    node.presence.stop().await;
    node.typing.stop().await;
    node.calls.stop().await;
    node.upkeep.stop().await;
    node.receipts.stop().await;
    if let Some(c) = &node.cluster {
        c.stop().await;
    }
}

/// Every connection is a file descriptor: the soft limit (often 1,024) is raised to the hard one, which the
/// process may do without privileges, and a limit below `REALTIME_MAX_CONNECTIONS` is named at startup rather
/// than found as refused accepts under load.
fn raise_open_files_limit(max_connections: usize) {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit only read or write the struct passed.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return;
    }
    if lim.rlim_cur < lim.rlim_max {
        let raised = libc::rlimit { rlim_cur: lim.rlim_max, rlim_max: lim.rlim_max };
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            lim = raised;
        }
    }
    // The listener, the database and Redis connections and the log take a few dozen descriptors.
    let wanted = (max_connections as libc::rlim_t).saturating_add(64);
    if max_connections > 0 && lim.rlim_cur < wanted {
        tracing::warn!(
            limit = lim.rlim_cur,
            max_connections,
            "the open-files limit is below REALTIME_MAX_CONNECTIONS: connections past it are refused at accept; \
             raise it (LimitNOFILE= in the systemd unit, ulimit -n) or lower REALTIME_MAX_CONNECTIONS"
        );
    }
}

/// Binds with a deep accept queue: after a restart every client reconnects at once, and the default of 128
/// would make the kernel drop SYNs that then wait seconds for their retry.
fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(4096)
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::select! {
        _ = term.recv() => {},
        _ = int.recv() => {},
    }
}
