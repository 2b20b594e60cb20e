//! Presence (docs/protocol.md §10): multi-device aggregation, offline grace, idle detection, custom
//! status expiry, per-user coalescing, and the server-side privacy filter.
//!
//! Pure logic: no sockets, no SQL, no clock. The glue calls [`PresenceTracker`] on
//! connect / disconnect / `presence:update` with the current time, and calls
//! [`PresenceTracker::tick`] at [`PresenceTracker::next_deadline`]; `tick` returns the
//! transitions to publish. What each viewer may see is decided by the pure functions
//! [`view_for`] / [`view_as`], and [`group_viewers`] / [`changed_views`] bucket the audience
//! so a broadcast is encoded once per distinct view rather than once per viewer.
//!
//! Semantics chosen where the contract leaves room (documented here so the project docs can
//! repeat them):
//! - "Most available" ranks `online > away > busy > appear-offline`; a socket that asked for
//!   `online` but sent no heartbeat/activity for `idle_timeout` counts as `away`.
//! - A user appears offline (`offline`/`invisible` from a live socket) only when every live
//!   socket says so.
//! - `lastSeen` is the moment the user stopped being visibly present: the disconnect time
//!   (recorded when the grace ends) or the moment they switched to appear-offline. Leaving
//!   while already appearing offline does not move it (it would reveal activity).
//! - A new socket starts with the user's current chosen status (so a quick reconnect of a
//!   `busy` or invisible user does not flash `online`); a user's first socket starts `online`.
//! - Custom status is hidden from others whenever the status they see is masked (privacy or
//!   appear-offline), because setting it would reveal activity; a genuinely offline user
//!   keeps showing it ("🌴 on vacation").
//! - For a non-contact under `visibility = contacts` nothing is shown, `lastSeen` included;
//!   `showOnlineStatus = false` shows `offline` but still the stored `lastSeen` when
//!   `showLastSeen` allows it.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

/// Longest custom status text, in characters.
pub const MAX_STATUS_TEXT_CHARS: usize = 256;
/// Longest custom status emoji, in bytes (an emoji sequence or a `:shortcode:`).
pub const MAX_STATUS_EMOJI_BYTES: usize = 64;

/// Default `REALTIME_PRESENCE_OFFLINE_GRACE`.
pub const DEFAULT_OFFLINE_GRACE_MS: i64 = 5_000;
/// Default `REALTIME_PRESENCE_TIMEOUT` (no heartbeat for this long: `away`).
pub const DEFAULT_IDLE_TIMEOUT_MS: i64 = 300_000;
pub const DEFAULT_COALESCE_WINDOW_MS: i64 = 400;
pub const DEFAULT_COALESCE_MAX_DELAY_MS: i64 = 2_000;

// ---------------------------------------------------------------------------------------------
// Vocabulary
// ---------------------------------------------------------------------------------------------

/// Inbound status words of `presence:update` (`dnd` is accepted as `busy`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Online,
    Away,
    Busy,
    Offline,
    Invisible,
}

impl Status {
    /// Parse `online|away|busy|dnd|offline|invisible` (case-insensitive).
    pub fn parse(s: &str) -> Option<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "online" => Some(Status::Online),
            "away" | "idle" => Some(Status::Away),
            "busy" | "dnd" => Some(Status::Busy),
            "offline" => Some(Status::Offline),
            "invisible" => Some(Status::Invisible),
            _ => None,
        }
    }

    /// Availability rank: bigger is more available.
    fn rank(self) -> u8 {
        match self {
            Status::Online => 3,
            Status::Away => 2,
            Status::Busy => 1,
            Status::Offline | Status::Invisible => 0,
        }
    }

    /// `None` for the appear-offline words.
    fn public(self) -> Option<PublicStatus> {
        match self {
            Status::Online => Some(PublicStatus::Online),
            Status::Away => Some(PublicStatus::Away),
            Status::Busy => Some(PublicStatus::Busy),
            Status::Offline | Status::Invisible => None,
        }
    }
}

/// Outgoing status words (nchat's vocabulary).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PublicStatus {
    Online,
    Away,
    Busy,
    Offline,
}

impl PublicStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            PublicStatus::Online => "online",
            PublicStatus::Away => "away",
            PublicStatus::Busy => "busy",
            PublicStatus::Offline => "offline",
        }
    }
}

/// Why a presence request was refused; [`PresenceError::code`] gives the docs/protocol.md §2 code.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PresenceError {
    Validation(String),
    TooLarge(String),
}

impl PresenceError {
    pub fn code(&self) -> crate::error::ErrorCode {
        match self {
            PresenceError::Validation(_) => crate::error::ErrorCode::ValidationError,
            PresenceError::TooLarge(_) => crate::error::ErrorCode::PayloadTooLarge,
        }
    }
}

impl From<PresenceError> for crate::error::AppError {
    fn from(e: PresenceError) -> Self {
        crate::error::AppError::new(e.code(), e.to_string())
    }
}

impl fmt::Display for PresenceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PresenceError::Validation(m) => write!(f, "{m}"),
            PresenceError::TooLarge(field) => write!(f, "{field} is too long"),
        }
    }
}

impl std::error::Error for PresenceError {}

/// A user's custom status. `expires_at` is enforced by [`PresenceTracker::tick`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CustomStatus {
    pub text: Option<String>,
    pub emoji: Option<String>,
    pub expires_at: Option<DateTime<Utc>>,
}

impl CustomStatus {
    fn is_empty(&self) -> bool {
        self.text.is_none() && self.emoji.is_none()
    }

    fn expired(&self, now: DateTime<Utc>) -> bool {
        self.expires_at.is_some_and(|e| e <= now)
    }
}

/// A parsed `presence:update {status, customStatus?}`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PresenceUpdate {
    pub status: Status,
    /// `None` clears the custom status (that is how nchat clears it).
    pub custom_status: Option<CustomStatus>,
}

impl PresenceUpdate {
    /// An update from its fields, bounded. Blank text and emoji are absent; a custom status with neither
    /// text nor emoji is no custom status.
    pub fn new(
        status: Status,
        text: Option<&str>,
        emoji: Option<&str>,
        expires_at: Option<DateTime<Utc>>,
    ) -> Result<Self, PresenceError> {
        let clean = |v: Option<&str>| v.map(str::trim).filter(|v| !v.is_empty()).map(str::to_string);
        let (text, emoji) = (clean(text), clean(emoji));
        if text.as_ref().is_some_and(|t| t.chars().count() > MAX_STATUS_TEXT_CHARS) {
            return Err(PresenceError::TooLarge("customStatus.text".into()));
        }
        if emoji.as_ref().is_some_and(|e| e.len() > MAX_STATUS_EMOJI_BYTES) {
            return Err(PresenceError::TooLarge("customStatus.emoji".into()));
        }
        let custom = CustomStatus { text, emoji, expires_at };
        Ok(PresenceUpdate { status, custom_status: (!custom.is_empty()).then_some(custom) })
    }
}

// ---------------------------------------------------------------------------------------------
// Privacy
// ---------------------------------------------------------------------------------------------

/// Who may see a user's presence at all.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Visibility {
    #[default]
    Everyone,
    Contacts,
    Nobody,
}

impl Visibility {
    pub fn parse(s: &str) -> Option<Visibility> {
        match s {
            "everyone" => Some(Visibility::Everyone),
            "contacts" => Some(Visibility::Contacts),
            "nobody" => Some(Visibility::Nobody),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Visibility::Everyone => "everyone",
            Visibility::Contacts => "contacts",
            Visibility::Nobody => "nobody",
        }
    }
}

/// A user's privacy settings (`presence:settings`, admin API). Defaults: everything visible.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct PrivacySettings {
    pub visibility: Visibility,
    pub show_online_status: bool,
    pub show_last_seen: bool,
    /// Consumed by the receipts logic: `false` means this user's reads produce no `message:read*`.
    pub allow_read_receipts: bool,
    pub invisible_mode: bool,
}

impl Default for PrivacySettings {
    fn default() -> Self {
        PrivacySettings {
            visibility: Visibility::Everyone,
            show_online_status: true,
            show_last_seen: true,
            allow_read_receipts: true,
            invisible_mode: false,
        }
    }
}

/// A partial update of [`PrivacySettings`]: omitted fields keep their value.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PrivacySettingsPatch {
    pub visibility: Option<Visibility>,
    pub show_online_status: Option<bool>,
    pub show_last_seen: Option<bool>,
    pub allow_read_receipts: Option<bool>,
    pub invisible_mode: Option<bool>,
}

impl PrivacySettings {
    /// Merge a patch; returns the merged settings (what `presence:settings` acks).
    pub fn merged(mut self, patch: &PrivacySettingsPatch) -> Self {
        if let Some(v) = patch.visibility {
            self.visibility = v;
        }
        if let Some(v) = patch.show_online_status {
            self.show_online_status = v;
        }
        if let Some(v) = patch.show_last_seen {
            self.show_last_seen = v;
        }
        if let Some(v) = patch.allow_read_receipts {
            self.allow_read_receipts = v;
        }
        if let Some(v) = patch.invisible_mode {
            self.invisible_mode = v;
        }
        self
    }
}

/// A user's real (unfiltered) presence. Only ever sent through a view.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Presence {
    pub user_id: String,
    /// Offline also when the user appears offline.
    pub status: PublicStatus,
    /// The user is connected but chose `offline`/`invisible`.
    pub appear_offline: bool,
    pub custom_status: Option<CustomStatus>,
    pub last_seen: Option<DateTime<Utc>>,
}

impl Presence {
    /// A user nobody has seen in this process (e.g. built from a database row).
    pub fn offline(user_id: &str, last_seen: Option<DateTime<Utc>>) -> Self {
        Presence {
            user_id: user_id.to_string(),
            status: PublicStatus::Offline,
            appear_offline: false,
            custom_status: None,
            last_seen,
        }
    }

    /// Connected and not appearing offline.
    pub fn is_visibly_online(&self) -> bool {
        self.status != PublicStatus::Offline
    }

    /// Whether two states would look the same to every viewer: `lastSeen` only matters while
    /// offline (so an offline→online flicker that moved it publishes nothing).
    pub fn same_publication(&self, other: &Presence) -> bool {
        self.status == other.status
            && self.appear_offline == other.appear_offline
            && self.custom_status == other.custom_status
            && (self.status != PublicStatus::Offline || self.last_seen == other.last_seen)
    }
}

/// `customStatus` as sent: `{text, emoji}` (both keys always present, `null` when unset).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct CustomStatusView {
    pub text: Option<String>,
    pub emoji: Option<String>,
}

/// What one viewer is told: the `presence:changed` payload (also the entries of
/// `presence:bulk.presences` and `presence:get` `data.presences`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ViewedPresence {
    pub user_id: String,
    pub status: PublicStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom_status: Option<CustomStatusView>,
    /// ISO-8601 UTC with milliseconds; only with status `offline`.
    #[serde(default, skip_serializing_if = "Option::is_none", serialize_with = "crate::domain::time::ser::opt_iso")]
    pub last_seen: Option<DateTime<Utc>>,
}

/// How a viewer relates to the user being viewed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Viewer {
    /// The user themself (their other devices): sees the real state.
    Owner,
    /// A contact (explicit pair or shares a `dm:` room).
    Contact,
    /// Anyone else.
    Other,
}

/// docs/protocol.md §10 privacy table for another viewer.
pub fn view_for(viewer_is_contact: bool, presence: &Presence, settings: &PrivacySettings) -> ViewedPresence {
    view_as(if viewer_is_contact { Viewer::Contact } else { Viewer::Other }, presence, settings)
}

/// The privacy filter, including the owner's own view.
pub fn view_as(viewer: Viewer, presence: &Presence, settings: &PrivacySettings) -> ViewedPresence {
    let custom =
        || presence.custom_status.as_ref().map(|c| CustomStatusView { text: c.text.clone(), emoji: c.emoji.clone() });
    let offline = |last_seen: Option<DateTime<Utc>>, custom_status: Option<CustomStatusView>| ViewedPresence {
        user_id: presence.user_id.clone(),
        status: PublicStatus::Offline,
        custom_status,
        last_seen,
    };
    if viewer == Viewer::Owner {
        return ViewedPresence {
            user_id: presence.user_id.clone(),
            status: presence.status,
            custom_status: custom(),
            last_seen: presence.last_seen.filter(|_| presence.status == PublicStatus::Offline),
        };
    }
    let hidden = settings.invisible_mode
        || settings.visibility == Visibility::Nobody
        || (settings.visibility == Visibility::Contacts && viewer != Viewer::Contact);
    if hidden {
        return offline(None, None);
    }
    let last_seen = presence.last_seen.filter(|_| settings.show_last_seen);
    if !settings.show_online_status || presence.appear_offline {
        return offline(last_seen, None);
    }
    if presence.status == PublicStatus::Offline {
        return offline(last_seen, custom());
    }
    ViewedPresence {
        user_id: presence.user_id.clone(),
        status: presence.status,
        custom_status: custom(),
        last_seen: None,
    }
}

/// Viewers that get the same payload: encode once, emit to all of them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ViewGroup<V> {
    pub view: ViewedPresence,
    pub viewers: Vec<V>,
}

/// Bucket viewers by what they may see (at most three distinct views: owner, contact,
/// other; equal views are merged). Groups come in order of first appearance.
pub fn group_viewers<V>(
    presence: &Presence,
    settings: &PrivacySettings,
    viewers: impl IntoIterator<Item = (V, Viewer)>,
) -> Vec<ViewGroup<V>> {
    let mut groups: Vec<ViewGroup<V>> = Vec::new();
    let mut by_relation: [Option<usize>; 3] = [None; 3];
    for (v, rel) in viewers {
        let slot = relation_slot(rel);
        let idx = match by_relation[slot] {
            Some(i) => i,
            None => {
                let view = view_as(rel, presence, settings);
                let i = match groups.iter().position(|g| g.view == view) {
                    Some(i) => i,
                    None => {
                        groups.push(ViewGroup { view, viewers: Vec::new() });
                        groups.len() - 1
                    }
                };
                by_relation[slot] = Some(i);
                i
            }
        };
        groups[idx].viewers.push(v);
    }
    groups
}

fn relation_slot(rel: Viewer) -> usize {
    match rel {
        Viewer::Owner => 0,
        Viewer::Contact => 1,
        Viewer::Other => 2,
    }
}

/// Like [`group_viewers`] but only for viewers whose view differs between `before` and
/// `after`. Use it for presence transitions (same settings on both sides) and for privacy
/// changes (same presence on both sides): viewers who may no longer see the user get
/// `offline`, and vice versa; viewers for whom nothing changed get nothing.
pub fn changed_views<V>(
    before: (&Presence, &PrivacySettings),
    after: (&Presence, &PrivacySettings),
    viewers: impl IntoIterator<Item = (V, Viewer)>,
) -> Vec<ViewGroup<V>> {
    let mut changed: [Option<bool>; 3] = [None; 3];
    let filtered = viewers.into_iter().filter(|(_, rel)| {
        let slot = relation_slot(*rel);
        *changed[slot].get_or_insert_with(|| view_as(*rel, before.0, before.1) != view_as(*rel, after.0, after.1))
    });
    group_viewers(after.0, after.1, filtered)
}

// ---------------------------------------------------------------------------------------------
// Tracker
// ---------------------------------------------------------------------------------------------

/// Timing knobs (milliseconds in the environment).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PresenceConfig {
    /// `REALTIME_PRESENCE_OFFLINE_GRACE`: how long after the last socket closes before the
    /// user is announced offline (absorbs reconnects).
    pub offline_grace: Duration,
    /// No heartbeat/activity for this long turns an `online` socket `away`.
    pub idle_timeout: Duration,
    /// Changes are published this long after the latest one (trailing debounce)...
    pub coalesce_window: Duration,
    /// ...but never later than this after the first unpublished one.
    pub coalesce_max_delay: Duration,
}

/// Longest accepted duration setting (a year): keeps `now + d` far from chrono's range limit.
const MAX_SETTING_MS: i64 = 365 * 24 * 3_600_000;

fn clamp_ms(ms: i64) -> Duration {
    Duration::milliseconds(ms.clamp(0, MAX_SETTING_MS))
}

fn from_std(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(MAX_SETTING_MS)
}

impl PresenceConfig {
    /// Build from millisecond settings (clamped to 0..=1 year; the idle timeout is at least
    /// 1 ms). The coalescing cap is `DEFAULT_COALESCE_MAX_DELAY_MS`, or the window if longer.
    pub fn from_millis(offline_grace_ms: i64, idle_timeout_ms: i64, coalesce_window_ms: i64) -> Self {
        let window = clamp_ms(coalesce_window_ms);
        PresenceConfig {
            offline_grace: clamp_ms(offline_grace_ms),
            idle_timeout: clamp_ms(idle_timeout_ms.max(1)),
            coalesce_window: window,
            coalesce_max_delay: clamp_ms(DEFAULT_COALESCE_MAX_DELAY_MS).max(window),
        }
    }

    /// Build from `std::time::Duration` settings (`REALTIME_PRESENCE_OFFLINE_GRACE`,
    /// `REALTIME_PRESENCE_TIMEOUT`, and the coalescing window).
    pub fn from_std(
        offline_grace: std::time::Duration,
        idle_timeout: std::time::Duration,
        coalesce_window: std::time::Duration,
    ) -> Self {
        Self::from_millis(from_std(offline_grace), from_std(idle_timeout), from_std(coalesce_window))
    }
}

impl Default for PresenceConfig {
    fn default() -> Self {
        Self::from_millis(DEFAULT_OFFLINE_GRACE_MS, DEFAULT_IDLE_TIMEOUT_MS, DEFAULT_COALESCE_WINDOW_MS)
    }
}

/// What [`PresenceTracker::tick`] reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PresenceEvent {
    /// The user's published presence changed: broadcast `presence:changed` to the audience
    /// through [`changed_views`] (same settings on both sides), and persist `current`. `answers`: what
    /// viewers were answered inside the window ([`UserState::answer`]): compare those viewers with it.
    Changed { account: String, previous: Presence, current: Presence, answers: Vec<(String, ViewedPresence)> },
    /// The offline grace ended with no socket back: the session is over. Emit `user:left`
    /// to the user's rooms and persist `last_seen`.
    SessionEnded { account: String, user_id: String, last_seen: Option<DateTime<Utc>> },
    /// A coalescing window closed with nothing to announce, after answers had shown the user's live state
    /// inside it: the viewers in `answers` who were told something else than `current` are set right.
    Settled { account: String, current: Presence, answers: Vec<(String, ViewedPresence)> },
}

/// Result of [`PresenceTracker::connect`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectOutcome {
    /// No socket and no grace before: a new session (`user:joined` is due), not a quick reconnect.
    pub new_session: bool,
}

/// Result of [`PresenceTracker::disconnect`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DisconnectOutcome {
    /// That was the user's last socket: the offline grace started.
    pub last_socket: bool,
}

/// Result of [`PresenceTracker::update`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UpdateOutcome {
    /// Nothing changed (a heartbeat): liveness refreshed, no broadcast.
    Unchanged,
    /// The effective presence changed; a broadcast is scheduled (coalesced).
    Changed,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct SocketState {
    requested: Status,
    last_active: DateTime<Utc>,
    idle: bool,
}

impl SocketState {
    fn effective(&self) -> Status {
        if self.idle && self.requested == Status::Online { Status::Away } else { self.requested }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Grace {
    since: DateTime<Utc>,
    until: DateTime<Utc>,
    /// What the user looked like when the last socket closed (kept during the grace).
    status: PublicStatus,
    appear_offline: bool,
    /// Status the next socket inherits.
    requested: Status,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Pending {
    first: DateTime<Utc>,
    due: DateTime<Utc>,
}

/// What was last published about a user: a [`Presence`] without the user id, which [`UserState`] holds once.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Published {
    status: PublicStatus,
    appear_offline: bool,
    custom_status: Option<Box<CustomStatus>>,
    last_seen: Option<DateTime<Utc>>,
}

impl Published {
    fn of(p: &Presence) -> Published {
        Published {
            status: p.status,
            appear_offline: p.appear_offline,
            custom_status: p.custom_status.clone().map(Box::new),
            last_seen: p.last_seen,
        }
    }

    /// [`Presence::same_publication`] against what was published.
    fn same_publication(&self, p: &Presence) -> bool {
        self.status == p.status
            && self.appear_offline == p.appear_offline
            && self.custom_status.as_deref() == p.custom_status.as_ref()
            && (self.status != PublicStatus::Offline || self.last_seen == p.last_seen)
    }
}

/// One user's presence: their devices, custom status, last seen, offline grace, what was last published and
/// what waits for the end of the coalescing window. The rules of this module act on it one user at a time:
/// [`PresenceTracker`] keeps one per user in memory, a shared backend keeps each as a record it replaces
/// atomically (hence the serde derives; the record is never sent to clients).
///
/// Packed for the tracker, which holds one per connected user: the user id once (shared with the tracker's
/// keys), the devices in a vector sized to them (one or two for almost every user), and what is absent most of
/// the time (a custom status, the offline grace) boxed. The record keeps its own layout ([`UserRecord`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "UserRecord", from = "UserRecord")]
pub struct UserState {
    user_id: Arc<str>,
    /// The connected devices, sorted by id.
    sockets: Vec<(Box<str>, SocketState)>,
    custom_status: Option<Box<CustomStatus>>,
    last_seen: Option<DateTime<Utc>>,
    grace: Option<Box<Grace>>,
    published: Published,
    pending: Option<Pending>,
    /// What viewers were answered inside the current coalescing window (viewer → the view they were shown),
    /// handed out with the window's close.
    answers: BTreeMap<String, ViewedPresence>,
}

/// [`UserState`] as a shared backend stores it: the layout the record always had, so nodes read each other's
/// records whichever way they hold the state in memory.
#[derive(Serialize, Deserialize)]
struct UserRecord {
    user_id: String,
    sockets: HashMap<String, SocketState>,
    custom_status: Option<CustomStatus>,
    last_seen: Option<DateTime<Utc>>,
    grace: Option<Grace>,
    published: Presence,
    pending: Option<Pending>,
    #[serde(default)]
    answers: BTreeMap<String, ViewedPresence>,
}

impl From<UserState> for UserRecord {
    fn from(u: UserState) -> UserRecord {
        let published = u.published();
        UserRecord {
            user_id: u.user_id.to_string(),
            sockets: u.sockets.into_iter().map(|(id, s)| (id.into_string(), s)).collect(),
            custom_status: u.custom_status.map(|c| *c),
            last_seen: u.last_seen,
            grace: u.grace.map(|g| *g),
            published,
            pending: u.pending,
            answers: u.answers,
        }
    }
}

impl From<UserRecord> for UserState {
    fn from(r: UserRecord) -> UserState {
        let mut sockets: Vec<(Box<str>, SocketState)> =
            r.sockets.into_iter().map(|(id, s)| (id.into_boxed_str(), s)).collect();
        sockets.sort_by(|a, b| a.0.cmp(&b.0));
        UserState {
            user_id: r.user_id.into(),
            sockets,
            custom_status: r.custom_status.map(Box::new),
            last_seen: r.last_seen,
            grace: r.grace.map(Box::new),
            published: Published::of(&r.published),
            pending: r.pending,
            answers: r.answers,
        }
    }
}

impl UserState {
    /// A user with nothing connected and nothing published yet.
    pub fn new(user_id: &str) -> Self {
        Self::with_id(user_id.into())
    }

    fn with_id(user_id: Arc<str>) -> Self {
        UserState {
            user_id,
            sockets: Vec::new(),
            custom_status: None,
            last_seen: None,
            grace: None,
            published: Published {
                status: PublicStatus::Offline,
                appear_offline: false,
                custom_status: None,
                last_seen: None,
            },
            pending: None,
            answers: BTreeMap::new(),
        }
    }

    /// The state of a user known only from the database (`lastSeen`, a custom status), published as is;
    /// None when that leaves nothing worth keeping beyond the database row.
    pub fn restored(
        user_id: &str,
        last_seen: Option<DateTime<Utc>>,
        custom_status: Option<CustomStatus>,
        now: DateTime<Utc>,
    ) -> Option<Self> {
        Self::restored_as(user_id.into(), last_seen, custom_status, now)
    }

    fn restored_as(
        user_id: Arc<str>,
        last_seen: Option<DateTime<Utc>>,
        custom_status: Option<CustomStatus>,
        now: DateTime<Utc>,
    ) -> Option<Self> {
        let mut u = UserState::with_id(user_id);
        u.last_seen = last_seen;
        u.custom_status = custom_status.filter(|c| !c.is_empty() && !c.expired(now)).map(Box::new);
        u.published = Published::of(&u.current());
        (!u.removable()).then_some(u)
    }

    pub fn user_id(&self) -> &str {
        &self.user_id
    }

    fn socket_index(&self, id: &str) -> Result<usize, usize> {
        self.sockets.binary_search_by(|(k, _)| (**k).cmp(id))
    }

    fn socket_mut(&mut self, id: &str) -> Option<&mut SocketState> {
        let i = self.socket_index(id).ok()?;
        Some(&mut self.sockets[i].1)
    }

    fn socket_states(&self) -> impl Iterator<Item = &SocketState> {
        self.sockets.iter().map(|(_, s)| s)
    }

    /// Registers a device, or replaces its state. The vector grows by one place, not by doubling.
    fn set_socket(&mut self, id: &str, state: SocketState) {
        match self.socket_index(id) {
            Ok(i) => self.sockets[i].1 = state,
            Err(i) => {
                self.sockets.reserve_exact(1);
                self.sockets.insert(i, (id.into(), state));
            }
        }
    }

    fn remove_socket(&mut self, id: &str) -> Option<SocketState> {
        let i = self.socket_index(id).ok()?;
        let (_, gone) = self.sockets.remove(i);
        self.sockets.shrink_to_fit();
        Some(gone)
    }

    /// The live effective presence, including changes still inside the coalescing window.
    pub fn current(&self) -> Presence {
        let (status, appear_offline) =
            if let Some(best) = self.socket_states().map(SocketState::effective).max_by_key(|s| s.rank()) {
                match best.public() {
                    Some(p) => (p, false),
                    None => (PublicStatus::Offline, true),
                }
            } else if let Some(g) = &self.grace {
                (g.status, g.appear_offline)
            } else {
                (PublicStatus::Offline, false)
            };
        Presence {
            user_id: self.user_id.to_string(),
            status,
            appear_offline,
            custom_status: self.custom_status.as_deref().cloned(),
            last_seen: self.last_seen,
        }
    }

    /// The presence last published (what subscribers were told).
    pub fn published(&self) -> Presence {
        let p = &self.published;
        Presence {
            user_id: self.user_id.to_string(),
            status: p.status,
            appear_offline: p.appear_offline,
            custom_status: p.custom_status.as_deref().cloned(),
            last_seen: p.last_seen,
        }
    }

    /// The status last published.
    pub fn published_status(&self) -> PublicStatus {
        self.published.status
    }

    /// An answer to `viewer` about this user (`presence:get`, `presence:subscribe`, …): the live presence as
    /// `view` shows it. Inside a coalescing window that would announce something else than what is published,
    /// the view is remembered as what the viewer was told, and handed out with the window's close
    /// ([`PresenceEvent::Changed`] or [`PresenceEvent::Settled`]), so that viewer can be set right if the
    /// window ends on another state. True in the second place when it was remembered.
    pub fn answer(
        &mut self,
        viewer: Option<&str>,
        view: &(dyn Fn(&Presence) -> ViewedPresence + Send + Sync),
    ) -> (ViewedPresence, bool) {
        let live = self.current();
        let shown = view(&live);
        let remember = self.pending.is_some() && !self.published.same_publication(&live);
        match viewer {
            Some(v) if remember => {
                let changed = self.answers.get(v) != Some(&shown);
                self.answers.insert(v.to_string(), shown.clone());
                (shown, changed)
            }
            _ => (shown, false),
        }
    }

    /// A device is connected, or the offline grace runs.
    pub fn is_connected(&self) -> bool {
        !self.sockets.is_empty() || self.grace.is_some()
    }

    /// No device is connected and the offline grace runs.
    pub fn in_grace(&self) -> bool {
        self.sockets.is_empty() && self.grace.is_some()
    }

    /// The connected devices.
    pub fn devices(&self) -> impl Iterator<Item = &str> {
        self.sockets.iter().map(|(id, _)| &**id)
    }

    /// Whether `self` is `other` but for when devices were last active, each by less than `within` (what a
    /// heartbeat that changes nothing else moves).
    pub fn differs_only_in_activity(&self, other: &UserState, within: Duration) -> bool {
        let mut aligned = other.clone();
        for (id, s) in aligned.sockets.iter_mut() {
            if let Ok(i) = self.socket_index(id)
                && (self.sockets[i].1.last_active - s.last_active).abs() < within
            {
                s.last_active = self.sockets[i].1.last_active;
            }
        }
        aligned == *self
    }

    /// The status a new socket starts with.
    fn inherited_status(&self) -> Status {
        if let Some(s) = self.socket_states().map(|s| s.requested).max_by_key(|s| s.rank()) {
            return s;
        }
        self.grace.as_ref().map(|g| g.requested).unwrap_or(Status::Online)
    }

    fn note_change(&mut self, now: DateTime<Utc>, cfg: &PresenceConfig) {
        self.pending = Some(match self.pending {
            None => Pending { first: now, due: now + cfg.coalesce_window },
            Some(p) => {
                Pending { first: p.first, due: (now + cfg.coalesce_window).min(p.first + cfg.coalesce_max_delay) }
            }
        });
    }

    /// Record `lastSeen` when the user stops being visibly present.
    fn track_visibility(&mut self, before: &Presence, now: DateTime<Utc>) {
        let after = self.current();
        if before.is_visibly_online() && !after.is_visibly_online() {
            self.last_seen = Some(now);
        }
    }

    /// When [`UserState::tick`] next has work for this user, if ever.
    pub fn next_deadline(&self, cfg: &PresenceConfig) -> Option<DateTime<Utc>> {
        let idle = self
            .socket_states()
            .filter(|s| !s.idle && s.requested == Status::Online)
            .map(|s| s.last_active + cfg.idle_timeout)
            .min();
        let grace = self.grace.as_ref().filter(|_| self.sockets.is_empty()).map(|g| g.until);
        let custom = self.custom_status.as_ref().and_then(|c| c.expires_at);
        let pending = self.pending.map(|p| p.due);
        [idle, grace, custom, pending].into_iter().flatten().min()
    }

    /// Nothing left worth remembering: offline, published, no custom status.
    pub fn removable(&self) -> bool {
        self.sockets.is_empty() && self.grace.is_none() && self.pending.is_none() && self.custom_status.is_none()
    }

    /// Run `f`, schedule a coalesced broadcast when the effective presence changed.
    fn mutate<R>(&mut self, now: DateTime<Utc>, cfg: &PresenceConfig, f: impl FnOnce(&mut Self) -> R) -> (R, bool) {
        let before = self.current();
        let r = f(self);
        self.track_visibility(&before, now);
        let changed = self.current() != before;
        if changed {
            self.note_change(now, cfg);
        }
        (r, changed)
    }

    /// See [`PresenceTracker::connect`].
    pub fn connect(&mut self, socket_id: &str, now: DateTime<Utc>, cfg: &PresenceConfig) -> ConnectOutcome {
        let (new_session, _) = self.mutate(now, cfg, |u| {
            let new_session = u.sockets.is_empty() && u.grace.is_none();
            let requested = u.inherited_status();
            u.grace = None;
            u.set_socket(socket_id, SocketState { requested, last_active: now, idle: false });
            new_session
        });
        ConnectOutcome { new_session }
    }

    /// See [`PresenceTracker::disconnect`].
    pub fn disconnect(&mut self, socket_id: &str, now: DateTime<Utc>, cfg: &PresenceConfig) -> DisconnectOutcome {
        let grace = cfg.offline_grace;
        let (last_socket, _) = self.mutate(now, cfg, |u| {
            let before = u.current();
            let Some(gone) = u.remove_socket(socket_id) else {
                return false;
            };
            if !u.sockets.is_empty() {
                return false;
            }
            u.grace = Some(Box::new(Grace {
                since: now,
                until: now + grace,
                status: before.status,
                appear_offline: before.appear_offline,
                requested: gone.requested,
            }));
            true
        });
        DisconnectOutcome { last_socket }
    }

    /// See [`PresenceTracker::update`].
    pub fn update(
        &mut self,
        socket_id: &str,
        update: PresenceUpdate,
        now: DateTime<Utc>,
        cfg: &PresenceConfig,
    ) -> UpdateOutcome {
        let (_, changed) = self.mutate(now, cfg, |u| {
            u.grace = None;
            u.set_socket(socket_id, SocketState { requested: update.status, last_active: now, idle: false });
            u.custom_status = update.custom_status.filter(|c| !c.is_empty() && !c.expired(now)).map(Box::new);
        });
        if changed { UpdateOutcome::Changed } else { UpdateOutcome::Unchanged }
    }

    /// See [`PresenceTracker::touch`].
    pub fn touch(&mut self, socket_id: &str, now: DateTime<Utc>, cfg: &PresenceConfig) -> UpdateOutcome {
        let (_, changed) = self.mutate(now, cfg, |u| {
            if let Some(s) = u.socket_mut(socket_id) {
                s.last_active = now;
                s.idle = false;
            }
        });
        if changed { UpdateOutcome::Changed } else { UpdateOutcome::Unchanged }
    }

    /// Shutdown: ends the offline grace now, if it runs (see [`PresenceTracker::end_all_graces`]).
    pub fn end_grace(&mut self, account: &str) -> Option<PresenceEvent> {
        if !self.sockets.is_empty() {
            return None;
        }
        let g = self.grace.take()?;
        if g.status != PublicStatus::Offline {
            self.last_seen = Some(g.since);
        }
        Some(PresenceEvent::SessionEnded {
            account: account.to_string(),
            user_id: self.user_id.to_string(),
            last_seen: self.last_seen,
        })
    }

    /// Everything due for this user at `now`: idle devices, custom status expiry, the end of the grace and of
    /// the coalescing window. Returns what to publish. Harmless before the user's deadline (nothing is due).
    pub fn tick(&mut self, account: &str, now: DateTime<Utc>, cfg: &PresenceConfig) -> Vec<PresenceEvent> {
        let mut events = Vec::new();
        let before = self.current();

        for (_, s) in self.sockets.iter_mut() {
            if !s.idle && s.last_active + cfg.idle_timeout <= now {
                s.idle = true;
            }
        }
        if self.custom_status.as_ref().is_some_and(|c| c.expired(now)) {
            self.custom_status = None;
        }
        let mut session_ended = false;
        if self.sockets.is_empty() && self.grace.as_ref().is_some_and(|g| g.until <= now) {
            let g = self.grace.take().expect("checked");
            if g.status != PublicStatus::Offline {
                self.last_seen = Some(g.since);
            }
            session_ended = true;
            events.push(PresenceEvent::SessionEnded {
                account: account.to_string(),
                user_id: self.user_id.to_string(),
                last_seen: self.last_seen,
            });
        } else {
            self.track_visibility(&before, now);
        }

        if self.current() != before {
            self.note_change(now, cfg);
            if session_ended {
                // The grace already absorbed flicker: announce offline now.
                if let Some(p) = self.pending.as_mut() {
                    p.due = now;
                }
            }
        }
        if self.pending.is_some_and(|p| p.due <= now) {
            self.pending = None;
            let current = self.current();
            let visible_change = !self.published.same_publication(&current);
            let previous = self.published();
            self.published = Published::of(&current);
            let answers: Vec<(String, ViewedPresence)> = std::mem::take(&mut self.answers).into_iter().collect();
            let account = account.to_string();
            if visible_change {
                events.push(PresenceEvent::Changed { account, previous, current, answers });
            } else if !answers.is_empty() {
                events.push(PresenceEvent::Settled { account, current, answers });
            }
        }
        events
    }
}

#[derive(Debug)]
struct Tracked {
    state: UserState,
    /// This user's entry in the deadline queue.
    scheduled: Option<DateTime<Utc>>,
}

/// Live presence of every connected user, per account. Not synchronised: the glue keeps it
/// behind a mutex (or one per account shard).
#[derive(Debug, Default)]
pub struct PresenceTracker {
    cfg: PresenceConfig,
    /// account → user → their state. Two levels, so a lookup by name allocates nothing and an account's name
    /// is kept once; the user's name is the state's own (shared). Boxed: the tables' spare slots stay small.
    users: HashMap<Arc<str>, HashMap<Arc<str>, Box<Tracked>>>,
    /// `(deadline, account, user)`, the names shared with `users`.
    queue: BTreeSet<(DateTime<Utc>, Arc<str>, Arc<str>)>,
}

impl PresenceTracker {
    pub fn new(cfg: PresenceConfig) -> Self {
        PresenceTracker { cfg, ..Default::default() }
    }

    pub fn config(&self) -> PresenceConfig {
        self.cfg
    }

    fn tracked(&self, account: &str, user_id: &str) -> Option<&Tracked> {
        self.users.get(account)?.get(user_id).map(|t| &**t)
    }

    fn tracked_mut(&mut self, account: &str, user_id: &str) -> Option<&mut Tracked> {
        self.users.get_mut(account)?.get_mut(user_id).map(|t| &mut **t)
    }

    /// The account's name as the tracker keeps it, its table created when missing.
    fn account_users(&mut self, account: &str) -> &mut HashMap<Arc<str>, Box<Tracked>> {
        if !self.users.contains_key(account) {
            self.users.insert(account.into(), HashMap::new());
        }
        self.users.get_mut(account).expect("inserted")
    }

    fn insert(&mut self, account: &str, state: UserState) {
        let id = state.user_id.clone();
        self.account_users(account).insert(id, Box::new(Tracked { state, scheduled: None }));
    }

    /// Forgets a user; a table left much larger than its users (after a wave of disconnects) is shrunk.
    fn remove(&mut self, account: &str, user_id: &str) {
        let Some(users) = self.users.get_mut(account) else { return };
        users.remove(user_id);
        if users.is_empty() {
            self.users.remove(account);
        } else if users.capacity() > 64 && users.len() < users.capacity() / 4 {
            users.shrink_to_fit();
        }
    }

    fn reschedule(&mut self, account: &str, user_id: &str) {
        let cfg = self.cfg;
        let Some(acc) = self.users.get_key_value(account).map(|(a, _)| a.clone()) else { return };
        let Some(u) = self.tracked_mut(account, user_id) else { return };
        let next = u.state.next_deadline(&cfg);
        if next == u.scheduled {
            return;
        }
        let old = std::mem::replace(&mut u.scheduled, next);
        let user = u.state.user_id.clone();
        if let Some(old) = old {
            self.queue.remove(&(old, acc.clone(), user.clone()));
        }
        if let Some(t) = next {
            self.queue.insert((t, acc, user));
        }
    }

    /// Run `f` on the user's state (created when `create`, else skipped when unknown) and re-arm the user's
    /// deadline.
    fn with_user<R>(
        &mut self,
        account: &str,
        user_id: &str,
        create: bool,
        f: impl FnOnce(&mut UserState, &PresenceConfig) -> R,
    ) -> Option<R> {
        let cfg = self.cfg;
        if create && self.tracked(account, user_id).is_none() {
            self.insert(account, UserState::new(user_id));
        }
        let u = self.tracked_mut(account, user_id)?;
        let r = f(&mut u.state, &cfg);
        self.reschedule(account, user_id);
        Some(r)
    }

    /// A socket of the user connected. It counts as `online` (or inherits the user's chosen
    /// status) until the client says otherwise.
    pub fn connect(&mut self, account: &str, user_id: &str, socket_id: &str, now: DateTime<Utc>) -> ConnectOutcome {
        self.with_user(account, user_id, true, |u, cfg| u.connect(socket_id, now, cfg)).expect("created")
    }

    /// A socket closed. The last one starts the offline grace; nothing is announced yet.
    pub fn disconnect(
        &mut self,
        account: &str,
        user_id: &str,
        socket_id: &str,
        now: DateTime<Utc>,
    ) -> DisconnectOutcome {
        self.with_user(account, user_id, false, |u, cfg| u.disconnect(socket_id, now, cfg))
            .unwrap_or(DisconnectOutcome { last_socket: false })
    }

    /// `presence:update` from a socket. Re-sending the same state is a heartbeat: it refreshes
    /// liveness and returns [`UpdateOutcome::Unchanged`]. A socket not yet registered is
    /// registered implicitly.
    pub fn update(
        &mut self,
        account: &str,
        user_id: &str,
        socket_id: &str,
        update: PresenceUpdate,
        now: DateTime<Utc>,
    ) -> UpdateOutcome {
        self.with_user(account, user_id, true, |u, cfg| u.update(socket_id, update, now, cfg)).expect("created")
    }

    /// Any other activity of a socket (a message, a typing event): refreshes liveness, so an
    /// idle (`away`) device becomes `online` again.
    pub fn touch(&mut self, account: &str, user_id: &str, socket_id: &str, now: DateTime<Utc>) -> UpdateOutcome {
        self.with_user(account, user_id, false, |u, cfg| u.touch(socket_id, now, cfg))
            .unwrap_or(UpdateOutcome::Unchanged)
    }

    /// Fill in what the database knows about a user this process has not seen yet
    /// (`lastSeen`, a custom status), without announcing anything.
    pub fn restore(
        &mut self,
        account: &str,
        user_id: &str,
        last_seen: Option<DateTime<Utc>>,
        custom_status: Option<CustomStatus>,
        now: DateTime<Utc>,
    ) {
        if self.tracked(account, user_id).is_some() {
            return;
        }
        // Nothing to keep in memory beyond what the database has when it yields no state.
        if let Some(state) = UserState::restored_as(user_id.into(), last_seen, custom_status, now) {
            self.insert(account, state);
            self.reschedule(account, user_id);
        }
    }

    /// Shutdown: ends every offline grace at once, since the process will not be there when they expire.
    /// The sessions end as they would have (`lastSeen` is when the last socket closed, unless the user was
    /// appearing offline); nothing is published.
    pub fn end_all_graces(&mut self) -> Vec<PresenceEvent> {
        let mut out = Vec::new();
        for (account, users) in self.users.iter_mut() {
            for u in users.values_mut() {
                out.extend(u.state.end_grace(account));
            }
        }
        out
    }

    /// The connected devices of every user: `(account, user, device)`.
    pub fn devices(&self) -> Vec<(String, String, String)> {
        self.users
            .iter()
            .flat_map(|(a, users)| users.iter().map(move |(u, t)| (a, u, t)))
            .flat_map(|(a, u, t)| t.state.devices().map(move |d| (a.to_string(), u.to_string(), d.to_string())))
            .collect()
    }

    /// Process everything due at `now`: idle sockets, custom status expiry, grace expiry,
    /// and the end of coalescing windows. Returns what to publish.
    pub fn tick(&mut self, now: DateTime<Utc>) -> Vec<PresenceEvent> {
        let mut due = Vec::new();
        while self.queue.first().is_some_and(|(t, _, _)| *t <= now) {
            let (_, account, user) = self.queue.pop_first().expect("non-empty");
            if let Some(u) = self.tracked_mut(&account, &user) {
                u.scheduled = None;
            }
            due.push((account, user));
        }
        let cfg = self.cfg;
        let mut events = Vec::new();
        for (account, user) in due {
            let Some(u) = self.tracked_mut(&account, &user) else {
                continue;
            };
            events.extend(u.state.tick(&account, now, &cfg));
            if u.state.removable() {
                self.remove(&account, &user);
            } else {
                self.reschedule(&account, &user);
            }
        }
        events
    }

    /// When [`PresenceTracker::tick`] next has work, if ever.
    pub fn next_deadline(&self) -> Option<DateTime<Utc>> {
        self.queue.first().map(|(t, _, _)| *t)
    }

    /// The last published presence (what subscribers were told), for `presence:get` /
    /// `presence:subscribe`. `None`: this process knows nothing, use the database row
    /// (`Presence::offline(user, lastSeen)`).
    pub fn get(&self, account: &str, user_id: &str) -> Option<Presence> {
        self.tracked(account, user_id).map(|u| u.state.published())
    }

    /// Whether this process keeps any state of the user.
    pub fn knows(&self, account: &str, user_id: &str) -> bool {
        self.tracked(account, user_id).is_some()
    }

    /// The live effective presence, including changes still inside the coalescing window.
    pub fn current(&self, account: &str, user_id: &str) -> Option<Presence> {
        self.tracked(account, user_id).map(|u| u.state.current())
    }

    /// An answer about a tracked user (see [`UserState::answer`]); None when the user is not tracked.
    pub fn answer(
        &mut self,
        account: &str,
        user_id: &str,
        viewer: Option<&str>,
        view: &(dyn Fn(&Presence) -> ViewedPresence + Send + Sync),
    ) -> Option<ViewedPresence> {
        self.tracked_mut(account, user_id).map(|u| u.state.answer(viewer, view).0)
    }

    /// Whether the user has a live socket or is inside the offline grace.
    pub fn is_connected(&self, account: &str, user_id: &str) -> bool {
        self.tracked(account, user_id).is_some_and(|u| u.state.is_connected())
    }

    /// Connected users of an account by published status, for `/api/stats`.
    pub fn breakdown(&self, account: &str) -> StatusBreakdown {
        let mut b = StatusBreakdown::default();
        for u in self.users.get(account).into_iter().flat_map(HashMap::values) {
            if u.state.is_connected() {
                b.add(u.state.published_status());
            }
        }
        b
    }
}

/// Presence breakdown of connected users (appearing-offline users count as `offline`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct StatusBreakdown {
    pub online: usize,
    pub away: usize,
    pub busy: usize,
    pub offline: usize,
}

impl StatusBreakdown {
    /// Counts one connected user with this published status.
    pub fn add(&mut self, status: PublicStatus) {
        match status {
            PublicStatus::Online => self.online += 1,
            PublicStatus::Away => self.away += 1,
            PublicStatus::Busy => self.busy += 1,
            PublicStatus::Offline => self.offline += 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(v: &impl Serialize) -> String {
        serde_json::to_string(v).unwrap()
    }

    const A: &str = "primary";

    fn t(ms: i64) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(1_700_000_000_000 + ms).unwrap()
    }

    fn upd(status: Status) -> PresenceUpdate {
        PresenceUpdate { status, custom_status: None }
    }

    fn tracker() -> PresenceTracker {
        PresenceTracker::new(PresenceConfig::default())
    }

    fn changes(events: &[PresenceEvent]) -> Vec<(PublicStatus, PublicStatus)> {
        events
            .iter()
            .filter_map(|e| match e {
                PresenceEvent::Changed { previous, current, .. } => Some((previous.status, current.status)),
                _ => None,
            })
            .collect()
    }

    /// Run ticks at every deadline up to `until`, collecting events.
    fn run_until(p: &mut PresenceTracker, until: DateTime<Utc>) -> Vec<PresenceEvent> {
        let mut out = Vec::new();
        while let Some(d) = p.next_deadline() {
            if d > until {
                break;
            }
            out.extend(p.tick(d));
        }
        out
    }

    fn online_presence() -> Presence {
        Presence {
            user_id: "u".into(),
            status: PublicStatus::Online,
            appear_offline: false,
            custom_status: Some(CustomStatus {
                text: Some("Lunch".into()),
                emoji: Some("🍕".into()),
                expires_at: None,
            }),
            last_seen: Some(t(-60_000)),
        }
    }

    fn offline_presence() -> Presence {
        Presence { status: PublicStatus::Offline, ..online_presence() }
    }

    // ----- privacy table ---------------------------------------------------------------------

    fn assert_hidden(v: &ViewedPresence) {
        assert_eq!(v.status, PublicStatus::Offline);
        assert_eq!(v.last_seen, None);
        assert_eq!(v.custom_status, None);
    }

    #[test]
    fn privacy_default_settings_show_everything_to_everyone() {
        let s = PrivacySettings::default();
        for contact in [true, false] {
            let v = view_for(contact, &online_presence(), &s);
            assert_eq!(v.status, PublicStatus::Online);
            assert_eq!(v.custom_status.as_ref().unwrap().text.as_deref(), Some("Lunch"));
            assert_eq!(v.last_seen, None, "no lastSeen while online");
            let v = view_for(contact, &offline_presence(), &s);
            assert_eq!(v.status, PublicStatus::Offline);
            assert_eq!(v.last_seen, Some(t(-60_000)));
        }
    }

    #[test]
    fn privacy_invisible_mode_row() {
        let s = PrivacySettings { invisible_mode: true, ..Default::default() };
        for contact in [true, false] {
            assert_hidden(&view_for(contact, &online_presence(), &s));
            assert_hidden(&view_for(contact, &offline_presence(), &s));
        }
    }

    #[test]
    fn privacy_visibility_nobody_row() {
        let s = PrivacySettings { visibility: Visibility::Nobody, ..Default::default() };
        for contact in [true, false] {
            assert_hidden(&view_for(contact, &online_presence(), &s));
            assert_hidden(&view_for(contact, &offline_presence(), &s));
        }
    }

    #[test]
    fn privacy_visibility_contacts_row() {
        let s = PrivacySettings { visibility: Visibility::Contacts, ..Default::default() };
        let v = view_for(true, &online_presence(), &s);
        assert_eq!(v.status, PublicStatus::Online);
        assert!(v.custom_status.is_some());
        let v = view_for(true, &offline_presence(), &s);
        assert_eq!(v.last_seen, Some(t(-60_000)));
        assert_hidden(&view_for(false, &online_presence(), &s));
        assert_hidden(&view_for(false, &offline_presence(), &s));
    }

    #[test]
    fn privacy_show_online_status_false_row() {
        let s = PrivacySettings { show_online_status: false, ..Default::default() };
        for contact in [true, false] {
            let v = view_for(contact, &online_presence(), &s);
            assert_eq!(v.status, PublicStatus::Offline);
            assert_eq!(v.custom_status, None);
            assert_eq!(v.last_seen, Some(t(-60_000)), "lastSeen still governed by showLastSeen");
        }
        let s = PrivacySettings { show_online_status: false, show_last_seen: false, ..Default::default() };
        for contact in [true, false] {
            assert_hidden(&view_for(contact, &online_presence(), &s));
        }
    }

    #[test]
    fn privacy_show_last_seen_false_row() {
        let s = PrivacySettings { show_last_seen: false, ..Default::default() };
        for contact in [true, false] {
            let v = view_for(contact, &offline_presence(), &s);
            assert_eq!(v.status, PublicStatus::Offline);
            assert_eq!(v.last_seen, None);
            let v = view_for(contact, &online_presence(), &s);
            assert_eq!(v.status, PublicStatus::Online, "status is unaffected");
        }
    }

    #[test]
    fn privacy_allow_read_receipts_does_not_affect_presence() {
        let s = PrivacySettings { allow_read_receipts: false, ..Default::default() };
        for contact in [true, false] {
            assert_eq!(
                view_for(contact, &online_presence(), &s),
                view_for(contact, &online_presence(), &PrivacySettings::default())
            );
        }
    }

    #[test]
    fn appear_offline_hides_custom_status_and_owner_sees_everything() {
        let p = Presence { status: PublicStatus::Offline, appear_offline: true, ..online_presence() };
        let s = PrivacySettings::default();
        let v = view_for(true, &p, &s);
        assert_eq!((v.status, v.custom_status.clone()), (PublicStatus::Offline, None));
        let s = PrivacySettings { invisible_mode: true, visibility: Visibility::Nobody, ..Default::default() };
        let own = view_as(Viewer::Owner, &online_presence(), &s);
        assert_eq!(own.status, PublicStatus::Online);
        assert!(own.custom_status.is_some());
    }

    #[test]
    fn viewed_presence_serializes_per_contract() {
        let v = view_for(false, &online_presence(), &PrivacySettings::default());
        assert_eq!(json(&v), r#"{"userId":"u","status":"online","customStatus":{"text":"Lunch","emoji":"🍕"}}"#);
        let mut p = offline_presence();
        p.custom_status = Some(CustomStatus { text: Some("Away".into()), emoji: None, expires_at: None });
        let v = view_for(false, &p, &PrivacySettings::default());
        assert_eq!(
            json(&v),
            r#"{"userId":"u","status":"offline","customStatus":{"text":"Away","emoji":null},"lastSeen":"2023-11-14T22:12:20.000Z"}"#
        );
        let v = view_for(false, &online_presence(), &PrivacySettings { invisible_mode: true, ..Default::default() });
        assert_eq!(json(&v), r#"{"userId":"u","status":"offline"}"#);
        let busy = Presence { status: PublicStatus::Busy, ..online_presence() };
        assert!(json(&view_for(true, &busy, &PrivacySettings::default())).contains(r#""status":"busy""#));
    }

    #[test]
    fn grouping_encodes_once_per_distinct_view() {
        let viewers = vec![
            ("c1", Viewer::Contact),
            ("o1", Viewer::Other),
            ("c2", Viewer::Contact),
            ("me", Viewer::Owner),
            ("o2", Viewer::Other),
        ];
        // Everyone sees the same: owner, contacts and others share one group.
        let g = group_viewers(&online_presence(), &PrivacySettings::default(), viewers.clone());
        assert_eq!(g.len(), 1);
        assert_eq!(g[0].viewers, vec!["c1", "o1", "c2", "me", "o2"]);
        // Contacts-only: contacts + owner see the truth, others see offline.
        let s = PrivacySettings { visibility: Visibility::Contacts, ..Default::default() };
        let g = group_viewers(&online_presence(), &s, viewers.clone());
        assert_eq!(g.len(), 2);
        assert_eq!(g[0].viewers, vec!["c1", "c2", "me"]);
        assert_eq!(g[0].view.status, PublicStatus::Online);
        assert_eq!(g[1].viewers, vec!["o1", "o2"]);
        assert_eq!(g[1].view.status, PublicStatus::Offline);
        // Invisible: owner alone sees the truth.
        let s = PrivacySettings { invisible_mode: true, ..Default::default() };
        let g = group_viewers(&online_presence(), &s, viewers);
        assert_eq!(g.len(), 2);
        assert_eq!(g[1].viewers, vec!["me"]);
        assert!(group_viewers::<&str>(&online_presence(), &s, vec![]).is_empty());
    }

    #[test]
    fn privacy_change_reaches_only_viewers_whose_view_changed() {
        let p = online_presence();
        let before = PrivacySettings::default();
        let after = PrivacySettings { visibility: Visibility::Contacts, ..Default::default() };
        let viewers = vec![("c", Viewer::Contact), ("o", Viewer::Other), ("me", Viewer::Owner)];
        let g = changed_views((&p, &before), (&p, &after), viewers.clone());
        assert_eq!(g.len(), 1);
        assert_eq!(g[0].viewers, vec!["o"]);
        assert_eq!(g[0].view.status, PublicStatus::Offline);
        // And back: the non-contact sees the real status again.
        let g = changed_views((&p, &after), (&p, &before), viewers.clone());
        assert_eq!(g[0].viewers, vec!["o"]);
        assert_eq!(g[0].view.status, PublicStatus::Online);
        // A presence change hidden from strangers does not reach them.
        let away = Presence { status: PublicStatus::Away, ..p.clone() };
        let g = changed_views((&p, &after), (&away, &after), viewers);
        assert_eq!(g.len(), 1);
        assert_eq!(g[0].viewers, vec!["c", "me"]);
    }

    #[test]
    fn settings_patch_merges() {
        let patch: PrivacySettingsPatch =
            serde_json::from_str(r#"{"visibility": "contacts", "showLastSeen": false}"#).unwrap();
        let s = PrivacySettings::default().merged(&patch);
        assert_eq!(s.visibility, Visibility::Contacts);
        assert!(!s.show_last_seen);
        assert!(s.show_online_status && s.allow_read_receipts && !s.invisible_mode);
        assert_eq!(
            json(&s),
            r#"{"visibility":"contacts","showOnlineStatus":true,"showLastSeen":false,"allowReadReceipts":true,"invisibleMode":false}"#
        );
        assert!(serde_json::from_str::<PrivacySettingsPatch>(r#"{"visibility": "all"}"#).is_err());
    }

    #[test]
    fn visibility_words_round_trip_and_others_are_refused() {
        for v in [Visibility::Everyone, Visibility::Contacts, Visibility::Nobody] {
            assert_eq!(Visibility::parse(v.as_str()), Some(v));
            assert_eq!(json(&v), format!("\"{}\"", v.as_str()), "the wire word and as_str agree");
        }
        assert_eq!(Visibility::parse("all"), None);
        assert_eq!(Visibility::parse("Everyone"), None, "case-sensitive like the wire");
    }

    #[test]
    fn every_patched_setting_is_taken_and_omitted_ones_kept() {
        let off = PrivacySettings {
            visibility: Visibility::Nobody,
            show_online_status: false,
            show_last_seen: false,
            allow_read_receipts: false,
            invisible_mode: true,
        };
        let patch = PrivacySettingsPatch {
            visibility: Some(Visibility::Everyone),
            show_online_status: Some(true),
            show_last_seen: Some(true),
            allow_read_receipts: Some(true),
            invisible_mode: Some(false),
        };
        assert_eq!(off.merged(&patch), PrivacySettings::default());
        assert_eq!(off.merged(&PrivacySettingsPatch::default()), off);
    }

    // ----- bounds ----------------------------------------------------------------------------

    #[test]
    fn update_is_bounded_and_blank_means_absent() {
        assert_eq!(PresenceUpdate::new(Status::Busy, None, None, None).unwrap(), upd(Status::Busy));
        let u = PresenceUpdate::new(Status::Online, Some(" brb "), Some("☕"), Some(t(0))).unwrap();
        let cs = u.custom_status.unwrap();
        assert_eq!((cs.text.as_deref(), cs.emoji.as_deref(), cs.expires_at), (Some("brb"), Some("☕"), Some(t(0))));
        let u = PresenceUpdate::new(Status::Online, Some(" "), None, Some(t(0))).unwrap();
        assert_eq!(u.custom_status, None, "empty custom status is no custom status");
        assert_eq!(
            PresenceUpdate::new(Status::Online, Some(&"x".repeat(257)), None, None).unwrap_err(),
            PresenceError::TooLarge("customStatus.text".into())
        );
        assert!(PresenceUpdate::new(Status::Online, Some(&"é".repeat(256)), None, None).is_ok(), "counted in chars");
        assert_eq!(
            PresenceUpdate::new(Status::Online, None, Some(&"x".repeat(65)), None).unwrap_err(),
            PresenceError::TooLarge("customStatus.emoji".into())
        );
    }

    // ----- tracker ---------------------------------------------------------------------------

    #[test]
    fn connect_is_announced_after_the_coalescing_window() {
        let mut p = tracker();
        assert!(p.connect(A, "u", "s1", t(0)).new_session);
        assert_eq!(p.get(A, "u").unwrap().status, PublicStatus::Offline, "not yet published");
        assert_eq!(p.current(A, "u").unwrap().status, PublicStatus::Online);
        assert_eq!(p.next_deadline(), Some(t(400)));
        assert!(p.tick(t(399)).is_empty());
        let ev = p.tick(t(400));
        assert_eq!(changes(&ev), vec![(PublicStatus::Offline, PublicStatus::Online)]);
        assert_eq!(p.get(A, "u").unwrap().status, PublicStatus::Online);
        assert_eq!(p.breakdown(A), StatusBreakdown { online: 1, ..Default::default() });
        assert_eq!(p.breakdown("other"), StatusBreakdown::default());
    }

    #[test]
    fn nchat_connect_flicker_produces_one_online_broadcast() {
        // Connect, then nchat's {status:"offline"} and {status:"online"} a moment later.
        let mut p = tracker();
        p.connect(A, "u", "s1", t(0));
        p.update(A, "u", "s1", upd(Status::Offline), t(50));
        p.update(A, "u", "s1", upd(Status::Online), t(300));
        let ev = run_until(&mut p, t(10_000));
        assert_eq!(changes(&ev), vec![(PublicStatus::Offline, PublicStatus::Online)]);
    }

    #[test]
    fn flicker_while_online_produces_no_broadcast() {
        let mut p = tracker();
        p.connect(A, "u", "s1", t(0));
        run_until(&mut p, t(1000));
        assert_eq!(p.update(A, "u", "s1", upd(Status::Offline), t(5000)), UpdateOutcome::Changed);
        assert_eq!(p.update(A, "u", "s1", upd(Status::Online), t(5200)), UpdateOutcome::Changed);
        let ev = run_until(&mut p, t(20_000));
        assert!(changes(&ev).is_empty(), "{ev:?}");
        // Same for a quick reconnect (socket closes and a new one opens within the grace).
        p.disconnect(A, "u", "s1", t(30_000));
        let c = p.connect(A, "u", "s2", t(31_000));
        assert!(!c.new_session);
        assert!(run_until(&mut p, t(60_000)).is_empty());
    }

    #[test]
    fn coalescing_merges_a_burst_and_is_capped() {
        let mut p = tracker();
        p.connect(A, "u", "s1", t(0));
        run_until(&mut p, t(1000));
        // Changes every 300 ms keep extending the window, up to the 2 s cap.
        let statuses = [
            Status::Away,
            Status::Busy,
            Status::Away,
            Status::Busy,
            Status::Away,
            Status::Busy,
            Status::Away,
            Status::Busy,
        ];
        let mut evs = Vec::new();
        for (i, s) in statuses.iter().enumerate() {
            let now = t(2000 + 300 * i as i64);
            evs.extend(run_until(&mut p, now));
            p.update(A, "u", "s1", upd(*s), now);
        }
        evs.extend(run_until(&mut p, t(10_000)));
        let ch = changes(&evs);
        assert_eq!(ch.len(), 2, "{ch:?}");
        assert_eq!(ch[0].0, PublicStatus::Online);
        assert_eq!(ch[1].1, PublicStatus::Busy);
    }

    #[test]
    fn heartbeat_produces_no_change() {
        let mut p = tracker();
        let cs = CustomStatus { text: Some("Focus".into()), emoji: None, expires_at: None };
        p.connect(A, "u", "s1", t(0));
        let first = PresenceUpdate { status: Status::Busy, custom_status: Some(cs.clone()) };
        assert_eq!(p.update(A, "u", "s1", first.clone(), t(10)), UpdateOutcome::Changed);
        run_until(&mut p, t(1000));
        for i in 1..=10 {
            let now = t(i * 30_000);
            assert_eq!(p.update(A, "u", "s1", first.clone(), now), UpdateOutcome::Unchanged);
            assert!(run_until(&mut p, now).is_empty());
        }
        // dnd is busy: still a heartbeat.
        let dnd = PresenceUpdate::new(Status::parse("dnd").unwrap(), Some("Focus"), None, None).unwrap();
        assert_eq!(p.update(A, "u", "s1", dnd, t(330_000)), UpdateOutcome::Unchanged);
    }

    #[test]
    fn heartbeat_keeps_socket_from_going_idle_and_idle_means_away() {
        let mut p = PresenceTracker::new(PresenceConfig::from_millis(10_000, 90_000, 400));
        p.connect(A, "u", "s1", t(0));
        run_until(&mut p, t(1000));
        for i in 1..=5 {
            p.update(A, "u", "s1", upd(Status::Online), t(i * 30_000));
            assert!(run_until(&mut p, t(i * 30_000)).is_empty());
        }
        // Last heartbeat at 150 s: away at 240 s.
        assert!(run_until(&mut p, t(239_999)).is_empty());
        let ev = run_until(&mut p, t(241_000));
        assert_eq!(changes(&ev), vec![(PublicStatus::Online, PublicStatus::Away)]);
        // A heartbeat brings it back.
        assert_eq!(p.update(A, "u", "s1", upd(Status::Online), t(250_000)), UpdateOutcome::Changed);
        assert_eq!(changes(&run_until(&mut p, t(251_000))), vec![(PublicStatus::Away, PublicStatus::Online)]);
        // Other activity does too.
        run_until(&mut p, t(400_000));
        assert_eq!(p.current(A, "u").unwrap().status, PublicStatus::Away);
        assert_eq!(p.touch(A, "u", "s1", t(400_000)), UpdateOutcome::Changed);
        assert_eq!(p.current(A, "u").unwrap().status, PublicStatus::Online);
    }

    #[test]
    fn multi_device_most_available_wins() {
        let mut p = tracker();
        p.connect(A, "u", "desk", t(0));
        p.connect(A, "u", "phone", t(0));
        p.update(A, "u", "desk", upd(Status::Busy), t(10));
        p.update(A, "u", "phone", upd(Status::Away), t(10));
        assert_eq!(p.current(A, "u").unwrap().status, PublicStatus::Away);
        p.update(A, "u", "phone", upd(Status::Online), t(20));
        assert_eq!(p.current(A, "u").unwrap().status, PublicStatus::Online);
        // A device appearing offline does not hide the other, online one.
        p.update(A, "u", "phone", upd(Status::Invisible), t(30));
        assert_eq!(p.current(A, "u").unwrap().status, PublicStatus::Busy);
        // When all live devices appear offline, the user appears offline.
        p.update(A, "u", "desk", upd(Status::Offline), t(40));
        let cur = p.current(A, "u").unwrap();
        assert_eq!((cur.status, cur.appear_offline), (PublicStatus::Offline, true));
        // Closing one device keeps the user connected (no grace, no session end).
        assert!(!p.disconnect(A, "u", "phone", t(50)).last_socket);
        assert!(p.disconnect(A, "u", "desk", t(60)).last_socket);
        assert!(p.is_connected(A, "u"), "inside the grace");
        let ev = run_until(&mut p, t(100_000));
        assert!(ev.iter().any(|e| matches!(e, PresenceEvent::SessionEnded { .. })));
        assert!(!p.is_connected(A, "u"));
    }

    #[test]
    fn idle_device_counts_as_away_but_other_device_online_wins() {
        let mut p = PresenceTracker::new(PresenceConfig::from_millis(10_000, 60_000, 400));
        p.connect(A, "u", "desk", t(0));
        p.connect(A, "u", "phone", t(0));
        run_until(&mut p, t(1000));
        for i in 1..=4 {
            p.update(A, "u", "phone", upd(Status::Online), t(i * 30_000));
        }
        let ev = run_until(&mut p, t(150_000));
        assert!(changes(&ev).is_empty(), "phone keeps the user online: {ev:?}");
        let ev = run_until(&mut p, t(200_000));
        assert_eq!(changes(&ev), vec![(PublicStatus::Online, PublicStatus::Away)]);
    }

    #[test]
    fn shutdown_ends_every_grace_with_its_last_seen() {
        let mut p = PresenceTracker::new(PresenceConfig::from_millis(10_000, 300_000, 400));
        p.connect(A, "seen", "s1", t(0));
        p.connect(A, "flash", "s2", t(900));
        p.connect(A, "stays", "s3", t(0));
        run_until(&mut p, t(1000));
        p.disconnect(A, "seen", "s1", t(2000));
        p.disconnect(A, "flash", "s2", t(1100));
        let mut ended: Vec<(String, Option<DateTime<Utc>>)> = p
            .end_all_graces()
            .into_iter()
            .filter_map(|e| match e {
                PresenceEvent::SessionEnded { user_id, last_seen, .. } => Some((user_id, last_seen)),
                _ => None,
            })
            .collect();
        ended.sort();
        assert_eq!(ended, vec![("flash".to_string(), Some(t(1100))), ("seen".to_string(), Some(t(2000)))]);
        assert!(p.is_connected(A, "stays"), "a user with a socket left is not ended");
        assert!(p.end_all_graces().is_empty(), "graces end once");
    }

    #[test]
    fn offline_only_after_grace_and_last_seen_recorded() {
        let mut p = PresenceTracker::new(PresenceConfig::from_millis(10_000, 300_000, 400));
        p.connect(A, "u", "s1", t(0));
        run_until(&mut p, t(1000));
        let d = p.disconnect(A, "u", "s1", t(5000));
        assert!(d.last_socket);
        assert_eq!(p.current(A, "u").unwrap().status, PublicStatus::Online, "still online during grace");
        assert!(run_until(&mut p, t(14_999)).is_empty());
        let ev = p.tick(t(15_000));
        assert_eq!(
            ev[0],
            PresenceEvent::SessionEnded { account: A.into(), user_id: "u".into(), last_seen: Some(t(5000)) }
        );
        assert_eq!(changes(&ev), vec![(PublicStatus::Online, PublicStatus::Offline)]);
        if let PresenceEvent::Changed { current, .. } = &ev[1] {
            assert_eq!(current.last_seen, Some(t(5000)), "lastSeen = when the last socket closed");
            assert_eq!(view_for(false, current, &PrivacySettings::default()).last_seen, Some(t(5000)));
        }
        // Nothing left in memory: the database has it.
        assert!(p.get(A, "u").is_none());
        assert_eq!(p.next_deadline(), None);
        // A later connection is a new session.
        assert!(p.connect(A, "u", "s2", t(20_000)).new_session);
    }

    #[test]
    fn reconnect_within_grace_keeps_status_and_session() {
        let mut p = tracker();
        p.connect(A, "u", "s1", t(0));
        p.update(A, "u", "s1", upd(Status::Busy), t(10));
        run_until(&mut p, t(1000));
        p.disconnect(A, "u", "s1", t(2000));
        let c = p.connect(A, "u", "s2", t(4000));
        assert!(!c.new_session);
        assert_eq!(p.current(A, "u").unwrap().status, PublicStatus::Busy, "new socket inherits busy");
        let ev = run_until(&mut p, t(60_000));
        assert!(ev.is_empty(), "{ev:?}");
    }

    #[test]
    fn zero_grace_goes_offline_at_next_tick() {
        let mut p = PresenceTracker::new(PresenceConfig::from_millis(0, 90_000, 400));
        p.connect(A, "u", "s1", t(0));
        run_until(&mut p, t(1000));
        p.disconnect(A, "u", "s1", t(2000));
        assert_eq!(p.next_deadline(), Some(t(2000)));
        let ev = p.tick(t(2000));
        assert_eq!(changes(&ev), vec![(PublicStatus::Online, PublicStatus::Offline)]);
    }

    #[test]
    fn appear_offline_records_last_seen_and_leaving_invisible_does_not_move_it() {
        let mut p = tracker();
        p.connect(A, "u", "s1", t(0));
        run_until(&mut p, t(1000));
        p.update(A, "u", "s1", upd(Status::Invisible), t(2000));
        let ev = run_until(&mut p, t(3000));
        assert_eq!(changes(&ev), vec![(PublicStatus::Online, PublicStatus::Offline)]);
        let PresenceEvent::Changed { current, .. } = &ev[0] else { panic!() };
        assert!(current.appear_offline);
        assert_eq!(current.last_seen, Some(t(2000)));
        p.disconnect(A, "u", "s1", t(50_000));
        let ev = run_until(&mut p, t(100_000));
        assert_eq!(
            ev[0],
            PresenceEvent::SessionEnded { account: A.into(), user_id: "u".into(), last_seen: Some(t(2000)) }
        );
        // Others already saw offline: whatever is republished looks the same to every viewer.
        for e in &ev[1..] {
            let PresenceEvent::Changed { previous, current, .. } = e else { panic!() };
            let s = PrivacySettings::default();
            let viewers = [("c", Viewer::Contact), ("o", Viewer::Other), ("me", Viewer::Owner)];
            assert!(changed_views((previous, &s), (current, &s), viewers).is_empty());
        }
    }

    #[test]
    fn custom_status_expiry_and_clearing() {
        let mut p = tracker();
        p.connect(A, "u", "s1", t(0));
        let cs = CustomStatus { text: Some("Lunch".into()), emoji: Some("🍕".into()), expires_at: Some(t(60_000)) };
        p.update(A, "u", "s1", PresenceUpdate { status: Status::Online, custom_status: Some(cs.clone()) }, t(10));
        let ev = run_until(&mut p, t(1000));
        let PresenceEvent::Changed { current, .. } = &ev[0] else { panic!("{ev:?}") };
        assert_eq!(current.custom_status, Some(cs.clone()));
        assert_eq!(p.next_deadline(), Some(t(60_000)));
        let ev = run_until(&mut p, t(61_000));
        assert_eq!(ev.len(), 1);
        let PresenceEvent::Changed { previous, current, .. } = &ev[0] else { panic!() };
        assert!(previous.custom_status.is_some());
        assert_eq!(current.custom_status, None);
        assert_eq!(current.status, PublicStatus::Online);
        // An update without customStatus clears it.
        let no_expiry = CustomStatus { expires_at: None, ..cs.clone() };
        p.update(A, "u", "s1", PresenceUpdate { status: Status::Online, custom_status: Some(no_expiry) }, t(70_000));
        run_until(&mut p, t(71_000));
        assert!(p.get(A, "u").unwrap().custom_status.is_some());
        assert_eq!(p.update(A, "u", "s1", upd(Status::Online), t(80_000)), UpdateOutcome::Changed);
        let ev = run_until(&mut p, t(81_000));
        let PresenceEvent::Changed { current, .. } = &ev[0] else { panic!() };
        assert_eq!(current.custom_status, None);
        // An already expired custom status is ignored.
        let old = CustomStatus { expires_at: Some(t(1)), ..cs };
        assert_eq!(
            p.update(A, "u", "s1", PresenceUpdate { status: Status::Online, custom_status: Some(old) }, t(90_000)),
            UpdateOutcome::Unchanged
        );
    }

    #[test]
    fn custom_status_survives_offline_until_it_expires() {
        let mut p = tracker();
        p.connect(A, "u", "s1", t(0));
        let cs = CustomStatus { text: Some("Vacation".into()), emoji: None, expires_at: Some(t(100_000)) };
        p.update(A, "u", "s1", PresenceUpdate { status: Status::Online, custom_status: Some(cs) }, t(10));
        p.disconnect(A, "u", "s1", t(1000));
        run_until(&mut p, t(20_000));
        let pub_ = p.get(A, "u").unwrap();
        assert_eq!(pub_.status, PublicStatus::Offline);
        let v = view_for(false, &pub_, &PrivacySettings::default());
        assert_eq!(v.custom_status.unwrap().text.as_deref(), Some("Vacation"));
        let ev = run_until(&mut p, t(200_000));
        assert_eq!(ev.len(), 1);
        assert!(p.get(A, "u").is_none(), "forgotten once nothing is left");
    }

    #[test]
    fn accounts_are_isolated_and_unknown_disconnects_are_ignored() {
        let mut p = tracker();
        p.connect("app1", "u", "s1", t(0));
        assert!(p.current("app2", "u").is_none());
        assert!(!p.disconnect("app2", "u", "s1", t(1)).last_socket);
        assert!(!p.disconnect("app1", "u", "nope", t(1)).last_socket);
        assert!(p.current("app2", "u").is_none());
        assert_eq!(p.touch("app2", "u", "s1", t(2)), UpdateOutcome::Unchanged);
    }

    #[test]
    fn restore_seeds_last_seen_without_announcing() {
        let mut p = tracker();
        p.restore(A, "u", Some(t(-1000)), None, t(0));
        assert!(p.get(A, "u").is_none(), "nothing worth keeping");
        let cs = CustomStatus { text: Some("x".into()), emoji: None, expires_at: None };
        p.restore(A, "u", Some(t(-1000)), Some(cs), t(0));
        assert_eq!(p.get(A, "u").unwrap().last_seen, Some(t(-1000)));
        assert!(p.tick(t(10_000)).is_empty());
        p.connect(A, "u", "s1", t(20_000));
        let ev = run_until(&mut p, t(21_000));
        assert_eq!(changes(&ev), vec![(PublicStatus::Offline, PublicStatus::Online)]);
    }

    #[test]
    fn config_defaults_and_conversions() {
        let c = PresenceConfig::default();
        assert_eq!(c.offline_grace, Duration::milliseconds(5_000));
        assert_eq!(c.idle_timeout, Duration::milliseconds(300_000));
        assert_eq!(c.coalesce_window, Duration::milliseconds(400));
        assert_eq!(c.coalesce_max_delay, Duration::milliseconds(2_000));
        let s = std::time::Duration::from_millis;
        assert_eq!(PresenceConfig::from_std(s(5_000), s(300_000), s(400)), c);
        let huge = PresenceConfig::from_std(std::time::Duration::MAX, s(0), s(5_000));
        assert_eq!(huge.offline_grace, Duration::milliseconds(MAX_SETTING_MS));
        assert_eq!(huge.offline_grace, Duration::days(365), "settings are capped at a year");
        assert_eq!(huge.idle_timeout, Duration::milliseconds(1));
        assert_eq!(huge.coalesce_max_delay, Duration::milliseconds(5_000));
    }

    #[test]
    fn deadline_queue_stays_small() {
        let mut p = tracker();
        p.connect(A, "u", "s1", t(0));
        for i in 1..1000 {
            p.update(A, "u", "s1", upd(Status::Online), t(i * 1000));
            p.tick(t(i * 1000));
        }
        assert_eq!(p.queue.len(), 1);
    }

    #[test]
    fn last_seen_tells_offline_publications_apart_and_is_ignored_online() {
        let off = |at| Presence::offline("u", Some(t(at)));
        assert!(off(1_000).same_publication(&off(1_000)));
        assert!(!off(1_000).same_publication(&off(2_000)), "a new lastSeen is news while offline");
        let on = |at| Presence { status: PublicStatus::Online, ..off(at) };
        assert!(on(1_000).same_publication(&on(2_000)), "lastSeen is not shown while online");
        assert!(!on(1_000).same_publication(&off(1_000)));
        let hiding = Presence { appear_offline: true, ..off(1_000) };
        assert!(!hiding.same_publication(&off(1_000)));
    }

    // ----- one user's state (what a shared backend stores and replays) ------------------------

    fn other_view(p: &Presence) -> ViewedPresence {
        view_for(false, p, &PrivacySettings::default())
    }

    #[test]
    fn a_users_state_knows_its_devices_and_grace() {
        let cfg = PresenceConfig::default();
        let mut u = UserState::new("u");
        assert_eq!(u.user_id(), "u");
        assert!(!u.is_connected() && !u.in_grace());
        u.connect("s1", t(0), &cfg);
        u.connect("s2", t(0), &cfg);
        let mut devices: Vec<&str> = u.devices().collect();
        devices.sort();
        assert_eq!(devices, ["s1", "s2"]);
        assert!(u.is_connected() && !u.in_grace());
        u.disconnect("s1", t(10), &cfg);
        assert!(!u.in_grace(), "a device is still connected");
        u.disconnect("s2", t(20), &cfg);
        assert!(u.is_connected() && u.in_grace(), "the grace keeps the session");
        assert_eq!(u.devices().count(), 0);
        u.tick(A, t(20) + cfg.offline_grace, &cfg);
        assert!(!u.is_connected() && !u.in_grace());
    }

    #[test]
    fn answers_inside_a_window_are_remembered_and_handed_out_with_its_close() {
        let cfg = PresenceConfig::default();
        let mut u = UserState::new("u");
        u.connect("s1", t(0), &cfg);
        let (shown, remembered) = u.answer(Some("v"), &other_view);
        assert_eq!(shown.status, PublicStatus::Online, "the live state, before it is published");
        assert!(remembered, "the window would announce something else than what is published");
        assert!(!u.answer(Some("v"), &other_view).1, "told the same again: nothing new to remember");
        assert!(!u.answer(None, &other_view).1, "an answer to nobody in particular is not remembered");
        let events = u.tick(A, t(0) + cfg.coalesce_window, &cfg);
        let [PresenceEvent::Changed { answers, .. }] = &events[..] else { panic!("{events:?}") };
        assert_eq!(answers, &vec![("v".to_string(), shown)]);
        // Published and no window open: nothing to remember.
        assert!(!u.answer(Some("v"), &other_view).1);
        // A window that ends where it started (online → appear offline → online) sets nobody right.
        u.update("s1", upd(Status::Offline), t(1_000), &cfg);
        u.update("s1", upd(Status::Online), t(1_100), &cfg);
        assert!(!u.answer(Some("w"), &other_view).1, "the live state is what was published");
        assert_eq!(u.tick(A, t(1_100) + cfg.coalesce_window, &cfg), vec![], "nobody was told anything else");
        // A viewer told `offline` inside a window that ends online again is set right by a Settled.
        u.update("s1", upd(Status::Offline), t(5_000), &cfg);
        let (told, remembered) = u.answer(Some("w"), &other_view);
        assert!(remembered && told.status == PublicStatus::Offline);
        u.update("s1", upd(Status::Online), t(5_100), &cfg);
        let events = u.tick(A, t(5_100) + cfg.coalesce_window, &cfg);
        let [PresenceEvent::Settled { answers, current, .. }] = &events[..] else { panic!("{events:?}") };
        assert_eq!(answers, &vec![("w".to_string(), told)]);
        assert_eq!(current.status, PublicStatus::Online);
    }

    #[test]
    fn the_tracker_lists_every_connected_device() {
        let mut p = tracker();
        p.connect(A, "u", "s1", t(0));
        p.connect(A, "u", "s2", t(0));
        p.connect("acme", "v", "s3", t(0));
        p.disconnect(A, "u", "s2", t(10));
        let mut devices = p.devices();
        devices.sort();
        let row = |a: &str, u: &str, s: &str| (a.to_string(), u.to_string(), s.to_string());
        assert_eq!(devices, vec![row("acme", "v", "s3"), row(A, "u", "s1")]);
    }

    #[test]
    fn the_breakdown_counts_connected_users_by_published_status() {
        let mut p = tracker();
        for (user, status) in
            [("on", None), ("away", Some(Status::Away)), ("busy", Some(Status::Busy)), ("hid", Some(Status::Invisible))]
        {
            p.connect(A, user, "s", t(0));
            if let Some(status) = status {
                p.update(A, user, "s", upd(status), t(0));
            }
        }
        p.connect("acme", "elsewhere", "s", t(0));
        run_until(&mut p, t(1_000));
        assert_eq!(p.breakdown(A), StatusBreakdown { online: 1, away: 1, busy: 1, offline: 1 });
        let view = |p: &Presence| view_for(false, p, &PrivacySettings::default());
        assert_eq!(p.answer(A, "busy", Some("v"), &view).map(|v| v.status), Some(PublicStatus::Busy));
        assert_eq!(p.answer(A, "nobody", Some("v"), &view), None, "not tracked");
    }

    #[test]
    fn the_tracker_keeps_its_configuration() {
        let cfg = PresenceConfig::from_millis(1, 2, 3);
        assert_eq!(PresenceTracker::new(cfg).config(), cfg);
        assert_ne!(cfg, PresenceConfig::default());
    }

    #[test]
    fn restored_users_keep_only_a_live_custom_status() {
        let status = |expires_at| CustomStatus { text: Some("🌴".into()), emoji: None, expires_at };
        assert_eq!(UserState::restored("u", Some(t(0)), None, t(10)), None, "lastSeen alone stays in the database");
        assert_eq!(UserState::restored("u", None, Some(status(Some(t(5)))), t(10)), None, "expired");
        let u = UserState::restored("u", Some(t(0)), Some(status(Some(t(50)))), t(10)).expect("a live status");
        assert_eq!(u.published().custom_status, Some(status(Some(t(50)))));
        assert_eq!(u.published().last_seen, Some(t(0)));
    }

    #[test]
    fn a_heartbeat_differs_only_in_activity_by_less_than_the_bound() {
        let cfg = PresenceConfig::default();
        let mut a = UserState::new("u");
        a.connect("s1", t(0), &cfg);
        let mut b = a.clone();
        b.touch("s1", t(1_000), &cfg);
        assert!(a.differs_only_in_activity(&b, Duration::milliseconds(1_001)));
        assert!(b.differs_only_in_activity(&a, Duration::milliseconds(1_001)));
        assert!(!a.differs_only_in_activity(&b, Duration::milliseconds(1_000)), "the bound is exclusive");
        let mut c = a.clone();
        c.update("s1", upd(Status::Busy), t(0), &cfg);
        assert!(!a.differs_only_in_activity(&c, Duration::milliseconds(1_001)), "a status change is more");
    }

    #[test]
    fn the_record_keeps_its_layout_and_reads_back_the_same() {
        let cfg = PresenceConfig::default();
        let mut u = UserState::new("u");
        u.connect("s2", t(0), &cfg);
        u.connect("s1", t(0), &cfg);
        let cs = CustomStatus { text: Some("🌴".into()), emoji: None, expires_at: None };
        u.update("s1", PresenceUpdate { status: Status::Busy, custom_status: Some(cs) }, t(10), &cfg);
        u.tick("a", t(10_000), &cfg);
        u.disconnect("s2", t(20_000), &cfg);
        let v: serde_json::Value = serde_json::to_value(&u).unwrap();
        assert_eq!(v["user_id"], "u");
        assert_eq!(v["published"]["user_id"], "u", "the published presence is a whole Presence");
        assert_eq!(v["published"]["status"], "online", "s2 is online, the most available");
        assert!(v["published"]["custom_status"].is_object());
        assert!(v["sockets"].is_object(), "devices by id");
        assert!(v["sockets"]["s1"].is_object());
        let back: UserState = serde_json::from_value(v).unwrap();
        assert_eq!(back, u);
        assert_eq!(back.published(), u.published());
        assert_eq!(back.devices().collect::<Vec<_>>(), vec!["s1"]);
    }

    #[test]
    fn every_status_word_is_understood_and_others_refused() {
        for (word, status) in [
            ("online", Status::Online),
            ("away", Status::Away),
            ("idle", Status::Away),
            ("busy", Status::Busy),
            ("dnd", Status::Busy),
            ("offline", Status::Offline),
            ("invisible", Status::Invisible),
            (" Online ", Status::Online),
            ("DND", Status::Busy),
        ] {
            assert_eq!(Status::parse(word), Some(status), "{word:?}");
        }
        assert_eq!(Status::parse("available"), None);
        for (s, word) in [
            (PublicStatus::Online, "online"),
            (PublicStatus::Away, "away"),
            (PublicStatus::Busy, "busy"),
            (PublicStatus::Offline, "offline"),
        ] {
            assert_eq!(s.as_str(), word);
            assert_eq!(json(&s), format!("\"{word}\""), "the wire word and as_str agree");
        }
    }

    #[test]
    fn refusals_name_the_field() {
        let e = PresenceUpdate::new(Status::Online, None, Some(&"x".repeat(MAX_STATUS_EMOJI_BYTES + 1)), None);
        let e = crate::error::AppError::from(e.unwrap_err());
        assert_eq!(e.code, crate::error::ErrorCode::PayloadTooLarge);
        assert_eq!(e.message, "customStatus.emoji is too long");
        let e = crate::error::AppError::from(PresenceError::Validation("status must be a string".into()));
        assert_eq!(e.code, crate::error::ErrorCode::ValidationError);
        assert_eq!(e.message, "status must be a string");
    }
}
