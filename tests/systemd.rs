//! The systemd contract of `server run`, checked with a notify socket the test owns (as systemd's would be):
//! READY=1 only once the port accepts, WATCHDOG=1 while healthy and not while the database is unreachable,
//! STOPPING=1 on SIGTERM. Also: the unit template is valid, and logs stay on stdout unless stderr really is
//! the journal.

mod common;

use std::os::unix::net::UnixDatagram;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{BIN, TestDb};

/// What the server sent to NOTIFY_SOCKET, and whether the port accepted connections when READY=1 arrived.
struct Notice {
    text: String,
    port_accepted: bool,
}

struct NotifySocket {
    _dir: tempfile::TempDir,
    path: std::path::PathBuf,
    rx: mpsc::Receiver<Notice>,
    seen: Vec<Notice>,
}

impl NotifySocket {
    fn bind(port: u16) -> NotifySocket {
        let dir = common::tempdir();
        let path = dir.path().join("notify.sock");
        let socket = UnixDatagram::bind(&path).unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 4096];
            while let Ok(n) = socket.recv(&mut buf) {
                let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                let port_accepted = text.lines().any(|l| l == "READY=1") && common::accepts(port);
                if tx.send(Notice { text, port_accepted }).is_err() {
                    break;
                }
            }
        });
        NotifySocket { _dir: dir, path, rx, seen: Vec::new() }
    }

    /// Waits for a message with this line; returns its index in `seen`.
    fn expect(&mut self, line: &str, timeout: Duration) -> usize {
        let deadline = Instant::now() + timeout;
        if let Some(i) = self.seen.iter().position(|n| n.text.lines().any(|l| l == line)) {
            return i;
        }
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(n) => {
                    let hit = n.text.lines().any(|l| l == line);
                    self.seen.push(n);
                    if hit {
                        return self.seen.len() - 1;
                    }
                }
                Err(_) => panic!("no {line} within {timeout:?}; got {:?}", self.texts()),
            }
        }
    }

    /// Everything received during the next `window`.
    fn collect(&mut self, window: Duration) -> Vec<String> {
        let deadline = Instant::now() + window;
        let mut got = Vec::new();
        while let Ok(n) = self.rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            got.push(n.text.clone());
            self.seen.push(n);
        }
        got
    }

    fn texts(&self) -> Vec<&str> {
        self.seen.iter().map(|n| n.text.as_str()).collect()
    }
}

/// The server process; killed if a test ends (or fails) without stopping it.
struct Server(Option<Child>);

impl Server {
    fn child(&mut self) -> &mut Child {
        self.0.as_mut().unwrap()
    }

    fn sigterm(&mut self) {
        // SAFETY: kill(2) on the child we spawned and have not reaped.
        assert_eq!(unsafe { libc::kill(self.child().id() as i32, libc::SIGTERM) }, 0);
    }

    fn wait_exit(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let child = self.child();
        common::wait_for("the server to exit", timeout, || child.try_wait().unwrap())
    }

    fn output(mut self) -> std::process::Output {
        self.0.take().unwrap().wait_with_output().unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(child) = &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// `server run` as systemd would start it: NOTIFY_SOCKET, and WATCHDOG_USEC with WATCHDOG_PID naming the
/// server's own pid (the shell execs the binary, so `$$` is that pid).
fn spawn_server(
    dir: &std::path::Path,
    port: u16,
    notify: &NotifySocket,
    watchdog_usec: Option<u64>,
    extra: &[(&str, &str)],
) -> Server {
    let mut c: Command = common::command("sh", dir, dir);
    let script = match watchdog_usec {
        Some(usec) => format!("WATCHDOG_USEC={usec} WATCHDOG_PID=$$ exec \"$0\" server run"),
        None => "exec \"$0\" server run".to_string(),
    };
    c.args(["-c", &script, BIN])
        .env("NOTIFY_SOCKET", &notify.path)
        .env("REALTIME_PORT", port.to_string())
        .env("REALTIME_DATA_DIR", dir.join("data"))
        .envs(extra.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    Server(Some(c.spawn().unwrap()))
}

#[test]
fn notify_ready_watchdog_and_stopping_follow_the_database() {
    let Some(db) = TestDb::new("notify_ready_watchdog_and_stopping_follow_the_database") else { return };
    let dir = common::tempdir();
    let port = common::free_port();
    let mut notify = NotifySocket::bind(port);
    // A 1 s watchdog: the server pings every 500 ms.
    let mut server = spawn_server(dir.path(), port, &notify, Some(1_000_000), &[("DATABASE_URL", &db.url)]);

    let ready = notify.expect("READY=1", Duration::from_secs(60));
    assert!(notify.seen[ready].port_accepted, "READY=1 arrived before the port accepted connections");
    assert!(
        notify.seen[ready].text.contains("STATUS="),
        "READY comes with a STATUS line: {:?}",
        notify.seen[ready].text
    );

    // Healthy: pings keep coming, about every 500 ms, each with a status carrying the connection count.
    let window = notify.collect(Duration::from_millis(2600));
    let pings: Vec<&String> = window.iter().filter(|t| t.lines().any(|l| l == "WATCHDOG=1")).collect();
    assert!(pings.len() >= 3, "expected periodic WATCHDOG=1 while healthy, got {window:?}");
    assert!(pings.iter().all(|p| p.contains("STATUS=") && p.contains("connections")), "{pings:?}");

    // Make the database unreachable: refuse new connections and cut the server's existing ones.
    db.admin(&format!(
        "ALTER DATABASE \"{0}\" ALLOW_CONNECTIONS false; \
         SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{0}' AND pid <> pg_backend_pid();",
        db.name
    ));
    // A ping already on its way may still land; after that there must be none.
    std::thread::sleep(Duration::from_millis(700));
    let _ = notify.collect(Duration::ZERO);
    let window = notify.collect(Duration::from_secs(4));
    assert!(
        window.iter().all(|t| !t.lines().any(|l| l == "WATCHDOG=1")),
        "WATCHDOG=1 was sent while the database was unreachable: {window:?}"
    );
    assert!(window.iter().any(|t| t.contains("STATUS=database unreachable")), "the status should say why: {window:?}");
    assert!(server.child().try_wait().unwrap().is_none(), "the server should keep running and let systemd decide");

    // Back again: the pings resume.
    db.admin(&format!("ALTER DATABASE \"{}\" ALLOW_CONNECTIONS true", db.name));
    let window = notify.collect(Duration::from_secs(6));
    assert!(
        window.iter().any(|t| t.lines().any(|l| l == "WATCHDOG=1")),
        "pings should resume with the database: {window:?}"
    );

    server.sigterm();
    notify.expect("STOPPING=1", Duration::from_secs(15));
    let status = server.wait_exit(Duration::from_secs(30));
    assert!(status.success(), "server run exits 0 after SIGTERM, got {status}");
}

#[test]
fn without_a_watchdog_ready_and_stopping_still_come_and_logs_stay_on_stdout() {
    let dir = common::tempdir();
    let port = common::free_port();
    let mut notify = NotifySocket::bind(port);
    // JOURNAL_STREAM inherited from somewhere else (it does not name our stderr) must not send logs to journald.
    let mut server =
        spawn_server(dir.path(), port, &notify, None, &[("JOURNAL_STREAM", "8:12345"), ("LOG_FORMAT", "json")]);
    let ready = notify.expect("READY=1", Duration::from_secs(60));
    assert!(notify.seen[ready].port_accepted);
    let window = notify.collect(Duration::from_millis(1200));
    assert!(window.iter().all(|t| !t.contains("WATCHDOG=1")), "no WATCHDOG_USEC, no pings: {window:?}");
    server.sigterm();
    notify.expect("STOPPING=1", Duration::from_secs(15));
    assert!(server.wait_exit(Duration::from_secs(30)).success());
    let out = server.output();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let first = stdout.lines().next().unwrap_or_default();
    assert!(
        serde_json::from_str::<serde_json::Value>(first).is_ok(),
        "LOG_FORMAT=json logs JSON lines to stdout: {stdout}"
    );
    assert!(stdout.contains("listening on"), "{stdout}");
}

#[test]
fn unit_template_is_valid_and_complete() {
    let text = std::fs::read_to_string(common::path("templates/realtime.service")).unwrap();
    let value = |key: &str| -> Vec<String> {
        text.lines().filter_map(|l| l.trim().strip_prefix(&format!("{key}=")).map(str::to_string)).collect()
    };
    let one = |key: &str| -> String {
        let v = value(key);
        assert_eq!(v.len(), 1, "realtime.service must set {key}= exactly once, found {v:?}");
        v[0].clone()
    };
    assert_eq!(one("Type"), "notify");
    assert!(one("ExecStart").ends_with("nself-realtime server run"));
    assert!(one("WatchdogSec").trim_end_matches('s').parse::<u64>().is_ok_and(|s| s > 0));
    assert_eq!(one("Restart"), "on-failure");
    assert!(!one("EnvironmentFile").is_empty());
    assert_eq!(one("StandardOutput"), "journal");
    assert_eq!(one("NoNewPrivileges"), "true");
    assert_eq!(one("ProtectSystem"), "strict");
    assert!(one("LimitNOFILE").parse::<u64>().is_ok_and(|n| n >= 65_536));
    let data_dir = value("Environment")
        .iter()
        .find_map(|e| e.strip_prefix("REALTIME_DATA_DIR=").map(str::to_string))
        .expect("the unit sets REALTIME_DATA_DIR");
    assert!(one("ReadWritePaths").split_whitespace().any(|p| p == data_dir), "ReadWritePaths must include {data_dir}");
    for section in ["[Unit]", "[Service]", "[Install]"] {
        assert!(text.contains(section), "missing {section}");
    }

    match Command::new("systemd-analyze").arg("--version").output() {
        Ok(_) => {
            // verify checks that ExecStart exists, so point it at the binary under test.
            let dir = common::tempdir();
            let unit = dir.path().join("realtime.service");
            std::fs::write(&unit, text.replace("/usr/local/bin/nself-realtime", BIN)).unwrap();
            let out = Command::new("systemd-analyze").arg("verify").arg(&unit).output().unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            // verify exits 0 even for unknown keys or bad values; it only complains on stderr.
            assert!(out.status.success() && stderr.trim().is_empty(), "systemd-analyze verify: {stderr}");
        }
        Err(_) => eprintln!("systemd-analyze is not installed; checked the unit's keys only"),
    }
}
