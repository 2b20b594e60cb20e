//! Rooms: joining and leaving under the room policy (docs/protocol.md §5), persisted membership, and the one
//! place where sockets enter and leave rooms ([`Rooms::admit`], [`Rooms::release`]): the roster, the
//! Socket.IO room, the presence audience and the `user:joined` / `user:left` announcements move together.

use std::sync::Arc;

use chrono::Utc;

use super::events::{Author, Event, RoomPresence};
use super::presence::Presence;
use super::receipts::Receipts;
use super::session::{Audit, Session, Sessions};
use super::worker::{Worker, until, within};
use super::{Fanout, RosterRef};
use crate::cluster::{Audience, Entered, Left, SocketEntry, Target};
use crate::domain::names::{RoomName, user_room};
use crate::domain::policy::{self, Visibility};
use crate::error::{AppError, AppResult, ErrorCode};
use crate::store::rooms::NewRoom;
use crate::store::{MemberRow, RoomRow, Store};

/// Rooms at most this big list their members in the join ack.
pub const SMALL_ROOM: i64 = 50;

/// An accepted join.
pub struct Joined {
    pub room: RoomName,
    pub member_count: i64,
    /// The members, for a small room.
    pub members: Option<Vec<MemberRow>>,
    /// The user is muted here: they may read but not write or type.
    pub muted: bool,
}

/// Which sockets enter or leave a room.
pub enum Sockets<'a> {
    /// One socket of this node.
    One(&'a Session),
    /// Every socket of a user, wherever it is connected (admin changes, a dm's other participant).
    AllOf { account: &'a str, user: &'a str },
}

pub struct Rooms {
    store: Store,
    roster: RosterRef,
    fanout: Arc<Fanout>,
    sessions: Arc<Sessions>,
    presence: Arc<Presence>,
    receipts: Arc<Receipts>,
    audit: Arc<Audit>,
    auto_create: bool,
    /// This node's id, recorded with each of its sockets in the roster.
    node: String,
    /// Wakes the departure timer when a grace starts.
    wake: Arc<tokio::sync::Notify>,
    worker: Worker,
}

impl Rooms {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        store: Store,
        roster: RosterRef,
        fanout: Arc<Fanout>,
        sessions: Arc<Sessions>,
        presence: Arc<Presence>,
        receipts: Arc<Receipts>,
        audit: Arc<Audit>,
        auto_create: bool,
        node: String,
    ) -> Rooms {
        Rooms {
            store,
            roster,
            fanout,
            sessions,
            presence,
            receipts,
            audit,
            auto_create,
            node,
            wake: Arc::new(tokio::sync::Notify::new()),
            worker: Worker::default(),
        }
    }

    /// Starts the timer that announces `user:left` when a disconnected user's grace runs out.
    pub fn start(self: &Arc<Self>) {
        self.worker.every_deadline(self, self.wake.clone(), |r| async move {
            for d in r.roster.departures(Utc::now()).await {
                let author = Author { name: d.name, avatar: d.avatar };
                r.announce(&d.account, &d.room, &d.user, author, false).await;
            }
            within(r.roster.next_departure().await.map(until), r.roster.poll_interval())
        });
    }

    pub async fn stop(&self) {
        self.worker.stop().await;
    }

    // ----- the one place sockets enter and leave rooms -------------------------------------------------

    /// Puts sockets into a room: each is recorded in the roster (which refuses a socket that closed
    /// meanwhile), joins the Socket.IO room, and the room becomes part of its user's presence audience. A
    /// user newly present in the room through one socket is announced with `user:joined`.
    pub async fn admit(&self, who: Sockets<'_>, room: &str, muted: bool) {
        match who {
            Sockets::One(s) => {
                let entered = self.roster.enter(&s.sid, room, muted).await;
                if !entered.entered() {
                    return;
                }
                s.link.join(room);
                if let Some(u) = s.user() {
                    self.presence.joined_room(&s.account, u, room).await;
                    if entered == Entered::Arrived {
                        self.announce(&s.account, room, u, s.author(), true).await;
                    }
                }
            }
            Sockets::AllOf { account, user } => {
                let mut any = false;
                for sid in self.roster.sockets_of(account, user).await {
                    any |= self.roster.enter(&sid, room, muted).await.entered();
                }
                if any {
                    self.fanout.join(account, Target::User(user.to_string()), room).await;
                }
                self.presence.joined_room(account, user, room).await;
            }
        }
    }

    /// Takes sockets out of a room. A user whose last socket there left is announced with `user:left`, and
    /// the room stops being part of their presence audience. True when the user left the room.
    pub async fn release(&self, who: Sockets<'_>, room: &str) -> bool {
        match who {
            Sockets::One(s) => {
                let left = self.roster.exit(&s.sid, room).await;
                if left == Left::NotIn {
                    return false;
                }
                s.link.leave(room);
                let Some(u) = s.user() else { return false };
                if left == Left::UserLeft {
                    self.presence.left_room(&s.account, u, room).await;
                    self.announce(&s.account, room, u, s.author(), false).await;
                    return true;
                }
                false
            }
            Sockets::AllOf { account, user } => {
                let mut gone = None;
                for sid in self.roster.sockets_of(account, user).await {
                    if self.roster.exit(&sid, room).await == Left::UserLeft {
                        gone = Some(sid);
                    }
                }
                self.fanout.leave(account, Target::User(user.to_string()), room).await;
                self.presence.left_room(account, user, room).await;
                if let Some(sid) = &gone {
                    let author = self.sessions.get(sid).map(|s| s.author()).unwrap_or_default();
                    self.announce(account, room, user, author, false).await;
                }
                gone.is_some()
            }
        }
    }

    /// `user:joined` / `user:left` to the others in the room (never to the user's own sockets).
    async fn announce(&self, account: &str, room: &str, user: &str, author: Author, joined: bool) {
        let presence =
            RoomPresence { room: room.to_string(), user: user.to_string(), author, at: crate::store::now_ms() };
        let event = if joined { Event::UserJoined(presence) } else { Event::UserLeft(presence) };
        self.fanout.emit(Audience::room(account, room).except_user(user), event).await;
    }

    // ----- a socket's life -----------------------------------------------------------------------------

    /// A socket was admitted: it is in the roster, in its personal room, and in every room it is a
    /// persisted member of (`memberships`: room, muted) — before the client hears anything.
    pub async fn connected(&self, s: &Session, memberships: &[(String, bool)]) {
        let author = s.author();
        self.roster
            .connect(SocketEntry {
                sid: s.sid.clone(),
                account: s.account.clone(),
                user: s.user_id.clone(),
                node: self.node.clone(),
                name: author.name,
                avatar: author.avatar,
            })
            .await;
        if let Some(u) = s.user() {
            s.link.join(&user_room(u));
            // As `admit` for each room, with one exchange with the roster and one with presence for them all.
            let entered = self.roster.enter_all(&s.sid, memberships).await;
            let mut joined = Vec::new();
            for ((room, _), e) in memberships.iter().zip(&entered) {
                if e.entered() {
                    s.link.join(room);
                    joined.push(room.clone());
                }
            }
            self.presence.joined_rooms(&s.account, u, &joined).await;
            for ((room, _), e) in memberships.iter().zip(entered) {
                if e == Entered::Arrived {
                    self.announce(&s.account, room, u, s.author(), true).await;
                }
            }
        }
    }

    /// A socket closed: it leaves every room; its user stays present there for the offline grace.
    pub async fn disconnected(&self, s: &Session) {
        self.roster.disconnect(&s.sid, Utc::now()).await;
        self.wake.notify_one();
    }

    /// A node is gone (its heartbeat expired), or this node restarted and repairs its own stale state: its
    /// sockets leave every room as if they had disconnected now, so their users leave (`user:left`) after
    /// the grace unless they are back through another socket. Returns the sockets removed.
    pub async fn purge_node(&self, node: &str) -> Vec<SocketEntry> {
        let gone = self.roster.purge_node(node, Utc::now()).await;
        self.wake.notify_one();
        gone
    }

    // ----- room:join / room:leave ----------------------------------------------------------------------

    /// Decides and records a join (room creation, persisted membership), then puts the socket in the room.
    pub async fn join(&self, s: &Session, name: &str) -> AppResult<Joined> {
        let account = &s.account;
        let user = s.user();
        let room = RoomName::parse(name).map_err(AppError::validation)?;
        if room.personal_owner().is_some() {
            policy::plan_join(user, &room, None, None, false)?;
            s.link.join(&room.name);
            self.audit.record(s, "room:join", Some(&room.name), None);
            return Ok(Joined { room, member_count: 1, members: None, muted: false });
        }
        let facts = self.store.room(account, &room.name).await?;
        let member = match user {
            Some(u) => self.store.member(account, &room.name, u).await?,
            None => None,
        };
        let plan = policy::plan_join(
            user,
            &room,
            facts.as_ref().map(|f| f.facts()).as_ref(),
            member.as_ref().map(|m| m.facts()).as_ref(),
            self.auto_create,
        )?;
        if let Some(visibility) = plan.create {
            let kind = room.row_type().to_string();
            let new = NewRoom { name: &room.name, kind: &kind, visibility, max_members: None, created_by: user };
            self.store.create_room(account, &new).await?;
        }
        if plan.persist
            && let Some(u) = user
        {
            if self.store.add_member(account, &room.name, u, "member").await? {
                self.receipts.member_joined(account, &room.name, u);
            }
            // A dm belongs to both participants from its first message on: the other one is a member too, so
            // the room reaches all their devices now and on every later connection.
            if let Some((a, b)) = room.dm_pair() {
                let other = if u == a { b } else { a };
                if self.store.add_member(account, &room.name, other, "member").await? {
                    self.receipts.member_joined(account, &room.name, other);
                    self.admit(Sockets::AllOf { account, user: other }, &room.name, false).await;
                }
            }
        }
        let row = self.store.room(account, &room.name).await?.ok_or_else(|| AppError::room_not_found(&room.name))?;
        let members = if row.member_count <= SMALL_ROOM {
            Some(self.store.members(account, &room.name, SMALL_ROOM).await?)
        } else {
            None
        };
        let muted = member.is_some_and(|m| m.muted);
        self.admit(Sockets::One(s), &room.name, muted).await;
        self.audit.record(s, "room:join", Some(&room.name), None);
        Ok(Joined { room, member_count: row.member_count, members, muted })
    }

    /// Takes the socket out of the room; `forget` also ends the persisted membership (every socket of the
    /// user leaves then).
    pub async fn leave(&self, s: &Session, name: &str, forget: bool) -> AppResult<RoomName> {
        let room = RoomName::parse(name).map_err(AppError::validation)?;
        if room.personal_owner().is_some() {
            return Err(AppError::validation("the personal room cannot be left"));
        }
        self.release(Sockets::One(s), &room.name).await;
        if forget && let Some(u) = s.user() {
            self.store.remove_member(&s.account, &room.name, u).await?;
            self.receipts.member_removed(&s.account, &room.name, u);
            self.release(Sockets::AllOf { account: &s.account, user: u }, &room.name).await;
        }
        self.audit.record(s, "room:leave", Some(&room.name), None);
        Ok(room)
    }

    // ----- the admin API -------------------------------------------------------------------------------

    pub async fn create(
        &self,
        account: &str,
        room: &RoomName,
        kind: &str,
        visibility: Visibility,
        max_members: Option<i64>,
    ) -> AppResult<(bool, Option<RoomRow>)> {
        let new = NewRoom { name: &room.name, kind, visibility, max_members, created_by: None };
        let created = self.store.create_room(account, &new).await?;
        Ok((created, self.store.room(account, &room.name).await?))
    }

    /// Deletes a room with its members and messages; every socket leaves it.
    pub async fn delete(&self, account: &str, name: &str) -> AppResult<()> {
        if !self.store.delete_room(account, name).await? {
            return Err(AppError::room_not_found(name));
        }
        self.fanout.leave(account, Target::Room(name.to_string()), name).await;
        self.roster.forget_room(account, name).await;
        self.receipts.forget_room(account, name);
        Ok(())
    }

    /// Adds (or updates) a member. Their live sockets enter the room, or leave it when banned; their mute
    /// follows the stored flag whatever this request changed (an unban must not forget an earlier mute).
    pub async fn add_member(
        &self,
        account: &str,
        room: &str,
        user: &str,
        role: Option<&str>,
        muted: Option<bool>,
        banned: Option<bool>,
    ) -> AppResult<(bool, Option<MemberRow>)> {
        self.store.room(account, room).await?.ok_or_else(|| AppError::room_not_found(room))?;
        let user = user.trim();
        if user.is_empty() || user.len() > 256 {
            return Err(AppError::validation("userId must be 1 to 256 characters"));
        }
        if role.is_some_and(|r| !policy::ROLES.contains(&r)) {
            return Err(AppError::validation(format!("role must be one of {}", policy::ROLES.join(", "))));
        }
        let added = self.store.add_member(account, room, user, role.unwrap_or("member")).await?;
        self.store.set_member_flags(account, room, user, role, muted, banned).await?;
        let who = Sockets::AllOf { account, user };
        if banned == Some(true) {
            self.receipts.member_removed(account, room, user);
            self.release(who, room).await;
        } else {
            self.receipts.member_joined(account, room, user);
            self.admit(who, room, false).await;
        }
        let member = self.store.member(account, room, user).await?;
        self.roster.set_muted(account, user, room, member.as_ref().is_some_and(|m| m.muted)).await;
        Ok((added, member))
    }

    /// Ends a membership; the user's live sockets leave the room.
    pub async fn remove_member(&self, account: &str, room: &str, user: &str) -> AppResult<()> {
        if !self.store.remove_member(account, room, user).await? {
            return Err(AppError::new(ErrorCode::NotAMember, format!("{user} is not a member of {room}")));
        }
        self.receipts.member_removed(account, room, user);
        self.release(Sockets::AllOf { account, user }, room).await;
        Ok(())
    }
}

/// Resolves the room a request names by a bare channel id: a full room name, or nchat's bare id
/// (`channel:<id>`, or a bare room of that name the user belongs to).
pub async fn resolve_channel(store: &Store, account: &str, user: &str, id: &str) -> AppResult<RoomName> {
    if id.contains(':') {
        return RoomName::parse(id).map_err(AppError::validation);
    }
    let channel = RoomName::from_channel_id(id).map_err(AppError::validation)?;
    if store.member(account, &channel.name, user).await?.is_some() {
        return Ok(channel);
    }
    let bare = RoomName::parse(id).map_err(AppError::validation)?;
    if store.member(account, &bare.name, user).await?.is_some() {
        return Ok(bare);
    }
    Ok(channel)
}
