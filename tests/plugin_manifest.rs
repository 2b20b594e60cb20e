//! plugin.json must tell the truth about the code: the tables the migrations create, the variables the
//! configuration reads, the commands the binary has, the routes the server serves, the actions on disk. When
//! one of them changes, these tests fail until plugin.json says so too.

mod common;

use std::collections::BTreeSet;

use clap::CommandFactory;
use nself_realtime::cli::Cli;
use serde_json::{Value, json};

fn manifest() -> Value {
    let text = std::fs::read_to_string(common::path("plugin.json")).expect("plugin.json exists");
    serde_json::from_str(&text).expect("plugin.json is valid JSON")
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array().expect("an array").iter().map(|s| s.as_str().expect("a string").to_string()).collect()
}

#[test]
fn identity_version_and_port() {
    let m = manifest();
    assert_eq!(m["name"], "realtime");
    assert_eq!(m["version"], env!("CARGO_PKG_VERSION"), "plugin.json version must match Cargo.toml");
    assert!(m["description"].as_str().is_some_and(|d| !d.is_empty()));
    assert!(m["category"].is_string() && m["tags"].is_array());
    let default_port: u16 =
        nself_realtime::config::VARS.iter().find(|v| v.name == "REALTIME_PORT").unwrap().default.parse().unwrap();
    assert_eq!(default_port, 3101);
    assert_eq!(m["port"], default_port);
    let imp = &m["implementation"];
    assert_eq!(imp["language"], "rust");
    assert_eq!(imp["cliName"], "nself-realtime");
    assert_eq!(imp["cliName"], Cli::command().get_name());
    assert_eq!(imp["defaultPort"], default_port);
    assert_eq!(m["multiApp"]["supported"], true);
    assert_eq!(m["multiApp"]["isolationColumn"], "source_account_id");
    assert_eq!(m["multiApp"]["defaultValue"], nself_realtime::domain::names::DEFAULT_ACCOUNT);
}

#[test]
fn tables_are_the_tables_the_migrations_create() {
    let listed = strings(&manifest()["tables"]);
    let code: Vec<String> = nself_realtime::store::TABLES.iter().map(|s| s.to_string()).collect();
    assert_eq!(sorted(&listed), sorted(&code), "plugin.json tables != store::TABLES");
    assert_eq!(listed.len(), sorted(&listed).len(), "plugin.json lists a table twice");
    for dialect in ["postgres", "sqlite"] {
        let created = created_tables(dialect);
        assert_eq!(
            created.keys().cloned().collect::<BTreeSet<_>>(),
            sorted(&code),
            "schema/{dialect} creates other tables than store::TABLES"
        );
        for (table, body) in &created {
            assert!(
                body.contains("source_account_id"),
                "schema/{dialect}: {table} lacks the isolation column source_account_id"
            );
        }
    }
}

/// Table name -> its CREATE TABLE body, after replaying every migration of a dialect (CREATE adds, DROP removes).
fn created_tables(dialect: &str) -> std::collections::BTreeMap<String, String> {
    let mut files: Vec<_> = std::fs::read_dir(common::path(&format!("schema/{dialect}")))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "sql"))
        .collect();
    files.sort();
    let mut tables = std::collections::BTreeMap::new();
    for file in files {
        let sql = std::fs::read_to_string(&file).unwrap();
        for stmt in sql.split(';') {
            let words: Vec<String> = stmt
                .lines()
                .map(|l| l.split("--").next().unwrap())
                .collect::<Vec<_>>()
                .join(" ")
                .split_whitespace()
                .map(str::to_string)
                .collect();
            let upper: Vec<String> = words.iter().map(|w| w.to_ascii_uppercase()).collect();
            let name_after = |n: usize| {
                let skip = if upper.get(n).map(String::as_str) == Some("IF") { n + 3 } else { n };
                words.get(skip).map(|w| w.trim_matches('"').split('(').next().unwrap().to_string())
            };
            if upper.len() > 2 && upper[0] == "CREATE" && upper[1] == "TABLE" {
                tables.insert(name_after(2).unwrap(), stmt.to_string());
            } else if upper.len() > 2 && upper[0] == "DROP" && upper[1] == "TABLE" {
                tables.remove(&name_after(2).unwrap());
            }
        }
    }
    tables
}

#[test]
fn env_vars_are_the_variables_the_code_reads() {
    let listed = manifest()["envVars"].as_array().expect("envVars is an array").clone();
    let expected: Vec<Value> = nself_realtime::config::VARS
        .iter()
        .map(|v| json!({"name": v.name, "default": v.default, "secret": v.secret, "required": false, "description": v.help}))
        .collect();
    let names = |list: &[Value]| list.iter().map(|v| v["name"].as_str().unwrap_or("?").to_string()).collect::<Vec<_>>();
    let hint = expected.iter().map(|v| format!("    {v}")).collect::<Vec<_>>().join(",\n");
    assert_eq!(
        names(&listed),
        names(&expected),
        "plugin.json envVars names differ from config::VARS; expected:\n{hint}"
    );
    for (got, want) in listed.iter().zip(&expected) {
        for key in ["default", "secret", "description"] {
            assert_eq!(
                got[key], want[key],
                "plugin.json envVars {}.{key} differs from config::VARS; expected:\n{hint}",
                want["name"]
            );
        }
    }
}

#[test]
fn cli_commands_are_the_real_subcommands() {
    fn tree(cmd: &clap::Command) -> Vec<Value> {
        cmd.get_subcommands()
            .filter(|c| c.get_name() != "help")
            .map(|c| {
                let mut v = json!({"name": c.get_name(), "description": c.get_about().map(|a| a.to_string()).unwrap_or_default()});
                let subs = tree(c);
                if !subs.is_empty() {
                    v["subcommands"] = Value::Array(subs);
                }
                v
            })
            .collect()
    }
    let expected = tree(&Cli::command());
    let listed = manifest()["cliCommands"].clone();
    let hint = expected.iter().map(|v| format!("    {v}")).collect::<Vec<_>>().join(",\n");
    assert_eq!(
        listed,
        Value::Array(expected),
        "plugin.json cliCommands differ from the binary's commands; expected:\n{hint}"
    );
}

#[test]
fn api_endpoints_are_the_routes_that_exist() {
    let listed: Vec<String> = manifest()["apiEndpoints"]
        .as_array()
        .expect("apiEndpoints is an array")
        .iter()
        .map(|e| {
            assert!(e["description"].as_str().is_some_and(|d| !d.is_empty()), "{e} has no description");
            format!("{} {}", e["method"].as_str().unwrap(), e["path"].as_str().unwrap())
        })
        .collect();
    let routes: Vec<String> = nself_realtime::transport::http::ROUTES.iter().map(|s| s.to_string()).collect();
    let missing: Vec<_> = routes.iter().filter(|r| !listed.contains(r)).collect();
    let extra: Vec<_> = listed.iter().filter(|r| !routes.contains(r)).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "plugin.json apiEndpoints: missing {missing:?}, not served {extra:?}"
    );
    assert_eq!(listed.len(), routes.len(), "plugin.json lists an endpoint twice");
}

#[test]
fn hooks_and_actions_exist_and_are_executable() {
    use std::os::unix::fs::PermissionsExt;
    let m = manifest();
    let executable = |rel: &str| {
        let meta = std::fs::metadata(common::path(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"));
        assert!(meta.permissions().mode() & 0o111 != 0, "{rel} is not executable");
    };
    assert_eq!(m["hooks"]["postInstall"], "install.sh");
    assert_eq!(m["hooks"]["preUninstall"], "uninstall.sh");
    executable("install.sh");
    executable("uninstall.sh");
    let actions: BTreeSet<String> = m["actions"].as_object().expect("actions is an object").keys().cloned().collect();
    let on_disk: BTreeSet<String> = std::fs::read_dir(common::path("actions"))
        .unwrap()
        .filter_map(|e| e.unwrap().file_name().to_str()?.strip_suffix(".sh").map(str::to_string))
        .collect();
    assert_eq!(actions, on_disk, "plugin.json actions != actions/*.sh");
    for a in &on_disk {
        executable(&format!("actions/{a}.sh"));
    }
    for required in ["init", "server", "status", "rooms"] {
        assert!(on_disk.contains(required), "actions/{required}.sh is missing");
    }
    assert!(common::path(m["implementation"]["systemdUnit"].as_str().unwrap()).is_file());
}

fn sorted(v: &[String]) -> BTreeSet<String> {
    v.iter().cloned().collect()
}
