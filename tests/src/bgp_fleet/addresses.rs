//! The address plan of the BGP fleet: the client's link 198.18.20.0/24 and
//! 2001:db8:20::/64, the LB hosts' segment 198.18.21.0/24 and 2001:db8:21::/64 (the router
//! `.1` / `::1` on both); LB host `i` at `.(11 + i)` / `::(0xb + i)`, backend `j` at
//! `.(101 + j)` / `::(0x65 + j)` on the segment; the VIPs are the labs' ([`crate::topology::VIP4`], [`crate::topology::VIP6`]).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The third octet (and third IPv6 group) of the client's link.
const CLIENT_LINK: u8 = 20;
/// The third octet (and third IPv6 group) of the LB hosts' segment.
const SEGMENT: u8 = 21;
/// The router's host number on both links.
const ROUTER_HOST: u8 = 1;
/// The client's host number.
const CLIENT_HOST: u8 = 0x10;
/// LB host 0's host number; host `i` is this plus `i`.
const FIRST_LB_HOST: u8 = 11;
/// Backend 0's host number; backend `j` is this plus `j`.
const FIRST_BACKEND_HOST: u8 = 101;
/// Most LB hosts the plan has room for.
pub(crate) const MAX_HOSTS: usize = 8;
/// Most backends the plan has room for.
pub(crate) const MAX_BACKENDS: usize = 100;

/// Host `host` on link `link` (its IPv6 group spells the same digits: 21 is `:21:`).
fn on(link: u8, host: u8, v6: bool) -> IpAddr {
    match v6 {
        false => IpAddr::V4(Ipv4Addr::new(198, 18, link, host)),
        true => IpAddr::V6(Ipv6Addr::new(
            0x2001,
            0xdb8,
            u16::from(link / 10) << 4 | u16::from(link % 10),
            0,
            0,
            0,
            0,
            host.into(),
        )),
    }
}

/// The client's address.
pub(crate) fn client(v6: bool) -> IpAddr {
    on(CLIENT_LINK, CLIENT_HOST, v6)
}

/// The router's address on the client's link.
pub(crate) fn router_client_side(v6: bool) -> IpAddr {
    on(CLIENT_LINK, ROUTER_HOST, v6)
}

/// The router's address on the LB hosts' segment (their BGP neighbour and gateway).
pub(crate) fn router(v6: bool) -> IpAddr {
    on(SEGMENT, ROUTER_HOST, v6)
}

/// LB host `index`'s address.
pub(crate) fn lb(index: usize, v6: bool) -> IpAddr {
    assert!(index < MAX_HOSTS, "LB host {index} is outside the plan");
    on(SEGMENT, FIRST_LB_HOST + index as u8, v6)
}

/// Backend `index`'s address.
pub(crate) fn backend(index: usize, v6: bool) -> IpAddr {
    assert!(index < MAX_BACKENDS, "backend {index} is outside the plan");
    on(SEGMENT, FIRST_BACKEND_HOST + index as u8, v6)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plan_spells_the_documented_addresses() {
        assert_eq!(client(false).to_string(), "198.18.20.16");
        assert_eq!(router(true).to_string(), "2001:db8:21::1");
        assert_eq!(lb(2, false).to_string(), "198.18.21.13");
        assert_eq!(backend(1, true).to_string(), "2001:db8:21::66");
    }
}
