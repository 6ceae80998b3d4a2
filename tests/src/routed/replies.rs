//! The routing of `nat` services on the routed lab: everything the backends send goes
//! through the LB, which rewrites their replies to come from the VIP. Backends of `nat` and
//! `fullnat` services hold no VIP.

use anyhow::Result;

use super::RoutedTopology;
use crate::netns;
use crate::topology::names::BRIDGE;
use crate::topology::setup::ip_batch;
use crate::topology::{VIP4, VIP6};

/// The router's routing table that sends the backends' packets to the LB (also the
/// preference of the rule that picks it).
const THROUGH_LB: &str = "100";

/// Makes the LB the path of every packet from the backends — on the router, a rule for
/// what arrives on the backends' bridge and a table whose default route is the LB (IPv4
/// and IPv6) — and takes the VIPs off the backends' loopbacks: `nat` backends need none.
pub(crate) fn through_lb(topology: &RoutedTopology) -> Result<()> {
    for v6 in [false, true] {
        let family = if v6 { "-6" } else { "-4" };
        let lb = topology.lb_addr(v6);
        let batch = format!(
            "rule add iif {BRIDGE} lookup {THROUGH_LB} pref {THROUGH_LB}\n\
             route add default via {lb} table {THROUGH_LB}\n"
        );
        netns::run_with_stdin(topology.router_ns(), &["ip", family, "-batch", "-"], &batch)?;
    }
    without_vips(topology)
}

/// Takes the VIPs off the backends' loopbacks: translated backends need none.
pub(crate) fn without_vips(topology: &RoutedTopology) -> Result<()> {
    let loopback = format!("address del {VIP4}/32 dev lo\naddress del {VIP6}/128 dev lo\n");
    for index in 0..topology.backend_count() {
        ip_batch(topology.backend_ns(index), &loopback)?;
    }
    Ok(())
}
