//! `events [-n N]`: the newest audit events.

use serde_json::json;

use super::output;
use crate::config::Config;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// How many events.
    #[arg(short = 'n', long = "limit", default_value_t = 20)]
    limit: i64,
    #[arg(long, short = 'a')]
    account: Option<String>,
    #[arg(long)]
    json: bool,
}

pub async fn run(args: Args, cfg: &Config) -> anyhow::Result<()> {
    let account = output::account(&args.account);
    let limit = args.limit.clamp(1, 1000);
    let events = match output::from_server(cfg, &account, &format!("/api/events?limit={limit}")).await {
        Some(v) => v["events"].clone(),
        None => serde_json::to_value(output::store(cfg).await?.events(Some(&account), limit).await?)?,
    };
    if args.json {
        output::json(&json!({ "events": events }));
        return Ok(());
    }
    let rows: Vec<Vec<String>> = events
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            vec![
                output::time(&e["createdAt"]),
                output::opt(&e["eventType"]),
                output::opt(&e["userId"]),
                output::opt(&e["roomName"]),
                output::opt(&e["socketId"]),
            ]
        })
        .collect();
    output::table(&["Time", "Event", "User", "Room", "Socket"], &rows);
    println!("{} event(s)", rows.len());
    Ok(())
}
