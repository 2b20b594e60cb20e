//! `connect`: open N authenticated connections; connect rate, handshake latency, failures by
//! reason. Unpaced by default (bounded by --concurrency handshakes in flight per worker).

use std::time::Duration;

use crate::coordinator::Coordinator;
use crate::parse_duration;
use crate::report::{Report, fmt_num};
use crate::worker::Action;

#[derive(clap::Args, Debug, Clone)]
pub struct ConnectArgs {
    /// Connections to open (all workers together).
    #[arg(short = 'n', long, default_value_t = 1000)]
    pub connections: u64,

    /// Keep them open this long before closing.
    #[arg(long, default_value = "0s", value_parser = parse_duration)]
    pub hold: Duration,
}

pub async fn drive(a: &ConnectArgs, co: &mut Coordinator) -> anyhow::Result<Report> {
    let mut r = co.report();
    r.param("connections", "connections", a.connections, fmt_num(a.connections as f64, 0));
    let rate = co.common.connect_rate_for(&co.scenario);
    r.param(
        "connect_rate_target",
        "target connect rate",
        rate,
        if rate > 0.0 { format!("{} conn/s", fmt_num(rate, 0)) } else { "unpaced".into() },
    );
    r.param("concurrency", "handshakes in flight / worker", co.common.concurrency, co.common.concurrency.to_string());

    let s0 = co.probe.sample().await;
    let ramp = co.step("ramp", Action::Ramp).await?;
    let s1 = co.probe.sample().await;
    if !a.hold.is_zero() {
        co.step("hold", Action::Hold { ms: a.hold.as_millis() as u64 }).await?;
    }
    co.step("close", Action::Close).await?;

    let c = &ramp.snap.c;
    let secs = ramp.elapsed.as_secs_f64();
    r.section("results");
    r.int("connected", "connected", c.connected);
    r.int("failed", "failed", c.failed);
    r.num("ramp_seconds", "ramp time", secs, "s", 2);
    r.num("connect_rate", "connect rate", c.connected as f64 / secs.max(1e-9), "conn/s", 0);
    r.latency("handshake_ms", "handshake latency", &ramp.snap.connect_lat);
    r.counts("failures", "failures by reason", &ramp.snap.fail_reasons);
    r.section("server");
    r.bytes("server_rss_before_bytes", "RSS before", s0.rss_bytes.map(|v| v as f64));
    r.bytes("server_rss_after_bytes", "RSS with all connected", s1.rss_bytes.map(|v| v as f64));
    r.opt_num("server_cpu_percent_ramp", "CPU during ramp", s1.cpu_percent_since(&s0), "% of a core", 0);
    co.generator_usage(&mut r, &ramp, c.connected);
    Ok(r)
}
