//! `GET /health`: the database (and Redis when configured) with latencies; 503 when the database is down.
//!
//! The route has no authentication (load balancers and container health checks call it), so a dependency's
//! own error text — which can name hosts, database users or paths — is shown only to a caller that presents
//! the API key; everyone else hears that the dependency did not answer.

use axum::extract::{FromRequestParts, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use std::sync::Arc;

use crate::app::health::{self, Probe};
use crate::node::Node;
use crate::transport::http::Admin;

/// What a caller without the API key hears of a failed dependency.
const UNDISCLOSED: &str = "did not answer (the cause: this route with the API key, or the server's log)";

fn probe_json(p: &Probe, disclose: bool) -> Value {
    let mut v = json!({
        "status": if p.ok { "connected" } else { "disconnected" },
        "latency": (p.latency_ms * 100.0).round() / 100.0,
    });
    if let Some(e) = &p.error {
        v["error"] = if disclose { e.clone() } else { UNDISCLOSED.to_string() }.into();
    }
    v
}

pub async fn health(State(app): State<Arc<Node>>, mut parts: Parts) -> Response {
    // The same check as the admin API, wrong keys counted against the address alike (otherwise this route
    // would answer unlimited guesses); a refusal only withholds the details.
    // Asked only when a credential came: most callers send none, and that is not worth a log line.
    let presented = parts.headers.contains_key("x-api-key") || parts.headers.contains_key("authorization");
    let disclose = presented && Admin::from_request_parts(&mut parts, &app).await.is_ok();
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
    let mut deps = json!({ "database": probe_json(&db, disclose) });
    if let Some(r) = &redis {
        deps["redis"] = probe_json(r, disclose);
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
            "heartbeatError": c.error().map(|e| if disclose { e } else { UNDISCLOSED.to_string() }),
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
