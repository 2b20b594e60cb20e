//! `token <userId>`: a development JWT signed with REALTIME_JWT_SECRET.

use crate::config::Config;

#[derive(clap::Args, Debug)]
pub struct Args {
    user_id: String,
    /// Display name claim.
    #[arg(long)]
    name: Option<String>,
    /// Lifetime in seconds.
    #[arg(long, default_value_t = 86_400)]
    ttl: i64,
    /// Print `{token, userId, expiresAt}` as JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args, cfg: &Config) -> anyhow::Result<()> {
    let secret = cfg
        .jwt_secret
        .as_deref()
        .ok_or_else(|| anyhow::anyhow!("REALTIME_JWT_SECRET is not set; set it to mint tokens"))?;
    eprintln!("warning: this token is for development; production tokens come from your auth service");
    let token = crate::auth::mint_hs256(secret, &args.user_id, args.name.as_deref(), args.ttl)?;
    if args.json {
        let expires = crate::domain::time::iso_ms(crate::store::now_ms() + args.ttl * 1000);
        super::output::json(&serde_json::json!({ "token": token, "userId": args.user_id, "expiresAt": expires }));
    } else {
        println!("{token}");
    }
    Ok(())
}
