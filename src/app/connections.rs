//! A socket's life on this node: admitted (its rooms, presence and the connection ledger), refreshed
//! (`auth:refresh`), expired (the token's `exp` plus the grace), closed (everything it registered undone,
//! exactly once).

use std::collections::BTreeSet;
use std::sync::Arc;

use parking_lot::Mutex;
use serde_json::json;

use super::RosterRef;
use super::calls::Calls;
use super::events::Event;
use super::presence::Presence;
use super::rooms::Rooms;
use super::session::{Audit, Session, Sessions};
use super::typing::Typing;
use super::worker::Worker;
use crate::auth::{AuthError, Identity, Verifier};
use crate::error::{AppError, AppResult};
use crate::metrics::Metrics;
use crate::store::arrivals::Arrivals;
use crate::store::connections::{ConnectionOpen, ConnectionRow};
use crate::store::ledger::Record;
use crate::store::{Store, now_ms};

/// Why `auth:refresh` was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefreshError {
    /// The token does not verify.
    Invalid(String),
    /// The token names another user (or the socket is anonymous).
    UserMismatch(String),
}

pub struct Connections {
    arrivals: Arrivals,
    sessions: Arc<Sessions>,
    roster: RosterRef,
    rooms: Arc<Rooms>,
    presence: Arc<Presence>,
    typing: Arc<Typing>,
    calls: Arc<Calls>,
    audit: Arc<Audit>,
    verifier: Arc<Verifier>,
    metrics: Arc<Metrics>,
    node_id: String,
    /// Sessions whose token expires: `(epoch ms after which the session ends, socket id)`.
    expiries: Mutex<BTreeSet<(i64, String)>>,
    wake: Arc<tokio::sync::Notify>,
    worker: Worker,
}

impl Connections {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        store: Store,
        sessions: Arc<Sessions>,
        roster: RosterRef,
        rooms: Arc<Rooms>,
        presence: Arc<Presence>,
        typing: Arc<Typing>,
        calls: Arc<Calls>,
        audit: Arc<Audit>,
        verifier: Arc<Verifier>,
        metrics: Arc<Metrics>,
        node_id: String,
    ) -> Connections {
        Connections {
            arrivals: Arrivals::spawn(store),
            sessions,
            roster,
            rooms,
            presence,
            typing,
            calls,
            audit,
            verifier,
            metrics,
            node_id,
            expiries: Mutex::new(BTreeSet::new()),
            wake: Arc::new(tokio::sync::Notify::new()),
            worker: Worker::default(),
        }
    }

    /// Starts the timer that ends sessions whose token expired more than `REALTIME_TOKEN_GRACE` ago.
    pub fn start(self: &Arc<Self>) {
        self.worker.every_deadline(self, self.wake.clone(), |c| async move {
            c.end_expired().await;
            let next = c.expiries.lock().first().map(|(at, _)| *at);
            next.map(|at| std::time::Duration::from_millis((at - now_ms()).max(0) as u64))
        });
    }

    pub async fn stop(&self) {
        self.worker.stop().await;
    }

    /// When a session with this token expiry ends: after `exp` plus the grace.
    fn deadline(&self, exp: i64) -> i64 {
        exp.saturating_add(self.verifier.grace_secs()).saturating_mul(1000).saturating_add(1)
    }

    fn schedule(&self, s: &Session) {
        if let Some(exp) = s.exp() {
            self.expiries.lock().insert((self.deadline(exp), s.sid.clone()));
            self.wake.notify_one();
        }
    }

    fn unschedule(&self, s: &Session) {
        if let Some(exp) = s.exp() {
            self.expiries.lock().remove(&(self.deadline(exp), s.sid.clone()));
        }
    }

    async fn end_expired(&self) {
        let now = now_ms();
        let due: Vec<String> = {
            let mut q = self.expiries.lock();
            let mut due = Vec::new();
            while q.first().is_some_and(|(at, _)| *at <= now) {
                due.push(q.pop_first().expect("non-empty").1);
            }
            due
        };
        for sid in due {
            let Some(s) = self.sessions.get(&sid) else { continue };
            // A refresh moved the deadline (and scheduled the new one): this entry is stale.
            if s.exp().is_some_and(|exp| self.deadline(exp) > now) {
                continue;
            }
            s.link.emit(&Event::TokenExpired);
            s.link.disconnect();
        }
    }

    /// A socket is being admitted: it enters the rooms it is a persisted member of and comes online, before
    /// the client hears anything. Fails (the handshake is refused) when the database cannot say its rooms.
    pub async fn open(&self, s: Arc<Session>) -> AppResult<()> {
        self.admit(&s).await.map_err(|e| {
            tracing::error!(error = %e, "cannot load rooms at handshake");
            AppError::new(crate::error::ErrorCode::InternalError, "the database is unavailable; retry shortly")
        })?;
        self.schedule(&s);
        self.sessions.insert(s);
        Ok(())
    }

    /// Registers a socket: it enters the rooms it is a persisted member of and comes online. Its rooms and
    /// stored presence come from one read shared with the handshakes arriving at the same time. Fails, with
    /// the database's words, when that read does.
    async fn admit(&self, s: &Session) -> Result<(), String> {
        let Some(u) = s.user() else {
            self.rooms.connected(s, &[]).await;
            return Ok(());
        };
        let arrival = self.arrivals.load(&s.account, u, self.presence.needs_stored(&s.account, u).await).await?;
        self.rooms.connected(s, &arrival.rooms).await;
        // Registered before CONNECT: a client that disconnects at once must find its socket known, or the user
        // would stay online with no connection.
        self.presence.connected(&s.account, u, &s.sid, arrival.presence.as_ref().map(Option::as_ref)).await;
        Ok(())
    }

    /// The client heard its CONNECT: the connection is recorded.
    pub async fn opened(&self, s: &Session) {
        self.metrics.connections.set(self.sessions.len() as i64);
        self.metrics.users_online.set(self.roster.users_online(None).await as i64);
        self.metrics.connections_total.inc();
        self.audit.ledger().record(Record::Open(ConnectionOpen {
            row: ConnectionRow {
                socket_id: s.sid.clone(),
                account: s.account.clone(),
                user_id: s.user_id.clone(),
                node_id: self.node_id.clone(),
                ip: s.origin.ip.map(|i| i.to_string()),
                transport: Some(s.origin.transport.to_string()),
                device_type: s.origin.device().kind.clone(),
                device_os: s.origin.device().os.clone(),
                device_browser: s.origin.device().browser.clone(),
                connected_at: s.connected_at,
            },
            user_agent: s.origin.user_agent.clone(),
        }));
        self.audit.record(s, "connect", None, None);
    }

    /// A socket closed (or its client left during the handshake, or the server is stopping).
    pub async fn close(&self, sid: &str, reason: &str) {
        if let Some(s) = self.sessions.remove(sid) {
            self.end(&s, reason).await;
        }
    }

    /// Shutdown: ends every session still registered.
    pub async fn close_all(&self, reason: &str) {
        for s in self.sessions.all() {
            self.close(&s.sid, reason).await;
        }
    }

    /// Undoes everything a session registered, once: presence, typing, rooms (with `user:left` after the
    /// grace), the online count; records the close.
    async fn end(&self, s: &Session, reason: &str) {
        if !s.close() {
            return;
        }
        self.unschedule(s);
        if let Some(u) = s.user() {
            self.presence.disconnected(&s.account, u, &s.sid).await;
            self.typing.socket_closed(&s.account, u, &s.sid).await;
        }
        self.rooms.disconnected(s).await;
        // A user whose last socket closed leaves their calls (the others learn it at once).
        if let Some(u) = s.user()
            && self.roster.sockets_of(&s.account, u).await.is_empty()
        {
            self.calls.user_gone(&s.account, u, s.author()).await;
        }
        self.metrics.connections.set(self.sessions.len() as i64);
        self.metrics.users_online.set(self.roster.users_online(None).await as i64);
        self.audit.record(s, "disconnect", None, Some(json!({ "reason": reason })));
        self.audit.ledger().record(Record::Close {
            socket_id: s.sid.clone(),
            at: now_ms(),
            reason: reason.to_string(),
        });
    }

    /// `auth:refresh`: the new token must verify and name the same user; it replaces the profile and expiry.
    pub async fn refresh(&self, s: &Session, token: &str) -> Result<Identity, RefreshError> {
        let identity = self
            .verifier
            .check(token, chrono::Utc::now().timestamp())
            .await
            .map_err(|e: AuthError| RefreshError::Invalid(e.to_string()))?;
        match s.user() {
            None => Err(RefreshError::UserMismatch(
                "an anonymous socket cannot become a user; reconnect with the token".into(),
            )),
            Some(u) if u != identity.user_id => {
                Err(RefreshError::UserMismatch("the new token names another user; reconnect instead".into()))
            }
            Some(_) => {
                self.unschedule(s);
                s.refresh(identity.clone());
                self.schedule(s);
                Ok(identity)
            }
        }
    }

    /// The shared state lost this node's sockets (Redis restarted empty): each socket the roster does not
    /// know is registered again, as at its admission (rooms, presence). Returns how many were.
    pub async fn republish(&self) -> usize {
        let mut n = 0;
        for s in self.sessions.all() {
            if s.is_closed() || self.roster.rooms_of(&s.sid).await.is_some() {
                continue;
            }
            if let Err(e) = self.admit(&s).await {
                tracing::warn!(error = %e, "cannot load rooms to register a socket again");
                continue;
            }
            n += 1;
        }
        n
    }

    pub fn sessions(&self) -> &Sessions {
        &self.sessions
    }
}
