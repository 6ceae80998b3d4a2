//! Where a lab's daemon runs: the load balancer's namespace, and the veth peer of its
//! `eth0`, which receives the frames its XDP program sends out (XDP_TX or a redirect).

use crate::topology::Topology;

/// A topology the daemon can run in.
pub trait Site {
    /// The load balancer's namespace, named `{prefix}-lb` (its interface is `eth0`).
    fn lb_ns(&self) -> &str;

    /// The namespace and name of the veth peer of the LB's `eth0`: native XDP_TX out of
    /// `eth0` is only delivered when this peer runs an XDP program, so the lab attaches
    /// the XDP_PASS helper to it.
    fn lb_peer(&self) -> (&str, &str);
}

impl Site for Topology {
    fn lb_ns(&self) -> &str {
        Topology::lb_ns(self)
    }

    fn lb_peer(&self) -> (&str, &str) {
        (self.bridge_ns(), self.lb_bridge_port())
    }
}
