//! `server start`: runs `server run` in the background with its output appended to the log file, records its
//! pid, and reports success only once `/health` answers, so a script that starts the server can use it next.

use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::process::{ExitCode, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

use super::process::{self, PidFile};
use crate::cli::output;
use crate::config::Config;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Seconds to wait for /health to answer before giving up (and stopping the half-started server).
    #[arg(long, default_value_t = 60)]
    pub timeout: u64,
    #[arg(long)]
    pub json: bool,
}

/// Variables that describe the caller's supervisor (systemd), not the background server's.
const SUPERVISOR_VARS: &[&str] =
    &["NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "JOURNAL_STREAM", "LISTEN_FDS", "LISTEN_PID"];

pub async fn run(args: Args, cfg: &Config) -> anyhow::Result<ExitCode> {
    if let Some(problem) = cfg.auth_problem() {
        anyhow::bail!(problem);
    }
    let pid_file = PidFile::of(cfg);
    if let Some(pid) = pid_file.live_pid() {
        report(&args, "already running", pid, cfg, None);
        return Ok(ExitCode::SUCCESS);
    }
    if let Some(h) = process::probe(cfg, Duration::from_secs(2)).await {
        anyhow::bail!(
            "a server already answers on {} ({}) but was not started by `server start`; \
             stop it where it runs (e.g. `systemctl stop realtime`) or set REALTIME_PORT",
            process::health_url(cfg),
            h.status()
        );
    }

    // Directories made here, and the log file, are the server's own: private to its user.
    for dir in [&cfg.data_dir, &cfg.log_dir] {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| anyhow::anyhow!("cannot create {} ({e})", dir.display()))?;
    }
    let log_path = cfg.log_file();
    let log =
        std::fs::OpenOptions::new().create(true).append(true).mode(0o600).open(&log_path).map_err(|e| {
            anyhow::anyhow!("cannot open the log file {} ({e}); set REALTIME_LOG_DIR", log_path.display())
        })?;
    let log_start = log.metadata().map(|m| m.len()).unwrap_or(0);

    let exe = std::env::current_exe()?;
    let mut command = std::process::Command::new(exe);
    command.args(["server", "run"]).stdin(Stdio::null()).stdout(log.try_clone()?).stderr(log);
    for var in SUPERVISOR_VARS {
        command.env_remove(var);
    }
    // Its own process group: a Ctrl-C in the terminal that ran `start` does not reach the server.
    std::os::unix::process::CommandExt::process_group(&mut command, 0);
    let mut child = command.spawn()?;
    let pid = child.id();
    pid_file.write(pid).map_err(|e| anyhow::anyhow!("cannot write {} ({e})", pid_file.path.display()))?;

    let started = Instant::now();
    let deadline = Duration::from_secs(args.timeout);
    loop {
        if let Some(status) = child.try_wait()? {
            pid_file.remove();
            anyhow::bail!(
                "the server exited during start ({status}); its log ({}):\n{}",
                log_path.display(),
                log_since(&log_path, log_start)
            );
        }
        if let Some(h) = process::probe(cfg, Duration::from_secs(2)).await {
            report(&args, "started", pid, cfg, Some((&h, started.elapsed())));
            return Ok(ExitCode::SUCCESS);
        }
        if started.elapsed() > deadline {
            let _ = process::signal(pid, libc::SIGTERM);
            let _ = tokio::time::timeout(Duration::from_secs(10), async {
                while child.try_wait().ok().flatten().is_none() {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            })
            .await;
            pid_file.remove();
            anyhow::bail!(
                "{} did not answer within {} s, so the server was stopped; its log ({}):\n{}",
                process::health_url(cfg),
                args.timeout,
                log_path.display(),
                log_since(&log_path, log_start)
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn report(args: &Args, what: &str, pid: u32, cfg: &Config, health: Option<(&process::Health, Duration)>) {
    let url = cfg.local_base_url();
    if args.json {
        output::json(&json!({
            "status": what,
            "pid": pid,
            "url": url,
            "health": health.map(|(h, _)| h.status()),
            "startSeconds": health.map(|(_, t)| (t.as_secs_f64() * 10.0).round() / 10.0),
            "pidFile": cfg.pid_file(),
            "logFile": cfg.log_file(),
        }));
        return;
    }
    match health {
        Some((h, t)) => println!("{what} (pid {pid}) in {:.1} s; health: {}", t.as_secs_f64(), h.status()),
        None => println!("{what} (pid {pid})"),
    }
    println!("url:  {url}  (Socket.IO and HTTP)");
    println!("log:  {}", cfg.log_file().display());
}

/// What the server wrote to the log since `offset` (its last 40 lines), for a failed start.
fn log_since(path: &std::path::Path, offset: u64) -> String {
    let bytes = std::fs::read(path).unwrap_or_default();
    let text = String::from_utf8_lossy(bytes.get(offset as usize..).unwrap_or_default());
    let lines: Vec<&str> = text.lines().collect();
    let tail = &lines[lines.len().saturating_sub(40)..];
    if tail.is_empty() {
        "  (nothing)".into()
    } else {
        tail.iter().map(|l| format!("  {l}")).collect::<Vec<_>>().join("\n")
    }
}
