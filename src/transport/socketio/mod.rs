//! The Socket.IO edge: the handshake, a socket's connection and disconnection, and the dispatch of its
//! events to the wire dialect. Everything that knows about sockets lives here and in `http/`.

pub mod adapter;
pub mod admin;
pub mod conn;
pub mod dispatch;
pub mod fanout;

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use serde_json::Value;
use socketioxide::extract::{SocketRef, TryData};
use socketioxide::handler::ConnectHandler;
use socketioxide::layer::SocketIoLayer;
use socketioxide::socket::DisconnectReason;
use socketioxide::{SocketIo, TransportType};

use crate::app::session::{Origin, Session};
use crate::app::worker::Worker;
use crate::auth::AuthError;
use crate::cluster::{Budget, Census};
use crate::config::Config;
use crate::node::Node;
use crate::store::now_ms;
use admin::AdminUi;
use conn::{Conn, Counted, Link, WeakSocket};
use dispatch::Dispatcher;

/// The adapter the node runs on: local on one node, over Redis in a cluster (see [`adapter`]).
pub type Adapter = adapter::NodeAdapter;

/// Builds the Socket.IO layer with the configured limits. Handlers are registered with [`register`] once the
/// node exists (the node's fan-out needs this `SocketIo`).
pub fn build(cfg: &Config, state: adapter::AdapterState) -> (SocketIoLayer<Adapter>, SocketIo<Adapter>) {
    SocketIo::builder()
        .with_adapter::<Adapter>(state)
        .ping_interval(cfg.ping_interval)
        .ping_timeout(cfg.ping_timeout)
        // A session that never sends CONNECT is closed (see `http::engine` for how such sessions are counted).
        .connect_timeout(cfg.connect_timeout)
        .max_payload(cfg.max_payload)
        .ws_max_message_size(cfg.max_payload as usize)
        .ws_max_frame_size(cfg.max_payload as usize)
        // Frames are small chat events; the buffer grows for a big one. 1 KiB instead of 4 KiB per socket.
        .ws_read_buffer_size(1024)
        // Room fan-out bursts must not overflow a socket's queue (a full queue drops packets); a socket whose
        // client stopped reading is closed by REALTIME_WRITE_TIMEOUT (`http::serve`) or, once more than
        // REALTIME_MAX_BUFFER_BYTES wait for it, by `bound_queued_bytes`.
        .max_buffer_size(cfg.max_buffer)
        .build_layer()
}

/// Bounds the bytes queued for each socket (`REALTIME_MAX_BUFFER_BYTES`; 0: no bound). A socket past it is
/// closed like a lost connection, logged once and counted as a slow consumer. The bound is process-wide
/// (the vendored engineioxide's `set_max_buffer_bytes`: socketioxide's builder cannot pass it).
pub fn bound_queued_bytes(max: usize, metrics: Arc<crate::metrics::Metrics>) {
    let max = if max == 0 { usize::MAX } else { max };
    engineioxide::socket::set_max_buffer_bytes(max, move |sid, parts, queued| {
        metrics.slow_consumers.inc();
        metrics.buffer_overflows.inc();
        let peer = parts.extensions.get::<axum::extract::ConnectInfo<std::net::SocketAddr>>();
        tracing::warn!(
            peer = %peer.map_or_else(|| "unknown".to_string(), |c| c.0.to_string()),
            session = %sid,
            queued,
            "closing a connection whose client is not reading: {queued} bytes wait for it, more than \
             REALTIME_MAX_BUFFER_BYTES={max} (a slow consumer; raise REALTIME_MAX_BUFFER_BYTES for clients that \
             legitimately fall this far behind)"
        );
    });
}

/// The Socket.IO edge of a node: its namespace handlers, and the reaper of handshakes whose client left.
pub struct Edge {
    io: SocketIo<Adapter>,
    node: Arc<Node>,
    reaper: Worker,
    admin: Option<Arc<AdminUi>>,
}

impl Edge {
    /// Registers the namespace: the handshake middleware admits or refuses, then the connect handler greets.
    /// `census` counts the sockets of each wire dialect (the fan-out reads it). With `admin` (the Admin UI is
    /// on) the `/admin` namespace is registered too, and the sockets of `/` report to it.
    pub async fn register(
        io: SocketIo<Adapter>,
        node: Arc<Node>,
        census: Arc<dyn Census>,
        admin: Option<Arc<AdminUi>>,
    ) -> Arc<Edge> {
        let (for_connect, for_handshake) = ((node.clone(), admin.clone()), (node.clone(), admin.clone()));
        let on_connect = move |s: SocketRef<Adapter>| {
            let (node, admin) = for_connect.clone();
            async move { greet(s, node, admin).await }
        };
        let handshake = move |s: SocketRef<Adapter>, weak: WeakSocket, TryData(auth): TryData<Value>| {
            let (node, census, admin) = (for_handshake.0.clone(), census.clone(), for_handshake.1.clone());
            async move { handshake(s, weak, auth.unwrap_or(Value::Null), node, census, admin).await }
        };
        io.ns("/", on_connect.with(handshake)).done().await;
        if let Some(admin) = &admin {
            admin.register(node.clone());
        }
        let edge = Arc::new(Edge { io, node, reaper: Worker::default(), admin });
        edge.start();
        edge
    }

    /// Every 5 s: a session whose socket socketioxide does not know 10 s after its handshake belongs to a
    /// client that left while the handshake was running; no disconnect handler will ever run for it.
    fn start(self: &Arc<Self>) {
        let five_s = std::time::Duration::from_secs(5);
        self.reaper.every(self, five_s, five_s, |e| async move { e.reap().await });
    }

    async fn reap(&self) {
        let Some(ns) = self.io.of("/") else { return };
        let cutoff = now_ms() - 10_000;
        for s in self.node.sessions.all() {
            let known = s.sid.parse().ok().and_then(|sid| ns.get_socket(sid)).is_some();
            if s.connected_at < cutoff && !known {
                tracing::debug!(sid = %s.sid, "client left during its handshake");
                self.node.connections.close(&s.sid, "client left during the handshake").await;
            }
        }
    }

    /// Shutdown, step one: every socket is closed. Handshakes admitted before shutdown began finish first
    /// (new ones are refused meanwhile, saying why); then the namespace closes its sockets' connections
    /// (clients reconnect to the next server) and their sessions are ended here (socketioxide runs no
    /// disconnect handler for the sockets its `close()` ends). A handshake that still arrives is refused with
    /// the same words, not socket.io's "Invalid namespace".
    pub async fn close(&self) {
        self.reaper.stop().await;
        if let Some(admin) = &self.admin {
            admin.stop().await;
        }
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(2);
        while self.node.handshakes.load(Ordering::SeqCst) > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        self.io.close().await;
        self.node.connections.close_all("server shutting down").await;
        let refuse = async || -> Result<(), AuthError> { Err(AuthError::Refused(SHUTTING_DOWN.into())) };
        self.io.ns("/", (async || {}).with(refuse)).done().await;
    }
}

const SHUTTING_DOWN: &str = "the server is shutting down; retry shortly";

/// A handshake in progress, counted in `Node::handshakes` until it ends either way.
struct HandshakeSlot(Arc<Node>);

impl HandshakeSlot {
    fn take(node: &Arc<Node>) -> HandshakeSlot {
        node.handshakes.fetch_add(1, Ordering::SeqCst);
        HandshakeSlot(node.clone())
    }
}

impl Drop for HandshakeSlot {
    fn drop(&mut self) {
        self.0.handshakes.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The connect middleware: everything that can refuse a connection, and every handler registration, happens
/// here, before socketioxide sends the CONNECT packet.
async fn handshake(
    s: SocketRef<Adapter>,
    weak: WeakSocket,
    auth: Value,
    node: Arc<Node>,
    census: Arc<dyn Census>,
    admin: Option<Arc<AdminUi>>,
) -> Result<(), AuthError> {
    let refuse = |e: AuthError| {
        node.metrics.connections_rejected.inc();
        e
    };
    if node.is_stopping() {
        return Err(refuse(AuthError::Refused(SHUTTING_DOWN.into())));
    }
    // Handshakes still running count too, so a burst cannot get past the limit while they await the database.
    let _slot = HandshakeSlot::take(&node);
    let max = node.cfg.max_connections;
    if max > 0 && node.sessions.len() + node.handshakes.load(Ordering::SeqCst) > max {
        return Err(refuse(AuthError::Refused("the server is at REALTIME_MAX_CONNECTIONS".into())));
    }
    let parts = s.req_parts();
    let header = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok());
    let request = crate::wire::handshake::Request {
        query: parts.uri.query(),
        authorization: header("authorization"),
        app_name: header("x-app-name"),
    };
    let read = crate::wire::handshake::read(&auth, request).map_err(refuse)?;
    let ip = client_ip(parts, &node.cfg.trusted_proxies);
    if let Some(ip) = ip
        && !node.limiter.allow(&Budget::Connects(ip), std::time::Instant::now())
    {
        return Err(refuse(AuthError::Refused(
            "too many new connections from this address (REALTIME_RATE_LIMIT)".into(),
        )));
    }
    let identity = match &read.token {
        Some(t) => Some(node.verifier.check(t, chrono::Utc::now().timestamp()).await.map_err(refuse)?),
        None if node.cfg.allow_anonymous => None,
        None => return Err(refuse(AuthError::Missing)),
    };
    // A user id claimed in `auth.userId` is never an identity: it must be the token's.
    if let Some(claimed) = &read.detected.claimed_user {
        match &identity {
            Some(i) if &i.user_id == claimed => {}
            Some(_) => return Err(refuse(AuthError::Invalid("auth.userId does not match the token".into()))),
            None => return Err(refuse(AuthError::Invalid("auth.userId needs a token that names that user".into()))),
        }
    }
    let dialect = read.detected.dialect;
    let account = read.account;
    let origin = Origin {
        ip,
        transport: match s.transport_type() {
            TransportType::Websocket => "websocket",
            TransportType::Polling => "polling",
        },
        device: read.device.map(Box::new),
        user_agent: header("user-agent").map(|ua| ua.chars().take(256).collect()),
    };
    let link = Arc::new(Link::new(&weak, &account, dialect, admin.clone()));
    let session = Arc::new(Session::new(s.id.to_string(), account, identity, origin, link.clone()));
    let conn = Arc::new(Conn {
        session: session.clone(),
        dialect,
        state: Default::default(),
        link,
        queue: Default::default(),
        counted: Counted::new(census, dialect),
    });
    s.extensions.insert(conn);
    s.on_fallback(Dispatcher { node: node.clone(), admin: admin.clone() });
    let for_disconnect = node.clone();
    s.on_disconnect(move |s: SocketRef<Adapter>, reason: DisconnectReason| {
        let (node, admin) = (for_disconnect.clone(), admin.clone());
        async move {
            let sid = s.id.to_string();
            if let Some(admin) = admin {
                admin.socket_disconnected(&sid, &reason);
            }
            node.connections.close(&sid, &format!("{reason:?}")).await
        }
    });

    // Persisted rooms are joined before the client hears anything, so `authenticated.rooms` is complete.
    node.connections.open(session).await.map_err(|e| refuse(AuthError::Refused(e.message)))?;
    // Counted with the sockets from now on, no longer among the sessions waiting to join.
    crate::transport::http::engine::joined(parts);
    Ok(())
}

/// Runs after the CONNECT packet: greet the client.
async fn greet(s: SocketRef<Adapter>, node: Arc<Node>, admin: Option<Arc<AdminUi>>) {
    let Some(conn) = s.extensions.get::<Arc<Conn>>() else { return };
    let session = &conn.session;
    node.connections.opened(session).await;
    if let Some(admin) = admin {
        admin.socket_connected(&s);
    }
    let _ = s.emit("connected", &crate::wire::contract::connected(&session.sid));
    if let Some(user) = session.user() {
        let rooms = node.roster.rooms_of(&session.sid).await.unwrap_or_default().rooms;
        let _ =
            s.emit("authenticated", &crate::wire::contract::authenticated(Some(user), &session.session_id(), &rooms));
    }
}

/// The client's address: the TCP peer, or what the trusted proxies in front say it is
/// (`REALTIME_TRUSTED_PROXIES`; see `domain::proxies`).
pub fn client_ip(parts: &http::request::Parts, trusted: &crate::domain::proxies::TrustedProxies) -> Option<IpAddr> {
    let peer = parts.extensions.get::<axum::extract::ConnectInfo<std::net::SocketAddr>>().map(|c| c.0.ip());
    let forwarded: Vec<&str> =
        parts.headers.get_all("x-forwarded-for").iter().filter_map(|v| v.to_str().ok()).collect();
    let real_ip = parts.headers.get("x-real-ip").and_then(|v| v.to_str().ok());
    trusted.client_ip(peer, &forwarded, real_ip)
}
