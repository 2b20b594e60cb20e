//! The inbound event table: event name → handler. Each handler reads its payload with `wire::Payload`.

mod connection;
pub(crate) mod messages;
mod presence;
mod receipts;
mod rooms;
mod typing;

use serde_json::Value;

use super::dispatch::{Cx, Reply};
use crate::error::{AppError, AppResult, ErrorCode};

pub async fn route(cx: &Cx<'_>, event: &str, data: Value) -> AppResult<Reply> {
    match event {
        "ping" => connection::ping(cx, data),
        "pong" => connection::pong(cx, data),
        "auth:refresh" => connection::refresh(cx, data).await,

        "room:join" => rooms::join(cx, data).await,
        "room:leave" => rooms::leave(cx, data).await,
        "channel:join" => rooms::channel_join(cx, data).await,
        "channel:leave" => rooms::channel_leave(cx, data).await,

        "message:send" => messages::send(cx, data).await,
        "message:edit" => messages::edit(cx, data).await,
        "message:delete" => messages::delete(cx, data).await,
        "sync:messages" => messages::sync(cx, data).await,
        "sync:channels" => messages::channels(cx, data).await,

        "presence:update" => presence::update(cx, data),
        "presence:subscribe" => presence::subscribe(cx, data).await,
        "presence:unsubscribe" => presence::unsubscribe(cx, data),
        "presence:get" => presence::get(cx, data).await,
        "presence:settings" => presence::settings(cx, data).await,

        "typing:start" | "typing:stop" | "typing" => typing::typing(cx, event, data),

        "message:read-ack" | "message:batch-read-ack" | "read:update" | "channel:read" | "receipt:update" => {
            receipts::read(cx, event, data).await
        }
        "delivery:sync" => receipts::delivery_sync(cx, data).await,
        "reaction:add" => receipts::react(cx, data, true).await,
        "reaction:remove" => receipts::react(cx, data, false).await,

        _ => Err(AppError::new(ErrorCode::UnknownEvent, format!("unknown event {:?}", truncate(event, 64)))),
    }
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}
