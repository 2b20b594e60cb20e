//! The edges: Socket.IO (`socketio/`) and HTTP (`http/`) on one port. They turn connections and requests
//! into calls on the node, through the wire dialects; nothing below them knows a socket or a request.

pub mod http;
pub mod socketio;
