//! Background bookkeeping writes: connection rows and audit events.
//!
//! They are off every hot path: handlers hand records to this task, which writes them in one transaction
//! every 250 ms (or every 1,000 records). A connection storm is then a few transactions, not thousands.

use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use super::Store;
use super::connections::ConnectionOpen;
use super::events::EventRow;

pub enum Record {
    Open(ConnectionOpen),
    Close { socket_id: String, at: i64, reason: String },
    Event(EventRow),
}

#[allow(clippy::large_enum_variant)] // records are the common case; boxing would allocate per record
enum Cmd {
    Record(Record),
    Flush(oneshot::Sender<()>),
}

#[derive(Clone)]
pub struct Ledger {
    tx: mpsc::UnboundedSender<Cmd>,
}

const MAX_BATCH: usize = 1000;
const INTERVAL: Duration = Duration::from_millis(250);

impl Ledger {
    pub fn spawn(store: Store) -> Ledger {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(store, rx));
        Ledger { tx }
    }

    pub fn record(&self, r: Record) {
        let _ = self.tx.send(Cmd::Record(r));
    }

    /// Writes everything recorded so far.
    pub async fn flush(&self) {
        let (done, rx) = oneshot::channel();
        if self.tx.send(Cmd::Flush(done)).is_ok() {
            let _ = rx.await;
        }
    }
}

async fn run(store: Store, mut rx: mpsc::UnboundedReceiver<Cmd>) {
    let mut opened = Vec::new();
    let mut closed = Vec::new();
    let mut events = Vec::new();
    let mut waiters: Vec<oneshot::Sender<()>> = Vec::new();
    loop {
        let first = match rx.recv().await {
            Some(c) => c,
            None => return,
        };
        let deadline = tokio::time::Instant::now() + INTERVAL;
        let mut next = Some(first);
        loop {
            match next.take() {
                Some(Cmd::Record(Record::Open(o))) => opened.push(o),
                Some(Cmd::Record(Record::Close { socket_id, at, reason })) => closed.push((socket_id, at, reason)),
                Some(Cmd::Record(Record::Event(e))) => events.push(e),
                Some(Cmd::Flush(done)) => {
                    waiters.push(done);
                    break;
                }
                None => {}
            }
            if opened.len() + closed.len() + events.len() >= MAX_BATCH {
                break;
            }
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(c)) => next = Some(c),
                Ok(None) | Err(_) => break,
            }
        }
        if !opened.is_empty() || !closed.is_empty() {
            let count = opened.len();
            if let Err(e) = store.record_connections(std::mem::take(&mut opened), &closed).await {
                tracing::warn!(error = %e, opened = count, closed = closed.len(), "could not record connections");
            }
            closed.clear();
        }
        if !events.is_empty() {
            let count = events.len();
            if let Err(e) = store.insert_events(std::mem::take(&mut events)).await {
                tracing::warn!(error = %e, count, "could not write audit events");
            }
        }
        for w in waiters.drain(..) {
            let _ = w.send(());
        }
    }
}
