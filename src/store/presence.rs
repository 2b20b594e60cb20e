//! Presence that outlives a restart: last seen, custom status and privacy settings; and contacts.

use super::Store;

impl Store {
    /// Repairs presence after a crash: nobody stays online forever. Returns how many rows were reset.
    pub async fn reset_presence(&self) -> Result<u64, sqlx::Error> {
        let now = super::now_ms();
        let res = sqlx::query(
            "UPDATE np_realtime_presence SET status = 'offline', last_seen_at = COALESCE(last_seen_at, $1), \
             updated_at = $1 WHERE status <> 'offline'",
        )
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(res.rows_affected())
    }
}
