//! The error vocabulary shared by the socket protocol (ack envelope, `error` event) and the HTTP API.

use serde::Serialize;
use serde_json::Value;

/// Error codes (docs/protocol.md §2.3); the wire spelling is SCREAMING_SNAKE_CASE.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ErrorCode {
    ValidationError,
    Unauthenticated,
    Forbidden,
    RoomNotFound,
    NotAMember,
    RateLimited,
    PayloadTooLarge,
    UnknownEvent,
    InternalError,
    /// Not a socket code: the HTTP API answers it for unknown resources other than rooms.
    NotFound,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::ValidationError => "VALIDATION_ERROR",
            ErrorCode::Unauthenticated => "UNAUTHENTICATED",
            ErrorCode::Forbidden => "FORBIDDEN",
            ErrorCode::RoomNotFound => "ROOM_NOT_FOUND",
            ErrorCode::NotAMember => "NOT_A_MEMBER",
            ErrorCode::RateLimited => "RATE_LIMITED",
            ErrorCode::PayloadTooLarge => "PAYLOAD_TOO_LARGE",
            ErrorCode::UnknownEvent => "UNKNOWN_EVENT",
            ErrorCode::InternalError => "INTERNAL_ERROR",
            ErrorCode::NotFound => "NOT_FOUND",
        }
    }

    /// Whether a client may retry the same request later (used by `message:failed.retryable`).
    pub fn retryable(self) -> bool {
        matches!(self, ErrorCode::RateLimited | ErrorCode::InternalError)
    }

    pub fn http_status(self) -> u16 {
        match self {
            ErrorCode::ValidationError => 400,
            ErrorCode::Unauthenticated => 401,
            ErrorCode::Forbidden | ErrorCode::NotAMember => 403,
            ErrorCode::RoomNotFound | ErrorCode::NotFound | ErrorCode::UnknownEvent => 404,
            ErrorCode::PayloadTooLarge => 413,
            ErrorCode::RateLimited => 429,
            ErrorCode::InternalError => 500,
        }
    }
}

/// An error a client is told about: `{code, message, details?}`.
#[derive(Debug, Clone, Serialize, thiserror::Error)]
#[error("{code:?}: {message}")]
pub struct AppError {
    pub code: ErrorCode,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub details: Option<Value>,
}

impl AppError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        AppError { code, message: message.into(), details: None }
    }
    pub fn with_details(mut self, details: Value) -> Self {
        self.details = Some(details);
        self
    }
    pub fn validation(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::ValidationError, message)
    }
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Forbidden, message)
    }
    pub fn not_a_member(room: &str) -> Self {
        Self::new(ErrorCode::NotAMember, format!("you are not a member of {room}"))
    }
    /// A message id that names no live message. The contract has no socket code for it; the request is
    /// invalid, so VALIDATION_ERROR (the HTTP API uses NOT_FOUND).
    pub fn unknown_message(id: &str) -> Self {
        Self::new(ErrorCode::ValidationError, format!("message {id} does not exist"))
            .with_details(serde_json::json!({ "field": "messageId" }))
    }
    pub fn room_not_found(room: &str) -> Self {
        Self::new(ErrorCode::RoomNotFound, format!("room {room} does not exist"))
    }
    pub fn too_large(field: &str, max: usize) -> Self {
        Self::new(ErrorCode::PayloadTooLarge, format!("{field} is longer than {max} bytes"))
            .with_details(serde_json::json!({ "field": field, "max": max }))
    }
    /// A user's event budget is spent.
    pub fn rate_limited(points: u32, per: std::time::Duration) -> Self {
        Self::new(ErrorCode::RateLimited, format!("more than {points} events in {} s; slow down", per.as_secs()))
    }
    /// The database could not store the request because its disk is full: still `INTERNAL_ERROR` (and so
    /// retryable), but saying so, since the client's retry works only once an operator frees space.
    pub fn disk_full(cause: impl std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "the database's disk is full; writes fail until space is freed");
        Self::new(
            ErrorCode::InternalError,
            "the server's disk is full: nothing was stored; retry later (an operator must free space)",
        )
    }
    /// Internal failures are logged with their cause; the client only learns that it was internal.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "internal error");
        Self::new(ErrorCode::InternalError, "internal error; it was logged on the server")
    }
}

/// Store failures reach clients as INTERNAL_ERROR (the cause is logged). Behind the `sqlx` feature so the
/// rules build without the database driver.
#[cfg(feature = "sqlx")]
impl From<sqlx::Error> for AppError {
    fn from(e: sqlx::Error) -> Self {
        if is_disk_full(&e) {
            return AppError::disk_full(format!("database: {e}"));
        }
        AppError::internal(format!("database: {e}"))
    }
}

/// The database's disk (or quota) is full: SQLite's `SQLITE_FULL` (13), PostgreSQL's `disk_full` (53100),
/// or the operating system's ENOSPC.
#[cfg(feature = "sqlx")]
pub fn is_disk_full(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(d) => {
            matches!(d.code().as_deref(), Some("13" | "53100")) || d.message().contains("database or disk is full")
        }
        sqlx::Error::Io(io) => io.kind() == std::io::ErrorKind::StorageFull,
        _ => false,
    }
}

pub type AppResult<T> = Result<T, AppError>;

/// The ack envelope (docs/protocol.md §2.1).
pub fn ack_ok(data: impl Serialize) -> Value {
    serde_json::json!({ "success": true, "data": data })
}

pub fn ack_err(e: &AppError) -> Value {
    serde_json::json!({ "success": false, "error": e })
}
