//! `fullnat` forwarding end to end on the routed lab, beyond the release operations of
//! `modes.rs`: the backends are unmodified and route as they please (no policy route
//! through the LB), so the replies reach the LB only because they go to its pool address.
//! A backend's ICMP port unreachable reaches the client about the VIP; a pool of two
//! ports serves two connections at once, drops a third (counted), keeps the two, and takes
//! new connections again once the two have ended and the daemon has freed their ports.

use std::net::SocketAddr;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{ensure, Result};
use balancer_tests::{
    lab::{Lab, BACKENDS},
    netns,
    routed::{Mode, RoutedLab, NAT_VIP_PORT},
    traffic::LongLived,
};

/// A pool address of the LB's own besides its interface address, on the LB's link.
const POOL4: &str = "198.18.4.50";

#[test]
fn a_backends_port_unreachable_reaches_the_client_about_the_vip() -> Result<()> {
    let lab = RoutedLab::for_mode("bfnat1", Mode::Fullnat, BACKENDS)?;
    lab.ensure_closed_port_refused(Mode::Fullnat)?;
    let nat = lab.balancer.status()?.counters.nat;
    ensure!(nat.errors >= 2, "errors translated: {nat:?}");
    Ok(())
}

#[test]
fn a_pool_serves_as_many_connections_as_it_has_ports_and_frees_them() -> Result<()> {
    let lab = RoutedLab::for_mode("bfnat2", Mode::Fullnat, BACKENDS)?;
    netns::run(
        lab.topology.lb_ns(),
        &[
            "ip",
            "address",
            "add",
            &format!("{POOL4}/24"),
            "dev",
            "eth0",
        ],
    )?;
    let vip = SocketAddr::new(Lab::vip(false).ip(), NAT_VIP_PORT);
    let pool = ["--pool", POOL4, "--pool-ports", "20000-20001"];
    lab.translated_service(Mode::Fullnat, "small", vip, "tcp", 80, &pool)?;
    // Two connections take the two ports.
    let mut two = LongLived::open(&lab.client, vip, 2, &[])?;
    // A third finds none: its SYNs are dropped and counted.
    ensure!(
        lab.client.ask_once(vip, None).is_err(),
        "a third connection was served by a pool of two ports"
    );
    let nat = lab.balancer.status()?.counters.nat;
    ensure!(nat.exhausted >= 1, "the dropped SYNs counted: {nat:?}");
    // The two go on.
    two.ping_all()?;
    // They end; within the linger (10 s) and a sweep (5 s) their ports are free again.
    drop(two);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if lab.client.ask_once(vip, None).is_ok() {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "no connection served 30 s after the two ended: {:?}",
            lab.balancer.status()?.translations
        );
        thread::sleep(Duration::from_millis(500));
    }
    let translations = lab.balancer.status()?.translations;
    ensure!(
        translations.released >= 2,
        "the two ended connections' ports freed: {translations:?}"
    );
    Ok(())
}
