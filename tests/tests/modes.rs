//! The release operations under every routed forwarding mode: `ipip`, `gue`, `nat` and
//! `fullnat`, each on a routed lab of its own ([`RoutedLab::for_mode`]: backends
//! decapsulating with `balancer decap`, unmodified behind the LB for `nat`, unmodified and
//! routing as they please for `fullnat`), IPv4 and IPv6, TCP and UDP at once — four
//! services per lab, one per family and protocol (`nat` and `fullnat` VIPs on port 8080,
//! the backends' port 80). In each lab:
//!
//! * 4000 new TCP connections per family split by group and weight within 3 points;
//! * a flip, a `kill -9` of the daemon and its restart, a canary and a rolling replacement,
//!   each under 50 long-lived conversations per service (TCP connections, UDP flows)
//!   talking every 100 ms: none broken, none moved, and new flows land where the
//!   operation says;
//! * the backends see the client's own address (`fullnat`: the pool's, the LB's own
//!   address);
//! * every backend's decapsulator (tunnels) or the LB's reply translation (`nat`,
//!   `fullnat`) carried the traffic; `fullnat`'s flows held pool ports, and the ports of
//!   the conversations that ended were freed.
//!
//! `nat.rs` and `tunnels.rs` test the rest of each mode.

use std::cell::Cell;
use std::net::SocketAddr;
use std::ops::Range;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use balancer_tests::{
    routed::{Mode, RoutedLab},
    traffic::LongLived,
};
use balancer_user::{
    api::{Health, ServiceStatus, Status},
    release::{canary::Outcome, rollout::RolloutOutcome},
};

/// Backends 0 to 3 of every service: group and weight. b4 and b5 join in the rollout.
const BACKENDS: [(&str, u16); 4] = [("blue", 100), ("blue", 300), ("green", 100), ("green", 100)];
/// The lab's backends: the services' four and the two the rollout brings in.
const LAB_BACKENDS: usize = 6;
/// Group blue's backends.
const BLUE: [&str; 2] = ["b0", "b1"];
/// Group green's backends.
const GREEN: [&str; 2] = ["b2", "b3"];
/// What replaces blue in the rollout: b0 by b4, b1 by b5.
const REPLACEMENTS: [&str; 2] = ["b4", "b5"];

/// Long-lived conversations with each service during an operation.
const CONVERSATIONS: usize = 50;
/// How long the conversations go on talking after an operation, before they are judged.
const AFTERWARDS: Duration = Duration::from_millis(500);
/// New flows asked per service to see where an operation sends them.
const NEW_FLOWS: usize = 20;
/// Bound on a wait for the services' state: checks passing, a canary's or rollout's end
/// (they take seconds).
const WAIT_LIMIT: Duration = Duration::from_secs(30);
/// The client port of the test's first UDP flow.
const FIRST_UDP_PORT: u16 = 20_000;

/// One service of the lab.
struct Service {
    name: String,
    addr: SocketAddr,
    udp: bool,
}

/// A routed lab of one mode with its four services.
struct ModeLab {
    lab: RoutedLab,
    mode: Mode,
    services: Vec<Service>,
    /// The client port of the next UDP flow: every UDP flow of the test has a 5-tuple of
    /// its own (a port the kernel chose could be an earlier flow's, which connection
    /// tracking keeps on its backend: a UDP flow has no end). Below the kernel's
    /// ephemeral ports.
    next_port: Cell<u16>,
}

#[test]
fn ipip_releases_break_and_move_no_connection() -> Result<()> {
    releases("bmo1", Mode::Ipip)
}

#[test]
fn gue_releases_break_and_move_no_connection() -> Result<()> {
    releases("bmo2", Mode::Gue)
}

#[test]
fn nat_releases_break_and_move_no_connection() -> Result<()> {
    releases("bmo3", Mode::Nat)
}

#[test]
fn fullnat_releases_break_and_move_no_connection() -> Result<()> {
    releases("bmo4", Mode::Fullnat)
}

/// Everything the module documentation lists, for `mode`, on a lab named `prefix`.
fn releases(prefix: &str, mode: Mode) -> Result<()> {
    let mut lab = ModeLab::build(prefix, mode)?;
    lab.split_by_weight()?;
    lab.flip()?;
    lab.restart()?;
    lab.canary()?;
    lab.rollout()?;
    lab.carried_by_the_mode(mode)
}

impl ModeLab {
    /// A lab of [`LAB_BACKENDS`] for `mode` with services `tcp4`, `udp4`, `tcp6` and
    /// `udp6` forwarding by `mode`, each with [`BACKENDS`].
    fn build(prefix: &str, mode: Mode) -> Result<Self> {
        let lab = RoutedLab::for_mode(prefix, mode, LAB_BACKENDS)?;
        let mut services = Vec::new();
        for v6 in [false, true] {
            for protocol in ["tcp", "udp"] {
                let name = format!("{protocol}{}", if v6 { 6 } else { 4 });
                let addr = lab.mode_service(mode, &name, v6, protocol, &[], &BACKENDS)?;
                services.push(Service {
                    name,
                    addr,
                    udp: protocol == "udp",
                });
            }
        }
        Ok(Self {
            lab,
            mode,
            services,
            next_port: Cell::new(FIRST_UDP_PORT),
        })
    }

    /// With the split at blue=50 green=50, 4000 new TCP connections per family reach b0
    /// to b3 by group and weight (12.5%, 37.5%, 25%, 25%) within 3 points: one standard
    /// deviation of a share is under 0.8 points, so the check does not fail by chance.
    fn split_by_weight(&self) -> Result<()> {
        const ASKS: usize = 4000;
        const SHARES: [(&str, f64); 4] = [("b0", 12.5), ("b1", 37.5), ("b2", 25.0), ("b3", 25.0)];
        for service in &self.services {
            self.lab
                .balancer
                .ok(&["split", &service.name, "blue=50", "green=50"])?;
            if !service.udp {
                let seen = self.lab.client.distribution(service.addr, ASKS, &[])?;
                seen.ensure_shares(&SHARES, 3.0)
                    .with_context(|| format!("new connections to {}", service.name))?;
            }
        }
        Ok(())
    }

    /// Blue takes every new flow; then, with its conversations going on, the backends see
    /// the client's address, and a flip sends every new flow to green.
    fn flip(&mut self) -> Result<()> {
        self.on_every_service(&["flip", "{}", "--to", "blue"])?;
        self.under_load(&BLUE, "a flip to green", |lab| {
            lab.backends_see_the_client()?;
            lab.on_every_service(&["flip", "{}", "--to", "green"])?;
            lab.new_flows_reach(&GREEN)
        })
    }

    /// `kill -9` of the daemon and a restart: new flows keep reaching green meanwhile.
    fn restart(&mut self) -> Result<()> {
        self.under_load(&GREEN, "kill -9 and a restart", |lab| {
            lab.lab.balancer.kill9()?;
            lab.new_flows_reach(&GREEN)
                .context("with the daemon killed")?;
            lab.lab.balancer.restart()?;
            lab.new_flows_reach(&GREEN).context("after the restart")
        })
    }

    /// A canary from green back to blue in two steps a second apart.
    fn canary(&mut self) -> Result<()> {
        self.under_load(&GREEN, "a canary to blue", |lab| {
            lab.on_every_service(&[
                "canary",
                "start",
                "{}",
                "--from",
                "green",
                "--to",
                "blue",
                "--steps",
                "50,100",
                "--interval",
                "1s",
            ])?;
            let status = lab.wait_for("the canaries' end", |s| {
                s.canary.as_ref().is_some_and(|c| c.outcome.is_some())
            })?;
            for service in &lab.services {
                let canary = &find(&status, &service.name)?.canary;
                ensure!(
                    canary.as_ref().and_then(|c| c.outcome.as_ref()) == Some(&Outcome::Completed),
                    "{}: {canary:?}",
                    service.name
                );
            }
            lab.new_flows_reach(&BLUE)
        })
    }

    /// A rolling replacement of blue (b0 by b4, b1 by b5) behind health checks, with a
    /// short slow start and drain: the old backends retire with their conversations, which
    /// keep reaching them. The conversations open once every backend passes its checks:
    /// checks turned on for a serving service start its backends down until they pass.
    fn rollout(&mut self) -> Result<()> {
        self.on_every_service(&[
            "service",
            "set",
            "{}",
            "--health",
            "tcp",
            "--health-interval",
            "200ms",
            "--health-timeout",
            "150ms",
            "--rise",
            "1",
            "--fall",
            "2",
        ])?;
        self.wait_for("every backend up", |s| {
            s.backends.iter().all(|b| b.health == Some(Health::Up))
        })?;
        self.under_load(&BLUE, "a rollout of blue", |lab| {
            for service in &lab.services {
                let v6 = service.addr.is_ipv6();
                let addr = |i: usize| lab.lab.topology.backend_addr(i, v6);
                let pairs = [
                    format!("{}={}", addr(0), addr(4)),
                    format!("{}={}", addr(1), addr(5)),
                ];
                lab.lab.balancer.ok(&[
                    "rollout",
                    &service.name,
                    "--group",
                    "blue",
                    "--slow-start",
                    "300ms",
                    "--drain-timeout",
                    "1s",
                    "--replace",
                    &pairs[0],
                    &pairs[1],
                ])?;
            }
            let status = lab.wait_for("the rollouts' end", |s| {
                s.rollout.as_ref().is_some_and(|r| r.outcome.is_some())
            })?;
            for service in &lab.services {
                let svc = find(&status, &service.name)?;
                let outcome = svc.rollout.as_ref().and_then(|r| r.outcome.as_ref());
                ensure!(
                    outcome == Some(&RolloutOutcome::Completed),
                    "{}: {:?}",
                    service.name,
                    svc.rollout
                );
                let v6 = service.addr.is_ipv6();
                let mut retired: Vec<_> = svc.retired.iter().map(|r| r.addr).collect();
                retired.sort();
                let old = [0, 1].map(|i| lab.lab.topology.backend_addr(i, v6));
                ensure!(
                    retired == old,
                    "{}: the old backends retire with their conversations: {retired:?}",
                    service.name
                );
            }
            lab.new_flows_reach(&REPLACEMENTS)
        })
    }

    /// Opens [`CONVERSATIONS`] long-lived conversations with each service (TCP
    /// connections, UDP flows), all answered by `from`, keeps them talking every 100 ms
    /// while `operation` runs and for [`AFTERWARDS`], then requires that each talked in
    /// the meantime, none broke and none was answered by another backend.
    fn under_load(
        &mut self,
        from: &[&str],
        what: &str,
        operation: impl FnOnce(&mut Self) -> Result<()>,
    ) -> Result<()> {
        let mut talking = Vec::new();
        for service in &self.services {
            let client = &self.lab.client;
            let conversations = match service.udp {
                true => {
                    LongLived::open_udp_from_ports(client, service.addr, self.ports(CONVERSATIONS))?
                }
                false => LongLived::open(client, service.addr, CONVERSATIONS, &[])?,
            };
            let first = conversations.original_backends();
            ensure!(
                first.iter().all(|b| from.contains(&b.as_str())),
                "before {what}, {} should be served by {from:?}: {first:?}",
                service.name
            );
            talking.push((service.name.clone(), conversations.ping_in_background()));
        }
        operation(self).with_context(|| what.to_owned())?;
        thread::sleep(AFTERWARDS);
        for (name, pings) in talking {
            let report = pings.stop();
            ensure!(
                report.failed_connections() == 0 && report.moved_connections() == 0,
                "{what}: conversations with {name} broke or moved: {report:?}"
            );
            ensure!(
                report.connections.iter().all(|c| c.exchanges > 0),
                "{what}: conversations with {name} did not talk meanwhile: {report:?}"
            );
        }
        Ok(())
    }

    /// [`NEW_FLOWS`] new connections or flows to each service reach only `backends`.
    fn new_flows_reach(&self, backends: &[&str]) -> Result<()> {
        let client = &self.lab.client;
        for service in &self.services {
            let answers = match service.udp {
                true => self
                    .ports(NEW_FLOWS)
                    .map(|port| client.ask_udp_from_port(service.addr, port))
                    .collect::<Result<Vec<_>>>()?,
                false => (0..NEW_FLOWS)
                    .map(|_| client.ask_once(service.addr, None))
                    .collect::<Result<Vec<_>>>()?,
            };
            ensure!(
                answers.iter().all(|b| backends.contains(&b.as_str())),
                "new flows to {} reached {answers:?}, not only {backends:?}",
                service.name
            );
        }
        Ok(())
    }

    /// Every peer of the backends' established TCP connections is the client (`fullnat`:
    /// the pool address, which is the LB's own), and they hold the [`CONVERSATIONS`] of
    /// each family's TCP service.
    fn backends_see_the_client(&self) -> Result<()> {
        let topology = &self.lab.topology;
        let clients = [false, true].map(|v6| match self.mode {
            Mode::Fullnat => topology.lb_addr(v6),
            _ => topology.client_addr(v6),
        });
        let mut seen = [0; 2];
        for i in 0..topology.backend_count() {
            for peer in self.lab.peers(i)? {
                let family = clients
                    .iter()
                    .position(|client| *client == peer)
                    .with_context(|| format!("backend b{i} has a connection from {peer}"))?;
                seen[family] += 1;
            }
        }
        ensure!(
            seen.iter().all(|&n| n >= CONVERSATIONS),
            "the backends hold {seen:?} connections of the client (IPv4, IPv6)"
        );
        Ok(())
    }

    /// Runs `args` for every service, with its name in place of `{}`.
    fn on_every_service(&self, args: &[&str]) -> Result<()> {
        for service in &self.services {
            let args: Vec<&str> = args
                .iter()
                .map(|arg| if *arg == "{}" { &service.name } else { *arg })
                .collect();
            self.lab.balancer.ok(&args)?;
        }
        Ok(())
    }

    /// Polls `status` (bounded by [`WAIT_LIMIT`]) until `done` holds for every service;
    /// returns that status.
    fn wait_for(&self, what: &str, done: impl Fn(&ServiceStatus) -> bool) -> Result<Status> {
        let start = Instant::now();
        loop {
            let status = self.lab.balancer.status()?;
            let all = self
                .services
                .iter()
                .map(|service| find(&status, &service.name).map(&done))
                .collect::<Result<Vec<bool>>>()?;
            if all.iter().all(|&d| d) {
                return Ok(status);
            }
            ensure!(
                start.elapsed() < WAIT_LIMIT,
                "{what}: not within {WAIT_LIMIT:?}: {status:?}"
            );
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// `count` client ports no UDP flow of the test had.
    fn ports(&self, count: usize) -> Range<u16> {
        let first = self.next_port.get();
        let count = u16::try_from(count).expect("a few ports");
        self.next_port.set(first + count);
        first..first + count
    }

    /// The traffic went the mode's way: every backend's decapsulator took packets
    /// (tunnels), or the LB rewrote replies (`nat`).
    fn carried_by_the_mode(&self, mode: Mode) -> Result<()> {
        if mode.tunnels() {
            for i in 0..self.lab.topology.backend_count() {
                let counters = self.lab.decap_counters(i)?;
                let decapsulated = counters["decapsulated"].as_u64().context("decapsulated")?;
                ensure!(decapsulated > 0, "b{i} decapsulated nothing: {counters}");
            }
        } else {
            let nat = self.lab.balancer.status()?.counters.nat;
            ensure!(nat.replies > 0, "no reply translated: {nat:?}");
        }
        if mode == Mode::Fullnat {
            self.pool_ports_are_freed()?;
        }
        Ok(())
    }

    /// The daemon's sweeps (every 5 s) saw flows holding pool ports and freed the ports of
    /// the conversations that ended (10 s after their close), within [`WAIT_LIMIT`].
    fn pool_ports_are_freed(&self) -> Result<()> {
        let deadline = Instant::now() + WAIT_LIMIT;
        let mut seen_active = false;
        loop {
            let translations = self.lab.balancer.status()?.translations;
            seen_active |= translations.active > 0;
            if seen_active && translations.released > 0 {
                return Ok(());
            }
            ensure!(
                Instant::now() < deadline,
                "no pool port in use and freed within {WAIT_LIMIT:?}: {translations:?}"
            );
            thread::sleep(Duration::from_millis(500));
        }
    }
}

/// Service `name` in `status`.
fn find<'a>(status: &'a Status, name: &str) -> Result<&'a ServiceStatus> {
    status
        .services
        .iter()
        .find(|s| s.name == name)
        .with_context(|| format!("no service {name} in status"))
}
