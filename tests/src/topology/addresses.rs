//! The address plan: 198.18.0.0/15 and 2001:db8::/32 only.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// IPv4 virtual IP, configured on every backend's `lo`.
pub const VIP4: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 19, 0, 1));
/// IPv6 virtual IP, configured on every backend's `lo`.
pub const VIP6: IpAddr = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0xffff, 0, 0, 0, 0, 1));
/// The client's main IPv4 address.
pub const CLIENT_V4: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 10));
/// The client's main IPv6 address.
pub const CLIENT_V6: IpAddr = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x10));
/// The load balancer host's IPv4 address (the client's route to the VIPs).
pub const LB_V4: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 2));
/// The load balancer host's IPv6 address (the client's route to the VIPs).
pub const LB_V6: IpAddr = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2));

/// Most backends the plan has room for (198.18.0.101 ..= 198.18.0.200).
pub(crate) const MAX_BACKENDS: usize = 100;
/// Most extra client addresses the plan has room for (198.18.2.1 ..= .250).
pub(crate) const MAX_EXTRA_CLIENTS: u8 = 250;

/// VIP range routed from the client to the load balancer, IPv4.
pub(crate) const VIP4_ROUTE: &str = "198.19.0.0/24";
/// VIP range routed from the client to the load balancer, IPv6.
pub(crate) const VIP6_ROUTE: &str = "2001:db8:ffff::/64";
/// Range of the extra client addresses, routed back from backends, IPv4.
pub(crate) const EXTRA_CLIENTS_V4_ROUTE: &str = "198.18.2.0/24";
/// Range of the extra client addresses, routed back from backends, IPv6.
pub(crate) const EXTRA_CLIENTS_V6_ROUTE: &str = "2001:db8:2::/64";
/// Prefix length of the shared link, IPv4.
pub(crate) const LINK_PREFIX_V4: u8 = 24;
/// Prefix length of the shared link, IPv6.
pub(crate) const LINK_PREFIX_V6: u8 = 64;

/// Backend `index`'s IPv4 address: 198.18.0.(101 + index).
pub(crate) fn backend_v4(index: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(
        198,
        18,
        0,
        101 + checked(index, MAX_BACKENDS),
    ))
}

/// Backend `index`'s IPv6 address: 2001:db8::(0x101 + index).
pub(crate) fn backend_v6(index: usize) -> IpAddr {
    IpAddr::V6(Ipv6Addr::new(
        0x2001,
        0xdb8,
        0,
        0,
        0,
        0,
        0,
        0x101 + u16::from(checked(index, MAX_BACKENDS)),
    ))
}

/// Extra client address `index` (from 0), IPv4: 198.18.2.(index + 1).
pub(crate) fn extra_client_v4(index: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(
        198,
        18,
        2,
        1 + checked(index, MAX_EXTRA_CLIENTS.into()),
    ))
}

/// Extra client address `index` (from 0), IPv6: 2001:db8:2::(index + 1).
pub(crate) fn extra_client_v6(index: usize) -> IpAddr {
    IpAddr::V6(Ipv6Addr::new(
        0x2001,
        0xdb8,
        2,
        0,
        0,
        0,
        0,
        1 + u16::from(checked(index, MAX_EXTRA_CLIENTS.into())),
    ))
}

/// `index` as a byte, panicking unless it is below `limit`; the limits keep
/// every address above within its octet.
fn checked(index: usize, limit: usize) -> u8 {
    assert!(
        index < limit,
        "address index {index} is outside the address plan (limit {limit})"
    );
    u8::try_from(index).expect("limits are below 256")
}
