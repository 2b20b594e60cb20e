//! The pid file `server start` writes, the liveness checks that keep a stale one (a crashed server, a reused
//! pid, an unreaped zombie) from passing for a running server, and the `/health` probe the controls share.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde_json::Value;

use crate::config::Config;

pub struct PidFile {
    pub path: PathBuf,
}

impl PidFile {
    pub fn of(cfg: &Config) -> PidFile {
        PidFile { path: cfg.pid_file() }
    }

    fn read(&self) -> Option<u32> {
        std::fs::read_to_string(&self.path).ok()?.trim().parse().ok()
    }

    /// Written to a temporary file and renamed, so a reader never sees half a pid.
    pub fn write(&self, pid: u32) -> std::io::Result<()> {
        let tmp = self.path.with_extension("pid.tmp");
        std::fs::write(&tmp, format!("{pid}\n"))?;
        std::fs::rename(tmp, &self.path)
    }

    pub fn remove(&self) {
        let _ = std::fs::remove_file(&self.path);
    }

    /// The pid of the server this file names, if it still runs; a stale file is removed.
    pub fn live_pid(&self) -> Option<u32> {
        let pid = self.read()?;
        if is_alive(pid) {
            Some(pid)
        } else {
            self.remove();
            None
        }
    }

    /// When the file was written, i.e. when the server was started.
    pub fn written_at(&self) -> Option<SystemTime> {
        std::fs::metadata(&self.path).ok()?.modified().ok()
    }
}

/// True when `pid` is a live (not zombie) nself-realtime process.
pub fn is_alive(pid: u32) -> bool {
    let Ok(raw) = i32::try_from(pid) else { return false };
    // SAFETY: kill with signal 0 sends nothing; it only checks that the process exists.
    let exists =
        unsafe { libc::kill(raw, 0) } == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
    if !exists {
        return false;
    }
    let proc_dir = Path::new("/proc").join(pid.to_string());
    if !Path::new("/proc/self").exists() {
        return true; // no procfs: trust kill(2)
    }
    // A zombie still answers kill(2) until its parent reaps it; it is not running.
    let zombie = std::fs::read_to_string(proc_dir.join("stat"))
        .ok()
        .and_then(|s| s.rsplit_once(')').map(|(_, rest)| rest.trim_start().starts_with('Z')))
        .unwrap_or(true);
    // After a crash and a reboot the pid may belong to something else entirely.
    let ours = std::fs::read(proc_dir.join("cmdline"))
        .map(|c| String::from_utf8_lossy(&c).contains("nself-realtime"))
        .unwrap_or(false);
    !zombie && ours
}

pub fn signal(pid: u32, sig: i32) -> std::io::Result<()> {
    let raw = i32::try_from(pid).map_err(|_| std::io::Error::other("pid out of range"))?;
    // SAFETY: plain kill(2) on a pid we checked is ours.
    if unsafe { libc::kill(raw, sig) } == 0 { Ok(()) } else { Err(std::io::Error::last_os_error()) }
}

/// What `/health` said: its HTTP status and body.
pub struct Health {
    pub code: u16,
    pub body: Value,
}

impl Health {
    pub fn status(&self) -> &str {
        self.body["status"].as_str().unwrap_or("unknown")
    }
}

pub fn health_url(cfg: &Config) -> String {
    format!("{}{}", cfg.local_base_url(), cfg.health_path)
}

/// Asks the server on the configured port for its health. None when nothing answers HTTP there.
pub async fn probe(cfg: &Config, timeout: Duration) -> Option<Health> {
    let client = reqwest::Client::builder().timeout(timeout).build().ok()?;
    let res = client.get(health_url(cfg)).send().await.ok()?;
    let code = res.status().as_u16();
    let body = res.json().await.unwrap_or(Value::Null);
    Some(Health { code, body })
}

/// "3h 4m 5s"-style duration for humans.
pub fn human_duration(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!("{m}m {s}s"),
        (0, _, _) => format!("{h}h {m}m"),
        _ => format!("{d}d {h}h"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_naturally() {
        assert_eq!(human_duration(5), "5s");
        assert_eq!(human_duration(65), "1m 5s");
        assert_eq!(human_duration(3 * 3600 + 60), "3h 1m");
        assert_eq!(human_duration(2 * 86_400 + 3600), "2d 1h");
    }

    #[test]
    fn this_process_is_not_taken_for_a_server_unless_named_so() {
        let me = std::process::id();
        let named = std::fs::read("/proc/self/cmdline").map(|c| String::from_utf8_lossy(&c).contains("nself-realtime"));
        if let Ok(named) = named {
            assert_eq!(is_alive(me), named);
        }
        assert!(!is_alive(u32::MAX));
    }
}
