//! Counters and latency histograms shared by all connection tasks of one worker, and their
//! serializable snapshots that the coordinator merges across workers.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use serde::{Deserialize, Serialize};

// ---------------------------------------------------------------------------------------------
// Histogram: log-linear buckets (exact below 64 µs, then 32 sub-buckets per power of two, ~3 %),
// lock-free recording, mergeable snapshots.
// ---------------------------------------------------------------------------------------------

const SUB_BITS: u32 = 5;
const SUB: u64 = 1 << SUB_BITS;
const LINEAR: u64 = 64;
const BUCKETS: usize = (LINEAR + (64 - 6) * SUB) as usize;

fn bucket_of(v: u64) -> usize {
    if v < LINEAR {
        return v as usize;
    }
    let e = 63 - v.leading_zeros() as u64; // >= 6
    let sub = (v >> (e - SUB_BITS as u64)) & (SUB - 1);
    (LINEAR + (e - 6) * SUB + sub) as usize
}

/// Lowest and highest value of a bucket.
fn bucket_range(i: usize) -> (u64, u64) {
    let i = i as u64;
    if i < LINEAR {
        return (i, i);
    }
    let e = (i - LINEAR) / SUB + 6;
    let sub = (i - LINEAR) % SUB;
    let width = 1u64 << (e - SUB_BITS as u64);
    let low = (1u64 << e) + sub * width;
    (low, low + width - 1)
}

/// A latency histogram in microseconds.
pub struct Histogram {
    buckets: Box<[AtomicU64]>,
    count: AtomicU64,
    sum: AtomicU64,
    min: AtomicU64,
    max: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self {
            buckets: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
            sum: AtomicU64::new(0),
            min: AtomicU64::new(u64::MAX),
            max: AtomicU64::new(0),
        }
    }
}

impl Histogram {
    pub fn record_us(&self, us: u64) {
        self.buckets[bucket_of(us)].fetch_add(1, Relaxed);
        self.count.fetch_add(1, Relaxed);
        self.sum.fetch_add(us, Relaxed);
        self.min.fetch_min(us, Relaxed);
        self.max.fetch_max(us, Relaxed);
    }

    pub fn record(&self, d: Duration) {
        self.record_us(d.as_micros().min(u64::MAX as u128) as u64);
    }

    pub fn snapshot(&self) -> HistSnap {
        let mut b = Vec::new();
        for (i, c) in self.buckets.iter().enumerate() {
            let c = c.load(Relaxed);
            if c > 0 {
                b.push((i as u32, c));
            }
        }
        let count = self.count.load(Relaxed);
        HistSnap {
            count,
            sum: self.sum.load(Relaxed),
            min: if count == 0 { 0 } else { self.min.load(Relaxed) },
            max: self.max.load(Relaxed),
            b,
        }
    }
}

/// Serializable histogram (sparse buckets), in microseconds.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct HistSnap {
    pub count: u64,
    pub sum: u64,
    pub min: u64,
    pub max: u64,
    /// (bucket index, count), ascending.
    pub b: Vec<(u32, u64)>,
}

impl HistSnap {
    pub fn merge(&mut self, o: &HistSnap) {
        if o.count == 0 {
            return;
        }
        self.min = if self.count == 0 { o.min } else { self.min.min(o.min) };
        self.max = self.max.max(o.max);
        self.count += o.count;
        self.sum += o.sum;
        let mut m: BTreeMap<u32, u64> = self.b.iter().copied().collect();
        for &(i, c) in &o.b {
            *m.entry(i).or_default() += c;
        }
        self.b = m.into_iter().collect();
    }

    /// Value at quantile q (0..=1), in µs: the middle of the bucket, clamped to [min, max].
    pub fn quantile_us(&self, q: f64) -> u64 {
        if self.count == 0 {
            return 0;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.count as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for &(i, c) in &self.b {
            seen += c;
            if seen >= rank {
                let (lo, hi) = bucket_range(i as usize);
                return ((lo + hi) / 2).clamp(self.min, self.max);
            }
        }
        self.max
    }

    /// What was recorded after `earlier` (a snapshot of the same histogram): the bucket counts subtracted; min
    /// and max become the bounds of the lowest and highest bucket left (clamped to the whole run's).
    pub fn since(&self, earlier: &HistSnap) -> HistSnap {
        let before: BTreeMap<u32, u64> = earlier.b.iter().copied().collect();
        let b: Vec<(u32, u64)> = self
            .b
            .iter()
            .map(|&(i, c)| (i, c.saturating_sub(*before.get(&i).unwrap_or(&0))))
            .filter(|&(_, c)| c > 0)
            .collect();
        let count = b.iter().map(|&(_, c)| c).sum();
        let (min, max) = match (b.first(), b.last()) {
            (Some(&(lo, _)), Some(&(hi, _))) => (
                bucket_range(lo as usize).0.clamp(self.min, self.max),
                bucket_range(hi as usize).1.clamp(self.min, self.max),
            ),
            _ => (0, 0),
        };
        HistSnap { count, sum: self.sum.saturating_sub(earlier.sum), min, max, b }
    }

    pub fn mean_us(&self) -> f64 {
        if self.count == 0 { 0.0 } else { self.sum as f64 / self.count as f64 }
    }

    /// `{count, mean, p50, p95, p99, max}` in milliseconds.
    pub fn summary_ms(&self) -> LatencySummary {
        let ms = |us: u64| us as f64 / 1000.0;
        LatencySummary {
            count: self.count,
            mean: self.mean_us() / 1000.0,
            p50: ms(self.quantile_us(0.50)),
            p95: ms(self.quantile_us(0.95)),
            p99: ms(self.quantile_us(0.99)),
            max: ms(self.max),
        }
    }
}

/// Latency summary in milliseconds.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct LatencySummary {
    pub count: u64,
    pub mean: f64,
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
    pub max: f64,
}

// ---------------------------------------------------------------------------------------------
// Per-worker stats.
// ---------------------------------------------------------------------------------------------

/// Inbound event names counted without a lock (everything else goes to a map).
pub const KNOWN_EVENTS: [&str; 10] = [
    "message:new",
    "typing:event",
    "presence:changed",
    "presence:bulk",
    "user:joined",
    "user:left",
    "connected",
    "authenticated",
    "error",
    "message:delivered",
];

macro_rules! counters {
    ($($name:ident),* $(,)?) => {
        /// Monotonic counters of one worker.
        #[derive(Default)]
        pub struct Counters { $(pub $name: AtomicU64,)* }

        /// Snapshot of [`Counters`].
        #[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
        pub struct CounterSnap { $(pub $name: u64,)* }

        impl Counters {
            pub fn snapshot(&self) -> CounterSnap {
                CounterSnap { $($name: self.$name.load(Relaxed),)* }
            }
        }

        impl CounterSnap {
            pub fn merge(&mut self, o: &CounterSnap) { $(self.$name += o.$name;)* }
            pub fn delta(&self, earlier: &CounterSnap) -> CounterSnap {
                CounterSnap { $($name: self.$name.saturating_sub(earlier.$name),)* }
            }
        }
    };
}

counters!(
    // connections
    attempts,
    connected,
    failed,
    settled,
    reconnect_attempts,
    reconnected,
    reconnect_failed,
    resettled,
    dropped,
    lost,
    // rooms
    joins_ok,
    joins_failed,
    // sending
    sent,
    acked_ok,
    acked_err,
    ack_timeouts,
    send_skipped,
    // receiving
    deliveries,
    events_in,
    pings,
    frames_in,
    bytes_in,
);

/// Everything one worker measures.
pub struct Stats {
    pub c: Counters,
    /// Connections currently open and ready.
    pub live: AtomicI64,
    /// Pending acks of message:send requests across this worker's senders.
    pub inflight: AtomicI64,
    /// Wall-clock µs of the latest bench message delivery.
    pub last_delivery_us: AtomicU64,
    known: [AtomicU64; KNOWN_EVENTS.len()],
    other: Mutex<HashMap<String, u64>>,
    fail_reasons: Mutex<BTreeMap<String, u64>>,
    refail_reasons: Mutex<BTreeMap<String, u64>>,
    lost_reasons: Mutex<BTreeMap<String, u64>>,
    ack_errors: Mutex<BTreeMap<String, u64>>,
    pub connect_lat: Histogram,
    pub reconnect_lat: Histogram,
    pub join_lat: Histogram,
    pub ack_lat: Histogram,
    pub deliver_lat: Histogram,
}

impl Default for Stats {
    fn default() -> Self {
        Self {
            c: Counters::default(),
            live: AtomicI64::new(0),
            inflight: AtomicI64::new(0),
            last_delivery_us: AtomicU64::new(0),
            known: Default::default(),
            other: Mutex::new(HashMap::new()),
            fail_reasons: Mutex::new(BTreeMap::new()),
            refail_reasons: Mutex::new(BTreeMap::new()),
            lost_reasons: Mutex::new(BTreeMap::new()),
            ack_errors: Mutex::new(BTreeMap::new()),
            connect_lat: Histogram::default(),
            reconnect_lat: Histogram::default(),
            join_lat: Histogram::default(),
            ack_lat: Histogram::default(),
            deliver_lat: Histogram::default(),
        }
    }
}

fn bump(m: &Mutex<BTreeMap<String, u64>>, key: &str) {
    let mut m = m.lock().unwrap_or_else(|e| e.into_inner());
    *m.entry(key.to_string()).or_default() += 1;
}

impl Stats {
    pub fn event_in(&self, name: &str) {
        self.c.events_in.fetch_add(1, Relaxed);
        if let Some(i) = KNOWN_EVENTS.iter().position(|k| *k == name) {
            self.known[i].fetch_add(1, Relaxed);
        } else {
            let mut m = self.other.lock().unwrap_or_else(|e| e.into_inner());
            // Bounded: a server emitting unbounded distinct names must not grow us without end.
            if m.len() < 256 || m.contains_key(name) {
                *m.entry(name.chars().take(64).collect()).or_default() += 1;
            } else {
                *m.entry("(other)".into()).or_default() += 1;
            }
        }
    }

    pub fn connect_failed(&self, reason: &str) {
        bump(&self.fail_reasons, reason);
    }
    pub fn reconnect_failed(&self, reason: &str) {
        bump(&self.refail_reasons, reason);
    }
    pub fn lost(&self, reason: &str) {
        bump(&self.lost_reasons, reason);
    }
    pub fn ack_error(&self, code: &str) {
        bump(&self.ack_errors, code);
    }

    pub fn snapshot(&self) -> Snapshot {
        let mut events: BTreeMap<String, u64> = BTreeMap::new();
        for (i, k) in KNOWN_EVENTS.iter().enumerate() {
            let v = self.known[i].load(Relaxed);
            if v > 0 {
                events.insert(k.to_string(), v);
            }
        }
        for (k, v) in self.other.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            events.insert(k.clone(), *v);
        }
        let cl = |m: &Mutex<BTreeMap<String, u64>>| m.lock().unwrap_or_else(|e| e.into_inner()).clone();
        Snapshot {
            c: self.c.snapshot(),
            live: self.live.load(Relaxed).max(0) as u64,
            last_delivery_us: self.last_delivery_us.load(Relaxed),
            events,
            fail_reasons: cl(&self.fail_reasons),
            refail_reasons: cl(&self.refail_reasons),
            lost_reasons: cl(&self.lost_reasons),
            ack_errors: cl(&self.ack_errors),
            connect_lat: self.connect_lat.snapshot(),
            reconnect_lat: self.reconnect_lat.snapshot(),
            join_lat: self.join_lat.snapshot(),
            ack_lat: self.ack_lat.snapshot(),
            deliver_lat: self.deliver_lat.snapshot(),
        }
    }
}

/// Serializable, mergeable state of one worker (or of all, once merged).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Snapshot {
    pub c: CounterSnap,
    pub live: u64,
    /// Wall-clock µs of the latest bench message delivery (0: none).
    #[serde(default)]
    pub last_delivery_us: u64,
    pub events: BTreeMap<String, u64>,
    pub fail_reasons: BTreeMap<String, u64>,
    pub refail_reasons: BTreeMap<String, u64>,
    pub lost_reasons: BTreeMap<String, u64>,
    pub ack_errors: BTreeMap<String, u64>,
    pub connect_lat: HistSnap,
    pub reconnect_lat: HistSnap,
    pub join_lat: HistSnap,
    pub ack_lat: HistSnap,
    pub deliver_lat: HistSnap,
}

fn merge_map(a: &mut BTreeMap<String, u64>, b: &BTreeMap<String, u64>) {
    for (k, v) in b {
        *a.entry(k.clone()).or_default() += v;
    }
}

impl Snapshot {
    pub fn merge(&mut self, o: &Snapshot) {
        self.c.merge(&o.c);
        self.live += o.live;
        self.last_delivery_us = self.last_delivery_us.max(o.last_delivery_us);
        merge_map(&mut self.events, &o.events);
        merge_map(&mut self.fail_reasons, &o.fail_reasons);
        merge_map(&mut self.refail_reasons, &o.refail_reasons);
        merge_map(&mut self.lost_reasons, &o.lost_reasons);
        merge_map(&mut self.ack_errors, &o.ack_errors);
        self.connect_lat.merge(&o.connect_lat);
        self.reconnect_lat.merge(&o.reconnect_lat);
        self.join_lat.merge(&o.join_lat);
        self.ack_lat.merge(&o.ack_lat);
        self.deliver_lat.merge(&o.deliver_lat);
    }

    /// Inbound events received since `earlier`, by name.
    pub fn events_since(&self, earlier: &Snapshot) -> BTreeMap<String, u64> {
        self.events
            .iter()
            .map(|(k, v)| (k.clone(), v.saturating_sub(*earlier.events.get(k).unwrap_or(&0))))
            .filter(|(_, v)| *v > 0)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_monotonic_and_cover_values() {
        let mut last = 0;
        for v in [0u64, 1, 63, 64, 65, 100, 1000, 12_345, 1 << 20, 1 << 40, u64::MAX / 2] {
            let b = bucket_of(v);
            assert!(b >= last);
            last = b;
            let (lo, hi) = bucket_range(b);
            assert!(lo <= v && v <= hi, "{v} not in [{lo},{hi}]");
            assert!(b < BUCKETS);
        }
    }

    #[test]
    fn quantiles_are_close() {
        let h = Histogram::default();
        for v in 1..=10_000u64 {
            h.record_us(v);
        }
        let s = h.snapshot();
        let p50 = s.quantile_us(0.5) as f64;
        let p99 = s.quantile_us(0.99) as f64;
        assert!((p50 - 5000.0).abs() / 5000.0 < 0.04, "{p50}");
        assert!((p99 - 9900.0).abs() / 9900.0 < 0.04, "{p99}");
        assert_eq!(s.max, 10_000);
        assert_eq!(s.min, 1);
        let mut m = HistSnap::default();
        m.merge(&s);
        m.merge(&s);
        assert_eq!(m.count, 20_000);
        assert_eq!(m.quantile_us(0.5), s.quantile_us(0.5));
    }

    #[test]
    fn snapshots_merge_and_diff() {
        let st = Stats::default();
        st.event_in("message:new");
        st.event_in("custom");
        st.connect_failed("tcp: refused");
        let a = st.snapshot();
        st.event_in("message:new");
        let b = st.snapshot();
        assert_eq!(b.events_since(&a).get("message:new"), Some(&1));
        let mut m = a.clone();
        m.merge(&b);
        assert_eq!(m.events["message:new"], 3);
        assert_eq!(m.fail_reasons["tcp: refused"], 2);
    }
}
