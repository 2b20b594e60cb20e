//! Application services: the operations both the socket events and the HTTP API perform (join a room, send a
//! message, publish presence, count receipts), built from the domain rules and the store. No socket handling.

pub mod messages;
pub mod presence;
pub mod reactions;
pub mod receipts;
pub mod rooms;
pub mod stats;
pub mod typing;
