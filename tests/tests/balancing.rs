//! The real daemon and CLI balancing real TCP in network namespaces.
//!
//! Topology per test: client, LB (daemon attached in native XDP mode), 4 backends on one
//! bridge, VIPs on the backends' loopbacks (L2 direct server return).

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use anyhow::{ensure, Result};
use balancer_tests::{
    balancer::{XdpMode, FAULT, REFUSED, UNREACHABLE, USAGE},
    lab::Lab,
    split::StoredSplit,
    traffic::LongLived,
};

/// Weights of the four backends and the share of new flows each should get.
const WEIGHTS: [u16; 4] = [100, 200, 300, 400];

/// Checks that each backend's share of `counts` is within `tolerance` percentage points of
/// its weight's share.
fn assert_shares(counts: &BTreeMap<String, usize>, weights: &[u16], tolerance: f64) -> Result<()> {
    let total: usize = counts.values().sum();
    let weight_sum: f64 = weights.iter().map(|w| *w as f64).sum();
    for (i, weight) in weights.iter().enumerate() {
        let got = *counts.get(&format!("b{i}")).unwrap_or(&0) as f64 * 100.0 / total as f64;
        let want = *weight as f64 * 100.0 / weight_sum;
        ensure!(
            (got - want).abs() <= tolerance,
            "backend b{i}: {got:.1}% of {total} connections, expected {want:.1}% ± {tolerance} ({counts:?})"
        );
    }
    Ok(())
}

#[test]
fn new_connections_follow_weights_v4_and_v6() -> Result<()> {
    let lab = Lab::new("blw1")?;
    for (name, v6) in [("web4", false), ("web6", true)] {
        let service = lab.weighted_service(name, v6, &WEIGHTS)?;
        // 4000 connections: one standard deviation of a share is under 0.8 points, so the
        // ±3 point check does not fail by chance.
        let dist = lab.client.distribution(service, 4000, &[])?;
        assert_shares(&dist.counts, &WEIGHTS, 3.0)?;
        // The daemon's own accounting agrees exactly with what the clients saw: one new
        // flow per connection, on the backend that answered it.
        let status = lab.balancer.status()?;
        let svc = status.services.iter().find(|s| s.name == name).unwrap();
        for i in 0..WEIGHTS.len() {
            let addr = if v6 {
                lab.topology.backend_v6(i)
            } else {
                lab.topology.backend_v4(i)
            };
            let seen = dist.counts.get(lab.topology.backend_name(i)).copied();
            let counted = svc
                .backends
                .iter()
                .find(|b| b.addr == addr)
                .map(|b| b.new_flows);
            ensure!(
                counted == Some(seen.unwrap_or(0) as u64),
                "{name}: backend {addr} counts {counted:?} new flows, the clients saw {seen:?}"
            );
        }
    }
    Ok(())
}

#[test]
fn weight_change_and_daemon_kill_keep_established_connections() -> Result<()> {
    let mut lab = Lab::new("blw2")?;
    let service = lab.weighted_service("web", false, &WEIGHTS)?;
    let long_lived = LongLived::open(&lab.client, service, 50, &[])?;
    let pings = long_lived.ping_in_background();

    // (b) A weight change moves new connections only.
    let b3 = lab.topology.backend_v4(3).to_string();
    lab.balancer
        .ok(&["backend", "set-weight", "web", &b3, "0"])?;
    let dist = lab.client.distribution(service, 3000, &[])?;
    ensure!(
        !dist.counts.contains_key("b3"),
        "weight 0 backend got new flows: {:?}",
        dist.counts
    );
    assert_shares(&dist.counts, &[100, 200, 300, 0], 3.0)?;

    // (c) kill -9: the data plane keeps forwarding without the daemon...
    lab.balancer.kill9()?;
    lab.client.distribution(service, 200, &[])?;
    // ...and a restarted daemon follows the stored weights.
    lab.balancer.restart()?;
    let dist = lab.client.distribution(service, 3000, &[])?;
    ensure!(
        !dist.counts.contains_key("b3"),
        "stored weight 0 lost: {:?}",
        dist.counts
    );
    assert_shares(&dist.counts, &[100, 200, 300, 0], 3.0)?;

    // Read while the long-lived connections still talk (flows count as active for 2 s).
    let status = lab.balancer.status()?;
    // Ten more exchanges' time: every connection keeps talking after the restart, however
    // fast the steps above ran.
    std::thread::sleep(std::time::Duration::from_secs(1));
    let report = pings.stop();
    ensure!(
        report.failed_connections() == 0 && report.moved_connections() == 0,
        "long-lived connections broke or moved: {report:?}"
    );
    ensure!(
        report.connections.iter().all(|c| c.exchanges >= 10),
        "long-lived connections did not keep talking: {report:?}"
    );
    // Connections pinned to b3 before its weight went to 0 are still counted active there,
    // and nothing else is: b3 got no new flow after that.
    let pinned_to_b3 = report
        .connections
        .iter()
        .filter(|c| c.original_backend == "b3")
        .count() as u64;
    let b3_status = status.services[0]
        .backends
        .iter()
        .find(|b| b.addr.to_string() == b3)
        .unwrap();
    ensure!(
        b3_status.active_flows == pinned_to_b3,
        "b3 reports {} active flows, {} connections are pinned to it",
        b3_status.active_flows,
        pinned_to_b3
    );
    Ok(())
}

#[test]
fn bad_input_is_rejected_with_one_line_and_changes_nothing() -> Result<()> {
    let lab = Lab::new("blw3")?;
    lab.weighted_service("web", false, &WEIGHTS)?;
    let before = lab.balancer.settings()?;
    let state_before = std::fs::read(lab.balancer.state_file())?;
    let b0 = lab.topology.backend_v4(0).to_string();
    // Hostile files: over the size limit, not text, the same backend twice.
    let dir = lab.balancer.socket().with_file_name("hostile");
    std::fs::create_dir_all(&dir)?;
    let huge = dir.join("huge.toml");
    std::fs::write(
        &huge,
        "#".repeat(balancer_user::server::routes::MAX_BODY + 1),
    )?;
    let binary = dir.join("binary.toml");
    std::fs::write(&binary, [0xffu8, 0xfe, 0x00, 0x01])?;
    let twice = dir.join("twice.toml");
    std::fs::write(
        &twice,
        format!("[[service]]\nname = \"web\"\nvip = \"198.19.0.1:80/tcp\"\n[[service.group]]\nname = \"main\"\nbackends = [{{ addr = \"{b0}\" }}, {{ addr = \"{b0}\" }}]\n"),
    )?;
    let (huge, binary, twice) = (
        huge.to_string_lossy().into_owned(),
        binary.to_string_lossy().into_owned(),
        twice.to_string_lossy().into_owned(),
    );
    let bad: &[&[&str]] = &[
        &["apply", "-f", &huge],
        &["apply", "-f", &binary],
        &["apply", "-f", &twice],
        &[
            "service",
            "add",
            "v6",
            "--vip",
            "[2001:db8:ffff::5%1]:80/tcp",
        ],
        &["backend", "drain", "web", &b0, "--timeout", "400days"],
        &[
            "backend",
            "add",
            "nosuch",
            "198.18.0.120",
            "--group",
            "main",
        ],
        &["backend", "add", "web", "198.18.0.999", "--group", "main"],
        &["backend", "add", "web", "2001:db8::120", "--group", "main"],
        &["backend", "add", "web", &b0, "--group", "main"],
        &[
            "backend",
            "add",
            "web",
            "198.18.0.120",
            "--group",
            "main",
            "--weight",
            "65536",
        ],
        &["backend", "set-weight", "web", &b0, "70000"],
        &["backend", "set-weight", "web", &b0, "-1"],
        &["backend", "set-weight", "web", "198.18.0.250", "5"],
        &["backend", "remove", "web", "198.18.0.250"],
        &["split", "web", "main=50"],
        &["split", "web", "main=100.001"],
        &["split", "web", "nosuch=100"],
        &["split", "web", "main"],
        &["service", "add", "web", "--vip", "198.19.0.2:80/tcp"],
        &["service", "add", "other", "--vip", "198.19.0.1:80/tcp"],
        &["service", "add", "other", "--vip", "198.19.0.2:80"],
        &["service", "add", "other", "--vip", "198.19.0:80/tcp"],
        &[
            "service",
            "add",
            "other",
            "--vip",
            "198.19.0.2:80/tcp",
            "--table-size",
            "65536",
        ],
        &["service", "add", "bad name", "--vip", "198.19.0.2:80/tcp"],
        &["service", "remove", "nosuch"],
        &["status", "nosuch"],
    ];
    for args in bad {
        lab.balancer.refused(args)?;
    }
    // Refused for the reason it is there: the bound, not another rule.
    let long = lab
        .balancer
        .cli(&["backend", "drain", "web", &b0, "--timeout", "400days"])?;
    ensure!(
        long.stderr.trim()
            == "error: the drain timeout of 34560000000 ms is longer than the longest allowed (365 days)",
        "{long:?}"
    );
    // Exit codes: the daemon refuses (1), the parser refuses (2).
    lab.balancer
        .failed_with(&["split", "web", "main=50"], REFUSED)?;
    lab.balancer
        .failed_with(&["split", "web", "main=100.001"], USAGE)?;
    // A daemon that is not there (3).
    let out = balancer_tests::balancer::run_cli(
        &balancer_tests::balancer::binary()?,
        std::path::Path::new("/nonexistent/balancer.sock"),
        &["status"],
    )?;
    ensure!(
        out.code == Some(UNREACHABLE) && out.stderr.trim().lines().count() == 1,
        "{out:?}"
    );
    ensure!(out.stderr.contains("cannot reach"), "{out:?}");
    // BALANCER_SOCKET names the socket when --socket does not; --socket wins.
    let with_env = |args: &[&str]| -> Result<std::process::Output> {
        Ok(
            std::process::Command::new(balancer_tests::balancer::binary()?)
                .env("BALANCER_SOCKET", lab.balancer.socket())
                .args(args)
                .output()?,
        )
    };
    let out = with_env(&["status", "--json"])?;
    ensure!(
        out.status.code() == Some(0) && String::from_utf8_lossy(&out.stdout).contains("\"web\""),
        "{out:?}"
    );
    let out = with_env(&["status", "--socket", "/nonexistent/balancer.sock"])?;
    ensure!(out.status.code() == Some(UNREACHABLE), "{out:?}");
    // A fault of the host (4): the state file cannot be replaced (its temporary file's
    // name is taken by a directory). Nothing changes, and the next change goes through.
    let blocker = lab.balancer.state_file().with_extension("json.tmp");
    std::fs::create_dir(&blocker)?;
    let out = lab
        .balancer
        .cli(&["backend", "set-weight", "web", &b0, "7"])?;
    std::fs::remove_dir(&blocker)?;
    ensure!(out.code == Some(FAULT), "{out:?}");
    ensure!(
        out.stderr.trim()
            == format!(
                "error: create a temporary file for {}: Is a directory (os error 21)",
                lab.balancer.state_file().display()
            ),
        "{out:?}"
    );

    ensure!(lab.balancer.settings()? == before, "status changed");
    ensure!(
        std::fs::read(lab.balancer.state_file())? == state_before,
        "state file changed"
    );
    lab.balancer
        .ok(&["backend", "set-weight", "web", &b0, "7"])?;
    ensure!(
        std::fs::read(lab.balancer.state_file())? != state_before,
        "state file not written after the fault passed"
    );
    Ok(())
}

#[test]
fn export_apply_round_trip_and_split_between_groups() -> Result<()> {
    const CLIENTS: u8 = 120;
    let lab = Lab::with_extra_clients("blw4", CLIENTS)?;
    let service = lab.service_with(
        "web",
        false,
        &["blue", "blue", "green", "green"],
        &["--affinity", "client"],
    )?;
    lab.balancer.ok(&["split", "web", "blue=25", "green=75"])?;
    // With client affinity each client's group is exactly what its hashed cell says.
    let clients: Vec<std::net::IpAddr> = (0..usize::from(CLIENTS))
        .map(|i| lab.topology.extra_client_v4(i))
        .collect();
    let groups = || -> Result<Vec<String>> {
        clients
            .iter()
            .map(|&client| {
                let backend = lab.client.ask_once(service, Some(client))?;
                Ok(if backend == "b0" || backend == "b1" {
                    "blue".to_string()
                } else {
                    "green".to_string()
                })
            })
            .collect()
    };
    let expected = || -> Result<Vec<String>> {
        let split = StoredSplit::load(&lab.balancer.state_file(), "web")?;
        clients
            .iter()
            .map(|&client| Ok(split.group_of(client)?.to_string()))
            .collect()
    };
    let reached = groups()?;
    ensure!(
        reached == expected()?,
        "clients reach other groups than their cells"
    );
    let blue = reached.iter().filter(|g| *g == "blue").count();
    ensure!(
        blue > 0 && blue < reached.len(),
        "{blue} of {} clients on blue at 25%",
        reached.len()
    );

    let exported = lab.balancer.ok(&["export"])?;
    let before = lab.balancer.settings()?;
    let file = lab.balancer.socket().with_extension("toml");
    std::fs::write(&file, &exported)?;
    lab.balancer.ok(&["apply", "-f", file.to_str().unwrap()])?;
    ensure!(
        lab.balancer.settings()? == before,
        "re-applying the export changed the state"
    );
    ensure!(
        lab.balancer.ok(&["export"])? == exported,
        "export is not stable"
    );
    ensure!(groups()? == reached, "re-applying the export moved clients");

    // A declarative change: drop green, blue takes everything.
    let blue_only = exported
        .split("[[service.group]]")
        .take(2)
        .collect::<Vec<_>>()
        .join("[[service.group]]")
        .replace("percent = \"25.00\"", "percent = \"100\"");
    std::fs::write(&file, &blue_only)?;
    lab.balancer.ok(&["apply", "-f", file.to_str().unwrap()])?;
    let status = lab.balancer.status()?;
    ensure!(
        status.services[0].backends.len() == 2,
        "{:?}",
        status.services[0]
    );
    let dist = lab.client.distribution(service, 200, &[])?;
    ensure!(
        dist.counts.keys().all(|k| k == "b0" || k == "b1"),
        "traffic left blue: {:?}",
        dist.counts
    );

    // A broken file changes nothing.
    let settings = lab.balancer.settings()?;
    std::fs::write(&file, "[[service]]\nname = 3\n")?;
    lab.balancer
        .refused(&["apply", "-f", file.to_str().unwrap()])?;
    ensure!(
        lab.balancer.settings()? == settings,
        "bad apply changed state"
    );
    Ok(())
}

#[test]
fn daemon_exit_keeps_forwarding_and_teardown_removes_everything() -> Result<()> {
    // Generic (skb) mode here; the other tests run native mode.
    let mut lab = Lab::in_mode("blw5", XdpMode::Skb)?;
    let service = lab.weighted_service("web", false, &WEIGHTS)?;
    lab.client.ask_once(service, None)?;

    // A normal exit leaves the data plane forwarding.
    lab.balancer.terminate()?;
    lab.client.distribution(service, 100, &[])?;

    // Teardown detaches the program, removes the pins and stops the daemon.
    lab.balancer.restart()?;
    let show_link =
        || balancer_tests::netns::run(lab.topology.lb_ns(), &["ip", "-d", "link", "show", "eth0"]);
    ensure!(
        show_link()?.contains("prog/xdp"),
        "no XDP program before teardown"
    );
    lab.balancer.ok(&["teardown"])?;
    lab.balancer.wait_exit()?;
    let link = show_link()?;
    ensure!(
        !link.contains("prog/xdp"),
        "XDP program still attached: {link}"
    );
    let leftovers: Vec<_> = std::fs::read_dir(lab.balancer.pin_root())
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    let pinned: Vec<_> = leftovers
        .iter()
        .flat_map(|v| std::fs::read_dir(v).into_iter().flatten().flatten())
        .collect();
    ensure!(pinned.is_empty(), "pins left after teardown: {pinned:?}");
    ensure!(
        lab.client.ask_once(service, None).is_err(),
        "the VIP is still balanced after teardown"
    );
    Ok(())
}

#[test]
fn vip_packets_nobody_can_take_are_reported_in_the_daemon_log() -> Result<()> {
    let lab = Lab::new("blw6")?;
    // A service without backends: its packets are dropped by the XDP program, which
    // reports them through aya-log; the daemon forwards that into its own log.
    let service = lab.service("empty", false, &[], &[])?;
    ensure!(
        lab.client.ask_once(service, None).is_err(),
        "a VIP without backends answered"
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    let reported = loop {
        let log = std::fs::read_to_string(lab.balancer.log_path())?;
        let lines: Vec<String> = log
            .lines()
            .filter(|line| line.contains("balancer::xdp"))
            .map(str::to_owned)
            .collect();
        if !lines.is_empty() {
            break lines;
        }
        ensure!(
            Instant::now() < deadline,
            "no data-plane message in the daemon log:\n{}",
            lab.balancer.log_tail()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let expected = format!("(VIP {service}/tcp): no backend can take a new flow");
    for line in &reported {
        ensure!(
            line.contains("WARN") && line.contains(&expected),
            "unexpected data-plane message: {line}"
        );
    }
    Ok(())
}
