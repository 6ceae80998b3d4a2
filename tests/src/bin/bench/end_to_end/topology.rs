//! The section's own topology, without a bridge: the client's `eth0` is one veth pair with
//! the LB's `eth0`, and each backend's `eth0` one veth pair with the LB's `bk{i}`. Backends
//! hold the VIP on `lo` and route everything back through the LB, which forwards it
//! (`ip_forward=1`). IPv4 only; IPv6 is turned off so the links stay quiet.

use std::net::Ipv4Addr;

use anyhow::Result;
use balancer_tests::netns;

use super::generator::Wire;

/// Prefix of every namespace of this section.
const PREFIX: &str = "bbe2e-";
/// The client's namespace.
pub const CLIENT_NS: &str = "bbe2e-cl";
/// The load balancer host's namespace.
pub const LB_NS: &str = "bbe2e-lb";
/// Number of backends.
pub const BACKENDS: usize = 2;
/// Name of the client's, the LB's (towards the client) and each backend's interface.
pub const IFACE: &str = "eth0";

/// The virtual IP every balancer serves.
pub const VIP: Ipv4Addr = Ipv4Addr::new(198, 19, 10, 1);
/// The client's address.
const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 18, 10, 1);
/// The LB's address towards the client.
const LB: Ipv4Addr = Ipv4Addr::new(198, 18, 10, 2);
/// The client's `eth0` MAC, the source of generated frames.
const CLIENT_MAC: [u8; 6] = [2, 0xe2, 0xe0, 0, 0, 1];
/// The LB's `eth0` MAC, the destination of generated frames.
const LB_MAC: [u8; 6] = [2, 0xe2, 0xe0, 0, 0, 2];

/// The flood's wire: from the client's `eth0` to the LB's, client → VIP.
pub fn wire() -> Wire {
    Wire {
        ns: CLIENT_NS.to_string(),
        src_mac: CLIENT_MAC,
        dst_mac: LB_MAC,
        src: CLIENT,
        dst: VIP,
    }
}

/// The namespaces of the backends.
pub fn backend_namespaces() -> Vec<String> {
    (0..BACKENDS).map(backend_ns).collect()
}

/// Backend `index`'s namespace.
pub fn backend_ns(index: usize) -> String {
    format!("{PREFIX}b{index}")
}

/// Backend `index`'s address on its `eth0`: 198.18.(11 + index).2.
pub fn backend_addr(index: usize) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, 11 + index as u8, 2)
}

/// The LB's address on `bk{index}`, backend `index`'s default gateway: 198.18.(11 + index).1.
fn gateway(index: usize) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, 11 + index as u8, 1)
}

/// Colon-separated MAC text.
fn mac_text(mac: [u8; 6]) -> String {
    mac.map(|b| format!("{b:02x}")).join(":")
}

/// The built namespaces; dropping it (also on error or panic) kills every process inside
/// them and deletes them.
pub struct Topology {
    created: Vec<String>,
}

impl Topology {
    /// Removes leftovers of an earlier run, then builds the topology with `queues` rx/tx
    /// queues per veth.
    pub fn build(queues: usize) -> Result<Self> {
        sweep_stale()?;
        let mut topology = Topology {
            created: Vec::new(),
        };
        let backends: Vec<String> = (0..BACKENDS).map(backend_ns).collect();
        for ns in [CLIENT_NS, LB_NS]
            .into_iter()
            .chain(backends.iter().map(String::as_str))
        {
            netns::create(ns)?;
            topology.created.push(ns.to_string());
            prepare(ns)?;
        }
        topology.connect(queues)?;
        configure_client()?;
        configure_lb()?;
        for index in 0..BACKENDS {
            configure_backend(index)?;
        }
        Ok(topology)
    }

    /// Creates the veth pairs, all from inside the LB's namespace.
    fn connect(&self, queues: usize) -> Result<()> {
        veth_pair(IFACE, LB_MAC, CLIENT_MAC, CLIENT_NS, queues)?;
        for index in 0..BACKENDS {
            veth_pair(
                &format!("bk{index}"),
                [2, 0xe2, 0xe0, 1, index as u8, 1],
                [2, 0xe2, 0xe0, 1, index as u8, 2],
                &backend_ns(index),
                queues,
            )?;
        }
        Ok(())
    }
}

/// Creates, in the LB's namespace, the veth `name` with MAC `mac` and `queues` rx/tx queues,
/// whose peer is `eth0` of namespace `peer_ns` with MAC `peer_mac`.
fn veth_pair(
    name: &str,
    mac: [u8; 6],
    peer_mac: [u8; 6],
    peer_ns: &str,
    queues: usize,
) -> Result<()> {
    let (mac, peer_mac, q) = (mac_text(mac), mac_text(peer_mac), queues.to_string());
    ip(
        LB_NS,
        &[
            "link",
            "add",
            name,
            "address",
            &mac,
            "numtxqueues",
            &q,
            "numrxqueues",
            &q,
            "type",
            "veth",
            "peer",
            "name",
            IFACE,
            "address",
            &peer_mac,
            "numtxqueues",
            &q,
            "numrxqueues",
            &q,
            "netns",
            peer_ns,
        ],
    )
}

impl Drop for Topology {
    fn drop(&mut self) {
        for ns in self.created.iter().rev() {
            if let Err(error) = netns::delete(ns) {
                eprintln!("warning: cannot remove namespace {ns}: {error:#}");
            }
        }
    }
}

/// Deletes namespaces of this section left over by a crashed run.
fn sweep_stale() -> Result<()> {
    for ns in netns::list()?
        .into_iter()
        .filter(|ns| ns.starts_with(PREFIX))
    {
        netns::delete(&ns)?;
    }
    Ok(())
}

/// IPv6 off (also for interfaces created later), no reverse-path filtering, wide local
/// port range and TIME_WAIT reuse for the connection test, and `lo` up.
fn prepare(ns: &str) -> Result<()> {
    netns::set_sysctls(
        ns,
        &[
            ("net/ipv6/conf/all/disable_ipv6", "1"),
            ("net/ipv6/conf/default/disable_ipv6", "1"),
            ("net/ipv4/conf/all/rp_filter", "0"),
            ("net/ipv4/conf/default/rp_filter", "0"),
            ("net/ipv4/ip_local_port_range", "1024 65000"),
            ("net/ipv4/tcp_tw_reuse", "1"),
        ],
    )?;
    ip(ns, &["link", "set", "lo", "up"])
}

/// Client: its address, the VIPs via the LB, and tx checksum offload off (frames forwarded
/// by XDP at L2 would otherwise carry unfinished checksums).
fn configure_client() -> Result<()> {
    link_up(CLIENT_NS, IFACE, CLIENT)?;
    ip(
        CLIENT_NS,
        &["route", "add", "198.19.10.0/24", "via", &LB.to_string()],
    )?;
    netns::run(CLIENT_NS, &["ethtool", "-K", IFACE, "tx", "off"])?;
    Ok(())
}

/// LB: its address towards the client and one per backend link; forwards IPv4.
fn configure_lb() -> Result<()> {
    netns::set_sysctls(LB_NS, &[("net/ipv4/ip_forward", "1")])?;
    link_up(LB_NS, IFACE, LB)?;
    for index in 0..BACKENDS {
        link_up(LB_NS, &format!("bk{index}"), gateway(index))?;
    }
    Ok(())
}

/// Backend `index`: its address, the VIP on `lo`, and the LB as default gateway.
fn configure_backend(index: usize) -> Result<()> {
    let ns = backend_ns(index);
    link_up(&ns, IFACE, backend_addr(index))?;
    ip(&ns, &["address", "add", &format!("{VIP}/32"), "dev", "lo"])?;
    ip(
        &ns,
        &[
            "route",
            "add",
            "default",
            "via",
            &gateway(index).to_string(),
        ],
    )
}

/// Gives `iface` in `ns` the /24 address `addr` and brings it up.
fn link_up(ns: &str, iface: &str, addr: Ipv4Addr) -> Result<()> {
    ip(ns, &["address", "add", &format!("{addr}/24"), "dev", iface])?;
    ip(ns, &["link", "set", iface, "up"])
}

/// Runs `ip ARGS` in `ns`.
pub fn ip(ns: &str, args: &[&str]) -> Result<()> {
    let argv: Vec<&str> = std::iter::once("ip").chain(args.iter().copied()).collect();
    netns::run(ns, &argv)?;
    Ok(())
}
