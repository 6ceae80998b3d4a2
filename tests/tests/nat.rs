//! `nat` forwarding end to end on the routed lab: the router sends the backends' traffic
//! through the LB (a policy route: what comes in on the backends' bridge goes to the LB),
//! so the LB sees every reply. The backends are unmodified — no VIP on a loopback, no
//! decapsulation — and serve on port 80 while the VIPs take port 8080. New connections of
//! IPv4 and IPv6 clients split by weight; the backends see the client's own address; UDP
//! works; the LB's own health checks of the backends are not taken for clients' replies;
//! connections keep their backend across a weight change and a `kill -9` of the daemon.

use std::net::{IpAddr, SocketAddr};

use anyhow::{ensure, Context, Result};
use balancer_tests::{lab::Lab, netns, routed::RoutedLab, traffic::LongLived};
use balancer_user::api::Health;

/// The VIPs' port; the backends serve on 80.
const VIP_PORT: u16 = 8080;

/// Adds service `name` (`proto`) on the VIP's port [`VIP_PORT`], forwarding by `nat` to
/// port 80, with backend `i` at weight `weights[i]`; returns its address.
fn nat_service(
    lab: &RoutedLab,
    name: &str,
    v6: bool,
    proto: &str,
    weights: &[u16],
) -> Result<SocketAddr> {
    let vip = SocketAddr::new(Lab::vip(v6).ip(), VIP_PORT);
    let spec = format!("{vip}/{proto}");
    lab.balancer.ok(&[
        "service",
        "add",
        name,
        "--vip",
        &spec,
        "--forward",
        "nat",
        "--backend-port",
        "80",
        "--health",
        "tcp",
        "--health-interval",
        "500ms",
        "--health-timeout",
        "400ms",
    ])?;
    for (i, weight) in weights.iter().enumerate() {
        let addr = lab.topology.backend_addr(i, v6).to_string();
        let weight = weight.to_string();
        lab.balancer.ok(&[
            "backend", "add", name, &addr, "--group", "main", "--weight", &weight,
        ])?;
    }
    Ok(vip)
}

/// The peers of the established TCP connections to port 80 in `ns`.
fn peers(ns: &str) -> Result<Vec<IpAddr>> {
    let out = netns::run(
        ns,
        &["ss", "-Htn", "state", "established", "( sport = :80 )"],
    )?;
    out.lines()
        .filter_map(|line| line.split_whitespace().last())
        .map(|peer| {
            let host = peer.rsplit_once(':').context("peer address")?.0;
            let host = host.trim_start_matches('[').trim_end_matches(']');
            let addr: IpAddr = host.parse().with_context(|| format!("peer {peer}"))?;
            // The servers listen on both families: IPv4 peers show as mapped addresses.
            Ok(addr.to_canonical())
        })
        .collect()
}

/// Asks `service` 2000 times and requires each backend's share of the answers within 3
/// points of its weight's share.
fn split_by_weight(lab: &RoutedLab, service: SocketAddr, weights: &[u16]) -> Result<()> {
    const ASKS: usize = 2000;
    let seen = lab.client.distribution(service, ASKS, &[])?;
    let total: u16 = weights.iter().sum();
    for (i, weight) in weights.iter().enumerate() {
        let name = lab.topology.backend_name(i);
        let got = *seen.counts.get(name).unwrap_or(&0) as f64 / ASKS as f64 * 100.0;
        let want = f64::from(*weight) / f64::from(total) * 100.0;
        ensure!(
            (got - want).abs() <= 3.0,
            "{service}: backend {name} got {got:.1}% of new connections, its weight {want:.1}% ({seen:?})"
        );
    }
    Ok(())
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
    let mut lab = RoutedLab::new("bnat1")?;
    lab.topology.backends_through_lb()?;
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
            answers.len() == 4 && handshakes >= 1990 && handshakes <= new_flows,
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
        let peers = peers(lab.topology.backend_ns(i))?;
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
    let lab = RoutedLab::new("bnat2")?;
    lab.topology.backends_through_lb()?;
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
    let lab = RoutedLab::new("bnat3")?;
    lab.topology.backends_through_lb()?;
    for v6 in [false, true] {
        // Nothing listens on the backends' port 9.
        let name = if v6 { "closed6" } else { "closed" };
        let vip = SocketAddr::new(Lab::vip(v6).ip(), VIP_PORT);
        let spec = format!("{vip}/udp");
        lab.balancer.ok(&[
            "service",
            "add",
            name,
            "--vip",
            &spec,
            "--forward",
            "nat",
            "--backend-port",
            "9",
        ])?;
        let addr = lab.topology.backend_addr(0, v6).to_string();
        lab.balancer
            .ok(&["backend", "add", name, &addr, "--group", "main"])?;
        // A connected socket learns of the backend's ICMP error only if it quotes the
        // datagram as the socket sent it: to the VIP.
        let socket = lab.client.udp_socket(vip, None, 0)?;
        socket.send(b"anyone?\n")?;
        let mut buf = [0u8; 64];
        let got = socket.recv(&mut buf);
        ensure!(
            matches!(&got, Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused),
            "{vip}: the client should see the port unreachable, got {got:?}"
        );
    }
    let nat = lab.balancer.status()?.counters.nat;
    ensure!(nat.errors >= 2, "errors translated: {nat:?}");

    // Over TCP the backend refuses with a reset, which the client gets as one from the VIP
    // and the LB counts for the backend.
    let vip = SocketAddr::new(Lab::vip(false).ip(), VIP_PORT + 1);
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
