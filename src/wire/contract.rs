//! The dialect of docs/protocol.md (nchat's `services/realtime`, the QUICKSTART page): its inbound event
//! table, read into typed requests for the application, and the rendering of every outbound event and
//! answer.

use std::borrow::Cow;

use serde_json::{Value, json};

use super::{Cx, Packet, Payload, Refusal, Reply, Tell, limits};
use crate::app::connections::RefreshError;
use crate::app::events::{Author, Event, RoomPresence};
use crate::app::messages::{Channels, Outgoing, Sent, SyncPage};
use crate::app::receipts::{ReadRequest, ReadResult};
use crate::app::rooms::Joined;
use crate::app::typing::Typer;
use crate::domain::names::{RoomName, channel_id_of};
use crate::domain::presence::{PresenceUpdate, PrivacySettingsPatch};
use crate::domain::time::iso_ms;
use crate::domain::typing::TypingRequest;
use crate::error::{AppError, AppResult, ErrorCode};
use crate::store::MessageRow;

// ---------------------------------------------------------------------------------------------
// Inbound
// ---------------------------------------------------------------------------------------------

/// A contract event read into what the application is asked to do. [`decode`] is the whole reading of a
/// payload (no I/O, no state), so it can be fuzzed alone; [`run`] carries the command out.
pub enum Command {
    /// `ping`: the client's `timestamp` (echoed raw with an ack).
    Ping {
        timestamp: Value,
    },
    Pong,
    Refresh {
        token: String,
    },
    Join {
        room: String,
    },
    Leave {
        room: String,
        forget: bool,
    },
    ChannelJoin(RoomName),
    ChannelLeave(RoomName),
    Send(Outgoing),
    Edit {
        message_id: String,
        content: String,
    },
    Delete {
        message_id: String,
    },
    Sync {
        channel: String,
        since: Option<i64>,
        after_seq: Option<i64>,
        limit: Option<i64>,
    },
    Channels,
    PresenceUpdate(PresenceUpdate),
    PresenceSubscribe(Vec<String>),
    PresenceUnsubscribe(Vec<String>),
    PresenceGet(Vec<String>),
    PresenceSettings(PrivacySettingsPatch),
    Typing(TypingRequest),
    Read(ReadRequest),
    DeliverySync(Vec<String>),
    React {
        message_id: String,
        emoji: String,
        add: bool,
    },
}

/// Reads one inbound event of the contract into its command (`max_message_length`: the configured bound of
/// a message's content). Unknown events are `UNKNOWN_EVENT`.
pub fn decode(event: &str, data: &Value, max_message_length: usize) -> AppResult<Command> {
    Ok(match event {
        "ping" => Command::Ping {
            timestamp: match data {
                Value::Object(m) => m.get("timestamp").cloned().unwrap_or(Value::Null),
                Value::Number(_) => data.clone(),
                _ => Value::Null,
            },
        },
        // The original's clients report latency with `pong {timestamp}`: accepted; without a payload it is invalid.
        "pong" => {
            if Payload::object(data)?.opt_i64("timestamp")?.is_none() {
                return Err(AppError::validation("pong needs {timestamp: number}"));
            }
            Command::Pong
        }
        // Larger than the verifier allows, so an oversized token is refused as a token (INVALID_TOKEN).
        "auth:refresh" => Command::Refresh { token: Payload::object(data)?.str("token", 64 * 1024)?.to_string() },

        "room:join" => Command::Join { room: Payload::object(data)?.str("roomName", limits::ID)?.to_string() },
        "room:leave" => {
            let p = Payload::object(data)?;
            let room = p.str("roomName", limits::ID)?.to_string();
            Command::Leave { room, forget: p.opt_bool("forget")?.unwrap_or(false) }
        }
        "channel:join" => Command::ChannelJoin(channel_room(data)?),
        "channel:leave" => Command::ChannelLeave(channel_room(data)?),

        "message:send" => Command::Send(super::outgoing(data, max_message_length)?),
        "message:edit" => {
            let p = Payload::object(data)?;
            let message_id = p.opt_id("messageId")?.ok_or_else(|| AppError::validation("messageId is required"))?;
            Command::Edit { message_id, content: p.str("content", max_message_length)?.to_string() }
        }
        "message:delete" => Command::Delete { message_id: required_id(data, "messageId")? },
        "sync:messages" => {
            let p = Payload::object(data)?;
            let channel = match (p.opt_id("channelId")?, p.opt_str("roomName", limits::ID)?) {
                (Some(id), _) => id,
                (None, Some(name)) => name.to_string(),
                (None, None) => return Err(AppError::validation("channelId (or roomName) is required")),
            };
            let (since, after_seq, limit) = (p.opt_i64("since")?, p.opt_i64("afterSeq")?, p.opt_i64("limit")?);
            Command::Sync { channel, since, after_seq, limit }
        }
        "sync:channels" => {
            if !data.is_null() {
                Payload::object(data)?.opt_i64("since")?;
            }
            Command::Channels
        }

        "presence:update" => Command::PresenceUpdate(super::presence_update(data)?),
        "presence:subscribe" => Command::PresenceSubscribe(Payload::object(data)?.ids("userIds")?),
        "presence:unsubscribe" => Command::PresenceUnsubscribe(Payload::object(data)?.ids("userIds")?),
        "presence:get" => Command::PresenceGet(Payload::object(data)?.ids("userIds")?),
        "presence:settings" => Command::PresenceSettings(settings_patch(data)?),

        "typing:start" | "typing:stop" | "typing" => Command::Typing(super::typing_request(event, data)?),

        "message:read-ack" | "read:update" => Command::Read(ReadRequest::Message(required_id(data, "messageId")?)),
        "receipt:update" => Command::Read(receipt_update(data)?),
        "message:batch-read-ack" => Command::Read(ReadRequest::Batch(Payload::object(data)?.ids("messageIds")?)),
        "channel:read" => Command::Read(ReadRequest::Channel(required_id(data, "channelId")?)),
        "delivery:sync" => Command::DeliverySync(Payload::object(data)?.ids("messageIds")?),
        "reaction:add" | "reaction:remove" => {
            let p = Payload::object(data)?;
            let message_id = p.opt_id("messageId")?.ok_or_else(|| AppError::validation("messageId is required"))?;
            let emoji = p.str("emoji", limits::EMOJI_BYTES)?.trim().to_string();
            Command::React { message_id, emoji, add: event == "reaction:add" }
        }

        _ => return Err(unknown(event)),
    })
}

/// Carries out a decoded command.
pub async fn run(cx: &Cx<'_>, command: Command) -> AppResult<Reply> {
    match command {
        Command::Ping { timestamp } => Ok(ping(cx, timestamp)),
        Command::Pong => Ok(Reply::Done),
        Command::Refresh { token } => refresh(cx, token).await,

        Command::Join { room } => join(cx, &room).await,
        Command::Leave { room, forget } => leave(cx, &room, forget).await,
        Command::ChannelJoin(room) => channel_join(cx, room).await.map(|(_, j)| Reply::Data(joined_ack(&j))),
        Command::ChannelLeave(room) => channel_leave(cx, room).await.map(Reply::Data),

        Command::Send(out) => Ok(Reply::Later(Box::pin(commit(cx, out).await?))),
        Command::Edit { message_id, content } => edit(cx, &message_id, content).await,
        Command::Delete { message_id } => delete(cx, &message_id).await,
        Command::Sync { channel, since, after_seq, limit } => sync(cx, &channel, since, after_seq, limit).await,
        Command::Channels => channels(cx).await,

        Command::PresenceUpdate(update) => apply_presence(cx, update).await,
        Command::PresenceSubscribe(ids) => presence_subscribe(cx, &ids).await,
        Command::PresenceUnsubscribe(ids) => presence_unsubscribe(cx, &ids).await,
        Command::PresenceGet(ids) => presence_get(cx, &ids).await,
        Command::PresenceSettings(patch) => presence_settings(cx, &patch).await,

        Command::Typing(req) => apply_typing(cx, req).await,

        Command::Read(req) => read(cx, req, None).await,
        Command::DeliverySync(ids) => delivery_sync(cx, &ids).await,
        Command::React { message_id, emoji, add } => react(cx, &message_id, &emoji, add).await,
    }
}

/// The room of `channel:join` / `channel:leave {channelId}`: `channel:<id>`.
pub(super) fn channel_room(data: &Value) -> AppResult<RoomName> {
    RoomName::from_channel_id(&required_id(data, "channelId")?).map_err(AppError::validation)
}

/// `UNKNOWN_EVENT` for an event name no dialect of this socket knows.
pub(super) fn unknown(event: &str) -> AppError {
    AppError::new(ErrorCode::UnknownEvent, format!("unknown event {:?}", truncate(event, 64)))
}

/// Events that are liveness, not load: exempt from the rate limit and from touching presence.
pub fn is_liveness(event: &str) -> bool {
    matches!(event, "ping" | "pong")
}

/// How a refusal is told (read before the payload is handled): a `message:send` with a `clientMessageId`
/// also tells the offline queue with `message:failed`; a refused `auth:refresh` is told by its `auth:error`
/// alone (one signal); everything else without an ack gets `error`.
pub fn refusal(event: &str, data: Option<&Value>) -> Refusal {
    let failed = (event == "message:send").then(|| client_message_id(data, "clientMessageId")).flatten();
    let tell = if event == "auth:refresh" { Tell::Quietly } else { Tell::Error };
    Refusal { failed, tell }
}

/// A string id field of a payload, cut to the id limit (for refusals, read before validation).
pub(super) fn client_message_id(data: Option<&Value>, field: &str) -> Option<String> {
    let cid = data?.get(field)?.as_str()?;
    Some(cid.chars().take(limits::ID).collect())
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

pub(super) fn required_id(data: &Value, field: &str) -> AppResult<String> {
    Payload::object(data)?.opt_id(field)?.ok_or_else(|| AppError::validation(format!("{field} is required")))
}

// ----- connection --------------------------------------------------------------------------------------

/// With an ack: the client's own `{timestamp}` back, raw (nchat computes latency from it).
/// Without: `pong {timestamp: server ms}`.
fn ping(cx: &Cx<'_>, timestamp: Value) -> Reply {
    if cx.has_ack {
        Reply::Raw(json!({ "timestamp": timestamp }))
    } else {
        cx.out.emit("pong", &json!({ "timestamp": crate::store::now_ms() }));
        Reply::Done
    }
}

/// `connected`, sent after CONNECT.
pub fn connected(socket_id: &str) -> Value {
    json!({ "socketId": socket_id, "serverTime": iso_ms(crate::store::now_ms()), "protocolVersion": 5 })
}

/// `authenticated {userId, sessionId, rooms}`, after CONNECT and after a refresh.
pub fn authenticated(cx_user: Option<&str>, session_id: &str, rooms: &[String]) -> Value {
    json!({ "userId": cx_user, "sessionId": session_id, "rooms": rooms })
}

/// `auth:refresh {token}`: re-verify; `authenticated` again, or `auth:error`. The user may not change.
async fn refresh(cx: &Cx<'_>, token: String) -> AppResult<Reply> {
    match cx.node.connections.refresh(cx.session, &token).await {
        Ok(_) => {
            let rooms = cx.node.roster.rooms_of(&cx.session.sid).await.unwrap_or_default().rooms;
            let payload = authenticated(cx.session.user(), &cx.session.session_id(), &rooms);
            cx.out.emit("authenticated", &payload);
            Ok(Reply::Data(payload))
        }
        Err(e) => {
            let (code, message) = match e {
                RefreshError::Invalid(m) => ("INVALID_TOKEN", m),
                RefreshError::UserMismatch(m) => ("USER_MISMATCH", m),
            };
            cx.out.emit("auth:error", &json!({ "code": code, "message": message }));
            Err(AppError::new(ErrorCode::Unauthenticated, message))
        }
    }
}

// ----- rooms -------------------------------------------------------------------------------------------

pub(super) fn joined_ack(j: &Joined) -> Value {
    let mut v = json!({ "roomName": j.room.name, "type": j.room.kind, "memberCount": j.member_count });
    if let Some(m) = &j.members {
        v["members"] = m.iter().map(|m| json!({ "userId": m.user_id, "joinedAt": iso_ms(m.joined_at) })).collect();
    }
    v
}

async fn join(cx: &Cx<'_>, name: &str) -> AppResult<Reply> {
    Ok(Reply::Data(joined_ack(&cx.node.rooms.join(cx.session, name).await?)))
}

async fn leave(cx: &Cx<'_>, name: &str, forget: bool) -> AppResult<Reply> {
    let room = cx.node.rooms.leave(cx.session, name, forget).await?;
    cx.state.left(&room.name);
    Ok(Reply::Data(json!({ "roomName": room.name })))
}

/// `channel:join {channelId}`: the room `channel:<id>`. The socket hears `channel:joined` once per room: a
/// repeated join (nchat's hooks join twice per mount) is answered by its ack only.
pub(super) async fn channel_join(cx: &Cx<'_>, room: RoomName) -> AppResult<(RoomName, Joined)> {
    let joined = cx.node.rooms.join(cx.session, &room.name).await?;
    if cx.state.first_join(&room.name) {
        cx.out.emit("channel:joined", &json!({ "channelId": room.channel_id(), "userId": cx.session.user() }));
    }
    Ok((room, joined))
}

/// `channel:leave {channelId}`: answered with `channel:left` (and the ack).
pub(super) async fn channel_leave(cx: &Cx<'_>, room: RoomName) -> AppResult<Value> {
    cx.node.rooms.leave(cx.session, &room.name, false).await?;
    cx.state.left(&room.name);
    let payload = json!({ "channelId": room.channel_id(), "userId": cx.session.user() });
    cx.out.emit("channel:left", &payload);
    Ok(payload)
}

// ----- messages ----------------------------------------------------------------------------------------

/// Queues a message for its commit; the future completes it (broadcast, `message:sent`) and answers the ack.
pub(super) async fn commit(
    cx: &Cx<'_>,
    out: Outgoing,
) -> AppResult<impl std::future::Future<Output = AppResult<Reply>> + Send + 'static> {
    let user = cx.user()?;
    let pending = cx.node.messages.begin(&cx.session.account, user, out).await?;
    // The commit is awaited outside the socket's queue: its next events (often more messages of an offline
    // queue) go on meanwhile and share the writer's transaction. The chain keeps the broadcast order.
    let (before, done) = cx.session.next_send();
    let (node, session) = (cx.node.clone(), cx.session.clone());
    Ok(async move {
        let account = &session.account;
        let user = session.user().unwrap_or_default();
        let origin = Some(session.sid.clone());
        let result = node.messages.complete(account, session.author(), pending, before, origin).await;
        drop(done);
        let sent = result?;
        node.messages.confirm_to_sender(account, user, &sent.message).await;
        Ok(Reply::Data(sent_ack(&sent)))
    })
}

/// The ack of a committed `message:send` (and the body of `POST /messages`).
pub fn sent_ack(sent: &Sent) -> Value {
    let m = &sent.message;
    let mut ack = json!({ "messageId": m.id, "seq": m.seq, "createdAt": iso_ms(m.created_at) });
    if let Some(c) = &m.client_message_id {
        ack["clientMessageId"] = c.clone().into();
    }
    if sent.duplicate {
        ack["duplicate"] = true.into();
    }
    ack
}

async fn edit(cx: &Cx<'_>, id: &str, content: String) -> AppResult<Reply> {
    let user = cx.user()?;
    let m = cx.node.messages.change(&cx.session.account, user, id, Some(content)).await?;
    Ok(Reply::Data(json!({ "messageId": m.id, "editedAt": iso_ms(m.updated_at) })))
}

async fn delete(cx: &Cx<'_>, id: &str) -> AppResult<Reply> {
    let user = cx.user()?;
    let m = cx.node.messages.change(&cx.session.account, user, id, None).await?;
    Ok(Reply::Data(json!({ "messageId": m.id, "deletedAt": iso_ms(m.updated_at) })))
}

async fn sync(
    cx: &Cx<'_>,
    id: &str,
    since: Option<i64>,
    after_seq: Option<i64>,
    limit: Option<i64>,
) -> AppResult<Reply> {
    let user = cx.user()?;
    let account = &cx.session.account;
    let room = crate::app::rooms::resolve_channel(&cx.node.store, account, user, id).await?;
    let page = cx.node.messages.sync(account, user, &room, since, after_seq, limit).await?;
    Ok(Reply::Data(sync_page(&page)))
}

/// A `sync:messages` page (and the body of `GET /poll`).
pub fn sync_page(page: &SyncPage) -> Value {
    json!({
        "messages": page.messages.iter().map(synced_message).collect::<Vec<_>>(),
        "serverTime": page.server_time,
        "hasMore": page.has_more,
    })
}

async fn channels(cx: &Cx<'_>) -> AppResult<Reply> {
    let user = cx.user()?;
    Ok(Reply::Data(channel_list(&cx.node.messages.channels(&cx.session.account, user).await?)))
}

fn channel_list(c: &Channels) -> Value {
    let channels: Vec<Value> = c
        .channels
        .iter()
        .map(|c| {
            let mut v = json!({
                "id": channel_id_of(&c.name),
                "name": c.name,
                "type": c.kind,
                "memberCount": c.member_count,
                "unreadCount": c.unread,
            });
            if let Some(t) = c.last_message_at {
                v["lastMessageAt"] = iso_ms(t).into();
            }
            v
        })
        .collect();
    json!({ "channels": channels, "serverTime": c.server_time })
}

// ----- presence ----------------------------------------------------------------------------------------

/// The session ended while this event ran (the disconnect cleaned up before it registered anything): take
/// the socket out of presence again, subscriptions included.
async fn undo_if_closed(cx: &Cx<'_>, user: &str) {
    if cx.session.is_closed() {
        cx.node.presence.disconnected(&cx.session.account, user, &cx.session.sid).await;
    }
}

/// A presence change of this socket.
pub(super) async fn apply_presence(cx: &Cx<'_>, update: crate::domain::presence::PresenceUpdate) -> AppResult<Reply> {
    let user = cx.user()?;
    cx.node.presence.update(&cx.session.account, user, &cx.session.sid, update).await?;
    undo_if_closed(cx, user).await;
    Ok(Reply::Done)
}

async fn presence_subscribe(cx: &Cx<'_>, ids: &[String]) -> AppResult<Reply> {
    let presences = subscribe(cx, ids).await?;
    let payload = json!({ "presences": presences });
    cx.out.emit("presence:bulk", &payload);
    Ok(Reply::Data(payload))
}

/// Subscribes this socket to `{userIds}`; what it may see of each now.
pub(super) async fn subscribe(cx: &Cx<'_>, ids: &[String]) -> AppResult<Vec<crate::domain::presence::ViewedPresence>> {
    let user = cx.user()?;
    let account = &cx.session.account;
    cx.node.presence.subscribe(account, user, &cx.session.sid, ids).await;
    undo_if_closed(cx, user).await;
    cx.node.presence.views_for(account, Some(user), ids).await
}

async fn presence_unsubscribe(cx: &Cx<'_>, ids: &[String]) -> AppResult<Reply> {
    let user = cx.user()?;
    cx.node.presence.unsubscribe(&cx.session.account, user, &cx.session.sid, ids).await;
    Ok(Reply::Done)
}

async fn presence_get(cx: &Cx<'_>, ids: &[String]) -> AppResult<Reply> {
    let presences = cx.node.presence.views_for(&cx.session.account, cx.session.user(), ids).await?;
    Ok(Reply::Data(json!({ "presences": presences })))
}

/// A `presence:settings` patch (also the body of `PUT /api/users/:id/presence-settings`).
pub fn settings_patch(data: &Value) -> AppResult<PrivacySettingsPatch> {
    Payload::object(data)?;
    serde_json::from_value(data.clone()).map_err(|e| {
        AppError::validation(format!(
            "settings must be {{visibility?: everyone|contacts|nobody, showOnlineStatus?, showLastSeen?, \
             allowReadReceipts?, invisibleMode?: boolean}} ({e})"
        ))
    })
}

async fn presence_settings(cx: &Cx<'_>, patch: &PrivacySettingsPatch) -> AppResult<Reply> {
    let user = cx.user()?;
    let merged = cx.node.presence.change_settings(&cx.session.account, user, patch).await?;
    Ok(Reply::Data(serde_json::to_value(merged).expect("settings serialise")))
}

// ----- typing ------------------------------------------------------------------------------------------

/// A typing start or stop of this socket.
pub(super) async fn apply_typing(cx: &Cx<'_>, req: crate::domain::typing::TypingRequest) -> AppResult<Reply> {
    let user = cx.user()?;
    let typer = Typer { account: &cx.session.account, user, device: &cx.session.sid, author: cx.session.author() };
    cx.node.typing.socket_typing(typer, req).await?;
    Ok(Reply::Done)
}

// ----- receipts and reactions --------------------------------------------------------------------------

fn receipt_update(data: &Value) -> AppResult<ReadRequest> {
    let p = Payload::object(data)?;
    let message_id = p.opt_id("messageId")?.ok_or_else(|| AppError::validation("messageId is required"))?;
    let read = match p.str("status", 32)? {
        "read" => true,
        "delivered" => false,
        other => return Err(AppError::validation(format!("status must be delivered or read, not {other:?}"))),
    };
    Ok(ReadRequest::Receipt { message_id, read })
}

pub(super) async fn read(cx: &Cx<'_>, req: ReadRequest, thread: Option<String>) -> AppResult<Reply> {
    let user = cx.user()?;
    let result = cx.node.receipts.read(&cx.session.account, user, &cx.session.sid, req, thread).await?;
    Ok(Reply::Data(match result {
        ReadResult::Delivered { message_id } => json!({ "messageId": message_id, "status": "delivered" }),
        ReadResult::Read { room, watermark } => {
            json!({ "channelId": channel_id_of(&room), "roomName": room, "readSeq": watermark })
        }
    }))
}

async fn delivery_sync(cx: &Cx<'_>, ids: &[String]) -> AppResult<Reply> {
    let user = cx.user()?;
    let response = cx.node.receipts.delivery_sync(&cx.session.account, user, ids).await?;
    let response = serde_json::to_value(response).expect("serialisable");
    cx.out.emit("delivery:sync-response", &response);
    Ok(Reply::Data(response))
}

async fn react(cx: &Cx<'_>, id: &str, emoji: &str, add: bool) -> AppResult<Reply> {
    let user = cx.user()?;
    let change = cx.node.reactions.react(&cx.session.account, user, id, emoji, add).await?;
    Ok(Reply::Data(reaction(&change)))
}

pub(super) fn reaction(c: &crate::app::events::ReactionChange) -> Value {
    json!({ "messageId": c.message_id, "channelId": channel_id_of(&c.room), "roomName": c.room,
            "userId": c.user, "emoji": c.emoji, "count": c.count })
}

// ---------------------------------------------------------------------------------------------
// Outbound
// ---------------------------------------------------------------------------------------------

pub(super) fn put(v: &mut Value, key: &str, val: Option<Value>) {
    if let (Some(o), Some(val)) = (v.as_object_mut(), val) {
        o.insert(key.to_string(), val);
    }
}

fn parse_json_text(text: &Option<String>) -> Option<Value> {
    text.as_deref().and_then(|t| serde_json::from_str(t).ok())
}

/// `message:new`: one superset payload that both nchat readers accept.
pub fn message_new(m: &MessageRow, author: &Author) -> Value {
    let mut v = json!({
        "id": m.id,
        "messageId": m.id,
        "roomName": m.room,
        "channelId": channel_id_of(&m.room),
        "userId": m.user_id,
        "content": m.content,
        "type": m.kind,
        "seq": m.seq,
        "createdAt": iso_ms(m.created_at),
        "timestamp": iso_ms(m.created_at),
    });
    put(&mut v, "userName", author.name.clone().map(Value::from));
    put(&mut v, "userAvatar", author.avatar.clone().map(Value::from));
    put(&mut v, "threadId", m.thread_id.clone().map(Value::from));
    put(&mut v, "replyTo", m.reply_to.clone().map(Value::from));
    put(&mut v, "metadata", parse_json_text(&m.metadata));
    put(&mut v, "mentions", parse_json_text(&m.mentions));
    put(&mut v, "attachments", parse_json_text(&m.attachments));
    put(&mut v, "clientMessageId", m.client_message_id.clone().map(Value::from));
    v
}

/// One message of a `sync:messages` page.
pub fn synced_message(m: &MessageRow) -> Value {
    let mut v = json!({
        "id": m.id,
        "channelId": channel_id_of(&m.room),
        "content": if m.deleted_at.is_some() { "" } else { m.content.as_str() },
        "userId": m.user_id,
        "createdAt": iso_ms(m.created_at),
        "type": m.kind,
        "seq": m.seq,
        "isEdited": m.edited_at.is_some(),
        "isDeleted": m.deleted_at.is_some(),
    });
    if m.updated_at != m.created_at {
        put(&mut v, "updatedAt", Some(iso_ms(m.updated_at).into()));
    }
    put(&mut v, "threadId", m.thread_id.clone().map(Value::from));
    put(&mut v, "clientMessageId", m.client_message_id.clone().map(Value::from));
    put(&mut v, "metadata", parse_json_text(&m.metadata));
    v
}

pub(super) fn room_presence(p: &RoomPresence) -> Value {
    json!({
        "roomName": p.room,
        "userId": p.user,
        "userName": p.author.name,
        "userAvatar": p.author.avatar,
        "timestamp": iso_ms(p.at),
    })
}

fn to_value(v: &impl serde::Serialize) -> Value {
    serde_json::to_value(v).expect("outbound payloads serialise")
}

/// `message:update`.
pub(super) fn message_update(m: &MessageRow, by: &str) -> Value {
    json!({ "id": m.id, "messageId": m.id, "channelId": channel_id_of(&m.room), "roomName": m.room,
            "content": m.content, "editedBy": by, "editedAt": iso_ms(m.updated_at) })
}

/// `message:delete`.
pub(super) fn message_delete(m: &MessageRow, by: &str) -> Value {
    json!({ "id": m.id, "messageId": m.id, "channelId": channel_id_of(&m.room), "roomName": m.room,
            "deletedBy": by, "deletedAt": iso_ms(m.updated_at) })
}

/// The event name and payload of an outbound event in this dialect (None: the dialect has no such event).
pub fn render(event: &Event) -> Option<Packet<'_>> {
    let (name, payload) = match event {
        Event::MessageNew { message, author, .. } => ("message:new", message_new(message, author)),
        Event::MessageSent { message } => (
            "message:sent",
            json!({ "clientMessageId": message.client_message_id, "messageId": message.id,
                    "sentAt": iso_ms(message.created_at) }),
        ),
        Event::MessageUpdated { message: m, by } => ("message:update", message_update(m, by)),
        Event::MessageDeleted { message: m, by } => ("message:delete", message_delete(m, by)),
        Event::UserJoined(p) => ("user:joined", room_presence(p)),
        Event::UserLeft(p) => ("user:left", room_presence(p)),
        Event::Typing(p) => ("typing:event", to_value(&p.list)),
        Event::PresenceChanged(v) => ("presence:changed", to_value(v)),
        Event::Delivered(d) => ("message:delivered", to_value(d)),
        Event::Acked(a) => ("message:ack", to_value(a)),
        Event::Read(r) => ("message:read", to_value(r)),
        Event::BatchRead(r) => ("message:batch-read", to_value(r)),
        Event::Reaction(c) => (if c.added { "reaction:add" } else { "reaction:remove" }, reaction(c)),
        Event::TokenExpired => (
            "auth:error",
            json!({ "code": "TOKEN_EXPIRED", "message": "the token expired; reconnect with a new token" }),
        ),
        Event::Custom { name, payload } => return Some((Cow::Borrowed(name.as_str()), payload.clone())),
        Event::ReadUpdate(_) | Event::Call(_) => return None,
    };
    Some((Cow::Borrowed(name), payload))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row() -> MessageRow {
        MessageRow {
            id: "m1".into(),
            room: "channel:c1".into(),
            seq: 7,
            user_id: "u1".into(),
            kind: "text".into(),
            content: "hi".into(),
            thread_id: None,
            reply_to: Some("m0".into()),
            metadata: Some("{\"k\":1}".into()),
            mentions: None,
            attachments: None,
            client_message_id: Some("c-1".into()),
            created_at: 0,
            updated_at: 0,
            edited_at: None,
            deleted_at: None,
        }
    }

    #[test]
    fn message_new_is_the_superset() {
        let v = message_new(&row(), &Author { name: Some("Ann".into()), avatar: None });
        assert_eq!(v["id"], "m1");
        assert_eq!(v["messageId"], "m1");
        assert_eq!(v["channelId"], "c1");
        assert_eq!(v["roomName"], "channel:c1");
        assert_eq!(v["userName"], "Ann");
        assert_eq!(v["metadata"]["k"], 1);
        assert_eq!(v["clientMessageId"], "c-1");
        assert_eq!(v["createdAt"], "1970-01-01T00:00:00.000Z");
        assert!(v.get("threadId").is_none());
        assert!(v.get("userAvatar").is_none());
    }

    #[test]
    fn every_event_has_its_contract_name() {
        let m = row();
        let cases = [
            (Event::MessageNew { message: m.clone(), author: Author::default(), origin: None }, "message:new"),
            (Event::MessageSent { message: m.clone() }, "message:sent"),
            (Event::MessageUpdated { message: m.clone(), by: "u".into() }, "message:update"),
            (Event::MessageDeleted { message: m.clone(), by: "u".into() }, "message:delete"),
            (Event::TokenExpired, "auth:error"),
            (Event::Custom { name: "app:thing".into(), payload: json!({"a": 1}) }, "app:thing"),
        ];
        for (event, name) in cases {
            assert_eq!(render(&event).expect("rendered").0, name);
        }
        let (_, v) = render(&Event::MessageDeleted { message: m, by: "mod".into() }).expect("rendered");
        assert_eq!((v["deletedBy"].as_str(), v["channelId"].as_str()), (Some("mod"), Some("c1")));
    }
}
