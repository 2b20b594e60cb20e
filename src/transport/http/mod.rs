//! HTTP on the Socket.IO port: health, metrics, broadcast, the admin API, and the routes of clients
//! without a socket.

mod admin;
mod broadcast;
mod client;
mod dashboard;
pub mod engine;
pub mod health;
pub mod polls;
pub mod serve;

use axum::Router;
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::config::Cors;
use crate::domain::names::normalize_account;
use crate::error::{AppError, ErrorCode};
use crate::node::Node;

pub(crate) type App = std::sync::Arc<Node>;

/// The routes that exist (plugin.json's `apiEndpoints` is compared with this list by a test).
pub const ROUTES: &[&str] = &[
    "GET /health",
    "GET /metrics",
    "GET /openapi.json",
    "GET /dashboard",
    "GET /dashboard/stream",
    "POST /api/broadcast",
    "POST /api/broadcast/batch",
    "GET /api/stats",
    "GET /api/rooms",
    "POST /api/rooms",
    "GET /api/rooms/:name",
    "DELETE /api/rooms/:name",
    "GET /api/rooms/:name/members",
    "POST /api/rooms/:name/members",
    "DELETE /api/rooms/:name/members/:userId",
    "GET /api/connections",
    "DELETE /api/connections/:socketId",
    "GET /api/events",
    "GET /api/users/:userId/presence",
    "GET /api/users/:userId/presence-settings",
    "PUT /api/users/:userId/presence-settings",
    "GET /api/users/:userId/contacts",
    "POST /api/users/:userId/contacts",
    "DELETE /api/users/:userId/contacts/:contactUserId",
    "POST /messages",
    "GET /poll",
    "GET /presence/:channelId",
    "POST /presence/:channelId",
    "POST /typing",
];

/// CORS for everything on the port, Socket.IO's polling transport included (so it wraps that layer too).
/// `*` answers `Access-Control-Allow-Origin: *` without credentials: clients authenticate with a token, never
/// a cookie, so no page of another site can act with a visitor's session. A list of origins allows
/// credentials for those origins only.
pub fn cors(cfg: &crate::config::Config) -> CorsLayer {
    match &cfg.cors {
        Cors::Any => CorsLayer::new().allow_origin(AllowOrigin::any()),
        // The Admin UI's origins are allowed too when it is on (it sends credentials: never `*`).
        Cors::List(list) => CorsLayer::new()
            .allow_origin(AllowOrigin::list(
                list.iter()
                    .chain(cfg.admin_ui.then_some(&cfg.admin_ui_origins).into_iter().flatten())
                    .filter_map(|o| HeaderValue::from_str(o).ok()),
            ))
            .allow_credentials(true),
    }
    .allow_methods(tower_http::cors::AllowMethods::mirror_request())
    .allow_headers(tower_http::cors::AllowHeaders::mirror_request())
}

/// With a list of origins, a request that names another `Origin` is refused before it is handled: CORS only
/// stops a browser from reading the answer, while a WebSocket upgrade or a polling request would still be
/// served. Requests without an `Origin` (servers, native apps) pass. Preflights are answered by the CORS layer
/// around this one.
pub async fn refuse_foreign_origin(
    State(allowed): State<std::sync::Arc<Vec<String>>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if let Some(origin) = req.headers().get(axum::http::header::ORIGIN)
        && !allowed.iter().any(|a| a.as_bytes() == origin.as_bytes())
    {
        let shown: String = String::from_utf8_lossy(origin.as_bytes()).chars().take(128).collect();
        tracing::info!(origin = %shown, path = %req.uri().path(), "request from an origin not in REALTIME_CORS_ORIGIN refused");
        return ApiError(AppError::forbidden(format!(
            "origin {shown} is not allowed: add it to REALTIME_CORS_ORIGIN on the server"
        )))
        .into_response();
    }
    next.run(req).await
}

/// With `REALTIME_CORS_ORIGIN=*` (no credentials for anyone), the Admin UI's origins still get theirs: the UI
/// connects with `withCredentials`, which a browser refuses against `*`. Answers to those origins name the
/// origin and allow credentials; every other origin keeps the plain `*`.
pub async fn admin_ui_credentials(
    State(admin_origins): State<std::sync::Arc<Vec<String>>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let origin = req
        .headers()
        .get(axum::http::header::ORIGIN)
        .filter(|o| admin_origins.iter().any(|a| a.as_bytes() == o.as_bytes()))
        .cloned();
    let mut res = next.run(req).await;
    if let Some(origin) = origin {
        let h = res.headers_mut();
        h.insert(axum::http::header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        h.insert(axum::http::header::ACCESS_CONTROL_ALLOW_CREDENTIALS, HeaderValue::from_static("true"));
        h.append(axum::http::header::VARY, HeaderValue::from_static("origin"));
    }
    res
}

pub fn router(app: App) -> Router {
    let cfg = &app.cfg;
    let api = Router::new()
        .route("/broadcast", axum::routing::post(broadcast::one))
        .route("/broadcast/batch", axum::routing::post(broadcast::batch))
        .merge(admin::routes())
        .fallback(|| async { ApiError(AppError::new(ErrorCode::NotFound, "no such API route")) });

    Router::new()
        .route(&cfg.health_path, get(health::health))
        .route(&cfg.metrics_path, get(metrics))
        .route("/openapi.json", get(openapi))
        .nest("/api", api)
        .merge(client::routes())
        .merge(dashboard::routes())
        .layer(axum::middleware::from_fn(refuse_nul_in_uri))
        .with_state(app.clone())
}

/// A `%00` in a path or query would reach the database as a NUL character, which PostgreSQL's text cannot
/// hold: refused here for every route, as a body's NUL is by [`ApiJson`].
async fn refuse_nul_in_uri(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let uri = req.uri();
    if uri.path().contains("%00") || uri.query().is_some_and(|q| q.contains("%00")) {
        return ApiError(AppError::validation(
            "the URL contains a NUL character (%00), which no name or id may hold; remove it",
        ))
        .into_response();
    }
    next.run(req).await
}

/// The OpenAPI 3.0 document of these routes (docs/openapi.json, kept true by tests/openapi.rs), for client
/// generators and API fuzzers.
pub const OPENAPI: &str = include_str!("../../../docs/openapi.json");

async fn openapi() -> Response {
    ([("content-type", "application/json")], OPENAPI).into_response()
}

async fn metrics(State(app): State<App>) -> Response {
    ([("content-type", "text/plain; version=0.0.4; charset=utf-8")], app.metrics.render()).into_response()
}

/// An API error as `{error: {code, message}}` with the matching status.
pub struct ApiError(pub AppError);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.0.code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (status, axum::Json(json!({ "error": { "code": self.0.code, "message": self.0.message } }))).into_response()
    }
}

impl From<AppError> for ApiError {
    fn from(e: AppError) -> Self {
        ApiError(e)
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        ApiError(e.into())
    }
}

/// A JSON body whose rejection (missing content type, bad JSON, missing or mistyped field) answers in the
/// API's error shape, `{error: {code: "VALIDATION_ERROR", message}}` with status 400, not axum's plain text.
pub struct ApiJson<T>(pub T);

impl<T: serde::de::DeserializeOwned, S: Send + Sync> axum::extract::FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<serde_json::Value>::from_request(req, state).await {
            Ok(axum::Json(v)) => {
                crate::wire::refuse_nul(&v)?;
                serde_json::from_value(v).map(ApiJson).map_err(|e| ApiError(AppError::validation(e.to_string())))
            }
            Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                Err(ApiError(AppError::new(ErrorCode::PayloadTooLarge, "the request body is larger than 2 MiB")))
            }
            Err(rejection) => Err(ApiError(AppError::validation(rejection.body_text()))),
        }
    }
}

/// A query string whose rejection answers in the API's error shape, like [`ApiJson`].
pub struct ApiQuery<T>(pub T);

impl<T: serde::de::DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(v)) => Ok(ApiQuery(v)),
            Err(rejection) => Err(ApiError(AppError::validation(rejection.body_text()))),
        }
    }
}

/// A request that presented the right API key; carries the account it acts for.
pub struct Admin {
    pub account: String,
}

impl FromRequestParts<App> for Admin {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, app: &App) -> Result<Self, Self::Rejection> {
        let Some(expected) = &app.cfg.api_key else {
            return Err((
                StatusCode::FORBIDDEN,
                axum::Json(json!({ "error": { "code": "FORBIDDEN",
                    "message": "the admin API is disabled: REALTIME_API_KEY is not set on the server" } })),
            )
                .into_response());
        };
        // Wrong keys are counted per client address (across the nodes when they share Redis): past the
        // budget every request from it is refused unchecked (a right guess cannot be confirmed), until a point
        // refills.
        let ip = crate::transport::socketio::client_ip(parts, &app.cfg.trusted_proxies);
        let guesses = ip.map(crate::cluster::Budget::KeyGuesses);
        let now = std::time::Instant::now();
        if let Some(wait) = guesses.as_ref().and_then(|g| app.limiter.exhausted(g, now)) {
            let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
            tracing::debug!(ip = ?ip, "API request refused: too many wrong keys");
            return Err((
                StatusCode::TOO_MANY_REQUESTS,
                [(axum::http::header::RETRY_AFTER, secs.to_string())],
                axum::Json(json!({ "error": { "code": "RATE_LIMITED",
                    "message": format!("too many wrong API keys from this address; retry in {secs} s") } })),
            )
                .into_response());
        }
        let header = |n: &str| parts.headers.get(n).and_then(|v| v.to_str().ok());
        let presented = header("x-api-key").or_else(|| header("authorization").and_then(|a| a.strip_prefix("Bearer ")));
        let ok = presented.is_some_and(|p| constant_time_eq(p.trim().as_bytes(), expected.as_bytes()));
        if !ok {
            // A guess (a key presented) costs a point; forgetting the header does not.
            if let (Some(g), true) = (&guesses, presented.is_some()) {
                app.limiter.allow(g, now);
            }
            // The key itself is never logged.
            tracing::info!(ip = ?ip, presented = presented.is_some(), path = %parts.uri.path(), "wrong API key");
            return Err((
                StatusCode::UNAUTHORIZED,
                axum::Json(json!({ "error": { "code": "UNAUTHENTICATED",
                    "message": "send the API key as X-API-Key or Authorization: Bearer" } })),
            )
                .into_response());
        }
        Ok(Admin { account: account_of(parts) })
    }
}

/// The account a request acts for: `X-App-Name`, else `?app=`, else `primary`.
fn account_of(parts: &Parts) -> String {
    let header = parts.headers.get("x-app-name").and_then(|v| v.to_str().ok()).map(str::to_string);
    let param = parts.uri.query().and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("app="))).map(str::to_string);
    normalize_account(header.or(param).as_deref())
}

/// Compares in time that depends only on the expected key's length, not on where the first difference is or
/// on the presented key's length.
pub(crate) fn constant_time_eq(presented: &[u8], expected: &[u8]) -> bool {
    let mut diff = presented.len() ^ expected.len();
    for (i, e) in expected.iter().enumerate() {
        let p = presented.get(i).copied().unwrap_or(!*e);
        diff |= usize::from(std::hint::black_box(p ^ e));
    }
    diff == 0
}

#[cfg(test)]
mod tests {
    #[test]
    fn keys_compare_equal_only_when_equal() {
        use super::constant_time_eq as eq;
        assert!(eq(b"secret-key", b"secret-key"));
        assert!(!eq(b"secret-kez", b"secret-key"));
        assert!(!eq(b"secret", b"secret-key"), "a prefix");
        assert!(!eq(b"secret-key-and-more", b"secret-key"), "an extension");
        assert!(!eq(b"", b"secret-key"));
    }
}
