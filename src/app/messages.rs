//! Sending, editing, deleting and recovering messages (docs/protocol.md §6). Only a committed message is
//! ever broadcast or acked.

use std::sync::Arc;
use std::time::Instant;

use super::Fanout;
use super::events::{Author, Event};
use super::receipts::Receipts;
use crate::cluster::Audience;
use crate::domain::names::RoomName;
use crate::domain::policy;
use crate::error::{AppError, AppResult};
use crate::metrics::Metrics;
use crate::store::rooms::ChannelRow;
use crate::store::writer::{MessageWriter, Queued, WriteOp, WriteOutcome};
use crate::store::{MessageRow, NewMessage, Store};

/// A validated `message:send`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outgoing {
    pub room: RoomName,
    pub kind: String,
    pub content: String,
    pub thread_id: Option<String>,
    pub reply_to: Option<String>,
    /// JSON text.
    pub metadata: Option<String>,
    pub mentions: Option<String>,
    pub attachments: Option<String>,
    pub client_message_id: Option<String>,
}

pub struct Sent {
    pub message: MessageRow,
    /// True when this was a retry of a message already stored (not broadcast again).
    pub duplicate: bool,
}

/// A message checked and queued for its commit.
pub struct Pending {
    queued: Queued,
    room: RoomName,
    received: Instant,
}

/// A `sync:messages` page.
pub struct SyncPage {
    pub messages: Vec<MessageRow>,
    /// The `since` to use next: taken before the query, so nothing committed meanwhile is skipped.
    pub server_time: i64,
    pub has_more: bool,
}

/// `sync:channels`: every room of the user.
pub struct Channels {
    pub channels: Vec<ChannelRow>,
    pub server_time: i64,
}

pub const SYNC_DEFAULT_LIMIT: i64 = 100;
pub const SYNC_MAX_LIMIT: i64 = 1000;

pub struct Messages {
    store: Store,
    writer: MessageWriter,
    fanout: Arc<Fanout>,
    receipts: Arc<Receipts>,
    metrics: Arc<Metrics>,
    /// How far `sync:messages` sets `serverTime` back (see [`CLUSTER_SYNC_MARGIN_MS`]); 0 on one node.
    sync_margin_ms: i64,
}

/// In a cluster, `serverTime` is set this far back: another node may be committing a message stamped
/// earlier (its writer's batch in flight, or its clock a little behind this node's), which this node's
/// writer cannot see. A client's next `since` then asks again for the last seconds: a repeated message is
/// harmless, a skipped one is not. Holds while commits take, and clocks differ by, less than this together.
pub const CLUSTER_SYNC_MARGIN_MS: i64 = 5_000;

impl Messages {
    pub fn new(
        store: Store,
        writer: MessageWriter,
        fanout: Arc<Fanout>,
        receipts: Arc<Receipts>,
        metrics: Arc<Metrics>,
    ) -> Messages {
        Messages { store, writer, fanout, receipts, metrics, sync_margin_ms: 0 }
    }

    /// A node of a cluster: `serverTime` leaves room for the other nodes' commits.
    pub fn in_cluster(mut self) -> Messages {
        self.sync_margin_ms = CLUSTER_SYNC_MARGIN_MS;
        self
    }

    /// Queues the message (not yet durable, not yet broadcast); the writer refuses it if the sender may not
    /// write to the room.
    pub async fn begin(&self, account: &str, user: &str, out: Outgoing) -> AppResult<Pending> {
        let received = Instant::now();
        // The writer checks the sender may write ([`policy::check_write`]) inside the transaction of the batch.
        let op = WriteOp::Insert(NewMessage {
            id: uuid::Uuid::now_v7().to_string(),
            account: account.to_string(),
            room: out.room.name.clone(),
            user_id: user.to_string(),
            kind: out.kind,
            content: out.content,
            thread_id: out.thread_id,
            reply_to: out.reply_to,
            metadata: out.metadata,
            mentions: out.mentions,
            attachments: out.attachments,
            client_message_id: out.client_message_id,
            checked_room: Some(out.room.clone()),
        });
        Ok(Pending { queued: self.writer.enqueue(op)?, room: out.room, received })
    }

    /// Waits for the commit, then (after `before`, the previous message of the same socket) broadcasts it.
    /// `origin`: the socket that sent it, if any.
    pub async fn complete(
        &self,
        account: &str,
        author: Author,
        pending: Pending,
        before: Option<tokio::sync::oneshot::Receiver<()>>,
        origin: Option<String>,
    ) -> AppResult<Sent> {
        let Pending { queued, room, received } = pending;
        let outcome = queued.committed().await;
        if let Some(previous) = before {
            let _ = previous.await;
        }
        match outcome? {
            WriteOutcome::Inserted(message) => {
                let to = Audience::room(account, &message.room);
                self.fanout.emit(to, Event::MessageNew { message: message.clone(), author, origin }).await;
                self.metrics.messages.inc();
                self.metrics.broadcasts.inc();
                self.metrics.latency_ms.observe(received.elapsed().as_secs_f64() * 1000.0);
                self.receipts.message_sent(account, &message).await;
                Ok(Sent { message, duplicate: false })
            }
            WriteOutcome::Duplicate(message) => {
                if message.room != room.name {
                    return Err(AppError::validation(format!(
                        "clientMessageId was already used for a message in {}",
                        message.room
                    )));
                }
                Ok(Sent { message, duplicate: true })
            }
            WriteOutcome::NotFound => Err(AppError::room_not_found(&room.name)),
            WriteOutcome::Changed(_) => Err(AppError::internal("writer answered an insert with a change")),
        }
    }

    /// `message:sent` to the sender's own sockets, for a message with a `clientMessageId`.
    pub async fn confirm_to_sender(&self, account: &str, user: &str, m: &MessageRow) {
        if m.client_message_id.is_some() {
            self.fanout.emit(Audience::user(account, user), Event::MessageSent { message: m.clone() }).await;
        }
    }

    /// Edits (content Some) or deletes (None) a message: its author, or a room admin/moderator.
    pub async fn change(&self, account: &str, user: &str, id: &str, content: Option<String>) -> AppResult<MessageRow> {
        let original = self
            .store
            .message(account, id)
            .await?
            .filter(|m| m.deleted_at.is_none())
            .ok_or_else(|| AppError::unknown_message(id))?;
        let member = self.store.member(account, &original.room, user).await?;
        if original.user_id != user {
            if !policy::can_moderate(member.as_ref().map(|m| m.facts()).as_ref()) {
                return Err(AppError::forbidden("only the author or a room admin/moderator may change this message"));
            }
        } else if content.is_some() && member.as_ref().is_none_or(|m| m.banned) {
            // An author may still delete what they wrote, but not put new words into a room they left or were
            // banned from.
            return Err(AppError::forbidden(format!(
                "you are no longer a member of {}: you may delete, not edit",
                original.room
            )));
        }
        let deleting = content.is_none();
        let op = WriteOp::Change { account: account.to_string(), user: user.to_string(), id: id.to_string(), content };
        let changed = match self.writer.submit(op).await? {
            WriteOutcome::Changed(m) => m,
            _ => return Err(AppError::unknown_message(id)),
        };
        let by = user.to_string();
        let event = if deleting {
            Event::MessageDeleted { message: changed.clone(), by }
        } else {
            Event::MessageUpdated { message: changed.clone(), by }
        };
        self.fanout.emit(Audience::room(account, &changed.room), event).await;
        Ok(changed)
    }

    /// `sync:messages`: members only; `serverTime` is taken before the query so nothing committed meanwhile
    /// is skipped by the next call.
    pub async fn sync(
        &self,
        account: &str,
        user: &str,
        room: &RoomName,
        since: Option<i64>,
        after_seq: Option<i64>,
        limit: Option<i64>,
    ) -> AppResult<SyncPage> {
        match self.store.member(account, &room.name, user).await? {
            None => return Err(AppError::not_a_member(&room.name)),
            Some(m) if m.banned => return Err(AppError::forbidden(format!("you are banned from {}", room.name))),
            Some(_) => {}
        }
        let limit = limit.unwrap_or(SYNC_DEFAULT_LIMIT);
        if !(1..=SYNC_MAX_LIMIT).contains(&limit) {
            return Err(AppError::validation(format!("limit must be between 1 and {SYNC_MAX_LIMIT}")));
        }
        let server_time = self.writer.safe_server_time() - self.sync_margin_ms;
        let since = since.unwrap_or(0).max(0);
        let page = self.store.sync_messages(account, &room.name, since, after_seq.unwrap_or(0), limit).await?;
        self.receipts.fetched(account, user, &page.messages).await;
        Ok(SyncPage { messages: page.messages, server_time, has_more: page.has_more })
    }

    /// `sync:channels`: ALL the user's rooms with their last activity, member and unread counts. `since` is
    /// accepted but the list is always complete: a client replacing its list from it never loses a room.
    pub async fn channels(&self, account: &str, user: &str) -> AppResult<Channels> {
        let server_time = crate::store::now_ms();
        // Unread counts come from the stored watermarks: write the pending ones first.
        self.receipts.flush().await;
        let channels = self.store.channels_of_user(account, user).await?;
        Ok(Channels { channels, server_time })
    }
}
