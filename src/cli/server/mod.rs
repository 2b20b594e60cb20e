//! `server run` (foreground, for systemd and development) and the background controls `start`, `stop`,
//! `restart`, `status` and `logs`, which keep a pid file in the data dir and a log file in the log dir.

mod logs;
mod process;
mod start;
mod status;
mod stop;

use std::process::ExitCode;

use clap::Subcommand;

use crate::config::Config;

#[derive(Subcommand, Debug)]
pub enum ServerCommand {
    /// Run in the foreground (logs to stdout, or journald under systemd).
    Run,
    /// Start in the background; returns once /health answers.
    Start(start::Args),
    /// Stop the background server (SIGTERM, then wait for it to finish).
    Stop(stop::Args),
    /// Stop, then start again.
    Restart(start::Args),
    /// Whether the server runs: pid, uptime, connections, dependencies. Exit 0 running, 3 not running.
    Status(status::Args),
    /// Show the log file of the background server.
    Logs(logs::Args),
}

pub async fn run(cmd: ServerCommand, cfg: Config) -> anyhow::Result<ExitCode> {
    if let ServerCommand::Run = cmd {
        crate::telemetry::init(&cfg);
        crate::server::run(cfg).await?;
        return Ok(ExitCode::SUCCESS);
    }
    crate::telemetry::init_cli();
    match cmd {
        ServerCommand::Run => unreachable!(),
        ServerCommand::Start(a) => start::run(a, &cfg).await,
        ServerCommand::Stop(a) => stop::run(a, &cfg).await,
        ServerCommand::Restart(a) => {
            let outcome = stop::stop(&cfg, std::time::Duration::from_secs(a.timeout)).await?;
            if !a.json {
                stop::print(&outcome, a.timeout);
            }
            start::run(a, &cfg).await
        }
        ServerCommand::Status(a) => status::run(a, &cfg).await,
        ServerCommand::Logs(a) => logs::run(a, &cfg).await,
    }
}
