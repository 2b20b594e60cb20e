//! `server start | status | logs | stop` as a user (or a script) drives them, with their exit codes:
//! status 0 running / 3 not running / 4 present but not answering, as systemctl and LSB use them.

mod common;

use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::BIN;

struct Env {
    dir: tempfile::TempDir,
    port: u16,
}

impl Env {
    fn new() -> Env {
        Env { dir: common::tempdir(), port: common::free_port() }
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = common::command(BIN, self.dir.path(), self.dir.path());
        c.args(args)
            .env("REALTIME_PORT", self.port.to_string())
            .env("REALTIME_DATA_DIR", self.dir.path().join("data"))
            .env("REALTIME_LOG_DIR", self.dir.path().join("logs"));
        c
    }

    fn run(&self, args: &[&str]) -> (i32, String, String) {
        common::run(&mut self.cmd(args))
    }

    fn pid_file(&self) -> PathBuf {
        self.dir.path().join("data/nself-realtime.pid")
    }

    fn log_file(&self) -> PathBuf {
        self.dir.path().join("logs/nself-realtime.log")
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        let _ = self.run(&["server", "stop", "--timeout", "5"]);
    }
}

fn json(out: &str) -> serde_json::Value {
    serde_json::from_str(out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

#[test]
fn start_status_logs_stop_round_trip() {
    let e = Env::new();
    let (code, out, _) = e.run(&["server", "status"]);
    assert_eq!(code, 3, "status of a stopped server exits 3:\n{out}");
    assert!(out.contains("not running"));
    let (code, _, err) = e.run(&["server", "logs"]);
    assert_eq!(code, 1, "logs without a log file fail");
    assert!(err.contains("no log file"), "{err}");

    let (code, out, err) = e.run(&["server", "start"]);
    assert_eq!(code, 0, "start: {out}{err}");
    assert!(out.contains("started (pid") && out.contains("health: healthy"), "{out}");
    // Success means /health answers, not merely that a process was forked.
    assert!(common::accepts(e.port), "start returned before the port accepted connections");
    let pid: u32 = std::fs::read_to_string(e.pid_file()).unwrap().trim().parse().unwrap();

    let (code, out, _) = e.run(&["server", "start", "--json"]);
    assert_eq!(code, 0);
    let again = json(&out);
    assert_eq!(again["status"], "already running");
    assert_eq!(again["pid"], pid, "a second start must not start another server");

    let (code, out, _) = e.run(&["server", "status"]);
    assert_eq!(code, 0, "status of a running server exits 0:\n{out}");
    for word in ["is running", &pid.to_string(), "uptime", "connections", "database", "connected"] {
        assert!(out.contains(word), "status lacks {word}:\n{out}");
    }
    let (code, out, _) = e.run(&["server", "status", "--json"]);
    assert_eq!(code, 0);
    let s = json(&out);
    assert_eq!(s["running"], true);
    assert_eq!(s["pid"], pid);
    assert_eq!(s["connections"], 0);
    assert_eq!(s["dependencies"]["database"]["status"], "connected");
    assert!(s["uptime"].is_u64());

    let (code, out, _) = e.run(&["server", "logs", "-n", "1"]);
    assert_eq!(code, 0);
    assert_eq!(out.lines().count(), 1, "-n 1 prints one line:\n{out}");
    let (_, all, _) = e.run(&["server", "logs", "-n", "1000"]);
    assert!(all.contains("listening on"), "{all}");

    // logs -f prints what is written after it started: the shutdown lines.
    // Killed however the test ends (a failed assertion must not leave it following forever).
    struct KillOnDrop(std::process::Child);
    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut follow = KillOnDrop(e.cmd(&["server", "logs", "-f", "-n", "0"]).stdout(Stdio::piped()).spawn().unwrap());
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let mut stdout = follow.0.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 || tx.send(String::from_utf8_lossy(&buf[..n]).into_owned()).is_err() {
                break;
            }
        }
    });
    // It follows once it has read to the end of the file: from then on a line appended shows up. Append probe
    // lines until one does (an event, instead of guessing how long the start takes).
    let mut followed = String::new();
    let ready = std::time::Instant::now() + Duration::from_secs(20);
    for i in 0.. {
        assert!(std::time::Instant::now() < ready, "logs -f printed none of the lines appended for 20 s: {followed:?}");
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new().append(true).open(e.log_file()).unwrap();
        writeln!(f, "follow-probe-{i}").unwrap();
        if let Ok(chunk) = rx.recv_timeout(Duration::from_millis(500)) {
            followed.push_str(&chunk);
        }
        if followed.contains("follow-probe-") {
            break;
        }
    }
    let (code, out, _) = e.run(&["server", "stop"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(&format!("stopped (pid {pid})")), "{out}");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !followed.contains("stopped") {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok(chunk) => followed.push_str(&chunk),
            Err(_) => break,
        }
    }
    drop(follow);
    let _ = reader.join();
    followed.extend(rx.try_iter());
    assert!(followed.contains("shutting down"), "logs -f did not show new lines within 20 s: {followed:?}");
    assert!(!followed.contains("listening on"), "-n 0 shows no old lines: {followed:?}");

    assert!(!common::accepts(e.port), "the port is closed after stop");
    assert!(!e.pid_file().exists(), "stop removes the pid file");
    let (code, out, _) = e.run(&["server", "stop"]);
    assert_eq!((code, out.trim()), (0, "not running"), "stopping a stopped server succeeds");
    let (code, _, _) = e.run(&["server", "status"]);
    assert_eq!(code, 3);
    assert!(e.log_file().exists(), "the log file stays for later reading");
}

#[test]
fn restart_replaces_the_process() {
    let e = Env::new();
    assert_eq!(e.run(&["server", "start"]).0, 0);
    let before: u32 = std::fs::read_to_string(e.pid_file()).unwrap().trim().parse().unwrap();
    let (code, out, err) = e.run(&["server", "restart"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("stopped") && out.contains("started"), "{out}");
    let after: u32 = std::fs::read_to_string(e.pid_file()).unwrap().trim().parse().unwrap();
    assert_ne!(before, after);
    assert_eq!(e.run(&["server", "status"]).0, 0);
}

#[test]
fn a_stale_pid_file_is_not_a_running_server() {
    let e = Env::new();
    std::fs::create_dir_all(e.pid_file().parent().unwrap()).unwrap();
    // A live process that is not nself-realtime (as after a crash and a pid reuse).
    let mut other = Command::new("sleep").arg("30").spawn().unwrap();
    std::fs::write(e.pid_file(), other.id().to_string()).unwrap();
    let (code, out, _) = e.run(&["server", "status"]);
    assert_eq!(code, 3, "{out}");
    assert!(!e.pid_file().exists(), "a stale pid file is removed");
    other.kill().unwrap();
    let _ = other.wait();

    // A dead pid.
    std::fs::write(e.pid_file(), "999999999").unwrap();
    let (code, out, err) = e.run(&["server", "start"]);
    assert_eq!(code, 0, "start over a stale pid file: {out}{err}");
}

#[test]
fn a_server_that_does_not_answer_exits_4() {
    let e = Env::new();
    std::fs::create_dir_all(e.pid_file().parent().unwrap()).unwrap();
    // A process named like the server that never answers HTTP: still starting, or wedged.
    let mut wedged = Command::new("bash").args(["-c", "exec -a nself-realtime-wedged sleep 30"]).spawn().unwrap();
    common::wait_for("the renamed process", Duration::from_secs(5), || {
        std::fs::read(format!("/proc/{}/cmdline", wedged.id()))
            .ok()
            .filter(|c| String::from_utf8_lossy(c).contains("nself-realtime"))
    });
    std::fs::write(e.pid_file(), wedged.id().to_string()).unwrap();
    let (code, out, _) = e.run(&["server", "status"]);
    assert_eq!(code, 4, "{out}");
    assert!(out.contains("not answering"), "{out}");
    let (code, out, _) = e.run(&["server", "stop", "--json"]);
    assert_eq!(code, 0);
    assert_eq!(json(&out)["status"], "stopped");
    let _ = wedged.wait();
}

#[test]
fn a_failed_start_reports_the_log_and_leaves_no_pid_file() {
    // Something that is not our server holds the port (bound first, so no other test can take it meanwhile).
    let squatter = std::net::TcpListener::bind(("0.0.0.0", 0)).unwrap();
    let mut e = Env::new();
    e.port = squatter.local_addr().unwrap().port();
    let (code, _, err) = e.run(&["server", "start", "--timeout", "20"]);
    assert_ne!(code, 0);
    assert!(err.contains("exited during start") || err.contains("did not answer"), "{err}");
    assert!(err.contains("REALTIME_PORT"), "the server's own explanation is shown: {err}");
    assert!(!e.pid_file().exists());
}

#[test]
fn start_refuses_a_configuration_that_cannot_authenticate() {
    let e = Env::new();
    let (code, _, err) = common::run(e.cmd(&["server", "start"]).env_remove("REALTIME_JWT_SECRET"));
    assert_ne!(code, 0);
    assert!(err.contains("REALTIME_JWT_SECRET"), "{err}");
    assert!(!e.pid_file().exists());
}
