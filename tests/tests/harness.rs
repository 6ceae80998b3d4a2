//! Self-test of the harness: no load balancer involved, so backends are
//! asked directly (or through routes added in the LB namespace).

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::panic::{self, AssertUnwindSafe};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::Result;
use balancer_tests::netns;
use balancer_tests::topology::{sweep_stale, Topology, TopologySpec, CLIENT_V4, VIP4, VIP6};
use balancer_tests::traffic::{BackendServer, Client, LongLived, Qdisc, RawSender, SERVICE_PORT};
use etherparse::PacketBuilder;

fn spec(prefix: &str, backends: &[&str], extra_clients: u8) -> TopologySpec {
    TopologySpec {
        prefix: prefix.to_owned(),
        backends: backends.iter().map(|name| name.to_string()).collect(),
        extra_clients,
    }
}

fn service(address: IpAddr) -> SocketAddr {
    SocketAddr::new(address, SERVICE_PORT)
}

fn namespaces_with_prefix(prefix: &str) -> Result<Vec<String>> {
    let start = format!("{prefix}-");
    Ok(netns::list()?
        .into_iter()
        .filter(|ns| ns.starts_with(&start))
        .collect())
}

#[test]
fn backends_answer_the_client_and_everything_is_removed_on_drop() -> Result<()> {
    let topology = Topology::build(spec("blh1", &["blue0", "green1", "red2", "gold3"], 2))?;
    let servers = BackendServer::start_all(&topology)?;
    let client = Client::new(topology.client_ns());

    for index in 0..topology.backend_count() {
        let name = topology.backend_name(index);
        for (address, extra_source) in [
            (topology.backend_v4(index), topology.extra_client_v4(1)),
            (topology.backend_v6(index), topology.extra_client_v6(1)),
        ] {
            assert_eq!(client.ask_once(service(address), None)?, name);
            assert_eq!(client.ask_once(service(address), Some(extra_source))?, name);
            assert_eq!(client.ask_udp_once(service(address), None)?, name);
        }
    }

    let distribution = client.distribution(
        service(topology.backend_v4(0)),
        20,
        &[topology.extra_client_v4(0), topology.extra_client_v4(1)],
    )?;
    assert_eq!(distribution.counts.get("blue0"), Some(&20));

    let mut long_lived = LongLived::open(&client, service(topology.backend_v6(2)), 3, &[])?;
    assert_eq!(long_lived.original_backends(), ["red2"; 3]);
    for _ in 0..3 {
        assert_eq!(long_lived.ping_all()?, ["red2"; 3]);
    }
    let pings = long_lived.ping_in_background();
    thread::sleep(Duration::from_millis(350));
    let report = pings.stop();
    assert_eq!(report.failed_connections(), 0, "{report:?}");
    assert_eq!(report.moved_connections(), 0, "{report:?}");
    assert!(
        report.connections.iter().all(|c| c.exchanges >= 3),
        "{report:?}"
    );

    // A process left running in a namespace is killed when the topology goes.
    let log = std::env::temp_dir().join("blh1-sleep.log");
    let mut sleeper = netns::spawn(topology.client_ns(), &["sleep", "30"], &log)?;
    assert!(sleeper.is_running());
    drop(servers);
    drop(topology);
    thread::sleep(Duration::from_millis(100));
    assert!(!sleeper.is_running());
    std::fs::remove_file(log)?;
    assert_eq!(namespaces_with_prefix("blh1")?, Vec::<String>::new());
    Ok(())
}

#[test]
fn backends_answer_on_their_vips_from_the_vip() -> Result<()> {
    let topology = Topology::build(spec("blh2", &["blue0"], 0))?;
    let _servers = BackendServer::start_all(&topology)?;
    // Without a load balancer, route the VIPs from the LB host straight to
    // backend 0: it must accept them on lo and answer from the VIP (UDP
    // sockets are connected, so a reply from another address is dropped).
    let (v4, v6) = (
        topology.backend_v4(0).to_string(),
        topology.backend_v6(0).to_string(),
    );
    netns::run(
        topology.lb_ns(),
        &["ip", "route", "add", "198.19.0.1/32", "via", &v4],
    )?;
    netns::run(
        topology.lb_ns(),
        &["ip", "route", "add", "2001:db8:ffff::1/128", "via", &v6],
    )?;
    let from_lb = Client::new(topology.lb_ns());
    for vip in [VIP4, VIP6] {
        assert_eq!(from_lb.ask_once(service(vip), None)?, "blue0");
        assert_eq!(from_lb.ask_udp_once(service(vip), None)?, "blue0");
    }

    let log = std::env::temp_dir().join("blh2-sleep.log");
    let mut sleeper = netns::spawn(topology.lb_ns(), &["sleep", "30"], &log)?;
    sleeper.kill()?;
    assert!(!sleeper.is_running());
    std::fs::remove_file(log)?;
    Ok(())
}

#[test]
fn namespaces_are_removed_when_a_test_panics() -> Result<()> {
    let outcome = panic::catch_unwind(AssertUnwindSafe(|| {
        let _topology =
            Topology::build(spec("blh3", &["blue0", "green1"], 1)).expect("topology builds");
        assert_eq!(
            namespaces_with_prefix("blh3").expect("ip netns list").len(),
            5
        );
        panic!("on purpose, while holding a topology");
    }));
    assert!(outcome.is_err());
    assert_eq!(namespaces_with_prefix("blh3")?, Vec::<String>::new());
    Ok(())
}

#[test]
fn sweep_stale_removes_leftovers_of_a_crashed_run() -> Result<()> {
    let topology = Topology::build(spec("blh4", &["blue0"], 0))?;
    // Simulate a crash: the topology is never dropped.
    std::mem::forget(topology);
    assert_eq!(namespaces_with_prefix("blh4")?.len(), 4);
    assert_eq!(sweep_stale("blh4")?, 4);
    assert_eq!(namespaces_with_prefix("blh4")?, Vec::<String>::new());
    Ok(())
}

/// The source ports of the datagrams `socket` receives until `expected` came or none for
/// 2 s, each checked to come from `source` with payload `payload`, sorted.
fn receive_ports(
    socket: &UdpSocket,
    expected: usize,
    source: IpAddr,
    payload: &[u8],
) -> Result<Vec<u16>> {
    socket.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut buffer = [0u8; 64];
    let mut ports = Vec::new();
    while ports.len() < expected {
        let Ok((length, from)) = socket.recv_from(&mut buffer) else {
            break;
        };
        assert_eq!((from.ip(), &buffer[..length]), (source, payload));
        ports.push(from.port());
    }
    ports.sort_unstable();
    Ok(ports)
}

#[test]
fn raw_frames_from_the_client_reach_a_backend_as_sent() -> Result<()> {
    const PORT: u16 = 9999;
    const FRAMES: usize = 64;
    let topology = Topology::build(spec("blraw1", &["blue0"], 0))?;
    let IpAddr::V4(backend) = topology.backend_v4(0) else {
        unreachable!("an IPv4 address");
    };
    let IpAddr::V4(client) = CLIENT_V4 else {
        unreachable!("an IPv4 address");
    };
    let (client_mac, backend_mac) = (
        netns::eth0_mac(topology.client_ns())?,
        netns::eth0_mac(topology.backend_ns(0))?,
    );
    let frames: Vec<Vec<u8>> = (0..FRAMES as u16)
        .map(|index| {
            let mut frame = Vec::new();
            PacketBuilder::ethernet2(client_mac, backend_mac)
                .ipv4(client.octets(), backend.octets(), 64)
                .udp(40_000 + index, PORT)
                .write(&mut frame, b"raw")
                .expect("frame");
            frame
        })
        .collect();
    let socket = netns::in_netns(topology.backend_ns(0), || {
        UdpSocket::bind(SocketAddr::new(IpAddr::V4(backend), PORT))
    })??;
    let sender = netns::in_netns(topology.client_ns(), || {
        RawSender::open("eth0", Qdisc::Bypass)
    })??;

    let ports: Vec<u16> = (0..FRAMES as u16).map(|index| 40_000 + index).collect();

    assert_eq!(sender.send(&frames)?, FRAMES as u64);
    assert_eq!(receive_ports(&socket, FRAMES, CLIENT_V4, b"raw")?, ports);
    let deadline = Instant::now() + Duration::from_secs(10);
    assert_eq!(
        sender.send_until(&frames, 2, Some(deadline))?,
        2 * FRAMES as u64
    );
    assert_eq!(
        receive_ports(&socket, 2 * FRAMES, CLIENT_V4, b"raw")?,
        ports
            .iter()
            .flat_map(|&port| [port, port])
            .collect::<Vec<_>>()
    );
    // A deadline already past: nothing is sent.
    assert_eq!(sender.send_until(&frames, 2, Some(Instant::now()))?, 0);
    Ok(())
}
