//! `POST /api/broadcast` and `/api/broadcast/batch`: app backends push events to rooms.

use axum::Json;
use axum::extract::State;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{Admin, ApiError, ApiJson};
use crate::domain::names::{RoomName, room_key};
use crate::error::AppError;
use crate::hub::{App, Hub};

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
async fn emit(hub: &Hub, account: &str, event: &str, rooms: &[String], payload: &Value) -> Result<usize, AppError> {
    if event.is_empty() || event.len() > 128 {
        return Err(AppError::validation("eventType must be 1 to 128 characters"));
    }
    if rooms.is_empty() || rooms.len() > MAX_ROOMS {
        return Err(AppError::validation(format!("rooms must list 1 to {MAX_ROOMS} room names")));
    }
    let mut keys = Vec::with_capacity(rooms.len());
    for r in rooms {
        let name = RoomName::parse(r).map_err(AppError::validation)?;
        keys.push(room_key(account, &name.name));
    }
    // during shutdown every socket is already gone
    let Some(ns) = hub.ns() else { return Ok(0) };
    let reached = ns.clone().to(keys.clone()).sockets().len();
    ns.to(keys).emit(event, payload).await.map_err(AppError::internal)?;
    hub.metrics.broadcasts.inc();
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
