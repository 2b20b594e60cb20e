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
    /// Connections closed because the client stopped reading (`REALTIME_WRITE_TIMEOUT` or
    /// `REALTIME_MAX_BUFFER_BYTES`).
    pub slow_consumers: Counter,
    /// Of those, the ones closed because more than `REALTIME_MAX_BUFFER_BYTES` waited for them.
    pub buffer_overflows: Counter,
    /// Milliseconds from receiving a message to handing it to every local socket of the room.
    pub latency_ms: Histogram,
    rss: Gauge,
    /// Tasks alive in the server's tokio runtime, read at scrape time: a leak of per-connection work shows
    /// here before it shows in memory (the soak watches it).
    tasks: Gauge,
    cluster: Option<ClusterGauges>,
}

/// The cluster link's numbers, read at scrape time.
struct ClusterGauges {
    stats: std::sync::Arc<crate::cluster::redis::pubsub::LinkStats>,
    failures: std::sync::Arc<crate::cluster::redis::Failures>,
    publish_errors: Gauge,
    published: Gauge,
    reconnects: Gauge,
    nodes: Gauge,
    failures_g: Gauge,
    latency: Histogram,
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
            buffer_overflows: Counter::default(),
            latency_ms: Histogram::new(exponential_buckets(0.25, 2.0, 14)),
            rss: Gauge::default(),
            tasks: Gauge::default(),
            cluster: None,
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
            "Connections closed because the client stopped reading (REALTIME_WRITE_TIMEOUT or REALTIME_MAX_BUFFER_BYTES)",
            m.slow_consumers.clone(),
        );
        registry.register(
            "realtime_slow_consumers_over_byte_bound",
            "Slow consumers closed because more than REALTIME_MAX_BUFFER_BYTES waited for them",
            m.buffer_overflows.clone(),
        );
        registry.register("realtime_latency_ms", "Publish to fan-out latency in ms", m.latency_ms.clone());
        registry.register("process_resident_memory_bytes", "Resident memory of the process", m.rss.clone());
        registry.register("realtime_tokio_tasks", "Tasks alive in the server's async runtime", m.tasks.clone());
        Metrics { registry, ..m }
    }

    /// A node of a cluster also reports its Redis link.
    pub fn cluster(
        &mut self,
        stats: std::sync::Arc<crate::cluster::redis::pubsub::LinkStats>,
        failures: std::sync::Arc<crate::cluster::redis::Failures>,
    ) {
        let g = ClusterGauges {
            stats,
            failures,
            publish_errors: Gauge::default(),
            published: Gauge::default(),
            reconnects: Gauge::default(),
            nodes: Gauge::default(),
            failures_g: Gauge::default(),
            latency: Histogram::new(exponential_buckets(0.25, 2.0, 14)),
        };
        let r = &mut self.registry;
        r.register(
            "realtime_redis_publish_errors",
            "Cross-node publishes that failed or were dropped since start",
            g.publish_errors.clone(),
        );
        r.register("realtime_redis_published", "Cross-node publishes sent since start", g.published.clone());
        r.register(
            "realtime_redis_reconnects",
            "Times the Redis pub/sub connection was re-established since start",
            g.reconnects.clone(),
        );
        r.register("realtime_cluster_nodes", "Live nodes, from their heartbeats", g.nodes.clone());
        r.register(
            "realtime_redis_failures",
            "Failed Redis operations of the shared state since start",
            g.failures_g.clone(),
        );
        r.register(
            "realtime_cluster_latency_ms",
            "Publish to delivery through Redis pub/sub in ms (the hop every cross-node event takes), probed every 3 s",
            g.latency.clone(),
        );
        self.cluster = Some(g);
    }

    /// A probe of the cross-node hop came back after `ms`.
    pub fn observe_cluster_latency(&self, ms: f64) {
        if let Some(g) = &self.cluster {
            g.latency.observe(ms);
        }
    }

    /// The text exposition, with the process memory read at scrape time.
    pub fn render(&self) -> String {
        self.rss.set(resident_memory_bytes().unwrap_or(0) as i64);
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            self.tasks.set(rt.metrics().num_alive_tasks() as i64);
        }
        if let Some(g) = &self.cluster {
            use std::sync::atomic::Ordering::Relaxed;
            g.publish_errors.set(g.stats.publish_errors.load(Relaxed) as i64);
            g.published.set(g.stats.published.load(Relaxed) as i64);
            g.reconnects.set(g.stats.reconnects.load(Relaxed) as i64);
            g.nodes.set(g.stats.nodes.load(Relaxed) as i64);
            g.failures_g.set(g.failures.count() as i64);
        }
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }
}

impl Metrics {
    /// The latency histogram's cumulative bucket counts `(upper bound in ms, count)`, `+Inf` last.
    pub fn latency_buckets(&self) -> Vec<(f64, u64)> {
        let mut out = String::new();
        let mut one = Registry::default();
        one.register("l", "", self.latency_ms.clone());
        encode(&mut out, &one).expect("writing to a String cannot fail");
        out.lines()
            .filter_map(|l| l.strip_prefix("l_bucket{le=\""))
            .filter_map(|l| {
                let (le, rest) = l.split_once("\"}")?;
                let le = if le == "+Inf" { f64::INFINITY } else { le.parse().ok()? };
                Some((le, rest.trim().parse().ok()?))
            })
            .collect()
    }
}

/// The `q` quantile (0..1) of the observations between two readings of [`Metrics::latency_buckets`], as the
/// upper bound of the bucket it falls in (the last finite bound when it is in `+Inf`); None without any.
pub fn quantile(before: &[(f64, u64)], after: &[(f64, u64)], q: f64) -> Option<f64> {
    let count = |b: &[(f64, u64)], i: usize| b.get(i).map_or(0, |x| x.1);
    let total =
        count(after, after.len().saturating_sub(1)).saturating_sub(count(before, after.len().saturating_sub(1)));
    if total == 0 {
        return None;
    }
    let rank = (q * total as f64).ceil().max(1.0) as u64;
    let mut last_finite = 0.0;
    for (i, (le, n)) in after.iter().enumerate() {
        if le.is_finite() {
            last_finite = *le;
        }
        if n.saturating_sub(count(before, i)) >= rank {
            return Some(if le.is_finite() { *le } else { last_finite });
        }
    }
    Some(last_finite)
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

    /// templates/grafana-dashboard.json queries only metrics that exist.
    #[test]
    fn the_grafana_dashboard_uses_real_metric_names() {
        let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/templates/grafana-dashboard.json"))
            .expect("templates/grafana-dashboard.json");
        let dashboard: serde_json::Value = serde_json::from_str(&text).expect("the dashboard is JSON");
        let m = Metrics::new();
        m.latency_ms.observe(1.0);
        let exposed = m.render();
        let mut used = 0;
        for word in text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
            if word.starts_with("realtime_") || word.starts_with("process_") {
                used += 1;
                assert!(exposed.contains(&format!("\n{word}")), "the dashboard queries {word}, which /metrics lacks");
            }
        }
        assert!(used >= 10, "the dashboard queries too few metrics ({used})");
        assert!(dashboard["panels"].as_array().is_some_and(|p| p.len() >= 8));
    }

    #[test]
    fn quantiles_between_two_readings() {
        let m = Metrics::new();
        m.latency_ms.observe(100.0);
        let before = m.latency_buckets();
        assert_eq!(quantile(&before, &m.latency_buckets(), 0.5), None);
        for _ in 0..98 {
            m.latency_ms.observe(0.2);
        }
        m.latency_ms.observe(3.0);
        m.latency_ms.observe(9000.0);
        let after = m.latency_buckets();
        assert_eq!(after.last().map(|b| b.1), Some(101));
        assert_eq!(quantile(&before, &after, 0.5), Some(0.25));
        assert_eq!(quantile(&before, &after, 0.99), Some(4.0));
        assert_eq!(quantile(&before, &after, 1.0), Some(2048.0));
    }

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

    #[tokio::test]
    async fn counts_the_runtime_s_live_tasks() {
        let m = Metrics::new();
        let tasks = |text: &str| -> i64 {
            let line = text.lines().find(|l| l.starts_with("realtime_tokio_tasks ")).expect("the gauge is exposed");
            line.rsplit(' ').next().unwrap().parse().unwrap()
        };
        let before = tasks(&m.render());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let waiting: Vec<_> = (0..3).map(|_| tokio::spawn(std::future::pending::<()>())).collect();
        let one = tokio::spawn(async move { rx.await.ok() });
        assert_eq!(tasks(&m.render()), before + 4);
        tx.send(()).unwrap();
        one.await.unwrap();
        for w in waiting {
            w.abort();
            let _ = w.await;
        }
        assert_eq!(tasks(&m.render()), before);
    }
}
