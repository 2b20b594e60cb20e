//! Message rows: the statements the batching writer runs, and the reads (sync, lookups).

use sqlx::any::AnyRow;
use sqlx::{Any, Row, Transaction};

use super::Store;

/// A message to persist; `id` is made by the caller so a retry can be recognised.
#[derive(Debug, Clone)]
pub struct NewMessage {
    pub id: String,
    pub account: String,
    pub room: String,
    pub user_id: String,
    pub kind: String,
    pub content: String,
    pub thread_id: Option<String>,
    pub reply_to: Option<String>,
    /// JSON text.
    pub metadata: Option<String>,
    pub mentions: Option<String>,
    pub attachments: Option<String>,
    pub client_message_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct MessageRow {
    pub id: String,
    pub room: String,
    pub seq: i64,
    pub user_id: String,
    pub kind: String,
    pub content: String,
    pub thread_id: Option<String>,
    pub reply_to: Option<String>,
    pub metadata: Option<String>,
    pub mentions: Option<String>,
    pub attachments: Option<String>,
    pub client_message_id: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
    pub edited_at: Option<i64>,
    pub deleted_at: Option<i64>,
}

pub(crate) const MESSAGE_COLUMNS: &str = "id, room_name, seq, user_id, type, content, thread_id, reply_to, metadata, \
     mentions, attachments, client_message_id, created_at, updated_at, edited_at, deleted_at";

pub(crate) fn message_from(row: &AnyRow) -> Result<MessageRow, sqlx::Error> {
    Ok(MessageRow {
        id: row.try_get("id")?,
        room: row.try_get("room_name")?,
        seq: row.try_get("seq")?,
        user_id: row.try_get("user_id")?,
        kind: row.try_get("type")?,
        content: row.try_get("content")?,
        thread_id: row.try_get("thread_id")?,
        reply_to: row.try_get("reply_to")?,
        metadata: row.try_get("metadata")?,
        mentions: row.try_get("mentions")?,
        attachments: row.try_get("attachments")?,
        client_message_id: row.try_get("client_message_id")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        edited_at: row.try_get("edited_at")?,
        deleted_at: row.try_get("deleted_at")?,
    })
}

/// One page of `sync:messages`.
#[derive(Debug, Clone)]
pub struct SyncPage {
    pub messages: Vec<MessageRow>,
    pub has_more: bool,
}

/// The statements of the writer, each inside the caller's transaction.
pub(crate) mod tx {
    use super::*;

    pub async fn by_client_id(
        tx: &mut Transaction<'static, Any>,
        account: &str,
        user: &str,
        client_id: &str,
    ) -> Result<Option<MessageRow>, sqlx::Error> {
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT {MESSAGE_COLUMNS} FROM np_realtime_messages \
             WHERE source_account_id = $1 AND user_id = $2 AND client_message_id = $3"
        ));
        let row = sqlx::query(sql).bind(account).bind(user).bind(client_id).fetch_optional(&mut **tx).await?;
        row.as_ref().map(message_from).transpose()
    }

    /// Allocates the room's next seq and inserts the message. The UPDATE takes the room row's lock, so seqs
    /// are gap-free and monotonic per room even with several nodes writing.
    pub async fn insert(
        tx: &mut Transaction<'static, Any>,
        m: &NewMessage,
        now: i64,
    ) -> Result<Option<MessageRow>, sqlx::Error> {
        let seq: Option<i64> = sqlx::query_scalar(
            "UPDATE np_realtime_rooms SET last_seq = last_seq + 1, last_message_at = $3, updated_at = $3 \
             WHERE source_account_id = $1 AND name = $2 RETURNING last_seq",
        )
        .bind(&m.account)
        .bind(&m.room)
        .bind(now)
        .fetch_optional(&mut **tx)
        .await?;
        let Some(seq) = seq else { return Ok(None) };
        sqlx::query(
            "INSERT INTO np_realtime_messages (id, source_account_id, room_name, seq, user_id, type, content, \
             thread_id, reply_to, metadata, mentions, attachments, client_message_id, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $14)",
        )
        .bind(&m.id)
        .bind(&m.account)
        .bind(&m.room)
        .bind(seq)
        .bind(&m.user_id)
        .bind(&m.kind)
        .bind(&m.content)
        .bind(&m.thread_id)
        .bind(&m.reply_to)
        .bind(&m.metadata)
        .bind(&m.mentions)
        .bind(&m.attachments)
        .bind(&m.client_message_id)
        .bind(now)
        .execute(&mut **tx)
        .await?;
        Ok(Some(MessageRow {
            id: m.id.clone(),
            room: m.room.clone(),
            seq,
            user_id: m.user_id.clone(),
            kind: m.kind.clone(),
            content: m.content.clone(),
            thread_id: m.thread_id.clone(),
            reply_to: m.reply_to.clone(),
            metadata: m.metadata.clone(),
            mentions: m.mentions.clone(),
            attachments: m.attachments.clone(),
            client_message_id: m.client_message_id.clone(),
            created_at: now,
            updated_at: now,
            edited_at: None,
            deleted_at: None,
        }))
    }

    /// Edits (content Some) or deletes (content None) a live message; returns the updated row.
    pub async fn change(
        tx: &mut Transaction<'static, Any>,
        account: &str,
        id: &str,
        content: Option<&str>,
        now: i64,
    ) -> Result<Option<MessageRow>, sqlx::Error> {
        let sql = match content {
            Some(_) => {
                "UPDATE np_realtime_messages SET content = $3, updated_at = $4, edited_at = $4 \
                 WHERE source_account_id = $1 AND id = $2 AND deleted_at IS NULL"
            }
            None => {
                "UPDATE np_realtime_messages SET content = COALESCE($3, ''), updated_at = $4, deleted_at = $4 \
                 WHERE source_account_id = $1 AND id = $2 AND deleted_at IS NULL"
            }
        };
        let res = sqlx::query(sql).bind(account).bind(id).bind(content).bind(now).execute(&mut **tx).await?;
        if res.rows_affected() == 0 {
            return Ok(None);
        }
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT {MESSAGE_COLUMNS} FROM np_realtime_messages WHERE source_account_id = $1 AND id = $2"
        ));
        let row = sqlx::query(sql).bind(account).bind(id).fetch_optional(&mut **tx).await?;
        row.as_ref().map(message_from).transpose()
    }
}

impl Store {
    pub async fn message(&self, account: &str, id: &str) -> Result<Option<MessageRow>, sqlx::Error> {
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT {MESSAGE_COLUMNS} FROM np_realtime_messages WHERE source_account_id = $1 AND id = $2"
        ));
        let row = sqlx::query(sql).bind(account).bind(id).fetch_optional(&self.pool).await?;
        row.as_ref().map(message_from).transpose()
    }

    /// A message by its id or by the sender's clientMessageId (delivery:sync accepts either).
    pub async fn message_by_any_id(
        &self,
        account: &str,
        user: &str,
        id: &str,
    ) -> Result<Option<MessageRow>, sqlx::Error> {
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT {MESSAGE_COLUMNS} FROM np_realtime_messages WHERE source_account_id = $1 \
             AND (id = $2 OR (user_id = $3 AND client_message_id = $2)) LIMIT 1"
        ));
        let row = sqlx::query(sql).bind(account).bind(id).bind(user).fetch_optional(&self.pool).await?;
        row.as_ref().map(message_from).transpose()
    }

    /// The OLDEST `limit` messages of a room changed at or after `since` (ms) and after `after_seq`, ascending
    /// by seq. Edits and deletes count by their `updated_at`, so they are included too.
    pub async fn sync_messages(
        &self,
        account: &str,
        room: &str,
        since: i64,
        after_seq: i64,
        limit: i64,
    ) -> Result<SyncPage, sqlx::Error> {
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT {MESSAGE_COLUMNS} FROM np_realtime_messages \
             WHERE source_account_id = $1 AND room_name = $2 AND updated_at >= $3 AND seq > $4 \
             ORDER BY seq LIMIT $5"
        ));
        let rows = sqlx::query(sql)
            .bind(account)
            .bind(room)
            .bind(since)
            .bind(after_seq)
            .bind(limit + 1)
            .fetch_all(&self.pool)
            .await?;
        let mut messages = rows.iter().map(message_from).collect::<Result<Vec<_>, _>>()?;
        let has_more = messages.len() as i64 > limit;
        messages.truncate(limit as usize);
        Ok(SyncPage { messages, has_more })
    }

    pub async fn count_messages(&self, account: &str) -> Result<i64, sqlx::Error> {
        sqlx::query_scalar("SELECT COUNT(*) FROM np_realtime_messages WHERE source_account_id = $1")
            .bind(account)
            .fetch_one(&self.pool)
            .await
    }
}
