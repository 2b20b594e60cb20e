//! What the transport keeps per socket: the session it belongs to, the link the application acts through,
//! and the socket's serial event queue.

use std::collections::VecDeque;
use std::sync::{Arc, Weak};

use parking_lot::Mutex;
use serde_json::Value;
use socketioxide::extract::{AckSender, SocketRef};
use socketioxide::handler::FromConnectParts;
use socketioxide::socket::Socket;

use super::Adapter;
use crate::app::events::Event;
use crate::app::session::{Session, SocketLink};
use crate::domain::names::room_key;
use crate::wire::Outbox;

/// One inbound event waiting for its turn.
pub struct Job {
    pub event: String,
    /// None when the payload could not be decoded at all.
    pub data: Option<Value>,
    pub ack: AckSender<Adapter>,
    pub has_ack: bool,
}

#[derive(Default)]
pub struct Queue {
    pub jobs: VecDeque<Job>,
    pub running: bool,
}

/// Stored in the socket's extensions.
pub struct Conn {
    pub session: Arc<Session>,
    pub link: Arc<Link>,
    pub queue: Mutex<Queue>,
}

/// The socket as the application reaches it. Holds the socket weakly: the session lives in the socket's
/// extensions, and a strong reference back would keep every closed socket alive.
pub struct Link {
    socket: Weak<Socket<Adapter>>,
    account: String,
}

impl Link {
    pub fn new(socket: &WeakSocket, account: &str) -> Link {
        Link { socket: socket.0.clone(), account: account.to_string() }
    }

    fn socket(&self) -> Option<SocketRef<Adapter>> {
        self.socket.upgrade().map(SocketRef::from)
    }
}

impl SocketLink for Link {
    fn join(&self, room: &str) {
        if let Some(s) = self.socket() {
            s.join(room_key(&self.account, room));
        }
    }

    fn leave(&self, room: &str) {
        if let Some(s) = self.socket() {
            s.leave(room_key(&self.account, room));
        }
    }

    fn emit(&self, event: &Event) {
        let (name, payload) = crate::wire::contract::render(event);
        Outbox::emit(self, &name, &payload);
    }

    fn disconnect(&self) {
        if let Some(s) = self.socket() {
            let _ = s.disconnect();
        }
    }
}

impl Outbox for Link {
    fn emit(&self, event: &str, data: &Value) {
        if let Some(s) = self.socket()
            && let Err(e) = s.emit(event, data)
        {
            tracing::debug!(sid = %s.id, event, error = %e, "emit to socket failed");
        }
    }
}

/// Extractor of a weak reference to the connecting socket (socketioxide hands out only strong ones).
pub struct WeakSocket(Weak<Socket<Adapter>>);

impl FromConnectParts<Adapter> for WeakSocket {
    type Error = std::convert::Infallible;

    fn from_connect_parts(
        s: &Arc<Socket<Adapter>>,
        _: &Option<socketioxide::handler::Value>,
    ) -> Result<Self, Self::Error> {
        Ok(WeakSocket(Arc::downgrade(s)))
    }
}
