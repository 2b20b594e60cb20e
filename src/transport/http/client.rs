//! HTTP routes for clients without a socket (docs/protocol.md §11.6): send a message, poll for messages,
//! read a room's presence, post presence and typing.
//!
//! They act as a user: the user's own token (`Authorization: Bearer <jwt>`, verified like a handshake), or the
//! API key plus a `userId` (an app backend acting for one of its users). The account comes from `X-App-Name`
//! or `?app=`, as everywhere.

use axum::extract::{FromRequestParts, Path, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{Admin, ApiError, ApiJson, ApiQuery, App};
use crate::app::events::Author;
use crate::app::presence::http_device;
use crate::app::rooms::resolve_channel;
use crate::app::typing::Typer;
use crate::auth::Identity;
use crate::cluster::Budget;
use crate::domain::names::RoomName;
use crate::domain::presence::PublicStatus;
use crate::error::{AppError, AppResult, ErrorCode};
use crate::wire::contract::{sent_ack, sync_page};

pub fn routes() -> Router<App> {
    Router::new()
        .route("/messages", axum::routing::post(send))
        .route("/poll", axum::routing::get(poll))
        .route("/presence/{channel_id}", axum::routing::get(room_presence).post(post_presence))
        .route("/typing", axum::routing::post(post_typing))
}

/// Who the request acts as, before the body is read.
pub enum Caller {
    /// A user's own token: the user is fixed.
    User { account: String, identity: Identity },
    /// The API key: the request names the user (`userId` in the body or the query).
    Backend { account: String },
}

impl FromRequestParts<App> for Caller {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, app: &App) -> Result<Self, Self::Rejection> {
        if parts.headers.contains_key("x-api-key") {
            let admin = Admin::from_request_parts(parts, app).await?;
            return Ok(Caller::Backend { account: admin.account });
        }
        let token = parts
            .headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|h| h.strip_prefix("Bearer "))
            .ok_or_else(|| {
                unauthenticated("send the user's token as Authorization: Bearer <jwt> (or X-API-Key and a userId)")
            })?;
        let identity = app.verifier.check(token, chrono::Utc::now().timestamp()).await.map_err(unauthenticated)?;
        Ok(Caller::User { account: super::account_of(parts), identity })
    }
}

fn unauthenticated(message: impl std::fmt::Display) -> Response {
    let body = json!({ "error": { "code": "UNAUTHENTICATED", "message": message.to_string() } });
    (StatusCode::UNAUTHORIZED, Json(body)).into_response()
}

impl Caller {
    fn account(&self) -> &str {
        match self {
            Caller::User { account, .. } | Caller::Backend { account } => account,
        }
    }

    /// The user acted for, charged one event of their rate budget (shared with their sockets).
    fn acting(&self, app: &App, named: Option<&str>) -> AppResult<Identity> {
        let identity = self.identity(named)?;
        let budget = Budget::Events { account: self.account().to_string(), subject: identity.user_id.clone() };
        if !app.limiter.allow(&budget, std::time::Instant::now()) {
            app.metrics.rate_limited.inc();
            return Err(AppError::rate_limited(app.cfg.rate_limit_points, app.cfg.rate_limit_duration));
        }
        Ok(identity)
    }

    /// The user acted for: the token's user (a `userId` given too must be the same), or the named one.
    fn identity(&self, named: Option<&str>) -> AppResult<Identity> {
        match (self, named) {
            (Caller::User { identity, .. }, Some(u)) if u != identity.user_id => {
                Err(AppError::forbidden(format!("the token is {}'s; it cannot act for {u}", identity.user_id)))
            }
            (Caller::User { identity, .. }, _) => Ok(identity.clone()),
            (Caller::Backend { .. }, Some(u)) if !u.trim().is_empty() && u.len() <= 256 => {
                Ok(Identity { user_id: u.trim().to_string(), session_id: None, name: None, avatar: None, exp: None })
            }
            (Caller::Backend { .. }, _) => Err(AppError::validation("userId (1 to 256 characters) is required")),
        }
    }
}

fn named_user(body: &Value) -> AppResult<Option<&str>> {
    match body.get("userId") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(AppError::validation("userId must be a string")),
    }
}

/// `POST /messages`: a `message:send` over HTTP; 201 with the ack's data once the message is durable.
async fn send(State(app): State<App>, caller: Caller, ApiJson(body): ApiJson<Value>) -> Result<Response, ApiError> {
    let identity = caller.acting(&app, named_user(&body)?)?;
    let account = caller.account();
    let out = crate::wire::outgoing(&body, app.cfg.max_message_length)?;
    let pending = app.messages.begin(account, &identity.user_id, out).await?;
    let author = Author { name: identity.name.clone(), avatar: identity.avatar.clone() };
    let sent = app.messages.complete(account, author, pending, None, None).await?;
    app.messages.confirm_to_sender(account, &identity.user_id, &sent.message).await;
    let status = if sent.duplicate { StatusCode::OK } else { StatusCode::CREATED };
    Ok((status, Json(sent_ack(&sent))).into_response())
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PollQuery {
    channel_id: Option<String>,
    since: Option<i64>,
    after_seq: Option<i64>,
    limit: Option<i64>,
    user_id: Option<String>,
}

/// `GET /poll?channelId&since`: `sync:messages` over HTTP (the same page, `serverTime` for the next poll).
async fn poll(
    State(app): State<App>,
    caller: Caller,
    ApiQuery(q): ApiQuery<PollQuery>,
) -> Result<Json<Value>, ApiError> {
    let identity = caller.acting(&app, q.user_id.as_deref())?;
    let account = caller.account();
    let id = q
        .channel_id
        .as_deref()
        .filter(|c| !c.is_empty())
        .ok_or_else(|| AppError::validation("channelId is required"))?;
    let room = resolve_channel(&app.store, account, &identity.user_id, id).await?;
    let page = app.messages.sync(account, &identity.user_id, &room, q.since, q.after_seq, q.limit).await?;
    Ok(Json(sync_page(&page)))
}

/// Members listed by `GET /presence/:channelId` at most.
const MAX_LISTED: i64 = 10_000;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PresenceQuery {
    user_id: Option<String>,
}

/// `GET /presence/:channelId`: the room's members as the caller may see them, with counts by status. A user
/// must be a member; the API key without a `userId` sees what a stranger would.
async fn room_presence(
    State(app): State<App>,
    caller: Caller,
    Path(channel_id): Path<String>,
    ApiQuery(q): ApiQuery<PresenceQuery>,
) -> Result<Json<Value>, ApiError> {
    let account = caller.account();
    let viewer = match (&caller, q.user_id.as_deref()) {
        (Caller::Backend { .. }, None) => None,
        (_, named) => Some(caller.acting(&app, named)?.user_id),
    };
    let room = presence_room(&app, account, viewer.as_deref(), &channel_id).await?;
    app.store.room(account, &room.name).await?.ok_or_else(|| AppError::room_not_found(&room.name))?;
    if let Some(v) = &viewer {
        match app.store.member(account, &room.name, v).await? {
            None => return Err(AppError::not_a_member(&room.name).into()),
            Some(m) if m.banned => return Err(AppError::forbidden(format!("you are banned from {}", room.name)).into()),
            Some(_) => {}
        }
    }
    let members: Vec<String> = app
        .store
        .members(account, &room.name, MAX_LISTED)
        .await?
        .into_iter()
        .filter(|m| !m.banned)
        .map(|m| m.user_id)
        .collect();
    let views = app.presence.views_for(account, viewer.as_deref(), &members).await?;
    let mut count = [0u32; 4]; // online, away, dnd, offline
    for v in &views {
        count[match v.status {
            PublicStatus::Online => 0,
            PublicStatus::Away => 1,
            PublicStatus::Busy => 2,
            PublicStatus::Offline => 3,
        }] += 1;
    }
    let count = json!({ "online": count[0], "away": count[1], "dnd": count[2], "offline": count[3] });
    Ok(Json(json!({ "channelId": channel_id, "roomName": room.name, "users": views, "count": count })))
}

/// The room a presence request names: for a member, the one `sync:messages` would pick (where they belong);
/// otherwise the room that exists, `channel:<id>` before the bare name.
async fn presence_room(app: &App, account: &str, viewer: Option<&str>, id: &str) -> AppResult<RoomName> {
    if let Some(v) = viewer {
        let room = resolve_channel(&app.store, account, v, id).await?;
        if app.store.member(account, &room.name, v).await?.is_some() {
            return Ok(room);
        }
    }
    if !id.contains(':')
        && let Ok(channel) = RoomName::from_channel_id(id)
        && app.store.room(account, &channel.name).await?.is_some()
    {
        return Ok(channel);
    }
    RoomName::parse(id).map_err(AppError::validation)
}

/// `POST /presence/:channelId {status, customStatus?}`: the caller's presence (per user, not per room: it
/// reaches everyone allowed to see the user, as a socket's `presence:update` does).
async fn post_presence(
    State(app): State<App>,
    caller: Caller,
    Path(_channel_id): Path<String>,
    ApiJson(body): ApiJson<Value>,
) -> Result<Json<Value>, ApiError> {
    let identity = caller.acting(&app, named_user(&body)?)?;
    let update = crate::wire::presence_update(&body)?;
    app.presence.http_update(caller.account(), &identity.user_id, update).await?;
    Ok(Json(json!({ "success": true })))
}

/// `POST /typing {channelId, isTyping, threadId?, roomType?, recipientId?}`.
async fn post_typing(
    State(app): State<App>,
    caller: Caller,
    ApiJson(body): ApiJson<Value>,
) -> Result<Json<Value>, ApiError> {
    let identity = caller.acting(&app, named_user(&body)?)?;
    if !body.is_object() {
        return Err(AppError::new(ErrorCode::ValidationError, "the body must be a JSON object").into());
    }
    let req = crate::wire::typing_request("typing", &body)?;
    let device = http_device(&identity.user_id);
    let author = Author { name: identity.name.clone(), avatar: identity.avatar.clone() };
    let typer = Typer { account: caller.account(), user: &identity.user_id, device: &device, author };
    app.typing.http_typing(typer, req).await?;
    Ok(Json(json!({ "success": true })))
}
