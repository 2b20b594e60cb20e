//! Who may join, read and write which room (docs/protocol.md §5, §6). Pure decisions over facts the caller loads.

use super::names::RoomName;
use crate::error::{AppError, ErrorCode};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Visibility {
    Public,
    Private,
    Secret,
}

impl Visibility {
    pub fn parse(s: &str) -> Option<Visibility> {
        match s {
            "public" => Some(Visibility::Public),
            "private" => Some(Visibility::Private),
            "secret" => Some(Visibility::Secret),
            _ => None,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Visibility::Public => "public",
            Visibility::Private => "private",
            Visibility::Secret => "secret",
        }
    }
}

pub const ROLES: &[&str] = &["admin", "moderator", "member", "guest"];
pub const ROOM_TYPES: &[&str] = &["channel", "dm", "group", "group-dm", "thread", "broadcast"];

/// A visibility given by name; public when none is given.
pub fn parse_visibility(v: Option<&str>) -> Result<Visibility, AppError> {
    match v {
        None => Ok(Visibility::Public),
        Some(s) => Visibility::parse(s)
            .ok_or_else(|| AppError::validation(format!("visibility must be public, private or secret, not {s:?}"))),
    }
}

/// What the store knows about a room.
#[derive(Debug, Clone)]
pub struct RoomFacts {
    pub visibility: Visibility,
    pub max_members: Option<i64>,
    pub is_active: bool,
    pub member_count: i64,
}

/// What the store knows about a user's membership of a room.
#[derive(Debug, Clone)]
pub struct MemberFacts {
    pub role: String,
    pub muted: bool,
    pub banned: bool,
}

/// The outcome of an allowed join.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinPlan {
    /// Create the room first (auto-creation), with this visibility.
    pub create: Option<Visibility>,
    /// Record the user as a persisted member (anonymous sockets and personal rooms are not).
    pub persist: bool,
}

/// Decides a `room:join`. `user` is None for an anonymous socket.
pub fn plan_join(
    user: Option<&str>,
    room: &RoomName,
    facts: Option<&RoomFacts>,
    member: Option<&MemberFacts>,
    auto_create: bool,
) -> Result<JoinPlan, AppError> {
    if let Some(owner) = room.personal_owner() {
        return match user {
            Some(u) if u == owner => Ok(JoinPlan { create: None, persist: false }),
            _ => Err(AppError::forbidden(format!("{} is the personal room of another user", room.name))),
        };
    }
    if room.kind == "dm" {
        let Some(u) = user else {
            return Err(AppError::new(ErrorCode::Unauthenticated, "anonymous sockets cannot join direct messages"));
        };
        if let Some((a, b)) = room.dm_pair() {
            if u != a && u != b {
                return Err(AppError::forbidden(format!("{} is a direct message between {a} and {b}", room.name)));
            }
        } else if member.is_none() {
            return Err(AppError::not_a_member(&room.name));
        }
    }
    if member.is_some_and(|m| m.banned) {
        return Err(AppError::forbidden(format!("you are banned from {}", room.name)));
    }
    let Some(facts) = facts else {
        let can_create = auto_create && user.is_some() && (room.kind != "dm" || room.dm_pair().is_some());
        if !can_create {
            return Err(AppError::room_not_found(&room.name));
        }
        let visibility =
            if matches!(room.kind.as_str(), "dm" | "group-dm") { Visibility::Private } else { Visibility::Public };
        return Ok(JoinPlan { create: Some(visibility), persist: true });
    };
    if !facts.is_active {
        return Err(AppError::room_not_found(&room.name));
    }
    let dm_participant = room.dm_pair().is_some();
    if facts.visibility != Visibility::Public && member.is_none() && !dm_participant {
        return Err(AppError::not_a_member(&room.name));
    }
    if member.is_none()
        && let Some(max) = facts.max_members
        && facts.member_count >= max
    {
        return Err(AppError::forbidden(format!("{} is full ({max} members)", room.name)));
    }
    Ok(JoinPlan { create: None, persist: user.is_some() && member.is_none() })
}

/// Decides whether `user` may send to (or type into) a room.
pub fn check_write(user: Option<&str>, room: &RoomName, member: Option<&MemberFacts>) -> Result<(), AppError> {
    if user.is_none() {
        return Err(AppError::new(ErrorCode::Unauthenticated, "anonymous sockets can read but not write"));
    }
    match member {
        None => Err(AppError::not_a_member(&room.name)),
        Some(m) if m.banned => Err(AppError::forbidden(format!("you are banned from {}", room.name))),
        Some(m) if m.muted => Err(AppError::forbidden(format!("you are muted in {}", room.name))),
        Some(m) if m.role == "guest" && room.kind == "broadcast" => {
            Err(AppError::forbidden(format!("guests cannot write to {}", room.name)))
        }
        Some(_) => Ok(()),
    }
}

/// Whether a member may edit or delete other people's messages.
pub fn can_moderate(member: Option<&MemberFacts>) -> bool {
    member.is_some_and(|m| !m.banned && (m.role == "admin" || m.role == "moderator"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn room(n: &str) -> RoomName {
        RoomName::parse(n).unwrap()
    }
    fn facts(v: Visibility) -> RoomFacts {
        RoomFacts { visibility: v, max_members: None, is_active: true, member_count: 1 }
    }
    fn member() -> MemberFacts {
        MemberFacts { role: "member".into(), muted: false, banned: false }
    }

    #[test]
    fn personal_rooms_belong_to_their_user() {
        assert!(plan_join(Some("a"), &room("user:a"), None, None, true).is_ok());
        let e = plan_join(Some("b"), &room("user:a"), None, None, true).unwrap_err();
        assert_eq!(e.code, ErrorCode::Forbidden);
    }

    #[test]
    fn public_rooms_are_created_on_first_join_when_allowed() {
        let p = plan_join(Some("a"), &room("general"), None, None, true).unwrap();
        assert_eq!(p, JoinPlan { create: Some(Visibility::Public), persist: true });
        let e = plan_join(Some("a"), &room("general"), None, None, false).unwrap_err();
        assert_eq!(e.code, ErrorCode::RoomNotFound);
        let e = plan_join(None, &room("general"), None, None, true).unwrap_err();
        assert_eq!(e.code, ErrorCode::RoomNotFound, "anonymous sockets never create rooms");
    }

    #[test]
    fn private_and_secret_rooms_need_membership() {
        for v in [Visibility::Private, Visibility::Secret] {
            let e = plan_join(Some("a"), &room("team"), Some(&facts(v)), None, true).unwrap_err();
            assert_eq!(e.code, ErrorCode::NotAMember);
            let p = plan_join(Some("a"), &room("team"), Some(&facts(v)), Some(&member()), true).unwrap();
            assert!(!p.persist, "already a member");
        }
    }

    #[test]
    fn banned_users_never_join_and_full_rooms_refuse_newcomers() {
        let banned = MemberFacts { banned: true, ..member() };
        let e = plan_join(Some("a"), &room("general"), Some(&facts(Visibility::Public)), Some(&banned), true);
        assert_eq!(e.unwrap_err().code, ErrorCode::Forbidden);
        let full = RoomFacts { max_members: Some(1), ..facts(Visibility::Public) };
        assert_eq!(
            plan_join(Some("b"), &room("general"), Some(&full), None, true).unwrap_err().code,
            ErrorCode::Forbidden
        );
        assert!(plan_join(Some("a"), &room("general"), Some(&full), Some(&member()), true).is_ok());
    }

    #[test]
    fn dm_rooms_admit_exactly_their_two_users() {
        assert!(plan_join(Some("alice"), &room("dm:alice:bob"), None, None, true).is_ok());
        assert!(plan_join(Some("bob"), &room("dm:alice:bob"), Some(&facts(Visibility::Private)), None, true).is_ok());
        let e = plan_join(Some("eve"), &room("dm:alice:bob"), None, None, true).unwrap_err();
        assert_eq!(e.code, ErrorCode::Forbidden);
        let e = plan_join(Some("eve"), &room("dm:xyz"), None, None, true).unwrap_err();
        assert_eq!(e.code, ErrorCode::NotAMember, "other dm rooms are members-only");
    }

    #[test]
    fn writing_needs_an_unmuted_membership() {
        let r = room("general");
        assert_eq!(check_write(None, &r, None).unwrap_err().code, ErrorCode::Unauthenticated);
        assert_eq!(check_write(Some("a"), &r, None).unwrap_err().code, ErrorCode::NotAMember);
        let muted = MemberFacts { muted: true, ..member() };
        assert_eq!(check_write(Some("a"), &r, Some(&muted)).unwrap_err().code, ErrorCode::Forbidden);
        assert!(check_write(Some("a"), &r, Some(&member())).is_ok());
    }

    #[test]
    fn guests_read_broadcast_rooms_but_never_write_to_them() {
        let guest = MemberFacts { role: "guest".into(), ..member() };
        let e = check_write(Some("g"), &room("broadcast:news"), Some(&guest)).unwrap_err();
        assert_eq!(e.code, ErrorCode::Forbidden);
        assert!(e.message.contains("guests cannot write"), "{}", e.message);
        assert!(check_write(Some("g"), &room("general"), Some(&guest)).is_ok(), "guests write to ordinary rooms");
        assert!(
            check_write(Some("m"), &room("broadcast:news"), Some(&member())).is_ok(),
            "members write to broadcasts"
        );
        let banned = MemberFacts { banned: true, ..member() };
        assert_eq!(check_write(Some("b"), &room("general"), Some(&banned)).unwrap_err().code, ErrorCode::Forbidden);
    }

    #[test]
    fn only_unbanned_admins_and_moderators_moderate() {
        let with = |role: &str, banned: bool| MemberFacts { role: role.into(), muted: false, banned };
        assert!(can_moderate(Some(&with("admin", false))));
        assert!(can_moderate(Some(&with("moderator", false))));
        assert!(!can_moderate(Some(&with("member", false))));
        assert!(!can_moderate(Some(&with("guest", false))));
        assert!(!can_moderate(Some(&with("admin", true))), "a banned admin has lost the right");
        assert!(!can_moderate(None), "non-members never moderate");
    }

    #[test]
    fn visibilities_parse_by_name_and_refuse_others() {
        for v in [Visibility::Public, Visibility::Private, Visibility::Secret] {
            assert_eq!(Visibility::parse(v.as_str()), Some(v));
        }
        assert_eq!(Visibility::parse("Public"), None);
        assert_eq!(Visibility::parse(""), None);
        assert_eq!(parse_visibility(None).unwrap(), Visibility::Public);
        assert_eq!(parse_visibility(Some("secret")).unwrap(), Visibility::Secret);
        let e = parse_visibility(Some("hidden")).unwrap_err();
        assert_eq!(e.code, ErrorCode::ValidationError);
        assert!(e.message.contains("\"hidden\""), "{}", e.message);
    }

    #[test]
    fn inactive_rooms_are_not_found_and_dm_rooms_are_created_private() {
        let gone = RoomFacts { is_active: false, ..facts(Visibility::Public) };
        let e = plan_join(Some("a"), &room("general"), Some(&gone), Some(&member()), true).unwrap_err();
        assert_eq!(e.code, ErrorCode::RoomNotFound);
        let p = plan_join(Some("alice"), &room("dm:alice:bob"), None, None, true).unwrap();
        assert_eq!(p, JoinPlan { create: Some(Visibility::Private), persist: true });
        let p = plan_join(Some("a"), &room("group-dm:team"), None, None, true).unwrap();
        assert_eq!(p.create, Some(Visibility::Private));
        let e = plan_join(None, &room("dm:alice:bob"), None, None, true).unwrap_err();
        assert_eq!(e.code, ErrorCode::Unauthenticated);
        let p = plan_join(None, &room("general"), Some(&facts(Visibility::Public)), None, true).unwrap();
        assert!(!p.persist, "anonymous sockets are never recorded as members");
        let p = plan_join(Some("a"), &room("general"), Some(&facts(Visibility::Public)), None, true).unwrap();
        assert_eq!(p, JoinPlan { create: None, persist: true });
    }
}
