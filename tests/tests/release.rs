//! Release operations under load: long-lived connections talking every 100 ms and a
//! steady stream of new connections while the operator changes the data plane.

use anyhow::{ensure, Context, Result};
use balancer_tests::{
    balancer::DaemonOptions,
    lab::{blue_green_group, Lab},
    split::StoredSplit,
    traffic::{BackgroundPings, LongLived, NewConnections, NEW_CONNECTION_INTERVAL},
};
use balancer_user::{api::Health, basis_points::BasisPoints, release::rollout::RolloutOutcome};

/// Backends b0, b1 are blue; b2, b3 are green.
const GROUPS: [&str; 4] = ["blue", "blue", "green", "green"];

#[test]
fn blue_green_flip_and_rollback_under_load() -> Result<()> {
    let lab = Lab::new("blr1")?;
    let service = lab.service("web", false, &GROUPS, &[100; 4])?;
    let long_lived = LongLived::open(&lab.client, service, 50, &[])?;
    ensure!(
        long_lived
            .original_backends()
            .iter()
            .all(|b| b == "b0" || b == "b1"),
        "blue was not live before the flip"
    );
    let pings = long_lived.ping_in_background();
    let stream = NewConnections::start(&lab.client, service);

    for (target, members) in [("green", ["b2", "b3"]), ("blue", ["b0", "b1"])] {
        lab.balancer.ok(&["flip", "web", "--to", target])?;
        // Every connection made after the command returned lands on the target group.
        let dist = lab.client.distribution(service, 100, &[])?;
        ensure!(
            dist.counts.keys().all(|b| members.contains(&b.as_str())),
            "flip to {target}: new connections reached {:?}",
            dist.counts
        );
        std::thread::sleep(std::time::Duration::from_millis(300));
    }

    // Flipping to the live group is refused with one line, and changes nothing.
    let before = lab.balancer.status()?.services[0].split.clone();
    lab.balancer.refused(&["flip", "web", "--to", "blue"])?;
    lab.balancer.refused(&["flip", "web", "--to", "purple"])?;
    ensure!(
        lab.balancer.status()?.services[0].split == before,
        "refused flip changed the split"
    );

    let streamed = stream.stop();
    let report = pings.stop();
    streamed.ensure_served()?;
    ensure!(streamed.answered > 20, "new connections: {streamed:?}");
    ensure!(
        report.failed_connections() == 0 && report.moved_connections() == 0,
        "established connections broke or moved: {report:?}"
    );
    Ok(())
}

/// A lab whose service `web` has the four backends in group `main`, with 40 long-lived
/// connections pinging in the background, some of them on b0 (the backend to drain).
struct Draining {
    lab: Lab,
    service: std::net::SocketAddr,
    pings: BackgroundPings,
    /// Connections on b0.
    on_b0: usize,
    /// b0's address.
    b0: String,
}

impl Draining {
    fn start(prefix: &str) -> Result<Self> {
        let lab = Lab::new(prefix)?;
        let service = lab.service("web", false, &["main"; 4], &[100; 4])?;
        let long_lived = LongLived::open(&lab.client, service, 40, &[])?;
        let on_b0 = long_lived.count_on("b0");
        ensure!(on_b0 > 0, "no connection landed on b0");
        let b0 = lab.topology.backend_v4(0).to_string();
        Ok(Self {
            pings: long_lived.ping_in_background(),
            lab,
            service,
            on_b0,
            b0,
        })
    }
}

#[test]
fn canary_with_client_affinity_never_moves_a_client_back_and_pins_preview_green() -> Result<()> {
    const CLIENTS: usize = 200;
    let lab = Lab::with_extra_clients("blr2", CLIENTS as u8)?;
    let vip = lab.service_with("web", false, &GROUPS, &["--affinity", "client"])?;
    // Testers (the first 15 extra addresses, 198.18.2.1-15) preview green at 0%.
    lab.balancer
        .ok(&["pin", "add", "web", "198.18.2.0/28", "--group", "green"])?;
    let list = lab.balancer.ok(&["pin", "list", "web"])?;
    ensure!(
        list.contains("198.18.2.0/28") && list.contains("green"),
        "pin list: {list}"
    );
    let testers = 15;
    let clients: Vec<_> = (0..CLIENTS)
        .map(|i| lab.topology.extra_client_v4(i))
        .collect();

    // Load: established connections and a stream of new ones from the client's own
    // address, while the canary runs.
    let pings = LongLived::open(&lab.client, vip, 50, &[])?.ping_in_background();
    let stream = NewConnections::start(&lab.client, vip);

    // The canary steps on its timer; after each step it is paused while every client asks
    // once, then resumed.
    let mut on_green = [false; CLIENTS];
    lab.start_canary("5,25,50,100", "1s", &[])?;
    for (index, step) in [5u32, 25, 50, 100].into_iter().enumerate() {
        wait_for_canary(&lab, "next step", |c| c.step == index)?;
        if step < 100 {
            lab.balancer.ok(&["canary", "pause", "web"])?;
        }
        let mut green = 0;
        let split = StoredSplit::load(&lab.balancer.state_file(), "web")?;
        for (i, client) in clients.iter().enumerate() {
            let backend = lab.client.ask_once(vip, Some(*client))?;
            let now_green = blue_green_group(&backend) == "green";
            if i < testers {
                ensure!(
                    now_green,
                    "pinned tester {client} got {backend} at green={step}%"
                );
            } else {
                ensure!(
                    now_green || !on_green[i],
                    "client {client} moved from green back to blue at green={step}%"
                );
                // Client affinity hashes the client address only: the group is exactly
                // the one the split gives the client's cell, computed from the hash.
                let expected = split.group_of(*client)?;
                ensure!(
                    blue_green_group(&backend) == expected,
                    "client {client} got {backend} at green={step}%, its cell is {expected}'s"
                );
                green += usize::from(now_green);
            }
            on_green[i] = now_green;
        }
        let share = green as f64 * 100.0 / (CLIENTS - testers) as f64;
        ensure!(
            (share - step as f64).abs() <= 10.0,
            "green={step}%: {share:.1}% of unpinned clients on green"
        );
        if step < 100 {
            lab.balancer.ok(&["canary", "resume", "web"])?;
        }
    }
    let streamed = stream.stop();
    let report = pings.stop();
    streamed.ensure_served()?;
    ensure!(
        report.failed_connections() == 0 && report.moved_connections() == 0,
        "established connections broke or moved: {report:?}"
    );

    // Bad pins are refused with one line and change nothing.
    let before = lab.balancer.status()?.services[0].pins.clone();
    for bad in [
        vec!["pin", "add", "web", "198.18.2.1/24", "--group", "green"],
        vec!["pin", "add", "web", "198.18.2.0/33", "--group", "green"],
        vec!["pin", "add", "web", "2001:db8:2::/64", "--group", "green"],
        vec!["pin", "add", "web", "198.18.3.0/24", "--group", "purple"],
        vec!["pin", "add", "web", "198.18.2.0/28", "--group", "blue"],
        vec!["pin", "remove", "web", "198.18.9.0/24"],
    ] {
        lab.balancer.refused(&bad)?;
    }
    ensure!(
        lab.balancer.status()?.services[0].pins == before,
        "refused pin changed state"
    );
    lab.balancer
        .ok(&["pin", "remove", "web", "198.18.2.0/28"])?;
    ensure!(
        lab.balancer.status()?.services[0].pins.is_empty(),
        "pin not removed"
    );
    Ok(())
}

/// Polls `status` until `check` holds for service `web`'s canary (bounded).
fn wait_for_canary(
    lab: &Lab,
    what: &str,
    check: impl Fn(&balancer_user::release::canary::Canary) -> bool,
) -> Result<balancer_user::release::canary::Canary> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        let canary = lab.balancer.status()?.services[0].canary.clone();
        if let Some(canary) = canary.as_ref().filter(|canary| check(canary)) {
            return Ok(canary.clone());
        }
        ensure!(
            std::time::Instant::now() < deadline,
            "{what}: canary is {canary:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

#[test]
fn canary_survives_daemon_kill_and_obeys_the_operator() -> Result<()> {
    let mut lab = Lab::new("blr3")?;
    let service = lab.service("web", false, &GROUPS, &[100; 4])?;
    let pings = LongLived::open(&lab.client, service, 50, &[])?.ping_in_background();
    let stream = NewConnections::start(&lab.client, service);

    let canary = ["canary", "start", "web", "--from", "blue", "--to", "green"];
    lab.balancer
        .ok(&[&canary[..], &["--steps", "5,25,50,100", "--interval", "2s"]].concat())?;
    let before = wait_for_canary(&lab, "second step", |c| c.step == 1)?;
    let killed = std::time::Instant::now();
    lab.balancer.kill9()?;
    std::thread::sleep(std::time::Duration::from_millis(300));
    lab.balancer.restart()?;
    let resumed = lab.balancer.status()?.services[0].canary.clone().unwrap();
    println!("restart answered {:?} after the kill", killed.elapsed());
    // The restarted daemon carries on from the stored progress: the steps taken before
    // the kill are all there, in order, and it is at that step or (if the restart took
    // longer than the rest of the interval) the next, never back at the start.
    ensure!(
        resumed.decisions.starts_with(&before.decisions) && (1..=2).contains(&resumed.step),
        "restart did not resume where it was: before {before:?}, after {resumed:?}"
    );
    let text = lab.balancer.ok(&["status", "web"])?;
    let shown = format!("canary web: blue -> green, step {}/4", resumed.step + 1);
    ensure!(text.contains(&shown), "status text: {text}");
    let done = wait_for_canary(&lab, "completion", |c| c.outcome.is_some())?;
    ensure!(
        done.outcome == Some(balancer_user::release::canary::Outcome::Completed),
        "{done:?}"
    );
    // Each step exactly once, one interval (2 s) or more after the previous one.
    let steps: Vec<&balancer_user::release::Decision> = done
        .decisions
        .iter()
        .filter(|d| d.what.contains("/4: "))
        .collect();
    ensure!(steps.len() == 4, "steps taken: {:?}", done.decisions);
    ensure!(
        steps.windows(2).all(|w| w[1].at_ms >= w[0].at_ms + 2000),
        "steps closer than the interval: {:?}",
        done.decisions
    );
    let dist = lab.client.distribution(service, 50, &[])?;
    ensure!(
        dist.counts.keys().all(|b| b == "b2" || b == "b3"),
        "after the canary new connections reached {:?}",
        dist.counts
    );

    // Operator control: pause, resume, promote; then abort of the way back.
    let back = ["canary", "start", "web", "--from", "green", "--to", "blue"];
    lab.balancer
        .ok(&[&back[..], &["--steps", "10,50", "--interval", "60s"]].concat())?;
    lab.balancer.ok(&["canary", "pause", "web"])?;
    ensure!(
        lab.balancer.ok(&["status", "web"])?.contains("paused"),
        "not paused"
    );
    lab.balancer.ok(&["canary", "resume", "web"])?;
    lab.balancer.ok(&["canary", "abort", "web"])?;
    let dist = lab.client.distribution(service, 50, &[])?;
    ensure!(
        dist.counts.keys().all(|b| b == "b2" || b == "b3"),
        "abort did not return every new flow to green: {:?}",
        dist.counts
    );
    lab.balancer
        .ok(&[&back[..], &["--preset", "canary10-5m"]].concat())?;
    lab.balancer.ok(&["canary", "promote", "web"])?;
    let dist = lab.client.distribution(service, 50, &[])?;
    ensure!(
        dist.counts.keys().all(|b| b == "b0" || b == "b1"),
        "promote did not send every new flow to blue: {:?}",
        dist.counts
    );

    // Malformed commands: one line, nothing changed.
    let before = lab.balancer.status()?.services[0].clone();
    for bad in [
        vec!["--steps", "50,25", "--interval", "1s"],
        vec!["--steps", "5,101", "--interval", "1s"],
        vec!["--steps", "5,10"],
        vec!["--steps", "5", "--preset", "all-at-once"],
        vec!["--preset", "sometime"],
    ] {
        lab.balancer.refused(&[&canary[..], &bad[..]].concat())?;
    }
    for bad in [
        vec![
            "canary", "start", "web", "--from", "blue", "--to", "purple", "--steps", "5",
        ],
        vec!["canary", "pause", "web"],
        vec!["canary", "abort", "nosuch"],
    ] {
        lab.balancer.refused(&bad)?;
    }
    let after = lab.balancer.status()?.services[0].clone();
    ensure!(
        after.split == before.split && after.canary == before.canary,
        "state changed"
    );

    let streamed = stream.stop();
    let report = pings.stop();
    streamed.ensure_served()?;
    ensure!(
        report.failed_connections() == 0 && report.moved_connections() == 0,
        "established connections broke or moved: {report:?}"
    );
    Ok(())
}

fn health_of(service: &balancer_user::api::ServiceStatus, backend: usize) -> Option<Health> {
    service.backends[backend].health
}

#[test]
fn failing_backend_is_taken_out_and_comes_back() -> Result<()> {
    let mut lab = Lab::new("blr4")?;
    let service = lab.service("web", false, &["main"; 4], &[100; 4])?;
    lab.enable_checks("web", "tcp", 2, 2)?;
    let limit = std::time::Duration::from_secs(3);
    lab.wait_until(limit, "all up", |s| {
        (0..4).all(|i| health_of(s, i) == Some(Health::Up))
    })?;

    lab.stop_server(1);
    // fall × interval = 400 ms, plus one check in flight and the polling.
    let took = lab.wait_until(limit, "b1 down", |s| health_of(s, 1) == Some(Health::Down))?;
    // fall × interval is 400 ms; on a loaded machine only the order is certain, so the
    // figure is printed and bounded by `limit` alone.
    println!("b1 went down {took:?} after its server stopped");
    let status = lab.balancer.status()?;
    ensure!(
        status.services[0].backends[1].effective_share == 0.0,
        "{:?}",
        status.services[0]
    );
    let dist = lab.client.distribution(service, 200, &[])?;
    ensure!(!dist.counts.contains_key("b1"), "{dist:?}");
    let text = lab.balancer.ok(&["status", "web"])?;
    ensure!(text.contains("down since"), "status text: {text}");

    lab.start_server(1)?;
    lab.wait_until(limit, "b1 up again", |s| {
        health_of(s, 1) == Some(Health::Up)
    })?;
    let dist = lab.client.distribution(service, 400, &[])?;
    ensure!(dist.counts.contains_key("b1"), "{dist:?}");

    // Bad health settings: one line, nothing changed.
    for bad in [
        vec!["service", "set", "web", "--health", "udp"],
        vec!["service", "set", "web", "--health", "http:healthz"],
        vec![
            "service",
            "set",
            "web",
            "--health",
            "tcp",
            "--health-interval",
            "10ms",
        ],
        vec!["service", "set", "web", "--health", "tcp", "--rise", "0"],
        vec!["service", "set", "web"],
    ] {
        lab.balancer.refused(&bad)?;
    }
    Ok(())
}

#[test]
fn canary_to_a_failing_group_rolls_back_by_itself() -> Result<()> {
    let mut lab = Lab::new("blr5")?;
    let service = lab.service("web", false, &GROUPS, &[100; 4])?;
    let (interval_ms, fall) = (200u64, 2u64);
    lab.enable_checks("web", "tcp", 1, 2)?;
    let limit = std::time::Duration::from_secs(3);
    lab.wait_until(limit, "all up", |s| {
        (0..4).all(|i| health_of(s, i) == Some(Health::Up))
    })?;
    let pings = LongLived::open(&lab.client, service, 50, &[])?.ping_in_background();
    lab.start_canary("25,50,100", "30s", &["--auto-rollback"])?;
    // New connections keep coming; those that reach green between its failure and the
    // rollback fail, which is what the rollback is for: at most one per stream interval
    // of that window.
    let stream = NewConnections::start(&lab.client, service);
    // Green starts refusing connections.
    let green_failed = std::time::Instant::now();
    lab.stop_server(2);
    lab.stop_server(3);
    let took = lab.wait_until(std::time::Duration::from_secs(5), "rollback", |s| {
        s.canary
            .as_ref()
            .is_some_and(|c| c.outcome == Some(balancer_user::release::canary::Outcome::RolledBack))
    })?;
    // fall × interval plus a generous margin for a loaded machine; the figure is printed.
    let bound = std::time::Duration::from_millis(fall * interval_ms + 3000);
    println!(
        "rolled back {took:?} after green failed (fall × interval = {} ms)",
        fall * interval_ms
    );
    ensure!(took <= bound, "rolled back after {took:?}, bound {bound:?}");
    let failing_window = green_failed.elapsed();
    let status = lab.balancer.status()?;
    let canary = status.services[0].canary.clone().unwrap();
    let reason = &canary.decisions.last().unwrap().what;
    ensure!(
        reason.contains("health checks") && reason.contains("green"),
        "{reason}"
    );
    ensure!(
        status.services[0].split[0].percent == BasisPoints::ALL,
        "{:?}",
        status.services[0].split
    );
    let dist = lab.client.distribution(service, 100, &[])?;
    ensure!(
        dist.counts.keys().all(|b| b == "b0" || b == "b1"),
        "new connections after rollback: {dist:?}"
    );
    let streamed = stream.stop();
    let max_failed = failing_window.as_millis() / NEW_CONNECTION_INTERVAL.as_millis() + 1;
    streamed.ensure_served_allowing(usize::try_from(max_failed)?)?;
    // The blue connections never noticed.
    let report = pings.stop();
    let broken: Vec<_> = report
        .connections
        .iter()
        .filter(|c| {
            c.failure.is_some() && (c.original_backend == "b0" || c.original_backend == "b1")
        })
        .collect();
    ensure!(broken.is_empty(), "blue connections broke: {broken:?}");
    Ok(())
}

#[test]
fn drain_keeps_established_flows_and_completes_when_they_end_and_undrain_restores_it() -> Result<()>
{
    let Draining {
        mut lab,
        service,
        pings,
        on_b0,
        b0,
    } = Draining::start("blr6")?;
    lab.balancer.ok(&["backend", "drain", "web", &b0])?;
    let dist = lab.client.distribution(service, 200, &[])?;
    ensure!(!dist.counts.contains_key("b0"), "{dist:?}");
    let status = lab.balancer.status()?;
    let b0_status = &status.services[0].backends[0];
    // Its active flows are exactly the connections on it: it got no new one.
    ensure!(
        b0_status.drain.is_some_and(|d| d.ended.is_none())
            && b0_status.active_flows == on_b0 as u64,
        "drain with {on_b0} live connections: {b0_status:?}"
    );
    // kill -9 in the middle of the drain: the restarted daemon keeps draining.
    let drain = b0_status.drain;
    lab.balancer.kill9()?;
    lab.balancer.restart()?;
    let kept = lab.balancer.status()?.services[0].backends[0].drain;
    ensure!(
        kept == drain,
        "the restart changed the drain: {drain:?} -> {kept:?}"
    );
    // The clients finish: the drain completes once no flow was seen for the idle time.
    let report = pings.stop();
    ensure!(
        report.failed_connections() == 0 && report.moved_connections() == 0,
        "{report:?}"
    );
    lab.wait_until(std::time::Duration::from_secs(8), "drain end", |s| {
        s.backends[0]
            .drain
            .is_some_and(|d| d.ended.is_some_and(|e| e.flows_left == 0))
    })?;
    // Undrained: the weight of before the drain (another than the default, 100) and new flows.
    lab.balancer
        .ok(&["backend", "set-weight", "web", &b0, "300"])?;
    lab.balancer.ok(&["backend", "drain", "web", &b0])?;
    lab.balancer.ok(&["backend", "undrain", "web", &b0])?;
    let b0_status = lab.balancer.status()?.services[0].backends[0].clone();
    ensure!(
        b0_status.weight == 300 && b0_status.drain.is_none(),
        "undrained: {b0_status:?}"
    );
    let dist = lab.client.distribution(service, 200, &[])?;
    ensure!(
        dist.counts.get("b0").copied().unwrap_or(0) > 50,
        "b0 at weight 300 of 600 gets new flows again: {dist:?}"
    );
    let out = lab.balancer.cli(&["backend", "undrain", "web", &b0])?;
    ensure!(
        out.code == Some(1)
            && out.stderr.trim()
                == format!("error: backend {b0} of service \"web\" is not drained"),
        "{out:?}"
    );
    Ok(())
}

#[test]
fn a_drain_ends_seconds_after_its_connections_close_whatever_the_idle_time() -> Result<()> {
    // --flow-idle 600: idleness alone would keep each flow active for ten minutes, so a
    // drain that ends within seconds ends because the clients closed their connections.
    let lab = Lab::with_options(
        "blt1",
        DaemonOptions {
            flow_idle_s: 600,
            ..DaemonOptions::default()
        },
    )?;
    let service = lab.service("web", false, &["main"; 4], &[100; 4])?;
    let short = lab.client.distribution(service, 400, &[])?;
    ensure!(short.counts.get("b0").is_some_and(|n| *n > 0), "{short:?}");
    let long_lived = LongLived::open(&lab.client, service, 16, &[])?;
    let on = |name: &str| {
        long_lived
            .original_backends()
            .iter()
            .filter(|b| *b == name)
            .count() as u64
    };
    ensure!(on("b0") > 0, "no connection on b0");
    // Once the closed connections' linger is over, status counts the open ones only.
    let open: std::collections::BTreeMap<std::net::IpAddr, u64> = (0..4)
        .map(|i| (lab.topology.backend_v4(i), on(lab.topology.backend_name(i))))
        .collect();
    lab.wait_until(
        std::time::Duration::from_secs(10),
        "closed connections no longer active",
        |s| {
            s.backends
                .iter()
                .all(|b| open.get(&b.addr) == Some(&b.active_flows))
        },
    )?;
    let b0 = lab.topology.backend_v4(0).to_string();
    lab.balancer.ok(&["backend", "drain", "web", &b0])?;
    // Its open connections keep the drain running, however quiet they are.
    std::thread::sleep(std::time::Duration::from_secs(3));
    let b0_status = lab.balancer.status()?.services[0].backends[0].clone();
    ensure!(
        b0_status.drain.is_some_and(|d| d.ended.is_none()) && b0_status.active_flows == on("b0"),
        "drain with {} open connections: {b0_status:?}",
        on("b0")
    );
    // The clients close them: the drain ends within seconds.
    drop(long_lived);
    let took = lab.wait_until(std::time::Duration::from_secs(10), "drain end", |s| {
        s.backends[0]
            .drain
            .is_some_and(|d| d.ended.is_some_and(|e| e.flows_left == 0))
    })?;
    println!("the drain ended {took:?} after the connections closed");
    Ok(())
}

/// Waits (at most `seconds`) until the rollout of `web` ends, requires it to end with
/// `expected`, and returns the status then and the rollout.
fn finished_rollout(
    lab: &Lab,
    seconds: u64,
    expected: RolloutOutcome,
) -> Result<(
    balancer_user::api::Status,
    balancer_user::release::rollout::Rollout,
)> {
    lab.wait_until(
        std::time::Duration::from_secs(seconds),
        "rollout end",
        |s| s.rollout.as_ref().is_some_and(|r| r.outcome.is_some()),
    )?;
    let status = lab.balancer.status()?;
    let rollout = status.services[0].rollout.clone().expect("a rollout ran");
    ensure!(rollout.outcome == Some(expected), "{rollout:?}");
    Ok((status, rollout))
}

#[test]
fn rolling_replacement_of_a_whole_group_under_load() -> Result<()> {
    let mut lab = Lab::with_backends("blr7", 8)?;
    let service = lab.service("web", false, &["main"; 4], &[100; 4])?;
    lab.enable_checks("web", "tcp", 1, 2)?;
    let stream = NewConnections::start(&lab.client, service);
    let pings = LongLived::open(&lab.client, service, 50, &[])?.ping_in_background();
    let addrs: Vec<String> = (0..8)
        .map(|i| lab.topology.backend_v4(i).to_string())
        .collect();
    let addr = |i: usize| addrs[i].clone();
    let pairs: Vec<(usize, usize)> = (0..4).map(|i| (i, i + 4)).collect();
    lab.start_rollout(&pairs, false, &["--slow-start", "500ms"])?;
    // Established connections keep talking while the first OLD drains, then finish.
    lab.wait_until(std::time::Duration::from_secs(10), "first drain", |s| {
        s.rollout
            .as_ref()
            .is_some_and(|r| r.phase == balancer_user::release::rollout::RolloutPhase::Drain)
    })?;
    // kill -9 in the middle of the step: the restarted daemon carries on from the stored
    // phase, and no established connection notices.
    lab.balancer.kill9()?;
    lab.balancer.restart()?;
    let resumed = lab.balancer.status()?.services[0].rollout.clone().unwrap();
    ensure!(
        resumed.current == 0
            && resumed.phase == balancer_user::release::rollout::RolloutPhase::Drain
            && resumed.outcome.is_none(),
        "the restart did not resume the first drain: {resumed:?}"
    );
    std::thread::sleep(std::time::Duration::from_millis(500));
    let report = pings.stop();
    ensure!(
        report.failed_connections() == 0 && report.moved_connections() == 0,
        "{report:?}"
    );
    let (status, rollout) = finished_rollout(&lab, 40, RolloutOutcome::Completed)?;
    let now: Vec<String> = status.services[0]
        .backends
        .iter()
        .map(|b| b.addr.to_string())
        .collect();
    ensure!(
        now == (4..8).map(addr).collect::<Vec<_>>(),
        "group after rollout: {now:?}"
    );
    let streamed = stream.stop();
    streamed.ensure_served().with_context(|| {
        format!(
            "counters {:?}, rollout {:?}",
            status.counters, rollout.decisions
        )
    })?;
    ensure!(streamed.answered > 50, "new connections: {streamed:?}");
    let text = lab.balancer.ok(&["rollout", "status", "web"])?;
    ensure!(text.contains("completed"), "rollout status: {text}");

    // A NEW that never becomes healthy fails the rollout and leaves OLD serving.
    lab.stop_server(0);
    lab.start_rollout(&[(4, 0)], false, &["--ready-timeout", "1s"])?;
    let (status, _) = finished_rollout(&lab, 5, RolloutOutcome::Failed)?;
    ensure!(
        status.services[0].backends.len() == 4,
        "{:?}",
        status.services[0].backends
    );
    let dist = lab.client.distribution(service, 100, &[])?;
    ensure!(dist.counts.contains_key("b4"), "{dist:?}");

    // Malformed rollouts: one line each.
    for bad in [
        vec![
            "rollout",
            "web",
            "--group",
            "main",
            "--replace",
            "198.18.0.250=198.18.0.251",
        ],
        vec![
            "rollout",
            "web",
            "--group",
            "nosuch",
            "--replace",
            "198.18.0.105=198.18.0.101",
        ],
        vec![
            "rollout",
            "web",
            "--group",
            "main",
            "--replace",
            "198.18.0.105",
        ],
        vec!["rollout", "abort", "web"],
    ] {
        lab.balancer.refused(&bad)?;
    }
    Ok(())
}

#[test]
fn flip_drain_timeout_without_cut_keeps_old_flows_on_their_backends() -> Result<()> {
    let lab = Lab::new("blr12")?;
    let service = lab.service("web", false, &GROUPS, &[100; 4])?;
    let long_lived = LongLived::open(&lab.client, service, 20, &[])?;
    let pings = long_lived.ping_in_background();
    lab.balancer
        .ok(&["flip", "web", "--to", "green", "--drain-timeout", "1s"])?;
    let drain = lab.balancer.status()?.services[0].flip_drain.clone();
    ensure!(drain.as_ref().is_some_and(|d| !d.cut), "{drain:?}");
    lab.wait_until(std::time::Duration::from_secs(5), "flip drain end", |s| {
        s.flip_drain.is_none()
    })?;
    // Past the drain timeout the old group's connections still talk to their backends.
    std::thread::sleep(std::time::Duration::from_millis(800));
    let report = pings.stop();
    ensure!(
        report.failed_connections() == 0 && report.moved_connections() == 0,
        "old flows broke or moved after an uncut flip drain: {report:?}"
    );
    let dist = lab.client.distribution(service, 50, &[])?;
    ensure!(
        dist.counts.keys().all(|b| b == "b2" || b == "b3"),
        "{dist:?}"
    );
    Ok(())
}

#[test]
fn flip_drain_timeout_with_cut_stops_keeping_old_flows() -> Result<()> {
    let mut lab = Lab::new("blr8")?;
    let service = lab.service("web", false, &GROUPS, &[100; 4])?;
    let mut long_lived = LongLived::open(&lab.client, service, 10, &[])?;
    lab.balancer.ok(&[
        "flip",
        "web",
        "--to",
        "green",
        "--drain-timeout",
        "2500ms",
        "--cut",
    ])?;
    let pending = lab.balancer.status()?.services[0].flip_drain.clone();
    ensure!(pending.is_some(), "no pending flip drain");
    // kill -9 while the drain is pending: the restarted daemon keeps the same deadline.
    lab.balancer.kill9()?;
    lab.balancer.restart()?;
    let kept = lab.balancer.status()?.services[0].flip_drain.clone();
    ensure!(
        kept == pending,
        "the restart changed the pending drain: {pending:?} -> {kept:?}"
    );
    // Before the timeout, established blue connections keep talking to blue.
    let answers = long_lived.ping_all()?;
    ensure!(
        answers
            .iter()
            .zip(long_lived.original_backends())
            .all(|(a, o)| a == o),
        "{answers:?}"
    );
    lab.wait_until(std::time::Duration::from_secs(5), "flip drain end", |s| {
        s.flip_drain.is_none()
    })?;
    // After it, their packets are balanced onto green, which knows nothing of them: the
    // documented outcome is a reset, not a silent move.
    ensure!(
        long_lived.ping_all().is_err(),
        "old flows were still kept after the drain timeout"
    );
    let dist = lab.client.distribution(service, 50, &[])?;
    ensure!(
        dist.counts.keys().all(|b| b == "b2" || b == "b3"),
        "{dist:?}"
    );
    Ok(())
}

#[test]
fn ipv6_canary_with_client_pins_then_flip_and_drain() -> Result<()> {
    const CLIENTS: usize = 60;
    // Testers are the first 15 extra addresses, 2001:db8:2::1 to ::f.
    const TESTERS: usize = 15;
    let lab = Lab::with_extra_clients("blr9", CLIENTS as u8)?;
    let vip = lab.service_with("web", true, &GROUPS, &["--affinity", "client"])?;
    let addr = |i: usize| lab.topology.backend_v6(i).to_string();
    lab.balancer
        .ok(&["pin", "add", "web", "2001:db8:2::/124", "--group", "green"])?;
    let clients: Vec<_> = (0..CLIENTS)
        .map(|i| lab.topology.extra_client_v6(i))
        .collect();
    let pings = LongLived::open(&lab.client, vip, 30, &[])?.ping_in_background();
    // Every client reaches exactly the group its pin or its hashed cell gives.
    let check = |what: &str| -> Result<()> {
        let split = StoredSplit::load(&lab.balancer.state_file(), "web")?;
        for (i, client) in clients.iter().enumerate() {
            let backend = lab.client.ask_once(vip, Some(*client))?;
            let expected = if i < TESTERS {
                "green"
            } else {
                split.group_of(*client)?
            };
            ensure!(
                blue_green_group(&backend) == expected,
                "{what}: {client} got {backend}, expected {expected}"
            );
        }
        Ok(())
    };
    check("before the canary")?;
    lab.start_canary("30,100", "1s", &[])?;
    lab.balancer.ok(&["canary", "pause", "web"])?;
    check("canary at 30%")?;
    lab.balancer.ok(&["canary", "resume", "web"])?;
    wait_for_canary(&lab, "completion", |c| c.outcome.is_some())?;
    check("canary done")?;
    // The instant rollback: every unpinned client back on blue, testers stay on green.
    lab.balancer.ok(&["flip", "web", "--to", "blue"])?;
    check("after the flip")?;
    // Draining b0: unpinned clients' new flows all reach b1.
    lab.balancer.ok(&["backend", "drain", "web", &addr(0)])?;
    for client in &clients[TESTERS..] {
        let backend = lab.client.ask_once(vip, Some(*client))?;
        ensure!(backend == "b1", "{client} got {backend} with b0 draining");
    }
    let report = pings.stop();
    ensure!(
        report.failed_connections() == 0 && report.moved_connections() == 0,
        "established IPv6 connections broke or moved: {report:?}"
    );
    Ok(())
}

#[test]
fn ipv6_rolling_replacement_keeps_established_connections() -> Result<()> {
    let lab = Lab::with_backends("blr10", 4)?;
    let vip = lab.service("web", true, &["main"; 2], &[100; 2])?;
    lab.enable_checks("web", "tcp", 1, 2)?;
    let addr = |i: usize| lab.topology.backend_v6(i).to_string();
    let long_lived = LongLived::open(&lab.client, vip, 20, &[])?;
    ensure!(
        long_lived
            .original_backends()
            .iter()
            .all(|b| b == "b0" || b == "b1"),
        "{:?}",
        long_lived.original_backends()
    );
    let pings = long_lived.ping_in_background();
    lab.start_rollout(&[(0, 2), (1, 3)], true, &["--slow-start", "300ms"])?;
    // The first OLD drains while its established connections keep talking.
    lab.wait_until(std::time::Duration::from_secs(10), "first drain", |s| {
        s.rollout
            .as_ref()
            .is_some_and(|r| r.phase == balancer_user::release::rollout::RolloutPhase::Drain)
    })?;
    let dist = lab.client.distribution(vip, 100, &[])?;
    ensure!(
        !dist.counts.contains_key("b0"),
        "b0 got new flows while draining: {dist:?}"
    );
    std::thread::sleep(std::time::Duration::from_millis(500));
    let report = pings.stop();
    ensure!(
        report.failed_connections() == 0 && report.moved_connections() == 0,
        "established IPv6 connections broke or moved: {report:?}"
    );
    let (status, _) = finished_rollout(&lab, 30, RolloutOutcome::Completed)?;
    let now: Vec<String> = status.services[0]
        .backends
        .iter()
        .map(|b| b.addr.to_string())
        .collect();
    ensure!(
        now == [addr(2), addr(3)],
        "group after the rollout: {now:?}"
    );
    let dist = lab.client.distribution(vip, 100, &[])?;
    ensure!(
        dist.counts.keys().all(|b| b == "b2" || b == "b3") && dist.counts.len() == 2,
        "{dist:?}"
    );
    Ok(())
}

#[test]
fn drain_timeout_ends_the_drain_and_its_connections_keep_their_backend() -> Result<()> {
    let Draining {
        lab,
        service,
        pings,
        on_b0,
        b0,
    } = Draining::start("blr11")?;
    lab.balancer
        .ok(&["backend", "drain", "web", &b0, "--timeout", "2s"])?;
    let drain = lab.balancer.status()?.services[0].backends[0]
        .drain
        .context("no drain")?;
    ensure!(
        drain.deadline_ms == Some(drain.since_ms + 2000) && drain.ended.is_none(),
        "{drain:?}"
    );
    // The connections talk every 100 ms, so the timeout, not their end, ends the drain.
    lab.wait_until(std::time::Duration::from_secs(8), "drain end", |s| {
        s.backends[0].drain.is_some_and(|d| d.ended.is_some())
    })?;
    let drain = lab.balancer.status()?.services[0].backends[0]
        .drain
        .context("no drain")?;
    let ended = drain.ended.context("not ended")?;
    ensure!(
        ended.flows_left == on_b0 as u64 && Some(ended.at_ms) >= drain.deadline_ms,
        "drain with {on_b0} live connections: {drain:?}"
    );
    // The backend stays (at weight 0), so its connections keep talking to it after the
    // drain ended; it gets no new flow.
    std::thread::sleep(std::time::Duration::from_millis(500));
    let report = pings.stop();
    ensure!(
        report.failed_connections() == 0 && report.moved_connections() == 0,
        "{report:?}"
    );
    let dist = lab.client.distribution(service, 200, &[])?;
    ensure!(!dist.counts.contains_key("b0"), "{dist:?}");
    Ok(())
}

#[test]
fn a_rolling_replacement_with_a_drain_timeout_breaks_no_connection_and_retires_the_old(
) -> Result<()> {
    let mut lab = Lab::with_backends("blr13", 6)?;
    let service = lab.service("web", false, &["main"; 3], &[100; 3])?;
    lab.enable_checks("web", "tcp", 1, 2)?;
    lab.wait_until(std::time::Duration::from_secs(5), "all up", |s| {
        s.backends.iter().all(|b| b.health == Some(Health::Up))
    })?;
    let long_lived = LongLived::open(&lab.client, service, 30, &[])?;
    let on = |name: &str| long_lived.count_on(name) as u64;
    let counts = [on("b0"), on("b1"), on("b2")];
    ensure!(
        counts.iter().all(|&c| c > 0),
        "connections per OLD: {counts:?}"
    );
    let pings = long_lived.ping_in_background();
    let addrs: Vec<String> = (0..6)
        .map(|i| lab.topology.backend_v4(i).to_string())
        .collect();
    let addr = |i: usize| addrs[i].clone();
    lab.start_rollout(&[(0, 3), (1, 4), (2, 5)], false, &["--drain-timeout", "2s"])?;
    // Every OLD drains for the whole timeout (its connections talk every 100 ms), then
    // retires with them.
    let (status, _) = finished_rollout(&lab, 40, RolloutOutcome::Completed)?;
    let retired: Vec<(String, u64)> = status.services[0]
        .retired
        .iter()
        .map(|r| (r.addr.to_string(), r.active_flows))
        .collect();
    let expected: Vec<(String, u64)> = (0..3).map(|i| (addr(i), counts[i])).collect();
    ensure!(
        retired == expected,
        "retired {retired:?}, expected {expected:?}"
    );
    let dist = lab.client.distribution(service, 100, &[])?;
    ensure!(
        dist.counts
            .keys()
            .all(|b| ["b3", "b4", "b5"].contains(&b.as_str())),
        "new flows reached an OLD: {dist:?}"
    );

    // b0 dies: it fails its checks, goes, and only its clients are cut.
    lab.stop_server(0);
    lab.wait_until(std::time::Duration::from_secs(5), "b0 gone", |s| {
        s.retired.iter().all(|r| r.addr.to_string() != addr(0))
    })?;
    std::thread::sleep(std::time::Duration::from_millis(500));
    let report = pings.stop();
    ensure!(
        report.failed_connections() == counts[0] as usize && report.moved_connections() == 0,
        "{} connections on b0: {report:?}",
        counts[0]
    );
    let left: Vec<String> = lab.balancer.status()?.services[0]
        .retired
        .iter()
        .map(|r| r.addr.to_string())
        .collect();
    // With their connections closed, b1 and b2 go too once their flows are idle.
    ensure!(
        left.iter().all(|a| *a == addr(1) || *a == addr(2)),
        "{left:?}"
    );
    lab.wait_until(std::time::Duration::from_secs(8), "b1 and b2 gone", |s| {
        s.retired.is_empty()
    })?;
    Ok(())
}

#[test]
fn a_cut_drain_re_balances_the_flows_left_at_its_timeout() -> Result<()> {
    let Draining {
        lab,
        service: _,
        pings,
        on_b0,
        b0,
    } = Draining::start("blr14")?;
    lab.balancer
        .ok(&["backend", "drain", "web", &b0, "--timeout", "1s", "--cut"])?;
    lab.wait_until(std::time::Duration::from_secs(8), "drain end", |s| {
        s.backends[0].drain.is_some_and(|d| d.ended.is_some())
    })?;
    std::thread::sleep(std::time::Duration::from_millis(700));
    // b0's connections went to other backends, which reset them; the rest carry on.
    let report = pings.stop();
    ensure!(
        report.failed_connections() == on_b0 && report.moved_connections() == 0,
        "{on_b0} connections on b0: {report:?}"
    );
    Ok(())
}
