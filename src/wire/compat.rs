//! The `compat` dialect (docs/protocol.md §13.3): a socket that sends only `{token}` may be the QUICKSTART
//! page or a client of docs/protocol.md, or nchat's `lib/socket` or `socketManager` (they cannot be told
//! apart). It gets every event of the contract exactly as the contract renders it, and the events of those
//! stacks besides; a name both use is sent once, as one payload every reader accepts. Inbound, it takes the
//! events of all of them (`socket::handle`).

use super::{Packet, contract, socket};
use crate::app::events::Event;

/// The contract's rendering of an event (superset payloads for shared names) and the stacks' own events.
pub fn render(event: &Event) -> Vec<Packet<'_>> {
    let mut out = Vec::with_capacity(2);
    match socket::shared(event) {
        Some(p) => out.push(p),
        None => out.extend(contract::render(event)),
    }
    out.extend(socket::extras(event));
    out
}

/// The sending socket's own copy of its message (with its `tempId`).
pub fn render_origin(event: &Event) -> Option<Vec<Packet<'_>>> {
    socket::origin_copy(event, render(event))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::events::{Author, RoomPresence};

    #[test]
    fn the_contract_events_come_first_and_unchanged() {
        let p = RoomPresence { room: "channel:c1".into(), user: "ann".into(), author: Author::default(), at: 0 };
        let event = Event::UserJoined(p);
        let packets = render(&event);
        let names: Vec<&str> = packets.iter().map(|(n, _)| n.as_ref()).collect();
        assert_eq!(names, ["user:joined", "channel:member:join", "channel:member_join"]);
        assert_eq!(packets[0], contract::render(&event).unwrap(), "the contract's payload, untouched");
        let (_, member) = &packets[1];
        assert_eq!((member["channelId"].as_str(), member["userId"].as_str()), (Some("c1"), Some("ann")));
        assert!(member["joinedAt"].is_string());
    }
}
