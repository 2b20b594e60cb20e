//! Calls (docs/protocol.md §13.5): the server relays nchat's WebRTC signalling between the users of a call.
//! It routes by call id and user and never reads a session description. These are the rules: who takes
//! part in a call, who may send which signal to whom, and when a call is over. Pure and clock-free: every
//! transition takes `now`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Most users one call may hold (caller, invitees and participants together).
pub const MAX_PARTIES: usize = 32;

/// The signals a client sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Signal {
    /// The caller invites a user (`call:ring` goes out).
    Initiate,
    /// An invitee takes the call.
    Accept,
    /// An invitee refuses it.
    Decline,
    /// An invitee is in another call.
    Busy,
    /// The caller gives up before anyone answered.
    Cancel,
    /// A party hangs up.
    End,
    /// Session descriptions and candidates, to one party.
    Offer,
    Answer,
    IceCandidate,
    Renegotiate,
    /// Media state of the sender, to the other participants.
    MuteChanged,
    VideoChanged,
    ScreenShareStarted,
    ScreenShareStopped,
}

impl Signal {
    /// Signals addressed to one party (`toUserId`).
    pub fn is_direct(self) -> bool {
        matches!(self, Signal::Offer | Signal::Answer | Signal::IceCandidate | Signal::Renegotiate)
    }

    /// Media state changes (relayed to the other participants).
    pub fn is_media(self) -> bool {
        matches!(
            self,
            Signal::MuteChanged | Signal::VideoChanged | Signal::ScreenShareStarted | Signal::ScreenShareStopped
        )
    }
}

/// Why a signal is refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CallError {
    /// No such call (never started, or over).
    NoCall(String),
    /// The sender has no part in the call, or the addressee has none.
    NotAParty(String),
    /// A malformed request (calling oneself, a full call, …).
    Invalid(String),
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CallError::NoCall(m) | CallError::NotAParty(m) | CallError::Invalid(m) => f.write_str(m),
        }
    }
}

impl From<CallError> for crate::error::AppError {
    fn from(e: CallError) -> Self {
        use crate::error::ErrorCode;
        let code = match e {
            CallError::NoCall(_) => ErrorCode::NotFound,
            CallError::NotAParty(_) => ErrorCode::Forbidden,
            CallError::Invalid(_) => ErrorCode::ValidationError,
        };
        crate::error::AppError::new(code, e.to_string())
    }
}

/// A participant's media state, as the others are told it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Media {
    pub joined_at: DateTime<Utc>,
    pub muted: bool,
    pub video: bool,
    pub screen_sharing: bool,
}

/// A call going on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Call {
    pub id: String,
    pub caller: String,
    /// `voice` or `video`.
    pub kind: String,
    pub channel_id: Option<String>,
    /// Invited, not answered yet.
    pub invited: BTreeSet<String>,
    /// In the call: the caller from the start, invitees once they accept.
    pub joined: BTreeMap<String, Media>,
    /// While nobody answered: when the ringing gives up.
    pub ring_until: Option<DateTime<Utc>>,
}

impl Call {
    /// A new call of `caller`, ringing `invitee` until `ring_until`.
    pub fn new(
        id: &str,
        caller: &str,
        invitee: &str,
        kind: &str,
        channel_id: Option<String>,
        now: DateTime<Utc>,
        ring_until: DateTime<Utc>,
    ) -> Result<Call, CallError> {
        if caller == invitee {
            return Err(CallError::Invalid("a call needs another user than its caller".into()));
        }
        let video = kind == "video";
        Ok(Call {
            id: id.to_string(),
            caller: caller.to_string(),
            kind: kind.to_string(),
            channel_id,
            invited: BTreeSet::from([invitee.to_string()]),
            joined: BTreeMap::from([(
                caller.to_string(),
                Media { joined_at: now, muted: false, video, screen_sharing: false },
            )]),
            ring_until: Some(ring_until),
        })
    }

    /// Invited, or in the call.
    pub fn is_party(&self, user: &str) -> bool {
        self.invited.contains(user) || self.joined.contains_key(user)
    }

    /// Everyone with a part in the call, the caller first.
    pub fn parties(&self) -> Vec<String> {
        let mut out = vec![self.caller.clone()];
        out.extend(self.joined.keys().filter(|u| **u != self.caller).cloned());
        out.extend(self.invited.iter().filter(|u| **u != self.caller).cloned());
        out
    }

    /// Everyone with a part in the call but `user`.
    pub fn others(&self, user: &str) -> Vec<String> {
        self.parties().into_iter().filter(|u| u != user).collect()
    }

    /// Participants (joined) but `user`.
    pub fn other_participants(&self, user: &str) -> Vec<String> {
        self.joined.keys().filter(|u| *u != user).cloned().collect()
    }

    fn party_count(&self) -> usize {
        self.joined.len() + self.invited.iter().filter(|u| !self.joined.contains_key(*u)).count()
    }

    /// Fewer than two users left: the call is over.
    pub fn is_over(&self) -> bool {
        self.party_count() < 2
    }

    fn require_party(&self, user: &str) -> Result<(), CallError> {
        if self.is_party(user) {
            Ok(())
        } else {
            Err(CallError::NotAParty(format!("{user} takes no part in call {}", self.id)))
        }
    }

    /// The caller invites one more user (a repeated `call:initiate` of the same caller).
    pub fn invite(&mut self, by: &str, user: &str) -> Result<(), CallError> {
        if by != self.caller {
            return Err(CallError::NotAParty(format!("only the caller invites to call {}", self.id)));
        }
        if user == by {
            return Err(CallError::Invalid("a call needs another user than its caller".into()));
        }
        if !self.is_party(user) {
            if self.party_count() >= MAX_PARTIES {
                return Err(CallError::Invalid(format!("call {} is full ({MAX_PARTIES} users)", self.id)));
            }
            self.invited.insert(user.to_string());
        }
        Ok(())
    }

    /// An invitee takes the call (again: nothing changes). The ringing stops.
    pub fn accept(&mut self, user: &str, now: DateTime<Utc>) -> Result<bool, CallError> {
        self.require_party(user)?;
        if self.joined.contains_key(user) {
            return Ok(false);
        }
        self.invited.remove(user);
        let video = self.kind == "video";
        self.joined.insert(user.to_string(), Media { joined_at: now, muted: false, video, screen_sharing: false });
        self.ring_until = None;
        Ok(true)
    }

    /// An invitee answered an offer: whatever they send next, the call is no longer unanswered (some clients
    /// answer the offer before, or instead of, accepting).
    pub fn answered(&mut self, user: &str) {
        if self.invited.contains(user) {
            self.ring_until = None;
        }
    }

    /// A user leaves (declines, is busy, hangs up, or their last socket closed). Returns whether they had
    /// joined.
    pub fn remove(&mut self, user: &str) -> bool {
        self.invited.remove(user);
        self.joined.remove(user).is_some()
    }

    /// Checks a signal of `sender` (addressed to `to` for direct signals) against the call.
    pub fn check(&self, sender: &str, signal: Signal, to: Option<&str>) -> Result<(), CallError> {
        self.require_party(sender)?;
        match signal {
            Signal::Cancel if sender != self.caller => {
                Err(CallError::NotAParty(format!("only the caller cancels call {}", self.id)))
            }
            Signal::Decline | Signal::Busy if !self.invited.contains(sender) => {
                Err(CallError::Invalid(format!("{sender} is not waiting to answer call {}", self.id)))
            }
            Signal::Accept if sender == self.caller => {
                Err(CallError::Invalid(format!("the caller of {} cannot accept it", self.id)))
            }
            s if s.is_media() && !self.joined.contains_key(sender) => {
                Err(CallError::NotAParty(format!("{sender} has not joined call {}", self.id)))
            }
            s if s.is_direct() => match to {
                None => Err(CallError::Invalid("toUserId is required".into())),
                Some(t) if t == sender => Err(CallError::Invalid("toUserId is the sender".into())),
                Some(t) if !self.is_party(t) => {
                    Err(CallError::NotAParty(format!("{t} takes no part in call {}", self.id)))
                }
                Some(_) => Ok(()),
            },
            _ => Ok(()),
        }
    }

    /// Applies a media change of a participant.
    pub fn set_media(&mut self, user: &str, signal: Signal, enabled: Option<bool>) {
        if let Some(m) = self.joined.get_mut(user) {
            match signal {
                Signal::MuteChanged => m.muted = !enabled.unwrap_or(true),
                Signal::VideoChanged => m.video = enabled.unwrap_or(m.video),
                Signal::ScreenShareStarted => m.screen_sharing = true,
                Signal::ScreenShareStopped => m.screen_sharing = false,
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(ms: i64) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(1_700_000_000_000 + ms).expect("in range")
    }

    fn call() -> Call {
        Call::new("c1", "ann", "bob", "video", None, t(0), t(30_000)).expect("valid")
    }

    #[test]
    fn the_caller_is_in_and_the_invitee_rings() {
        let c = call();
        assert!(c.is_party("ann") && c.is_party("bob") && !c.is_party("eve"));
        assert_eq!(c.parties(), vec!["ann", "bob"]);
        assert_eq!(c.others("ann"), vec!["bob"]);
        assert!(c.joined["ann"].video);
        assert!(!c.is_over());
        assert!(Call::new("c2", "ann", "ann", "voice", None, t(0), t(1)).is_err(), "nobody calls themself");
    }

    #[test]
    fn only_parties_signal_and_only_to_parties() {
        let c = call();
        assert!(c.check("ann", Signal::Offer, Some("bob")).is_ok());
        assert!(c.check("bob", Signal::Answer, Some("ann")).is_ok(), "an invitee answers the offer");
        assert!(matches!(c.check("eve", Signal::Offer, Some("bob")), Err(CallError::NotAParty(_))));
        assert!(matches!(c.check("ann", Signal::Offer, Some("eve")), Err(CallError::NotAParty(_))));
        assert!(matches!(c.check("ann", Signal::Offer, None), Err(CallError::Invalid(_))));
        assert!(matches!(c.check("ann", Signal::IceCandidate, Some("ann")), Err(CallError::Invalid(_))));
        assert!(c.check("bob", Signal::Cancel, None).is_err(), "only the caller cancels");
        assert!(c.check("ann", Signal::Accept, None).is_err(), "the caller does not accept");
        assert!(c.check("ann", Signal::Decline, None).is_err(), "the caller does not decline");
        assert!(c.check("bob", Signal::MuteChanged, None).is_err(), "media changes need a participant");
        assert!(c.check("ann", Signal::MuteChanged, None).is_ok());
    }

    #[test]
    fn accepting_joins_and_stops_the_ringing_and_a_call_ends_below_two() {
        let mut c = call();
        assert_eq!(c.accept("bob", t(100)), Ok(true));
        assert_eq!(c.accept("bob", t(200)), Ok(false), "accepting twice changes nothing");
        assert_eq!(c.ring_until, None);
        assert_eq!(c.other_participants("ann"), vec!["bob"]);
        c.set_media("bob", Signal::MuteChanged, Some(false));
        assert!(c.joined["bob"].muted);
        c.invite("ann", "cid").expect("the caller invites");
        assert!(c.invite("bob", "dan").is_err(), "only the caller invites");
        assert!(c.remove("bob"));
        assert!(!c.is_over(), "ann and the invited cid are left");
        assert!(!c.remove("cid"));
        assert!(c.is_over());
    }

    #[test]
    fn a_call_holds_a_bounded_number_of_users() {
        let mut c = call();
        for i in 0..(MAX_PARTIES - 2) {
            c.invite("ann", &format!("u{i}")).expect("room left");
        }
        assert!(matches!(c.invite("ann", "one-too-many"), Err(CallError::Invalid(_))));
    }
}
