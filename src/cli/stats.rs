//! `stats`: from the running server, or from the database when it is not running.

use serde_json::json;

use super::output;
use crate::config::Config;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Account (nself app) to report on.
    #[arg(long, short = 'a')]
    account: Option<String>,
    #[arg(long)]
    json: bool,
}

pub async fn run(args: Args, cfg: &Config) -> anyhow::Result<()> {
    let account = output::account(&args.account);
    let stats = match output::from_server(cfg, &account, "/api/stats").await {
        Some(mut v) => {
            v["source"] = "server".into();
            v
        }
        None => {
            let store = output::store(cfg).await?;
            let open = store.open_connections(Some(&account), 1_000_000).await?;
            let mut users: Vec<_> = open.iter().filter_map(|c| c.user_id.clone()).collect();
            users.sort();
            users.dedup();
            json!({
                "account": account,
                "connections": open.len(),
                "usersOnline": users.len(),
                "rooms": store.count_rooms(&account).await?,
                "messages": store.count_messages(&account).await?,
                "database": store.dialect(),
                "source": "database (server not reachable)",
            })
        }
    };
    if args.json {
        output::json(&stats);
    } else {
        let mut rows = Vec::new();
        for key in [
            "account",
            "connections",
            "usersOnline",
            "rooms",
            "messages",
            "uptime",
            "memoryBytes",
            "database",
            "source",
        ] {
            if let Some(v) = stats.get(key) {
                rows.push(vec![key.to_string(), output::opt(v)]);
            }
        }
        if let Some(p) = stats.get("presence").and_then(|p| p.as_object()) {
            for (k, v) in p {
                rows.push(vec![format!("presence.{k}"), output::opt(v)]);
            }
        }
        output::table(&["Metric", "Value"], &rows);
    }
    Ok(())
}
