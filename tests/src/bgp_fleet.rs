//! The fleet over BGP: a client, a router running bird2, three LB hosts each running a
//! `balancer daemon --store ... --announce-table 100` and a bird2 of its own, backends on
//! the LB hosts' segment, and a real etcd.
//!
//! ```text
//!   client (-cl)                         etcd ({prefix}s-etcd)
//!   198.18.20.16                         198.18.250.(4i+1), a link `store` to each LB host
//!      │ eth0                                   │
//!   ┌─ cl ─────── router (-rt), bird2 ──────────┼───────────────────┐
//!   │ 198.18.20.1   br0 198.18.21.1             │                   │
//!   └───────────────┬───────────────────────────┼───────────────────┘
//!      ┌────────────┼──────────────┬────────────┴───┬────────────┐
//!   LB 0 ({prefix}0-lb)  LB 1 ({prefix}1-lb)  LB 2 ...       b0, b1, ... (-b0, ...)
//!   198.18.21.11         198.18.21.12         198.18.21.13   198.18.21.(101 + j)
//!   daemon + bird2       daemon + bird2       ...            VIPs on lo
//! ```
//!
//! * IPv4 and IPv6: the segment also has 2001:db8:21::/64, the client's link
//!   2001:db8:20::/64 (see `addresses`); the VIPs are [`VIP4`] and [`VIP6`].
//! * Each LB host's daemon keeps its VIPs in kernel table [`ANNOUNCE_TABLE`]; its bird2
//!   (the shipped `packaging/bird-lb.conf`) learns them and announces them to the router
//!   over one BGP session (IPv4 and IPv6 channels). The router's bird2 merges the paths of
//!   every LB host into one multipath route per VIP (`merge paths on`), and the kernel
//!   hashes flows over them on the L4 ports (`fib_multipath_hash_policy=1`).
//! * BGP timers are short: hold [`HOLD`] (3 s), keepalive 1 s, graceful restart off, so
//!   that a dead host's paths are gone from the router within the hold time.
//! * The hosts sync their flows (`--sync-listen` on each host's IPv4 address, port
//!   [`SYNC_PORT`]), so a flow the router moves to another host keeps its backend.
//! * L2 direct server return: an LB host rewrites the MACs and sends the packet out of
//!   its `eth0` to the backend on the segment; backends answer the client through the
//!   router. Native XDP_TX into a veth is delivered only when the peer runs an XDP
//!   program: each LB host's bridge port on the router gets the XDP_PASS helper
//!   ([`crate::balancer::Site`]).
//!
//! Dropping the fleet (also while unwinding from a panic) stops the daemons (a teardown
//! each), bird, etcd and the servers, and deletes every namespace it made.

mod addresses;
mod bird;
mod setup;

use std::{
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::{bail, ensure, Context, Result};

pub use bird::{gateways, Bird, HOLD};

use crate::{
    balancer::{Balancer, DaemonOptions, Site},
    etcd::EtcdServer,
    netns,
    pair::SYNC_PORT,
    topology::{names, setup::prepare_namespace, sweep_stale, VIP4, VIP6},
    traffic::{BackendServer, Client, SERVICE_PORT},
};

/// The kernel routing table of the daemons' announcements (`--announce-table`).
pub const ANNOUNCE_TABLE: u32 = 100;

/// The fleet's key prefix in etcd.
const STORE_PREFIX: &str = "/fleet";

/// The router's table of a pinned VIP route ([`BgpFleet::pin_route`]).
const PINNED_TABLE: &str = "200";

/// How long the hosts may take to register in etcd, and the sessions to come up.
const CONNECT_LIMIT: Duration = Duration::from_secs(30);

/// Where an LB host's daemon runs: its namespace, and its bridge port on the router.
struct LbSite {
    ns: String,
    router_ns: String,
    port: String,
}

impl Site for LbSite {
    fn lb_ns(&self) -> &str {
        &self.ns
    }

    fn lb_peer(&self) -> (&str, &str) {
        (&self.router_ns, &self.port)
    }
}

/// One LB host: its daemon (none before it starts or after it was killed) and its bird.
pub struct LbHost {
    balancer: Option<Balancer>,
    bird: Option<Bird>,
    site: LbSite,
}

/// Namespaces made so far, deleted (in reverse) on drop.
struct Namespaces(Vec<String>);

impl Drop for Namespaces {
    fn drop(&mut self) {
        for ns in self.0.iter().rev() {
            if let Err(error) = netns::delete(ns) {
                eprintln!("warning: cannot remove namespace {ns}: {error:#}");
            }
        }
    }
}

/// A built fleet; see the module documentation. Fields drop in order: daemons and bird
/// before etcd, the servers and the namespaces they live in.
pub struct BgpFleet {
    hosts: Vec<LbHost>,
    router_bird: Bird,
    servers: Vec<BackendServer>,
    etcd: EtcdServer,
    /// A client in the client namespace.
    pub client: Client,
    client_ns: String,
    router_ns: String,
    backend_ns: Vec<String>,
    dir: PathBuf,
    /// Held until the fleet drops, last: then every namespace is deleted.
    _namespaces: Namespaces,
}

impl BgpFleet {
    /// Builds the fleet with `hosts` LB hosts and `backends` backends (`b0`, `b1`, ...),
    /// named after `prefix` (1-10 of `a-z0-9`, unique per test; leftovers of an earlier
    /// run removed first); the daemons of the first `ready` hosts are started (the others
    /// with [`BgpFleet::start_daemon`]). Returns once those daemons registered in etcd,
    /// every BGP session is established and the started daemons' flow-state syncs know each
    /// other.
    pub fn build(prefix: &str, hosts: usize, backends: usize, ready: usize) -> Result<Self> {
        ensure!(
            (1..=10).contains(&prefix.len())
                && prefix
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()),
            "prefix {prefix:?} must be 1-10 characters of a-z0-9"
        );
        ensure!(hosts <= addresses::MAX_HOSTS && backends <= addresses::MAX_BACKENDS);
        sweep_stale(prefix)?;
        for index in 0..hosts {
            sweep_stale(&format!("{prefix}{index}"))?;
        }
        let mut namespaces = Namespaces(Vec::new());
        let client_ns = names::client_ns(prefix);
        let router_ns = names::router_ns(prefix);
        let lb_ns: Vec<String> = (0..hosts)
            .map(|i| names::lb_ns(&format!("{prefix}{i}")))
            .collect();
        let backend_ns: Vec<String> = (0..backends)
            .map(|i| names::backend_ns(prefix, i))
            .collect();
        let all = [&router_ns, &client_ns]
            .into_iter()
            .chain(&lb_ns)
            .chain(&backend_ns);
        for ns in all {
            netns::create(ns)?;
            namespaces.0.push(ns.clone());
            prepare_namespace(ns)?;
        }
        setup::configure_router(&router_ns, &client_ns, &lb_ns, &backend_ns)?;
        setup::configure_client(&client_ns)?;
        for (index, ns) in lb_ns.iter().enumerate() {
            setup::configure_lb(ns, index)?;
        }
        for (index, ns) in backend_ns.iter().enumerate() {
            setup::configure_backend(ns, index)?;
        }
        let lb_refs: Vec<&str> = lb_ns.iter().map(String::as_str).collect();
        let etcd = EtcdServer::start(&format!("{prefix}s"), &lb_refs)?;
        let servers = backend_ns
            .iter()
            .enumerate()
            .map(|(i, ns)| BackendServer::start(ns, &format!("b{i}")))
            .collect::<Result<Vec<_>>>()?;
        let dir = std::env::temp_dir().join(format!("balancer-bgp-{prefix}"));
        std::fs::remove_dir_all(&dir).ok();
        let router_bird = Bird::router(&router_ns, &dir.join("router"), hosts)?;
        let hosts = lb_ns
            .iter()
            .enumerate()
            .map(|(index, ns)| {
                let bird = Bird::lb(ns, &dir.join(format!("lb{index}")), index, ANNOUNCE_TABLE)?;
                Ok(LbHost {
                    balancer: None,
                    bird: Some(bird),
                    site: LbSite {
                        ns: ns.clone(),
                        router_ns: router_ns.clone(),
                        port: setup::lb_port(index),
                    },
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let mut fleet = Self {
            hosts,
            router_bird,
            servers,
            etcd,
            client: Client::new(&client_ns),
            client_ns,
            router_ns,
            backend_ns,
            dir,
            _namespaces: namespaces,
        };
        for index in 0..ready {
            fleet.start_daemon(index)?;
        }
        fleet.wait_sessions(fleet.hosts.len())?;
        fleet.wait_peers()?;
        Ok(fleet)
    }

    /// Starts LB host `index`'s daemon (`--store`, `--host-name lb-INDEX`,
    /// `--announce-table`, `--sync-listen` on its IPv4 address) and waits until it answers.
    pub fn start_daemon(&mut self, index: usize) -> Result<()> {
        let options = DaemonOptions {
            extra: vec![
                "--store".into(),
                EtcdServer::store_url(index, STORE_PREFIX),
                "--host-name".into(),
                format!("lb-{index}"),
                "--announce-table".into(),
                ANNOUNCE_TABLE.to_string(),
                "--sync-listen".into(),
                SocketAddr::new(addresses::lb(index, false), SYNC_PORT).to_string(),
            ],
            ..DaemonOptions::default()
        };
        let host = &mut self.hosts[index];
        host.balancer = Some(Balancer::start_with_options(&host.site, options)?);
        Ok(())
    }

    /// Waits until the flow-state sync of every running daemon knows the other running
    /// daemons as its peers (each watches the hosts' records in etcd): flows that begin
    /// before a host knows a peer are not synced to it.
    fn wait_peers(&self) -> Result<()> {
        let start = Instant::now();
        let running: Vec<&Balancer> = self
            .hosts
            .iter()
            .filter_map(|h| h.balancer.as_ref())
            .collect();
        loop {
            let mut peers = Vec::new();
            for host in &running {
                peers.push(host.status()?.sync.map_or(0, |s| s.peers));
            }
            if peers.iter().all(|&p| p + 1 == running.len()) {
                return Ok(());
            }
            if start.elapsed() > CONNECT_LIMIT {
                bail!(
                    "the hosts' syncs do not know each other within {CONNECT_LIMIT:?}: {peers:?}"
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until `count` of the router's BGP sessions are established.
    fn wait_sessions(&self, count: usize) -> Result<()> {
        let start = Instant::now();
        while self.router_bird.established()? < count {
            if start.elapsed() > CONNECT_LIMIT {
                bail!(
                    "not {count} BGP sessions within {CONNECT_LIMIT:?}:\n{}",
                    self.router_bird.show("protocols")?
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(())
    }

    /// LB host `index`'s daemon; fails when it does not run.
    pub fn host(&self, index: usize) -> Result<&Balancer> {
        self.hosts[index]
            .balancer
            .as_ref()
            .with_context(|| format!("LB host {index}'s daemon does not run"))
    }

    /// LB host `index`'s daemon, to restart or stop it.
    pub fn host_mut(&mut self, index: usize) -> Result<&mut Balancer> {
        self.hosts[index]
            .balancer
            .as_mut()
            .with_context(|| format!("LB host {index}'s daemon does not run"))
    }

    /// Number of LB hosts.
    pub fn host_count(&self) -> usize {
        self.hosts.len()
    }

    /// LB host `index`'s namespace.
    pub fn lb_ns(&self, index: usize) -> &str {
        &self.hosts[index].site.ns
    }

    /// LB host `index`'s address on the segment (the router's next hop to it).
    pub fn lb_addr(&self, index: usize, v6: bool) -> IpAddr {
        addresses::lb(index, v6)
    }

    /// The router's namespace.
    pub fn router_ns(&self) -> &str {
        &self.router_ns
    }

    /// The client's namespace.
    pub fn client_ns(&self) -> &str {
        &self.client_ns
    }

    /// The router's bird.
    pub fn router_bird(&self) -> &Bird {
        &self.router_bird
    }

    /// LB host `index`'s bird, while it runs.
    pub fn bird(&self, index: usize) -> Option<&Bird> {
        self.hosts[index].bird.as_ref()
    }

    /// The etcd of the fleet.
    pub fn etcd(&mut self) -> &mut EtcdServer {
        &mut self.etcd
    }

    /// Backend `index`'s namespace.
    pub fn backend_ns(&self, index: usize) -> &str {
        &self.backend_ns[index]
    }

    /// Backend `index`'s address on the segment.
    pub fn backend_addr(&self, index: usize, v6: bool) -> IpAddr {
        addresses::backend(index, v6)
    }

    /// Number of backends.
    pub fn backend_count(&self) -> usize {
        self.servers.len()
    }

    /// The service address on the IPv4 or IPv6 VIP.
    pub fn vip(v6: bool) -> SocketAddr {
        SocketAddr::new(if v6 { VIP6 } else { VIP4 }, SERVICE_PORT)
    }

    /// Adds TCP service `name` on the IPv4 or IPv6 VIP through LB host `through`, every
    /// backend in group `main` with weight 100, and waits until every running daemon has
    /// the same tables.
    pub fn service(&self, name: &str, through: usize, v6: bool) -> Result<SocketAddr> {
        let groups = vec!["main"; self.backend_count()];
        self.service_in_groups(name, through, v6, &groups)
    }

    /// Like [`BgpFleet::service`], backend `j` in group `groups[j]` (e.g. `blue`, `blue`,
    /// `green`, `green` for a canary); backends without a group are left out.
    pub fn service_in_groups(
        &self,
        name: &str,
        through: usize,
        v6: bool,
        groups: &[&str],
    ) -> Result<SocketAddr> {
        let service = Self::vip(v6);
        let host = self.host(through)?;
        host.ok(&["service", "add", name, "--vip", &format!("{service}/tcp")])?;
        for (index, group) in groups.iter().enumerate() {
            let addr = self.backend_addr(index, v6).to_string();
            host.ok(&["backend", "add", name, &addr, "--group", group])?;
        }
        self.wait_same_tables(CONNECT_LIMIT)?;
        Ok(service)
    }

    /// Waits until every running daemon shows the same table digests.
    pub fn wait_same_tables(&self, limit: Duration) -> Result<()> {
        let start = Instant::now();
        loop {
            let mut digests = Vec::new();
            for host in self.hosts.iter().filter_map(|h| h.balancer.as_ref()) {
                let status = host.status()?;
                let digest: Vec<String> =
                    status.services.iter().map(|s| s.digest.clone()).collect();
                digests.push(digest);
            }
            if digests.windows(2).all(|w| w[0] == w[1]) {
                return Ok(());
            }
            ensure!(
                start.elapsed() < limit,
                "the hosts' tables differ after {limit:?}: {digests:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The LB hosts that the router's route to `vip` leads to, by index.
    pub fn paths(&self, vip: IpAddr) -> Result<Vec<usize>> {
        let v6 = vip.is_ipv6();
        gateways(&self.router_ns, vip)?
            .into_iter()
            .map(|gateway| {
                (0..self.hosts.len())
                    .find(|&i| addresses::lb(i, v6) == gateway)
                    .with_context(|| format!("the route to {vip} leads to {gateway}, no LB host"))
            })
            .collect()
    }

    /// Polls the router's route to `vip` every 20 ms until it leads to exactly `hosts`
    /// (sorted), for at most `limit`; returns how long it took.
    pub fn wait_paths(&self, vip: IpAddr, hosts: &[usize], limit: Duration) -> Result<Duration> {
        let start = Instant::now();
        loop {
            let paths = self.paths(vip)?;
            if paths == hosts {
                return Ok(start.elapsed());
            }
            ensure!(
                start.elapsed() < limit,
                "the router's route to {vip} leads to {paths:?}, not {hosts:?}, after {limit:?}:\n{}",
                self.router_bird.show("route all").unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Makes the router send every client packet to the VIPs through LB host `index` alone
    /// (a rule for what arrives from the client, and a table of its own), whatever BGP
    /// says; `None` gives the VIPs back to the BGP routes.
    pub fn pin_route(&self, index: Option<usize>) -> Result<()> {
        for v6 in [false, true] {
            let family = if v6 { "-6" } else { "-4" };
            let run = |args: &[&str]| {
                let argv: Vec<&str> = ["ip", family]
                    .iter()
                    .copied()
                    .chain(args.iter().copied())
                    .collect();
                netns::run(&self.router_ns, &argv)
            };
            let _ = run(&[
                "rule",
                "del",
                "iif",
                setup::ROUTER_CLIENT_PORT,
                "lookup",
                PINNED_TABLE,
            ]);
            run(&["route", "flush", "table", PINNED_TABLE]).ok();
            if let Some(index) = index {
                let vip = if v6 { VIP6 } else { VIP4 };
                let via = addresses::lb(index, v6).to_string();
                run(&[
                    "route",
                    "add",
                    &vip.to_string(),
                    "via",
                    &via,
                    "table",
                    PINNED_TABLE,
                ])?;
                run(&[
                    "rule",
                    "add",
                    "iif",
                    setup::ROUTER_CLIENT_PORT,
                    "lookup",
                    PINNED_TABLE,
                    "pref",
                    "100",
                ])?;
            }
        }
        Ok(())
    }

    /// Kills LB host `index` entirely, as a power cut does: its links down (to the
    /// router's segment and to etcd), then bird and the daemon SIGKILLed. Its pinned data
    /// plane is left to the fleet's drop.
    pub fn kill_host(&mut self, index: usize) -> Result<()> {
        let ns = self.hosts[index].site.ns.clone();
        for link in ["eth0", "store"] {
            netns::run(&ns, &["ip", "link", "set", link, "down"])?;
        }
        let host = &mut self.hosts[index];
        if let Some(mut bird) = host.bird.take() {
            bird.kill()?;
        }
        if let Some(balancer) = host.balancer.as_mut() {
            balancer.kill9()?;
        }
        Ok(())
    }

    /// The new flows LB host `index`'s data plane has counted over every backend.
    pub fn new_flows(&self, index: usize) -> Result<u64> {
        Ok(self
            .host(index)?
            .status()?
            .services
            .iter()
            .flat_map(|s| &s.backends)
            .map(|b| b.new_flows)
            .sum())
    }

    /// The routes of the daemon's announcements in LB host `index` (`ip route show table
    /// all proto 251`: a table that was never made holds none), each one line.
    pub fn announced(&self, index: usize) -> Result<Vec<String>> {
        let mut routes = Vec::new();
        let table = format!("table {ANNOUNCE_TABLE}");
        for family in ["-4", "-6"] {
            let shown = netns::run(
                self.lb_ns(index),
                &[
                    "ip", family, "route", "show", "table", "all", "proto", "251",
                ],
            )?;
            routes.extend(
                shown
                    .lines()
                    .filter(|l| l.contains(&table))
                    .map(|l| l.trim().to_string()),
            );
        }
        Ok(routes)
    }
}

impl Drop for BgpFleet {
    fn drop(&mut self) {
        std::fs::remove_dir_all(&self.dir).ok();
    }
}
