//! Tunnel forwarding end to end: the LB and its backends on different subnets behind a
//! router (the routed lab), services with `--forward ipip` and `--forward gue`, each
//! backend decapsulating with `balancer decap`. New connections of IPv4 and IPv6 clients
//! reach every backend through the router, the backends answer the client directly, and
//! connections open across a weight change keep their backend. A client packet that does
//! not fit the LB's link once encapsulated teaches the client's kernel the path MTU that
//! fits (ICMP fragmentation needed / packet too big from the VIP), and a transfer through
//! the tunnel completes.

use std::{
    io::{BufRead, BufReader, Write},
    net::{SocketAddr, TcpStream},
    time::Duration,
};

use anyhow::{ensure, Context, Result};
use balancer_tests::{
    lab::BACKENDS,
    netns,
    routed::{Mode, RoutedLab},
    traffic::LongLived,
};

/// The backends of every service here: the lab's four in group `main`, weight 100.
const MAIN: [(&str, u16); BACKENDS] = [("main", 100); BACKENDS];

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
    // One decapsulator on each backend takes both tunnels.
    let lab = RoutedLab::for_mode("btn1", Mode::Ipip, BACKENDS)?;
    let web = lab.mode_service(Mode::Ipip, "web", false, "tcp", &[], &MAIN)?;
    spread(&lab, web)?;
    let web6 = lab.mode_service(Mode::Gue, "web6", true, "tcp", &[], &MAIN)?;
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
    let decapsulated = (0..lab.topology.backend_count())
        .map(|i| {
            lab.decap_counters(i)?["decapsulated"]
                .as_u64()
                .context("decapsulated")
        })
        .collect::<Result<Vec<u64>>>()?;
    ensure!(
        decapsulated.iter().filter(|&&n| n > 0).count() >= 3,
        "backends decapsulated: {decapsulated:?}"
    );
    Ok(())
}

/// MTU of the link between the LB and the router in the path MTU test: a client packet that
/// crosses it whole no longer fits once encapsulated.
const LB_LINK_MTU: u32 = 1400;

/// Sends `len` bytes and then one request line to `service` on one TCP connection from the
/// client, and returns the answer: the backend answers only once all of it arrived.
fn transfer(lab: &RoutedLab, service: SocketAddr, len: usize) -> Result<String> {
    let connect = || TcpStream::connect_timeout(&service, Duration::from_secs(5));
    let mut stream = netns::in_netns(lab.topology.client_ns(), connect)?
        .with_context(|| format!("connect to {service}"))?;
    // Bounds on a transfer that never completes, not on how fast it is.
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    stream.set_write_timeout(Some(Duration::from_secs(30)))?;
    stream
        .write_all(&vec![b'x'; len])
        .and_then(|()| stream.write_all(b"ping\n"))
        .with_context(|| format!("send {len} bytes to {service}"))?;
    let mut answer = String::new();
    BufReader::new(&stream)
        .read_line(&mut answer)
        .with_context(|| format!("the answer to {len} bytes sent to {service}"))?;
    Ok(answer.trim_end().to_owned())
}

/// The path MTU the client's kernel holds for `addr` (`ip route get`), if it learned one.
fn client_path_mtu(lab: &RoutedLab, addr: std::net::IpAddr) -> Result<Option<u32>> {
    let addr = addr.to_string();
    let route = netns::run(lab.topology.client_ns(), &["ip", "route", "get", &addr])?;
    let mut words = route.split_whitespace();
    while let Some(word) = words.next() {
        if word == "mtu" {
            let value = words.next().context("`mtu` without a value")?;
            return Ok(Some(value.parse().with_context(|| format!("mtu {value}"))?));
        }
    }
    Ok(None)
}

/// The data plane's `too_big` tunnel counter.
fn too_big(lab: &RoutedLab) -> Result<u64> {
    Ok(lab.balancer.status()?.counters.tunnel.too_big)
}

#[test]
fn a_packet_too_big_once_encapsulated_teaches_the_client_the_path_mtu() -> Result<()> {
    let lab = RoutedLab::for_mode("btn2", Mode::Ipip, BACKENDS)?;
    let web = lab.mode_service(Mode::Ipip, "web", false, "tcp", &[], &MAIN)?;
    let web6 = lab.mode_service(Mode::Gue, "web6", true, "tcp", &[], &MAIN)?;
    // Both ends of the LB's link to the router: what crosses it whole from the client
    // does not fit it back out once encapsulated.
    let mtu = LB_LINK_MTU.to_string();
    netns::run(
        lab.topology.lb_ns(),
        &["ip", "link", "set", "eth0", "mtu", &mtu],
    )?;
    netns::run(
        lab.topology.router_ns(),
        &[
            "ip",
            "link",
            "set",
            lab.topology.router_lb_port(),
            "mtu",
            &mtu,
        ],
    )?;
    let serving = lab.serving();
    for (service, overhead) in [(web, 20), (web6, 48)] {
        ensure!(
            client_path_mtu(&lab, service.ip())?.is_none(),
            "the client knew a path MTU for {} before sending",
            service.ip()
        );
        let counted = too_big(&lab)?;
        // Full-size segments: the router tells the client its link's MTU, the LB the
        // MTU that fits once encapsulated; the transfer then completes.
        let answer = transfer(&lab, service, 300 * 1024)?;
        ensure!(
            serving.contains(&answer.as_str()),
            "300 KiB to {service}: answered {answer:?}"
        );
        let learned = client_path_mtu(&lab, service.ip())?;
        ensure!(
            learned == Some(LB_LINK_MTU - overhead),
            "the client's path MTU for {}: {learned:?}, not {}",
            service.ip(),
            LB_LINK_MTU - overhead
        );
        let now = too_big(&lab)?;
        ensure!(now > counted, "too_big counted {counted} then {now}");
        // Traffic that fits still goes through the tunnel.
        spread(&lab, service)?;
    }
    // The status text shows the counter with the others.
    let counted = too_big(&lab)?;
    let text = lab.balancer.ok(&["status"])?;
    ensure!(
        text.lines().any(|line| line.starts_with("tunnel packets:")
            && line.ends_with(&format!(" too_big={counted}"))),
        "status shows too_big={counted}: {text}"
    );
    Ok(())
}
