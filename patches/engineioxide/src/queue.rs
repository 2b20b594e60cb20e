//! A socket's outbound packet queue: bounded in packets, with permits, and holding memory only while it holds
//! packets.
//!
//! It replaces a tokio mpsc channel, which allocates its slots in blocks of 32 (the first when the socket is
//! created, a second once 32 packets went through) and keeps them for the socket's life: ~2.8 KiB per block
//! for every idle connection. Here the packets wait in a `VecDeque` that is freed whenever the transport
//! drains it. The latest volatile packet waits beside them (it was a `watch` channel of its own).
//!
//! Semantics are the channel's: at most `capacity` packets queued or reserved (`Full` past it), `Closed`
//! once [`PacketQueue::close`] was called, packets still queued can be taken after the close, and one
//! consumer at a time (the transport holding the socket's `internal_rx` lock).

use std::{
    collections::VecDeque,
    future::poll_fn,
    pin::pin,
    sync::Mutex,
    task::{Context, Poll, Waker},
};

use engineioxide_core::PacketBuf;
use tokio::sync::{Notify, mpsc::error::TrySendError};

pub(crate) struct PacketQueue {
    state: Mutex<State>,
    /// Wakes those waiting for the queue to close ([`PacketQueue::closed`]).
    on_close: Notify,
}

#[derive(Default)]
struct State {
    packets: VecDeque<PacketBuf>,
    volatile: Option<PacketBuf>,
    /// Permits given out and not yet used or dropped: each holds a place.
    reserved: usize,
    capacity: usize,
    closed: bool,
    /// The consumer waiting for a packet.
    rx_waker: Option<Waker>,
}

impl State {
    fn has_room(&self) -> bool {
        self.packets.len() + self.reserved < self.capacity
    }
    /// Queues the packets and returns the consumer to wake (after the lock is released).
    fn push(&mut self, packets: PacketBuf) -> Option<Waker> {
        self.packets.push_back(packets);
        self.rx_waker.take()
    }
    fn pop(&mut self) -> Option<PacketBuf> {
        let packets = self.packets.pop_front();
        if self.packets.is_empty() && self.packets.capacity() > 0 {
            // Drained: an idle socket holds no buffer.
            self.packets = VecDeque::new();
        }
        packets
    }
}

fn wake(waker: Option<Waker>) {
    if let Some(waker) = waker {
        waker.wake();
    }
}

/// Packets taken off a [`PacketQueue`].
#[derive(Debug)]
pub(crate) enum Taken<T> {
    /// Queued packets (they were charged to the socket's byte count).
    Queued(T),
    /// The latest volatile packet.
    Volatile(PacketBuf),
}

/// A place reserved in a [`PacketQueue`]; given back when dropped unused.
pub(crate) struct QueuePermit<'a> {
    queue: &'a PacketQueue,
}

impl QueuePermit<'_> {
    pub(crate) fn send(self, packets: PacketBuf) {
        let queue = self.queue;
        std::mem::forget(self);
        let waker = {
            let mut state = queue.lock();
            state.reserved -= 1;
            state.push(packets)
        };
        wake(waker);
    }
}

impl Drop for QueuePermit<'_> {
    fn drop(&mut self) {
        self.queue.lock().reserved -= 1;
    }
}

impl PacketQueue {
    pub(crate) fn new(capacity: usize) -> Self {
        assert!(capacity > 0, "the packet queue needs room for one packet");
        Self {
            state: Mutex::new(State {
                capacity,
                ..State::default()
            }),
            on_close: Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while the lock was held leaves the state consistent (every update is one statement).
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn try_reserve(&self) -> Result<QueuePermit<'_>, TrySendError<()>> {
        let mut state = self.lock();
        if state.closed {
            Err(TrySendError::Closed(()))
        } else if !state.has_room() {
            Err(TrySendError::Full(()))
        } else {
            state.reserved += 1;
            Ok(QueuePermit { queue: self })
        }
    }

    pub(crate) fn try_send(&self, packets: PacketBuf) -> Result<(), TrySendError<PacketBuf>> {
        let waker = {
            let mut state = self.lock();
            if state.closed {
                return Err(TrySendError::Closed(packets));
            } else if !state.has_room() {
                return Err(TrySendError::Full(packets));
            }
            state.push(packets)
        };
        wake(waker);
        Ok(())
    }

    /// Queues a control packet even when the queue is full (it passes the bound by one): fails only once
    /// closed.
    pub(crate) fn force_send(&self, packets: PacketBuf) -> Result<(), TrySendError<PacketBuf>> {
        let waker = {
            let mut state = self.lock();
            if state.closed {
                return Err(TrySendError::Closed(packets));
            }
            state.push(packets)
        };
        wake(waker);
        Ok(())
    }

    /// Replaces the volatile packet waiting to be sent (only the latest is kept).
    pub(crate) fn set_volatile(&self, packets: PacketBuf) {
        let waker = {
            let mut state = self.lock();
            state.volatile = Some(packets);
            state.rx_waker.take()
        };
        wake(waker);
    }

    /// The next packets: queued ones first, then the volatile one. `None` once closed and drained of queued
    /// packets.
    pub(crate) fn poll_recv(&self, cx: &mut Context<'_>) -> Poll<Option<Taken<PacketBuf>>> {
        self.poll_take(cx, State::pop)
    }

    /// Every queued packet at once (the caller holds their buffer until it drops it); else the volatile one.
    pub(crate) fn poll_recv_all(
        &self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Taken<VecDeque<PacketBuf>>>> {
        self.poll_take(cx, |state| {
            (!state.packets.is_empty()).then(|| std::mem::take(&mut state.packets))
        })
    }

    fn poll_take<T>(
        &self,
        cx: &mut Context<'_>,
        take: impl FnOnce(&mut State) -> Option<T>,
    ) -> Poll<Option<Taken<T>>> {
        let mut state = self.lock();
        if let Some(packets) = take(&mut state) {
            return Poll::Ready(Some(Taken::Queued(packets)));
        }
        if let Some(packets) = state.volatile.take() {
            return Poll::Ready(Some(Taken::Volatile(packets)));
        }
        if state.closed {
            return Poll::Ready(None);
        }
        match &mut state.rx_waker {
            Some(waker) if waker.will_wake(cx.waker()) => {}
            waker => *waker = Some(cx.waker().clone()),
        }
        Poll::Pending
    }

    #[cfg(any(test, feature = "__test_harness"))]
    pub(crate) async fn recv(&self) -> Option<Taken<PacketBuf>> {
        poll_fn(|cx| self.poll_recv(cx)).await
    }

    pub(crate) async fn recv_all(&self) -> Option<Taken<VecDeque<PacketBuf>>> {
        poll_fn(|cx| self.poll_recv_all(cx)).await
    }

    /// Refuses packets from now on; those queued can still be taken.
    pub(crate) fn close(&self) {
        let waker = {
            let mut state = self.lock();
            state.closed = true;
            state.rx_waker.take()
        };
        wake(waker);
        self.on_close.notify_waiters();
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.lock().closed
    }

    pub(crate) async fn closed(&self) {
        let mut notified = pin!(self.on_close.notified());
        notified.as_mut().enable();
        if !self.is_closed() {
            notified.await;
        }
    }
}

impl std::fmt::Debug for PacketQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.lock();
        f.debug_struct("PacketQueue")
            .field("queued", &state.packets.len())
            .field("reserved", &state.reserved)
            .field("capacity", &state.capacity)
            .field("closed", &state.closed)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use std::{sync::Arc, time::Duration};

    use engineioxide_core::{Packet, Str};
    use smallvec::smallvec;

    use super::*;

    fn msg(s: &'static str) -> PacketBuf {
        smallvec![Packet::Message(Str::from(s))]
    }
    fn text(p: Option<Taken<PacketBuf>>) -> String {
        let (Taken::Queued(mut p) | Taken::Volatile(mut p)) = p.unwrap();
        match p.pop().unwrap() {
            Packet::Message(m) => m.to_string(),
            p => panic!("unexpected {p:?}"),
        }
    }

    #[tokio::test]
    async fn keeps_order_and_frees_its_buffer_when_drained() {
        let q = PacketQueue::new(4);
        q.try_send(msg("a")).unwrap();
        q.try_reserve().unwrap().send(msg("b"));
        assert!(q.lock().packets.capacity() > 0);
        assert_eq!(text(q.recv().await), "a");
        assert_eq!(text(q.recv().await), "b");
        assert_eq!(q.lock().packets.capacity(), 0);
    }

    #[test]
    fn bounded_in_packets_and_permits() {
        let q = PacketQueue::new(2);
        let p = q.try_reserve().unwrap();
        q.try_send(msg("a")).unwrap();
        assert!(matches!(q.try_reserve(), Err(TrySendError::Full(()))));
        assert!(matches!(q.try_send(msg("b")), Err(TrySendError::Full(_))));
        // A permit dropped unused gives its place back.
        drop(p);
        q.try_reserve().unwrap().send(msg("b"));
        assert!(matches!(q.try_reserve(), Err(TrySendError::Full(()))));
        // Control packets pass the bound.
        q.force_send(msg("c")).unwrap();
        assert_eq!(q.lock().packets.len(), 3);
    }

    #[tokio::test]
    async fn closed_refuses_packets_but_yields_those_queued() {
        let q = Arc::new(PacketQueue::new(4));
        let permit_queue = q.clone();
        q.try_send(msg("a")).unwrap();
        let waiter = tokio::spawn({
            let q = q.clone();
            async move { q.closed().await }
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert!(!waiter.is_finished() && !q.is_closed());
        // A permit taken before the close can still be used, as with tokio's channel.
        let permit = permit_queue.try_reserve().unwrap();
        q.close();
        tokio::time::timeout(Duration::from_secs(1), waiter).await.unwrap().unwrap();
        q.closed().await;
        assert!(q.is_closed());
        assert!(matches!(q.try_reserve(), Err(TrySendError::Closed(()))));
        assert!(matches!(q.try_send(msg("x")), Err(TrySendError::Closed(_))));
        assert!(matches!(q.force_send(msg("x")), Err(TrySendError::Closed(_))));
        permit.send(msg("b"));
        assert_eq!(text(q.recv().await), "a");
        assert_eq!(text(q.recv().await), "b");
        assert!(q.recv().await.is_none());
    }

    #[tokio::test]
    async fn wakes_the_consumer_and_sends_volatile_packets_after_queued_ones() {
        let q = Arc::new(PacketQueue::new(4));
        let rx = tokio::spawn({
            let q = q.clone();
            async move { text(q.recv().await) }
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
        q.try_reserve().unwrap().send(msg("a"));
        assert_eq!(tokio::time::timeout(Duration::from_secs(1), rx).await.unwrap().unwrap(), "a");

        q.set_volatile(msg("v1"));
        q.set_volatile(msg("v2"));
        q.try_send(msg("b")).unwrap();
        q.try_send(msg("c")).unwrap();
        assert!(matches!(q.recv_all().await, Some(Taken::Queued(all)) if all.len() == 2));
        assert!(matches!(q.recv().await, Some(Taken::Volatile(_))));
        let rx = tokio::spawn({
            let q = q.clone();
            async move { q.recv_all().await }
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
        q.set_volatile(msg("v3"));
        let got = tokio::time::timeout(Duration::from_secs(1), rx).await.unwrap().unwrap();
        assert!(matches!(got, Some(Taken::Volatile(_))));
    }
}
