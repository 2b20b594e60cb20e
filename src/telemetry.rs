//! Logging: journald with structured fields under systemd (`JOURNAL_STREAM` set), otherwise stdout as text
//! or JSON (`LOG_FORMAT=json`).

use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::{Config, LogFormat};

pub fn init(cfg: &Config) {
    let filter = EnvFilter::try_new(&cfg.log_level).unwrap_or_else(|_| EnvFilter::new("info"));
    let registry = tracing_subscriber::registry().with(filter);
    if std::env::var_os("JOURNAL_STREAM").is_some()
        && let Ok(journald) = tracing_journald::layer()
    {
        let _ = registry.with(journald.with_syslog_identifier("nself-realtime".into())).try_init();
        return;
    }
    let _ = match cfg.log_format {
        LogFormat::Json => registry.with(tracing_subscriber::fmt::layer().json().with_current_span(false)).try_init(),
        LogFormat::Text => registry
            .with(tracing_subscriber::fmt::layer().with_target(false).with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout())))
            .try_init(),
    };
}

/// Logging for CLI commands: warnings only, to stderr, so command output stays clean.
pub fn init_cli() {
    let _ = tracing_subscriber::fmt().with_env_filter(EnvFilter::new("warn")).with_writer(std::io::stderr).try_init();
}
