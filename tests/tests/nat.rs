//! `nat` forwarding end to end on the routed lab: the router sends the backends' traffic
//! through the LB (a policy route: what comes in on the backends' bridge goes to the LB),
//! so the LB sees every reply. The backends are unmodified — no VIP on a loopback, no
//! decapsulation — and serve on port 80 while the VIPs take port 8080. New connections of
//! IPv4 and IPv6 clients split by weight; the backends see the client's own address; UDP
//! works; the LB's own health checks of the backends are not taken for clients' replies;
//! connections keep their backend across a weight change and a `kill -9` of the daemon.

use std::net::SocketAddr;

use anyhow::{ensure, Context, Result};
use balancer_tests::{
    lab::{Lab, BACKENDS},
    routed::{Mode, RoutedLab, NAT_VIP_PORT},
    traffic::LongLived,
};
use balancer_user::api::Health;

/// `service add` options of the services here: TCP health checks (on the backends' port).
const HEALTH: [&str; 6] = [
    "--health",
    "tcp",
    "--health-interval",
    "500ms",
    "--health-timeout",
    "400ms",
];

/// Adds `nat` service `name` (`proto`) on the VIP's port [`NAT_VIP_PORT`], to port 80, with
/// health checks and backend `i` at weight `weights[i]`; returns its address.
fn nat_service(
    lab: &RoutedLab,
    name: &str,
    v6: bool,
    proto: &str,
    weights: &[u16],
) -> Result<SocketAddr> {
    let backends: Vec<(&str, u16)> = weights.iter().map(|weight| ("main", *weight)).collect();
    lab.mode_service(Mode::Nat, name, v6, proto, &HEALTH, &backends)
}

/// New connections of the split check: at least the 2000, and enough that 3
/// points are about 4 standard deviations of a half share (no failure by chance).
const ASKS: usize = 4000;

/// Asks `service` [`ASKS`] times and requires each backend's share of the answers within 3
/// points of its weight's share.
fn split_by_weight(lab: &RoutedLab, service: SocketAddr, weights: &[u16]) -> Result<()> {
    let seen = lab.client.distribution(service, ASKS, &[])?;
    let total: u16 = weights.iter().sum();
    let expected: Vec<(&str, f64)> = weights
        .iter()
        .enumerate()
        .map(|(i, weight)| {
            let share = f64::from(*weight) * 100.0 / f64::from(total);
            (lab.topology.backend_name(i), share)
        })
        .collect();
    seen.ensure_shares(&expected, 3.0)
        .with_context(|| format!("new connections to {service}"))
}

/// Every backend of `service` is up: the LB's own checks (on port 80, answered to the LB's
/// address) reached them and their answers were not rewritten.
fn all_up(lab: &RoutedLab, service: &str) -> Result<()> {
    for _ in 0..50 {
        let status = lab.balancer.status()?;
        let svc = status
            .services
            .iter()
            .find(|s| s.name == service)
            .context("service in status")?;
        if svc.backends.iter().all(|b| b.health == Some(Health::Up)) {
            return Ok(());
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    anyhow::bail!(
        "the backends of {service} did not all come up: {}",
        lab.balancer.ok(&["status", service])?
    )
}

#[test]
fn nat_splits_by_weight_translates_replies_and_keeps_connections() -> Result<()> {
    let mut lab = RoutedLab::for_mode("bnat1", Mode::Nat, BACKENDS)?;
    let weights = [100, 100, 100, 300];
    let web = nat_service(&lab, "web", false, "tcp", &weights)?;
    let web6 = nat_service(&lab, "web6", true, "tcp", &weights)?;
    all_up(&lab, "web")?;
    all_up(&lab, "web6")?;
    split_by_weight(&lab, web, &weights)?;
    split_by_weight(&lab, web6, &weights)?;
    // Every connection's SYN-ACK passed the LB and was timed (the health checks' were to
    // the LB itself: not counted).
    for service in lab.balancer.status()?.services {
        let new_flows: u64 = service.backends.iter().map(|b| b.new_flows).sum();
        let answers: Vec<_> = service
            .backends
            .iter()
            .filter_map(|b| b.answers.clone())
            .collect();
        let handshakes: u64 = answers.iter().map(|a| a.handshakes).sum();
        ensure!(
            answers.len() == 4 && handshakes + 10 >= ASKS as u64 && handshakes <= new_flows,
            "{}: {handshakes} handshakes timed of {new_flows} new flows: {answers:?}",
            service.name
        );
        let slowest = answers
            .iter()
            .filter_map(|a| a.handshake_mean())
            .fold(0.0, f64::max);
        ensure!(
            slowest < 0.5,
            "{}: mean handshake {slowest} s",
            service.name
        );
    }

    // The backends see the client's own address.
    let mut long = LongLived::open(&lab.client, web, 50, &[])?;
    let first = long.original_backends().to_vec();
    let client = lab.topology.client_addr(false);
    let mut seen = 0;
    for i in 0..lab.topology.backend_count() {
        let peers = lab.peers(i)?;
        ensure!(
            peers.iter().all(|p| *p == client),
            "backend {i} sees {peers:?}"
        );
        seen += peers.len();
    }
    ensure!(seen >= 50, "the backends hold {seen} of the 50 connections");

    // A weight change and a kill -9 of the daemon move none of them.
    let addr = lab.topology.backend_addr(3, false).to_string();
    lab.balancer
        .ok(&["backend", "set-weight", "web", &addr, "0"])?;
    ensure!(
        long.ping_all()? == first,
        "connections moved at the weight change"
    );
    lab.balancer.kill9()?;
    ensure!(
        long.ping_all()? == first,
        "connections moved with the daemon gone"
    );
    lab.balancer.restart()?;
    ensure!(
        long.ping_all()? == first,
        "connections moved at the restart"
    );

    let status = lab.balancer.status()?;
    ensure!(
        status.counters.nat.replies > 0,
        "replies counted: {:?}",
        status.counters.nat
    );
    let text = lab.balancer.ok(&["status"])?;
    ensure!(text.contains("forward: nat to backend port 80"), "{text}");
    ensure!(text.contains("nat packets: replies="), "{text}");
    Ok(())
}

#[test]
fn nat_carries_udp_both_ways() -> Result<()> {
    let lab = RoutedLab::for_mode("bnat2", Mode::Nat, BACKENDS)?;
    for v6 in [false, true] {
        let name = if v6 { "dns6" } else { "dns" };
        let service = nat_service(&lab, name, v6, "udp", &[100, 100, 100, 100])?;
        all_up(&lab, name)?;
        let mut answered = std::collections::BTreeSet::new();
        for _ in 0..40 {
            answered.insert(lab.client.ask_udp_once(service, None)?);
        }
        ensure!(
            answered.len() >= 3,
            "{service}: 40 datagrams reached {answered:?}"
        );
        // A UDP flow keeps its backend.
        let mut long = LongLived::open_udp(&lab.client, service, 10, &[])?;
        let first = long.original_backends().to_vec();
        ensure!(long.ping_all()? == first, "{service}: UDP flows moved");
    }
    Ok(())
}

#[test]
fn a_backends_port_unreachable_reaches_the_client_about_the_vip() -> Result<()> {
    let lab = RoutedLab::for_mode("bnat3", Mode::Nat, BACKENDS)?;
    lab.ensure_closed_port_refused(Mode::Nat)?;
    let nat = lab.balancer.status()?.counters.nat;
    ensure!(nat.errors >= 2, "errors translated: {nat:?}");

    // Over TCP the backend refuses with a reset, which the client gets as one from the VIP
    // and the LB counts for the backend.
    let vip = SocketAddr::new(Lab::vip(false).ip(), NAT_VIP_PORT + 1);
    let spec = format!("{vip}/tcp");
    lab.balancer.ok(&[
        "service",
        "add",
        "refusing",
        "--vip",
        &spec,
        "--forward",
        "nat",
        "--backend-port",
        "9",
    ])?;
    let addr = lab.topology.backend_addr(0, false).to_string();
    lab.balancer
        .ok(&["backend", "add", "refusing", &addr, "--group", "main"])?;
    let refused = lab.client.ask_once(vip, None);
    ensure!(
        refused.is_err(),
        "a connection to a closed port was answered"
    );
    let status = lab.balancer.status()?;
    let answers = status
        .services
        .iter()
        .find(|s| s.name == "refusing")
        .and_then(|s| s.backends[0].answers.clone())
        .context("answers of the refusing backend")?;
    ensure!(
        answers.resets >= 1,
        "the backend's reset counted: {answers:?}"
    );
    Ok(())
}
