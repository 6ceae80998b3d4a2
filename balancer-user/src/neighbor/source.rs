//! The outer source of a tunnelled backend: the address the kernel prefers for the route to
//! it (`ip route get ADDR` → `src`), read from the routing table as it stands — no probe,
//! no wait (fit to run under the controller's lock). A gateway is fine: the outer packet
//! is routed.

use std::{io, net::IpAddr};

use super::{
    locate::{netlink, route},
    parse,
    rtnl::Rtnl,
    NeighborError,
};

/// For each of `addrs`, the source address the kernel prefers for the route to it; a
/// backend without a route is [`NeighborError::NoRoute`].
pub fn sources(addrs: &[IpAddr]) -> Vec<Result<IpAddr, NeighborError>> {
    let mut rtnl = match Rtnl::open() {
        Ok(rtnl) => rtnl,
        Err(e) => {
            return addrs
                .iter()
                .map(|_| {
                    Err(netlink(
                        "routing table",
                        io::Error::new(e.kind(), e.to_string()),
                    ))
                })
                .collect();
        }
    };
    addrs
        .iter()
        .map(|addr| parse::route_source(*addr, &route(&mut rtnl, *addr)?))
        .collect()
}
