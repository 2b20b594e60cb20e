//! Delivery and read receipts (CONTRACT §6): counted in memory per room, watermarks and deliveries written
//! in batches once a second, statuses of untracked messages answered from the database.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use parking_lot::Mutex;
use serde_json::{Value, json};

use crate::domain::names::{room_key, user_room};
use crate::domain::receipts::{
    DeliveredNotice, DeliveryStatus, NewMessage, ReadOutcome, ReceiptConfig, ReceiptTracker,
};
use crate::error::{AppError, AppResult, ErrorCode};
use crate::hub::{App, Hub};
use crate::service::messages::resolve_channel;
use crate::store::MessageRow;
use crate::wire::{Payload, channel_id_of};

/// Rooms with at most this many present users get their deliveries stored.
const SMALL_ROOM_DELIVERIES: usize = 32;

pub struct ReceiptsHub {
    tracker: Mutex<ReceiptTracker>,
    /// Deliveries not yet written: (account, message, user, at).
    deliveries: Mutex<Vec<(String, String, String, i64)>>,
    /// One flush at a time: a flush that finds nothing pending must still wait for the one writing it, or
    /// `sync:channels` (and shutdown) could read the database before an acked read lands.
    flushing: tokio::sync::Mutex<()>,
}

impl Default for ReceiptsHub {
    fn default() -> Self {
        ReceiptsHub {
            tracker: Mutex::new(ReceiptTracker::new(ReceiptConfig::default())),
            deliveries: Mutex::new(Vec::new()),
            flushing: tokio::sync::Mutex::new(()),
        }
    }
}

impl ReceiptsHub {
    pub fn set_read_receipts(&self, account: &str, user: &str, allowed: bool) {
        self.tracker.lock().set_read_receipts(account, user, allowed);
    }

    pub fn member_joined(&self, account: &str, room: &str, user: &str) {
        let mut t = self.tracker.lock();
        if t.has_room(account, room) {
            t.add_member(account, room, user);
        }
    }

    pub fn member_removed(&self, account: &str, room: &str, user: &str) {
        self.tracker.lock().remove_member(account, room, user);
    }

    pub fn forget_room(&self, account: &str, room: &str) {
        self.tracker.lock().forget_room(account, room);
    }
}

/// Loads a room's members and watermarks the first time a receipt needs them.
async fn ensure_room(hub: &Hub, account: &str, room: &str) -> AppResult<()> {
    {
        let mut t = hub.receipts.tracker.lock();
        if t.has_room(account, room) {
            t.touch_room(account, room, Utc::now());
            return Ok(());
        }
    }
    let marks = hub.store.watermarks(account, room).await?;
    let mut t = hub.receipts.tracker.lock();
    if !t.has_room(account, room) {
        t.set_members(account, room, marks.iter().map(|(u, _)| (u.clone(), 0)));
        for (u, seq) in &marks {
            if *seq > 0 {
                t.load_watermark(account, room, u, *seq, Utc::now());
            }
        }
    }
    t.touch_room(account, room, Utc::now());
    Ok(())
}

async fn emit_delivered(hub: &Hub, account: &str, notices: Vec<DeliveredNotice>) {
    let Some(io) = hub.ns() else { return };
    for n in notices {
        let to = room_key(account, &user_room(&n.sender_id));
        let _ = io.clone().to(to.clone()).emit("message:delivered", &n.delivered).await;
        if let Some(ack) = &n.ack {
            let _ = io.clone().to(to).emit("message:ack", ack).await;
        }
    }
}

/// Rooms with more members than this get no delivery receipts: per-recipient tracking would cost memory and
/// time proportional to the room for every message (read watermarks and unread counts still work).
const RECEIPT_ROOM_LIMIT: usize = 256;

/// A message was broadcast: everyone with a socket in the room now has it.
pub async fn message_sent(hub: &Hub, account: &str, m: &MessageRow) {
    if hub.occupancy.lock().present(&room_key(account, &m.room)) > RECEIPT_ROOM_LIMIT {
        return;
    }
    if let Err(e) = ensure_room(hub, account, &m.room).await {
        tracing::warn!(error = %e.message, "cannot load receipts for room");
        return;
    }
    let now = Utc::now();
    let present: Vec<String> = hub.occupancy.lock().users_in(&room_key(account, &m.room));
    let notice = {
        let mut t = hub.receipts.tracker.lock();
        t.register_message(
            account,
            &m.room,
            NewMessage {
                message_id: m.id.clone(),
                seq: m.seq,
                sender_id: m.user_id.clone(),
                client_message_id: m.client_message_id.clone(),
                created_at: DateTime::from_timestamp_millis(m.created_at).unwrap_or(now),
            },
        );
        t.mark_delivered(account, &m.id, present.iter().map(String::as_str), now)
    };
    // Per-recipient delivery rows answer delivery:sync after a restart. They matter in dms and small groups;
    // in a large room they would be hundreds of rows per message, so there the read watermarks answer.
    if present.len() <= SMALL_ROOM_DELIVERIES {
        record_deliveries(hub, account, &m.id, present.iter().filter(|u| **u != m.user_id), now);
    }
    if let Some(n) = notice {
        emit_delivered(hub, account, vec![n]).await;
    }
}

fn record_deliveries<'a>(
    hub: &Hub,
    account: &str,
    message: &str,
    users: impl Iterator<Item = &'a String>,
    now: DateTime<Utc>,
) {
    let mut d = hub.receipts.deliveries.lock();
    for u in users {
        d.push((account.to_string(), message.to_string(), u.clone(), now.timestamp_millis()));
    }
}

/// Messages fetched by `sync:messages` count as delivered to the fetcher.
pub async fn fetched(hub: &Hub, account: &str, user: &str, messages: &[MessageRow]) {
    let ids: Vec<&str> = messages.iter().filter(|m| m.user_id != user).map(|m| m.id.as_str()).collect();
    if ids.is_empty() {
        return;
    }
    let now = Utc::now();
    let notices = hub.receipts.tracker.lock().mark_fetched(account, user, ids.iter().copied(), now);
    {
        let mut d = hub.receipts.deliveries.lock();
        for id in &ids {
            d.push((account.to_string(), id.to_string(), user.to_string(), now.timestamp_millis()));
        }
    }
    emit_delivered(hub, account, notices).await;
}

/// The room and seq of a message, from memory or the database.
async fn locate(hub: &Hub, account: &str, id: &str) -> AppResult<(String, i64)> {
    if let Some((room, seq)) = hub.receipts.tracker.lock().locate(account, id).map(|(r, s)| (r.to_string(), s)) {
        return Ok((room, seq));
    }
    let m = hub.store.message(account, id).await?.ok_or_else(|| AppError::unknown_message(id))?;
    Ok((m.room, m.seq))
}

/// The reader, and the rooms (names) their socket is in: a reader must be in the room.
pub struct Reader<'a> {
    pub account: &'a str,
    pub user: &'a str,
    pub rooms: &'a [String],
}

fn check_in_room(reader: &Reader<'_>, room: &str) -> AppResult<()> {
    if reader.rooms.iter().any(|r| r == room) { Ok(()) } else { Err(AppError::not_a_member(room)) }
}

/// All five read events advance the reader's watermark in the room.
pub async fn read(hub: &Hub, reader: &Reader<'_>, event: &str, data: &Value) -> AppResult<Value> {
    let p = Payload::object(data)?;
    let now = Utc::now();
    let (room, seq, batch) = match event {
        "message:read-ack" | "read:update" => {
            let id = p.opt_id("messageId")?.ok_or_else(|| AppError::validation("messageId is required"))?;
            let (room, seq) = locate(hub, reader.account, &id).await?;
            (room, seq, false)
        }
        "receipt:update" => {
            let id = p.opt_id("messageId")?.ok_or_else(|| AppError::validation("messageId is required"))?;
            let status = p.str("status", 32)?;
            let (room, seq) = locate(hub, reader.account, &id).await?;
            check_in_room(reader, &room)?;
            match status {
                "read" => (room, seq, false),
                "delivered" => {
                    ensure_room(hub, reader.account, &room).await?;
                    let n = hub.receipts.tracker.lock().mark_delivered(reader.account, &id, [reader.user], now);
                    record_deliveries(hub, reader.account, &id, [reader.user.to_string()].iter(), now);
                    emit_delivered(hub, reader.account, n.into_iter().collect()).await;
                    return Ok(json!({ "messageId": id, "status": "delivered" }));
                }
                other => return Err(AppError::validation(format!("status must be delivered or read, not {other:?}"))),
            }
        }
        "message:batch-read-ack" => {
            let ids = p.ids("messageIds")?;
            let mut best: Option<(String, i64)> = None;
            for id in &ids {
                let (room, seq) = locate(hub, reader.account, id).await?;
                if best.as_ref().is_some_and(|(r, _)| *r != room) {
                    return Err(AppError::validation("messageIds must all belong to one room"));
                }
                if best.as_ref().is_none_or(|(_, s)| seq > *s) {
                    best = Some((room, seq));
                }
            }
            let (room, seq) = best.ok_or_else(|| AppError::validation("messageIds is empty"))?;
            (room, seq, true)
        }
        "channel:read" => {
            let id = p.opt_id("channelId")?.ok_or_else(|| AppError::validation("channelId is required"))?;
            let room = resolve_channel(hub, reader.account, reader.user, &id).await?;
            // Large rooms' messages are not tracked in memory: the stored last seq covers them.
            let tracked = hub.receipts.tracker.lock().last_seq(reader.account, &room.name);
            let stored = hub.store.room(reader.account, &room.name).await?.map(|r| r.last_seq).unwrap_or(0);
            let seq = tracked.max(stored);
            (room.name, seq, true)
        }
        _ => return Err(AppError::new(ErrorCode::UnknownEvent, format!("{event} is not a read event"))),
    };
    check_in_room(reader, &room)?;
    ensure_room(hub, reader.account, &room).await?;
    let outcome: ReadOutcome = hub.receipts.tracker.lock().mark_read(reader.account, &room, reader.user, seq, now);
    emit_delivered(hub, reader.account, outcome.delivered.clone()).await;
    if let Some(io) = hub.ns() {
        if batch {
            for n in outcome.batch_by_sender(channel_id_of(&room)) {
                let to = room_key(reader.account, &user_room(&n.sender_id));
                let _ = io.clone().to(to).emit("message:batch-read", &n.payload).await;
            }
        } else {
            for n in &outcome.reads {
                let to = room_key(reader.account, &user_room(&n.sender_id));
                let _ = io.clone().to(to).emit("message:read", &n.read).await;
            }
        }
    }
    Ok(json!({ "channelId": channel_id_of(&room), "roomName": room, "readSeq": outcome.watermark }))
}

/// `delivery:sync {messageIds}` → statuses for client or server ids, from memory or the database.
pub async fn delivery_sync(hub: &Hub, account: &str, user: &str, data: &Value) -> AppResult<Value> {
    let ids = Payload::object(data)?.ids("messageIds")?;
    let mut unknown = Vec::new();
    let mut response =
        hub.receipts.tracker.lock().delivery_sync(account, user, ids.iter().map(String::as_str), &mut unknown);
    let now = Utc::now();
    // Per room, loaded once: its watermarks and who turned read receipts off (ids often share a room).
    type RoomFacts = (Vec<(String, i64)>, HashSet<String>);
    let mut rooms: HashMap<String, RoomFacts> = HashMap::new();
    for id in unknown {
        let status = match hub.store.message_by_any_id(account, user, &id).await? {
            None => DeliveryStatus::failed(&id, now),
            Some(m) => {
                if !rooms.contains_key(&m.room) {
                    let marks = hub.store.watermarks(account, &m.room).await?;
                    let ids: Vec<String> = marks.iter().map(|(u, _)| u.clone()).collect();
                    // Readers who turned read receipts off count as delivered, never as read.
                    let private: HashSet<String> = hub
                        .store
                        .presence_rows(account, &ids)
                        .await?
                        .into_iter()
                        .filter(|(_, r)| !r.allow_read_receipts)
                        .map(|(u, _)| u)
                        .collect();
                    rooms.insert(m.room.clone(), (marks, private));
                }
                let (marks, private) = &rooms[&m.room];
                let is_member = marks.iter().any(|(u, _)| u == user);
                if m.user_id != user && !is_member {
                    DeliveryStatus::failed(&id, now)
                } else {
                    let recipients: Vec<&(String, i64)> = marks.iter().filter(|(u, _)| *u != m.user_id).collect();
                    let read = recipients.iter().filter(|(u, s)| *s >= m.seq && !private.contains(u)).count();
                    let delivered_to = hub.store.delivered_users(account, &m.id).await?;
                    let delivered = recipients.iter().filter(|(u, s)| *s >= m.seq || delivered_to.contains(u)).count();
                    let updated = DateTime::from_timestamp_millis(m.updated_at).unwrap_or(now);
                    DeliveryStatus::from_counts(&id, delivered, read, recipients.len(), updated)
                }
            }
        };
        response.statuses.push(status);
    }
    Ok(serde_json::to_value(response).expect("serialisable"))
}

/// Writes coalesced watermarks and deliveries once a second.
pub async fn flush(hub: &Hub) {
    let _one_at_a_time = hub.receipts.flushing.lock().await;
    let marks = hub.receipts.tracker.lock().take_dirty();
    if !marks.is_empty() {
        let rows: Vec<_> = marks
            .iter()
            .map(|w| (w.account.clone(), w.room.clone(), w.user_id.clone(), w.seq, w.read_at.timestamp_millis()))
            .collect();
        if let Err(e) = hub.store.save_watermarks(&rows).await {
            tracing::warn!(error = %e, "cannot write read watermarks; will retry");
            hub.receipts.tracker.lock().restore_dirty(marks);
        }
    }
    let deliveries = std::mem::take(&mut *hub.receipts.deliveries.lock());
    if !deliveries.is_empty()
        && let Err(e) = hub.store.save_deliveries(&deliveries).await
    {
        tracing::warn!(error = %e, "cannot write deliveries; will retry");
        hub.receipts.deliveries.lock().extend(deliveries);
    }
}

/// Rooms with no receipt activity for this long leave memory (they reload from the database when used).
const IDLE_ROOM: chrono::Duration = chrono::Duration::hours(1);

pub fn evict_idle(hub: &Hub) {
    // Not while a flush writes taken watermarks: a reload could read them before they land.
    let Ok(_no_flush) = hub.receipts.flushing.try_lock() else { return };
    let evicted = hub.receipts.tracker.lock().evict_idle(Utc::now() - IDLE_ROOM);
    if evicted > 0 {
        tracing::debug!(rooms = evicted, "idle rooms left the receipt tracker");
    }
}

pub fn spawn(app: App) {
    tokio::spawn(async move {
        let app: Arc<Hub> = app;
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tick.tick().await;
            flush(&app).await;
        }
    });
}
