//! Sessions: who each socket of this node is. A session is node-local (the socket lives here); what other
//! nodes must know about it is in the roster. The socket itself is behind [`SocketLink`], so the application
//! never touches the transport.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};

use dashmap::DashMap;
use parking_lot::{Mutex, RwLock};
use serde_json::Value;

use super::events::{Author, Event};
use crate::auth::Identity;
use crate::config::Config;
use crate::store::events::EventRow;
use crate::store::ledger::{Ledger, Record};
use crate::store::now_ms;

/// This node's handle on one socket: what the application may do to it.
pub trait SocketLink: Send + Sync {
    /// Puts the socket into one of its account's rooms (by room name).
    fn join(&self, room: &str);
    /// Takes the socket out of a room.
    fn leave(&self, room: &str);
    /// Sends an event to this socket only, rendered in its dialect.
    fn emit(&self, event: &Event);
    /// Closes the connection.
    fn disconnect(&self);
}

/// Device details the client reports in `auth.device`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Device {
    pub kind: Option<String>,
    pub os: Option<String>,
    pub browser: Option<String>,
}

/// How a socket connected, for listings and the connection ledger.
#[derive(Debug, Clone, Default)]
pub struct Origin {
    pub ip: Option<IpAddr>,
    pub transport: &'static str,
    /// None when the client reported no device (most do not): a pointer instead of three empty fields.
    pub device: Option<Box<Device>>,
    pub user_agent: Option<String>,
}

/// What an origin without device details reports.
static NO_DEVICE: Device = Device { kind: None, os: None, browser: None };

impl Origin {
    /// The device details the client reported (all empty when it reported none).
    pub fn device(&self) -> &Device {
        self.device.as_deref().unwrap_or(&NO_DEVICE)
    }
}

pub struct Session {
    pub sid: String,
    pub account: String,
    /// None for an anonymous socket. The user id never changes; a refreshed token may change the rest.
    pub user_id: Option<String>,
    /// The display name and avatar from the token; None when it named neither (most tokens), so a socket holds
    /// no more than a pointer for them.
    profile: RwLock<Option<Box<Author>>>,
    /// The token's `sessionId`; without one, `generated` is the session's id.
    token_session_id: Option<String>,
    generated_session_id: uuid::Uuid,
    pub origin: Origin,
    pub connected_at: i64,
    /// Token expiry in epoch seconds; 0 = none.
    exp: AtomicI64,
    /// Set once when the session ends: whatever races the end (a join, a subscription) is undone or refused.
    closed: AtomicBool,
    /// Completion of the socket's latest `message:send`: the next one broadcasts only after it, so a room
    /// sees a socket's messages in the order they were sent even while several wait for their commit.
    send_chain: Mutex<Option<tokio::sync::oneshot::Receiver<()>>>,
    pub link: Arc<dyn SocketLink>,
}

fn profile_of(name: Option<String>, avatar: Option<String>) -> Option<Box<Author>> {
    (name.is_some() || avatar.is_some()).then(|| Box::new(Author { name, avatar }))
}

impl Session {
    pub fn new(
        sid: String,
        account: String,
        identity: Option<Identity>,
        origin: Origin,
        link: Arc<dyn SocketLink>,
    ) -> Session {
        let token_session_id = identity.as_ref().and_then(|i| i.session_id.clone());
        let generated_session_id = if token_session_id.is_some() { uuid::Uuid::nil() } else { uuid::Uuid::new_v4() };
        let exp = identity.as_ref().and_then(|i| i.exp).unwrap_or(0);
        let (user_id, profile) = match identity {
            Some(i) => (Some(i.user_id), profile_of(i.name, i.avatar)),
            None => (None, None),
        };
        Session {
            sid,
            account,
            user_id,
            profile: RwLock::new(profile),
            token_session_id,
            generated_session_id,
            origin,
            connected_at: now_ms(),
            exp: AtomicI64::new(exp),
            closed: AtomicBool::new(false),
            send_chain: Mutex::new(None),
            link,
        }
    }

    /// The session id the client is told: the token's `sessionId`, else one made for this connection (kept as
    /// 16 bytes, written out when asked for).
    pub fn session_id(&self) -> String {
        match &self.token_session_id {
            Some(id) => id.clone(),
            None => self.generated_session_id.to_string(),
        }
    }

    pub fn user(&self) -> Option<&str> {
        self.user_id.as_deref()
    }

    /// The author details of this socket's user (from the token).
    pub fn author(&self) -> Author {
        self.profile.read().as_deref().cloned().unwrap_or_default()
    }

    /// The key the rate limiter counts this socket under: its user, or the socket itself when anonymous.
    pub fn rate_subject(&self) -> String {
        match &self.user_id {
            Some(u) => u.clone(),
            None => format!("anon:{}", self.sid),
        }
    }

    pub fn exp(&self) -> Option<i64> {
        match self.exp.load(Ordering::Relaxed) {
            0 => None,
            e => Some(e),
        }
    }

    /// A refreshed token replaces the profile and the expiry.
    pub fn refresh(&self, identity: Identity) {
        self.exp.store(identity.exp.unwrap_or(0), Ordering::Relaxed);
        *self.profile.write() = profile_of(identity.name, identity.avatar);
    }

    /// Takes a place in the send order: (the previous send's completion to wait for, this send's signal).
    pub fn next_send(&self) -> (Option<tokio::sync::oneshot::Receiver<()>>, tokio::sync::oneshot::Sender<()>) {
        let (done, next) = tokio::sync::oneshot::channel();
        (self.send_chain.lock().replace(next), done)
    }

    /// Ends the session; true the first time.
    pub fn close(&self) -> bool {
        !self.closed.swap(true, Ordering::SeqCst)
    }

    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }
}

/// The audit trail (`REALTIME_LOG_EVENTS`): batched rows, off the hot path.
pub struct Audit {
    ledger: Ledger,
    enabled: bool,
    types: Vec<String>,
}

impl Audit {
    pub fn new(cfg: &Config, ledger: Ledger) -> Audit {
        Audit { ledger, enabled: cfg.log_events, types: cfg.log_event_types.clone() }
    }

    /// Whether `REALTIME_LOG_EVENT_TYPES` asks for this event type.
    pub fn wants(&self, event_type: &str) -> bool {
        self.enabled && self.types.iter().any(|t| t == "*" || t == event_type)
    }

    pub fn record(&self, session: &Session, event_type: &str, room: Option<&str>, payload: Option<Value>) {
        if !self.wants(event_type) {
            return;
        }
        self.ledger.record(Record::Event(EventRow {
            id: None,
            account: session.account.clone(),
            event_type: event_type.to_string(),
            user_id: session.user_id.clone(),
            socket_id: Some(session.sid.clone()),
            room_name: room.map(str::to_string),
            payload: payload.map(|p| p.to_string()),
            ip: session.origin.ip.map(|i| i.to_string()),
            created_at: now_ms(),
        }));
    }

    /// An operator's action (the Admin UI's emit, join, leave, disconnect): written whenever the audit log is
    /// on (`REALTIME_LOG_EVENTS`), whatever `REALTIME_LOG_EVENT_TYPES` lists.
    pub fn record_operator(&self, action: &OperatorAction<'_>) {
        if !self.enabled {
            return;
        }
        self.ledger.record(Record::Event(EventRow {
            id: None,
            account: action.account.to_string(),
            event_type: action.event_type.to_string(),
            user_id: Some(format!("admin:{}", action.operator)),
            socket_id: action.socket_id.map(str::to_string),
            room_name: action.room.map(str::to_string),
            payload: action.payload.as_ref().map(Value::to_string),
            ip: action.ip.clone(),
            created_at: now_ms(),
        }));
    }

    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }
}

/// What an operator did, for the audit log.
pub struct OperatorAction<'a> {
    pub account: &'a str,
    pub event_type: &'a str,
    pub operator: &'a str,
    pub socket_id: Option<&'a str>,
    pub room: Option<&'a str>,
    pub payload: Option<Value>,
    pub ip: Option<String>,
}

/// The sessions of this node, by socket id.
#[derive(Default)]
pub struct Sessions {
    map: DashMap<String, Arc<Session>>,
}

impl Sessions {
    pub fn insert(&self, session: Arc<Session>) {
        self.map.insert(session.sid.clone(), session);
    }

    /// Takes a session out (once: the first caller gets it).
    pub fn remove(&self, sid: &str) -> Option<Arc<Session>> {
        self.map.remove(sid).map(|(_, s)| s)
    }

    pub fn get(&self, sid: &str) -> Option<Arc<Session>> {
        self.map.get(sid).map(|s| s.clone())
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// A snapshot of every session.
    pub fn all(&self) -> Vec<Arc<Session>> {
        self.map.iter().map(|s| s.clone()).collect()
    }
}
