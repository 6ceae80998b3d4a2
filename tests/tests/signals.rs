//! The client-side signals per backend, end to end with the real daemon and CLI: closes by
//! FIN and by RST, SYN retransmits, and unanswered flows (TCP handshakes not completed, UDP
//! flows of one datagram), each counted exactly for the traffic the test made.

use std::{
    net::{SocketAddr, TcpStream},
    os::fd::AsRawFd,
    time::Duration,
};

use anyhow::{ensure, Context, Result};
use balancer_tests::{lab::Lab, netns};
use balancer_user::api::BackendStatus;

/// The unanswered window (5 s) plus the daemon's pass (1 s) and slack.
const UNANSWERED_LIMIT: Duration = Duration::from_secs(12);

/// Backend b0 of the first service in `status`.
fn b0(lab: &Lab) -> Result<BackendStatus> {
    let status = lab.balancer.status()?;
    status.services[0]
        .backends
        .first()
        .cloned()
        .context("no backend")
}

/// Connects to `service` from the client and closes at once with a reset (SO_LINGER 0).
fn connect_and_reset(lab: &Lab, service: SocketAddr) -> Result<()> {
    let stream = netns::in_netns(lab.topology.client_ns(), || {
        TcpStream::connect_timeout(&service, Duration::from_secs(2))
    })??;
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: a valid socket and a `linger` of the size passed.
    let rc = unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            std::ptr::addr_of!(linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    ensure!(rc == 0, "SO_LINGER: {}", std::io::Error::last_os_error());
    drop(stream);
    Ok(())
}

/// Tries to connect to `service` from the client for at most `limit`; must fail.
fn connect_fails(lab: &Lab, service: SocketAddr, limit: Duration) -> Result<()> {
    let connected = netns::in_netns(lab.topology.client_ns(), || {
        TcpStream::connect_timeout(&service, limit)
    })?;
    ensure!(
        connected.is_err(),
        "connected to {service}, which should fail"
    );
    Ok(())
}

#[test]
fn fin_rst_syn_retransmits_and_unanswered_flows_are_counted_per_backend() -> Result<()> {
    let mut lab = Lab::new("bls1")?;
    let service = lab.service("web", false, &["main"], &[100])?;

    // Orderly connections: the client's FIN closes each.
    for _ in 0..20 {
        lab.client.ask_once(service, None)?;
    }
    // Connections the client resets.
    for _ in 0..10 {
        connect_and_reset(&lab, service)?;
    }
    let b = b0(&lab)?;
    ensure!(
        (b.new_flows, b.fin_closes, b.resets, b.syn_retransmits) == (30, 20, 10, 0),
        "after 20 closed and 10 reset connections: {b:?}"
    );

    // b0 drops SYNs: each client retransmits its SYN (after 1 s) and gives up at 2.5 s.
    let b0_ns = lab.topology.backend_ns(0).to_string();
    let drop_syns = "add table inet bls1; \
                     add chain inet bls1 input { type filter hook input priority 0; }; \
                     add rule inet bls1 input tcp flags syn drop";
    netns::run(&b0_ns, &["nft", drop_syns])?;
    let dropped: Vec<_> = (0..3)
        .map(|_| {
            let lab_client = lab.topology.client_ns().to_string();
            std::thread::spawn(move || {
                netns::in_netns(&lab_client, || {
                    TcpStream::connect_timeout(&service, Duration::from_millis(2500)).is_err()
                })
            })
        })
        .collect();
    for attempt in dropped {
        let failed = attempt.join().expect("connect thread")?;
        ensure!(failed, "a connection through dropped SYNs succeeded");
    }
    netns::run(&b0_ns, &["nft", "delete table inet bls1"])?;
    let b = b0(&lab)?;
    ensure!(
        (3..=6).contains(&b.syn_retransmits) && b.resets == 10,
        "3 connections that got no SYN-ACK for 2.5 s retransmit once or twice each: {b:?}"
    );

    // b0's server stops: its kernel answers each SYN with a reset.
    lab.stop_server(0);
    for _ in 0..4 {
        connect_fails(&lab, service, Duration::from_secs(2))?;
    }
    let waited = lab.wait_until(UNANSWERED_LIMIT, "7 unanswered", |s| {
        s.backends[0].unanswered_flows >= 7
    })?;
    std::thread::sleep(Duration::from_secs(2));
    let b = b0(&lab)?;
    println!("unanswered after {waited:?}: {b:?}");
    ensure!(
        b.unanswered_flows == 7 && b.new_flows == 37 && b.fin_closes == 20,
        "3 handshakes without SYN-ACK and 4 refused, each counted once; none of the 30 \
         completed ones: {b:?}"
    );
    let text = lab.balancer.ok(&["status"])?;
    ensure!(
        text.contains("UNANSWERED") && text.contains("SYN_RTX"),
        "status shows the signals: {text}"
    );
    Ok(())
}

#[test]
fn udp_flows_of_one_datagram_are_unanswered_and_longer_ones_are_not() -> Result<()> {
    let lab = Lab::new("bls2")?;
    let service = lab.udp_service("dns", false, &["main"], &[100])?;
    for port in 30_000..30_005 {
        lab.client.ask_udp_from_port(service, port)?;
    }
    // A flow of three datagrams: established, never unanswered.
    let socket = lab.client.udp_socket(service, None, 30_100)?;
    for _ in 0..3 {
        balancer_tests::traffic::udp_exchange(&socket)?;
    }
    lab.wait_until(UNANSWERED_LIMIT, "5 unanswered", |s| {
        s.backends[0].unanswered_flows >= 5
    })?;
    std::thread::sleep(Duration::from_secs(2));
    let b = b0(&lab)?;
    ensure!(
        (b.new_flows, b.unanswered_flows, b.fin_closes, b.resets) == (6, 5, 0, 0),
        "5 one-datagram flows and one of three: {b:?}"
    );
    Ok(())
}
