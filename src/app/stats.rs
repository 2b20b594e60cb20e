//! The numbers behind `stats` and `GET /api/stats`.

use serde::Serialize;

use crate::domain::presence::StatusBreakdown;

/// Live counts of this node plus stored totals, for one account.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Stats {
    pub account: String,
    pub connections: usize,
    pub connections_all_accounts: usize,
    pub users_online: usize,
    pub rooms: i64,
    pub messages: i64,
    pub uptime: u64,
    pub memory_bytes: Option<u64>,
    pub node_id: String,
    pub database: &'static str,
    pub presence: Breakdown,
    /// In a cluster: the live nodes (with their socket counts, all accounts) as of the last heartbeat.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nodes: Option<Vec<crate::cluster::redis::nodes::NodeInfo>>,
}

/// Connected users per published status.
#[derive(Debug, Clone, Serialize)]
pub struct Breakdown {
    pub online: usize,
    pub away: usize,
    pub busy: usize,
    pub offline: usize,
}

impl From<StatusBreakdown> for Breakdown {
    fn from(b: StatusBreakdown) -> Self {
        Breakdown { online: b.online, away: b.away, busy: b.busy, offline: b.offline }
    }
}
