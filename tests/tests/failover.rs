//! Losing an LB host mid-canary breaks no connection (issue 13): the fleet over BGP of
//! `balancer_tests::bgp_fleet` (a router spreading flows over three LB hosts by ECMP, one
//! etcd, the hosts syncing their flows), a canary 10→50→100 driven by the leader, 50
//! long-lived connections through every host opened at 10 %, the tables changed by the
//! step to 50 %, then the leader's host killed entirely (links down, bird and daemon
//! gone). The router's route loses it within the BGP hold time; the connections it carried
//! go on through the other hosts on their first backends (their records synced), none
//! broken, none moved; another host leads and completes the canary, each step once.

use std::{
    thread,
    time::{Duration, Instant},
};

use anyhow::{ensure, Context, Result};
use balancer_tests::{
    bgp_fleet::{BgpFleet, HOLD},
    lab::{canary_start, taken},
    traffic::LongLived,
};
use balancer_user::{
    api::FleetStatus,
    release::canary::{Canary, Outcome},
};

/// Long-lived connections through the fleet.
const CONNECTIONS: usize = 50;

/// Fewest of [`CONNECTIONS`] a host of three must carry (a third is about 17; fewer than 5
/// is over 3.5 standard deviations below).
const SHARE: u64 = 5;

/// How long an exchange may wait for its answer: the outage (up to the hold time and the
/// route's update) plus TCP's retransmission backoff.
const PATIENCE: Duration = Duration::from_secs(15);

/// What bird's kernel protocol and the polling add to the hold time before a dead host's
/// path leaves the router's route.
const HOLD_MARGIN: Duration = Duration::from_secs(2);

/// How long the fleet may take to settle: sessions, routes, a leader, a canary's end.
const SETTLE: Duration = Duration::from_secs(30);

/// The leader's lease (the daemons' default `--leader-ttl`): another host leads within it
/// and a second of the leader's death.
const LEADER_TTL: Duration = Duration::from_secs(3);

/// The canary's interval between steps: long enough that the kill and the takeover
/// happen between step 2/3 and step 3/3.
const INTERVAL: &str = "8s";

/// `fleet status --json` through LB host `index`.
fn fleet_status(fleet: &BgpFleet, index: usize) -> Result<FleetStatus> {
    let text = fleet.host(index)?.ok(&["fleet", "status", "--json"])?;
    serde_json::from_str(&text).context("parse fleet status --json")
}

/// The index of the LB host that leads the fleet other than `former`, as host `through`
/// sees it, polled every 50 ms for at most `limit`.
fn leader(
    fleet: &BgpFleet,
    through: usize,
    former: Option<usize>,
    limit: Duration,
) -> Result<usize> {
    let start = Instant::now();
    loop {
        let shown = fleet_status(fleet, through).ok().and_then(|s| s.leader);
        if let Some(name) = shown {
            let index = name
                .strip_prefix("lb-")
                .and_then(|n| n.parse().ok())
                .with_context(|| format!("leader {name:?}"))?;
            if Some(index) != former {
                return Ok(index);
            }
        }
        ensure!(start.elapsed() < limit, "no new leader within {limit:?}");
        thread::sleep(Duration::from_millis(50));
    }
}

/// The canary of `web` on each of `hosts`.
fn canaries(fleet: &BgpFleet, hosts: &[usize]) -> Result<Vec<Canary>> {
    hosts
        .iter()
        .map(|&i| {
            let status = fleet.host(i)?.status()?;
            let web = status.services.into_iter().find(|s| s.name == "web");
            web.and_then(|s| s.canary).context("no canary of web")
        })
        .collect()
}

/// Polls the canaries of `hosts` every 50 ms until `done` holds for each, for at most
/// [`SETTLE`]; returns the first host's.
fn wait_canaries(
    fleet: &BgpFleet,
    hosts: &[usize],
    what: &str,
    done: impl Fn(&Canary) -> bool,
) -> Result<Canary> {
    let start = Instant::now();
    loop {
        let all = canaries(fleet, hosts)?;
        if all.iter().all(&done) {
            return Ok(all[0].clone());
        }
        ensure!(
            start.elapsed() < SETTLE,
            "{what} not within {SETTLE:?}: {all:?}"
        );
        thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn killing_the_leaders_lb_host_mid_canary_breaks_and_moves_no_connection() -> Result<()> {
    let mut fleet = BgpFleet::build("fover", 3, 4, 3)?;
    let web = fleet.service_in_groups("web", 0, false, &["blue", "blue", "green", "green"])?;
    fleet.wait_paths(web.ip(), &[0, 1, 2], SETTLE)?;
    let victim = leader(&fleet, 0, None, SETTLE)?;
    let alive: Vec<usize> = (0..3).filter(|i| *i != victim).collect();

    // Step 1/3 (10 % green) at once; then the connections, spread over the three hosts.
    fleet
        .host(alive[0])?
        .ok(&canary_start("10,50,100", INTERVAL, &[]))?;
    wait_canaries(&fleet, &[0, 1, 2], "step 1/3 on every host", |c| {
        taken(c, "step 1/3") == 1
    })?;
    let before: Vec<u64> = (0..3).map(|i| fleet.new_flows(i)).collect::<Result<_>>()?;
    let load = LongLived::open(&fleet.client, web, CONNECTIONS, &[])?.patient(PATIENCE)?;
    let carried: Vec<u64> = (0..3)
        .map(|i| Ok(fleet.new_flows(i)? - before[i]))
        .collect::<Result<_>>()?;
    ensure!(
        carried.iter().all(|&n| n >= SHARE),
        "the connections did not spread over the three hosts: {carried:?}"
    );
    let pings = load.ping_in_background();

    // Step 2/3 (50 %): the tables now choose green for more flows than when the
    // connections began.
    wait_canaries(&fleet, &[0, 1, 2], "step 2/3 on every host", |c| {
        taken(c, "step 2/3") == 1
    })?;
    let synced = |i: usize| -> Result<u64> {
        let status = fleet.host(i)?.status()?;
        Ok(status.sync.context("no sync in status")?.inserted)
    };
    for &i in &alive {
        ensure!(synced(i)? > 0, "LB host {i} inserted no peer's flow");
    }

    // The leader's host dies entirely while the connections talk through every host.
    fleet.kill_host(victim)?;
    let killed = Instant::now();
    let took = fleet.wait_paths(web.ip(), &alive, HOLD + HOLD_MARGIN)?;
    eprintln!("the router's route lost LB host {victim} {took:?} after it was killed");

    // Another host leads and completes the canary, each step once; the two left agree.
    let next = leader(
        &fleet,
        alive[0],
        Some(victim),
        LEADER_TTL.saturating_sub(killed.elapsed()) + Duration::from_secs(1),
    )?;
    eprintln!("LB host {next} leads {:?} after the kill", killed.elapsed());
    let done = wait_canaries(&fleet, &alive, "the canary's end on the hosts left", |c| {
        c.outcome.is_some()
    })?;
    ensure!(done.outcome == Some(Outcome::Completed), "{done:?}");
    for step in ["step 1/3", "step 2/3", "step 3/3"] {
        ensure!(taken(&done, step) == 1, "{step} not taken once: {done:?}");
    }
    let digests = |i: usize| -> Result<Vec<String>> {
        let status = fleet.host(i)?.status()?;
        Ok(status.services.into_iter().map(|s| s.digest).collect())
    };
    ensure!(
        digests(alive[0])? == digests(alive[1])?,
        "the hosts left have different tables"
    );

    // The connections kept talking across the kill and the last step.
    thread::sleep(Duration::from_secs(2));
    let report = pings.stop();
    ensure!(
        report.failed_connections() == 0,
        "connections broken: {report:?}"
    );
    ensure!(
        report.moved_connections() == 0,
        "connections moved: {report:?}"
    );
    Ok(())
}
