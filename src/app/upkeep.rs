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
    ) -> Upkeep {
        Upkeep {
            store,
            presence,
            limiter,
            sessions,
            retention,
            retention_worker: Worker::default(),
            housekeeping: Worker::default(),
        }
    }

    pub fn start(self: &Arc<Self>) {
        let part = Arc::downgrade(self);
        self.retention_worker.start(|mut stop| async move {
            let mut tick = tokio::time::interval(Duration::from_secs(3600));
            loop {
                tokio::select! {
                    _ = tick.tick() => {},
                    _ = stop.requested() => return,
                }
                let Some(u) = part.upgrade() else { return };
                u.prune().await;
            }
        });
        let part = Arc::downgrade(self);
        self.housekeeping.start(|mut stop| async move {
            let mut tick = tokio::time::interval(Duration::from_secs(10));
            let mut last = 0usize;
            loop {
                tokio::select! {
                    _ = tick.tick() => {},
                    _ = stop.requested() => return,
                }
                let Some(u) = part.upgrade() else { return };
                u.presence.sweep().await;
                u.limiter.sweep(std::time::Instant::now());
                let now = u.sessions.len();
                if now + 1000 < last || (now == 0 && last > 0) {
                    trim_heap();
                }
                last = now;
            }
        });
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
