//! The Socket.IO Admin UI protocol (`@socket.io/admin-ui`; its `dist/typed-events.d.ts` is the contract) on the
//! `/admin` namespace, so the official UI (admin.socket.io, or the npm package's `ui/dist`) works against this
//! server unchanged. Off unless `REALTIME_ADMIN_UI=true`.
//!
//! - Handshake: `auth {username, password}` (`REALTIME_ADMIN_USER` / `REALTIME_ADMIN_PASSWORD`, else the API
//!   key) or `auth {sessionId}` from an earlier login; the Origin must be in `REALTIME_ADMIN_UI_ORIGINS` (or be
//!   this server). A refusal says `invalid credentials`, the words the UI recognises.
//! - On connect: `config`, `all_sockets`, then `session` for a password login.
//! - Live: `socket_connected`, `socket_disconnected`, `room_joined`, `room_left`, and `event_received` /
//!   `event_sent` capped at [`EVENTS_PER_SECOND`] per node with credentials redacted; `server_stats` every 2 s
//!   with the aggregated counts of that window.
//! - Actions: `emit`, `join`, `leave`, `_disconnect` on the application namespace `/`, by room or socket id,
//!   each written to the audit log.
//!
//! App sockets never see this namespace: it has its own handshake, the fan-out only ever addresses `/`, and
//! what it shows of a socket leaves out tokens, cookies and every header not on a short list.
//! Nothing here runs per event while the UI is off (the hooks are `Option`s left `None`); while it is on but
//! nobody watches, a hook costs one atomic increment.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicI64, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use parking_lot::Mutex;
use serde::Serialize;
use serde_json::{Value, json};
use socketioxide::SocketIo;
use socketioxide::extract::{SocketRef, TryData};
use socketioxide::handler::ConnectHandler;
use socketioxide::handler::message::MessageHandler;
use socketioxide::operators::BroadcastOperators;
use socketioxide::socket::{DisconnectReason, Socket};

use super::Adapter;
use super::conn::Conn;
use crate::app::session::OperatorAction;
use crate::app::worker::Worker;
use crate::cluster::Budget;
use crate::domain::names::DEFAULT_ACCOUNT;
use crate::domain::time::iso_ms;
use crate::node::Node;
use crate::store::now_ms;
use crate::transport::http::constant_time_eq;

/// The namespace the UI connects to (its default).
pub const NAMESPACE: &str = "/admin";
/// Most `event_received` + `event_sent` shown per second by one node; the rest are only counted.
pub const EVENTS_PER_SECOND: u32 = 20;
/// How long a login's session id lets the UI reconnect without the password.
const SESSION_TTL_MS: i64 = 24 * 3600 * 1000;
/// Most session ids kept; the oldest go first.
const MAX_SESSIONS: usize = 1000;
/// The refusal the UI shows as "Invalid credentials".
const INVALID: &str = "invalid credentials";
/// The features the UI may use (typed-events.d.ts `Feature`).
const FEATURES: &[&str] =
    &["EMIT", "JOIN", "LEAVE", "DISCONNECT", "MJOIN", "MLEAVE", "MDISCONNECT", "AGGREGATED_EVENTS", "ALL_EVENTS"];
/// Handshake headers shown; every other one (cookies, authorization, API keys, …) is left out.
const SHOWN_HEADERS: &[&str] = &[
    "host",
    "origin",
    "user-agent",
    "accept-language",
    "x-forwarded-for",
    "x-real-ip",
    "x-forwarded-proto",
    "x-app-name",
    "connection",
    "upgrade",
];

/// Counted between two `server_stats`, sent as `aggregatedEvents`.
#[derive(Default)]
struct Counts {
    connections: AtomicU64,
    disconnections: AtomicU64,
    packets_in: AtomicU64,
    packets_out: AtomicU64,
}

pub struct AdminUi {
    io: SocketIo<Adapter>,
    node: OnceLock<Arc<Node>>,
    /// Session ids of logins, with their expiry (ms).
    sessions: Mutex<HashMap<String, i64>>,
    /// Admin sockets connected: the live feed is built only while someone watches.
    viewers: AtomicUsize,
    sample_second: AtomicI64,
    sampled: AtomicU32,
    counts: Counts,
    ticker: Worker,
    hostname: String,
}

/// A refused admin handshake (its text is what the UI shows).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Refused(String);

/// The session id of a login, announced once the socket is connected.
#[derive(Clone)]
struct NewSession(String);

impl AdminUi {
    pub fn new(io: SocketIo<Adapter>) -> Arc<AdminUi> {
        let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_else(|_| "localhost".into());
        Arc::new(AdminUi {
            io,
            node: OnceLock::new(),
            sessions: Mutex::default(),
            viewers: AtomicUsize::new(0),
            sample_second: AtomicI64::new(0),
            sampled: AtomicU32::new(0),
            counts: Counts::default(),
            ticker: Worker::default(),
            hostname: hostname.trim().to_string(),
        })
    }

    /// Registers the `/admin` namespace and starts `server_stats`.
    pub fn register(self: &Arc<Self>, node: Arc<Node>) {
        let _ = self.node.set(node);
        let (for_connect, for_handshake) = (self.clone(), self.clone());
        let on_connect = move |s: SocketRef<Adapter>| {
            let ui = for_connect.clone();
            async move { ui.greet(s) }
        };
        let handshake = move |s: SocketRef<Adapter>, TryData(auth): TryData<Value>| {
            let ui = for_handshake.clone();
            async move { ui.admit(&s, auth.unwrap_or(Value::Null)) }
        };
        // Alone the namespace is registered at once; over Redis once its channels are subscribed.
        socketioxide_core::adapter::Spawnable::spawn(self.io.ns(NAMESPACE, on_connect.with(handshake)));
        let two_s = Duration::from_secs(2);
        self.ticker.every(self, two_s, two_s, |ui| async move { ui.tick() });
    }

    pub async fn stop(&self) {
        self.ticker.stop().await;
    }

    fn node(&self) -> &Arc<Node> {
        self.node.get().expect("registered before use")
    }

    fn watched(&self) -> bool {
        self.viewers.load(Ordering::Relaxed) > 0
    }

    /// Sends to every admin socket of this node.
    fn tell<T: Serialize + ?Sized>(&self, event: &str, data: &T) {
        let Some(ns) = self.io.of(NAMESPACE) else { return };
        for s in ns.sockets() {
            let _ = s.emit(event, data);
        }
    }

    /// One more `event_received`/`event_sent` this second, under the cap?
    fn admit_event(&self) -> bool {
        let now = now_ms() / 1000;
        if self.sample_second.swap(now, Ordering::Relaxed) != now {
            self.sampled.store(0, Ordering::Relaxed);
        }
        self.sampled.fetch_add(1, Ordering::Relaxed) < EVENTS_PER_SECOND
    }

    // ---- the hooks of the application namespace ----

    pub fn socket_connected(&self, s: &SocketRef<Adapter>) {
        self.counts.connections.fetch_add(1, Ordering::Relaxed);
        if self.watched()
            && let Some(v) = serialize(s)
        {
            self.tell("socket_connected", &(v, now_iso()));
        }
    }

    pub fn socket_disconnected(&self, sid: &str, reason: &DisconnectReason) {
        self.counts.disconnections.fetch_add(1, Ordering::Relaxed);
        if self.watched() {
            self.tell("socket_disconnected", &("/", sid, reason_text(reason), now_iso()));
        }
    }

    pub fn room_joined(&self, sid: &str, room: &str) {
        if self.watched() {
            self.tell("room_joined", &("/", room, sid, now_iso()));
        }
    }

    pub fn room_left(&self, sid: &str, room: &str) {
        if self.watched() {
            self.tell("room_left", &("/", room, sid, now_iso()));
        }
    }

    pub fn event_received(&self, sid: &str, event: &str, data: Option<&Value>) {
        self.counts.packets_in.fetch_add(1, Ordering::Relaxed);
        if self.watched() && self.admit_event() {
            self.tell("event_received", &("/", sid, args(event, data), now_iso()));
        }
    }

    pub fn event_sent(&self, sid: &str, event: &str, data: &Value) {
        self.counts.packets_out.fetch_add(1, Ordering::Relaxed);
        if self.watched() && self.admit_event() {
            self.tell("event_sent", &("/", sid, args(event, Some(data)), now_iso()));
        }
    }

    /// A room broadcast (counted once, whatever its number of receivers).
    pub fn broadcast_sent(&self) {
        self.counts.packets_out.fetch_add(1, Ordering::Relaxed);
    }

    /// The sockets of this node in a Socket.IO room, when someone watches (for `room_joined`/`room_left` of a
    /// room operation).
    pub fn sockets_in(&self, room: &str) -> Vec<String> {
        if !self.watched() {
            return Vec::new();
        }
        let Some(ns) = self.io.of("/") else { return Vec::new() };
        ns.to(room.to_string()).sockets().iter().map(|s| s.id.to_string()).collect()
    }

    // ---- the admin namespace ----

    fn admit(&self, s: &SocketRef<Adapter>, auth: Value) -> Result<(), Refused> {
        let node = self.node();
        let parts = s.req_parts();
        let header = |n: &str| parts.headers.get(n).and_then(|v| v.to_str().ok());
        if let Some(origin) = header("origin") {
            let origin = origin.trim_end_matches('/');
            let own = header("host").is_some_and(|h| origin.split_once("://").is_some_and(|(_, o)| o == h));
            if !own && !node.cfg.admin_ui_origins.iter().any(|o| o == origin) {
                tracing::info!(origin, "admin UI refused: origin not allowed");
                return Err(Refused(format!("origin {origin} is not in REALTIME_ADMIN_UI_ORIGINS")));
            }
        }
        let ip = super::client_ip(parts, &node.cfg.trusted_proxies);
        if let Some(ip) = ip
            && !node.limiter.allow(&Budget::Connects(ip), std::time::Instant::now())
        {
            return Err(Refused("too many new connections from this address (REALTIME_RATE_LIMIT)".into()));
        }
        let now = now_ms();
        if let Some(id) = auth.get("sessionId").and_then(Value::as_str) {
            let mut sessions = self.sessions.lock();
            sessions.retain(|_, exp| *exp > now);
            if sessions.contains_key(id) {
                crate::transport::http::engine::joined(parts);
                return Ok(());
            }
        }
        let user = auth.get("username").and_then(Value::as_str).unwrap_or_default();
        let password = auth.get("password").and_then(Value::as_str).unwrap_or_default();
        let secret = node.cfg.admin_secret().unwrap_or_default();
        let good = !secret.is_empty()
            && constant_time_eq(user.as_bytes(), node.cfg.admin_user.as_bytes())
            && constant_time_eq(password.as_bytes(), secret.as_bytes());
        if !good {
            tracing::info!(ip = ?ip, user, "admin UI login refused: invalid credentials");
            return Err(Refused(INVALID.into()));
        }
        let id = uuid::Uuid::new_v4().simple().to_string();
        {
            let mut sessions = self.sessions.lock();
            sessions.retain(|_, exp| *exp > now);
            if sessions.len() >= MAX_SESSIONS
                && let Some(oldest) = sessions.iter().min_by_key(|(_, e)| **e).map(|(k, _)| k.clone())
            {
                sessions.remove(&oldest);
            }
            sessions.insert(id.clone(), now + SESSION_TTL_MS);
        }
        tracing::info!(ip = ?ip, user, "admin UI login");
        s.extensions.insert(NewSession(id));
        crate::transport::http::engine::joined(parts);
        Ok(())
    }

    fn greet(self: &Arc<Self>, s: SocketRef<Adapter>) {
        self.viewers.fetch_add(1, Ordering::Relaxed);
        let ui = self.clone();
        s.on_disconnect(move |_: SocketRef<Adapter>| {
            let ui = ui.clone();
            async move {
                ui.viewers.fetch_sub(1, Ordering::Relaxed);
            }
        });
        s.on_fallback(Actions { ui: self.clone() });
        let _ = s.emit("config", &json!({ "supportedFeatures": FEATURES }));
        let sockets: Vec<Value> =
            self.io.of("/").map(|ns| ns.sockets()).unwrap_or_default().iter().filter_map(serialize).collect();
        let _ = s.emit("all_sockets", &sockets);
        if let Some(NewSession(id)) = s.extensions.get::<NewSession>() {
            let _ = s.emit("session", &id);
        }
        self.stats_to(Some(&s), Vec::new());
    }

    /// Every 2 s: `server_stats` with what was counted since the last one.
    fn tick(&self) {
        let take = |c: &AtomicU64| c.swap(0, Ordering::Relaxed);
        let counts = [
            ("rawConnection", take(&self.counts.connections)),
            ("rawDisconnection", take(&self.counts.disconnections)),
            ("packetsIn", take(&self.counts.packets_in)),
            ("packetsOut", take(&self.counts.packets_out)),
        ];
        if !self.watched() {
            return;
        }
        let second = now_ms() / 1000 * 1000;
        let aggregated = counts
            .iter()
            .filter(|(_, n)| *n > 0)
            .map(|(kind, n)| json!({ "timestamp": second, "type": kind, "count": n }))
            .collect();
        self.stats_to(None, aggregated);
    }

    fn stats_to(&self, one: Option<&SocketRef<Adapter>>, aggregated: Vec<Value>) {
        let node = self.node();
        let app = self.io.of("/").map(|ns| ns.sockets()).unwrap_or_default();
        let admins = self.io.of(NAMESPACE).map(|ns| ns.sockets().len()).unwrap_or(0);
        let polling = app.iter().filter(|s| matches!(s.transport_type(), socketioxide::TransportType::Polling)).count();
        let stats = json!({
            "serverId": node.id,
            "hostname": self.hostname,
            "pid": std::process::id(),
            "uptime": node.started.elapsed().as_secs_f64(),
            "clientsCount": app.len() + admins,
            "pollingClientsCount": polling,
            "namespaces": [
                { "name": "/", "socketsCount": app.len() },
                { "name": NAMESPACE, "socketsCount": admins },
            ],
            "aggregatedEvents": aggregated,
        });
        match one {
            Some(s) => {
                let _ = s.emit("server_stats", &stats);
            }
            None => self.tell("server_stats", &stats),
        }
    }

    /// An action from the UI: `[name, nsp, …]` as typed-events.d.ts `ClientEvents` has them.
    async fn act(&self, admin: &SocketRef<Adapter>, packet: Vec<Value>) {
        let name = packet.first().and_then(Value::as_str).unwrap_or_default().to_string();
        let args = &packet[1.min(packet.len())..];
        let refuse = |why: String| {
            tracing::info!(action = %name, "admin UI action refused: {why}");
            let _ = admin.emit("error", &json!({ "action": name, "message": why }));
        };
        if !matches!(name.as_str(), "emit" | "join" | "leave" | "_disconnect") {
            return refuse(format!(
                "unknown action {name:?}: the admin namespace takes emit, join, leave, _disconnect"
            ));
        }
        if args.first().and_then(Value::as_str) != Some("/") {
            return refuse("only the application namespace \"/\" can be acted on".into());
        }
        let text = |i: usize, what: &str| -> Result<Option<String>, String> {
            match args.get(i) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) if !s.is_empty() && s.len() <= 512 => Ok(Some(s.clone())),
                Some(_) => Err(format!("{what} must be a string of 1 to 512 characters")),
            }
        };
        let Some(ns) = self.io.of("/") else { return };
        let node = self.node();
        let (filter, room, payload) = match name.as_str() {
            "emit" => {
                let filter = match text(1, "the room or socket id") {
                    Ok(f) => f,
                    Err(e) => return refuse(e),
                };
                let event = match text(2, "the event name") {
                    Ok(Some(e)) => e,
                    Ok(None) => return refuse("emit needs an event name".into()),
                    Err(e) => return refuse(e),
                };
                let data = &args[3.min(args.len())..];
                if data.len() > 3 {
                    return refuse("emit takes at most 3 arguments".into());
                }
                let sent = match (one_socket(&ns, filter.as_deref()), &filter) {
                    (Some(s), _) => match data {
                        [] => s.emit(&event, &()),
                        [a] => s.emit(&event, a),
                        [a, b] => s.emit(&event, &(a, b)),
                        [a, b, c, ..] => s.emit(&event, &(a, b, c)),
                    }
                    .map_err(|e| e.to_string()),
                    (None, f) => {
                        let ops = match f {
                            Some(f) => ns.to(f.clone()),
                            None => ns,
                        };
                        match data {
                            [] => ops.emit(&event, &()).await,
                            [a] => ops.emit(&event, a).await,
                            [a, b] => ops.emit(&event, &(a, b)).await,
                            [a, b, c, ..] => ops.emit(&event, &(a, b, c)).await,
                        }
                        .map_err(|e| e.to_string())
                    }
                };
                if let Err(e) = sent {
                    tracing::warn!(error = %e, "admin UI emit failed");
                }
                (filter, None, Some(json!({ "event": event, "arguments": data.len() })))
            }
            "join" | "leave" => {
                let room = match text(1, "the room") {
                    Ok(Some(r)) => r,
                    Ok(None) => return refuse(format!("{name} needs a room")),
                    Err(e) => return refuse(e),
                };
                let filter = match text(2, "the room or socket id") {
                    Ok(f) => f,
                    Err(e) => return refuse(e),
                };
                for s in targets(&ns, filter.as_deref()) {
                    let id = s.id.to_string();
                    if name == "join" {
                        s.join(room.clone());
                        self.room_joined(&id, &room);
                    } else {
                        s.leave(room.clone());
                        self.room_left(&id, &room);
                    }
                }
                (filter, Some(room), None)
            }
            _ => {
                let filter = match text(2, "the room or socket id") {
                    Ok(f) => f,
                    Err(e) => return refuse(e),
                };
                for s in targets(&ns, filter.as_deref()) {
                    if let Err(e) = s.disconnect() {
                        tracing::debug!(error = %e, "admin UI disconnect of a closed socket");
                    }
                }
                (filter, None, None)
            }
        };
        // The socket acted on, when the filter is one; its account, else the room's (`<account>/<room>`).
        let target = filter.as_deref().and_then(|f| node.sessions.get(f));
        let account = match (&target, filter.as_deref()) {
            (Some(t), _) => t.account.clone(),
            (None, Some(f)) => {
                let bare = f.rsplit_once('|').map_or(f, |(_, r)| r);
                bare.split_once('/').map_or(DEFAULT_ACCOUNT, |(a, _)| a).to_string()
            }
            (None, None) => DEFAULT_ACCOUNT.to_string(),
        };
        let mut details = payload.unwrap_or_else(|| json!({}));
        details["filter"] = filter.clone().into();
        let operator = node.cfg.admin_user.clone();
        let ip: Option<IpAddr> = super::client_ip(admin.req_parts(), &node.cfg.trusted_proxies);
        tracing::info!(action = %name, filter = ?filter, room = ?room, "admin UI action");
        node.audit.record_operator(&OperatorAction {
            account: &account,
            event_type: &format!("admin:{}", name.trim_start_matches('_')),
            operator: &operator,
            socket_id: target.as_ref().map(|t| t.sid.as_str()),
            room: room.as_deref(),
            payload: Some(details),
            ip: ip.map(|i| i.to_string()),
        });
    }
}

/// The socket a filter names, when it is a socket id of this node.
fn one_socket(ns: &BroadcastOperators<Adapter>, filter: Option<&str>) -> Option<SocketRef<Adapter>> {
    ns.get_socket(filter?.parse().ok()?)
}

/// The sockets of this node a filter selects: one socket by id, a room's, or all (no filter).
fn targets(ns: &BroadcastOperators<Adapter>, filter: Option<&str>) -> Vec<SocketRef<Adapter>> {
    match (one_socket(ns, filter), filter) {
        (Some(s), _) => vec![s],
        (None, Some(room)) => ns.clone().to(room.to_string()).sockets(),
        (None, None) => ns.clone().sockets(),
    }
}

/// The handler of every event of an admin socket.
#[derive(Clone)]
struct Actions {
    ui: Arc<AdminUi>,
}

struct ViaActions;

impl MessageHandler<Adapter, ViaActions> for Actions {
    fn call(&self, s: Arc<Socket<Adapter>>, v: socketioxide::handler::Value, _: Option<i64>) {
        let packet = v.as_str().and_then(|t| serde_json::from_str::<Vec<Value>>(t).ok());
        let (ui, s) = (self.ui.clone(), SocketRef::from(s));
        tokio::spawn(async move {
            match packet {
                Some(p) => ui.act(&s, p).await,
                None => {
                    let _ = s.emit("error", &json!({ "message": "the action could not be decoded as JSON" }));
                }
            }
        });
    }
}

/// A socket of the application namespace as the UI lists it (typed-events.d.ts `SerializedSocket`). Tokens,
/// cookies and headers off [`SHOWN_HEADERS`] are left out.
fn serialize(s: &SocketRef<Adapter>) -> Option<Value> {
    let conn = s.extensions.get::<Arc<Conn>>()?;
    let session = &conn.session;
    let parts = s.req_parts();
    let mut headers = serde_json::Map::new();
    for name in SHOWN_HEADERS {
        if let Some(v) = parts.headers.get(*name).and_then(|v| v.to_str().ok()) {
            headers.insert(name.to_string(), v.chars().take(256).collect::<String>().into());
        }
    }
    let mut query = serde_json::Map::new();
    for (k, v) in parts.uri.query().unwrap_or_default().split('&').filter_map(|kv| kv.split_once('=')) {
        if !secret_key(k) {
            query.insert(k.to_string(), v.chars().take(256).collect::<String>().into());
        }
    }
    let url = match query.is_empty() {
        true => parts.uri.path().to_string(),
        false => format!(
            "{}?{}",
            parts.uri.path(),
            query.iter().map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default())).collect::<Vec<_>>().join("&")
        ),
    };
    let host = parts.headers.get("host").and_then(|v| v.to_str().ok()).unwrap_or_default();
    let xdomain = parts
        .headers
        .get("origin")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|o| o.split_once("://").is_none_or(|(_, o)| o != host));
    let secure = parts.headers.get("x-forwarded-proto").is_some_and(|p| p == "https");
    let transport = match s.transport_type() {
        socketioxide::TransportType::Websocket => "websocket",
        socketioxide::TransportType::Polling => "polling",
    };
    let id = s.id.to_string();
    let mut rooms = vec![id.clone()];
    rooms.extend(s.rooms().into_iter().map(|r| r.to_string()));
    Some(json!({
        "id": id,
        "clientId": id,
        "transport": transport,
        "nsp": "/",
        "data": {
            "account": session.account,
            "userId": session.user_id,
            "dialect": conn.dialect.name(),
            "device": session.origin.device().kind,
        },
        "handshake": {
            "address": session.origin.ip.map(|i| i.to_string()),
            "headers": headers,
            "query": query,
            "issued": session.connected_at,
            "secure": secure,
            "time": iso_ms(session.connected_at),
            "url": url,
            "xdomain": xdomain,
        },
        "rooms": rooms,
    }))
}

/// A key whose value is a credential.
fn secret_key(k: &str) -> bool {
    let k = k.to_ascii_lowercase();
    ["token", "password", "secret", "authorization", "cookie", "apikey", "api_key", "api-key", "credential", "session"]
        .iter()
        .any(|s| k.contains(s))
}

/// `[event, payload]` with credentials replaced by `[redacted]`, long strings cut and deep values elided.
fn args(event: &str, data: Option<&Value>) -> Vec<Value> {
    let mut out = vec![Value::from(event)];
    if let Some(d) = data {
        out.push(redact(d, 0));
    }
    out
}

fn redact(v: &Value, depth: usize) -> Value {
    if depth > 6 {
        return "[…]".into();
    }
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .take(50)
                .map(|(k, v)| (k.clone(), if secret_key(k) { "[redacted]".into() } else { redact(v, depth + 1) }))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().take(20).map(|v| redact(v, depth + 1)).collect()),
        Value::String(s) if s.len() > 200 => format!("{}…", s.chars().take(200).collect::<String>()).into(),
        other => other.clone(),
    }
}

/// socket.io's words for a disconnect reason.
fn reason_text(r: &DisconnectReason) -> &'static str {
    use DisconnectReason::*;
    match r {
        TransportClose => "transport close",
        MultipleHttpPollingError | PacketParsingError => "parse error",
        TransportError => "transport error",
        HeartbeatTimeout => "ping timeout",
        ClientNSDisconnect => "client namespace disconnect",
        ServerNSDisconnect => "server namespace disconnect",
        ClosingServer => "server shutting down",
    }
}

fn now_iso() -> String {
    iso_ms(now_ms())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_lose_their_credentials() {
        let v = json!({"token": "abc", "nested": {"accessToken": "x", "content": "hi"}, "list": [{"password": 1}]});
        let r = redact(&v, 0);
        assert_eq!(
            r,
            json!({"token": "[redacted]", "nested": {"accessToken": "[redacted]", "content": "hi"},
                             "list": [{"password": "[redacted]"}]})
        );
        let long = "x".repeat(500);
        assert_eq!(redact(&json!(long), 0).as_str().unwrap().chars().count(), 201);
    }

    #[test]
    fn reasons_read_like_socket_io() {
        assert_eq!(reason_text(&DisconnectReason::TransportClose), "transport close");
        assert_eq!(reason_text(&DisconnectReason::ServerNSDisconnect), "server namespace disconnect");
    }
}
