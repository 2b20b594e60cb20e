//! Read watermarks, deliveries and reactions.

use sqlx::Row;

use std::collections::{HashMap, HashSet};

use sqlx::any::AnyRow;

use super::messages::{MESSAGE_COLUMNS, MessageRow, message_from};
use super::{Store, now_ms};

/// A member's join point and read watermark in a room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Watermark {
    pub user_id: String,
    /// The room's last seq when they joined.
    pub joined_seq: i64,
    pub read_seq: i64,
}

fn watermark_from(row: &AnyRow) -> Result<Watermark, sqlx::Error> {
    Ok(Watermark {
        user_id: row.try_get("user_id")?,
        joined_seq: row.try_get("joined_seq")?,
        read_seq: row.try_get("last_read_seq")?,
    })
}

/// `$from, $from+1, …` for an `IN (…)` list of `n` values.
fn placeholders(from: usize, n: usize) -> String {
    (from..from + n).map(|i| format!("${i}")).collect::<Vec<_>>().join(", ")
}

/// The stored facts behind the receipts of some messages (see [`Store::receipt_facts`]).
#[derive(Debug, Default)]
pub struct ReceiptFacts {
    pub messages: Vec<MessageRow>,
    /// Room → its members, each with whether they turned read receipts off.
    pub members: HashMap<String, Vec<(Watermark, bool)>>,
    /// `(message id, user)` pairs delivered.
    pub delivered: HashSet<(String, String)>,
}

impl Store {
    /// Writes read watermarks (coalesced by the caller); a watermark never moves backwards.
    pub async fn save_watermarks(&self, writes: &[(String, String, String, i64, i64)]) -> Result<(), sqlx::Error> {
        let mut tx = self.begin_write().await?;
        for (account, room, user, seq, at) in writes {
            sqlx::query(
                "UPDATE np_realtime_room_members SET last_read_seq = $4, last_read_at = $5 \
                 WHERE source_account_id = $1 AND room_name = $2 AND user_id = $3 AND last_read_seq < $4",
            )
            .bind(account)
            .bind(room)
            .bind(user)
            .bind(*seq)
            .bind(*at)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await
    }

    /// Members of a room with their join point and read watermark.
    pub async fn watermarks(&self, account: &str, room: &str) -> Result<Vec<Watermark>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT user_id, joined_seq, last_read_seq FROM np_realtime_room_members \
             WHERE source_account_id = $1 AND room_name = $2 AND banned = 0",
        )
        .bind(account)
        .bind(room)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(watermark_from).collect()
    }

    /// What `delivery:sync` needs to count receipts of messages no longer in memory, in three queries for the
    /// whole request: the messages (by server id, or by the requester's client id), then the members of
    /// their rooms (join point, watermark, read-receipt setting), then who got each of them.
    pub async fn receipt_facts(
        &self,
        account: &str,
        requester: &str,
        ids: &[String],
    ) -> Result<ReceiptFacts, sqlx::Error> {
        let mut facts = ReceiptFacts::default();
        if ids.is_empty() {
            return Ok(facts);
        }
        let list = placeholders(3, ids.len());
        let sql = format!(
            "SELECT {MESSAGE_COLUMNS} FROM np_realtime_messages WHERE source_account_id = $1 \
             AND (id IN ({list}) OR (user_id = $2 AND client_message_id IN ({list})))"
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(account).bind(requester);
        for id in ids {
            q = q.bind(id);
        }
        facts.messages = q.fetch_all(&self.pool).await?.iter().map(message_from).collect::<Result<_, _>>()?;
        let mut rooms: Vec<&str> = facts.messages.iter().map(|m| m.room.as_str()).collect();
        rooms.sort_unstable();
        rooms.dedup();
        if rooms.is_empty() {
            return Ok(facts);
        }
        let sql = format!(
            "SELECT m.room_name, m.user_id, m.joined_seq, m.last_read_seq, \
                    COALESCE(p.allow_read_receipts, 1) AS allow_read_receipts \
             FROM np_realtime_room_members m LEFT JOIN np_realtime_presence p \
               ON p.source_account_id = m.source_account_id AND p.user_id = m.user_id \
             WHERE m.source_account_id = $1 AND m.banned = 0 AND m.room_name IN ({})",
            placeholders(2, rooms.len())
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(account);
        for r in &rooms {
            q = q.bind(*r);
        }
        for row in q.fetch_all(&self.pool).await? {
            let room: String = row.try_get("room_name")?;
            let mark = watermark_from(&row)?;
            let receipts_off = row.try_get::<i64, _>("allow_read_receipts")? == 0;
            facts.members.entry(room).or_default().push((mark, receipts_off));
        }
        let sql = format!(
            "SELECT message_id, user_id FROM np_realtime_deliveries WHERE source_account_id = $1 AND message_id IN ({})",
            placeholders(2, facts.messages.len())
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(account);
        for m in &facts.messages {
            q = q.bind(&m.id);
        }
        for row in q.fetch_all(&self.pool).await? {
            facts.delivered.insert((row.try_get("message_id")?, row.try_get("user_id")?));
        }
        Ok(facts)
    }

    pub async fn save_deliveries(&self, rows: &[(String, String, String, i64)]) -> Result<(), sqlx::Error> {
        let mut tx = self.begin_write().await?;
        for (account, message, user, at) in rows {
            sqlx::query(
                "INSERT INTO np_realtime_deliveries (source_account_id, message_id, user_id, delivered_at) \
                 VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
            )
            .bind(account)
            .bind(message)
            .bind(user)
            .bind(*at)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await
    }

    pub async fn delivered_users(&self, account: &str, message: &str) -> Result<Vec<String>, sqlx::Error> {
        let rows =
            sqlx::query("SELECT user_id FROM np_realtime_deliveries WHERE source_account_id = $1 AND message_id = $2")
                .bind(account)
                .bind(message)
                .fetch_all(&self.pool)
                .await?;
        rows.iter().map(|r| r.try_get::<String, _>("user_id")).collect()
    }

    /// Adds or removes a reaction; returns (changed, current count for that emoji).
    pub async fn react(
        &self,
        account: &str,
        message: &str,
        user: &str,
        emoji: &str,
        add: bool,
    ) -> Result<(bool, i64), sqlx::Error> {
        let res = if add {
            sqlx::query(
                "INSERT INTO np_realtime_reactions (source_account_id, message_id, user_id, emoji, created_at) \
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
            )
            .bind(account)
            .bind(message)
            .bind(user)
            .bind(emoji)
            .bind(now_ms())
            .execute(&self.pool)
            .await?
        } else {
            sqlx::query(
                "DELETE FROM np_realtime_reactions WHERE source_account_id = $1 AND message_id = $2 AND user_id = $3 \
                 AND emoji = $4",
            )
            .bind(account)
            .bind(message)
            .bind(user)
            .bind(emoji)
            .execute(&self.pool)
            .await?
        };
        let count: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM np_realtime_reactions WHERE source_account_id = $1 AND message_id = $2 AND emoji = $3",
        )
        .bind(account)
        .bind(message)
        .bind(emoji)
        .fetch_one(&self.pool)
        .await?;
        Ok((res.rows_affected() > 0, count))
    }
}
