//! Ends Engine.IO long-polls when the server shuts down.
//!
//! A long-poll holds its request open until the server has something to send, up to the ping interval.
//! `SocketIo::close` ends the sessions that joined the namespace, but not an Engine.IO session that has no
//! Socket.IO socket (a client between its handshake and CONNECT, or refused); its open poll would hold the
//! HTTP drain for the whole drain timeout. So once shutdown begins, every open poll is answered with an
//! Engine.IO close packet, which tells the client to reconnect (for a socket that is being closed anyway,
//! the same outcome a moment earlier).

use axum::extract::{Request, State};
use axum::http::{Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::node::Node;

/// Engine.IO's `close` packet type.
const CLOSE_PACKET: &str = "1";

pub async fn end_at_shutdown(State(app): State<std::sync::Arc<Node>>, req: Request, next: Next) -> Response {
    if !is_poll(&req) {
        return next.run(req).await;
    }
    let mut stopping = app.stopping.subscribe();
    tokio::select! {
        res = next.run(req) => res,
        _ = stopping.wait_for(|s| *s) => ([(header::CONTENT_TYPE, "text/plain; charset=UTF-8")], CLOSE_PACKET).into_response(),
    }
}

fn is_poll(req: &Request) -> bool {
    req.method() == Method::GET
        && req.uri().path().starts_with("/socket.io")
        && req.uri().query().is_some_and(|q| q.split('&').any(|kv| kv == "transport=polling"))
}
