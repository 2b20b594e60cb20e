//! Contract tests of the cluster traits, written once and run against every implementation: each
//! implementation's test module calls the suite with a constructor (the memory ones in `memory/`; the Redis
//! ones in `redis/` call the same functions with their own constructor and a throwaway server).
//!
//! `roster`, `presence`, `typing` and `rate_limiter` are what every implementation does, a purge of a dead
//! node included. The `*_cluster` suites are what a shared implementation adds: the constructor is called
//! once per node, and every instance it returns must see one state (one user online through sockets on two
//! nodes, one typing list, a departure or an expiry handed out once although every node asks, one budget).
//!
//! Time is passed in, never read, so the suites are exact.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use async_trait::async_trait;

use super::{
    Audience, Budget, CallRegistry, Census, DmClaims, Entered, Fanout, Left, PresenceBackend, RateLimiter, Roster,
    SocketEntry, Target, TypingBackend,
};
use crate::domain::calls::{Call, CallError};
use crate::domain::presence::{
    Presence, PresenceConfig, PresenceEvent, PresenceUpdate, PrivacySettings, PublicStatus, Status, UpdateOutcome,
    Viewer, view_as,
};
use crate::domain::ratelimit::{KEY_GUESSES, Rate};
use crate::domain::typing::{RoomType, TypingConfig, TypingRoom, Typist};

fn t(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(1_700_000_000_000 + ms).expect("in range")
}

fn socket(sid: &str, account: &str, user: Option<&str>) -> SocketEntry {
    socket_on("n1", sid, account, user)
}

fn socket_on(node: &str, sid: &str, account: &str, user: Option<&str>) -> SocketEntry {
    SocketEntry {
        sid: sid.into(),
        account: account.into(),
        user: user.map(Into::into),
        node: node.into(),
        name: user.map(|u| format!("{u} name")),
        avatar: None,
    }
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

/// [`Roster`]: per-socket rooms, per-user presence in rooms with the offline grace, users online.
pub async fn roster(make: impl Fn(Duration) -> Arc<dyn Roster>) {
    let r = make(Duration::from_secs(5));
    r.connect(socket("s1", "acc", Some("ann"))).await;
    r.connect(socket("s2", "acc", Some("ann"))).await;
    r.connect(socket("s3", "acc", Some("bob"))).await;
    r.connect(socket("x1", "other", Some("ann"))).await;
    r.connect(socket("anon", "acc", None)).await;
    assert_eq!(r.connections().await, 5);
    assert_eq!(r.users_online(None).await, 3, "ann of two accounts counts twice");
    assert_eq!(r.users_online(Some("acc")).await, 2, "anonymous sockets are no users");
    assert_eq!(sorted(r.sockets_of("acc", "ann").await), vec!["s1", "s2"]);
    assert_eq!(r.sockets(Some("other")).await.len(), 1);

    // First socket in announces, a second device does not; entering twice is a no-op.
    assert_eq!(r.enter("s1", "room", false).await, Entered::Arrived);
    assert_eq!(r.enter("s2", "room", false).await, Entered::Present);
    assert_eq!(r.enter("s1", "room", false).await, Entered::Already);
    assert_eq!(r.enter("s3", "room", true).await, Entered::Arrived);
    assert_eq!(r.enter("anon", "room", false).await, Entered::Present, "anonymous sockets enter unannounced");
    assert_eq!(r.enter("x1", "room", false).await, Entered::Arrived, "accounts are isolated");
    assert_eq!(sorted(r.users_in("acc", "room").await), vec!["ann", "bob"]);
    assert_eq!(r.present("acc", "room").await, 2);
    let bob = r.rooms_of("s3").await.expect("connected");
    assert!(bob.contains("room") && bob.is_muted("room"));
    assert!(!r.rooms_of("s1").await.unwrap().is_muted("room"));
    r.set_muted("acc", "ann", "room", true).await;
    assert!(r.rooms_of("s1").await.unwrap().is_muted("room") && r.rooms_of("s2").await.unwrap().is_muted("room"));
    r.set_muted("acc", "ann", "room", false).await;
    assert!(!r.rooms_of("s2").await.unwrap().is_muted("room"));

    // Last socket out announces.
    assert_eq!(r.exit("s1", "room").await, Left::StillPresent);
    assert_eq!(r.exit("s1", "room").await, Left::NotIn);
    assert_eq!(r.exit("s2", "room").await, Left::UserLeft);
    assert_eq!(r.users_in("acc", "room").await, vec!["bob"]);

    // A disconnect starts the grace: a return within it announces nothing, no return leaves once.
    assert_eq!(r.disconnect("s3", t(0)).await, Some(vec!["room".to_string()]));
    assert_eq!(r.disconnect("s3", t(0)).await, None, "a socket closes once");
    assert_eq!(r.present("acc", "room").await, 0, "a user in grace is not present");
    assert_eq!(r.next_departure().await, Some(t(5000)));
    assert!(r.departures(t(4999)).await.is_empty());
    r.connect(socket("s4", "acc", Some("bob"))).await;
    assert_eq!(r.enter("s4", "room", false).await, Entered::Present, "back within the grace");
    assert!(r.departures(t(10_000)).await.is_empty());
    r.disconnect("s4", t(20_000)).await;
    let gone = r.departures(t(25_000)).await;
    assert_eq!(gone.len(), 1);
    assert_eq!((gone[0].account.as_str(), gone[0].room.as_str(), gone[0].user.as_str()), ("acc", "room", "bob"));
    assert_eq!(gone[0].name.as_deref(), Some("bob name"), "announced with the last socket's name");
    assert!(r.departures(t(30_000)).await.is_empty(), "a departure is handed out once");

    // A closed socket enters nothing.
    assert_eq!(r.enter("s3", "other-room", false).await, Entered::Closed);
    assert!(r.rooms_of("s3").await.is_none());
    assert_eq!(r.users_online(Some("acc")).await, 1, "bob went offline");

    // A deleted room is empty everywhere.
    r.enter("s2", "doomed", false).await;
    r.forget_room("acc", "doomed").await;
    assert!(r.users_in("acc", "doomed").await.is_empty());
    assert!(!r.rooms_of("s2").await.unwrap().contains("doomed"));
    assert_eq!(r.enter("s2", "doomed", false).await, Entered::Arrived, "and can be entered anew");

    // Several rooms at once, as one by one.
    let rooms = vec![("hall".to_string(), false), ("doomed".to_string(), true), ("quiet".to_string(), true)];
    assert_eq!(r.enter_all("s2", &rooms).await, vec![Entered::Arrived, Entered::Already, Entered::Arrived]);
    let s2 = r.rooms_of("s2").await.unwrap();
    assert!(s2.contains("hall") && s2.is_muted("quiet") && !s2.is_muted("doomed"), "{s2:?}");
    assert_eq!(r.enter_all("gone", &rooms).await, vec![Entered::Closed; 3]);
    assert_eq!(r.exit("s2", "quiet").await, Left::UserLeft);

    // A dead node: its sockets close then (their users' graces start); the other node's sockets stay.
    r.connect(socket_on("n2", "d1", "acc", Some("dan"))).await;
    r.connect(socket_on("n1", "d2", "acc", Some("dan"))).await;
    r.connect(socket_on("n2", "e1", "acc", Some("eve"))).await;
    r.connect(socket_on("n2", "e2", "acc", None)).await;
    for sid in ["d1", "d2", "e1", "e2"] {
        assert!(r.enter(sid, "hall", false).await.entered());
    }
    let mut gone: Vec<String> = r.purge_node("n2", t(40_000)).await.into_iter().map(|s| s.sid).collect();
    gone.sort();
    assert_eq!(gone, vec!["d1", "e1", "e2"]);
    assert_eq!(r.sockets_of("acc", "dan").await, vec!["d2"]);
    assert!(r.rooms_of("e1").await.is_none());
    assert_eq!(sorted(r.users_in("acc", "hall").await), vec!["ann", "dan"], "eve is in her grace");
    assert!(r.sockets(None).await.iter().all(|s| s.node == "n1"));
    assert_eq!(r.next_departure().await, Some(t(45_000)));
    let gone = r.departures(t(45_000)).await;
    assert_eq!(gone.len(), 1, "{gone:?}");
    assert_eq!((gone[0].room.as_str(), gone[0].user.as_str()), ("hall", "eve"));
    assert!(r.purge_node("n2", t(50_000)).await.is_empty(), "a node is purged once");
}

/// [`Roster`] shared by nodes: `make` is called once per node; the instances see one roster.
pub async fn roster_cluster(make: impl Fn(Duration) -> Arc<dyn Roster>) {
    let (a, b) = (make(Duration::from_secs(5)), make(Duration::from_secs(5)));
    a.connect(socket_on("n1", "a1", "acc", Some("ann"))).await;
    b.connect(socket_on("n2", "a2", "acc", Some("ann"))).await;
    b.connect(socket_on("n2", "b1", "acc", Some("bob"))).await;
    for r in [&a, &b] {
        assert_eq!(r.connections().await, 3);
        assert_eq!(r.users_online(Some("acc")).await, 2);
        assert_eq!(sorted(r.sockets_of("acc", "ann").await), vec!["a1", "a2"]);
    }

    // One user through sockets on two nodes is present once, and leaves with the last of them.
    assert_eq!(a.enter("a1", "room", false).await, Entered::Arrived);
    assert_eq!(b.enter("a2", "room", false).await, Entered::Present, "the other node's socket counts");
    assert_eq!(b.enter("b1", "room", true).await, Entered::Arrived);
    assert!(a.rooms_of("b1").await.unwrap().is_muted("room"), "a node reads the other's sockets");
    assert_eq!(a.present("acc", "room").await, 2);
    assert_eq!(a.exit("a1", "room").await, Left::StillPresent);
    assert_eq!(b.exit("a2", "room").await, Left::UserLeft);

    // A departure is handed out once although both nodes ask.
    b.disconnect("b1", t(0)).await;
    assert_eq!(a.next_departure().await, Some(t(5000)), "a grace started by the other node");
    let (da, db) = (a.departures(t(5000)).await, b.departures(t(5000)).await);
    assert_eq!(da.len() + db.len(), 1, "{da:?} {db:?}");

    // Node 2 dies: ann stays online through node 1; bob, only on node 2, leaves after the grace unless he
    // comes back through node 1.
    b.connect(socket_on("n2", "b2", "acc", Some("bob"))).await;
    b.connect(socket_on("n2", "c1", "acc", Some("cid"))).await;
    for (sid, r) in [("a1", &a), ("a2", &b), ("b2", &b), ("c1", &b)] {
        assert!(r.enter(sid, "hall", false).await.entered());
    }
    let gone = a.purge_node("n2", t(10_000)).await;
    assert_eq!(gone.len(), 3, "{gone:?}");
    assert!(b.purge_node("n2", t(10_000)).await.is_empty(), "purged once, whichever survivor asks");
    assert_eq!(a.users_in("acc", "hall").await, vec!["ann"]);
    assert_eq!(a.users_online(Some("acc")).await, 1);
    a.connect(socket_on("n1", "b3", "acc", Some("bob"))).await;
    assert_eq!(a.enter("b3", "hall", false).await, Entered::Present, "back within the grace, elsewhere");
    let gone = a.departures(t(15_000)).await;
    assert_eq!(gone.iter().map(|d| d.user.as_str()).collect::<Vec<_>>(), vec!["cid"]);
}

fn typist(user: &str, sid: &str) -> Typist {
    Typist { user_id: user.into(), socket_id: sid.into(), user_name: None, user_avatar: None }
}

/// [`TypingBackend`]: one deduplicated list per room, coalesced, expiring, handed out once. `make(node,
/// cfg)`: the instance is node `node`'s.
pub async fn typing(make: impl Fn(&str, TypingConfig) -> Arc<dyn TypingBackend>) {
    let b = make("n1", TypingConfig::from_millis(5_000, 250));
    let room = TypingRoom::new("acc", RoomType::Channel, "c1", None).expect("valid");
    b.start(&room, &typist("ann", "s1"), None, t(0)).await;
    let evs = b.flush(t(0)).await;
    assert_eq!(evs.len(), 1, "the first start goes out at once");
    assert_eq!(evs[0].targets, vec!["channel:c1"]);
    assert_eq!(evs[0].except_users, vec!["ann"]);
    assert!(b.flush(t(0)).await.is_empty(), "an event is handed out once");

    // Two devices of one user are one entry; changes inside the window are merged.
    b.start(&room, &typist("ann", "s2"), None, t(10)).await;
    b.start(&room, &typist("bob", "s3"), None, t(20)).await;
    assert!(b.flush(t(20)).await.is_empty(), "inside the coalescing window");
    assert_eq!(b.next_deadline().await, Some(t(250)));
    let evs = b.flush(t(250)).await;
    assert_eq!(evs.len(), 1);
    let users: Vec<&str> = evs[0].payload.users.iter().map(|u| u.user_id.as_str()).collect();
    assert_eq!(users, vec!["ann", "bob"]);
    assert_eq!(b.typing_users(&room, t(300)).await.len(), 2);

    // A closed socket stops its user when it was their last typing socket.
    b.remove_socket("acc", "bob", "s3", t(300)).await;
    b.remove_socket("acc", "ann", "s1", t(300)).await;
    let users = b.typing_users(&room, t(300)).await;
    assert_eq!(users.len(), 1, "ann still types on s2");
    assert!(b.stop(&room, "ann", "s2", None, t(400)).await);
    assert!(!b.stop(&room, "ann", "s2", None, t(400)).await, "stopping twice changes nothing");
    assert!(b.typing_users(&room, t(400)).await.is_empty());
    let evs = b.flush(t(1000)).await;
    assert_eq!(evs.len(), 1, "the stops go out as one event");
    assert!(evs[0].payload.users.is_empty());

    // Entries expire and the expiry is pushed.
    b.start(&room, &typist("cid", "s4"), None, t(2000)).await;
    b.flush(t(2000)).await;
    assert_eq!(b.next_deadline().await, Some(t(7000)));
    let evs = b.flush(t(7000)).await;
    assert_eq!(evs.len(), 1);
    assert!(evs[0].payload.users.is_empty());

    // The node's sockets stop typing when it is purged (a restart repairs its own state so).
    b.start(&room, &typist("dan", "d1"), None, t(10_000)).await;
    b.flush(t(10_000)).await;
    assert_eq!(b.purge_node("n1", t(10_100)).await, 1);
    assert!(b.typing_users(&room, t(10_100)).await.is_empty());
    let evs = b.flush(t(10_250)).await;
    assert_eq!(evs.len(), 1, "the stop is pushed");
    assert!(evs[0].payload.users.is_empty());
    assert_eq!(b.purge_node("n1", t(10_300)).await, 0);
}

/// [`TypingBackend`] shared by nodes: `make(node, cfg)` is called once per node; one list per room.
pub async fn typing_cluster(make: impl Fn(&str, TypingConfig) -> Arc<dyn TypingBackend>) {
    let cfg = TypingConfig::from_millis(5_000, 250);
    let (a, b) = (make("n1", cfg), make("n2", cfg));
    let room = TypingRoom::new("acc", RoomType::Channel, "c1", None).expect("valid");
    a.start(&room, &typist("ann", "a1"), None, t(0)).await;
    let (ea, eb) = (a.flush(t(0)).await, b.flush(t(0)).await);
    assert_eq!(ea.len() + eb.len(), 1, "the leading edge goes out once");

    // Starts on both nodes are one list, merged into one event.
    b.start(&room, &typist("bob", "b1"), None, t(10)).await;
    a.start(&room, &typist("ann", "a2"), None, t(20)).await;
    assert_eq!(b.next_deadline().await, Some(t(250)));
    let evs: Vec<_> = [b.flush(t(250)).await, a.flush(t(250)).await].concat();
    assert_eq!(evs.len(), 1, "{evs:?}");
    let users: Vec<&str> = evs[0].payload.users.iter().map(|u| u.user_id.as_str()).collect();
    assert_eq!(users, vec!["ann", "bob"]);
    assert_eq!(a.typing_users(&room, t(300)).await, b.typing_users(&room, t(300)).await);

    // Node 2 dies: bob, who typed there, stops; ann types through node 1.
    assert_eq!(a.purge_node("n2", t(400)).await, 1);
    let users: Vec<String> = a.typing_users(&room, t(400)).await.into_iter().map(|u| u.user_id).collect();
    assert_eq!(users, vec!["ann"]);
    let evs: Vec<_> = [a.flush(t(500)).await, b.flush(t(500)).await].concat();
    assert_eq!(evs.len(), 1);

    // Stops through one node of starts made through the other.
    assert!(!b.stop(&room, "ann", "a1", None, t(600)).await, "ann still types on a2");
    assert!(b.stop(&room, "ann", "a2", None, t(600)).await);
    assert!(a.typing_users(&room, t(600)).await.is_empty());

    // An expiry is pushed once although both nodes flush.
    b.start(&room, &typist("cid", "c1"), None, t(1000)).await;
    let _ = [a.flush(t(1000)).await, b.flush(t(1000)).await];
    let evs: Vec<_> = [a.flush(t(6000)).await, b.flush(t(6000)).await].concat();
    assert_eq!(evs.len(), 1, "{evs:?}");
    assert!(evs[0].payload.users.is_empty());
}

fn upd(status: Status) -> PresenceUpdate {
    PresenceUpdate { status, custom_status: None }
}

/// Drains everything due up to `until`.
async fn run_until(b: &Arc<dyn PresenceBackend>, until: DateTime<Utc>) -> Vec<PresenceEvent> {
    let mut out = Vec::new();
    while let Some(next) = b.next_deadline().await.filter(|d| *d <= until) {
        out.extend(b.due(next).await);
    }
    out
}

/// Drains what is due up to `until` on every node, as their timers would.
async fn run_all(nodes: &[&Arc<dyn PresenceBackend>], until: DateTime<Utc>) -> Vec<PresenceEvent> {
    let mut out = Vec::new();
    loop {
        let mut next = None;
        for n in nodes {
            next = [next, n.next_deadline().await.filter(|d| *d <= until)].into_iter().flatten().min();
        }
        let Some(next) = next else { return out };
        for n in nodes {
            out.extend(n.due(next).await);
        }
    }
}

fn ended(evs: &[PresenceEvent]) -> Vec<&str> {
    let mut out: Vec<&str> = evs
        .iter()
        .filter_map(|e| match e {
            PresenceEvent::SessionEnded { user_id, .. } => Some(user_id.as_str()),
            _ => None,
        })
        .collect();
    out.sort();
    out
}

fn changed(evs: &[PresenceEvent]) -> Vec<(&str, PublicStatus)> {
    evs.iter()
        .filter_map(|e| match e {
            PresenceEvent::Changed { current, .. } => Some((current.user_id.as_str(), current.status)),
            _ => None,
        })
        .collect()
}

/// [`PresenceBackend`]: aggregation with coalescing and grace, subscriptions, audiences, settings. `make(node,
/// The answers handed out with the close of a user's windows: (event kind, viewer, status shown).
fn answers_of(evs: &[PresenceEvent], user: &str) -> Vec<(&'static str, String, PublicStatus)> {
    let mut out = Vec::new();
    for e in evs {
        let (kind, current, answers) = match e {
            PresenceEvent::Changed { current, answers, .. } => ("changed", current, answers),
            PresenceEvent::Settled { current, answers, .. } => ("settled", current, answers),
            PresenceEvent::SessionEnded { .. } => continue,
        };
        if current.user_id == user {
            out.extend(answers.iter().map(|(v, view)| (kind, v.clone(), view.status)));
        }
    }
    out
}

/// cfg)`: the instance is node `node`'s.
pub async fn presence(make: impl Fn(&str, PresenceConfig) -> Arc<dyn PresenceBackend>) {
    let b = make("n1", PresenceConfig::from_millis(5_000, 300_000, 400));
    b.connect("acc", "ann", "s1", t(0)).await;
    assert!(b.is_connected("acc", "ann").await);
    assert_eq!(b.current("acc", "ann").await.map(|p| p.status), Some(PublicStatus::Online), "live at once");
    assert_ne!(
        b.published("acc", "ann").await.map(|p| p.status),
        Some(PublicStatus::Online),
        "published only after the coalescing window"
    );
    let evs = run_until(&b, t(1000)).await;
    assert!(matches!(&evs[..], [PresenceEvent::Changed { current, .. }] if current.status == PublicStatus::Online));
    assert_eq!(b.published("acc", "ann").await.map(|p| p.status), Some(PublicStatus::Online));

    // A second device does not change the aggregate; busy on one device is less available than online.
    b.connect("acc", "ann", "s2", t(1000)).await;
    assert_eq!(b.update("acc", "ann", "s2", upd(Status::Busy), t(1100)).await, UpdateOutcome::Unchanged);
    assert_eq!(b.touch("acc", "ann", "s1", t(1200)).await, UpdateOutcome::Unchanged);
    assert!(run_until(&b, t(3000)).await.is_empty());
    assert_eq!(b.breakdown("acc").await.online, 1);

    // The last device leaving starts the grace; the session ends after it.
    b.disconnect("acc", "ann", "s1", t(4000)).await;
    b.disconnect("acc", "ann", "s2", t(4000)).await;
    assert!(b.is_connected("acc", "ann").await, "inside the grace");
    let evs = run_until(&b, t(20_000)).await;
    assert!(evs.iter().any(|e| matches!(e, PresenceEvent::SessionEnded { user_id, .. } if user_id == "ann")));
    assert!(
        evs.iter()
            .any(|e| matches!(e, PresenceEvent::Changed { current, .. } if current.status == PublicStatus::Offline))
    );
    assert!(!b.is_connected("acc", "ann").await);

    // Shutdown ends the running graces at once.
    b.connect("acc", "bob", "s3", t(30_000)).await;
    run_until(&b, t(31_000)).await;
    b.disconnect("acc", "bob", "s3", t(32_000)).await;
    let evs = b.end_all_graces().await;
    assert!(evs.iter().any(|e| matches!(e, PresenceEvent::SessionEnded { user_id, .. } if user_id == "bob")));

    // Subscriptions count per socket of a viewer; closing a socket drops its subscriptions.
    let targets = vec!["ann".to_string(), "bob".to_string()];
    b.subscribe("acc", "cid", "c1", &targets).await;
    b.subscribe("acc", "cid", "c2", &targets[..1]).await;
    b.subscribe("acc", "cid", "c2", &targets[..1]).await;
    assert_eq!(b.subscribers("acc", "ann").await, vec!["cid"]);
    b.unsubscribe("acc", "cid", "c1", &targets[..1]).await;
    assert_eq!(b.subscribers("acc", "ann").await, vec!["cid"], "c2 still subscribes");
    b.drop_subscriptions("acc", "cid", "c2").await;
    assert!(b.subscribers("acc", "ann").await.is_empty());
    assert_eq!(b.subscribers("acc", "bob").await, vec!["cid"]);
    assert!(b.subscribers("other", "bob").await.is_empty(), "accounts are isolated");

    // Audience rooms, settings and remembered last seen.
    b.joined_room("acc", "ann", "r1").await;
    b.joined_room("acc", "ann", "r1").await;
    b.joined_room("acc", "ann", "r2").await;
    b.left_room("acc", "ann", "r1").await;
    assert_eq!(b.rooms_of("acc", "ann").await, vec!["r2"]);
    assert!(b.settings("acc", "ann").await.is_none());
    let s = crate::domain::presence::PrivacySettings { invisible_mode: true, ..Default::default() };
    b.set_settings("acc", "ann", s).await;
    assert_eq!(b.settings("acc", "ann").await, Some(s));
    b.remember_last_seen("acc", "ann", t(4000)).await;
    assert_eq!(b.remembered_last_seen("acc", "ann").await, Some(t(4000)));
    b.joined_rooms("acc", "ann", &["r3".to_string(), "r2".to_string()]).await;
    assert_eq!(sorted(b.rooms_of("acc", "ann").await), vec!["r2", "r3"]);

    // Restored facts of a user not tracked yet; nothing is published for them.
    let custom = crate::domain::presence::CustomStatus {
        text: Some("away for lunch".into()),
        emoji: None,
        expires_at: Some(t(120_000)),
    };
    b.restore("acc", "gus", Some(t(1)), Some(custom.clone()), t(40_000)).await;
    let gus = b.published("acc", "gus").await.expect("kept: it has a custom status");
    assert_eq!((gus.status, gus.last_seen, gus.custom_status), (PublicStatus::Offline, Some(t(1)), Some(custom)));
    b.restore("acc", "hal", Some(t(1)), None, t(40_000)).await;
    assert!(b.published("acc", "hal").await.is_none(), "nothing beyond the database row");

    // The node's devices go when it is purged (a restart repairs its own state so), their subscriptions too.
    b.connect("acc", "fay", "f1", t(50_000)).await;
    b.subscribe("acc", "fay", "f1", &["ann".to_string()]).await;
    run_until(&b, t(51_000)).await;
    assert_eq!(b.breakdown("acc").await.online, 1);
    assert_eq!(b.purge_node("n1", t(52_000)).await, 1);
    assert!(b.subscribers("acc", "ann").await.is_empty());
    assert!(b.is_connected("acc", "fay").await, "inside the grace");
    let evs = run_until(&b, t(60_000)).await;
    assert!(ended(&evs).contains(&"fay"), "{evs:?}");
    assert!(changed(&evs).contains(&("fay", PublicStatus::Offline)), "{evs:?}");
    assert_eq!(b.purge_node("n1", t(61_000)).await, 0);
    assert_eq!(b.breakdown("acc").await, Default::default());

    // Answers show the live state; inside a coalescing window they are remembered per viewer and handed out
    // once, with the window's close; a window that closes with nothing to announce is reported as settled.
    let seen = |p: &Presence| view_as(Viewer::Other, p, &PrivacySettings::default());
    assert_eq!(b.answer("acc", "nobody", Some("cid"), &seen).await, None, "an untracked user");
    b.connect("acc", "zoe", "z1", t(200_000)).await;
    let shown = b.answer("acc", "zoe", Some("cid"), &seen).await.expect("tracked");
    assert_eq!(shown.status, PublicStatus::Online, "the live state, before the announcement");
    b.answer("acc", "zoe", None, &seen).await.expect("an anonymous viewer is answered, not remembered");
    let evs = run_until(&b, t(201_000)).await;
    assert_eq!(answers_of(&evs, "zoe"), vec![("changed", "cid".to_string(), PublicStatus::Online)]);
    b.answer("acc", "zoe", Some("cid"), &seen).await;
    b.update("acc", "zoe", "z1", upd(Status::Offline), t(202_000)).await;
    assert_eq!(b.answer("acc", "zoe", Some("dan"), &seen).await.map(|v| v.status), Some(PublicStatus::Offline));
    b.update("acc", "zoe", "z1", upd(Status::Online), t(202_100)).await;
    let evs = run_until(&b, t(205_000)).await;
    assert_eq!(
        answers_of(&evs, "zoe"),
        vec![("settled", "dan".to_string(), PublicStatus::Offline)],
        "a reverted window is settled, with what dan was told (cid's answer outside a window was not kept): {evs:?}"
    );
    assert!(run_until(&b, t(210_000)).await.iter().all(|e| answers_of(std::slice::from_ref(e), "zoe").is_empty()));
}

/// [`PresenceBackend`] shared by nodes: `make(node, cfg)` is called once per node; one presence per user.
pub async fn presence_cluster(make: impl Fn(&str, PresenceConfig) -> Arc<dyn PresenceBackend>) {
    let cfg = PresenceConfig::from_millis(5_000, 300_000, 400);
    let (a, b) = (make("n1", cfg), make("n2", cfg));
    let both = [&a, &b];

    // A user with a socket on each node is one presence, published once.
    a.connect("acc", "ann", "a1", t(0)).await;
    b.connect("acc", "ann", "a2", t(100)).await;
    assert_eq!(changed(&run_all(&both, t(1000)).await), vec![("ann", PublicStatus::Online)]);
    assert_eq!(b.published("acc", "ann").await.map(|p| p.status), Some(PublicStatus::Online));
    assert_eq!(a.breakdown("acc").await.online, 1);
    assert_eq!(a.update("acc", "ann", "a1", upd(Status::Busy), t(1100)).await, UpdateOutcome::Unchanged);
    assert_eq!(b.update("acc", "ann", "a2", upd(Status::Away), t(1200)).await, UpdateOutcome::Changed);
    assert_eq!(changed(&run_all(&both, t(2000)).await), vec![("ann", PublicStatus::Away)]);

    // She leaves after the last socket of either node, once.
    a.disconnect("acc", "ann", "a1", t(3000)).await;
    assert!(run_all(&both, t(20_000)).await.is_empty(), "still connected through node 2");
    b.disconnect("acc", "ann", "a2", t(20_000)).await;
    let evs = run_all(&both, t(30_000)).await;
    assert_eq!(ended(&evs), vec!["ann"]);
    assert_eq!(changed(&evs), vec![("ann", PublicStatus::Offline)]);

    // Subscriptions, audiences, settings and last seen are the same on every node.
    b.subscribe("acc", "cid", "c1", &["ann".to_string()]).await;
    a.subscribe("acc", "cid", "c2", &["ann".to_string()]).await;
    assert_eq!(a.subscribers("acc", "ann").await, vec!["cid"]);
    b.drop_subscriptions("acc", "cid", "c1").await;
    assert_eq!(b.subscribers("acc", "ann").await, vec!["cid"], "c2 on node 1 still subscribes");
    a.joined_room("acc", "ann", "r1").await;
    assert_eq!(b.rooms_of("acc", "ann").await, vec!["r1"]);
    let s = PrivacySettings { show_last_seen: false, ..Default::default() };
    b.set_settings("acc", "ann", s).await;
    assert_eq!(a.settings("acc", "ann").await, Some(s));
    a.remember_last_seen("acc", "ann", t(20_000)).await;
    assert_eq!(b.remembered_last_seen("acc", "ann").await, Some(t(20_000)));

    // Node 2 dies: eve, also on node 1, stays online; dan, only on node 2, goes offline after the grace;
    // the subscriptions of node 2's sockets end.
    a.connect("acc", "eve", "e1", t(40_000)).await;
    b.connect("acc", "eve", "e2", t(40_000)).await;
    b.connect("acc", "dan", "d1", t(40_000)).await;
    b.subscribe("acc", "dan", "d1", &["eve".to_string()]).await;
    run_all(&both, t(41_000)).await;
    assert_eq!(a.purge_node("n2", t(42_000)).await, 2);
    assert_eq!(a.purge_node("n2", t(42_000)).await, 0, "purged once");
    assert!(a.subscribers("acc", "eve").await.is_empty());
    let evs = run_all(&[&a], t(50_000)).await;
    assert_eq!(ended(&evs), vec!["dan"]);
    assert_eq!(changed(&evs), vec![("dan", PublicStatus::Offline)]);
    assert!(a.is_connected("acc", "eve").await);

    // Shutdown of node 1 reports the sessions it ended last (so their last seen is stored) and leaves the
    // graces running: node 2 ends them, unless the user is back on node 2 meanwhile.
    let b = make("n2", cfg);
    a.connect("acc", "gil", "g1", t(60_000)).await;
    a.connect("acc", "hal", "h1", t(60_000)).await;
    b.connect("acc", "ivy", "i1", t(60_000)).await;
    run_all(&[&a, &b], t(61_000)).await;
    for (n, u, d) in [(&a, "gil", "g1"), (&a, "hal", "h1"), (&b, "ivy", "i1")] {
        n.disconnect("acc", u, d, t(62_000)).await;
    }
    a.disconnect("acc", "eve", "e1", t(62_000)).await;
    let evs = a.end_all_graces().await;
    assert_eq!(ended(&evs), vec!["eve", "gil", "hal"], "node 1's graces only");
    assert!(evs.iter().all(|e| matches!(e, PresenceEvent::SessionEnded { last_seen: Some(s), .. } if *s == t(62_000))));
    b.connect("acc", "hal", "h2", t(63_000)).await;
    let evs = run_all(&[&b], t(70_000)).await;
    assert_eq!(ended(&evs), vec!["eve", "gil", "ivy"], "hal is back on node 2");
    assert!(b.is_connected("acc", "hal").await);

    // An answer given on one node is handed out by whichever node closes the window, once.
    let seen = |p: &Presence| view_as(Viewer::Other, p, &PrivacySettings::default());
    a.connect("acc", "yan", "y1", t(300_000)).await;
    assert_eq!(b.answer("acc", "yan", Some("cid"), &seen).await.map(|v| v.status), Some(PublicStatus::Online));
    let evs = run_all(&both, t(301_000)).await;
    assert_eq!(answers_of(&evs, "yan"), vec![("changed", "cid".to_string(), PublicStatus::Online)]);
}

/// [`RateLimiter`]: a burst of the capacity, then the steady rate; budgets are independent.
pub fn rate_limiter(make: impl Fn(Option<Rate>, Option<Rate>) -> Arc<dyn RateLimiter>) {
    let rate = Rate { capacity: 3, period: Duration::from_secs(3) };
    let l = make(Some(rate), None);
    let now = Instant::now();
    let ann = Budget::Events { account: "acc".into(), subject: "ann".into() };
    let bob = Budget::Events { account: "acc".into(), subject: "bob".into() };
    for _ in 0..3 {
        assert!(l.allow(&ann, now));
    }
    assert!(!l.allow(&ann, now), "the fourth event in the window is refused");
    assert!(l.allow(&bob, now), "another user has their own budget");
    assert!(l.allow(&ann, now + Duration::from_millis(1000)), "one point per second comes back");
    assert!(!l.allow(&ann, now + Duration::from_millis(1000)));
    let ip = Budget::Connects("127.0.0.1".parse().expect("ip"));
    for _ in 0..100 {
        assert!(l.allow(&ip, now), "no connect rate: unlimited");
    }
    l.sweep(now + Duration::from_secs(60));
    for _ in 0..3 {
        assert!(l.allow(&ann, now + Duration::from_secs(60)), "a swept budget starts full");
    }

    // Wrong API keys: a fixed budget, whatever the configured rates; asking never spends a point.
    let guesser = Budget::KeyGuesses("203.0.113.1".parse().expect("ip"));
    let other = Budget::KeyGuesses("203.0.113.2".parse().expect("ip"));
    for _ in 0..KEY_GUESSES.capacity {
        assert_eq!(l.exhausted(&guesser, now), None);
        assert!(l.allow(&guesser, now));
    }
    let wait = l.exhausted(&guesser, now).expect("refused after the budget of wrong keys");
    let point = KEY_GUESSES.period / KEY_GUESSES.capacity;
    assert!(wait > point - Duration::from_millis(100) && wait <= point, "one point's refill: {wait:?}");
    assert_eq!(l.exhausted(&other, now), None, "another address is not affected");
    assert_eq!(l.exhausted(&guesser, now + point), None, "a point refilled");
}

/// A fan-out under test, with sockets to observe it. `node` picks which node a socket connects to and which
/// node's fan-out is used (one node for a single-process implementation).
#[async_trait]
pub trait FanoutHarness<E: Send + Sync> {
    type Socket: ObservedSocket + Send;
    fn nodes(&self) -> usize;
    fn fanout(&self, node: usize) -> Arc<dyn Fanout<E>>;
    /// Connects a socket of `user` (account `acc`) that is in its personal room and in `rooms`.
    async fn connect(&self, node: usize, user: &str, rooms: &[&str]) -> Self::Socket;
}

#[async_trait]
pub trait ObservedSocket {
    /// Names of the events received within `wait`, in order.
    async fn received(&mut self, wait: Duration) -> Vec<String>;
    /// Whether the socket was disconnected by the server.
    async fn closed(&mut self, wait: Duration) -> bool;
}

/// [`Fanout`]: rooms, users, exceptions, whole-user joins, leaves and disconnects, and reach — across nodes
/// when the harness has several. `event(name)` builds an event that is sent under that name.
pub async fn fanout<E: Send + Sync, H: FanoutHarness<E>>(h: &H, event: impl Fn(&str) -> E) {
    let wait = Duration::from_millis(300);
    let last = h.nodes() - 1;
    let mut ann = h.connect(0, "ann", &["r1"]).await;
    let mut ann2 = h.connect(last, "ann", &[]).await;
    let mut bob = h.connect(last, "bob", &["r1", "r2"]).await;
    let mut cid = h.connect(0, "cid", &["r2"]).await;
    let f = h.fanout(0);

    f.emit(Audience::room("acc", "r1"), event("to-r1")).await;
    assert_eq!(ann.received(wait).await, vec!["to-r1"]);
    assert_eq!(bob.received(wait).await, vec!["to-r1"]);
    assert!(ann2.received(wait).await.is_empty(), "a socket not in the room gets nothing");
    assert!(cid.received(wait).await.is_empty());

    let to = Audience {
        account: "acc".into(),
        to: vec![Target::Room("r1".into()), Target::Room("r2".into())],
        except_users: vec!["bob".into()],
    };
    f.emit(to, event("union-except")).await;
    assert_eq!(ann.received(wait).await, vec!["union-except"]);
    assert_eq!(cid.received(wait).await, vec!["union-except"]);
    assert!(bob.received(wait).await.is_empty(), "every socket of an excepted user is left out");

    f.emit(Audience::user("acc", "ann"), event("to-ann")).await;
    assert_eq!(ann.received(wait).await, vec!["to-ann"]);
    assert_eq!(ann2.received(wait).await, vec!["to-ann"], "a user target reaches all their sockets");
    assert!(cid.received(wait).await.is_empty());
    f.emit(Audience::room("other", "r1"), event("other-account")).await;
    assert!(ann.received(wait).await.is_empty(), "accounts are isolated");

    assert_eq!(f.reach(&Audience::room("acc", "r1")).await, 2);
    f.join("acc", Target::User("ann".into()), "r2").await;
    assert_eq!(f.reach(&Audience::room("acc", "r2")).await, 4, "both of ann's sockets joined r2");
    f.emit(Audience::room("acc", "r2"), event("after-join")).await;
    assert_eq!(ann.received(wait).await, vec!["after-join"]);
    assert_eq!(ann2.received(wait).await, vec!["after-join"]);
    f.leave("acc", Target::User("ann".into()), "r2").await;
    f.leave("acc", Target::Room("r1".into()), "r1").await;
    assert_eq!(f.reach(&Audience::room("acc", "r1")).await, 0, "a room's sockets can all leave it");
    f.emit(Audience::room("acc", "r2"), event("after-leave")).await;
    assert!(ann.received(wait).await.is_empty(), "ann left r2");
    assert_eq!(bob.received(wait).await, vec!["after-join", "after-leave"]);
    assert_eq!(cid.received(wait).await, vec!["after-join", "after-leave"]);
    assert!(f.reach(&Audience { account: "acc".into(), to: vec![], except_users: vec![] }).await == 0);

    h.fanout(last).disconnect("acc", Target::User("ann".into())).await;
    assert!(ann.closed(wait).await && ann2.closed(wait).await, "a whole user is disconnected");
    assert!(!cid.closed(Duration::from_millis(50)).await);
}

/// [`RateLimiter`] shared by nodes: `a` and `b` are two nodes' limiters with the same rates (`events`: 4 per
/// 10 minutes); `settle` lets them reconcile (what their background task does). One budget: what a user
/// spends on one node is gone on the other.
pub async fn rate_limiter_cluster<F: std::future::Future<Output = ()>>(
    a: Arc<dyn RateLimiter>,
    b: Arc<dyn RateLimiter>,
    settle: impl Fn() -> F,
) {
    let now = Instant::now();
    let ann = Budget::Events { account: "acc".into(), subject: "ann".into() };
    let bob = Budget::Events { account: "acc".into(), subject: "bob".into() };
    assert!(a.allow(&ann, now) && a.allow(&ann, now));
    assert!(b.allow(&ann, now));
    settle().await;
    assert!(a.allow(&ann, now), "one point of four is left, on either node");
    settle().await;
    assert!(!b.allow(&ann, now), "the budget is shared");
    assert!(!a.allow(&ann, now));
    assert!(b.allow(&bob, now), "another user has their own budget");

    // Wrong API keys spent on one node refuse the address on the other as soon as it has been heard from
    // there (one guess past the budget at most, charged as a debt).
    let guesser = Budget::KeyGuesses("203.0.113.1".parse().expect("ip"));
    for _ in 0..KEY_GUESSES.capacity {
        assert!(a.allow(&guesser, now));
    }
    assert!(a.exhausted(&guesser, now).is_some());
    settle().await;
    assert!(b.allow(&guesser, now), "the other node has not heard of the address yet");
    settle().await;
    let wait = b.exhausted(&guesser, now).expect("the other node refuses it after one round");
    assert!(wait > KEY_GUESSES.period / KEY_GUESSES.capacity, "the extra guess is a debt: {wait:?}");
    assert!(a.exhausted(&guesser, now).is_some());
}

/// [`Census`]: a dialect is present while one of its sockets is; counts never go below zero.
pub fn census(make: impl Fn() -> Arc<dyn Census>) {
    let c = make();
    assert!(!c.present(0) && !c.present(3));
    c.arrived(3);
    c.arrived(3);
    assert!(c.present(3) && !c.present(0), "dialects are counted apart");
    c.left(3);
    assert!(c.present(3), "one socket of the dialect is still there");
    c.left(3);
    assert!(!c.present(3));
    c.left(3);
    c.arrived(3);
    assert!(c.present(3), "an extra departure does not hide a later arrival");
    c.arrived(super::DIALECT_SLOTS + 5);
    assert!(!c.present(super::DIALECT_SLOTS + 5), "out-of-range dialects are ignored");
}

/// [`CallRegistry`]: atomic changes, the index by user, ringing deadlines handed out once.
pub async fn calls(make: impl Fn() -> Arc<dyn CallRegistry>) {
    let r = make();
    let open = |caller: &'static str, callee: &'static str, ring: i64| {
        move |before: Option<&Call>| -> Result<Option<Call>, CallError> {
            match before {
                Some(_) => Err(CallError::Invalid("exists".into())),
                None => Call::new("c1", caller, callee, "voice", None, t(0), t(ring)).map(Some),
            }
        }
    };
    let (before, after) = r.update("acc", "c1", &open("ann", "bob", 30_000)).await.expect("opened");
    assert!(before.is_none() && after.is_some());
    assert!(r.update("acc", "c1", &open("ann", "bob", 30_000)).await.is_err(), "a refused change changes nothing");
    assert_eq!(r.get("acc", "c1").await.map(|c| c.caller), Some("ann".to_string()));
    assert!(r.get("other", "c1").await.is_none(), "accounts are isolated");
    assert_eq!(r.calls_of("acc", "bob").await, vec!["c1"]);
    assert_eq!(r.next_deadline().await, Some(t(30_000)));

    // Accepting stops the ringing; the index follows every change.
    let accept = |before: Option<&Call>| -> Result<Option<Call>, CallError> {
        let mut c = before.cloned().ok_or_else(|| CallError::NoCall("gone".into()))?;
        c.accept("bob", t(10))?;
        c.invite("ann", "cid")?;
        Ok(Some(c))
    };
    r.update("acc", "c1", &accept).await.expect("accepted");
    assert_eq!(r.next_deadline().await, None, "an answered call rings no more");
    assert_eq!(r.calls_of("acc", "cid").await, vec!["c1"]);
    assert!(r.expired(t(60_000)).await.is_empty());
    let end = |_: Option<&Call>| -> Result<Option<Call>, CallError> { Ok(None) };
    let (before, after) = r.update("acc", "c1", &end).await.expect("ended");
    assert!(before.is_some() && after.is_none());
    assert!(r.calls_of("acc", "bob").await.is_empty() && r.get("acc", "c1").await.is_none());

    // An unanswered call is handed out once when its ringing runs out, and is gone.
    r.update("acc", "c1", &open("ann", "dan", 5_000)).await.expect("opened again");
    assert!(r.expired(t(4_999)).await.is_empty());
    let gone = r.expired(t(5_000)).await;
    assert_eq!(gone.len(), 1);
    assert_eq!((gone[0].0.as_str(), gone[0].1.id.as_str()), ("acc", "c1"));
    assert!(r.expired(t(5_000)).await.is_empty(), "handed out once");
    assert!(r.get("acc", "c1").await.is_none() && r.calls_of("acc", "ann").await.is_empty());
}

/// [`DmClaims`]: one claim confirms nothing; the counterpart's claim confirms once; claims expire.
pub async fn dm_claims(make: impl Fn() -> Arc<dyn DmClaims>) {
    let c = make();
    assert!(!c.claim("acc", "d1", "ann", "bob", t(0)).await, "a single claim confirms nothing");
    assert!(!c.claim("acc", "d1", "ann", "bob", t(10)).await, "nor does repeating it");
    assert!(!c.claim("acc", "d1", "eve", "ann", t(20)).await, "another pair's claim confirms nothing");
    assert!(!c.claim("other", "d1", "bob", "ann", t(30)).await, "accounts are isolated");
    assert!(c.claim("acc", "d1", "bob", "ann", t(40)).await, "the counterpart confirms");
    assert!(!c.claim("acc", "d1", "bob", "ann", t(50)).await, "the claims were used up");
    assert!(!c.claim("acc", "d2", "ann", "bob", t(0)).await);
    let late = t(0) + super::DM_CLAIM_TTL;
    assert!(!c.claim("acc", "d2", "bob", "ann", late).await, "an expired claim confirms nothing");
}
