//! A ready routed bench: [`RoutedTopology`] with serving backends `b0`, `b1`, ... and a
//! running daemon in the LB's namespace.
//!
//! [`RoutedLab::for_mode`] makes the hosts ready for a forwarding mode — a decapsulator in
//! each backend's namespace ([`RoutedTopology::backend_ns`]) on its `eth0`, next to the
//! servers, for the tunnels; the backends' traffic routed through the LB for `nat`; no VIP
//! on the backends for `nat` and `fullnat` — and
//! [`RoutedLab::mode_service`] adds services forwarding by it.

use std::net::{IpAddr, SocketAddr};

use anyhow::{Context, Result};

use super::{decap::Decapsulators, replies, Mode, RoutedTopology};
use crate::{
    balancer::{Balancer, DaemonOptions},
    lab::{Lab, BACKENDS},
    netns,
    traffic::{BackendServer, Client, SERVICE_PORT},
};

/// A routed topology with servers and a running daemon. Fields drop in order: daemon,
/// servers and decapsulators before the namespaces they live in.
pub struct RoutedLab {
    /// The daemon and its CLI.
    pub balancer: Balancer,
    servers: Vec<BackendServer>,
    /// The backends' decapsulators, in a lab made for a tunnel mode.
    decapsulators: Option<Decapsulators>,
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
            decapsulators: None,
            topology,
            client,
        })
    }

    /// A lab of `backends` backends ready for services of `mode`. IP forwarding is on on the
    /// LB host (the data plane's route lookups need it). For `ipip` and `gue` (the same
    /// decapsulator takes both), `balancer decap` runs on every backend's `eth0`, each with
    /// a pin directory of its own, removed with the lab. For `nat`, the router sends
    /// everything the backends send through the LB and the backends hold no VIP.
    pub fn for_mode(prefix: &str, mode: Mode, backends: usize) -> Result<Self> {
        let mut lab = Self::build(prefix, backends, DaemonOptions::default())?;
        for sysctl in [
            "net.ipv4.conf.all.forwarding=1",
            "net.ipv6.conf.all.forwarding=1",
        ] {
            netns::run(lab.topology.lb_ns(), &["sysctl", "-qw", sysctl])?;
        }
        match mode {
            Mode::Ipip | Mode::Gue => {
                let namespaces = (0..backends).map(|i| lab.topology.backend_ns(i));
                lab.decapsulators = Some(Decapsulators::attach(namespaces)?);
            }
            Mode::Nat => replies::through_lb(&lab.topology)?,
            Mode::Fullnat => replies::without_vips(&lab.topology)?,
        }
        Ok(lab)
    }

    /// Makes backend `index` drop the first SYN of every TCP connection to its servers'
    /// port, as a backend does whose accept queue is full: the client sends it again a
    /// second later, and that one is answered. An nftables table of the backend's
    /// namespace remembers each client address and port for 10 s.
    pub fn drop_first_syns(&self, index: usize) -> Result<()> {
        let ruleset = format!(
            "table inet first_syns {{
  set seen4 {{ type ipv4_addr . inet_service; flags dynamic, timeout; timeout 10s; }}
  set seen6 {{ type ipv6_addr . inet_service; flags dynamic, timeout; timeout 10s; }}
  chain input {{
    type filter hook input priority 0;
    tcp dport {SERVICE_PORT} tcp flags & (syn | ack) == syn ip saddr . tcp sport @seen4 accept
    tcp dport {SERVICE_PORT} tcp flags & (syn | ack) == syn ip6 saddr . tcp sport @seen6 accept
    tcp dport {SERVICE_PORT} tcp flags & (syn | ack) == syn meta nfproto ipv4 add @seen4 {{ ip saddr . tcp sport }} drop
    tcp dport {SERVICE_PORT} tcp flags & (syn | ack) == syn meta nfproto ipv6 add @seen6 {{ ip6 saddr . tcp sport }} drop
  }}
}}
"
        );
        let file = self.balancer.scratch(&format!("first-syns-{index}.nft"));
        std::fs::write(&file, ruleset).context("write the nftables ruleset")?;
        let file = file.to_str().context("ruleset path")?;
        netns::run(self.topology.backend_ns(index), &["nft", "-f", file])?;
        Ok(())
    }

    /// For IPv4 and IPv6, adds a UDP service of translating `mode` (`nat`, `fullnat`) on the
    /// mode's VIP port to port 9 of backend 0, where nothing listens, and requires a
    /// client's datagram to it refused: the backend's port unreachable, translated by the
    /// LB, reaches the client's connected socket, which matches it only if it quotes the
    /// datagram as the socket sent it (from its own port, to the VIP).
    pub fn ensure_closed_port_refused(&self, mode: Mode) -> Result<()> {
        for v6 in [false, true] {
            let name = if v6 { "closed6" } else { "closed" };
            let vip = SocketAddr::new(Lab::vip(v6).ip(), mode.vip_port());
            self.translated_service(mode, name, vip, "udp", 9, &[])?;
            let socket = self.client.udp_socket(vip, None, 0)?;
            socket.send(b"anyone?\n")?;
            let mut buf = [0u8; 64];
            let got = socket.recv(&mut buf);
            anyhow::ensure!(
                matches!(&got, Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused),
                "{vip}: the client should see the port unreachable, got {got:?}"
            );
        }
        Ok(())
    }

    /// Adds service `name` of translated `mode` (`nat`, `fullnat`) on `vip` over `protocol`
    /// with `--backend-port port` and `options`, and backend 0 in group `main`.
    pub fn translated_service(
        &self,
        mode: Mode,
        name: &str,
        vip: SocketAddr,
        protocol: &str,
        port: u16,
        options: &[&str],
    ) -> Result<()> {
        let spec = format!("{vip}/{protocol}");
        let port = port.to_string();
        let mut args = vec![
            "service",
            "add",
            name,
            "--vip",
            &spec,
            "--forward",
            mode.name(),
            "--backend-port",
            &port,
        ];
        args.extend_from_slice(options);
        self.balancer.ok(&args)?;
        let addr = self.topology.backend_addr(0, vip.is_ipv6()).to_string();
        self.balancer
            .ok(&["backend", "add", name, &addr, "--group", "main"])?;
        Ok(())
    }

    /// The names of the backends whose servers run, in index order.
    pub fn serving(&self) -> Vec<&str> {
        self.servers.iter().map(BackendServer::name).collect()
    }

    /// Adds service `name` of `mode` over `protocol` (`tcp`, `udp`) on the VIP of the
    /// family and the mode's port ([`Mode::vip_port`]), with `options` for `service add`
    /// after the mode's own, then backend `i` with the group and weight `backends[i]`;
    /// returns the service's address.
    pub fn mode_service(
        &self,
        mode: Mode,
        name: &str,
        v6: bool,
        protocol: &str,
        options: &[&str],
        backends: &[(&str, u16)],
    ) -> Result<SocketAddr> {
        let vip = SocketAddr::new(Lab::vip(v6).ip(), mode.vip_port());
        let spec = format!("{vip}/{protocol}");
        let own = mode.options();
        let own: Vec<&str> = own.iter().map(String::as_str).collect();
        let add = ["service", "add", name, "--vip", &spec];
        self.balancer.ok(&[&add[..], &own, options].concat())?;
        for (i, (group, weight)) in backends.iter().enumerate() {
            let addr = self.topology.backend_addr(i, v6).to_string();
            let weight = weight.to_string();
            self.balancer.ok(&[
                "backend", "add", name, &addr, "--group", group, "--weight", &weight,
            ])?;
        }
        Ok(vip)
    }

    /// The peers of the established TCP connections to backend `index`'s servers (port
    /// [`SERVICE_PORT`]), IPv4 peers as IPv4 addresses.
    pub fn peers(&self, index: usize) -> Result<Vec<IpAddr>> {
        let filter = format!("( sport = :{SERVICE_PORT} )");
        let out = netns::run(
            self.topology.backend_ns(index),
            &["ss", "-Htn", "state", "established", &filter],
        )?;
        out.lines()
            .filter_map(|line| line.split_whitespace().last())
            .map(|peer| {
                let host = peer.rsplit_once(':').context("peer address")?.0;
                let host = host.trim_start_matches('[').trim_end_matches(']');
                let addr: IpAddr = host.parse().with_context(|| format!("peer {peer}"))?;
                // The servers listen on both families: IPv4 peers show as mapped addresses.
                Ok(addr.to_canonical())
            })
            .collect()
    }

    /// The counters of backend `index`'s decapsulator (`balancer decap --status --json`)
    /// in a lab made for a tunnel mode.
    pub fn decap_counters(&self, index: usize) -> Result<serde_json::Value> {
        self.decapsulators
            .as_ref()
            .context("the lab was not made for a tunnel mode: no decapsulators")?
            .counters(index)
    }
}
