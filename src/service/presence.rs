//! Presence (CONTRACT §9): multi-device aggregation and grace in memory, privacy per viewer, audiences of
//! subscribers plus room-mates. Heartbeats touch memory only; the database sees custom status changes,
//! session ends (last seen) and settings.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use dashmap::DashMap;
use parking_lot::Mutex;
use serde_json::{Value, json};
use tokio::sync::Notify;

use crate::domain::names::{room_key, user_room};
use crate::domain::presence::{
    self as domain, CustomStatus, Presence, PresenceConfig, PresenceEvent, PresenceTracker, PresenceUpdate,
    PrivacySettings, PrivacySettingsPatch, ViewedPresence, Viewer, Visibility,
};
use crate::error::{AppError, AppResult, ErrorCode};
use crate::hub::{App, Hub};
use crate::store::presence::{PresenceRow, SettingsRow};

type UserKey = (String, String);

pub struct PresenceHub {
    tracker: Mutex<PresenceTracker>,
    wake: Notify,
    /// Privacy settings of users seen since start (loaded once, then kept current).
    settings: DashMap<UserKey, PrivacySettings>,
    /// target → viewer user → number of that viewer's sockets subscribed.
    subscribers: DashMap<UserKey, HashMap<String, u32>>,
    /// socket → targets it subscribed to (to undo on disconnect).
    by_socket: DashMap<String, HashSet<String>>,
    /// Rooms each user was last seen in, so an offline announcement reaches room-mates without a query.
    rooms: DashMap<UserKey, Vec<String>>,
    /// Last seen of sessions that ended on this node, known before the database write lands.
    last_seen: DashMap<UserKey, DateTime<Utc>>,
    /// Users whose presence an HTTP client posts, with the time of the latest post.
    http_devices: DashMap<UserKey, std::time::Instant>,
}

impl PresenceHub {
    pub fn new(cfg: &crate::config::Config) -> PresenceHub {
        PresenceHub {
            tracker: Mutex::new(PresenceTracker::new(PresenceConfig::from_std(
                cfg.presence_offline_grace,
                cfg.presence_timeout,
                std::time::Duration::from_millis(domain::DEFAULT_COALESCE_WINDOW_MS as u64),
            ))),
            wake: Notify::new(),
            settings: DashMap::new(),
            subscribers: DashMap::new(),
            by_socket: DashMap::new(),
            rooms: DashMap::new(),
            last_seen: DashMap::new(),
            http_devices: DashMap::new(),
        }
    }

    pub fn breakdown(&self, account: &str) -> Value {
        let b = self.tracker.lock().breakdown(account);
        json!({ "online": b.online, "away": b.away, "busy": b.busy, "offline": b.offline })
    }
}

fn key(account: &str, user: &str) -> UserKey {
    (account.to_string(), user.to_string())
}

fn ms(t: Option<i64>) -> Option<DateTime<Utc>> {
    t.and_then(DateTime::from_timestamp_millis)
}

fn settings_from(row: &PresenceRow) -> PrivacySettings {
    PrivacySettings {
        visibility: match row.visibility.as_str() {
            "contacts" => Visibility::Contacts,
            "nobody" => Visibility::Nobody,
            _ => Visibility::Everyone,
        },
        show_online_status: row.show_online_status,
        show_last_seen: row.show_last_seen,
        allow_read_receipts: row.allow_read_receipts,
        invisible_mode: row.invisible_mode,
    }
}

fn custom_from(row: &PresenceRow) -> Option<CustomStatus> {
    (row.custom_text.is_some() || row.custom_emoji.is_some()).then(|| CustomStatus {
        text: row.custom_text.clone(),
        emoji: row.custom_emoji.clone(),
        expires_at: ms(row.custom_expires_at),
    })
}

/// Settings and stored presence of users, loading from the database the ones not cached yet.
async fn load(hub: &Hub, account: &str, users: &[String]) -> AppResult<HashMap<String, (PrivacySettings, Presence)>> {
    let now = Utc::now();
    let missing: Vec<String> = {
        let tracker = hub.presence.tracker.lock();
        users
            .iter()
            .filter(|u| !hub.presence.settings.contains_key(&key(account, u)) || tracker.get(account, u).is_none())
            .cloned()
            .collect()
    };
    let rows: HashMap<String, PresenceRow> = if missing.is_empty() {
        HashMap::new()
    } else {
        hub.store.presence_rows(account, &missing).await?.into_iter().collect()
    };
    let mut tracker = hub.presence.tracker.lock();
    let mut out = HashMap::with_capacity(users.len());
    for u in users {
        let k = key(account, u);
        let row = rows.get(u);
        let settings = *hub.presence.settings.entry(k).or_insert_with(|| row.map(settings_from).unwrap_or_default());
        if let Some(r) = row {
            tracker.restore(account, u, ms(r.last_seen_at), custom_from(r), now);
        }
        let presence = tracker.get(account, u).cloned().unwrap_or_else(|| {
            let remembered = hub.presence.last_seen.get(&key(account, u)).map(|t| *t);
            Presence::offline(u, remembered.or_else(|| row.and_then(|r| ms(r.last_seen_at))))
        });
        out.insert(u.clone(), (settings, presence));
    }
    Ok(out)
}

/// Whether `viewer` is a contact of `target` (explicit pair or a shared dm room).
async fn contacts(hub: &Hub, account: &str, target: &str) -> AppResult<HashSet<String>> {
    Ok(hub.store.contacts_of(account, target).await?.into_iter().collect())
}

/// A socket of a user connected (after the handshake admitted it).
pub async fn connected(hub: &Hub, account: &str, user: &str, socket_id: &str, rooms: &[String]) {
    if let Err(e) = load(hub, account, &[user.to_string()]).await {
        tracing::warn!(error = %e.message, "cannot load stored presence");
    }
    for room in rooms {
        joined_room(hub, account, user, room);
    }
    hub.presence.tracker.lock().connect(account, user, socket_id, Utc::now());
    hub.presence.wake.notify_one();
}

pub fn disconnected(hub: &Hub, account: &str, user: &str, socket_id: &str) {
    hub.presence.tracker.lock().disconnect(account, user, socket_id, Utc::now());
    if let Some((_, targets)) = hub.presence.by_socket.remove(socket_id) {
        for t in targets {
            unsubscribe_one(hub, account, user, &t);
        }
    }
    hub.presence.wake.notify_one();
}

/// The device an HTTP client's presence and typing are tracked under.
pub fn http_device(user: &str) -> String {
    format!("http:{user}")
}

/// `POST /presence/:channelId`: the status of a client without a socket. It counts as one more device of the
/// user (aggregated with their sockets as usual) that lasts three quarters of `REALTIME_PRESENCE_TIMEOUT` after
/// the latest post, then goes like a closed socket (offline after the grace, when nothing else is connected)
/// before it would have been counted idle (`away`).
pub async fn http_update(app: &App, account: &str, user: &str, data: &Value) -> AppResult<()> {
    parse_update(app, data)?;
    let device = http_device(user);
    let k = key(account, user);
    if !app.presence.http_devices.contains_key(&k) {
        let rooms: Vec<String> = app.store.rooms_of_user(account, user).await?.into_iter().map(|(r, _)| r).collect();
        connected(app, account, user, &device, &rooms).await;
    }
    if app.presence.http_devices.insert(k, std::time::Instant::now()).is_none() {
        spawn_http_expiry(app.clone(), account.to_string(), user.to_string());
    }
    update(app, account, user, &device, data)
}

/// One timer per HTTP device (not per post): it ends the device once no post came for its lifetime.
fn spawn_http_expiry(app: App, account: String, user: String) {
    tokio::spawn(async move {
        let k = key(&account, &user);
        let life = app.cfg.presence_timeout * 3 / 4;
        loop {
            let Some(last) = app.presence.http_devices.get(&k).map(|t| *t) else { return };
            if std::time::Instant::now() < last + life {
                tokio::time::sleep_until((last + life).into()).await;
                continue;
            }
            // Disconnected under the entry's lock, so a post arriving now finds no device and connects a new one.
            let expired = app.presence.http_devices.remove_if(&k, |_, t| {
                let expired = *t + life <= std::time::Instant::now();
                if expired {
                    disconnected(&app, &account, &user, &http_device(&user));
                }
                expired
            });
            if expired.is_some() {
                return;
            }
        }
    });
}

/// Remember a room the user's socket joined (audience of later announcements).
pub fn joined_room(hub: &Hub, account: &str, user: &str, room: &str) {
    let mut rooms = hub.presence.rooms.entry(key(account, user)).or_default();
    if !rooms.iter().any(|r| r == room) {
        rooms.push(room.to_string());
    }
}

/// The user's last socket left a room: room-mates there no longer hear about them.
pub fn left_room(hub: &Hub, account: &str, user: &str, room: &str) {
    if let Some(mut rooms) = hub.presence.rooms.get_mut(&key(account, user)) {
        rooms.retain(|r| r != room);
    }
}

/// Any other activity of a socket keeps its device from turning idle.
pub fn touch(hub: &Hub, account: &str, user: &str, socket_id: &str) {
    let changed = hub.presence.tracker.lock().touch(account, user, socket_id, Utc::now());
    if changed == domain::UpdateOutcome::Changed {
        hub.presence.wake.notify_one();
    }
}

fn parse_update(hub: &Hub, data: &Value) -> AppResult<PresenceUpdate> {
    if !hub.cfg.enable_presence {
        return Err(AppError::forbidden("presence is disabled (REALTIME_ENABLE_PRESENCE=false)"));
    }
    PresenceUpdate::from_json(data).map_err(|e| {
        let code =
            if e.code() == "PAYLOAD_TOO_LARGE" { ErrorCode::PayloadTooLarge } else { ErrorCode::ValidationError };
        AppError::new(code, e.to_string())
    })
}

/// `presence:update`: memory only; a change is published after the coalescing window by the timer.
pub fn update(hub: &Hub, account: &str, user: &str, socket_id: &str, data: &Value) -> AppResult<()> {
    let update = parse_update(hub, data)?;
    hub.metrics.presence_updates.inc();
    let outcome = hub.presence.tracker.lock().update(account, user, socket_id, update, Utc::now());
    if outcome == domain::UpdateOutcome::Changed {
        hub.presence.wake.notify_one();
    }
    Ok(())
}

/// Everyone who may hear about `user`: subscribers, room-mates present on this node, and the user's own
/// other devices — each with their relation to the user.
async fn audience(hub: &Hub, account: &str, user: &str, settings: &PrivacySettings) -> Vec<(String, Viewer)> {
    let mut viewers: HashSet<String> = HashSet::new();
    if let Some(subs) = hub.presence.subscribers.get(&key(account, user)) {
        viewers.extend(subs.keys().cloned());
    }
    if let Some(rooms) = hub.presence.rooms.get(&key(account, user)) {
        let occ = hub.occupancy.lock();
        for room in rooms.iter() {
            viewers.extend(occ.users_in(&room_key(account, room)));
        }
    }
    viewers.remove(user);
    let contacts = if settings.visibility == Visibility::Contacts && !viewers.is_empty() {
        contacts(hub, account, user).await.unwrap_or_default()
    } else {
        HashSet::new()
    };
    let mut out: Vec<(String, Viewer)> = viewers
        .into_iter()
        .map(|v| {
            let rel = if contacts.contains(&v) { Viewer::Contact } else { Viewer::Other };
            (v, rel)
        })
        .collect();
    out.push((user.to_string(), Viewer::Owner));
    out
}

/// Sends each group of viewers its view, encoded once per group.
async fn send_groups(hub: &Hub, account: &str, groups: Vec<domain::ViewGroup<String>>) {
    let Some(io) = hub.ns() else { return };
    for g in groups {
        let rooms: Vec<String> = g.viewers.iter().map(|v| room_key(account, &user_room(v))).collect();
        let _ = io.clone().to(rooms).emit("presence:changed", &g.view).await;
        hub.metrics.broadcasts.inc();
    }
}

async fn publish(hub: &Hub, account: &str, previous: &Presence, current: &Presence) {
    let settings = hub.presence.settings.get(&key(account, &current.user_id)).map(|s| *s).unwrap_or_default();
    let viewers = audience(hub, account, &current.user_id, &settings).await;
    let groups = domain::changed_views((previous, &settings), (current, &settings), viewers);
    send_groups(hub, account, groups).await;
}

/// Forgets cached settings, rooms and last-seen of users this node no longer tracks (nothing connected, no
/// grace, nothing pending). All of it is in the database, so a later load restores it.
pub fn sweep(hub: &Hub) {
    let tracker = hub.presence.tracker.lock();
    let gone = |k: &UserKey| tracker.get(&k.0, &k.1).is_none() && !hub.presence.subscribers.contains_key(k);
    hub.presence.settings.retain(|k, _| !gone(k));
    hub.presence.rooms.retain(|k, _| !gone(k));
    hub.presence.last_seen.retain(|k, _| !gone(k));
}

/// The timer: publishes coalesced changes, idles, custom-status expiry and the end of the offline grace.
pub fn spawn(app: App) {
    tokio::spawn(async move {
        let app: Arc<Hub> = app;
        loop {
            let events = app.presence.tracker.lock().tick(Utc::now());
            for ev in &events {
                if let PresenceEvent::SessionEnded { account, user_id, last_seen: Some(t) } = ev {
                    app.presence.last_seen.insert(key(account, user_id), *t);
                }
            }
            for ev in events {
                match ev {
                    PresenceEvent::Changed { account, previous, current } => {
                        publish(&app, &account, &previous, &current).await;
                        if previous.custom_status != current.custom_status {
                            persist(&app, &account, &current, None).await;
                        }
                    }
                    PresenceEvent::SessionEnded { account, user_id, last_seen } => {
                        session_ended(&app, &account, &user_id, last_seen).await;
                    }
                }
            }
            let next = app.presence.tracker.lock().next_deadline();
            match next.map(|t| (t - Utc::now()).to_std().unwrap_or_default()) {
                Some(d) => {
                    tokio::select! {
                        _ = tokio::time::sleep(d) => {},
                        _ = app.presence.wake.notified() => {},
                    }
                }
                None => app.presence.wake.notified().await,
            }
        }
    });
}

/// A session ended (its grace ran out): its last seen and custom status are stored.
async fn session_ended(hub: &Hub, account: &str, user_id: &str, last_seen: Option<DateTime<Utc>>) {
    let p = Presence::offline(user_id, last_seen);
    let custom = hub.presence.tracker.lock().get(account, user_id).and_then(|p| p.custom_status.clone());
    let p = Presence { custom_status: custom, ..p };
    persist(hub, account, &p, last_seen.map(|t| t.timestamp_millis())).await;
}

/// Shutdown, after every socket closed: the offline graces will not run out in this process, so the sessions
/// end now and their last seen is stored (a restart would otherwise show the previous session's).
pub async fn end_sessions_at_shutdown(hub: &Hub) {
    let events = hub.presence.tracker.lock().end_all_graces();
    for ev in events {
        if let PresenceEvent::SessionEnded { account, user_id, last_seen } = ev {
            session_ended(hub, &account, &user_id, last_seen).await;
        }
    }
}

async fn persist(hub: &Hub, account: &str, p: &Presence, last_seen: Option<i64>) {
    let c = p.custom_status.as_ref();
    let res = hub
        .store
        .save_presence(
            account,
            &p.user_id,
            p.status.as_str(),
            (
                c.and_then(|c| c.text.as_deref()),
                c.and_then(|c| c.emoji.as_deref()),
                c.and_then(|c| c.expires_at.map(|t| t.timestamp_millis())),
            ),
            last_seen,
        )
        .await;
    if let Err(e) = res {
        tracing::warn!(error = %e, user = %p.user_id, "cannot store presence");
    }
}

/// What `viewer` may see of each of `targets`.
pub async fn views_for(
    hub: &Hub,
    account: &str,
    viewer: Option<&str>,
    targets: &[String],
) -> AppResult<Vec<ViewedPresence>> {
    let loaded = load(hub, account, targets).await?;
    let mut out = Vec::with_capacity(targets.len());
    for t in targets {
        let Some((settings, presence)) = loaded.get(t) else { continue };
        let rel = match viewer {
            Some(v) if v == t => Viewer::Owner,
            // Only a contacts-only user needs the contact question answered.
            Some(v) if settings.visibility == Visibility::Contacts && contacts(hub, account, t).await?.contains(v) => {
                Viewer::Contact
            }
            _ => Viewer::Other,
        };
        out.push(domain::view_as(rel, presence, settings));
    }
    Ok(out)
}

fn unsubscribe_one(hub: &Hub, account: &str, viewer: &str, target: &str) {
    let k = key(account, target);
    let empty = match hub.presence.subscribers.get_mut(&k) {
        Some(mut subs) => {
            if let Some(n) = subs.get_mut(viewer) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    subs.remove(viewer);
                }
            }
            subs.is_empty()
        }
        None => false,
    };
    if empty {
        hub.presence.subscribers.remove_if(&k, |_, s| s.is_empty());
    }
}

pub fn subscribe(hub: &Hub, account: &str, viewer: &str, socket_id: &str, targets: &[String]) {
    let mut mine = hub.presence.by_socket.entry(socket_id.to_string()).or_default();
    for t in targets {
        if mine.insert(t.clone()) {
            *hub.presence.subscribers.entry(key(account, t)).or_default().entry(viewer.to_string()).or_insert(0) += 1;
        }
    }
}

pub fn unsubscribe(hub: &Hub, account: &str, viewer: &str, socket_id: &str, targets: &[String]) {
    let removed: Vec<String> = match hub.presence.by_socket.get_mut(socket_id) {
        Some(mut mine) => targets.iter().filter(|t| mine.remove(*t)).cloned().collect(),
        None => Vec::new(),
    };
    for t in removed {
        unsubscribe_one(hub, account, viewer, &t);
    }
}

/// The merged settings as the wire shows them.
pub fn settings_json(s: &PrivacySettings) -> Value {
    serde_json::to_value(s).expect("settings serialise")
}

pub async fn settings_of(hub: &Hub, account: &str, user: &str) -> AppResult<PrivacySettings> {
    Ok(load(hub, account, &[user.to_string()]).await?.remove(user).map(|(s, _)| s).unwrap_or_default())
}

/// Applies a settings patch: stored, effective at once (viewers who lose or gain sight are told).
pub async fn change_settings(hub: &Hub, account: &str, user: &str, patch: &Value) -> AppResult<PrivacySettings> {
    let patch: PrivacySettingsPatch = serde_json::from_value(patch.clone()).map_err(|e| {
        AppError::validation(format!(
            "settings must be {{visibility?: everyone|contacts|nobody, showOnlineStatus?, showLastSeen?, \
             allowReadReceipts?, invisibleMode?: boolean}} ({e})"
        ))
    })?;
    let (before, presence) = load(hub, account, &[user.to_string()])
        .await?
        .remove(user)
        .unwrap_or_else(|| (PrivacySettings::default(), Presence::offline(user, None)));
    let after = before.merged(&patch);
    let visibility = match after.visibility {
        Visibility::Everyone => "everyone",
        Visibility::Contacts => "contacts",
        Visibility::Nobody => "nobody",
    };
    hub.store
        .save_settings(
            account,
            user,
            &SettingsRow {
                visibility,
                show_online_status: after.show_online_status,
                show_last_seen: after.show_last_seen,
                allow_read_receipts: after.allow_read_receipts,
                invisible_mode: after.invisible_mode,
            },
        )
        .await?;
    hub.presence.settings.insert(key(account, user), after);
    hub.receipts.set_read_receipts(account, user, after.allow_read_receipts);
    if before != after {
        let mut viewers = audience(hub, account, user, &after).await;
        if before.visibility == Visibility::Contacts && after.visibility != Visibility::Contacts {
            let c = contacts(hub, account, user).await?;
            for (v, rel) in viewers.iter_mut() {
                if c.contains(v) {
                    *rel = Viewer::Contact;
                }
            }
        }
        let groups = domain::changed_views((&presence, &before), (&presence, &after), viewers);
        send_groups(hub, account, groups).await;
    }
    Ok(after)
}

/// A user's effective presence as the owner sees it, and their settings (admin API, CLI).
pub async fn describe(hub: &Hub, account: &str, user: &str) -> AppResult<Value> {
    let mut loaded = load(hub, account, &[user.to_string()]).await?;
    let (settings, presence) =
        loaded.remove(user).unwrap_or_else(|| (PrivacySettings::default(), Presence::offline(user, None)));
    let connected = hub.presence.tracker.lock().is_connected(account, user);
    Ok(json!({
        "userId": user,
        "presence": domain::view_as(Viewer::Owner, &presence, &settings),
        "appearOffline": presence.appear_offline,
        "connected": connected,
        "settings": settings_json(&settings),
    }))
}
