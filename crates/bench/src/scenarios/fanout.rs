//! `fanout`: R rooms × M members; S senders send `message:send` at a target rate (all senders
//! together) with 100 B or 1 KB payloads. Every member (the sender included) should receive each
//! message as `message:new`. Measures deliveries/s, the delivery ratio, publish→deliver latency
//! (the send time travels in the content) and the ack latency.

use std::time::Duration;

use super::{Plan, SendKind};
use crate::coordinator::Coordinator;
use crate::report::{Report, fmt_num};
use crate::worker::Action;
use crate::{parse_duration, parse_size};

#[derive(clap::Args, Debug, Clone)]
pub struct FanoutArgs {
    /// Rooms.
    #[arg(long, default_value_t = 10)]
    pub rooms: u64,

    /// Members per room (connections = rooms × members).
    #[arg(long, default_value_t = 100)]
    pub members: u64,

    /// Senders (members of their room; 0 = one per room).
    #[arg(long, default_value_t = 0)]
    pub senders: u64,

    /// Messages per second, all senders together.
    #[arg(long, default_value_t = 100.0)]
    pub rate: f64,

    /// Content size of each message: 100 B, 1k, ...
    #[arg(long, default_value = "100", value_parser = parse_size)]
    pub payload: usize,

    /// How long senders send.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,

    /// After sending, wait at most this long for the remaining acks and deliveries (the wait ends
    /// as soon as acks are in and traffic has been still for 300 ms).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub drain: Duration,

    /// Unacknowledged messages per sender before it skips a tick.
    #[arg(long, default_value_t = 100)]
    pub max_inflight: usize,

    /// An ack that takes longer than this counts as timed out.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub ack_timeout: Duration,

    /// After the ramp, wait until no event arrived for this long (at most 5 s or 5× this) so
    /// late broadcasts of the ramp (presence announcements, user:joined) stay out of the window.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub settle: Duration,
}

impl FanoutArgs {
    fn senders(&self) -> u64 {
        let total = self.rooms * self.members;
        if self.senders == 0 { self.rooms.min(total) } else { self.senders.min(total) }
    }

    pub fn plan(&self) -> Plan {
        Plan {
            total: self.rooms * self.members,
            rooms: self.rooms,
            senders: self.senders(),
            send: Some(SendKind::Message { payload: self.payload }),
            rate: self.rate,
            max_inflight: self.max_inflight.max(1),
            ack_timeout: self.ack_timeout,
            ..Plan::connections(self.rooms * self.members)
        }
    }
}

pub async fn drive(a: &FanoutArgs, co: &mut Coordinator) -> anyhow::Result<Report> {
    let mut r = co.report();
    let total = a.rooms * a.members;
    r.param("rooms", "rooms", a.rooms, fmt_num(a.rooms as f64, 0));
    r.param("members", "members per room", a.members, fmt_num(a.members as f64, 0));
    r.param("connections", "connections", total, fmt_num(total as f64, 0));
    r.param("senders", "senders", a.senders(), fmt_num(a.senders() as f64, 0));
    r.param("rate", "target rate", a.rate, format!("{} msg/s", fmt_num(a.rate, 0)));
    r.param("payload_bytes", "payload", a.payload, format!("{} B", a.payload));
    let secs = a.duration.as_secs_f64();
    r.param("duration_s", "send window", secs, format!("{secs:.1} s"));

    let ramp = co.step("ramp", Action::Ramp).await?;
    let settle_ms = a.settle.as_millis() as u64;
    let ramp = if settle_ms > 0 {
        co.step("settle", Action::Settle { quiet_ms: settle_ms, max_ms: (settle_ms * 5).max(5000) }).await?
    } else {
        ramp
    };
    let s1 = co.probe.sample().await;
    let send_start_us = crate::session::now_us();
    let send = co
        .step("send", Action::Send { ms: a.duration.as_millis() as u64, drain_ms: a.drain.as_millis() as u64 })
        .await?;
    let s2 = co.probe.sample().await;
    co.step("close", Action::Close).await?;

    let c0 = &ramp.snap.c;
    let c = send.snap.c.delta(c0);
    r.section("setup");
    r.int("connected", "connected", c0.connected);
    r.int("connect_failed", "connect failures", c0.failed);
    r.counts("connect_failures", "connect failures by reason", &ramp.snap.fail_reasons);
    r.int("joined", "room joins ok", c0.joins_ok);
    r.int("join_failed", "room joins failed", c0.joins_failed);
    r.latency("join_ms", "room:join ack latency", &ramp.snap.join_lat);

    r.section("results");
    r.int("sent", "messages sent", c.sent);
    r.num("send_rate", "send rate achieved", c.sent as f64 / secs.max(1e-9), "msg/s", 0);
    r.int("acked", "acked ok", c.acked_ok);
    r.int("ack_errors", "acked with an error", c.acked_err);
    let unacked = c.sent.saturating_sub(c.acked_ok + c.acked_err);
    r.int("unacked", "never acked (timeout/drain)", unacked);
    r.int("skipped", "ticks skipped (in-flight limit)", c.send_skipped);
    r.counts("ack_error_codes", "ack errors by code", &send.snap.ack_errors);
    // Every message the server did not refuse should reach every member (the sender included);
    // an unacked message still counts (it may have been delivered before its ack was lost).
    let expected = c.sent.saturating_sub(c.acked_err) * a.members;
    r.int("deliveries", "deliveries (message:new)", c.deliveries);
    r.int("deliveries_expected", "deliveries expected (not refused × members)", expected);
    r.num(
        "delivery_ratio",
        "delivery ratio",
        if expected > 0 { c.deliveries as f64 / expected as f64 } else { f64::NAN },
        "",
        4,
    );
    // Throughput over the send window, or up to the last delivery when the server lagged behind.
    let last = send.snap.last_delivery_us;
    let window = if last > send_start_us { ((last - send_start_us) as f64 / 1e6).max(secs) } else { secs };
    r.num("deliveries_per_s", "deliveries/s", c.deliveries as f64 / window.max(1e-9), "", 0);
    r.num("delivery_window_s", "delivery window (send start → last delivery)", window, "s", 2);
    r.latency("deliver_ms", "publish→deliver latency", &send.snap.deliver_lat);
    r.latency("ack_ms", "message:send ack latency", &send.snap.ack_lat);
    r.int("lost", "connections dropped", send.snap.c.lost);
    r.counts("lost_reasons", "drop reasons", &send.snap.lost_reasons);

    r.section("server");
    r.opt_num("server_cpu_percent", "CPU while sending", s2.cpu_percent_since(&s1), "% of a core", 0);
    r.bytes("server_rss_bytes", "RSS at the end", s2.rss_bytes.map(|v| v as f64));
    co.generator_usage(&mut r, &send, c0.connected);
    Ok(r)
}
