//! The pub/sub driver of the Socket.IO Redis adapter (`socketioxide_redis::drivers::Driver`), written for
//! nodes that must survive a Redis restart:
//!
//! - Subscriptions live on one dedicated connection, held by a task that reconnects with backoff (100 ms
//!   doubling to 2 s) whenever it is lost, and then subscribes again to every channel the adapter asked for.
//!   A ping every 3 s finds a connection that died silently. The adapter's message streams never end: they
//!   simply receive nothing while Redis is away.
//! - `publish` never waits for Redis: it queues the message for a publisher task and returns. The adapter
//!   publishes before it delivers to the node's own sockets, and returns early when the publish fails; with
//!   this driver the node's own sockets are served whatever Redis does. The publisher sends what is queued
//!   in one pipeline, in order; a failed publish is counted and logged (at most once per 10 s), never
//!   retried (live fan-out is best effort; messages are persisted and recoverable by sync).
//! - `num_serv` answers the number of live nodes from the node heartbeats ([`super::nodes`]), not from
//!   `PUBSUB NUMSUB` (which counts connections, and is wrong while one is being re-established).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use parking_lot::{Mutex, RwLock};
use redis::aio::PubSubSink;
use socketioxide_redis::drivers::{ChanItem, Driver, MessageStream};
use tokio::sync::mpsc;

/// Messages waiting for the publisher; beyond this, new ones are dropped (and counted).
const QUEUE: usize = 16_384;
const PING_EVERY: Duration = Duration::from_secs(3);
const TIMEOUT: Duration = Duration::from_secs(2);
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// What the cluster link reports (`/metrics`, `/health`).
#[derive(Default)]
pub struct LinkStats {
    /// Publishes that failed or were dropped.
    pub publish_errors: AtomicU64,
    /// Publishes sent.
    pub published: AtomicU64,
    /// Times the subscription connection was re-established after a loss.
    pub reconnects: AtomicU64,
    /// Live nodes (this one included), from the heartbeats.
    pub nodes: AtomicUsize,
    /// Whether the subscription connection is up.
    pub subscribed: AtomicBool,
    last_log: Mutex<Option<std::time::Instant>>,
}

impl LinkStats {
    fn publish_failed(&self, n: u64, e: &dyn std::fmt::Display) {
        let total = self.publish_errors.fetch_add(n, Ordering::Relaxed) + n;
        let mut last = self.last_log.lock();
        if last.is_none_or(|at| at.elapsed() >= Duration::from_secs(10)) {
            *last = Some(std::time::Instant::now());
            tracing::warn!(
                error = %e,
                failed = total,
                "cannot publish to Redis: other nodes miss live events until it answers (this node's own \
                 sockets are served; messages stay recoverable by sync)"
            );
        }
    }
}

/// The error type of the driver (subscriptions and publishes never fail towards the adapter; this is what
/// `Driver` requires).
#[derive(Debug, thiserror::Error)]
#[error("Redis pub/sub: {0}")]
pub struct PubSubError(String);

type Handlers = HashMap<String, mpsc::Sender<ChanItem>>;

/// The driver; clones share the connection and the subscriptions.
#[derive(Clone)]
pub struct PubSubDriver {
    inner: Arc<Inner>,
}

struct Inner {
    handlers: RwLock<Handlers>,
    /// The live subscription connection's command side; None while reconnecting. Held (async lock) while
    /// subscribing, so a subscription is either made on the live connection or found by the resubscription.
    sink: tokio::sync::Mutex<Option<PubSubSink>>,
    queue: mpsc::Sender<(String, Vec<u8>)>,
    stats: Arc<LinkStats>,
    /// Told each time the subscriptions are back after a loss.
    resubscribed: tokio::sync::watch::Sender<u64>,
}

impl PubSubDriver {
    /// Starts the subscription and publisher tasks (they end when every clone of the driver is dropped).
    /// Never fails: while Redis is unreachable the subscription task keeps trying.
    pub fn spawn(client: redis::Client, publisher: redis::aio::ConnectionManager, stats: Arc<LinkStats>) -> Self {
        let (queue, rx) = mpsc::channel(QUEUE);
        let inner = Arc::new(Inner {
            handlers: RwLock::new(HashMap::new()),
            sink: tokio::sync::Mutex::new(None),
            queue,
            stats,
            resubscribed: tokio::sync::watch::Sender::new(0),
        });
        tokio::spawn(subscriber(client, Arc::downgrade(&inner)));
        tokio::spawn(publish_loop(publisher, rx, inner.stats.clone()));
        PubSubDriver { inner }
    }

    pub fn stats(&self) -> &Arc<LinkStats> {
        &self.inner.stats
    }

    /// Changes each time the subscriptions were made again after the connection was lost.
    pub fn resubscriptions(&self) -> tokio::sync::watch::Receiver<u64> {
        self.inner.resubscribed.subscribe()
    }

    /// Queues a publish; never waits (see the module doc).
    pub fn send(&self, chan: String, val: Vec<u8>) {
        if let Err(e) = self.inner.queue.try_send((chan, val)) {
            self.inner.stats.publish_failed(1, &format!("publish queue: {e}"));
        }
    }
}

impl Driver for PubSubDriver {
    type Error = PubSubError;

    async fn publish(&self, chan: String, val: Vec<u8>) -> Result<(), Self::Error> {
        self.send(chan, val);
        Ok(())
    }

    async fn subscribe(&self, chan: String, size: usize) -> Result<MessageStream<ChanItem>, Self::Error> {
        let (tx, rx) = mpsc::channel(size);
        let mut sink = self.inner.sink.lock().await;
        self.inner.handlers.write().insert(chan.clone(), tx);
        if let Some(s) = sink.as_mut()
            && let Err(e) = tokio::time::timeout(TIMEOUT, s.subscribe(&chan))
                .await
                .map_err(|e| e.to_string())
                .and_then(|r| r.map_err(|e| e.to_string()))
        {
            // The connection is failing: the subscriber task reconnects and subscribes again to every channel.
            tracing::debug!(chan, error = %e, "subscription deferred to the reconnection");
        }
        Ok(MessageStream::new(rx))
    }

    async fn unsubscribe(&self, chan: String) -> Result<(), Self::Error> {
        let mut sink = self.inner.sink.lock().await;
        self.inner.handlers.write().remove(&chan);
        if let Some(s) = sink.as_mut() {
            let _ = tokio::time::timeout(TIMEOUT, s.unsubscribe(&chan)).await;
        }
        Ok(())
    }

    async fn num_serv(&self, _chan: &str) -> Result<u16, Self::Error> {
        Ok(self.inner.stats.nodes.load(Ordering::Relaxed).clamp(1, u16::MAX as usize) as u16)
    }
}

/// Holds the subscription connection: connect, subscribe to every channel, forward messages, reconnect.
async fn subscriber(client: redis::Client, inner: std::sync::Weak<Inner>) {
    let mut backoff = Duration::from_millis(100);
    let mut lost_once = false;
    let mut last_error_log: Option<std::time::Instant> = None;
    loop {
        let Some(me) = inner.upgrade() else { return };
        match connect(&client, &me).await {
            Ok(mut stream) => {
                backoff = Duration::from_millis(100);
                me.stats.subscribed.store(true, Ordering::Relaxed);
                if lost_once {
                    me.stats.reconnects.fetch_add(1, Ordering::Relaxed);
                    tracing::info!("Redis pub/sub connection is back; subscriptions restored");
                    me.resubscribed.send_modify(|n| *n += 1);
                }
                let sink = me.sink.lock().await.clone();
                let weak = Arc::downgrade(&me);
                drop(me);
                let why = pump(&mut stream, sink, &weak).await;
                let Some(me) = weak.upgrade() else { return };
                *me.sink.lock().await = None;
                me.stats.subscribed.store(false, Ordering::Relaxed);
                lost_once = true;
                tracing::warn!(reason = %why, "lost the Redis pub/sub connection; reconnecting");
            }
            Err(e) => {
                me.stats.subscribed.store(false, Ordering::Relaxed);
                lost_once = true;
                if last_error_log.is_none_or(|at| at.elapsed() >= Duration::from_secs(10)) {
                    last_error_log = Some(std::time::Instant::now());
                    tracing::warn!(error = %e, "cannot subscribe on Redis; retrying (other nodes' events do not reach this node meanwhile)");
                }
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// A new connection with every channel subscribed; the sink is stored (under its lock, so no subscription
/// falls between the list read here and the sink becoming visible).
async fn connect(client: &redis::Client, inner: &Inner) -> Result<redis::aio::PubSubStream, String> {
    let pubsub = tokio::time::timeout(TIMEOUT, client.get_async_pubsub())
        .await
        .map_err(|_| "connecting timed out".to_string())?
        .map_err(|e| e.to_string())?;
    let (mut sink, stream) = pubsub.split();
    let mut slot = inner.sink.lock().await;
    let channels: Vec<String> = inner.handlers.read().keys().cloned().collect();
    if !channels.is_empty() {
        tokio::time::timeout(TIMEOUT, sink.subscribe(&channels))
            .await
            .map_err(|_| "subscribing timed out".to_string())?
            .map_err(|e| e.to_string())?;
    }
    *slot = Some(sink);
    Ok(stream)
}

/// Forwards messages to the adapter's streams until the connection fails; returns why.
async fn pump(
    stream: &mut redis::aio::PubSubStream,
    mut sink: Option<PubSubSink>,
    inner: &std::sync::Weak<Inner>,
) -> String {
    let mut ping = tokio::time::interval(PING_EVERY);
    ping.tick().await;
    loop {
        tokio::select! {
            msg = stream.next() => {
                let Some(msg) = msg else { return "connection closed".into() };
                let Some(me) = inner.upgrade() else { return "driver dropped".into() };
                let chan = msg.get_channel_name().to_string();
                let handlers = me.handlers.read();
                if let Some(tx) = handlers.get(&chan)
                    && let Err(e) = tx.try_send((chan, msg.get_payload_bytes().to_vec()))
                {
                    tracing::warn!(error = %e, "a Redis pub/sub message was dropped: the adapter is behind");
                }
            }
            _ = ping.tick() => {
                let Some(s) = sink.as_mut() else { continue };
                match tokio::time::timeout(TIMEOUT, s.ping::<redis::Value>()).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => return format!("ping failed: {e}"),
                    Err(_) => return "ping timed out".into(),
                }
            }
        }
    }
}

/// Sends queued publishes, in order, as one pipeline per batch.
async fn publish_loop(
    mut conn: redis::aio::ConnectionManager,
    mut rx: mpsc::Receiver<(String, Vec<u8>)>,
    stats: Arc<LinkStats>,
) {
    let mut batch = Vec::with_capacity(256);
    while rx.recv_many(&mut batch, 256).await > 0 {
        let mut pipe = redis::pipe();
        for (chan, val) in &batch {
            pipe.cmd("PUBLISH").arg(chan).arg(val.as_slice()).ignore();
        }
        let n = batch.len() as u64;
        let mut result = pipe.query_async::<()>(&mut conn).await;
        // A connection that Redis closed (a restart while this node was idle) is found by the first write
        // on it, which then never left: send again once, on the connection the failure re-opened.
        if let Err(e) = &result
            && (e.is_connection_dropped() || e.is_io_error())
        {
            result = pipe.query_async::<()>(&mut conn).await;
        }
        match result {
            Ok(()) => {
                stats.published.fetch_add(n, Ordering::Relaxed);
            }
            Err(e) => stats.publish_failed(n, &e),
        }
        batch.clear();
    }
}

/// A channel of the deployment for the application's own messages between nodes (beside Socket.IO's), on
/// the same driver: published without waiting, resubscribed after a Redis restart. A node does not hear its
/// own messages.
pub struct Bus {
    driver: PubSubDriver,
    chan: String,
    node: String,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Envelope<N, T> {
    node: N,
    body: T,
}

impl Bus {
    /// The channel `<prefix>:bus:<name>`; `node`: this node's id.
    pub fn new(driver: PubSubDriver, prefix: &str, name: &str, node: &str) -> Bus {
        Bus { driver, chan: format!("{prefix}:bus:{name}"), node: node.to_string() }
    }

    pub fn send<T: serde::Serialize>(&self, body: &T) {
        match serde_json::to_vec(&Envelope { node: &self.node, body }) {
            Ok(bytes) => self.driver.send(self.chan.clone(), bytes),
            Err(e) => tracing::error!(error = %e, "cannot encode a message for the other nodes"),
        }
    }

    /// The other nodes' messages, from now on.
    pub async fn listen<T: serde::de::DeserializeOwned + Send + 'static>(&self) -> mpsc::Receiver<T> {
        let (tx, rx) = mpsc::channel(4096);
        let mut stream = match self.driver.subscribe(self.chan.clone(), 4096).await {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "cannot listen to the other nodes");
                return rx;
            }
        };
        let me = self.node.clone();
        tokio::spawn(async move {
            while let Some((_, bytes)) = stream.next().await {
                match serde_json::from_slice::<Envelope<String, T>>(&bytes) {
                    Ok(e) if e.node == me => {}
                    Ok(e) => {
                        if tx.send(e.body).await.is_err() {
                            return;
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "a message from another node could not be read"),
                }
            }
        });
        rx
    }
}
