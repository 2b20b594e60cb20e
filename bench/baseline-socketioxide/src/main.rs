//! Baseline server for `nself-realtime bench`.
//!
//! A plain socketioxide server with DEFAULT settings that speaks the same events as nself-realtime,
//! without persistence, policy, coalescing or rate limits, so the bench can report our server as a
//! ratio of "what socketioxide itself costs":
//!
//! * CONNECT with auth `{token}`: verified as HS256 JWT when `REALTIME_JWT_SECRET` (or `JWT_SECRET`)
//!   is set, otherwise any token is accepted. Emits `connected` then `authenticated`.
//! * `room:join {roomName}` / `room:leave {roomName}` → ack `{success, data}`.
//! * `message:send {roomName, content, metadata?}` → `message:new` to the room (sender included), ack.
//! * `typing:start|stop {roomName, roomType}` → `typing:event` to `channel:<roomName>` (others).
//! * `presence:update {status}` → `presence:changed` to every room of the socket (others).
//!
//! Listens on `$HOST:$PORT` (default 127.0.0.1:3102). Like socketioxide's examples it uses
//! `axum::serve` as is, so TCP_NODELAY is off (Nagle on); `NODELAY=1` turns it on.
use std::sync::atomic::{AtomicU64, Ordering};

use jsonwebtoken::{DecodingKey, Validation, decode};
use serde::Deserialize;
use serde_json::{Value, json};
use axum::serve::ListenerExt;
use socketioxide::{
    SocketIo,
    extract::{AckSender, Data, Extension, SocketRef},
    handler::ConnectHandler,
};

static SEQ: AtomicU64 = AtomicU64::new(0);

#[derive(Clone)]
struct UserId(String);

#[derive(Deserialize)]
struct Auth {
    token: Option<String>,
}

#[derive(Deserialize)]
struct Claims {
    sub: Option<String>,
    #[serde(rename = "userId")]
    user_id: Option<String>,
}

#[derive(Deserialize)]
struct RoomReq {
    #[serde(rename = "roomName")]
    room_name: String,
}

#[derive(Deserialize)]
struct SendReq {
    #[serde(rename = "roomName")]
    room_name: String,
    content: String,
    #[serde(default)]
    metadata: Option<Value>,
}

#[derive(Deserialize)]
struct TypingReq {
    #[serde(rename = "roomName")]
    room_name: String,
    #[serde(rename = "roomType", default)]
    room_type: Option<String>,
}

#[derive(Deserialize)]
struct PresenceReq {
    status: String,
}

fn now_iso() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn user_from_token(token: &str) -> Result<String, String> {
    let secret = std::env::var("REALTIME_JWT_SECRET")
        .or_else(|_| std::env::var("JWT_SECRET"))
        .ok()
        .filter(|s| !s.is_empty());
    let Some(secret) = secret else {
        // Accept any token; use it (bounded) as the user id.
        return Ok(token.chars().take(64).collect());
    };
    let data = decode::<Claims>(
        token,
        &DecodingKey::from_secret(secret.as_bytes()),
        &Validation::default(),
    )
    .map_err(|e| format!("Invalid token: {e}"))?;
    data.claims
        .user_id
        .or(data.claims.sub)
        .ok_or_else(|| "Invalid token: no user id".to_string())
}

async fn auth_middleware(s: SocketRef, Data(auth): Data<Auth>) -> Result<(), String> {
    let token = auth.token.ok_or_else(|| "Authentication required".to_string())?;
    let user = user_from_token(&token)?;
    s.extensions.insert(UserId(user));
    Ok(())
}

async fn on_connect(s: SocketRef, Extension(user): Extension<UserId>) {
    s.join(format!("user:{}", user.0));
    s.on(
        "room:join",
        async |s: SocketRef, Data(req): Data<RoomReq>, ack: AckSender| {
            s.join(req.room_name.clone());
            let room_type = match req.room_name.split_once(':') {
                Some((t, _)) => t.to_string(),
                None => "channel".to_string(),
            };
            ack.send(&json!({"success": true, "data": {"roomName": req.room_name, "type": room_type}}))
                .ok();
        },
    );
    s.on(
        "room:leave",
        async |s: SocketRef, Data(req): Data<RoomReq>, ack: AckSender| {
            s.leave(req.room_name.clone());
            ack.send(&json!({"success": true, "data": {"roomName": req.room_name}})).ok();
        },
    );
    s.on(
        "message:send",
        async |s: SocketRef,
               Data(req): Data<SendReq>,
               Extension(user): Extension<UserId>,
               ack: AckSender| {
            let seq = SEQ.fetch_add(1, Ordering::Relaxed) + 1;
            let id = format!("m{seq}");
            let now = now_iso();
            let msg = json!({
                "id": id, "messageId": id, "roomName": req.room_name, "userId": user.0,
                "content": req.content, "type": "text", "metadata": req.metadata,
                "seq": seq, "createdAt": now, "timestamp": now,
            });
            s.within(req.room_name).emit("message:new", &msg).await.ok();
            ack.send(&json!({"success": true, "data": {"messageId": id, "seq": seq, "createdAt": now}}))
                .ok();
        },
    );
    for (ev, typing) in [("typing:start", true), ("typing:stop", false)] {
        s.on(
            ev,
            async move |s: SocketRef, Data(req): Data<TypingReq>, Extension(user): Extension<UserId>| {
                let users = if typing {
                    json!([{"userId": user.0, "startedAt": now_iso()}])
                } else {
                    json!([])
                };
                let room_type = req.room_type.unwrap_or_else(|| "channel".into());
                s.to(format!("channel:{}", req.room_name))
                    .emit(
                        "typing:event",
                        &json!({"roomName": req.room_name, "roomType": room_type, "users": users}),
                    )
                    .await
                    .ok();
            },
        );
    }
    s.on(
        "presence:update",
        async |s: SocketRef, Data(req): Data<PresenceReq>, Extension(user): Extension<UserId>| {
            let rooms = s.rooms();
            s.to(rooms)
                .emit(
                    "presence:changed",
                    &json!({"userId": user.0, "status": req.status}),
                )
                .await
                .ok();
        },
    );
    s.emit(
        "connected",
        &json!({"socketId": s.id.to_string(), "serverTime": now_iso(), "protocolVersion": 5}),
    )
    .ok();
    s.emit(
        "authenticated",
        &json!({"userId": user.0, "sessionId": s.id.to_string(), "rooms": []}),
    )
    .ok();
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (layer, io) = SocketIo::new_layer();
    io.ns("/", on_connect.with(auth_middleware));
    let app = axum::Router::new()
        .route("/health", axum::routing::get(async || "ok"))
        .layer(layer);
    let port: u16 = std::env::var("PORT").ok().and_then(|p| p.parse().ok()).unwrap_or(3102);
    let host = std::env::var("HOST").unwrap_or_else(|_| "127.0.0.1".into());
    let listener = tokio::net::TcpListener::bind((host.as_str(), port)).await?;
    let nodelay = std::env::var("NODELAY").is_ok_and(|v| v == "1" || v == "true");
    eprintln!("baseline-socketioxide listening on {host}:{port} (TCP_NODELAY {nodelay})");
    let shutdown = async {
        tokio::signal::ctrl_c().await.ok();
    };
    if nodelay {
        let listener = listener.tap_io(|tcp| {
            tcp.set_nodelay(true).ok();
        });
        axum::serve(listener, app).with_graceful_shutdown(shutdown).await?;
    } else {
        axum::serve(listener, app).with_graceful_shutdown(shutdown).await?;
    }
    Ok(())
}
