//! What one simulated client does over a run: connect, join its room, then follow the worker's
//! phase signal (send at its share of the rate, stay quiet, drop and reconnect, close).
//!
//! One tokio task per client. The only per-client state is the connection itself, a watch
//! receiver and, for senders, the pending acks.

use std::collections::VecDeque;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;
use serde_json::json;
use tokio::sync::{Semaphore, watch};
use tokio::time::{Instant, Interval, MissedTickBehavior};
use tokio_tungstenite::tungstenite::Message;

use super::client::{self, Conn, Dial, Target};
use super::protocol::{self, AckOutcome, Inbound};
use super::scenarios::{Plan, SendKind};
use super::stats::Stats;
use super::token::TokenSource;

/// The phase every client of a worker follows.
#[derive(Debug, Clone, Copy)]
pub enum Signal {
    /// Connected, doing nothing but answering pings and counting events.
    Idle,
    /// Senders send at their share of the rate, from `start`.
    Send { start: Instant },
    /// Senders stop; everybody keeps receiving.
    Quiet,
    /// Clients drop their connection (no close handshake) and reconnect; latencies are measured from `t0`.
    /// `permille` of the clients take part (1000: all), picked by [`picked`].
    /// With `send`, the senders that stay (and those back) keep sending as in `Send { start: send }`.
    Drop { t0: Instant, permille: u16, seed: u32, send: Option<Instant> },
    /// Close gracefully and end.
    Close,
}

/// State shared by all clients of one worker.
pub struct Shared {
    /// The first node (source addresses, metrics).
    pub target: Target,
    /// Every node: client g connects to `targets[g mod n]`.
    pub targets: Vec<Target>,
    pub tokens: TokenSource,
    pub app: Option<String>,
    pub ready_event: Option<String>,
    pub handshake_timeout: Duration,
    pub plan: Plan,
    /// Prefix of user ids and room names.
    pub prefix: String,
    /// `~bt<run id>:` — marks this run's messages; the send time (µs) follows it.
    pub marker: String,
    /// Loopback source addresses to spread over (0 or 1: let the kernel choose).
    pub source_addrs: u8,
    pub stats: Stats,
    pub phase: watch::Sender<Signal>,
    pub handshake_sem: Semaphore,
}

/// Wall-clock microseconds (the send time travels in the payload, across worker processes).
pub fn now_us() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros() as u64).unwrap_or(0)
}

impl Shared {
    pub fn user_id(&self, g: u64) -> String {
        format!("{}-u{g}", self.prefix)
    }

    /// Bare room id of client `g` (typing uses the bare id; nchat sends it so).
    pub fn room_id(&self, g: u64) -> Option<String> {
        (self.plan.rooms > 0).then(|| format!("{}-r{}", self.prefix, g % self.plan.rooms))
    }

    /// Room name joined by client `g`.
    pub fn room_name(&self, g: u64) -> Option<String> {
        self.room_id(g).map(|r| format!("channel:{r}"))
    }

    /// The node client `g` connects to: the members of each room are spread over the nodes (client g is in
    /// room g mod rooms, so the node goes by g / rooms), and so every room event crosses between them.
    fn target_of(&self, g: u64) -> &Target {
        let n = self.targets.len().max(1) as u64;
        let i = g.checked_div(self.plan.rooms).unwrap_or(g) % n;
        self.targets.get(i as usize).unwrap_or(&self.target)
    }

    fn source_addr(&self, g: u64) -> Option<Ipv4Addr> {
        if self.source_addrs <= 1 || !self.target.is_loopback_v4() {
            return None;
        }
        Some(Ipv4Addr::new(127, 0, 0, 1 + (g % self.source_addrs as u64) as u8))
    }

    fn auth(&self, g: u64) -> Result<serde_json::Value, String> {
        let user = self.user_id(g);
        let token = self.tokens.token(&user, g).map_err(|e| format!("token: {e}"))?;
        let mut auth = serde_json::Map::new();
        if let Some(t) = token {
            auth.insert("token".into(), t.into());
        }
        if let Some(app) = &self.app {
            auth.insert("sourceAccountId".into(), app.clone().into());
        }
        if !auth.is_empty() {
            // The load speaks the dialect of docs/protocol.md: say so, rather than be served the compat dialect
            // (which adds nchat's lib/socket events to every room event). Baselines ignore the field.
            auth.insert("protocol".into(), "contract".into());
        }
        Ok(if auth.is_empty() { serde_json::Value::Null } else { auth.into() })
    }

    /// Every room client `g` joins: its own room (the one it sends to), then the next `joins - 1`.
    fn room_names(&self, g: u64) -> Vec<String> {
        let Some(first) = self.room_name(g) else { return Vec::new() };
        let mut names = vec![first];
        for k in 1..self.plan.joins.min(self.plan.rooms) {
            names.push(format!("channel:{}-r{}", self.prefix, (g + k) % self.plan.rooms));
        }
        names
    }

    /// Connects client `g` and joins its rooms. Join failures are counted, not fatal.
    async fn connect(&self, g: u64) -> Result<Conn, String> {
        let auth = self.auth(g)?;
        let mut conn = client::dial(Dial {
            target: self.target_of(g),
            src: self.source_addr(g),
            auth: &auth,
            ready_event: self.ready_event.as_deref(),
            timeout: self.handshake_timeout,
            stats: &self.stats,
        })
        .await?;
        for room in self.room_names(g) {
            let t = Instant::now();
            match conn.request(&self.stats, "room:join", &json!({ "roomName": room }), self.handshake_timeout).await {
                Ok(AckOutcome::Ok) => {
                    self.stats.join_lat.record(t.elapsed());
                    self.stats.c.joins_ok.fetch_add(1, Relaxed);
                }
                Ok(AckOutcome::Err(code)) => {
                    self.stats.c.joins_failed.fetch_add(1, Relaxed);
                    self.stats.ack_error(&format!("room:join {code}"));
                }
                Err(reason) => {
                    self.stats.c.joins_failed.fetch_add(1, Relaxed);
                    self.stats.ack_error(&format!("room:join {reason}"));
                    if reason == "CLOSED" {
                        return Err("closed: during room:join".into());
                    }
                }
            }
        }
        Ok(conn)
    }
}

enum Exit {
    Close,
    Drop { t0: Instant },
    Lost(String),
}

/// The life of client `g`.
pub async fn run(sh: Arc<Shared>, g: u64) {
    let mut phase = sh.phase.subscribe();
    let st = &sh.stats;

    // Initial connect, paced by the worker and bounded by the handshake semaphore.
    let conn = {
        let _permit = sh.handshake_sem.acquire().await;
        st.c.attempts.fetch_add(1, Relaxed);
        let t = Instant::now();
        match sh.connect(g).await {
            Ok(c) => {
                st.connect_lat.record(t.elapsed());
                st.c.connected.fetch_add(1, Relaxed);
                st.live.fetch_add(1, Relaxed);
                c
            }
            Err(reason) => {
                st.c.failed.fetch_add(1, Relaxed);
                st.connect_failed(&reason);
                st.c.settled.fetch_add(1, Relaxed);
                return;
            }
        }
    };
    st.c.settled.fetch_add(1, Relaxed);

    let mut conn = conn;
    let mut sender = Sender::new(&sh, g);
    loop {
        match live(&sh, g, &mut conn, &mut phase, &mut sender).await {
            Exit::Close => {
                st.live.fetch_sub(1, Relaxed);
                conn.close().await;
                return;
            }
            Exit::Lost(reason) => {
                st.live.fetch_sub(1, Relaxed);
                st.c.lost.fetch_add(1, Relaxed);
                st.lost(&reason);
                return;
            }
            Exit::Drop { t0 } => {
                st.live.fetch_sub(1, Relaxed);
                drop(conn); // abrupt: no close handshake, like a network blip
                sender.forget_pending(st);
                match reconnect(&sh, g, t0).await {
                    Some(c) => conn = c,
                    None => return,
                }
            }
        }
    }
}

/// Reconnects after a drop: optional jitter, then retries with a short backoff.
async fn reconnect(sh: &Shared, g: u64, t0: Instant) -> Option<Conn> {
    let st = &sh.stats;
    let jitter = sh.plan.jitter;
    if !jitter.is_zero() {
        tokio::time::sleep(jitter.mul_f64(rand::random::<f64>())).await;
    }
    let mut last = String::new();
    for attempt in 0..=sh.plan.retries {
        if attempt > 0 {
            let backoff = Duration::from_millis(100u64 << attempt.min(5));
            tokio::time::sleep(backoff.mul_f64(0.5 + rand::random::<f64>() * 0.5)).await;
        }
        st.c.reconnect_attempts.fetch_add(1, Relaxed);
        match sh.connect(g).await {
            Ok(c) => {
                st.reconnect_lat.record(t0.elapsed());
                st.c.reconnected.fetch_add(1, Relaxed);
                st.c.resettled.fetch_add(1, Relaxed);
                st.live.fetch_add(1, Relaxed);
                return Some(c);
            }
            Err(reason) => last = reason,
        }
    }
    st.c.reconnect_failed.fetch_add(1, Relaxed);
    st.reconnect_failed(&last);
    st.c.resettled.fetch_add(1, Relaxed);
    None
}

/// The sending role of a client (most clients have none).
struct Sender {
    kind: Option<SendKind>,
    period: Duration,
    /// Pre-encoded JSON string of the room name / bare room id.
    room_json: String,
    bare_json: String,
    n: u64,
    ticker: Option<Interval>,
    /// (ack id, sent at) of message:send requests awaiting their ack.
    pending: VecDeque<(u64, Instant)>,
}

impl Sender {
    fn new(sh: &Shared, g: u64) -> Sender {
        let p = &sh.plan;
        let is_sender = p.send.is_some() && g < p.senders && p.rate > 0.0;
        let senders = p.senders.max(1) as f64;
        Sender {
            kind: if is_sender { p.send.map(|k| k.for_client(g)) } else { None },
            period: Duration::from_secs_f64((senders / p.rate.max(1e-9)).clamp(1e-4, 3600.0)),
            // Only senders keep the encoded room names (most clients never send).
            room_json: if is_sender { json_str(&sh.room_name(g).unwrap_or_default()) } else { String::new() },
            bare_json: if is_sender { json_str(&sh.room_id(g).unwrap_or_default()) } else { String::new() },
            n: 0,
            ticker: None,
            pending: VecDeque::new(),
        }
    }

    fn start(&mut self, start: Instant) {
        if self.kind.is_none() {
            return;
        }
        // A random phase within the period so senders do not fire in lock-step.
        let offset = self.period.mul_f64(rand::random::<f64>());
        let mut t = tokio::time::interval_at(start + offset, self.period);
        t.set_missed_tick_behavior(MissedTickBehavior::Skip);
        self.ticker = Some(t);
    }

    async fn tick(&mut self) {
        match self.ticker.as_mut() {
            Some(t) => {
                t.tick().await;
            }
            None => std::future::pending::<()>().await,
        }
    }

    fn forget_pending(&mut self, st: &Stats) {
        let n = self.pending.len() as u64;
        if n > 0 {
            st.c.ack_timeouts.fetch_add(n, Relaxed);
            st.inflight.fetch_sub(n as i64, Relaxed);
            self.pending.clear();
        }
    }

    /// The next packet to send, or None when the in-flight limit is reached.
    fn next_packet(&mut self, sh: &Shared, conn: &mut Conn) -> Option<String> {
        let st = &sh.stats;
        // Expire acks that never came.
        while let Some(&(_, t)) = self.pending.front() {
            if t.elapsed() < sh.plan.ack_timeout {
                break;
            }
            self.pending.pop_front();
            st.c.ack_timeouts.fetch_add(1, Relaxed);
            st.inflight.fetch_sub(1, Relaxed);
        }
        self.n += 1;
        match self.kind? {
            SendKind::Message { payload } => {
                if self.pending.len() >= sh.plan.max_inflight {
                    st.c.send_skipped.fetch_add(1, Relaxed);
                    return None;
                }
                let id = conn.next_ack_id();
                let head = format!("{}{}~", sh.marker, now_us());
                let pad = payload.saturating_sub(head.len());
                let mut content = String::with_capacity(head.len() + pad);
                content.push_str(&head);
                content.extend(std::iter::repeat_n('x', pad));
                self.pending.push_back((id, Instant::now()));
                st.inflight.fetch_add(1, Relaxed);
                Some(format!("42{id}[\"message:send\",{{\"roomName\":{},\"content\":\"{content}\"}}]", self.room_json))
            }
            // Resolved per client in Sender::new; never sent as such.
            SendKind::Mixed { .. } => None,
            SendKind::Typing => {
                Some(format!("42[\"typing:start\",{{\"roomName\":{},\"roomType\":\"channel\"}}]", self.bare_json))
            }
            SendKind::Presence => {
                let status = if self.n.is_multiple_of(2) { "online" } else { "away" };
                Some(format!("42[\"presence:update\",{{\"status\":\"{status}\"}}]"))
            }
        }
    }

    fn on_ack(&mut self, st: &Stats, id: u64, raw: &str) {
        let Some(pos) = self.pending.iter().position(|(i, _)| *i == id) else {
            return;
        };
        let (_, t) = self.pending.remove(pos).expect("position is valid");
        st.inflight.fetch_sub(1, Relaxed);
        st.ack_lat.record(t.elapsed());
        match protocol::ack_outcome(raw) {
            AckOutcome::Ok => {
                st.c.acked_ok.fetch_add(1, Relaxed);
            }
            AckOutcome::Err(code) => {
                st.c.acked_err.fetch_add(1, Relaxed);
                st.ack_error(&format!("message:send {code}"));
            }
        }
    }
}

fn json_str(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

/// Whether client `g` takes part in a drop of `permille` of the clients with `seed`: a hash of both, so each
/// storm picks a different, evenly spread set.
pub fn picked(g: u64, seed: u32, permille: u16) -> bool {
    if permille >= 1000 {
        return true;
    }
    // splitmix64 of (seed, g)
    let mut z = g ^ ((seed as u64) << 40) ^ 0x9E37_79B9_7F4A_7C15;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    z % 1000 < permille as u64
}

/// Reads the send time that follows `marker` in a message:new frame.
pub fn sent_at_us(raw: &str, marker: &str) -> Option<u64> {
    let i = raw.find(marker)? + marker.len();
    let digits = raw[i..].bytes().take_while(|c| c.is_ascii_digit()).count();
    raw[i..i + digits].parse().ok()
}

/// The connected life of a client, until the phase says close/drop or the connection is lost.
async fn live(sh: &Shared, g: u64, conn: &mut Conn, phase: &mut watch::Receiver<Signal>, sender: &mut Sender) -> Exit {
    let st = &sh.stats;
    // Apply the current phase (a client that finished connecting late, or reconnected).
    match *phase.borrow_and_update() {
        Signal::Send { start } | Signal::Drop { send: Some(start), .. } => sender.start(start),
        Signal::Close => return Exit::Close,
        _ => {}
    }
    loop {
        tokio::select! {
            changed = phase.changed() => {
                if changed.is_err() {
                    return Exit::Close;
                }
                let sig = *phase.borrow_and_update();
                match sig {
                    Signal::Send { start } => sender.start(start),
                    Signal::Quiet | Signal::Idle => sender.ticker = None,
                    Signal::Drop { t0, permille, seed, .. } => {
                        if picked(g, seed, permille) {
                            st.c.dropped.fetch_add(1, Relaxed);
                            return Exit::Drop { t0 };
                        }
                    }
                    Signal::Close => return Exit::Close,
                }
            }
            msg = conn.ws.next() => {
                let text = match msg {
                    Some(Ok(Message::Text(t))) => t,
                    Some(Ok(Message::Close(_))) | None => return Exit::Lost("closed by server".into()),
                    Some(Ok(_)) => continue,
                    Some(Err(e)) => return Exit::Lost(format!("read: {e}").chars().take(80).collect()),
                };
                st.c.frames_in.fetch_add(1, Relaxed);
                st.c.bytes_in.fetch_add(text.len() as u64, Relaxed);
                match protocol::parse(&text) {
                    Inbound::Ping => {
                        st.c.pings.fetch_add(1, Relaxed);
                        if conn.send(protocol::PONG).await.is_err() {
                            return Exit::Lost("write failed".into());
                        }
                    }
                    Inbound::Event { name, raw, .. } => {
                        st.event_in(name);
                        if name == "message:new"
                            && let Some(t) = sent_at_us(raw, &sh.marker)
                        {
                            let now = now_us();
                            st.c.deliveries.fetch_add(1, Relaxed);
                            st.deliver_lat.record_us(now.saturating_sub(t));
                            st.last_delivery_us.fetch_max(now, Relaxed);
                        }
                    }
                    Inbound::Ack { id, raw } => sender.on_ack(st, id, raw),
                    Inbound::Close => return Exit::Lost("engine.io close from server".into()),
                    Inbound::Disconnect => return Exit::Lost("socket.io disconnect from server".into()),
                    _ => {}
                }
            }
            _ = sender.tick() => {
                if let Some(pkt) = sender.next_packet(sh, conn) {
                    if conn.send(pkt).await.is_err() {
                        return Exit::Lost("write failed".into());
                    }
                    st.c.sent.fetch_add(1, Relaxed);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partial_drop_picks_about_its_share() {
        let n = (0..10_000u64).filter(|&g| picked(g, 1, 250)).count();
        assert!((2_200..2_800).contains(&n), "{n}");
        let other = (0..10_000u64).filter(|&g| picked(g, 1, 250) != picked(g, 2, 250)).count();
        assert!(other > 2_000, "a new seed picks other clients: {other}");
        assert!((0..100u64).all(|g| picked(g, 7, 1000)));
        assert!(!(0..100u64).any(|g| picked(g, 7, 0)));
    }

    #[test]
    fn finds_the_send_time() {
        let raw = r#"["message:new",{"content":"~btab12:1700000000123456~xxxx","id":"1"}]"#;
        assert_eq!(sent_at_us(raw, "~btab12:"), Some(1_700_000_000_123_456));
        assert_eq!(sent_at_us(raw, "~btzz:"), None);
    }
}
