//! Presence (docs/protocol.md §10): multi-device aggregation and grace in the presence backend, privacy per
//! viewer, audiences of subscribers plus room-mates. Heartbeats touch only the backend; the database sees
//! custom status changes, session ends (last seen) and settings.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Utc};

use super::events::Event;
use super::receipts::Receipts;
use super::worker::{Worker, until, within};
use super::{Fanout, RosterRef};
use crate::cluster::{Audience, PresenceBackend};
use crate::domain::presence::{
    self as domain, CustomStatus, Presence as UserPresence, PresenceEvent, PresenceUpdate, PrivacySettings,
    PrivacySettingsPatch, StatusBreakdown, ViewedPresence, Viewer, Visibility,
};
use crate::error::{AppError, AppResult};
use crate::metrics::Metrics;
use crate::store::Store;
use crate::store::presence::{PresenceRow, PresenceWrite, SettingsRow};

type UserKey = (String, String);

fn key(account: &str, user: &str) -> UserKey {
    (account.to_string(), user.to_string())
}

fn ms(t: Option<i64>) -> Option<DateTime<Utc>> {
    t.and_then(DateTime::from_timestamp_millis)
}

fn settings_from(row: &PresenceRow) -> PrivacySettings {
    PrivacySettings {
        visibility: Visibility::parse(&row.visibility).unwrap_or_default(),
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

/// The device an HTTP client's presence and typing are tracked under.
pub fn http_device(user: &str) -> String {
    format!("http:{user}")
}

/// A user's presence as the owner sees it, and their settings (admin API, CLI).
pub struct Described {
    pub presence: ViewedPresence,
    pub appear_offline: bool,
    pub connected: bool,
    pub settings: PrivacySettings,
}

pub struct PresenceCfg {
    pub enabled: bool,
    /// `REALTIME_PRESENCE_TIMEOUT`: an HTTP device lasts three quarters of it after its latest post.
    pub timeout: std::time::Duration,
}

pub struct Presence {
    backend: Arc<dyn PresenceBackend>,
    store: Store,
    fanout: Arc<Fanout>,
    roster: RosterRef,
    receipts: Arc<Receipts>,
    metrics: Arc<Metrics>,
    cfg: PresenceCfg,
    /// Users whose presence an HTTP client posts, with the time of the latest post. Held across the
    /// backend calls that connect or end such a device, so a post and the expiry never interleave.
    http_devices: tokio::sync::Mutex<HashMap<UserKey, Instant>>,
    /// Announcements about one user are computed and sent one at a time (a publication and a settings change
    /// racing each other must not leave a viewer with the older of the two). Striped by user.
    order: Vec<tokio::sync::Mutex<()>>,
    wake: Arc<tokio::sync::Notify>,
    worker: Worker,
}

/// Stripes of [`Presence::order`].
const ORDER_STRIPES: usize = 64;

impl Presence {
    pub fn new(
        backend: Arc<dyn PresenceBackend>,
        store: Store,
        fanout: Arc<Fanout>,
        roster: RosterRef,
        receipts: Arc<Receipts>,
        metrics: Arc<Metrics>,
        cfg: PresenceCfg,
    ) -> Presence {
        Presence {
            backend,
            store,
            fanout,
            roster,
            receipts,
            metrics,
            cfg,
            http_devices: tokio::sync::Mutex::new(HashMap::new()),
            order: (0..ORDER_STRIPES).map(|_| tokio::sync::Mutex::new(())).collect(),
            wake: Arc::new(tokio::sync::Notify::new()),
            worker: Worker::default(),
        }
    }

    /// Starts the timer: coalesced changes, idles, custom status expiry, the end of offline graces, and
    /// the end of HTTP devices that stopped posting.
    pub fn start(self: &Arc<Self>) {
        self.worker.every_deadline(self, self.wake.clone(), |p| async move {
            p.tick().await;
            within(p.next_deadline().await.map(until), p.backend.poll_interval())
        });
    }

    pub async fn stop(&self) {
        self.worker.stop().await;
    }

    /// The lock that orders announcements about one user.
    async fn ordered(&self, account: &str, user: &str) -> tokio::sync::MutexGuard<'_, ()> {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (account, user).hash(&mut h);
        self.order[(h.finish() as usize) % ORDER_STRIPES].lock().await
    }

    async fn tick(&self) {
        self.expire_http_devices().await;
        let events = self.backend.due(Utc::now()).await;
        for ev in &events {
            if let PresenceEvent::SessionEnded { account, user_id, last_seen: Some(t) } = ev {
                self.backend.remember_last_seen(account, user_id, *t).await;
            }
        }
        for ev in events {
            match ev {
                PresenceEvent::Changed { account, previous, current, answers } => {
                    self.publish(&account, &previous, &current, answers).await;
                    if previous.custom_status != current.custom_status {
                        self.persist(&account, &current, None).await;
                    }
                }
                PresenceEvent::SessionEnded { account, user_id, last_seen } => {
                    self.session_ended(&account, &user_id, last_seen).await;
                }
                PresenceEvent::Settled { account, current, answers } => self.settle(&account, &current, answers).await,
            }
        }
    }

    async fn next_deadline(&self) -> Option<DateTime<Utc>> {
        let life = self.http_life();
        let http = self.http_devices.lock().await.values().min().map(|last| {
            let left = (*last + life).saturating_duration_since(Instant::now());
            Utc::now() + chrono::Duration::from_std(left).unwrap_or_default()
        });
        [self.backend.next_deadline().await, http].into_iter().flatten().min()
    }

    fn http_life(&self) -> std::time::Duration {
        self.cfg.timeout * 3 / 4
    }

    // ----- devices -------------------------------------------------------------------------------------

    /// A device of a user connected (a socket after its handshake was admitted). `stored`: the user's stored
    /// presence row when the caller read it (because [`Presence::needs_stored`] said so); read here when it
    /// did not and it is needed after all.
    pub async fn connected(&self, account: &str, user: &str, device: &str, stored: Option<Option<&PresenceRow>>) {
        match stored {
            Some(row) => {
                if self.needs_stored(account, user).await {
                    self.adopt_stored(account, user, row, Utc::now()).await;
                }
            }
            None => {
                if let Err(e) = self.prime(account, user).await {
                    tracing::warn!(error = %e.message, "cannot load stored presence");
                }
            }
        }
        self.backend.connect(account, user, device, Utc::now()).await;
        self.wake.notify_one();
    }

    /// A device went away; its subscriptions end with it.
    pub async fn disconnected(&self, account: &str, user: &str, device: &str) {
        self.backend.disconnect(account, user, device, Utc::now()).await;
        self.backend.drop_subscriptions(account, user, device).await;
        self.wake.notify_one();
    }

    /// Any activity of a device keeps it from turning idle.
    pub async fn touch(&self, account: &str, user: &str, device: &str) {
        if self.backend.touch(account, user, device, Utc::now()).await == domain::UpdateOutcome::Changed {
            self.wake.notify_one();
        }
    }

    fn check_enabled(&self) -> AppResult<()> {
        if self.cfg.enabled {
            Ok(())
        } else {
            Err(AppError::forbidden("presence is disabled (REALTIME_ENABLE_PRESENCE=false)"))
        }
    }

    /// `presence:update`: memory only; a change is published after the coalescing window by the timer.
    pub async fn update(&self, account: &str, user: &str, device: &str, update: PresenceUpdate) -> AppResult<()> {
        self.check_enabled()?;
        self.metrics.presence_updates.inc();
        if self.backend.update(account, user, device, update, Utc::now()).await == domain::UpdateOutcome::Changed {
            self.wake.notify_one();
        }
        Ok(())
    }

    /// `POST /presence/:channelId`: the status of a client without a socket. It counts as one more device of
    /// the user (aggregated with their sockets as usual) that lasts three quarters of
    /// `REALTIME_PRESENCE_TIMEOUT` after the latest post, then goes like a closed socket (offline after the
    /// grace, when nothing else is connected) before it would have been counted idle (`away`).
    pub async fn http_update(&self, account: &str, user: &str, update: PresenceUpdate) -> AppResult<()> {
        self.check_enabled()?;
        let device = http_device(user);
        {
            let mut devices = self.http_devices.lock().await;
            if !devices.contains_key(&key(account, user)) {
                let rooms = self.store.rooms_of_user(account, user).await?;
                for (room, _) in &rooms {
                    self.backend.joined_room(account, user, room).await;
                }
                self.connected(account, user, &device, None).await;
            }
            devices.insert(key(account, user), Instant::now());
        }
        self.update(account, user, &device, update).await
    }

    async fn expire_http_devices(&self) {
        let life = self.http_life();
        let mut devices = self.http_devices.lock().await;
        let expired: Vec<UserKey> =
            devices.iter().filter(|(_, last)| **last + life <= Instant::now()).map(|(k, _)| k.clone()).collect();
        for (account, user) in expired {
            devices.remove(&(account.clone(), user.clone()));
            self.disconnected(&account, &user, &http_device(&user)).await;
        }
    }

    // ----- audiences -----------------------------------------------------------------------------------

    /// The user is in a room: its members hear about them.
    pub async fn joined_room(&self, account: &str, user: &str, room: &str) {
        self.backend.joined_room(account, user, room).await;
    }

    /// The user is in each of `rooms` (a socket's admission).
    pub async fn joined_rooms(&self, account: &str, user: &str, rooms: &[String]) {
        self.backend.joined_rooms(account, user, rooms).await;
    }

    /// The user's last socket left a room: its members no longer hear about them.
    pub async fn left_room(&self, account: &str, user: &str, room: &str) {
        self.backend.left_room(account, user, room).await;
    }

    pub async fn subscribe(&self, account: &str, viewer: &str, sid: &str, targets: &[String]) {
        self.backend.subscribe(account, viewer, sid, targets).await;
    }

    pub async fn unsubscribe(&self, account: &str, viewer: &str, sid: &str, targets: &[String]) {
        self.backend.unsubscribe(account, viewer, sid, targets).await;
    }

    /// Everyone who may hear about `user`: subscribers, members present in the user's rooms, and the user's
    /// own other devices — each with their relation to the user.
    async fn audience(&self, account: &str, user: &str, settings: &PrivacySettings) -> Vec<(String, Viewer)> {
        let mut viewers: HashSet<String> = self.backend.subscribers(account, user).await.into_iter().collect();
        for room in self.backend.rooms_of(account, user).await {
            viewers.extend(self.roster.users_in(account, &room).await);
        }
        viewers.remove(user);
        let contacts = if settings.visibility == Visibility::Contacts && !viewers.is_empty() {
            self.contacts(account, user).await.unwrap_or_default()
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

    /// Users who are contacts of `target` (an explicit pair or a shared dm room).
    async fn contacts(&self, account: &str, target: &str) -> AppResult<HashSet<String>> {
        Ok(self.store.contacts_of(account, target).await?.into_iter().collect())
    }

    /// Sends each group of viewers its view, rendered once per group.
    async fn send_groups(&self, account: &str, groups: Vec<domain::ViewGroup<String>>) {
        for g in groups {
            self.fanout.emit(Audience::users(account, &g.viewers), Event::PresenceChanged(g.view)).await;
            self.metrics.broadcasts.inc();
        }
    }

    /// A published change: every viewer whose view changed hears it. A viewer who was answered with the live
    /// state inside the window is compared with what that answer showed, not with the previous publication.
    async fn publish(
        &self,
        account: &str,
        previous: &UserPresence,
        current: &UserPresence,
        answers: Vec<(String, ViewedPresence)>,
    ) {
        let user = &current.user_id;
        let _ordered = self.ordered(account, user).await;
        let settings = self.backend.settings(account, user).await.unwrap_or_default();
        let viewers = self.audience(account, user, &settings).await;
        let answered: HashMap<String, ViewedPresence> = answers.into_iter().collect();
        let (told, rest): (Vec<_>, Vec<_>) = viewers.into_iter().partition(|(v, _)| answered.contains_key(v));
        let mut groups = domain::changed_views((previous, &settings), (current, &settings), rest);
        for (viewer, rel) in told {
            let view = domain::view_as(rel, current, &settings);
            if answered.get(&viewer) != Some(&view) {
                add_to_groups(&mut groups, viewer, view);
            }
        }
        self.send_groups(account, groups).await;
    }

    /// A window closed with nothing announced: viewers whose answer showed a state that did not last are told
    /// the published one.
    async fn settle(&self, account: &str, current: &UserPresence, answers: Vec<(String, ViewedPresence)>) {
        let user = &current.user_id;
        let _ordered = self.ordered(account, user).await;
        let answered: HashMap<String, ViewedPresence> = answers.into_iter().collect();
        if answered.is_empty() {
            return;
        }
        let settings = self.backend.settings(account, user).await.unwrap_or_default();
        let mut groups = Vec::new();
        for (viewer, rel) in self.audience(account, user, &settings).await {
            let Some(told) = answered.get(&viewer) else { continue };
            let view = domain::view_as(rel, current, &settings);
            if *told != view {
                add_to_groups(&mut groups, viewer, view);
            }
        }
        self.send_groups(account, groups).await;
    }

    // ----- state, stored and live ----------------------------------------------------------------------

    /// Whether the backend lacks what the database holds for the user (their settings or their published
    /// state): a device connecting then brings it.
    pub async fn needs_stored(&self, account: &str, user: &str) -> bool {
        self.backend.settings(account, user).await.is_none() || self.backend.published(account, user).await.is_none()
    }

    /// What [`Presence::load`] does for one user when nobody reads the view (a device connected): the backend
    /// gets the stored settings, last seen and custom status when it does not hold them yet.
    async fn prime(&self, account: &str, user: &str) -> AppResult<()> {
        if !self.needs_stored(account, user).await {
            return Ok(());
        }
        let row = self.store.presence_rows(account, &[user.to_string()]).await?.pop().map(|(_, r)| r);
        self.adopt_stored(account, user, row.as_ref(), Utc::now()).await;
        Ok(())
    }

    /// Gives the backend what the database holds for a user: their settings when it has none yet (with the
    /// read-receipt choice), their last seen and custom status. Returns the user's settings as they stand.
    async fn adopt_stored(
        &self,
        account: &str,
        user: &str,
        row: Option<&PresenceRow>,
        now: DateTime<Utc>,
    ) -> PrivacySettings {
        let settings = match self.backend.settings(account, user).await {
            Some(s) => s,
            None => {
                let s = row.map(settings_from).unwrap_or_default();
                self.backend.set_settings(account, user, s).await;
                // The stored choice holds from the first time the user is seen, not only after a change.
                self.receipts.set_read_receipts(account, user, s.allow_read_receipts);
                s
            }
        };
        if let Some(r) = row {
            self.backend.restore(account, user, ms(r.last_seen_at), custom_from(r), now).await;
        }
        settings
    }

    /// Settings and published presence of users, loading from the database the ones not known yet.
    async fn load(
        &self,
        account: &str,
        users: &[String],
    ) -> AppResult<HashMap<String, (PrivacySettings, UserPresence)>> {
        let now = Utc::now();
        let mut missing = Vec::new();
        for u in users {
            if self.backend.settings(account, u).await.is_none() || self.backend.published(account, u).await.is_none() {
                missing.push(u.clone());
            }
        }
        let rows: HashMap<String, PresenceRow> = if missing.is_empty() {
            HashMap::new()
        } else {
            self.store.presence_rows(account, &missing).await?.into_iter().collect()
        };
        let mut out = HashMap::with_capacity(users.len());
        for u in users {
            let row = rows.get(u);
            let settings = self.adopt_stored(account, u, row, now).await;
            let presence = match self.backend.published(account, u).await {
                Some(p) => p,
                None => {
                    let remembered = self.backend.remembered_last_seen(account, u).await;
                    UserPresence::offline(u, remembered.or_else(|| row.and_then(|r| ms(r.last_seen_at))))
                }
            };
            out.insert(u.clone(), (settings, presence));
        }
        Ok(out)
    }

    /// What `viewer` may see of each of `targets` now: the live state, changes inside the coalescing window
    /// included (a user who connected a moment ago is online). Such an answer is remembered, so that the
    /// viewer is set right when the window closes on another state (docs/protocol.md §10.4).
    pub async fn views_for(
        &self,
        account: &str,
        viewer: Option<&str>,
        targets: &[String],
    ) -> AppResult<Vec<ViewedPresence>> {
        let loaded = self.load(account, targets).await?;
        let mut out = Vec::with_capacity(targets.len());
        for t in targets {
            let Some((settings, stored)) = loaded.get(t) else { continue };
            let rel = match viewer {
                Some(v) if v == t => Viewer::Owner,
                // Only a contacts-only user needs the contact question answered.
                Some(v)
                    if settings.visibility == Visibility::Contacts && self.contacts(account, t).await?.contains(v) =>
                {
                    Viewer::Contact
                }
                _ => Viewer::Other,
            };
            let settings = *settings;
            let view = move |p: &UserPresence| domain::view_as(rel, p, &settings);
            let shown = match self.backend.answer(account, t, viewer, &view).await {
                Some(v) => v,
                None => view(stored),
            };
            out.push(shown);
        }
        Ok(out)
    }

    pub async fn settings_of(&self, account: &str, user: &str) -> AppResult<PrivacySettings> {
        Ok(self.load(account, &[user.to_string()]).await?.remove(user).map(|(s, _)| s).unwrap_or_default())
    }

    /// Applies a settings patch: stored, effective at once (viewers who lose or gain sight are told).
    pub async fn change_settings(
        &self,
        account: &str,
        user: &str,
        patch: &PrivacySettingsPatch,
    ) -> AppResult<PrivacySettings> {
        let (before, presence) = self
            .load(account, &[user.to_string()])
            .await?
            .remove(user)
            .unwrap_or_else(|| (PrivacySettings::default(), UserPresence::offline(user, None)));
        let after = before.merged(patch);
        let _ordered = self.ordered(account, user).await;
        let row = SettingsRow {
            visibility: after.visibility.as_str(),
            show_online_status: after.show_online_status,
            show_last_seen: after.show_last_seen,
            allow_read_receipts: after.allow_read_receipts,
            invisible_mode: after.invisible_mode,
        };
        self.store.save_settings(account, user, &row).await?;
        self.backend.set_settings(account, user, after).await;
        self.receipts.set_read_receipts(account, user, after.allow_read_receipts);
        if before != after {
            // What viewers were told is the published state as it is now, after the new settings are in place
            // (a publication racing this change used either the old settings before it, or the new ones).
            let presence = self.backend.published(account, user).await.unwrap_or(presence);
            let mut viewers = self.audience(account, user, &after).await;
            if before.visibility == Visibility::Contacts && after.visibility != Visibility::Contacts {
                let c = self.contacts(account, user).await?;
                for (v, rel) in viewers.iter_mut() {
                    if c.contains(v) {
                        *rel = Viewer::Contact;
                    }
                }
            }
            let groups = domain::changed_views((&presence, &before), (&presence, &after), viewers);
            self.send_groups(account, groups).await;
        }
        Ok(after)
    }

    /// A user's effective presence as the owner sees it (live), and their settings.
    pub async fn describe(&self, account: &str, user: &str) -> AppResult<Described> {
        let mut loaded = self.load(account, &[user.to_string()]).await?;
        let (settings, stored) =
            loaded.remove(user).unwrap_or_else(|| (PrivacySettings::default(), UserPresence::offline(user, None)));
        let presence = self.backend.current(account, user).await.unwrap_or(stored);
        Ok(Described {
            presence: domain::view_as(Viewer::Owner, &presence, &settings),
            appear_offline: presence.appear_offline,
            connected: self.backend.is_connected(account, user).await,
            settings,
        })
    }

    pub async fn breakdown(&self, account: &str) -> StatusBreakdown {
        self.backend.breakdown(account).await
    }

    /// A node is gone (or this node restarted): its devices go as if disconnected now (their users go
    /// offline after the grace unless connected elsewhere), and its sockets' subscriptions end.
    pub async fn purge_node(&self, node: &str) -> usize {
        let n = self.backend.purge_node(node, Utc::now()).await;
        self.wake.notify_one();
        n
    }

    /// Forgets what is kept of departed users (the database has it).
    pub async fn sweep(&self) {
        self.backend.sweep().await;
    }

    /// A session ended (its grace ran out): its last seen and custom status are stored.
    async fn session_ended(&self, account: &str, user_id: &str, last_seen: Option<DateTime<Utc>>) {
        let custom = self.backend.published(account, user_id).await.and_then(|p| p.custom_status);
        let p = UserPresence { custom_status: custom, ..UserPresence::offline(user_id, last_seen) };
        self.persist(account, &p, last_seen.map(|t| t.timestamp_millis())).await;
    }

    /// Shutdown, after every socket closed: the offline graces will not run out in this process, so the
    /// sessions end now and their last seen is stored (a restart would otherwise show the previous one's).
    /// One batch write for them all: with thousands connected, a write each made stopping take seconds.
    pub async fn end_sessions_at_shutdown(&self) {
        let mut ended = Vec::new();
        for ev in self.backend.end_all_graces().await {
            if let PresenceEvent::SessionEnded { account, user_id, last_seen } = ev {
                let custom = self.backend.published(&account, &user_id).await.and_then(|p| p.custom_status);
                ended.push((account, user_id, custom, last_seen.map(|t| t.timestamp_millis())));
            }
        }
        let rows: Vec<PresenceWrite<'_>> = ended
            .iter()
            .map(|(account, user, custom, last_seen)| PresenceWrite {
                account,
                user,
                status: domain::PublicStatus::Offline.as_str(),
                custom: custom_columns(custom.as_ref()),
                last_seen: *last_seen,
            })
            .collect();
        if let Err(e) = self.store.save_presences(&rows).await {
            tracing::warn!(error = %e, users = rows.len(), "cannot store the last seen of the sessions ended at shutdown");
        }
    }

    async fn persist(&self, account: &str, p: &UserPresence, last_seen: Option<i64>) {
        let custom = custom_columns(p.custom_status.as_ref());
        if let Err(e) = self.store.save_presence(account, &p.user_id, p.status.as_str(), custom, last_seen).await {
            tracing::warn!(error = %e, user = %p.user_id, "cannot store presence");
        }
    }
}

/// A custom status as the presence table's columns: text, emoji, expiry (ms).
fn custom_columns(c: Option<&CustomStatus>) -> (Option<&str>, Option<&str>, Option<i64>) {
    (
        c.and_then(|c| c.text.as_deref()),
        c.and_then(|c| c.emoji.as_deref()),
        c.and_then(|c| c.expires_at.map(|t| t.timestamp_millis())),
    )
}

/// Adds a viewer to the group of its view (a new group when no other viewer gets that view).
fn add_to_groups(groups: &mut Vec<domain::ViewGroup<String>>, viewer: String, view: ViewedPresence) {
    match groups.iter_mut().find(|g| g.view == view) {
        Some(g) => g.viewers.push(viewer),
        None => groups.push(domain::ViewGroup { view, viewers: vec![viewer] }),
    }
}
