//! The byte bound of a socket's outbound queue, carried in the vendored engineioxide
//! (`patches/engineioxide`, `set_max_buffer_bytes`). The bound is process-wide, so these tests live in a test
//! binary of their own. The sockets are engineioxide's test sockets, whose queue is drained into a channel the
//! test reads (or does not).

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use engineioxide::socket::{DisconnectReason, Sid, set_max_buffer_bytes};
use engineioxide::{Socket, Str};

const LIMIT: usize = 10_000;

/// Every overflow reported: the socket and the bytes queued.
type Overflows = Arc<Mutex<Vec<(Sid, usize)>>>;

/// The overflows reported for `sid` (the bound and its hook are set once for the tests running in parallel).
fn overflows(sid: Sid) -> Vec<usize> {
    static LOG: OnceLock<Overflows> = OnceLock::new();
    let log = LOG.get_or_init(|| {
        let log: Overflows = Arc::default();
        let to = log.clone();
        set_max_buffer_bytes(LIMIT, move |sid, _, queued| to.lock().unwrap().push((sid, queued)));
        log
    });
    log.lock().unwrap().iter().filter(|(s, _)| *s == sid).map(|(_, q)| *q).collect()
}

fn message(len: usize) -> Str {
    Str::from("x".repeat(len))
}

#[tokio::test]
async fn a_socket_whose_queue_passes_the_bound_is_closed_once_and_reported() {
    overflows(Sid::new());
    let closed: Arc<Mutex<Vec<DisconnectReason>>> = Arc::default();
    let on_close = closed.clone();
    let sid = Sid::new();
    // Nothing reads `_rx`, and nothing is taken off the queue while this test does not yield.
    let (socket, _rx) =
        Socket::<()>::new_dummy_piped(sid, Box::new(move |_, reason| on_close.lock().unwrap().push(reason)), 64);
    let mut accepted = 0;
    while socket.reserve().map(|p| p.emit(message(4000))).is_ok() {
        accepted += 1;
        assert!(accepted < 64, "the byte bound refuses packets long before the packet bound");
    }
    // 3 × 4000 bytes pass 10,000: the fourth packet is refused.
    assert_eq!(accepted, 3);
    assert_eq!(overflows(sid), vec![12_000]);
    assert_eq!(*closed.lock().unwrap(), vec![DisconnectReason::TransportError]);
    // Refused from then on, reported and closed only once.
    assert!(socket.reserve().is_err());
    assert_eq!(overflows(sid).len(), 1);
    assert_eq!(closed.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn bytes_taken_off_the_queue_no_longer_count() {
    overflows(Sid::new());
    let (socket, mut rx) = Socket::<()>::new_dummy_piped(Sid::new(), Box::new(|_, _| {}), 64);
    // 100 × 2000 bytes go through, 2 at a time: far more than the bound, never more than 4000 queued.
    for _ in 0..50 {
        for _ in 0..2 {
            socket.reserve().expect("a socket whose client reads is never refused").emit(message(2000));
        }
        for _ in 0..2 {
            let packet = tokio::time::timeout(Duration::from_secs(5), rx.recv()).await.unwrap().unwrap();
            assert!(matches!(packet, engineioxide::Packet::Message(m) if m.len() == 2000));
        }
    }
    // Binary packets count too (and emit() besides reserve()).
    for _ in 0..5 {
        socket.emit_binary(vec![0u8; 2000]).unwrap();
    }
    assert!(socket.reserve().is_ok(), "10,000 bytes queued is at the bound, not past it");
    assert!(overflows(socket.id).is_empty());
    socket.emit_binary(vec![0u8; 1]).unwrap();
    assert!(socket.reserve().is_err(), "10,001 bytes queued is past the bound");
}
