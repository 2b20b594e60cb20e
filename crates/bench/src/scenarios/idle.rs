//! `idle`: hold N connections for T seconds; the server's RSS growth per connection and its
//! idle CPU (from /proc/<pid> with --server-pid, else /metrics). With `--rooms` every client first
//! joins `--joins` rooms, so the memory held per connection includes its room memberships.

use std::time::Duration;

use super::Plan;
use crate::coordinator::Coordinator;
use crate::parse_duration;
use crate::report::{Report, fmt_num};
use crate::worker::Action;

#[derive(clap::Args, Debug, Clone)]
pub struct IdleArgs {
    /// Connections to hold (all workers together).
    #[arg(short = 'n', long, default_value_t = 1000)]
    pub connections: u64,

    /// How long to hold them (the idle CPU is measured over this window).
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub duration: Duration,

    /// Pause after the ramp before the idle window starts (lets the server settle).
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub settle: Duration,

    /// Rooms the clients are spread over (0: nobody joins a room).
    #[arg(long, default_value_t = 0)]
    pub rooms: u64,

    /// Rooms each client joins (client g: rooms g, g + 1, ... modulo --rooms); needs --rooms.
    #[arg(long, default_value_t = 1)]
    pub joins: u64,
}

impl IdleArgs {
    pub fn plan(&self) -> Plan {
        let joins = if self.rooms == 0 { 0 } else { self.joins.clamp(1, self.rooms) };
        Plan { rooms: self.rooms, joins, ..Plan::connections(self.connections) }
    }
}

pub async fn drive(a: &IdleArgs, co: &mut Coordinator) -> anyhow::Result<Report> {
    let mut r = co.report();
    r.param("connections", "connections", a.connections, fmt_num(a.connections as f64, 0));
    r.param("duration_s", "idle window", a.duration.as_secs_f64(), format!("{:.1} s", a.duration.as_secs_f64()));
    let plan = a.plan();
    if plan.rooms > 0 {
        r.param("rooms", "rooms", plan.rooms, fmt_num(plan.rooms as f64, 0));
        r.param("joins", "rooms joined per client", plan.joins, fmt_num(plan.joins as f64, 0));
    }

    let s0 = co.probe.sample().await;
    let ramp = co.step("ramp", Action::Ramp).await?;
    tokio::time::sleep(a.settle).await;
    let s1 = co.probe.sample().await;
    let hold = co.step("hold", Action::Hold { ms: a.duration.as_millis() as u64 }).await?;
    let s2 = co.probe.sample().await;
    co.step("close", Action::Close).await?;

    let held = hold.snap.live;
    let lost = hold.snap.c.lost - ramp.snap.c.lost;
    r.section("results");
    r.int("connected", "connected", ramp.snap.c.connected);
    r.int("failed", "failed", ramp.snap.c.failed);
    r.int("held", "still connected at the end", held);
    if plan.rooms > 0 {
        r.int("joined", "room joins ok", ramp.snap.c.joins_ok);
        r.int("join_failed", "room joins failed", ramp.snap.c.joins_failed);
    }
    r.int("lost_during_hold", "dropped during the window", lost);
    r.counts("lost_reasons", "drop reasons", &hold.snap.lost_reasons);
    r.int("pings_answered", "engine.io pings answered", hold.snap.c.pings - ramp.snap.c.pings);
    r.counts("failures", "connect failures by reason", &ramp.snap.fail_reasons);
    r.section("server");
    let rss = |s: &crate::probe::Sample| s.rss_bytes.map(|v| v as f64);
    r.bytes("server_rss_before_bytes", "RSS before", rss(&s0));
    r.bytes("server_rss_after_ramp_bytes", "RSS after ramp", rss(&s1));
    r.bytes("server_rss_end_bytes", "RSS at the end", rss(&s2));
    let per_conn = match (s0.rss_bytes, s2.rss_bytes) {
        (Some(a0), Some(a2)) if held > 0 => Some((a2 as f64 - a0 as f64) / held as f64),
        _ => None,
    };
    r.bytes("server_rss_per_conn_bytes", "RSS growth per connection", per_conn);
    r.opt_num("server_idle_cpu_percent", "idle CPU", s2.cpu_percent_since(&s1), "% of a core", 2);
    r.opt_num("server_ramp_cpu_percent", "CPU during ramp", s1.cpu_percent_since(&s0), "% of a core", 0);
    co.generator_usage(&mut r, &hold, held);
    Ok(r)
}
