//! `message:send|edit|delete` and `sync:messages|channels`.

use serde_json::{Value, json};

use crate::domain::names::RoomName;
use crate::error::{AppError, AppResult};
use crate::service::messages::{self as svc, Outgoing};
use crate::transport::dispatch::{Cx, Reply};
use crate::wire::{Author, Payload, iso, limits};

/// Reads either `message:send` shape: `{roomName, content, threadId?, replyTo?, metadata?}` (rooms service) or
/// `{channelId, content, type, attachments?, threadId?, mentions?, clientMessageId}` (offline queue).
pub(crate) fn outgoing(p: &Payload<'_>, max_message_length: usize) -> AppResult<Outgoing> {
    let room = match (p.opt_str("roomName", limits::ID)?, p.opt_id("channelId")?) {
        (Some(name), _) => RoomName::parse(name),
        (None, Some(id)) => RoomName::from_channel_id(&id),
        (None, None) => return Err(AppError::validation("roomName or channelId is required")),
    }
    .map_err(AppError::validation)?;
    let content = match p.raw("content") {
        Some(Value::String(s)) if s.len() > max_message_length => {
            return Err(AppError::too_large("content", max_message_length));
        }
        Some(Value::String(s)) => s.clone(),
        Some(_) => return Err(AppError::validation("content must be a string")),
        None => String::new(),
    };
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

pub async fn send(cx: &Cx<'_>, data: Value) -> AppResult<Reply> {
    let client_id: Option<String> =
        data.get("clientMessageId").and_then(Value::as_str).map(|s| s.chars().take(limits::ID).collect());
    let failed = move |socket: &socketioxide::extract::SocketRef, e: &AppError| {
        if let Some(cid) = &client_id {
            let _ = socket.emit(
                "message:failed",
                &json!({ "clientMessageId": cid, "errorCode": e.code, "errorMessage": e.message,
                         "retryable": e.code.retryable() }),
            );
        }
    };
    let begun = async {
        let user = cx.user()?;
        let p = Payload::object(&data)?;
        let out = outgoing(&p, cx.app.cfg.max_message_length)?;
        svc::begin(cx.app, &cx.session.account, user, out).await
    }
    .await;
    let pending = match begun {
        Ok(p) => p,
        Err(e) => {
            failed(cx.socket, &e);
            return Err(e);
        }
    };
    // The commit is awaited outside the socket's queue: its next events (often more messages of an offline
    // queue) go on meanwhile and share the writer's transaction. The chain keeps the broadcast order.
    let (before, done) = cx.session.next_send();
    let (app, socket, session) = (cx.app.clone(), cx.socket.clone(), cx.session.clone());
    Ok(Reply::Later(Box::pin(async move {
        let (name, avatar) = (session.name(), session.avatar());
        let author = Author { name: name.as_deref(), avatar: avatar.as_deref() };
        let result = svc::complete(&app, &session.account, &author, pending, before).await;
        let reply = match result {
            Ok(sent) => {
                svc::confirm_to_sender(&app, &session.account, session.user().unwrap_or(""), &sent.message).await;
                Ok(Reply::Data(sent_ack(&sent)))
            }
            Err(e) => {
                failed(&socket, &e);
                Err(e)
            }
        };
        drop(done);
        reply
    })))
}

/// The ack of a committed `message:send` (and the body of `POST /messages`).
pub(crate) fn sent_ack(sent: &svc::Sent) -> Value {
    let m = &sent.message;
    let mut ack = json!({ "messageId": m.id, "seq": m.seq, "createdAt": iso(m.created_at) });
    if let Some(c) = &m.client_message_id {
        ack["clientMessageId"] = c.clone().into();
    }
    if sent.duplicate {
        ack["duplicate"] = true.into();
    }
    ack
}

pub async fn edit(cx: &Cx<'_>, data: Value) -> AppResult<Reply> {
    let user = cx.user()?;
    let p = Payload::object(&data)?;
    let id = p.opt_id("messageId")?.ok_or_else(|| AppError::validation("messageId is required"))?;
    let content = p.str("content", cx.app.cfg.max_message_length)?;
    let m = svc::change(cx.app, &cx.session.account, user, &id, Some(content.to_string())).await?;
    Ok(Reply::Data(json!({ "messageId": m.id, "editedAt": iso(m.updated_at) })))
}

pub async fn delete(cx: &Cx<'_>, data: Value) -> AppResult<Reply> {
    let user = cx.user()?;
    let p = Payload::object(&data)?;
    let id = p.opt_id("messageId")?.ok_or_else(|| AppError::validation("messageId is required"))?;
    let m = svc::change(cx.app, &cx.session.account, user, &id, None).await?;
    Ok(Reply::Data(json!({ "messageId": m.id, "deletedAt": iso(m.updated_at) })))
}

pub async fn sync(cx: &Cx<'_>, data: Value) -> AppResult<Reply> {
    let user = cx.user()?;
    let p = Payload::object(&data)?;
    let id = match (p.opt_id("channelId")?, p.opt_str("roomName", limits::ID)?) {
        (Some(id), _) => id,
        (None, Some(name)) => name.to_string(),
        (None, None) => return Err(AppError::validation("channelId (or roomName) is required")),
    };
    let room = svc::resolve_channel(cx.app, &cx.session.account, user, &id).await?;
    let page = svc::sync(
        cx.app,
        &cx.session.account,
        user,
        &room,
        p.opt_i64("since")?,
        p.opt_i64("afterSeq")?,
        p.opt_i64("limit")?,
    )
    .await?;
    Ok(Reply::Data(page))
}

pub async fn channels(cx: &Cx<'_>, data: Value) -> AppResult<Reply> {
    let user = cx.user()?;
    if !data.is_null() {
        Payload::object(&data)?.opt_i64("since")?;
    }
    Ok(Reply::Data(svc::channels(cx.app, &cx.session.account, user).await?))
}
