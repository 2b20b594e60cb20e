//! Prometheus metrics (`/metrics`): a registry of a few counters, gauges and the publish→fan-out latency.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

pub struct Metrics {
    registry: Registry,
    pub connections: Gauge,
    pub users_online: Gauge,
    pub connections_total: Counter,
    pub connections_rejected: Counter,
    pub messages: Counter,
    pub presence_updates: Counter,
    pub typing_events: Counter,
    pub broadcasts: Counter,
    pub errors: Counter,
    pub rate_limited: Counter,
    /// Connections closed because the client stopped reading (`REALTIME_WRITE_TIMEOUT`).
    pub slow_consumers: Counter,
    /// Milliseconds from receiving a message to handing it to every local socket of the room.
    pub latency_ms: Histogram,
    rss: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        let m = Metrics {
            connections: Gauge::default(),
            users_online: Gauge::default(),
            connections_total: Counter::default(),
            connections_rejected: Counter::default(),
            messages: Counter::default(),
            presence_updates: Counter::default(),
            typing_events: Counter::default(),
            broadcasts: Counter::default(),
            errors: Counter::default(),
            rate_limited: Counter::default(),
            slow_consumers: Counter::default(),
            latency_ms: Histogram::new(exponential_buckets(0.25, 2.0, 14)),
            rss: Gauge::default(),
            registry: Registry::default(),
        };
        registry.register("realtime_connections", "Open Socket.IO connections", m.connections.clone());
        registry.register("realtime_users_online", "Users with at least one connection", m.users_online.clone());
        registry.register("realtime_connections_accepted", "Connections accepted", m.connections_total.clone());
        registry.register("realtime_connections_rejected", "Handshakes refused", m.connections_rejected.clone());
        registry.register("realtime_messages", "Messages persisted and broadcast", m.messages.clone());
        registry.register("realtime_presence_updates", "Presence updates received", m.presence_updates.clone());
        registry.register("realtime_typing_events", "Typing events received", m.typing_events.clone());
        registry.register("realtime_broadcasts", "Room broadcasts emitted", m.broadcasts.clone());
        registry.register("realtime_errors", "Errors answered to clients", m.errors.clone());
        registry.register("realtime_rate_limited", "Events refused by the rate limit", m.rate_limited.clone());
        registry.register(
            "realtime_slow_consumers",
            "Connections closed because the client read nothing for REALTIME_WRITE_TIMEOUT",
            m.slow_consumers.clone(),
        );
        registry.register("realtime_latency_ms", "Publish to fan-out latency in ms", m.latency_ms.clone());
        registry.register("process_resident_memory_bytes", "Resident memory of the process", m.rss.clone());
        Metrics { registry, ..m }
    }

    /// The text exposition, with the process memory read at scrape time.
    pub fn render(&self) -> String {
        self.rss.set(resident_memory_bytes().unwrap_or(0) as i64);
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }
}

/// Resident set size of this process (Linux `/proc/self/statm`).
pub fn resident_memory_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_has_the_contract_names() {
        let m = Metrics::new();
        m.messages.inc();
        m.latency_ms.observe(3.0);
        let text = m.render();
        for name in [
            "realtime_connections ",
            "realtime_messages_total 1",
            "realtime_presence_updates_total",
            "realtime_latency_ms_bucket",
            "process_resident_memory_bytes",
        ] {
            assert!(text.contains(name), "missing {name} in\n{text}");
        }
    }
}
