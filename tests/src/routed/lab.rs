//! A ready routed bench: [`RoutedTopology`] with serving backends `b0`, `b1`, ... and a
//! running daemon in the LB's namespace.
//!
//! A forwarding mode is an option of [`RoutedLab::service`] (e.g. `--forward ipip`); a
//! decapsulator runs in each backend's namespace ([`RoutedTopology::backend_ns`]) on its
//! `eth0`, next to the servers.

use std::net::SocketAddr;

use anyhow::Result;

use super::RoutedTopology;
use crate::{
    balancer::{Balancer, DaemonOptions},
    lab::{Lab, BACKENDS},
    traffic::{BackendServer, Client},
};

/// A routed topology with servers and a running daemon. Fields drop in order: daemon and
/// servers before the namespaces they live in.
pub struct RoutedLab {
    /// The daemon and its CLI.
    pub balancer: Balancer,
    servers: Vec<BackendServer>,
    /// The namespaces.
    pub topology: RoutedTopology,
    /// A client in the client namespace.
    pub client: Client,
}

impl RoutedLab {
    /// A lab of [`BACKENDS`] backends with the daemon in native XDP mode; `prefix` names
    /// its namespaces.
    pub fn new(prefix: &str) -> Result<Self> {
        Self::build(prefix, BACKENDS, DaemonOptions::default())
    }

    /// A lab of `backends` backends whose daemon runs with `options`.
    pub fn build(prefix: &str, backends: usize, options: DaemonOptions) -> Result<Self> {
        let names: Vec<String> = (0..backends).map(|i| format!("b{i}")).collect();
        let topology = RoutedTopology::build(prefix, &names)?;
        let servers = (0..backends)
            .map(|i| BackendServer::start(topology.backend_ns(i), topology.backend_name(i)))
            .collect::<Result<_>>()?;
        let balancer = Balancer::start_with_options(&topology, options)?;
        let client = Client::new(topology.client_ns());
        Ok(Self {
            balancer,
            servers,
            topology,
            client,
        })
    }

    /// The names of the backends whose servers run, in index order.
    pub fn serving(&self) -> Vec<&str> {
        self.servers.iter().map(BackendServer::name).collect()
    }

    /// Adds TCP service `name` on the VIP ([`Lab::vip`]) with `options` for `service add`
    /// (e.g. a forwarding mode), then backend `i` in group `groups[i]` with weight 100, by
    /// its own address; returns the service's address.
    pub fn service(
        &self,
        name: &str,
        v6: bool,
        groups: &[&str],
        options: &[&str],
    ) -> Result<SocketAddr> {
        let service = Lab::vip(v6);
        let vip = format!("{service}/tcp");
        let add = ["service", "add", name, "--vip", &vip];
        self.balancer.ok(&[&add[..], options].concat())?;
        for (i, group) in groups.iter().enumerate() {
            let addr = self.topology.backend_addr(i, v6).to_string();
            self.balancer
                .ok(&["backend", "add", name, &addr, "--group", group])?;
        }
        Ok(service)
    }
}
