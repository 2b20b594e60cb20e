//! Logging: journald with structured fields under systemd (`JOURNAL_STREAM` names our stderr), otherwise
//! stdout as text or JSON (`LOG_FORMAT=json`).

use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::{Config, LogFormat};

/// Libraries whose debug and trace lines print what clients send: handshake requests (with `?token=` and the
/// `Authorization` header), `auth` objects, packets. They log at info at most, whatever `LOG_LEVEL` says, so
/// no token or key reaches a log at any level.
const CHATTY: &[&str] = &[
    "socketioxide",
    "socketioxide_core",
    "socketioxide_parser_common",
    "socketioxide_redis",
    "engineioxide",
    "engineioxide_core",
    "hyper",
    "hyper_util",
    "h2",
    "tungstenite",
    "tokio_tungstenite",
    "tower_http",
    "axum",
    "reqwest",
];

/// False for the debug and trace lines of the [`CHATTY`] libraries.
pub fn allowed(target: &str, level: &tracing::Level) -> bool {
    if *level <= tracing::Level::INFO {
        return true;
    }
    let krate = target.split("::").next().unwrap_or(target);
    !CHATTY.contains(&krate)
}

pub fn init(cfg: &Config) {
    let filter = EnvFilter::try_new(&cfg.log_level).unwrap_or_else(|_| EnvFilter::new("info"));
    let cap = tracing_subscriber::filter::filter_fn(|meta| allowed(meta.target(), meta.level()));
    let registry = tracing_subscriber::registry().with(filter).with(cap);
    if connected_to_journal()
        && let Ok(journald) = tracing_journald::layer()
    {
        let _ = registry.with(journald.with_syslog_identifier("nself-realtime".into())).try_init();
        return;
    }
    let _ = match cfg.log_format {
        LogFormat::Json => registry.with(tracing_subscriber::fmt::layer().json().with_current_span(false)).try_init(),
        LogFormat::Text => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_target(false)
                    .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout())),
            )
            .try_init(),
    };
}

/// True when systemd connected our stderr to the journal. `JOURNAL_STREAM` is inherited by children whose
/// output goes elsewhere (a `server start` from a unit, a pipe), so it counts only when its `device:inode`
/// is our stderr's, as systemd.exec(5) recommends.
fn connected_to_journal() -> bool {
    use std::os::fd::AsFd;
    use std::os::unix::fs::MetadataExt;
    let Some(stream) = std::env::var_os("JOURNAL_STREAM") else { return false };
    let Some((dev, ino)) = stream.to_str().and_then(|s| s.split_once(':')) else { return false };
    let Ok(fd) = std::io::stderr().as_fd().try_clone_to_owned() else { return false };
    let Ok(meta) = std::fs::File::from(fd).metadata() else { return false };
    dev.parse() == Ok(meta.dev()) && ino.parse() == Ok(meta.ino())
}

/// Logging for CLI commands: warnings only, to stderr, so command output stays clean.
pub fn init_cli() {
    let _ = tracing_subscriber::fmt().with_env_filter(EnvFilter::new("warn")).with_writer(std::io::stderr).try_init();
}

#[cfg(test)]
mod tests {
    use tracing::Level;

    #[test]
    fn libraries_that_print_requests_stop_at_info() {
        assert!(!super::allowed("engineioxide::service", &Level::DEBUG));
        assert!(!super::allowed("socketioxide", &Level::TRACE));
        assert!(super::allowed("socketioxide::client", &Level::INFO));
        assert!(super::allowed("nself_realtime::auth", &Level::TRACE));
    }
}
