//! The numbers behind `stats` and `GET /api/stats`.

use serde_json::{Value, json};

use crate::error::AppResult;
use crate::hub::Hub;

/// Live counts of this node plus stored totals, for one account.
pub async fn live(hub: &Hub, account: &str) -> AppResult<Value> {
    let connections = hub.sessions.iter().filter(|s| s.account == account).count();
    Ok(json!({
        "account": account,
        "connections": connections,
        "connectionsAllAccounts": hub.connection_count(),
        "usersOnline": hub.users_online(Some(account)),
        "rooms": hub.store.count_rooms(account).await?,
        "messages": hub.store.count_messages(account).await?,
        "uptime": hub.started.elapsed().as_secs(),
        "memoryBytes": crate::metrics::resident_memory_bytes(),
        "nodeId": hub.node_id,
        "database": hub.store.dialect(),
        "presence": hub.presence.breakdown(account),
    }))
}
