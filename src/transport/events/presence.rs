//! `presence:update|subscribe|unsubscribe|get|settings`.

use serde_json::{Value, json};

use crate::service::presence as svc;
use crate::transport::dispatch::{Cx, Reply};
use crate::wire::Payload;

/// The session ended while this event ran (the disconnect cleaned up before it registered anything): take the
/// socket out of presence again, subscriptions included.
fn undo_if_closed(cx: &Cx<'_>, user: &str) {
    if cx.session.is_closed() {
        svc::disconnected(cx.app, &cx.session.account, user, &cx.session.sid);
    }
}

pub fn update(cx: &Cx<'_>, data: Value) -> crate::error::AppResult<Reply> {
    let user = cx.user()?;
    svc::update(cx.app, &cx.session.account, user, &cx.session.sid, &data)?;
    undo_if_closed(cx, user);
    Ok(Reply::Done)
}

pub async fn subscribe(cx: &Cx<'_>, data: Value) -> crate::error::AppResult<Reply> {
    let user = cx.user()?;
    let ids = Payload::object(&data)?.ids("userIds")?;
    svc::subscribe(cx.app, &cx.session.account, user, &cx.session.sid, &ids);
    undo_if_closed(cx, user);
    let presences = svc::views_for(cx.app, &cx.session.account, Some(user), &ids).await?;
    let payload = json!({ "presences": presences });
    cx.emit("presence:bulk", &payload);
    Ok(Reply::Data(payload))
}

pub fn unsubscribe(cx: &Cx<'_>, data: Value) -> crate::error::AppResult<Reply> {
    let user = cx.user()?;
    let ids = Payload::object(&data)?.ids("userIds")?;
    svc::unsubscribe(cx.app, &cx.session.account, user, &cx.session.sid, &ids);
    Ok(Reply::Done)
}

pub async fn get(cx: &Cx<'_>, data: Value) -> crate::error::AppResult<Reply> {
    let ids = Payload::object(&data)?.ids("userIds")?;
    let presences = svc::views_for(cx.app, &cx.session.account, cx.session.user(), &ids).await?;
    Ok(Reply::Data(json!({ "presences": presences })))
}

pub async fn settings(cx: &Cx<'_>, data: Value) -> crate::error::AppResult<Reply> {
    let user = cx.user()?;
    Payload::object(&data)?;
    let merged = svc::change_settings(cx.app, &cx.session.account, user, &data).await?;
    Ok(Reply::Data(svc::settings_json(&merged)))
}
