//! The coordinator: checks the target, starts the workers (in this process, or re-executed
//! `current_exe` children), runs a scenario's phases in lock-step across them, shows progress on
//! stderr and prints the report.

use std::ffi::OsString;
use std::io::IsTerminal;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::client::Target;
use super::probe::{self, Probe, SelfUsage};
use super::report::{Report, fmt_num};
use super::scenarios::Plan;
use super::stats::Snapshot;
use super::worker::{self, Action, FromWorker, LINE_PREFIX, Progress, ToWorker};
use super::{BenchArgs, CommonArgs, Scenario};

enum Link {
    Local { tx: mpsc::UnboundedSender<ToWorker>, task: JoinHandle<()> },
    Process { stdin: ChildStdin, child: Box<Child> },
}

/// Result of one phase, merged over all workers.
pub struct Step {
    pub name: String,
    pub snap: Snapshot,
    pub elapsed: Duration,
    pub usage: Vec<SelfUsage>,
}

pub struct Coordinator {
    pub common: CommonArgs,
    pub scenario: Scenario,
    pub plan: Plan,
    pub target: Target,
    pub probe: Probe,
    pub workers: u32,
    pub source_addrs: u8,
    pub run_id: String,
    links: Vec<Link>,
    rx: mpsc::UnboundedReceiver<(usize, FromWorker)>,
    phase: u32,
    progress: Vec<Progress>,
    tty: bool,
}

/// Runs a whole bench: start, scenario, report.
pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let mut co = Coordinator::start(&args).await?;
    let result = args.scenario.drive(&mut co).await;
    co.shutdown().await;
    let report = result?;
    report.print(args.common.json);
    match report.failure {
        Some(f) => bail!("bench {}: {f}", args.scenario.name()),
        None => Ok(()),
    }
}

impl Coordinator {
    async fn start(args: &BenchArgs) -> anyhow::Result<Coordinator> {
        let c = &args.common;
        let plan = args.scenario.plan();
        if plan.total == 0 {
            bail!("bench: nothing to do (0 connections)");
        }
        // Fails early on a bad URL, a remote target or missing credentials.
        let mut target = None;
        for url in c.urls() {
            let t = Target::resolve(url, &c.path, c.allow_remote).await?;
            target.get_or_insert(t);
        }
        let target = target.ok_or_else(|| anyhow::anyhow!("bench: --url names no server"))?;
        super::token::TokenSource::from_args(c)?;

        let workers =
            if c.workers > 0 { c.workers } else { plan.total.div_ceil(c.max_conns_per_worker.max(1)).max(1) as u32 };
        let per_worker = plan.total.div_ceil(workers as u64);
        if let Some(limit) = probe::open_files_limit()
            && per_worker + 64 > limit
        {
            bail!(
                "bench: {per_worker} connections per worker exceed the open-files limit ({limit}); \
                 use more --workers (or lower --max-conns-per-worker)"
            );
        }
        let run_id = c.run_id.clone().unwrap_or_else(|| {
            let u = uuid::Uuid::new_v4().simple().to_string();
            u[..8].to_string()
        });
        let source_addrs = worker::effective_source_addrs(c.source_addrs, plan.total);
        let probe = Probe::new(c.server_pid, c.metrics_url.clone(), &target.base_url, c.no_server_metrics);

        let (tx, rx) = mpsc::unbounded_channel::<(usize, FromWorker)>();
        let mut links = Vec::new();
        if workers == 1 {
            let (to_tx, to_rx) = mpsc::unbounded_channel();
            let (from_tx, mut from_rx) = mpsc::unbounded_channel();
            let a = args.clone();
            let rid = run_id.clone();
            let fwd = tx.clone();
            let task = tokio::spawn(async move {
                let err_tx = from_tx.clone();
                let forward = tokio::spawn(async move {
                    while let Some(m) = from_rx.recv().await {
                        if fwd.send((0, m)).is_err() {
                            return;
                        }
                    }
                });
                if let Err(e) = worker::serve(a, 0, 1, rid, from_tx, to_rx).await {
                    err_tx.send(FromWorker::Error(format!("{e:#}"))).ok();
                }
                drop(err_tx);
                let _ = forward.await;
            });
            links.push(Link::Local { tx: to_tx, task });
        } else {
            let exe = std::env::current_exe().context("bench: locating the executable for workers")?;
            let base: Vec<OsString> = std::env::args_os().skip(1).collect();
            for i in 0..workers {
                let mut argv = base.clone();
                for (k, v) in
                    [("--worker-id", i.to_string()), ("--worker-of", workers.to_string()), ("--run-id", run_id.clone())]
                {
                    argv.push(k.into());
                    argv.push(v.into());
                }
                let mut child = Command::new(&exe)
                    .args(&argv)
                    .stdin(std::process::Stdio::piped())
                    .stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::inherit())
                    .kill_on_drop(true)
                    .spawn()
                    .with_context(|| format!("bench: starting worker {i}"))?;
                let stdout = child.stdout.take().context("worker stdout")?;
                let stdin = child.stdin.take().context("worker stdin")?;
                let tx = tx.clone();
                let idx = i as usize;
                tokio::spawn(async move {
                    let mut lines = BufReader::new(stdout).lines();
                    while let Ok(Some(l)) = lines.next_line().await {
                        if let Some(j) = l.strip_prefix(LINE_PREFIX) {
                            match serde_json::from_str::<FromWorker>(j) {
                                Ok(m) => {
                                    if tx.send((idx, m)).is_err() {
                                        return;
                                    }
                                }
                                Err(e) => eprintln!("bench: bad line from worker {idx}: {e}"),
                            }
                        }
                    }
                    tx.send((idx, FromWorker::Error("worker process exited".into()))).ok();
                });
                links.push(Link::Process { stdin, child: Box::new(child) });
            }
        }

        let co = Coordinator {
            common: c.clone(),
            scenario: args.scenario.clone(),
            plan,
            target,
            probe,
            workers,
            source_addrs,
            run_id,
            links,
            rx,
            phase: 0,
            progress: vec![Progress::default(); workers as usize],
            tty: std::io::stderr().is_terminal(),
        };
        co.say(&format!(
            "bench {}: {} clients against {}{} ({} worker{}, {} source address{}, server metrics: {})",
            co.scenario.name(),
            fmt_num(co.plan.total as f64, 0),
            co.target.ws_url,
            match c.urls().len() {
                1 => String::new(),
                n => format!(" and {} more node{} (clients spread evenly)", n - 1, if n == 2 { "" } else { "s" }),
            },
            co.workers,
            if co.workers == 1 { "" } else { "s" },
            if co.source_addrs > 1 { co.source_addrs } else { 1 },
            if co.source_addrs > 1 { "es" } else { "" },
            co.probe.describe(),
        ));
        Ok(co)
    }

    /// A progress/info line on stderr (unless --quiet).
    pub fn say(&self, line: &str) {
        if !self.common.quiet {
            if self.tty {
                eprintln!("\r\x1b[K{line}");
            } else {
                eprintln!("{line}");
            }
        }
    }

    /// Sends `action` to every worker and waits until all are done with it.
    pub async fn step(&mut self, name: &str, action: Action) -> anyhow::Result<Step> {
        self.phase += 1;
        let phase = self.phase;
        let msg = ToWorker::Go { phase, action };
        for (i, l) in self.links.iter_mut().enumerate() {
            match l {
                Link::Local { tx, .. } => {
                    tx.send(ToWorker::Go { phase, action }).map_err(|_| anyhow::anyhow!("bench: worker {i} is gone"))?
                }
                Link::Process { stdin, .. } => {
                    let mut line = serde_json::to_string(&msg)?;
                    line.push('\n');
                    stdin.write_all(line.as_bytes()).await.with_context(|| format!("bench: worker {i} is gone"))?;
                    stdin.flush().await.ok();
                }
            }
        }
        let start = Instant::now();
        let n = self.links.len();
        let mut done: Vec<Option<(Snapshot, SelfUsage)>> = vec![None; n];
        let mut last_print = Instant::now();
        let every = if self.tty { Duration::from_millis(500) } else { Duration::from_secs(2) };
        while done.iter().any(Option::is_none) {
            match tokio::time::timeout(Duration::from_millis(250), self.rx.recv()).await {
                Ok(Some((i, FromWorker::Progress(p)))) => self.progress[i] = p,
                Ok(Some((i, FromWorker::Done { phase: p, snap, usage, .. }))) if p == phase => {
                    done[i] = Some((*snap, usage));
                }
                Ok(Some((_, FromWorker::Done { .. }))) => {}
                Ok(Some((i, FromWorker::Error(e)))) => bail!("bench: worker {i}: {e}"),
                Ok(None) => bail!("bench: all workers are gone"),
                Err(_) => {}
            }
            if last_print.elapsed() >= every {
                last_print = Instant::now();
                self.show_progress(name, action, start.elapsed(), false);
            }
        }
        let elapsed = start.elapsed();
        if elapsed >= Duration::from_millis(500) || !matches!(action, Action::Close | Action::Settle { .. }) {
            self.show_progress(name, action, elapsed, true);
        }
        let mut snap = Snapshot::default();
        let mut usage = Vec::new();
        for (s, u) in done.into_iter().flatten() {
            snap.merge(&s);
            usage.push(u);
        }
        Ok(Step { name: name.to_string(), snap, elapsed, usage })
    }

    fn show_progress(&self, name: &str, action: Action, t: Duration, last: bool) {
        if self.common.quiet || (!last && matches!(action, Action::Close)) {
            return;
        }
        let mut p = Progress::default();
        for w in &self.progress {
            p.clients += w.clients;
            p.settled += w.settled;
            p.connected += w.connected;
            p.failed += w.failed;
            p.live += w.live;
            p.reconnected += w.reconnected;
            p.reconnect_failed += w.reconnect_failed;
            p.sent += w.sent;
            p.deliveries += w.deliveries;
            p.events_in += w.events_in;
        }
        let secs = t.as_secs_f64();
        let body = match action {
            Action::Ramp => format!(
                "{}/{} ready · {} failed · {} conn/s",
                fmt_num(p.connected as f64, 0),
                fmt_num(self.plan.total as f64, 0),
                fmt_num(p.failed as f64, 0),
                fmt_num(p.connected as f64 / secs.max(1e-3), 0),
            ),
            Action::Hold { ms } => {
                format!("{:.0}/{:.0} s · {} live", secs, ms as f64 / 1000.0, fmt_num(p.live as f64, 0))
            }
            Action::Send { .. } | Action::SendStorm { .. } => format!(
                "sent {} · delivered {} · events in {}",
                fmt_num(p.sent as f64, 0),
                fmt_num(p.deliveries as f64, 0),
                fmt_num(p.events_in as f64, 0)
            ),
            Action::Settle { .. } => format!("events in {}", fmt_num(p.events_in as f64, 0)),
            Action::Drop { .. } => format!(
                "{} live · reconnected {} · failed {}",
                fmt_num(p.live as f64, 0),
                fmt_num(p.reconnected as f64, 0),
                fmt_num(p.reconnect_failed as f64, 0)
            ),
            Action::Close => format!("{} live", fmt_num(p.live as f64, 0)),
        };
        let line = format!("[{}] {name} {secs:>6.1}s  {body}", self.scenario.name());
        if self.tty {
            if last {
                eprintln!("\r\x1b[K{line}");
            } else {
                eprint!("\r\x1b[K{line}");
            }
        } else {
            eprintln!("{line}");
        }
    }

    /// A report with the run context filled in.
    pub fn report(&self) -> Report {
        let mut r = Report::new(self.scenario.name());
        if let Some(l) = &self.common.label {
            r.context("label", l.clone());
        }
        r.context("url", self.common.url.clone());
        r.context("workers", self.workers);
        r.context("source_addrs", self.source_addrs.max(1));
        r.context("server_metrics", self.probe.describe());
        r.context("run_id", self.run_id.clone());
        r
    }

    /// Adds the bench's own memory (growth per connection) and its CPU during `step`.
    pub fn generator_usage(&self, r: &mut Report, step: &Step, connections: u64) {
        let rss: u64 = step.usage.iter().map(|u| u.rss_bytes).sum();
        let start: u64 = step.usage.iter().map(|u| u.start_rss_bytes).sum();
        let cpu: f64 = step.usage.iter().map(|u| u.step_cpu_seconds).sum();
        r.section("load generator");
        r.bytes("bench_rss_bytes", "bench RSS (all workers)", Some(rss as f64));
        if connections > 0 {
            r.bytes(
                "bench_rss_per_conn_bytes",
                "bench RSS growth per connection",
                Some(rss.saturating_sub(start) as f64 / connections as f64),
            );
        }
        r.num(
            "bench_cpu_percent",
            &format!("bench CPU during {}", step.name),
            cpu / step.elapsed.as_secs_f64().max(1e-9) * 100.0,
            "% of a core",
            0,
        );
    }

    async fn shutdown(self) {
        for l in self.links {
            match l {
                Link::Local { tx, mut task } => {
                    drop(tx); // the worker's loop ends and aborts its connection tasks
                    if tokio::time::timeout(Duration::from_secs(5), &mut task).await.is_err() {
                        task.abort();
                    }
                }
                Link::Process { stdin, mut child } => {
                    drop(stdin); // EOF: the worker exits
                    if tokio::time::timeout(Duration::from_secs(5), child.wait()).await.is_err() {
                        let _ = child.kill().await;
                    }
                }
            }
        }
    }
}
