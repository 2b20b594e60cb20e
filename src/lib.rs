//! nself-realtime: the realtime server of the nself stack. Socket.IO (protocol v5) for live messages,
//! rooms, presence, typing, receipts and offline sync, on SQLite or PostgreSQL.
//!
//! Layers, each depending only on those after it (docs/architecture.md):
//! - `transport` — the edges: Socket.IO (`socketio/`: handshake, dispatch, fan-out) and HTTP (`http/`).
//! - `wire` — the dialects: inbound payloads read into typed requests, outbound events rendered.
//! - `node` — handles to the application parts and backends; `server` builds it and runs the process.
//! - `app` — the application: typed requests in, typed results and events out; each part owns its timer.
//! - `cluster` — the seams several nodes share (fan-out, roster, presence, typing, rate limits); `memory/`.
//! - `store` — SQL on PostgreSQL or SQLite; `domain` — the rules, pure and synchronous (crate `nself-realtime-core`).
//!
//! Beside them: `config`, `auth`, `error`, `metrics`, `telemetry`, `systemd`, `cli`.

pub mod app;
pub mod auth;
pub mod cli;
pub mod cluster;
pub mod config;
#[doc(hidden)]
pub mod fuzzing;
pub mod metrics;
pub mod node;
pub mod server;
pub mod store;
pub mod systemd;
pub mod telemetry;
pub mod transport;
pub mod wire;

/// The rules and the error vocabulary live in `crates/core` (built and mutation-tested on their own); the
/// paths `crate::domain` and `crate::error` stay as they were.
pub use nself_realtime_core::{domain, error};
