//! Inbound events: one entry point for every event of a socket, registered before the CONNECT packet is sent
//! (so an event emitted in the client's `connect` handler is never lost), a per-socket FIFO so events of one
//! socket are handled in the order they were sent, the rate limit, and the ack/`error` envelope.
//!
//! socketioxide spawns a task per message, which would let `typing:stop` overtake `typing:start` or two sends
//! commit out of order. Instead this handler queues the event on its connection and one drain task (spawned
//! only while there is work, so idle sockets cost no task) handles the queue in order.

use std::sync::Arc;

use serde_json::Value;
use socketioxide::extract::{AckSender, Event, TryData};
use socketioxide::handler::message::{FromMessage, FromMessageParts, MessageHandler};
use socketioxide::socket::Socket;

use super::Adapter;
use super::admin::AdminUi;
use super::conn::{Conn, Job};
use crate::cluster::Budget;
use crate::error::{AppError, AppResult, ErrorCode, ack_err, ack_ok};
use crate::node::Node;
use crate::wire::{self, Charge, Cx, Refusal, Reply};

/// The most events a socket may have waiting; beyond it the client is flooding.
const MAX_QUEUED: usize = 1024;

#[derive(Clone)]
pub struct Dispatcher {
    pub node: Arc<Node>,
    /// The Admin UI, when it is on (None: no work per event).
    pub admin: Option<Arc<AdminUi>>,
}

pub struct ViaDispatcher;

impl MessageHandler<Adapter, ViaDispatcher> for Dispatcher {
    fn call(&self, s: Arc<Socket<Adapter>>, mut v: socketioxide::handler::Value, ack_id: Option<i64>) {
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
        let Some(conn) = s.extensions.get::<Arc<Conn>>() else { return };
        let job = Job { event, data, ack, has_ack };
        if let Some(admin) = &self.admin {
            admin.event_received(&conn.session.sid, &job.event, job.data.as_ref());
        }

        // Rate limit before queueing, so a flood never grows the queue. Call signalling has a budget of its own
        // (ICE candidates come in bursts).
        let subject = match wire::charge(conn.dialect, &job.event) {
            Charge::Free => None,
            Charge::Events => Some(conn.session.rate_subject()),
            Charge::Calls => Some(format!("calls:{}", conn.session.rate_subject())),
        };
        if let Some(subject) = subject {
            let budget = Budget::Events { account: conn.session.account.clone(), subject };
            if !self.node.limiter.allow(&budget, std::time::Instant::now()) {
                self.node.metrics.rate_limited.inc();
                tracing::debug!(sid = %conn.session.sid, event = %job.event, "rate limited");
                let e = AppError::rate_limited(self.node.cfg.rate_limit_points, self.node.cfg.rate_limit_duration);
                let refusal = wire::refusal(conn.dialect, &job.event, job.data.as_ref());
                answer_error(&conn, job, &refusal, &e);
                return;
            }
        }

        let spawn = {
            let mut q = conn.queue.lock();
            if q.jobs.len() >= MAX_QUEUED {
                drop(q);
                let refusal = wire::refusal(conn.dialect, &job.event, job.data.as_ref());
                answer_error(&conn, job, &refusal, &AppError::new(ErrorCode::RateLimited, "too many events waiting"));
                return;
            }
            q.jobs.push_back(job);
            !std::mem::replace(&mut q.running, true)
        };
        if spawn {
            tokio::spawn(drain(self.node.clone(), conn));
        }
    }
}

async fn drain(node: Arc<Node>, conn: Arc<Conn>) {
    loop {
        let job = {
            let mut q = conn.queue.lock();
            match q.jobs.pop_front() {
                Some(j) if !conn.session.is_closed() => j,
                _ => {
                    // Freed, not cleared: an idle socket keeps no queue buffer (a burst of events grew it to a
                    // kilobyte or more, held for the life of the connection otherwise).
                    q.jobs = std::collections::VecDeque::new();
                    q.running = false;
                    return;
                }
            }
        };
        handle(&node, &conn, job).await;
    }
}

async fn handle(node: &Arc<Node>, conn: &Arc<Conn>, mut job: Job) {
    let data = job.data.take();
    let refusal = wire::refusal(conn.dialect, &job.event, data.as_ref());
    let s = &conn.session;
    if let Some(user) = s.user()
        && wire::charge(conn.dialect, &job.event) != Charge::Free
        && job.event != "presence:update"
    {
        node.presence.touch(&s.account, user, &s.sid).await;
    }
    let out: Arc<dyn wire::Outbox> = conn.link.clone();
    let result = match data {
        None => Err(AppError::validation("payload could not be decoded as JSON")),
        Some(data) => {
            let cx =
                Cx { node, session: s, dialect: conn.dialect, state: &conn.state, has_ack: job.has_ack, out: &out };
            wire::handle(&cx, &job.event, data).await
        }
    };
    if let Ok(Reply::Later(later)) = result {
        let (node, conn) = (node.clone(), conn.clone());
        tokio::spawn(async move {
            let result = later.await;
            answer(&node, &conn, job, &refusal, result);
        });
    } else {
        answer(node, conn, job, &refusal, result);
    }
}

/// Answers an event: the ack (or nothing) on success, the ack or an `error` event on failure, logged once.
fn answer(node: &Node, conn: &Conn, job: Job, refusal: &Refusal, result: AppResult<Reply>) {
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
            let s = &conn.session;
            node.metrics.errors.inc();
            if e.code == ErrorCode::InternalError {
                tracing::error!(sid = %s.sid, event = %job.event, error = %e.message, "event failed");
            } else {
                tracing::info!(sid = %s.sid, user = ?s.user(), event = %job.event, code = e.code.as_str(), error = %e.message, "event refused");
            }
            let details = serde_json::json!({"event": job.event, "code": e.code, "message": e.message});
            node.audit.record(s, "error", None, Some(details));
            answer_error(conn, job, refusal, &e);
        }
    }
}

/// A refusal goes to the ack when the client asked for one, else as the dialect tells it for this event
/// (`error`, `call:error`, or nothing more).
fn answer_error(conn: &Conn, job: Job, refusal: &Refusal, e: &AppError) {
    wire::refused(conn.link.as_ref(), refusal, e, job.has_ack);
    if job.has_ack {
        let _ = job.ack.send(&ack_err(e));
    }
}
