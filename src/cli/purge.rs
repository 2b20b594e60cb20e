//! `purge --yes`: drops every table of the plugin. `uninstall.sh --purge` calls it, so the SQL that removes
//! the plugin's data lives in one place ([`crate::store::Store::purge`]) and not in shell.

use std::time::Duration;

use super::output;
use crate::config::Config;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Confirm: the rooms, messages, members, presence and audit events are deleted for good.
    #[arg(long)]
    yes: bool,
    #[arg(long)]
    json: bool,
}

pub async fn run(args: Args, cfg: &Config) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.yes,
        "purge deletes every realtime table ({}) and all their rows; run again with --yes to confirm",
        crate::store::TABLES.join(", ")
    );
    // Dropping tables under a running server would turn every request into an error: stop it first.
    let health = format!("{}{}", cfg.local_base_url(), cfg.health_path);
    let client = reqwest::Client::builder().timeout(Duration::from_secs(2)).build()?;
    if client.get(&health).send().await.is_ok() {
        anyhow::bail!("a server answers on {health}; stop it first (`nself-realtime server stop`)");
    }
    let store = output::store(cfg).await?;
    store.purge().await?;
    store.pool.close().await;
    if args.json {
        output::json(&serde_json::json!({ "database": cfg.database.dialect(), "dropped": crate::store::TABLES }));
    } else {
        println!("dropped {} tables from the {} database", crate::store::TABLES.len(), cfg.database.dialect());
    }
    Ok(())
}
