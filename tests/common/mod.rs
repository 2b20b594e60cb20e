//! Helpers shared by the integration tests: the built binary, a clean environment, free ports, a throwaway
//! PostgreSQL database per test, and waiting with a deadline.
//!
//! Services: PostgreSQL at `REALTIME_TEST_DATABASE_URL` (default `postgres://postgres@127.0.0.1:5432`). When it
//! is unreachable a test fails naming that variable, unless `REALTIME_TEST_SERVICES=skip`.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sqlx::Connection;

pub const BIN: &str = env!("CARGO_BIN_EXE_nself-realtime");
pub const ROOT: &str = env!("CARGO_MANIFEST_DIR");
pub const SECRET: &str = "integration-test-secret";

/// A port nothing listens on (the OS picks it; it is free again once the probe socket closes).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A command with only the environment a test gives it: no inherited DATABASE_URL, NOTIFY_SOCKET or .env
/// surprises. It runs in `cwd` (a temp dir, so no stray `.env` is loaded) with stdin closed: no terminal.
pub fn command(program: impl AsRef<std::ffi::OsStr>, cwd: &Path, home: &Path) -> Command {
    let mut c = Command::new(program);
    c.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", home)
        .env("REALTIME_JWT_SECRET", SECRET)
        .env("LOG_LEVEL", "info")
        .current_dir(cwd)
        .stdin(Stdio::null());
    c
}

/// Runs a command to completion and returns (exit code, stdout, stderr).
pub fn run(c: &mut Command) -> (i32, String, String) {
    let out = c.stdout(Stdio::piped()).stderr(Stdio::piped()).output().expect("command runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// True when `REALTIME_TEST_SERVICES=skip` asks to skip the tests that need PostgreSQL. Under `CI=true` a skip
/// fails the test instead: CI must prove every backend. The notice is written to the process's stderr directly
/// (not through `eprintln!`, which the test harness captures), so it shows in the output of `cargo test`.
pub fn services_skipped(what: &str) -> bool {
    if std::env::var("REALTIME_TEST_SERVICES").as_deref() != Ok("skip") {
        return false;
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{what}: REALTIME_TEST_SERVICES=skip is refused under CI=true (CI must run the PostgreSQL tests)"
    );
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "SKIPPED {what}: REALTIME_TEST_SERVICES=skip (needs PostgreSQL)");
    true
}

pub fn pg_base() -> String {
    std::env::var("REALTIME_TEST_DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
}

/// `base` with its database replaced by `db`.
pub fn with_database(base: &str, db: &str) -> String {
    let (main, query) = match base.split_once('?') {
        Some((m, q)) => (m, format!("?{q}")),
        None => (base, String::new()),
    };
    let scheme_end = main.find("://").map(|i| i + 3).unwrap_or(0);
    let host_end = main[scheme_end..].find('/').map(|i| i + scheme_end).unwrap_or(main.len());
    format!("{}/{db}{query}", &main[..host_end])
}

/// A PostgreSQL database of its own for one test, dropped when the test ends. The server creates it on
/// first start; this only reserves a unique name and cleans up.
pub struct TestDb {
    pub name: String,
    pub url: String,
    admin_url: String,
}

impl TestDb {
    /// None when services are skipped; panics naming REALTIME_TEST_DATABASE_URL when PostgreSQL is unreachable.
    pub fn new(what: &str) -> Option<TestDb> {
        if services_skipped(what) {
            return None;
        }
        let base = pg_base();
        let admin_url = with_database(&base, "postgres");
        let reachable = block_on(async { sqlx::PgConnection::connect(&admin_url).await.map(|_| ()) });
        if let Err(e) = reachable {
            panic!(
                "PostgreSQL is not reachable at REALTIME_TEST_DATABASE_URL={base} ({e}); set REALTIME_TEST_DATABASE_URL \
                 to a reachable server, or REALTIME_TEST_SERVICES=skip to skip the tests that need it"
            );
        }
        let name = format!("rt_test_{}", uuid::Uuid::new_v4().simple());
        Some(TestDb { url: with_database(&base, &name), name, admin_url })
    }

    /// Runs SQL as the admin connection (on the `postgres` database).
    pub fn admin(&self, sql: &str) {
        let url = self.admin_url.clone();
        let sql = sql.to_string();
        block_on(async move {
            let mut conn = sqlx::PgConnection::connect(&url).await.expect("admin connection");
            sqlx::raw_sql(sqlx::AssertSqlSafe(sql)).execute(&mut conn).await.expect("admin SQL");
        });
    }

    /// Names of the tables in this test's database.
    pub fn tables(&self) -> Vec<String> {
        let url = self.url.clone();
        block_on(async move {
            let mut conn = sqlx::PgConnection::connect(&url).await.expect("test database connection");
            sqlx::query_scalar("SELECT tablename::text FROM pg_tables WHERE schemaname = 'public' ORDER BY 1")
                .fetch_all(&mut conn)
                .await
                .expect("list tables")
        })
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let sql = format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.name);
        let url = self.admin_url.clone();
        let _ = std::thread::spawn(move || {
            block_on(async move {
                if let Ok(mut conn) = sqlx::PgConnection::connect(&url).await {
                    let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(sql)).execute(&mut conn).await;
                }
            })
        })
        .join();
    }
}

/// Runs a future to completion on a small runtime of its own (tests here are plain `#[test]`s).
pub fn block_on<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(f)
}

/// Polls `check` until it returns Some or the deadline passes.
pub fn wait_for<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let t = Instant::now();
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(t.elapsed() < timeout, "timed out after {timeout:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// True when something accepts TCP connections on 127.0.0.1:port.
pub fn accepts(port: u16) -> bool {
    std::net::TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(200)).is_ok()
}

/// A fresh temp dir that is removed at the end of the test.
pub fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new().prefix("nself-realtime-test").tempdir().unwrap()
}

pub fn path(p: &str) -> PathBuf {
    Path::new(ROOT).join(p)
}

/// A server process on a free port of 127.0.0.1 with a data dir of its own, killed when dropped.
pub struct Server {
    pub child: std::process::Child,
    pub port: u16,
    pub url: String,
    _dir: tempfile::TempDir,
}

impl Server {
    /// Starts `server run` with `env` on top of the clean environment, and waits until it accepts connections.
    pub fn start(env: &[(&str, &str)]) -> Server {
        let dir = tempdir();
        let port = free_port();
        let child = command(BIN, dir.path(), dir.path())
            .args(["server", "run"])
            .env("REALTIME_PORT", port.to_string())
            .env("REALTIME_HOST", "127.0.0.1")
            .env("REALTIME_DATA_DIR", dir.path().join("data"))
            .env("LOG_LEVEL", "warn")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("server starts");
        wait_for("the server to accept connections", Duration::from_secs(20), || accepts(port).then_some(()));
        Server { child, port, url: format!("http://127.0.0.1:{port}"), _dir: dir }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The target directory the tests were built in (`target/` unless `CARGO_TARGET_DIR` says otherwise): where
/// tests keep tools they install for themselves.
pub fn target_dir() -> PathBuf {
    // BIN is <target>/<profile>/nself-realtime.
    Path::new(BIN).parent().and_then(Path::parent).expect("the binary lives in <target>/<profile>").to_path_buf()
}

/// A test that cannot run here because `reason` (a missing tool): under `CI=true` it fails with the reason, since
/// CI must run it; elsewhere it says `SKIPPED` on the process's stderr (shown by `cargo test` and collected by
/// `.ci/run`) and the caller returns.
pub fn cannot_run(what: &str, reason: &str) {
    assert!(std::env::var("CI").as_deref() != Ok("true"), "{what} cannot run under CI=true: {reason}");
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "SKIPPED {what}: {reason}");
}

/// A line on the process's stderr, shown by `cargo test` even when the test passes (figures for the log).
pub fn note(line: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "{line}");
}
