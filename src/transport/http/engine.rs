//! Engine.IO sessions, counted and limited from their first request.
//!
//! A Socket.IO connection is two steps: an Engine.IO session (the first polling GET, or a WebSocket upgrade,
//! without a `sid`), then the Socket.IO CONNECT on it, where the handshake checks the token and the limits.
//! A client that opens sessions and never sends CONNECT would hold them without meeting any limit, so every
//! new session is admitted here before the engine sees it:
//! - per client address, against a budget of twice `REALTIME_RATE_LIMIT` a minute (a connection costs one
//!   point of each; the slack lets the handshake refuse a well-behaved client by name, with its message,
//!   before this budget answers a bare 429);
//! - in total, sessions that have not joined yet are at most `REALTIME_MAX_CONNECTIONS` (at least 64),
//!   beside the joined sockets the handshake already limits;
//! - a session that has not joined within `REALTIME_CONNECT_TIMEOUT` is closed by socketioxide.
//!
//! A session is known by an [`EngineSlot`] put into its first request's extensions: the engine keeps that
//! request's parts for the session's life, so the slot is released when the session ends, however it ends.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::cluster::memory::MemoryRateLimiter;
use crate::cluster::{Budget, RateLimiter};
use crate::domain::ratelimit::Rate;
use crate::node::Node;

/// The smallest allowance of sessions that have not joined yet (a burst of handshakes is refused by name).
const MIN_PENDING: usize = 64;

pub struct EngineGate {
    node: Arc<Node>,
    /// Sessions that have not joined (no Socket.IO socket admitted on them yet).
    pending: Arc<AtomicUsize>,
    max_pending: Option<usize>,
    per_address: Option<(MemoryRateLimiter, Rate)>,
    started: Instant,
    /// Seconds since `started` of the last sweep of idle address budgets.
    swept: AtomicU64,
}

impl EngineGate {
    pub fn new(node: Arc<Node>) -> Arc<EngineGate> {
        let max = node.cfg.max_connections;
        let max_pending = (max > 0).then(|| max.max(MIN_PENDING));
        let per_address = (node.cfg.connect_rate_per_ip > 0).then(|| {
            let rate =
                Rate { capacity: node.cfg.connect_rate_per_ip.saturating_mul(2), period: Duration::from_secs(60) };
            (MemoryRateLimiter::new(None, Some(rate)), rate)
        });
        Arc::new(EngineGate {
            node,
            pending: Arc::default(),
            max_pending,
            per_address,
            started: Instant::now(),
            swept: AtomicU64::new(0),
        })
    }

    /// Sessions open that have not joined.
    pub fn pending(&self) -> usize {
        self.pending.load(Ordering::SeqCst)
    }

    /// Admits a new session (a slot to attach to its request), or the refusal to answer.
    fn admit(&self, ip: Option<IpAddr>) -> Result<EngineSlot, Refusal> {
        let now = Instant::now();
        if let (Some(ip), Some((limiter, rate))) = (ip, &self.per_address) {
            let secs = now.duration_since(self.started).as_secs();
            let last = self.swept.load(Ordering::Relaxed);
            if secs >= last + 60
                && self.swept.compare_exchange(last, secs, Ordering::Relaxed, Ordering::Relaxed).is_ok()
            {
                limiter.sweep(now);
            }
            if !limiter.allow(&Budget::Connects(ip), now) {
                let retry = (rate.period.as_secs() / u64::from(rate.capacity.max(1))).max(1);
                return Err(Refusal {
                    status: StatusCode::TOO_MANY_REQUESTS,
                    retry_after: retry,
                    why: "too many new connections from this address (REALTIME_RATE_LIMIT); retry later",
                });
            }
        }
        let taken = self.pending.fetch_add(1, Ordering::SeqCst) + 1;
        let slot = EngineSlot(Arc::new(SlotInner { pending: self.pending.clone(), joined: AtomicBool::new(false) }));
        if let Some(max) = self.max_pending
            && taken > max
        {
            drop(slot);
            return Err(Refusal {
                status: StatusCode::SERVICE_UNAVAILABLE,
                retry_after: 5,
                why: "too many connections waiting to join (REALTIME_MAX_CONNECTIONS); retry shortly",
            });
        }
        Ok(slot)
    }
}

/// Why a new session was refused: the answer's status, `Retry-After` (s) and body.
struct Refusal {
    status: StatusCode,
    retry_after: u64,
    why: &'static str,
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let mut res = (self.status, self.why).into_response();
        res.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(self.retry_after));
        res
    }
}

/// An Engine.IO session's place among those that have not joined; released when it joins or ends.
#[derive(Clone)]
pub struct EngineSlot(Arc<SlotInner>);

struct SlotInner {
    pending: Arc<AtomicUsize>,
    joined: AtomicBool,
}

impl EngineSlot {
    /// The session's Socket.IO socket was admitted: it is counted with the sockets from now on.
    pub fn joined(&self) {
        if !self.0.joined.swap(true, Ordering::SeqCst) {
            self.0.pending.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

/// The session of this request (a handshake's) has a socket admitted: it leaves the sessions waiting to join.
pub fn joined(parts: &axum::http::request::Parts) {
    if let Some(slot) = parts.extensions.get::<EngineSlot>() {
        slot.joined();
    }
}

impl Drop for SlotInner {
    fn drop(&mut self) {
        if !*self.joined.get_mut() {
            self.pending.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

/// The middleware in front of the Socket.IO layer.
pub async fn admit_sessions(State(gate): State<Arc<EngineGate>>, mut req: Request, next: Next) -> Response {
    if !opens_session(&req) {
        return next.run(req).await;
    }
    let (mut parts, body) = req.into_parts();
    keep_needed_extensions(&mut parts);
    detach_from_read_buffer(&mut parts);
    let ip = crate::transport::socketio::client_ip(&parts, &gate.node.cfg.trusted_proxies);
    req = Request::from_parts(parts, body);
    match gate.admit(ip) {
        Ok(slot) => {
            req.extensions_mut().insert(slot);
            next.run(req).await
        }
        Err(refusal) => {
            gate.node.metrics.connections_rejected.inc();
            tracing::debug!(ip = ?ip, why = refusal.why, "new Engine.IO session refused");
            refusal.into_response()
        }
    }
}

/// Drops the request's extensions but the two a session uses: the client's address (the handshake reads it) and
/// hyper's upgrade handle (the engine takes the WebSocket from it). The engine keeps the request's parts for the
/// session's life, and axum's router has put its own records there by now (the path parameters, the matched
/// path, the original URI): about half a kilobyte per open session that nothing reads again. The session's
/// [`EngineSlot`] is added after this.
fn keep_needed_extensions(parts: &mut axum::http::request::Parts) {
    let mut kept = axum::http::Extensions::new();
    if let Some(peer) = parts.extensions.remove::<axum::extract::ConnectInfo<std::net::SocketAddr>>() {
        kept.insert(peer);
    }
    if let Some(upgrade) = parts.extensions.remove::<hyper::upgrade::OnUpgrade>() {
        kept.insert(upgrade);
    }
    parts.extensions = kept;
}

/// Gives the request's URI and header values allocations of their own.
///
/// hyper parses them as slices of the connection's read buffer (8 KiB), and the engine keeps the request's parts
/// for the session's life: without a copy, that whole buffer stays allocated for every open session, WebSocket
/// or long-polling, although the connection no longer reads into it. The copy is a few hundred bytes. (The
/// router's copy of the URI went with [`keep_needed_extensions`].)
fn detach_from_read_buffer(parts: &mut axum::http::request::Parts) {
    if let Ok(uri) = parts.uri.to_string().parse::<axum::http::Uri>() {
        parts.uri = uri;
    }
    let mut headers = axum::http::HeaderMap::with_capacity(parts.headers.len());
    for (name, value) in parts.headers.iter() {
        let owned = HeaderValue::from_bytes(value.as_bytes()).map(|mut v| {
            v.set_sensitive(value.is_sensitive());
            v
        });
        headers.append(name.clone(), owned.unwrap_or_else(|_| value.clone()));
    }
    parts.headers = headers;
}

/// A request that opens an Engine.IO session: a GET of the Socket.IO path without a `sid` (a polling
/// handshake or a WebSocket upgrade). Requests of an existing session carry its `sid`.
fn opens_session(req: &Request) -> bool {
    req.method() == Method::GET
        && req.uri().path().starts_with("/socket.io")
        && !req.uri().query().unwrap_or("").split('&').any(|kv| kv.starts_with("sid="))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(uri: &str) -> Request {
        Request::builder().method(Method::GET).uri(uri).body(axum::body::Body::empty()).expect("request")
    }

    #[test]
    fn a_request_without_sid_opens_a_session() {
        assert!(opens_session(&req("/socket.io/?EIO=4&transport=polling")));
        assert!(opens_session(&req("/socket.io/?EIO=4&transport=websocket")));
        assert!(!opens_session(&req("/socket.io/?EIO=4&transport=polling&sid=abc")));
        assert!(!opens_session(&req("/socket.io/?sid=abc&EIO=4&transport=websocket")));
        assert!(!opens_session(&req("/health")));
    }

    #[test]
    fn detaching_keeps_the_uri_and_every_header() {
        let mut parts = Request::builder()
            .method(Method::GET)
            .uri("/socket.io/?EIO=4&transport=websocket")
            .header("origin", "https://chat.example")
            .header("x-forwarded-for", "10.0.0.1")
            .header("x-forwarded-for", "10.0.0.2")
            .body(axum::body::Body::empty())
            .expect("request")
            .into_parts()
            .0;
        let before = (parts.uri.clone(), parts.headers.clone());
        detach_from_read_buffer(&mut parts);
        assert_eq!(parts.uri, before.0);
        assert_eq!(parts.headers, before.1);
        assert_eq!(parts.headers.get_all("x-forwarded-for").iter().count(), 2);
    }

    #[test]
    fn a_session_keeps_only_the_peer_and_the_upgrade() {
        let peer: std::net::SocketAddr = "10.0.0.9:4000".parse().expect("addr");
        let mut parts = req("/socket.io/?EIO=4&transport=websocket").into_parts().0;
        parts.extensions.insert(axum::extract::ConnectInfo(peer));
        parts.extensions.insert(axum::extract::OriginalUri("/socket.io/".parse().expect("uri")));
        parts.extensions.insert(String::from("a router's record"));
        keep_needed_extensions(&mut parts);
        assert_eq!(parts.extensions.get::<axum::extract::ConnectInfo<std::net::SocketAddr>>().map(|c| c.0), Some(peer));
        assert!(parts.extensions.get::<axum::extract::OriginalUri>().is_none());
        assert!(parts.extensions.get::<String>().is_none());
        assert_eq!(parts.extensions.len(), 1);
    }

    #[test]
    fn a_slot_is_released_once_whether_it_joins_or_ends() {
        let pending = Arc::new(AtomicUsize::new(2));
        let a = EngineSlot(Arc::new(SlotInner { pending: pending.clone(), joined: AtomicBool::new(false) }));
        let b = EngineSlot(Arc::new(SlotInner { pending: pending.clone(), joined: AtomicBool::new(false) }));
        let a2 = a.clone();
        a.joined();
        a2.joined();
        assert_eq!(pending.load(Ordering::SeqCst), 1);
        drop(a);
        drop(a2);
        assert_eq!(pending.load(Ordering::SeqCst), 1, "a joined session leaves the pending count once");
        drop(b);
        assert_eq!(pending.load(Ordering::SeqCst), 0, "an ended session is released");
    }
}
