//! `GET /health`: the database (and Redis when configured) with latencies; 503 when the database is down.

use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::hub::{App, Hub};

const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// The state of one dependency.
pub struct Probe {
    pub ok: bool,
    pub latency_ms: f64,
    pub error: Option<String>,
}

impl Probe {
    fn json(&self) -> Value {
        let mut v = json!({
            "status": if self.ok { "connected" } else { "disconnected" },
            "latency": (self.latency_ms * 100.0).round() / 100.0,
        });
        if let Some(e) = &self.error {
            v["error"] = e.clone().into();
        }
        v
    }
}

pub async fn probe_database(hub: &Hub) -> Probe {
    let t = Instant::now();
    match tokio::time::timeout(PROBE_TIMEOUT, hub.store.ping()).await {
        Ok(Ok(d)) => Probe { ok: true, latency_ms: d.as_secs_f64() * 1000.0, error: None },
        Ok(Err(e)) => Probe { ok: false, latency_ms: t.elapsed().as_secs_f64() * 1000.0, error: Some(e.to_string()) },
        Err(_) => Probe { ok: false, latency_ms: t.elapsed().as_secs_f64() * 1000.0, error: Some("timed out".into()) },
    }
}

pub async fn probe_redis(hub: &Hub) -> Option<Probe> {
    let client = hub.redis.as_ref()?;
    let t = Instant::now();
    let ping = async {
        let mut conn = client.get_multiplexed_async_connection().await?;
        redis::cmd("PING").query_async::<String>(&mut conn).await
    };
    Some(match tokio::time::timeout(PROBE_TIMEOUT, ping).await {
        Ok(Ok(_)) => Probe { ok: true, latency_ms: t.elapsed().as_secs_f64() * 1000.0, error: None },
        Ok(Err(e)) => Probe { ok: false, latency_ms: t.elapsed().as_secs_f64() * 1000.0, error: Some(e.to_string()) },
        Err(_) => Probe { ok: false, latency_ms: t.elapsed().as_secs_f64() * 1000.0, error: Some("timed out".into()) },
    })
}

pub async fn health(State(app): State<App>) -> Response {
    let (db, redis) = tokio::join!(probe_database(&app), probe_redis(&app));
    let status = match (&db, &redis) {
        (d, _) if !d.ok => "unhealthy",
        (_, Some(r)) if !r.ok => "degraded",
        _ => "healthy",
    };
    let mut deps = json!({ "database": db.json() });
    if let Some(r) = &redis {
        deps["redis"] = r.json();
    }
    let body = json!({
        "status": status,
        "service": "realtime",
        "version": env!("CARGO_PKG_VERSION"),
        "uptime": app.started.elapsed().as_secs(),
        "timestamp": crate::wire::iso(crate::store::now_ms()),
        "websocket": { "running": !app.is_stopping(),
                       "connections": app.connection_count() },
        "dependencies": deps,
    });
    let code = if status == "unhealthy" { StatusCode::SERVICE_UNAVAILABLE } else { StatusCode::OK };
    (code, axum::Json(body)).into_response()
}
