//! Every command that reports something takes `--json` and prints one JSON document, so scripts never
//! scrape the aligned tables meant for people.

mod common;

use clap::CommandFactory;
use nself_realtime::cli::Cli;

/// Commands (and their subcommands) whose output is not a report: a foreground server, raw log lines, the
/// load generator (which prints its own results).
const NO_JSON: &[&str] = &["server run", "server logs", "bench"];

#[test]
fn every_reporting_command_has_a_json_flag() {
    fn walk(cmd: &clap::Command, prefix: &str, missing: &mut Vec<String>) {
        for sub in cmd.get_subcommands().filter(|c| c.get_name() != "help") {
            let path = format!("{prefix}{}", sub.get_name()).trim().to_string();
            if sub.has_subcommands() {
                walk(sub, &format!("{path} "), missing);
            } else if !NO_JSON.iter().any(|n| path == *n || path.starts_with(&format!("{n} ")))
                && !sub.get_arguments().any(|a| a.get_long() == Some("json"))
            {
                missing.push(path);
            }
        }
    }
    let mut missing = Vec::new();
    walk(&Cli::command(), "", &mut missing);
    assert!(missing.is_empty(), "commands without --json: {missing:?}");
}

#[test]
fn json_output_parses_for_each_command() {
    let dir = common::tempdir();
    let run_code = |args: &[&str], expect: i32| -> serde_json::Value {
        let mut c = common::command(common::BIN, dir.path(), dir.path());
        c.args(args)
            .env("REALTIME_DATA_DIR", dir.path().join("data"))
            .env("REALTIME_PORT", common::free_port().to_string());
        let (code, out, err) = common::run(&mut c);
        assert_eq!(code, expect, "{args:?}: {out}{err}");
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?} printed no JSON ({e}): {out}"))
    };
    let run = |args: &[&str]| run_code(args, 0);
    assert_eq!(run(&["init", "--json"])["database"], "sqlite");
    assert_eq!(run(&["create-room", "channel:ops", "--json"])["created"], true);
    assert_eq!(run(&["add-member", "channel:ops", "alice", "-r", "admin", "--json"])["role"], "admin");
    let rooms = run(&["rooms", "--json"]);
    assert!(rooms["rooms"].as_array().unwrap().iter().any(|r| r["name"] == "channel:ops"), "{rooms}");
    assert_eq!(run(&["stats", "--json"])["rooms"], 3);
    assert!(run(&["connections", "--json"])["connections"].is_array());
    assert!(run(&["events", "--json"])["events"].is_array());
    assert_eq!(run(&["remove-member", "channel:ops", "alice", "--json"])["removed"], "alice");
    assert_eq!(run(&["delete-room", "channel:ops", "--json"])["deleted"], "channel:ops");
    assert_eq!(run(&["token", "alice", "--json"])["userId"], "alice");
    assert_eq!(run(&["config", "check", "--json"])["valid"], true);
    assert_eq!(run_code(&["server", "status", "--json"], 3)["running"], false);
    assert_eq!(run(&["server", "stop", "--json"])["status"], "not running");
    assert_eq!(
        run(&["purge", "--yes", "--json"])["dropped"].as_array().unwrap().len(),
        nself_realtime::store::TABLES.len()
    );
}
