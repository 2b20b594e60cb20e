//! `POST /api/broadcast` and `/api/broadcast/batch`: app backends push events to rooms.

use axum::Json;
use axum::extract::State;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{Admin, ApiError, ApiJson, App};
use crate::app::events::Event;
use crate::cluster::{Audience, Target};
use crate::domain::names::RoomName;
use crate::error::AppError;
use crate::node::Node;

const MAX_ROOMS: usize = 1000;
const MAX_EVENTS: usize = 1000;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BroadcastReq {
    event_type: String,
    rooms: Vec<String>,
    #[serde(default)]
    payload: Value,
    #[allow(dead_code)]
    event_id: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BatchEvent {
    event_type: String,
    room_names: Vec<String>,
    #[serde(default)]
    payload: Value,
    #[allow(dead_code)]
    timestamp: Option<Value>,
}

#[derive(Deserialize)]
pub struct BatchReq {
    events: Vec<BatchEvent>,
}

/// Emits `event` with `payload` as given to the rooms; returns how many sockets it reached.
async fn emit(node: &Node, account: &str, event: &str, rooms: &[String], payload: &Value) -> Result<usize, AppError> {
    if event.is_empty() || event.len() > 128 {
        return Err(AppError::validation("eventType must be 1 to 128 characters"));
    }
    if rooms.is_empty() || rooms.len() > MAX_ROOMS {
        return Err(AppError::validation(format!("rooms must list 1 to {MAX_ROOMS} room names")));
    }
    let mut to = Vec::with_capacity(rooms.len());
    for r in rooms {
        to.push(Target::Room(RoomName::parse(r).map_err(AppError::validation)?.name));
    }
    let audience = Audience { account: account.to_string(), to, except_users: Vec::new() };
    let reached = node.fanout.reach(&audience).await;
    node.fanout.emit(audience, Event::Custom { name: event.to_string(), payload: payload.clone() }).await;
    node.metrics.broadcasts.inc();
    Ok(reached)
}

pub async fn one(
    State(app): State<App>,
    admin: Admin,
    ApiJson(req): ApiJson<BroadcastReq>,
) -> Result<Json<Value>, ApiError> {
    let n = emit(&app, &admin.account, &req.event_type, &req.rooms, &req.payload).await?;
    Ok(Json(json!({ "recipientCount": n })))
}

pub async fn batch(
    State(app): State<App>,
    admin: Admin,
    ApiJson(req): ApiJson<BatchReq>,
) -> Result<Json<Value>, ApiError> {
    if req.events.len() > MAX_EVENTS {
        return Err(AppError::validation(format!("at most {MAX_EVENTS} events per batch")).into());
    }
    let mut results = Vec::with_capacity(req.events.len());
    let mut total = 0;
    for e in &req.events {
        let n = emit(&app, &admin.account, &e.event_type, &e.room_names, &e.payload).await?;
        total += n;
        results.push(json!({ "recipientCount": n }));
    }
    Ok(Json(json!({ "results": results, "total": total })))
}
