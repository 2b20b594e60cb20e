//! `GET /health`: the database (and Redis when configured) with latencies; 503 when the database is down.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use std::sync::Arc;

use crate::app::health::{self, Probe};
use crate::node::Node;

fn probe_json(p: &Probe) -> Value {
    let mut v = json!({
        "status": if p.ok { "connected" } else { "disconnected" },
        "latency": (p.latency_ms * 100.0).round() / 100.0,
    });
    if let Some(e) = &p.error {
        v["error"] = e.clone().into();
    }
    v
}

pub async fn health(State(app): State<Arc<Node>>) -> Response {
    let redis = async {
        match &app.redis {
            Some(client) => Some(health::redis(client).await),
            None => None,
        }
    };
    let (db, redis) = tokio::join!(health::database(&app.store), redis);
    let status = match (&db, &redis) {
        (d, _) if !d.ok => "unhealthy",
        (_, Some(r)) if !r.ok => "degraded",
        _ => "healthy",
    };
    let mut deps = json!({ "database": probe_json(&db) });
    if let Some(r) = &redis {
        deps["redis"] = probe_json(r);
    }
    let cluster = app.cluster.as_ref().map(|c| {
        use std::sync::atomic::Ordering::Relaxed;
        let stats = c.stats();
        json!({
            "node": app.id,
            "nodes": c.nodes(),
            "subscribed": stats.subscribed.load(Relaxed),
            "publishErrors": stats.publish_errors.load(Relaxed),
            "reconnects": stats.reconnects.load(Relaxed),
            "heartbeatError": c.error(),
        })
    });
    // A node whose heartbeat or subscriptions fail is cut off from the others, even when a probe answers.
    let status = match (status, &cluster) {
        ("healthy", Some(c)) if !c["heartbeatError"].is_null() || c["subscribed"] == false => "degraded",
        (s, _) => s,
    };
    let body = json!({
        "status": status,
        "service": "realtime",
        "version": env!("CARGO_PKG_VERSION"),
        "uptime": app.started.elapsed().as_secs(),
        "timestamp": crate::domain::time::iso_ms(crate::store::now_ms()),
        "websocket": { "running": !app.is_stopping(),
                       "connections": app.sessions.len() },
        "dependencies": deps,
    });
    let mut body = body;
    if let Some(c) = cluster {
        body["cluster"] = c;
    }
    let code = if status == "unhealthy" { StatusCode::SERVICE_UNAVAILABLE } else { StatusCode::OK };
    (code, axum::Json(body)).into_response()
}
