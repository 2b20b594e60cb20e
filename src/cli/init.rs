//! `init`: schema, default rooms, repair.

use crate::config::Config;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

pub async fn run(args: Args, cfg: &Config) -> anyhow::Result<()> {
    eprintln!("opening {} database ...", cfg.database.dialect());
    let store = super::output::store(cfg).await?;
    eprintln!("schema is up to date; creating default rooms and repairing stale state ...");
    let report = crate::server::prepare(&store, None).await?;
    if args.json {
        super::output::json(&serde_json::json!({
            "database": cfg.database.dialect(),
            "roomsCreated": report.rooms_created,
            "staleConnectionsClosed": report.stale_connections,
            "stalePresenceReset": report.stale_presence,
        }));
    } else {
        println!("database:            {}", cfg.database.dialect());
        println!(
            "default rooms made:  {}",
            if report.rooms_created.is_empty() {
                "none (already there)".into()
            } else {
                report.rooms_created.join(", ")
            }
        );
        println!("stale connections:   {} closed", report.stale_connections);
        println!("stale presence:      {} reset", report.stale_presence);
        println!("ready: run `nself-realtime server run` (foreground) or `nself-realtime server start`");
    }
    Ok(())
}
