//! `room:join`, `room:leave` and the `channel:*` aliases.

use serde_json::{Value, json};

use crate::domain::names::RoomName;
use crate::domain::occupancy::Exit;
use crate::error::{AppError, AppResult};
use crate::service::rooms as svc;
use crate::transport::announce_presence_in_room;
use crate::transport::dispatch::{Cx, Reply};
use crate::wire::{Payload, limits};

async fn enter(cx: &Cx<'_>, name: &str) -> AppResult<svc::Joined> {
    let joined = svc::join(cx.app, &cx.session.account, cx.session.user(), name).await?;
    let key = cx.session.key(&joined.room.name);
    cx.session.set_muted(&joined.room.name, joined.muted);
    let personal = joined.room.personal_owner().is_some();
    if personal {
        cx.socket.join(key);
    } else {
        // Occupancy is locked before the session's room list: a disconnect ending the session meanwhile either
        // sees this room (and counts the exit) or makes `entered` refuse it, never a count that stays.
        let arrived = {
            let mut occ = cx.app.occupancy.lock();
            if cx.session.entered(&joined.room.name) {
                cx.socket.join(key.clone());
                cx.session.user().map(|u| occ.enter(&key, u))
            } else {
                None
            }
        };
        if let (Some(arrived), Some(u)) = (arrived, cx.session.user()) {
            crate::service::presence::joined_room(cx.app, &cx.session.account, u, &joined.room.name);
            if arrived {
                announce_presence_in_room(cx.app, cx.session, &joined.room.name, "user:joined").await;
            }
        }
    }
    crate::transport::audit(cx.app, cx.session, "room:join", Some(&joined.room.name), None);
    Ok(joined)
}

async fn exit(cx: &Cx<'_>, name: &str, forget: bool) -> AppResult<RoomName> {
    let room = RoomName::parse(name).map_err(AppError::validation)?;
    let key = cx.session.key(&room.name);
    if room.personal_owner().is_some() {
        return Err(AppError::validation("the personal room cannot be left"));
    }
    if cx.session.left(&room.name) {
        cx.socket.leave(key.clone());
        if let Some(u) = cx.session.user() {
            let exit = cx.app.occupancy.lock().exit(&key, u, false);
            if exit == Exit::Left {
                crate::service::presence::left_room(cx.app, &cx.session.account, u, &room.name);
                announce_presence_in_room(cx.app, cx.session, &room.name, "user:left").await;
            }
        }
    }
    if forget && let Some(u) = cx.session.user() {
        cx.app.store.remove_member(&cx.session.account, &room.name, u).await?;
        if let Some(s) = crate::service::rooms::leave_live_sockets(cx.app, &cx.session.account, u, &room.name) {
            announce_presence_in_room(cx.app, &s, &room.name, "user:left").await;
        }
    }
    crate::transport::audit(cx.app, cx.session, "room:leave", Some(&room.name), None);
    Ok(room)
}

pub async fn join(cx: &Cx<'_>, data: Value) -> AppResult<Reply> {
    let p = Payload::object(&data)?;
    let name = p.str("roomName", limits::ID)?;
    Ok(Reply::Data(enter(cx, name).await?.ack()))
}

pub async fn leave(cx: &Cx<'_>, data: Value) -> AppResult<Reply> {
    let p = Payload::object(&data)?;
    let name = p.str("roomName", limits::ID)?;
    let forget = p.opt_bool("forget")?.unwrap_or(false);
    let room = exit(cx, name, forget).await?;
    Ok(Reply::Data(json!({ "roomName": room.name })))
}

pub async fn channel_join(cx: &Cx<'_>, data: Value) -> AppResult<Reply> {
    let p = Payload::object(&data)?;
    let id = p.opt_id("channelId")?.ok_or_else(|| AppError::validation("channelId is required"))?;
    let room = RoomName::from_channel_id(&id).map_err(AppError::validation)?;
    let joined = enter(cx, &room.name).await?;
    let payload = json!({ "channelId": room.channel_id(), "userId": cx.session.user() });
    cx.emit("channel:joined", &payload);
    Ok(Reply::Data(joined.ack()))
}

pub async fn channel_leave(cx: &Cx<'_>, data: Value) -> AppResult<Reply> {
    let p = Payload::object(&data)?;
    let id = p.opt_id("channelId")?.ok_or_else(|| AppError::validation("channelId is required"))?;
    let room = RoomName::from_channel_id(&id).map_err(AppError::validation)?;
    exit(cx, &room.name, false).await?;
    let payload = json!({ "channelId": room.channel_id(), "userId": cx.session.user() });
    cx.emit("channel:left", &payload);
    Ok(Reply::Data(payload))
}
