//! VIPs announced over BGP (issue 13 §3): three LB hosts, each a daemon on one etcd
//! (`--store`) that keeps its VIPs in kernel table 100 (`--announce-table`) and a bird2
//! that announces them to a router (bird2, one multipath route per VIP, L4 hashing): see
//! `balancer_tests::bgp_fleet`. ECMP spreads new connections over the three hosts, every
//! host picks the same backend for the same flow, `fleet leave` under load breaks nothing
//! and takes the host out of the route, `fleet join` brings it back, a killed host leaves
//! the route within the BGP hold time; a host whose data plane is not ready announces
//! nothing, a daemon restart withdraws nothing, `teardown` and a removed VIP withdraw.

use std::{
    thread,
    time::{Duration, Instant},
};

use anyhow::{ensure, Context, Result};
use balancer_tests::{
    balancer::binary,
    bgp_fleet::{BgpFleet, HOLD},
    netns,
    traffic::LongLived,
};
use balancer_user::api::FleetStatus;

/// How long a change of announcements may take to reach the router's route (a pass of
/// the daemon every 500 ms, bird's notification, one BGP update).
const ROUTE_LIMIT: Duration = Duration::from_secs(5);

/// What the kernel protocol of bird and the test's polling add to the BGP hold time before
/// a dead host's path leaves the router's route.
const HOLD_MARGIN: Duration = Duration::from_secs(2);

/// New connections opened to see how they spread.
const NEW_CONNECTIONS: usize = 60;

/// Fewest of [`NEW_CONNECTIONS`] a host of three must take to count as taking a share (a
/// third is 20; fewer than 6 is over 3.8 standard deviations below).
const SHARE: u64 = 6;

/// The new flows each host counted while `work` ran.
fn new_flows_during(fleet: &BgpFleet, work: impl FnOnce() -> Result<()>) -> Result<Vec<u64>> {
    let before: Vec<u64> = (0..fleet.host_count())
        .map(|i| fleet.new_flows(i).unwrap_or(0))
        .collect();
    work()?;
    (0..fleet.host_count())
        .map(|i| Ok(fleet.new_flows(i).unwrap_or(0).saturating_sub(before[i])))
        .collect()
}

/// Opens [`NEW_CONNECTIONS`] connections to `service`, one exchange each.
fn connect_many(fleet: &BgpFleet, service: std::net::SocketAddr) -> Result<()> {
    for index in 0..NEW_CONNECTIONS {
        fleet
            .client
            .ask_once(service, None)
            .with_context(|| format!("new connection {index}"))?;
    }
    Ok(())
}

/// `fleet status --json` through LB host `index`.
fn fleet_status(fleet: &BgpFleet, index: usize) -> Result<FleetStatus> {
    let text = fleet.host(index)?.ok(&["fleet", "status", "--json"])?;
    serde_json::from_str(&text).context("parse fleet status --json")
}

/// Polls `fleet status` until host `name`'s record says `left`, for at most 5 s.
fn wait_record(fleet: &BgpFleet, name: &str, left: bool) -> Result<()> {
    let start = Instant::now();
    loop {
        let status = fleet_status(fleet, 0)?;
        if status
            .hosts
            .iter()
            .any(|h| h.host == name && h.left == left)
        {
            return Ok(());
        }
        ensure!(
            start.elapsed() < Duration::from_secs(5),
            "{name}'s record does not say left={left}: {status:?}"
        );
        thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn ecmp_spreads_the_hosts_agree_on_backends_leave_and_join_break_nothing_a_dead_host_leaves_the_route(
) -> Result<()> {
    let mut fleet = BgpFleet::build("bgpa", 3, 4, 3)?;
    let web = fleet.service("web", 0, false)?;
    let web6 = fleet.service("web6", 0, true)?;
    let (vip4, vip6) = (web.ip(), web6.ip());
    fleet.wait_paths(vip4, &[0, 1, 2], ROUTE_LIMIT)?;
    fleet.wait_paths(vip6, &[0, 1, 2], ROUTE_LIMIT)?;
    for host in 0..3 {
        let announcement = fleet
            .host(host)?
            .status()?
            .announcement
            .context("announcement")?;
        assert_eq!(announcement.table, 100);
        assert!(!announcement.left);
        assert_eq!(announcement.vips, vec![vip4, vip6]);
        assert_eq!(
            fleet.announced(host)?.len(),
            2,
            "{:?}",
            fleet.announced(host)?
        );
    }

    // ECMP: new connections spread over the three hosts, over IPv4 and IPv6.
    for service in [web, web6] {
        let spread = new_flows_during(&fleet, || connect_many(&fleet, service))?;
        assert_eq!(
            spread.iter().sum::<u64>(),
            NEW_CONNECTIONS as u64,
            "{spread:?}"
        );
        assert!(spread.iter().all(|&n| n >= SHARE), "{service}: {spread:?}");
    }

    // One flow through each host in turn: every host picks the backend the first one did
    // (a different one would reset the connection).
    fleet.pin_route(Some(0))?;
    let mut flows = LongLived::open(&fleet.client, web, 20, &[])?;
    let original = flows.original_backends().to_vec();
    for host in [1, 2, 0] {
        fleet.pin_route(Some(host))?;
        let packets = |fleet: &BgpFleet| -> Result<u64> {
            Ok(fleet
                .host(host)?
                .status()?
                .services
                .iter()
                .flat_map(|s| &s.backends)
                .map(|b| b.packets)
                .sum())
        };
        let before = packets(&fleet)?;
        let answers = flows.ping_all()?;
        assert_eq!(answers, original, "through LB host {host}");
        ensure!(
            packets(&fleet)? >= before + 20,
            "LB host {host} did not carry the flows"
        );
    }
    fleet.pin_route(None)?;
    drop(flows);

    // `fleet leave` under load: 50 long-lived connections through every host.
    let mut load = None;
    let opened = new_flows_during(&fleet, || {
        load = Some(LongLived::open(&fleet.client, web, 50, &[])?);
        Ok(())
    })?;
    assert!(
        opened[1] >= 5,
        "LB host 1 carries too few of the connections: {opened:?}"
    );
    let load = load.context("connections")?.ping_in_background();
    thread::sleep(Duration::from_millis(500));
    let left = fleet
        .host(1)?
        .ok(&["fleet", "leave", "--quiet", "2s", "--wait-timeout", "30s"])?;
    assert!(left.contains("flows are served elsewhere"), "{left}");
    eprintln!("{left}");
    assert_eq!(fleet.paths(vip4)?, vec![0, 2]);
    assert_eq!(fleet.paths(vip6)?, vec![0, 2]);
    assert!(fleet.announced(1)?.is_empty());
    let status = fleet.host(1)?.status()?;
    let announcement = status.announcement.context("announcement")?;
    assert!(
        announcement.left && announcement.vips.is_empty(),
        "{announcement:?}"
    );
    let text = fleet.host(1)?.ok(&["status"])?;
    assert!(text.contains("left the fleet"), "{text}");
    wait_record(&fleet, "lb-1", true)?;
    // Leaving again is no error.
    fleet.host(1)?.ok(&["fleet", "leave", "--no-wait"])?;
    // New flows avoid the host that left.
    let spread = new_flows_during(&fleet, || connect_many(&fleet, web))?;
    assert_eq!(spread[1], 0, "{spread:?}");
    assert!(spread[0] >= SHARE && spread[2] >= SHARE, "{spread:?}");
    let report = load.stop();
    assert_eq!(report.failed_connections(), 0, "{report:?}");
    assert_eq!(report.moved_connections(), 0, "{report:?}");

    // Left survives a restart of the daemon: it announces nothing after it either.
    fleet.host_mut(1)?.restart()?;
    thread::sleep(Duration::from_millis(1500));
    assert_eq!(fleet.paths(vip4)?, vec![0, 2]);
    assert!(
        fleet
            .host(1)?
            .status()?
            .announcement
            .context("announcement")?
            .left
    );

    // `fleet join`: new flows spread over the three hosts again.
    fleet.host(1)?.ok(&["fleet", "join"])?;
    fleet.wait_paths(vip4, &[0, 1, 2], ROUTE_LIMIT)?;
    fleet.wait_paths(vip6, &[0, 1, 2], ROUTE_LIMIT)?;
    wait_record(&fleet, "lb-1", false)?;
    let spread = new_flows_during(&fleet, || connect_many(&fleet, web))?;
    assert!(spread.iter().all(|&n| n >= SHARE), "{spread:?}");

    // A leave whose quiet time cannot pass within its --wait-timeout: exit 7, one line, the
    // host out all the same; then in again.
    let busy = ["fleet", "leave", "--quiet", "10s", "--wait-timeout", "1s"];
    fleet.host(1)?.failed_with(&busy, 7)?;
    assert_eq!(fleet.paths(vip4)?, vec![0, 2]);
    fleet.host(1)?.ok(&["fleet", "join"])?;
    fleet.wait_paths(vip4, &[0, 1, 2], ROUTE_LIMIT)?;

    // A host killed outright: the router's route loses it within the BGP hold time.
    fleet.kill_host(2)?;
    let lost = fleet.wait_paths(vip4, &[0, 1], HOLD + HOLD_MARGIN)?;
    eprintln!("the router lost the dead host after {lost:?} (hold {HOLD:?})");
    fleet.wait_paths(vip6, &[0, 1], HOLD + HOLD_MARGIN)?;
    fleet.host(0)?.ok(&["status"])?;
    let spread = new_flows_during(&fleet, || connect_many(&fleet, web))?;
    assert!(spread[0] >= SHARE && spread[1] >= SHARE, "{spread:?}");
    Ok(())
}

#[test]
fn a_host_announces_once_its_data_plane_is_ready_keeps_it_across_a_restart_and_withdraws_at_teardown(
) -> Result<()> {
    // Host 2's bird runs and its session is up, but its daemon is not started.
    let mut fleet = BgpFleet::build("bgpb", 3, 2, 2)?;
    let web = fleet.service("web", 0, false)?;
    let vip = web.ip();
    fleet.wait_paths(vip, &[0, 1], ROUTE_LIMIT)?;
    assert!(fleet.announced(2)?.is_empty());
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(2) {
        assert_eq!(
            fleet.paths(vip)?,
            vec![0, 1],
            "a host without a data plane is announced"
        );
        thread::sleep(Duration::from_millis(100));
    }

    // Its daemon attaches and follows the store: then it announces.
    fleet.start_daemon(2)?;
    fleet.wait_paths(vip, &[0, 1, 2], ROUTE_LIMIT)?;

    // kill -9 of the daemon withdraws nothing (the pinned data plane forwards), nor does
    // its start again.
    fleet.host_mut(2)?.kill9()?;
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(1500) {
        assert_eq!(
            fleet.paths(vip)?,
            vec![0, 1, 2],
            "a stopped daemon withdrew"
        );
        thread::sleep(Duration::from_millis(100));
    }
    fleet.host_mut(2)?.restart()?;
    thread::sleep(Duration::from_millis(1000));
    assert_eq!(fleet.paths(vip)?, vec![0, 1, 2]);

    // A VIP added is announced by every host, a VIP removed withdrawn.
    let web6 = fleet.service("web6", 0, true)?;
    fleet.wait_paths(web6.ip(), &[0, 1, 2], ROUTE_LIMIT)?;
    fleet.host(1)?.ok(&["service", "remove", "web6"])?;
    fleet.wait_paths(web6.ip(), &[], ROUTE_LIMIT)?;
    assert_eq!(fleet.paths(vip)?, vec![0, 1, 2]);

    // teardown withdraws.
    fleet.host(2)?.ok(&["teardown"])?;
    fleet.wait_paths(vip, &[0, 1], ROUTE_LIMIT)?;
    assert!(fleet.announced(2)?.is_empty());

    // So does a teardown with no daemon, given the table: run on the host itself.
    fleet.host_mut(1)?.kill9()?;
    let host = fleet.host(1)?;
    let (bin, socket) = (binary()?, host.socket());
    let pins = host.pin_root().to_str().context("pin root")?;
    let said = netns::run(
        fleet.lb_ns(1),
        &[
            bin.to_str().context("binary")?,
            "--socket",
            socket.to_str().context("socket")?,
            "teardown",
            "--iface",
            "eth0",
            "--pin-dir",
            pins,
            "--announce-table",
            "100",
        ],
    )?;
    assert!(
        said.contains("1 VIP announcement(s) withdrawn from routing table 100"),
        "{said}"
    );
    fleet.wait_paths(vip, &[0], ROUTE_LIMIT)?;
    assert!(fleet.announced(1)?.is_empty());
    Ok(())
}
