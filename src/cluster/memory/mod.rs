//! Single-node implementations of the cluster seams: the state lives in this process, behind one lock per
//! concern. They are what a node runs without Redis.

mod calls;
mod census;
mod dms;
mod presence;
mod ratelimit;
mod roster;
mod typing;

pub use calls::MemoryCalls;
pub use census::MemoryCensus;
pub use dms::MemoryDmClaims;
pub use presence::MemoryPresence;
pub use ratelimit::MemoryRateLimiter;
pub use roster::MemoryRoster;
pub use typing::MemoryTyping;
