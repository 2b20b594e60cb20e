//! Inbound events: one entry point for every event of a socket, registered before the CONNECT packet is sent
//! (so an event emitted in the client's `connect` handler is never lost), a per-socket FIFO so events of one
//! socket are handled in the order they were sent, the rate limit, and the ack/`error` envelope.
//!
//! socketioxide spawns a task per message, which would let `typing:stop` overtake `typing:start` or two sends
//! commit out of order. Instead this handler queues the event on its session and one drain task (spawned only
//! while there is work, so idle sockets cost no task) handles the queue in order.

use std::sync::Arc;

use serde_json::Value;
use socketioxide::adapter::LocalAdapter;
use socketioxide::extract::{AckSender, Event, SocketRef, TryData};
use socketioxide::handler::message::{FromMessage, FromMessageParts, MessageHandler};
use socketioxide::socket::Socket;

use super::events;
use super::session::{Job, Session};
use crate::error::{AppError, AppResult, ErrorCode, ack_err, ack_ok};
use crate::hub::App;

/// The most events a socket may have waiting; beyond it the client is flooding.
const MAX_QUEUED: usize = 1024;

/// What a handler answers.
pub enum Reply {
    /// `{success: true, data}`
    Data(Value),
    /// `{success: true}`
    Done,
    /// The ack carries exactly this value (the `ping` exception to the envelope).
    Raw(Value),
    /// The answer comes later; the socket's next event need not wait for it (a message waiting for its
    /// commit). The future keeps its own ordering.
    Later(std::pin::Pin<Box<dyn std::future::Future<Output = AppResult<Reply>> + Send>>),
}

/// Everything a handler needs about the socket that sent the event.
pub struct Cx<'a> {
    pub app: &'a App,
    pub socket: &'a SocketRef,
    pub session: &'a Arc<Session>,
    pub has_ack: bool,
}

impl Cx<'_> {
    /// The authenticated user, or UNAUTHENTICATED for an anonymous socket.
    pub fn user(&self) -> AppResult<&str> {
        self.session
            .user()
            .ok_or_else(|| AppError::new(ErrorCode::Unauthenticated, "this event needs an authenticated user"))
    }

    /// The account's rooms (names, without the account prefix) this socket is in: a membership check that
    /// costs no query, for the hot events (typing, reads).
    pub fn room_names(&self) -> Vec<String> {
        let prefix = format!("{}/", self.session.account);
        self.socket.rooms().iter().filter_map(|k| k.strip_prefix(&prefix).map(str::to_string)).collect()
    }

    pub fn emit(&self, event: &str, data: &Value) {
        if let Err(e) = self.socket.emit(event, data) {
            tracing::debug!(sid = %self.session.sid, event, error = %e, "emit to socket failed");
        }
    }
}

#[derive(Clone)]
pub struct Dispatcher {
    pub app: App,
}

pub struct ViaDispatcher;

impl MessageHandler<LocalAdapter, ViaDispatcher> for Dispatcher {
    fn call(&self, s: Arc<Socket<LocalAdapter>>, mut v: socketioxide::handler::Value, ack_id: Option<i64>) {
        let has_ack = ack_id.is_some();
        let event = match Event::from_message_parts(&s, &mut v, &ack_id) {
            Ok(Event(e)) => e,
            Err(_) => return, // socketioxide already refused packets without an event name
        };
        let ack = match AckSender::from_message_parts(&s, &mut v, &ack_id) {
            Ok(a) => a,
            Err(never) => match never {},
        };
        let data = match TryData::<Value>::from_message(s.clone(), v, ack_id) {
            Ok(TryData(Ok(d))) => Some(d),
            // `emit("ping")` with no argument at all: the handler sees null (and says what it needs)
            Ok(TryData(Err(e))) if e.to_string().contains("first element not found") => Some(Value::Null),
            Ok(TryData(Err(_))) => None,
            Err(never) => match never {},
        };
        let Some(session) = s.extensions.get::<Arc<Session>>() else { return };
        let job = Job { event, data, ack, has_ack };
        let socket = SocketRef::from(s);

        // Rate limit before queueing, so a flood never grows the queue. ping/pong are liveness, not load.
        let exempt = matches!(job.event.as_str(), "ping" | "pong");
        if !exempt && let Err(err) = self.app.check_rate(&session.account, &session.rate_subject()) {
            tracing::debug!(sid = %session.sid, event = %job.event, "rate limited");
            answer_error(&socket, job, &err);
            return;
        }

        let spawn = {
            let mut q = session.queue.lock();
            if q.jobs.len() >= MAX_QUEUED {
                drop(q);
                answer_error(&socket, job, &AppError::new(ErrorCode::RateLimited, "too many events waiting"));
                return;
            }
            q.jobs.push_back(job);
            !std::mem::replace(&mut q.running, true)
        };
        if spawn {
            tokio::spawn(drain(self.app.clone(), socket, session));
        }
    }
}

async fn drain(app: App, socket: SocketRef, session: Arc<Session>) {
    loop {
        let job = {
            let mut q = session.queue.lock();
            match q.jobs.pop_front() {
                Some(j) if !session.is_closed() => j,
                _ => {
                    q.running = false;
                    return;
                }
            }
        };
        handle(&app, &socket, &session, job).await;
    }
}

async fn handle(app: &App, socket: &SocketRef, session: &Arc<Session>, mut job: Job) {
    let data = job.data.take();
    let result = run(app, socket, session, &job, data).await;
    if let Ok(Reply::Later(later)) = result {
        let (app, socket, session) = (app.clone(), socket.clone(), session.clone());
        tokio::spawn(async move {
            let result = later.await;
            answer(&app, &socket, &session, job, result);
        });
    } else {
        answer(app, socket, session, job, result);
    }
}

async fn run(
    app: &App,
    socket: &SocketRef,
    session: &Arc<Session>,
    job: &Job,
    data: Option<Value>,
) -> AppResult<Reply> {
    let cx = Cx { app, socket, session, has_ack: job.has_ack };
    if let Some(user) = session.user()
        && !matches!(job.event.as_str(), "ping" | "pong" | "presence:update")
    {
        crate::service::presence::touch(app, &session.account, user, &session.sid);
    }
    match data {
        None => Err(AppError::validation("payload could not be decoded as JSON")),
        Some(data) => events::route(&cx, &job.event, data).await,
    }
}

/// Answers an event: the ack (or nothing) on success, the ack or an `error` event on failure, logged once.
fn answer(app: &App, socket: &SocketRef, session: &Arc<Session>, job: Job, result: AppResult<Reply>) {
    match result {
        Ok(Reply::Raw(v)) => {
            let _ = job.ack.send(&v);
        }
        Ok(Reply::Data(v)) => {
            let _ = job.ack.send(&ack_ok(v));
        }
        Ok(Reply::Done | Reply::Later(_)) => {
            let _ = job.ack.send(&serde_json::json!({ "success": true }));
        }
        Err(e) => {
            app.metrics.errors.inc();
            if e.code == ErrorCode::InternalError {
                tracing::error!(sid = %session.sid, event = %job.event, error = %e.message, "event failed");
            } else {
                tracing::info!(sid = %session.sid, user = ?session.user(), event = %job.event, code = e.code.as_str(), error = %e.message, "event refused");
            }
            if app.cfg.log_events && crate::transport::audit_wanted(&app.cfg, "error") {
                crate::transport::audit(
                    app,
                    session,
                    "error",
                    None,
                    Some(serde_json::json!({"event": job.event, "code": e.code, "message": e.message})),
                );
            }
            let job = Job { data: None, ..job };
            answer_error(socket, job, &e);
        }
    }
}

/// A refusal goes to the ack when the client asked for one, else as an `error` event. A `message:send`
/// refused before its handler ran (rate limit) still tells the offline queue with `message:failed`.
fn answer_error(socket: &SocketRef, job: Job, e: &AppError) {
    if job.event == "message:send"
        && let Some(cid) = job.data.as_ref().and_then(|d| d.get("clientMessageId")).and_then(Value::as_str)
    {
        let _ = socket.emit(
            "message:failed",
            &serde_json::json!({ "clientMessageId": cid, "errorCode": e.code, "errorMessage": e.message,
                                 "retryable": e.code.retryable() }),
        );
    }
    if job.has_ack {
        let _ = job.ack.send(&ack_err(e));
    } else {
        let _ = socket.emit("error", e);
    }
}
