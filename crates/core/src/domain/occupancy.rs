//! Which users are present in which room, counted by sockets, so that `user:joined` and `user:left` fire once
//! per user (first socket in, last socket out), and a quick reconnect fires neither: when the last socket of
//! a user disconnects, the user stays present for the offline grace and leaves only if no socket came back.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};

/// `(account, room name)`.
pub type RoomKey = (String, String);

#[derive(Debug, Default)]
struct Entry {
    sockets: u32,
    /// Set while the last socket is gone but the offline grace has not run out.
    leaving_at: Option<DateTime<Utc>>,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Exit {
    /// Other sockets of the user are still in the room.
    StillPresent,
    /// The user left now (explicit leave of the last socket).
    Left,
    /// The last socket disconnected: the user leaves at this time unless a socket comes back.
    Leaving(DateTime<Utc>),
    /// The socket was not counted in this room.
    NotPresent,
}

#[derive(Debug, Default)]
pub struct Occupancy {
    grace: Duration,
    /// room → user → their entry; the user's name is the caller's (shared with its other records).
    rooms: HashMap<RoomKey, HashMap<Arc<str>, Entry>>,
    /// Graces running: `(until, room, user)`, earliest first.
    leaving: BTreeSet<(DateTime<Utc>, RoomKey, Arc<str>)>,
}

impl Occupancy {
    pub fn new(grace: std::time::Duration) -> Occupancy {
        let grace = Duration::from_std(grace).unwrap_or(Duration::MAX);
        Occupancy { grace, ..Default::default() }
    }

    /// A socket of `user` entered `room`. True when this makes the user newly present (announce it).
    pub fn enter(&mut self, room: &RoomKey, user: impl Into<Arc<str>> + AsRef<str>) -> bool {
        let users = self.rooms.entry(room.clone()).or_default();
        let user: Arc<str> = match users.get_key_value(user.as_ref()) {
            Some((k, _)) => k.clone(),
            None => user.into(),
        };
        let entry = users.entry(user.clone()).or_default();
        entry.sockets += 1;
        let back_within_grace = match entry.leaving_at.take() {
            Some(at) => {
                self.leaving.remove(&(at, room.clone(), user));
                true
            }
            None => false,
        };
        entry.sockets == 1 && !back_within_grace
    }

    /// A socket of `user` left `room`: by an explicit leave (`disconnected_at` None), or by disconnecting at
    /// that time (the user's last socket starts the grace).
    pub fn exit(&mut self, room: &RoomKey, user: &str, disconnected_at: Option<DateTime<Utc>>) -> Exit {
        let Some(users) = self.rooms.get_mut(room) else { return Exit::NotPresent };
        let Some(name) = users.get_key_value(user).map(|(k, _)| k.clone()) else { return Exit::NotPresent };
        let entry = users.get_mut(user).expect("present");
        if entry.sockets == 0 {
            return Exit::NotPresent;
        }
        entry.sockets -= 1;
        if entry.sockets > 0 {
            return Exit::StillPresent;
        }
        match disconnected_at {
            Some(now) => {
                let until = now.checked_add_signed(self.grace).unwrap_or(DateTime::<Utc>::MAX_UTC);
                entry.leaving_at = Some(until);
                self.leaving.insert((until, room.clone(), name));
                Exit::Leaving(until)
            }
            None => {
                users.remove(user);
                if users.is_empty() {
                    self.rooms.remove(room);
                }
                Exit::Left
            }
        }
    }

    /// Users whose grace ran out by `now` and who did not come back: they left (announce `user:left`).
    pub fn due(&mut self, now: DateTime<Utc>) -> Vec<(RoomKey, Arc<str>)> {
        let mut out = Vec::new();
        while self.leaving.first().is_some_and(|(t, _, _)| *t <= now) {
            let (_, room, user) = self.leaving.pop_first().expect("non-empty");
            if let Some(users) = self.rooms.get_mut(&room) {
                users.remove(&user);
                if users.is_empty() {
                    self.rooms.remove(&room);
                }
            }
            out.push((room, user));
        }
        out
    }

    /// When the next grace runs out.
    pub fn next_due(&self) -> Option<DateTime<Utc>> {
        self.leaving.first().map(|(t, _, _)| *t)
    }

    /// Users with at least one socket in the room.
    pub fn present(&self, room: &RoomKey) -> usize {
        self.rooms.get(room).map_or(0, |u| u.values().filter(|e| e.sockets > 0).count())
    }

    /// Forgets a room entirely (it was deleted), its graces included.
    pub fn forget(&mut self, room: &RoomKey) {
        if let Some(users) = self.rooms.remove(room) {
            for (user, e) in users {
                if let Some(at) = e.leaving_at {
                    self.leaving.remove(&(at, room.clone(), user));
                }
            }
        }
    }

    /// Users with at least one socket in the room.
    pub fn users_in(&self, room: &RoomKey) -> Vec<String> {
        self.rooms
            .get(room)
            .map_or_else(Vec::new, |u| u.iter().filter(|(_, e)| e.sockets > 0).map(|(k, _)| k.to_string()).collect())
    }

    pub fn is_present(&self, room: &RoomKey, user: &str) -> bool {
        self.rooms.get(room).and_then(|u| u.get(user)).is_some_and(|e| e.sockets > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn room() -> RoomKey {
        ("acc".into(), "r".into())
    }

    fn t(ms: i64) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(1_700_000_000_000 + ms).unwrap()
    }

    fn occ() -> Occupancy {
        Occupancy::new(std::time::Duration::from_secs(5))
    }

    #[test]
    fn first_socket_in_last_socket_out() {
        let mut o = occ();
        assert!(o.enter(&room(), "a"));
        assert!(!o.enter(&room(), "a"), "a second device is not a new arrival");
        assert_eq!(o.exit(&room(), "a", None), Exit::StillPresent);
        assert_eq!(o.exit(&room(), "a", None), Exit::Left);
        assert_eq!(o.exit(&room(), "a", None), Exit::NotPresent);
        assert!(o.enter(&room(), "a"));
    }

    #[test]
    fn quick_reconnect_announces_nothing() {
        let mut o = occ();
        o.enter(&room(), "a");
        assert_eq!(o.exit(&room(), "a", Some(t(0))), Exit::Leaving(t(5000)));
        assert_eq!(o.next_due(), Some(t(5000)));
        assert!(!o.enter(&room(), "a"), "back within the grace: no user:joined");
        assert_eq!(o.next_due(), None, "and the grace is cancelled");
        assert!(o.due(t(10_000)).is_empty(), "so no user:left");
        assert_eq!(o.present(&room()), 1);
    }

    #[test]
    fn leave_happens_when_the_grace_runs_out() {
        let mut o = occ();
        o.enter(&room(), "a");
        o.enter(&room(), "b");
        o.exit(&room(), "a", Some(t(0)));
        assert_eq!(o.present(&room()), 1, "a user in grace is not counted as present");
        assert!(!o.is_present(&room(), "a"));
        assert!(o.due(t(4999)).is_empty(), "not before the grace ends");
        assert_eq!(o.due(t(5000)), vec![(room(), Arc::from("a"))]);
        assert!(o.due(t(6000)).is_empty(), "announced once");
        assert!(o.enter(&room(), "a"), "a later return is announced again");
    }

    #[test]
    fn forgetting_a_room_cancels_its_graces() {
        let mut o = occ();
        o.enter(&room(), "a");
        o.exit(&room(), "a", Some(t(0)));
        o.forget(&room());
        assert_eq!(o.next_due(), None);
        assert!(o.due(t(10_000)).is_empty());
        assert!(o.users_in(&room()).is_empty());
    }
}
