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
