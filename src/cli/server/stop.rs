//! `server stop`: SIGTERM to the background server, then wait while it closes sockets and flushes pending
//! writes. Stopping a server that is not running succeeds, as `systemctl stop` does.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use serde_json::json;

use super::process::{self, PidFile};
use crate::cli::output;
use crate::config::Config;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Seconds to wait for a clean exit before sending SIGKILL.
    #[arg(long, default_value_t = 30)]
    pub timeout: u64,
    #[arg(long)]
    pub json: bool,
}

pub enum Outcome {
    NotRunning,
    Stopped { pid: u32, took: Duration },
    Killed { pid: u32 },
}

pub async fn run(args: Args, cfg: &Config) -> anyhow::Result<ExitCode> {
    let outcome = stop(cfg, Duration::from_secs(args.timeout)).await?;
    if args.json {
        output::json(&match outcome {
            Outcome::NotRunning => json!({ "status": "not running" }),
            Outcome::Stopped { pid, took } => json!({ "status": "stopped", "pid": pid, "seconds": took.as_secs_f64() }),
            Outcome::Killed { pid } => json!({ "status": "killed", "pid": pid }),
        });
    } else {
        print(&outcome, args.timeout);
    }
    Ok(ExitCode::SUCCESS)
}

pub fn print(outcome: &Outcome, timeout: u64) {
    match outcome {
        Outcome::NotRunning => println!("not running"),
        Outcome::Stopped { pid, took } => println!("stopped (pid {pid}) in {:.1} s", took.as_secs_f64()),
        Outcome::Killed { pid } => {
            eprintln!("warning: pid {pid} did not exit within {timeout} s of SIGTERM; killed it")
        }
    }
}

pub async fn stop(cfg: &Config, timeout: Duration) -> anyhow::Result<Outcome> {
    let pid_file = PidFile::of(cfg);
    let Some(pid) = pid_file.live_pid() else {
        if let Some(h) = process::probe(cfg, Duration::from_secs(2)).await {
            anyhow::bail!(
                "a server answers on {} ({}) but was not started by `server start` (no pid file at {}); \
                 stop it where it runs (e.g. `systemctl stop realtime`)",
                process::health_url(cfg),
                h.status(),
                pid_file.path.display()
            );
        }
        return Ok(Outcome::NotRunning);
    };
    process::signal(pid, libc::SIGTERM).map_err(|e| anyhow::anyhow!("cannot signal pid {pid} ({e})"))?;
    let t = Instant::now();
    while t.elapsed() < timeout {
        if !process::is_alive(pid) {
            pid_file.remove();
            return Ok(Outcome::Stopped { pid, took: t.elapsed() });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = process::signal(pid, libc::SIGKILL);
    pid_file.remove();
    Ok(Outcome::Killed { pid })
}
