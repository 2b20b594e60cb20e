//! The fan-out over socketioxide rooms. Every account's rooms and every user's personal room are
//! Socket.IO rooms, one per wire dialect (`Dialect::room_key`: the contract's `<account>/<room>`, the other
//! dialects' `<dialect>|<account>/<room>`), so a room event is rendered once per dialect with sockets
//! connected and broadcast once to that dialect's room, encoded once by socketioxide for every socket that
//! receives it. With every socket on one dialect that is one rendering and one broadcast, as with a single
//! dialect. With a cluster adapter the same calls reach the sockets of every node.

use std::sync::Arc;

use async_trait::async_trait;
use socketioxide::SocketIo;
use socketioxide::extract::SocketRef;
use socketioxide::operators::BroadcastOperators;

use super::Adapter;
use super::admin::AdminUi;
use super::conn::Conn;
use crate::app::events::Event;
use crate::cluster::{Audience, Census, Fanout, Target};
use crate::domain::names::user_room;
use crate::wire::{self, Dialect, Packet};

pub struct SocketIoFanout {
    io: SocketIo<Adapter>,
    census: Arc<dyn Census>,
    /// The Admin UI, when it is on: told of broadcasts and of room operations.
    admin: Option<Arc<AdminUi>>,
}

impl SocketIoFanout {
    pub fn new(io: SocketIo<Adapter>, census: Arc<dyn Census>, admin: Option<Arc<AdminUi>>) -> SocketIoFanout {
        SocketIoFanout { io, census, admin }
    }

    /// The dialects with sockets connected.
    fn present(&self) -> impl Iterator<Item = Dialect> + '_ {
        Dialect::ALL.into_iter().filter(|d| self.census.present(d.index()))
    }

    /// The rooms and exclusions of an audience in a dialect.
    fn keys(d: Dialect, to: &Audience) -> (Vec<String>, Vec<String>) {
        let rooms = to.to.iter().map(|t| key(d, &to.account, t)).collect();
        let except = to.except_users.iter().map(|u| d.room_key(&to.account, &user_room(u))).collect();
        (rooms, except)
    }

    /// The operators for an audience in a dialect. None once shutdown has closed the namespace (timers still
    /// running then have nobody left to tell; socketioxide's `io.to()` would panic), or for an empty audience.
    fn operators(&self, d: Dialect, to: &Audience) -> Option<BroadcastOperators<Adapter>> {
        if to.to.is_empty() {
            return None;
        }
        let ns = self.io.of("/")?;
        let (rooms, except) = Self::keys(d, to);
        let ops = ns.to(rooms);
        Some(if except.is_empty() { ops } else { ops.except(except) })
    }

    async fn send(&self, ops: BroadcastOperators<Adapter>, packets: Vec<Packet<'_>>) {
        if let Some(admin) = &self.admin {
            admin.broadcast_sent();
        }
        let last = packets.len().saturating_sub(1);
        let mut ops = Some(ops);
        for (i, (name, payload)) in packets.into_iter().enumerate() {
            let o = if i == last { ops.take().expect("once") } else { ops.clone().expect("kept") };
            if let Err(e) = o.emit(name.as_ref(), &payload).await {
                tracing::debug!(event = %name, error = %e, "broadcast failed");
            }
        }
    }

    /// The socket an event came from, when it is on this node, with its dialect.
    fn origin(&self, event: &Event) -> Option<(SocketRef<Adapter>, Dialect)> {
        let sid = event.origin()?.parse().ok()?;
        let socket = self.io.of("/")?.get_socket(sid)?;
        let dialect = socket.extensions.get::<Arc<Conn>>()?.dialect;
        Some((socket, dialect))
    }
}

fn key(d: Dialect, account: &str, target: &Target) -> String {
    match target {
        Target::Room(room) => d.room_key(account, room),
        Target::User(user) => d.room_key(account, &user_room(user)),
    }
}

#[async_trait]
impl Fanout<Event> for SocketIoFanout {
    async fn emit(&self, to: Audience, event: Event) {
        let origin = self.origin(&event);
        for d in self.present() {
            let packets = wire::render(d, &event);
            if packets.is_empty() {
                continue;
            }
            // The sending socket's own copy differs (its temporary id): everyone else gets the common one.
            if let Some((socket, _)) = origin.as_ref().filter(|(_, od)| *od == d)
                && let Some(own) = wire::render_origin(d, &event)
            {
                let (rooms, except) = Self::keys(d, &to);
                let own_rooms = socket.rooms();
                let has = |keys: &[String]| own_rooms.iter().any(|r| keys.iter().any(|k| k == r.as_ref()));
                let in_audience = has(&rooms) && !has(&except);
                self.send(socket.to(rooms).except(except), packets).await;
                if in_audience {
                    for (name, payload) in own {
                        let _ = socket.emit(name.as_ref(), &payload);
                    }
                }
                continue;
            }
            if let Some(ops) = self.operators(d, &to) {
                self.send(ops, packets).await;
            }
        }
    }

    async fn join(&self, account: &str, who: Target, room: &str) {
        let Some(ns) = self.io.of("/") else { return };
        for d in self.present() {
            let (who, room) = (key(d, account, &who), d.room_key(account, room));
            let watched = self.admin.as_ref().map(|a| (a, a.sockets_in(&who)));
            if let Err(e) = ns.clone().to(who).join(room.clone()).await {
                tracing::warn!(room, error = %e, "cannot put sockets into a room");
            }
            for (admin, sid) in watched.iter().flat_map(|(a, sids)| sids.iter().map(move |s| (a, s))) {
                admin.room_joined(sid, &room);
            }
        }
    }

    async fn leave(&self, account: &str, who: Target, room: &str) {
        let Some(ns) = self.io.of("/") else { return };
        for d in self.present() {
            let (who, room) = (key(d, account, &who), d.room_key(account, room));
            let watched = self.admin.as_ref().map(|a| (a, a.sockets_in(&who)));
            if let Err(e) = ns.clone().to(who).leave(room.clone()).await {
                tracing::warn!(room, error = %e, "cannot take sockets out of a room");
            }
            for (admin, sid) in watched.iter().flat_map(|(a, sids)| sids.iter().map(move |s| (a, s))) {
                admin.room_left(sid, &room);
            }
        }
    }

    async fn disconnect(&self, account: &str, who: Target) {
        let Some(ns) = self.io.of("/") else { return };
        for d in self.present() {
            if let Err(e) = ns.clone().to(key(d, account, &who)).disconnect().await {
                tracing::warn!(error = %e, "cannot disconnect sockets");
            }
        }
    }

    async fn reach(&self, to: &Audience) -> usize {
        self.present().map(|d| self.operators(d, to).map_or(0, |ops| ops.sockets().len())).sum()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use async_trait::async_trait;
    use engineioxide::Packet;
    use serde_json::{Value, json};
    use socketioxide::SocketIo;
    use socketioxide::extract::{Data, SocketRef};
    use tokio::sync::mpsc::Receiver;

    use super::SocketIoFanout;
    use crate::app::events::Event;
    use crate::cluster::Fanout;
    use crate::cluster::suite::{self, FanoutHarness, ObservedSocket};
    use crate::domain::names::{room_key, user_room};
    use crate::transport::socketio::adapter::{AdapterState, NodeAdapter};

    struct OneNode {
        io: SocketIo<NodeAdapter>,
        fanout: Arc<SocketIoFanout>,
    }

    struct Socket {
        rx: Receiver<Packet>,
        // Keeps the socket's inbound side open.
        _tx: tokio::sync::mpsc::Sender<Packet>,
    }

    #[async_trait]
    impl ObservedSocket for Socket {
        async fn received(&mut self, wait: Duration) -> Vec<String> {
            let mut names = Vec::new();
            while let Ok(Some(p)) = tokio::time::timeout(wait, self.rx.recv()).await {
                if let Packet::Message(m) = p
                    && let Some(body) = m.strip_prefix('2')
                    && let Ok(Value::Array(a)) = serde_json::from_str::<Value>(body)
                {
                    names.push(a[0].as_str().unwrap_or_default().to_string());
                }
            }
            names
        }

        async fn closed(&mut self, wait: Duration) -> bool {
            let deadline = tokio::time::Instant::now() + wait;
            loop {
                match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                    Ok(Some(Packet::Message(m))) if m.starts_with('1') => return true,
                    Ok(Some(Packet::Close)) | Ok(None) => return true,
                    Ok(Some(_)) => {}
                    Err(_) => return false,
                }
            }
        }
    }

    #[async_trait]
    impl FanoutHarness<Event> for OneNode {
        type Socket = Socket;

        fn nodes(&self) -> usize {
            1
        }

        fn fanout(&self, _: usize) -> Arc<dyn Fanout<Event>> {
            self.fanout.clone()
        }

        async fn connect(&self, _: usize, user: &str, rooms: &[&str]) -> Socket {
            let (tx, mut rx) = self.io.new_dummy_sock("/", json!({ "user": user, "rooms": rooms })).await;
            // The CONNECT answer.
            let first = tokio::time::timeout(Duration::from_secs(1), rx.recv()).await.expect("connected");
            assert!(matches!(first, Some(Packet::Message(m)) if m.starts_with('0')));
            Socket { rx, _tx: tx }
        }
    }

    #[tokio::test]
    async fn meets_the_fanout_contract() {
        let (_svc, io) = SocketIo::builder().with_adapter::<NodeAdapter>(AdapterState::Local).build_svc();
        io.ns("/", async |s: SocketRef<NodeAdapter>, Data(auth): Data<Value>| {
            let user = auth["user"].as_str().unwrap_or_default();
            s.join(room_key("acc", &user_room(user)));
            for r in auth["rooms"].as_array().into_iter().flatten() {
                s.join(room_key("acc", r.as_str().unwrap_or_default()));
            }
        })
        .done()
        .await;
        // The test's sockets join the contract dialect's room keys.
        let census = Arc::new(crate::cluster::memory::MemoryCensus::default());
        crate::cluster::Census::arrived(census.as_ref(), crate::wire::Dialect::Contract.index());
        let h = OneNode { fanout: Arc::new(SocketIoFanout::new(io.clone(), census, None)), io };
        suite::fanout(&h, |name| Event::Custom { name: name.to_string(), payload: Value::Null }).await;
    }
}
