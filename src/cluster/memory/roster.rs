//! [`Roster`] in memory: sockets, their rooms, and per-room occupancy behind one lock, so entering a room
//! and a racing disconnect of the same socket are ordered (the disconnect either sees the room or makes the
//! entry fail as `Closed`, never a count that stays behind).

use std::collections::HashMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use parking_lot::Mutex;

use crate::cluster::{Departure, Entered, Left, Roster, SocketEntry, SocketRooms};
use crate::domain::occupancy::{Exit, Occupancy};

/// A user's display name and avatar.
type Profile = (Option<String>, Option<String>);

struct Socket {
    entry: SocketEntry,
    rooms: SocketRooms,
}

#[derive(Default)]
struct State {
    sockets: HashMap<String, Socket>,
    /// (account, user) → their sockets.
    users: HashMap<(String, String), Vec<String>>,
    occupancy: Occupancy,
    /// (account, room, user) in grace → the name and avatar to announce their departure with.
    leaving: HashMap<(String, String, String), Profile>,
}

pub struct MemoryRoster {
    state: Mutex<State>,
}

impl MemoryRoster {
    /// `grace`: how long a user whose last socket disconnected stays present in its rooms.
    pub fn new(grace: std::time::Duration) -> MemoryRoster {
        MemoryRoster { state: Mutex::new(State { occupancy: Occupancy::new(grace), ..Default::default() }) }
    }
}

fn key(account: &str, room: &str) -> (String, String) {
    (account.to_string(), room.to_string())
}

#[async_trait]
impl Roster for MemoryRoster {
    async fn connect(&self, socket: SocketEntry) {
        let mut st = self.state.lock();
        if let Some(u) = &socket.user {
            st.users.entry(key(&socket.account, u)).or_default().push(socket.sid.clone());
        }
        st.sockets.insert(socket.sid.clone(), Socket { entry: socket, rooms: SocketRooms::default() });
    }

    async fn disconnect(&self, sid: &str, now: DateTime<Utc>) -> Option<Vec<String>> {
        let mut st = self.state.lock();
        let socket = st.sockets.remove(sid)?;
        let SocketEntry { account, user, name, avatar, .. } = socket.entry;
        if let Some(u) = &user {
            let k = key(&account, u);
            if let Some(sids) = st.users.get_mut(&k) {
                sids.retain(|s| s != sid);
                if sids.is_empty() {
                    st.users.remove(&k);
                }
            }
            for room in &socket.rooms.rooms {
                if let Exit::Leaving(_) = st.occupancy.exit(&key(&account, room), u, Some(now)) {
                    st.leaving.insert((account.clone(), room.clone(), u.clone()), (name.clone(), avatar.clone()));
                }
            }
        }
        Some(socket.rooms.rooms)
    }

    async fn enter(&self, sid: &str, room: &str, muted: bool) -> Entered {
        let mut st = self.state.lock();
        let State { sockets, occupancy, leaving, .. } = &mut *st;
        let Some(socket) = sockets.get_mut(sid) else { return Entered::Closed };
        if socket.rooms.contains(room) {
            return Entered::Already;
        }
        if let Some(u) = &socket.entry.user {
            leaving.remove(&(socket.entry.account.clone(), room.to_string(), u.clone()));
        }
        socket.rooms.rooms.push(room.to_string());
        if muted {
            socket.rooms.muted.push(room.to_string());
        }
        match &socket.entry.user {
            Some(u) if occupancy.enter(&key(&socket.entry.account, room), u) => Entered::Arrived,
            _ => Entered::Present,
        }
    }

    async fn exit(&self, sid: &str, room: &str) -> Left {
        let mut st = self.state.lock();
        let State { sockets, occupancy, .. } = &mut *st;
        let Some(socket) = sockets.get_mut(sid) else { return Left::NotIn };
        if !socket.rooms.contains(room) {
            return Left::NotIn;
        }
        socket.rooms.rooms.retain(|r| r != room);
        socket.rooms.muted.retain(|r| r != room);
        match &socket.entry.user {
            Some(u) if occupancy.exit(&key(&socket.entry.account, room), u, None) == Exit::Left => Left::UserLeft,
            _ => Left::StillPresent,
        }
    }

    async fn departures(&self, now: DateTime<Utc>) -> Vec<Departure> {
        let mut st = self.state.lock();
        let due = st.occupancy.due(now);
        due.into_iter()
            .map(|((account, room), user)| {
                let (name, avatar) =
                    st.leaving.remove(&(account.clone(), room.clone(), user.clone())).unwrap_or_default();
                Departure { account, room, user, name, avatar }
            })
            .collect()
    }

    async fn next_departure(&self) -> Option<DateTime<Utc>> {
        self.state.lock().occupancy.next_due()
    }

    async fn set_muted(&self, account: &str, user: &str, room: &str, muted: bool) {
        let mut st = self.state.lock();
        let State { sockets, users, .. } = &mut *st;
        for sid in users.get(&key(account, user)).into_iter().flatten() {
            if let Some(s) = sockets.get_mut(sid)
                && s.rooms.contains(room)
            {
                s.rooms.muted.retain(|r| r != room);
                if muted {
                    s.rooms.muted.push(room.to_string());
                }
            }
        }
    }

    async fn rooms_of(&self, sid: &str) -> Option<SocketRooms> {
        self.state.lock().sockets.get(sid).map(|s| s.rooms.clone())
    }

    async fn sockets_of(&self, account: &str, user: &str) -> Vec<String> {
        self.state.lock().users.get(&key(account, user)).cloned().unwrap_or_default()
    }

    async fn users_in(&self, account: &str, room: &str) -> Vec<String> {
        self.state.lock().occupancy.users_in(&key(account, room))
    }

    async fn present(&self, account: &str, room: &str) -> usize {
        self.state.lock().occupancy.present(&key(account, room))
    }

    async fn sockets(&self, account: Option<&str>) -> Vec<SocketEntry> {
        let st = self.state.lock();
        st.sockets.values().filter(|s| account.is_none_or(|a| s.entry.account == a)).map(|s| s.entry.clone()).collect()
    }

    async fn connections(&self) -> usize {
        self.state.lock().sockets.len()
    }

    async fn users_online(&self, account: Option<&str>) -> usize {
        let st = self.state.lock();
        match account {
            None => st.users.len(),
            Some(a) => st.users.keys().filter(|(acc, _)| acc == a).count(),
        }
    }

    async fn forget_room(&self, account: &str, room: &str) {
        let mut st = self.state.lock();
        st.occupancy.forget(&key(account, room));
        st.leaving.retain(|(a, r, _), _| a != account || r != room);
        for s in st.sockets.values_mut().filter(|s| s.entry.account == account) {
            s.rooms.rooms.retain(|r| r != room);
            s.rooms.muted.retain(|r| r != room);
        }
    }

    async fn purge_node(&self, node: &str, now: DateTime<Utc>) -> Vec<SocketEntry> {
        let gone: Vec<SocketEntry> = {
            let st = self.state.lock();
            st.sockets.values().filter(|s| s.entry.node == node).map(|s| s.entry.clone()).collect()
        };
        for s in &gone {
            self.disconnect(&s.sid, now).await;
        }
        gone
    }
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn meets_the_roster_contract() {
        crate::cluster::suite::roster(|grace| std::sync::Arc::new(super::MemoryRoster::new(grace))).await;
    }
}
