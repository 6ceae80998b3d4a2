//! Live neighbours: the daemon follows a backend whose MAC changes under traffic (a NIC swap
//! or a VM move), resolving backends never holds up other calls, and the CLI gives up on a
//! daemon that does not answer.

use std::{
    net::IpAddr,
    os::unix::net::UnixListener,
    path::Path,
    sync::Barrier,
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, ensure, Context, Result};
use aya::maps::{Array, Map, MapData};
use balancer_common::Backend;
use balancer_tests::{
    balancer::{binary, run_cli, LB_IFACE, REFUSED, UNREACHABLE},
    lab::Lab,
    netns,
    traffic::{LongLived, NewConnections},
};
use balancer_user::{dataplane::bpffs::Layout, neighbor::parse_mac};

/// The MAC backend b0 moves to.
const NEW_MAC: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0xb0, 0x01];

/// Longest wait for the kernel or the data plane to show the new MAC.
const SETTLE: Duration = Duration::from_secs(10);

/// How often the kernel's entry and the data plane's are looked at.
const POLL: Duration = Duration::from_millis(5);

/// The MAC of `eth0` in namespace `ns`.
fn link_mac(ns: &str) -> Result<[u8; 6]> {
    let out = netns::run(ns, &["ip", "-json", "link", "show", "eth0"])?;
    let links: serde_json::Value = serde_json::from_str(&out)?;
    let text = links[0]["address"].as_str().context("no address")?;
    parse_mac(text).with_context(|| format!("bad MAC {text:?}"))
}

/// The MAC of the LB kernel's neighbour entry for `addr`, if it has one.
fn kernel_neighbour(lb_ns: &str, addr: IpAddr) -> Result<Option<[u8; 6]>> {
    let addr = addr.to_string();
    let out = netns::run(
        lb_ns,
        &["ip", "-json", "neigh", "show", &addr, "dev", "eth0"],
    )?;
    let entries: serde_json::Value = serde_json::from_str(&out)?;
    Ok(entries[0]["lladdr"].as_str().and_then(parse_mac))
}

/// The data plane's backend table, read from its pin.
fn backends_map(pin_root: &Path) -> Result<Array<MapData, Backend>> {
    let path = Layout::new(pin_root, LB_IFACE).maps().join("BACKENDS");
    let data = MapData::from_pin(&path).with_context(|| format!("open {}", path.display()))?;
    Ok(Array::try_from(Map::Array(data))?)
}

/// When `look` first returns true, polling every [`POLL`] for at most [`SETTLE`].
fn first_time(mut look: impl FnMut() -> Result<bool>) -> Result<Instant> {
    let start = Instant::now();
    while start.elapsed() < SETTLE {
        if look()? {
            return Ok(Instant::now());
        }
        thread::sleep(POLL);
    }
    bail!("not within {SETTLE:?}")
}

/// Backend b0 changes its MAC under traffic, as after a NIC swap or a VM move. It
/// announces the change the way Linux does with `arp_notify=1` (a gratuitous ARP when the
/// address changes); the LB's kernel updates its neighbour entry from it, and the daemon's
/// neighbour watch rewrites b0's data-plane entry with the same index and epoch. The
/// frames sent to the old MAC in between are lost, and TCP retransmits them: no
/// connection breaks or moves, and new connections keep being answered.
#[test]
fn a_backend_that_changes_its_mac_under_traffic_is_followed() -> Result<()> {
    let lab = Lab::new("bln1")?;
    let vip = lab.weighted_service("web", false, &[100; 4])?;
    let (b0_ns, lb_ns) = (lab.topology.backend_ns(0), lab.topology.lb_ns());
    let b0 = lab.topology.backend_v4(0);
    netns::set_sysctls(b0_ns, &[("net/ipv4/conf/eth0/arp_notify", "1")])?;
    let old_mac = link_mac(b0_ns)?;
    let map = backends_map(lab.balancer.pin_root())?;
    let (index, before) = (0..balancer_common::MAX_BACKENDS)
        .filter_map(|i| map.get(&i, 0).ok().map(|b| (i, b)))
        .find(|(_, b)| b.epoch != 0 && b.dst_mac == old_mac)
        .context("no data-plane entry for b0")?;

    let long_lived = LongLived::open(&lab.client, vip, 40, &[])?;
    let on_b0 = long_lived.count_on("b0");
    ensure!(on_b0 > 0, "no long-lived connection on b0");
    let pings = long_lived.ping_in_background();
    let stream = NewConnections::start(&lab.client, vip);
    thread::sleep(Duration::from_millis(500));

    let (changed, kernel, plane) = thread::scope(|scope| -> Result<_> {
        let kernel =
            scope.spawn(|| first_time(|| Ok(kernel_neighbour(lb_ns, b0)? == Some(NEW_MAC))));
        let plane = scope.spawn(|| first_time(|| Ok(map.get(&index, 0)?.dst_mac == NEW_MAC)));
        thread::sleep(Duration::from_millis(50));
        let changed = Instant::now();
        netns::run(
            b0_ns,
            &["ip", "link", "set", "eth0", "address", "02:00:00:00:b0:01"],
        )?;
        let kernel = kernel
            .join()
            .expect("kernel poller")
            .context("the LB's kernel")?;
        let plane = plane
            .join()
            .expect("map poller")
            .context("the data plane")?;
        Ok((changed, kernel, plane))
    })?;
    let learnt = kernel.saturating_duration_since(changed);
    let followed = plane.saturating_duration_since(kernel);
    println!(
        "b0 changed its MAC; the LB's kernel had it after {learnt:?}, the data plane \
         {followed:?} after the kernel (polled every {POLL:?})"
    );
    let after = map.get(&index, 0)?;
    ensure!(
        after
            == Backend {
                dst_mac: NEW_MAC,
                ..before
            },
        "b0's entry: {before:?} became {after:?}"
    );
    ensure!(
        followed < Duration::from_secs(1),
        "the data plane followed {followed:?} after the kernel"
    );

    // Traffic goes on over the change's aftermath, then everything is checked.
    thread::sleep(Duration::from_secs(2));
    let report = pings.stop();
    let stream = stream.stop();
    println!(
        "{} long-lived connections ({on_b0} on b0): {} failed, {} moved; new connections: \
         {} answered, {} failed",
        report.connections.len(),
        report.failed_connections(),
        report.moved_connections(),
        stream.answered,
        stream.failed
    );
    ensure!(
        report.failed_connections() == 0 && report.moved_connections() == 0,
        "long-lived connections broke or moved: {report:?}"
    );
    ensure!(
        report.connections.iter().all(|c| c.exchanges >= 20),
        "long-lived connections stopped talking: {report:?}"
    );
    stream.ensure_served()?;
    let dist = lab.client.distribution(vip, 200, &[])?;
    ensure!(
        dist.counts.get("b0").copied().unwrap_or(0) > 0 && dist.answered() == 200,
        "new connections after the change: {dist:?}"
    );
    Ok(())
}

/// Five `backend add` of on-link addresses nobody answers run in parallel; each is refused
/// after its resolution time, and `status` meanwhile answers at once: resolution happens
/// off the controller's lock.
#[test]
fn status_answers_while_unreachable_backends_are_resolved() -> Result<()> {
    const ADDS: usize = 5;
    let lab = Lab::new("bln2")?;
    lab.weighted_service("web", false, &[100; 4])?;
    let (bin, socket) = (binary()?, lab.balancer.socket());
    let start = Barrier::new(ADDS + 1);
    let (adds, statuses) = thread::scope(|scope| -> Result<_> {
        let adds: Vec<_> = (0..ADDS)
            .map(|i| {
                let (bin, socket, start) = (&bin, &socket, &start);
                scope.spawn(move || {
                    let addr = format!("198.18.0.{}", 240 + i);
                    start.wait();
                    let begun = Instant::now();
                    let out = run_cli(
                        bin,
                        socket,
                        &["backend", "add", "web", &addr, "--group", "main"],
                    );
                    out.map(|out| (addr, out, begun.elapsed()))
                })
            })
            .collect();
        start.wait();
        // Status, one call after another, while the adds run (at most 15 s).
        let mut statuses = Vec::new();
        let begun = Instant::now();
        while adds.iter().any(|a| !a.is_finished()) && begun.elapsed() < Duration::from_secs(15) {
            let asked = Instant::now();
            let out = run_cli(&bin, &socket, &["status", "--json"])?;
            ensure!(out.code == Some(0), "status failed: {out:?}");
            statuses.push(asked.elapsed());
        }
        let adds = adds
            .into_iter()
            .map(|a| a.join().expect("an add thread panicked"))
            .collect::<Result<Vec<_>>>()?;
        Ok((adds, statuses))
    })?;
    let slowest = statuses.iter().max().copied().unwrap_or_default();
    let add_times: Vec<Duration> = adds.iter().map(|(_, _, took)| *took).collect();
    println!(
        "{ADDS} parallel adds of silent backends took {add_times:?}; meanwhile {} status \
         calls, the slowest {slowest:?}",
        statuses.len()
    );
    for (addr, out, _) in &adds {
        ensure!(
            out.code == Some(REFUSED)
                && out.stderr.trim()
                    == format!(
                        "error: backend {addr} does not answer ARP/neighbour discovery on eth0"
                    ),
            "backend add {addr}: {out:?}"
        );
    }
    ensure!(
        add_times.iter().all(|t| *t >= Duration::from_secs(1)),
        "the adds did not wait for their resolution: {add_times:?}"
    );
    ensure!(statuses.len() >= 3, "too few status calls: {statuses:?}");
    ensure!(
        slowest < Duration::from_secs(2),
        "status waited {slowest:?} behind the resolutions"
    );
    ensure!(lab.balancer.status()?.services[0].backends.len() == 4);
    Ok(())
}

/// A daemon that accepts the connection and never answers: the CLI gives up after
/// `--timeout` with one line naming the call, exit code 3.
#[test]
fn the_cli_gives_up_on_a_silent_daemon_naming_the_call() -> Result<()> {
    let dir = std::env::temp_dir().join(format!("balancer-bln3-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let socket = dir.join("silent.sock");
    std::fs::remove_file(&socket).ok();
    let listener = UnixListener::bind(&socket)?;
    listener.set_nonblocking(true)?;
    let out = thread::scope(|scope| {
        let cli = scope.spawn(|| {
            run_cli(
                &binary()?,
                &socket,
                &[
                    "--timeout",
                    "300ms",
                    "backend",
                    "set-weight",
                    "web",
                    "198.18.0.101",
                    "5",
                ],
            )
        });
        // Accept (holding the connections open) until the CLI is done, at most 10 s.
        let mut held = Vec::new();
        let begun = Instant::now();
        while !cli.is_finished() && begun.elapsed() < Duration::from_secs(10) {
            if let Ok((stream, _)) = listener.accept() {
                held.push(stream);
            }
            thread::sleep(Duration::from_millis(5));
        }
        cli.join().expect("the CLI thread panicked")
    })?;
    std::fs::remove_dir_all(&dir).ok();
    ensure!(
        out.code == Some(UNREACHABLE)
            && out.stderr.trim()
                == "error: the daemon did not answer PUT /services/web/backends/198.18.0.101/weight \
                    within 300ms (--timeout)",
        "{out:?}"
    );
    Ok(())
}
