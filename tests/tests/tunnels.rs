//! Tunnel forwarding end to end: the LB and its backends on different subnets behind a
//! router (the routed lab), services with `--forward ipip` and `--forward gue`, each
//! backend decapsulating with `balancer decap`. New connections of IPv4 and IPv6 clients
//! reach every backend through the router, the backends answer the client directly, and
//! connections open across a weight change keep their backend.

use std::path::PathBuf;

use anyhow::{ensure, Context, Result};
use balancer_tests::{balancer::binary, netns, routed::RoutedLab, traffic::LongLived};

/// Attaches `balancer decap` to `eth0` of every backend of `lab`, each with a pin
/// directory of its own (every backend's interface is called `eth0`), and turns on
/// forwarding on the LB host (the data plane's route lookup needs it).
fn decapsulate(lab: &RoutedLab, prefix: &str) -> Result<Vec<PathBuf>> {
    let bin = binary()?;
    let bin = bin.to_str().context("binary path")?;
    for sysctl in [
        "net.ipv4.conf.all.forwarding=1",
        "net.ipv6.conf.all.forwarding=1",
    ] {
        netns::run(lab.topology.lb_ns(), &["sysctl", "-qw", sysctl])?;
    }
    let mut dirs = Vec::new();
    for i in 0..lab.topology.backend_count() {
        let dir = PathBuf::from(format!("/sys/fs/bpf/balancer-test-decap/{prefix}-b{i}"));
        let pins = dir.to_str().context("pin dir")?;
        netns::run(
            lab.topology.backend_ns(i),
            &[bin, "decap", "--iface", "eth0", "--pin-dir", pins],
        )?;
        dirs.push(dir);
    }
    Ok(dirs)
}

/// Detaches every backend's decapsulator and removes its pin directory (their namespaces
/// go with the lab).
fn remove_decap(lab: &RoutedLab, dirs: &[PathBuf]) {
    if let Ok(bin) = binary() {
        for (i, dir) in dirs.iter().enumerate() {
            let argv = [
                bin.to_str().unwrap_or("balancer"),
                "decap",
                "--iface",
                "eth0",
                "--pin-dir",
                dir.to_str().unwrap_or(""),
                "--remove",
            ];
            netns::run(lab.topology.backend_ns(i), &argv).ok();
            std::fs::remove_dir(dir).ok();
        }
    }
    if let Some(parent) = dirs.first().and_then(|dir| dir.parent()) {
        // Only when no other test's directory is left in it.
        std::fs::remove_dir(parent).ok();
    }
}

/// Asks the service 40 times and requires answers from at least three backends.
fn spread(lab: &RoutedLab, service: std::net::SocketAddr) -> Result<()> {
    let seen = lab.client.distribution(service, 40, &[])?;
    ensure!(
        seen.counts.len() >= 3,
        "40 connections through the tunnel should reach most of 4 backends: {seen:?}"
    );
    Ok(())
}

#[test]
fn ipip_and_gue_reach_backends_behind_a_router_and_keep_connections() -> Result<()> {
    let lab = RoutedLab::new("btn1")?;
    let dirs = decapsulate(&lab, "btn1")?;
    let result = (|| -> Result<()> {
        let groups = ["main"; 4];
        let web = lab.service("web", false, &groups, &["--forward", "ipip"])?;
        spread(&lab, web)?;
        let web6 = lab.service("web6", true, &groups, &["--forward", "gue"])?;
        spread(&lab, web6)?;
        // Long-lived connections through the tunnel keep their backend across a weight
        // change that moves new flows.
        let mut long = LongLived::open(&lab.client, web, 20, &[])?;
        let first = long.original_backends().to_vec();
        let addr = lab.topology.backend_addr(0, false).to_string();
        lab.balancer
            .ok(&["backend", "set-weight", "web", &addr, "0"])?;
        let now = long.ping_all()?;
        ensure!(now == first, "connections moved: {first:?} -> {now:?}");
        let status = lab.balancer.status()?;
        let json = serde_json::to_string(&status)?;
        ensure!(
            json.contains("ipip") && json.contains("gue"),
            "status shows the modes: {json}"
        );
        // Every packet went through a decapsulator: the backends counted them.
        let bin = binary()?;
        let bin = bin.to_str().context("binary path")?;
        let mut decapsulated = Vec::new();
        for (i, dir) in dirs.iter().enumerate() {
            let argv = [
                bin,
                "decap",
                "--iface",
                "eth0",
                "--pin-dir",
                dir.to_str().context("dir")?,
                "--status",
                "--json",
            ];
            let counters: serde_json::Value =
                serde_json::from_str(&netns::run(lab.topology.backend_ns(i), &argv)?)?;
            decapsulated.push(counters["decapsulated"].as_u64().context("decapsulated")?);
        }
        ensure!(
            decapsulated.iter().filter(|&&n| n > 0).count() >= 3,
            "backends decapsulated: {decapsulated:?}"
        );
        Ok(())
    })();
    remove_decap(&lab, &dirs);
    result
}
