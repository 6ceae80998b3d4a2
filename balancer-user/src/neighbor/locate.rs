//! Locating backends in the kernel's tables over rtnetlink: the route towards each (which
//! interface, refusing gateways), that interface's MAC, and the neighbour entry's MAC —
//! optionally probing the missing ones and waiting for them.

use std::{
    collections::HashMap,
    io,
    net::IpAddr,
    time::{Duration, Instant},
};

use netlink_packet_route::{
    link::LinkMessage,
    neighbour::{NeighbourAddress, NeighbourAttribute, NeighbourMessage},
    route::{RouteAddress, RouteAttribute, RouteMessage},
    AddressFamily, RouteNetlinkMessage,
};

use super::{
    nudge::nudge,
    parse::{self, Entry, Link},
    rtnl::Rtnl,
    NeighborError, NextHop, RESOLVE_TIMEOUT,
};

/// How often a probed neighbour entry is looked at again.
const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// Where each of `addrs` is, from the kernel's tables as they stand: no probe, no wait. A
/// backend without a usable neighbour entry is [`NeighborError::Unresolved`].
pub fn locate(addrs: &[IpAddr]) -> Vec<Result<NextHop, NeighborError>> {
    find(addrs, None)
}

/// Like [`locate`], but probes each backend whose neighbour entry is missing (one ICMP
/// echo: the kernel then resolves it) and waits for them all, at most
/// [`RESOLVE_TIMEOUT`] in total.
pub fn resolve(addrs: &[IpAddr]) -> Vec<Result<NextHop, NeighborError>> {
    find(addrs, Some(RESOLVE_TIMEOUT))
}

/// Probes each of `addrs` (one ICMP echo each) without waiting: the kernel's neighbour
/// notifications tell what comes of it.
pub fn probe(addrs: &[IpAddr]) {
    addrs.iter().copied().for_each(nudge);
}

/// A backend whose interface is known.
struct Placed {
    addr: IpAddr,
    ifindex: u32,
    link: Link,
}

impl Placed {
    fn hop(&self, dst_mac: [u8; 6]) -> NextHop {
        NextHop {
            ifindex: self.ifindex,
            src_mac: self.link.mac,
            dst_mac,
        }
    }
}

fn find(addrs: &[IpAddr], wait: Option<Duration>) -> Vec<Result<NextHop, NeighborError>> {
    let mut tables = match Tables::open() {
        Ok(tables) => tables,
        Err(e) => {
            return addrs
                .iter()
                .map(|_| {
                    Err(netlink(
                        "routing tables",
                        io::Error::new(e.kind(), e.to_string()),
                    ))
                })
                .collect();
        }
    };
    let mut results = Vec::with_capacity(addrs.len());
    let mut pending = Vec::new();
    for (i, addr) in addrs.iter().enumerate() {
        let found = tables.place(*addr).and_then(|placed| {
            match tables.neighbour(placed.addr, placed.ifindex)? {
                Some(mac) => Ok(Ok(placed.hop(mac))),
                None => Ok(Err(placed)),
            }
        });
        results.push(match found {
            Ok(Ok(hop)) => Ok(hop),
            Ok(Err(placed)) => {
                let unresolved = NeighborError::Unresolved(*addr, placed.link.name.clone());
                pending.push((i, placed));
                Err(unresolved)
            }
            Err(e) => Err(e),
        });
    }
    let Some(wait) = wait else {
        return results;
    };
    pending.iter().for_each(|(_, placed)| nudge(placed.addr));
    let deadline = Instant::now() + wait;
    while !pending.is_empty() && Instant::now() < deadline {
        std::thread::sleep(POLL_INTERVAL);
        let mut still = Vec::new();
        for (i, placed) in pending {
            match tables.neighbour(placed.addr, placed.ifindex) {
                Ok(Some(mac)) => results[i] = Ok(placed.hop(mac)),
                Ok(None) => still.push((i, placed)),
                Err(e) => results[i] = Err(e),
            }
        }
        pending = still;
    }
    results
}

/// One request socket and the interfaces already looked up.
struct Tables {
    rtnl: Rtnl,
    links: HashMap<u32, Link>,
}

impl Tables {
    fn open() -> io::Result<Self> {
        Ok(Self {
            rtnl: Rtnl::open()?,
            links: HashMap::new(),
        })
    }

    /// The interface towards `addr`, if it is on a directly connected network.
    fn place(&mut self, addr: IpAddr) -> Result<Placed, NeighborError> {
        let route = route(&mut self.rtnl, addr)?;
        let ifindex = parse::route_interface(addr, &route)?;
        let link = self.link(ifindex)?;
        Ok(Placed {
            addr,
            ifindex,
            link,
        })
    }

    /// Interface `ifindex`'s MAC and name.
    fn link(&mut self, ifindex: u32) -> Result<Link, NeighborError> {
        if let Some(link) = self.links.get(&ifindex) {
            return Ok(link.clone());
        }
        let mut request = LinkMessage::default();
        request.header.index = ifindex;
        let answer = self
            .rtnl
            .get(RouteNetlinkMessage::GetLink(request))
            .map_err(|e| netlink("interfaces", e))?;
        let RouteNetlinkMessage::NewLink(message) = answer else {
            return Err(unexpected("interfaces"));
        };
        let link = parse::link(&message).ok_or_else(|| {
            netlink(
                "interfaces",
                io::Error::other(format!("interface {ifindex} has no Ethernet address")),
            )
        })?;
        self.links.insert(ifindex, link.clone());
        Ok(link)
    }

    /// The MAC of `addr`'s neighbour entry on `ifindex`, if the entry is usable.
    fn neighbour(&mut self, addr: IpAddr, ifindex: u32) -> Result<Option<[u8; 6]>, NeighborError> {
        let mut request = NeighbourMessage::default();
        request.header.family = family(addr);
        request.header.ifindex = ifindex;
        let destination = match addr {
            IpAddr::V4(a) => NeighbourAddress::Inet(a),
            IpAddr::V6(a) => NeighbourAddress::Inet6(a),
        };
        request
            .attributes
            .push(NeighbourAttribute::Destination(destination));
        let answer = match self.rtnl.get(RouteNetlinkMessage::GetNeighbour(request)) {
            Ok(answer) => answer,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(None),
            Err(e) => return Err(netlink("neighbour table", e)),
        };
        let RouteNetlinkMessage::NewNeighbour(message) = answer else {
            return Err(unexpected("neighbour table"));
        };
        Ok(match parse::neighbour(&message).map(|n| n.state) {
            Some(Entry::Usable(mac)) => Some(mac),
            _ => None,
        })
    }
}

/// The kernel's route to `addr` (RTM_GETROUTE, as `ip route get` asks it).
pub(super) fn route(rtnl: &mut Rtnl, addr: IpAddr) -> Result<RouteMessage, NeighborError> {
    let mut request = RouteMessage::default();
    request.header.address_family = family(addr);
    request.header.destination_prefix_length = if addr.is_ipv4() { 32 } else { 128 };
    request
        .attributes
        .push(RouteAttribute::Destination(RouteAddress::from(addr)));
    let answer = match rtnl.get(RouteNetlinkMessage::GetRoute(request)) {
        Ok(answer) => answer,
        Err(e) if is_no_route(&e) => return Err(NeighborError::NoRoute(addr)),
        Err(e) => return Err(netlink("routing table", e)),
    };
    let RouteNetlinkMessage::NewRoute(route) = answer else {
        return Err(unexpected("routing table"));
    };
    Ok(route)
}

fn family(addr: IpAddr) -> AddressFamily {
    match addr {
        IpAddr::V4(_) => AddressFamily::Inet,
        IpAddr::V6(_) => AddressFamily::Inet6,
    }
}

/// The errors of a route lookup that mean "no route", as `ip route get` reports them.
fn is_no_route(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::ENETUNREACH | libc::EHOSTUNREACH | libc::ENETDOWN | libc::EACCES)
    )
}

pub(super) fn netlink(what: &'static str, source: io::Error) -> NeighborError {
    NeighborError::Netlink { what, source }
}

fn unexpected(what: &'static str) -> NeighborError {
    netlink(what, io::Error::other("unexpected answer"))
}
