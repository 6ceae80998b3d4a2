//! A ready test bench: topology with four backends `b0`..`b3` serving, and a running daemon.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use balancer_user::api::ServiceStatus;

use crate::{
    balancer::{Balancer, DaemonOptions, XdpMode},
    topology::{Topology, TopologySpec, VIP4, VIP6},
    traffic::{BackendServer, Client, SERVICE_PORT},
};

/// Number of backends of a lab unless asked otherwise.
pub const BACKENDS: usize = 4;

/// The group of a backend name in the labs' blue-green services (`Lab::service` with
/// groups `["blue", "blue", "green", "green"]`): b0 and b1 are blue, b2 and b3 green.
pub fn blue_green_group(backend: &str) -> &'static str {
    match backend {
        "b0" | "b1" => "blue",
        _ => "green",
    }
}

/// A topology with servers and a running daemon. Fields drop in order: daemon and servers
/// before the namespaces they live in.
pub struct Lab {
    /// The daemon and its CLI.
    pub balancer: Balancer,
    servers: Vec<Option<BackendServer>>,
    /// The namespaces.
    pub topology: Topology,
    /// A client in the client namespace.
    pub client: Client,
}

impl Lab {
    /// A lab with the daemon in native XDP mode; `prefix` names its namespaces.
    pub fn new(prefix: &str) -> Result<Self> {
        Self::in_mode(prefix, XdpMode::Native)
    }

    /// A lab with the daemon in the given XDP mode.
    pub fn in_mode(prefix: &str, mode: XdpMode) -> Result<Self> {
        Self::with_options(
            prefix,
            DaemonOptions {
                mode,
                ..DaemonOptions::default()
            },
        )
    }

    /// A lab whose daemon runs with `options` (a long `--flow-idle`, a small
    /// `--conntrack-size`, ...).
    pub fn with_options(prefix: &str, options: DaemonOptions) -> Result<Self> {
        Self::build(prefix, options, 0, BACKENDS)
    }

    /// A lab with `backends` backends `b0`, `b1`, ...
    pub fn with_backends(prefix: &str, backends: usize) -> Result<Self> {
        Self::build(prefix, DaemonOptions::default(), 0, backends)
    }

    /// A lab whose client also holds `extra_clients` extra addresses (see
    /// [`Topology::extra_client_v4`]).
    pub fn with_extra_clients(prefix: &str, extra_clients: u8) -> Result<Self> {
        Self::build(prefix, DaemonOptions::default(), extra_clients, BACKENDS)
    }

    fn build(
        prefix: &str,
        options: DaemonOptions,
        extra_clients: u8,
        backends: usize,
    ) -> Result<Self> {
        let topology = Topology::build(TopologySpec {
            prefix: prefix.to_string(),
            backends: (0..backends).map(|i| format!("b{i}")).collect(),
            extra_clients,
        })?;
        let servers = BackendServer::start_all(&topology)?
            .into_iter()
            .map(Some)
            .collect();
        let balancer = Balancer::start_with_options(&topology, options)?;
        let client = Client::new(topology.client_ns());
        Ok(Self {
            balancer,
            servers,
            topology,
            client,
        })
    }

    /// Stops backend `i`'s server: its connections close and new ones are refused.
    pub fn stop_server(&mut self, i: usize) {
        self.servers[i] = None;
    }

    /// Makes backend `i`'s server answer HTTP requests (health checks) with `status`;
    /// its line protocol keeps answering.
    pub fn set_http_status(&self, i: usize, status: u16) -> Result<()> {
        self.servers[i]
            .as_ref()
            .with_context(|| format!("backend {i}'s server is stopped"))?
            .set_http_status(status);
        Ok(())
    }

    /// Polls `status` every 50 ms until `check` holds for the first service, for at most
    /// `limit`; returns how long it took.
    pub fn wait_until(
        &self,
        limit: Duration,
        what: &str,
        check: impl Fn(&ServiceStatus) -> bool,
    ) -> Result<Duration> {
        let start = Instant::now();
        loop {
            let status = self.balancer.status()?;
            if check(&status.services[0]) {
                return Ok(start.elapsed());
            }
            ensure!(
                start.elapsed() < limit,
                "{what} not within {limit:?}: {:?}",
                status.services[0]
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Starts a canary of service `web` from group blue to green with `steps` (e.g.
    /// `"10,50,100"`) every `interval` (e.g. `"1s"`), and `extra` arguments.
    pub fn start_canary(&self, steps: &str, interval: &str, extra: &[&str]) -> Result<String> {
        self.balancer.ok(&canary_start(steps, interval, extra))
    }

    /// Starts a rollout of group `main` of service `web` replacing backend `old` with `new`
    /// for each (old, new) pair of backend numbers, over IPv6 with `v6`, with `extra`
    /// arguments.
    pub fn start_rollout(
        &self,
        pairs: &[(usize, usize)],
        v6: bool,
        extra: &[&str],
    ) -> Result<String> {
        let addr = |i: usize| match v6 {
            true => self.topology.backend_v6(i),
            false => self.topology.backend_v4(i),
        };
        let pairs: Vec<String> = pairs
            .iter()
            .map(|&(old, new)| format!("{}={}", addr(old), addr(new)))
            .collect();
        let mut args = vec!["rollout", "web", "--group", "main"];
        args.extend(extra);
        args.push("--replace");
        args.extend(pairs.iter().map(String::as_str));
        self.balancer.ok(&args)
    }

    /// The split of the first service as `status` shows it, as `group=percent` (whole
    /// percentages).
    pub fn shown_split(&self) -> Result<Vec<String>> {
        Ok(self.balancer.status()?.services[0]
            .split
            .iter()
            .map(|g| format!("{}={}", g.group, g.percent.get() / 100))
            .collect())
    }

    /// Health checks of `kind` (`tcp`, `http:/PATH`) on service `name` every 200 ms
    /// (150 ms timeout) with the given rise and fall.
    pub fn enable_checks(&self, name: &str, kind: &str, rise: u32, fall: u32) -> Result<()> {
        let (rise, fall) = (rise.to_string(), fall.to_string());
        self.balancer.ok(&[
            "service",
            "set",
            name,
            "--health",
            kind,
            "--health-interval",
            "200ms",
            "--health-timeout",
            "150ms",
            "--rise",
            &rise,
            "--fall",
            &fall,
        ])?;
        Ok(())
    }

    /// Deletes the LB's interface and creates it again (same name, MAC and addresses; a new
    /// index), as a NIC flap leaves it, with the XDP_PASS helper on its new peer. The daemon
    /// is left as it is.
    pub fn flap_lb_interface(&mut self) -> Result<()> {
        self.topology.recreate_lb_interface()?;
        self.balancer.replug(&self.topology)
    }

    /// Starts backend `i`'s server again.
    pub fn start_server(&mut self, i: usize) -> Result<()> {
        let server =
            BackendServer::start(self.topology.backend_ns(i), self.topology.backend_name(i))?;
        self.servers[i] = Some(server);
        Ok(())
    }

    /// The service address (TCP or UDP) on the IPv4 or IPv6 VIP.
    pub fn vip(v6: bool) -> SocketAddr {
        SocketAddr::new(if v6 { VIP6 } else { VIP4 }, SERVICE_PORT)
    }

    /// Adds TCP service `name` on the VIP with backend `i` in group `groups[i]` and weight
    /// `weights[i]` (slices of [`BACKENDS`] entries).
    pub fn service(
        &self,
        name: &str,
        v6: bool,
        groups: &[&str],
        weights: &[u16],
    ) -> Result<SocketAddr> {
        self.service_over("tcp", name, v6, groups, weights, &[])
    }

    /// Like [`Lab::service`] with weight 100 everywhere and `options` for `service add`
    /// (e.g. `--affinity client`, `--table-size 251`).
    pub fn service_with(
        &self,
        name: &str,
        v6: bool,
        groups: &[&str],
        options: &[&str],
    ) -> Result<SocketAddr> {
        let weights = vec![100; groups.len()];
        self.service_over("tcp", name, v6, groups, &weights, options)
    }

    /// Like [`Lab::service`], a UDP service on the same VIP and port.
    pub fn udp_service(
        &self,
        name: &str,
        v6: bool,
        groups: &[&str],
        weights: &[u16],
    ) -> Result<SocketAddr> {
        self.service_over("udp", name, v6, groups, weights, &[])
    }

    fn service_over(
        &self,
        protocol: &str,
        name: &str,
        v6: bool,
        groups: &[&str],
        weights: &[u16],
        options: &[&str],
    ) -> Result<SocketAddr> {
        let service = Self::vip(v6);
        let vip = format!("{service}/{protocol}");
        let add = ["service", "add", name, "--vip", &vip];
        self.balancer.ok(&[&add[..], options].concat())?;
        for (i, (group, weight)) in groups.iter().zip(weights).enumerate() {
            let addr = if v6 {
                self.topology.backend_v6(i)
            } else {
                self.topology.backend_v4(i)
            };
            self.balancer.ok(&[
                "backend",
                "add",
                name,
                &addr.to_string(),
                "--group",
                group,
                "--weight",
                &weight.to_string(),
            ])?;
        }
        Ok(service)
    }

    /// `count` backend addresses on networks of the LB's own (198.19.64.0/19, then
    /// 198.18.128.0/17 and 198.19.128.0/17, on its `eth0`: up to 73,722), each with a
    /// permanent neighbour entry: no host answers them, and none needs to for the daemon to
    /// take them as backends (for limits, and the metrics' cost).
    pub fn unanswering_backends(&self, count: usize) -> Result<Vec<std::net::Ipv4Addr>> {
        use std::fmt::Write as _;
        use std::net::Ipv4Addr;
        // (the LB's address, the network's prefix length): hosts from the next address on.
        const NETWORKS: [(Ipv4Addr, u8); 3] = [
            (Ipv4Addr::new(198, 19, 64, 1), 19),
            (Ipv4Addr::new(198, 18, 128, 1), 17),
            (Ipv4Addr::new(198, 19, 128, 1), 17),
        ];
        let ns = self.topology.lb_ns();
        let mut addrs = Vec::with_capacity(count);
        for (lb, prefix) in NETWORKS {
            if addrs.len() == count {
                break;
            }
            let network = format!("{lb}/{prefix}");
            crate::netns::run(ns, &["ip", "address", "replace", &network, "dev", "eth0"])?;
            // The LB has the first address; the last is the broadcast address.
            let hosts = (1usize << (32 - prefix)) - 3;
            let first = u32::from(lb) + 1;
            let take = hosts.min(count - addrs.len());
            addrs.extend((0..take).map(|i| Ipv4Addr::from(first + i as u32)));
        }
        ensure!(
            addrs.len() == count,
            "{count} unanswering backends asked, the networks hold {}",
            addrs.len()
        );
        let mut neighbours = String::new();
        for (i, addr) in addrs.iter().enumerate() {
            writeln!(
                neighbours,
                "neigh replace {addr} lladdr 02:00:00:{:02x}:{:02x}:{:02x} dev eth0 nud permanent",
                i >> 16,
                (i >> 8) & 0xff,
                i & 0xff
            )?;
        }
        let batch = self.balancer.socket().with_file_name("neighbours.batch");
        std::fs::write(&batch, neighbours)?;
        crate::netns::run(ns, &["ip", "-batch", &batch.to_string_lossy()])?;
        Ok(addrs)
    }

    /// Adds service `name` with all four backends in group `main`, weighted by `weights`.
    pub fn weighted_service(&self, name: &str, v6: bool, weights: &[u16]) -> Result<SocketAddr> {
        self.service(name, v6, &["main"; BACKENDS], weights)
    }
}

/// The arguments of `canary start web --from blue --to green --steps STEPS --interval
/// INTERVAL` followed by `extra`.
pub fn canary_start<'a>(steps: &'a str, interval: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let start = [
        "canary",
        "start",
        "web",
        "--from",
        "blue",
        "--to",
        "green",
        "--steps",
        steps,
        "--interval",
        interval,
    ];
    [&start[..], extra].concat()
}

/// How many of `canary`'s decisions took `step` (e.g. "step 2/3").
pub fn taken(canary: &balancer_user::release::canary::Canary, step: &str) -> usize {
    canary
        .decisions
        .iter()
        .filter(|d| d.what.contains(step))
        .count()
}
