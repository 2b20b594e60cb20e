//! The fan-out over socketioxide rooms. Every account's rooms and every user's personal room are
//! Socket.IO rooms (`<account>/<room>`), so a room event is one broadcast, encoded once by socketioxide for
//! every socket that receives it; with a cluster adapter the same calls reach the sockets of every node.

use async_trait::async_trait;
use socketioxide::SocketIo;
use socketioxide::operators::BroadcastOperators;

use super::Adapter;
use crate::app::events::Event;
use crate::cluster::{Audience, Fanout, Target};
use crate::domain::names::{room_key, user_room};

pub struct SocketIoFanout {
    io: SocketIo<Adapter>,
}

impl SocketIoFanout {
    pub fn new(io: SocketIo<Adapter>) -> SocketIoFanout {
        SocketIoFanout { io }
    }

    /// The operators for an audience. None once shutdown has closed the namespace (timers still running
    /// then have nobody left to tell; socketioxide's `io.to()` would panic), or for an empty audience.
    fn operators(&self, to: &Audience) -> Option<BroadcastOperators<Adapter>> {
        if to.to.is_empty() {
            return None;
        }
        let ns = self.io.of("/")?;
        let rooms: Vec<String> = to.to.iter().map(|t| key(&to.account, t)).collect();
        let ops = ns.to(rooms);
        Some(if to.except_users.is_empty() {
            ops
        } else {
            ops.except(to.except_users.iter().map(|u| room_key(&to.account, &user_room(u))).collect::<Vec<_>>())
        })
    }
}

fn key(account: &str, target: &Target) -> String {
    match target {
        Target::Room(room) => room_key(account, room),
        Target::User(user) => room_key(account, &user_room(user)),
    }
}

#[async_trait]
impl Fanout<Event> for SocketIoFanout {
    async fn emit(&self, to: Audience, event: Event) {
        let Some(ops) = self.operators(&to) else { return };
        let (name, payload) = crate::wire::contract::render(&event);
        if let Err(e) = ops.emit(name.as_ref(), &payload).await {
            tracing::debug!(event = %name, error = %e, "broadcast failed");
        }
    }

    async fn join(&self, account: &str, who: Target, room: &str) {
        let Some(ns) = self.io.of("/") else { return };
        if let Err(e) = ns.to(key(account, &who)).join(room_key(account, room)).await {
            tracing::warn!(room, error = %e, "cannot put sockets into a room");
        }
    }

    async fn leave(&self, account: &str, who: Target, room: &str) {
        let Some(ns) = self.io.of("/") else { return };
        if let Err(e) = ns.to(key(account, &who)).leave(room_key(account, room)).await {
            tracing::warn!(room, error = %e, "cannot take sockets out of a room");
        }
    }

    async fn disconnect(&self, account: &str, who: Target) {
        let Some(ns) = self.io.of("/") else { return };
        if let Err(e) = ns.to(key(account, &who)).disconnect().await {
            tracing::warn!(error = %e, "cannot disconnect sockets");
        }
    }

    async fn reach(&self, to: &Audience) -> usize {
        self.operators(to).map_or(0, |ops| ops.sockets().len())
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

    struct OneNode {
        io: SocketIo,
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
        let (_svc, io) = SocketIo::new_svc();
        io.ns("/", async |s: SocketRef, Data(auth): Data<Value>| {
            let user = auth["user"].as_str().unwrap_or_default();
            s.join(room_key("acc", &user_room(user)));
            for r in auth["rooms"].as_array().into_iter().flatten() {
                s.join(room_key("acc", r.as_str().unwrap_or_default()));
            }
        });
        let h = OneNode { fanout: Arc::new(SocketIoFanout::new(io.clone())), io };
        suite::fanout(&h, |name| Event::Custom { name: name.to_string(), payload: Value::Null }).await;
    }
}
