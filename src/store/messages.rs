//! Message rows: the statements the batching writer runs, and the reads (sync, lookups).

use sqlx::any::AnyRow;
use sqlx::{Any, Row, Transaction};

use super::Store;
use crate::domain::names::RoomName;

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
    /// When set, the writer refuses the send unless the sender may write to this room
    /// ([`policy::check_write`](crate::domain::policy::check_write)), reading the membership inside the write
    /// transaction with the rest of its batch instead of one read per message before it is queued.
    pub checked_room: Option<RoomName>,
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

/// The writer's statements for a run of sends, a few rows per statement. Each statement has one of a few
/// fixed shapes (a chunk of 64, 16, 4 or 1 rows), so its text is built once and the connection's statement
/// cache prepares it once: a shape that varied with the batch would be prepared again on every batch, which
/// costs more than the round trips it saves. Every statement runs inside the caller's transaction.
pub(crate) mod batch {
    use std::collections::HashMap;
    use std::sync::OnceLock;

    use super::*;
    use crate::domain::policy::MemberFacts;

    /// Rows per statement, largest first.
    pub const CHUNKS: [usize; 4] = [64, 16, 4, 1];

    /// Splits `n` rows into chunks of the fixed sizes, largest first (greedy).
    pub fn chunks(mut n: usize) -> Vec<usize> {
        let mut out = Vec::new();
        for size in CHUNKS {
            while n >= size {
                out.push(size);
                n -= size;
            }
        }
        out
    }

    /// Chunks for a statement that may carry padding rows (a key no row has): at most 11 of them, so a run
    /// of up to 16 rows takes one statement instead of up to six.
    pub fn padded_chunks(n: usize) -> Vec<(usize, usize)> {
        let mut out = Vec::new();
        let mut left = n;
        while left > 0 {
            let rows = if left >= 64 {
                64
            } else if left > 4 {
                16
            } else if left > 1 {
                4
            } else {
                1
            };
            let used = rows.min(left);
            out.push((rows, used));
            left -= used;
        }
        out
    }

    /// The statement of each chunk size, made by `make` the first time it is asked for.
    pub(crate) struct Shapes(OnceLock<[String; 4]>);

    impl Shapes {
        pub(crate) const fn new() -> Shapes {
            Shapes(OnceLock::new())
        }
        pub(crate) fn get(&'static self, rows: usize, make: fn(usize) -> String) -> &'static str {
            let all = self.0.get_or_init(|| CHUNKS.map(make));
            let i = CHUNKS.iter().position(|&c| c == rows).expect("a chunk size");
            all[i].as_str()
        }
    }

    /// `($1, $2, $3), ($4, $5, $6), …`: `rows` tuples of `width` numbered parameters.
    pub(crate) fn tuples(rows: usize, width: usize) -> String {
        let mut s = String::new();
        for r in 0..rows {
            if r > 0 {
                s.push_str(", ");
            }
            s.push('(');
            for c in 0..width {
                if c > 0 {
                    s.push_str(", ");
                }
                s.push_str(&format!("${}", r * width + c + 1));
            }
            s.push(')');
        }
        s
    }

    // Each lookup joins a VALUES list to the table's key (`CROSS JOIN` keeps SQLite's plan on the index,
    // the list outside); a `(a, b, c) IN (VALUES …)` scans the whole table on SQLite.
    // A chunk of one row is the plain statement (no VALUES list to build and join): at a few messages a
    // second every batch is one send.
    fn members_sql(rows: usize) -> String {
        if rows == 1 {
            return "SELECT m.source_account_id, m.room_name, m.user_id, m.role, m.muted, m.banned \
                    FROM np_realtime_room_members AS m \
                    WHERE m.source_account_id = $1 AND m.room_name = $2 AND m.user_id = $3"
                .to_string();
        }
        format!(
            "SELECT m.source_account_id, m.room_name, m.user_id, m.role, m.muted, m.banned \
             FROM (VALUES {}) AS v CROSS JOIN np_realtime_room_members AS m \
             WHERE m.source_account_id = v.column1 AND m.room_name = v.column2 AND m.user_id = v.column3",
            tuples(rows, 3)
        )
    }

    fn by_client_ids_sql(rows: usize) -> String {
        let columns = MESSAGE_COLUMNS.split(", ").map(|c| format!("m.{c}")).collect::<Vec<_>>().join(", ");
        if rows == 1 {
            return format!(
                "SELECT m.source_account_id, {columns} FROM np_realtime_messages AS m \
                 WHERE m.source_account_id = $1 AND m.user_id = $2 AND m.client_message_id = $3"
            );
        }
        format!(
            "SELECT m.source_account_id, {columns} \
             FROM (VALUES {}) AS v CROSS JOIN np_realtime_messages AS m \
             WHERE m.source_account_id = v.column1 AND m.user_id = v.column2 AND m.client_message_id = v.column3",
            tuples(rows, 3)
        )
    }

    fn allocate_sql(rows: usize) -> String {
        if rows == 1 {
            return "UPDATE np_realtime_rooms SET last_seq = last_seq + $3, last_message_at = $4, updated_at = $4 \
                    WHERE source_account_id = $1 AND name = $2 RETURNING source_account_id, name, last_seq"
                .to_string();
        }
        let now = rows * 3 + 1;
        format!(
            "UPDATE np_realtime_rooms SET last_seq = last_seq + v.column3, last_message_at = ${now}, \
             updated_at = ${now} FROM (VALUES {}) AS v \
             WHERE np_realtime_rooms.source_account_id = v.column1 AND np_realtime_rooms.name = v.column2 \
             RETURNING np_realtime_rooms.source_account_id, np_realtime_rooms.name, np_realtime_rooms.last_seq",
            tuples(rows, 3)
        )
    }

    const INSERT_WIDTH: usize = 13;

    fn insert_sql(rows: usize) -> String {
        let now = rows * INSERT_WIDTH + 1;
        let mut values = String::new();
        for r in 0..rows {
            if r > 0 {
                values.push_str(", ");
            }
            let b = r * INSERT_WIDTH;
            values.push('(');
            for c in 1..=INSERT_WIDTH {
                values.push_str(&format!("${}, ", b + c));
            }
            values.push_str(&format!("${now}, ${now})"));
        }
        format!(
            "INSERT INTO np_realtime_messages (id, source_account_id, room_name, seq, user_id, type, content, \
             thread_id, reply_to, metadata, mentions, attachments, client_message_id, created_at, updated_at) \
             VALUES {values}"
        )
    }

    /// The key of a padding row: no account, room or user has an empty name.
    pub(crate) const NO_KEY: &str = "";

    static MEMBERS: Shapes = Shapes::new();
    static BY_CLIENT_IDS: Shapes = Shapes::new();
    static ALLOCATE: Shapes = Shapes::new();
    static INSERT: Shapes = Shapes::new();

    /// (account, room, user)
    pub type MemberKey = (String, String, String);
    /// (account, user, clientMessageId)
    pub type ClientKey = (String, String, String);
    /// (account, room)
    pub type RoomKey = (String, String);

    /// The memberships among `keys` (distinct), by key.
    pub async fn members(
        tx: &mut Transaction<'static, Any>,
        keys: &[MemberKey],
    ) -> Result<HashMap<MemberKey, MemberFacts>, sqlx::Error> {
        let mut found = HashMap::with_capacity(keys.len());
        let mut at = 0;
        for (rows, used) in padded_chunks(keys.len()) {
            let mut q = sqlx::query(MEMBERS.get(rows, members_sql));
            for (account, room, user) in &keys[at..at + used] {
                q = q.bind(account).bind(room).bind(user);
            }
            for _ in used..rows {
                q = q.bind(NO_KEY).bind(NO_KEY).bind(NO_KEY);
            }
            at += used;
            for row in q.fetch_all(&mut **tx).await? {
                let key = (row.try_get("source_account_id")?, row.try_get("room_name")?, row.try_get("user_id")?);
                let facts = MemberFacts {
                    role: row.try_get("role")?,
                    muted: row.try_get::<i64, _>("muted")? != 0,
                    banned: row.try_get::<i64, _>("banned")? != 0,
                };
                found.insert(key, facts);
            }
        }
        Ok(found)
    }

    /// The stored messages among `keys` (distinct), by (account, user, clientMessageId).
    pub async fn by_client_ids(
        tx: &mut Transaction<'static, Any>,
        keys: &[ClientKey],
    ) -> Result<HashMap<ClientKey, MessageRow>, sqlx::Error> {
        let mut found = HashMap::new();
        let mut at = 0;
        for (rows, used) in padded_chunks(keys.len()) {
            let mut q = sqlx::query(BY_CLIENT_IDS.get(rows, by_client_ids_sql));
            for (account, user, cid) in &keys[at..at + used] {
                q = q.bind(account).bind(user).bind(cid);
            }
            for _ in used..rows {
                q = q.bind(NO_KEY).bind(NO_KEY).bind(NO_KEY);
            }
            at += used;
            for row in q.fetch_all(&mut **tx).await? {
                let m = message_from(&row)?;
                let Some(cid) = m.client_message_id.clone() else { continue };
                found.insert((row.try_get("source_account_id")?, m.user_id.clone(), cid), m);
            }
        }
        Ok(found)
    }

    /// Takes `count` seqs of each room: the room's `last_seq` after the allocation, by room (a room missing
    /// from the answer does not exist). The UPDATE takes the room rows' locks, so seqs stay gap-free and
    /// monotonic per room even with several nodes writing. `rooms` must be distinct.
    pub async fn allocate(
        tx: &mut Transaction<'static, Any>,
        rooms: &[(RoomKey, i64)],
        now: i64,
    ) -> Result<HashMap<RoomKey, i64>, sqlx::Error> {
        let mut last = HashMap::with_capacity(rooms.len());
        let mut at = 0;
        for (rows, used) in padded_chunks(rooms.len()) {
            let mut q = sqlx::query(ALLOCATE.get(rows, allocate_sql));
            for ((account, room), count) in &rooms[at..at + used] {
                q = q.bind(account).bind(room).bind(*count);
            }
            for _ in used..rows {
                q = q.bind(NO_KEY).bind(NO_KEY).bind(0_i64);
            }
            at += used;
            for row in q.bind(now).fetch_all(&mut **tx).await? {
                last.insert((row.try_get(0)?, row.try_get(1)?), row.try_get(2)?);
            }
        }
        Ok(last)
    }

    /// Inserts the messages, each with its allocated seq, stamped `now`.
    pub async fn insert(
        tx: &mut Transaction<'static, Any>,
        messages: &[(&NewMessage, i64)],
        now: i64,
    ) -> Result<(), sqlx::Error> {
        let mut at = 0;
        for rows in chunks(messages.len()) {
            let mut q = sqlx::query(INSERT.get(rows, insert_sql));
            for (m, seq) in &messages[at..at + rows] {
                q = q
                    .bind(&m.id)
                    .bind(&m.account)
                    .bind(&m.room)
                    .bind(*seq)
                    .bind(&m.user_id)
                    .bind(&m.kind)
                    .bind(&m.content)
                    .bind(&m.thread_id)
                    .bind(&m.reply_to)
                    .bind(&m.metadata)
                    .bind(&m.mentions)
                    .bind(&m.attachments)
                    .bind(&m.client_message_id);
            }
            at += rows;
            q.bind(now).execute(&mut **tx).await?;
        }
        Ok(())
    }

    /// The stored row of a message inserted with `seq` at `now`.
    pub fn row_of(m: &NewMessage, seq: i64, now: i64) -> MessageRow {
        MessageRow {
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
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn chunks_are_greedy_and_cover_every_row() {
            assert_eq!(chunks(0), Vec::<usize>::new());
            assert_eq!(chunks(1), vec![1]);
            assert_eq!(chunks(23), vec![16, 4, 1, 1, 1]);
            assert_eq!(chunks(150), vec![64, 64, 16, 4, 1, 1]);
            for n in 0..300 {
                assert_eq!(chunks(n).iter().sum::<usize>(), n);
                let padded = padded_chunks(n);
                assert_eq!(padded.iter().map(|(_, used)| used).sum::<usize>(), n);
                assert!(padded.iter().all(|&(rows, used)| used <= rows && rows - used <= 11 && CHUNKS.contains(&rows)));
            }
            assert_eq!(padded_chunks(20), vec![(16, 16), (4, 4)]);
            assert_eq!(padded_chunks(15), vec![(16, 15)]);
            assert_eq!(padded_chunks(3), vec![(4, 3)]);
        }

        #[test]
        fn shapes_number_their_parameters_in_order() {
            assert_eq!(tuples(2, 3), "($1, $2, $3), ($4, $5, $6)");
            let sql = insert_sql(2);
            assert!(
                sql.ends_with(
                    "($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $27, $27), \
                ($14, $15, $16, $17, $18, $19, $20, $21, $22, $23, $24, $25, $26, $27, $27)"
                ),
                "{sql}"
            );
            assert!(allocate_sql(1).contains("last_message_at = $4"));
        }
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
