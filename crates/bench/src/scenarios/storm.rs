//! `storm`: N clients connect; then all drop their connections at once (no close handshake,
//! like a network blip) and reconnect immediately (optionally spread over --jitter), with a few
//! retries. Measures the time until all are back and authenticated, and the failures.

use std::time::Duration;

use crate::coordinator::Coordinator;
use crate::parse_duration;
use crate::report::{Report, fmt_num};
use crate::worker::Action;

#[derive(clap::Args, Debug, Clone)]
pub struct StormArgs {
    /// Clients (all workers together).
    #[arg(short = 'n', long, default_value_t = 1000)]
    pub connections: u64,

    /// Drop-and-reconnect rounds.
    #[arg(long, default_value_t = 1)]
    pub rounds: u32,

    /// Reconnect attempts after the first one fails (short exponential backoff).
    #[arg(long, default_value_t = 3)]
    pub retries: u32,

    /// Spread reconnects uniformly over this window (0 = all at once).
    #[arg(long, default_value = "0s", value_parser = parse_duration)]
    pub jitter: Duration,

    /// Pause before each round (lets the server notice the previous state).
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub settle: Duration,
}

pub async fn drive(a: &StormArgs, co: &mut Coordinator) -> anyhow::Result<Report> {
    let mut r = co.report();
    r.param("connections", "clients", a.connections, fmt_num(a.connections as f64, 0));
    r.param("rounds", "rounds", a.rounds, a.rounds.to_string());
    r.param("retries", "retries per client", a.retries, a.retries.to_string());
    r.param("jitter_s", "reconnect jitter", a.jitter.as_secs_f64(), format!("{:.1} s", a.jitter.as_secs_f64()));

    let ramp = co.step("ramp", Action::Ramp).await?;
    let mut prev = ramp.snap.clone();
    let mut rounds = Vec::new();
    let mut last = None;
    for i in 0..a.rounds.max(1) {
        tokio::time::sleep(a.settle).await;
        let s_before = co.probe.sample().await;
        let step = co.step(&format!("round {}", i + 1), Action::Drop { permille: 1000, seed: i }).await?;
        let s_after = co.probe.sample().await;
        let d = step.snap.c.delta(&prev.c);
        rounds.push(serde_json::json!({
            "round": i + 1,
            "dropped": prev.live,
            "back": d.reconnected,
            "failed": d.reconnect_failed,
            "attempts": d.reconnect_attempts,
            "seconds": step.elapsed.as_secs_f64(),
            "server_cpu_percent": s_after.cpu_percent_since(&s_before),
        }));
        prev = step.snap.clone();
        last = Some(step);
    }
    let last = last.expect("at least one round");
    co.step("close", Action::Close).await?;

    r.section("results");
    r.int("connected", "connected before the storm", ramp.snap.c.connected);
    r.counts("connect_failures", "initial connect failures", &ramp.snap.fail_reasons);
    for (i, round) in rounds.iter().enumerate() {
        let n = i + 1;
        let back = round["back"].as_u64().unwrap_or(0);
        let dropped = round["dropped"].as_u64().unwrap_or(0);
        let failed = round["failed"].as_u64().unwrap_or(0);
        let secs = round["seconds"].as_f64().unwrap_or(0.0);
        r.text(
            &format!("round_{n}"),
            &format!("round {n}"),
            &format!(
                "{}/{} back in {:.2} s{}",
                fmt_num(back as f64, 0),
                fmt_num(dropped as f64, 0),
                secs,
                if failed > 0 { format!(" · {failed} failed") } else { String::new() }
            ),
        );
    }
    let c = last.snap.c.delta(&ramp.snap.c);
    r.int("reconnected", "reconnected (all rounds)", c.reconnected);
    r.int("reconnect_failed", "gave up after retries", c.reconnect_failed);
    r.int("reconnect_attempts", "reconnect attempts", c.reconnect_attempts);
    r.num(
        "all_back_seconds",
        "time until all back (last round)",
        rounds.last().and_then(|x| x["seconds"].as_f64()).unwrap_or(f64::NAN),
        "s",
        2,
    );
    r.latency("reconnect_ms", "drop→authenticated latency", &last.snap.reconnect_lat);
    r.counts("reconnect_failures", "reconnect failures by reason", &last.snap.refail_reasons);
    r.int("lost", "dropped by the server", last.snap.c.lost);
    r.counts("lost_reasons", "drop reasons", &last.snap.lost_reasons);
    // Keep the per-round detail in the JSON.
    r.raw("rounds", serde_json::Value::Array(rounds));
    co.generator_usage(&mut r, &last, last.snap.live);
    Ok(r)
}
