//! A worker holds its share of the clients (client `g` belongs to worker `g % workers`) and runs
//! the coordinator's phases in lock-step: it gets `Go {phase, action}`, does it, and answers
//! `Done {phase, snapshot}`; meanwhile it reports progress every 500 ms.
//!
//! In-process (one worker) the messages go over channels; a worker process (re-executed
//! `current_exe` with `--worker-id/--worker-of/--run-id`) reads them as JSON lines on stdin and
//! writes them as `@@bench {json}` lines on stdout (other stdout lines are ignored by the
//! coordinator, so a banner or a log line on stdout cannot break the protocol).

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use anyhow::Context;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::BenchArgs;
use super::client::Target;
use super::probe::{SelfUsage, self_usage};
use super::session::{self, Shared, Signal};
use super::stats::Snapshot;
use super::token::TokenSource;

/// Marker of protocol lines on a worker's stdout.
pub const LINE_PREFIX: &str = "@@bench ";

/// What a worker is told to do in a phase.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub enum Action {
    /// Open this worker's clients (paced), join rooms; done when every client is ready or failed.
    Ramp,
    /// Keep the connections for `ms`.
    Hold { ms: u64 },
    /// Senders send for `ms`, then stop; done when acks and deliveries stop coming (≤ `drain_ms`).
    Send { ms: u64, drain_ms: u64 },
    /// Wait until no event arrived for `quiet_ms` (at most `max_ms`): lets late broadcasts of the
    /// ramp (presence announcements, joins) pass before a measured window.
    Settle { quiet_ms: u64, max_ms: u64 },
    /// Live clients drop their connection and reconnect; done when all of them are back or failed. `permille`
    /// of the clients drop (1000: all), chosen by client index and `seed` (a new choice for each seed).
    Drop { permille: u16, seed: u32 },
    /// Senders send for `ms`; half-way through, `permille` of the clients drop and reconnect (the others keep
    /// sending, the reconnected ones resume). Done at the end of the window once the dropped ones are back or
    /// failed.
    SendStorm { ms: u64, permille: u16, seed: u32 },
    /// Close every connection.
    Close,
}

#[derive(Debug, Serialize, Deserialize)]
pub enum ToWorker {
    Go { phase: u32, action: Action },
}

/// Light progress counters.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct Progress {
    pub clients: u64,
    pub settled: u64,
    pub connected: u64,
    pub failed: u64,
    pub live: u64,
    pub reconnected: u64,
    pub reconnect_failed: u64,
    pub sent: u64,
    pub deliveries: u64,
    pub events_in: u64,
}

#[derive(Debug, Serialize, Deserialize)]
pub enum FromWorker {
    Progress(Progress),
    Done { phase: u32, snap: Box<Snapshot>, usage: SelfUsage, elapsed_ms: f64 },
    Error(String),
}

/// Client indexes of worker `id` of `of`.
pub fn local_clients(total: u64, id: u32, of: u32) -> impl Iterator<Item = u64> {
    (id as u64..total).step_by(of.max(1) as usize)
}

struct Worker {
    sh: Arc<Shared>,
    local: Vec<u64>,
    connect_rate: f64,
    tasks: JoinSet<()>,
}

impl Worker {
    /// Waits until `done()` holds, or until nothing changed in `stall` (a bounded wait).
    async fn wait_until(&self, stall: Duration, done: impl Fn(&Worker) -> bool) {
        let mut last = (u64::MAX, u64::MAX, u64::MAX);
        let mut last_change = Instant::now();
        while !done(self) {
            let c = self.sh.stats.c.snapshot();
            let now = (c.settled + c.resettled, c.reconnect_attempts, c.attempts);
            if now != last {
                last = now;
                last_change = Instant::now();
            } else if last_change.elapsed() > stall {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// After a drop signal: waits until the clients that dropped are back or failed. `before` is (resettled,
    /// dropped) when the signal went out; `all` the number of clients when every one dropped.
    async fn wait_back(&self, before: (u64, u64), all: Option<u64>) {
        if all.is_none() {
            // Clients count themselves as they see the signal; give them a moment to.
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let p = &self.sh.plan;
        let stall = self.sh.handshake_timeout * (p.retries + 2) + p.jitter + Duration::from_secs(5);
        self.wait_until(stall, |w| {
            let st = &w.sh.stats;
            let target = all.unwrap_or_else(|| st.c.dropped.load(Relaxed).saturating_sub(before.1));
            st.c.resettled.load(Relaxed) >= before.0 + target
        })
        .await;
    }

    async fn act(&mut self, action: Action) {
        let sh = self.sh.clone();
        let st = &sh.stats;
        match action {
            Action::Ramp => {
                let start = Instant::now();
                let n = self.local.len();
                let mut spawned = 0usize;
                while spawned < n {
                    let due = if self.connect_rate > 0.0 {
                        ((start.elapsed().as_secs_f64() * self.connect_rate) as usize + 1).min(n)
                    } else {
                        n
                    };
                    while spawned < due {
                        self.tasks.spawn(session::run(sh.clone(), self.local[spawned]));
                        spawned += 1;
                    }
                    if spawned < n {
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                }
                let stall = sh.handshake_timeout * 2 + Duration::from_secs(5);
                self.wait_until(stall, |w| w.sh.stats.c.settled.load(Relaxed) >= n as u64).await;
            }
            Action::Hold { ms } => tokio::time::sleep(Duration::from_millis(ms)).await,
            Action::Send { ms, drain_ms } => {
                let start = Instant::now() + Duration::from_millis(5);
                sh.phase.send_replace(Signal::Send { start });
                tokio::time::sleep_until(start + Duration::from_millis(ms)).await;
                sh.phase.send_replace(Signal::Quiet);
                // Drain: until acks are in and inbound traffic has been still for 300 ms.
                let end = Instant::now() + Duration::from_millis(drain_ms);
                let mut last = st.c.events_in.load(Relaxed);
                let mut still_since = Instant::now();
                while Instant::now() < end {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    let now = st.c.events_in.load(Relaxed);
                    if now != last {
                        last = now;
                        still_since = Instant::now();
                    } else if st.inflight.load(Relaxed) <= 0 && still_since.elapsed() >= Duration::from_millis(300) {
                        break;
                    }
                }
            }
            Action::Settle { quiet_ms, max_ms } => {
                let end = Instant::now() + Duration::from_millis(max_ms);
                let quiet = Duration::from_millis(quiet_ms);
                let mut last = st.c.events_in.load(Relaxed);
                let mut still_since = Instant::now();
                while Instant::now() < end && still_since.elapsed() < quiet {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    let now = st.c.events_in.load(Relaxed);
                    if now != last {
                        last = now;
                        still_since = Instant::now();
                    }
                }
            }
            Action::Drop { permille, seed } => {
                let before = (st.c.resettled.load(Relaxed), st.c.dropped.load(Relaxed));
                // With every client dropping, the target is known at once; otherwise it is how many clients took
                // the drop, counted by the clients as they see the signal.
                let all = (permille >= 1000).then(|| st.live.load(Relaxed).max(0) as u64);
                sh.phase.send_replace(Signal::Drop { t0: Instant::now(), permille, seed, send: None });
                self.wait_back(before, all).await;
            }
            Action::SendStorm { ms, permille, seed } => {
                let start = Instant::now() + Duration::from_millis(5);
                sh.phase.send_replace(Signal::Send { start });
                tokio::time::sleep_until(start + Duration::from_millis(ms / 2)).await;
                let before = (st.c.resettled.load(Relaxed), st.c.dropped.load(Relaxed));
                sh.phase.send_replace(Signal::Drop { t0: Instant::now(), permille, seed, send: Some(start) });
                tokio::time::sleep_until(start + Duration::from_millis(ms)).await;
                sh.phase.send_replace(Signal::Quiet);
                self.wait_back(before, None).await;
            }
            Action::Close => {
                sh.phase.send_replace(Signal::Close);
                let all = async { while self.tasks.join_next().await.is_some() {} };
                if tokio::time::timeout(Duration::from_secs(10), all).await.is_err() {
                    self.tasks.abort_all();
                }
            }
        }
    }
}

/// Runs one worker until its Close phase or until the coordinator goes away.
pub async fn serve(
    args: BenchArgs,
    id: u32,
    of: u32,
    run_id: String,
    tx: mpsc::UnboundedSender<FromWorker>,
    mut rx: mpsc::UnboundedReceiver<ToWorker>,
) -> anyhow::Result<()> {
    let start_rss = self_usage().rss_bytes;
    let c = &args.common;
    let plan = args.scenario.plan();
    let mut targets = Vec::new();
    for url in c.urls() {
        targets.push(Target::resolve(url, &c.path, c.allow_remote).await?);
    }
    let target = targets.first().cloned().ok_or_else(|| anyhow::anyhow!("bench: --url names no server"))?;
    let local: Vec<u64> = local_clients(plan.total, id, of).collect();
    let (phase, _) = watch::channel(Signal::Idle);
    let prefix = c.prefix.clone().unwrap_or_else(|| format!("bench-{run_id}"));
    let sh = Arc::new(Shared {
        target,
        targets,
        tokens: TokenSource::from_args(c)?,
        app: c.app.clone(),
        ready_event: (!c.ready_event.is_empty() && c.ready_event != "none").then(|| c.ready_event.clone()),
        handshake_timeout: c.handshake_timeout,
        marker: format!("~bt{run_id}:"),
        prefix,
        source_addrs: effective_source_addrs(c.source_addrs, plan.total),
        plan,
        stats: Default::default(),
        phase,
        handshake_sem: Semaphore::new(c.concurrency.max(1)),
    });
    let mut w = Worker {
        sh,
        local,
        connect_rate: c.connect_rate_for(&args.scenario) / of.max(1) as f64,
        tasks: JoinSet::new(),
    };

    // Progress ticker.
    let (psh, pn, ptx) = (w.sh.clone(), w.local.len(), tx.clone());
    let ticker = tokio::spawn(async move {
        let mut iv = tokio::time::interval(Duration::from_millis(500));
        loop {
            iv.tick().await;
            if ptx.send(FromWorker::Progress(progress(&psh, pn))).is_err() {
                return;
            }
        }
    });

    let result = async {
        while let Some(ToWorker::Go { phase, action }) = rx.recv().await {
            let t = Instant::now();
            let cpu0 = self_usage().cpu_seconds;
            w.act(action).await;
            tx.send(FromWorker::Progress(progress(&w.sh, w.local.len()))).ok();
            tx.send(FromWorker::Done {
                phase,
                snap: Box::new(w.sh.stats.snapshot()),
                usage: {
                    let u = self_usage();
                    SelfUsage { start_rss_bytes: start_rss, step_cpu_seconds: u.cpu_seconds - cpu0, ..u }
                },
                elapsed_ms: t.elapsed().as_secs_f64() * 1000.0,
            })
            .ok();
            if matches!(action, Action::Close) {
                break;
            }
        }
        anyhow::Ok(())
    }
    .await;
    ticker.abort();
    w.tasks.abort_all();
    result
}

fn progress(sh: &Shared, clients: usize) -> Progress {
    let c = sh.stats.c.snapshot();
    Progress {
        clients: clients as u64,
        settled: c.settled,
        connected: c.connected,
        failed: c.failed,
        live: sh.stats.live.load(Relaxed).max(0) as u64,
        reconnected: c.reconnected,
        reconnect_failed: c.reconnect_failed,
        sent: c.sent,
        deliveries: c.deliveries,
        events_in: c.events_in,
    }
}

/// `--source-addrs 0` means one loopback address per 5,000 clients (at most 64).
pub fn effective_source_addrs(requested: u8, total: u64) -> u8 {
    if requested > 0 {
        return requested.min(254);
    }
    total.div_ceil(5000).clamp(1, 64) as u8
}

/// Entry point of a worker process: JSON lines on stdin/stdout.
pub async fn run_child(args: BenchArgs) -> anyhow::Result<()> {
    let id = args.common.worker_id.context("worker id")?;
    let of = args.common.worker_of.unwrap_or(1).max(1);
    let run_id = args.common.run_id.clone().unwrap_or_else(|| "0".into());
    let (to_tx, to_rx) = mpsc::unbounded_channel::<ToWorker>();
    let (from_tx, mut from_rx) = mpsc::unbounded_channel::<FromWorker>();

    // stdin → ToWorker; EOF means the coordinator is gone: stop at once.
    tokio::spawn(async move {
        let mut lines = BufReader::new(tokio::io::stdin()).lines();
        loop {
            match lines.next_line().await {
                Ok(Some(l)) => match serde_json::from_str::<ToWorker>(&l) {
                    Ok(m) => {
                        if to_tx.send(m).is_err() {
                            return;
                        }
                    }
                    Err(e) => eprintln!("bench worker {id}: bad command line: {e}"),
                },
                _ => {
                    // The coordinator died or closed our stdin: do not linger.
                    std::process::exit(3);
                }
            }
        }
    });

    // FromWorker → stdout.
    let writer = tokio::spawn(async move {
        let mut out = tokio::io::stdout();
        while let Some(m) = from_rx.recv().await {
            let mut line = String::from(LINE_PREFIX);
            line.push_str(&serde_json::to_string(&m).unwrap_or_else(|_| "null".into()));
            line.push('\n');
            if out.write_all(line.as_bytes()).await.is_err() || out.flush().await.is_err() {
                return;
            }
        }
    });

    let err_tx = from_tx.clone();
    let r = serve(args, id, of, run_id, from_tx, to_rx).await;
    if let Err(e) = &r {
        err_tx.send(FromWorker::Error(format!("{e:#}"))).ok();
    }
    drop(err_tx);
    let _ = tokio::time::timeout(Duration::from_secs(5), writer).await;
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clients_are_partitioned_exactly() {
        let mut all: Vec<u64> = (0..3).flat_map(|w| local_clients(10, w, 3)).collect();
        all.sort();
        assert_eq!(all, (0..10).collect::<Vec<_>>());
        assert_eq!(effective_source_addrs(0, 100), 1);
        assert_eq!(effective_source_addrs(0, 15_000), 3);
        assert_eq!(effective_source_addrs(4, 10), 4);
    }
}
