//! The accept loop: HTTP/1.1 connections (with upgrades, for WebSocket) served by hyper directly.
//!
//! axum's `serve` builds on hyper-util's auto (HTTP/1 + HTTP/2) connection, whose read buffer stays
//! allocated for the life of every upgraded WebSocket — about half of a socket's memory. Serving HTTP/1 with a
//! capped buffer keeps an idle connection small. (Browsers speak WebSocket and long-polling over HTTP/1.1;
//! a reverse proxy in front may still offer HTTP/2 to clients.)

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tower::ServiceExt;

/// hyper's smallest allowed read buffer.
const READ_BUFFER: usize = 8192;

/// A client that reads nothing while the server has data for it (a slow consumer): after `timeout` without
/// one byte written, its connection fails and is closed, counted in `metrics.slow_consumers`.
#[derive(Clone)]
pub struct WriteStall {
    pub timeout: Duration,
    pub metrics: Arc<crate::metrics::Metrics>,
}

/// Serves until `stop` turns true, then lets open requests finish for up to `drain`.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    mut stop: watch::Receiver<bool>,
    drain: Duration,
    stall: WriteStall,
) {
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
                    .serve_connection(
                        TokioIo::new(Stalling::new(stream, peer, stall.clone())),
                        TowerToHyperService::new(svc),
                    )
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

/// A TCP stream whose writes fail once none could make progress for [`WriteStall::timeout`].
///
/// The socket's outbound queue (socketioxide's, `REALTIME_MAX_BUFFER` packets and `REALTIME_MAX_BUFFER_BYTES`)
/// fills while the kernel's buffers are full; without this, a client that stops reading keeps its queue until
/// the heartbeat notices (ping interval + ping timeout) or the byte bound closes it, and every packet past the
/// packet bound is dropped for it meanwhile. Once a write has waited for the timeout, writes and reads fail
/// (the reader is woken), so the WebSocket (or the long-poll)
/// ends and its session with it, like any lost connection.
struct Stalling {
    inner: TcpStream,
    peer: SocketAddr,
    stall: WriteStall,
    /// Armed while a write waits for room in the kernel's buffer.
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
    /// The stall passed the timeout: the connection is dead for both directions.
    failed: bool,
    /// Whoever waits to read (the WebSocket reader waits on a client that sends nothing, too).
    reader: Option<std::task::Waker>,
}

impl Stalling {
    fn new(inner: TcpStream, peer: SocketAddr, stall: WriteStall) -> Stalling {
        Stalling { inner, peer, stall, deadline: None, failed: false, reader: None }
    }

    fn dead() -> io::Error {
        io::Error::new(io::ErrorKind::TimedOut, "the client stopped reading")
    }

    /// After a write returned `Pending`: fails once the stall has lasted the timeout.
    fn stalled(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let timeout = self.stall.timeout;
        let deadline = self.deadline.get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        if deadline.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        self.deadline = None;
        self.failed = true;
        if let Some(reader) = self.reader.take() {
            reader.wake();
        }
        self.stall.metrics.slow_consumers.inc();
        tracing::warn!(
            peer = %self.peer,
            "closing a connection whose client read nothing for {} ms while data waited for it \
             (a slow consumer; REALTIME_WRITE_TIMEOUT)",
            timeout.as_millis()
        );
        Poll::Ready(Err(Self::dead()))
    }
}

impl AsyncRead for Stalling {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if self.failed {
            return Poll::Ready(Err(Self::dead()));
        }
        let read = Pin::new(&mut self.inner).poll_read(cx, buf);
        if read.is_pending() {
            self.reader = Some(cx.waker().clone());
        }
        read
    }
}

impl AsyncWrite for Stalling {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        if self.failed {
            return Poll::Ready(Err(Self::dead()));
        }
        match Pin::new(&mut self.inner).poll_write(cx, buf) {
            Poll::Pending => self.stalled(cx),
            ready => {
                self.deadline = None;
                ready
            }
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if self.failed {
            return Poll::Ready(Err(Self::dead()));
        }
        match Pin::new(&mut self.inner).poll_write_vectored(cx, bufs) {
            Poll::Pending => self.stalled(cx),
            ready => {
                self.deadline = None;
                ready
            }
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
