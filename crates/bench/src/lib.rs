//! `nself-realtime bench`: a load generator for Socket.IO servers.
//!
//! It speaks Engine.IO v4 / Socket.IO v5 itself over tokio-tungstenite (one small task per
//! connection, a 4 KiB read buffer, no per-connection channels), so a single machine can hold
//! tens of thousands of clients. It works against any Socket.IO server that understands the
//! nself-realtime events (`room:join`, `message:send`, `typing:start`, `presence:update`).
//!
//! Layout of the module:
//! * [`protocol`]: Engine.IO / Socket.IO packet encoding and parsing (pure functions).
//! * [`client`]: one connection: TCP (from a chosen loopback source address), WebSocket upgrade,
//!   Socket.IO CONNECT with `auth {token}`, waiting for the ready event.
//! * [`session`]: what one simulated client does over the run (join, send, drop, reconnect).
//! * [`token`]: JWT minting (claims `sub` and `userId`) or a token template.
//! * [`stats`]: lock-free counters and log-linear latency histograms, mergeable across workers.
//! * [`worker`]: the worker runtime (in-process, or a re-executed child speaking JSON lines).
//! * [`coordinator`]: starts workers, runs the phases in lock-step, shows progress.
//! * [`probe`]: the server's RSS and CPU from `/metrics` or `/proc/<pid>`.
//! * [`report`]: the result table and `--json`.
//! * [`scenarios`]: one file per scenario (connect, idle, fanout, storm, typing/presence, soak).
//!
//! Every scenario is bounded: counts and durations come from flags, every wait has a timeout,
//! and `--max-runtime` aborts the whole run.

pub mod client;
pub mod coordinator;
pub mod probe;
pub mod protocol;
pub mod report;
pub mod scenarios;
pub mod session;
pub mod stats;
pub mod token;
pub mod worker;

use std::time::Duration;

use clap::{Args, Subcommand};

/// Default per-process connection budget: one process may open at most 20,000 files here,
/// and each client connection is one socket.
pub const DEFAULT_MAX_CONNS_PER_WORKER: u64 = 10_000;

/// Load generator: N Socket.IO clients against a server, with a report.
#[derive(Args, Debug, Clone)]
#[command(
    about = "Load generator speaking Engine.IO v4 / Socket.IO v5 (connect, idle, fanout, storm, typing, presence, soak)",
    after_help = "Examples:\n  \
        nself-realtime bench connect -n 5000\n  \
        nself-realtime bench --server-pid $PID idle -n 10000 --duration 30\n  \
        nself-realtime bench fanout --rooms 10 --members 100 --rate 200 --payload 1k --duration 10\n  \
        nself-realtime bench storm -n 5000\n  \
        nself-realtime bench --json typing --rooms 20 --members 20 --rate 500\n  \
        nself-realtime bench --server-pid $PID soak --duration 10m --storm-every 60s"
)]
pub struct BenchArgs {
    #[command(flatten)]
    pub common: CommonArgs,

    #[command(subcommand)]
    pub scenario: Scenario,
}

/// Flags shared by every scenario (accepted before or after the scenario name).
#[derive(Args, Debug, Clone)]
#[command(next_help_heading = "Common options")]
pub struct CommonArgs {
    /// Server base URL (http:// only; the WebSocket URL is derived from it). Several, comma separated: the
    /// nodes of a cluster, each room's members spread evenly over them (server metrics come from the first).
    #[arg(long, global = true, default_value = "http://127.0.0.1:3101")]
    pub url: String,

    /// Socket.IO path on the server.
    #[arg(long, global = true, default_value = "/socket.io/")]
    pub path: String,

    /// HS256 secret used to mint one JWT per simulated user (claims `sub`, `userId`, `iat`, `exp`).
    #[arg(long, global = true, env = "REALTIME_JWT_SECRET", hide_env_values = true)]
    pub secret: Option<String>,

    /// Token template instead of minting: `{user}` is replaced by the user id, `{i}` by the
    /// client index (e.g. `user:{user}` for dev tokens, or a fixed token).
    #[arg(long, global = true)]
    pub token_template: Option<String>,

    /// Lifetime of minted tokens, seconds.
    #[arg(long, global = true, default_value_t = 3600)]
    pub token_ttl: u64,

    /// Connect without any token (servers that allow anonymous sockets).
    #[arg(long, global = true)]
    pub no_auth: bool,

    /// Account sent as `auth.sourceAccountId` (multi-app isolation).
    #[arg(long, global = true)]
    pub app: Option<String>,

    /// Event that marks a client as ready after the Socket.IO CONNECT (`none`: the CONNECT itself).
    #[arg(long, global = true, default_value = "authenticated")]
    pub ready_event: String,

    /// Print the report as one JSON object on stdout (progress still goes to stderr).
    #[arg(long, global = true)]
    pub json: bool,

    /// Name of the server under test, carried into the report (e.g. `realtime`, `socketioxide`).
    #[arg(long, global = true)]
    pub label: Option<String>,

    /// No progress lines on stderr.
    #[arg(long, short = 'q', global = true)]
    pub quiet: bool,

    /// Worker processes (0 = enough for --max-conns-per-worker; 1 runs in this process).
    #[arg(long, global = true, default_value_t = 0)]
    pub workers: u32,

    /// Connections one worker process may hold (each is one file descriptor).
    #[arg(long, global = true, default_value_t = DEFAULT_MAX_CONNS_PER_WORKER)]
    pub max_conns_per_worker: u64,

    /// Spread connections over loopback source addresses 127.0.0.1..127.0.0.N (0 = one per
    /// 5,000 connections). Only used when the target is an IPv4 loopback address.
    #[arg(long, global = true, default_value_t = 0)]
    pub source_addrs: u8,

    /// New connections per second during ramp-up, all workers together (0 = unpaced, bounded
    /// by --concurrency). Default: unpaced for `connect`, 1000/s for the other scenarios.
    #[arg(long, global = true)]
    pub connect_rate: Option<f64>,

    /// Handshakes in flight per worker during ramp-up.
    #[arg(long, global = true, default_value_t = 256)]
    pub concurrency: usize,

    /// Time allowed for one connection to become ready (TCP + WebSocket + CONNECT + ready event).
    #[arg(long, global = true, default_value = "10s", value_parser = parse_duration)]
    pub handshake_timeout: Duration,

    /// PID of the server process: RSS and CPU are read from /proc/<pid> (same machine).
    #[arg(long, global = true)]
    pub server_pid: Option<u32>,

    /// Prometheus endpoint for `process_resident_memory_bytes` / `process_cpu_seconds_total`
    /// when no --server-pid is given (default: <url>/metrics).
    #[arg(long, global = true)]
    pub metrics_url: Option<String>,

    /// Do not sample server memory or CPU at all.
    #[arg(long, global = true)]
    pub no_server_metrics: bool,

    /// Hard limit for the whole run; the run is aborted past it.
    #[arg(long, global = true, default_value = "15m", value_parser = parse_duration)]
    pub max_runtime: Duration,

    /// Allow a target that is not a loopback address (off: the bench refuses to load other hosts).
    #[arg(long, global = true)]
    pub allow_remote: bool,

    /// Prefix of user ids and room names (default: `bench-<run id>`, fresh for every run).
    #[arg(long, global = true)]
    pub prefix: Option<String>,

    /// Internal: index of this worker process.
    #[arg(long, global = true, hide = true)]
    pub worker_id: Option<u32>,

    /// Internal: number of worker processes in the run.
    #[arg(long, global = true, hide = true)]
    pub worker_of: Option<u32>,

    /// Internal: run id chosen by the coordinator.
    #[arg(long, global = true, hide = true)]
    pub run_id: Option<String>,
}

/// The scenarios.
#[derive(Subcommand, Debug, Clone)]
pub enum Scenario {
    /// N authenticated connections: connect rate, handshake latency, failures by reason.
    Connect(scenarios::connect::ConnectArgs),
    /// Hold N connections for T s: server RSS growth per connection and idle CPU.
    Idle(scenarios::idle::IdleArgs),
    /// R rooms × M members, S senders at a target rate: deliveries/s, publish→deliver latency.
    Fanout(scenarios::fanout::FanoutArgs),
    /// All clients drop and reconnect at once: time until all are back and authenticated.
    Storm(scenarios::storm::StormArgs),
    /// `typing:start` storm: broadcasts received per inbound event (amplification).
    Typing(scenarios::events::EventStormArgs),
    /// `presence:update` storm: broadcasts received per inbound event (amplification).
    Presence(scenarios::events::EventStormArgs),
    /// Bounded soak: steady messages, typing and presence, a reconnect storm every --storm-every; the server's
    /// RSS and open files must stay flat after warm-up (needs --server-pid).
    Soak(scenarios::soak::SoakArgs),
}

impl CommonArgs {
    /// The URLs of `--url`, in order.
    pub fn urls(&self) -> Vec<&str> {
        self.url.split(',').map(str::trim).filter(|u| !u.is_empty()).collect()
    }

    /// Ramp-up pace of the whole run (0 = unpaced).
    pub fn connect_rate_for(&self, scenario: &Scenario) -> f64 {
        match (self.connect_rate, scenario) {
            (Some(r), _) => r.max(0.0),
            (None, Scenario::Connect(_)) => 0.0,
            (None, _) => 1000.0,
        }
    }
}

impl Scenario {
    pub fn name(&self) -> &'static str {
        match self {
            Scenario::Connect(_) => "connect",
            Scenario::Idle(_) => "idle",
            Scenario::Fanout(_) => "fanout",
            Scenario::Storm(_) => "storm",
            Scenario::Typing(_) => "typing",
            Scenario::Presence(_) => "presence",
            Scenario::Soak(_) => "soak",
        }
    }
}

/// Entry point of `nself-realtime bench`.
pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    if args.common.worker_id.is_some() {
        return worker::run_child(args).await;
    }
    let max = args.common.max_runtime;
    match tokio::time::timeout(max, coordinator::run(args)).await {
        Ok(r) => r,
        Err(_) => anyhow::bail!("bench: aborted after --max-runtime {max:?}"),
    }
}

/// Parses `10`, `2.5`, `10s`, `500ms`, `2m` (a bare number is seconds).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, mult) = if let Some(v) = s.strip_suffix("ms") {
        (v, 0.001)
    } else if let Some(v) = s.strip_suffix('s') {
        (v, 1.0)
    } else if let Some(v) = s.strip_suffix('m') {
        (v, 60.0)
    } else if let Some(v) = s.strip_suffix('h') {
        (v, 3600.0)
    } else {
        (s, 1.0)
    };
    let n: f64 = num.trim().parse().map_err(|_| format!("invalid duration `{s}` (examples: 10, 2.5s, 500ms, 2m)"))?;
    if !n.is_finite() || n < 0.0 {
        return Err(format!("invalid duration `{s}`"));
    }
    Ok(Duration::from_secs_f64(n * mult))
}

/// Parses a payload size: `100`, `100b`, `1k`, `1kb`, `1KiB` (k = 1024).
pub fn parse_size(s: &str) -> Result<usize, String> {
    let l = s.trim().to_ascii_lowercase();
    let l = l.trim_end_matches("ib").trim_end_matches('b');
    let (num, mult) = if let Some(v) = l.strip_suffix('k') {
        (v, 1024.0)
    } else if let Some(v) = l.strip_suffix('m') {
        (v, 1024.0 * 1024.0)
    } else {
        (l, 1.0)
    };
    let n: f64 = num.trim().parse().map_err(|_| format!("invalid size `{s}` (examples: 100, 1k)"))?;
    if !n.is_finite() || n < 0.0 {
        return Err(format!("invalid size `{s}`"));
    }
    Ok((n * mult).round() as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_sizes() {
        assert_eq!(parse_duration("10").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert!(parse_duration("x").is_err());
        assert_eq!(parse_size("100").unwrap(), 100);
        assert_eq!(parse_size("1k").unwrap(), 1024);
        assert_eq!(parse_size("1KB").unwrap(), 1024);
        assert_eq!(parse_size("100b").unwrap(), 100);
    }

    #[test]
    fn cli_parses_with_flags_after_the_scenario() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(subcommand)]
            cmd: Cmd,
        }
        #[derive(clap::Subcommand)]
        enum Cmd {
            Bench(BenchArgs),
        }
        let cli = Cli::try_parse_from([
            "x",
            "bench",
            "--url",
            "http://127.0.0.1:9",
            "fanout",
            "--rooms",
            "3",
            "--payload",
            "1k",
            "--worker-id",
            "1",
            "--worker-of",
            "2",
            "--run-id",
            "abc",
            "--json",
        ])
        .unwrap();
        let Cmd::Bench(b) = cli.cmd;
        assert_eq!(b.common.worker_id, Some(1));
        assert_eq!(b.common.worker_of, Some(2));
        assert!(b.common.json);
        match b.scenario {
            Scenario::Fanout(f) => {
                assert_eq!(f.rooms, 3);
                assert_eq!(f.payload, 1024);
            }
            _ => panic!("wrong scenario"),
        }
    }
}
