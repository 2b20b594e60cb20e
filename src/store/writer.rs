//! The message writer: one task that owns every message write of this node.
//!
//! Sends, edits and deletes queue here and are committed in batches (up to `REALTIME_BATCH_SIZE` per
//! transaction), so a burst costs one fsync instead of hundreds. A caller's future resolves only after the
//! commit: an ack always means durable.
//!
//! Users take turns: each user's writes wait in a queue of their own, and a batch takes one write from each
//! user in turn, at most [`user_share`] from any one ([`FairQueue`]). Another user's message sent during a
//! burst (a whole rate budget, 600 messages by default) then waits for the batch being committed and goes
//! in the next one, each holding at most a share of the burst, instead of queueing behind all of it. A
//! user's own writes still commit in the order they were queued.
//!
//! The writer also publishes the creation time of the batch in flight, so `sync:messages` never hands out a
//! `serverTime` beyond a message that is about to commit with an older time (a repeated id is harmless, a
//! gap is not).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use tokio::sync::{mpsc, oneshot};

use super::messages::{NewMessage, batch, tx};
use super::{MessageRow, Store, now_ms};
use crate::domain::fairness::FairQueue;
use crate::domain::policy;
use crate::error::{AppError, AppResult};

#[derive(Debug, Clone)]
#[allow(clippy::large_enum_variant)] // inserts are the common case; boxing would allocate per message
pub enum WriteOp {
    Insert(NewMessage),
    /// Edit (content Some) or delete (content None), by `user`.
    Change {
        account: String,
        user: String,
        id: String,
        content: Option<String>,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub enum WriteOutcome {
    Inserted(MessageRow),
    /// The (account, user, clientMessageId) was already stored: the original message.
    Duplicate(MessageRow),
    Changed(MessageRow),
    /// No such room (insert) or no such live message (change).
    NotFound,
}

impl WriteOp {
    /// Whose turn the write takes: (account, user).
    fn author(&self) -> Author {
        match self {
            WriteOp::Insert(m) => (m.account.clone(), m.user_id.clone()),
            WriteOp::Change { account, user, .. } => (account.clone(), user.clone()),
        }
    }
}

type Author = (String, String);

/// The most writes of one user in one batch: a tenth of the batch (at least 1). The batch being committed
/// when another user's message comes, and the batch that message goes in, each hold at most this many of a
/// flooding user's messages, so that message waits for about two such shares of inserts (measured in
/// RELIABILITY.md, Flood) instead of whole batches of them.
pub fn user_share(batch_size: usize) -> usize {
    (batch_size / 10).max(1)
}

type Reply = oneshot::Sender<AppResult<WriteOutcome>>;

#[allow(clippy::large_enum_variant)] // see WriteOp
enum Cmd {
    Op(WriteOp, Reply),
    Close(oneshot::Sender<()>),
}

#[derive(Clone)]
pub struct MessageWriter {
    tx: mpsc::UnboundedSender<Cmd>,
    inflight: Arc<AtomicI64>,
}

const IDLE: i64 = i64::MAX;

/// A queued write; resolves once it is committed.
pub struct Queued(oneshot::Receiver<AppResult<WriteOutcome>>);

impl Queued {
    pub async fn committed(self) -> AppResult<WriteOutcome> {
        match self.0.await {
            Ok(result) => result,
            Err(_) => Err(AppError::internal("message writer stopped")),
        }
    }
}

impl MessageWriter {
    /// Starts the writer on a thread of its own, with its own database connection.
    ///
    /// Why a thread: a batch is a dozen round trips to the database (acquire, BEGIN, four statements,
    /// COMMIT), and on the main runtime each one waited behind every socket's task for a worker to run the
    /// writer again. Under a heavy fan-out a batch of 100 then took 120–290 ms instead of about one, the
    /// batches could no longer keep up with the sends, and every ack and delivery queued behind them. Here
    /// nothing but the writer runs on its runtime, and its connection answers it directly.
    pub fn spawn(store: Store, batch_size: usize) -> MessageWriter {
        let (tx, rx) = mpsc::unbounded_channel();
        let inflight = Arc::new(AtomicI64::new(IDLE));
        let batch_size = batch_size.max(1);
        let published = inflight.clone();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("cannot start the message writer's runtime");
        std::thread::Builder::new()
            .name("message-writer".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let own = store.dedicated(1).unwrap_or_else(|e| {
                        tracing::warn!(error = %e, "the message writer shares the store's connections");
                        store
                    });
                    run(own.clone(), rx, batch_size, user_share(batch_size), published).await;
                    own.pool.close().await;
                })
            })
            .expect("cannot start the message writer's thread");
        MessageWriter { tx, inflight }
    }

    pub async fn submit(&self, op: WriteOp) -> AppResult<WriteOutcome> {
        self.enqueue(op)?.committed().await
    }

    /// Queues a write without waiting for it. A user's writes commit in the order they were queued, so a
    /// caller can queue several and await them later (a socket's offline queue then shares transactions,
    /// [`user_share`] at a time). Different users' writes take turns.
    pub fn enqueue(&self, op: WriteOp) -> AppResult<Queued> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(Cmd::Op(op, reply)).map_err(|_| AppError::internal("message writer is closed"))?;
        Ok(Queued(rx))
    }

    /// The `since` a client may safely use next: now, or the creation time of the batch being committed.
    /// Read the clock BEFORE running the sync query.
    pub fn safe_server_time(&self) -> i64 {
        let now = now_ms();
        now.min(self.inflight.load(Ordering::SeqCst))
    }

    /// Commits everything queued so far, then stops accepting work.
    pub async fn close(&self) {
        let (done, rx) = oneshot::channel();
        if self.tx.send(Cmd::Close(done)).is_ok() {
            let _ = rx.await;
        }
    }
}

async fn run(
    store: Store,
    mut rx: mpsc::UnboundedReceiver<Cmd>,
    batch_size: usize,
    share: usize,
    inflight: Arc<AtomicI64>,
) {
    let mut waiting: FairQueue<Author, (WriteOp, Reply)> = FairQueue::new();
    let mut close: Option<oneshot::Sender<()>> = None;
    loop {
        if waiting.is_empty() {
            if let Some(done) = close.take() {
                rx.close();
                let _ = done.send(());
                return;
            }
            match rx.recv().await {
                Some(cmd) => accept(cmd, &mut waiting, &mut close),
                None => return,
            }
        }
        // Everything sent so far takes its turn in this batch's choice (until a close: what comes after it is
        // refused, as the writer is then stopping).
        while close.is_none() {
            match rx.try_recv() {
                Ok(cmd) => accept(cmd, &mut waiting, &mut close),
                Err(_) => break,
            }
        }
        let mut batch = waiting.take(batch_size, share);
        if batch.is_empty() {
            continue;
        }
        // Publish the batch time first, then take it: any sync that misses this batch's commit has read a
        // serverTime no later than these messages' createdAt.
        let now = now_ms();
        inflight.store(now, Ordering::SeqCst);
        let now = now_ms();
        commit(&store, &mut batch, now).await;
        inflight.store(IDLE, Ordering::SeqCst);
    }
}

fn accept(cmd: Cmd, waiting: &mut FairQueue<Author, (WriteOp, Reply)>, close: &mut Option<oneshot::Sender<()>>) {
    match cmd {
        Cmd::Op(op, reply) => waiting.push(op.author(), (op, reply)),
        Cmd::Close(done) => *close = Some(done),
    }
}

async fn commit(store: &Store, batch: &mut Vec<(WriteOp, Reply)>, now: i64) {
    let ops: Vec<&WriteOp> = batch.iter().map(|(op, _)| op).collect();
    match apply(store, &ops, now).await {
        Ok(outcomes) => {
            for ((_, reply), outcome) in batch.drain(..).zip(outcomes) {
                let _ = reply.send(outcome);
            }
        }
        Err(e) if batch.len() > 1 => {
            // One bad op must not fail its neighbours: retry each alone.
            if !is_unique_violation(&e) {
                tracing::warn!(error = %e, size = batch.len(), "batched message write failed; retrying one by one");
            }
            for (op, reply) in batch.drain(..) {
                let res = match apply(store, &[&op], now).await {
                    Ok(mut v) => v.remove(0),
                    Err(e) => settle(store, &op, e).await,
                };
                let _ = reply.send(res);
            }
        }
        Err(e) => {
            if let Some((op, reply)) = batch.pop() {
                let _ = reply.send(settle(store, &op, e).await);
            }
            batch.clear();
        }
    }
}

/// A write that failed alone. The one failure that is an answer: the same clientMessageId committed
/// meanwhile by another writer (another node took the same retry at the same moment; the unique key
/// decided). The send is then a duplicate of that message, with its id and seq. Any other failure is the
/// caller's error (a full disk says so: [`AppError::disk_full`]); nothing of the write was committed.
async fn settle(store: &Store, op: &WriteOp, e: sqlx::Error) -> AppResult<WriteOutcome> {
    if is_unique_violation(&e)
        && let WriteOp::Insert(m) = op
        && let Some(cid) = &m.client_message_id
    {
        let original = async {
            let mut txn = store.begin_write().await?;
            let row = tx::by_client_id(&mut txn, &m.account, &m.user_id, cid).await?;
            txn.rollback().await?;
            Ok::<_, sqlx::Error>(row)
        };
        match original.await {
            Ok(Some(row)) => return Ok(WriteOutcome::Duplicate(row)),
            Ok(None) => {}
            Err(e2) => return Err(e2.into()),
        }
    }
    Err(e.into())
}

/// A unique key refused the row (PostgreSQL 23505, SQLite 2067/1555).
fn is_unique_violation(e: &sqlx::Error) -> bool {
    match e.as_database_error() {
        Some(d) => {
            d.is_unique_violation()
                || matches!(d.code().as_deref(), Some("23505" | "2067" | "1555"))
                || d.message().contains("UNIQUE constraint failed")
                || d.message().contains("duplicate key value")
        }
        None => false,
    }
}

/// Runs a batch in one transaction: each op's answer (a refused send is an answer, not a failure), or the
/// error that failed the whole batch (nothing of it committed).
async fn apply(store: &Store, ops: &[&WriteOp], now: i64) -> Result<Vec<AppResult<WriteOutcome>>, sqlx::Error> {
    let mut txn = store.begin_write().await?;
    let mut out = Vec::with_capacity(ops.len());
    let mut i = 0;
    while i < ops.len() {
        match ops[i] {
            WriteOp::Insert(_) => {
                // Consecutive sends go together, a few statements for all of them.
                let sends: Vec<&NewMessage> = ops[i..]
                    .iter()
                    .map_while(|op| match op {
                        WriteOp::Insert(m) => Some(m),
                        WriteOp::Change { .. } => None,
                    })
                    .collect();
                i += sends.len();
                out.extend(insert_all(&mut txn, &sends, now).await?);
            }
            WriteOp::Change { account, id, content, .. } => {
                i += 1;
                out.push(Ok(match tx::change(&mut txn, account, id, content.as_deref(), now).await? {
                    Some(row) => WriteOutcome::Changed(row),
                    None => WriteOutcome::NotFound,
                }));
            }
        }
    }
    txn.commit().await?;
    Ok(out)
}

/// What becomes of one send of a run.
enum Fate<'a> {
    Refused(AppError),
    Duplicate(&'a MessageRow),
    /// The same clientMessageId as the earlier send at this index of the run.
    DuplicateOf(usize),
    Insert,
}

/// A run of sends, in queue order, in a fixed handful of statements: the senders' memberships, the stored
/// messages of their clientMessageIds, each room's seqs, the rows. Each send's answer is what sending them
/// one by one in this order would have answered: a sender who may not write is refused; a clientMessageId
/// already stored, or used by an earlier send of the run, answers Duplicate with the original; a room that
/// does not exist answers NotFound; seqs follow the queue order within each room.
async fn insert_all(
    txn: &mut sqlx::Transaction<'static, sqlx::Any>,
    sends: &[&NewMessage],
    now: i64,
) -> Result<Vec<AppResult<WriteOutcome>>, sqlx::Error> {
    let mut member_keys: Vec<batch::MemberKey> = Vec::new();
    let mut seen = HashSet::new();
    for m in sends.iter().filter(|m| m.checked_room.is_some()) {
        let key = (m.account.clone(), m.room.clone(), m.user_id.clone());
        if seen.insert(key.clone()) {
            member_keys.push(key);
        }
    }
    let members = batch::members(txn, &member_keys).await?;
    let mut fates: Vec<Option<Fate>> = sends
        .iter()
        .map(|m| {
            let room = m.checked_room.as_ref()?;
            let key = (m.account.clone(), m.room.clone(), m.user_id.clone());
            policy::check_write(Some(&m.user_id), room, members.get(&key)).err().map(Fate::Refused)
        })
        .collect();

    let mut client_keys: Vec<batch::ClientKey> = Vec::new();
    let mut seen = HashSet::new();
    for (m, fate) in sends.iter().zip(&fates) {
        if let (None, Some(cid)) = (fate, &m.client_message_id) {
            let key = (m.account.clone(), m.user_id.clone(), cid.clone());
            if seen.insert(key.clone()) {
                client_keys.push(key);
            }
        }
    }
    let stored = batch::by_client_ids(txn, &client_keys).await?;

    // Queue order decides: the first send of a clientMessageId is inserted, a later one is its duplicate.
    let mut first_of: HashMap<batch::ClientKey, usize> = HashMap::new();
    let mut counts: HashMap<batch::RoomKey, i64> = HashMap::new();
    for (i, m) in sends.iter().enumerate() {
        if fates[i].is_some() {
            continue;
        }
        if let Some(cid) = &m.client_message_id {
            let key = (m.account.clone(), m.user_id.clone(), cid.clone());
            if let Some(row) = stored.get(&key) {
                fates[i] = Some(Fate::Duplicate(row));
                continue;
            }
            if let Some(&first) = first_of.get(&key) {
                fates[i] = Some(Fate::DuplicateOf(first));
                continue;
            }
            first_of.insert(key, i);
        }
        *counts.entry((m.account.clone(), m.room.clone())).or_default() += 1;
        fates[i] = Some(Fate::Insert);
    }

    // Rooms in one order on every node, so two nodes' batches lock them in the same order.
    let mut rooms: Vec<(batch::RoomKey, i64)> = counts.into_iter().collect();
    rooms.sort();
    let last = batch::allocate(txn, &rooms, now).await?;
    let mut next: HashMap<&batch::RoomKey, i64> =
        rooms.iter().filter_map(|(room, n)| last.get(room).map(|l| (room, l - n + 1))).collect();

    let mut rows: Vec<(&NewMessage, i64)> = Vec::new();
    let mut seqs: Vec<Option<i64>> = vec![None; sends.len()];
    for (i, m) in sends.iter().enumerate() {
        if matches!(fates[i], Some(Fate::Insert))
            && let Some(seq) = next.get_mut(&(m.account.clone(), m.room.clone()))
        {
            seqs[i] = Some(*seq);
            rows.push((m, *seq));
            *seq += 1;
        }
    }
    batch::insert(txn, &rows, now).await?;

    let mut out: Vec<AppResult<WriteOutcome>> = Vec::with_capacity(sends.len());
    for (i, (m, fate)) in sends.iter().zip(fates).enumerate() {
        let outcome = match fate.expect("every send has a fate") {
            Fate::Refused(e) => Err(e),
            Fate::Duplicate(row) => Ok(WriteOutcome::Duplicate(row.clone())),
            Fate::DuplicateOf(first) => Ok(match &out[first] {
                Ok(WriteOutcome::Inserted(row)) => WriteOutcome::Duplicate(row.clone()),
                // The first send's room does not exist: nothing was stored under the id.
                _ => WriteOutcome::NotFound,
            }),
            Fate::Insert => Ok(match seqs[i] {
                Some(seq) => WriteOutcome::Inserted(batch::row_of(m, seq, now)),
                None => WriteOutcome::NotFound,
            }),
        };
        out.push(outcome);
    }
    Ok(out)
}
