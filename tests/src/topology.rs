//! The namespace topology: a bridge joining a client, a load balancer host
//! and backends, each in its own network namespace.

mod addresses;
pub(crate) mod names;
pub(crate) mod setup;

use std::net::IpAddr;

use anyhow::{ensure, Result};

pub use addresses::{CLIENT_V4, CLIENT_V6, LB_V4, LB_V6, VIP4, VIP6};

use crate::netns;

/// What to build.
#[derive(Debug, Clone)]
pub struct TopologySpec {
    /// Namespace name prefix, unique per test (1-12 of `a-z0-9`), e.g.
    /// `blt1`. Namespaces are `{prefix}-br`, `-cl`, `-lb`, `-b{i}`.
    pub prefix: String,
    /// Backend names, e.g. `blue0`; one backend per name. Backend servers
    /// answer with their name.
    pub backends: Vec<String>,
    /// How many extra client addresses to add (at most 250).
    pub extra_clients: u8,
}

/// A built topology. Dropping it (also while unwinding from a panic)
/// SIGKILLs every process living in its namespaces and deletes them.
#[derive(Debug)]
pub struct Topology {
    bridge_ns: String,
    client_ns: String,
    lb_ns: String,
    lb_bridge_port: String,
    backend_ns: Vec<String>,
    backend_names: Vec<String>,
    extra_clients: u8,
    /// Namespaces created so far, in creation order.
    created: Vec<String>,
}

impl Topology {
    /// Builds the topology, first removing leftovers of earlier runs with
    /// the same prefix (see [`sweep_stale`]). On failure, whatever was
    /// already created is removed.
    pub fn build(spec: TopologySpec) -> Result<Topology> {
        validate(&spec)?;
        sweep_stale(&spec.prefix)?;
        let mut topology = Topology::named(spec);
        topology.create_namespaces()?;
        topology.configure()?;
        Ok(topology)
    }

    /// The topology's names, before anything exists.
    fn named(spec: TopologySpec) -> Topology {
        let prefix = &spec.prefix;
        let lb_ns = names::lb_ns(prefix);
        Topology {
            bridge_ns: names::bridge_ns(prefix),
            client_ns: names::client_ns(prefix),
            lb_bridge_port: names::bridge_port(&lb_ns),
            lb_ns,
            backend_ns: (0..spec.backends.len())
                .map(|index| names::backend_ns(prefix, index))
                .collect(),
            backend_names: spec.backends,
            extra_clients: spec.extra_clients,
            created: Vec::new(),
        }
    }

    /// Namespaces of the hosts plugged into the bridge.
    fn hosts(&self) -> Vec<String> {
        [&self.client_ns, &self.lb_ns]
            .into_iter()
            .chain(&self.backend_ns)
            .cloned()
            .collect()
    }

    fn create_namespaces(&mut self) -> Result<()> {
        let all = std::iter::once(self.bridge_ns.clone()).chain(self.hosts());
        for ns in all.collect::<Vec<_>>() {
            netns::create(&ns)?;
            self.created.push(ns.clone());
            setup::prepare_namespace(&ns)?;
        }
        Ok(())
    }

    fn configure(&self) -> Result<()> {
        setup::build_bridge(&self.bridge_ns, &self.hosts())?;
        setup::configure_client(&self.client_ns, self.extra_clients)?;
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

    /// The load balancer host's namespace (its interface is `eth0`).
    pub fn lb_ns(&self) -> &str {
        &self.lb_ns
    }

    /// The bridge namespace, holding `br0` and all bridge ports.
    pub fn bridge_ns(&self) -> &str {
        &self.bridge_ns
    }

    /// Name of the load balancer's port in the bridge namespace, the peer
    /// of its `eth0`. Native XDP_TX out of the LB's `eth0` is only
    /// delivered if this port has an XDP program (e.g. XDP_PASS) attached.
    pub fn lb_bridge_port(&self) -> &str {
        &self.lb_bridge_port
    }

    /// Deletes the load balancer's `eth0` and creates it again with the same name, MAC and
    /// addresses, as a NIC flap or a driver reload leaves it: a new interface index, no XDP
    /// program. Its bridge-side port is new too: attach the XDP_PASS helper to it again
    /// ([`crate::balancer::Balancer::replug`]).
    pub fn recreate_lb_interface(&self) -> Result<()> {
        setup::replug_host(&self.bridge_ns, &self.lb_ns)?;
        setup::configure_lb(&self.lb_ns)
    }

    /// Number of backends.
    pub fn backend_count(&self) -> usize {
        self.backend_ns.len()
    }

    /// Backend `index`'s namespace.
    pub fn backend_ns(&self, index: usize) -> &str {
        &self.backend_ns[self.backend_index(index)]
    }

    /// Backend `index`'s name, as answered by its servers.
    pub fn backend_name(&self, index: usize) -> &str {
        &self.backend_names[self.backend_index(index)]
    }

    /// Backend `index`'s IPv4 address on `eth0`: 198.18.0.(101 + index).
    pub fn backend_v4(&self, index: usize) -> IpAddr {
        addresses::backend_v4(self.backend_index(index))
    }

    /// Backend `index`'s IPv6 address on `eth0`: 2001:db8::(0x101 + index).
    pub fn backend_v6(&self, index: usize) -> IpAddr {
        addresses::backend_v6(self.backend_index(index))
    }

    /// Extra client IPv4 address `index` (from 0): 198.18.2.(index + 1).
    pub fn extra_client_v4(&self, index: usize) -> IpAddr {
        addresses::extra_client_v4(self.extra_client_index(index))
    }

    /// Extra client IPv6 address `index` (from 0): 2001:db8:2::(index + 1).
    pub fn extra_client_v6(&self, index: usize) -> IpAddr {
        addresses::extra_client_v6(self.extra_client_index(index))
    }

    fn backend_index(&self, index: usize) -> usize {
        let count = self.backend_count();
        assert!(index < count, "backend {index} of {count} does not exist");
        index
    }

    fn extra_client_index(&self, index: usize) -> usize {
        let count = self.extra_clients;
        assert!(
            index < usize::from(count),
            "extra client address {index} of {count} does not exist"
        );
        index
    }
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

/// Removes namespaces named like those of a topology with `prefix` (left
/// over by a crashed run), killing the processes inside them first.
/// Returns how many were removed.
pub fn sweep_stale(prefix: &str) -> Result<usize> {
    let stale: Vec<String> = netns::list()?
        .into_iter()
        .filter(|ns| names::belongs_to(prefix, ns))
        .collect();
    for ns in &stale {
        netns::delete(ns)?;
    }
    Ok(stale.len())
}

fn validate(spec: &TopologySpec) -> Result<()> {
    validate_names(&spec.prefix, &spec.backends, addresses::MAX_BACKENDS)?;
    ensure!(
        spec.extra_clients <= addresses::MAX_EXTRA_CLIENTS,
        "at most {} extra client addresses",
        addresses::MAX_EXTRA_CLIENTS
    );
    Ok(())
}

/// Checks a topology's namespace `prefix` (1-12 of `a-z0-9`) and its backend names
/// (printable ASCII without spaces; at most `max_backends`).
pub(crate) fn validate_names(prefix: &str, backends: &[String], max_backends: usize) -> Result<()> {
    ensure!(
        (1..=12).contains(&prefix.len())
            && prefix
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()),
        "prefix {prefix:?} must be 1-12 characters of a-z0-9"
    );
    ensure!(
        backends.len() <= max_backends,
        "at most {max_backends} backends"
    );
    for name in backends {
        ensure!(
            !name.is_empty() && name.bytes().all(|b| b.is_ascii_graphic()),
            "backend name {name:?} must be non-empty printable ASCII without spaces"
        );
    }
    Ok(())
}
