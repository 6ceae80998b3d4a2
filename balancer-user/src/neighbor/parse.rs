//! What the kernel's rtnetlink messages say about a backend, as plain values: the route
//! towards it, an interface's MAC and name, a neighbour entry, and which notifications
//! matter. Pure functions of the messages.

use std::net::IpAddr;

use netlink_packet_route::{
    link::{LinkAttribute, LinkMessage},
    neighbour::{
        NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
    },
    route::{RouteAddress, RouteAttribute, RouteMessage, RouteType, RouteVia},
    AddressFamily, RouteNetlinkMessage,
};

use super::{follow::Sighting, NeighborError};

/// An interface: its MAC and name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Link {
    /// Its MAC.
    pub(super) mac: [u8; 6],
    /// Its name.
    pub(super) name: String,
}

/// A neighbour entry of the kernel, as far as it matters here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Neighbour {
    /// Its address.
    pub(super) addr: IpAddr,
    /// The interface it is on.
    pub(super) ifindex: u32,
    /// What the entry says.
    pub(super) state: Entry,
}

/// What a neighbour entry says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Entry {
    /// A MAC the kernel would send to (reachable, stale, delay, probe, permanent).
    Usable([u8; 6]),
    /// Resolution failed: the neighbour does not answer.
    Failed,
    /// Anything else (resolution under way, no link-layer address).
    Pending,
}

/// What one kernel notification means for the backends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Event {
    /// A neighbour entry changed.
    Sighting(IpAddr, Sighting),
    /// Links or routes changed: every backend may be elsewhere now.
    Resync,
}

/// The interface a route answer leaves through, when the destination `addr` is on a
/// directly connected network.
pub(super) fn route_interface(addr: IpAddr, route: &RouteMessage) -> Result<u32, NeighborError> {
    let mut oif = None;
    for attribute in &route.attributes {
        match attribute {
            RouteAttribute::Gateway(gateway) => {
                return Err(NeighborError::Routed(addr, route_address(gateway)));
            }
            RouteAttribute::Via(via) => return Err(NeighborError::Routed(addr, via_address(via))),
            RouteAttribute::MultiPath(_) => {
                return Err(NeighborError::Routed(addr, "a multipath route".into()));
            }
            RouteAttribute::Oif(index) => oif = Some(*index),
            _ => {}
        }
    }
    if route.header.kind != RouteType::Unicast {
        return Err(NeighborError::NoRoute(addr));
    }
    oif.ok_or(NeighborError::NoRoute(addr))
}

/// The source address the kernel prefers for a route answer to `addr`, when the route is
/// a unicast one (directly connected or through a gateway: a tunnel is routed).
pub(super) fn route_source(addr: IpAddr, route: &RouteMessage) -> Result<IpAddr, NeighborError> {
    if route.header.kind != RouteType::Unicast {
        return Err(NeighborError::NoRoute(addr));
    }
    route
        .attributes
        .iter()
        .find_map(|attribute| match attribute {
            RouteAttribute::PrefSource(RouteAddress::Inet(a)) => Some(IpAddr::V4(*a)),
            RouteAttribute::PrefSource(RouteAddress::Inet6(a)) => Some(IpAddr::V6(*a)),
            _ => None,
        })
        .ok_or(NeighborError::NoSource(addr))
}

fn route_address(address: &RouteAddress) -> String {
    match address {
        RouteAddress::Inet(a) => a.to_string(),
        RouteAddress::Inet6(a) => a.to_string(),
        other => format!("{other:?}"),
    }
}

fn via_address(via: &RouteVia) -> String {
    match via {
        RouteVia::Inet(a) => a.to_string(),
        RouteVia::Inet6(a) => a.to_string(),
        other => format!("{other:?}"),
    }
}

/// An interface's MAC and name, if it has an Ethernet address.
pub(super) fn link(message: &LinkMessage) -> Option<Link> {
    let mut mac = None;
    let mut name = format!("interface {}", message.header.index);
    for attribute in &message.attributes {
        match attribute {
            LinkAttribute::Address(bytes) => mac = six(bytes),
            LinkAttribute::IfName(n) => name.clone_from(n),
            _ => {}
        }
    }
    Some(Link { mac: mac?, name })
}

/// An IPv4 or IPv6 neighbour entry (not a proxy entry, not a bridge's forwarding entry).
pub(super) fn neighbour(message: &NeighbourMessage) -> Option<Neighbour> {
    let header = &message.header;
    if !matches!(header.family, AddressFamily::Inet | AddressFamily::Inet6)
        || header.flags.contains(NeighbourFlags::Proxy)
    {
        return None;
    }
    let mut addr = None;
    let mut lladdr = None;
    for attribute in &message.attributes {
        match attribute {
            NeighbourAttribute::Destination(NeighbourAddress::Inet(a)) => addr = Some((*a).into()),
            NeighbourAttribute::Destination(NeighbourAddress::Inet6(a)) => addr = Some((*a).into()),
            NeighbourAttribute::LinkLayerAddress(bytes) => lladdr = six(bytes),
            _ => {}
        }
    }
    let valid = matches!(
        header.state,
        NeighbourState::Reachable
            | NeighbourState::Stale
            | NeighbourState::Delay
            | NeighbourState::Probe
            | NeighbourState::Permanent
            | NeighbourState::Noarp
    );
    let state = match (header.state, lladdr) {
        (_, Some(mac)) if valid => Entry::Usable(mac),
        (NeighbourState::Failed, _) => Entry::Failed,
        _ => Entry::Pending,
    };
    Some(Neighbour {
        addr: addr?,
        ifindex: header.ifindex,
        state,
    })
}

/// What a notification of the neighbour, link and route groups means. A neighbour entry
/// that is deleted (garbage-collected) or still resolving says nothing: the data plane
/// keeps the MAC it has.
pub(super) fn event(message: &RouteNetlinkMessage) -> Option<Event> {
    match message {
        RouteNetlinkMessage::NewNeighbour(m) => {
            let n = neighbour(m)?;
            let sighting = match n.state {
                Entry::Usable(mac) => Sighting::Neighbour {
                    ifindex: n.ifindex,
                    mac,
                },
                Entry::Failed => Sighting::Failed { ifindex: n.ifindex },
                Entry::Pending => return None,
            };
            Some(Event::Sighting(n.addr, sighting))
        }
        RouteNetlinkMessage::NewLink(_)
        | RouteNetlinkMessage::DelLink(_)
        | RouteNetlinkMessage::NewRoute(_)
        | RouteNetlinkMessage::DelRoute(_) => Some(Event::Resync),
        _ => None,
    }
}

fn six(bytes: &[u8]) -> Option<[u8; 6]> {
    bytes.try_into().ok()
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use super::*;

    const MAC: [u8; 6] = [2, 0, 0, 0, 1, 1];

    fn v4(last: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(198, 18, 0, last))
    }

    fn route(kind: RouteType, attributes: Vec<RouteAttribute>) -> RouteMessage {
        let mut message = RouteMessage::default();
        message.header.address_family = AddressFamily::Inet;
        message.header.kind = kind;
        message.attributes = attributes;
        message
    }

    fn entry(
        family: AddressFamily,
        addr: NeighbourAddress,
        state: NeighbourState,
        lladdr: Option<[u8; 6]>,
    ) -> NeighbourMessage {
        let mut message = NeighbourMessage::default();
        message.header.family = family;
        message.header.ifindex = 3;
        message.header.state = state;
        message
            .attributes
            .push(NeighbourAttribute::Destination(addr));
        if let Some(mac) = lladdr {
            message
                .attributes
                .push(NeighbourAttribute::LinkLayerAddress(mac.to_vec()));
        }
        message
    }

    fn entry_v4(state: NeighbourState, lladdr: Option<[u8; 6]>) -> NeighbourMessage {
        let addr = NeighbourAddress::Inet(Ipv4Addr::new(198, 18, 0, 101));
        entry(AddressFamily::Inet, addr, state, lladdr)
    }

    #[test]
    fn a_direct_route_gives_its_interface() {
        let direct = route(RouteType::Unicast, vec![RouteAttribute::Oif(3)]);
        assert_eq!(route_interface(v4(101), &direct).unwrap(), 3);
    }

    #[test]
    fn gateways_local_and_unreachable_routes_are_refused() {
        let gateway = RouteAttribute::Gateway(RouteAddress::Inet(Ipv4Addr::new(198, 18, 0, 1)));
        let routed = route(RouteType::Unicast, vec![RouteAttribute::Oif(3), gateway]);
        let error = route_interface(v4(9), &routed).unwrap_err();
        assert!(
            matches!(&error, NeighborError::Routed(_, via) if via == "198.18.0.1"),
            "{error}"
        );
        let local = route(RouteType::Local, vec![RouteAttribute::Oif(1)]);
        assert!(matches!(
            route_interface(v4(2), &local),
            Err(NeighborError::NoRoute(_))
        ));
        let unreachable = route(RouteType::Unreachable, vec![]);
        assert!(matches!(
            route_interface(v4(9), &unreachable),
            Err(NeighborError::NoRoute(_))
        ));
        let without_interface = route(RouteType::Unicast, vec![]);
        assert!(matches!(
            route_interface(v4(9), &without_interface),
            Err(NeighborError::NoRoute(_))
        ));
    }

    #[test]
    fn a_tunnel_takes_the_preferred_source_of_any_unicast_route() {
        let source = RouteAttribute::PrefSource(RouteAddress::Inet(Ipv4Addr::new(198, 18, 0, 1)));
        let gateway = RouteAttribute::Gateway(RouteAddress::Inet(Ipv4Addr::new(198, 18, 0, 254)));
        let routed = route(RouteType::Unicast, vec![gateway, source.clone()]);
        assert_eq!(route_source(v4(9), &routed).unwrap(), v4(1));
        let direct = route(
            RouteType::Unicast,
            vec![RouteAttribute::Oif(3), source.clone()],
        );
        assert_eq!(route_source(v4(9), &direct).unwrap(), v4(1));
        let blackhole = route(RouteType::BlackHole, vec![source]);
        assert!(matches!(
            route_source(v4(9), &blackhole),
            Err(NeighborError::NoRoute(_))
        ));
        let sourceless = route(RouteType::Unicast, vec![RouteAttribute::Oif(3)]);
        assert!(matches!(
            route_source(v4(9), &sourceless),
            Err(NeighborError::NoSource(_))
        ));
    }

    #[test]
    fn a_link_has_a_mac_and_a_name() {
        let mut message = LinkMessage::default();
        message.header.index = 3;
        message
            .attributes
            .push(LinkAttribute::Address(MAC.to_vec()));
        assert_eq!(
            link(&message),
            Some(Link {
                mac: MAC,
                name: "interface 3".into()
            })
        );
        message
            .attributes
            .push(LinkAttribute::IfName("eth0".into()));
        assert_eq!(link(&message).unwrap().name, "eth0");
        let mut without_mac = LinkMessage::default();
        without_mac
            .attributes
            .push(LinkAttribute::IfName("lo0".into()));
        assert_eq!(link(&without_mac), None);
    }

    #[test]
    fn only_valid_entries_give_a_mac() {
        for state in [
            NeighbourState::Reachable,
            NeighbourState::Stale,
            NeighbourState::Delay,
            NeighbourState::Probe,
            NeighbourState::Permanent,
        ] {
            let n = neighbour(&entry_v4(state, Some(MAC))).unwrap();
            assert_eq!(n.state, Entry::Usable(MAC), "{state:?}");
            assert_eq!((n.addr, n.ifindex), (v4(101), 3));
        }
        let failed = neighbour(&entry_v4(NeighbourState::Failed, None)).unwrap();
        assert_eq!(failed.state, Entry::Failed);
        let incomplete = neighbour(&entry_v4(NeighbourState::Incomplete, None)).unwrap();
        assert_eq!(incomplete.state, Entry::Pending);
        let no_lladdr = neighbour(&entry_v4(NeighbourState::Reachable, None)).unwrap();
        assert_eq!(no_lladdr.state, Entry::Pending);
    }

    #[test]
    fn ipv6_entries_count_and_bridge_and_proxy_entries_do_not() {
        let v6 = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x101);
        let entry6 = entry(
            AddressFamily::Inet6,
            NeighbourAddress::Inet6(v6),
            NeighbourState::Stale,
            Some(MAC),
        );
        assert_eq!(neighbour(&entry6).unwrap().addr, IpAddr::V6(v6));
        let mut bridge = entry_v4(NeighbourState::Reachable, Some(MAC));
        bridge.header.family = AddressFamily::Bridge;
        assert_eq!(neighbour(&bridge), None);
        let mut proxy = entry_v4(NeighbourState::Permanent, Some(MAC));
        proxy.header.flags = NeighbourFlags::Proxy;
        assert_eq!(neighbour(&proxy), None);
    }

    #[test]
    fn notifications_become_sightings_or_a_resync() {
        let changed = RouteNetlinkMessage::NewNeighbour(entry_v4(NeighbourState::Stale, Some(MAC)));
        assert_eq!(
            event(&changed),
            Some(Event::Sighting(
                v4(101),
                Sighting::Neighbour {
                    ifindex: 3,
                    mac: MAC
                }
            ))
        );
        let failed = RouteNetlinkMessage::NewNeighbour(entry_v4(NeighbourState::Failed, None));
        assert_eq!(
            event(&failed),
            Some(Event::Sighting(v4(101), Sighting::Failed { ifindex: 3 }))
        );
        let resolving =
            RouteNetlinkMessage::NewNeighbour(entry_v4(NeighbourState::Incomplete, None));
        assert_eq!(event(&resolving), None);
        let deleted = RouteNetlinkMessage::DelNeighbour(entry_v4(NeighbourState::Stale, Some(MAC)));
        assert_eq!(event(&deleted), None);
        let link = RouteNetlinkMessage::NewLink(LinkMessage::default());
        assert_eq!(event(&link), Some(Event::Resync));
        let route = RouteNetlinkMessage::DelRoute(RouteMessage::default());
        assert_eq!(event(&route), Some(Event::Resync));
    }
}
