//! The routed lab: the LB and the backends on different subnets behind a router namespace,
//! the bench of the forwarding modes that route. It routes every way the tunnel modes need
//! (client ↔ backends, LB → backends through the router, the backends' direct replies from
//! the VIP to the client), and a DSR service on it refuses its backends, which are not on
//! the LB's link.

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::panic::{self, AssertUnwindSafe};
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use balancer_tests::{
    balancer::REFUSED,
    lab::Lab,
    netns,
    routed::{RoutedLab, RoutedTopology, VIP4, VIP6},
    topology::sweep_stale,
    traffic::{BackendServer, Client, SERVICE_PORT},
};

/// How long a datagram sent from a backend may take to reach the client.
const ARRIVAL: Duration = Duration::from_secs(2);

/// The gateway `ip route get` in `ns` picks towards `addr`, and the interface.
fn route_to(ns: &str, addr: IpAddr) -> Result<(Option<String>, String)> {
    let out = netns::run(ns, &["ip", "-json", "route", "get", &addr.to_string()])?;
    let routes: serde_json::Value = serde_json::from_str(&out).context("parse ip route get")?;
    let gateway = routes[0]["gateway"].as_str().map(str::to_owned);
    let dev = routes[0]["dev"]
        .as_str()
        .with_context(|| format!("no device in {out}"))?
        .to_owned();
    Ok((gateway, dev))
}

/// The namespaces named like those of a topology with `prefix`.
fn namespaces_with_prefix(prefix: &str) -> Result<Vec<String>> {
    let start = format!("{prefix}-");
    Ok(netns::list()?
        .into_iter()
        .filter(|ns| ns.starts_with(&start))
        .collect())
}

/// The XDP attach mode `ip link` shows for `iface` in `ns` (1: native), if a program is
/// attached.
fn xdp_mode(ns: &str, iface: &str) -> Result<Option<u64>> {
    let out = netns::run(ns, &["ip", "-json", "link", "show", iface])?;
    let links: serde_json::Value = serde_json::from_str(&out).context("parse ip link")?;
    Ok(links[0]["xdp"]["mode"].as_u64())
}

/// Whether tx checksum offload is on for `eth0` in `ns`.
fn tx_checksumming(ns: &str) -> Result<bool> {
    let out = netns::run(ns, &["ethtool", "-k", "eth0"])?;
    let line = out
        .lines()
        .find(|line| line.starts_with("tx-checksumming:"))
        .with_context(|| format!("no tx-checksumming in {out}"))?;
    Ok(line.contains(": on"))
}

/// The lab's veth artefacts are in place: the daemon's program on the LB's `eth0` and the
/// XDP_PASS helper on its peer, the router's `lb`, both native; tx checksum offload off
/// on the client and the backends.
#[test]
fn the_lab_has_the_xdp_pass_helper_on_the_router_and_no_tx_offload() -> Result<()> {
    let lab = RoutedLab::new("brt4")?;
    let topology = &lab.topology;
    for (ns, iface) in [
        (topology.lb_ns(), "eth0"),
        (topology.router_ns(), topology.router_lb_port()),
    ] {
        let mode = xdp_mode(ns, iface)?;
        ensure!(mode == Some(1), "{iface} in {ns}: XDP mode {mode:?}");
    }
    let hosts = (0..topology.backend_count()).map(|i| topology.backend_ns(i));
    for ns in std::iter::once(topology.client_ns()).chain(hosts) {
        ensure!(!tx_checksumming(ns)?, "tx checksum offload is on in {ns}");
    }
    Ok(())
}

/// Dropping a routed lab removes its namespaces, also while a test panics; a topology
/// left by a crashed run is swept by the next build with its prefix.
#[test]
fn routed_namespaces_are_removed_on_drop_on_panic_and_after_a_crash() -> Result<()> {
    let outcome = panic::catch_unwind(AssertUnwindSafe(|| {
        let _lab = RoutedLab::new("brt5").expect("routed lab builds");
        let namespaces = namespaces_with_prefix("brt5").expect("ip netns list");
        assert_eq!(namespaces.len(), 3 + 4, "{namespaces:?}");
        panic!("on purpose, while holding a routed lab");
    }));
    ensure!(outcome.is_err(), "the closure did not panic");
    let left = namespaces_with_prefix("brt5")?;
    ensure!(left.is_empty(), "left after the panic: {left:?}");

    std::mem::forget(RoutedTopology::build("brt5", &["b0".to_owned()])?);
    let left = namespaces_with_prefix("brt5")?;
    ensure!(left.len() == 4, "a crashed run's namespaces: {left:?}");
    ensure!(sweep_stale("brt5")? == 4, "not every namespace was swept");
    let left = namespaces_with_prefix("brt5")?;
    ensure!(left.is_empty(), "left after the sweep: {left:?}");
    Ok(())
}

/// Client, LB and backends reach each other through the router, over IPv4 and IPv6: the
/// client reaches each backend's own address and each backend the client; the LB's route
/// to each backend goes through the router, and the LB reaches it; a backend's datagram
/// from the VIP (a direct reply, as DSR and tunnels send them) reaches the client.
#[test]
fn client_lb_and_backends_reach_each_other_through_the_router() -> Result<()> {
    let lab = RoutedLab::new("brt1")?;
    let topology = &lab.topology;
    let lb = Client::new(topology.lb_ns());
    let _client_server = BackendServer::start(topology.client_ns(), "client")?;
    ensure!(
        lab.serving() == ["b0", "b1", "b2", "b3"],
        "{:?}",
        lab.serving()
    );
    for v6 in [false, true] {
        let client_addr = SocketAddr::new(topology.client_addr(v6), SERVICE_PORT);
        for (i, name) in lab.serving().into_iter().enumerate() {
            let backend = SocketAddr::new(topology.backend_addr(i, v6), SERVICE_PORT);
            let answer = lab.client.ask_once(backend, None)?;
            ensure!(
                answer == name,
                "the client asked {backend}: {answer} answered"
            );

            let from_backend = Client::new(topology.backend_ns(i));
            let answer = from_backend.ask_once(client_addr, None)?;
            ensure!(
                answer == "client",
                "{name} asked the client: {answer} answered"
            );

            let route = route_to(topology.lb_ns(), backend.ip())?;
            let gateway = topology.lb_gateway(v6).to_string();
            ensure!(
                route == (Some(gateway.clone()), "eth0".to_owned()),
                "the LB's route to {backend}: {route:?}, not via {gateway} on eth0"
            );
            let answer = lb.ask_once(backend, None)?;
            ensure!(answer == name, "the LB asked {backend}: {answer} answered");

            let vip = if v6 { VIP6 } else { VIP4 };
            datagram_from_vip(&lab, i, vip, client_addr.ip())?;
        }
    }
    Ok(())
}

/// Backend `index` sends a datagram from `vip` to the client at `client`; it must arrive,
/// from the VIP.
fn datagram_from_vip(lab: &RoutedLab, index: usize, vip: IpAddr, client: IpAddr) -> Result<()> {
    let receiver = netns::in_netns(lab.topology.client_ns(), || UdpSocket::bind((client, 0)))??;
    receiver.set_read_timeout(Some(ARRIVAL))?;
    let to = receiver.local_addr()?;
    let sender = netns::in_netns(lab.topology.backend_ns(index), || UdpSocket::bind((vip, 0)))??;
    sender.send_to(b"direct", to)?;
    let mut buffer = [0u8; 16];
    let (len, from) = receiver
        .recv_from(&mut buffer)
        .with_context(|| format!("backend {index}'s datagram from {vip} to {to}"))?;
    ensure!(
        &buffer[..len] == b"direct" && from.ip() == vip,
        "the client got {:?} from {from}",
        &buffer[..len]
    );
    Ok(())
}

/// Every packet between the client's and the backends' subnets crosses the router: with
/// its forwarding off, the client reaches no backend; on again, it does.
#[test]
fn the_router_forwards_between_the_subnets() -> Result<()> {
    let lab = RoutedLab::new("brt2")?;
    let router = lab.topology.router_ns();
    for (v6, sysctl) in [
        (false, "net/ipv4/ip_forward"),
        (true, "net/ipv6/conf/all/forwarding"),
    ] {
        let backend = SocketAddr::new(lab.topology.backend_addr(0, v6), SERVICE_PORT);
        netns::set_sysctls(router, &[(sysctl, "0")])?;
        let unrouted = lab.client.ask_once(backend, None);
        ensure!(
            unrouted.is_err(),
            "{backend} answered with the router's forwarding off: {unrouted:?}"
        );
        netns::set_sysctls(router, &[(sysctl, "1")])?;
        let answer = lab.client.ask_once(backend, None)?;
        ensure!(answer == "b0", "{backend}: {answer} answered");
    }
    Ok(())
}

/// L2 direct server return needs backends on the LB's link: a DSR service refuses each
/// backend behind the router with the one line naming the gateway (IPv4 and IPv6), and
/// stores nothing.
#[test]
fn a_dsr_service_refuses_backends_behind_the_router() -> Result<()> {
    let lab = RoutedLab::new("brt3")?;
    for (v6, name) in [(false, "web4"), (true, "web6")] {
        let vip = format!("{}/tcp", Lab::vip(v6));
        lab.balancer.ok(&["service", "add", name, "--vip", &vip])?;
        let before = lab.balancer.settings()?;
        for i in 0..lab.topology.backend_count() {
            let backend = lab.topology.backend_addr(i, v6);
            let gateway = lab.topology.lb_gateway(v6);
            let out = lab.balancer.cli(&[
                "backend",
                "add",
                name,
                &backend.to_string(),
                "--group",
                "main",
            ])?;
            let expected = format!(
                "error: backend {backend} is reached through gateway {gateway}: L2 direct \
                 server return needs backends on a directly connected network\n"
            );
            ensure!(
                out.code == Some(REFUSED) && out.stderr == expected,
                "adding {backend} to a DSR service: {out:?}"
            );
        }
        ensure!(
            lab.balancer.settings()? == before,
            "a refused backend changed the services"
        );
    }
    Ok(())
}
