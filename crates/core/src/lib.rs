//! The pure core of nself-realtime: the rules (`domain`) and the error vocabulary (`error`) that the socket
//! protocol and the HTTP API share. No sockets, no SQL, no tokio; the server crate re-exports both modules
//! as `crate::domain` and `crate::error` (docs/architecture.md).

pub mod domain;
pub mod error;
