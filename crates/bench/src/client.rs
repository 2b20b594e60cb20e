//! One Socket.IO client connection over a raw WebSocket: TCP from a chosen source address,
//! WebSocket upgrade, Engine.IO open, Socket.IO CONNECT with `auth`, then the ready event.
//!
//! Memory per connection is kept small: a 4 KiB read buffer, writes go straight to the socket,
//! and nothing else is buffered.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use anyhow::{Context, bail};
use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::{Instant, timeout_at};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::{self, Message, Utf8Bytes, protocol::WebSocketConfig};

use super::protocol::{self, AckOutcome, Inbound};
use super::stats::Stats;

/// Where to connect.
#[derive(Debug, Clone)]
pub struct Target {
    /// Resolved server address.
    pub addr: SocketAddr,
    /// `ws://host:port/socket.io/?EIO=4&transport=websocket`.
    pub ws_url: String,
    /// The HTTP base URL (for /metrics).
    pub base_url: String,
}

impl Target {
    /// Resolves `--url`. Refuses non-loopback targets unless `allow_remote`.
    pub async fn resolve(url: &str, path: &str, allow_remote: bool) -> anyhow::Result<Target> {
        let u = reqwest::Url::parse(url).with_context(|| format!("bench: invalid --url `{url}`"))?;
        let scheme = match u.scheme() {
            "http" | "ws" => "ws",
            "https" | "wss" => bail!("bench: TLS targets are not supported; use http:// on loopback"),
            s => bail!("bench: unsupported URL scheme `{s}`"),
        };
        let host = u.host_str().context("bench: --url has no host")?.to_string();
        let port = u.port_or_known_default().unwrap_or(80);
        let mut addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.trim_matches(['[', ']']), port))
            .await
            .with_context(|| format!("bench: cannot resolve `{host}`"))?
            .collect();
        // Prefer IPv4 (source-address spreading works on 127.0.0.0/8).
        addrs.sort_by_key(|a| !a.is_ipv4());
        let addr = *addrs.first().context("bench: host resolved to no address")?;
        if !allow_remote && !addrs.iter().all(|a| a.ip().is_loopback()) {
            bail!(
                "bench: refusing to load {host} ({}): not a loopback address (pass --allow-remote \
                 only for a server you own)",
                addr.ip()
            );
        }
        let mut p = path.to_string();
        if !p.starts_with('/') {
            p.insert(0, '/');
        }
        let host_port = match u.port() {
            Some(port) => format!("{host}:{port}"),
            None => host.clone(),
        };
        let base_url = format!("{}://{}", u.scheme(), host_port);
        Ok(Target { addr, ws_url: format!("{scheme}://{host_port}{p}?EIO=4&transport=websocket"), base_url })
    }

    pub fn is_loopback_v4(&self) -> bool {
        matches!(self.addr.ip(), IpAddr::V4(v4) if v4.is_loopback())
    }
}

/// WebSocket settings of a bench client: small eager read buffer, no write batching.
pub fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0)
        .max_write_buffer_size(4 << 20)
        .max_message_size(Some(16 << 20))
        .max_frame_size(Some(16 << 20))
}

/// An open, ready Socket.IO connection.
pub struct Conn {
    pub ws: WebSocketStream<TcpStream>,
    next_ack: u64,
}

/// What a failed connection attempt is counted as. Bounded set of strings (plus the server's
/// connect_error message, cut to 80 characters).
pub fn io_reason(e: &io::Error) -> String {
    match e.raw_os_error() {
        Some(24) => "too many open files (EMFILE)".into(),
        Some(99) => "no free source port (EADDRNOTAVAIL)".into(),
        Some(104) => "connection reset".into(),
        Some(110) => "timed out".into(),
        Some(111) => "connection refused".into(),
        Some(113) => "no route to host".into(),
        _ => format!("{:?}", e.kind()).to_lowercase(),
    }
}

fn ws_reason(e: &tungstenite::Error) -> String {
    use tungstenite::Error as E;
    match e {
        E::Http(resp) => format!("ws: http {}", resp.status().as_u16()),
        E::Io(e) => format!("ws: {}", io_reason(e)),
        E::ConnectionClosed | E::AlreadyClosed => "ws: closed".into(),
        E::Protocol(_) => "ws: protocol error".into(),
        E::Capacity(_) => "ws: message too large".into(),
        E::Utf8(_) => "ws: invalid utf-8".into(),
        _ => "ws: error".into(),
    }
}

/// Reads the next text frame (skipping control and binary frames). `Ok(None)` when closed.
async fn next_text(ws: &mut WebSocketStream<TcpStream>) -> Result<Option<Utf8Bytes>, String> {
    loop {
        match ws.next().await {
            None => return Ok(None),
            Some(Err(e)) => return Err(ws_reason(&e)),
            Some(Ok(Message::Text(t))) => return Ok(Some(t)),
            Some(Ok(Message::Close(_))) => return Ok(None),
            Some(Ok(_)) => continue,
        }
    }
}

/// Parameters of one connection attempt.
pub struct Dial<'a> {
    pub target: &'a Target,
    pub src: Option<Ipv4Addr>,
    /// The Socket.IO CONNECT auth object (`Value::Null`: none).
    pub auth: &'a serde_json::Value,
    /// Wait for this event after the CONNECT (None: ready at CONNECT).
    pub ready_event: Option<&'a str>,
    pub timeout: Duration,
    pub stats: &'a Stats,
}

/// Connects and authenticates. The error is the reason, for the failure table.
pub async fn dial(d: Dial<'_>) -> Result<Conn, String> {
    let deadline = Instant::now() + d.timeout;
    // TCP
    let sock = match d.target.addr {
        SocketAddr::V4(_) => TcpSocket::new_v4(),
        SocketAddr::V6(_) => TcpSocket::new_v6(),
    }
    .map_err(|e| format!("tcp: {}", io_reason(&e)))?;
    if let Some(src) = d.src {
        sock.bind(SocketAddr::new(IpAddr::V4(src), 0)).map_err(|e| format!("tcp bind: {}", io_reason(&e)))?;
    }
    let stream = timeout_at(deadline, sock.connect(d.target.addr))
        .await
        .map_err(|_| "timeout: tcp connect".to_string())?
        .map_err(|e| format!("tcp: {}", io_reason(&e)))?;
    stream.set_nodelay(true).ok();

    // WebSocket upgrade
    let (mut ws, _resp) = timeout_at(
        deadline,
        tokio_tungstenite::client_async_with_config(d.target.ws_url.as_str(), stream, Some(ws_config())),
    )
    .await
    .map_err(|_| "timeout: websocket upgrade".to_string())?
    .map_err(|e| ws_reason(&e))?;

    // Engine.IO open
    let open = timeout_at(deadline, next_text(&mut ws))
        .await
        .map_err(|_| "timeout: engine.io open".to_string())??
        .ok_or_else(|| "closed: before engine.io open".to_string())?;
    if !matches!(protocol::parse(&open), Inbound::Open(_)) {
        return Err("eio: unexpected first packet".into());
    }

    // Socket.IO CONNECT
    ws.send(Message::text(protocol::connect_packet(d.auth))).await.map_err(|e| ws_reason(&e))?;
    let mut conn = Conn { ws, next_ack: 0 };
    let mut connected = false;
    loop {
        let stage = if connected { "ready event" } else { "socket.io connect" };
        let t = timeout_at(deadline, next_text(&mut conn.ws))
            .await
            .map_err(|_| format!("timeout: {stage}"))??
            .ok_or_else(|| format!("closed: before {stage}"))?;
        d.stats.c.frames_in.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        match protocol::parse(&t) {
            Inbound::Ping => conn.send(protocol::PONG).await.map_err(|e| ws_reason(&e))?,
            Inbound::Connect(_) => {
                connected = true;
                if d.ready_event.is_none() {
                    return Ok(conn);
                }
            }
            Inbound::ConnectError(j) => {
                let msg: String = protocol::connect_error_message(j).chars().take(80).collect();
                return Err(format!("connect_error: {msg}"));
            }
            Inbound::Event { name, .. } => {
                d.stats.event_in(name);
                if connected && Some(name) == d.ready_event {
                    return Ok(conn);
                }
            }
            Inbound::Close | Inbound::Disconnect => {
                return Err(format!("closed: by server before {stage}"));
            }
            _ => {}
        }
    }
}

impl Conn {
    pub async fn send(&mut self, text: impl Into<String>) -> Result<(), tungstenite::Error> {
        self.ws.send(Message::text(text.into())).await
    }

    pub fn next_ack_id(&mut self) -> u64 {
        let id = self.next_ack;
        self.next_ack += 1;
        id
    }

    /// Emits `name` with an ack and waits for that ack (answering pings, counting other events).
    pub async fn request(
        &mut self,
        stats: &Stats,
        name: &str,
        data: &serde_json::Value,
        timeout: Duration,
    ) -> Result<AckOutcome, String> {
        let id = self.next_ack_id();
        self.send(protocol::event_packet(name, Some(id), data)).await.map_err(|e| ws_reason(&e))?;
        let deadline = Instant::now() + timeout;
        loop {
            let t = timeout_at(deadline, next_text(&mut self.ws))
                .await
                .map_err(|_| "ACK_TIMEOUT".to_string())??
                .ok_or_else(|| "CLOSED".to_string())?;
            stats.c.frames_in.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            match protocol::parse(&t) {
                Inbound::Ping => self.send(protocol::PONG).await.map_err(|e| ws_reason(&e))?,
                Inbound::Ack { id: got, raw } if got == id => return Ok(protocol::ack_outcome(raw)),
                Inbound::Event { name, .. } => stats.event_in(name),
                Inbound::Close | Inbound::Disconnect => return Err("CLOSED".into()),
                _ => {}
            }
        }
    }

    /// Socket.IO DISCONNECT then WebSocket close, waiting briefly for the server's close.
    pub async fn close(mut self) {
        let _ = self.send(protocol::DISCONNECT).await;
        let _ = self.ws.close(None).await;
        let _ = tokio::time::timeout(Duration::from_secs(2), async { while let Some(Ok(_)) = self.ws.next().await {} })
            .await;
    }
}
