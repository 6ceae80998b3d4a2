//! Two LB hosts on one segment in a fleet on a real etcd: the lab's LB is host A, host B a
//! namespace of its own plugged into the lab's bridge, the client's route to the VIPs
//! through A (switched with [`Pair::route_via`], as a router moves flows when an LB host
//! joins, leaves or dies). Both daemons follow one desired state (`--store`) and, when
//! asked, sync flow state (`--sync-listen`). For the flow-state sync's tests and bench.

use std::{
    thread,
    time::{Duration, Instant},
};

use anyhow::{ensure, Result};
use balancer_user::api::{FleetStatus, Status};

use crate::{
    balancer::{Balancer, DaemonOptions, Site},
    etcd::EtcdServer,
    lab::Lab,
    netns,
};

/// The fleet's key prefix in etcd.
pub const PREFIX: &str = "/fleet";
/// Host A's address on the segment (the lab's LB).
pub const A: &str = "198.18.0.2";
/// Host B's address on the segment.
pub const B: &str = "198.18.0.3";
/// The sync port of both hosts.
pub const SYNC_PORT: u16 = 7070;
/// The client's route to the VIPs.
const VIP_ROUTE: &str = "198.19.0.0/24";
/// How long the hosts may take to reach etcd, follow a change or learn their peers.
pub const LIMIT: Duration = Duration::from_secs(20);

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
pub struct Pair {
    /// Host B's daemon.
    pub b: Balancer,
    /// B's namespace, deleted when the pair drops.
    _second: Second,
    /// Host A's lab: its daemon, the client, the backends.
    pub lab: Lab,
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
    pub fn new(prefix: &str, sync: bool) -> Result<Self> {
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
            let status: FleetStatus = serde_json::from_str(&text)?;
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
                    .all(|s| s.sync.as_ref().is_some_and(|s| s.peers == 1)))
            })?;
        }
        Ok(pair)
    }

    /// Both hosts' `status --json`, A's first.
    pub fn statuses(&self) -> Result<[Status; 2]> {
        Ok([self.lab.balancer.status()?, self.b.status()?])
    }

    /// Polls every 50 ms until `check` holds, for at most [`LIMIT`].
    pub fn until(&self, what: &str, check: impl Fn(&Self) -> Result<bool>) -> Result<()> {
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
    pub fn converged(&self) -> Result<()> {
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
    pub fn b_packets(&self) -> Result<u64> {
        let status = self.b.status()?;
        Ok(status
            .services
            .iter()
            .flat_map(|s| &s.backends)
            .map(|b| b.packets)
            .sum())
    }

    /// Routes the client's VIP traffic through `next_hop`.
    pub fn route_via(&self, next_hop: &str) -> Result<()> {
        netns::run(
            self.lab.topology.client_ns(),
            &["ip", "route", "replace", VIP_ROUTE, "via", next_hop],
        )?;
        Ok(())
    }
}
