//! The routed topology: the load balancer and the backends on different subnets, joined by
//! a router namespace, so that every packet from the LB to a backend crosses the router —
//! the bench of the forwarding modes that route (tunnels, full NAT), where the bridged
//! [`crate::topology`] is the bench of L2 direct server return.
//!
//! ```text
//!   client (-cl)        LB (-lb)            b0, b1, ... (-b0, -b1, ...)
//!   198.18.1.16         198.18.4.2          198.18.8.(101 + i), VIPs on lo
//!   2001:db8:1::10      2001:db8:4::2       2001:db8:8::(0x65 + i)
//!      │ eth0              │ eth0              │ eth0
//!      │                   │                   │ p-b0, p-b1, ...
//!   ┌─ cl ──────────────── lb ─────────────── br0 ──┐  router (-rt)
//!   │  198.18.1.1          198.18.4.1          198.18.8.1
//!   │  2001:db8:1::1       2001:db8:4::1       2001:db8:8::1
//!   └─ forwarding on; the VIPs routed to the LB ────┘
//! ```
//!
//! * Namespaces: `{prefix}-cl` (client), `-rt` (router), `-lb` (load balancer), `-b{i}`
//!   (backends). Each host has one interface, `eth0`, and the router as its default
//!   gateway (IPv4 and IPv6); the router holds the backends' bridge `br0` itself.
//! * The router routes the VIPs ([`VIP4`], [`VIP6`]) to the LB: a client's packet goes
//!   client → router → LB. What the LB sends on to a backend leaves its `eth0` back to the
//!   router (its next hop for the backends' subnet), which forwards it to the backend.
//!   Backends reply to the client directly, through the router.
//! * Backends hold the VIPs on `lo` as in the DSR lab, and may take encapsulated packets
//!   (a decapsulator on their `eth0`, or a tunnel device) whose inner packet is for the VIP.
//!   ARP neither answers nor announces the VIP on their link (`arp_ignore=1`,
//!   `arp_announce=2`: the router resolves only their own addresses). Reverse path
//!   filtering is off on the backends: an inner packet comes from the client, and a strict
//!   check would drop it whenever it is seen on another interface than the route back to
//!   the client (a tunnel device), while a loose one depends on the routes the test
//!   installs; with it off, a backend takes what reaches its address. It is off on the
//!   router too: the backends' direct replies come from the VIP, which the router routes
//!   to the LB, not to the backends' link.
//! * A lab for a forwarding mode ([`RoutedLab::for_mode`], [`Mode`]) turns IP forwarding on
//!   on the LB host, and then for `ipip` and `gue` attaches `balancer decap` to every
//!   backend's `eth0` ([`Decapsulators`]); for `nat` (`replies`) it takes the VIPs off the
//!   backends' loopbacks and adds a policy route on the router — what arrives on `br0`
//!   goes to the LB (table 100) — so that the LB sees and rewrites every reply.
//! * Veth artefacts: native XDP_TX or a redirect out of the LB's `eth0` is delivered only
//!   when its peer — the router's `lb` — runs an XDP program: [`crate::balancer::Balancer`]
//!   attaches the XDP_PASS helper there ([`crate::balancer::Site`]). The client and the
//!   backends send with tx checksum offload off, so that their packets carry finished
//!   checksums when an XDP program forwards them on.
//!
//! Dropping the topology (also while unwinding from a panic) SIGKILLs every process in its
//! namespaces and deletes them.

mod addresses;
mod decap;
mod lab;
mod mode;
mod replies;
mod setup;

use std::net::IpAddr;

use anyhow::Result;

pub use decap::Decapsulators;
pub use lab::RoutedLab;
pub use mode::{Mode, NAT_VIP_PORT};

use crate::balancer::Site;
use crate::netns;
use crate::topology::{names, setup as bridged, sweep_stale, validate_names};
pub use crate::topology::{VIP4, VIP6};
use addresses::{BACKEND_SUBNET, LB_SUBNET};

/// A built routed topology; see the module documentation.
#[derive(Debug)]
pub struct RoutedTopology {
    client_ns: String,
    router_ns: String,
    lb_ns: String,
    backend_ns: Vec<String>,
    backend_names: Vec<String>,
    /// Namespaces created so far, in creation order.
    created: Vec<String>,
}

impl RoutedTopology {
    /// Builds the topology with one backend per name in `backends` (its servers answer with
    /// that name), first removing leftovers of earlier runs with the same `prefix` (1-12 of
    /// `a-z0-9`, unique per test). On failure, whatever was already created is removed.
    pub fn build(prefix: &str, backends: &[String]) -> Result<RoutedTopology> {
        validate_names(prefix, backends, addresses::MAX_BACKENDS)?;
        sweep_stale(prefix)?;
        let mut topology = RoutedTopology {
            client_ns: names::client_ns(prefix),
            router_ns: names::router_ns(prefix),
            lb_ns: names::lb_ns(prefix),
            backend_ns: (0..backends.len())
                .map(|index| names::backend_ns(prefix, index))
                .collect(),
            backend_names: backends.to_vec(),
            created: Vec::new(),
        };
        topology.create_namespaces()?;
        topology.configure()?;
        Ok(topology)
    }

    fn create_namespaces(&mut self) -> Result<()> {
        let all: Vec<String> = [&self.router_ns, &self.client_ns, &self.lb_ns]
            .into_iter()
            .chain(&self.backend_ns)
            .cloned()
            .collect();
        for ns in all {
            netns::create(&ns)?;
            self.created.push(ns.clone());
            bridged::prepare_namespace(&ns)?;
        }
        Ok(())
    }

    fn configure(&self) -> Result<()> {
        setup::configure_router(
            &self.router_ns,
            &self.client_ns,
            &self.lb_ns,
            &self.backend_ns,
        )?;
        setup::configure_client(&self.client_ns)?;
        setup::configure_lb(&self.lb_ns)?;
        for (index, ns) in self.backend_ns.iter().enumerate() {
            setup::configure_backend(ns, index)?;
        }
        Ok(())
    }

    /// The client's namespace.
    pub fn client_ns(&self) -> &str {
        &self.client_ns
    }

    /// The router's namespace.
    pub fn router_ns(&self) -> &str {
        &self.router_ns
    }

    /// The load balancer host's namespace (its interface is `eth0`).
    pub fn lb_ns(&self) -> &str {
        &self.lb_ns
    }

    /// The router's interface facing the load balancer (the peer of the LB's `eth0`).
    pub fn router_lb_port(&self) -> &str {
        setup::ROUTER_LB_PORT
    }

    /// The router's interface facing the client (the peer of the client's `eth0`).
    pub fn router_client_port(&self) -> &str {
        setup::ROUTER_CLIENT_PORT
    }

    /// Makes the LB the path of every packet from the backends, as `nat` needs: a rule on
    /// the router sends what arrives on the backends' bridge to a table whose default route
    /// is the LB; forwarding is turned on on the LB host (its route lookups need it, and it
    /// forwards what its program passes); the VIPs are taken off the backends' loopbacks
    /// (`nat` backends need none).
    pub fn backends_through_lb(&self) -> Result<()> {
        setup::backends_through_lb(&self.router_ns, &self.lb_ns, &self.backend_ns)
    }

    /// Number of backends.
    pub fn backend_count(&self) -> usize {
        self.backend_ns.len()
    }

    /// Backend `index`'s namespace (its interface is `eth0`).
    pub fn backend_ns(&self, index: usize) -> &str {
        &self.backend_ns[self.backend_index(index)]
    }

    /// Backend `index`'s name, as answered by its servers.
    pub fn backend_name(&self, index: usize) -> &str {
        &self.backend_names[self.backend_index(index)]
    }

    /// Backend `index`'s own address on `eth0`: 198.18.8.(101 + index) or
    /// 2001:db8:8::(0x65 + index).
    pub fn backend_addr(&self, index: usize, v6: bool) -> IpAddr {
        addresses::backend(self.backend_index(index), v6)
    }

    /// The client's address: 198.18.1.16 or 2001:db8:1::10.
    pub fn client_addr(&self, v6: bool) -> IpAddr {
        addresses::client(v6)
    }

    /// The load balancer's address facing the router (the outer source of its tunnels):
    /// 198.18.4.2 or 2001:db8:4::2.
    pub fn lb_addr(&self, v6: bool) -> IpAddr {
        addresses::lb(v6)
    }

    /// The router's address on the LB's link, the LB's gateway: 198.18.4.1 or
    /// 2001:db8:4::1.
    pub fn lb_gateway(&self, v6: bool) -> IpAddr {
        LB_SUBNET.router(v6)
    }

    /// The router's address on the backends' link, their gateway: 198.18.8.1 or
    /// 2001:db8:8::1.
    pub fn backend_gateway(&self, v6: bool) -> IpAddr {
        BACKEND_SUBNET.router(v6)
    }

    fn backend_index(&self, index: usize) -> usize {
        let count = self.backend_count();
        assert!(index < count, "backend {index} of {count} does not exist");
        index
    }
}

impl Site for RoutedTopology {
    fn lb_ns(&self) -> &str {
        &self.lb_ns
    }

    fn lb_peer(&self) -> (&str, &str) {
        (&self.router_ns, setup::ROUTER_LB_PORT)
    }
}

impl Drop for RoutedTopology {
    fn drop(&mut self) {
        for ns in self.created.iter().rev() {
            if let Err(error) = netns::delete(ns) {
                eprintln!("warning: cannot remove namespace {ns}: {error:#}");
            }
        }
    }
}
