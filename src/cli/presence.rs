//! `presence [userId]`: a user's effective status and privacy settings, or the account's status counts.

use serde_json::{Value, json};

use super::output;
use crate::config::Config;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The user to show; without it, the counts per status.
    user_id: Option<String>,
    #[arg(long, short = 'a')]
    account: Option<String>,
    #[arg(long)]
    json: bool,
}

pub async fn run(args: Args, cfg: &Config) -> anyhow::Result<()> {
    let account = output::account(&args.account);
    let v = match &args.user_id {
        Some(user) => match output::from_server(
            cfg,
            &account,
            &format!("/api/users/{}/presence", crate::config::percent_encode(user)),
        )
        .await
        {
            Some(v) => v,
            None => from_database(cfg, &account, user).await?,
        },
        None => match output::from_server(cfg, &account, "/api/stats").await {
            Some(v) => json!({ "account": account, "presence": v["presence"], "usersOnline": v["usersOnline"] }),
            None => anyhow::bail!(
                "the server is not reachable (or REALTIME_API_KEY is not set): live presence lives in the running server"
            ),
        },
    };
    if args.json {
        output::json(&v);
        return Ok(());
    }
    let mut rows = Vec::new();
    match &args.user_id {
        Some(_) => {
            for (k, val) in [
                ("userId", &v["userId"]),
                ("status", &v["presence"]["status"]),
                ("customStatus", &v["presence"]["customStatus"]),
                ("lastSeen", &v["presence"]["lastSeen"]),
                ("connected", &v["connected"]),
                ("appearOffline", &v["appearOffline"]),
            ] {
                rows.push(vec![k.to_string(), output::opt(val)]);
            }
            if let Some(s) = v["settings"].as_object() {
                for (k, val) in s {
                    rows.push(vec![format!("settings.{k}"), output::opt(val)]);
                }
            }
        }
        None => {
            if let Some(p) = v["presence"].as_object() {
                for (k, val) in p {
                    rows.push(vec![k.clone(), output::opt(val)]);
                }
            }
        }
    }
    output::table(&["Field", "Value"], &rows);
    Ok(())
}

/// What the database keeps of a user while the server is down: last seen, custom status, settings.
async fn from_database(cfg: &Config, account: &str, user: &str) -> anyhow::Result<Value> {
    let store = output::store(cfg).await?;
    let rows = store.presence_rows(account, &[user.to_string()]).await?;
    let Some((_, r)) = rows.into_iter().next() else {
        return Ok(json!({ "userId": user, "presence": { "status": "offline" }, "connected": false,
                          "source": "database (server not reachable)" }));
    };
    Ok(json!({
        "userId": user,
        "presence": { "status": "offline", "lastSeen": r.last_seen_at.map(crate::domain::time::iso_ms),
                      "customStatus": { "text": r.custom_text, "emoji": r.custom_emoji } },
        "connected": false,
        "settings": { "visibility": r.visibility, "showOnlineStatus": r.show_online_status,
                      "showLastSeen": r.show_last_seen, "allowReadReceipts": r.allow_read_receipts,
                      "invisibleMode": r.invisible_mode },
        "source": "database (server not reachable)",
    }))
}
