//! `soak`: a bounded run of ordinary traffic, looking for slow leaks. R rooms × M members; half of the senders
//! send `message:send`, a quarter `typing:start`, a quarter `presence:update` (together `--rate` events/s);
//! every `--storm-every` a fraction of the clients drop their connection at once and reconnect. Every
//! `--sample-every` the server's RSS (all of it, and its anonymous part: heap and stacks) and open file
//! descriptors are read from /proc/<pid> (`--server-pid`), its live async tasks from its metrics
//! (`realtime_tokio_tasks`, when the server exposes it), next to the window's publish→deliver p99. After the
//! warm-up (the first third of the samples) the anonymous RSS, the descriptors and the tasks must stay within
//! ±`--tolerance` % of their post-warm-up median (with a small absolute slack for tiny values); otherwise the
//! report is printed and the command fails, naming what moved.

use std::time::Duration;

use anyhow::bail;
use serde_json::json;
use tokio::time::Instant;

use super::{Plan, SendKind};
use crate::coordinator::Coordinator;
use crate::probe::proc_sample;
use crate::report::{Report, fmt_bytes, fmt_num};
use crate::stats::Snapshot;
use crate::worker::Action;
use crate::{parse_duration, parse_size};

/// RSS may move this much whatever its size (allocator arenas, buffers of a storm).
const RSS_SLACK_BYTES: f64 = 2.0 * 1024.0 * 1024.0;
/// Descriptors may move this many whatever their number (a log file, an accept in flight, a DB connection).
const FD_SLACK: f64 = 8.0;
/// Tasks may move this many whatever their number: a storm's reconnects still finishing (a few tasks each),
/// timers of a flush.
const TASK_SLACK: f64 = 64.0;

#[derive(clap::Args, Debug, Clone)]
pub struct SoakArgs {
    /// Rooms.
    #[arg(long, default_value_t = 10)]
    pub rooms: u64,

    /// Members per room (connections = rooms × members).
    #[arg(long, default_value_t = 20)]
    pub members: u64,

    /// Events per second, all senders together (half messages, a quarter typing, a quarter presence).
    #[arg(long, default_value_t = 100.0)]
    pub rate: f64,

    /// Senders (0 = every client).
    #[arg(long, default_value_t = 0)]
    pub senders: u64,

    /// Content size of each message.
    #[arg(long, default_value = "100", value_parser = parse_size)]
    pub payload: usize,

    /// How long the soak runs (after the ramp).
    #[arg(long, default_value = "10m", value_parser = parse_duration)]
    pub duration: Duration,

    /// A reconnect storm this often (0 = none).
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub storm_every: Duration,

    /// Share of the clients that drop and reconnect in each storm, in percent.
    #[arg(long, default_value_t = 25.0)]
    pub storm_percent: f64,

    /// Reconnect attempts after a failed one, per dropped client.
    #[arg(long, default_value_t = 3)]
    pub retries: u32,

    /// One server sample (RSS, open descriptors, the window's latency) this often.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub sample_every: Duration,

    /// After warm-up, RSS and descriptors must stay within this percentage of their median.
    #[arg(long, default_value_t = 10.0)]
    pub tolerance: f64,
}

impl SoakArgs {
    fn senders(&self) -> u64 {
        let total = self.rooms * self.members;
        if self.senders == 0 { total } else { self.senders.min(total) }
    }

    pub fn plan(&self) -> Plan {
        Plan {
            rooms: self.rooms,
            senders: self.senders(),
            send: Some(SendKind::Mixed { payload: self.payload }),
            rate: self.rate,
            max_inflight: 100,
            ack_timeout: Duration::from_secs(10),
            retries: self.retries,
            ..Plan::connections(self.rooms * self.members)
        }
    }
}

/// One sample of the server and of the window before it.
#[derive(Debug, Clone, Copy)]
pub struct SoakSample {
    /// Seconds since the soak started.
    pub t: f64,
    pub rss: Option<u64>,
    /// The anonymous part of RSS (heap, stacks): what a leak grows.
    pub anon: Option<u64>,
    pub fds: Option<u64>,
    /// Tasks alive in the server's runtime (its `realtime_tokio_tasks` metric).
    pub tasks: Option<u64>,
    pub sent: u64,
    pub deliveries: u64,
    /// publish→deliver p99 of the window, ms (None: nothing delivered).
    pub p99_ms: Option<f64>,
    /// A storm happened in this window.
    pub storm: bool,
}

/// Checks that `values` (in time order) stay flat after the warm-up (the first third): every later value
/// within ±`tolerance_pct` % of the later values' median, or within `slack`. Returns the worst departure as
/// (index, value, median, relative change) when one is out of bounds.
pub fn out_of_bounds(values: &[(usize, f64)], tolerance_pct: f64, slack: f64) -> Option<(usize, f64, f64, f64)> {
    let after = &values[values.len() / 3..];
    if after.is_empty() {
        return None;
    }
    let mut sorted: Vec<f64> = after.iter().map(|&(_, v)| v).collect();
    sorted.sort_by(|a, b| a.total_cmp(b));
    let median = sorted[sorted.len() / 2];
    let bound = (median.abs() * tolerance_pct / 100.0).max(slack);
    after
        .iter()
        .filter(|&&(_, v)| (v - median).abs() > bound)
        .max_by(|a, b| (a.1 - median).abs().total_cmp(&(b.1 - median).abs()))
        .map(|&(i, v)| (i, v, median, if median != 0.0 { (v - median) / median } else { f64::INFINITY }))
}

pub async fn drive(a: &SoakArgs, co: &mut Coordinator) -> anyhow::Result<Report> {
    let Some(pid) = co.common.server_pid else {
        bail!(
            "bench soak: give the server's process id with --server-pid (the soak reads its RSS and open file \
             descriptors from /proc/<pid>, so it runs on the server's machine)"
        );
    };
    if proc_sample(pid).fds.is_none() {
        bail!("bench soak: cannot read /proc/{pid}/fd: is --server-pid {pid} a running process of this user?");
    }
    if !(0.0..=100.0).contains(&a.storm_percent) {
        bail!("bench soak: --storm-percent must be between 0 and 100 (got {})", a.storm_percent);
    }
    let permille = (a.storm_percent * 10.0).round() as u16;
    let total = a.rooms * a.members;
    let mut r = co.report();
    r.param("rooms", "rooms", a.rooms, fmt_num(a.rooms as f64, 0));
    r.param("members", "members per room", a.members, fmt_num(a.members as f64, 0));
    r.param("connections", "connections", total, fmt_num(total as f64, 0));
    r.param(
        "rate",
        "target rate (messages ½, typing ¼, presence ¼)",
        a.rate,
        format!("{} events/s", fmt_num(a.rate, 0)),
    );
    let secs = a.duration.as_secs_f64();
    r.param("duration_s", "soak", secs, format!("{secs:.0} s"));
    r.param(
        "storm_every_s",
        "reconnect storm",
        a.storm_every.as_secs_f64(),
        format!("{}% of the clients every {:.0} s", a.storm_percent, a.storm_every.as_secs_f64()),
    );
    r.param(
        "sample_every_s",
        "sample every",
        a.sample_every.as_secs_f64(),
        format!("{:.1} s", a.sample_every.as_secs_f64()),
    );
    r.param(
        "tolerance_percent",
        "flat means within",
        a.tolerance,
        format!("±{}% of the post-warm-up median", a.tolerance),
    );

    co.step("ramp", Action::Ramp).await?;
    let ramp = co.step("settle", Action::Settle { quiet_ms: 1000, max_ms: 5000 }).await?;
    let ramp_snap = ramp.snap.clone();
    let p0 = proc_sample(pid);
    let metrics_url = co
        .common
        .metrics_url
        .clone()
        .unwrap_or_else(|| format!("{}/metrics", co.target.base_url.trim_end_matches('/')));
    let http = reqwest::Client::builder().timeout(Duration::from_secs(5)).build()?;
    let tasks0 = server_tasks(&http, &metrics_url).await;

    let start = Instant::now();
    let deadline = start + a.duration;
    let every = a.sample_every.max(Duration::from_millis(200));
    let mut next_storm = (!a.storm_every.is_zero()).then(|| start + a.storm_every);
    let mut prev: Snapshot = ramp.snap.clone();
    let mut samples: Vec<SoakSample> = Vec::new();
    let mut storms = Vec::new();
    let mut seed = 0u32;
    let mut last = ramp;
    while Instant::now() + Duration::from_millis(50) < deadline {
        let now = Instant::now();
        let ms = every.min(deadline - now).as_millis() as u64;
        let storm_due = next_storm.is_some_and(|t| now + every / 2 >= t);
        let step = if storm_due && permille > 0 {
            seed += 1;
            next_storm = next_storm.map(|t| t + a.storm_every);
            co.step(&format!("storm {seed}"), Action::SendStorm { ms, permille, seed }).await?
        } else {
            if storm_due {
                next_storm = next_storm.map(|t| t + a.storm_every);
            }
            co.step("send", Action::Send { ms, drain_ms: 0 }).await?
        };
        let p = proc_sample(pid);
        let tasks = server_tasks(&http, &metrics_url).await;
        let c = step.snap.c.delta(&prev.c);
        let lat = step.snap.deliver_lat.since(&prev.deliver_lat);
        let storm = step.name.starts_with("storm");
        if storm {
            let back = step.snap.reconnect_lat.since(&prev.reconnect_lat);
            storms.push(json!({
                "at_s": start.elapsed().as_secs_f64(),
                "dropped": c.dropped,
                "back": c.reconnected,
                "failed": c.reconnect_failed,
                "reconnect_p99_ms": back.quantile_us(0.99) as f64 / 1000.0,
            }));
        }
        samples.push(SoakSample {
            t: start.elapsed().as_secs_f64(),
            rss: p.rss,
            anon: p.anon,
            fds: p.fds,
            tasks,
            sent: c.sent,
            deliveries: c.deliveries,
            p99_ms: (lat.count > 0).then(|| lat.quantile_us(0.99) as f64 / 1000.0),
            storm,
        });
        prev = step.snap.clone();
        last = step;
    }
    let end = co.step("drain", Action::Settle { quiet_ms: 500, max_ms: 5000 }).await?;
    co.step("close", Action::Close).await?;

    // The checks.
    let anon: Vec<(usize, f64)> =
        samples.iter().enumerate().filter_map(|(i, s)| s.anon.map(|v| (i, v as f64))).collect();
    let fds: Vec<(usize, f64)> = samples.iter().enumerate().filter_map(|(i, s)| s.fds.map(|v| (i, v as f64))).collect();
    let tasks: Vec<(usize, f64)> =
        samples.iter().enumerate().filter_map(|(i, s)| s.tasks.map(|v| (i, v as f64))).collect();
    let mut problems = Vec::new();
    if samples.len() < 3 {
        problems.push(format!(
            "only {} samples: run longer than 3 × --sample-every to judge RSS and descriptors",
            samples.len()
        ));
    }
    // Names the move: the worst sample against the median, and where the series went after the warm-up.
    let describe = |what: &str,
                    series: &[(usize, f64)],
                    (i, v, median, rel): (usize, f64, f64, f64),
                    show: &dyn Fn(f64) -> String| {
        let after = &series[series.len() / 3..];
        let ((i0, v0), (i1, v1)) = (after[0], after[after.len() - 1]);
        // The direction of the whole post-warm-up run names it; a swing that comes back is a move.
        let bound = (median.abs() * a.tolerance / 100.0).max(f64::EPSILON);
        let verb = if v1 - v0 > bound {
            "grew"
        } else if v0 - v1 > bound {
            "fell"
        } else {
            "moved"
        };
        format!(
            "{what} {verb}: {} at {:.0} s against a post-warm-up median of {} ({:+.1}%, allowed ±{}%); \
             {} at {:.0} s → {} at {:.0} s",
            show(v),
            samples[i].t,
            show(median),
            rel * 100.0,
            a.tolerance,
            show(v0),
            samples[i0].t,
            show(v1),
            samples[i1].t,
        )
    };
    if let Some(bad) = out_of_bounds(&anon, a.tolerance, RSS_SLACK_BYTES) {
        problems.push(describe("server RSS (anonymous: heap and stacks)", &anon, bad, &fmt_bytes));
    }
    if let Some(bad) = out_of_bounds(&fds, a.tolerance, FD_SLACK) {
        problems.push(describe("server open file descriptors", &fds, bad, &|v| fmt_num(v, 0)));
    }
    if let Some(bad) = out_of_bounds(&tasks, a.tolerance, TASK_SLACK) {
        problems.push(describe("server async tasks", &tasks, bad, &|v| fmt_num(v, 0)));
    }

    let c = end.snap.c.delta(&ramp_snap.c);
    r.section("setup");
    r.int("connected", "connected", ramp_snap.c.connected);
    r.int("connect_failed", "connect failures", ramp_snap.c.failed);
    r.counts("connect_failures", "connect failures by reason", &ramp_snap.fail_reasons);
    r.int("joined", "room joins ok", ramp_snap.c.joins_ok);

    r.section("results");
    r.num("soak_s", "soaked", samples.last().map(|s| s.t).unwrap_or(0.0), "s", 0);
    r.int("sent", "events sent (messages, typing, presence)", c.sent);
    r.int("acked", "messages acked ok", c.acked_ok);
    r.int("ack_errors", "messages acked with an error", c.acked_err);
    r.counts("ack_error_codes", "ack errors by code", &end.snap.ack_errors);
    r.int("deliveries", "deliveries (message:new)", c.deliveries);
    r.latency(
        "deliver_ms",
        "publish→deliver latency (whole soak)",
        &end.snap.deliver_lat.since(&ramp_snap.deliver_lat),
    );
    r.int("storms", "reconnect storms", storms.len() as u64);
    r.int("dropped", "connections dropped by the storms", c.dropped);
    r.int("reconnected", "reconnected", c.reconnected);
    r.int("reconnect_failed", "gave up after retries", c.reconnect_failed);
    r.latency("reconnect_ms", "drop→authenticated latency", &end.snap.reconnect_lat.since(&ramp_snap.reconnect_lat));
    r.int("lost", "connections dropped by the server", c.lost);
    r.counts("lost_reasons", "drop reasons", &end.snap.lost_reasons);
    r.int("live_at_end", "connected at the end", end.snap.live);

    r.section("server (/proc)");
    let last_sample = samples.last().copied();
    r.bytes("server_rss_start_bytes", "RSS after the ramp", p0.rss.map(|v| v as f64));
    r.bytes("server_rss_end_bytes", "RSS at the end", last_sample.and_then(|s| s.rss).map(|v| v as f64));
    r.bytes("server_anon_start_bytes", "anonymous RSS (heap) after the ramp", p0.anon.map(|v| v as f64));
    r.bytes(
        "server_anon_end_bytes",
        "anonymous RSS (heap) at the end",
        last_sample.and_then(|s| s.anon).map(|v| v as f64),
    );
    r.opt_num("server_fds_start", "open descriptors after the ramp", p0.fds.map(|v| v as f64), "", 0);
    r.opt_num(
        "server_fds_end",
        "open descriptors at the end",
        samples.last().and_then(|s| s.fds).map(|v| v as f64),
        "",
        0,
    );
    r.opt_num("server_tasks_start", "async tasks after the ramp", tasks0.map(|v| v as f64), "", 0);
    r.opt_num(
        "server_tasks_end",
        "async tasks at the end",
        samples.last().and_then(|s| s.tasks).map(|v| v as f64),
        "",
        0,
    );
    let p99s: Vec<f64> = samples.iter().filter_map(|s| s.p99_ms).collect();
    r.num("window_p99_max_ms", "worst window publish→deliver p99", p99s.iter().copied().fold(0.0, f64::max), "ms", 1);
    r.text(
        "flat",
        "heap RSS, descriptors and tasks flat after warm-up",
        if problems.is_empty() { "yes" } else { "NO" },
    );

    r.section("samples (t · RSS · heap · fds · tasks · sent · delivered · p99)");
    for s in &samples {
        r.text(
            &format!("sample_{:.0}", s.t * 10.0),
            &format!("{:>6.1} s{}", s.t, if s.storm { " storm" } else { "" }),
            &format!(
                "{:>10} · {:>10} · {:>5} · {:>5} · {:>6} · {:>7} · {}",
                s.rss.map(|v| fmt_bytes(v as f64)).unwrap_or_else(|| "-".into()),
                s.anon.map(|v| fmt_bytes(v as f64)).unwrap_or_else(|| "-".into()),
                s.fds.map(|v| v.to_string()).unwrap_or_else(|| "-".into()),
                s.tasks.map(|v| v.to_string()).unwrap_or_else(|| "-".into()),
                s.sent,
                s.deliveries,
                s.p99_ms.map(|v| format!("{v:.1} ms")).unwrap_or_else(|| "-".into()),
            ),
        );
    }
    r.raw(
        "samples",
        serde_json::Value::Array(
            samples
                .iter()
                .map(|s| {
                    json!({"t_s": s.t, "rss_bytes": s.rss, "anon_rss_bytes": s.anon, "fds": s.fds, "tasks": s.tasks, "sent": s.sent,
                           "deliveries": s.deliveries, "p99_ms": s.p99_ms, "storm": s.storm})
                })
                .collect(),
        ),
    );
    r.raw("storm_rounds", serde_json::Value::Array(storms));
    co.generator_usage(&mut r, &last, end.snap.live);
    if !problems.is_empty() {
        r.failure = Some(problems.join("; "));
    }
    Ok(r)
}

/// The server's live async tasks from its Prometheus text; None when it does not expose them (another
/// server, or the metrics path moved: give `--metrics-url`).
async fn server_tasks(http: &reqwest::Client, url: &str) -> Option<u64> {
    let text = http.get(url).send().await.ok()?.error_for_status().ok()?.text().await.ok()?;
    crate::probe::prom_value(&text, "realtime_tokio_tasks").map(|v| v as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(v: &[f64]) -> Vec<(usize, f64)> {
        v.iter().copied().enumerate().collect()
    }

    #[test]
    fn flat_series_pass_and_growth_is_named() {
        // Warm-up (the first third) may climb; afterwards small noise is fine.
        let flat = series(&[10.0, 50.0, 90.0, 100.0, 104.0, 97.0, 101.0, 99.0, 103.0]);
        assert_eq!(out_of_bounds(&flat, 10.0, 0.0), None);
        // A leak: the last sample is far above the post-warm-up median.
        let leak = series(&[100.0, 100.0, 100.0, 100.0, 102.0, 104.0, 106.0, 108.0, 130.0]);
        let (i, v, median, rel) = out_of_bounds(&leak, 10.0, 0.0).expect("growth is caught");
        assert_eq!((i, v, median), (8, 130.0, 106.0));
        assert!(rel > 0.2);
        // Tiny values: 3 → 5 descriptors is within the absolute slack.
        let tiny = series(&[3.0, 3.0, 3.0, 3.0, 5.0, 3.0]);
        assert_eq!(out_of_bounds(&tiny, 10.0, FD_SLACK), None);
        assert!(out_of_bounds(&tiny, 10.0, 1.0).is_some());
        assert_eq!(out_of_bounds(&[], 10.0, 0.0), None);
    }
}
