//! The cluster seams: everything that several nodes must share, behind small async traits.
//!
//! A node serves its own sockets; what those sockets see depends on state that is not the node's alone —
//! who is in which room ([`Roster`]), who is online and how ([`PresenceBackend`]), who is typing
//! ([`TypingBackend`]), how much of a budget is left ([`RateLimiter`]), and how an event reaches sockets
//! that may live on another node ([`Fanout`]). The application (`app/`) talks only to these traits; the
//! composition root (`server.rs`) picks the implementations once at start. `memory/` holds the single-node
//! implementations; a Redis implementation goes beside each of them, and `suite` holds the contract tests
//! that every implementation must pass.
//!
//! Every method takes the time it acts at (`now`) where time matters, so the rules stay testable and two
//! nodes never disagree because of whose clock read first.
//!
//! A shared implementation also answers for nodes that are gone: `purge_node` removes what a dead node had
//! registered (its sockets leave as if they had disconnected then, so their users go offline after the
//! grace unless they reconnected elsewhere), and `poll_interval` tells the timers how often to look for
//! deadlines that another node set (and may not be there to act on).

pub mod memory;
pub mod redis;
#[cfg(test)]
pub mod suite;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::domain::calls::{Call, CallError};
use crate::domain::presence::{
    Presence, PresenceEvent, PresenceUpdate, PrivacySettings, StatusBreakdown, UpdateOutcome, ViewedPresence,
};
use crate::domain::typing::{TypingEvent, TypingRoom, TypingUser, Typist};

// ---------------------------------------------------------------------------------------------
// Fan-out
// ---------------------------------------------------------------------------------------------

/// A set of sockets, within one account.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Target {
    /// Every socket in a room (by room name, e.g. `channel:general`).
    Room(String),
    /// Every socket of a user (their personal room).
    User(String),
}

/// Who receives an event: the union of `to`, minus every socket of `except_users`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Audience {
    pub account: String,
    pub to: Vec<Target>,
    pub except_users: Vec<String>,
}

impl Audience {
    pub fn room(account: &str, room: &str) -> Audience {
        Audience { account: account.to_string(), to: vec![Target::Room(room.to_string())], except_users: Vec::new() }
    }

    pub fn user(account: &str, user: &str) -> Audience {
        Audience { account: account.to_string(), to: vec![Target::User(user.to_string())], except_users: Vec::new() }
    }

    pub fn users<'a>(account: &str, users: impl IntoIterator<Item = &'a String>) -> Audience {
        Audience {
            account: account.to_string(),
            to: users.into_iter().map(|u| Target::User(u.clone())).collect(),
            except_users: Vec::new(),
        }
    }

    pub fn except_user(mut self, user: &str) -> Audience {
        self.except_users.push(user.to_string());
        self
    }
}

/// Delivery of events to sockets wherever they are connected, and the socket-level room operations that
/// must reach every node. The event type is the application's outbound vocabulary; the implementation
/// renders it for each socket's wire dialect, once per dialect, never once per socket.
///
/// Delivery is best effort (a socket that is gone misses it); what must not be lost is persisted before it
/// is announced, so a client recovers it with `sync:messages`.
#[async_trait]
pub trait Fanout<E: Send + Sync>: Send + Sync {
    /// Sends `event` to every socket of the audience.
    async fn emit(&self, to: Audience, event: E);
    /// Puts every socket of `who` into `room`.
    async fn join(&self, account: &str, who: Target, room: &str);
    /// Takes every socket of `who` out of `room`.
    async fn leave(&self, account: &str, who: Target, room: &str);
    /// Disconnects every socket of `who`.
    async fn disconnect(&self, account: &str, who: Target);
    /// How many sockets the audience reaches now.
    async fn reach(&self, to: &Audience) -> usize;
}

// ---------------------------------------------------------------------------------------------
// Roster: who is where
// ---------------------------------------------------------------------------------------------

/// A connected socket as the roster knows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SocketEntry {
    pub sid: String,
    pub account: String,
    /// None for an anonymous socket.
    pub user: Option<String>,
    /// The node that holds the socket.
    pub node: String,
    /// The user's display name and avatar (from the token), for announcements made after the socket is gone.
    pub name: Option<String>,
    pub avatar: Option<String>,
}

/// What entering a room did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Entered {
    /// The socket entered, and its user is newly present in the room (announce `user:joined`).
    Arrived,
    /// The socket entered; its user was already present (another device, or back within the grace).
    Present,
    /// The socket was in the room already.
    Already,
    /// The socket is not connected (it closed meanwhile): nothing was recorded.
    Closed,
}

impl Entered {
    /// The socket is in the room now because of this call.
    pub fn entered(self) -> bool {
        matches!(self, Entered::Arrived | Entered::Present)
    }
}

/// What leaving a room did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Left {
    /// The socket was not in the room.
    NotIn,
    /// The socket left; its user is still present through another socket.
    StillPresent,
    /// The socket left and its user left the room with it (announce `user:left`).
    UserLeft,
}

/// A user whose last socket closed in a room, and whose offline grace ran out without a return.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Departure {
    pub account: String,
    pub room: String,
    pub user: String,
    /// The display name and avatar of the user's last socket there.
    pub name: Option<String>,
    pub avatar: Option<String>,
}

/// Which sockets are connected, which rooms each is in, and so which users are present where. Entering and
/// leaving are per socket; presence in a room is per user (first socket in, last socket out), and a user
/// whose last socket disconnected stays present for the offline grace, so a quick reconnect announces
/// nothing.
#[async_trait]
pub trait Roster: Send + Sync {
    /// A socket connected (before it enters any room).
    async fn connect(&self, socket: SocketEntry);
    /// A socket closed: it leaves every room (its user stays present there for the grace). Returns the rooms
    /// it was in, or None when it was not connected (already closed).
    async fn disconnect(&self, sid: &str, now: DateTime<Utc>) -> Option<Vec<String>>;
    /// The socket enters a room; `muted`: its user may read but not write or type there.
    async fn enter(&self, sid: &str, room: &str, muted: bool) -> Entered;
    /// The socket enters several rooms (room, muted) at once, as `enter` would one after the other (a socket's
    /// admission: one exchange with a shared backend instead of one per room).
    async fn enter_all(&self, sid: &str, rooms: &[(String, bool)]) -> Vec<Entered> {
        let mut out = Vec::with_capacity(rooms.len());
        for (room, muted) in rooms {
            out.push(self.enter(sid, room, *muted).await);
        }
        out
    }
    /// The socket leaves a room.
    async fn exit(&self, sid: &str, room: &str) -> Left;
    /// Users whose offline grace ran out in a room by `now` (announce `user:left`), removed from the roster.
    async fn departures(&self, now: DateTime<Utc>) -> Vec<Departure>;
    /// When the next grace runs out.
    async fn next_departure(&self) -> Option<DateTime<Utc>>;
    /// Sets the mute flag of every socket of a user in a room.
    async fn set_muted(&self, account: &str, user: &str, room: &str, muted: bool);
    /// The rooms a socket is in, and among them those where it is muted. None when it is not connected.
    async fn rooms_of(&self, sid: &str) -> Option<SocketRooms>;
    /// The sockets of a user.
    async fn sockets_of(&self, account: &str, user: &str) -> Vec<String>;
    /// Users present in a room (by at least one socket).
    async fn users_in(&self, account: &str, room: &str) -> Vec<String>;
    /// How many users are present in a room.
    async fn present(&self, account: &str, room: &str) -> usize;
    /// Connected sockets: of one account, or of all.
    async fn sockets(&self, account: Option<&str>) -> Vec<SocketEntry>;
    /// How many sockets are connected (all accounts).
    async fn connections(&self) -> usize;
    /// Users with at least one socket: of one account, or of all.
    async fn users_online(&self, account: Option<&str>) -> usize;
    /// A room was deleted: nobody is in it any more.
    async fn forget_room(&self, account: &str, room: &str);
    /// A node is gone (its heartbeat expired, or it restarted and repairs its own stale state): each of its
    /// sockets closes as by `disconnect` at `now`, so its users stay present for the grace and then leave,
    /// unless they are back through another socket. Returns the sockets removed (none the second time).
    async fn purge_node(&self, node: &str, now: DateTime<Utc>) -> Vec<SocketEntry>;
    /// How often the departures timer must look again although `next_departure` named nothing sooner: a
    /// shared roster's graces are also started by other nodes. None: only this node sets deadlines.
    fn poll_interval(&self) -> Option<std::time::Duration> {
        None
    }
}

/// The rooms a socket is in.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SocketRooms {
    pub rooms: Vec<String>,
    pub muted: Vec<String>,
}

impl SocketRooms {
    pub fn contains(&self, room: &str) -> bool {
        self.rooms.iter().any(|r| r == room)
    }

    pub fn is_muted(&self, room: &str) -> bool {
        self.muted.iter().any(|r| r == room)
    }
}

// ---------------------------------------------------------------------------------------------
// Presence
// ---------------------------------------------------------------------------------------------

/// Presence state shared by the nodes: each user's aggregate over every device (socket or HTTP client),
/// who subscribed to whom, in which rooms each user was last seen (the audience of their announcements),
/// and each user's privacy settings once loaded. The rules are those of [`crate::domain::presence`]; the
/// backend only decides where the state lives. Heartbeats touch only this state, never the database.
#[async_trait]
pub trait PresenceBackend: Send + Sync {
    /// A device of a user connected.
    async fn connect(&self, account: &str, user: &str, device: &str, now: DateTime<Utc>);
    /// A device of a user went away (the offline grace starts when it was the last).
    async fn disconnect(&self, account: &str, user: &str, device: &str, now: DateTime<Utc>);
    /// A status change from a device; `Changed` when the aggregate changes (published after coalescing).
    async fn update(
        &self,
        account: &str,
        user: &str,
        device: &str,
        update: PresenceUpdate,
        now: DateTime<Utc>,
    ) -> UpdateOutcome;
    /// Activity of a device: it is not idle.
    async fn touch(&self, account: &str, user: &str, device: &str, now: DateTime<Utc>) -> UpdateOutcome;
    /// Stored facts of a user not tracked yet (last seen, custom status).
    async fn restore(
        &self,
        account: &str,
        user: &str,
        last_seen: Option<DateTime<Utc>>,
        custom: Option<crate::domain::presence::CustomStatus>,
        now: DateTime<Utc>,
    );
    /// The user's presence as last published (what subscribers were told), if tracked.
    async fn published(&self, account: &str, user: &str) -> Option<Presence>;
    /// The user's live presence, changes still inside the coalescing window included, if tracked.
    async fn current(&self, account: &str, user: &str) -> Option<Presence>;
    /// An answer about `target` (`presence:get`, `presence:subscribe`, HTTP): the live presence, as `view`
    /// shows it, or None when the user is not tracked. Inside a coalescing window the view is remembered as
    /// what `viewer` was told, atomically with the read, and handed out once with the window's close
    /// (`Changed` or `Settled` of `due`; see `domain::presence::UserState::answer`).
    async fn answer(
        &self,
        account: &str,
        target: &str,
        viewer: Option<&str>,
        view: &(dyn for<'p> Fn(&'p Presence) -> ViewedPresence + Send + Sync),
    ) -> Option<ViewedPresence>;
    /// Whether a device of the user is connected.
    async fn is_connected(&self, account: &str, user: &str) -> bool;
    /// Changes and session ends due by `now` (coalesced publications, idles, custom status expiry, graces).
    async fn due(&self, now: DateTime<Utc>) -> Vec<PresenceEvent>;
    /// When `due` next has work.
    async fn next_deadline(&self) -> Option<DateTime<Utc>>;
    /// Shutdown: the sessions whose offline grace this node started and will not see run out, as
    /// `SessionEnded` (their last seen is stored now). On one node the graces end here. A shared backend
    /// leaves them running for the nodes that remain, which end them as usual (publishing offline) unless the
    /// user reconnected to one of them meanwhile: a rolling restart does not flash its users offline.
    async fn end_all_graces(&self) -> Vec<PresenceEvent>;
    /// Users per published status.
    async fn breakdown(&self, account: &str) -> StatusBreakdown;

    /// A socket of `viewer` subscribed to `targets`.
    async fn subscribe(&self, account: &str, viewer: &str, sid: &str, targets: &[String]);
    /// A socket of `viewer` unsubscribed from `targets`.
    async fn unsubscribe(&self, account: &str, viewer: &str, sid: &str, targets: &[String]);
    /// A socket closed: its subscriptions end.
    async fn drop_subscriptions(&self, account: &str, viewer: &str, sid: &str);
    /// Users subscribed to `target` (by at least one socket).
    async fn subscribers(&self, account: &str, target: &str) -> Vec<String>;

    /// The user is in `room` (their announcements reach its members).
    async fn joined_room(&self, account: &str, user: &str, room: &str);
    /// The user is in each of `rooms` (a socket's admission, in one exchange with a shared backend).
    async fn joined_rooms(&self, account: &str, user: &str, rooms: &[String]) {
        for room in rooms {
            self.joined_room(account, user, room).await;
        }
    }
    /// The user left `room`.
    async fn left_room(&self, account: &str, user: &str, room: &str);
    /// Rooms the user was last seen in.
    async fn rooms_of(&self, account: &str, user: &str) -> Vec<String>;

    /// The user's privacy settings, if loaded.
    async fn settings(&self, account: &str, user: &str) -> Option<PrivacySettings>;
    /// Loads or replaces the user's privacy settings.
    async fn set_settings(&self, account: &str, user: &str, settings: PrivacySettings);
    /// The last seen of a session that ended here, before the database has it.
    async fn remembered_last_seen(&self, account: &str, user: &str) -> Option<DateTime<Utc>>;
    async fn remember_last_seen(&self, account: &str, user: &str, at: DateTime<Utc>);
    /// Forgets what is kept of users with nothing connected, subscribed or pending (the database has it).
    async fn sweep(&self);

    /// A node is gone: each device it had connected goes as by `disconnect` at `now` (the user's grace starts
    /// when that was their last device anywhere), and its sockets' subscriptions end. Returns how many devices
    /// went.
    async fn purge_node(&self, node: &str, now: DateTime<Utc>) -> usize;
    /// How often the timer must call `due` although `next_deadline` named nothing sooner (see
    /// [`Roster::poll_interval`]).
    fn poll_interval(&self) -> Option<std::time::Duration> {
        None
    }
}

// ---------------------------------------------------------------------------------------------
// Typing
// ---------------------------------------------------------------------------------------------

/// Typing state: one deduplicated, expiring list per room (see [`crate::domain::typing`]). Memory only —
/// never the database. `flush` hands out each due event once, whichever node asks.
#[async_trait]
pub trait TypingBackend: Send + Sync {
    async fn start(&self, room: &TypingRoom, typist: &Typist, recipient: Option<&str>, now: DateTime<Utc>);
    async fn stop(&self, room: &TypingRoom, user: &str, sid: &str, recipient: Option<&str>, now: DateTime<Utc>)
    -> bool;
    /// A socket closed: it stops typing everywhere.
    async fn remove_socket(&self, account: &str, user: &str, sid: &str, now: DateTime<Utc>);
    /// Events due by `now` (coalescing windows ended, expiries).
    async fn flush(&self, now: DateTime<Utc>) -> Vec<TypingEvent>;
    async fn next_deadline(&self) -> Option<DateTime<Utc>>;
    /// The room's current list.
    async fn typing_users(&self, room: &TypingRoom, now: DateTime<Utc>) -> Vec<TypingUser>;
    /// A node is gone: each of its sockets stops typing as by `remove_socket` at `now` (the change is pushed
    /// by the next `flush`). Returns how many sockets stopped.
    async fn purge_node(&self, node: &str, now: DateTime<Utc>) -> usize;
    /// How often the timer must call `flush` although `next_deadline` named nothing sooner (see
    /// [`Roster::poll_interval`]).
    fn poll_interval(&self) -> Option<std::time::Duration> {
        None
    }
}

// ---------------------------------------------------------------------------------------------
// Rate limits
// ---------------------------------------------------------------------------------------------

/// What a budget is kept for.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Budget {
    /// Inbound events of a user (or of one anonymous socket), sockets and HTTP routes together.
    Events { account: String, subject: String },
    /// New connections from one address.
    Connects(std::net::IpAddr),
    /// Wrong API keys presented from one address ([`crate::domain::ratelimit::KEY_GUESSES`]); only failures
    /// spend it, so the question before a request is [`RateLimiter::exhausted`].
    KeyGuesses(std::net::IpAddr),
}

/// Token buckets. Synchronous on purpose: it is asked on every inbound event before anything else, so a
/// shared implementation keeps a local view and reconciles in the background (see `redis::ratelimit` for
/// how far a budget can be exceeded across nodes, and for how long).
pub trait RateLimiter: Send + Sync {
    /// Takes one point of the budget; false when it is spent.
    fn allow(&self, budget: &Budget, now: std::time::Instant) -> bool;
    /// How long until the budget has a point again (None: it has one now), without taking one.
    fn exhausted(&self, budget: &Budget, now: std::time::Instant) -> Option<std::time::Duration>;
    /// Forgets budgets that have refilled completely (idle users cost nothing).
    fn sweep(&self, now: std::time::Instant);
}

// ---------------------------------------------------------------------------------------------
// Wire dialects present
// ---------------------------------------------------------------------------------------------

/// How many sockets of each wire dialect are connected (a dialect is a small index, `< DIALECT_SLOTS`,
/// given by the edge). The fan-out renders a room event once for each dialect present and skips the others,
/// so with every socket on one dialect an event costs one rendering and one broadcast. Asked on every
/// broadcast, so synchronous: an implementation shared by several nodes keeps a local view of the union of
/// every node's counts (a dialect present anywhere must be present everywhere, or its sockets on other
/// nodes miss room events).
pub trait Census: Send + Sync {
    /// A socket of the dialect connected.
    fn arrived(&self, dialect: usize);
    /// A socket of the dialect is gone.
    fn left(&self, dialect: usize);
    /// Whether a socket of the dialect is connected.
    fn present(&self, dialect: usize) -> bool;
}

/// How many dialects a [`Census`] counts.
pub const DIALECT_SLOTS: usize = 8;

// ---------------------------------------------------------------------------------------------
// Calls
// ---------------------------------------------------------------------------------------------

/// A change to one call, applied atomically to its current state (None: no such call). Ok(None) removes the
/// call.
pub type CallChange<'a> = dyn Fn(Option<&Call>) -> Result<Option<Call>, CallError> + Send + Sync + 'a;

/// The calls going on (docs/protocol.md §13.5): who is in each, who is invited, when the ringing gives up.
/// Session descriptions are never stored here (they are relayed, never kept).
#[async_trait]
pub trait CallRegistry: Send + Sync {
    /// The call, if it is going on.
    async fn get(&self, account: &str, call_id: &str) -> Option<Call>;
    /// Applies `change` to the call's current state, atomically; returns (before, after).
    async fn update(
        &self,
        account: &str,
        call_id: &str,
        change: &CallChange<'_>,
    ) -> Result<(Option<Call>, Option<Call>), CallError>;
    /// The calls a user takes part in or is invited to.
    async fn calls_of(&self, account: &str, user: &str) -> Vec<String>;
    /// Calls whose ringing ran out by `now` with nobody answering: removed, with their account.
    async fn expired(&self, now: DateTime<Utc>) -> Vec<(String, Call)>;
    /// When the next ringing runs out.
    async fn next_deadline(&self) -> Option<DateTime<Utc>>;
    /// How often the timer must call `expired` although `next_deadline` named nothing sooner (see
    /// [`Roster::poll_interval`]).
    fn poll_interval(&self) -> Option<std::time::Duration> {
        None
    }
}

// ---------------------------------------------------------------------------------------------
// Dm claims
// ---------------------------------------------------------------------------------------------

/// How long a claim on a dm waits for its counterpart.
pub const DM_CLAIM_TTL: chrono::Duration = chrono::Duration::minutes(10);

/// First use of a dm the server does not know (docs/protocol.md §13.7): a participant claims that a dm id is
/// theirs and another user's. One claim delivers nothing; the other user's matching claim confirms the pair.
#[async_trait]
pub trait DmClaims: Send + Sync {
    /// `from` claims `dm` for `from` and `to`. True when `to` claimed it for `from` within
    /// [`DM_CLAIM_TTL`]: the pair is confirmed (and the claims are used up).
    async fn claim(&self, account: &str, dm: &str, from: &str, to: &str, now: DateTime<Utc>) -> bool;
}
