//! The server process: open storage, repair, serve Socket.IO and HTTP on one port, shut down cleanly.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::net::TcpListener;

use crate::config::Config;
use crate::domain::names::DEFAULT_ACCOUNT;
use crate::domain::policy::Visibility;
use crate::hub::{App, Hub};
use crate::store::Store;
use crate::store::rooms::NewRoom;
use crate::systemd;

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

    let app: App = Arc::new(Hub::new(cfg, store)?);
    if app.redis.is_some() {
        tracing::warn!(
            "REALTIME_REDIS_URL is set: /health reports Redis, but fan-out, presence and typing stay in this \
             process; run a single node (several nodes behind one load balancer would not see each other)"
        );
    }
    let report = prepare(&app.store, Some(&app.node_id)).await?;
    if report.stale_connections > 0 || report.stale_presence > 0 {
        tracing::info!(
            connections = report.stale_connections,
            presence = report.stale_presence,
            "repaired state left by the previous run"
        );
    }

    let sio = crate::transport::layer(&app);
    let mut router = crate::http::router(app.clone())
        .layer(sio)
        .layer(axum::middleware::from_fn_with_state(app.clone(), crate::http::polls::end_at_shutdown))
        .layer(crate::http::cors(&app.cfg));
    if app.cfg.enable_compression {
        router = router.layer(tower_http::compression::CompressionLayer::new());
    }
    crate::transport::spawn_session_checks(app.clone());
    crate::service::typing::spawn(app.clone());
    crate::service::presence::spawn(app.clone());
    crate::service::receipts::spawn(app.clone());
    spawn_retention(app.clone());
    spawn_housekeeping(app.clone());

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let server = tokio::spawn(crate::http::serve::serve(listener, router, stop_rx, Duration::from_secs(10)));

    tracing::info!(%addr, database = app.store.dialect(), "listening on http://{addr}");
    systemd::ready(&app);
    let watchdog = systemd::spawn_watchdog(app.clone());

    wait_for_signal().await;
    tracing::info!("shutting down");
    systemd::stopping();
    watchdog.abort();
    app.stopping.send_replace(true);

    // Sockets first (their disconnect handlers record the closes), then HTTP, then pending writes.
    let sockets = app.connection_count();
    app.io().close().await;
    // Handshakes admitted before STOPPING register their session when their queries return: wait for them.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    while app.handshakes.load(Ordering::SeqCst) > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // socketioxide runs no disconnect handler for sockets it closes itself: end their sessions here.
    crate::transport::end_all_sessions(&app, "server shutting down");
    tracing::info!(sockets, "sockets closed");
    let _ = stop_tx.send(true);
    let _ = server.await;
    tracing::info!("HTTP stopped");
    app.writer.close().await;
    crate::service::presence::end_sessions_at_shutdown(&app).await;
    crate::service::receipts::flush(&app).await;
    app.ledger.flush().await;
    tracing::info!("pending writes flushed");
    let _ = app.store.close_stale_connections(Some(&app.node_id), "server stopped").await;
    app.store.pool.close().await;
    tracing::info!("stopped");
    Ok(())
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

/// Housekeeping every 10 s: forget what departed users left in memory, and hand freed heap back to the
/// operating system after a wave of disconnects (glibc keeps it otherwise, so RSS would only ever grow).
fn spawn_housekeeping(app: App) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(10));
        let mut last = 0usize;
        for round in 0u64.. {
            tick.tick().await;
            crate::service::presence::sweep(&app);
            if round % 60 == 59 {
                crate::service::receipts::evict_idle(&app);
            }
            let now = app.connection_count();
            if now + 1000 < last || (now == 0 && last > 0) {
                trim_heap();
            }
            last = now;
        }
    });
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn trim_heap() {
    // SAFETY: malloc_trim only releases free memory of the allocator's own arenas.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim_heap() {}

/// Deletes messages and audit events past their retention, hourly.
fn spawn_retention(app: App) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(3600));
        loop {
            tick.tick().await;
            match app.store.prune(app.cfg.message_retention_days, app.cfg.event_retention_days).await {
                Ok((0, 0)) => {}
                Ok((m, e)) => tracing::info!(messages = m, events = e, "retention removed old rows"),
                Err(e) => tracing::warn!(error = %e, "retention pass failed"),
            }
        }
    });
}
