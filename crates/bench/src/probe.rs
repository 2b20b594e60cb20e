//! Samples of the server's memory and CPU: from `/proc/<pid>` when `--server-pid` is given
//! (same machine), else from the Prometheus endpoint (`process_resident_memory_bytes`,
//! `process_cpu_seconds_total`). Also the bench process's own usage.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

/// One sample of the server.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    pub rss_bytes: Option<u64>,
    pub cpu_seconds: Option<f64>,
    pub at: Instant,
}

impl Sample {
    /// CPU used between two samples, in percent of one core.
    pub fn cpu_percent_since(&self, earlier: &Sample) -> Option<f64> {
        let (a, b) = (earlier.cpu_seconds?, self.cpu_seconds?);
        let wall = self.at.duration_since(earlier.at).as_secs_f64();
        (wall > 0.0).then(|| (b - a).max(0.0) / wall * 100.0)
    }
}

enum Source {
    Pid { pid: u32, clk_tck: f64 },
    Metrics { client: reqwest::Client, url: String },
    None,
}

/// Where server samples come from.
pub struct Probe {
    source: Source,
}

impl Probe {
    pub fn new(server_pid: Option<u32>, metrics_url: Option<String>, base_url: &str, disabled: bool) -> Probe {
        let source = if disabled {
            Source::None
        } else if let Some(pid) = server_pid {
            Source::Pid { pid, clk_tck: clock_ticks() }
        } else {
            let url = metrics_url.unwrap_or_else(|| format!("{}/metrics", base_url.trim_end_matches('/')));
            let client = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().unwrap_or_default();
            Source::Metrics { client, url }
        };
        Probe { source }
    }

    pub fn describe(&self) -> String {
        match &self.source {
            Source::Pid { pid, .. } => format!("/proc/{pid}"),
            Source::Metrics { url, .. } => url.clone(),
            Source::None => "none".into(),
        }
    }

    pub async fn sample(&self) -> Sample {
        let at = Instant::now();
        match &self.source {
            Source::Pid { pid, clk_tck } => {
                let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok();
                let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok();
                Sample {
                    rss_bytes: status.as_deref().and_then(|s| status_kb(s, "VmRSS:")).map(|kb| kb * 1024),
                    cpu_seconds: stat.as_deref().and_then(stat_cpu_ticks).map(|t| t as f64 / clk_tck),
                    at,
                }
            }
            Source::Metrics { client, url } => {
                let text = match client.get(url).send().await {
                    Ok(r) if r.status().is_success() => r.text().await.ok(),
                    _ => None,
                };
                let text = text.unwrap_or_default();
                Sample {
                    rss_bytes: prom_value(&text, "process_resident_memory_bytes").map(|v| v as u64),
                    cpu_seconds: prom_value(&text, "process_cpu_seconds_total"),
                    at,
                }
            }
            Source::None => Sample { rss_bytes: None, cpu_seconds: None, at },
        }
    }
}

/// Memory and open files of a process, from /proc/<pid> (same machine).
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcSample {
    /// VmRSS: all resident memory, bytes.
    pub rss: Option<u64>,
    /// RssAnon: the resident heap and stacks, bytes (without the mapped executable and files, whose resident
    /// pages come and go with the page cache).
    pub anon: Option<u64>,
    /// Entries of /proc/<pid>/fd.
    pub fds: Option<u64>,
}

pub fn proc_sample(pid: u32) -> ProcSample {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok();
    let kb = |field: &str| status.as_deref().and_then(|s| status_kb(s, field)).map(|kb| kb * 1024);
    ProcSample {
        rss: kb("VmRSS:"),
        anon: kb("RssAnon:"),
        fds: std::fs::read_dir(format!("/proc/{pid}/fd")).ok().map(|d| d.count() as u64),
    }
}

/// `getconf CLK_TCK` (100 on Linux in practice).
fn clock_ticks() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse::<f64>().ok())
        .filter(|v| *v > 0.0)
        .unwrap_or(100.0)
}

/// A `kB` field of /proc/<pid>/status.
pub fn status_kb(status: &str, field: &str) -> Option<u64> {
    status.lines().find(|l| l.starts_with(field))?.split_whitespace().nth(1)?.parse().ok()
}

/// utime + stime (clock ticks) from /proc/<pid>/stat.
pub fn stat_cpu_ticks(stat: &str) -> Option<u64> {
    // The command name may contain spaces: fields start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest[0] is field 3 (state); utime is field 14, stime field 15.
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// The value of an unlabelled Prometheus sample (or the sum over its labelled series).
pub fn prom_value(text: &str, name: &str) -> Option<f64> {
    let mut found = None;
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        let Some(rest) = line.strip_prefix(name) else { continue };
        let rest = if rest.starts_with('{') {
            match rest.find('}') {
                Some(i) => &rest[i + 1..],
                None => continue,
            }
        } else if rest.starts_with(' ') {
            rest
        } else {
            continue;
        };
        if let Some(v) = rest.split_whitespace().next().and_then(|v| v.parse::<f64>().ok()) {
            found = Some(found.unwrap_or(0.0) + v);
        }
    }
    found
}

/// The bench process's own resources (each worker reports its own).
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct SelfUsage {
    pub rss_bytes: u64,
    /// RSS of the worker before it opened any connection.
    pub start_rss_bytes: u64,
    pub peak_rss_bytes: u64,
    pub cpu_seconds: f64,
    /// CPU used by the worker during the phase just done.
    pub step_cpu_seconds: f64,
}

pub fn self_usage() -> SelfUsage {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    SelfUsage {
        rss_bytes: status_kb(&status, "VmRSS:").unwrap_or(0) * 1024,
        start_rss_bytes: 0,
        peak_rss_bytes: status_kb(&status, "VmHWM:").unwrap_or(0) * 1024,
        // CLK_TCK is 100 on Linux; calling getconf per sample is not worth it.
        cpu_seconds: stat_cpu_ticks(&stat).unwrap_or(0) as f64 / 100.0,
        step_cpu_seconds: 0.0,
    }
}

/// Soft limit of open files of this process, from /proc/self/limits.
pub fn open_files_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..].split_whitespace().next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_prometheus_text() {
        let t = "# HELP process_resident_memory_bytes x\n\
                 # TYPE process_resident_memory_bytes gauge\n\
                 process_resident_memory_bytes 12345678\n\
                 process_cpu_seconds_total{a=\"b\"} 1.5\n\
                 process_cpu_seconds_total_extra 9\n";
        assert_eq!(prom_value(t, "process_resident_memory_bytes"), Some(12345678.0));
        assert_eq!(prom_value(t, "process_cpu_seconds_total"), Some(1.5));
        assert_eq!(prom_value(t, "missing"), None);
    }

    #[test]
    fn parses_proc_files() {
        let stat = "1234 (my (odd) name) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0 1 0";
        assert_eq!(stat_cpu_ticks(stat), Some(300));
        assert_eq!(status_kb("Name:\tx\nVmRSS:\t  2048 kB\n", "VmRSS:"), Some(2048));
        let me = self_usage();
        let p = proc_sample(std::process::id());
        assert!(p.rss.unwrap_or(0) > 0 && p.anon.unwrap_or(0) > 0 && p.fds.unwrap_or(0) >= 3, "{p:?}");
        assert!(me.rss_bytes > 0);
        assert!(open_files_limit().unwrap_or(1) > 0);
    }
}
