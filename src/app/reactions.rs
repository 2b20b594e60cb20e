//! Reactions (docs/protocol.md §8): persisted, idempotent per (message, user, emoji), broadcast with the
//! emoji's count.

use std::sync::Arc;

use super::Fanout;
use super::events::{Event, ReactionChange};
use crate::cluster::Audience;
use crate::error::{AppError, AppResult};
use crate::metrics::Metrics;
use crate::store::Store;

pub struct Reactions {
    store: Store,
    fanout: Arc<Fanout>,
    metrics: Arc<Metrics>,
}

impl Reactions {
    pub fn new(store: Store, fanout: Arc<Fanout>, metrics: Arc<Metrics>) -> Reactions {
        Reactions { store, fanout, metrics }
    }

    /// Adds or removes the user's reaction; the room hears about it when something changed.
    pub async fn react(
        &self,
        account: &str,
        user: &str,
        id: &str,
        emoji: &str,
        add: bool,
    ) -> AppResult<ReactionChange> {
        let m = self
            .store
            .message(account, id)
            .await?
            .filter(|m| m.deleted_at.is_none())
            .ok_or_else(|| AppError::unknown_message(id))?;
        let member = self.store.member(account, &m.room, user).await?;
        if member.as_ref().is_none_or(|m| m.banned) {
            return Err(AppError::not_a_member(&m.room));
        }
        let (changed, count) = self.store.react(account, id, user, emoji, add).await?;
        let change = ReactionChange {
            message_id: id.to_string(),
            room: m.room,
            user: user.to_string(),
            emoji: emoji.to_string(),
            count,
            added: add,
            at: crate::store::now_ms(),
        };
        if changed {
            self.fanout.emit(Audience::room(account, &change.room), Event::Reaction(change.clone())).await;
            self.metrics.broadcasts.inc();
        }
        Ok(change)
    }
}
