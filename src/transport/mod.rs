//! Socket.IO transport: the handshake, connection lifecycle and event dispatch. Everything that knows about
//! sockets lives here; the rules live in `domain` and `service`.

pub mod dispatch;
pub mod events;
pub mod session;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::extract::ConnectInfo;
use serde_json::{Value, json};
use socketioxide::extract::{SocketRef, State, TryData};
use socketioxide::handler::ConnectHandler;
use socketioxide::layer::SocketIoLayer;
use socketioxide::socket::DisconnectReason;
use socketioxide::{SocketIo, TransportType};

use crate::auth::AuthError;
use crate::domain::names::{normalize_account, user_room};
use crate::domain::occupancy::Exit;
use crate::hub::App;
use crate::store::events::EventRow;
use crate::store::ledger::Record;
use crate::store::now_ms;
use crate::wire::iso;
use dispatch::Dispatcher;
use session::{Device, Session};

/// Socket.IO protocol version spoken (reported in `connected`).
pub const PROTOCOL_VERSION: u8 = 5;

/// Builds the Socket.IO layer with the configured limits and registers the namespace.
pub fn layer(app: &App) -> SocketIoLayer {
    let cfg = &app.cfg;
    let (layer, io) = SocketIo::builder()
        .ping_interval(cfg.ping_interval)
        .ping_timeout(cfg.ping_timeout)
        .max_payload(cfg.max_payload)
        .ws_max_message_size(cfg.max_payload as usize)
        .ws_max_frame_size(cfg.max_payload as usize)
        // Frames are small chat events; the buffer grows for a big one. 1 KiB instead of 4 KiB per socket.
        .ws_read_buffer_size(1024)
        // Room fan-out bursts must not overflow a socket's queue (a full queue drops packets).
        .max_buffer_size(4096)
        .with_state(app.clone())
        .build_layer();
    io.ns("/", on_connect.with(handshake));
    let _ = app.io.set(io);
    layer
}

/// The connect middleware: everything that can refuse a connection, and every handler registration, happens
/// here, before socketioxide sends the CONNECT packet.
async fn handshake(s: SocketRef, TryData(auth): TryData<Value>, State(app): State<App>) -> Result<(), AuthError> {
    let refuse = |app: &App, e: AuthError| {
        app.metrics.connections_rejected.inc();
        e
    };
    if app.is_stopping() {
        return Err(refuse(&app, AuthError::Refused("the server is shutting down; retry shortly".into())));
    }
    // Handshakes still running count too, so a burst cannot get past the limit while they await the database.
    let _slot = HandshakeSlot::take(&app);
    let max = app.cfg.max_connections;
    if max > 0 && app.connection_count() + app.handshakes.load(Ordering::SeqCst) > max {
        return Err(refuse(&app, AuthError::Refused("the server is at REALTIME_MAX_CONNECTIONS".into())));
    }
    let auth = auth.unwrap_or(Value::Null);
    let parts = s.req_parts();
    let ip = client_ip(parts);
    if let Some(ip) = ip
        && !app.allow_connect(ip)
    {
        return Err(refuse(
            &app,
            AuthError::Refused("too many new connections from this address (REALTIME_RATE_LIMIT)".into()),
        ));
    }
    let query = |key: &str| -> Option<String> {
        parts.uri.query().and_then(|q| {
            q.split('&').find_map(|kv| {
                let (k, v) = kv.split_once('=')?;
                (k == key).then(|| percent_decode(v))
            })
        })
    };
    let header = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_string);

    let token = auth
        .get("token")
        .and_then(Value::as_str)
        .map(str::to_string)
        .filter(|t| !t.trim().is_empty())
        .or_else(|| query("token").filter(|t| !t.is_empty()))
        .or_else(|| header("authorization").and_then(|h| h.strip_prefix("Bearer ").map(str::to_string)));
    let account = normalize_account(
        auth.get("sourceAccountId")
            .and_then(Value::as_str)
            .map(str::to_string)
            .or_else(|| header("x-app-name"))
            .or_else(|| query("app"))
            .as_deref(),
    );
    let identity = match token {
        Some(t) => Some(app.verifier.verify(&t, chrono::Utc::now().timestamp()).map_err(|e| refuse(&app, e))?),
        None if app.cfg.allow_anonymous => None,
        None => return Err(refuse(&app, AuthError::Missing)),
    };
    let user = identity.as_ref().map(|i| i.user_id.clone());

    // Persisted rooms are joined before the client hears anything, so `authenticated.rooms` is complete.
    let memberships = match &user {
        Some(u) => app.store.rooms_of_user(&account, u).await.map_err(|e| {
            tracing::error!(error = %e, "cannot load rooms at handshake");
            refuse(&app, AuthError::Refused("the database is unavailable; retry shortly".into()))
        })?,
        None => Vec::new(),
    };
    let rooms: Vec<String> = memberships.iter().map(|(r, _)| r.clone()).collect();

    let device = auth.get("device").map(|d| Device {
        kind: short(d.get("type")),
        os: short(d.get("os")),
        browser: short(d.get("browser")),
    });
    let transport = match s.transport_type() {
        TransportType::Websocket => "websocket",
        TransportType::Polling => "polling",
    };
    let session = Arc::new(Session::new(
        s.id.to_string(),
        account,
        identity,
        ip,
        transport,
        device.unwrap_or_default(),
        header("user-agent").map(|ua| ua.chars().take(256).collect()),
    ));

    s.extensions.insert(session.clone());
    s.on_fallback(Dispatcher { app: app.clone() });
    s.on_disconnect(on_disconnect);

    if let Some(u) = session.user() {
        s.join(session.key(&user_room(u)));
        for (room, muted) in &memberships {
            s.join(session.key(room));
            session.entered(room);
            session.set_muted(room, *muted);
        }
        *app.users.entry((session.account.clone(), u.to_string())).or_insert(0) += 1;
        let arrived: Vec<&String> = {
            let mut occ = app.occupancy.lock();
            rooms.iter().filter(|r| occ.enter(&session.key(r), u)).collect()
        };
        for room in arrived {
            announce_presence_in_room(&app, &session, room, "user:joined").await;
        }
        // Registered here, not after CONNECT: a client that disconnects at once must find its socket known,
        // or the user would stay online with no connection.
        crate::service::presence::connected(&app, &session.account, u, &session.sid, &rooms).await;
    }
    app.sessions.insert(session.sid.clone(), session);
    Ok(())
}

/// A handshake in progress, counted in `Hub::handshakes` until it ends either way.
struct HandshakeSlot(App);

impl HandshakeSlot {
    fn take(app: &App) -> HandshakeSlot {
        app.handshakes.fetch_add(1, Ordering::SeqCst);
        HandshakeSlot(app.clone())
    }
}

impl Drop for HandshakeSlot {
    fn drop(&mut self) {
        self.0.handshakes.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Runs after the CONNECT packet: greet the client.
async fn on_connect(s: SocketRef, State(app): State<App>) {
    let Some(session) = s.extensions.get::<Arc<Session>>() else { return };
    app.metrics.connections.set(app.connection_count() as i64);
    app.metrics.users_online.set(app.users.len() as i64);
    app.metrics.connections_total.inc();
    let _ = s.emit(
        "connected",
        &json!({ "socketId": session.sid, "serverTime": iso(now_ms()), "protocolVersion": PROTOCOL_VERSION }),
    );
    if let Some(user) = session.user() {
        let rooms: Vec<String> = s
            .rooms()
            .iter()
            .filter_map(|k| k.strip_prefix(&format!("{}/", session.account)).map(str::to_string))
            .collect();
        let _ = s.emit("authenticated", &json!({ "userId": user, "sessionId": session.session_id, "rooms": rooms }));
    }
    app.ledger.record(Record::Open(crate::store::connections::ConnectionOpen {
        row: crate::store::connections::ConnectionRow {
            socket_id: session.sid.clone(),
            account: session.account.clone(),
            user_id: session.user_id.clone(),
            node_id: app.node_id.clone(),
            ip: session.ip.map(|i| i.to_string()),
            transport: Some(session.transport.to_string()),
            device_type: session.device.kind.clone(),
            device_os: session.device.os.clone(),
            device_browser: session.device.browser.clone(),
            connected_at: session.connected_at,
        },
        user_agent: session.user_agent.clone(),
    }));
    audit(&app, &session, "connect", None, None);
}

async fn on_disconnect(s: SocketRef, reason: DisconnectReason, State(app): State<App>) {
    let Some((_, session)) = app.sessions.remove(&s.id.to_string()) else { return };
    end_session(&app, session, format!("{reason:?}"));
}

/// Undoes everything a session registered: presence, typing, occupancy (with `user:left` after the grace),
/// the online count; records the close. For a closed socket, and for a handshake whose client left before
/// socketioxide knew the socket (no disconnect handler runs then).
fn end_session(app: &App, session: Arc<Session>, reason: String) {
    let Some(rooms) = session.close() else { return };
    if let Some(u) = session.user() {
        crate::service::presence::disconnected(app, &session.account, u, &session.sid);
        crate::service::typing::socket_closed(app, &session.account, u, &session.sid);
        let key = (session.account.clone(), u.to_string());
        let gone = match app.users.get_mut(&key) {
            Some(mut n) => {
                *n = n.saturating_sub(1);
                *n == 0
            }
            None => false,
        };
        if gone {
            app.users.remove_if(&key, |_, n| *n == 0);
        }
        for room in rooms {
            let key = session.key(&room);
            let exit = app.occupancy.lock().exit(&key, u, true);
            if let Exit::Pending(token) = exit {
                let (app, session) = (app.clone(), session.clone());
                tokio::spawn(async move {
                    tokio::time::sleep(app.cfg.presence_offline_grace).await;
                    let confirmed = app.occupancy.lock().confirm_leave(&key, session.user().unwrap_or(""), token);
                    if confirmed {
                        announce_presence_in_room(&app, &session, &room, "user:left").await;
                    }
                });
            }
        }
    }
    app.metrics.connections.set(app.connection_count() as i64);
    app.metrics.users_online.set(app.users.len() as i64);
    audit(app, &session, "disconnect", None, Some(json!({ "reason": reason })));
    app.ledger.record(Record::Close { socket_id: session.sid.clone(), at: now_ms(), reason });
}

/// A session whose socket socketioxide does not know 10 s after its handshake: the client left while the
/// handshake was running, and no disconnect handler will ever run for it.
fn reap_abandoned_handshakes(app: &App) {
    let Some(ns) = app.ns() else { return };
    let cutoff = now_ms() - 10_000;
    let abandoned: Vec<String> = app
        .sessions
        .iter()
        .filter(|s| s.connected_at < cutoff)
        .filter(|s| s.sid.parse().ok().and_then(|sid| ns.get_socket(sid)).is_none())
        .map(|s| s.sid.clone())
        .collect();
    for sid in abandoned {
        if let Some((_, session)) = app.sessions.remove(&sid) {
            tracing::debug!(%sid, "client left during its handshake");
            end_session(app, session, "client left during the handshake".into());
        }
    }
}

/// Shutdown: ends every session still registered (socketioxide does not call the disconnect handlers of the
/// sockets its `close()` ends).
pub fn end_all_sessions(app: &App, reason: &str) {
    let sids: Vec<String> = app.sessions.iter().map(|s| s.key().clone()).collect();
    for sid in sids {
        if let Some((_, session)) = app.sessions.remove(&sid) {
            end_session(app, session, reason.to_string());
        }
    }
}

/// `user:joined` / `user:left` to the others in the room (never to the user's own sockets).
pub async fn announce_presence_in_room(app: &App, session: &Session, room: &str, event: &str) {
    let Some(user) = session.user() else { return };
    let payload = json!({
        "roomName": room,
        "userId": user,
        "userName": session.name(),
        "userAvatar": session.avatar(),
        "timestamp": iso(now_ms()),
    });
    let Some(ns) = app.ns() else { return };
    let _ = ns.to(session.key(room)).except(session.key(&user_room(user))).emit(event, &payload).await;
}

/// Whether `REALTIME_LOG_EVENT_TYPES` asks for this audit event type.
pub fn audit_wanted(cfg: &crate::config::Config, event_type: &str) -> bool {
    cfg.log_event_types.iter().any(|t| t == "*" || t == event_type)
}

/// Records an audit event (batched, off the hot path) when `REALTIME_LOG_EVENTS` asks for it.
pub fn audit(app: &App, session: &Session, event_type: &str, room: Option<&str>, payload: Option<Value>) {
    if !app.cfg.log_events || !audit_wanted(&app.cfg, event_type) {
        return;
    }
    app.ledger.record(Record::Event(EventRow {
        id: None,
        account: session.account.clone(),
        event_type: event_type.to_string(),
        user_id: session.user_id.clone(),
        socket_id: Some(session.sid.clone()),
        room_name: room.map(str::to_string),
        payload: payload.map(|p| p.to_string()),
        ip: session.ip.map(|i| i.to_string()),
        created_at: now_ms(),
    }));
}

fn short(v: Option<&Value>) -> Option<String> {
    v.and_then(Value::as_str).map(|s| s.chars().take(64).collect())
}

/// The client's address: the peer, or the first X-Forwarded-For / X-Real-IP entry when the peer is a local
/// reverse proxy (nself puts nginx in front).
pub fn client_ip(parts: &http::request::Parts) -> Option<IpAddr> {
    let peer = parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip());
    let trusted = peer.is_none_or(|p| p.is_loopback());
    if trusted {
        let forwarded = parts
            .headers
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').next())
            .or_else(|| parts.headers.get("x-real-ip").and_then(|v| v.to_str().ok()))
            .and_then(|v| v.trim().parse().ok());
        if forwarded.is_some() {
            return forwarded;
        }
    }
    peer
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok());
        match (bytes[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
                continue;
            }
            (b'+', _) => out.push(b' '),
            (b, _) => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Every 5 s: ends sessions whose token expired more than `REALTIME_TOKEN_GRACE` ago and was not refreshed,
/// and cleans up after handshakes whose client left before socketioxide registered the socket.
pub fn spawn_session_checks(app: App) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(5));
        loop {
            tick.tick().await;
            let now = chrono::Utc::now().timestamp();
            let grace = app.verifier.grace_secs();
            let expired: Vec<String> = app
                .sessions
                .iter()
                .filter(|s| s.exp().is_some_and(|e| now > e.saturating_add(grace)))
                .map(|s| s.sid.clone())
                .collect();
            for sid in expired {
                let Ok(sid_parsed) = sid.parse() else { continue };
                if let Some(sock) = app.ns().and_then(|ns| ns.get_socket(sid_parsed)) {
                    let _ = sock.emit(
                        "auth:error",
                        &json!({"code": "TOKEN_EXPIRED", "message": "the token expired; reconnect with a new token"}),
                    );
                    let _ = sock.disconnect();
                }
            }
            reap_abandoned_handshakes(&app);
            app.sweep_buckets();
        }
    });
}
