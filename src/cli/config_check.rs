//! `config check`: the effective configuration, secrets masked; non-zero exit when a value is invalid.

use std::process::ExitCode;

use clap::Subcommand;

use super::output;
use crate::config::{Config, describe};

#[derive(Subcommand, Debug)]
pub enum ConfigCommand {
    /// Print the effective configuration (secrets masked) and validate it.
    Check {
        #[arg(long)]
        json: bool,
    },
}

pub fn run(cmd: ConfigCommand) -> anyhow::Result<ExitCode> {
    let ConfigCommand::Check { json } = cmd;
    let _ = dotenvy::dotenv();
    let rows = describe(&|n| std::env::var(n).ok());
    let result = Config::from_env();
    let problems: Vec<String> = match &result {
        Err(e) => e.0.clone(),
        Ok(cfg) => cfg.auth_problem().into_iter().collect(),
    };
    if json {
        let vars: serde_json::Map<String, serde_json::Value> =
            rows.iter().map(|(k, v, o)| (k.to_string(), serde_json::json!({"value": v, "source": o}))).collect();
        output::json(&serde_json::json!({
            "valid": problems.is_empty(),
            "database": result.as_ref().ok().map(|c| c.database.dialect()),
            "problems": problems,
            "variables": vars,
        }));
    } else {
        let table: Vec<Vec<String>> =
            rows.iter().map(|(k, v, o)| vec![k.to_string(), v.clone(), o.to_string()]).collect();
        output::table(&["Variable", "Value", "Source"], &table);
        if let Ok(cfg) = &result {
            println!("\nstorage: {}", cfg.database.dialect());
        }
        for p in &problems {
            eprintln!("problem: {p}");
        }
        if problems.is_empty() {
            println!("configuration is valid");
        }
    }
    Ok(if problems.is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}
