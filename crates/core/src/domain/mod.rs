//! The domain core: rooms, policies, occupancy, rate limits (and presence, typing, receipts). It knows no
//! sockets and no SQL; the transport and the store feed it facts and act on its decisions.

pub mod calls;
pub mod fairness;
pub mod names;
pub mod occupancy;
pub mod policy;
pub mod presence;
pub mod proxies;
pub mod ratelimit;
pub mod receipts;
pub mod time;
pub mod typing;
