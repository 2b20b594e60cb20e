//! The connections table: who is connected where (for `connections`, stats and crash repair).

use serde::Serialize;
use sqlx::Row;

use super::Store;

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ConnectionRow {
    pub socket_id: String,
    pub account: String,
    pub user_id: Option<String>,
    pub node_id: String,
    pub ip: Option<String>,
    pub transport: Option<String>,
    pub device_type: Option<String>,
    pub device_os: Option<String>,
    pub device_browser: Option<String>,
    #[serde(serialize_with = "crate::domain::time::ser::ms")]
    pub connected_at: i64,
}

/// A connection opened on this node, as recorded.
#[derive(Debug, Clone)]
pub struct ConnectionOpen {
    pub row: ConnectionRow,
    pub user_agent: Option<String>,
}

/// How many rows the ledger writes with one statement on SQLite, largest first: a batch is cut into statements
/// of these sizes, so SQLite prepares three statement shapes once instead of one per batch length, and a row
/// costs no round trip of its own to the connection's thread.
pub(crate) const SQLITE_ROWS_PER_STATEMENT: [usize; 3] = [32, 8, 1];

/// `INSERT INTO <head> VALUES (<row>), (<row>), …` with `rows` rows, or the cached text of it. The placeholders
/// are SQLite's anonymous `?`: numbered ones (`$1`) are looked up by name, in time that grows with their
/// count, for every parameter bound.
pub(crate) fn sqlite_multi_row(
    cache: &'static [std::sync::OnceLock<String>; 3],
    rows: usize,
    head: &str,
    row: &str,
    tail: &str,
) -> &'static str {
    let i = SQLITE_ROWS_PER_STATEMENT.iter().position(|&n| n == rows).expect("a statement size");
    cache[i].get_or_init(|| {
        let values = vec![row; rows].join(", ");
        format!("INSERT INTO {head} VALUES {values}{tail}")
    })
}

/// The batch cut into statements of [`SQLITE_ROWS_PER_STATEMENT`] rows.
pub(crate) fn sqlite_chunks<T>(mut rows: Vec<T>) -> Vec<Vec<T>> {
    let mut out = Vec::new();
    for n in SQLITE_ROWS_PER_STATEMENT {
        while rows.len() >= n {
            let rest = rows.split_off(n);
            out.push(std::mem::replace(&mut rows, rest));
        }
    }
    out
}

type AnyQuery<'q> = sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments>;

fn bind_open(q: AnyQuery<'_>, c: ConnectionOpen) -> AnyQuery<'_> {
    let r = c.row;
    q.bind(r.socket_id)
        .bind(r.account)
        .bind(r.user_id)
        .bind(r.node_id)
        .bind(r.ip)
        .bind(r.transport)
        .bind(r.device_type)
        .bind(r.device_os)
        .bind(r.device_browser)
        .bind(c.user_agent)
        .bind(r.connected_at)
}

static OPEN_SQL: [std::sync::OnceLock<String>; 3] = [const { std::sync::OnceLock::new() }; 3];

impl Store {
    pub(crate) async fn record_connections(
        &self,
        opened: Vec<ConnectionOpen>,
        closed: &[(String, i64, String)],
    ) -> Result<(), sqlx::Error> {
        let mut tx = self.begin_write().await?;
        if self.dialect == "sqlite" {
            for chunk in sqlite_chunks(opened) {
                let sql = sqlite_multi_row(
                    &OPEN_SQL,
                    chunk.len(),
                    "np_realtime_connections (socket_id, source_account_id, user_id, node_id, ip, transport, \
                     device_type, device_os, device_browser, user_agent, status, connected_at)",
                    "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'connected', ?)",
                    " ON CONFLICT (socket_id) DO NOTHING",
                );
                let mut q = sqlx::query(sql);
                for c in chunk {
                    q = bind_open(q, c);
                }
                q.execute(&mut *tx).await?;
            }
        } else {
            for c in opened {
                bind_open(
                    sqlx::query(
                        "INSERT INTO np_realtime_connections (socket_id, source_account_id, user_id, node_id, ip, \
                         transport, device_type, device_os, device_browser, user_agent, status, connected_at) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 'connected', $11) \
                         ON CONFLICT (socket_id) DO NOTHING",
                    ),
                    c,
                )
                .execute(&mut *tx)
                .await?;
            }
        }
        for (sid, at, reason) in closed {
            sqlx::query(
                "UPDATE np_realtime_connections SET status = 'closed', disconnected_at = $2, disconnect_reason = $3 \
                 WHERE socket_id = $1",
            )
            .bind(sid)
            .bind(*at)
            .bind(reason)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await
    }

    /// Marks connections closed that a previous run of this node (or of any node, with `node` None) left open:
    /// after a crash nobody stays connected forever.
    pub async fn close_stale_connections(&self, node: Option<&str>, reason: &str) -> Result<u64, sqlx::Error> {
        let now = super::now_ms();
        let res = match node {
            Some(n) => sqlx::query(
                "UPDATE np_realtime_connections SET status = 'closed', disconnected_at = $1, disconnect_reason = $2 \
                     WHERE status = 'connected' AND node_id = $3",
            )
            .bind(now)
            .bind(reason)
            .bind(n)
            .execute(&self.pool)
            .await?,
            None => sqlx::query(
                "UPDATE np_realtime_connections SET status = 'closed', disconnected_at = $1, disconnect_reason = $2 \
                     WHERE status = 'connected'",
            )
            .bind(now)
            .bind(reason)
            .execute(&self.pool)
            .await?,
        };
        // Closed rows are history; keep a week of it.
        sqlx::query("DELETE FROM np_realtime_connections WHERE status = 'closed' AND disconnected_at < $1")
            .bind(now - 7 * 86_400_000)
            .execute(&self.pool)
            .await?;
        Ok(res.rows_affected())
    }

    /// Open connections, newest first (the CLI's fallback when the server is not running).
    pub async fn open_connections(&self, account: Option<&str>, limit: i64) -> Result<Vec<ConnectionRow>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT socket_id, source_account_id, user_id, node_id, ip, transport, device_type, device_os, \
             device_browser, connected_at FROM np_realtime_connections \
             WHERE status = 'connected' AND ($1 IS NULL OR source_account_id = $1) ORDER BY connected_at DESC LIMIT $2",
        )
        .bind(account)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(ConnectionRow {
                    socket_id: r.try_get("socket_id")?,
                    account: r.try_get("source_account_id")?,
                    user_id: r.try_get("user_id")?,
                    node_id: r.try_get("node_id")?,
                    ip: r.try_get("ip")?,
                    transport: r.try_get("transport")?,
                    device_type: r.try_get("device_type")?,
                    device_os: r.try_get("device_os")?,
                    device_browser: r.try_get("device_browser")?,
                    connected_at: r.try_get("connected_at")?,
                })
            })
            .collect()
    }
}
