//! The Socket.IO adapter of a node: socketioxide's local adapter on a single node, the Redis adapter
//! (socketioxide-redis over [`PubSubDriver`]) when the node is part of a cluster. One type for both, chosen
//! at start by the adapter state: a single node pays nothing for the cluster's existence (no encoding, no
//! publish), and with Redis every room operation (broadcast, join, leave, disconnect) reaches the sockets of
//! every node with one publish.
//!
//! The driver makes the Redis adapter safe while Redis is away: its publish only queues (so the adapter's
//! `broadcast`, which publishes before it delivers locally and returns early on a publish error, always
//! reaches this node's sockets), and its subscriptions come back by themselves after a Redis restart.

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::Either;
use socketioxide::adapter::Emitter;
use socketioxide_core::adapter::errors::{AdapterError, BroadcastError};
use socketioxide_core::adapter::{
    BroadcastOptions, CoreAdapter, CoreLocalAdapter, DefinedAdapter, RemoteSocketData, Room, RoomParam, Spawnable,
};
use socketioxide_core::packet::Packet;
use socketioxide_redis::{CustomRedisAdapter, RedisAdapterConfig, RedisAdapterCtr};

use crate::cluster::redis::pubsub::PubSubDriver;

type Remote = CustomRedisAdapter<Emitter, PubSubDriver>;

/// How the node's namespaces are built: alone, or over Redis.
pub enum AdapterState {
    Local,
    Cluster(RedisAdapterCtr<PubSubDriver>),
}

impl AdapterState {
    /// Over Redis: channels are `<prefix>-request#/#...` (see socketioxide-redis).
    pub fn cluster(driver: PubSubDriver, prefix: &str) -> AdapterState {
        let config = RedisAdapterConfig::new()
            .with_prefix(format!("{prefix}:sio"))
            .with_request_timeout(Duration::from_secs(2))
            .with_stream_buffer(16_384);
        AdapterState::Cluster(RedisAdapterCtr::new_with_driver(driver, config))
    }
}

/// The adapter (see the module doc).
pub enum NodeAdapter {
    Local(CoreLocalAdapter<Emitter>),
    /// Shared with the task that receives the other nodes' requests.
    Cluster(Arc<Remote>),
}

impl DefinedAdapter for NodeAdapter {}

/// The init of a namespace: nothing to wait for alone; the subscriptions with Redis.
pub struct Init(Option<<Remote as CoreAdapter<Emitter>>::InitRes>);

impl Init {
    /// Waits until the namespace is registered (with Redis: once its channels are subscribed, which the
    /// driver never fails; while Redis is away the subscriptions are made when it answers).
    pub async fn done(self) {
        if let Some(init) = self.0
            && let Err(e) = init.await
        {
            tracing::error!(error = %e, "cannot register the Socket.IO namespace");
        }
    }
}

impl Spawnable for Init {
    fn spawn(self) {
        if let Some(init) = self.0 {
            init.spawn();
        }
    }
}

impl CoreAdapter<Emitter> for NodeAdapter {
    type Error = AdapterError;
    type State = AdapterState;
    type AckStream = <Remote as CoreAdapter<Emitter>>::AckStream;
    type InitRes = Init;

    fn new(state: &Self::State, local: CoreLocalAdapter<Emitter>) -> Self {
        match state {
            AdapterState::Local => NodeAdapter::Local(local),
            AdapterState::Cluster(ctr) => NodeAdapter::Cluster(Arc::new(Remote::new(ctr, local))),
        }
    }

    fn init(self: Arc<Self>, on_success: impl FnOnce() + Send + 'static) -> Self::InitRes {
        match &*self {
            NodeAdapter::Local(_) => {
                on_success();
                Init(None)
            }
            NodeAdapter::Cluster(r) => Init(Some(r.clone().init(on_success))),
        }
    }

    async fn close(&self) -> Result<(), Self::Error> {
        match self {
            NodeAdapter::Local(_) => Ok(()),
            NodeAdapter::Cluster(r) => r.close().await.map_err(AdapterError::from),
        }
    }

    async fn server_count(&self) -> Result<u16, Self::Error> {
        match self {
            NodeAdapter::Local(_) => Ok(1),
            NodeAdapter::Cluster(r) => r.server_count().await.map_err(AdapterError::from),
        }
    }

    async fn broadcast(&self, packet: Packet, opts: BroadcastOptions) -> Result<(), BroadcastError> {
        match self {
            NodeAdapter::Local(l) => l.broadcast(packet, opts).map_err(BroadcastError::from),
            NodeAdapter::Cluster(r) => r.broadcast(packet, opts).await,
        }
    }

    async fn broadcast_with_ack(
        &self,
        packet: Packet,
        opts: BroadcastOptions,
        timeout: Option<Duration>,
    ) -> Result<Self::AckStream, Self::Error> {
        match self {
            NodeAdapter::Local(l) => Ok(Either::Left(l.broadcast_with_ack(packet, opts, timeout).0)),
            NodeAdapter::Cluster(r) => r.broadcast_with_ack(packet, opts, timeout).await.map_err(AdapterError::from),
        }
    }

    async fn add_sockets(&self, opts: BroadcastOptions, rooms: impl RoomParam) -> Result<(), Self::Error> {
        match self {
            NodeAdapter::Local(l) => {
                l.add_sockets(opts, rooms);
                Ok(())
            }
            NodeAdapter::Cluster(r) => r.add_sockets(opts, rooms).await.map_err(AdapterError::from),
        }
    }

    async fn del_sockets(&self, opts: BroadcastOptions, rooms: impl RoomParam) -> Result<(), Self::Error> {
        match self {
            NodeAdapter::Local(l) => {
                l.del_sockets(opts, rooms);
                Ok(())
            }
            NodeAdapter::Cluster(r) => r.del_sockets(opts, rooms).await.map_err(AdapterError::from),
        }
    }

    async fn disconnect_socket(&self, opts: BroadcastOptions) -> Result<(), BroadcastError> {
        match self {
            NodeAdapter::Local(l) => l.disconnect_socket(opts).map_err(BroadcastError::Socket),
            NodeAdapter::Cluster(r) => r.disconnect_socket(opts).await,
        }
    }

    async fn rooms(&self, opts: BroadcastOptions) -> Result<Vec<Room>, Self::Error> {
        match self {
            NodeAdapter::Local(l) => Ok(l.rooms(opts).into_iter().collect()),
            NodeAdapter::Cluster(r) => r.rooms(opts).await.map_err(AdapterError::from),
        }
    }

    async fn fetch_sockets(&self, opts: BroadcastOptions) -> Result<Vec<RemoteSocketData>, Self::Error> {
        match self {
            NodeAdapter::Local(l) => Ok(l.fetch_sockets(opts)),
            NodeAdapter::Cluster(r) => r.fetch_sockets(opts).await.map_err(AdapterError::from),
        }
    }

    fn get_local(&self) -> &CoreLocalAdapter<Emitter> {
        match self {
            NodeAdapter::Local(l) => l,
            NodeAdapter::Cluster(r) => r.get_local(),
        }
    }
}
