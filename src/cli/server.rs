//! `server run` (foreground, for systemd and development) and the background controls.

use std::process::ExitCode;

use clap::Subcommand;

use crate::config::Config;

#[derive(Subcommand, Debug)]
pub enum ServerCommand {
    /// Run in the foreground (logs to stdout, or journald under systemd).
    Run,
}

pub async fn run(cmd: ServerCommand, cfg: Config) -> anyhow::Result<ExitCode> {
    match cmd {
        ServerCommand::Run => {
            crate::telemetry::init(&cfg);
            crate::server::run(cfg).await?;
            Ok(ExitCode::SUCCESS)
        }
    }
}
