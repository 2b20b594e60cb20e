//! systemd integration (Type=notify): READY when the port accepts connections, WATCHDOG while healthy,
//! STATUS with the connection count, STOPPING on shutdown. Without NOTIFY_SOCKET every call is a no-op.

use std::time::Duration;

use sd_notify::NotifyState;
use tokio::task::JoinHandle;

use crate::hub::App;

fn notify(states: &[NotifyState]) {
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    if let Err(e) = sd_notify::notify(false, states) {
        tracing::warn!(error = %e, "cannot notify systemd");
    }
}

fn status_line(app: &App) -> String {
    format!("{} connections, {} users online", app.connection_count(), app.users_online(None))
}

pub fn ready(app: &App) {
    notify(&[NotifyState::Ready, NotifyState::Status(&status_line(app))]);
}

pub fn stopping() {
    notify(&[NotifyState::Stopping, NotifyState::Status("shutting down")]);
}

/// Pings the watchdog at half its interval, but only while the event loop turns and the database answers:
/// a wedged server stops pinging and systemd restarts it.
pub fn spawn_watchdog(app: App) -> JoinHandle<()> {
    let mut usec = 0;
    let enabled = sd_notify::watchdog_enabled(false, &mut usec);
    tokio::spawn(async move {
        let period = if enabled { Duration::from_micros(usec / 2) } else { Duration::from_secs(15) };
        let mut tick = tokio::time::interval(period.max(Duration::from_millis(50)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let probe = crate::http::probe_database(&app).await;
            let status = status_line(&app);
            if probe.ok {
                if enabled {
                    notify(&[NotifyState::Watchdog, NotifyState::Status(&status)]);
                } else {
                    notify(&[NotifyState::Status(&status)]);
                }
            } else {
                tracing::error!(error = ?probe.error, "database unreachable; withholding the watchdog ping");
                notify(&[NotifyState::Status(&format!("database unreachable: {}", probe.error.unwrap_or_default()))]);
            }
        }
    })
}
