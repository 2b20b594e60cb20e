//! A part's background task. The part that owns some state owns the timer that acts on it: it starts the
//! task, and shutdown stops it and waits for it to finish its current round. A part dropped without a
//! shutdown aborts its task.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

#[derive(Default)]
pub struct Worker {
    running: Mutex<Option<(watch::Sender<bool>, JoinHandle<()>)>>,
}

/// Handed to the task: resolves when the task should end.
pub struct Stop(watch::Receiver<bool>);

impl Stop {
    /// Waits until the worker is stopped.
    pub async fn requested(&mut self) {
        let _ = self.0.wait_for(|s| *s).await;
    }
}

impl Worker {
    /// Starts the task (once; a second start is ignored).
    pub fn start<F>(&self, task: impl FnOnce(Stop) -> F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let mut running = self.running.lock();
        if running.is_none() {
            let (tx, rx) = watch::channel(false);
            *running = Some((tx, tokio::spawn(task(Stop(rx)))));
        }
    }

    /// A deadline timer over a part: `round` does the work that is due and says how long until more is due
    /// (None: nothing scheduled); the timer sleeps that long, or until `wake` is notified (new work), or until
    /// it is stopped. The part is held only during a round, so dropping it ends the timer.
    pub fn every_deadline<T, F, Fut>(&self, part: &Arc<T>, wake: Arc<Notify>, round: F)
    where
        T: Send + Sync + 'static,
        F: Fn(Arc<T>) -> Fut + Send + 'static,
        Fut: Future<Output = Option<Duration>> + Send,
    {
        let part = Arc::downgrade(part);
        self.start(|mut stop| async move {
            loop {
                let Some(p) = part.upgrade() else { return };
                let wait = round(p).await;
                tokio::select! {
                    _ = sleep_or_forever(wait) => {},
                    _ = wake.notified() => {},
                    _ = stop.requested() => return,
                }
            }
        });
    }

    /// A periodic timer over a part: `round` runs every `period`, the first time after `first`.
    pub fn every<T, F, Fut>(&self, part: &Arc<T>, first: Duration, period: Duration, round: F)
    where
        T: Send + Sync + 'static,
        F: Fn(Arc<T>) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send,
    {
        let part = Arc::downgrade(part);
        self.start(|mut stop| async move {
            let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + first, period);
            loop {
                tokio::select! {
                    _ = tick.tick() => {},
                    _ = stop.requested() => return,
                }
                let Some(p) = part.upgrade() else { return };
                round(p).await;
            }
        });
    }

    /// Asks the task to end and waits for it.
    pub async fn stop(&self) {
        let Some((tx, handle)) = self.running.lock().take() else { return };
        let _ = tx.send(true);
        let _ = handle.await;
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        if let Some((_, handle)) = self.running.get_mut().take() {
            handle.abort();
        }
    }
}

/// Sleeps for `d`, or forever when there is nothing to wait for.
async fn sleep_or_forever(d: Option<Duration>) {
    match d {
        Some(d) => tokio::time::sleep(d).await,
        None => std::future::pending().await,
    }
}

/// How long a deadline timer sleeps: until its next deadline, but no longer than `poll` (a shared backend's
/// deadlines are also set by other nodes, see `cluster::Roster::poll_interval`).
pub fn within(wait: Option<Duration>, poll: Option<Duration>) -> Option<Duration> {
    [wait, poll].into_iter().flatten().min()
}

/// How long until `t`, for a deadline timer (zero when it has passed).
pub fn until(t: chrono::DateTime<chrono::Utc>) -> Duration {
    (t - chrono::Utc::now()).to_std().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    #[tokio::test]
    async fn stop_waits_for_the_task() {
        let w = Worker::default();
        let finished = Arc::new(AtomicBool::new(false));
        let f = finished.clone();
        w.start(|mut stop| async move {
            stop.requested().await;
            tokio::task::yield_now().await;
            f.store(true, Ordering::SeqCst);
        });
        w.stop().await;
        assert!(finished.load(Ordering::SeqCst), "stop returns after the task ended");
        w.stop().await;
    }

    #[tokio::test]
    async fn drop_aborts_the_task() {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<()>(1);
        {
            let w = Worker::default();
            w.start(|_stop| async move {
                let _keep = tx;
                std::future::pending::<()>().await;
            });
        }
        assert!(rx.recv().await.is_none(), "the task (and its sender) went with the worker");
    }
}
