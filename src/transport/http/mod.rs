//! HTTP on the Socket.IO port: health, metrics, broadcast, the admin API, and the routes of clients
//! without a socket.

mod admin;
mod broadcast;
mod client;
mod dashboard;
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
use crate::transport::constant_time_eq;

pub(crate) type App = std::sync::Arc<Node>;

/// The routes that exist (plugin.json's `apiEndpoints` is compared with this list by a test).
pub const ROUTES: &[&str] = &[
    "GET /health",
    "GET /metrics",
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
pub fn cors(cfg: &crate::config::Config) -> CorsLayer {
    match &cfg.cors {
        Cors::Any => CorsLayer::new().allow_origin(AllowOrigin::mirror_request()).allow_credentials(true),
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
        .nest("/api", api)
        .merge(client::routes())
        .merge(dashboard::routes())
        .with_state(app.clone())
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
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(ApiJson(v)),
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
        let header = |n: &str| parts.headers.get(n).and_then(|v| v.to_str().ok());
        let presented = header("x-api-key").or_else(|| header("authorization").and_then(|a| a.strip_prefix("Bearer ")));
        let ok = presented.is_some_and(|p| constant_time_eq(p.trim().as_bytes(), expected.as_bytes()));
        if !ok {
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
