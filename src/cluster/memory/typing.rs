//! [`TypingBackend`] in memory: the typing state machine behind a mutex. Zero database writes.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use parking_lot::Mutex;

use crate::cluster::TypingBackend;
use crate::domain::typing::{TypingConfig, TypingEvent, TypingRoom, TypingState, TypingUser, Typist};

pub struct MemoryTyping {
    state: Mutex<TypingState>,
}

impl MemoryTyping {
    pub fn new(cfg: TypingConfig) -> MemoryTyping {
        MemoryTyping { state: Mutex::new(TypingState::new(cfg)) }
    }
}

#[async_trait]
impl TypingBackend for MemoryTyping {
    async fn start(&self, room: &TypingRoom, typist: &Typist, recipient: Option<&str>, now: DateTime<Utc>) {
        self.state.lock().start(room, typist, recipient, now)
    }

    async fn stop(
        &self,
        room: &TypingRoom,
        user: &str,
        sid: &str,
        recipient: Option<&str>,
        now: DateTime<Utc>,
    ) -> bool {
        self.state.lock().stop(room, user, sid, recipient, now)
    }

    async fn remove_socket(&self, account: &str, user: &str, sid: &str, now: DateTime<Utc>) {
        self.state.lock().remove_socket(account, user, sid, now)
    }

    async fn flush(&self, now: DateTime<Utc>) -> Vec<TypingEvent> {
        self.state.lock().flush(now)
    }

    async fn next_deadline(&self) -> Option<DateTime<Utc>> {
        self.state.lock().next_deadline()
    }

    async fn typing_users(&self, room: &TypingRoom, now: DateTime<Utc>) -> Vec<TypingUser> {
        self.state.lock().typing_users(room, now)
    }
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn meets_the_typing_contract() {
        crate::cluster::suite::typing(|cfg| std::sync::Arc::new(super::MemoryTyping::new(cfg))).await;
    }
}
