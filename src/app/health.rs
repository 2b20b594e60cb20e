//! Probes of the dependencies (the database, Redis when configured), for `/health` and the systemd watchdog.

use std::time::{Duration, Instant};

use crate::store::Store;

const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// The state of one dependency.
pub struct Probe {
    pub ok: bool,
    pub latency_ms: f64,
    pub error: Option<String>,
}

async fn probe<E: std::fmt::Display>(check: impl std::future::Future<Output = Result<(), E>>) -> Probe {
    let t = Instant::now();
    let ms = |t: Instant| t.elapsed().as_secs_f64() * 1000.0;
    match tokio::time::timeout(PROBE_TIMEOUT, check).await {
        Ok(Ok(())) => Probe { ok: true, latency_ms: ms(t), error: None },
        Ok(Err(e)) => Probe { ok: false, latency_ms: ms(t), error: Some(e.to_string()) },
        Err(_) => Probe { ok: false, latency_ms: ms(t), error: Some("timed out".into()) },
    }
}

pub async fn database(store: &Store) -> Probe {
    probe(async { store.ping().await.map(|_| ()) }).await
}

pub async fn redis(client: &redis::Client) -> Probe {
    probe(async {
        let mut conn = client.get_multiplexed_async_connection().await?;
        redis::cmd("PING").query_async::<String>(&mut conn).await.map(|_| ())
    })
    .await
}
