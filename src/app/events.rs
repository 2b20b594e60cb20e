//! What the application tells clients: the outbound vocabulary, typed. The wire layer renders each event
//! for each dialect (`wire/`); the fan-out sends it to rooms and users, rendered once per dialect.

use serde_json::Value;

use crate::domain::calls::Signal;
use crate::domain::presence::ViewedPresence;
use crate::domain::receipts::{MessageAck, MessageBatchRead, MessageDelivered, MessageRead};
use crate::domain::typing::{TypingDelta, TypingEventPayload};
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
    /// Epoch ms.
    pub at: i64,
}

/// A typing list that changed: the full list, and who started or stopped since the previous event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TypingChange {
    pub list: TypingEventPayload,
    pub delta: TypingDelta,
}

/// A member's read position in a room moved forward.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadPosition {
    pub room: String,
    pub user: String,
    /// The message read up to.
    pub message_id: String,
    /// The thread the reader was in, as they said.
    pub thread_id: Option<String>,
    /// Epoch ms.
    pub at: i64,
    /// Everyone who read that message now, with when (epoch ms), when the message is tracked in memory.
    pub readers: Option<Vec<(String, i64)>>,
}

/// A user in a call, as the other parties are told.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CallParty {
    pub user: String,
    pub author: Author,
    pub muted: bool,
    pub video: bool,
    pub screen_sharing: bool,
    /// Epoch ms.
    pub joined_at: i64,
}

/// What the users of a call are told (docs/protocol.md §13.5).
#[derive(Clone, Debug, PartialEq)]
pub enum CallEvent {
    /// A client's signal, passed on exactly as it was sent (descriptions and candidates are never read).
    Relayed {
        signal: Signal,
        body: Value,
    },
    /// A call rings: to the invitee, and to the caller as feedback.
    Ring {
        call_id: String,
        caller: String,
        author: Author,
        kind: String,
        channel_id: Option<String>,
    },
    ParticipantJoined {
        call_id: String,
        party: CallParty,
    },
    ParticipantLeft {
        call_id: String,
        party: CallParty,
    },
    /// Nobody answered in time: the call is over.
    Timeout {
        call_id: String,
    },
    /// The call is over because its other users are gone (their last socket closed).
    Ended {
        call_id: String,
        ended_by: String,
        reason: &'static str,
    },
}

#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// A message was committed (to the room, sender included). `origin`: the socket that sent it (its copy
    /// may say more, e.g. the client's temporary id).
    MessageNew {
        message: MessageRow,
        author: Author,
        origin: Option<String>,
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
    /// The current typing list of a room (or a typer's copy without themselves), with what changed.
    Typing(TypingChange),
    /// A user's presence, as the receiving viewers may see it.
    PresenceChanged(ViewedPresence),
    Delivered(MessageDelivered),
    Acked(MessageAck),
    Read(MessageRead),
    BatchRead(MessageBatchRead),
    Reaction(ReactionChange),
    /// A member read up to a message (to the room, not the reader; never for a reader who turned read
    /// receipts off).
    ReadUpdate(ReadPosition),
    /// Call signalling, to the users of a call.
    Call(CallEvent),
    /// The socket's token expired beyond the grace; it is disconnected next.
    TokenExpired,
    /// An app backend's event (`POST /api/broadcast`), passed through as given.
    Custom {
        name: String,
        payload: Value,
    },
}

impl Event {
    /// The socket the event came from, when its copy may differ.
    pub fn origin(&self) -> Option<&str> {
        match self {
            Event::MessageNew { origin, .. } => origin.as_deref(),
            _ => None,
        }
    }
}
