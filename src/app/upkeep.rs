//! Upkeep: retention (hourly) and housekeeping (every 10 s) — forget what departed users left in memory,
//! forget refilled rate budgets, and hand freed heap back to the operating system after a wave of
//! disconnects (glibc keeps it otherwise, so RSS would only ever grow).

use std::sync::Arc;
use std::time::Duration;

use super::presence::Presence;
use super::session::Sessions;
use super::worker::Worker;
use crate::cluster::RateLimiter;
use crate::store::Store;

pub struct Upkeep {
    store: Store,
    presence: Arc<Presence>,
    limiter: Arc<dyn RateLimiter>,
    sessions: Arc<Sessions>,
    /// `REALTIME_MESSAGE_RETENTION_DAYS`, `REALTIME_EVENT_RETENTION_DAYS` (0 keeps all).
    retention: (u32, u32),
    /// `REALTIME_RETENTION_INTERVAL`.
    retention_interval: Duration,
    /// Sessions at the last housekeeping round (a drop of more than 1,000 trims the heap).
    last_sessions: std::sync::atomic::AtomicUsize,
    retention_worker: Worker,
    housekeeping: Worker,
}

impl Upkeep {
    pub fn new(
        store: Store,
        presence: Arc<Presence>,
        limiter: Arc<dyn RateLimiter>,
        sessions: Arc<Sessions>,
        retention: (u32, u32),
        retention_interval: Duration,
    ) -> Upkeep {
        Upkeep {
            store,
            presence,
            limiter,
            sessions,
            retention,
            retention_interval,
            last_sessions: std::sync::atomic::AtomicUsize::new(0),
            retention_worker: Worker::default(),
            housekeeping: Worker::default(),
        }
    }

    pub fn start(self: &Arc<Self>) {
        // The first retention pass runs at start: a server that is restarted often still prunes.
        let (first, hourly) = (Duration::ZERO, self.retention_interval);
        self.retention_worker.every(self, first, hourly, |u| async move { u.prune().await });
        let ten_s = Duration::from_secs(10);
        self.housekeeping.every(self, ten_s, ten_s, |u| async move { u.housekeep().await });
    }

    async fn housekeep(&self) {
        self.presence.sweep().await;
        self.limiter.sweep(std::time::Instant::now());
        let now = self.sessions.len();
        let last = self.last_sessions.swap(now, std::sync::atomic::Ordering::Relaxed);
        if now + 1000 < last || (now == 0 && last > 0) {
            trim_heap();
        }
    }

    pub async fn stop(&self) {
        self.retention_worker.stop().await;
        self.housekeeping.stop().await;
    }

    /// Deletes messages and audit events past their retention.
    pub async fn prune(&self) {
        let (messages, events) = self.retention;
        match self.store.prune(messages, events).await {
            Ok((0, 0)) => {}
            Ok((m, e)) => tracing::info!(messages = m, events = e, "retention removed old rows"),
            Err(e) => tracing::warn!(error = %e, "retention pass failed"),
        }
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn trim_heap() {
    // SAFETY: malloc_trim only releases free memory of the allocator's own arenas.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim_heap() {}
