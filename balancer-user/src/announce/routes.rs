//! The announcement table as the kernel holds it, over rtnetlink: the VIPs routed there by
//! this daemon (blackhole routes of protocol [`PROTOCOL`], a `/32` or `/128` each), and
//! adding or removing one. Routes of other protocols in the table are left alone.

use std::{collections::BTreeSet, io, net::IpAddr};

use netlink_packet_core::{NLM_F_CREATE, NLM_F_REPLACE};
use netlink_packet_route::{
    route::{RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteType},
    AddressFamily, RouteNetlinkMessage,
};

use super::{plan::Plan, AnnounceError, PROTOCOL};
use crate::neighbor::rtnl::Rtnl;

/// The VIPs this daemon's routes announce in `table` (IPv4 and IPv6). The kernel dumps
/// only that table's routes of our protocol (a strict request), not the host's others.
pub fn held(table: u32) -> Result<BTreeSet<IpAddr>, AnnounceError> {
    let failed = |source| kernel("read the routes", table, source);
    let mut rtnl = Rtnl::open().map_err(failed)?;
    rtnl.strict().map_err(failed)?;
    let mut held = BTreeSet::new();
    for family in [AddressFamily::Inet, AddressFamily::Inet6] {
        let mut request = RouteMessage::default();
        request.header.address_family = family;
        request.header.table = u8::try_from(table).unwrap_or(RouteHeader::RT_TABLE_UNSPEC);
        request.header.protocol = RouteProtocol::from(PROTOCOL);
        request.attributes = vec![RouteAttribute::Table(table)];
        let routes = match rtnl.dump(RouteNetlinkMessage::GetRoute(request)) {
            // No route was ever added to the table: it does not exist yet.
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Vec::new(),
            dumped => dumped.map_err(failed)?,
        };
        held.extend(routes.iter().filter_map(|message| match message {
            RouteNetlinkMessage::NewRoute(route) => ours(route, table),
            _ => None,
        }));
    }
    Ok(held)
}

/// Removes every route of ours from `table` (`teardown` with no daemon); returns how many.
pub fn withdraw(table: u32) -> Result<usize, AnnounceError> {
    let held = held(table)?;
    let plan = Plan::between(&held, &BTreeSet::new());
    apply(table, &plan)?;
    Ok(plan.remove.len())
}

/// Adds the routes of `plan.add` to `table` and removes those of `plan.remove`.
pub fn apply(table: u32, plan: &Plan) -> Result<(), AnnounceError> {
    if plan.add.is_empty() && plan.remove.is_empty() {
        return Ok(());
    }
    let mut rtnl = Rtnl::open().map_err(|source| kernel("open rtnetlink", table, source))?;
    for vip in &plan.add {
        rtnl.change(
            RouteNetlinkMessage::NewRoute(route(*vip, table)),
            NLM_F_CREATE | NLM_F_REPLACE,
        )
        .map_err(|source| kernel(&format!("announce {vip}"), table, source))?;
        tracing::info!(%vip, table, "VIP announced");
    }
    for vip in &plan.remove {
        match rtnl.change(RouteNetlinkMessage::DelRoute(route(*vip, table)), 0) {
            // Removed meanwhile by someone else: withdrawn all the same.
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {}
            done => done.map_err(|source| kernel(&format!("withdraw {vip}"), table, source))?,
        }
        tracing::info!(%vip, table, "VIP withdrawn");
    }
    Ok(())
}

/// The VIP `route` announces, if it is one of ours in `table`.
fn ours(route: &RouteMessage, table: u32) -> Option<IpAddr> {
    let header = &route.header;
    let in_table = route
        .attributes
        .iter()
        .find_map(|a| match a {
            RouteAttribute::Table(t) => Some(*t),
            _ => None,
        })
        .unwrap_or(u32::from(header.table));
    if in_table != table || header.protocol != RouteProtocol::from(PROTOCOL) {
        return None;
    }
    let vip = route.attributes.iter().find_map(|a| match a {
        RouteAttribute::Destination(RouteAddress::Inet(v4)) => Some(IpAddr::V4(*v4)),
        RouteAttribute::Destination(RouteAddress::Inet6(v6)) => Some(IpAddr::V6(*v6)),
        _ => None,
    })?;
    (header.destination_prefix_length == full_length(vip)).then_some(vip)
}

/// The route of ours that announces `vip` in `table`.
fn route(vip: IpAddr, table: u32) -> RouteMessage {
    let mut route = RouteMessage::default();
    route.header.address_family = match vip {
        IpAddr::V4(_) => AddressFamily::Inet,
        IpAddr::V6(_) => AddressFamily::Inet6,
    };
    route.header.destination_prefix_length = full_length(vip);
    // Tables above 255 are named by the attribute alone.
    route.header.table = u8::try_from(table).unwrap_or(RouteHeader::RT_TABLE_UNSPEC);
    route.header.protocol = RouteProtocol::from(PROTOCOL);
    route.header.kind = RouteType::BlackHole;
    route.attributes = vec![
        RouteAttribute::Destination(vip.into()),
        RouteAttribute::Table(table),
    ];
    route
}

/// The prefix length of a single address.
fn full_length(vip: IpAddr) -> u8 {
    match vip {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    }
}

fn kernel(what: &str, table: u32, source: io::Error) -> AnnounceError {
    AnnounceError::Kernel {
        what: what.to_string(),
        table,
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_route_of_ours_reads_back_as_its_vip_and_others_do_not() {
        for (vip, table) in [("198.18.0.10", 100), ("2001:db8::10", 1000)] {
            let vip: IpAddr = vip.parse().unwrap();
            let mine = route(vip, table);
            assert_eq!(ours(&mine, table), Some(vip));
            assert_eq!(ours(&mine, table + 1), None);
            let mut other = mine.clone();
            other.header.protocol = RouteProtocol::Bird;
            assert_eq!(ours(&other, table), None);
            let mut wider = mine.clone();
            wider.header.destination_prefix_length -= 8;
            assert_eq!(ours(&wider, table), None);
        }
    }
}
