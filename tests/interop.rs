//! Runs the interop suite in `tests/node/` — the official socket.io-client (npm) against the real server
//! binary — as part of `cargo test`. Installs the suite's npm dependencies first when they are missing.
//!
//! Each test file runs in its own `node --test` process (a few at a time), so that the time every file takes is
//! measured and printed, together with its counts of passed, skipped and todo tests. These lines are written to
//! the process's stderr directly, not through `eprintln!` (which the test harness captures), so `cargo test`
//! always shows them.
//!
//! Environment: `REALTIME_TEST_JOBS` (files run at once, default 4), `REALTIME_TEST_FILES` (comma list of
//! substrings of file names: run only the matching files), `REALTIME_TEST_FILE_TIMEOUT` (seconds a file may take, default
//! 900), and the variables of `tests/node/README.md`.
//! `REALTIME_TEST_SERVICES=skip` under `CI=true` fails the run: CI has to prove both databases.

use std::collections::VecDeque;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

fn npm_install(dir: &Path) {
    let marker = dir.join("node_modules/.package-lock.json");
    let lock = dir.join("package-lock.json");
    let fresh = marker.exists()
        && std::fs::metadata(&marker).and_then(|m| m.modified()).ok()
            >= std::fs::metadata(&lock).and_then(|m| m.modified()).ok();
    if fresh {
        return;
    }
    let out = Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
        .current_dir(dir)
        .output()
        .expect("npm is needed for the interop tests (Node 20 and npm); install Node.js");
    assert!(
        out.status.success(),
        "npm ci in {} failed:\n{}{}",
        dir.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// What node's spec reporter says at the end of a run (`ℹ tests 12`, `ℹ skipped 2`, …).
#[derive(Debug, Default, Clone, Copy)]
struct Counts {
    tests: u64,
    pass: u64,
    fail: u64,
    cancelled: u64,
    skipped: u64,
    todo: u64,
}

impl Counts {
    fn parse(stdout: &str) -> Counts {
        let mut c = Counts::default();
        for line in stdout.lines() {
            let Some(rest) = line.strip_prefix("ℹ ") else { continue };
            let mut it = rest.split_whitespace();
            let (Some(key), Some(value)) = (it.next(), it.next().and_then(|v| v.parse::<u64>().ok())) else {
                continue;
            };
            match key {
                "tests" => c.tests = value,
                "pass" => c.pass = value,
                "fail" => c.fail = value,
                "cancelled" => c.cancelled = value,
                "skipped" => c.skipped = value,
                "todo" => c.todo = value,
                _ => {}
            }
        }
        c
    }

    fn add(&mut self, o: Counts) {
        self.tests += o.tests;
        self.pass += o.pass;
        self.fail += o.fail;
        self.cancelled += o.cancelled;
        self.skipped += o.skipped;
        self.todo += o.todo;
    }

    fn line(&self) -> String {
        let mut s = format!("{} tests, {} passed", self.tests, self.pass);
        for (n, what) in
            [(self.fail, "failed"), (self.cancelled, "cancelled"), (self.skipped, "SKIPPED"), (self.todo, "todo")]
        {
            if n > 0 {
                s.push_str(&format!(", {n} {what}"));
            }
        }
        s
    }
}

struct FileRun {
    name: String,
    took: Duration,
    ok: bool,
    counts: Counts,
    output: String,
}

/// Files run one at a time after the others: the cluster starts several servers at once, and the flood, the
/// wire fuzzer and the slow consumer load the machine on purpose while they measure another client's latency.
const ALONE: &[&str] = &["cluster.test.mjs", "flood.test.mjs", "wire-fuzz.test.mjs", "slow-consumer.test.mjs"];

/// Writes a line to the real stderr (visible in `cargo test` output, unlike `eprintln!` inside a test).
fn say(line: &str) {
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "{line}");
    let _ = err.flush();
}

/// Longest a file may run before its node process is killed (a hang must not eat CI's 90 minutes). Each test
/// has its own timeout too (`TEST_TIMEOUT_MS` in harness.mjs); node 20's `--test-timeout` would bound the
/// whole file instead, so it is not used.
fn file_timeout() -> Duration {
    let secs = std::env::var("REALTIME_TEST_FILE_TIMEOUT").ok().and_then(|v| v.parse().ok()).unwrap_or(900);
    Duration::from_secs(secs)
}

fn run_file(dir: &Path, file: &Path) -> FileRun {
    use std::io::Read;
    let name = file.file_name().unwrap().to_string_lossy().into_owned();
    let t0 = Instant::now();
    let mut child = Command::new("node");
    child
        .args(["--test", "--test-reporter=spec"])
        .arg(file)
        .env("REALTIME_BIN", env!("CARGO_BIN_EXE_nself-realtime"))
        .current_dir(dir)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    // Its own process group, so that a kill on timeout takes the servers it started along.
    std::os::unix::process::CommandExt::process_group(&mut child, 0);
    let mut child = child.spawn().expect("node is needed for the interop tests; install Node.js 20");
    let mut out_pipe = child.stdout.take().unwrap();
    let mut err_pipe = child.stderr.take().unwrap();
    let out_reader = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = out_pipe.read_to_end(&mut b);
        b
    });
    let err_reader = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = err_pipe.read_to_end(&mut b);
        b
    });
    let limit = file_timeout();
    let mut timed_out = false;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for node") {
            break status;
        }
        if t0.elapsed() > limit {
            timed_out = true;
            let _ = Command::new("kill").args(["-KILL", &format!("-{}", child.id())]).status();
            let _ = child.kill();
            break child.wait().expect("wait for node");
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let took = t0.elapsed();
    let stdout = String::from_utf8_lossy(&out_reader.join().unwrap_or_default()).into_owned();
    let stderr = String::from_utf8_lossy(&err_reader.join().unwrap_or_default()).into_owned();
    let counts = Counts::parse(&stdout);
    // A file that ran no test at all (a syntax error, a crash at import) is a failure too.
    let ok = !timed_out && status.success() && counts.tests > 0 && counts.fail == 0 && counts.cancelled == 0;
    let note = if timed_out {
        format!("\nKILLED after {} s (REALTIME_TEST_FILE_TIMEOUT)\n", limit.as_secs())
    } else {
        String::new()
    };
    FileRun { name, took, ok, counts, output: format!("{stdout}\n{stderr}{note}") }
}

#[test]
fn socket_io_client_interop_suite() {
    let skip = std::env::var("REALTIME_TEST_SERVICES").as_deref() == Ok("skip");
    assert!(
        !(skip && std::env::var("CI").as_deref() == Ok("true")),
        "REALTIME_TEST_SERVICES=skip is refused under CI=true: CI must run the PostgreSQL variants"
    );
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/node");
    npm_install(&dir);

    let only: Vec<String> = std::env::var("REALTIME_TEST_FILES")
        .map(|v| v.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect())
        .unwrap_or_default();
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.to_string_lossy().ends_with(".test.mjs"))
        .filter(|p| {
            let name = p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            only.is_empty() || only.iter().any(|o| name.contains(o.as_str()))
        })
        .collect();
    assert!(!files.is_empty(), "no interop test file matches REALTIME_TEST_FILES={only:?}");
    // The biggest files first, so a long one does not start last and keep the others waiting.
    files.sort_by_key(|p| std::cmp::Reverse(std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)));

    let jobs: usize = std::env::var("REALTIME_TEST_JOBS").ok().and_then(|v| v.parse().ok()).unwrap_or(4).max(1);
    say(&format!(
        "interop: {} files, {jobs} at a time{}",
        files.len(),
        if skip { " (REALTIME_TEST_SERVICES=skip)" } else { "" }
    ));
    let t0 = Instant::now();
    // The ALONE files run after the others, one at a time: beside three other files their timing bounds would
    // measure the machine's load (and theirs would disturb the others').
    let (alone, files): (Vec<PathBuf>, Vec<PathBuf>) =
        files.into_iter().partition(|p| ALONE.iter().any(|a| p.to_string_lossy().ends_with(a)));
    let queue = Mutex::new(files.into_iter().collect::<VecDeque<_>>());
    let done = Mutex::new(Vec::<FileRun>::new());
    let run_queue = |jobs: usize| {
        std::thread::scope(|s| {
            for _ in 0..jobs {
                s.spawn(|| {
                    loop {
                        let Some(file) = queue.lock().unwrap().pop_front() else { break };
                        let r = run_file(&dir, &file);
                        say(&format!(
                            "interop: {:<30} {:>7.1} s  {}  ({})",
                            r.name,
                            r.took.as_secs_f64(),
                            if r.ok { "ok    " } else { "FAILED" },
                            r.counts.line()
                        ));
                        done.lock().unwrap().push(r);
                    }
                });
            }
        })
    };
    run_queue(jobs);
    queue.lock().unwrap().extend(alone);
    run_queue(1);
    let wall = t0.elapsed();
    let mut runs = done.into_inner().unwrap();
    runs.sort_by_key(|r| std::cmp::Reverse(r.took));

    let mut total = Counts::default();
    say("interop: time per file (longest first)");
    for r in &runs {
        total.add(r.counts);
        say(&format!("interop:   {:>7.1} s  {}", r.took.as_secs_f64(), r.name));
    }
    say(&format!("interop: all files {:.1} s wall; {}", wall.as_secs_f64(), total.line()));
    if total.skipped > 0 {
        say(&format!(
            "interop: NOTE {} tests were SKIPPED{}",
            total.skipped,
            if skip { " because REALTIME_TEST_SERVICES=skip (the PostgreSQL variants did not run)" } else { "" }
        ));
    }

    let failed: Vec<&FileRun> = runs.iter().filter(|r| !r.ok).collect();
    assert!(
        failed.is_empty(),
        "socket.io-client interop suite failed in {}:\n{}",
        failed.iter().map(|r| r.name.as_str()).collect::<Vec<_>>().join(", "),
        failed.iter().map(|r| format!("===== {} =====\n{}", r.name, r.output)).collect::<Vec<_>>().join("\n")
    );
}
