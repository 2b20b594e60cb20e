//! What the application tells clients: the outbound vocabulary, typed. The wire layer renders each event
//! for each dialect (`wire/`); the fan-out sends it to rooms and users, rendered once per dialect.

use serde_json::Value;

use crate::domain::presence::ViewedPresence;
use crate::domain::receipts::{MessageAck, MessageBatchRead, MessageDelivered, MessageRead};
use crate::domain::typing::TypingEventPayload;
use crate::store::MessageRow;

/// Sender details that are not stored with a message (they come from the token).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Author {
    pub name: Option<String>,
    pub avatar: Option<String>,
}

/// A user arriving in or leaving a room.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoomPresence {
    pub room: String,
    pub user: String,
    pub author: Author,
    /// Epoch ms.
    pub at: i64,
}

/// A reaction added or removed, with the emoji's count after it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReactionChange {
    pub message_id: String,
    pub room: String,
    pub user: String,
    pub emoji: String,
    pub count: i64,
    pub added: bool,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// A message was committed (to the room, sender included).
    MessageNew {
        message: MessageRow,
        author: Author,
    },
    /// The sender's own sockets learn that their `clientMessageId` is stored.
    MessageSent {
        message: MessageRow,
    },
    /// A message's content changed, by `by`.
    MessageUpdated {
        message: MessageRow,
        by: String,
    },
    /// A message was deleted, by `by`.
    MessageDeleted {
        message: MessageRow,
        by: String,
    },
    UserJoined(RoomPresence),
    UserLeft(RoomPresence),
    /// The current typing list of a room (or a typer's copy without themselves).
    Typing(TypingEventPayload),
    /// A user's presence, as the receiving viewers may see it.
    PresenceChanged(ViewedPresence),
    Delivered(MessageDelivered),
    Acked(MessageAck),
    Read(MessageRead),
    BatchRead(MessageBatchRead),
    Reaction(ReactionChange),
    /// The socket's token expired beyond the grace; it is disconnected next.
    TokenExpired,
    /// An app backend's event (`POST /api/broadcast`), passed through as given.
    Custom {
        name: String,
        payload: Value,
    },
}
