//! The balancers compared, one active at a time on the same topology.

mod haproxy;
pub(super) mod nftables;
mod xdp;

use anyhow::Result;

use super::topology::{backend_addr, BACKENDS, LB_NS, VIP};
use nftables::Dnat;

/// The nftables DNAT of this topology.
fn dnat() -> Dnat {
    Dnat {
        ns: LB_NS.to_string(),
        table: "bbe2e".to_string(),
        vip: VIP,
        backends: (0..BACKENDS).map(backend_addr).collect(),
    }
}

/// A load balancer under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The `balancer` daemon: XDP in native mode on the LB's `eth0`, L2 direct server return.
    Xdp,
    /// nftables DNAT with a jhash map in the LB's prerouting hook.
    Nftables,
    /// HAProxy in TCP mode, proxying connections.
    Haproxy,
}

impl Kind {
    /// Every balancer, in the order they run in each round.
    pub const ALL: [Kind; 3] = [Kind::Xdp, Kind::Nftables, Kind::Haproxy];

    /// The balancer's name in the report.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Xdp => "balancer (XDP, native)",
            Kind::Nftables => "nftables DNAT (jhash)",
            Kind::Haproxy => "HAProxy (TCP mode)",
        }
    }

    /// Its configuration in one line, for the report.
    pub fn config(self, cpus: usize) -> String {
        match self {
            Kind::Xdp => xdp::describe(),
            Kind::Nftables => dnat().describe(),
            Kind::Haproxy => haproxy::describe(cpus),
        }
    }

    /// Whether it can forward the UDP flood (HAProxy proxies TCP only).
    pub fn forwards_udp(self) -> bool {
        self != Kind::Haproxy
    }

    /// Starts the balancer, runs `measure` while it is the only one active, and stops it
    /// (also when `measure` fails).
    pub fn while_active<T>(
        self,
        cpus: usize,
        scratch: &std::path::Path,
        measure: impl FnOnce() -> Result<T>,
    ) -> Result<T> {
        match self {
            Kind::Xdp => {
                let _daemon = xdp::Daemon::start(scratch)?;
                measure()
            }
            Kind::Nftables => {
                let _table = nftables::Table::add(&dnat(), scratch)?;
                measure()
            }
            Kind::Haproxy => {
                let _proxy = haproxy::Proxy::start(scratch, cpus)?;
                measure()
            }
        }
    }
}
