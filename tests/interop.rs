//! Runs the interop suite in `tests/node/` — the official socket.io-client (npm) against the real server
//! binary — as part of `cargo test`. Installs the suite's npm dependencies first when they are missing.

use std::path::Path;
use std::process::Command;

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

#[test]
fn socket_io_client_interop_suite() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/node");
    npm_install(&dir);
    let out = Command::new("node")
        .args(["--test", "--test-concurrency=4", "--test-timeout=90000", "--test-reporter=spec"])
        .args(
            std::fs::read_dir(&dir)
                .unwrap()
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.to_string_lossy().ends_with(".test.mjs")),
        )
        .env("REALTIME_BIN", env!("CARGO_BIN_EXE_nself-realtime"))
        .current_dir(&dir)
        .output()
        .expect("node is needed for the interop tests; install Node.js 20");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Summary lines, so `cargo test -- --nocapture` shows the suite's size.
    for line in stdout.lines().filter(|l| l.starts_with("ℹ ")) {
        eprintln!("node: {line}");
    }
    assert!(out.status.success(), "socket.io-client interop suite failed:\n{stdout}\n{stderr}");
}
