//! Presence that outlives a restart: last seen, custom status and privacy settings; and contacts.
//! Heartbeats never reach this table: only changes, session ends and settings are written.

use sqlx::Row;

use super::{Store, flag, now_ms};

/// The stored presence row of a user.
#[derive(Debug, Clone, Default)]
pub struct PresenceRow {
    pub status: String,
    pub custom_text: Option<String>,
    pub custom_emoji: Option<String>,
    pub custom_expires_at: Option<i64>,
    pub last_seen_at: Option<i64>,
    pub visibility: String,
    pub show_online_status: bool,
    pub show_last_seen: bool,
    pub allow_read_receipts: bool,
    pub invisible_mode: bool,
}

/// Settings to store: (visibility, showOnlineStatus, showLastSeen, allowReadReceipts, invisibleMode).
pub struct SettingsRow<'a> {
    pub visibility: &'a str,
    pub show_online_status: bool,
    pub show_last_seen: bool,
    pub allow_read_receipts: bool,
    pub invisible_mode: bool,
}

/// A row of the presence query: (user id, its stored presence).
pub(super) fn presence_row(r: &sqlx::any::AnyRow) -> Result<(String, PresenceRow), sqlx::Error> {
    Ok((
        r.try_get("user_id")?,
        PresenceRow {
            status: r.try_get("status")?,
            custom_text: r.try_get("custom_text")?,
            custom_emoji: r.try_get("custom_emoji")?,
            custom_expires_at: r.try_get("custom_expires_at")?,
            last_seen_at: r.try_get("last_seen_at")?,
            visibility: r.try_get("visibility")?,
            show_online_status: r.try_get::<i64, _>("show_online_status")? != 0,
            show_last_seen: r.try_get::<i64, _>("show_last_seen")? != 0,
            allow_read_receipts: r.try_get::<i64, _>("allow_read_receipts")? != 0,
            invisible_mode: r.try_get::<i64, _>("invisible_mode")? != 0,
        },
    ))
}

impl Store {
    /// Repairs presence after a crash: nobody stays online forever. Returns how many rows were reset.
    pub async fn reset_presence(&self) -> Result<u64, sqlx::Error> {
        let now = now_ms();
        let res = sqlx::query(
            "UPDATE np_realtime_presence SET status = 'offline', last_seen_at = COALESCE(last_seen_at, $1), \
             updated_at = $1 WHERE status <> 'offline'",
        )
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(res.rows_affected())
    }

    /// After a crash: users whose connections a previous run left open were last seen when it stopped, which
    /// is not known; the restart is the closest bound (the previous session's value would be older still).
    /// Users in invisible mode keep theirs. Runs before those connections are closed.
    pub async fn touch_last_seen_of_open_connections(&self, node: Option<&str>) -> Result<u64, sqlx::Error> {
        let res = sqlx::query(
            "INSERT INTO np_realtime_presence (source_account_id, user_id, status, last_seen_at, updated_at) \
             SELECT DISTINCT source_account_id, user_id, 'offline', $1, $1 FROM np_realtime_connections \
             WHERE status = 'connected' AND user_id IS NOT NULL AND ($2 IS NULL OR node_id = $2) \
             ON CONFLICT (source_account_id, user_id) DO UPDATE SET \
             last_seen_at = CASE WHEN np_realtime_presence.invisible_mode = 1 \
               THEN np_realtime_presence.last_seen_at ELSE excluded.last_seen_at END, updated_at = excluded.updated_at",
        )
        .bind(now_ms())
        .bind(node)
        .execute(&self.pool)
        .await?;
        Ok(res.rows_affected())
    }

    pub async fn presence_rows(
        &self,
        account: &str,
        users: &[String],
    ) -> Result<Vec<(String, PresenceRow)>, sqlx::Error> {
        let mut out = Vec::with_capacity(users.len());
        // One user (a socket's handshake): a statement of fixed text, not one formatted for the call.
        if let [user] = users {
            let rows = sqlx::query(
                "SELECT user_id, status, custom_text, custom_emoji, custom_expires_at, last_seen_at, visibility, \
                 show_online_status, show_last_seen, allow_read_receipts, invisible_mode FROM np_realtime_presence \
                 WHERE source_account_id = $1 AND user_id = $2",
            )
            .bind(account)
            .bind(user)
            .fetch_all(&self.pool)
            .await?;
            for r in &rows {
                out.push(presence_row(r)?);
            }
            return Ok(out);
        }
        // Chunked IN lists keep every statement small on both databases.
        for chunk in users.chunks(200) {
            let placeholders: Vec<String> = (0..chunk.len()).map(|i| format!("${}", i + 2)).collect();
            let sql = sqlx::AssertSqlSafe(format!(
                "SELECT user_id, status, custom_text, custom_emoji, custom_expires_at, last_seen_at, visibility, \
                 show_online_status, show_last_seen, allow_read_receipts, invisible_mode FROM np_realtime_presence \
                 WHERE source_account_id = $1 AND user_id IN ({})",
                placeholders.join(", ")
            ));
            let mut q = sqlx::query(sql).bind(account);
            for u in chunk {
                q = q.bind(u);
            }
            for r in &q.fetch_all(&self.pool).await? {
                out.push(presence_row(r)?);
            }
        }
        Ok(out)
    }

    /// Records a published presence change (status word, custom status, last seen).
    pub async fn save_presence(
        &self,
        account: &str,
        user: &str,
        status: &str,
        custom: (Option<&str>, Option<&str>, Option<i64>),
        last_seen: Option<i64>,
    ) -> Result<(), sqlx::Error> {
        let row = PresenceWrite { account, user, status, custom, last_seen };
        upsert_presence(&row, now_ms()).execute(&self.pool).await?;
        Ok(())
    }

    /// [`Store::save_presence`] for many users in one transaction per 500: at shutdown every connected user's
    /// session ends at once, and one write (one fsync on SQLite) each made stopping take seconds per thousand.
    pub async fn save_presences(&self, rows: &[PresenceWrite<'_>]) -> Result<(), sqlx::Error> {
        let now = now_ms();
        for chunk in rows.chunks(500) {
            let mut tx = self.begin_write().await?;
            for row in chunk {
                upsert_presence(row, now).execute(&mut *tx).await?;
            }
            tx.commit().await?;
        }
        Ok(())
    }

    pub async fn save_settings(&self, account: &str, user: &str, s: &SettingsRow<'_>) -> Result<(), sqlx::Error> {
        sqlx::query(
            "INSERT INTO np_realtime_presence (source_account_id, user_id, visibility, show_online_status, \
             show_last_seen, allow_read_receipts, invisible_mode, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
             ON CONFLICT (source_account_id, user_id) DO UPDATE SET visibility = excluded.visibility, \
             show_online_status = excluded.show_online_status, show_last_seen = excluded.show_last_seen, \
             allow_read_receipts = excluded.allow_read_receipts, invisible_mode = excluded.invisible_mode, \
             updated_at = excluded.updated_at",
        )
        .bind(account)
        .bind(user)
        .bind(s.visibility)
        .bind(flag(s.show_online_status))
        .bind(flag(s.show_last_seen))
        .bind(flag(s.allow_read_receipts))
        .bind(flag(s.invisible_mode))
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The user's contacts: explicit pairs plus everyone sharing a `dm:` room with them.
    pub async fn contacts_of(&self, account: &str, user: &str) -> Result<Vec<String>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT contact_user_id AS c FROM np_realtime_contacts WHERE source_account_id = $1 AND user_id = $2 \
             UNION SELECT o.user_id AS c FROM np_realtime_room_members m JOIN np_realtime_room_members o \
               ON o.source_account_id = m.source_account_id AND o.room_name = m.room_name AND o.user_id <> m.user_id \
             WHERE m.source_account_id = $1 AND m.user_id = $2 AND m.room_name LIKE 'dm:%'",
        )
        .bind(account)
        .bind(user)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| r.try_get::<String, _>("c")).collect()
    }

    /// Explicit contacts only (the admin API's list).
    pub async fn explicit_contacts(&self, account: &str, user: &str) -> Result<Vec<String>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT contact_user_id FROM np_realtime_contacts WHERE source_account_id = $1 AND user_id = $2 \
             ORDER BY contact_user_id",
        )
        .bind(account)
        .bind(user)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| r.try_get::<String, _>("contact_user_id")).collect()
    }

    pub async fn add_contact(&self, account: &str, user: &str, contact: &str) -> Result<bool, sqlx::Error> {
        let res = sqlx::query(
            "INSERT INTO np_realtime_contacts (source_account_id, user_id, contact_user_id, created_at) \
             VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
        )
        .bind(account)
        .bind(user)
        .bind(contact)
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        Ok(res.rows_affected() > 0)
    }

    pub async fn remove_contact(&self, account: &str, user: &str, contact: &str) -> Result<bool, sqlx::Error> {
        let res = sqlx::query(
            "DELETE FROM np_realtime_contacts WHERE source_account_id = $1 AND user_id = $2 AND contact_user_id = $3",
        )
        .bind(account)
        .bind(user)
        .bind(contact)
        .execute(&self.pool)
        .await?;
        Ok(res.rows_affected() > 0)
    }
}

/// One user's published presence, as [`Store::save_presences`] writes it.
#[derive(Debug, Clone, Copy)]
pub struct PresenceWrite<'a> {
    pub account: &'a str,
    pub user: &'a str,
    pub status: &'a str,
    /// Custom status text, emoji and expiry (ms).
    pub custom: (Option<&'a str>, Option<&'a str>, Option<i64>),
    /// Last seen (ms); None keeps the stored one.
    pub last_seen: Option<i64>,
}

fn upsert_presence<'q>(
    row: &PresenceWrite<'q>,
    now: i64,
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments> {
    sqlx::query(
        "INSERT INTO np_realtime_presence (source_account_id, user_id, status, custom_text, custom_emoji, \
         custom_expires_at, last_seen_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
         ON CONFLICT (source_account_id, user_id) DO UPDATE SET status = excluded.status, \
         custom_text = excluded.custom_text, custom_emoji = excluded.custom_emoji, \
         custom_expires_at = excluded.custom_expires_at, \
         last_seen_at = COALESCE(excluded.last_seen_at, np_realtime_presence.last_seen_at), \
         updated_at = excluded.updated_at",
    )
    .bind(row.account)
    .bind(row.user)
    .bind(row.status)
    .bind(row.custom.0)
    .bind(row.custom.1)
    .bind(row.custom.2)
    .bind(row.last_seen)
    .bind(now)
}
