//! [`TypingBackend`] in memory: the typing state machine behind a mutex. Zero database writes.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use parking_lot::Mutex;

use crate::cluster::TypingBackend;
use crate::domain::typing::{TypingConfig, TypingEvent, TypingRoom, TypingState, TypingUser, Typist};

pub struct MemoryTyping {
    /// The node whose sockets these are (all of them: memory is one node's).
    node: String,
    state: Mutex<TypingState>,
}

impl MemoryTyping {
    pub fn new(cfg: TypingConfig) -> MemoryTyping {
        MemoryTyping { node: String::new(), state: Mutex::new(TypingState::new(cfg)) }
    }

    /// Names the node these sockets are on (for [`TypingBackend::purge_node`]).
    pub fn on_node(mut self, node: &str) -> MemoryTyping {
        self.node = node.to_string();
        self
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

    async fn purge_node(&self, node: &str, now: DateTime<Utc>) -> usize {
        if node != self.node {
            return 0;
        }
        let mut state = self.state.lock();
        let sockets = state.sockets();
        for (account, user, sid) in &sockets {
            state.remove_socket(account, user, sid, now);
        }
        sockets.len()
    }
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn meets_the_typing_contract() {
        crate::cluster::suite::typing(|node, cfg| std::sync::Arc::new(super::MemoryTyping::new(cfg).on_node(node)))
            .await;
    }
}
