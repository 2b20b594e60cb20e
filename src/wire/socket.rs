//! nchat's `lib/socket` (the mounted SocketProvider and its hooks, `lib/socket/events.ts`) and `socketManager`
//! (`lib/realtime/typed-events.ts`, the delivery handler and the WebRTC signalling of `lib/webrtc/
//! signaling.ts`): docs/protocol.md §13.4–13.5. Inbound, the events these stacks send that the contract does
//! not know, and the contract's events in the shapes these stacks send them; everything else is the
//! contract's. Outbound, the events their hooks listen to.
//!
//! The same names as the contract's (`message:new`, `message:update`, `reaction:add`, …) are rendered as one
//! superset payload, so the `compat` dialect (contract and these stacks at once) sends each name once.

use std::borrow::Cow;

use serde_json::{Value, json};

use super::contract::{self, put};
use super::{Cx, Dialect, Packet, Payload, Refusal, Reply, Tell, limits};
use crate::app::calls::{CallRequest, Caller};
use crate::app::events::{Author, CallEvent, CallParty, Event, ReadPosition, RoomPresence, TypingChange};
use crate::app::messages::Outgoing;
use crate::app::receipts::ReadRequest;
use crate::domain::calls::Signal;
use crate::domain::names::channel_id_of;
use crate::domain::presence::{PresenceUpdate, PublicStatus, ViewedPresence};
use crate::domain::time::iso_ms;
use crate::domain::typing::{RoomType, TypingRequest, TypingUser};
use crate::error::{AppError, AppResult};
use crate::store::MessageRow;

/// A call signal (with its description or candidates) is at most this big, as JSON.
pub const MAX_SIGNAL_BYTES: usize = 64 * 1024;

// ---------------------------------------------------------------------------------------------
// Inbound
// ---------------------------------------------------------------------------------------------

/// An event of a `compat` or `socket` socket read into what the application is asked to do ([`decode`]
/// is the whole reading; [`run`] carries it out). The events these stacks share with the contract are
/// the contract's commands.
pub enum Command {
    /// `message:send`, or socketManager's delivery retry as `message:new`.
    Send(Outgoing),
    /// socketManager's `message:typing` (its `userId` field is ignored: the typer is the socket's user).
    Typing(TypingRequest),
    /// `read:update {messageId, threadId?}`.
    Read {
        message_id: String,
        thread: Option<String>,
    },
    PresenceSubscribe(Vec<String>),
    /// lib/socket's `user:status`: a presence update whose custom status may expire.
    Status(PresenceUpdate),
    /// `notification:read` / `notification:read:all`: notifications live in nchat's own backend.
    NotificationRead,
    Call(CallCommand),
    Contract(contract::Command),
}

/// A `call:*` signal: its routing fields checked, the payload relayed as sent.
pub struct CallCommand {
    pub call_id: String,
    pub req: CallRequest,
    /// The field that names the sender and what it says, to be checked against the socket's user.
    pub sender: Option<(&'static str, String)>,
    pub data: Value,
}

/// Reads one inbound event of a `compat` or `socket` socket into its command.
pub fn decode(event: &str, data: &Value, max_message_length: usize) -> AppResult<Command> {
    Ok(match event {
        // lib/socket sends `{tempId, channelId, content, mentions: [{type, id?}], attachments: [{…}]}` without an
        // ack; socketManager `{channelId, content, replyTo?}` with one and reads `messageId` at the top level.
        // socketManager's delivery retry re-sends a message as `message:new {clientMessageId, channelId, …}`.
        "message:send" | "message:new" => Command::Send(outgoing(data, max_message_length)?),
        "message:typing" => Command::Typing(super::typing_request("typing", data)?),
        "read:update" => {
            let p = Payload::object(data)?;
            let message_id = p.opt_id("messageId")?.ok_or_else(|| AppError::validation("messageId is required"))?;
            Command::Read { message_id, thread: p.opt_id("threadId")? }
        }
        "presence:subscribe" => Command::PresenceSubscribe(Payload::object(data)?.ids("userIds")?),
        // lib/socket's custom status with an expiry: `{status, customStatus?: string, customEmoji?, expiresAt?}`.
        "user:status" => Command::Status(user_status(data)?),
        "notification:read" | "notification:read:all" => Command::NotificationRead,
        e if e.starts_with("call:") => Command::Call(call_command(e, data)?),
        // socketManager names live-stream events; streams are not served here (refused without an `error`).
        e if e.starts_with("stream:") => return Err(AppError::forbidden("live streams are not served by this server")),
        _ => Command::Contract(contract::decode(event, data, max_message_length)?),
    })
}

/// Carries out a decoded command.
pub async fn run(cx: &Cx<'_>, command: Command) -> AppResult<Reply> {
    match command {
        Command::Send(out) => send(cx, out).await,
        Command::Typing(req) => contract::apply_typing(cx, req).await,
        Command::Read { message_id, thread } => contract::read(cx, ReadRequest::Message(message_id), thread).await,
        Command::PresenceSubscribe(ids) => presence_subscribe(cx, &ids).await,
        Command::Status(update) => contract::apply_presence(cx, update).await,
        Command::NotificationRead => {
            cx.user()?;
            Ok(Reply::Done)
        }
        Command::Call(call) => signal(cx, call).await,
        Command::Contract(command) => contract::run(cx, command).await,
    }
}

/// How a refusal is told to these stacks: lib/socket listens to nothing but `error`; socketManager's
/// provider treats any `error` as a broken connection, so its routine events are refused quietly (or by
/// `message:failed` / `call:error`, which it listens to).
pub fn refusal(event: &str, data: Option<&Value>) -> Refusal {
    match event {
        "message:send" => Refusal { failed: contract::client_message_id(data, "clientMessageId"), tell: Tell::Error },
        "message:new" => Refusal { failed: contract::client_message_id(data, "clientMessageId"), tell: Tell::Quietly },
        "message:typing" | "auth:refresh" | "notification:read" | "notification:read:all" => {
            Refusal { failed: None, tell: Tell::Quietly }
        }
        e if e.starts_with("stream:") => Refusal { failed: None, tell: Tell::Quietly },
        e if e.starts_with("call:") => {
            let call_id = contract::client_message_id(data, "callId").unwrap_or_default();
            Refusal { failed: None, tell: Tell::CallError { call_id } }
        }
        _ => Refusal { failed: None, tell: Tell::Error },
    }
}

/// A message in any of nchat's shapes: the contract's fields, plus `tempId` (lib/socket's optimistic id, the
/// idempotency key when no `clientMessageId` is given), `parentMessageId` / `replyToId` (a reply),
/// `mentions` as ids or as lib/socket's `{type, id?, …}` objects, and `attachmentIds`.
pub fn outgoing(data: &Value, max_message_length: usize) -> AppResult<Outgoing> {
    let p = Payload::object(data)?;
    let room = super::message_room(&p, "channelId (or roomName) is required")?;
    let content = super::message_content(&p, max_message_length)?;
    let attachments = match p.opt_json("attachments", limits::ATTACHMENTS, true)? {
        Some(a) => Some(a),
        None => p.opt_ids("attachmentIds")?.map(|ids| Value::from(ids).to_string()),
    };
    if let Some(Value::Array(a)) = p.raw("attachments").or(p.raw("attachmentIds"))
        && a.len() > limits::ATTACHMENT_COUNT
    {
        return Err(AppError::too_large("attachments", limits::ATTACHMENT_COUNT));
    }
    if content.trim().is_empty() && attachments.is_none() {
        return Err(AppError::validation("content is required (or attachments)"));
    }
    if let Some(Value::Array(m)) = p.raw("mentions") {
        if m.len() > limits::ID_ARRAY {
            return Err(AppError::too_large("mentions", limits::ID_ARRAY)
                .with_details(json!({"field": "mentions", "maxItems": limits::ID_ARRAY})));
        }
        if !m.iter().all(|x| x.is_string() || x.is_number() || x.is_object()) {
            return Err(AppError::validation("mentions must be an array of ids or of {type, id?} objects"));
        }
    }
    let reply_to = match p.opt_id("replyTo")? {
        Some(r) => Some(r),
        None => match p.opt_id("parentMessageId")? {
            Some(r) => Some(r),
            None => p.opt_id("replyToId")?,
        },
    };
    let client_message_id = match p.opt_str("clientMessageId", limits::ID)? {
        Some(c) => Some(c.to_string()),
        None => p.opt_str("tempId", limits::ID)?.map(str::to_string),
    };
    Ok(Outgoing {
        room,
        kind: p.opt_str("type", limits::SHORT)?.unwrap_or("text").to_string(),
        content,
        thread_id: p.opt_id("threadId")?,
        reply_to,
        metadata: p.opt_json("metadata", limits::METADATA, false)?,
        mentions: p.opt_json("mentions", limits::METADATA, true)?,
        attachments,
        client_message_id,
    })
}

/// `message:send` / inbound `message:new`: the contract's ack, with `messageId` also at the top level
/// (socketManager reads it there).
async fn send(cx: &Cx<'_>, out: Outgoing) -> AppResult<Reply> {
    let done = contract::commit(cx, out).await?;
    Ok(Reply::Later(Box::pin(async move {
        match done.await? {
            Reply::Data(ack) => {
                let id = ack.get("messageId").cloned().unwrap_or(Value::Null);
                Ok(Reply::Raw(json!({ "success": true, "data": ack, "messageId": id })))
            }
            other => Ok(other),
        }
    })))
}

/// `user:status {status, customStatus?, customEmoji?, expiresAt?}`: a presence update whose custom status
/// may expire.
fn user_status(data: &Value) -> AppResult<PresenceUpdate> {
    let p = Payload::object(data)?;
    let mut update = json!({ "status": p.raw("status").cloned().unwrap_or(Value::Null) });
    match p.raw("customStatus") {
        Some(Value::String(text)) => {
            update["customStatus"] = json!({
                "text": text,
                "emoji": p.raw("customEmoji").cloned().unwrap_or(Value::Null),
                "expiresAt": p.raw("expiresAt").cloned().unwrap_or(Value::Null),
            });
        }
        Some(other) => update["customStatus"] = other.clone(),
        None => {
            if let Some(e) = p.raw("customEmoji") {
                update["customEmoji"] = e.clone();
            }
        }
    }
    super::presence_update(&update)
}

/// `presence:subscribe`: `presence:bulk` (the contract's shape on a compat socket, lib/socket's otherwise),
/// then one `presence:update` per user (lib/socket's `useUserPresence` reads only those).
async fn presence_subscribe(cx: &Cx<'_>, ids: &[String]) -> AppResult<Reply> {
    let presences = contract::subscribe(cx, ids).await?;
    let bulk = if cx.dialect == Dialect::Compat {
        json!({ "presences": presences })
    } else {
        json!({ "presences": presences.iter().map(presence_event).collect::<Vec<_>>() })
    };
    cx.out.emit("presence:bulk", &bulk);
    for p in &presences {
        cx.out.emit("presence:update", &presence_event(p));
    }
    Ok(Reply::Data(bulk))
}

fn signal_of(event: &str) -> Option<Signal> {
    Some(match event {
        "call:initiate" => Signal::Initiate,
        "call:accept" => Signal::Accept,
        "call:decline" => Signal::Decline,
        "call:busy" => Signal::Busy,
        "call:cancelled" => Signal::Cancel,
        "call:end" => Signal::End,
        "call:offer" => Signal::Offer,
        "call:answer" => Signal::Answer,
        "call:ice-candidate" => Signal::IceCandidate,
        "call:renegotiate" => Signal::Renegotiate,
        "call:mute:changed" => Signal::MuteChanged,
        "call:video:changed" => Signal::VideoChanged,
        "call:screen-share:started" => Signal::ScreenShareStarted,
        "call:screen-share:stopped" => Signal::ScreenShareStopped,
        _ => return None,
    })
}

/// The wire name of a signal.
pub fn signal_name(signal: Signal) -> &'static str {
    match signal {
        Signal::Initiate => "call:initiate",
        Signal::Accept => "call:accept",
        Signal::Decline => "call:decline",
        Signal::Busy => "call:busy",
        Signal::Cancel => "call:cancelled",
        Signal::End => "call:end",
        Signal::Offer => "call:offer",
        Signal::Answer => "call:answer",
        Signal::IceCandidate => "call:ice-candidate",
        Signal::Renegotiate => "call:renegotiate",
        Signal::MuteChanged => "call:mute:changed",
        Signal::VideoChanged => "call:video:changed",
        Signal::ScreenShareStarted => "call:screen-share:started",
        Signal::ScreenShareStopped => "call:screen-share:stopped",
    }
}

/// Reads a `call:*` signal: its routing fields are checked (the user fields must name the sender, checked
/// when it runs), the rest is relayed as sent. Refusals go back as `call:error`.
fn call_command(event: &str, data: &Value) -> AppResult<CallCommand> {
    let Some(signal) = signal_of(event) else {
        return Err(match event {
            "call:ring" | "call:timeout" | "call:participant:joined" | "call:participant:left" | "call:error" => {
                AppError::validation(format!("{event} is sent by the server, not by clients"))
            }
            _ => contract::unknown(event),
        });
    };
    let p = Payload::object(data)?;
    let call_id = p.str("callId", limits::ID)?.to_string();
    if data.to_string().len() > MAX_SIGNAL_BYTES {
        return Err(AppError::too_large(event, MAX_SIGNAL_BYTES));
    }
    let sender = |field: &'static str, required: bool| -> AppResult<Option<(&'static str, String)>> {
        match p.opt_id(field)? {
            Some(v) => Ok(Some((field, v))),
            None if required => Err(AppError::validation(format!("{field} is required"))),
            None => Ok(None),
        }
    };
    let (req, sender) = match signal {
        Signal::Initiate => {
            let target = p.opt_id("targetUserId")?.ok_or_else(|| AppError::validation("targetUserId is required"))?;
            let kind = match p.opt_str("callType", limits::SHORT)? {
                None | Some("voice") => "voice",
                Some("video") => "video",
                Some(_) => return Err(AppError::validation("callType must be voice or video")),
            };
            (CallRequest::Initiate { target, kind: kind.into(), channel_id: p.opt_id("channelId")? }, None)
        }
        s if s.is_direct() => {
            let from = sender("fromUserId", true)?;
            let to = p.opt_id("toUserId")?.ok_or_else(|| AppError::validation("toUserId is required"))?;
            (CallRequest::Direct { signal: s, to }, from)
        }
        Signal::Accept => (CallRequest::Accept, sender("userId", false)?),
        Signal::Decline => (CallRequest::Decline, sender("userId", false)?),
        Signal::Busy => (CallRequest::Busy, sender("userId", false)?),
        Signal::Cancel => (CallRequest::Cancel, sender("cancelledBy", false)?),
        Signal::End => (CallRequest::End, sender("endedBy", false)?),
        s => (CallRequest::Media { signal: s, enabled: p.opt_bool("enabled")? }, sender("userId", false)?),
    };
    Ok(CallCommand { call_id, req, sender, data: data.clone() })
}

/// Relays a call signal; a field naming the sender must name this socket's user.
async fn signal(cx: &Cx<'_>, call: CallCommand) -> AppResult<Reply> {
    let user = cx.user()?;
    if let Some((field, v)) = &call.sender
        && v != user
    {
        return Err(AppError::forbidden(format!("{field} must be the sender ({user})")));
    }
    let who = Caller { account: &cx.session.account, user, author: cx.session.author() };
    cx.node.calls.signal(who, &call.call_id, call.req, call.data).await?;
    Ok(Reply::Done)
}

// ---------------------------------------------------------------------------------------------
// Outbound
// ---------------------------------------------------------------------------------------------

/// The status word these stacks use (`dnd` for the contract's `busy`).
fn status_word(s: PublicStatus) -> &'static str {
    match s {
        PublicStatus::Busy => "dnd",
        other => other.as_str(),
    }
}

/// lib/socket's `PresenceEvent` (also socketManager's `PresencePayload`): `{userId, status, customStatus?:
/// text, customEmoji?, lastSeen?}`.
pub fn presence_event(v: &ViewedPresence) -> Value {
    let mut out = json!({ "userId": v.user_id, "status": status_word(v.status) });
    if let Some(cs) = &v.custom_status {
        put(&mut out, "customStatus", cs.text.clone().map(Value::from));
        put(&mut out, "customEmoji", cs.emoji.clone().map(Value::from));
    }
    put(&mut out, "lastSeen", v.last_seen.map(|t| Value::from(iso_ms(t.timestamp_millis()))));
    out
}

fn user_of(id: &str, author: &Author) -> Value {
    let mut u = json!({ "id": id, "displayName": author.name.clone().unwrap_or_else(|| id.to_string()) });
    put(&mut u, "avatarUrl", author.avatar.clone().map(Value::from));
    u
}

fn typist(u: &TypingUser) -> Author {
    Author { name: u.user_name.clone(), avatar: u.user_avatar.clone() }
}

/// `typing:start` / `typing:stop` per typer who changed (lib/socket), `message:typing` (socketManager), and
/// the whole list as `typing:channel`.
fn typing(change: &TypingChange) -> Vec<Packet<'static>> {
    let list = &change.list;
    let thread = if list.room_type == RoomType::Thread { list.thread_id.clone() } else { None };
    let now = iso_ms(crate::store::now_ms());
    let mut out = Vec::with_capacity(2 * (change.delta.started.len() + change.delta.stopped.len()) + 1);
    for u in &change.delta.started {
        let mut start = json!({
            "userId": u.user_id,
            "channelId": list.room_name,
            "startedAt": iso_ms(u.started_at.timestamp_millis()),
            "user": user_of(&u.user_id, &typist(u)),
        });
        put(&mut start, "threadId", thread.clone().map(Value::from));
        out.push((Cow::Borrowed("typing:start"), start));
        out.push((
            Cow::Borrowed("message:typing"),
            json!({ "channelId": list.room_name, "userId": u.user_id, "isTyping": true }),
        ));
    }
    for user in &change.delta.stopped {
        let mut stop = json!({ "userId": user, "channelId": list.room_name, "stoppedAt": now });
        put(&mut stop, "threadId", thread.clone().map(Value::from));
        out.push((Cow::Borrowed("typing:stop"), stop));
        out.push((
            Cow::Borrowed("message:typing"),
            json!({ "channelId": list.room_name, "userId": user, "isTyping": false }),
        ));
    }
    let users: Vec<Value> = list
        .users
        .iter()
        .map(|u| {
            let mut e = json!({
                "userId": u.user_id,
                "displayName": u.user_name.clone().unwrap_or_else(|| u.user_id.clone()),
                "startedAt": iso_ms(u.started_at.timestamp_millis()),
            });
            put(&mut e, "avatarUrl", u.user_avatar.clone().map(Value::from));
            e
        })
        .collect();
    let mut channel = json!({ "channelId": list.room_name, "users": users });
    put(&mut channel, "threadId", thread.map(Value::from));
    out.push((Cow::Borrowed("typing:channel"), channel));
    out
}

fn member(p: &RoomPresence, joined: bool) -> Vec<Packet<'static>> {
    let channel_id = channel_id_of(&p.room);
    let (name, underscored, at) = if joined {
        ("channel:member:join", "channel:member_join", "joinedAt")
    } else {
        ("channel:member:leave", "channel:member_leave", "leftAt")
    };
    let mut full = json!({ "channelId": channel_id, "userId": p.user, "user": user_of(&p.user, &p.author) });
    full[at] = iso_ms(p.at).into();
    vec![
        (Cow::Borrowed(name), full),
        (Cow::Borrowed(underscored), json!({ "channelId": channel_id, "userId": p.user })),
    ]
}

fn read_update(r: &ReadPosition) -> Value {
    let mut v = json!({ "userId": r.user, "channelId": channel_id_of(&r.room), "messageId": r.message_id,
                        "readAt": iso_ms(r.at) });
    put(&mut v, "threadId", r.thread_id.clone().map(Value::from));
    v
}

fn participant(p: &CallParty) -> Value {
    let mut v = json!({
        "id": p.user,
        "name": p.author.name.clone().unwrap_or_else(|| p.user.clone()),
        "isMuted": p.muted,
        "isVideoEnabled": p.video,
        "isScreenSharing": p.screen_sharing,
        "joinedAt": iso_ms(p.joined_at),
    });
    put(&mut v, "avatarUrl", p.author.avatar.clone().map(Value::from));
    v
}

fn call_event(e: &CallEvent) -> Packet<'_> {
    match e {
        CallEvent::Relayed { signal, body } => (Cow::Borrowed(signal_name(*signal)), body.clone()),
        CallEvent::Ring { call_id, caller, author, kind, channel_id } => {
            let mut v = json!({ "callId": call_id, "callerId": caller,
                                "callerName": author.name.clone().unwrap_or_else(|| caller.clone()),
                                "callType": kind });
            put(&mut v, "callerAvatarUrl", author.avatar.clone().map(Value::from));
            put(&mut v, "channelId", channel_id.clone().map(Value::from));
            (Cow::Borrowed("call:ring"), v)
        }
        CallEvent::ParticipantJoined { call_id, party } => {
            (Cow::Borrowed("call:participant:joined"), json!({ "callId": call_id, "participant": participant(party) }))
        }
        CallEvent::ParticipantLeft { call_id, party } => {
            (Cow::Borrowed("call:participant:left"), json!({ "callId": call_id, "participant": participant(party) }))
        }
        CallEvent::Timeout { call_id } => (Cow::Borrowed("call:timeout"), json!({ "callId": call_id })),
        CallEvent::Ended { call_id, ended_by, reason } => {
            (Cow::Borrowed("call:end"), json!({ "callId": call_id, "endedBy": ended_by, "reason": reason }))
        }
    }
}

/// `message:new` for every reader: the contract's payload plus socketManager's `authorId`.
fn message_new(m: &MessageRow, author: &Author) -> Value {
    let mut v = contract::message_new(m, author);
    v["authorId"] = m.user_id.clone().into();
    v
}

/// Events whose name the contract also uses, in their superset shape (None: the contract's rendering fits
/// every reader, or the event has no such name).
pub(super) fn shared(event: &Event) -> Option<Packet<'_>> {
    Some(match event {
        Event::MessageNew { message, author, .. } => (Cow::Borrowed("message:new"), message_new(message, author)),
        Event::MessageUpdated { message: m, by } => {
            let mut v = contract::message_update(m, by);
            v["isEdited"] = true.into();
            v["updatedAt"] = iso_ms(m.updated_at).into();
            v["authorId"] = m.user_id.clone().into();
            v["createdAt"] = iso_ms(m.created_at).into();
            (Cow::Borrowed("message:update"), v)
        }
        Event::Reaction(c) => {
            let mut v = contract::reaction(c);
            v[if c.added { "addedAt" } else { "removedAt" }] = iso_ms(c.at).into();
            (Cow::Borrowed(if c.added { "reaction:add" } else { "reaction:remove" }), v)
        }
        _ => return None,
    })
}

/// Events whose names the contract does not use.
pub(super) fn extras(event: &Event) -> Vec<Packet<'_>> {
    match event {
        Event::Typing(change) => typing(change),
        Event::PresenceChanged(v) => vec![(Cow::Borrowed("presence:update"), presence_event(v))],
        Event::UserJoined(p) => member(p, true),
        Event::UserLeft(p) => member(p, false),
        Event::ReadUpdate(r) => {
            let mut out = vec![(Cow::Borrowed("read:update"), read_update(r))];
            // lib/socket's useReadReceipts replaces a message's readers with this list: only ever the full one.
            if let Some(readers) = &r.readers {
                let readers: Vec<Value> =
                    readers.iter().map(|(u, at)| json!({ "userId": u, "readAt": iso_ms(*at) })).collect();
                out.push((Cow::Borrowed("read:message"), json!({ "messageId": r.message_id, "readers": readers })));
            }
            out
        }
        Event::Call(c) => vec![call_event(c)],
        _ => Vec::new(),
    }
}

/// The contract's events that only its own clients read (their nchat equivalents are in [`extras`]).
fn contract_only(event: &Event) -> bool {
    matches!(event, Event::Typing(_) | Event::PresenceChanged(_) | Event::UserJoined(_) | Event::UserLeft(_))
}

/// An event as `lib/socket` and `socketManager` read it (the `socket` dialect).
pub fn render(event: &Event) -> Vec<Packet<'_>> {
    let mut out = Vec::with_capacity(2);
    match shared(event) {
        Some(p) => out.push(p),
        None if !contract_only(event) => out.extend(contract::render(event)),
        None => {}
    }
    out.extend(extras(event));
    out
}

/// The sending socket's own copy of its message carries its `tempId` (lib/socket replaces its optimistic
/// copy with it). Only the sending socket gets it: another client's pending optimistic id could be the same.
pub fn render_origin(event: &Event) -> Option<Vec<Packet<'_>>> {
    origin_copy(event, render(event))
}

/// `packets` with the sender's `tempId` put into `message:new`, when the message has a client id.
pub(super) fn origin_copy<'a>(event: &'a Event, mut packets: Vec<Packet<'a>>) -> Option<Vec<Packet<'a>>> {
    let Event::MessageNew { message, origin: Some(_), .. } = event else { return None };
    let temp = message.client_message_id.as_ref()?;
    for (name, payload) in packets.iter_mut() {
        if name == "message:new" {
            payload["tempId"] = temp.clone().into();
        }
    }
    Some(packets)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::events::ReactionChange;
    use crate::domain::typing::{TypingDelta, TypingEventPayload};
    use chrono::DateTime;

    fn row() -> MessageRow {
        MessageRow {
            id: "m1".into(),
            room: "channel:c1".into(),
            seq: 1,
            user_id: "ann".into(),
            kind: "text".into(),
            content: "hi".into(),
            thread_id: None,
            reply_to: None,
            metadata: None,
            mentions: Some(r#"[{"type":"user","id":"bob"}]"#.into()),
            attachments: None,
            client_message_id: Some("tmp-1".into()),
            created_at: 0,
            updated_at: 5,
            edited_at: Some(5),
            deleted_at: None,
        }
    }

    #[test]
    fn nchat_message_shapes_are_read() {
        let out = outgoing(
            &json!({"tempId": "t1", "channelId": "c1", "content": "x", "parentMessageId": "p",
                     "mentions": [{"type": "user", "id": "bob"}], "attachments": [{"id": "a", "url": "u"}]}),
            100,
        )
        .expect("lib/socket shape");
        assert_eq!(out.client_message_id.as_deref(), Some("t1"));
        assert_eq!(out.reply_to.as_deref(), Some("p"));
        assert_eq!(out.room.name, "channel:c1");
        assert!(out.mentions.unwrap().contains("\"type\":\"user\""));
        let out = outgoing(
            &json!({"clientMessageId": "msg_1_x", "channelId": "c2", "content": "r", "replyToId": "q",
                     "attachmentIds": ["f1"]}),
            100,
        )
        .expect("socketManager retry shape");
        assert_eq!((out.client_message_id.as_deref(), out.reply_to.as_deref()), (Some("msg_1_x"), Some("q")));
        assert_eq!(out.attachments.as_deref(), Some(r#"["f1"]"#));
        assert!(outgoing(&json!({"tempId": "t", "channelId": "c1"}), 100).is_err(), "no content");
        assert!(outgoing(&json!({"channelId": "c1", "content": "x", "mentions": [true]}), 100).is_err());
    }

    #[test]
    fn the_sender_copy_alone_carries_the_temp_id() {
        let event = Event::MessageNew { message: row(), author: Author::default(), origin: Some("s1".into()) };
        let all = render(&event);
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].1["authorId"], "ann");
        assert!(all[0].1.get("tempId").is_none());
        let own = render_origin(&event).expect("the sender's copy differs");
        assert_eq!(own[0].1["tempId"], "tmp-1");
        let http = Event::MessageNew { message: row(), author: Author::default(), origin: None };
        assert!(render_origin(&http).is_none(), "no socket sent it: nobody's copy differs");
    }

    #[test]
    fn typing_changes_become_starts_stops_and_the_list() {
        let started = TypingUser {
            user_id: "ann".into(),
            user_name: Some("Ann".into()),
            user_avatar: None,
            started_at: DateTime::from_timestamp_millis(1_000).unwrap(),
        };
        let change = TypingChange {
            list: TypingEventPayload {
                room_name: "c1".into(),
                room_type: RoomType::Channel,
                thread_id: None,
                users: vec![started.clone()],
            },
            delta: TypingDelta { started: vec![started], stopped: vec!["bob".into()] },
        };
        let event = Event::Typing(change);
        let packets = render(&event);
        let names: Vec<&str> = packets.iter().map(|(n, _)| n.as_ref()).collect();
        assert_eq!(names, ["typing:start", "message:typing", "typing:stop", "message:typing", "typing:channel"]);
        assert_eq!(packets[0].1["user"]["displayName"], "Ann");
        assert_eq!(packets[0].1["startedAt"], "1970-01-01T00:00:01.000Z");
        assert!(packets[0].1.get("threadId").is_none(), "channel typing has no threadId key");
        assert_eq!(packets[3].1, json!({"channelId": "c1", "userId": "bob", "isTyping": false}));
    }

    #[test]
    fn shared_names_are_supersets_of_the_contract() {
        let c = ReactionChange {
            message_id: "m1".into(),
            room: "channel:c1".into(),
            user: "bob".into(),
            emoji: "👍".into(),
            count: 1,
            added: true,
            at: 0,
        };
        let event = Event::Reaction(c);
        let (_, contract) = contract::render(&event).unwrap();
        let (_, ours) = shared(&event).unwrap();
        for (k, v) in contract.as_object().unwrap() {
            assert_eq!(&ours[k], v, "{k} keeps the contract's value");
        }
        assert_eq!(ours["addedAt"], "1970-01-01T00:00:00.000Z");
        let update = Event::MessageUpdated { message: row(), by: "ann".into() };
        let (_, v) = shared(&update).unwrap();
        assert_eq!((v["isEdited"].as_bool(), v["authorId"].as_str()), (Some(true), Some("ann")));
    }

    #[test]
    fn presence_uses_the_dnd_word_and_text_statuses() {
        let v = ViewedPresence {
            user_id: "ann".into(),
            status: PublicStatus::Busy,
            custom_status: Some(crate::domain::presence::CustomStatusView {
                text: Some("Focus".into()),
                emoji: Some("🎧".into()),
            }),
            last_seen: None,
        };
        assert_eq!(
            presence_event(&v),
            json!({"userId": "ann", "status": "dnd", "customStatus": "Focus", "customEmoji": "🎧"})
        );
    }
}
