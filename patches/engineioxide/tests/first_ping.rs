//! The first ping is sent a ping interval after the session opens, as Node's engine.io sends it: not at once,
//! which cost every new connection a ping/pong round trip.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use bytes::Bytes;
use engineioxide::{
    Str,
    config::EngineIoConfig,
    handler::EngineIoHandler,
    service::EngineIoService,
    socket::{DisconnectReason, Socket},
};
use futures_util::StreamExt;
use tokio_tungstenite::tungstenite::Message;

mod fixture;

use fixture::{create_polling_connection, create_ws_connection, send_req_raw};

#[derive(Debug)]
struct MyHandler;

impl EngineIoHandler for MyHandler {
    type Data = ();

    fn on_connect(self: Arc<Self>, _: Arc<Socket<()>>) {}
    fn on_disconnect(&self, _: Arc<Socket<()>>, _: DisconnectReason) {}
    fn on_message(self: &Arc<Self>, _: Str, _: Arc<Socket<()>>) {}
    fn on_binary(self: &Arc<Self>, _: Bytes, _: Arc<Socket<()>>) {}
}

const INTERVAL: Duration = Duration::from_millis(400);

fn server() -> EngineIoService<MyHandler> {
    let config = EngineIoConfig::builder().ping_interval(INTERVAL).ping_timeout(Duration::from_secs(10)).build();
    EngineIoService::with_config(Arc::new(MyHandler), config)
}

#[tokio::test]
async fn websocket_first_ping_after_one_interval() {
    let mut svc = server();
    let opened = Instant::now();
    let mut ws = create_ws_connection(&mut svc).await;
    let ping = loop {
        let msg = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("no ping within 5 s")
            .expect("the websocket ended")
            .unwrap();
        match msg {
            Message::Text(t) if t.as_str().starts_with('0') => continue, // the open packet
            other => break other,
        }
    };
    let after = opened.elapsed();
    assert_eq!(ping, Message::text("2"));
    assert!(after >= INTERVAL, "the first ping came {after:?} after the open, before the {INTERVAL:?} interval");
}

#[tokio::test]
async fn polling_first_ping_after_one_interval() {
    let mut svc = server();
    let sid = create_polling_connection(&mut svc).await;
    let opened = Instant::now();
    // The poll waits for the first packet the server has for the session: the ping.
    let body = send_req_raw(&mut svc, format!("transport=polling&sid={sid}"), http::Method::GET, None).await;
    let after = opened.elapsed();
    assert_eq!(body, "2");
    assert!(after >= INTERVAL * 9 / 10, "the first ping came {after:?} after the open, before the {INTERVAL:?} interval");
}
