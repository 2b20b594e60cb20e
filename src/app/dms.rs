//! Direct messages the server has not seen (docs/protocol.md §13.7). nchat creates its dms in its own backend
//! and knows them by ids (`dm:<uuid>`) that do not name their participants, so the server learns a dm:
//!
//! - from the admin API (`POST /api/rooms` with `type: dm`, then `POST /api/rooms/:name/members` for each
//!   participant): authoritative, at once;
//! - or from first use confirmed by both participants: a typing event in an unknown dm names its recipient,
//!   which is only a claim. One claim delivers nothing; when the recipient claims the same dm for the first
//!   user, the dm is stored with both as members and their sockets enter it.
//!
//! Nobody can push events to a user by naming them: an unconfirmed claim reaches nobody, a dm bound to
//! others is never rebound, and neither tells the claimant anything (no error: nchat shows refusals as
//! server errors, and an error would reveal whether the dm exists).

use std::sync::Arc;

use chrono::Utc;

use super::rooms::{Rooms, Sockets};
use crate::cluster::DmClaims;
use crate::domain::names::RoomName;
use crate::domain::policy::Visibility;
use crate::error::AppResult;
use crate::store::Store;
use crate::store::rooms::NewRoom;

pub struct Dms {
    store: Store,
    rooms: Arc<Rooms>,
    claims: Arc<dyn DmClaims>,
}

impl Dms {
    pub fn new(store: Store, rooms: Arc<Rooms>, claims: Arc<dyn DmClaims>) -> Dms {
        Dms { store, rooms, claims }
    }

    /// `user` used the dm `room` (`dm:<id>`, not a canonical `dm:<a>:<b>`) with one of their sockets that is
    /// not in it, naming `recipient` as the other participant. True when the user's sockets are in the dm now
    /// (it was theirs already, or this use confirmed the pair); false: nothing may be delivered.
    pub async fn used(&self, account: &str, user: &str, room: &RoomName, recipient: Option<&str>) -> AppResult<bool> {
        if room.kind != "dm" || room.dm_pair().is_some() {
            return Ok(false);
        }
        if self.store.room(account, &room.name).await?.is_some() {
            // Known: only its members may use it (a member whose socket missed the room enters it).
            return match self.store.member(account, &room.name, user).await? {
                Some(m) if !m.banned => {
                    self.rooms.admit(Sockets::AllOf { account, user }, &room.name, m.muted).await;
                    Ok(true)
                }
                _ => Ok(false),
            };
        }
        let Some(other) = recipient.filter(|r| *r != user) else { return Ok(false) };
        if !self.claims.claim(account, &room.name, user, other, Utc::now()).await {
            return Ok(false);
        }
        self.bind(account, &room.name, user, other).await?;
        Ok(true)
    }

    /// Stores the dm with both participants and puts their sockets in it. A dm stored meanwhile (the admin
    /// API, another node) keeps its members: a pair that is not its own stays out.
    async fn bind(&self, account: &str, name: &str, a: &str, b: &str) -> AppResult<()> {
        let new = NewRoom { name, kind: "dm", visibility: Visibility::Private, max_members: None, created_by: None };
        if !self.store.create_room(account, &new).await? {
            tracing::info!(room = name, "dm claimed by two users was stored meanwhile; its members stay as they are");
            return Ok(());
        }
        for user in [a, b] {
            self.rooms.add_member(account, name, user, None, None, None).await?;
        }
        tracing::info!(room = name, "dm learned from both participants");
        Ok(())
    }
}
