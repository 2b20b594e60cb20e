//! nchat's realtime plugin test dialect (docs/protocol.md §13.6; the plugin's seed "WebSocket Events" and
//! `__tests__/plugins/realtime-plugin.test.ts`): `auth {token, userId}`, `channel:join` → `channel:joined` and
//! `channel:members`, `typing {channelId, isTyping}` → `typing`, `presence:update` → `presence`,
//! `message:send` → `message`. Its other inbound events are the contract's.

use std::borrow::Cow;

use serde_json::{Value, json};

use super::{Cx, Packet, Reply, contract, socket};
use crate::app::events::Event;
use crate::app::messages::Outgoing;
use crate::domain::names::{RoomName, channel_id_of};
use crate::domain::presence::PublicStatus;
use crate::domain::time::iso_ms;
use crate::error::AppResult;

/// A plugin event read into what the application is asked to do ([`decode`] is the whole reading).
pub enum Command {
    /// `channel:join {channelId}`: answered with `channel:joined` and `channel:members`.
    ChannelJoin(RoomName),
    /// `message:send {channelId, content, mentions: []}`: the lenient reading of nchat's shapes.
    Send(Outgoing),
    Contract(contract::Command),
}

/// Reads one inbound event of a plugin socket into its command.
pub fn decode(event: &str, data: &Value, max_message_length: usize) -> AppResult<Command> {
    Ok(match event {
        "channel:join" => Command::ChannelJoin(contract::channel_room(data)?),
        "message:send" => Command::Send(socket::outgoing(data, max_message_length)?),
        _ => Command::Contract(contract::decode(event, data, max_message_length)?),
    })
}

/// Carries out a decoded command.
pub async fn run(cx: &Cx<'_>, command: Command) -> AppResult<Reply> {
    match command {
        Command::ChannelJoin(room) => {
            let (room, joined) = contract::channel_join(cx, room).await?;
            let members: Vec<Value> = joined
                .members
                .iter()
                .flatten()
                .map(|m| json!({ "userId": m.user_id, "joinedAt": iso_ms(m.joined_at) }))
                .collect();
            cx.out.emit("channel:members", &json!({ "channelId": room.channel_id(), "members": members }));
            Ok(Reply::Data(contract::joined_ack(&joined)))
        }
        Command::Send(out) => Ok(Reply::Later(Box::pin(contract::commit(cx, out).await?))),
        Command::Contract(command) => contract::run(cx, command).await,
    }
}

fn status_word(s: PublicStatus) -> &'static str {
    match s {
        PublicStatus::Busy => "dnd",
        other => other.as_str(),
    }
}

/// An event as the plugin's clients read it.
pub fn render(event: &Event) -> Vec<Packet<'_>> {
    match event {
        Event::MessageNew { message: m, .. } => vec![(
            Cow::Borrowed("message"),
            json!({ "id": m.id, "userId": m.user_id, "channelId": channel_id_of(&m.room), "content": m.content,
                    "createdAt": iso_ms(m.created_at) }),
        )],
        Event::Typing(change) => {
            let channel = &change.list.room_name;
            let started = change.delta.started.iter().map(|u| (u.user_id.as_str(), true));
            let stopped = change.delta.stopped.iter().map(|u| (u.as_str(), false));
            started
                .chain(stopped)
                .map(|(user, on)| {
                    (Cow::Borrowed("typing"), json!({ "userId": user, "channelId": channel, "isTyping": on }))
                })
                .collect()
        }
        Event::PresenceChanged(v) => {
            vec![(Cow::Borrowed("presence"), json!({ "userId": v.user_id, "status": status_word(v.status) }))]
        }
        Event::TokenExpired => vec![(
            Cow::Borrowed("error"),
            json!({ "type": "auth", "code": "TOKEN_EXPIRED", "message": "the token expired; reconnect with a new token" }),
        )],
        Event::Custom { name, payload } => vec![(Cow::Borrowed(name.as_str()), payload.clone())],
        _ => Vec::new(),
    }
}
