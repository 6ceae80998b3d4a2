//! Configuration steps that turn empty namespaces into the topology.

use std::fmt::Write as _;

use anyhow::{Context, Result};

use super::addresses::{
    self, CLIENT_V4, CLIENT_V6, EXTRA_CLIENTS_V4_ROUTE, EXTRA_CLIENTS_V6_ROUTE, LB_V4, LB_V6,
    LINK_PREFIX_V4, LINK_PREFIX_V6, VIP4, VIP4_ROUTE, VIP6, VIP6_ROUTE,
};
use super::names::{self, BRIDGE, HOST_INTERFACE};
use crate::netns;

/// Turns off IPv6 duplicate address detection (so addresses, including
/// link-local ones of interfaces created later, are usable at once) and
/// brings up `lo`.
pub(crate) fn prepare_namespace(ns: &str) -> Result<()> {
    netns::set_sysctls(
        ns,
        &[
            ("net/ipv6/conf/all/accept_dad", "0"),
            ("net/ipv6/conf/default/accept_dad", "0"),
            ("net/ipv6/conf/all/dad_transmits", "0"),
            ("net/ipv6/conf/default/dad_transmits", "0"),
        ],
    )?;
    netns::run(ns, &["ip", "link", "set", "lo", "up"])?;
    Ok(())
}

/// Creates `br0` (multicast snooping off, so neighbour discovery is
/// flooded) in `bridge_ns`, and one veth pair per host namespace: `eth0`
/// in the host namespace, its peer (see [`names::bridge_port`]) enslaved
/// to `br0`.
///
/// IPv6 is disabled in the bridge namespace so that the ports send nothing
/// of their own.
pub(crate) fn build_bridge(bridge_ns: &str, hosts: &[String]) -> Result<()> {
    netns::set_sysctls(
        bridge_ns,
        &[
            ("net/ipv6/conf/all/disable_ipv6", "1"),
            ("net/ipv6/conf/default/disable_ipv6", "1"),
        ],
    )?;
    let mut batch = format!("link add {BRIDGE} type bridge mcast_snooping 0\n");
    for host_ns in hosts {
        batch.push_str(&plug(bridge_ns, host_ns, None));
    }
    writeln!(batch, "link set {BRIDGE} up")?;
    ip_batch(bridge_ns, &batch)
}

/// `ip -batch` lines (run in `bridge_ns`) that create `host_ns`'s `eth0` (with MAC `mac`, if
/// given) and its peer, enslaved to `br0` and up.
fn plug(bridge_ns: &str, host_ns: &str, mac: Option<&str>) -> String {
    let port = names::bridge_port(host_ns);
    let address = mac.map(|mac| format!(" address {mac}")).unwrap_or_default();
    format!(
        "link add {HOST_INTERFACE} netns {host_ns}{address} type veth peer name {port} netns {bridge_ns}\n\
         link set {port} master {BRIDGE} up\n"
    )
}

/// Deletes `host_ns`'s `eth0` (its bridge-side peer goes with it) and creates it again with
/// the same name and MAC: a new interface, with a new index.
pub(crate) fn replug_host(bridge_ns: &str, host_ns: &str) -> Result<()> {
    let shown = netns::run(host_ns, &["ip", "-json", "link", "show", HOST_INTERFACE])?;
    let links: serde_json::Value =
        serde_json::from_str(&shown).context("parse `ip -json link show`")?;
    let mac = links[0]["address"]
        .as_str()
        .with_context(|| format!("no MAC address of {HOST_INTERFACE} in {host_ns}: {shown}"))?;
    netns::run(host_ns, &["ip", "link", "delete", HOST_INTERFACE])?;
    ip_batch(bridge_ns, &plug(bridge_ns, host_ns, Some(mac)))
}

/// Client: its addresses (plus `extra_clients` extra ones), routes to the
/// VIP ranges via the load balancer, and tx checksum offload off (packets
/// forwarded by XDP at L2 would otherwise carry unfinished checksums).
pub(crate) fn configure_client(ns: &str, extra_clients: u8) -> Result<()> {
    let mut batch = link_addresses(CLIENT_V4, CLIENT_V6);
    for index in 0..usize::from(extra_clients) {
        let (v4, v6) = (
            addresses::extra_client_v4(index),
            addresses::extra_client_v6(index),
        );
        writeln!(batch, "address add {v4}/32 dev {HOST_INTERFACE}")?;
        writeln!(batch, "address add {v6}/128 dev {HOST_INTERFACE} nodad")?;
    }
    writeln!(batch, "route add {VIP4_ROUTE} via {LB_V4}")?;
    writeln!(batch, "route add {VIP6_ROUTE} via {LB_V6}")?;
    ip_batch(ns, &batch)?;
    netns::run(ns, &["ethtool", "-K", HOST_INTERFACE, "tx", "off"])?;
    Ok(())
}

/// Load balancer host: just its link addresses.
pub(crate) fn configure_lb(ns: &str) -> Result<()> {
    ip_batch(ns, &link_addresses(LB_V4, LB_V6))
}

/// Backend `index`: link addresses, the VIPs on `lo`, ARP settings that
/// keep it from answering or announcing the VIP on the link, no reverse
/// path filtering, and routes back to the extra client addresses.
pub(crate) fn configure_backend(ns: &str, index: usize) -> Result<()> {
    let mut sysctls = Vec::new();
    for scope in ["all", "default", HOST_INTERFACE] {
        sysctls.push((format!("net/ipv4/conf/{scope}/arp_ignore"), "1"));
        sysctls.push((format!("net/ipv4/conf/{scope}/arp_announce"), "2"));
        sysctls.push((format!("net/ipv4/conf/{scope}/rp_filter"), "0"));
    }
    let sysctls: Vec<(&str, &str)> = sysctls
        .iter()
        .map(|(key, value)| (key.as_str(), *value))
        .collect();
    netns::set_sysctls(ns, &sysctls)?;

    let mut batch = link_addresses(addresses::backend_v4(index), addresses::backend_v6(index));
    writeln!(batch, "address add {VIP4}/32 dev lo")?;
    writeln!(batch, "address add {VIP6}/128 dev lo nodad")?;
    writeln!(batch, "route add {EXTRA_CLIENTS_V4_ROUTE} via {CLIENT_V4}")?;
    writeln!(batch, "route add {EXTRA_CLIENTS_V6_ROUTE} via {CLIENT_V6}")?;
    ip_batch(ns, &batch)
}

/// `ip -batch` lines that bring up `eth0` with the given link addresses.
fn link_addresses(v4: std::net::IpAddr, v6: std::net::IpAddr) -> String {
    link(HOST_INTERFACE, |ipv6| if ipv6 { v6 } else { v4 })
}

/// `ip -batch` lines that bring `iface` up with its addresses, `address(v6)`, on links of
/// the harness's prefixes.
pub(crate) fn link(iface: &str, address: impl Fn(bool) -> std::net::IpAddr) -> String {
    format!(
        "link set {iface} up\n\
         address add {}/{LINK_PREFIX_V4} dev {iface}\n\
         address add {}/{LINK_PREFIX_V6} dev {iface} nodad\n",
        address(false),
        address(true)
    )
}

/// A host behind a router: `eth0` up with `address(v6)`, default routes via
/// `gateway(v6)`.
pub(crate) fn routed_host(
    ns: &str,
    address: impl Fn(bool) -> std::net::IpAddr,
    gateway: impl Fn(bool) -> std::net::IpAddr,
) -> Result<()> {
    let mut batch = link(HOST_INTERFACE, address);
    for v6 in [false, true] {
        writeln!(batch, "route add default via {}", gateway(v6))?;
    }
    ip_batch(ns, &batch)
}

/// Runs `batch` with `ip -batch -` in namespace `ns`, naming the batch on failure.
pub(crate) fn ip_batch(ns: &str, batch: &str) -> Result<()> {
    netns::run_with_stdin(ns, &["ip", "-batch", "-"], batch)
        .with_context(|| format!("ip batch in {ns}:\n{batch}"))?;
    Ok(())
}
