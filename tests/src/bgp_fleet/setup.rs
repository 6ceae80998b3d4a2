//! Configuration steps that turn empty namespaces into the BGP fleet's topology.

use std::fmt::Write as _;

use anyhow::Result;

use super::addresses;
use crate::netns;
use crate::topology::names::{BRIDGE, HOST_INTERFACE};
use crate::topology::setup::{ip_batch, link, routed_host as host};
use crate::topology::{VIP4, VIP6};

/// The router's interface to the client's link.
pub(crate) const ROUTER_CLIENT_PORT: &str = "cl";

/// The router's bridge port of LB host `index` (the peer of its `eth0`, where its XDP_TX
/// frames land).
pub(crate) fn lb_port(index: usize) -> String {
    format!("p-l{index}")
}

/// The router's bridge port of backend `index`.
fn backend_port(index: usize) -> String {
    format!("p-b{index}")
}

/// The router: forwarding on, reverse path filtering off (the backends answer from the
/// VIP, which the router routes to the LB hosts), multipath hashing on the L4 ports
/// (`fib_multipath_hash_policy=1`), a veth to the client and the segment's bridge `br0`
/// with a port per LB host and per backend.
pub(crate) fn configure_router(
    router_ns: &str,
    client_ns: &str,
    lb_namespaces: &[String],
    backend_namespaces: &[String],
) -> Result<()> {
    let mut sysctls = vec![
        ("net/ipv4/ip_forward".to_owned(), "1"),
        ("net/ipv6/conf/all/forwarding".to_owned(), "1"),
        ("net/ipv4/fib_multipath_hash_policy".to_owned(), "1"),
        ("net/ipv6/fib_multipath_hash_policy".to_owned(), "1"),
    ];
    for scope in ["all", "default"] {
        sysctls.push((format!("net/ipv4/conf/{scope}/rp_filter"), "0"));
    }
    let sysctls: Vec<(&str, &str)> = sysctls.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    netns::set_sysctls(router_ns, &sysctls)?;

    let mut batch = format!(
        "link add {HOST_INTERFACE} netns {client_ns} type veth peer name {ROUTER_CLIENT_PORT} netns {router_ns}\n\
         link add {BRIDGE} type bridge mcast_snooping 0\n"
    );
    let ports = lb_namespaces
        .iter()
        .enumerate()
        .map(|(i, ns)| (ns, lb_port(i)))
        .chain(
            backend_namespaces
                .iter()
                .enumerate()
                .map(|(i, ns)| (ns, backend_port(i))),
        );
    for (ns, port) in ports {
        writeln!(
            batch,
            "link add {HOST_INTERFACE} netns {ns} type veth peer name {port} netns {router_ns}"
        )?;
        writeln!(batch, "link set {port} master {BRIDGE} up")?;
    }
    batch.push_str(&link(ROUTER_CLIENT_PORT, addresses::router_client_side));
    batch.push_str(&link(BRIDGE, addresses::router));
    ip_batch(router_ns, &batch)
}

/// The client: its address, the router as its gateway, tx checksum offload off (its
/// packets reach the LB hosts' XDP program, which forwards them whole).
pub(crate) fn configure_client(ns: &str) -> Result<()> {
    host(ns, addresses::client, addresses::router_client_side)?;
    netns::run(ns, &["ethtool", "-K", HOST_INTERFACE, "tx", "off"])?;
    Ok(())
}

/// LB host `index`: its address on the segment, the router as its gateway.
pub(crate) fn configure_lb(ns: &str, index: usize) -> Result<()> {
    host(ns, |v6| addresses::lb(index, v6), addresses::router)
}

/// Backend `index`: its address, the router as its gateway (it answers the client
/// directly, through the router), the VIPs on `lo`, and ARP that neither answers nor
/// announces them; no reverse path filtering.
pub(crate) fn configure_backend(ns: &str, index: usize) -> Result<()> {
    let mut sysctls = Vec::new();
    for scope in ["all", "default", HOST_INTERFACE] {
        sysctls.push((format!("net/ipv4/conf/{scope}/arp_ignore"), "1"));
        sysctls.push((format!("net/ipv4/conf/{scope}/arp_announce"), "2"));
        sysctls.push((format!("net/ipv4/conf/{scope}/rp_filter"), "0"));
    }
    let sysctls: Vec<(&str, &str)> = sysctls.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    netns::set_sysctls(ns, &sysctls)?;
    host(ns, |v6| addresses::backend(index, v6), addresses::router)?;
    ip_batch(
        ns,
        &format!("address add {VIP4}/32 dev lo\naddress add {VIP6}/128 dev lo nodad\n"),
    )
}
