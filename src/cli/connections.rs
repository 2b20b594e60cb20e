//! `connections`: live sockets, from the running server or (when it is down) the connections table.

use serde_json::json;

use super::output;
use crate::config::Config;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[arg(long, short = 'a')]
    account: Option<String>,
    /// Most rows to show.
    #[arg(short = 'n', long, default_value_t = 100)]
    limit: usize,
    #[arg(long)]
    json: bool,
}

pub async fn run(args: Args, cfg: &Config) -> anyhow::Result<()> {
    let account = output::account(&args.account);
    let mut list = match output::from_server(cfg, &account, "/api/connections").await {
        Some(v) => v["connections"].as_array().cloned().unwrap_or_default(),
        None => {
            let rows = output::store(cfg).await?.open_connections(Some(&account), args.limit as i64).await?;
            rows.into_iter()
                .map(|c| {
                    json!({"socketId": c.socket_id, "userId": c.user_id, "ip": c.ip, "transport": c.transport,
                           "deviceType": c.device_type, "deviceOs": c.device_os, "deviceBrowser": c.device_browser,
                           "connectedAt": crate::domain::time::iso_ms(c.connected_at), "nodeId": c.node_id})
                })
                .collect()
        }
    };
    list.truncate(args.limit);
    if args.json {
        output::json(&json!({ "connections": list, "total": list.len() }));
        return Ok(());
    }
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|c| {
            vec![
                output::opt(&c["socketId"]),
                output::opt(&c["userId"]),
                output::opt(&c["transport"]),
                output::opt(&c["ip"]),
                output::opt(&c["deviceType"]),
                output::opt(&c["connectedAt"]),
            ]
        })
        .collect();
    output::table(&["Socket ID", "User ID", "Transport", "IP", "Device", "Connected"], &rows);
    println!("{} connection(s)", rows.len());
    Ok(())
}
