//! `typing:start`, `typing:stop`, `typing`.

use serde_json::Value;

use crate::service::typing::{self as svc, Typer};
use crate::transport::dispatch::{Cx, Reply};

pub fn typing(cx: &Cx<'_>, event: &str, data: Value) -> crate::error::AppResult<Reply> {
    let user = cx.user()?;
    let rooms = cx.room_names();
    let muted = cx.session.muted_rooms();
    let typer = Typer {
        account: &cx.session.account,
        user,
        socket_id: &cx.session.sid,
        name: cx.session.name(),
        avatar: cx.session.avatar(),
        rooms: &rooms,
        muted: &muted,
    };
    svc::handle(cx.app, &typer, event, &data)?;
    Ok(Reply::Done)
}
