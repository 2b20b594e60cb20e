//! Delivery and read receipts (docs/protocol.md §7): pure counting logic, no sockets, no SQL, no clock.
//!
//! Model:
//! - Each room has members; a member counts as a *recipient* of a message when they are
//!   not its sender and joined before it was sent (`since_seq < seq`), so somebody who joins
//!   later does not make old messages "unread by one" forever. Removing a member removes
//!   them from every count.
//! - Reads are per-room per-user *watermarks* on the message `seq`: reading message N reads
//!   everything up to N. A watermark never moves backwards.
//! - Deliveries are per-message sets of recipients (pushed to a connected socket, or fetched
//!   through sync), held as bits over the room's numbered users (a message pushed to 500 members costs
//!   64 bytes, not 500 copies of their ids). A read implies delivery.
//! - Counts are over recipients: `totalRecipients = members − sender` (WhatsApp-style "all
//!   read" when `readCount == totalRecipients`). Readers who turned read receipts off never
//!   count as readers and never cause `message:read*` (they still count as delivered).
//! - Watermark changes are recorded as dirty and drained by [`ReceiptTracker::take_dirty`]
//!   so the glue writes them to the database in batches (coalesced writes).
//!
//! Only the latest `max_messages_per_room` messages of a room are tracked in memory; for older
//! ones [`ReceiptTracker::status`] answers `None` and the glue falls back to the database
//! (watermarks there give the read state).

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::{DateTime, Utc};
use serde::Serialize;

/// Per-room monotonic message sequence number.
pub type Seq = i64;

pub const DEFAULT_MAX_MESSAGES_PER_ROOM: usize = 1_000;

// ---------------------------------------------------------------------------------------------
// Outgoing payloads
// ---------------------------------------------------------------------------------------------

/// Delivery state of a message as the sender sees it. In a group, `delivered`/`read` mean
/// ALL recipients; the counts tell the rest.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryState {
    Sent,
    Delivered,
    Read,
    /// Never produced by the counting logic: the glue uses it for a message the server
    /// refused or does not know (see [`DeliveryStatus::failed`]).
    Failed,
}

impl DeliveryState {
    /// `read` when every recipient read, `delivered` when every recipient got it, else
    /// `sent`. A message without recipients (the sender is alone in the room) stays `sent`.
    pub fn from_counts(delivered_count: usize, read_count: usize, total_recipients: usize) -> Self {
        if total_recipients == 0 {
            DeliveryState::Sent
        } else if read_count >= total_recipients {
            DeliveryState::Read
        } else if delivered_count >= total_recipients {
            DeliveryState::Delivered
        } else {
            DeliveryState::Sent
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryState::Sent => "sent",
            DeliveryState::Delivered => "delivered",
            DeliveryState::Read => "read",
            DeliveryState::Failed => "failed",
        }
    }
}

/// `message:delivered {messageId, deliveredCount, totalRecipients, deliveredAt}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MessageDelivered {
    pub message_id: String,
    pub delivered_count: usize,
    pub total_recipients: usize,
    #[serde(serialize_with = "crate::domain::time::ser::iso")]
    pub delivered_at: DateTime<Utc>,
}

/// `message:ack {messageId, status}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MessageAck {
    pub message_id: String,
    pub status: DeliveryState,
}

/// `message:read {messageId, userId, readCount, totalRecipients, readAt}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MessageRead {
    pub message_id: String,
    pub user_id: String,
    pub read_count: usize,
    pub total_recipients: usize,
    #[serde(serialize_with = "crate::domain::time::ser::iso")]
    pub read_at: DateTime<Utc>,
}

/// `message:batch-read {channelId, userId, messageIds, readAt}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MessageBatchRead {
    pub channel_id: String,
    pub user_id: String,
    pub message_ids: Vec<String>,
    #[serde(serialize_with = "crate::domain::time::ser::iso")]
    pub read_at: DateTime<Utc>,
}

/// One entry of `delivery:sync-response.statuses`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryStatus {
    /// The id as the client sent it (server id or its clientMessageId).
    pub message_id: String,
    pub state: DeliveryState,
    pub delivered_count: usize,
    pub read_count: usize,
    pub total_recipients: usize,
    #[serde(serialize_with = "crate::domain::time::ser::iso")]
    pub updated_at: DateTime<Utc>,
}

impl DeliveryStatus {
    /// Status for an id the server never accepted (so the client should resend).
    pub fn failed(message_id: &str, now: DateTime<Utc>) -> Self {
        DeliveryStatus {
            message_id: message_id.to_string(),
            state: DeliveryState::Failed,
            delivered_count: 0,
            read_count: 0,
            total_recipients: 0,
            updated_at: now,
        }
    }

    /// Status computed from counts (e.g. from database rows for an untracked message).
    pub fn from_counts(
        message_id: &str,
        delivered_count: usize,
        read_count: usize,
        total_recipients: usize,
        updated_at: DateTime<Utc>,
    ) -> Self {
        DeliveryStatus {
            message_id: message_id.to_string(),
            state: DeliveryState::from_counts(delivered_count, read_count, total_recipients),
            delivered_count,
            read_count,
            total_recipients,
            updated_at,
        }
    }
}

/// `delivery:sync-response {statuses}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DeliverySyncResponse {
    pub statuses: Vec<DeliveryStatus>,
}

// ---------------------------------------------------------------------------------------------
// Notices returned to the glue
// ---------------------------------------------------------------------------------------------

/// Send `delivered` (and `ack` when present) to the sender's sockets (`user:<sender_id>`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeliveredNotice {
    pub sender_id: String,
    pub delivered: MessageDelivered,
    /// Present when the message's state changed (e.g. `sent` → `delivered`).
    pub ack: Option<MessageAck>,
}

/// Send `read` to the sender's sockets (or fold it into a batch, see
/// [`ReadOutcome::batch_by_sender`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadNotice {
    pub sender_id: String,
    pub read: MessageRead,
}

/// A `message:batch-read` for one sender.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BatchReadNotice {
    pub sender_id: String,
    pub payload: MessageBatchRead,
}

/// Result of advancing a read watermark.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReadOutcome {
    /// The watermark moved forward (and was recorded for persistence).
    pub advanced: bool,
    /// The watermark after the call.
    pub watermark: Seq,
    /// Deliveries implied by the read (messages the reader had not been counted for yet).
    pub delivered: Vec<DeliveredNotice>,
    /// Read notices for the senders, in seq order. Empty when the reader turned read
    /// receipts off.
    pub reads: Vec<ReadNotice>,
}

impl ReadOutcome {
    /// Fold [`ReadOutcome::reads`] into one `message:batch-read` per sender (message ids in
    /// seq order), for `message:batch-read-ack` or a watermark jump over many messages.
    pub fn batch_by_sender(&self, channel_id: &str) -> Vec<BatchReadNotice> {
        let mut out: Vec<BatchReadNotice> = Vec::new();
        for r in &self.reads {
            match out.iter_mut().find(|b| b.sender_id == r.sender_id) {
                Some(b) => {
                    b.payload.message_ids.push(r.read.message_id.clone());
                    b.payload.read_at = b.payload.read_at.max(r.read.read_at);
                }
                None => out.push(BatchReadNotice {
                    sender_id: r.sender_id.clone(),
                    payload: MessageBatchRead {
                        channel_id: channel_id.to_string(),
                        user_id: r.read.user_id.clone(),
                        message_ids: vec![r.read.message_id.clone()],
                        read_at: r.read.read_at,
                    },
                }),
            }
        }
        out
    }
}

/// A watermark to persist.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct WatermarkWrite {
    pub account: String,
    pub room: String,
    pub user_id: String,
    pub seq: Seq,
    pub read_at: DateTime<Utc>,
}

/// A message as registered after it was persisted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewMessage {
    pub message_id: String,
    pub seq: Seq,
    pub sender_id: String,
    pub client_message_id: Option<String>,
    pub created_at: DateTime<Utc>,
}

// ---------------------------------------------------------------------------------------------
// State
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Watermark {
    seq: Seq,
    at: DateTime<Utc>,
}

#[derive(Clone, Debug)]
struct Tracked {
    message_id: String,
    sender_id: String,
    client_message_id: Option<String>,
    /// Users it was delivered to, by their number in the room ([`RoomState::numbers`]).
    delivered: Bits,
    updated_at: DateTime<Utc>,
}

/// A set of small numbers: the first 64 inline, the rest in words allocated only when needed. Every tracked
/// message has one, so a room's usual delivery set costs no allocation at all.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Bits {
    low: u64,
    high: Vec<u64>,
}

impl Bits {
    fn contains(&self, n: u32) -> bool {
        let (word, bit) = ((n / 64) as usize, n % 64);
        let w = if word == 0 { Some(&self.low) } else { self.high.get(word - 1) };
        w.is_some_and(|w| w & (1 << bit) != 0)
    }

    /// Adds `n`; true when it was not in the set.
    fn insert(&mut self, n: u32) -> bool {
        let (word, bit) = ((n / 64) as usize, n % 64);
        let w = if word == 0 {
            &mut self.low
        } else {
            if self.high.len() < word {
                self.high.resize(word, 0);
            }
            &mut self.high[word - 1]
        };
        let added = *w & (1 << bit) == 0;
        *w |= 1 << bit;
        added
    }
}

/// How many recipients of a message got it and read it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Counts {
    pub delivered: usize,
    pub read: usize,
    pub total: usize,
}

impl Counts {
    pub fn state(self) -> DeliveryState {
        DeliveryState::from_counts(self.delivered, self.read, self.total)
    }
}

/// A room member, as the counting rule sees them for one message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Member<'a> {
    pub user: &'a str,
    /// The room's last seq when they joined: they receive messages after it.
    pub since_seq: Seq,
    /// Their read watermark.
    pub read_seq: Seq,
    /// The message was delivered to them (pushed to a socket, or fetched by sync).
    pub delivered: bool,
    /// They turned read receipts off: they count as delivered, never as read.
    pub receipts_off: bool,
}

/// The receipt-counting rule, the one place it is written: a member is a recipient of message `seq` when
/// they are not its sender and joined before it (`since_seq < seq`); reading through `seq` implies delivery;
/// a reader with read receipts off counts as delivered only.
pub fn count<'a>(sender: &str, seq: Seq, members: impl IntoIterator<Item = Member<'a>>) -> Counts {
    let mut c = Counts::default();
    for m in members {
        if m.user == sender || m.since_seq >= seq {
            continue;
        }
        c.total += 1;
        let read = m.read_seq >= seq;
        if read || m.delivered {
            c.delivered += 1;
        }
        if read && !m.receipts_off {
            c.read += 1;
        }
    }
    c
}

#[derive(Clone, Debug, Default)]
struct RoomState {
    /// member → `since_seq`: recipient of messages with `seq > since_seq`.
    members: HashMap<String, Seq>,
    /// A number for every user a delivery was recorded for while the room is in memory, the index of the
    /// delivery sets ([`Tracked::delivered`]). Never reused: a user who leaves keeps theirs (their bits
    /// are ignored by the recipient rule), and the room's eviction drops them all.
    numbers: HashMap<String, u32>,
    watermarks: HashMap<String, Watermark>,
    messages: BTreeMap<Seq, Tracked>,
    last_seq: Seq,
    /// Last time the glue needed the room (see [`ReceiptTracker::touch_room`]); eviction goes by it.
    used: Option<DateTime<Utc>>,
}

impl RoomState {
    fn is_recipient(&self, user: &str, seq: Seq, m: &Tracked) -> bool {
        user != m.sender_id && self.members.get(user).is_some_and(|since| *since < seq)
    }

    fn read_through(&self, user: &str, seq: Seq) -> bool {
        self.watermarks.get(user).is_some_and(|w| w.seq >= seq)
    }

    fn delivered_to(&self, user: &str, m: &Tracked) -> bool {
        self.numbers.get(user).is_some_and(|n| m.delivered.contains(*n))
    }

    /// The user's number in the room, given on first use.
    fn number(&mut self, user: &str) -> u32 {
        if let Some(n) = self.numbers.get(user) {
            return *n;
        }
        let next = self.numbers.len() as u32;
        self.numbers.insert(user.to_string(), next);
        next
    }

    fn counts(&self, seq: Seq, m: &Tracked, receipts_off: impl Fn(&str) -> bool) -> Counts {
        let members = self.members.iter().map(|(user, since)| Member {
            user,
            since_seq: *since,
            read_seq: self.watermarks.get(user).map_or(Seq::MIN, |w| w.seq),
            delivered: self.delivered_to(user, m),
            receipts_off: receipts_off(user),
        });
        count(&m.sender_id, seq, members)
    }
}

/// Configuration of the tracker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReceiptConfig {
    /// Messages per room kept in memory (oldest evicted first).
    pub max_messages_per_room: usize,
}

impl Default for ReceiptConfig {
    fn default() -> Self {
        ReceiptConfig { max_messages_per_room: DEFAULT_MAX_MESSAGES_PER_ROOM }
    }
}

type RoomKey = (String, String);

/// Whether a user of `account` turned read receipts off, without allocating (asked per member per count).
fn receipts_off_in<'a>(off: &'a HashMap<String, HashSet<String>>, account: &str) -> impl Fn(&str) -> bool + Copy + 'a {
    let users = off.get(account);
    move |user: &str| users.is_some_and(|u| u.contains(user))
}

/// Receipt state of every room, per account. Not synchronised: keep it behind a mutex.
#[derive(Debug, Default)]
pub struct ReceiptTracker {
    cfg: ReceiptConfig,
    rooms: HashMap<RoomKey, RoomState>,
    /// (account, message id) → (room, seq).
    by_id: HashMap<(String, String), (String, Seq)>,
    /// (account, sender, client message id) → message id.
    by_client_id: HashMap<(String, String, String), String>,
    /// account → users with read receipts turned off. Keyed by account so a lookup borrows the ids: the
    /// counts ask it for every member of a room, on every delivery.
    receipts_off: HashMap<String, HashSet<String>>,
    dirty: HashMap<(String, String, String), Watermark>,
}

impl ReceiptTracker {
    pub fn new(cfg: ReceiptConfig) -> Self {
        ReceiptTracker { cfg, ..Default::default() }
    }

    fn rk(account: &str, room: &str) -> RoomKey {
        (account.to_string(), room.to_string())
    }

    fn receipts_off_fn<'a>(&'a self, account: &str) -> impl Fn(&str) -> bool + Copy + 'a {
        receipts_off_in(&self.receipts_off, account)
    }

    // ----- membership and settings --------------------------------------------------------

    /// Whether the room's members were loaded (the glue loads them lazily from the database).
    /// The room is about to be used (it is loaded, or was just loaded): it stays in memory for a while.
    pub fn touch_room(&mut self, account: &str, room: &str, now: DateTime<Utc>) {
        if let Some(r) = self.rooms.get_mut(&Self::rk(account, room)) {
            r.used = Some(now);
        }
    }

    pub fn has_room(&self, account: &str, room: &str) -> bool {
        self.rooms.contains_key(&Self::rk(account, room))
    }

    /// Replace the room's member list: `(user, since_seq)`, where `since_seq` is the room's
    /// last seq when they joined (0 for "before anything tracked").
    pub fn set_members(&mut self, account: &str, room: &str, members: impl IntoIterator<Item = (String, Seq)>) {
        let r = self.rooms.entry(Self::rk(account, room)).or_default();
        r.members = members.into_iter().collect();
    }

    /// A user joined: they are a recipient of messages sent from now on. Rejoining keeps the
    /// original join point.
    pub fn add_member(&mut self, account: &str, room: &str, user_id: &str) {
        let r = self.rooms.entry(Self::rk(account, room)).or_default();
        let since = r.last_seq;
        r.members.entry(user_id.to_string()).or_insert(since);
    }

    /// A user was removed from the room (forget / admin): no longer counted anywhere.
    pub fn remove_member(&mut self, account: &str, room: &str, user_id: &str) {
        if let Some(r) = self.rooms.get_mut(&Self::rk(account, room)) {
            r.members.remove(user_id);
        }
    }

    /// Who read the tracked message at `seq` of a room: its recipients whose watermark reached it and who let
    /// others see their reads, each with the time their watermark last moved. None when the message is not
    /// tracked.
    pub fn readers(&self, account: &str, room: &str, seq: Seq) -> Option<Vec<(String, DateTime<Utc>)>> {
        let r = self.rooms.get(&Self::rk(account, room))?;
        let m = r.messages.get(&seq)?;
        let off = self.receipts_off_fn(account);
        let mut out: Vec<(String, DateTime<Utc>)> = r
            .watermarks
            .iter()
            .filter(|(u, w)| w.seq >= seq && r.is_recipient(u, seq, m) && !off(u))
            .map(|(u, w)| (u.clone(), w.at))
            .collect();
        out.sort();
        Some(out)
    }

    /// Whether the user lets others see their reads (`allowReadReceipts`).
    pub fn allows_read_receipts(&self, account: &str, user_id: &str) -> bool {
        !receipts_off_in(&self.receipts_off, account)(user_id)
    }

    /// Mirror of the user's `allowReadReceipts` privacy setting.
    pub fn set_read_receipts(&mut self, account: &str, user_id: &str, allowed: bool) {
        if !allowed {
            self.receipts_off.entry(account.to_string()).or_default().insert(user_id.to_string());
        } else if let Some(users) = self.receipts_off.get_mut(account) {
            users.remove(user_id);
            if users.is_empty() {
                self.receipts_off.remove(account);
            }
        }
    }

    /// Drop everything about a deleted room.
    /// Drops rooms not used since `cutoff` (by [`touch_room`](Self::touch_room) or a tracked message) and with
    /// no unwritten watermark: their members and watermarks reload from the database on their next use, and
    /// receipts for messages that old are no longer counted. Without it every room ever used stays in memory.
    /// The caller must not run it while watermarks taken by `take_dirty` are being written.
    pub fn evict_idle(&mut self, cutoff: DateTime<Utc>) -> usize {
        let idle: Vec<RoomKey> = self
            .rooms
            .iter()
            .filter(|(k, r)| {
                r.used.is_some_and(|u| u < cutoff)
                    && r.messages.values().all(|m| m.updated_at < cutoff)
                    && !self.dirty.keys().any(|(a, rm, _)| *a == k.0 && *rm == k.1)
            })
            .map(|(k, _)| k.clone())
            .collect();
        for (account, room) in &idle {
            self.forget_room(account, room);
        }
        idle.len()
    }

    pub fn forget_room(&mut self, account: &str, room: &str) {
        if let Some(r) = self.rooms.remove(&Self::rk(account, room)) {
            for (_, m) in r.messages {
                self.unindex(account, &m);
            }
        }
        self.dirty.retain(|(a, rm, _), _| !(a == account && rm == room));
    }

    fn unindex(&mut self, account: &str, m: &Tracked) {
        self.by_id.remove(&(account.to_string(), m.message_id.clone()));
        if let Some(c) = &m.client_message_id {
            self.by_client_id.remove(&(account.to_string(), m.sender_id.clone(), c.clone()));
        }
    }

    // ----- messages ----------------------------------------------------------------------

    /// Track a persisted message (call once, after the insert; re-registering an id is a no-op).
    pub fn register_message(&mut self, account: &str, room: &str, msg: NewMessage) {
        if self.by_id.contains_key(&(account.to_string(), msg.message_id.clone())) {
            return;
        }
        let max = self.cfg.max_messages_per_room.max(1);
        let r = self.rooms.entry(Self::rk(account, room)).or_default();
        r.last_seq = r.last_seq.max(msg.seq);
        r.messages.insert(
            msg.seq,
            Tracked {
                message_id: msg.message_id.clone(),
                sender_id: msg.sender_id.clone(),
                client_message_id: msg.client_message_id.clone(),
                delivered: Bits::default(),
                updated_at: msg.created_at,
            },
        );
        let mut evicted = Vec::new();
        while r.messages.len() > max {
            if let Some((_, m)) = r.messages.pop_first() {
                evicted.push(m);
            }
        }
        for m in evicted {
            self.unindex(account, &m);
        }
        self.by_id.insert((account.to_string(), msg.message_id.clone()), (room.to_string(), msg.seq));
        if let Some(c) = msg.client_message_id {
            self.by_client_id.insert((account.to_string(), msg.sender_id, c), msg.message_id);
        }
    }

    /// Room and seq of a tracked message id.
    pub fn locate(&self, account: &str, message_id: &str) -> Option<(&str, Seq)> {
        self.by_id.get(&(account.to_string(), message_id.to_string())).map(|(room, seq)| (room.as_str(), *seq))
    }

    /// Latest seq seen in the room (0 if none tracked).
    pub fn last_seq(&self, account: &str, room: &str) -> Seq {
        self.rooms.get(&Self::rk(account, room)).map_or(0, |r| r.last_seq)
    }

    // ----- delivery ----------------------------------------------------------------------

    /// The message was pushed to these users' sockets (or fetched by them). Non-recipients
    /// (the sender, non-members, later joiners) are ignored. Returns the notice for the
    /// sender when the delivered count grew.
    pub fn mark_delivered<'a>(
        &mut self,
        account: &str,
        message_id: &str,
        users: impl IntoIterator<Item = &'a str>,
        now: DateTime<Utc>,
    ) -> Option<DeliveredNotice> {
        let (room, seq) = self.by_id.get(&(account.to_string(), message_id.to_string()))?.clone();
        let off = receipts_off_in(&self.receipts_off, account);
        let r = self.rooms.get_mut(&Self::rk(account, &room))?;
        let before = r.counts(seq, r.messages.get(&seq)?, off);
        // Each user newly delivered to is a recipient who had neither got nor read it: the delivered count
        // grows by one for each, nothing else changes (no second pass over the room's members).
        let mut added = 0;
        for user in users {
            let m = r.messages.get(&seq)?;
            if !r.is_recipient(user, seq, m) || r.delivered_to(user, m) || r.read_through(user, seq) {
                continue;
            }
            let n = r.number(user);
            if r.messages.get_mut(&seq)?.delivered.insert(n) {
                added += 1;
            }
        }
        if added == 0 {
            return None;
        }
        let m = r.messages.get_mut(&seq)?;
        m.updated_at = now;
        let m = r.messages.get(&seq)?;
        let after = Counts { delivered: before.delivered + added, ..before };
        debug_assert_eq!(after, r.counts(seq, m, off), "the counting rule");
        Some(delivered_notice(m, before, after, now))
    }

    /// A user fetched these messages through sync: each counts as delivered to them.
    pub fn mark_fetched<'a>(
        &mut self,
        account: &str,
        user_id: &str,
        message_ids: impl IntoIterator<Item = &'a str>,
        now: DateTime<Utc>,
    ) -> Vec<DeliveredNotice> {
        message_ids.into_iter().filter_map(|id| self.mark_delivered(account, id, [user_id], now)).collect()
    }

    // ----- reads -------------------------------------------------------------------------

    /// Advance `user_id`'s read watermark in `room` to `up_to_seq` (a seq the glue resolved on
    /// the server side: from a message id, or the room's latest for `channel:read`). Never
    /// moves backwards. Reads imply deliveries.
    pub fn mark_read(
        &mut self,
        account: &str,
        room: &str,
        user_id: &str,
        up_to_seq: Seq,
        read_at: DateTime<Utc>,
    ) -> ReadOutcome {
        let receipts_on = !receipts_off_in(&self.receipts_off, account)(user_id);
        let rk = Self::rk(account, room);
        let r = self.rooms.entry(rk.clone()).or_default();
        let old = r.watermarks.get(user_id).map_or(Seq::MIN, |w| w.seq);
        if up_to_seq <= old {
            return ReadOutcome { advanced: false, watermark: old, ..Default::default() };
        }
        let off = receipts_off_in(&self.receipts_off, account);

        // Counts before the move, for the messages the move covers and the reader receives.
        let affected: Vec<(Seq, Counts)> = r
            .messages
            .range(old.saturating_add(1)..=up_to_seq)
            .filter(|(seq, m)| r.is_recipient(user_id, **seq, m))
            .map(|(seq, m)| (*seq, r.counts(*seq, m, off)))
            .collect();

        let wm = Watermark { seq: up_to_seq, at: read_at };
        r.watermarks.insert(user_id.to_string(), wm);

        let mut out = ReadOutcome { advanced: true, watermark: up_to_seq, ..Default::default() };
        for (seq, before) in affected {
            let m = r.messages.get_mut(&seq).expect("in range");
            m.updated_at = read_at;
            let m = r.messages.get(&seq).expect("in range");
            let after = r.counts(seq, m, off);
            if after.delivered > before.delivered {
                out.delivered.push(delivered_notice(m, before, after, read_at));
            }
            if receipts_on {
                out.reads.push(ReadNotice {
                    sender_id: m.sender_id.clone(),
                    read: MessageRead {
                        message_id: m.message_id.clone(),
                        user_id: user_id.to_string(),
                        read_count: after.read,
                        total_recipients: after.total,
                        read_at,
                    },
                });
            }
        }
        self.dirty.insert((rk.0, rk.1, user_id.to_string()), wm);
        out
    }

    /// [`ReceiptTracker::mark_read`] up to a tracked message (`message:read-ack`,
    /// `read:update`, `receipt:update`). `None` when the id is not tracked here: resolve its
    /// seq from the database and call `mark_read`.
    pub fn mark_read_message(
        &mut self,
        account: &str,
        user_id: &str,
        message_id: &str,
        read_at: DateTime<Utc>,
    ) -> Option<ReadOutcome> {
        let (room, seq) = self.locate(account, message_id).map(|(r, s)| (r.to_string(), s))?;
        Some(self.mark_read(account, &room, user_id, seq, read_at))
    }

    /// Load a persisted watermark (startup / lazy load). Keeps the higher one; not dirty.
    pub fn load_watermark(&mut self, account: &str, room: &str, user_id: &str, seq: Seq, read_at: DateTime<Utc>) {
        let r = self.rooms.entry(Self::rk(account, room)).or_default();
        let w = r.watermarks.entry(user_id.to_string()).or_insert(Watermark { seq, at: read_at });
        if seq > w.seq {
            *w = Watermark { seq, at: read_at };
        }
    }

    /// The user's read watermark in the room.
    pub fn watermark(&self, account: &str, room: &str, user_id: &str) -> Option<Seq> {
        self.rooms.get(&Self::rk(account, room))?.watermarks.get(user_id).map(|w| w.seq)
    }

    /// Tracked messages after the user's watermark that others sent to them.
    pub fn unread_count(&self, account: &str, room: &str, user_id: &str) -> usize {
        let Some(r) = self.rooms.get(&Self::rk(account, room)) else {
            return 0;
        };
        let from = r.watermarks.get(user_id).map_or(Seq::MIN, |w| w.seq).saturating_add(1);
        r.messages.range(from..).filter(|(seq, m)| r.is_recipient(user_id, **seq, m)).count()
    }

    /// Drain the watermarks changed since the last call (one per room and user, the latest),
    /// sorted, for a batched database write. Put them back with
    /// [`ReceiptTracker::restore_dirty`] if the write fails.
    pub fn take_dirty(&mut self) -> Vec<WatermarkWrite> {
        let mut out: Vec<WatermarkWrite> = self
            .dirty
            .drain()
            .map(|((account, room, user_id), w)| WatermarkWrite { account, room, user_id, seq: w.seq, read_at: w.at })
            .collect();
        out.sort();
        out
    }

    /// Re-queue writes that could not be persisted (newer dirty values win).
    pub fn restore_dirty(&mut self, writes: impl IntoIterator<Item = WatermarkWrite>) {
        for w in writes {
            let e = self.dirty.entry((w.account, w.room, w.user_id)).or_insert(Watermark { seq: w.seq, at: w.read_at });
            if w.seq > e.seq {
                *e = Watermark { seq: w.seq, at: w.read_at };
            }
        }
    }

    /// Number of watermarks waiting to be written.
    pub fn dirty_len(&self) -> usize {
        self.dirty.len()
    }

    // ----- delivery:sync -----------------------------------------------------------------

    /// Status of a tracked message for `delivery:sync`; `id` is a server id or one of the
    /// requester's client ids and is echoed as given. `None`: not tracked here (ask the
    /// database, or answer [`DeliveryStatus::failed`] for an unknown client id).
    pub fn status(&self, account: &str, requester: &str, id: &str) -> Option<DeliveryStatus> {
        let message_id = if self.by_id.contains_key(&(account.to_string(), id.to_string())) {
            id.to_string()
        } else {
            self.by_client_id.get(&(account.to_string(), requester.to_string(), id.to_string()))?.clone()
        };
        let (room, seq) = self.by_id.get(&(account.to_string(), message_id))?;
        let r = self.rooms.get(&Self::rk(account, room))?;
        let m = r.messages.get(seq)?;
        let c = r.counts(*seq, m, self.receipts_off_fn(account));
        Some(DeliveryStatus {
            message_id: id.to_string(),
            state: c.state(),
            delivered_count: c.delivered,
            read_count: c.read,
            total_recipients: c.total,
            updated_at: m.updated_at,
        })
    }

    /// `delivery:sync` over tracked messages only; `unknown` gets the ids not answered, for
    /// the glue to look up in the database.
    pub fn delivery_sync<'a>(
        &self,
        account: &str,
        requester: &str,
        ids: impl IntoIterator<Item = &'a str>,
        unknown: &mut Vec<String>,
    ) -> DeliverySyncResponse {
        let mut statuses = Vec::new();
        for id in ids {
            match self.status(account, requester, id) {
                Some(s) => statuses.push(s),
                None => unknown.push(id.to_string()),
            }
        }
        DeliverySyncResponse { statuses }
    }
}

fn delivered_notice(m: &Tracked, before: Counts, after: Counts, now: DateTime<Utc>) -> DeliveredNotice {
    let (old, new) = (before.state(), after.state());
    DeliveredNotice {
        sender_id: m.sender_id.clone(),
        delivered: MessageDelivered {
            message_id: m.message_id.clone(),
            delivered_count: after.delivered,
            total_recipients: after.total,
            delivered_at: now,
        },
        ack: (old != new).then(|| MessageAck { message_id: m.message_id.clone(), status: new }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(v: &impl Serialize) -> String {
        serde_json::to_string(v).unwrap()
    }

    const A: &str = "primary";
    const ROOM: &str = "channel:general";

    fn t(ms: i64) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(1_700_000_000_000 + ms).unwrap()
    }

    fn msg(id: &str, seq: Seq, sender: &str) -> NewMessage {
        NewMessage {
            message_id: id.into(),
            seq,
            sender_id: sender.into(),
            client_message_id: Some(format!("c-{id}")),
            created_at: t(seq),
        }
    }

    /// A 4-member room (alice sends; bob, carol, dave receive).
    fn room4() -> ReceiptTracker {
        let mut r = ReceiptTracker::new(ReceiptConfig::default());
        r.set_members(A, ROOM, ["alice", "bob", "carol", "dave"].map(|u| (u.to_string(), 0)));
        r.register_message(A, ROOM, msg("m1", 1, "alice"));
        r
    }

    #[test]
    fn bits_hold_numbers_inline_and_beyond_the_first_word() {
        let mut b = Bits::default();
        for n in [0, 63, 64, 130, 1_000] {
            assert!(!b.contains(n));
            b.insert(n);
            assert!(b.contains(n));
        }
        for n in [1, 62, 65, 127, 128, 129, 131, 999, 1_001, 5_000] {
            assert!(!b.contains(n), "{n} was never inserted");
        }
        assert_eq!(b.high.len(), 1_000 / 64, "words up to the highest number only");
        let mut small = Bits::default();
        small.insert(5);
        assert!(small.high.is_empty(), "a room of up to 64 users allocates nothing");
    }

    #[test]
    fn deliveries_count_in_a_room_of_hundreds_and_ignore_members_who_left() {
        let mut r = ReceiptTracker::new(ReceiptConfig::default());
        let users: Vec<String> = (0..300).map(|i| format!("u{i}")).collect();
        r.set_members(A, ROOM, users.iter().map(|u| (u.clone(), 0)));
        r.register_message(A, ROOM, msg("m1", 1, "u0"));
        r.register_message(A, ROOM, msg("m2", 2, "u0"));
        // Pushed to every other user in two batches; a repeat and the sender change nothing.
        let n = r.mark_delivered(A, "m1", users[..150].iter().map(String::as_str), t(10)).unwrap();
        assert_eq!((n.delivered.delivered_count, n.delivered.total_recipients), (149, 299));
        let n = r.mark_delivered(A, "m1", users[100..].iter().map(String::as_str), t(11)).unwrap();
        assert_eq!(n.delivered.delivered_count, 299);
        assert!(r.mark_delivered(A, "m1", users.iter().map(String::as_str), t(12)).is_none());
        // Another message's set is its own: numbers are per room, bits per message.
        let n = r.mark_delivered(A, "m2", ["u299", "u200"], t(13)).unwrap();
        assert_eq!(n.delivered.delivered_count, 2);
        // A member who leaves no longer counts, though their bit stays.
        r.remove_member(A, ROOM, "u299");
        let s = r.status(A, "u0", "m2").unwrap();
        assert_eq!((s.delivered_count, s.total_recipients), (1, 298));
        let s = r.status(A, "u0", "m1").unwrap();
        assert_eq!((s.delivered_count, s.total_recipients), (298, 298));
    }

    #[test]
    fn idle_rooms_are_evicted_unless_a_watermark_waits_to_be_written() {
        let mut r = room4();
        r.set_members(A, "quiet", ["x".to_string()].map(|u| (u, 0)));
        r.set_members(A, "fresh", ["y".to_string()].map(|u| (u, 0)));
        r.touch_room(A, "quiet", t(0));
        r.touch_room(A, ROOM, t(0));
        r.touch_room(A, "fresh", t(5_000));
        r.mark_read(A, ROOM, "bob", 1, t(50));
        assert_eq!(r.evict_idle(t(1_000)), 1, "only the room without a pending watermark goes");
        assert!(!r.has_room(A, "quiet") && r.has_room(A, ROOM));
        r.take_dirty();
        assert_eq!(r.evict_idle(t(1)), 0, "a message newer than the cutoff keeps its room");
        assert_eq!(r.evict_idle(t(1_000)), 1);
        assert!(!r.has_room(A, ROOM) && r.locate(A, "m1").is_none(), "its messages are unindexed");
        assert!(r.has_room(A, "fresh"), "a room used after the cutoff stays");
    }

    #[test]
    fn delivered_counts_grow_to_all_in_a_four_member_room() {
        let mut r = room4();
        let n = r.mark_delivered(A, "m1", ["bob"], t(10)).unwrap();
        assert_eq!(n.sender_id, "alice");
        assert_eq!((n.delivered.delivered_count, n.delivered.total_recipients), (1, 3));
        assert_eq!(n.ack, None, "group: not delivered until all recipients have it");
        assert_eq!(
            json(&n.delivered),
            r#"{"messageId":"m1","deliveredCount":1,"totalRecipients":3,"deliveredAt":"2023-11-14T22:13:20.010Z"}"#
        );
        // The sender, duplicates and strangers do not count.
        assert!(r.mark_delivered(A, "m1", ["alice", "bob", "mallory"], t(11)).is_none());
        let n = r.mark_delivered(A, "m1", ["carol"], t(20)).unwrap();
        assert_eq!(n.delivered.delivered_count, 2);
        let n = r.mark_delivered(A, "m1", ["dave"], t(30)).unwrap();
        assert_eq!(n.delivered.delivered_count, 3);
        assert_eq!(n.ack, Some(MessageAck { message_id: "m1".into(), status: DeliveryState::Delivered }));
        assert_eq!(json(&n.ack.unwrap()), r#"{"messageId":"m1","status":"delivered"}"#);
        assert!(r.mark_delivered(A, "unknown", ["bob"], t(40)).is_none());
    }

    #[test]
    fn a_reader_is_delivered_once_and_an_older_read_does_not_cover_a_newer_message() {
        let mut r = room4();
        r.mark_read(A, ROOM, "bob", 1, t(10));
        assert!(r.mark_delivered(A, "m1", ["bob"], t(11)).is_none(), "the read already counted as delivery");
        r.register_message(A, ROOM, msg("m2", 2, "alice"));
        let n = r.mark_delivered(A, "m2", ["bob"], t(12)).expect("m2 is after bob's watermark");
        assert_eq!((n.delivered.delivered_count, n.delivered.total_recipients), (1, 3));
    }

    #[test]
    fn the_read_receipts_setting_is_per_user_and_account() {
        let mut r = room4();
        assert!(r.allows_read_receipts(A, "bob"), "on unless turned off");
        r.set_read_receipts(A, "bob", false);
        assert!(!r.allows_read_receipts(A, "bob"));
        assert!(r.allows_read_receipts(A, "carol") && r.allows_read_receipts("other", "bob"));
        r.set_read_receipts(A, "bob", true);
        assert!(r.allows_read_receipts(A, "bob"));
    }

    #[test]
    fn eviction_keeps_what_was_used_at_the_cutoff_and_other_rooms_pending_writes() {
        let mut r = room4();
        r.touch_room(A, ROOM, t(1_000));
        assert_eq!(r.evict_idle(t(1_000)), 0, "used at the cutoff: not idle");
        assert_eq!(r.evict_idle(t(1_001)), 1);
        let mut r = room4();
        r.touch_room(A, ROOM, t(0));
        assert_eq!(r.evict_idle(t(1)), 0, "m1 was updated at the cutoff (its seq 1 is t(1))");
        r.mark_read(A, "other-room", "bob", 7, t(5));
        r.mark_read("other-account", ROOM, "bob", 7, t(5));
        r.forget_room(A, ROOM);
        assert_eq!(r.dirty_len(), 2, "forgetting a room keeps the writes of other rooms and accounts");
    }

    #[test]
    fn a_read_announces_a_delivery_only_when_it_was_not_delivered_yet() {
        let mut r = room4();
        r.mark_delivered(A, "m1", ["bob"], t(5));
        let out = r.mark_read(A, ROOM, "bob", 1, t(10));
        assert!(out.delivered.is_empty(), "bob already counted as delivered");
        let out = r.mark_read(A, ROOM, "carol", 1, t(11));
        assert_eq!(out.delivered.len(), 1, "carol's read is her delivery");
        assert_eq!(out.delivered[0].delivered.delivered_count, 2);
    }

    #[test]
    fn loaded_watermarks_keep_the_higher_and_its_time() {
        let mut r = room4();
        r.load_watermark(A, ROOM, "bob", 1, t(5));
        assert_eq!(r.watermark(A, ROOM, "bob"), Some(1));
        r.load_watermark(A, ROOM, "bob", 1, t(9));
        assert_eq!(r.readers(A, ROOM, 1).unwrap(), vec![("bob".to_string(), t(5))], "the same seq keeps its time");
        r.load_watermark(A, ROOM, "bob", 0, t(9));
        assert_eq!(r.watermark(A, ROOM, "bob"), Some(1), "never backwards");
        r.load_watermark(A, ROOM, "bob", 3, t(20));
        assert_eq!(r.watermark(A, ROOM, "bob"), Some(3));
        assert_eq!(r.unread_count(A, ROOM, "bob"), 0);
    }

    #[test]
    fn failed_writes_restored_in_any_order_keep_the_highest_watermark() {
        let mut r = room4();
        r.register_message(A, ROOM, msg("m2", 2, "alice"));
        r.mark_read(A, ROOM, "bob", 1, t(10));
        let first = r.take_dirty();
        r.mark_read(A, ROOM, "bob", 2, t(20));
        let second = r.take_dirty();
        r.restore_dirty(first.clone());
        r.restore_dirty(second.clone());
        assert_eq!(r.take_dirty(), second, "the later failed batch wins, whichever is restored first");
        r.restore_dirty(second.clone());
        r.restore_dirty(first);
        assert_eq!(r.take_dirty(), second);
    }

    #[test]
    fn read_counts_one_to_three_then_all_read() {
        let mut r = room4();
        r.mark_delivered(A, "m1", ["bob", "carol", "dave"], t(5));
        let mut counts = Vec::new();
        for (i, reader) in ["bob", "carol", "dave"].iter().enumerate() {
            let out = r.mark_read(A, ROOM, reader, 1, t(100 + i as i64));
            assert!(out.advanced);
            assert_eq!(out.reads.len(), 1);
            let read = &out.reads[0].read;
            assert_eq!(out.reads[0].sender_id, "alice");
            assert_eq!(read.user_id, *reader);
            counts.push((read.read_count, read.total_recipients));
            let st = r.status(A, "alice", "m1").unwrap();
            let expected = if i == 2 { DeliveryState::Read } else { DeliveryState::Delivered };
            assert_eq!(st.state, expected);
        }
        assert_eq!(counts, vec![(1, 3), (2, 3), (3, 3)]);
        let last = r.mark_read(A, ROOM, "bob", 1, t(200));
        assert!(!last.advanced, "same watermark again is a no-op");
        let out = r.mark_read(A, ROOM, "carol", 0, t(300));
        assert!(!out.advanced);
        assert!(out.reads.is_empty());
    }

    #[test]
    fn message_read_serializes_per_contract() {
        let mut r = room4();
        let out = r.mark_read_message(A, "bob", "m1", t(1234)).unwrap();
        assert_eq!(
            json(&out.reads[0].read),
            r#"{"messageId":"m1","userId":"bob","readCount":1,"totalRecipients":3,"readAt":"2023-11-14T22:13:21.234Z"}"#
        );
        // The read implied the delivery.
        assert_eq!(out.delivered.len(), 1);
        assert_eq!(out.delivered[0].delivered.delivered_count, 1);
    }

    #[test]
    fn watermark_never_moves_backwards_and_covers_earlier_messages() {
        let mut r = room4();
        r.register_message(A, ROOM, msg("m2", 2, "bob"));
        r.register_message(A, ROOM, msg("m3", 3, "alice"));
        let out = r.mark_read(A, ROOM, "carol", 3, t(100));
        assert_eq!(out.watermark, 3);
        // All three messages are read by carol; notices go to each message's sender.
        let senders: Vec<_> = out.reads.iter().map(|n| (n.read.message_id.as_str(), n.sender_id.as_str())).collect();
        assert_eq!(senders, vec![("m1", "alice"), ("m2", "bob"), ("m3", "alice")]);
        let back = r.mark_read(A, ROOM, "carol", 1, t(200));
        assert!(!back.advanced);
        assert_eq!(back.watermark, 3);
        assert_eq!(r.watermark(A, ROOM, "carol"), Some(3));
        // Bob reading through 3 gets no notice for his own message m2.
        let out = r.mark_read(A, ROOM, "bob", 3, t(300));
        let ids: Vec<_> = out.reads.iter().map(|n| n.read.message_id.as_str()).collect();
        assert_eq!(ids, vec!["m1", "m3"]);
        // Loading an older persisted watermark does not move it back either.
        r.load_watermark(A, ROOM, "bob", 1, t(0));
        assert_eq!(r.watermark(A, ROOM, "bob"), Some(3));
    }

    #[test]
    fn batch_read_groups_by_sender() {
        let mut r = room4();
        r.register_message(A, ROOM, msg("m2", 2, "bob"));
        r.register_message(A, ROOM, msg("m3", 3, "alice"));
        let out = r.mark_read(A, ROOM, "dave", 3, t(500));
        let batches = out.batch_by_sender("general");
        assert_eq!(batches.len(), 2);
        assert_eq!(batches[0].sender_id, "alice");
        assert_eq!(
            json(&batches[0].payload),
            r#"{"channelId":"general","userId":"dave","messageIds":["m1","m3"],"readAt":"2023-11-14T22:13:20.500Z"}"#
        );
        assert_eq!(batches[1].sender_id, "bob");
        assert_eq!(batches[1].payload.message_ids, vec!["m2"]);
    }

    #[test]
    fn readers_are_the_recipients_who_read_and_show_it() {
        let mut r = room4();
        r.set_read_receipts(A, "bob", false);
        assert_eq!(r.readers(A, ROOM, 1), Some(vec![]));
        r.mark_read(A, ROOM, "carol", 1, t(100));
        r.mark_read(A, ROOM, "bob", 1, t(150));
        r.mark_read(A, ROOM, "alice", 1, t(160));
        assert_eq!(r.readers(A, ROOM, 1), Some(vec![("carol".to_string(), t(100))]), "not the sender, not bob");
        r.mark_read(A, ROOM, "dave", 5, t(200));
        let readers = r.readers(A, ROOM, 1).unwrap();
        assert_eq!(readers.iter().map(|(u, _)| u.as_str()).collect::<Vec<_>>(), vec!["carol", "dave"]);
        assert_eq!(r.readers(A, ROOM, 99), None, "an untracked message");
    }

    #[test]
    fn read_receipts_off_suppresses_notices_and_counts() {
        let mut r = room4();
        r.set_read_receipts(A, "bob", false);
        let out = r.mark_read(A, ROOM, "bob", 1, t(100));
        assert!(out.advanced, "the watermark still moves (unread counts, persistence)");
        assert!(out.reads.is_empty(), "no message:read to others");
        assert_eq!(out.delivered.len(), 1, "delivery is still reported");
        assert_eq!(r.take_dirty().len(), 1);
        // Carol's later read does not reveal Bob's.
        let out = r.mark_read(A, ROOM, "carol", 1, t(200));
        assert_eq!(out.reads[0].read.read_count, 1);
        r.mark_read(A, ROOM, "dave", 1, t(300));
        let st = r.status(A, "alice", "m1").unwrap();
        assert_eq!((st.read_count, st.delivered_count, st.total_recipients), (2, 3, 3));
        assert_eq!(st.state, DeliveryState::Delivered, "never all-read while bob hides his reads");
        // Turning receipts back on counts the read again.
        r.set_read_receipts(A, "bob", true);
        assert_eq!(r.status(A, "alice", "m1").unwrap().state, DeliveryState::Read);
    }

    #[test]
    fn read_receipts_setting_is_per_account() {
        let mut r = ReceiptTracker::default();
        r.set_read_receipts("acct-1", "bob", false);
        r.set_read_receipts("acct-1", "carol", false);
        assert!(!r.allows_read_receipts("acct-1", "bob"));
        assert!(r.allows_read_receipts("acct-2", "bob"), "another account's bob");
        r.set_read_receipts("acct-1", "bob", true);
        assert!(r.allows_read_receipts("acct-1", "bob"));
        assert!(!r.allows_read_receipts("acct-1", "carol"), "carol's setting stays");
        r.set_read_receipts("acct-1", "carol", true);
        assert!(r.receipts_off.is_empty(), "nothing kept for an account without such users");
    }

    #[test]
    fn delivery_sync_states_and_ids_as_sent() {
        let mut r = room4();
        let mut unknown = Vec::new();
        let resp = r.delivery_sync(A, "alice", ["m1", "c-m1", "nope"], &mut unknown);
        assert_eq!(unknown, vec!["nope"]);
        assert_eq!(resp.statuses.len(), 2);
        assert_eq!(resp.statuses[1].message_id, "c-m1", "echoed as sent");
        assert_eq!(resp.statuses[0].state, DeliveryState::Sent);
        let status = |id: &str| {
            format!(
                r#"{{"messageId":"{id}","state":"sent","deliveredCount":0,"readCount":0,"totalRecipients":3,"updatedAt":"2023-11-14T22:13:20.001Z"}}"#
            )
        };
        assert_eq!(json(&resp), format!(r#"{{"statuses":[{},{}]}}"#, status("m1"), status("c-m1")));
        // Client ids are per sender: bob cannot look up alice's.
        assert!(r.status(A, "bob", "c-m1").is_none());
        r.mark_delivered(A, "m1", ["bob", "carol"], t(50));
        let s = r.status(A, "alice", "m1").unwrap();
        assert_eq!((s.state, s.delivered_count, s.updated_at), (DeliveryState::Sent, 2, t(50)));
        r.mark_delivered(A, "m1", ["dave"], t(60));
        assert_eq!(r.status(A, "alice", "m1").unwrap().state, DeliveryState::Delivered);
        assert_eq!(DeliveryStatus::failed("x", t(0)).state, DeliveryState::Failed);
        assert_eq!(json(&DeliveryState::Failed), r#""failed""#);
    }

    #[test]
    fn direct_message_states() {
        let mut r = ReceiptTracker::default();
        r.set_members(A, "dm:a:b", [("a".to_string(), 0), ("b".to_string(), 0)]);
        r.register_message(A, "dm:a:b", msg("d1", 1, "a"));
        let n = r.mark_delivered(A, "d1", ["b"], t(10)).unwrap();
        assert_eq!(n.ack.unwrap().status, DeliveryState::Delivered);
        let out = r.mark_read(A, "dm:a:b", "b", 1, t(20));
        assert_eq!((out.reads[0].read.read_count, out.reads[0].read.total_recipients), (1, 1));
        assert_eq!(r.status(A, "a", "d1").unwrap().state, DeliveryState::Read);
        assert_eq!(DeliveryState::from_counts(0, 0, 0), DeliveryState::Sent, "alone in the room");
    }

    #[test]
    fn late_joiners_and_removed_members() {
        let mut r = room4();
        r.add_member(A, ROOM, "erin");
        let st = r.status(A, "alice", "m1").unwrap();
        assert_eq!(st.total_recipients, 3, "erin joined after m1");
        assert!(r.mark_delivered(A, "m1", ["erin"], t(10)).is_none());
        r.register_message(A, ROOM, msg("m2", 2, "alice"));
        assert_eq!(r.status(A, "alice", "m2").unwrap().total_recipients, 4);
        r.remove_member(A, ROOM, "dave");
        assert_eq!(r.status(A, "alice", "m2").unwrap().total_recipients, 3);
        assert_eq!(r.unread_count(A, ROOM, "erin"), 1);
        assert_eq!(r.unread_count(A, ROOM, "bob"), 2);
        assert_eq!(r.unread_count(A, ROOM, "alice"), 0, "own messages are not unread");
    }

    #[test]
    fn dirty_watermarks_are_coalesced_and_drained() {
        let mut r = room4();
        r.register_message(A, ROOM, msg("m2", 2, "alice"));
        r.register_message(A, ROOM, msg("m3", 3, "alice"));
        r.mark_read(A, ROOM, "bob", 1, t(10));
        r.mark_read(A, ROOM, "bob", 2, t(20));
        r.mark_read(A, ROOM, "bob", 3, t(30));
        r.mark_read(A, ROOM, "carol", 2, t(40));
        r.mark_read(A, ROOM, "carol", 1, t(50)); // backwards: not recorded
        assert_eq!(r.dirty_len(), 2);
        let writes = r.take_dirty();
        assert_eq!(
            writes,
            vec![
                WatermarkWrite { account: A.into(), room: ROOM.into(), user_id: "bob".into(), seq: 3, read_at: t(30) },
                WatermarkWrite {
                    account: A.into(),
                    room: ROOM.into(),
                    user_id: "carol".into(),
                    seq: 2,
                    read_at: t(40)
                },
            ]
        );
        assert!(r.take_dirty().is_empty());
        // A failed write is re-queued; a newer value recorded meanwhile wins.
        r.mark_read(A, ROOM, "carol", 3, t(60));
        r.restore_dirty(writes);
        let again = r.take_dirty();
        assert_eq!(again.len(), 2);
        assert_eq!(again[1].seq, 3);
        // Loaded watermarks are not dirty.
        r.load_watermark(A, ROOM, "dave", 3, t(0));
        assert_eq!(r.dirty_len(), 0);
    }

    #[test]
    fn eviction_bounds_memory_and_indexes() {
        let mut r = ReceiptTracker::new(ReceiptConfig { max_messages_per_room: 3 });
        r.set_members(A, ROOM, [("a".to_string(), 0), ("b".to_string(), 0)]);
        for i in 1..=5 {
            r.register_message(A, ROOM, msg(&format!("m{i}"), i, "a"));
        }
        assert!(r.locate(A, "m1").is_none());
        assert!(r.status(A, "a", "c-m2").is_none());
        assert_eq!(r.locate(A, "m5"), Some((ROOM, 5)));
        assert_eq!(r.last_seq(A, ROOM), 5);
        assert_eq!(r.by_id.len(), 3);
        assert_eq!(r.by_client_id.len(), 3);
        // Reading past evicted messages only reports the tracked ones.
        let out = r.mark_read(A, ROOM, "b", 5, t(0));
        assert_eq!(out.reads.len(), 3);
        r.forget_room(A, ROOM);
        assert!(r.by_id.is_empty() && r.by_client_id.is_empty() && !r.has_room(A, ROOM));
        assert_eq!(r.dirty_len(), 0);
    }

    #[test]
    fn fetched_through_sync_counts_as_delivered() {
        let mut r = room4();
        r.register_message(A, ROOM, msg("m2", 2, "carol"));
        let notices = r.mark_fetched(A, "bob", ["m1", "m2", "zzz"], t(10));
        let ids: Vec<_> = notices.iter().map(|n| (n.sender_id.as_str(), n.delivered.delivered_count)).collect();
        assert_eq!(ids, vec![("alice", 1), ("carol", 1)]);
        // Re-registering an id changes nothing.
        r.register_message(A, ROOM, msg("m1", 1, "alice"));
        assert_eq!(r.status(A, "alice", "m1").unwrap().delivered_count, 1);
    }

    #[test]
    fn accounts_are_isolated() {
        let mut r = room4();
        assert!(r.status("other", "alice", "m1").is_none());
        assert!(r.mark_delivered("other", "m1", ["bob"], t(0)).is_none());
        assert!(r.mark_read_message("other", "bob", "m1", t(0)).is_none());
        r.set_read_receipts("other", "bob", false);
        assert_eq!(r.mark_read(A, ROOM, "bob", 1, t(0)).reads.len(), 1);
    }

    #[test]
    fn counting_rule_skips_the_sender_and_late_joiners() {
        let m = |user, since_seq, read_seq, delivered, receipts_off| Member {
            user,
            since_seq,
            read_seq,
            delivered,
            receipts_off,
        };
        let members = [
            m("sender", 0, 0, false, false),
            m("reader", 0, 5, false, false),
            m("private", 0, 5, false, true),
            m("got_it", 0, 0, true, false),
            m("offline", 0, 0, false, false),
            m("late", 5, 9, true, false),
        ];
        let c = count("sender", 5, members);
        assert_eq!(c, Counts { delivered: 3, read: 1, total: 4 }, "the late joiner is no recipient of seq 5");
        assert_eq!(c.state(), DeliveryState::Sent);
        assert_eq!(count("sender", 6, members).total, 5, "but is one of seq 6");
        let all_read = [m("a", 0, 9, false, false), m("b", 0, 9, false, false)];
        assert_eq!(count("s", 9, all_read).state(), DeliveryState::Read);
        let all_got = [m("a", 0, 0, true, false), m("b", 0, 9, false, true)];
        assert_eq!(count("s", 9, all_got).state(), DeliveryState::Delivered, "a private reader is delivered only");
        assert_eq!(count("s", 1, []).state(), DeliveryState::Sent, "no recipients: sent");
    }

    #[test]
    fn delivery_state_words_match_the_wire() {
        for (s, word) in [
            (DeliveryState::Sent, "sent"),
            (DeliveryState::Delivered, "delivered"),
            (DeliveryState::Read, "read"),
            (DeliveryState::Failed, "failed"),
        ] {
            assert_eq!(s.as_str(), word);
            assert_eq!(json(&s), format!("\"{word}\""));
        }
    }
}
