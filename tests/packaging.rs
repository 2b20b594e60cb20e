//! The nself plugin scripts, run the way nself runs them: no terminal (stdin closed), a clean environment,
//! a temporary HOME, and the already-built binary handed to install.sh through NSELF_REALTIME_BIN.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{BIN, TestDb};

/// A temporary HOME with the plugin's scripts copied in, as `nself plugin install` lays them out.
struct Plugin {
    home: tempfile::TempDir,
    dir: PathBuf,
    port: u16,
    database_url: Option<String>,
}

impl Plugin {
    fn new() -> Plugin {
        let home = common::tempdir();
        let dir = home.path().join(".nself/plugins/realtime");
        for rel in [
            "plugin.json",
            "install.sh",
            "uninstall.sh",
            "lib/plugin-env.sh",
            "actions/init.sh",
            "actions/server.sh",
            "actions/status.sh",
            "actions/rooms.sh",
            "templates/realtime.service",
            ".env.example",
        ] {
            let to = dir.join(rel);
            std::fs::create_dir_all(to.parent().unwrap()).unwrap();
            std::fs::copy(common::path(rel), &to).unwrap_or_else(|e| panic!("copy {rel}: {e}"));
        }
        Plugin { home, dir, port: common::free_port(), database_url: None }
    }

    fn nself(&self) -> PathBuf {
        self.home.path().join(".nself")
    }

    fn installed_bin(&self) -> PathBuf {
        self.nself().join("bin/nself-realtime")
    }

    fn data_dir(&self) -> PathBuf {
        self.nself().join("data/plugins/realtime")
    }

    /// `script` with the environment nself would give it. NSELF_REALTIME_BIN is set only when asked, so the
    /// actions are also tested finding the installed binary themselves.
    fn script(&self, script: &str, args: &[&str], with_bin: bool) -> Command {
        let mut c = common::command("bash", self.home.path(), self.home.path());
        c.arg(self.dir.join(script)).args(args).env("REALTIME_PORT", self.port.to_string());
        if with_bin {
            c.env("NSELF_REALTIME_BIN", BIN);
        }
        if let Some(url) = &self.database_url {
            c.env("DATABASE_URL", url);
        }
        c
    }

    fn ok(&self, script: &str, args: &[&str], with_bin: bool) -> String {
        let (code, out, err) = common::run(&mut self.script(script, args, with_bin));
        assert_eq!(code, 0, "{script} {args:?} exited {code}\nstdout:\n{out}\nstderr:\n{err}");
        out
    }

    fn sqlite_tables(&self) -> Vec<String> {
        let url = format!("sqlite://{}", self.data_dir().join("realtime.db").display());
        common::block_on(async move {
            use sqlx::Connection;
            let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
            sqlx::query_scalar(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name LIKE 'np_realtime_%' ORDER BY 1",
            )
            .fetch_all(&mut conn)
            .await
            .unwrap()
        })
    }
}

/// A test that fails half-way must not leave its background server running.
impl Drop for Plugin {
    fn drop(&mut self) {
        let mut c = common::command(BIN, self.home.path(), self.home.path());
        c.args(["server", "stop", "--timeout", "5"])
            .env("REALTIME_PORT", self.port.to_string())
            .env("REALTIME_DATA_DIR", self.data_dir())
            .env("REALTIME_LOG_DIR", self.nself().join("logs/plugins/realtime"));
        let _ = common::run(&mut c);
    }
}

fn all_tables() -> Vec<String> {
    let mut t: Vec<String> = nself_realtime::store::TABLES.iter().map(|s| s.to_string()).collect();
    t.sort();
    t
}

fn same_file(a: &Path, b: &Path) -> bool {
    std::fs::read(a).unwrap() == std::fs::read(b).unwrap()
}

#[test]
fn install_is_idempotent_and_prepares_everything() {
    let p = Plugin::new();
    let first = p.ok("install.sh", &[], true);
    assert!(same_file(&p.installed_bin(), Path::new(BIN)), "install.sh did not install the binary it was given");
    assert!(p.data_dir().is_dir() && p.nself().join("logs/plugins/realtime").is_dir());
    assert_eq!(p.sqlite_tables(), all_tables(), "install.sh did not run init");
    assert!(first.contains("general, announcements"), "init should create the default rooms:\n{first}");
    assert!(
        first.contains("Next steps") && first.contains("server start"),
        "install.sh should print next steps:\n{first}"
    );

    let second = p.ok("install.sh", &[], true);
    assert!(second.contains("binary up to date"), "second install should leave the binary alone:\n{second}");
    assert!(second.contains("none (already there)"), "second init should find the rooms in place:\n{second}");
    assert_eq!(p.sqlite_tables(), all_tables());
}

#[test]
fn install_uses_a_binary_already_built() {
    let p = Plugin::new();
    // As after `cargo build --release` in a plugin directory on a host without cargo on PATH.
    let built = p.dir.join("target/release/nself-realtime");
    std::fs::create_dir_all(built.parent().unwrap()).unwrap();
    std::fs::copy(BIN, &built).unwrap();
    p.ok("install.sh", &[], false);
    assert!(same_file(&p.installed_bin(), &built));
}

#[test]
fn install_without_a_binary_says_how_to_get_one() {
    let p = Plugin::new();
    // No Cargo.toml in the copied plugin, no binary given, none installed: nothing to install.
    let (code, _, err) = common::run(&mut p.script("install.sh", &[], false));
    assert_ne!(code, 0);
    assert!(err.contains("NSELF_REALTIME_BIN"), "{err}");
}

#[test]
fn actions_drive_the_installed_binary() {
    let p = Plugin::new();
    p.ok("install.sh", &[], true);
    // From here on the actions find ~/.nself/bin/nself-realtime on their own.
    let out = p.ok("actions/init.sh", &["--json"], false);
    assert!(serde_json::from_str::<serde_json::Value>(&out).is_ok(), "init --json: {out}");

    let (code, out, _) = common::run(&mut p.script("actions/status.sh", &[], false));
    assert_eq!(code, 3, "status before start must exit 3:\n{out}");

    let out = p.ok("actions/server.sh", &[], false);
    assert!(out.contains("started"), "server.sh with no action starts the server:\n{out}");
    assert!(common::accepts(p.port));
    let out = p.ok("actions/status.sh", &["--json"], false);
    let status: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(status["state"], "running");
    assert_eq!(status["health"], "healthy");

    p.ok("actions/rooms.sh", &["create", "ops"], false);
    let out = p.ok("actions/rooms.sh", &["--json"], false);
    let rooms: serde_json::Value = serde_json::from_str(&out).unwrap();
    let names: Vec<&str> = rooms["rooms"].as_array().unwrap().iter().map(|r| r["name"].as_str().unwrap()).collect();
    assert!(names.contains(&"ops") && names.contains(&"general"), "{names:?}");
    let out = p.ok("actions/rooms.sh", &[], false);
    assert!(out.lines().next().unwrap().starts_with("Name"), "rooms.sh lists rooms as a table:\n{out}");
    p.ok("actions/rooms.sh", &["delete", "ops"], false);

    let out = p.ok("actions/server.sh", &["logs", "5"], false);
    assert!(out.contains("listening on"), "server.sh logs N shows the log:\n{out}");
    let out = p.ok("actions/server.sh", &["stop"], false);
    assert!(out.contains("stopped"), "{out}");
    assert!(!common::accepts(p.port));
    let (code, _, _) = common::run(&mut p.script("actions/status.sh", &[], false));
    assert_eq!(code, 3);
}

#[test]
fn uninstall_keeps_the_data_unless_purged() {
    let p = Plugin::new();
    p.ok("install.sh", &[], true);
    p.ok("actions/server.sh", &["start"], false);
    let out = p.ok("uninstall.sh", &[], false);
    assert!(out.contains("kept the data"), "{out}");
    assert!(!common::accepts(p.port), "uninstall.sh must stop the server");
    assert!(!p.installed_bin().exists(), "uninstall.sh removes the installed binary");
    assert_eq!(p.sqlite_tables(), all_tables(), "without --purge the tables stay");

    // Reinstalled, then uninstalled with the environment variable instead of the flag.
    p.ok("install.sh", &[], true);
    let mut c = p.script("uninstall.sh", &[], false);
    c.env("NSELF_REALTIME_PURGE", "1");
    let (code, out, err) = common::run(&mut c);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains(&format!("dropped {} tables", all_tables().len())), "{out}");
    assert!(!p.data_dir().exists(), "purge deletes the data directory");
}

#[test]
fn uninstall_purge_drops_the_tables_on_postgres() {
    let Some(db) = TestDb::new("uninstall_purge_drops_the_tables_on_postgres") else { return };
    let mut p = Plugin::new();
    p.database_url = Some(db.url.clone());
    p.ok("install.sh", &[], true);
    let mut tables = db.tables();
    tables.retain(|t| t.starts_with("np_realtime_"));
    assert_eq!(tables, all_tables(), "install.sh creates the tables in PostgreSQL");
    p.ok("actions/server.sh", &["start"], false);

    let out = p.ok("uninstall.sh", &["--purge"], false);
    assert!(out.contains("dropping the plugin's tables"), "{out}");
    assert!(!common::accepts(p.port), "uninstall.sh must stop the server before dropping tables");
    assert!(db.tables().iter().all(|t| !t.starts_with("np_realtime_") && t != "_sqlx_migrations"), "{:?}", db.tables());
}

#[test]
fn uninstall_refuses_unknown_options_and_never_waits_for_a_terminal() {
    let p = Plugin::new();
    p.ok("install.sh", &[], true);
    let (code, _, err) = common::run(&mut p.script("uninstall.sh", &["--bogus"], false));
    assert_eq!(code, 2, "{err}");
    // No terminal and no flag: keeps the data without asking (stdin is closed, so a prompt would fail).
    let out = p.ok("uninstall.sh", &[], false);
    assert!(out.contains("kept the data") && !out.contains("[y/N]"), "{out}");
}
