//! Application services: the operations both the socket events and the HTTP API perform (join a room, send a
//! message, broadcast), built from the domain rules and the store. No socket handling here.

pub mod messages;
pub mod rooms;
pub mod stats;
