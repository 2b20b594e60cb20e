//! Rooms and persisted membership.

use serde::Serialize;
use sqlx::Row;
use sqlx::any::AnyRow;

use super::{Store, flag, now_ms};
use crate::domain::policy::{MemberFacts, RoomFacts, Visibility};

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RoomRow {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub visibility: String,
    pub max_members: Option<i64>,
    pub is_active: bool,
    pub member_count: i64,
    pub last_seq: i64,
    #[serde(serialize_with = "crate::domain::time::ser::opt_ms")]
    pub last_message_at: Option<i64>,
    pub created_by: Option<String>,
    #[serde(serialize_with = "crate::domain::time::ser::ms")]
    pub created_at: i64,
}

impl RoomRow {
    pub fn facts(&self) -> RoomFacts {
        RoomFacts {
            visibility: Visibility::parse(&self.visibility).unwrap_or(Visibility::Public),
            max_members: self.max_members,
            is_active: self.is_active,
            member_count: self.member_count,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MemberRow {
    pub user_id: String,
    pub role: String,
    pub muted: bool,
    pub banned: bool,
    #[serde(serialize_with = "crate::domain::time::ser::ms")]
    pub joined_at: i64,
    pub last_read_seq: i64,
}

impl MemberRow {
    pub fn facts(&self) -> MemberFacts {
        MemberFacts { role: self.role.clone(), muted: self.muted, banned: self.banned }
    }
}

const ROOM_COLUMNS: &str = "r.name, r.type, r.visibility, r.max_members, r.is_active, r.last_seq, r.last_message_at, \
     r.created_by, r.created_at, \
     (SELECT COUNT(*) FROM np_realtime_room_members m \
       WHERE m.source_account_id = r.source_account_id AND m.room_name = r.name AND m.banned = 0) AS member_count";

fn room_from(row: &AnyRow) -> Result<RoomRow, sqlx::Error> {
    Ok(RoomRow {
        name: row.try_get("name")?,
        kind: row.try_get("type")?,
        visibility: row.try_get("visibility")?,
        max_members: row.try_get("max_members")?,
        is_active: row.try_get::<i64, _>("is_active")? != 0,
        member_count: row.try_get("member_count")?,
        last_seq: row.try_get("last_seq")?,
        last_message_at: row.try_get("last_message_at")?,
        created_by: row.try_get("created_by")?,
        created_at: row.try_get("created_at")?,
    })
}

fn member_from(row: &AnyRow) -> Result<MemberRow, sqlx::Error> {
    Ok(MemberRow {
        user_id: row.try_get("user_id")?,
        role: row.try_get("role")?,
        muted: row.try_get::<i64, _>("muted")? != 0,
        banned: row.try_get::<i64, _>("banned")? != 0,
        joined_at: row.try_get("joined_at")?,
        last_read_seq: row.try_get("last_read_seq")?,
    })
}

/// A room to create.
#[derive(Debug, Clone)]
pub struct NewRoom<'a> {
    pub name: &'a str,
    pub kind: &'a str,
    pub visibility: Visibility,
    pub max_members: Option<i64>,
    pub created_by: Option<&'a str>,
}

impl Store {
    pub async fn room(&self, account: &str, name: &str) -> Result<Option<RoomRow>, sqlx::Error> {
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT {ROOM_COLUMNS} FROM np_realtime_rooms r WHERE r.source_account_id = $1 AND r.name = $2"
        ));
        let row = sqlx::query(sql).bind(account).bind(name).fetch_optional(&self.pool).await?;
        row.as_ref().map(room_from).transpose()
    }

    pub async fn rooms(&self, account: &str) -> Result<Vec<RoomRow>, sqlx::Error> {
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT {ROOM_COLUMNS} FROM np_realtime_rooms r WHERE r.source_account_id = $1 ORDER BY r.name"
        ));
        let rows = sqlx::query(sql).bind(account).fetch_all(&self.pool).await?;
        rows.iter().map(room_from).collect()
    }

    /// Creates a room; false when it already existed (then nothing changes).
    pub async fn create_room(&self, account: &str, room: &NewRoom<'_>) -> Result<bool, sqlx::Error> {
        let now = now_ms();
        let res = sqlx::query(
            "INSERT INTO np_realtime_rooms (source_account_id, name, type, visibility, max_members, created_by, \
             created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $7) \
             ON CONFLICT (source_account_id, name) DO NOTHING",
        )
        .bind(account)
        .bind(room.name)
        .bind(room.kind)
        .bind(room.visibility.as_str())
        .bind(room.max_members)
        .bind(room.created_by)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(res.rows_affected() > 0)
    }

    /// Deletes a room with its members, messages and their receipts and reactions. False when there was no
    /// such room. The room row goes first: it is what a message insert locks to take its seq, so a send racing
    /// the delete either commits before (and its message is deleted here) or finds no room afterwards.
    pub async fn delete_room(&self, account: &str, name: &str) -> Result<bool, sqlx::Error> {
        let mut tx = self.begin_write().await?;
        let res = sqlx::query("DELETE FROM np_realtime_rooms WHERE source_account_id = $1 AND name = $2")
            .bind(account)
            .bind(name)
            .execute(&mut *tx)
            .await?;
        for sql in [
            "DELETE FROM np_realtime_deliveries WHERE source_account_id = $1 AND message_id IN \
             (SELECT id FROM np_realtime_messages WHERE source_account_id = $1 AND room_name = $2)",
            "DELETE FROM np_realtime_reactions WHERE source_account_id = $1 AND message_id IN \
             (SELECT id FROM np_realtime_messages WHERE source_account_id = $1 AND room_name = $2)",
            "DELETE FROM np_realtime_messages WHERE source_account_id = $1 AND room_name = $2",
            "DELETE FROM np_realtime_room_members WHERE source_account_id = $1 AND room_name = $2",
        ] {
            sqlx::query(sql).bind(account).bind(name).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(res.rows_affected() > 0)
    }

    pub async fn member(&self, account: &str, room: &str, user: &str) -> Result<Option<MemberRow>, sqlx::Error> {
        let row = sqlx::query(
            "SELECT user_id, role, muted, banned, joined_at, last_read_seq FROM np_realtime_room_members \
             WHERE source_account_id = $1 AND room_name = $2 AND user_id = $3",
        )
        .bind(account)
        .bind(room)
        .bind(user)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(member_from).transpose()
    }

    pub async fn members(&self, account: &str, room: &str, limit: i64) -> Result<Vec<MemberRow>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT user_id, role, muted, banned, joined_at, last_read_seq FROM np_realtime_room_members \
             WHERE source_account_id = $1 AND room_name = $2 ORDER BY joined_at, user_id LIMIT $3",
        )
        .bind(account)
        .bind(room)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(member_from).collect()
    }

    /// Adds a member (or updates the role of an existing one). True when the user was not a member before.
    pub async fn add_member(&self, account: &str, room: &str, user: &str, role: &str) -> Result<bool, sqlx::Error> {
        let res = sqlx::query(
            "INSERT INTO np_realtime_room_members (source_account_id, room_name, user_id, role, joined_at, joined_seq) \
             VALUES ($1, $2, $3, $4, $5, COALESCE((SELECT last_seq FROM np_realtime_rooms \
                                                   WHERE source_account_id = $1 AND name = $2), 0)) \
             ON CONFLICT (source_account_id, room_name, user_id) DO NOTHING",
        )
        .bind(account)
        .bind(room)
        .bind(user)
        .bind(role)
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        Ok(res.rows_affected() > 0)
    }

    pub async fn set_member_flags(
        &self,
        account: &str,
        room: &str,
        user: &str,
        role: Option<&str>,
        muted: Option<bool>,
        banned: Option<bool>,
    ) -> Result<bool, sqlx::Error> {
        let res = sqlx::query(
            "UPDATE np_realtime_room_members SET role = COALESCE($4, role), muted = COALESCE($5, muted), \
             banned = COALESCE($6, banned) WHERE source_account_id = $1 AND room_name = $2 AND user_id = $3",
        )
        .bind(account)
        .bind(room)
        .bind(user)
        .bind(role)
        .bind(muted.map(flag))
        .bind(banned.map(flag))
        .execute(&self.pool)
        .await?;
        Ok(res.rows_affected() > 0)
    }

    pub async fn remove_member(&self, account: &str, room: &str, user: &str) -> Result<bool, sqlx::Error> {
        let res = sqlx::query(
            "DELETE FROM np_realtime_room_members WHERE source_account_id = $1 AND room_name = $2 AND user_id = $3",
        )
        .bind(account)
        .bind(room)
        .bind(user)
        .execute(&self.pool)
        .await?;
        Ok(res.rows_affected() > 0)
    }

    /// Every room the user is a persisted (not banned) member of, with whether they are muted there: rejoined
    /// on each connection.
    pub async fn rooms_of_user(&self, account: &str, user: &str) -> Result<Vec<(String, bool)>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT m.room_name, m.muted FROM np_realtime_room_members m JOIN np_realtime_rooms r \
               ON r.source_account_id = m.source_account_id AND r.name = m.room_name \
             WHERE m.source_account_id = $1 AND m.user_id = $2 AND m.banned = 0 AND r.is_active = 1 \
             ORDER BY m.room_name",
        )
        .bind(account)
        .bind(user)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| Ok((r.try_get::<String, _>("room_name")?, r.try_get::<i64, _>("muted")? != 0))).collect()
    }

    /// Member user ids of a room (for receipt counts and presence audiences).
    pub async fn member_ids(&self, account: &str, room: &str) -> Result<Vec<String>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT user_id FROM np_realtime_room_members WHERE source_account_id = $1 AND room_name = $2 AND banned = 0",
        )
        .bind(account)
        .bind(room)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| r.try_get::<String, _>("user_id")).collect()
    }

    pub async fn count_rooms(&self, account: &str) -> Result<i64, sqlx::Error> {
        sqlx::query_scalar("SELECT COUNT(*) FROM np_realtime_rooms WHERE source_account_id = $1")
            .bind(account)
            .fetch_one(&self.pool)
            .await
    }
}

/// One room of `sync:channels`.
#[derive(Debug, Clone)]
pub struct ChannelRow {
    pub name: String,
    pub kind: String,
    pub last_message_at: Option<i64>,
    pub member_count: i64,
    pub joined_at: i64,
    /// Messages of others after the user's read watermark.
    pub unread: i64,
}

impl Store {
    pub async fn channels_of_user(&self, account: &str, user: &str) -> Result<Vec<ChannelRow>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT r.name, r.type, r.last_message_at, m.joined_at, \
               (SELECT COUNT(*) FROM np_realtime_room_members c \
                 WHERE c.source_account_id = r.source_account_id AND c.room_name = r.name AND c.banned = 0) AS member_count, \
               (SELECT COUNT(*) FROM np_realtime_messages x \
                 WHERE x.source_account_id = r.source_account_id AND x.room_name = r.name AND x.seq > m.last_read_seq \
                   AND x.user_id <> m.user_id AND x.deleted_at IS NULL) AS unread \
             FROM np_realtime_room_members m JOIN np_realtime_rooms r \
               ON r.source_account_id = m.source_account_id AND r.name = m.room_name \
             WHERE m.source_account_id = $1 AND m.user_id = $2 AND m.banned = 0 AND r.is_active = 1 ORDER BY r.name",
        )
        .bind(account)
        .bind(user)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(ChannelRow {
                    name: r.try_get("name")?,
                    kind: r.try_get("type")?,
                    last_message_at: r.try_get("last_message_at")?,
                    member_count: r.try_get("member_count")?,
                    joined_at: r.try_get("joined_at")?,
                    unread: r.try_get("unread")?,
                })
            })
            .collect()
    }
}
