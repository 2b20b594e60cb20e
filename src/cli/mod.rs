//! The `nself-realtime` command line: one file per command.

mod config_check;
mod connections;
mod events;
mod init;
mod output;
mod presence;
mod purge;
mod rooms;
mod server;
mod stats;
mod token;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::Config;

#[derive(Parser, Debug)]
#[command(name = "nself-realtime", version, about = "Realtime server of the nself stack (Socket.IO)")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
#[allow(clippy::large_enum_variant)] // parsed once per process; boxing buys nothing
pub enum Command {
    /// Create or migrate the schema, create the default rooms, repair stale state.
    Init(init::Args),
    /// Run, start, stop or inspect the server.
    #[command(subcommand)]
    Server(server::ServerCommand),
    /// Connections, users online, rooms and messages.
    Stats(stats::Args),
    /// List rooms.
    Rooms(rooms::ListArgs),
    /// Create a room.
    CreateRoom(rooms::CreateArgs),
    /// Delete a room with its members and messages.
    DeleteRoom(rooms::DeleteArgs),
    /// Add a member to a room (joins their live sockets too).
    AddMember(rooms::MemberArgs),
    /// Remove a member from a room.
    RemoveMember(rooms::RemoveMemberArgs),
    /// List live connections.
    Connections(connections::Args),
    /// Show recent audit events.
    Events(events::Args),
    /// A user's effective presence and privacy settings, or the counts per status.
    Presence(presence::Args),
    /// Inspect the configuration.
    #[command(subcommand)]
    Config(config_check::ConfigCommand),
    /// Drop every table of the plugin (used by `uninstall.sh --purge`); needs --yes.
    Purge(purge::Args),
    /// Mint a development JWT for a user with REALTIME_JWT_SECRET.
    Token(token::Args),
    /// Load generator: connect, idle, fanout, storm, typing and presence scenarios.
    Bench(nself_realtime_bench::BenchArgs),
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    if !matches!(cli.command, Command::Server(server::ServerCommand::Run) | Command::Bench(_)) {
        // Reports are piped (`| head`, `| grep`): end quietly when the reader goes away, as Unix tools do,
        // instead of panicking on a broken pipe. The server and the load generator keep ignoring SIGPIPE.
        // SAFETY: sets a signal disposition before any other thread exists.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    if let Command::Bench(args) = cli.command {
        nself_realtime_bench::run(args).await?;
        return Ok(ExitCode::SUCCESS);
    }
    let cfg = Config::from_env()?;
    match cli.command {
        Command::Server(cmd) => server::run(cmd, cfg).await,
        Command::Config(cmd) => config_check::run(cmd),
        other => {
            crate::telemetry::init_cli();
            match other {
                Command::Init(a) => init::run(a, &cfg).await,
                Command::Stats(a) => stats::run(a, &cfg).await,
                Command::Rooms(a) => rooms::list(a, &cfg).await,
                Command::CreateRoom(a) => rooms::create(a, &cfg).await,
                Command::DeleteRoom(a) => rooms::delete(a, &cfg).await,
                Command::AddMember(a) => rooms::add_member(a, &cfg).await,
                Command::RemoveMember(a) => rooms::remove_member(a, &cfg).await,
                Command::Connections(a) => connections::run(a, &cfg).await,
                Command::Events(a) => events::run(a, &cfg).await,
                Command::Presence(a) => presence::run(a, &cfg).await,
                Command::Purge(a) => purge::run(a, &cfg).await,
                Command::Token(a) => token::run(a, &cfg),
                Command::Server(_) | Command::Config(_) | Command::Bench(_) => unreachable!(),
            }
            .map(|()| ExitCode::SUCCESS)
        }
    }
}
