//! What the transport keeps per socket: the session it belongs to, its wire dialect, the link the application
//! acts through, and the socket's serial event queue.

use std::collections::VecDeque;
use std::sync::{Arc, Weak};

use parking_lot::Mutex;
use serde_json::Value;
use socketioxide::extract::{AckSender, SocketRef};
use socketioxide::handler::FromConnectParts;
use socketioxide::socket::Socket;

use super::Adapter;
use super::admin::AdminUi;
use crate::app::events::Event;
use crate::app::session::{Session, SocketLink};
use crate::cluster::Census;
use crate::wire::{Dialect, Outbox, SocketState};

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
    pub dialect: Dialect,
    /// What the dialect remembers about this socket.
    pub state: SocketState,
    pub link: Arc<Link>,
    pub queue: Mutex<Queue>,
    /// Counts the socket in the census of dialects while it lives.
    pub counted: Counted,
}

/// A socket counted in the census of its dialect, until dropped (with the socket).
pub struct Counted {
    census: Arc<dyn Census>,
    dialect: Dialect,
}

impl Counted {
    pub fn new(census: Arc<dyn Census>, dialect: Dialect) -> Counted {
        census.arrived(dialect.index());
        Counted { census, dialect }
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.census.left(self.dialect.index());
    }
}

/// The socket as the application reaches it. Holds the socket weakly: the session lives in the socket's
/// extensions, and a strong reference back would keep every closed socket alive.
pub struct Link {
    socket: Weak<Socket<Adapter>>,
    account: String,
    dialect: Dialect,
    /// The Admin UI, when it is on: told of this socket's rooms and emits.
    admin: Option<Arc<AdminUi>>,
}

impl Link {
    pub fn new(socket: &WeakSocket, account: &str, dialect: Dialect, admin: Option<Arc<AdminUi>>) -> Link {
        Link { socket: socket.0.clone(), account: account.to_string(), dialect, admin }
    }

    fn socket(&self) -> Option<SocketRef<Adapter>> {
        self.socket.upgrade().map(SocketRef::from)
    }
}

impl SocketLink for Link {
    fn join(&self, room: &str) {
        if let Some(s) = self.socket() {
            let key = self.dialect.room_key(&self.account, room);
            if let Some(admin) = &self.admin {
                admin.room_joined(&s.id.to_string(), &key);
            }
            s.join(key);
        }
    }

    fn leave(&self, room: &str) {
        if let Some(s) = self.socket() {
            let key = self.dialect.room_key(&self.account, room);
            if let Some(admin) = &self.admin {
                admin.room_left(&s.id.to_string(), &key);
            }
            s.leave(key);
        }
    }

    fn emit(&self, event: &Event) {
        for (name, payload) in crate::wire::render(self.dialect, event) {
            Outbox::emit(self, &name, &payload);
        }
    }

    fn disconnect(&self) {
        if let Some(s) = self.socket() {
            let _ = s.disconnect();
        }
    }
}

impl Outbox for Link {
    fn emit(&self, event: &str, data: &Value) {
        let Some(s) = self.socket() else { return };
        if let Some(admin) = &self.admin {
            admin.event_sent(&s.id.to_string(), event, data);
        }
        if let Err(e) = s.emit(event, data) {
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
