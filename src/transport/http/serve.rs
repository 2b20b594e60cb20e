//! The accept loop: HTTP/1.1 connections (with upgrades, for WebSocket) served by hyper directly.
//!
//! axum's `serve` builds on hyper-util's auto (HTTP/1 + HTTP/2) connection, whose read buffer stays
//! allocated for the life of every upgraded WebSocket — about half of a socket's memory. Serving HTTP/1 with a
//! capped buffer keeps an idle connection small. (Browsers speak WebSocket and long-polling over HTTP/1.1;
//! a reverse proxy in front may still offer HTTP/2 to clients.)

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tower::ServiceExt;

/// hyper's smallest allowed read buffer.
const READ_BUFFER: usize = 8192;

/// Serves until `stop` turns true, then lets open requests finish for up to `drain`.
pub async fn serve(listener: TcpListener, router: Router, mut stop: watch::Receiver<bool>, drain: Duration) {
    // Every connection task holds a sender; when all are dropped, every connection has finished.
    let (alive, mut all_done) = mpsc::channel::<()>(1);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of file descriptors or similar: back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let svc = router.clone().map_request(move |mut req: http::Request<Incoming>| {
                    req.extensions_mut().insert(ConnectInfo::<SocketAddr>(peer));
                    req
                });
                let conn = hyper::server::conn::http1::Builder::new()
                    .max_buf_size(READ_BUFFER)
                    .timer(TokioTimer::new())
                    .header_read_timeout(Duration::from_secs(30))
                    .serve_connection(TokioIo::new(stream), TowerToHyperService::new(svc))
                    .with_upgrades();
                let (alive, mut stop) = (alive.clone(), stop.clone());
                tokio::spawn(async move {
                    let _alive = alive;
                    let mut conn = std::pin::pin!(conn);
                    let result = tokio::select! {
                        r = conn.as_mut() => r,
                        _ = stopped(&mut stop) => {
                            conn.as_mut().graceful_shutdown();
                            conn.await
                        }
                    };
                    if let Err(e) = result {
                        tracing::debug!(error = %e, %peer, "connection ended with an error");
                    }
                });
            }
            _ = stopped(&mut stop) => break,
        }
    }
    drop(listener);
    drop(alive);
    if tokio::time::timeout(drain, all_done.recv()).await.is_err() {
        tracing::warn!("HTTP connections did not finish within {} s; closing them", drain.as_secs());
    }
}

/// Resolves once `stop` is true (without holding the watch's read guard across an await).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}
