//! Who a client is behind reverse proxies: `X-Forwarded-For` is believed only as far as the proxies that
//! wrote it are trusted (`REALTIME_TRUSTED_PROXIES`).
//!
//! A proxy such as nginx with `$proxy_add_x_forwarded_for` appends the address it saw to whatever the client
//! sent, so the left of the list is the client's to choose. The client is the right-most entry that is not a
//! trusted proxy: walking from the TCP peer leftwards, every hop is believed only while the hop that reported
//! it is trusted.

use std::net::IpAddr;

/// An address block: an address and a prefix length (`10.0.0.0/8`, `::1/128`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// `1.2.3.4`, `1.2.0.0/16`, `::1`, `fd00::/8`.
    pub fn parse(s: &str) -> Option<Cidr> {
        let (addr, prefix) = match s.trim().split_once('/') {
            Some((a, p)) => (a.trim().parse::<IpAddr>().ok()?, Some(p.trim().parse::<u8>().ok()?)),
            None => (s.trim().parse::<IpAddr>().ok()?, None),
        };
        let addr = addr.to_canonical();
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = prefix.unwrap_or(max);
        (prefix <= max).then_some(Cidr { addr, prefix })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = if self.prefix == 0 { 0 } else { u32::MAX << (32 - self.prefix) };
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = if self.prefix == 0 { 0 } else { u128::MAX << (128 - self.prefix) };
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// The proxies whose forwarding headers are believed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<Cidr>);

impl TrustedProxies {
    /// A comma-separated list of addresses and blocks; `none` (or nothing) trusts no proxy. The error names
    /// the entry that is neither.
    pub fn parse(list: &str) -> Result<TrustedProxies, String> {
        let mut nets = Vec::new();
        for entry in list.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            if entry.eq_ignore_ascii_case("none") {
                continue;
            }
            nets.push(Cidr::parse(entry).ok_or_else(|| format!("{entry:?} is not an IP address or CIDR block"))?);
        }
        Ok(TrustedProxies(nets))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn trusts(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|n| n.contains(ip))
    }

    /// The client's address, given the TCP peer and the `X-Forwarded-For` header values (in order) and
    /// `X-Real-IP`. Without a trusted peer the headers are ignored. An entry that is not an address stops the
    /// walk: the last hop believed is the answer.
    pub fn client_ip(&self, peer: Option<IpAddr>, forwarded_for: &[&str], real_ip: Option<&str>) -> Option<IpAddr> {
        let peer = peer?.to_canonical();
        if !self.trusts(peer) {
            return Some(peer);
        }
        let hops: Vec<&str> = forwarded_for.iter().flat_map(|v| v.split(',')).map(str::trim).collect();
        if hops.iter().all(|h| h.is_empty()) {
            return Some(real_ip.and_then(|r| parse_hop(r.trim())).unwrap_or(peer));
        }
        let mut client = peer;
        for hop in hops.iter().rev() {
            let Some(ip) = parse_hop(hop) else { break };
            client = ip;
            if !self.trusts(ip) {
                break;
            }
        }
        Some(client)
    }
}

/// One `X-Forwarded-For` entry: an address, possibly with a port (`1.2.3.4:5678`, `[::1]:80`).
fn parse_hop(hop: &str) -> Option<IpAddr> {
    if let Ok(ip) = hop.parse::<IpAddr>() {
        return Some(ip.to_canonical());
    }
    if let Ok(sa) = hop.parse::<std::net::SocketAddr>() {
        return Some(sa.ip().to_canonical());
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn blocks_contain_their_addresses() {
        let c = Cidr::parse("10.1.0.0/16").unwrap();
        assert!(c.contains(ip("10.1.200.3")) && !c.contains(ip("10.2.0.1")));
        assert!(Cidr::parse("::1").unwrap().contains(ip("::1")));
        assert!(Cidr::parse("127.0.0.1").unwrap().contains(ip("::ffff:127.0.0.1")), "v4-mapped peers");
        assert!(Cidr::parse("0.0.0.0/0").unwrap().contains(ip("8.8.8.8")));
        assert!(Cidr::parse("10.0.0.0/33").is_none() && Cidr::parse("nginx").is_none());
        assert!(TrustedProxies::parse("127.0.0.1, 10.0.0.0/8").is_ok());
        assert!(TrustedProxies::parse("none").unwrap().is_empty());
        assert!(TrustedProxies::parse("127.0.0.1,proxy").unwrap_err().contains("\"proxy\""));
    }

    #[test]
    fn the_client_is_the_right_most_untrusted_hop() {
        let t = TrustedProxies::parse("127.0.0.1,10.0.0.0/8").unwrap();
        let lo = Some(ip("127.0.0.1"));
        // nginx appended the real client to what the client sent
        assert_eq!(t.client_ip(lo, &["6.6.6.6, 203.0.113.9"], None), Some(ip("203.0.113.9")));
        // a chain of trusted proxies is skipped
        assert_eq!(t.client_ip(lo, &["6.6.6.6, 203.0.113.9, 10.0.0.2"], None), Some(ip("203.0.113.9")));
        // several header lines are one list
        assert_eq!(t.client_ip(lo, &["6.6.6.6", "203.0.113.9:4433"], None), Some(ip("203.0.113.9")));
        // garbage stops the walk at the last believed hop
        assert_eq!(t.client_ip(lo, &["203.0.113.9, junk, 10.0.0.2"], None), Some(ip("10.0.0.2")));
        // X-Real-IP only without X-Forwarded-For
        assert_eq!(t.client_ip(lo, &[], Some("198.51.100.1")), Some(ip("198.51.100.1")));
        assert_eq!(t.client_ip(lo, &[], None), lo);
    }

    #[test]
    fn headers_from_an_untrusted_peer_are_ignored() {
        let t = TrustedProxies::parse("10.0.0.1").unwrap();
        let peer = Some(ip("127.0.0.1"));
        assert_eq!(t.client_ip(peer, &["203.0.113.9"], Some("198.51.100.1")), peer);
        assert_eq!(TrustedProxies::default().client_ip(Some(ip("10.0.0.1")), &["1.2.3.4"], None), Some(ip("10.0.0.1")));
        assert_eq!(t.client_ip(None, &["1.2.3.4"], None), None);
    }
}
