//! Calls (docs/protocol.md §13.5): nchat's WebRTC signalling relayed between the users of a call. The part
//! keeps who is in which call (a [`CallRegistry`], shareable by several nodes), checks every signal against
//! it, relays the client's payload unchanged to the users it is for, and tells what the clients cannot know
//! (ringing, a participant who joined or dropped, a call nobody answered). It never reads or keeps a session
//! description. The ringing deadlines are its timer.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use serde_json::Value;

use super::Fanout;
use super::events::{Author, CallEvent, CallParty, Event};
use super::worker::{Worker, until, within};
use crate::cluster::{Audience, CallRegistry};
use crate::domain::calls::{Call, CallError, Signal};
use crate::error::AppResult;

/// Who sends a signal.
pub struct Caller<'a> {
    pub account: &'a str,
    pub user: &'a str,
    pub author: Author,
}

/// A validated call signal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CallRequest {
    /// Invite `target` (opens the call when it is new).
    Initiate {
        target: String,
        kind: String,
        channel_id: Option<String>,
    },
    /// A description or candidate for one party (`call:offer` of an unknown call opens it).
    Direct {
        signal: Signal,
        to: String,
    },
    Accept,
    Decline,
    Busy,
    Cancel,
    End,
    /// A media change of the sender.
    Media {
        signal: Signal,
        enabled: Option<bool>,
    },
}

pub struct Calls {
    registry: Arc<dyn CallRegistry>,
    fanout: Arc<Fanout>,
    /// How long a call rings before nobody answering ends it.
    ring: chrono::Duration,
    wake: Arc<tokio::sync::Notify>,
    worker: Worker,
}

fn party(call: &Call, user: &str, author: Author) -> CallParty {
    let media = call.joined.get(user);
    CallParty {
        user: user.to_string(),
        author,
        muted: media.is_some_and(|m| m.muted),
        video: media.map_or(call.kind == "video", |m| m.video),
        screen_sharing: media.is_some_and(|m| m.screen_sharing),
        joined_at: media.map_or_else(|| Utc::now().timestamp_millis(), |m| m.joined_at.timestamp_millis()),
    }
}

impl Calls {
    pub fn new(registry: Arc<dyn CallRegistry>, fanout: Arc<Fanout>, ring: Duration) -> Calls {
        Calls {
            registry,
            fanout,
            ring: chrono::Duration::from_std(ring).unwrap_or(chrono::Duration::seconds(30)),
            wake: Arc::new(tokio::sync::Notify::new()),
            worker: Worker::default(),
        }
    }

    /// Starts the timer: calls nobody answered in time end with `call:timeout`.
    pub fn start(self: &Arc<Self>) {
        self.worker.every_deadline(self, self.wake.clone(), |c| async move {
            c.ring_out().await;
            within(c.registry.next_deadline().await.map(until), c.registry.poll_interval())
        });
    }

    pub async fn stop(&self) {
        self.worker.stop().await;
    }

    async fn ring_out(&self) {
        for (account, call) in self.registry.expired(Utc::now()).await {
            let call_id = call.id.clone();
            self.tell(&account, &call.parties(), CallEvent::Timeout { call_id }).await;
        }
    }

    async fn tell(&self, account: &str, users: &[String], event: CallEvent) {
        if !users.is_empty() {
            self.fanout.emit(Audience::users(account, users), Event::Call(event)).await;
        }
    }

    async fn relay(&self, account: &str, users: &[String], signal: Signal, body: Value) {
        self.tell(account, users, CallEvent::Relayed { signal, body }).await;
    }

    /// The current state of a call, or why there is none.
    async fn call(&self, account: &str, call_id: &str) -> Result<Call, CallError> {
        self.registry
            .get(account, call_id)
            .await
            .ok_or_else(|| CallError::NoCall(format!("call {call_id} is not going on")))
    }

    /// Changes a call that must exist.
    async fn change(
        &self,
        account: &str,
        call_id: &str,
        f: impl Fn(&mut Call) -> Result<(), CallError> + Send + Sync,
    ) -> Result<(Call, Option<Call>), CallError> {
        let (before, after) = self
            .registry
            .update(account, call_id, &|before: Option<&Call>| {
                let mut c =
                    before.cloned().ok_or_else(|| CallError::NoCall(format!("call {call_id} is not going on")))?;
                f(&mut c)?;
                Ok((!c.is_over()).then_some(c))
            })
            .await?;
        Ok((before.expect("the change needed a call"), after))
    }

    /// One signal of a user: checked against the call, then relayed (`body` exactly as the client sent it).
    pub async fn signal(&self, who: Caller<'_>, call_id: &str, req: CallRequest, body: Value) -> AppResult<()> {
        let (account, user) = (who.account, who.user);
        let now = Utc::now();
        match req {
            CallRequest::Initiate { target, kind, channel_id } => {
                let ring_until = now + self.ring;
                let (_, after) = self
                    .registry
                    .update(account, call_id, &|before: Option<&Call>| match before {
                        None => Call::new(call_id, user, &target, &kind, channel_id.clone(), now, ring_until).map(Some),
                        Some(c) => {
                            let mut c = c.clone();
                            c.invite(user, &target)?;
                            Ok(Some(c))
                        }
                    })
                    .await?;
                let call = after.expect("an initiated call exists");
                let ring = CallEvent::Ring {
                    call_id: call_id.to_string(),
                    caller: user.to_string(),
                    author: who.author,
                    kind: call.kind.clone(),
                    channel_id: call.channel_id.clone(),
                };
                self.tell(account, &[target, user.to_string()], ring).await;
                self.wake.notify_one();
            }
            CallRequest::Direct { signal, to } => {
                if signal == Signal::Offer {
                    // nchat's use-call.ts starts a call with its offer (no call:initiate): an offer for an unknown
                    // call opens it, ringing the addressee.
                    let ring_until = now + self.ring;
                    let (before, _) = self
                        .registry
                        .update(account, call_id, &|before: Option<&Call>| match before {
                            None => Call::new(call_id, user, &to, "voice", None, now, ring_until).map(Some),
                            Some(c) => c.check(user, signal, Some(&to)).map(|_| Some(c.clone())),
                        })
                        .await?;
                    if before.is_none() {
                        self.wake.notify_one();
                    }
                } else if signal == Signal::Answer {
                    self.change(account, call_id, |c| {
                        c.check(user, signal, Some(&to))?;
                        c.answered(user);
                        Ok(())
                    })
                    .await?;
                } else {
                    self.call(account, call_id).await?.check(user, signal, Some(&to))?;
                }
                self.relay(account, &[to], signal, body).await;
            }
            CallRequest::Accept => {
                let (before, after) = self
                    .change(account, call_id, |c| {
                        c.check(user, Signal::Accept, None)?;
                        c.accept(user, now).map(|_| ())
                    })
                    .await?;
                let call = after.expect("an accepted call goes on");
                let others = call.others(user);
                self.relay(account, &others, Signal::Accept, body).await;
                // Joined now (not on a repeated accept): the others learn who is in.
                if !before.joined.contains_key(user) {
                    let party = party(&call, user, who.author);
                    self.tell(account, &others, CallEvent::ParticipantJoined { call_id: call_id.to_string(), party })
                        .await;
                }
            }
            CallRequest::Decline | CallRequest::Busy => {
                let signal = if req == CallRequest::Decline { Signal::Decline } else { Signal::Busy };
                let (before, _) = self
                    .change(account, call_id, |c| {
                        c.check(user, signal, None)?;
                        c.remove(user);
                        Ok(())
                    })
                    .await?;
                self.relay(account, &[before.caller], signal, body).await;
            }
            CallRequest::Cancel => {
                let (before, _) = self
                    .registry
                    .update(account, call_id, &|before: Option<&Call>| {
                        let c = before.ok_or_else(|| CallError::NoCall(format!("call {call_id} is not going on")))?;
                        c.check(user, Signal::Cancel, None)?;
                        Ok(None)
                    })
                    .await?;
                let call = before.expect("a cancelled call existed");
                self.relay(account, &call.others(user), Signal::Cancel, body).await;
            }
            CallRequest::End => {
                let (before, _) = self
                    .change(account, call_id, |c| {
                        c.check(user, Signal::End, None)?;
                        c.remove(user);
                        Ok(())
                    })
                    .await?;
                self.relay(account, &before.others(user), Signal::End, body).await;
            }
            CallRequest::Media { signal, enabled } => {
                let (_, after) = self
                    .change(account, call_id, |c| {
                        c.check(user, signal, None)?;
                        c.set_media(user, signal, enabled);
                        Ok(())
                    })
                    .await?;
                if let Some(call) = after {
                    self.relay(account, &call.other_participants(user), signal, body).await;
                }
            }
        }
        Ok(())
    }

    /// A user's last socket closed: they leave their calls. The others learn that a participant left, and a
    /// call with one user left ends (`call:end`, reason `network`).
    pub async fn user_gone(&self, account: &str, user: &str, author: Author) {
        for call_id in self.registry.calls_of(account, user).await {
            let changed = self
                .registry
                .update(account, &call_id, &|before: Option<&Call>| {
                    let mut c = before.cloned().ok_or_else(|| CallError::NoCall(call_id.clone()))?;
                    c.remove(user);
                    Ok((!c.is_over()).then_some(c))
                })
                .await;
            let Ok((Some(before), after)) = changed else { continue };
            let others = before.others(user);
            if before.joined.contains_key(user) {
                let party = party(&before, user, author.clone());
                self.tell(account, &others, CallEvent::ParticipantLeft { call_id: call_id.clone(), party }).await;
            }
            if after.is_none() {
                let ended =
                    CallEvent::Ended { call_id: call_id.clone(), ended_by: user.to_string(), reason: "network" };
                self.tell(account, &others, ended).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::memory::MemoryCalls;
    use crate::cluster::{Fanout as FanoutTrait, Target};
    use parking_lot::Mutex;
    use serde_json::json;

    /// Records what would be sent: (users, event).
    #[derive(Default)]
    struct Recorder(Mutex<Vec<(Vec<String>, CallEvent)>>);

    #[async_trait::async_trait]
    impl FanoutTrait<Event> for Recorder {
        async fn emit(&self, to: Audience, event: Event) {
            let users = to
                .to
                .iter()
                .map(|t| match t {
                    Target::User(u) | Target::Room(u) => u.clone(),
                })
                .collect();
            if let Event::Call(e) = event {
                self.0.lock().push((users, e));
            }
        }
        async fn join(&self, _: &str, _: Target, _: &str) {}
        async fn leave(&self, _: &str, _: Target, _: &str) {}
        async fn disconnect(&self, _: &str, _: Target) {}
        async fn reach(&self, _: &Audience) -> usize {
            0
        }
    }

    fn setup() -> (Arc<Calls>, Arc<Recorder>) {
        let rec = Arc::new(Recorder::default());
        let calls = Arc::new(Calls::new(Arc::new(MemoryCalls::default()), rec.clone(), Duration::from_secs(30)));
        (calls, rec)
    }

    fn who(user: &str) -> Caller<'_> {
        Caller { account: "acc", user, author: Author { name: Some(format!("{user} name")), avatar: None } }
    }

    fn taken(rec: &Recorder) -> Vec<(Vec<String>, CallEvent)> {
        std::mem::take(&mut *rec.0.lock())
    }

    fn offer(to: &str) -> CallRequest {
        CallRequest::Direct { signal: Signal::Offer, to: to.into() }
    }

    #[tokio::test]
    async fn an_offer_opens_a_call_and_is_relayed_unchanged_to_its_addressee_only() {
        let (calls, rec) = setup();
        let body =
            json!({"callId": "c1", "fromUserId": "ann", "toUserId": "bob", "sdp": {"type": "offer", "sdp": "v=0"}});
        calls.signal(who("ann"), "c1", offer("bob"), body.clone()).await.expect("relayed");
        let sent = taken(&rec);
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].0, vec!["bob"]);
        assert_eq!(sent[0].1, CallEvent::Relayed { signal: Signal::Offer, body });
        // An outsider can neither send into the call nor be addressed by it.
        let err = calls.signal(who("eve"), "c1", offer("bob"), json!({})).await.unwrap_err();
        assert_eq!(err.code, crate::error::ErrorCode::Forbidden);
        assert!(calls.signal(who("ann"), "c1", offer("eve"), json!({})).await.is_err());
        assert!(taken(&rec).is_empty(), "refused signals reach nobody");
    }

    #[tokio::test]
    async fn accepting_tells_the_others_who_joined_and_a_call_whose_peer_drops_ends() {
        let (calls, rec) = setup();
        let init = CallRequest::Initiate { target: "bob".into(), kind: "video".into(), channel_id: None };
        calls.signal(who("ann"), "c1", init, json!({})).await.expect("initiated");
        let sent = taken(&rec);
        assert_eq!(sent[0].0, vec!["bob", "ann"], "the invitee rings, the caller hears it ring");
        assert!(matches!(&sent[0].1, CallEvent::Ring { caller, kind, .. } if caller == "ann" && kind == "video"));

        calls
            .signal(who("bob"), "c1", CallRequest::Accept, json!({"callId": "c1", "userId": "bob"}))
            .await
            .expect("ok");
        let sent = taken(&rec);
        assert_eq!(sent.len(), 2);
        assert_eq!(sent[0].0, vec!["ann"]);
        assert!(matches!(&sent[1].1, CallEvent::ParticipantJoined { party, .. } if party.user == "bob" && party.video));
        calls.signal(who("bob"), "c1", CallRequest::Accept, json!({})).await.expect("again");
        assert_eq!(taken(&rec).len(), 1, "a repeated accept is relayed but joins nobody twice");

        let mute = CallRequest::Media { signal: Signal::MuteChanged, enabled: Some(false) };
        calls.signal(who("ann"), "c1", mute, json!({"enabled": false})).await.expect("relayed");
        assert_eq!(taken(&rec)[0].0, vec!["bob"]);

        calls.user_gone("acc", "bob", Author::default()).await;
        let sent = taken(&rec);
        assert!(matches!(&sent[0].1, CallEvent::ParticipantLeft { party, .. } if party.user == "bob"));
        assert!(matches!(&sent[1].1, CallEvent::Ended { ended_by, reason: "network", .. } if ended_by == "bob"));
        assert_eq!(sent[1].0, vec!["ann"]);
        let err = calls.signal(who("ann"), "c1", offer("bob"), json!({})).await;
        assert!(err.is_ok(), "an offer after the end opens a new call");
    }

    #[tokio::test]
    async fn a_decline_goes_to_the_caller_and_ends_a_two_party_call() {
        let (calls, rec) = setup();
        calls.signal(who("ann"), "c1", offer("bob"), json!({})).await.expect("opened");
        taken(&rec);
        calls.signal(who("bob"), "c1", CallRequest::Decline, json!({"reason": "no"})).await.expect("declined");
        assert_eq!(taken(&rec)[0].0, vec!["ann"]);
        let err = calls.signal(who("ann"), "c1", CallRequest::End, json!({})).await.unwrap_err();
        assert_eq!(err.code, crate::error::ErrorCode::NotFound, "the call is over");
    }

    #[tokio::test]
    async fn an_unanswered_call_times_out_for_everyone() {
        let rec = Arc::new(Recorder::default());
        let calls = Arc::new(Calls::new(Arc::new(MemoryCalls::default()), rec.clone(), Duration::from_millis(50)));
        calls.start();
        let init = CallRequest::Initiate { target: "bob".into(), kind: "voice".into(), channel_id: None };
        calls.signal(who("ann"), "c1", init, json!({})).await.expect("initiated");
        for _ in 0..100 {
            if rec.0.lock().iter().any(|(_, e)| matches!(e, CallEvent::Timeout { .. })) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let sent = taken(&rec);
        let timeout = sent.iter().find(|(_, e)| matches!(e, CallEvent::Timeout { .. })).expect("timed out");
        assert_eq!(timeout.0, vec!["ann", "bob"]);
        calls.stop().await;
    }
}
