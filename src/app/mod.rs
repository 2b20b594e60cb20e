//! The application: typed requests in, typed results and events out. Each part owns its state (through a
//! cluster backend) and its timer; parts talk to sockets only through the fan-out and a session's link, and
//! never see a wire payload. Shared by the socket dialects and the HTTP API.

pub mod calls;
pub mod cluster;
pub mod connections;
pub mod dms;
pub mod events;
pub mod health;
pub mod messages;
pub mod presence;
pub mod reactions;
pub mod receipts;
pub mod rooms;
pub mod session;
pub mod stats;
pub mod typing;
pub mod upkeep;
pub mod worker;

/// The fan-out as the application uses it: its own events, to rooms and users on every node.
pub type Fanout = dyn crate::cluster::Fanout<events::Event>;

/// The roster, shared by the parts.
pub type RosterRef = std::sync::Arc<dyn crate::cluster::Roster>;
