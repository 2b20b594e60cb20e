//! Joining and leaving rooms, with the policy of CONTRACT §4.

use serde_json::{Value, json};

use crate::domain::names::{RoomName, room_key, user_room};
use crate::domain::policy::{self, Visibility};
use crate::error::{AppError, AppResult};
use crate::hub::Hub;
use crate::store::rooms::NewRoom;
use crate::transport::session::Session;

/// Rooms at most this big list their members in the join ack.
pub const SMALL_ROOM: i64 = 50;

pub struct Joined {
    pub room: RoomName,
    pub member_count: i64,
    pub members: Option<Vec<Value>>,
    /// The user is muted here: they may read but not write or type.
    pub muted: bool,
}

impl Joined {
    pub fn ack(&self) -> Value {
        let mut v = json!({ "roomName": self.room.name, "type": self.room.kind, "memberCount": self.member_count });
        if let Some(m) = &self.members {
            v["members"] = Value::Array(m.clone());
        }
        v
    }
}

/// Decides and records a join (room creation, persisted membership). The caller puts the socket in the room.
pub async fn join(hub: &Hub, account: &str, user: Option<&str>, name: &str) -> AppResult<Joined> {
    let room = RoomName::parse(name).map_err(AppError::validation)?;
    if room.personal_owner().is_some() {
        policy::plan_join(user, &room, None, None, false)?;
        return Ok(Joined { room, member_count: 1, members: None, muted: false });
    }
    let facts = hub.store.room(account, &room.name).await?;
    let member = match user {
        Some(u) => hub.store.member(account, &room.name, u).await?,
        None => None,
    };
    let plan = policy::plan_join(
        user,
        &room,
        facts.as_ref().map(|f| f.facts()).as_ref(),
        member.as_ref().map(|m| m.facts()).as_ref(),
        hub.cfg.auto_create_rooms,
    )?;
    if let Some(visibility) = plan.create {
        let kind = room.row_type().to_string();
        hub.store
            .create_room(
                account,
                &NewRoom { name: &room.name, kind: &kind, visibility, max_members: None, created_by: user },
            )
            .await?;
    }
    if plan.persist
        && let Some(u) = user
    {
        if hub.store.add_member(account, &room.name, u, "member").await? {
            hub.receipts.member_joined(account, &room.name, u);
        }
        // A dm belongs to both participants from its first message on: the other one is a member too, so the
        // room reaches all their devices now and on every later connection.
        if let Some((a, b)) = room.dm_pair() {
            let other = if u == a { b } else { a };
            if hub.store.add_member(account, &room.name, other, "member").await? {
                hub.receipts.member_joined(account, &room.name, other);
                join_live_sockets(hub, account, other, &room.name);
            }
        }
    }
    let row = hub.store.room(account, &room.name).await?.ok_or_else(|| AppError::room_not_found(&room.name))?;
    let members = if row.member_count <= SMALL_ROOM {
        let rows = hub.store.members(account, &room.name, SMALL_ROOM).await?;
        Some(rows.iter().map(|m| json!({ "userId": m.user_id, "joinedAt": crate::wire::iso(m.joined_at) })).collect())
    } else {
        None
    };
    let muted = member.is_some_and(|m| m.muted);
    Ok(Joined { room, member_count: row.member_count, members, muted })
}

/// Puts every live socket of a user on this node into a room (admin add-member, dm creation), counted as
/// present like a `room:join` (so receipts and presence audiences see them).
pub fn join_live_sockets(hub: &Hub, account: &str, user: &str, room: &str) {
    let key = room_key(account, room);
    hub.receipts.member_joined(account, room, user);
    for s in hub.ns().map(|ns| ns.to(room_key(account, &user_room(user))).sockets()).unwrap_or_default() {
        let Some(session) = s.extensions.get::<std::sync::Arc<Session>>() else { continue };
        let mut occ = hub.occupancy.lock(); // before the room list, as in room:join
        if session.entered(room) {
            s.join(key.clone());
            occ.enter(&key, user);
        }
    }
    crate::service::presence::joined_room(hub, account, user, room);
}

/// Takes every live socket of a user on this node out of a room (admin remove-member, ban, forget) and stops
/// counting them there.
/// Returns one of the user's sessions when this made the user leave the room, for the caller to announce
/// `user:left`.
#[must_use = "announce user:left for the returned session"]
pub fn leave_live_sockets(hub: &Hub, account: &str, user: &str, room: &str) -> Option<std::sync::Arc<Session>> {
    let key = room_key(account, room);
    hub.receipts.member_removed(account, room, user);
    let mut left = None;
    for s in hub.ns().map(|ns| ns.to(room_key(account, &user_room(user))).sockets()).unwrap_or_default() {
        let Some(session) = s.extensions.get::<std::sync::Arc<Session>>() else { continue };
        if session.left(room) {
            s.leave(key.clone());
            if hub.occupancy.lock().exit(&key, user, false) == crate::domain::occupancy::Exit::Left {
                left = Some(session);
            }
        }
    }
    crate::service::presence::left_room(hub, account, user, room);
    left
}

/// An admin muted or unmuted a member: their live sockets on this node learn it at once (typing checks it
/// without a query).
pub fn set_muted_live(hub: &Hub, account: &str, user: &str, room: &str, muted: bool) {
    for s in hub.ns().map(|ns| ns.to(room_key(account, &user_room(user))).sockets()).unwrap_or_default() {
        if let Some(session) = s.extensions.get::<std::sync::Arc<Session>>() {
            session.set_muted(room, muted);
        }
    }
}

pub fn parse_visibility(v: Option<&str>) -> AppResult<Visibility> {
    match v {
        None => Ok(Visibility::Public),
        Some(s) => Visibility::parse(s)
            .ok_or_else(|| AppError::validation(format!("visibility must be public, private or secret, not {s:?}"))),
    }
}
