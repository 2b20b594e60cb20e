//! The deployment examples say only what the server understands: deploy/compose.cluster.yml sets variables
//! the server reads (config::VARS), with values it accepts for a cluster (PostgreSQL and Redis), and the
//! Dockerfile builds in stages and runs unprivileged with a health check. Docker itself is not needed.

use std::collections::BTreeMap;

use serde_yaml_ng::Value;

fn read(rel: &str) -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/").to_string() + rel)
        .unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn compose() -> Value {
    let mut v: Value = serde_yaml_ng::from_str(&read("deploy/compose.cluster.yml")).expect("compose file is YAML");
    v.apply_merge().expect("merge keys resolve");
    v
}

/// The realtime nodes: (service name, its environment).
fn nodes(v: &Value) -> Vec<(String, BTreeMap<String, String>)> {
    let services = v["services"].as_mapping().expect("services");
    services
        .iter()
        .filter(|(_, s)| s["build"].is_mapping())
        .map(|(name, s)| {
            let env = s["environment"].as_mapping().unwrap_or_else(|| panic!("{name:?} has an environment mapping"));
            let env = env
                .iter()
                .map(|(k, v)| {
                    let value = match v {
                        Value::String(s) => s.clone(),
                        Value::Number(n) => n.to_string(),
                        Value::Bool(b) => b.to_string(),
                        other => panic!("{k:?} has a value that is not a scalar: {other:?}"),
                    };
                    (k.as_str().expect("variable names are strings").to_string(), value)
                })
                .collect();
            (name.as_str().unwrap_or_default().to_string(), env)
        })
        .collect()
}

#[test]
fn compose_runs_three_nodes_with_variables_the_server_reads() {
    let v = compose();
    let nodes = nodes(&v);
    assert_eq!(nodes.len(), 3, "three realtime nodes: {:?}", nodes.iter().map(|(n, _)| n).collect::<Vec<_>>());
    for (name, env) in &nodes {
        for key in env.keys() {
            assert!(
                nself_realtime::config::VARS.iter().any(|var| var.name == key),
                "{name} sets {key}, which the server does not read (config::VARS)"
            );
        }
        let cfg = nself_realtime::config::Config::from_map(&env.clone().into_iter().collect())
            .unwrap_or_else(|e| panic!("{name}'s configuration is refused: {e}"));
        assert!(cfg.redis_url.is_some(), "{name} is configured for Redis");
        assert_eq!(cfg.database.dialect(), "postgres", "{name} shares PostgreSQL");
    }
    let services = v["services"].as_mapping().unwrap();
    for dep in ["postgres", "redis", "lb"] {
        assert!(services.contains_key(dep), "the example has a {dep} service");
    }
    let nginx = v["configs"]["nginx"]["content"].as_str().expect("the load balancer's configuration");
    assert!(nginx.contains("ip_hash"), "the load balancer keeps a client on one node (sticky sessions)");
    for (name, _) in &nodes {
        assert!(nginx.contains(&format!("server {name}:3101")), "the load balancer sends to {name}");
    }
}

#[test]
fn dockerfile_builds_in_stages_runs_unprivileged_and_checks_health() {
    let d = read("Dockerfile");
    assert!(d.lines().filter(|l| l.starts_with("FROM ")).count() >= 2, "multi-stage build");
    let user = d.lines().find_map(|l| l.strip_prefix("USER ")).expect("a USER line");
    assert_ne!(user.trim(), "root");
    assert!(d.lines().any(|l| l.starts_with("HEALTHCHECK") && d.contains("/health")), "HEALTHCHECK on /health");
    for line in d.lines().filter(|l| l.starts_with("ENV ") || l.starts_with("    ")) {
        for word in line.split_whitespace() {
            if let Some((key, _)) = word.split_once('=') {
                assert!(
                    nself_realtime::config::VARS.iter().any(|v| v.name == key),
                    "the Dockerfile sets {key}, which the server does not read"
                );
            }
        }
    }
}
