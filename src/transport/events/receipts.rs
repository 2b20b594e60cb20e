//! Read events, `delivery:sync`, and reactions.

use serde_json::Value;

use crate::service::{reactions, receipts as svc};
use crate::transport::dispatch::{Cx, Reply};

pub async fn read(cx: &Cx<'_>, event: &str, data: Value) -> crate::error::AppResult<Reply> {
    let user = cx.user()?;
    let rooms = cx.room_names();
    let reader = svc::Reader { account: &cx.session.account, user, rooms: &rooms };
    Ok(Reply::Data(svc::read(cx.app, &reader, event, &data).await?))
}

pub async fn delivery_sync(cx: &Cx<'_>, data: Value) -> crate::error::AppResult<Reply> {
    let user = cx.user()?;
    let response = svc::delivery_sync(cx.app, &cx.session.account, user, &data).await?;
    cx.emit("delivery:sync-response", &response);
    Ok(Reply::Data(response))
}

pub async fn react(cx: &Cx<'_>, data: Value, add: bool) -> crate::error::AppResult<Reply> {
    let user = cx.user()?;
    Ok(Reply::Data(reactions::react(cx.app, &cx.session.account, user, &data, add).await?))
}
