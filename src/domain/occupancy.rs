//! Which users are present in which room on this node, counted by sockets, so that `user:joined` and
//! `user:left` fire once per user (first socket in, last socket out) and a quick reconnect fires neither.

use std::collections::HashMap;

#[derive(Debug, Default)]
struct Entry {
    sockets: u32,
    /// Set while the last socket is gone but the offline grace has not run out.
    pending_leave: Option<u64>,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Exit {
    /// Other sockets of the user are still in the room.
    StillPresent,
    /// The user left now (explicit leave of the last socket).
    Left,
    /// The last socket disconnected: confirm with this token after the grace.
    Pending(u64),
    /// The socket was not counted in this room.
    NotPresent,
}

#[derive(Debug, Default)]
pub struct Occupancy {
    rooms: HashMap<String, HashMap<String, Entry>>,
    next_token: u64,
}

impl Occupancy {
    /// A socket of `user` entered `room`. True when this makes the user newly present (announce it).
    pub fn enter(&mut self, room: &str, user: &str) -> bool {
        let entry = self.rooms.entry(room.to_string()).or_default().entry(user.to_string()).or_default();
        entry.sockets += 1;
        let back_within_grace = entry.pending_leave.take().is_some();
        entry.sockets == 1 && !back_within_grace
    }

    /// A socket of `user` left `room`, by an explicit leave (`graceful == false`) or by disconnecting.
    pub fn exit(&mut self, room: &str, user: &str, disconnect: bool) -> Exit {
        let Some(users) = self.rooms.get_mut(room) else { return Exit::NotPresent };
        let Some(entry) = users.get_mut(user) else { return Exit::NotPresent };
        if entry.sockets == 0 {
            return Exit::NotPresent;
        }
        entry.sockets -= 1;
        if entry.sockets > 0 {
            return Exit::StillPresent;
        }
        if disconnect {
            self.next_token += 1;
            entry.pending_leave = Some(self.next_token);
            Exit::Pending(self.next_token)
        } else {
            users.remove(user);
            if users.is_empty() {
                self.rooms.remove(room);
            }
            Exit::Left
        }
    }

    /// After the grace: true when the user did not come back (announce `user:left`).
    pub fn confirm_leave(&mut self, room: &str, user: &str, token: u64) -> bool {
        let Some(users) = self.rooms.get_mut(room) else { return false };
        match users.get(user) {
            Some(e) if e.sockets == 0 && e.pending_leave == Some(token) => {
                users.remove(user);
                if users.is_empty() {
                    self.rooms.remove(room);
                }
                true
            }
            _ => false,
        }
    }

    /// Users with at least one socket in the room.
    pub fn present(&self, room: &str) -> usize {
        self.rooms.get(room).map_or(0, |u| u.values().filter(|e| e.sockets > 0).count())
    }

    /// Forgets a room entirely (it was deleted).
    pub fn forget(&mut self, room: &str) {
        self.rooms.remove(room);
    }

    /// Users with at least one socket in the room.
    pub fn users_in(&self, room: &str) -> Vec<String> {
        self.rooms
            .get(room)
            .map_or_else(Vec::new, |u| u.iter().filter(|(_, e)| e.sockets > 0).map(|(k, _)| k.clone()).collect())
    }

    pub fn is_present(&self, room: &str, user: &str) -> bool {
        self.rooms.get(room).and_then(|u| u.get(user)).is_some_and(|e| e.sockets > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_socket_in_last_socket_out() {
        let mut o = Occupancy::default();
        assert!(o.enter("r", "a"));
        assert!(!o.enter("r", "a"), "a second device is not a new arrival");
        assert_eq!(o.exit("r", "a", false), Exit::StillPresent);
        assert_eq!(o.exit("r", "a", false), Exit::Left);
        assert_eq!(o.exit("r", "a", false), Exit::NotPresent);
        assert!(o.enter("r", "a"));
    }

    #[test]
    fn quick_reconnect_announces_nothing() {
        let mut o = Occupancy::default();
        o.enter("r", "a");
        let Exit::Pending(token) = o.exit("r", "a", true) else { panic!() };
        assert!(!o.enter("r", "a"), "back within the grace: no user:joined");
        assert!(!o.confirm_leave("r", "a", token), "and no user:left");
        assert_eq!(o.present("r"), 1);
    }

    #[test]
    fn leave_is_confirmed_after_grace() {
        let mut o = Occupancy::default();
        o.enter("r", "a");
        let Exit::Pending(token) = o.exit("r", "a", true) else { panic!() };
        assert_eq!(o.present("r"), 0);
        assert!(o.confirm_leave("r", "a", token));
        assert!(o.enter("r", "a"), "a later return is announced again");
    }
}
