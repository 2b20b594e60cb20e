//! The cargo-fuzz targets of `fuzz/` run for a bounded time: cargo-fuzz is installed (pinned) into the target
//! directory when missing, the targets are built once with the nightly toolchain, and each runs from a copy of
//! its committed corpus (`fuzz/corpus/<target>`, left untouched) for `REALTIME_TEST_FUZZ_SECONDS` (20 by
//! default; 0 skips the test), two at a time on two cores. A crash, panic, hang or broken invariant fails the
//! test with the input (base64) and the command that reproduces it.
//!
//! The build is a dev build without a sanitizer (`cargo fuzz build --dev -s none`): the targets are safe Rust,
//! where a finding is a panic, which libFuzzer catches without AddressSanitizer, and debug assertions and
//! overflow checks are on; the release build with AddressSanitizer (RELIABILITY.md) compiles the whole server
//! with one codegen unit per crate, far too long for every CI run. Without rustup's nightly toolchain the test
//! is skipped locally and fails under `CI=true`.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The cargo-fuzz release the test installs.
const CARGO_FUZZ: &str = "0.13.2";
/// The toolchain the targets are built with (libFuzzer's instrumentation needs unstable flags).
const TOOLCHAIN: &str = "nightly";
/// How `cargo fuzz build` / `run` is told to build: no optimisation, debug assertions, no sanitizer.
const BUILD_FLAGS: &[&str] = &["--dev", "-s", "none"];
/// Seconds per target unless REALTIME_TEST_FUZZ_SECONDS says otherwise.
const DEFAULT_SECONDS: u64 = 20;

fn seconds() -> Option<u64> {
    let secs = match std::env::var("REALTIME_TEST_FUZZ_SECONDS") {
        Ok(v) => v.trim().parse().unwrap_or_else(|_| {
            panic!("REALTIME_TEST_FUZZ_SECONDS={v:?} is not a number of seconds (per fuzz target; 0 skips)")
        }),
        Err(_) => DEFAULT_SECONDS,
    };
    (secs > 0).then_some(secs)
}

/// `rustup run nightly <program>`, with nothing of the calling `cargo test` (its toolchain, its target dir,
/// its flags) leaking into the build.
fn nightly(program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut c = Command::new("rustup");
    c.args(["run", TOOLCHAIN]).arg(program).current_dir(common::ROOT).stdin(Stdio::null());
    for var in [
        "CARGO",
        "RUSTC",
        "RUSTDOC",
        "RUSTUP_TOOLCHAIN",
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET_DIR",
        "CARGO_MANIFEST_DIR",
    ] {
        c.env_remove(var);
    }
    // Line numbers in a panic's backtrace, without the full debug info of every dependency to link.
    c.env("CARGO_PROFILE_DEV_DEBUG", "line-tables-only");
    c
}

/// Err(reason) when rustup or its nightly toolchain is missing.
fn check_toolchain() -> Result<String, String> {
    match Command::new("rustup").args(["run", TOOLCHAIN, "rustc", "--version"]).output() {
        Err(e) => Err(format!("rustup is not installed ({e}): the fuzz targets need its {TOOLCHAIN} toolchain")),
        Ok(out) if !out.status.success() => Err(format!(
            "rustup has no {TOOLCHAIN} toolchain (install it: `rustup toolchain install {TOOLCHAIN} --profile minimal`): {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Ok(out) => Ok(String::from_utf8_lossy(&out.stdout).trim().to_string()),
    }
}

/// The cargo-fuzz executable under `<target>/tools`, installed from crates.io when missing or of another version.
fn cargo_fuzz() -> PathBuf {
    let root = common::target_dir().join("tools");
    let exe = root.join("bin/cargo-fuzz");
    let version = |exe: &Path| {
        Command::new(exe)
            .arg("--version")
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
    };
    if version(&exe).is_some_and(|v| v.split_whitespace().any(|w| w == CARGO_FUZZ)) {
        return exe;
    }
    let started = Instant::now();
    // Built with the default (stable) toolchain, like any tool.
    let (code, out, err) = common::run(
        Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
            .args(["install", "cargo-fuzz", "--locked", "--force", "--version", CARGO_FUZZ, "--root"])
            .arg(&root)
            .env_remove("CARGO_TARGET_DIR")
            .env_remove("RUSTFLAGS")
            .stdin(Stdio::null()),
    );
    assert!(code == 0, "`cargo install cargo-fuzz --version {CARGO_FUZZ}` into {} failed:\n{out}{err}", root.display());
    common::note(&format!(
        "fuzz: installed cargo-fuzz {CARGO_FUZZ} into {} in {:.1} s",
        root.display(),
        started.elapsed().as_secs_f64()
    ));
    exe
}

/// What one libFuzzer run left.
struct Run {
    name: &'static str,
    /// None when it had to be killed.
    status: Option<std::process::ExitStatus>,
    log: String,
    artifacts: Vec<PathBuf>,
    secs: f64,
}

impl Run {
    fn stat(&self, key: &str) -> Option<u64> {
        self.log.lines().find_map(|l| l.strip_prefix(key)?.trim().strip_prefix(':')?.trim().parse().ok())
    }

    /// `cov: N ft: N` of libFuzzer's last status line.
    fn coverage(&self) -> String {
        let last = self.log.lines().rev().find(|l| l.contains(" cov: ") && l.contains(" ft: ")).unwrap_or("");
        let field = |name: &str| last.split_whitespace().skip_while(|w| *w != name).nth(1).unwrap_or("?").to_string();
        format!("cov {} / ft {}", field("cov:"), field("ft:"))
    }

    fn failed(&self) -> bool {
        !self.artifacts.is_empty() || !self.status.is_some_and(|s| s.success())
    }
}

/// Runs the built target `name` for `secs` seconds from a copy of its committed corpus.
fn run_target(name: &'static str, bin: &Path, secs: u64, work: &Path) -> Run {
    let corpus = work.join(name).join("corpus");
    let artifacts = work.join(name).join("artifacts");
    std::fs::create_dir_all(&corpus).unwrap();
    std::fs::create_dir_all(&artifacts).unwrap();
    let seeds = common::path("fuzz/corpus").join(name);
    for entry in std::fs::read_dir(&seeds).unwrap_or_else(|e| panic!("{}: {e}", seeds.display())) {
        let path = entry.unwrap().path();
        std::fs::copy(&path, corpus.join(path.file_name().unwrap())).unwrap();
    }
    let log_path = work.join(name).join("libfuzzer.log");
    let started = Instant::now();
    let mut child = Command::new(bin)
        .arg(&corpus)
        .arg(format!("-max_total_time={secs}"))
        // An input that takes 10 s is a hang.
        .arg("-timeout=10")
        .arg("-print_final_stats=1")
        .arg(format!("-artifact_prefix={}/", artifacts.display()))
        .env("RUST_BACKTRACE", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log_path).unwrap())
        .spawn()
        .unwrap_or_else(|e| panic!("{}: {e}", bin.display()));
    // libFuzzer stops itself after max_total_time; past this margin it is stuck.
    let deadline = Duration::from_secs(secs + 120);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if started.elapsed() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut found: Vec<PathBuf> = std::fs::read_dir(&artifacts).unwrap().map(|e| e.unwrap().path()).collect();
    found.sort();
    Run {
        name,
        status,
        log: std::fs::read_to_string(&log_path).unwrap_or_default(),
        artifacts: found,
        secs: started.elapsed().as_secs_f64(),
    }
}

fn base64(data: &[u8]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, b)| n | ((*b as u32) << (16 - 8 * i)));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ABC[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// What a failed run tells: libFuzzer's last lines (the panic and its backtrace), each input it saved in
/// base64, and how to reproduce it.
fn describe_failure(run: &Run) -> String {
    let mut text = format!("fuzz target `{}`: ", run.name);
    match run.status {
        None => text.push_str("did not stop on its own (killed)\n"),
        Some(s) => text.push_str(&format!("libFuzzer exited with {s}\n")),
    }
    let lines: Vec<&str> = run.log.lines().collect();
    text.push_str("--- last lines of libFuzzer's output ---\n");
    text.push_str(&lines[lines.len().saturating_sub(80)..].join("\n"));
    text.push('\n');
    for artifact in &run.artifacts {
        let data = std::fs::read(artifact).unwrap_or_default();
        let file = artifact.file_name().unwrap().to_string_lossy();
        text.push_str(&format!(
            "--- input {file} ({} bytes), base64 ---\n{}\n\
             reproduce: echo '<the base64 above>' | base64 -d > {file} && cd fuzz && \
             cargo +{TOOLCHAIN} fuzz run {} {} ../{file}\n\
             (cargo-fuzz is in target/tools/bin); once fixed, add the input to fuzz/corpus/{}/ so \
             `cargo test --lib fuzzing` replays it\n",
            data.len(),
            base64(&data),
            BUILD_FLAGS.join(" "),
            run.name,
            run.name,
        ));
    }
    text
}

#[test]
fn every_fuzz_target_runs_its_time_without_a_finding() {
    const WHAT: &str = "fuzz targets (tests/fuzz.rs)";
    let Some(secs) = seconds() else {
        common::note(&format!("SKIPPED {WHAT}: REALTIME_TEST_FUZZ_SECONDS=0"));
        return;
    };
    let rustc = match check_toolchain() {
        Ok(v) => v,
        Err(reason) => return common::cannot_run(WHAT, &reason),
    };
    let exe = cargo_fuzz();

    // The targets cargo-fuzz knows are the ones src/fuzzing.rs names (and whose corpus the lib tests replay).
    let (code, out, err) = common::run(nightly(&exe).args(["fuzz", "list"]));
    assert_eq!(code, 0, "cargo fuzz list: {out}{err}");
    let mut listed: Vec<&str> = out.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    listed.sort();
    let mut known: Vec<&'static str> = nself_realtime::fuzzing::TARGETS.iter().map(|(name, _)| *name).collect();
    known.sort();
    assert_eq!(listed, known, "fuzz/Cargo.toml's targets differ from src/fuzzing.rs's TARGETS");

    // Build once, into the target dir; cargo-fuzz cannot pass --locked, so the lock file is checked by hand.
    let lock = common::path("fuzz/Cargo.lock");
    let locked = std::fs::read(&lock).expect("fuzz/Cargo.lock");
    let fuzz_target_dir = common::target_dir().join("fuzz");
    let started = Instant::now();
    let (code, out, err) =
        common::run(nightly(&exe).args(["fuzz", "build"]).args(BUILD_FLAGS).arg("--target-dir").arg(&fuzz_target_dir));
    let build_secs = started.elapsed().as_secs_f64();
    if std::fs::read(&lock).ok().as_ref() != Some(&locked) {
        std::fs::write(&lock, &locked).unwrap();
        panic!(
            "fuzz/Cargo.lock is out of date with the server's dependencies (the build changed it; restored): run a \
             cargo command in fuzz/ without --locked (`cd fuzz && cargo tree > /dev/null`) and commit fuzz/Cargo.lock"
        );
    }
    assert_eq!(code, 0, "cargo fuzz build {} failed ({rustc}):\n{out}{err}", BUILD_FLAGS.join(" "));
    common::note(&format!("fuzz: `cargo fuzz build {}` took {build_secs:.1} s ({rustc})", BUILD_FLAGS.join(" ")));
    let bins = fuzz_target_dir.join("x86_64-unknown-linux-gnu/debug");

    // Two at a time: each gets a core of the two.
    let work = common::tempdir();
    let parallel = std::thread::available_parallelism().map_or(1, |n| n.get()).clamp(1, 2);
    let started = Instant::now();
    let mut runs: Vec<Run> = Vec::new();
    for batch in known.chunks(parallel) {
        let handles: Vec<_> = batch
            .iter()
            .map(|name| {
                let bin = bins.join(name);
                let dir = work.path().to_path_buf();
                let name: &'static str = name;
                std::thread::spawn(move || run_target(name, &bin, secs, &dir))
            })
            .collect();
        runs.extend(handles.into_iter().map(|h| h.join().unwrap()));
    }
    for run in &runs {
        common::note(&format!(
            "fuzz: {:<15} {:>9} executions in {:.0} s ({} exec/s), {} new inputs, {}{}",
            run.name,
            run.stat("stat::number_of_executed_units").map_or("?".into(), |n| n.to_string()),
            run.secs,
            run.stat("stat::average_exec_per_sec").map_or("?".into(), |n| n.to_string()),
            run.stat("stat::new_units_added").map_or("?".into(), |n| n.to_string()),
            run.coverage(),
            if run.failed() { ": FAILED" } else { "" },
        ));
    }
    common::note(&format!(
        "fuzz: {} targets × {secs} s, {parallel} at a time: {:.0} s",
        runs.len(),
        started.elapsed().as_secs_f64()
    ));
    let failures: Vec<String> = runs.iter().filter(|r| r.failed()).map(describe_failure).collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    for run in &runs {
        let execs = run.stat("stat::number_of_executed_units").unwrap_or(0);
        assert!(execs > 0, "fuzz target `{}` executed nothing:\n{}", run.name, run.log);
    }
}

#[test]
fn base64_of_an_input_is_standard() {
    assert_eq!(base64(b""), "");
    assert_eq!(base64(b"f"), "Zg==");
    assert_eq!(base64(b"fo"), "Zm8=");
    assert_eq!(base64(b"foo"), "Zm9v");
    assert_eq!(base64(&[0, 0xff, 0x10, 0x80]), "AP8QgA==");
}
