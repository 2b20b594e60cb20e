//! nself-realtime: the realtime server of the nself stack. Socket.IO (protocol v5) for live messages,
//! rooms, presence, typing, receipts and offline sync, on SQLite or PostgreSQL.
//!
//! Layout: `domain` (rules, no I/O) · `store` (SQL) · `service` (operations shared by sockets and HTTP) ·
//! `transport` (Socket.IO edge) · `http` (health, metrics, admin API) · `server` (process lifecycle) ·
//! `cli` (one file per command). The load generator is the `nself-realtime-bench` crate (`crates/bench`).

pub mod auth;
pub mod cli;
pub mod config;
pub mod domain;
pub mod error;
pub mod http;
pub mod hub;
pub mod metrics;
pub mod server;
pub mod service;
pub mod store;
pub mod systemd;
pub mod telemetry;
pub mod transport;
pub mod wire;
