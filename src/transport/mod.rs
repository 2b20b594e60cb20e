//! The edges: Socket.IO (`socketio/`) and HTTP (`http/`) on one port. They turn connections and requests
//! into calls on the node, through the wire dialects; nothing below them knows a socket or a request.

pub mod http;
pub mod socketio;

/// Compares a presented secret with the configured one in time independent of where they differ.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
