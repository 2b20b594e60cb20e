//! What the database holds for a user whose socket is being admitted: their rooms and their stored presence.
//!
//! Handshakes that arrive together share their reads. One task takes every request waiting (up to
//! [`MAX_BATCH`]) and answers them with two statements per account, whatever their number: during a
//! connection storm or a ramp, two round trips to the database per handshake were most of what a connect
//! cost (a round trip is a hand-off to the database's thread and back). A lone handshake is still two
//! statements, as before.

use std::collections::{BTreeMap, HashMap};

use sqlx::Row;
use sqlx::any::AnyRow;
use tokio::sync::{mpsc, oneshot};

use super::Store;
use super::messages::batch::{NO_KEY, Shapes, padded_chunks, tuples};
use super::presence::{PresenceRow, presence_row};

/// Most requests answered by one pair of statements (64-row chunks inside).
const MAX_BATCH: usize = 256;

/// A user's rooms and stored presence.
#[derive(Debug, Default)]
pub struct Arrival {
    /// (room, muted), by room name: active rooms the user is a member of, not banned from.
    pub rooms: Vec<(String, bool)>,
    /// The stored presence row, when it was asked for: `None` when it was not, `Some(None)` when the user has
    /// none.
    pub presence: Option<Option<PresenceRow>>,
}

struct Ask {
    account: String,
    user: String,
    presence: bool,
    reply: oneshot::Sender<Result<Arrival, String>>,
}

/// The handle handshakes ask through; the task stops when the last handle is dropped.
#[derive(Clone)]
pub struct Arrivals {
    tx: mpsc::UnboundedSender<Ask>,
}

impl Arrivals {
    pub fn spawn(store: Store) -> Arrivals {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(store, rx));
        Arrivals { tx }
    }

    /// The user's rooms, and their stored presence when `presence` is true. The error is the database's,
    /// as text (one failed statement answers every request of its batch).
    pub async fn load(&self, account: &str, user: &str, presence: bool) -> Result<Arrival, String> {
        let (reply, rx) = oneshot::channel();
        let ask = Ask { account: account.to_string(), user: user.to_string(), presence, reply };
        self.tx.send(ask).map_err(|_| "the server is stopping".to_string())?;
        rx.await.map_err(|_| "the server is stopping".to_string())?
    }
}

async fn run(store: Store, mut rx: mpsc::UnboundedReceiver<Ask>) {
    while let Some(first) = rx.recv().await {
        let mut asks = vec![first];
        while asks.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(ask) => asks.push(ask),
                Err(_) => break,
            }
        }
        answer(&store, asks).await;
    }
}

/// Answers a batch, account by account.
async fn answer(store: &Store, asks: Vec<Ask>) {
    let mut by_account: BTreeMap<String, Vec<Ask>> = BTreeMap::new();
    for ask in asks {
        by_account.entry(ask.account.clone()).or_default().push(ask);
    }
    for (account, asks) in by_account {
        let mut users: Vec<&str> = asks.iter().map(|a| a.user.as_str()).collect();
        users.sort_unstable();
        users.dedup();
        let mut wanted: Vec<&str> = asks.iter().filter(|a| a.presence).map(|a| a.user.as_str()).collect();
        wanted.sort_unstable();
        wanted.dedup();
        let loaded = async {
            let rooms = store.rooms_of_users(&account, &users).await?;
            let presence = store.presence_of_users(&account, &wanted).await?;
            Ok::<_, sqlx::Error>((rooms, presence))
        };
        match loaded.await {
            Ok((rooms, presence)) => {
                for ask in asks {
                    let arrival = Arrival {
                        rooms: rooms.get(&ask.user).cloned().unwrap_or_default(),
                        presence: ask.presence.then(|| presence.get(&ask.user).cloned()),
                    };
                    let _ = ask.reply.send(Ok(arrival));
                }
            }
            Err(e) => {
                let message = e.to_string();
                for ask in asks {
                    let _ = ask.reply.send(Err(message.clone()));
                }
            }
        }
    }
}

// Each user's rows are found through an index on (account, user): the VALUES list is joined to the table
// (`CROSS JOIN` keeps SQLite's plan on the index, the list outside). Chunks have fixed sizes, padded with a
// user id nobody has, so each statement's text is built and prepared once.

// The users are parameters 1 to `rows`, the account the last one.

fn rooms_sql(rows: usize) -> String {
    format!(
        "SELECT m.user_id, m.room_name, m.muted FROM (VALUES {}) AS v \
         CROSS JOIN np_realtime_room_members AS m \
         JOIN np_realtime_rooms AS r ON r.source_account_id = m.source_account_id AND r.name = m.room_name \
         WHERE m.source_account_id = ${} AND m.user_id = v.column1 AND m.banned = 0 AND r.is_active = 1",
        tuples(rows, 1),
        rows + 1
    )
}

fn presence_sql(rows: usize) -> String {
    format!(
        "SELECT p.user_id, p.status, p.custom_text, p.custom_emoji, p.custom_expires_at, p.last_seen_at, \
         p.visibility, p.show_online_status, p.show_last_seen, p.allow_read_receipts, p.invisible_mode \
         FROM (VALUES {}) AS v CROSS JOIN np_realtime_presence AS p \
         WHERE p.source_account_id = ${} AND p.user_id = v.column1",
        tuples(rows, 1),
        rows + 1
    )
}

static ROOMS: Shapes = Shapes::new();
static PRESENCE: Shapes = Shapes::new();

impl Store {
    /// Runs a statement of `shapes` (made by `make`) over `users` (distinct) of `account`, a chunk at a time:
    /// every row it returns, read by `read`.
    async fn per_user<T>(
        &self,
        shapes: &'static Shapes,
        make: fn(usize) -> String,
        account: &str,
        users: &[&str],
        read: fn(&AnyRow) -> Result<T, sqlx::Error>,
    ) -> Result<Vec<T>, sqlx::Error> {
        let mut out = Vec::new();
        let mut rest = users;
        for (rows, used) in padded_chunks(users.len()) {
            let (chunk, next) = rest.split_at(used);
            rest = next;
            let mut q = sqlx::query(shapes.get(rows, make));
            for i in 0..rows {
                q = q.bind(chunk.get(i).copied().unwrap_or(NO_KEY));
            }
            for r in q.bind(account).fetch_all(&self.pool).await? {
                out.push(read(&r)?);
            }
        }
        Ok(out)
    }

    /// The rooms of each of `users` (distinct) in `account`, sorted by name.
    async fn rooms_of_users(
        &self,
        account: &str,
        users: &[&str],
    ) -> Result<HashMap<String, Vec<(String, bool)>>, sqlx::Error> {
        let read = |r: &AnyRow| -> Result<(String, (String, bool)), sqlx::Error> {
            Ok((r.try_get("user_id")?, (r.try_get("room_name")?, r.try_get::<i64, _>("muted")? != 0)))
        };
        let mut out: HashMap<String, Vec<(String, bool)>> = HashMap::new();
        for (user, room) in self.per_user(&ROOMS, rooms_sql, account, users, read).await? {
            out.entry(user).or_default().push(room);
        }
        for rooms in out.values_mut() {
            rooms.sort_unstable();
        }
        Ok(out)
    }

    /// The stored presence of each of `users` (distinct) in `account` that has one.
    async fn presence_of_users(
        &self,
        account: &str,
        users: &[&str],
    ) -> Result<HashMap<String, PresenceRow>, sqlx::Error> {
        Ok(self.per_user(&PRESENCE, presence_sql, account, users, presence_row).await?.into_iter().collect())
    }
}
