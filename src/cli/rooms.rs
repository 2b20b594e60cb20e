//! `rooms`, `create-room`, `delete-room`, `add-member`, `remove-member`.

use reqwest::Method;
use serde_json::{Value, json};

use super::output;
use crate::config::Config;
use crate::domain::names::RoomName;
use crate::domain::policy::ROOM_TYPES;
use crate::domain::policy::parse_visibility;
use crate::store::rooms::NewRoom;

#[derive(clap::Args, Debug)]
pub struct ListArgs {
    #[arg(long, short = 'a')]
    account: Option<String>,
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args, Debug)]
pub struct CreateArgs {
    /// Room name: `general`, `channel:<id>`, `dm:<a>:<b>`, ...
    name: String,
    /// channel, dm, group, group-dm, thread or broadcast.
    #[arg(short = 't', long = "type")]
    kind: Option<String>,
    /// public, private or secret.
    #[arg(short = 'v', long, default_value = "public")]
    visibility: String,
    #[arg(short = 'm', long)]
    max_members: Option<i64>,
    #[arg(long, short = 'a')]
    account: Option<String>,
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args, Debug)]
pub struct DeleteArgs {
    name: String,
    #[arg(long, short = 'a')]
    account: Option<String>,
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args, Debug)]
pub struct MemberArgs {
    room: String,
    user_id: String,
    /// admin, moderator, member or guest.
    #[arg(short = 'r', long, default_value = "member")]
    role: String,
    #[arg(long, short = 'a')]
    account: Option<String>,
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args, Debug)]
pub struct RemoveMemberArgs {
    room: String,
    user_id: String,
    #[arg(long, short = 'a')]
    account: Option<String>,
    #[arg(long)]
    json: bool,
}

pub async fn list(args: ListArgs, cfg: &Config) -> anyhow::Result<()> {
    let account = output::account(&args.account);
    let rooms = match output::from_server(cfg, &account, "/api/rooms").await {
        Some(v) => v["rooms"].clone(),
        None => serde_json::to_value(output::store(cfg).await?.rooms(&account).await?)?,
    };
    if args.json {
        output::json(&json!({ "rooms": rooms }));
        return Ok(());
    }
    let rows: Vec<Vec<String>> = rooms
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            vec![
                output::opt(&r["name"]),
                output::opt(&r["type"]),
                output::opt(&r["visibility"]),
                output::opt(&r["memberCount"]),
                output::opt(&r["maxMembers"]),
                if r["isActive"].as_bool() == Some(false) { "no".into() } else { "yes".into() },
                output::time(&r["createdAt"]),
            ]
        })
        .collect();
    output::table(&["Name", "Type", "Visibility", "Members", "Max", "Active", "Created"], &rows);
    println!("{} room(s)", rows.len());
    Ok(())
}

fn done(json_out: bool, v: Value, text: String) {
    if json_out { output::json(&v) } else { println!("{text}") }
}

pub async fn create(args: CreateArgs, cfg: &Config) -> anyhow::Result<()> {
    let account = output::account(&args.account);
    let room = RoomName::parse(&args.name).map_err(anyhow::Error::msg)?;
    let kind = args.kind.clone().unwrap_or_else(|| room.row_type().to_string());
    anyhow::ensure!(ROOM_TYPES.contains(&kind.as_str()), "--type must be one of {}", ROOM_TYPES.join(", "));
    let visibility = parse_visibility(Some(&args.visibility)).map_err(|e| anyhow::anyhow!(e.message))?;
    let body =
        json!({ "name": room.name, "type": kind, "visibility": visibility.as_str(), "maxMembers": args.max_members });
    let created = match output::to_server(cfg, &account, Method::POST, "/api/rooms", Some(body)).await {
        Some(res) => res?["created"].as_bool().unwrap_or(false),
        None => {
            let store = output::store(cfg).await?;
            let new =
                NewRoom { name: &room.name, kind: &kind, visibility, max_members: args.max_members, created_by: None };
            store.create_room(&account, &new).await?
        }
    };
    let text = if created {
        format!("created {kind} room {} ({})", room.name, visibility.as_str())
    } else {
        format!("room {} already exists", room.name)
    };
    done(args.json, json!({ "name": room.name, "created": created }), text);
    Ok(())
}

pub async fn delete(args: DeleteArgs, cfg: &Config) -> anyhow::Result<()> {
    let account = output::account(&args.account);
    let path = format!("/api/rooms/{}", crate::config::percent_encode(&args.name));
    let deleted = match output::to_server(cfg, &account, Method::DELETE, &path, None).await {
        Some(res) => res.is_ok(),
        None => output::store(cfg).await?.delete_room(&account, &args.name).await?,
    };
    anyhow::ensure!(deleted, "no room named {} in account {account}", args.name);
    done(args.json, json!({ "deleted": args.name }), format!("deleted room {}", args.name));
    Ok(())
}

pub async fn add_member(args: MemberArgs, cfg: &Config) -> anyhow::Result<()> {
    let account = output::account(&args.account);
    anyhow::ensure!(
        crate::domain::policy::ROLES.contains(&args.role.as_str()),
        "--role must be admin, moderator, member or guest"
    );
    let path = format!("/api/rooms/{}/members", crate::config::percent_encode(&args.room));
    let body = json!({ "userId": args.user_id, "role": args.role });
    match output::to_server(cfg, &account, Method::POST, &path, Some(body)).await {
        Some(res) => {
            res?;
        }
        None => {
            let store = output::store(cfg).await?;
            anyhow::ensure!(store.room(&account, &args.room).await?.is_some(), "no room named {}", args.room);
            store.add_member(&account, &args.room, &args.user_id, &args.role).await?;
            store.set_member_flags(&account, &args.room, &args.user_id, Some(&args.role), None, None).await?;
        }
    }
    done(
        args.json,
        json!({ "roomName": args.room, "userId": args.user_id, "role": args.role }),
        format!("added {} to {} as {}", args.user_id, args.room, args.role),
    );
    Ok(())
}

pub async fn remove_member(args: RemoveMemberArgs, cfg: &Config) -> anyhow::Result<()> {
    let account = output::account(&args.account);
    let path = format!(
        "/api/rooms/{}/members/{}",
        crate::config::percent_encode(&args.room),
        crate::config::percent_encode(&args.user_id)
    );
    let removed = match output::to_server(cfg, &account, Method::DELETE, &path, None).await {
        Some(res) => res.is_ok(),
        None => output::store(cfg).await?.remove_member(&account, &args.room, &args.user_id).await?,
    };
    anyhow::ensure!(removed, "{} is not a member of {}", args.user_id, args.room);
    done(
        args.json,
        json!({ "roomName": args.room, "removed": args.user_id }),
        format!("removed {} from {}", args.user_id, args.room),
    );
    Ok(())
}
