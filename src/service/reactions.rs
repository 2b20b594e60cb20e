//! Reactions (CONTRACT §7): persisted, idempotent per (message, user, emoji), broadcast with the count.

use serde_json::{Value, json};

use crate::domain::names::room_key;
use crate::error::{AppError, AppResult};
use crate::hub::Hub;
use crate::wire::{Payload, channel_id_of, limits};

pub async fn react(hub: &Hub, account: &str, user: &str, data: &Value, add: bool) -> AppResult<Value> {
    let p = Payload::object(data)?;
    let id = p.opt_id("messageId")?.ok_or_else(|| AppError::validation("messageId is required"))?;
    let emoji = p.str("emoji", limits::EMOJI_BYTES)?.trim().to_string();
    let m = hub
        .store
        .message(account, &id)
        .await?
        .filter(|m| m.deleted_at.is_none())
        .ok_or_else(|| AppError::unknown_message(&id))?;
    let member = hub.store.member(account, &m.room, user).await?;
    if member.as_ref().is_none_or(|m| m.banned) {
        return Err(AppError::not_a_member(&m.room));
    }
    let (changed, count) = hub.store.react(account, &id, user, &emoji, add).await?;
    let payload = json!({ "messageId": id, "channelId": channel_id_of(&m.room), "roomName": m.room,
                          "userId": user, "emoji": emoji, "count": count });
    if changed {
        let event = if add { "reaction:add" } else { "reaction:remove" };
        if let Some(ns) = hub.ns() {
            let _ = ns.to(room_key(account, &m.room)).emit(event, &payload).await;
        }
        hub.metrics.broadcasts.inc();
    }
    Ok(payload)
}
