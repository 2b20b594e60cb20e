//! `server status`: is the server running, since when, how many connections, are its dependencies healthy.
//!
//! Exit codes follow `systemctl status` (and LSB): 0 running, 3 not running, 4 when the process exists but
//! `/health` does not answer (still starting, or wedged). A server started some other way (systemd, a
//! foreground `server run`) counts as running when it answers on the configured port.

use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use serde_json::{Value, json};

use super::process::{self, PidFile};
use crate::cli::output;
use crate::config::Config;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[arg(long)]
    json: bool,
}

pub const RUNNING: u8 = 0;
pub const NOT_RUNNING: u8 = 3;
pub const NOT_ANSWERING: u8 = 4;

pub async fn run(args: Args, cfg: &Config) -> anyhow::Result<ExitCode> {
    let pid_file = PidFile::of(cfg);
    let pid = pid_file.live_pid();
    let health = process::probe(cfg, Duration::from_secs(3)).await;
    let code = match (&health, pid) {
        (Some(_), _) => RUNNING,
        (None, Some(_)) => NOT_ANSWERING,
        (None, None) => NOT_RUNNING,
    };
    let state = match code {
        RUNNING => "running",
        NOT_ANSWERING => "not answering",
        _ => "not running",
    };
    let uptime = health.as_ref().and_then(|h| h.body["uptime"].as_u64()).or_else(|| {
        pid.and(pid_file.written_at()).and_then(|t| SystemTime::now().duration_since(t).ok()).map(|d| d.as_secs())
    });
    let body = health.as_ref().map(|h| &h.body).unwrap_or(&Value::Null);

    if args.json {
        output::json(&json!({
            "state": state,
            "running": code == RUNNING,
            "pid": pid,
            "managedBy": if pid.is_some() { "server start" } else if health.is_some() { "external" } else { "none" },
            "uptime": uptime,
            "url": cfg.local_base_url(),
            "health": health.as_ref().map(|h| h.status()),
            "version": body["version"],
            "connections": body["websocket"]["connections"],
            "dependencies": body["dependencies"],
            "pidFile": cfg.pid_file(),
            "logFile": cfg.log_file(),
        }));
        return Ok(ExitCode::from(code));
    }

    println!("nself-realtime is {state}");
    let mut rows: Vec<(String, String)> = Vec::new();
    match pid {
        Some(pid) => rows.push(("pid".into(), format!("{pid} (started by `server start`)"))),
        None if health.is_some() => {
            rows.push(("pid".into(), "- (not started by `server start`: systemd or a foreground run)".into()))
        }
        None => {}
    }
    if let Some(secs) = uptime {
        rows.push(("uptime".into(), process::human_duration(secs)));
    }
    rows.push((
        "url".into(),
        format!("{}{}", cfg.local_base_url(), if health.is_some() { "" } else { " (no answer)" }),
    ));
    if let Some(h) = &health {
        rows.push(("health".into(), format!("{} (HTTP {})", h.status(), h.code)));
        rows.push(("version".into(), output::opt(&body["version"])));
        rows.push(("connections".into(), output::opt(&body["websocket"]["connections"])));
        if let Some(deps) = body["dependencies"].as_object() {
            for (name, dep) in deps {
                let mut line = format!("{}, {} ms", output::opt(&dep["status"]), output::opt(&dep["latency"]));
                if let Some(e) = dep["error"].as_str() {
                    line.push_str(&format!(" ({e})"));
                }
                rows.push((name.clone(), line));
            }
        }
    }
    if code == NOT_ANSWERING {
        rows.push((
            "note".into(),
            "the process runs but /health does not answer: starting, or stuck (see logs)".into(),
        ));
    }
    rows.push(("log".into(), cfg.log_file().display().to_string()));
    let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    for (k, v) in rows {
        println!("  {k:<width$}  {v}");
    }
    Ok(ExitCode::from(code))
}
