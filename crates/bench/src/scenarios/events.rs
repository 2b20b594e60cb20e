//! `typing` / `presence`: event storms. Clients sit in R rooms × M members; S senders emit
//! `typing:start` (bare room id, roomType channel) or `presence:update` (online/away alternating)
//! at a target rate. Reports the broadcasts received per inbound event (amplification) next to
//! what a naive per-event broadcast to the room would give (M − 1).

use std::time::Duration;

use super::{Plan, SendKind};
use crate::coordinator::Coordinator;
use crate::parse_duration;
use crate::report::{Report, fmt_num};
use crate::worker::Action;

#[derive(clap::Args, Debug, Clone)]
pub struct EventStormArgs {
    /// Rooms.
    #[arg(long, default_value_t = 10)]
    pub rooms: u64,

    /// Members per room (connections = rooms × members).
    #[arg(long, default_value_t = 20)]
    pub members: u64,

    /// Senders (0 = every client).
    #[arg(long, default_value_t = 0)]
    pub senders: u64,

    /// Events per second, all senders together.
    #[arg(long, default_value_t = 200.0)]
    pub rate: f64,

    /// How long senders send.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,

    /// After sending, wait at most this long for the remaining broadcasts (typing expiry
    /// pushes come up to 5 s later on nself-realtime; they are counted when they arrive in time).
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub drain: Duration,

    /// After the ramp, wait until no event arrived for this long (at most 5 s or 5× this) so
    /// late broadcasts of the ramp (presence announcements, user:joined) stay out of the window.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub settle: Duration,
}

impl EventStormArgs {
    fn senders(&self) -> u64 {
        let total = self.rooms * self.members;
        if self.senders == 0 { total } else { self.senders.min(total) }
    }

    pub fn plan(&self, kind: SendKind) -> Plan {
        Plan {
            rooms: self.rooms,
            senders: self.senders(),
            send: Some(kind),
            rate: self.rate,
            ..Plan::connections(self.rooms * self.members)
        }
    }
}

pub async fn drive(a: &EventStormArgs, co: &mut Coordinator, kind: SendKind) -> anyhow::Result<Report> {
    let (event_out, event_in) = match kind {
        SendKind::Typing => ("typing:start", "typing:event"),
        _ => ("presence:update", "presence:changed"),
    };
    let mut r = co.report();
    let total = a.rooms * a.members;
    r.param("rooms", "rooms", a.rooms, fmt_num(a.rooms as f64, 0));
    r.param("members", "members per room", a.members, fmt_num(a.members as f64, 0));
    r.param("connections", "connections", total, fmt_num(total as f64, 0));
    r.param("senders", "senders", a.senders(), fmt_num(a.senders() as f64, 0));
    r.param("rate", "target rate", a.rate, format!("{} {event_out}/s", fmt_num(a.rate, 0)));
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
    let send = co
        .step("send", Action::Send { ms: a.duration.as_millis() as u64, drain_ms: a.drain.as_millis() as u64 })
        .await?;
    let s2 = co.probe.sample().await;
    co.step("close", Action::Close).await?;

    let c0 = &ramp.snap.c;
    let c = send.snap.c.delta(c0);
    let received = send.snap.events_since(&ramp.snap);
    let broadcasts = *received.get(event_in).unwrap_or(&0);
    r.section("setup");
    r.int("connected", "connected", c0.connected);
    r.int("connect_failed", "connect failures", c0.failed);
    r.int("joined", "room joins ok", c0.joins_ok);
    r.int("join_failed", "room joins failed", c0.joins_failed);

    r.section("results");
    r.int("sent", &format!("{event_out} sent"), c.sent);
    r.num("send_rate", "send rate achieved", c.sent as f64 / secs.max(1e-9), "/s", 0);
    r.int("broadcasts", &format!("{event_in} received"), broadcasts);
    r.num(
        "amplification",
        "amplification (received per sent)",
        if c.sent > 0 { broadcasts as f64 / c.sent as f64 } else { f64::NAN },
        "",
        3,
    );
    r.num("naive_amplification", "naive per-event broadcast (M − 1)", a.members.saturating_sub(1) as f64, "", 0);
    r.num("broadcasts_per_s", &format!("{event_in}/s received"), broadcasts as f64 / secs.max(1e-9), "", 0);
    r.int("events_in", "all events received", c.events_in);
    r.counts("events_by_name", "events received by name", &received);
    r.int("lost", "connections dropped", send.snap.c.lost);
    r.counts("lost_reasons", "drop reasons", &send.snap.lost_reasons);

    r.section("server");
    r.opt_num("server_cpu_percent", "CPU while sending", s2.cpu_percent_since(&s1), "% of a core", 0);
    co.generator_usage(&mut r, &send, c0.connected);
    Ok(r)
}
