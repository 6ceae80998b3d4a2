//! Configuration steps that turn empty namespaces into the routed topology.

use std::fmt::Write as _;

use anyhow::Result;

use super::addresses::{self, Subnet, BACKEND_SUBNET, CLIENT_SUBNET, LB_SUBNET};
use crate::netns;
use crate::topology::names::{bridge_port, BRIDGE, HOST_INTERFACE};
use crate::topology::setup::{ip_batch, link, routed_host};
use crate::topology::{VIP4, VIP6};

/// The router's interface to the client's link.
pub(crate) const ROUTER_CLIENT_PORT: &str = "cl";
/// The router's interface to the load balancer's link: the peer of the LB's `eth0`, where
/// its XDP_TX frames land.
pub(crate) const ROUTER_LB_PORT: &str = "lb";

/// The router: forwarding on (IPv4 and IPv6), no reverse path filtering, and three links —
/// a veth to the client, a veth to the load balancer, and `br0` with one port per backend
/// (`p-b0`, ...) — each with the router's address; the VIP ranges are routed to the LB.
///
/// Reverse path filtering is off because the backends' direct replies come from the VIP,
/// whose route on the router leads to the LB and not back to the backends' link.
pub(crate) fn configure_router(
    router_ns: &str,
    client_ns: &str,
    lb_ns: &str,
    backends: &[String],
) -> Result<()> {
    let mut sysctls = vec![
        ("net/ipv4/ip_forward".to_owned(), "1"),
        ("net/ipv6/conf/all/forwarding".to_owned(), "1"),
    ];
    for scope in ["all", "default"] {
        sysctls.push((format!("net/ipv4/conf/{scope}/rp_filter"), "0"));
    }
    set_sysctls(router_ns, &sysctls)?;

    let mut batch = String::new();
    for (host_ns, port) in [(client_ns, ROUTER_CLIENT_PORT), (lb_ns, ROUTER_LB_PORT)] {
        writeln!(
            batch,
            "link add {HOST_INTERFACE} netns {host_ns} type veth peer name {port} netns {router_ns}"
        )?;
    }
    writeln!(batch, "link add {BRIDGE} type bridge mcast_snooping 0")?;
    for backend_ns in backends {
        let port = bridge_port(backend_ns);
        writeln!(
            batch,
            "link add {HOST_INTERFACE} netns {backend_ns} type veth peer name {port} netns {router_ns}"
        )?;
        writeln!(batch, "link set {port} master {BRIDGE} up")?;
    }
    batch.push_str(&link(ROUTER_CLIENT_PORT, |v6| CLIENT_SUBNET.router(v6)));
    batch.push_str(&link(ROUTER_LB_PORT, |v6| LB_SUBNET.router(v6)));
    batch.push_str(&link(BRIDGE, |v6| BACKEND_SUBNET.router(v6)));
    writeln!(batch, "route add {VIP4}/32 via {}", addresses::lb(false))?;
    writeln!(batch, "route add {VIP6}/128 via {}", addresses::lb(true))?;
    ip_batch(router_ns, &batch)
}

/// The routing table of the router that sends the backends' packets to the LB.
const THROUGH_LB: &str = "100";

/// See [`super::RoutedTopology::backends_through_lb`].
pub(crate) fn backends_through_lb(router_ns: &str, lb_ns: &str, backends: &[String]) -> Result<()> {
    for v6 in [false, true] {
        let family = if v6 { "-6" } else { "-4" };
        let lb = addresses::lb(v6).to_string();
        netns::run(
            router_ns,
            &[
                "ip", family, "rule", "add", "iif", BRIDGE, "lookup", THROUGH_LB, "pref", "100",
            ],
        )?;
        netns::run(
            router_ns,
            &[
                "ip", family, "route", "add", "default", "via", &lb, "table", THROUGH_LB,
            ],
        )?;
        for ns in backends {
            netns::run(
                ns,
                &[
                    "ip", family, "address", "flush", "dev", "lo", "scope", "global",
                ],
            )?;
        }
    }
    set_sysctls(
        lb_ns,
        &[
            ("net/ipv4/conf/all/forwarding".to_owned(), "1"),
            ("net/ipv6/conf/all/forwarding".to_owned(), "1"),
        ],
    )
}

/// The client: its address, the router as its default gateway, and tx checksum offload off
/// (its packets reach the LB's XDP program, which forwards them whole: an unfinished
/// checksum would reach the backend unfinished).
pub(crate) fn configure_client(ns: &str) -> Result<()> {
    host(ns, CLIENT_SUBNET, addresses::client)?;
    netns::run(ns, &["ethtool", "-K", HOST_INTERFACE, "tx", "off"])?;
    Ok(())
}

/// The load balancer host: its address, and the router as its default gateway (its route
/// to the backends goes through the router).
pub(crate) fn configure_lb(ns: &str) -> Result<()> {
    host(ns, LB_SUBNET, addresses::lb)
}

/// Backend `index`: its address, the router as its default gateway, the VIPs on `lo`, and
/// the settings of a backend that holds the VIP (see the module documentation of
/// [`crate::routed`]): ARP neither answers nor announces the VIP, reverse path filtering
/// is off, and tx checksum offload is off (in NAT modes its replies pass the LB's XDP
/// program).
pub(crate) fn configure_backend(ns: &str, index: usize) -> Result<()> {
    let mut sysctls = Vec::new();
    for scope in ["all", "default", HOST_INTERFACE] {
        sysctls.push((format!("net/ipv4/conf/{scope}/arp_ignore"), "1"));
        sysctls.push((format!("net/ipv4/conf/{scope}/arp_announce"), "2"));
        sysctls.push((format!("net/ipv4/conf/{scope}/rp_filter"), "0"));
    }
    set_sysctls(ns, &sysctls)?;
    host(ns, BACKEND_SUBNET, |v6| addresses::backend(index, v6))?;
    ip_batch(
        ns,
        &format!("address add {VIP4}/32 dev lo\naddress add {VIP6}/128 dev lo nodad\n"),
    )?;
    netns::run(ns, &["ethtool", "-K", HOST_INTERFACE, "tx", "off"])?;
    Ok(())
}

/// A host on `subnet`: `eth0` up with `address(v6)`, default routes via the router.
fn host(ns: &str, subnet: Subnet, address: impl Fn(bool) -> std::net::IpAddr) -> Result<()> {
    routed_host(ns, address, |v6| subnet.router(v6))
}

fn set_sysctls(ns: &str, sysctls: &[(String, &str)]) -> Result<()> {
    let sysctls: Vec<(&str, &str)> = sysctls.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    netns::set_sysctls(ns, &sysctls)
}
