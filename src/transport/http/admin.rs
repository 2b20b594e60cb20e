//! The admin API (docs/protocol.md §11) used by the CLI, operators and app backends.

use axum::Json;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{delete, get};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{Admin, ApiError, ApiJson, ApiQuery, App};
use crate::app::stats::Stats;
use crate::domain::names::RoomName;
use crate::domain::policy::{ROOM_TYPES, parse_visibility};
use crate::domain::time::iso_ms;
use crate::error::{AppError, ErrorCode};

pub fn routes() -> Router<App> {
    Router::new()
        .route("/stats", get(stats))
        .route("/rooms", get(list_rooms).post(create_room))
        .route("/rooms/{name}", get(get_room).delete(delete_room))
        .route("/rooms/{name}/members", get(list_members).post(add_member))
        .route("/rooms/{name}/members/{user}", delete(remove_member))
        .route("/connections", get(connections))
        .route("/connections/{sid}", delete(disconnect))
        .route("/events", get(events))
        .route("/users/{user}/presence", get(user_presence))
        .route("/users/{user}/presence-settings", get(get_settings).put(put_settings))
        .route("/users/{user}/contacts", get(list_contacts).post(add_contact))
        .route("/users/{user}/contacts/{contact}", delete(remove_contact))
}

type ApiResult = Result<Json<Value>, ApiError>;

pub async fn stats(State(app): State<App>, admin: Admin) -> ApiResult {
    let account = admin.account;
    let stats = Stats {
        connections: app.sessions.all().iter().filter(|s| s.account == account).count(),
        connections_all_accounts: app.sessions.len(),
        users_online: app.roster.users_online(Some(&account)).await,
        rooms: app.store.count_rooms(&account).await?,
        messages: app.store.count_messages(&account).await?,
        uptime: app.started.elapsed().as_secs(),
        memory_bytes: crate::metrics::resident_memory_bytes(),
        node_id: app.id.clone(),
        database: app.store.dialect(),
        presence: app.presence.breakdown(&account).await.into(),
        nodes: app.cluster.as_ref().map(|c| c.nodes()),
        account,
    };
    Ok(Json(serde_json::to_value(stats).expect("stats serialise")))
}

async fn list_rooms(State(app): State<App>, admin: Admin) -> ApiResult {
    let rooms = app.store.rooms(&admin.account).await?;
    Ok(Json(json!({ "rooms": rooms })))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CreateRoom {
    name: String,
    #[serde(rename = "type")]
    kind: Option<String>,
    visibility: Option<String>,
    max_members: Option<i64>,
}

async fn create_room(
    State(app): State<App>,
    admin: Admin,
    ApiJson(req): ApiJson<CreateRoom>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let room = RoomName::parse(&req.name).map_err(AppError::validation)?;
    if room.personal_owner().is_some() {
        return Err(AppError::validation("user:<id> rooms are personal and cannot be created").into());
    }
    let kind = req.kind.unwrap_or_else(|| room.row_type().to_string());
    if !ROOM_TYPES.contains(&kind.as_str()) {
        return Err(AppError::validation(format!("type must be one of {}", ROOM_TYPES.join(", "))).into());
    }
    let visibility = parse_visibility(req.visibility.as_deref())?;
    if req.max_members.is_some_and(|m| m < 1) {
        return Err(AppError::validation("maxMembers must be at least 1").into());
    }
    let (created, row) = app.rooms.create(&admin.account, &room, &kind, visibility, req.max_members).await?;
    let status = if created { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, Json(json!({ "room": row, "created": created }))))
}

async fn get_room(State(app): State<App>, admin: Admin, Path(name): Path<String>) -> ApiResult {
    let row = app.store.room(&admin.account, &name).await?.ok_or_else(|| AppError::room_not_found(&name))?;
    Ok(Json(json!({ "room": row })))
}

async fn delete_room(State(app): State<App>, admin: Admin, Path(name): Path<String>) -> ApiResult {
    app.rooms.delete(&admin.account, &name).await?;
    Ok(Json(json!({ "deleted": name })))
}

async fn list_members(State(app): State<App>, admin: Admin, Path(name): Path<String>) -> ApiResult {
    app.store.room(&admin.account, &name).await?.ok_or_else(|| AppError::room_not_found(&name))?;
    let members = app.store.members(&admin.account, &name, 10_000).await?;
    Ok(Json(json!({ "members": members })))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AddMember {
    user_id: String,
    role: Option<String>,
    muted: Option<bool>,
    banned: Option<bool>,
}

async fn add_member(
    State(app): State<App>,
    admin: Admin,
    Path(name): Path<String>,
    ApiJson(req): ApiJson<AddMember>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let (added, member) =
        app.rooms.add_member(&admin.account, &name, &req.user_id, req.role.as_deref(), req.muted, req.banned).await?;
    let status = if added { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, Json(json!({ "member": member, "added": added }))))
}

async fn remove_member(State(app): State<App>, admin: Admin, Path((name, user)): Path<(String, String)>) -> ApiResult {
    app.rooms.remove_member(&admin.account, &name, &user).await?;
    Ok(Json(json!({ "removed": user, "roomName": name })))
}

async fn connections(State(app): State<App>, admin: Admin) -> ApiResult {
    let list: Vec<Value> = app
        .sessions
        .all()
        .iter()
        .filter(|s| s.account == admin.account)
        .map(|s| {
            json!({
                "socketId": s.sid,
                "account": s.account,
                "userId": s.user_id,
                "ip": s.origin.ip.map(|i| i.to_string()),
                "transport": s.origin.transport,
                "deviceType": s.origin.device().kind,
                "deviceOs": s.origin.device().os,
                "deviceBrowser": s.origin.device().browser,
                "connectedAt": iso_ms(s.connected_at),
                "nodeId": app.id,
            })
        })
        .collect();
    Ok(Json(json!({ "connections": list, "total": list.len() })))
}

async fn disconnect(State(app): State<App>, admin: Admin, Path(sid): Path<String>) -> ApiResult {
    let Some(session) = app.sessions.get(&sid).filter(|s| s.account == admin.account) else {
        return Err(AppError::new(ErrorCode::NotFound, format!("no connection {sid} on this node")).into());
    };
    session.link.disconnect();
    Ok(Json(json!({ "disconnected": sid })))
}

#[derive(Deserialize)]
struct EventsQuery {
    limit: Option<i64>,
}

async fn events(State(app): State<App>, admin: Admin, ApiQuery(q): ApiQuery<EventsQuery>) -> ApiResult {
    let limit = q.limit.unwrap_or(50).clamp(1, 1000);
    let rows = app.store.events(Some(&admin.account), limit).await?;
    Ok(Json(json!({ "events": rows })))
}

async fn user_presence(State(app): State<App>, admin: Admin, Path(user): Path<String>) -> ApiResult {
    let d = app.presence.describe(&admin.account, &user).await?;
    Ok(Json(json!({
        "userId": user,
        "presence": d.presence,
        "appearOffline": d.appear_offline,
        "connected": d.connected,
        "settings": d.settings,
    })))
}

async fn get_settings(State(app): State<App>, admin: Admin, Path(user): Path<String>) -> ApiResult {
    let s = app.presence.settings_of(&admin.account, &user).await?;
    Ok(Json(json!({ "userId": user, "settings": s })))
}

/// nchat keeps privacy settings in its own database; its backend pushes them here.
async fn put_settings(
    State(app): State<App>,
    admin: Admin,
    Path(user): Path<String>,
    ApiJson(patch): ApiJson<Value>,
) -> ApiResult {
    if !patch.is_object() {
        return Err(AppError::validation("send a JSON object of settings").into());
    }
    let patch = crate::wire::contract::settings_patch(&patch)?;
    let s = app.presence.change_settings(&admin.account, &user, &patch).await?;
    Ok(Json(json!({ "userId": user, "settings": s })))
}

async fn list_contacts(State(app): State<App>, admin: Admin, Path(user): Path<String>) -> ApiResult {
    let explicit = app.store.explicit_contacts(&admin.account, &user).await?;
    let all = app.store.contacts_of(&admin.account, &user).await?;
    Ok(Json(json!({ "userId": user, "contacts": explicit, "effective": all })))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AddContact {
    contact_user_id: String,
}

async fn add_contact(
    State(app): State<App>,
    admin: Admin,
    Path(user): Path<String>,
    ApiJson(req): ApiJson<AddContact>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let contact = req.contact_user_id.trim();
    if contact.is_empty() || contact.len() > 256 || contact == user {
        return Err(AppError::validation("contactUserId must be another user's id (1 to 256 characters)").into());
    }
    let added = app.store.add_contact(&admin.account, &user, contact).await?;
    let status = if added { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, Json(json!({ "userId": user, "contactUserId": contact, "added": added }))))
}

async fn remove_contact(
    State(app): State<App>,
    admin: Admin,
    Path((user, contact)): Path<(String, String)>,
) -> ApiResult {
    if !app.store.remove_contact(&admin.account, &user, &contact).await? {
        return Err(AppError::new(ErrorCode::NotFound, format!("{contact} is not a contact of {user}")).into());
    }
    Ok(Json(json!({ "userId": user, "removed": contact })))
}
