//! Flow-state sync (`daemon --sync-listen`): two LB hosts on one segment, in a fleet on a
//! real etcd, the client's route to the VIPs through host A (a next hop switched with
//! `ip route replace`, as a router moves flows when an LB host joins, leaves or dies).
//! Long-lived connections are opened through A, the tables then changed so that they
//! choose other backends for new flows, and the route switched to B: with sync, B knows
//! every connection's backend and none is broken or moved; without it (the control run,
//! which shows the test can fail) connections break or move.

use std::{
    net::{SocketAddr, UdpSocket},
    thread,
    time::{Duration, Instant},
};

use anyhow::{ensure, Context, Result};
use balancer_tests::{
    balancer::{Balancer, DaemonOptions, Site},
    etcd::EtcdServer,
    lab::Lab,
    netns,
    traffic::{BackgroundReport, LongLived},
};
use balancer_user::api::Status;

/// The fleet's key prefix in etcd.
const PREFIX: &str = "/fleet";
/// Host A's address on the segment (the lab's LB).
const A: &str = "198.18.0.2";
/// Host B's address on the segment.
const B: &str = "198.18.0.3";
/// The sync port of both hosts.
const SYNC_PORT: u16 = 7070;
/// The client's route to the VIPs.
const VIP_ROUTE: &str = "198.19.0.0/24";
/// Long-lived connections through A.
const CONNECTIONS: usize = 24;
/// How long the hosts may take to reach etcd, follow a change or learn their peers.
const LIMIT: Duration = Duration::from_secs(20);

/// Host B: a namespace of its own plugged into the lab's bridge (removed on drop).
struct Second {
    ns: String,
    bridge_ns: String,
}

/// B's port on the bridge.
const B_PORT: &str = "p-lb2";

impl Second {
    /// Makes namespace `ns` (one left over by a crashed run removed first) with `eth0` on
    /// `lab`'s bridge, holding address [`B`].
    fn plug(lab: &Lab, ns: &str) -> Result<Self> {
        if netns::list()?.iter().any(|n| n == ns) {
            netns::delete(ns)?;
        }
        netns::create(ns)?;
        let second = Self {
            ns: ns.to_string(),
            bridge_ns: lab.topology.bridge_ns().to_string(),
        };
        netns::run(ns, &["ip", "link", "set", "lo", "up"])?;
        netns::run(
            &second.bridge_ns,
            &[
                "ip", "link", "add", B_PORT, "type", "veth", "peer", "name", "eth0", "netns", ns,
            ],
        )?;
        netns::run(
            &second.bridge_ns,
            &["ip", "link", "set", B_PORT, "master", "br0", "up"],
        )?;
        netns::run(ns, &["ip", "link", "set", "eth0", "up"])?;
        netns::run(
            ns,
            &["ip", "addr", "add", &format!("{B}/24"), "dev", "eth0"],
        )?;
        Ok(second)
    }
}

impl Site for Second {
    fn lb_ns(&self) -> &str {
        &self.ns
    }

    fn lb_peer(&self) -> (&str, &str) {
        (&self.bridge_ns, B_PORT)
    }
}

impl Drop for Second {
    fn drop(&mut self) {
        if let Err(e) = netns::delete(&self.ns) {
            eprintln!("cannot delete {}: {e:#}", self.ns);
        }
    }
}

/// Two LB hosts in a fleet. Fields drop in order: daemons, then B's namespace, then the
/// lab, then etcd.
struct Pair {
    b: Balancer,
    /// B's namespace, deleted when the pair drops.
    _second: Second,
    lab: Lab,
    /// The fleet's etcd, stopped when the pair drops.
    _etcd: EtcdServer,
}

/// The daemon flags of fleet host `i` (on etcd link `i`), syncing on `addr` when `sync`.
fn options(i: usize, addr: &str, sync: bool) -> DaemonOptions {
    let mut extra = vec![
        "--store".to_string(),
        EtcdServer::store_url(i, PREFIX),
        "--host-name".to_string(),
        format!("lb-{i}"),
    ];
    if sync {
        extra.push("--sync-listen".into());
        extra.push(format!("{addr}:{SYNC_PORT}"));
    }
    DaemonOptions {
        extra,
        ..DaemonOptions::default()
    }
}

impl Pair {
    /// The lab `prefix` (host A) and host B (namespace `{prefix}b-lb`) on one etcd, with
    /// or without sync; returns once both serve `web` (b0, b1 blue, b2, b3 green).
    fn new(prefix: &str, sync: bool) -> Result<Self> {
        let lab = Lab::with_options(prefix, options(0, A, sync))?;
        let second = Second::plug(&lab, &format!("{prefix}b-lb"))?;
        let b = Balancer::start_with_options(&second, options(1, B, sync))?;
        let etcd = EtcdServer::start(&format!("{prefix}s"), &[lab.topology.lb_ns(), &second.ns])?;
        let pair = Self {
            b,
            _second: second,
            lab,
            _etcd: etcd,
        };
        pair.until("both hosts registered", |pair| {
            let text = pair.lab.balancer.ok(&["fleet", "status", "--json"])?;
            let status: balancer_user::api::FleetStatus = serde_json::from_str(&text)?;
            Ok(status.hosts.len() == 2)
        })?;
        let groups = ["blue", "blue", "green", "green"];
        pair.lab.service("web", false, &groups, &[100; 4])?;
        pair.converged()?;
        if sync {
            pair.until("each host knows the other as its peer", |pair| {
                Ok(pair
                    .statuses()?
                    .iter()
                    .all(|s| s.sync.is_some_and(|s| s.peers == 1)))
            })?;
        }
        Ok(pair)
    }

    /// Both hosts' `status --json`, A's first.
    fn statuses(&self) -> Result<[Status; 2]> {
        Ok([self.lab.balancer.status()?, self.b.status()?])
    }

    /// Polls every 50 ms until `check` holds, for at most [`LIMIT`].
    fn until(&self, what: &str, check: impl Fn(&Self) -> Result<bool>) -> Result<()> {
        let start = Instant::now();
        loop {
            if check(self).unwrap_or(false) {
                return Ok(());
            }
            ensure!(start.elapsed() < LIMIT, "{what}: not within {LIMIT:?}");
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until B's tables are A's (equal digests).
    fn converged(&self) -> Result<()> {
        self.until("B follows A's tables", |pair| {
            let [a, b] = pair.statuses()?;
            let digests = |s: &Status| {
                s.services
                    .iter()
                    .map(|s| s.digest.clone())
                    .collect::<Vec<_>>()
            };
            Ok(!a.services.is_empty() && digests(&a) == digests(&b))
        })
    }

    /// Packets B forwarded to `web`'s backends.
    fn b_packets(&self) -> Result<u64> {
        let status = self.b.status()?;
        Ok(status
            .services
            .iter()
            .flat_map(|s| &s.backends)
            .map(|b| b.packets)
            .sum())
    }

    /// Routes the client's VIP traffic through `next_hop`.
    fn route_via(&self, next_hop: &str) -> Result<()> {
        netns::run(
            self.lab.topology.client_ns(),
            &["ip", "route", "replace", VIP_ROUTE, "via", next_hop],
        )?;
        Ok(())
    }

    /// Opens [`CONNECTIONS`] long-lived connections through A, changes the tables through
    /// A (green only, b2 drained: new flows all go to b3) and, once B follows, moves the
    /// client's route to B; reports what the connections saw over B.
    fn move_connections(
        &self,
        before_move: impl Fn(&Self) -> Result<()>,
    ) -> Result<BackgroundReport> {
        let long = LongLived::open(&self.lab.client, Lab::vip(false), CONNECTIONS, &[])?;
        // The lab's service sends new flows to blue (b0, b1): every connection is on a
        // backend the change takes new flows from.
        let first = long.original_backends().to_vec();
        ensure!(
            first.iter().all(|b| b == "b0" || b == "b1"),
            "connections on green before the change: {first:?}"
        );
        let pings = long.ping_in_background();
        self.lab.balancer.ok(&["split", "web", "green=100"])?;
        self.lab
            .balancer
            .ok(&["backend", "set-weight", "web", "198.18.0.103", "0"])?;
        self.converged()?;
        before_move(self)?;
        let forwarded = self.b_packets()?;
        self.route_via(B)?;
        thread::sleep(Duration::from_secs(3));
        let report = pings.stop();
        let over_b = self.b_packets()? - forwarded;
        ensure!(
            over_b >= CONNECTIONS as u64,
            "B forwarded only {over_b} packets after the move: the connections did not cross it"
        );
        let answered = report
            .connections
            .iter()
            .filter(|c| c.exchanges > 0)
            .count();
        eprintln!(
            "{CONNECTIONS} connections moved to B ({over_b} packets through it): {} broken, {} \
             moved, {answered} answered",
            report.failed_connections(),
            report.moved_connections()
        );
        Ok(report)
    }
}

/// A's sync status.
fn sync_of(status: &Status) -> Result<balancer_user::api::SyncStatus> {
    status.sync.context("status shows no sync")
}

#[test]
fn with_sync_connections_moved_to_another_lb_host_keep_their_backends() -> Result<()> {
    let pair = Pair::new("syon", true)?;
    let report = pair.move_connections(|pair| {
        // B knows every connection before the route moves (the bench measures how soon).
        pair.until("B inserted every connection's record", |pair| {
            Ok(sync_of(&pair.b.status()?)?.inserted >= CONNECTIONS as u64)
        })
    })?;
    ensure!(
        report.failed_connections() == 0 && report.moved_connections() == 0,
        "connections broken or moved with sync: {report:?}"
    );
    let [a, b] = pair.statuses()?;
    let (a, b) = (sync_of(&a)?, sync_of(&b)?);
    eprintln!("sync of A: {a:?}\nsync of B: {b:?}");
    ensure!(
        a.recorded >= CONNECTIONS as u64 && a.datagrams >= 1,
        "{a:?}"
    );
    ensure!(b.received >= CONNECTIONS as u64 && b.dropped == 0, "{b:?}");
    ensure!(a.overflows == 0 && b.overflows == 0, "{a:?} {b:?}");

    // A datagram from no peer of the fleet is dropped and counted; the sync goes on.
    netns::in_netns(pair.lab.topology.client_ns(), || {
        let socket = UdpSocket::bind("0.0.0.0:0")?;
        let to: SocketAddr = format!("{A}:{SYNC_PORT}").parse()?;
        socket.send_to(b"BSYN\x01\x00\x00\x01 not a record", to)?;
        anyhow::Ok(())
    })??;
    pair.until("A counts the stranger's datagram", |pair| {
        Ok(sync_of(&pair.lab.balancer.status()?)?.dropped == 1)
    })?;
    ensure!(pair.lab.balancer.ok(&["status"])?.contains("flow sync on "));
    Ok(())
}

#[test]
fn without_sync_connections_moved_to_another_lb_host_break_or_move() -> Result<()> {
    let pair = Pair::new("syoff", false)?;
    ensure!(pair.lab.balancer.status()?.sync.is_none());
    let report = pair.move_connections(|_| Ok(()))?;
    ensure!(
        report.failed_connections() + report.moved_connections() >= CONNECTIONS / 4,
        "the control run broke or moved too few connections: the test could not fail: \
         {report:?}"
    );
    Ok(())
}
