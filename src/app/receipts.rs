//! Delivery and read receipts (docs/protocol.md §7): counted in memory per room, watermarks and deliveries
//! written in batches once a second, statuses of messages no longer in memory answered from the database
//! with the same counting rule (`domain::receipts::count`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use parking_lot::Mutex;

use super::events::{Event, ReadPosition};
use super::rooms::resolve_channel;
use super::worker::Worker;
use super::{Fanout, RosterRef};
use crate::cluster::Audience;
use crate::domain::names::channel_id_of;
use crate::domain::receipts::{
    self as rule, DeliveredNotice, DeliveryStatus, DeliverySyncResponse, Member, NewMessage, ReadOutcome,
    ReceiptConfig, ReceiptTracker, Seq,
};
use crate::error::{AppError, AppResult};
use crate::store::{MessageRow, Store};

/// Rooms with at most this many present users get their deliveries stored.
const SMALL_ROOM_DELIVERIES: usize = 32;

/// Rooms with more present users than this get no delivery receipts: per-recipient tracking would cost
/// memory and time proportional to the room for every message (read watermarks and unread counts still work).
const RECEIPT_ROOM_LIMIT: usize = 256;

/// Rooms with no receipt activity for this long leave memory (they reload from the database when used).
const IDLE_ROOM: chrono::Duration = chrono::Duration::hours(1);

/// What a read event asks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReadRequest {
    /// Read up to this message (`message:read-ack`, `read:update`).
    Message(String),
    /// `receipt:update`: this message was delivered to, or read by, the sender of the event.
    Receipt { message_id: String, read: bool },
    /// Read up to the newest of these messages, all of one room (`message:batch-read-ack`).
    Batch(Vec<String>),
    /// Read everything in the channel (`channel:read`).
    Channel(String),
}

/// What a read event did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReadResult {
    /// `receipt:update {status: delivered}`.
    Delivered { message_id: String },
    /// The reader's watermark in the room is now `watermark`.
    Read { room: String, watermark: Seq },
}

/// A receipt change made on one node of a cluster, for the others: each node counts deliveries and reads
/// in its own memory, and applies the other nodes' changes to it without announcing anything (the node
/// where a change happened announces it), so a read on one node counts with the reads made on another.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "op", rename_all = "camelCase")]
pub enum ReceiptOp {
    Sent {
        account: String,
        room: String,
        id: String,
        seq: Seq,
        sender: String,
        client_id: Option<String>,
        at: i64,
        present: Vec<String>,
    },
    Delivered {
        account: String,
        id: String,
        users: Vec<String>,
        at: i64,
    },
    Read {
        account: String,
        room: String,
        user: String,
        seq: Seq,
        at: i64,
    },
    Member {
        account: String,
        room: String,
        user: String,
        joined: bool,
    },
    ReadReceipts {
        account: String,
        user: String,
        allowed: bool,
    },
    Forget {
        account: String,
        room: String,
    },
}

/// Where a node tells the others its receipt changes.
pub trait ReceiptBus: Send + Sync {
    fn publish(&self, op: &ReceiptOp);
}

pub struct Receipts {
    bus: std::sync::OnceLock<Arc<dyn ReceiptBus>>,
    store: Store,
    roster: RosterRef,
    fanout: Arc<Fanout>,
    tracker: Mutex<ReceiptTracker>,
    /// Deliveries not yet written: (account, message, user, at).
    deliveries: Mutex<Vec<(String, String, String, i64)>>,
    /// One flush at a time: a flush that finds nothing pending must still wait for the one writing it, or
    /// `sync:channels` (and shutdown) could read the database before an acked read lands.
    flushing: tokio::sync::Mutex<()>,
    worker: Worker,
    evictor: Worker,
}

impl Receipts {
    pub fn new(store: Store, roster: RosterRef, fanout: Arc<Fanout>) -> Receipts {
        Receipts {
            bus: std::sync::OnceLock::new(),
            store,
            roster,
            fanout,
            tracker: Mutex::new(ReceiptTracker::new(ReceiptConfig::default())),
            deliveries: Mutex::new(Vec::new()),
            flushing: tokio::sync::Mutex::new(()),
            worker: Worker::default(),
            evictor: Worker::default(),
        }
    }

    /// Starts the timers: watermarks and deliveries are written every `flush` (`REALTIME_RECEIPT_FLUSH_INTERVAL`);
    /// idle rooms leave memory every ten minutes.
    pub fn start(self: &Arc<Self>, flush: Duration) {
        self.worker.every(self, flush, flush, |r| async move { r.flush().await });
        let ten_min = Duration::from_secs(600);
        self.evictor.every(self, ten_min, ten_min, |r| async move { r.evict_idle() });
    }

    /// Stops the timers, then writes what is pending.
    pub async fn stop(&self) {
        self.worker.stop().await;
        self.evictor.stop().await;
        self.flush().await;
    }

    /// In a cluster: this node's changes go to the other nodes through `bus` (see [`ReceiptOp`]).
    pub fn attach_bus(&self, bus: Arc<dyn ReceiptBus>) {
        let _ = self.bus.set(bus);
    }

    fn tell(&self, op: impl FnOnce() -> ReceiptOp) {
        if let Some(bus) = self.bus.get() {
            bus.publish(&op());
        }
    }

    /// Another node's change, applied to this node's counts without announcing it.
    pub async fn apply_remote(&self, op: ReceiptOp) {
        match op {
            ReceiptOp::Sent { account, room, id, seq, sender, client_id, at, present } => {
                if self.ensure_room(&account, &room).await.is_err() {
                    return;
                }
                let at = DateTime::from_timestamp_millis(at).unwrap_or_else(Utc::now);
                let mut t = self.tracker.lock();
                let msg = NewMessage {
                    message_id: id.clone(),
                    seq,
                    sender_id: sender,
                    client_message_id: client_id,
                    created_at: at,
                };
                t.register_message(&account, &room, msg);
                t.mark_delivered(&account, &id, present.iter().map(String::as_str), at);
            }
            ReceiptOp::Delivered { account, id, users, at } => {
                let at = DateTime::from_timestamp_millis(at).unwrap_or_else(Utc::now);
                self.tracker.lock().mark_delivered(&account, &id, users.iter().map(String::as_str), at);
            }
            ReceiptOp::Read { account, room, user, seq, at } => {
                let at = DateTime::from_timestamp_millis(at).unwrap_or_else(Utc::now);
                let mut t = self.tracker.lock();
                // A room not loaded here is loaded from the database when first needed (the reader's node
                // writes the watermark there).
                if t.has_room(&account, &room) {
                    t.load_watermark(&account, &room, &user, seq, at);
                }
            }
            ReceiptOp::Member { account, room, user, joined } => {
                let mut t = self.tracker.lock();
                if joined && t.has_room(&account, &room) {
                    t.add_member(&account, &room, &user);
                } else if !joined {
                    t.remove_member(&account, &room, &user);
                }
            }
            ReceiptOp::ReadReceipts { account, user, allowed } => {
                self.tracker.lock().set_read_receipts(&account, &user, allowed)
            }
            ReceiptOp::Forget { account, room } => self.tracker.lock().forget_room(&account, &room),
        }
    }

    pub fn set_read_receipts(&self, account: &str, user: &str, allowed: bool) {
        self.tracker.lock().set_read_receipts(account, user, allowed);
        self.tell(|| ReceiptOp::ReadReceipts { account: account.into(), user: user.into(), allowed });
    }

    pub fn member_joined(&self, account: &str, room: &str, user: &str) {
        let mut t = self.tracker.lock();
        if t.has_room(account, room) {
            t.add_member(account, room, user);
        }
        drop(t);
        self.tell(|| ReceiptOp::Member { account: account.into(), room: room.into(), user: user.into(), joined: true });
    }

    pub fn member_removed(&self, account: &str, room: &str, user: &str) {
        self.tracker.lock().remove_member(account, room, user);
        let op = || ReceiptOp::Member { account: account.into(), room: room.into(), user: user.into(), joined: false };
        self.tell(op);
    }

    pub fn forget_room(&self, account: &str, room: &str) {
        self.tracker.lock().forget_room(account, room);
        self.tell(|| ReceiptOp::Forget { account: account.into(), room: room.into() });
    }

    /// Loads a room's members and watermarks the first time a receipt needs them.
    async fn ensure_room(&self, account: &str, room: &str) -> AppResult<()> {
        {
            let mut t = self.tracker.lock();
            if t.has_room(account, room) {
                t.touch_room(account, room, Utc::now());
                return Ok(());
            }
        }
        let marks = self.store.watermarks(account, room).await?;
        let mut t = self.tracker.lock();
        if !t.has_room(account, room) {
            t.set_members(account, room, marks.iter().map(|w| (w.user_id.clone(), w.joined_seq)));
            for w in marks.iter().filter(|w| w.read_seq > 0) {
                t.load_watermark(account, room, &w.user_id, w.read_seq, Utc::now());
            }
        }
        t.touch_room(account, room, Utc::now());
        Ok(())
    }

    async fn emit_delivered(&self, account: &str, notices: Vec<DeliveredNotice>) {
        for n in notices {
            let to = Audience::user(account, &n.sender_id);
            if let Some(ack) = n.ack {
                self.fanout.emit(to.clone(), Event::Delivered(n.delivered)).await;
                self.fanout.emit(to, Event::Acked(ack)).await;
            } else {
                self.fanout.emit(to, Event::Delivered(n.delivered)).await;
            }
        }
    }

    /// A message was broadcast: everyone with a socket in the room now has it.
    pub async fn message_sent(&self, account: &str, m: &MessageRow) {
        if self.roster.present(account, &m.room).await > RECEIPT_ROOM_LIMIT {
            return;
        }
        if let Err(e) = self.ensure_room(account, &m.room).await {
            tracing::warn!(error = %e.message, "cannot load receipts for room");
            return;
        }
        let now = Utc::now();
        let present = self.roster.users_in(account, &m.room).await;
        let notice = {
            let mut t = self.tracker.lock();
            t.register_message(account, &m.room, tracked(m, now));
            t.mark_delivered(account, &m.id, present.iter().map(String::as_str), now)
        };
        // Per-recipient delivery rows answer delivery:sync after a restart. They matter in dms and small
        // groups; in a large room they would be hundreds of rows per message, so there the watermarks answer.
        if present.len() <= SMALL_ROOM_DELIVERIES {
            self.record_deliveries(account, &m.id, present.iter().filter(|u| **u != m.user_id), now);
        }
        self.tell(|| ReceiptOp::Sent {
            account: account.into(),
            room: m.room.clone(),
            id: m.id.clone(),
            seq: m.seq,
            sender: m.user_id.clone(),
            client_id: m.client_message_id.clone(),
            at: m.created_at,
            present: present.clone(),
        });
        if let Some(n) = notice {
            self.emit_delivered(account, vec![n]).await;
        }
    }

    fn record_deliveries<'a>(
        &self,
        account: &str,
        message: &str,
        users: impl Iterator<Item = &'a String>,
        now: DateTime<Utc>,
    ) {
        let mut d = self.deliveries.lock();
        for u in users {
            d.push((account.to_string(), message.to_string(), u.clone(), now.timestamp_millis()));
        }
    }

    /// Messages fetched by `sync:messages` count as delivered to the fetcher.
    pub async fn fetched(&self, account: &str, user: &str, messages: &[MessageRow]) {
        let ids: Vec<String> = messages.iter().filter(|m| m.user_id != user).map(|m| m.id.clone()).collect();
        if ids.is_empty() {
            return;
        }
        let now = Utc::now();
        let notices = self.tracker.lock().mark_fetched(account, user, ids.iter().map(String::as_str), now);
        let reader = [user.to_string()];
        for id in &ids {
            self.record_deliveries(account, id, reader.iter(), now);
            self.tell(|| ReceiptOp::Delivered {
                account: account.into(),
                id: id.clone(),
                users: reader.to_vec(),
                at: now.timestamp_millis(),
            });
        }
        self.emit_delivered(account, notices).await;
    }

    /// The room and seq of a message, from memory or the database.
    async fn locate(&self, account: &str, id: &str) -> AppResult<(String, i64)> {
        if let Some((room, seq)) = self.tracker.lock().locate(account, id).map(|(r, s)| (r.to_string(), s)) {
            return Ok((room, seq));
        }
        let m = self.store.message(account, id).await?.ok_or_else(|| AppError::unknown_message(id))?;
        // In a cluster the message may have been sent through another node a moment ago: tracked from here
        // on, so its reads are counted and announced as on the node that sent it.
        if self.bus.get().is_some() && self.ensure_room(account, &m.room).await.is_ok() {
            self.tracker.lock().register_message(account, &m.room, tracked(&m, Utc::now()));
        }
        Ok((m.room, m.seq))
    }

    /// Every read event advances the reader's watermark in the room; the reader's socket must be in it. When
    /// it moved to a known message, the room's other members hear it (`thread`: where the reader said they
    /// read), unless the reader turned read receipts off.
    pub async fn read(
        &self,
        account: &str,
        user: &str,
        sid: &str,
        req: ReadRequest,
        thread: Option<String>,
    ) -> AppResult<ReadResult> {
        let in_room = self.roster.rooms_of(sid).await.unwrap_or_default();
        let check_in_room = |room: &str| {
            if in_room.contains(room) { Ok(()) } else { Err(AppError::not_a_member(room)) }
        };
        let now = Utc::now();
        let (room, seq, batch, read_id) = match req {
            ReadRequest::Message(id) => {
                let (room, seq) = self.locate(account, &id).await?;
                (room, seq, false, Some(id))
            }
            ReadRequest::Receipt { message_id, read } => {
                let (room, seq) = self.locate(account, &message_id).await?;
                check_in_room(&room)?;
                if !read {
                    self.ensure_room(account, &room).await?;
                    let n = self.tracker.lock().mark_delivered(account, &message_id, [user], now);
                    self.record_deliveries(account, &message_id, [user.to_string()].iter(), now);
                    self.tell(|| ReceiptOp::Delivered {
                        account: account.into(),
                        id: message_id.clone(),
                        users: vec![user.to_string()],
                        at: now.timestamp_millis(),
                    });
                    self.emit_delivered(account, n.into_iter().collect()).await;
                    return Ok(ReadResult::Delivered { message_id });
                }
                (room, seq, false, Some(message_id))
            }
            ReadRequest::Batch(ids) => {
                let mut best: Option<(String, i64, &String)> = None;
                for id in &ids {
                    let (room, seq) = self.locate(account, id).await?;
                    if best.as_ref().is_some_and(|(r, _, _)| *r != room) {
                        return Err(AppError::validation("messageIds must all belong to one room"));
                    }
                    if best.as_ref().is_none_or(|(_, s, _)| seq > *s) {
                        best = Some((room, seq, id));
                    }
                }
                let (room, seq, id) = best.ok_or_else(|| AppError::validation("messageIds is empty"))?;
                (room, seq, true, Some(id.clone()))
            }
            ReadRequest::Channel(id) => {
                let room = resolve_channel(&self.store, account, user, &id).await?;
                // Large rooms' messages are not tracked in memory: the stored last seq covers them.
                let tracked = self.tracker.lock().last_seq(account, &room.name);
                let stored = self.store.room(account, &room.name).await?.map(|r| r.last_seq).unwrap_or(0);
                (room.name, tracked.max(stored), true, None)
            }
        };
        check_in_room(&room)?;
        self.ensure_room(account, &room).await?;
        let outcome: ReadOutcome = self.tracker.lock().mark_read(account, &room, user, seq, now);
        if outcome.advanced {
            self.tell(|| ReceiptOp::Read {
                account: account.into(),
                room: room.clone(),
                user: user.into(),
                seq: outcome.watermark,
                at: now.timestamp_millis(),
            });
        }
        self.emit_delivered(account, outcome.delivered.clone()).await;
        if batch {
            for n in outcome.batch_by_sender(channel_id_of(&room)) {
                self.fanout.emit(Audience::user(account, &n.sender_id), Event::BatchRead(n.payload)).await;
            }
        } else {
            for n in outcome.reads {
                self.fanout.emit(Audience::user(account, &n.sender_id), Event::Read(n.read)).await;
            }
        }
        let (shown, readers) = {
            let t = self.tracker.lock();
            (t.allows_read_receipts(account, user), t.readers(account, &room, seq))
        };
        if let (true, true, Some(message_id)) = (outcome.advanced, shown, read_id)
            && outcome.watermark == seq
        {
            let readers = readers.map(|r| r.into_iter().map(|(u, at)| (u, at.timestamp_millis())).collect());
            let position = ReadPosition {
                room: room.clone(),
                user: user.to_string(),
                message_id,
                thread_id: thread,
                at: now.timestamp_millis(),
                readers,
            };
            self.fanout.emit(Audience::room(account, &room).except_user(user), Event::ReadUpdate(position)).await;
        }
        Ok(ReadResult::Read { room, watermark: outcome.watermark })
    }

    /// `delivery:sync {messageIds}` → statuses for server or client ids: from memory, else from the
    /// database in a fixed number of queries for the whole request.
    pub async fn delivery_sync(&self, account: &str, user: &str, ids: &[String]) -> AppResult<DeliverySyncResponse> {
        let mut unknown = Vec::new();
        let mut response =
            self.tracker.lock().delivery_sync(account, user, ids.iter().map(String::as_str), &mut unknown);
        if unknown.is_empty() {
            return Ok(response);
        }
        let now = Utc::now();
        let facts = self.store.receipt_facts(account, user, &unknown).await?;
        let by_id: HashMap<&str, &MessageRow> = facts.messages.iter().map(|m| (m.id.as_str(), m)).collect();
        for id in &unknown {
            let found = by_id.get(id.as_str()).copied().or_else(|| {
                facts.messages.iter().find(|m| m.user_id == user && m.client_message_id.as_deref() == Some(id))
            });
            let Some(m) = found else {
                response.statuses.push(DeliveryStatus::failed(id, now));
                continue;
            };
            let members = facts.members.get(&m.room).map(Vec::as_slice).unwrap_or_default();
            if m.user_id != user && !members.iter().any(|(w, _)| w.user_id == user) {
                response.statuses.push(DeliveryStatus::failed(id, now));
                continue;
            }
            let counts = rule::count(
                &m.user_id,
                m.seq,
                members.iter().map(|(w, receipts_off)| Member {
                    user: &w.user_id,
                    since_seq: w.joined_seq,
                    read_seq: w.read_seq,
                    delivered: facts.delivered.contains(&(m.id.clone(), w.user_id.clone())),
                    receipts_off: *receipts_off,
                }),
            );
            let updated = DateTime::from_timestamp_millis(m.updated_at).unwrap_or(now);
            response.statuses.push(DeliveryStatus::from_counts(
                id,
                counts.delivered,
                counts.read,
                counts.total,
                updated,
            ));
        }
        Ok(response)
    }

    /// Writes coalesced watermarks and deliveries.
    pub async fn flush(&self) {
        let _one_at_a_time = self.flushing.lock().await;
        let marks = self.tracker.lock().take_dirty();
        if !marks.is_empty() {
            let rows: Vec<_> = marks
                .iter()
                .map(|w| (w.account.clone(), w.room.clone(), w.user_id.clone(), w.seq, w.read_at.timestamp_millis()))
                .collect();
            if let Err(e) = self.store.save_watermarks(&rows).await {
                tracing::warn!(error = %e, "cannot write read watermarks; will retry");
                self.tracker.lock().restore_dirty(marks);
            }
        }
        let deliveries = std::mem::take(&mut *self.deliveries.lock());
        if !deliveries.is_empty()
            && let Err(e) = self.store.save_deliveries(&deliveries).await
        {
            tracing::warn!(error = %e, "cannot write deliveries; will retry");
            self.deliveries.lock().extend(deliveries);
        }
    }

    fn evict_idle(&self) {
        // Not while a flush writes taken watermarks: a reload could read them before they land.
        let Ok(_no_flush) = self.flushing.try_lock() else { return };
        let evicted = self.tracker.lock().evict_idle(Utc::now() - IDLE_ROOM);
        if evicted > 0 {
            tracing::debug!(rooms = evicted, "idle rooms left the receipt tracker");
        }
    }
}

/// What the tracker keeps of a stored message (`now` when its timestamp is out of range).
fn tracked(m: &MessageRow, now: DateTime<Utc>) -> NewMessage {
    NewMessage {
        message_id: m.id.clone(),
        seq: m.seq,
        sender_id: m.user_id.clone(),
        client_message_id: m.client_message_id.clone(),
        created_at: DateTime::from_timestamp_millis(m.created_at).unwrap_or(now),
    }
}
