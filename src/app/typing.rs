//! Typing indicators (docs/protocol.md §9): the typing backend only, never the database. The permission
//! check uses the rooms the socket is in (joined under the room policy), so a typing storm costs no query.

use std::sync::Arc;

use chrono::Utc;

use super::dms::Dms;
use super::events::{Author, Event, TypingChange};
use super::worker::{Worker, until, within};
use super::{Fanout, RosterRef};
use crate::cluster::{Audience, SocketRooms, Target, TypingBackend};
use crate::domain::names::RoomName;
use crate::domain::typing::{RoomType, TypingEvent, TypingRequest, Typist};
use crate::error::{AppError, AppResult};
use crate::metrics::Metrics;
use crate::store::Store;

/// Who is typing: the user, the device (socket id, or the HTTP device), and how they are shown.
pub struct Typer<'a> {
    pub account: &'a str,
    pub user: &'a str,
    pub device: &'a str,
    pub author: Author,
}

pub struct Typing {
    backend: Arc<dyn TypingBackend>,
    roster: RosterRef,
    store: Store,
    fanout: Arc<Fanout>,
    metrics: Arc<Metrics>,
    dms: Arc<Dms>,
    enabled: bool,
    wake: Arc<tokio::sync::Notify>,
    worker: Worker,
}

impl Typing {
    pub fn new(
        backend: Arc<dyn TypingBackend>,
        roster: RosterRef,
        store: Store,
        fanout: Arc<Fanout>,
        metrics: Arc<Metrics>,
        dms: Arc<Dms>,
        enabled: bool,
    ) -> Typing {
        Typing {
            backend,
            roster,
            store,
            fanout,
            metrics,
            dms,
            enabled,
            wake: Arc::new(tokio::sync::Notify::new()),
            worker: Worker::default(),
        }
    }

    /// Starts the timer: it sends coalesced updates and expiries when they fall due, or when woken.
    pub fn start(self: &Arc<Self>) {
        self.worker.every_deadline(self, self.wake.clone(), |t| async move {
            let events = t.backend.flush(Utc::now()).await;
            t.emit(events).await;
            within(t.backend.next_deadline().await.map(until), t.backend.poll_interval())
        });
    }

    pub async fn stop(&self) {
        self.worker.stop().await;
    }

    /// A typing start or stop from a socket: it must be in the room (and not muted there, to start). A dm the
    /// server does not know yet is learned from both participants' use (`Dms::used`); until then its typing
    /// reaches nobody, without an error.
    pub async fn socket_typing(&self, typer: Typer<'_>, req: TypingRequest) -> AppResult<()> {
        self.check_enabled()?;
        let mut rooms = self.roster.rooms_of(typer.device).await.unwrap_or_default();
        if req.room_type == RoomType::Dm {
            let room = RoomName::parse(&req.room(typer.account)?.socket_room()).map_err(AppError::validation)?;
            if !rooms.contains(&room.name) && room.dm_pair().is_none() {
                if !self.dms.used(typer.account, typer.user, &room, req.recipient_id.as_deref()).await? {
                    tracing::debug!(room = %room.name, user = typer.user, "typing in a dm not (yet) known: dropped");
                    return Ok(());
                }
                rooms = self.roster.rooms_of(typer.device).await.unwrap_or_default();
            }
        }
        self.apply(typer, req, &rooms).await
    }

    /// `POST /typing`: typing from a client without a socket, tracked as its HTTP device and expiring like
    /// any other. Such a client is in no room, so its permission comes from the stored membership (one read
    /// per request; socket typing still reads nothing).
    pub async fn http_typing(&self, typer: Typer<'_>, req: TypingRequest) -> AppResult<()> {
        self.check_enabled()?;
        let room = req.room(typer.account)?;
        let mut rooms = SocketRooms::default();
        for name in [room.socket_room(), room.room_name.clone()] {
            if let Some(m) = self.store.member(typer.account, &name, typer.user).await?
                && !m.banned
            {
                if m.muted {
                    rooms.muted.push(name.clone());
                }
                rooms.rooms.push(name);
            }
        }
        self.apply(typer, req, &rooms).await
    }

    fn check_enabled(&self) -> AppResult<()> {
        if self.enabled {
            Ok(())
        } else {
            Err(AppError::forbidden("typing indicators are disabled (REALTIME_ENABLE_TYPING=false)"))
        }
    }

    async fn apply(&self, typer: Typer<'_>, req: TypingRequest, rooms: &SocketRooms) -> AppResult<()> {
        let mut room = req.room(typer.account)?;
        let canonical = room.socket_room();
        if !rooms.contains(&canonical) {
            if room.room_type != RoomType::Dm && rooms.contains(&room.room_name) {
                // A bare channel (`general`) is typed into by its bare name: its own list, sent to that room
                // (never mixed with a `channel:<id>` of the same id, which may have other members).
                room.bare = true;
            } else {
                return Err(AppError::not_a_member(&canonical));
            }
        }
        let joined = room.socket_room();
        if req.is_typing && rooms.is_muted(&joined) {
            return Err(AppError::forbidden(format!("you are muted in {joined}")));
        }
        if room.room_type == RoomType::Dm
            && let Some(recipient) = &req.recipient_id
            && let Some((a, b)) = RoomName::parse(&canonical)
                .ok()
                .as_ref()
                .and_then(|r| r.dm_pair().map(|(a, b)| (a.to_string(), b.to_string())))
            && (recipient == typer.user || (recipient != &a && recipient != &b))
        {
            return Err(AppError::forbidden(format!("{recipient} is not the other participant of {canonical}")));
        }
        let now = Utc::now();
        if req.is_typing {
            let typist = Typist {
                user_id: typer.user.to_string(),
                socket_id: typer.device.to_string(),
                user_name: typer.author.name,
                user_avatar: typer.author.avatar,
            };
            self.backend.start(&room, &typist, req.recipient_id.as_deref(), now).await;
        } else {
            self.backend.stop(&room, typer.user, typer.device, req.recipient_id.as_deref(), now).await;
        }
        self.metrics.typing_events.inc();
        self.wake.notify_one();
        Ok(())
    }

    /// A socket closed: its typing entries go at once.
    pub async fn socket_closed(&self, account: &str, user: &str, sid: &str) {
        self.backend.remove_socket(account, user, sid, Utc::now()).await;
        self.wake.notify_one();
    }

    /// A node is gone (or this node restarted): its sockets stop typing; the timer pushes the change.
    pub async fn purge_node(&self, node: &str) -> usize {
        let n = self.backend.purge_node(node, Utc::now()).await;
        self.wake.notify_one();
        n
    }

    async fn emit(&self, events: Vec<TypingEvent>) {
        for ev in events {
            let account = &ev.room.account;
            let to = Audience {
                account: account.clone(),
                to: ev.targets.iter().map(|t| Target::Room(t.clone())).collect(),
                except_users: ev.except_users.clone(),
            };
            self.fanout.emit(to, Event::Typing(TypingChange { list: ev.payload, delta: ev.delta })).await;
            self.metrics.broadcasts.inc();
            for p in ev.personal {
                let change = TypingChange { list: p.payload, delta: p.delta };
                self.fanout.emit(Audience::user(account, &p.user_id), Event::Typing(change)).await;
            }
        }
    }
}
