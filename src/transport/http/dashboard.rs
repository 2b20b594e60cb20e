//! `GET /dashboard`: the operator's live view, one HTML page with its style and script embedded in the binary
//! (no CDN, no build step), and `GET /dashboard/stream`, the server-sent events that feed it one snapshot per
//! second: connections, users online by status, the busiest rooms, messages and broadcasts per second, p50/p99
//! publish→fan-out latency, database and Redis state, recent audit events, the node.
//!
//! Both sit behind HTTP Basic auth (`REALTIME_ADMIN_USER` with `REALTIME_ADMIN_PASSWORD`, or the API key as
//! password) or the API key as `X-API-Key` / `Authorization: Bearer`; without a password or key configured
//! the dashboard is refused (403), never open.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::LazyLock;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{FromRequestParts, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use futures_util::Stream;
use serde_json::{Value, json};

use super::{App, account_of};
use crate::app::health::{self, Probe};
use crate::domain::time::iso_ms;
use crate::store::now_ms;
use crate::transport::http::constant_time_eq;

const HTML: &str = include_str!("dashboard/index.html");
const CSS: &str = include_str!("dashboard/dashboard.css");
const JS: &str = include_str!("dashboard/dashboard.js");

/// The page, its style and script put in place once.
static PAGE: LazyLock<String> = LazyLock::new(|| HTML.replace("/*STYLE*/", CSS).replace("/*SCRIPT*/", JS));

/// Rooms listed as the busiest.
const TOP_ROOMS: usize = 8;
/// Sockets looked at to rank rooms (beyond, the ranking is of a sample).
const ROOM_SAMPLE: usize = 5000;
/// Seconds between probes of the database and Redis, reads of the audit log and rankings of the rooms.
const SLOW_EVERY: u64 = 5;

pub fn routes() -> Router<App> {
    Router::new().route("/dashboard", get(page)).route("/dashboard/stream", get(stream))
}

/// An operator: the admin user with the admin password (or the API key), by Basic auth or API key header.
pub struct Operator;

impl FromRequestParts<App> for Operator {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, app: &App) -> Result<Self, Self::Rejection> {
        let cfg = &app.cfg;
        let secrets: Vec<&str> = cfg.admin_password.iter().chain(cfg.api_key.iter()).map(String::as_str).collect();
        if secrets.is_empty() {
            return Err((
                StatusCode::FORBIDDEN,
                "the dashboard is disabled: set REALTIME_ADMIN_PASSWORD or REALTIME_API_KEY on the server\n",
            )
                .into_response());
        }
        let header = |n: &str| parts.headers.get(n).and_then(|v| v.to_str().ok());
        let matches = |p: &str| secrets.iter().any(|s| constant_time_eq(p.as_bytes(), s.as_bytes()));
        let basic = header("authorization")
            .and_then(|a| a.strip_prefix("Basic "))
            .and_then(|b| decode_base64(b.trim()))
            .and_then(|raw| String::from_utf8(raw).ok())
            .is_some_and(|pair| {
                pair.split_once(':')
                    .is_some_and(|(u, p)| constant_time_eq(u.as_bytes(), cfg.admin_user.as_bytes()) && matches(p))
            });
        let key = cfg.api_key.as_deref().is_some_and(|k| {
            header("x-api-key")
                .or_else(|| header("authorization").and_then(|a| a.strip_prefix("Bearer ")))
                .is_some_and(|p| constant_time_eq(p.trim().as_bytes(), k.as_bytes()))
        });
        if basic || key {
            return Ok(Operator);
        }
        Err((
            StatusCode::UNAUTHORIZED,
            [("www-authenticate", "Basic realm=\"nself-realtime\", charset=\"UTF-8\"")],
            "invalid credentials: sign in as REALTIME_ADMIN_USER with REALTIME_ADMIN_PASSWORD (or the API key)\n",
        )
            .into_response())
    }
}

async fn page(_: Operator) -> Response {
    ([("cache-control", "no-store")], Html(PAGE.as_str())).into_response()
}

async fn stream(
    State(app): State<App>,
    _: Operator,
    Account(account): Account,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let state = Watch::new(app, account);
    let events = futures_util::stream::unfold(state, |mut w| async move {
        if w.ticks > 0 {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        let snapshot = w.snapshot().await;
        Some((Ok(Event::default().event("snapshot").data(snapshot.to_string())), w))
    });
    Sse::new(events).keep_alive(KeepAlive::default())
}

/// The account a request looks at (`X-App-Name`, else `?app=`, else `primary`).
pub struct Account(String);

impl<S: Send + Sync> FromRequestParts<S> for Account {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Account(account_of(parts)))
    }
}

/// One viewer's stream: the previous readings its rates are computed from, and the slow parts it reads every
/// [`SLOW_EVERY`] seconds.
struct Watch {
    app: App,
    account: String,
    ticks: u64,
    at: Instant,
    messages: i64,
    broadcasts: i64,
    errors: i64,
    buckets: Vec<(f64, u64)>,
    database: Option<Probe>,
    redis: Option<Probe>,
    events: Vec<Value>,
    rooms: Vec<Value>,
}

impl Watch {
    fn new(app: App, account: String) -> Watch {
        let m = &app.metrics;
        Watch {
            at: Instant::now(),
            messages: m.messages.get() as i64,
            broadcasts: m.broadcasts.get() as i64,
            errors: m.errors.get() as i64,
            buckets: m.latency_buckets(),
            app,
            account,
            ticks: 0,
            database: None,
            redis: None,
            events: Vec::new(),
            rooms: Vec::new(),
        }
    }

    /// The rooms of this account with the most sockets on this node (of the first [`ROOM_SAMPLE`] sockets).
    async fn busiest_rooms(&self) -> Vec<Value> {
        let mut rooms: HashMap<String, usize> = HashMap::new();
        let sessions = self.app.sessions.all();
        for s in sessions.iter().filter(|s| s.account == self.account).take(ROOM_SAMPLE) {
            for r in self.app.roster.rooms_of(&s.sid).await.map(|r| r.rooms).unwrap_or_default() {
                if !r.starts_with("user:") {
                    *rooms.entry(r).or_default() += 1;
                }
            }
        }
        let mut rooms: Vec<(String, usize)> = rooms.into_iter().collect();
        rooms.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        rooms.into_iter().take(TOP_ROOMS).map(|(name, n)| json!({ "name": name, "sockets": n })).collect()
    }

    async fn snapshot(&mut self) -> Value {
        let app = self.app.clone();
        let m = &app.metrics;
        if self.ticks.is_multiple_of(SLOW_EVERY) {
            self.database = Some(health::database(&app.store).await);
            self.redis = match &app.redis {
                Some(r) => Some(health::redis(r).await),
                None => None,
            };
            self.events = app
                .store
                .events(Some(&self.account), 12)
                .await
                .unwrap_or_default()
                .into_iter()
                .map(|e| {
                    json!({ "type": e.event_type, "userId": e.user_id, "room": e.room_name,
                            "socketId": e.socket_id, "at": iso_ms(e.created_at) })
                })
                .collect();
            self.rooms = self.busiest_rooms().await;
        }
        self.ticks += 1;

        let secs = self.at.elapsed().as_secs_f64().max(0.001);
        self.at = Instant::now();
        let rate = |now: i64, before: &mut i64| {
            let r = (now - *before).max(0) as f64 / secs;
            *before = now;
            (r * 10.0).round() / 10.0
        };
        let messages = rate(m.messages.get() as i64, &mut self.messages);
        let broadcasts = rate(m.broadcasts.get() as i64, &mut self.broadcasts);
        let errors = rate(m.errors.get() as i64, &mut self.errors);
        let buckets = m.latency_buckets();
        let p50 = crate::metrics::quantile(&self.buckets, &buckets, 0.5);
        let p99 = crate::metrics::quantile(&self.buckets, &buckets, 0.99);
        self.buckets = buckets;

        let sessions = app.sessions.all();
        let mine: Vec<_> = sessions.iter().filter(|s| s.account == self.account).collect();
        let polling = mine.iter().filter(|s| s.origin.transport == "polling").count();
        let presence: crate::app::stats::Breakdown = app.presence.breakdown(&self.account).await.into();
        let probe = |p: &Option<Probe>| {
            p.as_ref().map(|p| {
                json!({ "status": if p.ok { "connected" } else { "disconnected" },
                        "latencyMs": (p.latency_ms * 100.0).round() / 100.0, "error": p.error })
            })
        };
        json!({
            "at": iso_ms(now_ms()),
            "account": self.account,
            "node": { "id": app.id, "uptime": app.started.elapsed().as_secs(), "version": env!("CARGO_PKG_VERSION"),
                      "memoryBytes": crate::metrics::resident_memory_bytes() },
            "nodes": [app.id],
            "connections": mine.len(),
            "connectionsAllAccounts": sessions.len(),
            "polling": polling,
            "usersOnline": app.roster.users_online(Some(&self.account)).await,
            "presence": presence,
            "rooms": self.rooms,
            "messagesPerSecond": messages,
            "broadcastsPerSecond": broadcasts,
            "errorsPerSecond": errors,
            "latency": { "p50": p50, "p99": p99 },
            "database": probe(&self.database).map(|mut d| { d["kind"] = app.store.dialect().into(); d }),
            "redis": probe(&self.redis),
            "events": self.events,
        })
    }
}

/// Standard base64 (with or without padding), for the Basic auth header.
fn decode_base64(s: &str) -> Option<Vec<u8>> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    };
    let digits = s.trim_end_matches('=').as_bytes();
    let mut out = Vec::with_capacity(digits.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0);
    for &c in digits {
        acc = (acc << 6) | value(c)? as u32;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::decode_base64;

    #[test]
    fn basic_credentials_decode() {
        assert_eq!(decode_base64("YWRtaW46czNjcmV0").unwrap(), b"admin:s3cret");
        assert_eq!(decode_base64("YTpi").unwrap(), b"a:b");
        assert_eq!(decode_base64("YTpiYw==").unwrap(), b"a:bc");
        assert!(decode_base64("a*b").is_none());
    }

    #[test]
    fn the_page_has_its_style_and_script() {
        let page = super::PAGE.as_str();
        assert!(!page.contains("/*STYLE*/") && !page.contains("/*SCRIPT*/"));
        assert!(page.contains("EventSource") && !page.contains("http://") && !page.contains("https://"));
    }
}
