//! `ping`, `pong` and `auth:refresh`.

use serde_json::{Value, json};

use crate::error::{AppError, AppResult};
use crate::transport::dispatch::{Cx, Reply};
use crate::wire::Payload;

/// With an ack: the client's own `{timestamp}` back, raw (nchat computes latency from it).
/// Without: `pong {timestamp: server ms}`.
pub fn ping(cx: &Cx<'_>, data: Value) -> AppResult<Reply> {
    let timestamp = match &data {
        Value::Object(m) => m.get("timestamp").cloned().unwrap_or(Value::Null),
        Value::Number(_) => data.clone(),
        _ => Value::Null,
    };
    if cx.has_ack {
        Ok(Reply::Raw(json!({ "timestamp": timestamp })))
    } else {
        cx.emit("pong", &json!({ "timestamp": crate::store::now_ms() }));
        Ok(Reply::Done)
    }
}

/// The original's clients report latency with `pong {timestamp}`: accepted; without a payload it is invalid.
pub fn pong(_cx: &Cx<'_>, data: Value) -> AppResult<Reply> {
    let p = Payload::object(&data)?;
    if p.opt_i64("timestamp")?.is_none() {
        return Err(AppError::validation("pong needs {timestamp: number}"));
    }
    Ok(Reply::Done)
}

/// `auth:refresh {token}`: re-verify; `authenticated` again, or `auth:error`. The user may not change.
pub async fn refresh(cx: &Cx<'_>, data: Value) -> AppResult<Reply> {
    let p = Payload::object(&data)?;
    let token = p.str("token", 16 * 1024)?;
    let fail = |code: &str, message: String| {
        cx.emit("auth:error", &json!({ "code": code, "message": message }));
        AppError::new(crate::error::ErrorCode::Unauthenticated, message)
    };
    let identity = match cx.app.verifier.verify(token, chrono::Utc::now().timestamp()) {
        Ok(i) => i,
        Err(e) => return Err(fail("INVALID_TOKEN", e.to_string())),
    };
    if cx.session.user().is_some_and(|u| u != identity.user_id) {
        return Err(fail("USER_MISMATCH", "the new token names another user; reconnect instead".into()));
    }
    if cx.session.user().is_none() {
        return Err(fail("USER_MISMATCH", "an anonymous socket cannot become a user; reconnect with the token".into()));
    }
    cx.session.refresh(identity);
    let rooms: Vec<String> = {
        let prefix = format!("{}/", cx.session.account);
        cx.socket.rooms().iter().filter_map(|k| k.strip_prefix(&prefix).map(str::to_string)).collect()
    };
    let payload = json!({ "userId": cx.session.user(), "sessionId": cx.session.session_id, "rooms": rooms });
    cx.emit("authenticated", &payload);
    Ok(Reply::Data(payload))
}
