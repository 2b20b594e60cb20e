//! The scenarios. Each file holds a scenario's flags, the plan its clients follow (who joins
//! which room, who sends what at which rate) and the coordinator's script (the phases, the server
//! samples, the report).

pub mod connect;
pub mod events;
pub mod fanout;
pub mod idle;
pub mod soak;
pub mod storm;

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::Scenario;
use super::coordinator::Coordinator;
use super::report::Report;

/// What senders send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SendKind {
    /// `message:send {roomName, content}` with an ack; `content` is `payload` bytes and carries
    /// the send time.
    Message { payload: usize },
    /// `typing:start {roomName: <bare id>, roomType: "channel"}`, fire-and-forget.
    Typing,
    /// `presence:update {status}`, alternating online/away, fire-and-forget.
    Presence,
    /// Soak traffic: half of the senders send messages, a quarter typing, a quarter presence (by client index).
    Mixed { payload: usize },
}

impl SendKind {
    /// What client `g` sends (only [`SendKind::Mixed`] depends on the client).
    pub fn for_client(self, g: u64) -> SendKind {
        match self {
            SendKind::Mixed { payload } => match g % 4 {
                0 | 1 => SendKind::Message { payload },
                2 => SendKind::Typing,
                _ => SendKind::Presence,
            },
            k => k,
        }
    }
}

/// What every client of a run does; derived from the scenario flags, identically in the
/// coordinator and in every worker process.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Clients in the whole run (all workers).
    pub total: u64,
    /// Rooms; client `g` joins `channel:<prefix>-r<g % rooms>` (0: no room).
    pub rooms: u64,
    /// Rooms each client joins: `g % rooms`, then the next ones (`(g + 1) % rooms`, ...). At least 1 when
    /// `rooms > 0`; the first is the one it sends to.
    pub joins: u64,
    /// Clients `0..senders` send.
    pub senders: u64,
    pub send: Option<SendKind>,
    /// Events per second, all senders together.
    pub rate: f64,
    /// message:send requests awaiting an ack, per sender, before ticks are skipped.
    pub max_inflight: usize,
    pub ack_timeout: Duration,
    /// Reconnect retries after a drop (storm).
    pub retries: u32,
    /// Reconnects are spread uniformly over this window (storm; 0: all at once).
    pub jitter: Duration,
}

impl Plan {
    fn connections(total: u64) -> Plan {
        Plan {
            total,
            rooms: 0,
            joins: 1,
            senders: 0,
            send: None,
            rate: 0.0,
            max_inflight: 0,
            ack_timeout: Duration::from_secs(10),
            retries: 0,
            jitter: Duration::ZERO,
        }
    }
}

impl Scenario {
    pub fn plan(&self) -> Plan {
        match self {
            Scenario::Connect(a) => Plan::connections(a.connections),
            Scenario::Idle(a) => a.plan(),
            Scenario::Storm(a) => Plan { retries: a.retries, jitter: a.jitter, ..Plan::connections(a.connections) },
            Scenario::Fanout(a) => a.plan(),
            Scenario::Soak(a) => a.plan(),
            Scenario::Typing(a) => a.plan(SendKind::Typing),
            Scenario::Presence(a) => a.plan(SendKind::Presence),
        }
    }

    /// Runs the scenario's script on a started coordinator.
    pub async fn drive(&self, co: &mut Coordinator) -> anyhow::Result<Report> {
        match self {
            Scenario::Connect(a) => connect::drive(a, co).await,
            Scenario::Idle(a) => idle::drive(a, co).await,
            Scenario::Fanout(a) => fanout::drive(a, co).await,
            Scenario::Storm(a) => storm::drive(a, co).await,
            Scenario::Soak(a) => soak::drive(a, co).await,
            Scenario::Typing(a) => events::drive(a, co, SendKind::Typing).await,
            Scenario::Presence(a) => events::drive(a, co, SendKind::Presence).await,
        }
    }
}
