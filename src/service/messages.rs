//! Sending, editing, deleting and recovering messages (CONTRACT §5).

use std::time::Instant;

use serde_json::{Value, json};

use crate::domain::names::{RoomName, room_key, user_room};
use crate::domain::policy;
use crate::error::{AppError, AppResult};
use crate::hub::Hub;
use crate::store::writer::{Queued, WriteOp, WriteOutcome};
use crate::store::{MessageRow, NewMessage};
use crate::wire::{self, Author, iso};

/// A validated `message:send`.
pub struct Outgoing {
    pub room: RoomName,
    pub kind: String,
    pub content: String,
    pub thread_id: Option<String>,
    pub reply_to: Option<String>,
    pub metadata: Option<String>,
    pub mentions: Option<String>,
    pub attachments: Option<String>,
    pub client_message_id: Option<String>,
}

pub struct Sent {
    pub message: MessageRow,
    /// True when this was a retry of a message already stored (not broadcast again).
    pub duplicate: bool,
}

/// A message checked and queued for its commit.
pub struct Pending {
    queued: Queued,
    room: RoomName,
    received: Instant,
}

/// Checks the sender may write, and queues the message (not yet durable, not yet broadcast).
pub async fn begin(hub: &Hub, account: &str, user: &str, out: Outgoing) -> AppResult<Pending> {
    let received = Instant::now();
    let member = hub.store.member(account, &out.room.name, user).await?;
    policy::check_write(Some(user), &out.room, member.as_ref().map(|m| m.facts()).as_ref())?;
    let op = WriteOp::Insert(NewMessage {
        id: uuid::Uuid::now_v7().to_string(),
        account: account.to_string(),
        room: out.room.name.clone(),
        user_id: user.to_string(),
        kind: out.kind,
        content: out.content,
        thread_id: out.thread_id,
        reply_to: out.reply_to,
        metadata: out.metadata,
        mentions: out.mentions,
        attachments: out.attachments,
        client_message_id: out.client_message_id,
    });
    Ok(Pending { queued: hub.writer.enqueue(op)?, room: out.room, received })
}

/// Waits for the commit, then (after `before`, the previous message of the same socket) broadcasts it.
/// Only a committed message is ever broadcast or acked.
pub async fn complete(
    hub: &Hub,
    account: &str,
    author: &Author<'_>,
    pending: Pending,
    before: Option<tokio::sync::oneshot::Receiver<()>>,
) -> AppResult<Sent> {
    let Pending { queued, room, received } = pending;
    let outcome = queued.committed().await;
    if let Some(previous) = before {
        let _ = previous.await;
    }
    match outcome? {
        WriteOutcome::Inserted(message) => {
            let payload = wire::message_new(&message, author);
            if let Some(ns) = hub.ns() {
                let _ = ns.to(room_key(account, &message.room)).emit("message:new", &payload).await;
            }
            hub.metrics.messages.inc();
            hub.metrics.broadcasts.inc();
            hub.metrics.latency_ms.observe(received.elapsed().as_secs_f64() * 1000.0);
            crate::service::receipts::message_sent(hub, account, &message).await;
            Ok(Sent { message, duplicate: false })
        }
        WriteOutcome::Duplicate(message) => {
            if message.room != room.name {
                return Err(AppError::validation(format!(
                    "clientMessageId was already used for a message in {}",
                    message.room
                )));
            }
            Ok(Sent { message, duplicate: true })
        }
        WriteOutcome::NotFound => Err(AppError::room_not_found(&room.name)),
        WriteOutcome::Changed(_) => Err(AppError::internal("writer answered an insert with a change")),
    }
}

/// `message:sent` to the sender's own sockets.
pub async fn confirm_to_sender(hub: &Hub, account: &str, user: &str, m: &MessageRow) {
    if let Some(cid) = &m.client_message_id {
        let payload = json!({ "clientMessageId": cid, "messageId": m.id, "sentAt": iso(m.created_at) });
        if let Some(ns) = hub.ns() {
            let _ = ns.to(room_key(account, &user_room(user))).emit("message:sent", &payload).await;
        }
    }
}

/// Edits (content Some) or deletes (None) a message: its author, or a room admin/moderator.
pub async fn change(hub: &Hub, account: &str, user: &str, id: &str, content: Option<String>) -> AppResult<MessageRow> {
    let original = hub
        .store
        .message(account, id)
        .await?
        .filter(|m| m.deleted_at.is_none())
        .ok_or_else(|| AppError::unknown_message(id))?;
    let member = hub.store.member(account, &original.room, user).await?;
    if original.user_id != user {
        if !policy::can_moderate(member.as_ref().map(|m| m.facts()).as_ref()) {
            return Err(AppError::forbidden("only the author or a room admin/moderator may change this message"));
        }
    } else if content.is_some() && member.as_ref().is_none_or(|m| m.banned) {
        // An author may still delete what they wrote, but not put new words into a room they left or were banned from.
        return Err(AppError::forbidden(format!(
            "you are no longer a member of {}: you may delete, not edit",
            original.room
        )));
    }
    let deleting = content.is_none();
    let op = WriteOp::Change { account: account.to_string(), id: id.to_string(), content };
    let changed = match hub.writer.submit(op).await? {
        WriteOutcome::Changed(m) => m,
        _ => return Err(AppError::unknown_message(id)),
    };
    let channel_id = wire::channel_id_of(&changed.room);
    let (event, payload) = if deleting {
        (
            "message:delete",
            json!({ "id": changed.id, "messageId": changed.id, "channelId": channel_id, "roomName": changed.room,
                    "deletedBy": user, "deletedAt": iso(changed.updated_at) }),
        )
    } else {
        (
            "message:update",
            json!({ "id": changed.id, "messageId": changed.id, "channelId": channel_id, "roomName": changed.room,
                    "content": changed.content, "editedBy": user, "editedAt": iso(changed.updated_at) }),
        )
    };
    if let Some(ns) = hub.ns() {
        let _ = ns.to(room_key(account, &changed.room)).emit(event, &payload).await;
    }
    Ok(changed)
}

/// Resolves the room of a sync request: a full room name, or nchat's bare channel id (`channel:<id>`, or a
/// bare room of that name the user belongs to).
pub async fn resolve_channel(hub: &Hub, account: &str, user: &str, id: &str) -> AppResult<RoomName> {
    if id.contains(':') {
        return RoomName::parse(id).map_err(AppError::validation);
    }
    let channel = RoomName::from_channel_id(id).map_err(AppError::validation)?;
    if hub.store.member(account, &channel.name, user).await?.is_some() {
        return Ok(channel);
    }
    let bare = RoomName::parse(id).map_err(AppError::validation)?;
    if hub.store.member(account, &bare.name, user).await?.is_some() {
        return Ok(bare);
    }
    Ok(channel)
}

pub const SYNC_DEFAULT_LIMIT: i64 = 100;
pub const SYNC_MAX_LIMIT: i64 = 1000;

/// `sync:messages`: members only; serverTime is taken before the query so nothing committed meanwhile is
/// skipped by the next call.
pub async fn sync(
    hub: &Hub,
    account: &str,
    user: &str,
    room: &RoomName,
    since: Option<i64>,
    after_seq: Option<i64>,
    limit: Option<i64>,
) -> AppResult<Value> {
    match hub.store.member(account, &room.name, user).await? {
        None => return Err(AppError::not_a_member(&room.name)),
        Some(m) if m.banned => return Err(AppError::forbidden(format!("you are banned from {}", room.name))),
        Some(_) => {}
    }
    let limit = limit.unwrap_or(SYNC_DEFAULT_LIMIT);
    if !(1..=SYNC_MAX_LIMIT).contains(&limit) {
        return Err(AppError::validation(format!("limit must be between 1 and {SYNC_MAX_LIMIT}")));
    }
    let server_time = hub.writer.safe_server_time();
    let page =
        hub.store.sync_messages(account, &room.name, since.unwrap_or(0).max(0), after_seq.unwrap_or(0), limit).await?;
    crate::service::receipts::fetched(hub, account, user, &page.messages).await;
    Ok(json!({
        "messages": page.messages.iter().map(wire::synced_message).collect::<Vec<_>>(),
        "serverTime": server_time,
        "hasMore": page.has_more,
    }))
}

/// `sync:channels`: ALL the user's rooms with their last activity, member and unread counts. `since` is
/// accepted but the list is always complete: a client replacing its list from it never loses a room.
pub async fn channels(hub: &Hub, account: &str, user: &str) -> AppResult<Value> {
    let server_time = crate::store::now_ms();
    // Unread counts come from the stored watermarks: write the pending ones first.
    crate::service::receipts::flush(hub).await;
    let rows = hub.store.channels_of_user(account, user).await?;
    let channels: Vec<Value> = rows
        .iter()
        .map(|c| {
            let mut v = json!({
                "id": wire::channel_id_of(&c.name),
                "name": c.name,
                "type": c.kind,
                "memberCount": c.member_count,
                "unreadCount": c.unread,
            });
            if let Some(t) = c.last_message_at {
                v["lastMessageAt"] = iso(t).into();
            }
            v
        })
        .collect();
    Ok(json!({ "channels": channels, "serverTime": server_time }))
}
