//! Typing indicators (CONTRACT §8): memory only, never the database. The permission check uses the rooms the
//! socket is already in (joined under the room policy), so a typing storm costs no query at all.

use std::sync::Arc;

use chrono::Utc;
use serde_json::Value;
use tokio::sync::Notify;

use crate::domain::names::{RoomName, room_key, user_room};
use crate::domain::typing::{
    InMemoryTypingStore, RoomType, TypingConfig, TypingError, TypingEvent, TypingRequest, TypingStore, Typist,
};
use crate::error::{AppError, AppResult, ErrorCode};
use crate::hub::{App, Hub};

pub struct TypingHub {
    store: Box<dyn TypingStore>,
    wake: Notify,
}

impl TypingHub {
    pub fn new(cfg: &crate::config::Config) -> TypingHub {
        TypingHub {
            store: Box::new(InMemoryTypingStore::new(TypingConfig::from_std(cfg.typing_timeout, cfg.typing_coalesce))),
            wake: Notify::new(),
        }
    }
}

fn typing_error(e: TypingError) -> AppError {
    let code = if e.code() == "PAYLOAD_TOO_LARGE" { ErrorCode::PayloadTooLarge } else { ErrorCode::ValidationError };
    AppError::new(code, e.to_string())
}

/// Who is typing and which of the account's rooms their socket is in.
pub struct Typer<'a> {
    pub account: &'a str,
    pub user: &'a str,
    pub socket_id: &'a str,
    pub name: Option<String>,
    pub avatar: Option<String>,
    /// Room names (without the account prefix) the socket is in.
    pub rooms: &'a [String],
    /// Rooms among them where the user is muted: they may stop typing there, not start.
    pub muted: &'a [String],
}

/// `typing:start`, `typing:stop` or `typing {isTyping}`.
pub fn handle(hub: &Hub, typer: &Typer<'_>, event: &str, data: &Value) -> AppResult<()> {
    if !hub.cfg.enable_typing {
        return Err(AppError::forbidden("typing indicators are disabled (REALTIME_ENABLE_TYPING=false)"));
    }
    let req = TypingRequest::from_json(event, data).map_err(typing_error)?;
    let mut room = req.room(typer.account).map_err(typing_error)?;
    let in_room = |name: &str| typer.rooms.iter().any(|r| r == name);
    let canonical = room.socket_room();
    if !in_room(&canonical) {
        if room.room_type != RoomType::Dm && in_room(&room.room_name) {
            // A bare channel (`general`) is typed into by its bare name: its own list, sent to that room
            // (never mixed with a `channel:<id>` of the same id, which may have other members).
            room.bare = true;
        } else {
            return Err(AppError::not_a_member(&canonical));
        }
    }
    let joined = room.socket_room();
    if req.is_typing && typer.muted.contains(&joined) {
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
            socket_id: typer.socket_id.to_string(),
            user_name: typer.name.clone(),
            user_avatar: typer.avatar.clone(),
        };
        hub.typing.store.start(&room, &typist, req.recipient_id.as_deref(), now);
    } else {
        hub.typing.store.stop(&room, typer.user, typer.socket_id, req.recipient_id.as_deref(), now);
    }
    hub.metrics.typing_events.inc();
    hub.typing.wake.notify_one();
    Ok(())
}

/// `POST /typing`: typing from a client without a socket, tracked as the device `http:<user>` and expiring
/// like any other. Such a client is in no Socket.IO room, so its permission comes from the stored membership
/// (one read per request; socket typing still reads nothing).
pub async fn http_typing(hub: &Hub, account: &str, identity: &crate::auth::Identity, data: &Value) -> AppResult<()> {
    let req = TypingRequest::from_json("typing", data).map_err(typing_error)?;
    let room = req.room(account).map_err(typing_error)?;
    let (mut rooms, mut muted) = (Vec::new(), Vec::new());
    for name in [room.socket_room(), room.room_name.clone()] {
        if let Some(m) = hub.store.member(account, &name, &identity.user_id).await?
            && !m.banned
        {
            if m.muted {
                muted.push(name.clone());
            }
            rooms.push(name);
        }
    }
    let device = crate::service::presence::http_device(&identity.user_id);
    let typer = Typer {
        account,
        user: &identity.user_id,
        socket_id: &device,
        name: identity.name.clone(),
        avatar: identity.avatar.clone(),
        rooms: &rooms,
        muted: &muted,
    };
    handle(hub, &typer, "typing", data)
}

/// A socket closed: its typing entries go at once.
pub fn socket_closed(hub: &Hub, account: &str, user: &str, socket_id: &str) {
    hub.typing.store.remove_socket(account, user, socket_id, Utc::now());
    hub.typing.wake.notify_one();
}

async fn emit(hub: &Hub, events: Vec<TypingEvent>) {
    let Some(io) = hub.ns() else { return };
    for ev in events {
        let account = &ev.room.account;
        let targets: Vec<String> = ev.targets.iter().map(|t| room_key(account, t)).collect();
        let except: Vec<String> = ev.except_users.iter().map(|u| room_key(account, &user_room(u))).collect();
        let _ = io.clone().to(targets).except(except).emit("typing:event", &ev.payload).await;
        hub.metrics.broadcasts.inc();
        for p in ev.personal {
            let _ = io.clone().to(room_key(account, &user_room(&p.user_id))).emit("typing:event", &p.payload).await;
        }
    }
}

/// The timer: flushes coalesced updates and expiries when they fall due, or when a handler wakes it.
pub fn spawn(app: App) {
    tokio::spawn(async move {
        let app: Arc<Hub> = app;
        loop {
            let events = app.typing.store.flush(Utc::now());
            if !events.is_empty() {
                emit(&app, events).await;
            }
            let next = app.typing.store.next_deadline();
            let wait = next.map(|t| (t - Utc::now()).to_std().unwrap_or_default());
            match wait {
                Some(d) => {
                    tokio::select! {
                        _ = tokio::time::sleep(d) => {},
                        _ = app.typing.wake.notified() => {},
                    }
                }
                None => app.typing.wake.notified().await,
            }
        }
    });
}
