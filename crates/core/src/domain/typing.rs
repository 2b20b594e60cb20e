//! Typing indicators (docs/protocol.md §9): pure state machine, no sockets, no clock.
//!
//! The application feeds `typing:start` / `typing:stop` / disconnects into a [`TypingState`]
//! (through a `cluster::TypingBackend`) and calls [`TypingState::flush`] with the current time; it answers
//! with the `typing:event` broadcasts that are due. Every method takes `now` explicitly so
//! that tests are deterministic and a clustered (Redis) implementation can share the same
//! semantics.
//!
//! Rules implemented here:
//! - one entry per user per room, whatever the number of devices typing (deduplicated list);
//! - each `typing:start` refreshes the user's `startedAt` to `now` and is re-broadcast;
//! - entries expire `timeout` after their last start, and the expiry is pushed;
//! - at most one event per room per `coalesce` window: the first change after a quiet
//!   window is emitted at once (leading edge), later ones are merged into one event at the
//!   end of the window (trailing edge) carrying the full current list;
//! - routing by room type: channel → `channel:<room>`; thread → that plus `thread:<id>`;
//!   dm → `dm:<room>` plus `user:<recipient>`; the dm recipient given on `typing:start` is
//!   remembered for the stop and the expiry push (nchat's dm stop carries no recipient);
//! - all sockets of a typer are excluded from the room broadcast; each typer gets a
//!   personal copy of the list without themselves when somebody else's entry changed, so
//!   two people typing at once still see each other.
//!
//! Room names in [`TypingEvent::targets`] are NOT namespaced by account: the glue adds its
//! own per-account prefix before talking to Socket.IO.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fmt;

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

/// Longest id or room name accepted (bytes). Bigger inputs get `PAYLOAD_TOO_LARGE`.
pub const MAX_ID_LEN: usize = 256;

/// Default `REALTIME_TYPING_TIMEOUT`.
pub const DEFAULT_TIMEOUT_MS: i64 = 5_000;
/// Default `REALTIME_TYPING_COALESCE`.
pub const DEFAULT_COALESCE_MS: i64 = 250;

// ---------------------------------------------------------------------------------------------
// Errors and configuration
// ---------------------------------------------------------------------------------------------

/// Why a typing request was refused. Maps onto the docs/protocol.md §2 error codes via [`TypingError::code`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TypingError {
    /// Malformed or missing field (`VALIDATION_ERROR`).
    Validation(String),
    /// A field longer than [`MAX_ID_LEN`] (`PAYLOAD_TOO_LARGE`).
    TooLarge(String),
}

impl TypingError {
    /// The docs/protocol.md §2 error code for an ack or an `error` event.
    pub fn code(&self) -> crate::error::ErrorCode {
        match self {
            TypingError::Validation(_) => crate::error::ErrorCode::ValidationError,
            TypingError::TooLarge(_) => crate::error::ErrorCode::PayloadTooLarge,
        }
    }
}

impl From<TypingError> for crate::error::AppError {
    fn from(e: TypingError) -> Self {
        crate::error::AppError::new(e.code(), e.to_string())
    }
}

impl fmt::Display for TypingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TypingError::Validation(m) => write!(f, "{m}"),
            TypingError::TooLarge(field) => write!(f, "{field} is longer than {MAX_ID_LEN} bytes"),
        }
    }
}

impl std::error::Error for TypingError {}

/// Timing knobs; both come from the environment (milliseconds).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TypingConfig {
    /// `REALTIME_TYPING_TIMEOUT`: an entry disappears this long after its last `typing:start`.
    pub timeout: Duration,
    /// `REALTIME_TYPING_COALESCE`: minimum spacing of two `typing:event`s for one room.
    pub coalesce: Duration,
}

/// Longest accepted duration setting (a year): keeps `now + d` far from chrono's range limit.
const MAX_SETTING_MS: i64 = 365 * 24 * 3_600_000;

fn clamp_ms(ms: i64) -> Duration {
    Duration::milliseconds(ms.clamp(0, MAX_SETTING_MS))
}

fn from_std(d: std::time::Duration) -> Duration {
    clamp_ms(i64::try_from(d.as_millis()).unwrap_or(MAX_SETTING_MS))
}

impl TypingConfig {
    /// Build from the millisecond settings (clamped to 0..=1 year).
    pub fn from_millis(timeout_ms: i64, coalesce_ms: i64) -> Self {
        TypingConfig { timeout: clamp_ms(timeout_ms), coalesce: clamp_ms(coalesce_ms) }
    }

    /// Build from `std::time::Duration` settings (`REALTIME_TYPING_TIMEOUT`, `REALTIME_TYPING_COALESCE`).
    pub fn from_std(timeout: std::time::Duration, coalesce: std::time::Duration) -> Self {
        TypingConfig { timeout: from_std(timeout), coalesce: from_std(coalesce) }
    }
}

impl Default for TypingConfig {
    fn default() -> Self {
        Self::from_millis(DEFAULT_TIMEOUT_MS, DEFAULT_COALESCE_MS)
    }
}

// ---------------------------------------------------------------------------------------------
// Rooms and requests
// ---------------------------------------------------------------------------------------------

/// `roomType` of docs/protocol.md §9. Serialized in lowercase, as received.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RoomType {
    Channel,
    Thread,
    Dm,
}

impl RoomType {
    /// Parse the wire word (`channel|thread|dm`, case-sensitive like the clients send it).
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "channel" => Some(RoomType::Channel),
            "thread" => Some(RoomType::Thread),
            "dm" => Some(RoomType::Dm),
            _ => None,
        }
    }

    /// The wire word.
    pub fn as_str(self) -> &'static str {
        match self {
            RoomType::Channel => "channel",
            RoomType::Thread => "thread",
            RoomType::Dm => "dm",
        }
    }
}

/// One typing list: `(account, route key)`. A thread's list is separate from its channel's.
///
/// `room_name` is the BARE id (nchat sends bare ids); a prefixed name such as
/// `channel:abc` or `dm:alice:bob` is normalised to the bare id so both spellings share
/// one list.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TypingRoom {
    pub account: String,
    pub room_type: RoomType,
    pub room_name: String,
    /// Only set for [`RoomType::Thread`].
    pub thread_id: Option<String>,
    /// The channel is a bare-named room (`general`) rather than `channel:<id>`: a list of its own, sent to
    /// that room. Set by the glue when that is the room the typer is in.
    pub bare: bool,
}

fn check_id(field: &str, v: &str) -> Result<(), TypingError> {
    if v.trim().is_empty() {
        return Err(TypingError::Validation(format!("{field} must be a non-empty string")));
    }
    if v.len() > MAX_ID_LEN {
        return Err(TypingError::TooLarge(field.to_string()));
    }
    Ok(())
}

impl TypingRoom {
    /// Validate and normalise. A thread needs a `threadId`; for channel and dm rooms a
    /// `threadId` is ignored (the room type is authoritative).
    pub fn new(
        account: &str,
        room_type: RoomType,
        room_name: &str,
        thread_id: Option<&str>,
    ) -> Result<Self, TypingError> {
        check_id("roomName", room_name)?;
        let prefix = match room_type {
            RoomType::Channel | RoomType::Thread => "channel:",
            RoomType::Dm => "dm:",
        };
        let bare = room_name.strip_prefix(prefix).unwrap_or(room_name);
        check_id("roomName", bare)?;
        let thread_id = match room_type {
            RoomType::Thread => {
                let t = thread_id
                    .ok_or_else(|| TypingError::Validation("threadId is required for roomType thread".into()))?;
                check_id("threadId", t)?;
                Some(t.strip_prefix("thread:").unwrap_or(t).to_string())
            }
            _ => None,
        };
        Ok(TypingRoom { account: account.to_string(), room_type, room_name: bare.to_string(), thread_id, bare: false })
    }

    /// Stable textual key of the list within its account (useful for logs and Redis keys):
    /// `channel:<room>`, `channel:<room>/thread:<id>` or `dm:<room>`.
    pub fn route_key(&self) -> String {
        match (&self.room_type, &self.thread_id) {
            (RoomType::Dm, _) => format!("dm:{}", self.room_name),
            (_, Some(t)) => format!("{}/thread:{}", self.socket_room(), t),
            (_, None) => self.socket_room(),
        }
    }

    /// The Socket.IO room the user must be allowed to write to (for the glue's permission check).
    pub fn socket_room(&self) -> String {
        match self.room_type {
            RoomType::Dm => format!("dm:{}", self.room_name),
            _ if self.bare => self.room_name.clone(),
            _ => format!("channel:{}", self.room_name),
        }
    }

    /// Routing targets of docs/protocol.md §9, for the given dm recipients (ignored for other types).
    pub fn targets<'a>(&self, dm_recipients: impl IntoIterator<Item = &'a str>) -> Vec<String> {
        let mut out = vec![self.socket_room()];
        match self.room_type {
            RoomType::Channel => {}
            RoomType::Thread => {
                if let Some(t) = &self.thread_id {
                    out.push(format!("thread:{t}"));
                }
            }
            RoomType::Dm => {
                for r in dm_recipients {
                    let target = format!("user:{r}");
                    if !out.contains(&target) {
                        out.push(target);
                    }
                }
            }
        }
        out
    }
}

/// A parsed inbound typing event, whichever of the three accepted shapes it came in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TypingRequest {
    pub room_type: RoomType,
    /// Bare room id (`roomName` or `channelId`).
    pub room_name: String,
    pub thread_id: Option<String>,
    pub recipient_id: Option<String>,
    /// `true` for a start, `false` for a stop.
    pub is_typing: bool,
}

impl TypingRequest {
    /// A request from the fields of any of the accepted shapes (`{roomName, roomType?, threadId?,
    /// recipientId?}`, `{channelId, threadId?}`, `typing {channelId, isTyping}`). Without a room type, a
    /// `dm:` prefix means dm, a `threadId` means thread, anything else channel.
    pub fn new(
        room_name: String,
        room_type: Option<RoomType>,
        thread_id: Option<String>,
        recipient_id: Option<String>,
        is_typing: bool,
    ) -> Result<Self, TypingError> {
        let fields =
            [("roomName", Some(&room_name)), ("threadId", thread_id.as_ref()), ("recipientId", recipient_id.as_ref())];
        for (field, v) in fields {
            if v.is_some_and(|v| v.len() > MAX_ID_LEN) {
                return Err(TypingError::TooLarge(field.to_string()));
            }
        }
        check_id("roomName", &room_name)?;
        let room_type = match room_type {
            Some(t) => t,
            None if room_name.starts_with("dm:") => RoomType::Dm,
            None if thread_id.is_some() => RoomType::Thread,
            None => RoomType::Channel,
        };
        Ok(TypingRequest { room_type, room_name, thread_id, recipient_id, is_typing })
    }

    /// The list this request addresses.
    pub fn room(&self, account: &str) -> Result<TypingRoom, TypingError> {
        TypingRoom::new(account, self.room_type, &self.room_name, self.thread_id.as_deref())
    }
}

/// Who is typing, from which socket. Name and avatar come from the token claims (docs/protocol.md §1).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Typist {
    pub user_id: String,
    pub socket_id: String,
    pub user_name: Option<String>,
    pub user_avatar: Option<String>,
}

// ---------------------------------------------------------------------------------------------
// Outgoing payloads
// ---------------------------------------------------------------------------------------------

/// One entry of `typing:event.users`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TypingUser {
    pub user_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_avatar: Option<String>,
    #[serde(serialize_with = "crate::domain::time::ser::iso")]
    pub started_at: DateTime<Utc>,
}

/// `typing:event {roomName, roomType, threadId?, users}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TypingEventPayload {
    pub room_name: String,
    pub room_type: RoomType,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub thread_id: Option<String>,
    pub users: Vec<TypingUser>,
}

/// What changed since the previous event of a list: the users who started (or refreshed their start) and
/// the users who stopped (or expired). The list carries the state; the delta lets a dialect that announces
/// single typers (`typing:start` / `typing:stop`) say who changed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TypingDelta {
    pub started: Vec<TypingUser>,
    pub stopped: Vec<String>,
}

impl TypingDelta {
    /// The delta without one user's own changes (what that user's personal copy tells them).
    pub fn without(&self, user_id: &str) -> TypingDelta {
        TypingDelta {
            started: self.started.iter().filter(|u| u.user_id != user_id).cloned().collect(),
            stopped: self.stopped.iter().filter(|u| *u != user_id).cloned().collect(),
        }
    }
}

/// A copy of the list for one typer, without themselves (see [`TypingEvent`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PersonalTypingEvent {
    pub user_id: String,
    pub payload: TypingEventPayload,
    /// The changes of the other users.
    pub delta: TypingDelta,
}

/// One due broadcast. Glue:
/// ```text
/// io.to(targets).except(except_users.map(|u| "user:"+u)).emit("typing:event", payload)
/// for p in personal { io.to("user:"+p.user_id).emit("typing:event", p.payload) }
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TypingEvent {
    pub room: TypingRoom,
    /// Socket.IO rooms to emit to (without the account namespace).
    pub targets: Vec<String>,
    /// Users currently typing here: every socket of theirs is excluded from the broadcast.
    pub except_users: Vec<String>,
    /// The full, deduplicated list.
    pub payload: TypingEventPayload,
    /// Who started and who stopped since the previous event of this list.
    pub delta: TypingDelta,
    /// Per-typer copies (list minus that typer), only for typers who have something new to see.
    pub personal: Vec<PersonalTypingEvent>,
}

// ---------------------------------------------------------------------------------------------
// In-memory state machine
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Entry {
    user_id: String,
    user_name: Option<String>,
    user_avatar: Option<String>,
    /// Latest start across the user's sockets.
    started_at: DateTime<Utc>,
    /// socket id → that socket's last start.
    sockets: HashMap<String, DateTime<Utc>>,
    /// dm recipient remembered from the start.
    recipient_id: Option<String>,
}

impl Entry {
    fn view(&self) -> TypingUser {
        TypingUser {
            user_id: self.user_id.clone(),
            user_name: self.user_name.clone(),
            user_avatar: self.user_avatar.clone(),
            started_at: self.started_at,
        }
    }
}

/// One room's typing list and what is pending for it: the rules of this module act on it one room at a
/// time. [`TypingState`] keeps one per room in memory; a shared backend keeps each as a record it replaces
/// atomically (hence the serde derives; the record is never sent to clients).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomState {
    entries: Vec<Entry>,
    /// Something changed since the last emission.
    dirty: bool,
    /// When the pending change may be emitted (only meaningful when `dirty`).
    due: Option<DateTime<Utc>>,
    last_emit: Option<DateTime<Utc>>,
    /// What the last emission carried, to drop no-op events (start+stop inside one window).
    last_emitted: Vec<(String, DateTime<Utc>)>,
    /// Users whose entry changed since the last emission (added, refreshed, removed).
    changed: HashSet<String>,
    /// dm recipients of entries removed since the last emission (for the routing of the stop).
    removed_recipients: Vec<String>,
}

impl RoomState {
    fn mark_dirty(&mut self, user_id: &str, now: DateTime<Utc>, cfg: &TypingConfig) {
        self.changed.insert(user_id.to_string());
        if !self.dirty {
            self.dirty = true;
            let earliest = self.last_emit.map(|t| t + cfg.coalesce).unwrap_or(now);
            self.due = Some(earliest.max(now));
        }
    }

    /// When [`RoomState::flush`] next has work for this room, if ever.
    pub fn next_deadline(&self, cfg: &TypingConfig) -> Option<DateTime<Utc>> {
        let expiry = self.entries.iter().map(|e| e.started_at + cfg.timeout).min();
        let emit = if self.dirty { self.due } else { None };
        let cleanup =
            if self.entries.is_empty() && !self.dirty { self.last_emit.map(|t| t + cfg.coalesce) } else { None };
        [expiry, emit, cleanup].into_iter().flatten().min()
    }

    /// Nothing left to remember at `now`: no entry, nothing pending, the coalescing window over.
    pub fn removable(&self, now: DateTime<Utc>, cfg: &TypingConfig) -> bool {
        self.entries.is_empty() && !self.dirty && self.last_emit.is_none_or(|t| now >= t + cfg.coalesce)
    }

    /// Users with an entry (typing, or expired and not yet flushed).
    pub fn users(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(|e| e.user_id.as_str())
    }

    /// Sockets with a start in the list: `(user, socket)`.
    pub fn sockets(&self) -> impl Iterator<Item = (&str, &str)> {
        self.entries.iter().flat_map(|e| e.sockets.keys().map(|s| (e.user_id.as_str(), s.as_str())))
    }

    /// Remove entry `idx`, remembering its dm recipient for the routing of the next event.
    fn remove_entry(&mut self, idx: usize, now: DateTime<Utc>, cfg: &TypingConfig, recipient: Option<&str>) {
        let e = self.entries.remove(idx);
        if let Some(r) = recipient.map(str::to_string).or(e.recipient_id)
            && !self.removed_recipients.contains(&r)
        {
            self.removed_recipients.push(r);
        }
        self.mark_dirty(&e.user_id, now, cfg);
    }

    /// See [`TypingState::start`].
    pub fn start(&mut self, typist: &Typist, recipient_id: Option<&str>, now: DateTime<Utc>, cfg: &TypingConfig) {
        match self.entries.iter_mut().find(|e| e.user_id == typist.user_id) {
            Some(e) => {
                e.started_at = now;
                e.sockets.insert(typist.socket_id.clone(), now);
                if typist.user_name.is_some() {
                    e.user_name = typist.user_name.clone();
                }
                if typist.user_avatar.is_some() {
                    e.user_avatar = typist.user_avatar.clone();
                }
                if let Some(r) = recipient_id {
                    e.recipient_id = Some(r.to_string());
                }
            }
            None => self.entries.push(Entry {
                user_id: typist.user_id.clone(),
                user_name: typist.user_name.clone(),
                user_avatar: typist.user_avatar.clone(),
                started_at: now,
                sockets: HashMap::from([(typist.socket_id.clone(), now)]),
                recipient_id: recipient_id.map(str::to_string),
            }),
        }
        self.mark_dirty(&typist.user_id, now, cfg);
    }

    /// A socket stops typing (`user_level`: an explicit stop, which stops the user even from a socket that
    /// was not typing) or closed (only its own start goes). True when the user's entry went.
    pub fn withdraw(
        &mut self,
        user_id: &str,
        socket_id: &str,
        recipient_id: Option<&str>,
        now: DateTime<Utc>,
        cfg: &TypingConfig,
        user_level: bool,
    ) -> bool {
        let Some(idx) = self.entries.iter().position(|e| e.user_id == user_id) else {
            return false;
        };
        let entry = &mut self.entries[idx];
        let remove = if entry.sockets.remove(socket_id).is_some() {
            entry.sockets.retain(|_, t| *t + cfg.timeout > now);
            match entry.sockets.values().max() {
                None => true,
                Some(latest) => {
                    // Another device is still typing: the user stays, with that device's start.
                    entry.started_at = *latest;
                    false
                }
            }
        } else {
            user_level
        };
        if !remove {
            return false;
        }
        self.remove_entry(idx, now, cfg, recipient_id);
        true
    }

    /// Everything due for this room at `now`: expiries, and the event whose coalescing window ended.
    /// Returns the event and the users whose entry expired. Harmless before the room's deadline.
    pub fn flush(
        &mut self,
        room: &TypingRoom,
        now: DateTime<Utc>,
        cfg: &TypingConfig,
    ) -> (Option<TypingEvent>, Vec<String>) {
        let mut expired = Vec::new();
        let mut i = 0;
        while i < self.entries.len() {
            if self.entries[i].started_at + cfg.timeout <= now {
                expired.push(self.entries[i].user_id.clone());
                self.remove_entry(i, now, cfg, None);
            } else {
                i += 1;
            }
        }
        let event = if self.dirty && self.due.is_some_and(|d| d <= now) { self.emit(room, now) } else { None };
        (event, expired)
    }

    fn emit(&mut self, room: &TypingRoom, now: DateTime<Utc>) -> Option<TypingEvent> {
        self.dirty = false;
        self.due = None;
        let changed = std::mem::take(&mut self.changed);
        let removed_recipients = std::mem::take(&mut self.removed_recipients);
        let snapshot: Vec<(String, DateTime<Utc>)> =
            self.entries.iter().map(|e| (e.user_id.clone(), e.started_at)).collect();
        if snapshot == self.last_emitted {
            // Start and stop within one window, or a no-op: nothing to tell anyone.
            return None;
        }
        self.last_emitted = snapshot;
        self.last_emit = Some(now);

        let users: Vec<TypingUser> = self.entries.iter().map(Entry::view).collect();
        let mut recipients: Vec<&str> = Vec::new();
        for r in self
            .entries
            .iter()
            .filter_map(|e| e.recipient_id.as_deref())
            .chain(removed_recipients.iter().map(String::as_str))
        {
            if !recipients.contains(&r) {
                recipients.push(r);
            }
        }
        let payload_with = |users: Vec<TypingUser>| TypingEventPayload {
            room_name: room.room_name.clone(),
            room_type: room.room_type,
            thread_id: room.thread_id.clone(),
            users,
        };
        let mut stopped: Vec<String> =
            changed.iter().filter(|c| !users.iter().any(|u| u.user_id == **c)).cloned().collect();
        stopped.sort();
        let delta =
            TypingDelta { started: users.iter().filter(|u| changed.contains(&u.user_id)).cloned().collect(), stopped };
        let personal = users
            .iter()
            .filter(|u| changed.iter().any(|c| *c != u.user_id))
            .map(|u| PersonalTypingEvent {
                user_id: u.user_id.clone(),
                payload: payload_with(users.iter().filter(|o| o.user_id != u.user_id).cloned().collect()),
                delta: delta.without(&u.user_id),
            })
            .collect();
        Some(TypingEvent {
            room: room.clone(),
            targets: room.targets(recipients),
            except_users: users.iter().map(|u| u.user_id.clone()).collect(),
            payload: payload_with(users),
            delta,
            personal,
        })
    }

    /// The list at `now` (entries past their expiry left out even before the flush removes them).
    pub fn typing_users(&self, now: DateTime<Utc>, cfg: &TypingConfig) -> Vec<TypingUser> {
        self.entries.iter().filter(|e| e.started_at + cfg.timeout > now).map(Entry::view).collect()
    }
}

#[derive(Debug, Default)]
struct Tracked {
    state: RoomState,
    /// This room's entry in the deadline queue (exactly one while it has work).
    scheduled: Option<DateTime<Utc>>,
}

/// The state machine. Not synchronised: a `cluster::TypingBackend` keeps it (behind a mutex in memory).
#[derive(Debug, Default)]
pub struct TypingState {
    cfg: TypingConfig,
    rooms: HashMap<TypingRoom, Tracked>,
    /// (account, user) → rooms where the user has an entry (for disconnects).
    by_user: HashMap<(String, String), HashSet<TypingRoom>>,
    /// Deadline queue: one `(when, room)` per room with pending work, earliest first.
    queue: BTreeSet<(DateTime<Utc>, TypingRoom)>,
}

impl TypingState {
    pub fn new(cfg: TypingConfig) -> Self {
        TypingState { cfg, ..Default::default() }
    }

    pub fn config(&self) -> TypingConfig {
        self.cfg
    }

    fn index_add(&mut self, room: &TypingRoom, user_id: &str) {
        self.by_user.entry((room.account.clone(), user_id.to_string())).or_default().insert(room.clone());
    }

    fn index_remove(&mut self, room: &TypingRoom, user_id: &str) {
        let key = (room.account.clone(), user_id.to_string());
        if let Some(set) = self.by_user.get_mut(&key) {
            set.remove(room);
            if set.is_empty() {
                self.by_user.remove(&key);
            }
        }
    }

    /// Put the room in the queue at its next deadline (or take it out when it has none).
    fn reschedule(&mut self, room: &TypingRoom) {
        let Some(t) = self.rooms.get_mut(room) else {
            return;
        };
        let next = t.state.next_deadline(&self.cfg);
        if next == t.scheduled {
            return;
        }
        if let Some(old) = t.scheduled.take() {
            self.queue.remove(&(old, room.clone()));
        }
        if let Some(when) = next {
            t.scheduled = Some(when);
            self.queue.insert((when, room.clone()));
        }
    }

    pub fn start(&mut self, room: &TypingRoom, typist: &Typist, recipient_id: Option<&str>, now: DateTime<Utc>) {
        let cfg = self.cfg;
        self.rooms.entry(room.clone()).or_default().state.start(typist, recipient_id, now, &cfg);
        self.index_add(room, &typist.user_id);
        self.reschedule(room);
    }

    pub fn stop(
        &mut self,
        room: &TypingRoom,
        user_id: &str,
        socket_id: &str,
        recipient_id: Option<&str>,
        now: DateTime<Utc>,
    ) -> bool {
        self.withdraw(room, user_id, socket_id, recipient_id, now, true)
    }

    /// Shared by stop and disconnect. `user_level`: a socket that is not typing stops the user.
    fn withdraw(
        &mut self,
        room: &TypingRoom,
        user_id: &str,
        socket_id: &str,
        recipient_id: Option<&str>,
        now: DateTime<Utc>,
        user_level: bool,
    ) -> bool {
        let cfg = self.cfg;
        let Some(t) = self.rooms.get_mut(room) else {
            return false;
        };
        if !t.state.withdraw(user_id, socket_id, recipient_id, now, &cfg, user_level) {
            return false;
        }
        self.index_remove(room, user_id);
        self.reschedule(room);
        true
    }

    pub fn remove_socket(&mut self, account: &str, user_id: &str, socket_id: &str, now: DateTime<Utc>) {
        let key = (account.to_string(), user_id.to_string());
        let Some(rooms) = self.by_user.get(&key) else {
            return;
        };
        let mut rooms: Vec<TypingRoom> = rooms.iter().cloned().collect();
        rooms.sort();
        for room in rooms {
            self.withdraw(&room, user_id, socket_id, None, now, false);
        }
    }

    /// Every socket with a start in some list: `(account, user, socket)`.
    pub fn sockets(&self) -> Vec<(String, String, String)> {
        let mut out: Vec<(String, String, String)> = self
            .rooms
            .iter()
            .flat_map(|(room, t)| {
                t.state.sockets().map(move |(u, s)| (room.account.clone(), u.to_string(), s.to_string()))
            })
            .collect();
        out.sort();
        out.dedup();
        out
    }

    pub fn next_deadline(&self) -> Option<DateTime<Utc>> {
        self.queue.first().map(|(t, _)| *t)
    }

    pub fn flush(&mut self, now: DateTime<Utc>) -> Vec<TypingEvent> {
        let mut due = Vec::new();
        while self.queue.first().is_some_and(|(t, _)| *t <= now) {
            let (_, room) = self.queue.pop_first().expect("non-empty");
            if let Some(t) = self.rooms.get_mut(&room) {
                t.scheduled = None;
            }
            due.push(room);
        }
        let cfg = self.cfg;
        let mut events = Vec::new();
        for room in due {
            let Some(t) = self.rooms.get_mut(&room) else { continue };
            let (event, expired) = t.state.flush(&room, now, &cfg);
            let removable = t.state.removable(now, &cfg);
            events.extend(event);
            for user in expired {
                self.index_remove(&room, &user);
            }
            if removable {
                self.rooms.remove(&room);
            } else {
                self.reschedule(&room);
            }
        }
        events
    }

    pub fn typing_users(&self, room: &TypingRoom, now: DateTime<Utc>) -> Vec<TypingUser> {
        self.rooms.get(room).map(|t| t.state.typing_users(now, &self.cfg)).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(ms: i64) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(1_700_000_000_000 + ms).unwrap()
    }

    fn typist(user: &str, socket: &str) -> Typist {
        Typist {
            user_id: user.into(),
            socket_id: socket.into(),
            user_name: Some(format!("{user} name")),
            user_avatar: None,
        }
    }

    fn channel(name: &str) -> TypingRoom {
        TypingRoom::new("primary", RoomType::Channel, name, None).unwrap()
    }

    fn ids(users: &[TypingUser]) -> Vec<&str> {
        users.iter().map(|u| u.user_id.as_str()).collect()
    }

    fn store() -> TypingState {
        TypingState::new(TypingConfig::default())
    }

    fn json(v: &impl Serialize) -> String {
        serde_json::to_string(v).unwrap()
    }

    #[test]
    fn first_start_is_emitted_at_once_with_routing() {
        let mut s = store();
        let room = channel("general");
        s.start(&room, &typist("alice", "s1"), None, t(0));
        let evs = s.flush(t(0));
        assert_eq!(evs.len(), 1);
        let ev = &evs[0];
        assert_eq!(ev.targets, vec!["channel:general"]);
        assert_eq!(ev.except_users, vec!["alice"]);
        assert!(ev.personal.is_empty());
        assert_eq!(ids(&ev.payload.users), vec!["alice"]);
        assert_eq!(ev.payload.users[0].started_at, t(0));
    }

    #[test]
    fn payload_serializes_per_contract() {
        let mut s = store();
        let room = TypingRoom::new("primary", RoomType::Thread, "c1", Some("th1")).unwrap();
        s.start(&room, &typist("alice", "s1"), None, t(0));
        let ev = s.flush(t(0)).remove(0);
        assert_eq!(
            json(&ev.payload),
            r#"{"roomName":"c1","roomType":"thread","threadId":"th1","users":[{"userId":"alice","userName":"alice name","startedAt":"2023-11-14T22:13:20.000Z"}]}"#
        );
        assert_eq!(ev.targets, vec!["channel:c1", "thread:th1"]);
        let ch = channel("c1");
        s.start(&ch, &typist("bob", "s2"), None, t(10));
        let ev = s.flush(t(10)).remove(0);
        let v = json(&ev.payload);
        assert!(!v.contains("threadId"));
        assert!(v.contains(r#""roomType":"channel""#));
    }

    #[test]
    fn thread_list_is_separate_from_channel_list() {
        let mut s = store();
        let ch = channel("c1");
        let th = TypingRoom::new("primary", RoomType::Thread, "c1", Some("th1")).unwrap();
        s.start(&ch, &typist("alice", "s1"), None, t(0));
        s.start(&th, &typist("bob", "s2"), None, t(0));
        let evs = s.flush(t(0));
        assert_eq!(evs.len(), 2);
        for ev in evs {
            assert_eq!(ev.payload.users.len(), 1);
        }
        assert_eq!(ids(&s.typing_users(&ch, t(1))), vec!["alice"]);
        assert_eq!(ids(&s.typing_users(&th, t(1))), vec!["bob"]);
    }

    #[test]
    fn accounts_are_isolated() {
        let mut s = store();
        let a = TypingRoom::new("app1", RoomType::Channel, "general", None).unwrap();
        let b = TypingRoom::new("app2", RoomType::Channel, "general", None).unwrap();
        s.start(&a, &typist("alice", "s1"), None, t(0));
        assert!(s.typing_users(&b, t(1)).is_empty());
        assert_eq!(s.typing_users(&a, t(1)).len(), 1);
    }

    #[test]
    fn dedupe_one_entry_per_user_across_devices() {
        let mut s = store();
        let room = channel("general");
        s.start(&room, &typist("alice", "phone"), None, t(0));
        s.start(&room, &typist("alice", "laptop"), None, t(10));
        s.start(&room, &typist("alice", "laptop"), None, t(20));
        let evs = s.flush(t(20));
        assert_eq!(evs.len(), 1);
        assert_eq!(ids(&evs[0].payload.users), vec!["alice"]);
        // Stopping one device keeps the user typing (the other device still is)...
        assert!(!s.stop(&room, "alice", "laptop", None, t(100)));
        assert_eq!(ids(&s.typing_users(&room, t(100))), vec!["alice"]);
        // ...and stopping the last one removes the user.
        assert!(s.stop(&room, "alice", "phone", None, t(200)));
        assert!(s.typing_users(&room, t(200)).is_empty());
        // The stop is emitted at the end of the coalescing window opened by the event at 20.
        assert!(s.flush(t(200)).is_empty());
        assert_eq!(s.next_deadline(), Some(t(270)));
        let evs = s.flush(t(270));
        assert_eq!(evs.len(), 1);
        assert!(evs[0].payload.users.is_empty());
        assert_eq!(evs[0].except_users, Vec::<String>::new());
        assert!(json(&evs[0].payload).contains(r#""users":[]"#));
    }

    #[test]
    fn stop_from_a_socket_that_never_started_stops_the_user() {
        // nchat reconnected: the stop comes from a new socket id.
        let mut s = store();
        let room = channel("general");
        s.start(&room, &typist("alice", "old"), None, t(0));
        assert!(s.stop(&room, "alice", "new", None, t(50)));
        assert!(s.typing_users(&room, t(50)).is_empty());
        assert!(!s.stop(&room, "alice", "new", None, t(60)), "second stop is a no-op");
        assert!(!s.stop(&channel("other"), "alice", "new", None, t(60)));
    }

    #[test]
    fn start_refreshes_started_at_and_is_rebroadcast() {
        let mut s = store();
        let room = channel("general");
        s.start(&room, &typist("alice", "s1"), None, t(0));
        assert_eq!(s.flush(t(0)).len(), 1);
        s.start(&room, &typist("alice", "s1"), None, t(3000));
        let evs = s.flush(t(3000));
        assert_eq!(evs.len(), 1);
        assert_eq!(evs[0].payload.users[0].started_at, t(3000));
        // The refresh pushes the expiry out: still typing at 7 s, gone at 8 s.
        assert_eq!(s.flush(t(7000)).len(), 0);
        assert_eq!(ids(&s.typing_users(&room, t(7000))), vec!["alice"]);
        assert_eq!(s.next_deadline(), Some(t(8000)));
        let evs = s.flush(t(8000));
        assert_eq!(evs.len(), 1);
        assert!(evs[0].payload.users.is_empty());
    }

    #[test]
    fn expiry_is_pushed_and_room_is_cleaned_up() {
        let mut s = store();
        let room = channel("general");
        s.start(&room, &typist("alice", "s1"), None, t(0));
        s.flush(t(0));
        assert_eq!(s.next_deadline(), Some(t(5000)));
        assert!(s.flush(t(4999)).is_empty());
        let evs = s.flush(t(5000));
        assert_eq!(evs.len(), 1);
        assert!(evs[0].payload.users.is_empty());
        assert_eq!(evs[0].targets, vec!["channel:general"]);
        // The room lingers only for one coalescing window, then nothing is left to do.
        assert_eq!(s.next_deadline(), Some(t(5250)));
        assert!(s.flush(t(5250)).is_empty());
        assert_eq!(s.next_deadline(), None);
        assert!(s.rooms.is_empty());
        assert!(s.by_user.is_empty());
    }

    #[test]
    fn expiry_respects_coalescing_window() {
        let cfg = TypingConfig::from_millis(1000, 250);
        let mut s = TypingState::new(cfg);
        let room = channel("general");
        s.start(&room, &typist("alice", "s1"), None, t(0));
        s.flush(t(0));
        s.start(&room, &typist("bob", "s2"), None, t(900));
        assert_eq!(ids(&s.flush(t(900))[0].payload.users), vec!["alice", "bob"]);
        // Alice expires at 1000, but an event went out at 900: the expiry waits until 1150.
        assert!(s.flush(t(1000)).is_empty());
        assert_eq!(s.next_deadline(), Some(t(1150)));
        let evs = s.flush(t(1150));
        assert_eq!(ids(&evs[0].payload.users), vec!["bob"]);
    }

    #[test]
    fn coalescing_window_merges_changes_into_one_event() {
        let mut s = store();
        let room = channel("general");
        s.start(&room, &typist("alice", "s1"), None, t(0));
        assert_eq!(s.flush(t(0)).len(), 1, "leading edge");
        s.start(&room, &typist("bob", "s2"), None, t(10));
        s.start(&room, &typist("carol", "s3"), None, t(20));
        s.start(&room, &typist("alice", "s1"), None, t(30));
        assert!(s.flush(t(30)).is_empty());
        assert!(s.flush(t(249)).is_empty());
        assert_eq!(s.next_deadline(), Some(t(250)));
        let evs = s.flush(t(250));
        assert_eq!(evs.len(), 1, "one event for the whole window");
        assert_eq!(ids(&evs[0].payload.users), vec!["alice", "bob", "carol"]);
        // The next change opens a new window starting at the last emission.
        s.start(&room, &typist("bob", "s2"), None, t(300));
        assert!(s.flush(t(300)).is_empty());
        assert_eq!(s.flush(t(500)).len(), 1);
        // After a quiet window the leading edge is immediate again.
        s.start(&room, &typist("carol", "s3"), None, t(2000));
        assert_eq!(s.flush(t(2000)).len(), 1);
    }

    #[test]
    fn start_and_stop_within_one_window_emit_nothing() {
        let mut s = store();
        let room = channel("general");
        s.start(&room, &typist("alice", "s1"), None, t(0));
        s.flush(t(0));
        s.start(&room, &typist("bob", "s2"), None, t(10));
        s.stop(&room, "bob", "s2", None, t(20));
        assert!(s.flush(t(250)).is_empty(), "list equals what was last sent");
        // Window was not consumed: the next change goes out at once.
        s.start(&room, &typist("carol", "s3"), None, t(600));
        assert_eq!(s.flush(t(600)).len(), 1);
    }

    #[test]
    fn typers_are_excluded_and_get_a_personal_list() {
        let mut s = store();
        let room = channel("general");
        s.start(&room, &typist("alice", "s1"), None, t(0));
        s.flush(t(0));
        s.start(&room, &typist("bob", "s2"), None, t(300));
        let ev = s.flush(t(300)).remove(0);
        assert_eq!(ev.except_users, vec!["alice", "bob"]);
        // Alice sees Bob; Bob has nothing new to see about others (only he changed).
        assert_eq!(ev.personal.len(), 1);
        assert_eq!(ev.personal[0].user_id, "alice");
        assert_eq!(ids(&ev.personal[0].payload.users), vec!["bob"]);
        // Alice stops: Bob gets an empty personal list, everyone else the list [bob].
        s.stop(&room, "alice", "s1", None, t(600));
        let ev = s.flush(t(600)).remove(0);
        assert_eq!(ev.except_users, vec!["bob"]);
        assert_eq!(ids(&ev.payload.users), vec!["bob"]);
        assert_eq!(ev.personal.len(), 1);
        assert_eq!(ev.personal[0].user_id, "bob");
        assert!(ev.personal[0].payload.users.is_empty());
    }

    #[test]
    fn events_say_who_started_and_who_stopped() {
        let mut s = store();
        let room = channel("general");
        s.start(&room, &typist("alice", "s1"), None, t(0));
        let ev = s.flush(t(0)).remove(0);
        assert_eq!(ids(&ev.delta.started), vec!["alice"]);
        assert!(ev.delta.stopped.is_empty());
        // Bob starts and Alice refreshes inside one window: both started, each typer's copy has the other.
        s.start(&room, &typist("bob", "s2"), None, t(100));
        s.start(&room, &typist("alice", "s1"), None, t(120));
        let ev = s.flush(t(250)).remove(0);
        assert_eq!(ids(&ev.delta.started), vec!["alice", "bob"]);
        assert_eq!(ev.delta.started[0].started_at, t(120), "a refresh carries the new start");
        let alice = ev.personal.iter().find(|p| p.user_id == "alice").expect("alice's copy");
        assert_eq!(ids(&alice.delta.started), vec!["bob"]);
        // Bob stops; Alice's entry expires later: each is a stop.
        s.stop(&room, "bob", "s2", None, t(600));
        let ev = s.flush(t(600)).remove(0);
        assert_eq!(ev.delta.stopped, vec!["bob"]);
        assert!(ev.delta.started.is_empty());
        let ev = s.flush(t(5120)).remove(0);
        assert_eq!(ev.delta.stopped, vec!["alice"]);
        assert!(ev.payload.users.is_empty());
    }

    #[test]
    fn dm_recipient_is_remembered_for_stop_and_expiry() {
        let mut s = store();
        let room = TypingRoom::new("primary", RoomType::Dm, "alice:bob", None).unwrap();
        s.start(&room, &typist("alice", "s1"), Some("bob"), t(0));
        let ev = s.flush(t(0)).remove(0);
        assert_eq!(ev.targets, vec!["dm:alice:bob", "user:bob"]);
        // nchat's dm stop has no recipientId.
        s.stop(&room, "alice", "s1", None, t(1000));
        let ev = s.flush(t(1000)).remove(0);
        assert!(ev.payload.users.is_empty());
        assert_eq!(ev.targets, vec!["dm:alice:bob", "user:bob"]);
        // Expiry push is routed to the recipient too.
        s.start(&room, &typist("alice", "s1"), Some("bob"), t(2000));
        s.flush(t(2000));
        s.start(&room, &typist("alice", "s1"), None, t(3000)); // refresh without recipient
        s.flush(t(3000));
        let ev = s.flush(t(8000)).remove(0);
        assert!(ev.payload.users.is_empty());
        assert_eq!(ev.targets, vec!["dm:alice:bob", "user:bob"]);
        assert_eq!(ev.payload.room_name, "alice:bob");
        assert_eq!(ev.payload.room_type, RoomType::Dm);
    }

    #[test]
    fn dm_with_both_people_typing() {
        let mut s = store();
        let room = TypingRoom::new("primary", RoomType::Dm, "alice:bob", None).unwrap();
        s.start(&room, &typist("alice", "s1"), Some("bob"), t(0));
        s.flush(t(0));
        s.start(&room, &typist("bob", "s2"), Some("alice"), t(100));
        let ev = s.flush(t(250)).remove(0);
        assert_eq!(ev.targets, vec!["dm:alice:bob", "user:bob", "user:alice"]);
        assert_eq!(ev.except_users, vec!["alice", "bob"]);
        // Neither is reached by the broadcast; Alice learns Bob types through her copy.
        assert_eq!(ev.personal.len(), 1);
        assert_eq!(ev.personal[0].user_id, "alice");
        assert_eq!(ids(&ev.personal[0].payload.users), vec!["bob"]);
    }

    #[test]
    fn disconnect_withdraws_the_socket_everywhere() {
        let mut s = store();
        let a = channel("a");
        let b = channel("b");
        s.start(&a, &typist("alice", "s1"), None, t(0));
        s.start(&b, &typist("alice", "s1"), None, t(0));
        s.start(&b, &typist("alice", "s2"), None, t(0));
        s.flush(t(0));
        s.remove_socket("primary", "alice", "s1", t(1000));
        assert!(s.typing_users(&a, t(1000)).is_empty());
        assert_eq!(ids(&s.typing_users(&b, t(1000))), vec!["alice"], "s2 still typing in b");
        let evs = s.flush(t(1000));
        assert_eq!(evs.len(), 1);
        assert_eq!(evs[0].room, a);
        // A socket that never typed changes nothing.
        s.remove_socket("primary", "alice", "zzz", t(1100));
        assert_eq!(ids(&s.typing_users(&b, t(1100))), vec!["alice"]);
    }

    #[test]
    fn room_normalisation_and_validation() {
        let a = TypingRoom::new("p", RoomType::Channel, "channel:abc", None).unwrap();
        assert_eq!(a, TypingRoom::new("p", RoomType::Channel, "abc", Some("ignored")).unwrap());
        assert_eq!(a.route_key(), "channel:abc");
        let d = TypingRoom::new("p", RoomType::Dm, "dm:alice:bob", None).unwrap();
        assert_eq!(d.room_name, "alice:bob");
        assert_eq!(d.socket_room(), "dm:alice:bob");
        let th = TypingRoom::new("p", RoomType::Thread, "abc", Some("t1")).unwrap();
        assert_eq!(th.route_key(), "channel:abc/thread:t1");
        assert_eq!(
            TypingRoom::new("p", RoomType::Thread, "abc", None).unwrap_err().code(),
            crate::error::ErrorCode::ValidationError
        );
        assert_eq!(
            TypingRoom::new("p", RoomType::Channel, "", None).unwrap_err().code(),
            crate::error::ErrorCode::ValidationError
        );
        let huge = "x".repeat(MAX_ID_LEN + 1);
        assert_eq!(
            TypingRoom::new("p", RoomType::Thread, "abc", Some(&huge)).unwrap_err(),
            TypingError::TooLarge("threadId".into())
        );
    }

    #[test]
    fn refusals_name_the_field_and_the_limit() {
        let huge = "x".repeat(MAX_ID_LEN + 1);
        let e = crate::error::AppError::from(TypingRoom::new("p", RoomType::Channel, &huge, None).unwrap_err());
        assert_eq!(e.code, crate::error::ErrorCode::PayloadTooLarge);
        assert_eq!(e.message, "roomName is longer than 256 bytes");
        let e = crate::error::AppError::from(TypingRoom::new("p", RoomType::Thread, "abc", None).unwrap_err());
        assert_eq!(e.message, "threadId is required for roomType thread");
    }

    #[test]
    fn room_type_words_round_trip_and_others_are_refused() {
        for t in [RoomType::Channel, RoomType::Thread, RoomType::Dm] {
            assert_eq!(RoomType::parse(t.as_str()), Some(t));
            assert_eq!(serde_json::to_string(&t).unwrap(), format!("\"{}\"", t.as_str()));
        }
        assert_eq!(RoomType::parse("Channel"), None, "case-sensitive like the clients send it");
        assert_eq!(RoomType::parse("group"), None);
    }

    #[test]
    fn ids_may_be_exactly_the_longest_length() {
        assert!(TypingRoom::new("p", RoomType::Channel, &"x".repeat(MAX_ID_LEN), None).is_ok());
        assert!(TypingRoom::new("p", RoomType::Channel, &"x".repeat(MAX_ID_LEN + 1), None).is_err());
    }

    #[test]
    fn a_bare_named_channel_is_its_own_socket_room() {
        let room = TypingRoom { bare: true, ..TypingRoom::new("p", RoomType::Channel, "general", None).unwrap() };
        assert_eq!(room.socket_room(), "general");
        assert_eq!(room.targets([]), vec!["general".to_string()]);
        assert_eq!(TypingRoom::new("p", RoomType::Channel, "general", None).unwrap().socket_room(), "channel:general");
    }

    #[test]
    fn a_personal_delta_leaves_out_only_that_user() {
        let user = |id: &str| TypingUser {
            user_id: id.into(),
            user_name: None,
            user_avatar: None,
            started_at: DateTime::from_timestamp_millis(0).unwrap(),
        };
        let delta =
            TypingDelta { started: vec![user("a"), user("b")], stopped: vec!["c".to_string(), "d".to_string()] };
        assert_eq!(delta.without("a"), TypingDelta { started: vec![user("b")], stopped: delta.stopped.clone() });
        assert_eq!(delta.without("c"), TypingDelta { started: delta.started.clone(), stopped: vec!["d".to_string()] });
    }

    #[test]
    fn the_sockets_typing_are_listed_per_user_and_account() {
        let cfg = TypingConfig::default();
        let mut room = RoomState::default();
        room.start(&typist("alice", "s1"), None, t(0), &cfg);
        room.start(&typist("alice", "s2"), None, t(0), &cfg);
        room.start(&typist("bob", "s3"), None, t(0), &cfg);
        assert_eq!(room.users().collect::<Vec<_>>(), ["alice", "bob"]);
        let mut sockets: Vec<(&str, &str)> = room.sockets().collect();
        sockets.sort();
        assert_eq!(sockets, [("alice", "s1"), ("alice", "s2"), ("bob", "s3")]);

        let mut s = store();
        s.start(&channel("general"), &typist("alice", "s1"), None, t(0));
        s.start(&channel("random"), &typist("alice", "s1"), None, t(0));
        let other = TypingRoom::new("acme", RoomType::Channel, "general", None).unwrap();
        s.start(&other, &typist("bob", "s9"), None, t(0));
        let row = |a: &str, u: &str, so: &str| (a.to_string(), u.to_string(), so.to_string());
        assert_eq!(s.sockets(), vec![row("acme", "bob", "s9"), row("primary", "alice", "s1")], "once each, sorted");
    }

    #[test]
    fn a_device_whose_start_expires_now_does_not_keep_the_user_typing() {
        let cfg = TypingConfig::default();
        let mut room = RoomState::default();
        room.start(&typist("alice", "old"), None, t(0), &cfg);
        room.start(&typist("alice", "new"), None, t(1_000), &cfg);
        let mut kept = room.clone();
        assert!(!kept.withdraw("alice", "new", None, t(0) + cfg.timeout - Duration::milliseconds(1), &cfg, false));
        assert!(room.withdraw("alice", "new", None, t(0) + cfg.timeout, &cfg, false), "`old` expired at that instant");
    }

    #[test]
    fn the_list_leaves_out_an_entry_from_the_instant_it_expires() {
        let cfg = TypingConfig::from_millis(1_000, 250);
        let mut s = TypingState::new(cfg);
        assert_eq!(s.config(), cfg);
        let room = channel("general");
        s.start(&room, &typist("alice", "s1"), None, t(0));
        assert_eq!(ids(&s.typing_users(&room, t(999))), ["alice"]);
        assert!(s.typing_users(&room, t(1_000)).is_empty(), "expired, even before the flush removes it");
    }

    #[test]
    fn request_infers_the_room_type() {
        let r = TypingRequest::new("alice:bob".into(), Some(RoomType::Dm), None, Some("bob".into()), true).unwrap();
        assert_eq!(r.room_type, RoomType::Dm);
        let r = TypingRequest::new("c1".into(), None, Some("t1".into()), None, false).unwrap();
        assert_eq!((r.room_type, r.is_typing), (RoomType::Thread, false));
        assert_eq!(r.room("primary").unwrap().thread_id.as_deref(), Some("t1"));
        let r = TypingRequest::new("dm:x:y".into(), None, None, None, true).unwrap();
        assert_eq!(r.room("p").unwrap().room_name, "x:y");
        assert_eq!(TypingRequest::new("c1".into(), None, None, None, true).unwrap().room_type, RoomType::Channel);
        assert!(TypingRequest::new(" ".into(), None, None, None, true).is_err());
        assert_eq!(
            TypingRequest::new("x".repeat(300), None, None, None, true).unwrap_err(),
            TypingError::TooLarge("roomName".into())
        );
    }

    #[test]
    fn queue_holds_one_entry_per_room() {
        let mut s = store();
        let room = channel("general");
        for i in 0..1000 {
            s.start(&room, &typist("alice", "s1"), None, t(i * 10));
            s.flush(t(i * 10));
        }
        assert_eq!(s.queue.len(), 1);
    }

    #[test]
    fn config_conversions_clamp() {
        let c = TypingConfig::from_std(std::time::Duration::from_secs(5), std::time::Duration::from_millis(250));
        assert_eq!(c, TypingConfig::default());
        let c = TypingConfig::from_millis(-5, i64::MAX);
        assert_eq!(c.timeout, Duration::zero());
        assert_eq!(c.coalesce, Duration::milliseconds(MAX_SETTING_MS));
        let c = TypingConfig::from_std(std::time::Duration::MAX, std::time::Duration::ZERO);
        assert_eq!(c.timeout, Duration::milliseconds(MAX_SETTING_MS));
        assert_eq!(c.timeout, Duration::days(365), "settings are capped at a year");
    }

    #[test]
    fn name_and_avatar_are_carried() {
        let mut s = store();
        let room = channel("general");
        let mut ty = typist("alice", "s1");
        ty.user_avatar = Some("https://x/a.png".into());
        s.start(&room, &ty, None, t(0));
        let ev = s.flush(t(0)).remove(0);
        assert_eq!(ev.payload.users[0].user_name.as_deref(), Some("alice name"));
        assert_eq!(ev.payload.users[0].user_avatar.as_deref(), Some("https://x/a.png"));
    }
}
