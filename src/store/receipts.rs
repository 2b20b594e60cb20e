//! Read watermarks, deliveries and reactions.

use sqlx::Row;

use super::{Store, now_ms};

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

    /// Members of a room with their read watermarks.
    pub async fn watermarks(&self, account: &str, room: &str) -> Result<Vec<(String, i64)>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT user_id, last_read_seq FROM np_realtime_room_members \
             WHERE source_account_id = $1 AND room_name = $2 AND banned = 0",
        )
        .bind(account)
        .bind(room)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| Ok((r.try_get("user_id")?, r.try_get("last_read_seq")?))).collect()
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
