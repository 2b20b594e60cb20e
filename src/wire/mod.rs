//! The wire: what clients send and receive. Inbound payloads are read field by field here (type and size
//! checked, with the protocol's error codes) into the application's typed requests; outbound events and
//! answers are rendered here, one module per dialect (docs/protocol.md §13):
//!
//! - `contract`: the dialect of docs/protocol.md (nchat's `services/realtime`);
//! - `socket`: nchat's `lib/socket` SocketProvider and `socketManager` (with the WebRTC call signalling);
//! - `compat`: both at once, for clients that only send `{token}`;
//! - `plugin`: the event set of nchat's realtime plugin test suite.
//!
//! A socket's dialect is chosen once, at its handshake ([`detect`]).

pub mod compat;
pub mod contract;
#[cfg(test)]
mod fuzz;
pub mod handshake;
pub mod plugin;
pub mod socket;

use std::borrow::Cow;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use parking_lot::Mutex;

use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};

use crate::app::events::Event;
use crate::app::messages::Outgoing;
use crate::app::session::Session;
use crate::domain::names::RoomName;
use crate::domain::presence::{PresenceError, PresenceUpdate, Status};
use crate::domain::typing::{RoomType, TypingError, TypingRequest};
use crate::error::{AppError, AppResult};
use crate::node::Node;

// ---------------------------------------------------------------------------------------------
// Dialects
// ---------------------------------------------------------------------------------------------

/// The wire dialect of a socket (docs/protocol.md §13).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Dialect {
    /// docs/protocol.md (nchat's `services/realtime`, sockets that send `auth.device`).
    Contract,
    /// The contract and nchat's `lib/socket` and `socketManager` together (sockets that send `{token}` only).
    Compat,
    /// nchat's `lib/socket` and `socketManager` alone (`auth.protocol: "socket"`).
    Socket,
    /// nchat's realtime plugin test dialect (sockets that send `auth.userId`).
    Plugin,
}

/// An outbound packet: an event name and its payload.
pub type Packet<'a> = (Cow<'a, str>, Value);

impl Dialect {
    pub const ALL: [Dialect; 4] = [Dialect::Contract, Dialect::Compat, Dialect::Socket, Dialect::Plugin];

    /// A small index (for counting sockets per dialect).
    pub fn index(self) -> usize {
        match self {
            Dialect::Contract => 0,
            Dialect::Compat => 1,
            Dialect::Socket => 2,
            Dialect::Plugin => 3,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Dialect::Contract => "contract",
            Dialect::Compat => "compat",
            Dialect::Socket => "socket",
            Dialect::Plugin => "plugin",
        }
    }

    /// The dialect `auth.protocol` names.
    pub fn parse(name: &str) -> Option<Dialect> {
        match name.trim().to_ascii_lowercase().as_str() {
            "contract" | "realtime" | "services/realtime" => Some(Dialect::Contract),
            "compat" => Some(Dialect::Compat),
            "socket" | "lib/socket" | "socketmanager" => Some(Dialect::Socket),
            "plugin" => Some(Dialect::Plugin),
            _ => None,
        }
    }

    /// The Socket.IO room key of one of an account's rooms for this dialect's sockets: the contract keeps
    /// `<account>/<room>`, the others prefix it with `<dialect>|` (an account name never holds a `|`). A room
    /// event is rendered once per dialect and broadcast to that dialect's key.
    pub fn room_key(self, account: &str, room: &str) -> String {
        match self {
            Dialect::Contract => crate::domain::names::room_key(account, room),
            d => {
                let mut key = String::with_capacity(d.name().len() + 2 + account.len() + room.len());
                key.push_str(d.name());
                key.push('|');
                key.push_str(account);
                key.push('/');
                key.push_str(room);
                key
            }
        }
    }
}

/// What the handshake's `auth` object says about the socket's dialect.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Detected {
    pub dialect: Dialect,
    /// The user the client claims to be (`auth.userId` of the plugin dialect): must be the token's user.
    pub claimed_user: Option<String>,
}

/// The dialect rule (docs/protocol.md §13.1): `auth.protocol` when present; else `auth.device` → contract;
/// else `auth.userId` → plugin; else compat. An unknown `auth.protocol` is refused (the message says why).
pub fn detect(auth: &Value) -> Result<Detected, String> {
    let claimed = |v: Option<&Value>| -> Result<Option<String>, String> {
        match v {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if !s.trim().is_empty() && s.len() <= limits::ID => Ok(Some(s.trim().to_string())),
            Some(Value::Number(n)) => Ok(Some(n.to_string())),
            Some(_) => Err("auth.userId must be a user id string".into()),
        }
    };
    let user = claimed(auth.get("userId"))?;
    let dialect = match auth.get("protocol") {
        None | Some(Value::Null) => {
            if auth.get("device").is_some_and(|d| !d.is_null()) {
                Dialect::Contract
            } else if user.is_some() {
                Dialect::Plugin
            } else {
                Dialect::Compat
            }
        }
        Some(Value::String(p)) => Dialect::parse(p).ok_or_else(|| {
            format!(
                "auth.protocol {:?} is not a dialect of this server; use contract, compat, socket or plugin",
                p.chars().take(64).collect::<String>()
            )
        })?,
        Some(_) => return Err("auth.protocol must be a string (contract, compat, socket or plugin)".into()),
    };
    Ok(Detected { dialect, claimed_user: user })
}

/// The name and payload(s) of an outbound event in a dialect: empty when the dialect has no such event.
pub fn render(dialect: Dialect, event: &Event) -> Vec<Packet<'_>> {
    match dialect {
        Dialect::Contract => contract::render(event).into_iter().collect(),
        Dialect::Compat => compat::render(event),
        Dialect::Socket => socket::render(event),
        Dialect::Plugin => plugin::render(event),
    }
}

/// What the socket an event came from gets instead of [`render`], when it differs (the sender's own copy of a
/// message carries its `tempId`). None: the same as everyone.
pub fn render_origin(dialect: Dialect, event: &Event) -> Option<Vec<Packet<'_>>> {
    match dialect {
        Dialect::Compat => compat::render_origin(event),
        Dialect::Socket => socket::render_origin(event),
        Dialect::Contract | Dialect::Plugin => None,
    }
}

/// An inbound event read into its dialect's command.
pub enum Command {
    Contract(contract::Command),
    Socket(socket::Command),
    Plugin(plugin::Command),
}

/// Reads one inbound event of a socket in its dialect: the NUL scan, then the dialect's event table, every
/// field type and size checked. The whole reading of a payload (no I/O, no state), which the fuzz targets
/// drive (`fuzz/`); [`handle`] runs exactly this before it acts.
pub fn decode(dialect: Dialect, event: &str, data: &Value, max_message_length: usize) -> AppResult<Command> {
    refuse_nul(data)?;
    Ok(match dialect {
        Dialect::Contract => Command::Contract(contract::decode(event, data, max_message_length)?),
        Dialect::Compat | Dialect::Socket => Command::Socket(socket::decode(event, data, max_message_length)?),
        Dialect::Plugin => Command::Plugin(plugin::decode(event, data, max_message_length)?),
    })
}

/// Handles one inbound event of a socket in its dialect.
pub async fn handle(cx: &Cx<'_>, event: &str, data: Value) -> AppResult<Reply> {
    match decode(cx.dialect, event, &data, cx.node.cfg.max_message_length)? {
        Command::Contract(command) => contract::run(cx, command).await,
        Command::Socket(command) => socket::run(cx, command).await,
        Command::Plugin(command) => plugin::run(cx, command).await,
    }
}

/// Which budget an inbound event is charged to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Charge {
    /// Liveness (`ping`, `pong`): free, and not activity.
    Free,
    /// The user's event budget.
    Events,
    /// The user's call-signalling budget (ICE candidates come in bursts; docs/protocol.md §13.5).
    Calls,
}

/// The budget an event is charged to, in a dialect.
pub fn charge(dialect: Dialect, event: &str) -> Charge {
    if contract::is_liveness(event) {
        Charge::Free
    } else if matches!(dialect, Dialect::Compat | Dialect::Socket) && event.starts_with("call:") {
        Charge::Calls
    } else {
        Charge::Events
    }
}

/// How a refused event is told when the client asked for no ack.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Tell {
    /// `error {code, message, details?}`.
    Error,
    /// Nothing more (the handler already sent the one signal the client listens for, or the client treats a
    /// generic `error` as fatal and the event is routine); the refusal is logged.
    Quietly,
    /// `call:error {callId, code, message}` (calls never get a generic `error`).
    CallError { call_id: String },
}

/// What a refusal of an event must send, read from the event before it is handled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// A `message:send` with a `clientMessageId` also tells the offline queue with `message:failed`.
    pub failed: Option<String>,
    pub tell: Tell,
}

/// How a refusal of `event` is told in a dialect.
pub fn refusal(dialect: Dialect, event: &str, data: Option<&Value>) -> Refusal {
    match dialect {
        Dialect::Compat | Dialect::Socket => socket::refusal(event, data),
        Dialect::Contract | Dialect::Plugin => contract::refusal(event, data),
    }
}

/// Sends what a refusal needs besides the ack: `message:failed`, then (without an ack) `error` or
/// `call:error` or nothing.
pub fn refused(out: &dyn Outbox, refusal: &Refusal, e: &AppError, has_ack: bool) {
    if let Some(cid) = &refusal.failed {
        out.emit(
            "message:failed",
            &json!({ "clientMessageId": cid, "errorCode": e.code, "errorMessage": e.message,
                     "retryable": e.code.retryable() }),
        );
    }
    if has_ack {
        return;
    }
    match &refusal.tell {
        Tell::Error => out.emit("error", &serde_json::to_value(e).expect("errors serialise")),
        Tell::Quietly => {}
        Tell::CallError { call_id } => {
            out.emit("call:error", &json!({ "callId": call_id, "code": e.code, "message": e.message }))
        }
    }
}

/// A socket's own channel back, for answers that go to it alone (rendered by the dialect).
pub trait Outbox: Send + Sync {
    fn emit(&self, event: &str, data: &Value);
}

/// What the wire remembers per socket.
#[derive(Default)]
pub struct SocketState {
    /// Rooms whose `channel:join` was answered with `channel:joined` (a repeated join is not answered again;
    /// a leave forgets it). A list: a socket joins a handful, and an empty one is smaller than an empty set.
    joined: Mutex<Vec<String>>,
}

impl SocketState {
    /// True the first time a room's join is answered on this socket.
    pub fn first_join(&self, room: &str) -> bool {
        let mut joined = self.joined.lock();
        if joined.iter().any(|r| r == room) {
            return false;
        }
        joined.push(room.to_string());
        true
    }

    pub fn left(&self, room: &str) {
        self.joined.lock().retain(|r| r != room);
    }
}

/// What a dialect's handler gets for one inbound event.
pub struct Cx<'a> {
    pub node: &'a Arc<Node>,
    pub session: &'a Arc<Session>,
    pub dialect: Dialect,
    pub state: &'a SocketState,
    /// The client asked for an ack.
    pub has_ack: bool,
    pub out: &'a Arc<dyn Outbox>,
}

impl Cx<'_> {
    /// The authenticated user, or UNAUTHENTICATED for an anonymous socket.
    pub fn user(&self) -> AppResult<&str> {
        self.session.user().ok_or_else(|| {
            AppError::new(crate::error::ErrorCode::Unauthenticated, "this event needs an authenticated user")
        })
    }
}

/// What a handler answers.
pub enum Reply {
    /// `{success: true, data}`
    Data(Value),
    /// `{success: true}`
    Done,
    /// The ack carries exactly this value (the `ping` exception to the envelope).
    Raw(Value),
    /// The answer comes later; the socket's next event need not wait for it (a message waiting for its
    /// commit). The future keeps its own ordering.
    Later(Pin<Box<dyn Future<Output = AppResult<Reply>> + Send>>),
}

/// Where a value holds a NUL character (`\u0000`) in a string or an object key, as a field path (`content`,
/// `metadata.note`, `ids[2]`). PostgreSQL's text cannot hold one, so no inbound payload may: refusing it here,
/// for every event and HTTP body, keeps SQLite and PostgreSQL answering alike.
pub fn nul_field(v: &Value) -> Option<String> {
    fn walk(v: &Value, path: &mut String) -> bool {
        match v {
            Value::String(s) => s.contains('\0'),
            Value::Array(items) => items.iter().enumerate().any(|(i, item)| {
                let len = path.len();
                path.push_str(&format!("[{i}]"));
                let found = walk(item, path);
                if !found {
                    path.truncate(len);
                }
                found
            }),
            Value::Object(map) => map.iter().any(|(k, item)| {
                let len = path.len();
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(&k.replace('\0', "\\u0000").chars().take(64).collect::<String>());
                let found = k.contains('\0') || walk(item, path);
                if !found {
                    path.truncate(len);
                }
                found
            }),
            _ => false,
        }
    }
    // Every event passes here: the common case (no NUL) allocates nothing.
    fn any(v: &Value) -> bool {
        match v {
            Value::String(s) => s.contains('\0'),
            Value::Array(items) => items.iter().any(any),
            Value::Object(map) => map.iter().any(|(k, item)| k.contains('\0') || any(item)),
            _ => false,
        }
    }
    if !any(v) {
        return None;
    }
    let mut path = String::new();
    walk(v, &mut path).then(|| if path.is_empty() { "the payload".to_string() } else { path })
}

/// Refuses a payload holding a NUL character anywhere, naming the field (see [`nul_field`]).
pub fn refuse_nul(v: &Value) -> AppResult<()> {
    match nul_field(v) {
        None => Ok(()),
        Some(field) => Err(AppError::validation(format!(
            "{field} contains a NUL character (\\u0000), which no text may hold; remove it"
        ))),
    }
}

/// Bounds for inbound strings and arrays (docs/protocol.md §2.4: everything is bounded).
pub mod limits {
    pub const ID: usize = 256;
    pub const SHORT: usize = 64;
    pub const STATUS_TEXT: usize = 256;
    pub const EMOJI: usize = 64;
    pub const METADATA: usize = 16 * 1024;
    pub const ATTACHMENTS: usize = 64 * 1024;
    pub const ID_ARRAY: usize = 1000;
    pub const ATTACHMENT_COUNT: usize = 100;
    pub const EMOJI_BYTES: usize = 64;
}

/// An inbound payload that must be a JSON object.
pub struct Payload<'a> {
    map: &'a Map<String, Value>,
}

impl<'a> Payload<'a> {
    pub fn object(data: &'a Value) -> AppResult<Payload<'a>> {
        match data {
            Value::Object(map) => Ok(Payload { map }),
            Value::Null => Err(AppError::validation("payload is missing; send an object")),
            other => Err(AppError::validation(format!("payload must be an object, not {}", kind(other)))),
        }
    }

    pub fn has(&self, field: &str) -> bool {
        self.map.get(field).is_some_and(|v| !v.is_null())
    }

    pub fn raw(&self, field: &str) -> Option<&'a Value> {
        self.map.get(field).filter(|v| !v.is_null())
    }

    /// An optional string of at most `max` bytes. Empty strings count as absent.
    pub fn opt_str(&self, field: &str, max: usize) -> AppResult<Option<&'a str>> {
        match self.map.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if s.len() > max => Err(AppError::too_large(field, max)),
            Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.as_str())),
            Some(other) => Err(AppError::validation(format!("{field} must be a string, not {}", kind(other)))),
        }
    }

    pub fn str(&self, field: &str, max: usize) -> AppResult<&'a str> {
        self.opt_str(field, max)?.ok_or_else(|| AppError::validation(format!("{field} is required")))
    }

    /// A string that may also be sent as a number (ids from clients that use numeric ids).
    pub fn opt_id(&self, field: &str) -> AppResult<Option<String>> {
        match self.map.get(field) {
            Some(Value::Number(n)) => Ok(Some(n.to_string())),
            _ => Ok(self.opt_str(field, limits::ID)?.map(str::to_string)),
        }
    }

    pub fn opt_bool(&self, field: &str) -> AppResult<Option<bool>> {
        match self.map.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(other) => Err(AppError::validation(format!("{field} must be a boolean, not {}", kind(other)))),
        }
    }

    /// An optional integer (epoch ms, limits, seqs).
    pub fn opt_i64(&self, field: &str) -> AppResult<Option<i64>> {
        match self.map.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) => n
                .as_i64()
                .or_else(|| n.as_f64().filter(|f| f.is_finite()).map(|f| f as i64))
                .map(Some)
                .ok_or_else(|| AppError::validation(format!("{field} must be an integer"))),
            Some(Value::String(s)) => {
                s.trim().parse().map(Some).map_err(|_| AppError::validation(format!("{field} must be an integer")))
            }
            Some(other) => Err(AppError::validation(format!("{field} must be a number, not {}", kind(other)))),
        }
    }

    /// An optional array of id strings, at most [`limits::ID_ARRAY`] entries.
    pub fn opt_ids(&self, field: &str) -> AppResult<Option<Vec<String>>> {
        match self.map.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Array(items)) => {
                if items.len() > limits::ID_ARRAY {
                    return Err(AppError::too_large(field, limits::ID_ARRAY)
                        .with_details(json!({"field": field, "maxItems": limits::ID_ARRAY})));
                }
                let mut out = Vec::with_capacity(items.len());
                for item in items {
                    match item {
                        Value::String(s) if s.len() > limits::ID => return Err(AppError::too_large(field, limits::ID)),
                        Value::String(s) if !s.trim().is_empty() => out.push(s.trim().to_string()),
                        Value::Number(n) => out.push(n.to_string()),
                        _ => return Err(AppError::validation(format!("{field} must be an array of id strings"))),
                    }
                }
                Ok(Some(out))
            }
            Some(other) => Err(AppError::validation(format!("{field} must be an array, not {}", kind(other)))),
        }
    }

    pub fn ids(&self, field: &str) -> AppResult<Vec<String>> {
        self.opt_ids(field)?.ok_or_else(|| AppError::validation(format!("{field} is required")))
    }

    /// Optional free-form JSON (object or array), stored as text of at most `max` bytes.
    pub fn opt_json(&self, field: &str, max: usize, want_array: bool) -> AppResult<Option<String>> {
        match self.map.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(v @ Value::Array(_)) if want_array => bounded_json(field, v, max),
            Some(v @ Value::Object(_)) if !want_array => bounded_json(field, v, max),
            Some(other) => Err(AppError::validation(format!(
                "{field} must be an {}, not {}",
                if want_array { "array" } else { "object" },
                kind(other)
            ))),
        }
    }
}

/// The room a message goes to: `roomName`, else `channelId` (nchat's bare channel id); `missing` when neither.
pub(crate) fn message_room(p: &Payload<'_>, missing: &str) -> AppResult<RoomName> {
    match (p.opt_str("roomName", limits::ID)?, p.opt_id("channelId")?) {
        (Some(name), _) => RoomName::parse(name),
        (None, Some(id)) => RoomName::from_channel_id(&id),
        (None, None) => return Err(AppError::validation(missing)),
    }
    .map_err(AppError::validation)
}

/// A message's `content`: a string of at most `max` bytes; empty when absent.
pub(crate) fn message_content(p: &Payload<'_>, max: usize) -> AppResult<String> {
    match p.raw("content") {
        Some(Value::String(s)) if s.len() > max => Err(AppError::too_large("content", max)),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(_) => Err(AppError::validation("content must be a string")),
        None => Ok(String::new()),
    }
}

/// Reads either `message:send` shape: `{roomName, content, threadId?, replyTo?, metadata?}` (rooms service)
/// or `{channelId, content, type, attachments?, threadId?, mentions?, clientMessageId}` (offline queue).
pub fn outgoing(data: &Value, max_message_length: usize) -> AppResult<Outgoing> {
    let p = Payload::object(data)?;
    let room = message_room(&p, "roomName or channelId is required")?;
    let content = message_content(&p, max_message_length)?;
    let attachments = p.opt_json("attachments", limits::ATTACHMENTS, true)?;
    if content.trim().is_empty() && attachments.is_none() {
        return Err(AppError::validation("content is required (or attachments)"));
    }
    if let Some(Value::Array(a)) = p.raw("attachments")
        && a.len() > limits::ATTACHMENT_COUNT
    {
        return Err(AppError::too_large("attachments", limits::ATTACHMENT_COUNT));
    }
    p.opt_ids("mentions")?; // type-check: an array of ids
    Ok(Outgoing {
        room,
        kind: p.opt_str("type", limits::SHORT)?.unwrap_or("text").to_string(),
        content,
        thread_id: p.opt_id("threadId")?,
        reply_to: p.opt_id("replyTo")?,
        metadata: p.opt_json("metadata", limits::METADATA, false)?,
        mentions: p.opt_json("mentions", limits::METADATA, true)?,
        attachments,
        client_message_id: p.opt_str("clientMessageId", limits::ID)?.map(str::to_string),
    })
}

/// A typing field: a string (empty is absent) or a number, at most 256 bytes.
fn typing_field(v: &Value, field: &str) -> Result<Option<String>, TypingError> {
    match v.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) if s.len() > crate::domain::typing::MAX_ID_LEN => {
            Err(TypingError::TooLarge(field.into()))
        }
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(Value::Number(n)) => Ok(Some(n.to_string())),
        Some(_) => Err(TypingError::Validation(format!("{field} must be a string"))),
    }
}

/// `typing:start` / `typing:stop` / `typing` in any of their shapes (docs/protocol.md §9.1):
/// `{roomName, roomType, threadId?, recipientId?}`, `{channelId, threadId?}`, or `typing {channelId, isTyping}`.
pub fn typing_request(event: &str, data: &Value) -> AppResult<TypingRequest> {
    if !data.is_object() {
        return Err(TypingError::Validation("payload must be an object".into()).into());
    }
    let is_typing = match event {
        "typing:start" => true,
        "typing:stop" => false,
        _ => match data.get("isTyping") {
            Some(Value::Bool(b)) => *b,
            _ => return Err(TypingError::Validation("isTyping must be a boolean".into()).into()),
        },
    };
    let room_name = match typing_field(data, "roomName")? {
        Some(r) => r,
        None => typing_field(data, "channelId")?
            .ok_or_else(|| TypingError::Validation("roomName or channelId is required".into()))?,
    };
    let room_type = match typing_field(data, "roomType")? {
        Some(rt) => Some(
            RoomType::parse(&rt)
                .ok_or_else(|| TypingError::Validation("roomType must be channel, thread or dm".into()))?,
        ),
        None => None,
    };
    let thread_id = typing_field(data, "threadId")?;
    let recipient_id = typing_field(data, "recipientId")?;
    Ok(TypingRequest::new(room_name, room_type, thread_id, recipient_id, is_typing)?)
}

fn status_text(v: Option<&Value>, field: &str) -> Result<Option<String>, PresenceError> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(PresenceError::Validation(format!("{field} must be a string"))),
    }
}

fn status_expiry(v: Option<&Value>) -> Result<Option<DateTime<Utc>>, PresenceError> {
    let bad = || PresenceError::Validation("customStatus.expiresAt must be an ISO-8601 time or epoch ms".into());
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) => {
            DateTime::parse_from_rfc3339(s).map(|d| Some(d.with_timezone(&Utc))).map_err(|_| bad())
        }
        Some(Value::Number(n)) => n
            .as_i64()
            .or_else(|| n.as_f64().map(|f| f as i64))
            .and_then(DateTime::from_timestamp_millis)
            .map(Some)
            .ok_or_else(bad),
        Some(_) => Err(bad()),
    }
}

/// `presence:update {status, customStatus?}`: `customStatus` as `{text?, emoji?, expiresAt?}` or as a plain
/// string with a sibling `customEmoji`.
pub fn presence_update(data: &Value) -> AppResult<PresenceUpdate> {
    let obj = data.as_object().ok_or_else(|| PresenceError::Validation("payload must be an object".into()))?;
    let status = match obj.get("status") {
        Some(Value::String(s)) => Status::parse(s).ok_or_else(|| {
            PresenceError::Validation("status must be online, away, busy, dnd, offline or invisible".into())
        })?,
        _ => return Err(PresenceError::Validation("status is required".into()).into()),
    };
    let (text, emoji, expires_at) = match obj.get("customStatus") {
        None | Some(Value::Null) => (None, status_text(obj.get("customEmoji"), "customEmoji")?, None),
        Some(Value::String(_)) => (
            status_text(obj.get("customStatus"), "customStatus")?,
            status_text(obj.get("customEmoji"), "customEmoji")?,
            None,
        ),
        Some(Value::Object(cs)) => (
            status_text(cs.get("text"), "customStatus.text")?,
            status_text(cs.get("emoji"), "customStatus.emoji")?,
            status_expiry(cs.get("expiresAt"))?,
        ),
        Some(_) => return Err(PresenceError::Validation("customStatus must be an object or a string".into()).into()),
    };
    Ok(PresenceUpdate::new(status, text.as_deref(), emoji.as_deref(), expires_at)?)
}

fn bounded_json(field: &str, v: &Value, max: usize) -> AppResult<Option<String>> {
    let text = v.to_string();
    if text.len() > max { Err(AppError::too_large(field, max)) } else { Ok(Some(text)) }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorCode;

    #[test]
    fn typing_requests_in_every_shape() {
        let r =
            typing_request("typing:start", &json!({"roomName": "alice:bob", "roomType": "dm", "recipientId": "bob"}))
                .unwrap();
        assert_eq!(r.room_type, RoomType::Dm);
        assert_eq!(r.recipient_id.as_deref(), Some("bob"));
        assert!(r.is_typing);
        let r = typing_request("typing:stop", &json!({"channelId": "c1", "threadId": "t1"})).unwrap();
        assert_eq!((r.room_type, r.is_typing), (RoomType::Thread, false));
        let r = typing_request("typing", &json!({"channelId": 7, "isTyping": true})).unwrap();
        assert_eq!((r.room_type, r.room_name.as_str(), r.is_typing), (RoomType::Channel, "7", true));
        assert!(typing_request("typing", &json!({"channelId": "c1"})).is_err());
        assert!(typing_request("typing:start", &json!({})).is_err());
        assert!(typing_request("typing:start", &json!("c1")).is_err());
        assert!(typing_request("typing:start", &json!({"roomName": "c", "roomType": "x"})).is_err());
        assert_eq!(
            typing_request("typing:start", &json!({"roomName": "x".repeat(300)})).unwrap_err().code,
            ErrorCode::PayloadTooLarge
        );
        assert_eq!(
            typing_request("typing:start", &json!({"roomName": "c", "recipientId": "x".repeat(300)})).unwrap_err().code,
            ErrorCode::PayloadTooLarge
        );
    }

    #[test]
    fn presence_updates_in_both_shapes() {
        let u = presence_update(&json!({"status": "dnd"})).unwrap();
        assert_eq!((u.status, u.custom_status), (Status::Busy, None));
        let u = presence_update(&json!({
            "status": "online",
            "customStatus": {"text": "In a meeting", "emoji": "📅", "expiresAt": "2023-11-14T23:13:20.000Z"}
        }))
        .unwrap();
        let cs = u.custom_status.unwrap();
        assert_eq!(cs.text.as_deref(), Some("In a meeting"));
        assert_eq!(cs.expires_at, DateTime::from_timestamp_millis(1_700_003_600_000));
        let u = presence_update(&json!({"status": "away", "customStatus": "brb", "customEmoji": "☕"})).unwrap();
        assert_eq!(u.custom_status.unwrap().emoji.as_deref(), Some("☕"));
        let u =
            presence_update(&json!({"status": "online", "customStatus": {"expiresAt": 1_700_000_000_000i64}})).unwrap();
        assert_eq!(u.custom_status, None, "empty custom status is no custom status");
        let u = presence_update(
            &json!({"status": "online", "customStatus": {"text": "x", "expiresAt": 1_700_000_000_000i64}}),
        )
        .unwrap();
        assert_eq!(u.custom_status.unwrap().expires_at, DateTime::from_timestamp_millis(1_700_000_000_000));
        assert_eq!(presence_update(&json!({"status": "sleeping"})).unwrap_err().code, ErrorCode::ValidationError);
        assert!(presence_update(&json!({})).is_err());
        assert!(presence_update(&json!({"status": "online", "customStatus": 5})).is_err());
        assert!(presence_update(&json!({"status": "online", "customStatus": {"expiresAt": "soon"}})).is_err());
        assert_eq!(
            presence_update(&json!({"status": "online", "customStatus": "x".repeat(300)})).unwrap_err().code,
            ErrorCode::PayloadTooLarge
        );
    }

    #[test]
    fn nul_characters_are_found_anywhere_and_named() {
        assert_eq!(nul_field(&json!({"content": "hi", "roomName": "r"})), None);
        assert_eq!(nul_field(&json!({"content": "a\0b"})).as_deref(), Some("content"));
        assert_eq!(nul_field(&json!({"m": {"x": [1, "ok", "\0"]}})).as_deref(), Some("m.x[2]"));
        assert_eq!(nul_field(&json!({"a\0": 1})).as_deref(), Some("a\\u0000"));
        assert_eq!(nul_field(&json!("\0")).as_deref(), Some("the payload"));
        let e = refuse_nul(&json!({"threadId": "t\0"})).unwrap_err();
        assert_eq!(e.code, ErrorCode::ValidationError);
        assert!(e.message.starts_with("threadId contains a NUL character"), "{}", e.message);
    }

    #[test]
    fn fields_are_type_and_size_checked() {
        let data = json!({"roomName": 5, "content": "x".repeat(20), "ids": ["a", 3], "thread": "t"});
        let p = Payload::object(&data).unwrap();
        assert_eq!(p.str("roomName", 10).unwrap_err().code, ErrorCode::ValidationError);
        assert_eq!(p.str("content", 10).unwrap_err().code, ErrorCode::PayloadTooLarge);
        assert_eq!(p.str("missing", 10).unwrap_err().code, ErrorCode::ValidationError);
        assert_eq!(p.ids("ids").unwrap(), vec!["a".to_string(), "3".to_string()]);
        assert_eq!(Payload::object(&json!("text")).err().unwrap().code, ErrorCode::ValidationError);
        assert_eq!(Payload::object(&Value::Null).err().unwrap().code, ErrorCode::ValidationError);
        let many = json!({"ids": vec!["x"; 1001]});
        assert_eq!(Payload::object(&many).unwrap().ids("ids").unwrap_err().code, ErrorCode::PayloadTooLarge);
    }
}
