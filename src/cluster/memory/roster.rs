//! [`Roster`] in memory: sockets, their rooms, and per-room occupancy behind one lock, so entering a room
//! and a racing disconnect of the same socket are ordered (the disconnect either sees the room or makes the
//! entry fail as `Closed`, never a count that stays behind).
//!
//! One entry per connected socket, so it is kept small: names that many sockets share (the account, the
//! node, the rooms) are interned and held once, a user's name once for all of their sockets, the socket id
//! once for the socket table and its user's list, and the display name and avatar (which most tokens do not
//! carry) boxed.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use parking_lot::Mutex;

use crate::cluster::{Departure, Entered, Left, Roster, SocketEntry, SocketRooms};
use crate::domain::occupancy::{Exit, Occupancy};

/// A user's display name and avatar.
type Profile = (Option<String>, Option<String>);

struct Socket {
    account: Arc<str>,
    user: Option<Arc<str>>,
    node: Arc<str>,
    /// None when the token named neither.
    profile: Option<Box<Profile>>,
    rooms: Vec<Arc<str>>,
    muted: Vec<Arc<str>>,
}

impl Socket {
    fn contains(&self, room: &str) -> bool {
        self.rooms.iter().any(|r| &**r == room)
    }

    fn entry(&self, sid: &str) -> SocketEntry {
        let (name, avatar) = self.profile.as_deref().cloned().unwrap_or_default();
        SocketEntry {
            sid: sid.to_string(),
            account: self.account.to_string(),
            user: self.user.as_deref().map(str::to_string),
            node: self.node.to_string(),
            name,
            avatar,
        }
    }

    fn socket_rooms(&self) -> SocketRooms {
        SocketRooms {
            rooms: self.rooms.iter().map(|r| r.to_string()).collect(),
            muted: self.muted.iter().map(|r| r.to_string()).collect(),
        }
    }
}

/// Names held once however many sockets use them; a name is dropped with its last user.
#[derive(Default)]
struct Names(HashSet<Arc<str>>);

impl Names {
    fn get(&mut self, name: &str) -> Arc<str> {
        if let Some(n) = self.0.get(name) {
            return n.clone();
        }
        let n: Arc<str> = name.into();
        self.0.insert(n.clone());
        n
    }

    /// A holder lets go of a name.
    fn release(&mut self, name: Arc<str>) {
        if Arc::strong_count(&name) == 2 {
            self.0.remove(&*name);
        }
    }

    /// Takes `room` out of a socket's list, releasing it; true when it was there.
    fn remove_from(&mut self, list: &mut Vec<Arc<str>>, room: &str) -> bool {
        let Some(i) = list.iter().position(|r| &**r == room) else { return false };
        let r = list.remove(i);
        self.release(r);
        true
    }

    /// Appends `room` to a socket's list, growing it by one place (a socket is in a handful of rooms).
    fn push_to(&mut self, list: &mut Vec<Arc<str>>, room: &str) {
        list.reserve_exact(1);
        list.push(self.get(room));
    }
}

/// user → their sockets, in one account.
type UserSockets = HashMap<Arc<str>, Vec<Arc<str>>>;

#[derive(Default)]
struct State {
    sockets: HashMap<Arc<str>, Box<Socket>>,
    /// account → user → their sockets.
    users: HashMap<Arc<str>, UserSockets>,
    names: Names,
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
        let State { sockets, users, names, .. } = &mut *st;
        let SocketEntry { sid, account, user, node, name, avatar } = socket;
        let account = names.get(&account);
        let sid: Arc<str> = sid.into();
        let user = user.map(|u| {
            let of_account = users.entry(account.clone()).or_default();
            let u: Arc<str> = match of_account.get_key_value(u.as_str()) {
                Some((k, _)) => k.clone(),
                None => u.into(),
            };
            let sids = of_account.entry(u.clone()).or_default();
            sids.reserve_exact(1);
            sids.push(sid.clone());
            u
        });
        let profile = (name.is_some() || avatar.is_some()).then(|| Box::new((name, avatar)));
        let entry = Socket { account, user, node: names.get(&node), profile, rooms: Vec::new(), muted: Vec::new() };
        if let Some(old) = sockets.insert(sid, Box::new(entry)) {
            names.release(old.account);
            names.release(old.node);
            old.rooms.into_iter().chain(old.muted).for_each(|r| names.release(r));
        }
    }

    async fn disconnect(&self, sid: &str, now: DateTime<Utc>) -> Option<Vec<String>> {
        let mut st = self.state.lock();
        let State { sockets, users, names, occupancy, leaving } = &mut *st;
        let socket = sockets.remove(sid)?;
        // After a wave of disconnects the table would keep its peak size.
        if sockets.capacity() > 64 && sockets.len() < sockets.capacity() / 4 {
            sockets.shrink_to_fit();
        }
        let Socket { account, user, node, profile, rooms, muted } = *socket;
        if let Some(u) = &user {
            if let Some(of_account) = users.get_mut(&*account) {
                if let Some(sids) = of_account.get_mut(&**u) {
                    sids.retain(|s| &**s != sid);
                    if sids.is_empty() {
                        of_account.remove(&**u);
                    } else {
                        sids.shrink_to_fit();
                    }
                }
                if of_account.is_empty() {
                    users.remove(&*account);
                }
            }
            for room in &rooms {
                if let Exit::Leaving(_) = occupancy.exit(&key(&account, room), u, Some(now)) {
                    let (name, avatar) = profile.as_deref().cloned().unwrap_or_default();
                    leaving.insert((account.to_string(), room.to_string(), u.to_string()), (name, avatar));
                }
            }
        }
        let out = rooms.iter().map(|r| r.to_string()).collect();
        rooms.into_iter().chain(muted).for_each(|r| names.release(r));
        names.release(account);
        names.release(node);
        Some(out)
    }

    async fn enter(&self, sid: &str, room: &str, muted: bool) -> Entered {
        let mut st = self.state.lock();
        let State { sockets, occupancy, leaving, names, .. } = &mut *st;
        let Some(socket) = sockets.get_mut(sid) else { return Entered::Closed };
        if socket.contains(room) {
            return Entered::Already;
        }
        if let Some(u) = &socket.user {
            leaving.remove(&(socket.account.to_string(), room.to_string(), u.to_string()));
        }
        names.push_to(&mut socket.rooms, room);
        if muted {
            names.push_to(&mut socket.muted, room);
        }
        match &socket.user {
            Some(u) if occupancy.enter(&key(&socket.account, room), u.clone()) => Entered::Arrived,
            _ => Entered::Present,
        }
    }

    async fn exit(&self, sid: &str, room: &str) -> Left {
        let mut st = self.state.lock();
        let State { sockets, occupancy, names, .. } = &mut *st;
        let Some(socket) = sockets.get_mut(sid) else { return Left::NotIn };
        if !names.remove_from(&mut socket.rooms, room) {
            return Left::NotIn;
        }
        names.remove_from(&mut socket.muted, room);
        match &socket.user {
            Some(u) if occupancy.exit(&key(&socket.account, room), u, None) == Exit::Left => Left::UserLeft,
            _ => Left::StillPresent,
        }
    }

    async fn departures(&self, now: DateTime<Utc>) -> Vec<Departure> {
        let mut st = self.state.lock();
        let due = st.occupancy.due(now);
        due.into_iter()
            .map(|((account, room), user)| {
                let (name, avatar) =
                    st.leaving.remove(&(account.clone(), room.clone(), user.to_string())).unwrap_or_default();
                Departure { account, room, user: user.to_string(), name, avatar }
            })
            .collect()
    }

    async fn next_departure(&self) -> Option<DateTime<Utc>> {
        self.state.lock().occupancy.next_due()
    }

    async fn set_muted(&self, account: &str, user: &str, room: &str, muted: bool) {
        let mut st = self.state.lock();
        let State { sockets, users, names, .. } = &mut *st;
        for sid in users.get(account).and_then(|u| u.get(user)).into_iter().flatten() {
            if let Some(s) = sockets.get_mut(sid)
                && s.contains(room)
            {
                names.remove_from(&mut s.muted, room);
                if muted {
                    names.push_to(&mut s.muted, room);
                }
            }
        }
    }

    async fn rooms_of(&self, sid: &str) -> Option<SocketRooms> {
        self.state.lock().sockets.get(sid).map(|s| s.socket_rooms())
    }

    async fn sockets_of(&self, account: &str, user: &str) -> Vec<String> {
        let st = self.state.lock();
        st.users
            .get(account)
            .and_then(|u| u.get(user))
            .map_or_else(Vec::new, |s| s.iter().map(|s| s.to_string()).collect())
    }

    async fn users_in(&self, account: &str, room: &str) -> Vec<String> {
        self.state.lock().occupancy.users_in(&key(account, room))
    }

    async fn present(&self, account: &str, room: &str) -> usize {
        self.state.lock().occupancy.present(&key(account, room))
    }

    async fn sockets(&self, account: Option<&str>) -> Vec<SocketEntry> {
        let st = self.state.lock();
        st.sockets
            .iter()
            .filter(|(_, s)| account.is_none_or(|a| &*s.account == a))
            .map(|(sid, s)| s.entry(sid))
            .collect()
    }

    async fn connections(&self) -> usize {
        self.state.lock().sockets.len()
    }

    async fn users_online(&self, account: Option<&str>) -> usize {
        let st = self.state.lock();
        match account {
            None => st.users.values().map(HashMap::len).sum(),
            Some(a) => st.users.get(a).map_or(0, HashMap::len),
        }
    }

    async fn forget_room(&self, account: &str, room: &str) {
        let mut st = self.state.lock();
        let State { sockets, occupancy, leaving, names, .. } = &mut *st;
        occupancy.forget(&key(account, room));
        leaving.retain(|(a, r, _), _| a != account || r != room);
        for s in sockets.values_mut().filter(|s| &*s.account == account) {
            names.remove_from(&mut s.rooms, room);
            names.remove_from(&mut s.muted, room);
        }
    }

    async fn purge_node(&self, node: &str, now: DateTime<Utc>) -> Vec<SocketEntry> {
        let gone: Vec<SocketEntry> = {
            let st = self.state.lock();
            st.sockets.iter().filter(|(_, s)| &*s.node == node).map(|(sid, s)| s.entry(sid)).collect()
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
