//! The two ways of doing `nat`'s job compared, one active at a time on the same lab: the
//! `balancer` daemon with `nat` services, and nftables DNAT with conntrack undoing it on
//! the replies. The XDP_PASS helper on the router's port facing the LB (veth delivers the
//! LB's XDP_TX frames only to a peer that runs an XDP program) is attached for both, so
//! the router's side of that link works the same way in either run.

use std::path::Path;

use anyhow::Result;
use balancer_tests::balancer::{Balancer, DaemonOptions, VethPass};

use super::lab::Lab;
use crate::end_to_end::{balancers::nftables::Table, generator::FLOOD_PORT, responder::TCP_PORT};

/// A way of doing the job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Contender {
    /// The `balancer` daemon, XDP in native mode on the LB's `eth0`, `nat` services.
    Nat,
    /// nftables DNAT with a jhash map in the LB's prerouting hook.
    Nftables,
}

impl Contender {
    /// Both, in the order they run in each round.
    pub const ALL: [Contender; 2] = [Contender::Nat, Contender::Nftables];

    /// The name in the report.
    pub fn name(self) -> &'static str {
        match self {
            Contender::Nat => "balancer `nat` (XDP, native)",
            Contender::Nftables => "nftables DNAT (jhash)",
        }
    }

    /// The configuration in one line, for the report.
    pub fn config(self, lab: &Lab) -> Result<String> {
        let vip = Lab::vip()?;
        Ok(match self {
            Contender::Nat => format!(
                "`balancer daemon --iface eth0 --xdp-mode native`; services \
                 `{vip}:{FLOOD_PORT}/udp` and `{vip}:{TCP_PORT}/tcp`, each `--forward nat` \
                 with both backends in one group: the destination rewritten in XDP and the \
                 packet routed back out of `eth0` (`bpf_fib_lookup`, XDP_TX), the backends' \
                 replies rewritten to come from the VIP the same way"
            ),
            Contender::Nftables => format!(
                "{}; conntrack rewrites the replies back",
                lab.dnat()?.describe()
            ),
        })
    }

    /// Starts the contender on `lab` (files under `scratch`), runs `measure` while it is
    /// the only one active, and stops it (also when `measure` fails).
    pub fn while_active<T>(
        self,
        lab: &Lab,
        scratch: &Path,
        measure: impl FnOnce() -> Result<T>,
    ) -> Result<T> {
        match self {
            Contender::Nat => {
                let _daemon = start_daemon(lab)?;
                measure()
            }
            Contender::Nftables => {
                let t = &lab.topology;
                let _pass = VethPass::attach(t.router_ns(), t.router_lb_port())?;
                let _table = Table::add(&lab.dnat()?, scratch)?;
                measure()
            }
        }
    }
}

/// The daemon (`$BALANCER_BIN`) with the XDP_PASS helper, and both `nat` services
/// configured through its CLI.
fn start_daemon(lab: &Lab) -> Result<Balancer> {
    let daemon = Balancer::start_with_options(&lab.topology, DaemonOptions::default())?;
    let vip = Lab::vip()?;
    for (name, port, protocol) in [("flood", FLOOD_PORT, "udp"), ("conns", TCP_PORT, "tcp")] {
        let spec = format!("{vip}:{port}/{protocol}");
        daemon.ok(&["service", "add", name, "--vip", &spec, "--forward", "nat"])?;
        for addr in lab.backends()? {
            daemon.ok(&["backend", "add", name, &addr.to_string(), "--group", "main"])?;
        }
    }
    Ok(daemon)
}
