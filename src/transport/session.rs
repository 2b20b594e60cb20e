//! Per-socket state: who the socket is, its account, and its serial event queue.

use std::collections::VecDeque;
use std::net::IpAddr;
use std::sync::atomic::{AtomicI64, Ordering};

use parking_lot::{Mutex, RwLock};
use serde_json::Value;
use socketioxide::extract::AckSender;

use crate::auth::Identity;
use crate::domain::names::room_key;

/// Device details the client reports in `auth.device`.
#[derive(Debug, Clone, Default)]
pub struct Device {
    pub kind: Option<String>,
    pub os: Option<String>,
    pub browser: Option<String>,
}

/// One inbound event waiting for its turn.
pub struct Job {
    pub event: String,
    /// None when the payload could not be decoded at all.
    pub data: Option<Value>,
    pub ack: AckSender,
    pub has_ack: bool,
}

#[derive(Default)]
pub(crate) struct Queue {
    pub jobs: VecDeque<Job>,
    pub running: bool,
}

pub struct Session {
    pub sid: String,
    pub account: String,
    /// None for an anonymous socket. The user id never changes; a refreshed token may change the rest.
    pub user_id: Option<String>,
    pub profile: RwLock<Identity>,
    pub session_id: String,
    pub ip: Option<IpAddr>,
    pub transport: &'static str,
    pub device: Device,
    pub user_agent: Option<String>,
    pub connected_at: i64,
    /// Token expiry in epoch seconds; 0 = none.
    exp: AtomicI64,
    /// The account's rooms (names) this socket is in, besides its personal room. Kept here rather than read
    /// from the socket at disconnect: by then socketioxide may already have emptied the socket's rooms.
    rooms: Mutex<Vec<String>>,
    /// Rooms where the user is muted (from the membership at join, kept current by the admin API).
    muted: Mutex<Vec<String>>,
    pub(crate) queue: Mutex<Queue>,
    /// Set once when the session ends: later joins are refused and queued events dropped, so nothing
    /// re-creates per-socket state (room occupancy, presence) after the disconnect cleaned it up.
    closed: std::sync::atomic::AtomicBool,
    /// Completion of the socket's latest `message:send`: the next one broadcasts only after it, so a room
    /// sees a socket's messages in the order they were sent even while several wait for their commit.
    send_chain: Mutex<Option<tokio::sync::oneshot::Receiver<()>>>,
}

impl Session {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        sid: String,
        account: String,
        identity: Option<Identity>,
        ip: Option<IpAddr>,
        transport: &'static str,
        device: Device,
        user_agent: Option<String>,
    ) -> Session {
        let session_id =
            identity.as_ref().and_then(|i| i.session_id.clone()).unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        let exp = identity.as_ref().and_then(|i| i.exp).unwrap_or(0);
        let user_id = identity.as_ref().map(|i| i.user_id.clone());
        let profile = identity.unwrap_or(Identity {
            user_id: String::new(),
            session_id: None,
            name: None,
            avatar: None,
            exp: None,
        });
        Session {
            sid,
            account,
            user_id,
            profile: RwLock::new(profile),
            session_id,
            ip,
            transport,
            device,
            user_agent,
            connected_at: crate::store::now_ms(),
            exp: AtomicI64::new(exp),
            rooms: Mutex::new(Vec::new()),
            muted: Mutex::new(Vec::new()),
            closed: std::sync::atomic::AtomicBool::new(false),
            queue: Mutex::new(Queue::default()),
            send_chain: Mutex::new(None),
        }
    }

    pub fn user(&self) -> Option<&str> {
        self.user_id.as_deref()
    }

    /// The key the rate limiter counts this socket under: its user, or the socket itself when anonymous.
    pub fn rate_subject(&self) -> String {
        match &self.user_id {
            Some(u) => u.clone(),
            None => format!("anon:{}", self.sid),
        }
    }

    /// The Socket.IO room for one of this account's rooms.
    pub fn key(&self, room: &str) -> String {
        room_key(&self.account, room)
    }

    pub fn name(&self) -> Option<String> {
        self.profile.read().name.clone()
    }

    pub fn avatar(&self) -> Option<String> {
        self.profile.read().avatar.clone()
    }

    pub fn exp(&self) -> Option<i64> {
        match self.exp.load(Ordering::Relaxed) {
            0 => None,
            e => Some(e),
        }
    }

    /// Takes a place in the send order: (the previous send's completion to wait for, this send's signal).
    pub fn next_send(&self) -> (Option<tokio::sync::oneshot::Receiver<()>>, tokio::sync::oneshot::Sender<()>) {
        let (done, next) = tokio::sync::oneshot::channel();
        (self.send_chain.lock().replace(next), done)
    }

    /// Records that the socket entered a room; false when it was already in.
    pub fn entered(&self, room: &str) -> bool {
        let mut rooms = self.rooms.lock();
        if self.is_closed() || rooms.iter().any(|r| r == room) {
            return false;
        }
        rooms.push(room.to_string());
        true
    }

    /// Records that the socket left a room; false when it was not in.
    pub fn left(&self, room: &str) -> bool {
        self.muted.lock().retain(|r| r != room);
        let mut rooms = self.rooms.lock();
        let before = rooms.len();
        rooms.retain(|r| r != room);
        rooms.len() != before
    }

    pub fn rooms(&self) -> Vec<String> {
        self.rooms.lock().clone()
    }

    /// Ends the session (once; true the first time) and returns the rooms it was in. Under the rooms lock, so
    /// a join finishing concurrently either is in the returned list or is refused.
    pub fn close(&self) -> Option<Vec<String>> {
        let rooms = self.rooms.lock();
        if self.closed.swap(true, Ordering::SeqCst) {
            return None;
        }
        self.queue.lock().jobs.clear();
        Some(rooms.clone())
    }

    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }

    pub fn set_muted(&self, room: &str, muted: bool) {
        let mut rooms = self.muted.lock();
        rooms.retain(|r| r != room);
        if muted {
            rooms.push(room.to_string());
        }
    }

    pub fn muted_rooms(&self) -> Vec<String> {
        self.muted.lock().clone()
    }

    /// A refreshed token replaces the profile and the expiry.
    pub fn refresh(&self, identity: Identity) {
        self.exp.store(identity.exp.unwrap_or(0), Ordering::Relaxed);
        *self.profile.write() = identity;
    }
}
