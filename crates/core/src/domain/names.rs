//! Accounts and room names: parsing, normalisation and the Socket.IO room keys that isolate accounts.

use std::fmt;

/// The account every connection without an explicit one belongs to.
pub const DEFAULT_ACCOUNT: &str = "primary";
const MAX_ACCOUNT_LEN: usize = 64;
/// Longest room name accepted anywhere (ids inside names included).
pub const MAX_ROOM_NAME_LEN: usize = 256;

/// Normalises an account (nself app) name: lowercase; runs of anything but `[a-z0-9_-]` become `-`.
/// Empty or missing means [`DEFAULT_ACCOUNT`].
pub fn normalize_account(raw: Option<&str>) -> String {
    let raw = raw.unwrap_or("").trim().to_lowercase();
    let mut out = String::with_capacity(raw.len());
    let mut in_run = false;
    for c in raw.chars() {
        if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
            out.push(c);
            in_run = false;
        } else if !in_run {
            out.push('-');
            in_run = true;
        }
    }
    out.truncate(MAX_ACCOUNT_LEN);
    if out.is_empty() || out.chars().all(|c| c == '-') { DEFAULT_ACCOUNT.to_string() } else { out }
}

/// The Socket.IO room that carries `room` for `account`. Account names never contain `/`, so two accounts'
/// rooms can never collide (the original shared one namespace between apps).
pub fn room_key(account: &str, room: &str) -> String {
    let mut key = String::with_capacity(account.len() + 1 + room.len());
    key.push_str(account);
    key.push('/');
    key.push_str(room);
    key
}

/// The bare id nchat knows a room by: `channel:<id>` → `<id>`, any other room → its name.
pub fn channel_id_of(room: &str) -> &str {
    room.strip_prefix("channel:").unwrap_or(room)
}

/// The personal room every socket of a user joins.
pub fn user_room(user_id: &str) -> String {
    format!("user:{user_id}")
}

/// A room name split at its FIRST colon: `dm:alice:bob` is type `dm`, id `alice:bob`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomName {
    pub name: String,
    /// The prefix as given (`channel`, `dm`, `group-dm`, `thread`, `user`, ...); `channel` for a bare name.
    pub kind: String,
    /// The text after the first colon; the whole name for a bare name.
    pub id: String,
    pub bare: bool,
}

impl RoomName {
    pub fn parse(name: &str) -> Result<RoomName, String> {
        let name = name.trim();
        if name.is_empty() {
            return Err("room name is empty".into());
        }
        if name.len() > MAX_ROOM_NAME_LEN {
            return Err(format!("room name is longer than {MAX_ROOM_NAME_LEN} bytes"));
        }
        if name.chars().any(|c| c.is_control()) {
            return Err("room name contains control characters".into());
        }
        match name.split_once(':') {
            Some((kind, id)) => {
                if kind.is_empty() || id.is_empty() {
                    return Err(format!("room name {name:?} needs text on both sides of its first colon"));
                }
                Ok(RoomName { name: name.to_string(), kind: kind.to_string(), id: id.to_string(), bare: false })
            }
            None => Ok(RoomName { name: name.to_string(), kind: "channel".into(), id: name.to_string(), bare: true }),
        }
    }

    /// A channel id as nchat sends it (`channelId`) names the room `channel:<id>`; a full room name is kept.
    pub fn from_channel_id(channel_id: &str) -> Result<RoomName, String> {
        let id = channel_id.trim();
        if id.starts_with("channel:") { RoomName::parse(id) } else { RoomName::parse(&format!("channel:{id}")) }
    }

    /// The id nchat knows the room by: the bare id of `channel:<id>`, the room name otherwise.
    pub fn channel_id(&self) -> &str {
        if self.kind == "channel" && !self.bare { &self.id } else { &self.name }
    }

    /// The user a `user:<id>` room belongs to.
    pub fn personal_owner(&self) -> Option<&str> {
        (self.kind == "user").then_some(self.id.as_str())
    }

    /// The two participants of a canonical `dm:<a>:<b>` room (ids sorted, no further colon).
    pub fn dm_pair(&self) -> Option<(&str, &str)> {
        if self.kind != "dm" {
            return None;
        }
        let (a, b) = self.id.split_once(':')?;
        (!a.is_empty() && !b.is_empty() && !b.contains(':') && a <= b).then_some((a, b))
    }

    /// The stored room type: the contract's row types where the prefix is one of them.
    pub fn row_type(&self) -> &str {
        match self.kind.as_str() {
            "dm" | "group-dm" | "group" | "thread" | "broadcast" | "channel" | "user" => &self.kind,
            _ => "channel",
        }
    }
}

impl fmt::Display for RoomName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

/// The canonical dm room of two users.
pub fn dm_room(a: &str, b: &str) -> String {
    if a <= b { format!("dm:{a}:{b}") } else { format!("dm:{b}:{a}") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accounts_are_normalised() {
        assert_eq!(normalize_account(None), "primary");
        assert_eq!(normalize_account(Some("  ")), "primary");
        assert_eq!(normalize_account(Some("My App!!v2")), "my-app-v2");
        assert_eq!(normalize_account(Some("a/b")), "a-b");
        assert_eq!(normalize_account(Some("tenant_1")), "tenant_1");
        assert_eq!(normalize_account(Some("///")), "primary");
    }

    #[test]
    fn type_is_text_before_first_colon() {
        let r = RoomName::parse("dm:alice:bob").unwrap();
        assert_eq!((r.kind.as_str(), r.id.as_str()), ("dm", "alice:bob"));
        assert_eq!(r.dm_pair(), Some(("alice", "bob")));
        assert_eq!(RoomName::parse("dm:bob:alice").unwrap().dm_pair(), None, "unsorted ids are not canonical");
        let g = RoomName::parse("general").unwrap();
        assert!(g.bare);
        assert_eq!(g.kind, "channel");
        assert_eq!(g.channel_id(), "general");
        assert_eq!(RoomName::parse("group-dm:x").unwrap().kind, "group-dm");
        assert_eq!(RoomName::parse("channel:c1").unwrap().channel_id(), "c1");
        assert_eq!(RoomName::parse("user:u1").unwrap().personal_owner(), Some("u1"));
    }

    #[test]
    fn bad_names_are_refused() {
        assert!(RoomName::parse("").is_err());
        assert!(RoomName::parse(":x").is_err());
        assert!(RoomName::parse("dm:").is_err());
        assert!(RoomName::parse(&"a".repeat(300)).is_err());
        assert!(RoomName::parse("a\nb").is_err());
    }

    #[test]
    fn channel_ids_map_to_channel_rooms() {
        assert_eq!(RoomName::from_channel_id("c1").unwrap().name, "channel:c1");
        assert_eq!(RoomName::from_channel_id("channel:c1").unwrap().name, "channel:c1");
        assert_eq!(dm_room("bob", "alice"), "dm:alice:bob");
        assert_eq!(room_key("acme", "general"), "acme/general");
    }

    #[test]
    fn nchat_knows_channels_by_their_bare_id_and_other_rooms_by_name() {
        assert_eq!(channel_id_of("channel:c1"), "c1");
        assert_eq!(channel_id_of("dm:alice:bob"), "dm:alice:bob");
        assert_eq!(channel_id_of("general"), "general");
        assert_eq!(RoomName::parse("dm:alice:bob").unwrap().channel_id(), "dm:alice:bob", "not the id after the colon");
        assert_eq!(RoomName::parse("thread:t1").unwrap().channel_id(), "thread:t1");
    }

    #[test]
    fn a_users_personal_room_is_owned_by_that_user() {
        assert_eq!(user_room("u1"), "user:u1");
        assert_eq!(RoomName::parse(&user_room("u1")).unwrap().personal_owner(), Some("u1"));
    }

    #[test]
    fn names_may_be_exactly_the_longest_length() {
        assert!(RoomName::parse(&"a".repeat(MAX_ROOM_NAME_LEN)).is_ok());
        assert!(RoomName::parse(&"a".repeat(MAX_ROOM_NAME_LEN + 1)).is_err());
    }

    #[test]
    fn stored_row_types_are_the_contracts_or_channel() {
        for (name, row) in [
            ("dm:alice:bob", "dm"),
            ("group-dm:x", "group-dm"),
            ("broadcast:news", "broadcast"),
            ("thread:t1", "thread"),
            ("user:u1", "user"),
            ("general", "channel"),
            ("custom:x", "channel"),
        ] {
            assert_eq!(RoomName::parse(name).unwrap().row_type(), row, "{name}");
        }
        assert_eq!(RoomName::parse(" dm:alice:bob ").unwrap().to_string(), "dm:alice:bob", "displayed as its name");
    }
}
