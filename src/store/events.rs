//! The audit log (`np_realtime_events`), with retention.

use serde::Serialize;
use sqlx::Row;

use super::Store;

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EventRow {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<i64>,
    pub account: String,
    pub event_type: String,
    pub user_id: Option<String>,
    pub socket_id: Option<String>,
    pub room_name: Option<String>,
    /// JSON text.
    pub payload: Option<String>,
    pub ip: Option<String>,
    #[serde(serialize_with = "crate::domain::time::ser::ms")]
    pub created_at: i64,
}

type AnyQuery<'q> = sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments>;

fn bind_event(q: AnyQuery<'_>, e: EventRow) -> AnyQuery<'_> {
    q.bind(e.account)
        .bind(e.event_type)
        .bind(e.user_id)
        .bind(e.socket_id)
        .bind(e.room_name)
        .bind(e.payload)
        .bind(e.ip)
        .bind(e.created_at)
}

static INSERT_SQL: [std::sync::OnceLock<String>; 3] = [const { std::sync::OnceLock::new() }; 3];

impl Store {
    pub(crate) async fn insert_events(&self, events: Vec<EventRow>) -> Result<(), sqlx::Error> {
        use super::connections::{sqlite_chunks, sqlite_multi_row};
        let mut tx = self.begin_write().await?;
        if self.dialect == "sqlite" {
            for chunk in sqlite_chunks(events) {
                let sql = sqlite_multi_row(
                    &INSERT_SQL,
                    chunk.len(),
                    "np_realtime_events (source_account_id, event_type, user_id, socket_id, room_name, payload, ip, \
                     created_at)",
                    "(?, ?, ?, ?, ?, ?, ?, ?)",
                    "",
                );
                let mut q = sqlx::query(sql);
                for e in chunk {
                    q = bind_event(q, e);
                }
                q.execute(&mut *tx).await?;
            }
        } else {
            for e in events {
                bind_event(
                    sqlx::query(
                        "INSERT INTO np_realtime_events (source_account_id, event_type, user_id, socket_id, room_name, \
                         payload, ip, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                    ),
                    e,
                )
                .execute(&mut *tx)
                .await?;
            }
        }
        tx.commit().await
    }

    /// The newest events first.
    pub async fn events(&self, account: Option<&str>, limit: i64) -> Result<Vec<EventRow>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT id, source_account_id, event_type, user_id, socket_id, room_name, payload, ip, created_at \
             FROM np_realtime_events WHERE ($1 IS NULL OR source_account_id = $1) ORDER BY id DESC LIMIT $2",
        )
        .bind(account)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(EventRow {
                    id: Some(r.try_get("id")?),
                    account: r.try_get("source_account_id")?,
                    event_type: r.try_get("event_type")?,
                    user_id: r.try_get("user_id")?,
                    socket_id: r.try_get("socket_id")?,
                    room_name: r.try_get("room_name")?,
                    payload: r.try_get("payload")?,
                    ip: r.try_get("ip")?,
                    created_at: r.try_get("created_at")?,
                })
            })
            .collect()
    }
}
