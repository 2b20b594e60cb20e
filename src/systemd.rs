//! systemd integration (Type=notify): READY when the port accepts connections, WATCHDOG while healthy,
//! STATUS with the connection count, STOPPING on shutdown. Without NOTIFY_SOCKET every call is a no-op.

use std::time::Duration;

use sd_notify::NotifyState;
use tokio::task::JoinHandle;

use crate::node::Node;

type App = std::sync::Arc<Node>;

fn notify(states: &[NotifyState]) {
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    if let Err(e) = sd_notify::notify(false, states) {
        tracing::warn!(error = %e, "cannot notify systemd");
    }
}

async fn status_line(app: &App) -> String {
    format!("{} connections, {} users online", app.sessions.len(), app.roster.users_online(None).await)
}

pub async fn ready(app: &App) {
    notify(&[NotifyState::Ready, NotifyState::Status(&status_line(app).await)]);
}

pub fn stopping() {
    notify(&[NotifyState::Stopping, NotifyState::Status("shutting down")]);
}

/// Pings the watchdog at half its interval, but only while the event loop keeps time and the database
/// answers: a wedged server stops pinging and systemd restarts it. Redis is left out on purpose: without it
/// the server degrades to local fan-out, and a restart would only drop every socket.
pub fn spawn_watchdog(app: App) -> JoinHandle<()> {
    let mut usec = 0;
    let enabled = sd_notify::watchdog_enabled(false, &mut usec);
    // Outside systemd there is nobody to tell: no loop, and no database probe every few seconds.
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return tokio::spawn(async {});
    }
    tokio::spawn(async move {
        let period = if enabled { Duration::from_micros(usec / 2) } else { Duration::from_secs(15) };
        let period = period.max(Duration::from_millis(50));
        loop {
            // Each wait starts after the previous check, so a slow database probe is not taken for a slow loop.
            let due = tokio::time::Instant::now() + period;
            tokio::time::sleep_until(due).await;
            match unhealthy(&app, due.elapsed(), period).await {
                None => {
                    let status = status_line(&app).await;
                    if enabled {
                        notify(&[NotifyState::Watchdog, NotifyState::Status(&status)]);
                    } else {
                        notify(&[NotifyState::Status(&status)]);
                    }
                }
                Some(why) => {
                    tracing::error!(problem = %why, "withholding the watchdog ping");
                    notify(&[NotifyState::Status(&why)]);
                }
            }
        }
    })
}

/// Why the server should not vouch for itself right now, if it should not.
async fn unhealthy(app: &App, late: Duration, period: Duration) -> Option<String> {
    // Waking a whole period late means the runtime was too busy or blocked to keep time.
    if late > period {
        return Some(format!("event loop stalled: watchdog tick {} ms late", late.as_millis()));
    }
    let probe = crate::app::health::database(&app.store).await;
    (!probe.ok).then(|| format!("database unreachable: {}", probe.error.unwrap_or_default()))
}
