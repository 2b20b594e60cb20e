//! A part's background task. The part that owns some state owns the timer that acts on it: it starts the
//! task, and shutdown stops it and waits for it to finish its current round. A part dropped without a
//! shutdown aborts its task.

use std::future::Future;

use parking_lot::Mutex;
use tokio::sync::watch;
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
