//! The section's lab: the routed topology of the namespace tests ([`RoutedTopology`]) with
//! two backends, the router sending everything the backends send through the LB
//! ([`RoutedTopology::backends_through_lb`]), so client packets and replies both cross
//! the LB, whichever balancer runs there. The backends are unmodified (no VIP); the LB
//! forwards. Removed on drop, also when a measurement fails.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use anyhow::{bail, Result};
use balancer_tests::{
    netns,
    routed::{RoutedTopology, VIP4},
};

use crate::end_to_end::{
    balancers::nftables::Dnat, connections::Target, generator::Wire, responder::TCP_PORT,
};

/// Prefix of the lab's namespaces.
const PREFIX: &str = "bbnat";
/// Number of backends.
pub const BACKENDS: usize = 2;

/// The built lab.
pub struct Lab {
    /// The namespaces.
    pub topology: RoutedTopology,
}

impl Lab {
    /// Builds the lab (leftovers of an earlier run are removed first).
    pub fn build() -> Result<Lab> {
        let names: Vec<String> = (0..BACKENDS).map(|i| format!("b{i}")).collect();
        let topology = RoutedTopology::build(PREFIX, &names)?;
        topology.backends_through_lb()?;
        let lab = Lab { topology };
        // Connection tests: a wide local port range and TIME_WAIT reuse, as in the bridged
        // section; the LB sends no redirects (it routes back out of the interface packets
        // came in on) and filters no reverse path.
        for ns in lab.hosts() {
            netns::set_sysctls(
                &ns,
                &[
                    ("net/ipv4/ip_local_port_range", "1024 65000"),
                    ("net/ipv4/tcp_tw_reuse", "1"),
                ],
            )?;
        }
        netns::set_sysctls(
            lab.topology.lb_ns(),
            &[
                ("net/ipv4/conf/all/send_redirects", "0"),
                ("net/ipv4/conf/eth0/send_redirects", "0"),
                ("net/ipv4/conf/all/rp_filter", "0"),
                ("net/ipv4/conf/eth0/rp_filter", "0"),
            ],
        )?;
        Ok(lab)
    }

    /// The client's and the backends' namespaces.
    fn hosts(&self) -> Vec<String> {
        std::iter::once(self.topology.client_ns().to_string())
            .chain(self.backend_namespaces())
            .collect()
    }

    /// The backends' namespaces.
    pub fn backend_namespaces(&self) -> Vec<String> {
        (0..BACKENDS)
            .map(|i| self.topology.backend_ns(i).to_string())
            .collect()
    }

    /// The VIP (IPv4).
    pub fn vip() -> Result<Ipv4Addr> {
        match VIP4 {
            IpAddr::V4(vip) => Ok(vip),
            IpAddr::V6(vip) => bail!("the routed lab's IPv4 VIP is {vip}"),
        }
    }

    /// The backends' own addresses (IPv4).
    pub fn backends(&self) -> Result<Vec<Ipv4Addr>> {
        (0..BACKENDS)
            .map(|i| match self.topology.backend_addr(i, false) {
                IpAddr::V4(addr) => Ok(addr),
                IpAddr::V6(addr) => bail!("backend {i}'s IPv4 address is {addr}"),
            })
            .collect()
    }

    /// The flood's wire: out of the client's `eth0` to the router's port facing it.
    pub fn wire(&self) -> Result<Wire> {
        let t = &self.topology;
        let IpAddr::V4(src) = t.client_addr(false) else {
            bail!("the routed lab's client has no IPv4 address");
        };
        Ok(Wire {
            ns: t.client_ns().to_string(),
            src_mac: netns::eth0_mac(t.client_ns())?,
            dst_mac: netns::mac(t.router_ns(), t.router_client_port())?,
            src,
            dst: Self::vip()?,
        })
    }

    /// The connection test's target: the client to the VIP's TCP port.
    pub fn target(&self) -> Result<Target> {
        Ok(Target {
            ns: self.topology.client_ns().to_string(),
            service: SocketAddr::from((Self::vip()?, TCP_PORT)),
        })
    }

    /// The nftables DNAT doing `nat`'s job in the LB's namespace.
    pub fn dnat(&self) -> Result<Dnat> {
        Ok(Dnat {
            ns: self.topology.lb_ns().to_string(),
            table: PREFIX.to_string(),
            vip: Self::vip()?,
            backends: self.backends()?,
        })
    }
}
