//! A fleet of three LB hosts sharing one desired state in a real etcd (`daemon --store`):
//! each host a lab of its own (client, LB, four backends on one bridge), each LB linked to
//! one etcd (Debian's `etcd-server`, in a namespace of its own). A change made through one
//! host is live on the others (equal table digests, traffic through them follows it);
//! concurrent conflicting changes never lose one; with etcd stopped the hosts forward with
//! the last state and refuse changes in one line, and catch up when it is back; a canary
//! is driven by the leader alone, and when the leader is killed another host takes over
//! within the lease's time to live and a second, at the same step (a paused leader is
//! replaced the same way, and follows when it resumes); the leader judges analysis
//! windows on the traffic of every host; a backend's health is
//! decided once for the fleet (by a majority of the hosts that check it), so every host's
//! tables stay the same.

use std::{
    sync::{Arc, Barrier},
    thread,
    time::{Duration, Instant},
};

use anyhow::{ensure, Context, Result};
use balancer_tests::{
    balancer::{Balancer, DaemonOptions, REFUSED},
    etcd::EtcdServer,
    lab::{canary_start, taken, Lab},
    traffic::{LongLived, NewConnections},
};
use balancer_user::{
    api::{FleetStatus, Health, Status},
    release::canary::{Canary, Outcome},
};

/// The fleet's key prefix in etcd.
const PREFIX: &str = "/fleet";

/// How long a host may take to follow a change made through another (the bound).
const FOLLOW_LIMIT: Duration = Duration::from_secs(1);

/// How long the hosts may take to reach etcd (at start, or after it is back).
const CONNECT_LIMIT: Duration = Duration::from_secs(20);

/// The leader lease's time to live the daemons are given (`--leader-ttl`: etcd's minimum).
const LEADER_TTL: Duration = Duration::from_secs(2);

/// Every host of a fleet.
const ALL: [usize; 3] = [0, 1, 2];

/// Three labs whose daemons share one etcd. Fields drop in order: the daemons before etcd.
struct Fleet {
    labs: Vec<Lab>,
    etcd: EtcdServer,
}

impl Fleet {
    /// Three labs named `{prefix}0..2`, their daemons on `--store` (host names `lb-0`..),
    /// then etcd linked to their LB namespaces; returns once every host registered.
    fn new(prefix: &str) -> Result<Self> {
        let labs = (0..3)
            .map(|i| {
                let extra = vec![
                    "--store".to_string(),
                    EtcdServer::store_url(i, PREFIX),
                    "--host-name".to_string(),
                    format!("lb-{i}"),
                    "--leader-ttl".to_string(),
                    format!("{}s", LEADER_TTL.as_secs()),
                ];
                Lab::with_options(
                    &format!("{prefix}{i}"),
                    DaemonOptions {
                        extra,
                        ..DaemonOptions::default()
                    },
                )
            })
            .collect::<Result<Vec<_>>>()?;
        let namespaces: Vec<&str> = labs.iter().map(|l| l.topology.lb_ns()).collect();
        let etcd = EtcdServer::start(&format!("{prefix}s"), &namespaces)?;
        let fleet = Self { labs, etcd };
        fleet.wait(CONNECT_LIMIT, "every host registered", |fleet| {
            Ok(fleet.len() == 3)
        })?;
        Ok(fleet)
    }

    fn host(&self, i: usize) -> &Balancer {
        &self.labs[i].balancer
    }

    /// `fleet status --json` through host `i`.
    fn fleet_status(&self, i: usize) -> Result<FleetStatus> {
        let text = self.host(i).ok(&["fleet", "status", "--json"])?;
        serde_json::from_str(&text).context("parse fleet status --json")
    }

    /// Polls `fleet status` through host 0 every 50 ms until `check` holds for its hosts'
    /// (name, revision, digests), for at most `limit`; returns how long it took.
    fn wait(
        &self,
        limit: Duration,
        what: &str,
        check: impl Fn(&[(String, i64, Vec<String>)]) -> Result<bool>,
    ) -> Result<Duration> {
        self.wait_through(0, limit, what, check)
    }

    /// Like [`Fleet::wait`], through host `i`.
    fn wait_through(
        &self,
        i: usize,
        limit: Duration,
        what: &str,
        check: impl Fn(&[(String, i64, Vec<String>)]) -> Result<bool>,
    ) -> Result<Duration> {
        let start = Instant::now();
        loop {
            let hosts: Vec<(String, i64, Vec<String>)> = match self.fleet_status(i) {
                Ok(status) => status
                    .hosts
                    .into_iter()
                    .map(|h| (h.host, h.revision, h.digests.into_values().collect()))
                    .collect(),
                Err(_) => Vec::new(),
            };
            if check(&hosts)? {
                return Ok(start.elapsed());
            }
            ensure!(
                start.elapsed() < limit,
                "{what} not within {limit:?}: {hosts:?}"
            );
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Every host's `status --json`.
    fn statuses(&self) -> Result<Vec<Status>> {
        self.statuses_of(&ALL)
    }

    /// The `status --json` of `hosts`.
    fn statuses_of(&self, hosts: &[usize]) -> Result<Vec<Status>> {
        hosts.iter().map(|i| self.host(*i).status()).collect()
    }

    /// Polls every host's `status --json` until each shows the same services with the
    /// same table digests as `reference` (host `i`'s own answer after a change), for at
    /// most `limit`; returns how long it took.
    fn converged(&self, reference: &Status, limit: Duration) -> Result<Duration> {
        self.converged_on(&ALL, reference, limit)
    }

    /// Like [`Fleet::converged`], for `hosts` only.
    fn converged_on(
        &self,
        hosts: &[usize],
        reference: &Status,
        limit: Duration,
    ) -> Result<Duration> {
        let start = Instant::now();
        let digests = |s: &Status| -> Vec<(String, String)> {
            s.services
                .iter()
                .map(|s| (s.name.clone(), s.digest.clone()))
                .collect()
        };
        let wanted = digests(reference);
        ensure!(
            wanted.iter().all(|(_, d)| d.starts_with("sha256:")),
            "{wanted:?}"
        );
        loop {
            let all = self.statuses_of(hosts)?;
            if all.iter().all(|s| digests(s) == wanted) {
                return Ok(start.elapsed());
            }
            ensure!(
                start.elapsed() < limit,
                "the hosts did not follow within {limit:?}: wanted {wanted:?}, have {:?}",
                all.iter().map(digests).collect::<Vec<_>>()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Adds service `web` through host 0 (b0, b1 blue, b2, b3 green; 100 each) and waits
    /// until every host serves it.
    fn web(&self) -> Result<()> {
        let groups = ["blue", "blue", "green", "green"];
        self.labs[0].service("web", false, &groups, &[100; 4])?;
        let reference = self.host(0).status()?;
        self.converged(&reference, CONNECT_LIMIT)?;
        Ok(())
    }
}

/// The backends that answer `asks` new connections through lab `i`'s LB.
fn answers(fleet: &Fleet, i: usize, asks: usize) -> Result<Vec<String>> {
    let lab = &fleet.labs[i];
    (0..asks)
        .map(|_| lab.client.ask_once(Lab::vip(false), None))
        .collect()
}

#[test]
fn a_change_through_one_host_is_live_on_every_host_and_traffic_follows_it() -> Result<()> {
    let fleet = Fleet::new("flchg")?;
    fleet.web()?;
    for i in [1, 2] {
        let before = answers(&fleet, i, 40)?;
        ensure!(
            before.iter().any(|b| b == "b0" || b == "b1"),
            "host {i} sent nothing to blue before the change: {before:?}"
        );
    }
    fleet.host(0).ok(&["split", "web", "green=100"])?;
    let reference = fleet.host(0).status()?;
    let took = fleet.converged(&reference, FOLLOW_LIMIT)?;
    eprintln!("hosts 1 and 2 followed host 0's split in {took:?}");
    for i in [1, 2] {
        let after = answers(&fleet, i, 40)?;
        ensure!(
            after.iter().all(|b| b == "b2" || b == "b3"),
            "host {i} still sends new flows to blue: {after:?}"
        );
    }
    // A weight change through host 2 is live on hosts 0 and 1 too.
    fleet
        .host(2)
        .ok(&["backend", "set-weight", "web", "198.18.0.103", "0"])?;
    let reference = fleet.host(2).status()?;
    fleet.converged(&reference, FOLLOW_LIMIT)?;
    for i in [0, 1] {
        let after = answers(&fleet, i, 40)?;
        ensure!(
            after.iter().all(|b| b == "b3"),
            "host {i} ignores host 2's weight change: {after:?}"
        );
    }
    // Every host registered with the same revision and tables; one of them leads.
    let status = fleet.fleet_status(1)?;
    let leader = status.leader.clone().context("no leader")?;
    ensure!(
        ["lb-0", "lb-1", "lb-2"].contains(&leader.as_str()),
        "{status:?}"
    );
    fleet.wait(FOLLOW_LIMIT * 3, "one revision everywhere", |hosts| {
        Ok(hosts.len() == 3
            && hosts.iter().all(|(_, revision, digests)| {
                *revision == status.revision && { digests == &hosts[0].2 }
            }))
    })?;
    let text = fleet.host(1).ok(&["fleet", "status"])?;
    ensure!(text.contains(&format!("leader: {leader}\n")), "{text}");
    ensure!(
        text.contains("3 host(s) at revision") && text.contains("with the same tables"),
        "{text}"
    );
    for name in ["lb-0", "lb-1", "lb-2"] {
        ensure!(text.contains(name), "{name} missing: {text}");
    }
    let shown = fleet.host(0).ok(&["status"])?;
    ensure!(
        shown.contains(&format!("  tables {}", reference.services[0].digest)),
        "{shown}"
    );
    Ok(())
}

#[test]
fn concurrent_conflicting_changes_never_lose_one() -> Result<()> {
    let fleet = Arc::new(Fleet::new("flcas")?);
    fleet.web()?;
    // Each round, hosts 0 and 1 each add a pin of their own at the same moment: both
    // stored (one after the other), or one refused in one line having changed nothing.
    let rounds = 15;
    let mut stored = Vec::new();
    let mut refusals = 0;
    for round in 0..rounds {
        let barrier = Arc::new(Barrier::new(2));
        let tries: Vec<_> = [(0, 100), (1, 150)]
            .into_iter()
            .map(|(host, net)| {
                let (fleet, barrier) = (fleet.clone(), barrier.clone());
                thread::spawn(move || -> Result<(String, bool, String)> {
                    let cidr = format!("198.18.{}.0/24", net + round);
                    barrier.wait();
                    let out = fleet
                        .host(host)
                        .cli(&["pin", "add", "web", &cidr, "--group", "green"])?;
                    Ok((cidr, out.code == Some(0), out.stderr))
                })
            })
            .collect();
        let mut won = 0;
        for attempt in tries {
            let (cidr, ok, stderr) = attempt.join().expect("a try panicked")?;
            if ok {
                won += 1;
                stored.push(cidr);
                continue;
            }
            let lines: Vec<&str> = stderr.trim().lines().collect();
            ensure!(
                lines.len() == 1
                    && lines[0].starts_with("error:")
                    && lines[0].contains("the state changed meanwhile (revision "),
                "round {round}: {cidr} failed otherwise: {stderr:?}"
            );
            refusals += 1;
        }
        ensure!(won >= 1, "round {round}: neither change was stored");
        // The next round starts once every host holds this one's revision.
        let reference = fleet.host(0).status()?;
        fleet.converged(&reference, CONNECT_LIMIT)?;
    }
    eprintln!(
        "{rounds} rounds: {} changes stored, {refusals} refused",
        stored.len()
    );
    // Every host holds exactly the stored pins: none lost, no refused one.
    let reference = fleet.host(0).status()?;
    fleet.converged(&reference, CONNECT_LIMIT)?;
    for status in fleet.statuses()? {
        let mut pins: Vec<String> = status.services[0]
            .pins
            .iter()
            .map(|p| p.cidr.to_string())
            .collect();
        pins.sort();
        let mut wanted = stored.clone();
        wanted.sort();
        ensure!(pins == wanted, "pins {pins:?}, stored {wanted:?}");
    }
    // The refusal is the CLI's exit code 1, and a refused change changed nothing.
    let out = fleet
        .host(1)
        .cli(&["pin", "add", "web", "198.18.99.0/24", "--group", "nosuch"])?;
    ensure!(out.code == Some(REFUSED), "{out:?}");
    Ok(())
}

#[test]
fn with_etcd_stopped_hosts_forward_and_refuse_changes_then_catch_up() -> Result<()> {
    let mut fleet = Fleet::new("fldown")?;
    fleet.web()?;
    let before = fleet.statuses()?;
    let long = LongLived::open(&fleet.labs[1].client, Lab::vip(false), 8, &[])?;
    let pings = long.ping_in_background();
    fleet.etcd.stop()?;
    // A change through any host is refused in one line; nothing changes anywhere.
    for i in 0..3 {
        let out = fleet
            .host(i)
            .cli(&["backend", "set-weight", "web", "198.18.0.101", "7"])?;
        let lines: Vec<&str> = out.stderr.trim().lines().collect();
        ensure!(
            out.code == Some(REFUSED)
                && lines.len() == 1
                && lines[0].starts_with("error: store unavailable: "),
            "host {i}: {out:?}"
        );
    }
    let during = fleet.statuses()?;
    for (b, d) in before.iter().zip(&during) {
        ensure!(b.services[0].digest == d.services[0].digest, "tables moved");
        ensure!(b.services[0].backends[0].weight == d.services[0].backends[0].weight);
    }
    // New connections through every host are still answered and balanced.
    for i in 0..3 {
        let mut seen = answers(&fleet, i, 40)?;
        seen.sort();
        seen.dedup();
        ensure!(seen.len() >= 2, "host {i} sent every new flow to {seen:?}");
    }
    fleet.etcd.restart()?;
    // Once the hosts reach etcd again, a change through host 2 goes through and every
    // host follows.
    let start = Instant::now();
    loop {
        let out = fleet
            .host(2)
            .cli(&["backend", "set-weight", "web", "198.18.0.101", "0"])?;
        if out.code == Some(0) {
            break;
        }
        ensure!(
            start.elapsed() < CONNECT_LIMIT,
            "host 2 still refuses after etcd is back: {out:?}"
        );
        thread::sleep(Duration::from_millis(200));
    }
    let reference = fleet.host(2).status()?;
    fleet.converged(&reference, CONNECT_LIMIT)?;
    for status in fleet.statuses()? {
        let b0 = &status.services[0].backends[0];
        ensure!(
            b0.addr.to_string() == "198.18.0.101" && b0.weight == 0,
            "{b0:?}"
        );
    }
    let report = pings.stop();
    ensure!(
        report.failed_connections() == 0 && report.moved_connections() == 0,
        "long-lived connections broke or moved: {report:?}"
    );
    Ok(())
}

/// The host that leads the fleet, as `fleet status` through host `i` shows it, once one
/// does (within `limit`).
fn leader(fleet: &Fleet, i: usize, limit: Duration) -> Result<usize> {
    let start = Instant::now();
    loop {
        if let Some(name) = fleet.fleet_status(i).ok().and_then(|s| s.leader) {
            return name
                .strip_prefix("lb-")
                .and_then(|n| n.parse().ok())
                .with_context(|| format!("leader {name:?}"));
        }
        ensure!(start.elapsed() < limit, "no leader within {limit:?}");
        thread::sleep(Duration::from_millis(20));
    }
}

/// The canary of `web` on each of `hosts`.
fn canaries(fleet: &Fleet, hosts: &[usize]) -> Result<Vec<Canary>> {
    fleet
        .statuses_of(hosts)?
        .into_iter()
        .map(|s| s.services[0].canary.clone().context("no canary"))
        .collect()
}

#[test]
fn a_canary_driven_by_the_leader_continues_at_the_same_step_when_the_leader_is_killed() -> Result<()>
{
    let mut fleet = Fleet::new("flcan")?;
    fleet.web()?;
    let first = leader(&fleet, 0, CONNECT_LIMIT)?;
    // Started through a host that does not lead: the leader drives it all the same.
    let through = (first + 1) % 3;
    let interval = Duration::from_secs(5);
    fleet
        .host(through)
        .ok(&canary_start("10,50,100", "5s", &[]))?;
    // Once step 2/3 (50%) is stored, the leader dies.
    let start = Instant::now();
    loop {
        if canaries(&fleet, &[through])?
            .iter()
            .all(|c| taken(c, "step 2/3") == 1)
        {
            break;
        }
        ensure!(start.elapsed() < CONNECT_LIMIT, "step 2/3 never taken");
        thread::sleep(Duration::from_millis(20));
    }
    fleet.labs[first].balancer.kill9()?;
    let killed = Instant::now();
    let alive: Vec<usize> = ALL.into_iter().filter(|i| *i != first).collect();
    // Another host leads within the lease's time to live and a second.
    let limit = LEADER_TTL + Duration::from_secs(1);
    let next = loop {
        let shown = fleet.fleet_status(alive[0]).ok().and_then(|s| s.leader);
        if let Some(name) = shown.filter(|n| *n != format!("lb-{first}")) {
            break name;
        }
        ensure!(
            killed.elapsed() < limit,
            "no host took over within {limit:?}"
        );
        thread::sleep(Duration::from_millis(20));
    };
    let took = killed.elapsed();
    eprintln!("{next} took over {took:?} after lb-{first} was killed");
    // At the same step: 2/3 taken once, 3/3 not yet (its interval has not passed).
    for canary in canaries(&fleet, &alive)? {
        ensure!(
            canary.step == 1 && taken(&canary, "step 2/3") == 1 && taken(&canary, "step 3/3") == 0,
            "not at step 2/3 after the takeover: {canary:?}"
        );
    }
    // The new leader completes it; the hosts left hold the same decisions and tables.
    let start = Instant::now();
    let done = loop {
        let all = canaries(&fleet, &alive)?;
        if all
            .iter()
            .all(|c| c.outcome.is_some() && c.decisions == all[0].decisions)
        {
            break all[0].clone();
        }
        ensure!(
            start.elapsed() < CONNECT_LIMIT,
            "the hosts left did not end the canary alike: {all:?}"
        );
        thread::sleep(Duration::from_millis(100));
    };
    ensure!(done.outcome == Some(Outcome::Completed), "{done:?}");
    let at = |step: &str| -> Result<u64> {
        let decision = done.decisions.iter().find(|d| d.what.contains(step));
        Ok(decision.with_context(|| format!("{step} missing"))?.at_ms)
    };
    for step in ["step 1/3", "step 2/3", "step 3/3"] {
        ensure!(taken(&done, step) == 1, "{step} not taken once: {done:?}");
    }
    // Not skipped ahead: the last step came no earlier than its interval after the second.
    let gap = at("step 3/3")? - at("step 2/3")?;
    ensure!(
        gap >= interval.as_millis() as u64,
        "step 3/3 came {gap} ms after step 2/3: {done:?}"
    );
    let reference = fleet.host(alive[0]).status()?;
    fleet.converged_on(&alive, &reference, CONNECT_LIMIT)?;
    // A leader stopped cleanly hands over at once: the last host leads within a second,
    // well before the lease's time to live.
    let second: usize = next.trim_start_matches("lb-").parse()?;
    let last = alive
        .into_iter()
        .find(|i| *i != second)
        .context("no host left")?;
    fleet.labs[second].balancer.terminate()?;
    let stopped = Instant::now();
    while fleet.fleet_status(last)?.leader != Some(format!("lb-{last}")) {
        ensure!(
            stopped.elapsed() < Duration::from_secs(1),
            "lb-{last} did not take over within a second of lb-{second}'s clean stop"
        );
        thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

#[test]
fn the_leader_judges_analysis_windows_on_every_hosts_traffic() -> Result<()> {
    let fleet = Fleet::new("flana")?;
    fleet.web()?;
    let first = leader(&fleet, 0, CONNECT_LIMIT)?;
    let others: Vec<usize> = ALL.into_iter().filter(|i| *i != first).collect();
    // New connections through the two other hosts only: the leader forwards none.
    let streams: Vec<NewConnections> = others
        .iter()
        .map(|i| NewConnections::start(&fleet.labs[*i].client, Lab::vip(false)))
        .collect();
    let analysis = [
        "--warmup",
        "6s",
        "--window",
        "5s",
        "--min-flows",
        "10",
        "--max-inconclusive",
        "5",
    ];
    fleet
        .host(others[0])
        .ok(&canary_start("50,100", "1s", &analysis))?;
    let start = Instant::now();
    let done = loop {
        let canary = canaries(&fleet, &[first])?.remove(0);
        if canary.outcome.is_some() {
            break canary;
        }
        ensure!(
            start.elapsed() < Duration::from_secs(40),
            "the canary did not end: {canary:?}"
        );
        thread::sleep(Duration::from_millis(100));
    };
    for stream in streams {
        stream.stop();
    }
    // Its windows counted the other hosts' new flows: they passed, and it completed.
    ensure!(done.outcome == Some(Outcome::Completed), "{done:?}");
    let passed = done
        .decisions
        .iter()
        .find(|d| d.what.starts_with("analysis: window passed"))
        .with_context(|| format!("no window passed: {done:?}"))?;
    let own = fleet.host(first).status()?;
    let forwarded: u64 = own.services[0].backends.iter().map(|b| b.new_flows).sum();
    ensure!(
        forwarded == 0,
        "the leader forwarded {forwarded} new flows itself; {}",
        passed.what
    );
    Ok(())
}

/// A daemon stopped with SIGSTOP, continued (SIGCONT) when dropped.
struct Paused(libc::pid_t);

impl Paused {
    fn new(pid: u32) -> Result<Self> {
        let pid = libc::pid_t::try_from(pid)?;
        // SAFETY: kill(2) with a process id of a daemon this test started.
        let sent = unsafe { libc::kill(pid, libc::SIGSTOP) };
        ensure!(sent == 0, "SIGSTOP failed");
        Ok(Self(pid))
    }
}

impl Drop for Paused {
    fn drop(&mut self) {
        // SAFETY: as in `Paused::new`.
        unsafe { libc::kill(self.0, libc::SIGCONT) };
    }
}

#[test]
fn a_paused_leader_takes_no_stale_step_and_follows_when_it_resumes() -> Result<()> {
    let fleet = Fleet::new("flpau")?;
    fleet.web()?;
    let first = leader(&fleet, 0, CONNECT_LIMIT)?;
    let others: Vec<usize> = ALL.into_iter().filter(|i| *i != first).collect();
    fleet
        .host(others[0])
        .ok(&canary_start("10,50,100", "3s", &[]))?;
    // The leader is paused at step 1/3, past its lease: another host takes over and
    // completes the canary.
    let paused = Paused::new(fleet.host(first).pid().context("no daemon")?)?;
    let stopped = Instant::now();
    let limit = LEADER_TTL + Duration::from_secs(1);
    loop {
        let shown = fleet.fleet_status(others[0]).ok().and_then(|s| s.leader);
        if shown.is_some_and(|name| name != format!("lb-{first}")) {
            break;
        }
        ensure!(
            stopped.elapsed() < limit,
            "no host took over within {limit:?}"
        );
        thread::sleep(Duration::from_millis(20));
    }
    let start = Instant::now();
    while !canaries(&fleet, &others)?
        .iter()
        .all(|c| c.outcome.is_some())
    {
        ensure!(start.elapsed() < CONNECT_LIMIT, "the canary did not end");
        thread::sleep(Duration::from_millis(100));
    }
    // Resumed, the former leader (its timers due, its lease gone) takes no step of its
    // own: it follows the stored canary, each step taken once.
    drop(paused);
    let start = Instant::now();
    let done = loop {
        let all = canaries(&fleet, &ALL)?;
        if all.iter().all(|c| c.decisions == all[0].decisions) {
            break all[0].clone();
        }
        ensure!(
            start.elapsed() < CONNECT_LIMIT,
            "the resumed host does not follow: {all:?}"
        );
        thread::sleep(Duration::from_millis(100));
    };
    ensure!(done.outcome == Some(Outcome::Completed), "{done:?}");
    for step in ["step 1/3", "step 2/3", "step 3/3"] {
        ensure!(taken(&done, step) == 1, "{step} not taken once: {done:?}");
    }
    let status = fleet.fleet_status(first)?;
    ensure!(
        status.leader != Some(format!("lb-{first}")),
        "the paused host leads again: {status:?}"
    );
    let reference = fleet.host(others[0]).status()?;
    fleet.converged(&reference, CONNECT_LIMIT)?;
    // A second later still nothing new was stored by it.
    thread::sleep(Duration::from_secs(1));
    ensure!(canaries(&fleet, &ALL)?
        .iter()
        .all(|c| c.decisions == done.decisions));
    Ok(())
}

/// Backend b1 (198.18.0.102) of `web` in each of `hosts`' status: (the fleet's view, the
/// host's own checks where they differ).
fn b1_health(fleet: &Fleet, hosts: &[usize]) -> Result<Vec<(Option<Health>, Option<Health>)>> {
    fleet
        .statuses_of(hosts)?
        .iter()
        .map(|s| {
            let b1 = s.services[0]
                .backends
                .iter()
                .find(|b| b.addr.to_string() == "198.18.0.102")
                .context("b1 missing")?;
            Ok((b1.health, b1.own_health))
        })
        .collect()
}

#[test]
fn a_backend_is_taken_out_only_when_most_hosts_see_it_down() -> Result<()> {
    let mut fleet = Fleet::new("flhea")?;
    fleet.web()?;
    fleet.labs[0].enable_checks("web", "tcp", 1, 1)?;
    let before = fleet.host(0).status()?;
    fleet.converged(&before, CONNECT_LIMIT)?;
    // b1 stops in lab 0 only: host 0's own checks see it down, the fleet keeps it.
    fleet.labs[0].stop_server(1);
    let start = Instant::now();
    while b1_health(&fleet, &[0])?[0] != (Some(Health::Up), Some(Health::Down)) {
        ensure!(
            start.elapsed() < CONNECT_LIMIT,
            "host 0 never saw b1 down: {:?}",
            b1_health(&fleet, &[0])
        );
        thread::sleep(Duration::from_millis(50));
    }
    // Long enough for a report to reach the leader and its view to reach every host
    // (reports every second, views every 250 ms): the tables stay as they were.
    thread::sleep(Duration::from_secs(3));
    fleet.converged(&before, FOLLOW_LIMIT)?;
    ensure!(
        b1_health(&fleet, &ALL)?
            .iter()
            .all(|(fleet, _)| *fleet == Some(Health::Up)),
        "{:?}",
        b1_health(&fleet, &ALL)
    );
    let through2 = answers(&fleet, 2, 40)?;
    ensure!(through2.iter().any(|b| b == "b1"), "{through2:?}");
    // b1 stops in lab 1 too: two of three see it down, every host takes it out — also
    // host 2, whose own checks pass.
    fleet.labs[1].stop_server(1);
    let start = Instant::now();
    loop {
        let seen = b1_health(&fleet, &ALL)?;
        if seen.iter().all(|(fleet, _)| *fleet == Some(Health::Down)) {
            ensure!(
                seen[2].1 == Some(Health::Up),
                "host 2's own checks: {seen:?}"
            );
            break;
        }
        ensure!(start.elapsed() < CONNECT_LIMIT, "b1 still in: {seen:?}");
        thread::sleep(Duration::from_millis(50));
    }
    let reference = fleet.host(2).status()?;
    ensure!(reference.services[0].digest != before.services[0].digest);
    fleet.converged(&reference, FOLLOW_LIMIT)?;
    let through2 = answers(&fleet, 2, 40)?;
    ensure!(through2.iter().all(|b| b != "b1"), "{through2:?}");
    Ok(())
}
