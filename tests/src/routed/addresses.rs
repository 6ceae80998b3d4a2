//! The routed topology's address plan: three links, each an IPv4 /24 in 198.18.0.0/15 and
//! an IPv6 /64 in 2001:db8::/32, the router at `.1` / `::1` on each. The VIPs are those of
//! the bridged topology ([`crate::topology::VIP4`], [`crate::topology::VIP6`]).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// One link behind a router port: its IPv4 /24 is `198.18.{third}.0/24`, its IPv6 /64
/// `2001:db8:{third}::/64`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Subnet {
    third: u8,
}

/// The client's link.
pub(crate) const CLIENT_SUBNET: Subnet = Subnet { third: 1 };
/// The load balancer's link.
pub(crate) const LB_SUBNET: Subnet = Subnet { third: 4 };
/// The backends' link (a bridge in the router's namespace).
pub(crate) const BACKEND_SUBNET: Subnet = Subnet { third: 8 };

/// The router's host number on every link.
const ROUTER_HOST: u16 = 1;
/// The load balancer's host number on its link.
const LB_HOST: u16 = 2;
/// The client's host number on its link.
const CLIENT_HOST: u16 = 0x10;
/// Host number of backend 0; backend `i` is this plus `i`.
const FIRST_BACKEND_HOST: u16 = 0x65;
/// Most backends the backends' link has room for (host numbers 0x65 ..= 0xc8).
pub(crate) const MAX_BACKENDS: usize = 100;

impl Subnet {
    /// Host `host`'s IPv4 address on this link (`host` below 256).
    fn v4(self, host: u16) -> IpAddr {
        let host = u8::try_from(host).expect("host numbers fit an octet");
        IpAddr::V4(Ipv4Addr::new(198, 18, self.third, host))
    }

    /// Host `host`'s IPv6 address on this link.
    fn v6(self, host: u16) -> IpAddr {
        IpAddr::V6(Ipv6Addr::new(
            0x2001,
            0xdb8,
            self.third.into(),
            0,
            0,
            0,
            0,
            host,
        ))
    }

    /// The router's address on this link, IPv4 or IPv6.
    pub(crate) fn router(self, v6: bool) -> IpAddr {
        self.host(ROUTER_HOST, v6)
    }

    fn host(self, host: u16, v6: bool) -> IpAddr {
        match v6 {
            true => self.v6(host),
            false => self.v4(host),
        }
    }
}

/// The client's address.
pub(crate) fn client(v6: bool) -> IpAddr {
    CLIENT_SUBNET.host(CLIENT_HOST, v6)
}

/// The load balancer's address on its link to the router.
pub(crate) fn lb(v6: bool) -> IpAddr {
    LB_SUBNET.host(LB_HOST, v6)
}

/// Backend `index`'s address: 198.18.8.(101 + index), 2001:db8:8::(0x65 + index).
pub(crate) fn backend(index: usize, v6: bool) -> IpAddr {
    assert!(
        index < MAX_BACKENDS,
        "backend {index} is outside the address plan (at most {MAX_BACKENDS})"
    );
    let offset = u16::try_from(index).expect("below MAX_BACKENDS");
    BACKEND_SUBNET.host(FIRST_BACKEND_HOST + offset, v6)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plan_spells_the_documented_addresses() {
        assert_eq!(client(false).to_string(), "198.18.1.16");
        assert_eq!(lb(true).to_string(), "2001:db8:4::2");
        assert_eq!(backend(0, false).to_string(), "198.18.8.101");
        assert_eq!(backend(1, true).to_string(), "2001:db8:8::66");
        assert_eq!(BACKEND_SUBNET.router(false).to_string(), "198.18.8.1");
        assert_eq!(BACKEND_SUBNET.router(true).to_string(), "2001:db8:8::1");
    }
}
