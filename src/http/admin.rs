//! The admin API (CONTRACT §10) used by the CLI, operators and app backends.

use axum::Json;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{delete, get};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{Admin, ApiError, ApiJson, ApiQuery};
use crate::domain::names::RoomName;
use crate::domain::policy::{ROLES, ROOM_TYPES};
use crate::error::{AppError, ErrorCode};
use crate::hub::App;
use crate::service::presence;
use crate::service::rooms::{join_live_sockets, leave_live_sockets, parse_visibility, set_muted_live};
use crate::store::rooms::NewRoom;
use crate::transport::announce_presence_in_room;

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
    Ok(Json(crate::service::stats::live(&app, &admin.account).await?))
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
    let created = app
        .store
        .create_room(
            &admin.account,
            &NewRoom { name: &room.name, kind: &kind, visibility, max_members: req.max_members, created_by: None },
        )
        .await?;
    let row = app.store.room(&admin.account, &room.name).await?;
    let status = if created { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, Json(json!({ "room": row, "created": created }))))
}

async fn get_room(State(app): State<App>, admin: Admin, Path(name): Path<String>) -> ApiResult {
    let row = app.store.room(&admin.account, &name).await?.ok_or_else(|| AppError::room_not_found(&name))?;
    Ok(Json(json!({ "room": row })))
}

async fn delete_room(State(app): State<App>, admin: Admin, Path(name): Path<String>) -> ApiResult {
    if !app.store.delete_room(&admin.account, &name).await? {
        return Err(AppError::room_not_found(&name).into());
    }
    let key = crate::domain::names::room_key(&admin.account, &name);
    if let Some(ns) = app.ns() {
        ns.to(key.clone()).leave(key.clone()).await.map_err(AppError::internal)?;
    }
    app.occupancy.lock().forget(&key);
    app.receipts.forget_room(&admin.account, &name);
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
    app.store.room(&admin.account, &name).await?.ok_or_else(|| AppError::room_not_found(&name))?;
    let user = req.user_id.trim();
    if user.is_empty() || user.len() > 256 {
        return Err(AppError::validation("userId must be 1 to 256 characters").into());
    }
    let role = req.role.as_deref().unwrap_or("member");
    if !ROLES.contains(&role) {
        return Err(AppError::validation(format!("role must be one of {}", ROLES.join(", "))).into());
    }
    let added = app.store.add_member(&admin.account, &name, user, role).await?;
    app.store.set_member_flags(&admin.account, &name, user, req.role.as_deref(), req.muted, req.banned).await?;
    if req.banned == Some(true) {
        if let Some(s) = leave_live_sockets(&app, &admin.account, user, &name) {
            announce_presence_in_room(&app, &s, &name, "user:left").await;
        }
    } else {
        join_live_sockets(&app, &admin.account, user, &name);
    }
    let member = app.store.member(&admin.account, &name, user).await?;
    // the stored flag, whatever this request changed (an unban must not forget an earlier mute)
    set_muted_live(&app, &admin.account, user, &name, member.as_ref().is_some_and(|m| m.muted));
    let status = if added { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, Json(json!({ "member": member, "added": added }))))
}

async fn remove_member(State(app): State<App>, admin: Admin, Path((name, user)): Path<(String, String)>) -> ApiResult {
    if !app.store.remove_member(&admin.account, &name, &user).await? {
        return Err(AppError::new(ErrorCode::NotAMember, format!("{user} is not a member of {name}")).into());
    }
    if let Some(s) = leave_live_sockets(&app, &admin.account, &user, &name) {
        announce_presence_in_room(&app, &s, &name, "user:left").await;
    }
    Ok(Json(json!({ "removed": user, "roomName": name })))
}

async fn connections(State(app): State<App>, admin: Admin) -> ApiResult {
    let list: Vec<Value> = app
        .sessions
        .iter()
        .filter(|s| s.account == admin.account)
        .map(|s| {
            json!({
                "socketId": s.sid,
                "account": s.account,
                "userId": s.user_id,
                "ip": s.ip.map(|i| i.to_string()),
                "transport": s.transport,
                "deviceType": s.device.kind,
                "deviceOs": s.device.os,
                "deviceBrowser": s.device.browser,
                "connectedAt": crate::wire::iso(s.connected_at),
                "nodeId": app.node_id,
            })
        })
        .collect();
    Ok(Json(json!({ "connections": list, "total": list.len() })))
}

async fn disconnect(State(app): State<App>, admin: Admin, Path(sid): Path<String>) -> ApiResult {
    let owned = app.sessions.get(&sid).is_some_and(|s| s.account == admin.account);
    let socket = sid.parse().ok().and_then(|s| app.ns()?.get_socket(s)).filter(|_| owned);
    let Some(socket) = socket else {
        return Err(AppError::new(ErrorCode::NotFound, format!("no connection {sid} on this node")).into());
    };
    let _ = socket.disconnect();
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
    Ok(Json(presence::describe(&app, &admin.account, &user).await?))
}

async fn get_settings(State(app): State<App>, admin: Admin, Path(user): Path<String>) -> ApiResult {
    let s = presence::settings_of(&app, &admin.account, &user).await?;
    Ok(Json(json!({ "userId": user, "settings": presence::settings_json(&s) })))
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
    let s = presence::change_settings(&app, &admin.account, &user, &patch).await?;
    Ok(Json(json!({ "userId": user, "settings": presence::settings_json(&s) })))
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
