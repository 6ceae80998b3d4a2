//! The documented limits (1024 services, 16 groups, 64 pins, 65,536 backends) are refused with one line at the limit, changing nothing; a
//! non-default table size serves; removing a backend or a service with live connections
//! does what the README says; a flood of new flows far beyond the connection-tracking size
//! evicts no established flow.

use anyhow::{ensure, Context, Result};
use balancer_tests::{
    balancer::DaemonOptions,
    lab::Lab,
    netns,
    topology::VIP4,
    traffic::{LongLived, Qdisc, RawSender},
};
use etherparse::PacketBuilder;

#[test]
fn limits_are_refused_at_the_limit_and_change_nothing() -> Result<()> {
    use std::fmt::Write as _;
    const SERVICES: usize = balancer_common::MAX_SERVICES as usize;
    const GROUPS: usize = balancer_common::MAX_GROUPS as usize;
    let lab = Lab::new("bll1")?;
    // 1024 services per host, applied at once.
    let file = lab.balancer.socket().with_file_name("services.toml");
    let mut config = String::new();
    for i in 0..SERVICES {
        writeln!(
            config,
            "[[service]]\nname = \"s{i}\"\nvip = \"198.19.0.10:{}/tcp\"",
            10_000 + i
        )?;
    }
    std::fs::write(&file, &config)?;
    lab.balancer.ok_within(
        &["apply", "-f", &file.to_string_lossy()],
        std::time::Duration::from_secs(300),
    )?;
    let before = lab.balancer.settings()?;
    ensure!(before.len() == SERVICES, "{} services", before.len());
    let out = lab
        .balancer
        .cli(&["service", "add", "extra", "--vip", "198.19.0.99:80/tcp"])?;
    ensure!(
        out.code == Some(1)
            && out.stderr.trim()
                == format!("error: no room for another service (at most {SERVICES})"),
        "{out:?}"
    );
    ensure!(
        lab.balancer.settings()? == before,
        "a refused service changed the state"
    );
    std::fs::write(
        &file,
        "[[service]]\nname = \"s0\"\nvip = \"198.19.0.10:10000/tcp\"\n",
    )?;
    lab.balancer.ok_within(
        &["apply", "-f", &file.to_string_lossy()],
        std::time::Duration::from_secs(300),
    )?;
    // 16 groups per service (one backend each).
    let addrs = lab.unanswering_backends(GROUPS)?;
    for (i, addr) in addrs.iter().enumerate() {
        lab.balancer.ok(&[
            "backend",
            "add",
            "s0",
            &addr.to_string(),
            "--group",
            &format!("g{i}"),
        ])?;
    }
    let out = lab.balancer.cli(&[
        "backend",
        "add",
        "s0",
        "198.18.0.250",
        "--group",
        &format!("g{GROUPS}"),
    ])?;
    ensure!(
        out.code == Some(1)
            && out.stderr.trim()
                == format!("error: service \"s0\" already has the most groups allowed ({GROUPS})"),
        "{out:?}"
    );
    // 64 client pins per service.
    for i in 0..64 {
        lab.balancer.ok(&[
            "pin",
            "add",
            "s0",
            &format!("198.18.{}.0/24", 100 + i),
            "--group",
            "g1",
        ])?;
    }
    let before = lab.balancer.settings()?;
    let out = lab
        .balancer
        .cli(&["pin", "add", "s0", "198.18.200.0/24", "--group", "g1"])?;
    ensure!(
        out.code == Some(1)
            && out.stderr.trim() == "error: service \"s0\" already has the most pins allowed (64)",
        "{out:?}"
    );
    ensure!(
        lab.balancer.settings()? == before,
        "a refused pin changed the state"
    );
    Ok(())
}

#[test]
fn a_small_table_serves_and_removals_with_live_connections_do_what_the_readme_says() -> Result<()> {
    let lab = Lab::new("bll2")?;
    let vip = lab.service_with("web", false, &["main"; 4], &["--table-size", "251"])?;
    let status = lab.balancer.status()?;
    ensure!(
        status.services[0].table_size == 251,
        "{:?}",
        status.services[0]
    );
    let dist = lab.client.distribution(vip, 400, &[])?;
    ensure!(
        dist.counts.len() == 4,
        "a 251-slot table should reach all four: {dist:?}"
    );

    // Removing a backend retires it: it gets no new flow, and its established flows keep
    // reaching it. (The short connections above count as active for the flow idle time,
    // 2 s: let them go idle first, so that only the long-lived ones count.)
    std::thread::sleep(std::time::Duration::from_millis(2500));
    let mut long_lived = LongLived::open(&lab.client, vip, 40, &[])?;
    let on_b0 = long_lived.count_on("b0");
    ensure!(on_b0 > 0, "no connection on b0");
    let b0 = lab.topology.backend_v4(0).to_string();
    lab.balancer.ok(&["backend", "remove", "web", &b0])?;
    let answers = long_lived.ping_all()?;
    ensure!(
        answers == long_lived.original_backends(),
        "a removed backend's connections moved: {answers:?}"
    );
    let status = lab.balancer.status()?;
    let retired = &status.services[0].retired;
    ensure!(
        retired.len() == 1
            && retired[0].addr.to_string() == b0
            && retired[0].active_flows == on_b0 as u64,
        "{on_b0} connections on b0; retired: {retired:?}"
    );
    let dist = lab.client.distribution(vip, 100, &[])?;
    ensure!(
        !dist.counts.contains_key("b0"),
        "b0 got new flows: {dist:?}"
    );
    let text = lab.balancer.ok(&["status"])?;
    ensure!(text.contains("retired since"), "status text: {text}");

    // Added again, it is revived with its flows; removed again, it retires again.
    lab.balancer
        .ok(&["backend", "add", "web", &b0, "--group", "main"])?;
    ensure!(lab.balancer.status()?.services[0].retired.is_empty());
    let answers = long_lived.ping_all()?;
    ensure!(
        answers == long_lived.original_backends(),
        "a revived backend's connections moved: {answers:?}"
    );
    lab.balancer.ok(&["backend", "remove", "web", &b0])?;

    // Cut, its flows are re-balanced: over TCP the new backend resets them; the other
    // connections carry on.
    lab.balancer
        .ok(&["backend", "remove", "web", &b0, "--cut"])?;
    ensure!(lab.balancer.status()?.services[0].retired.is_empty());
    for (i, original) in long_lived.original_backends().to_vec().iter().enumerate() {
        let answer = long_lived.ping_one(i);
        if original == "b0" {
            ensure!(
                answer.is_err(),
                "connection {i} on removed b0 still answered: {answer:?}"
            );
        } else {
            ensure!(
                answer.as_deref().ok() == Some(original.as_str()),
                "connection {i} on {original} broke: {answer:?}"
            );
        }
    }
    // Removing the service: its VIP's packets go to the kernel, which has no such
    // address: the rest of the connections end too, and new ones fail.
    lab.balancer.ok(&["service", "remove", "web"])?;
    ensure!(
        lab.client.ask_once(vip, None).is_err(),
        "a removed service still answered"
    );
    Ok(())
}

#[test]
fn a_vip_change_through_apply_keeps_old_flows_and_moves_new_ones() -> Result<()> {
    let lab = Lab::new("bll3")?;
    let old = Lab::vip(false);
    let new = std::net::SocketAddr::new("198.19.0.77".parse()?, old.port());
    // The backends hold the new VIP too (direct server return answers from it).
    for i in 0..4 {
        balancer_tests::netns::run(
            lab.topology.backend_ns(i),
            &["ip", "address", "add", "198.19.0.77/32", "dev", "lo"],
        )?;
    }
    let config = |vip: std::net::SocketAddr| {
        let backends: Vec<String> = (0..4)
            .map(|i| format!("{{ addr = \"{}\" }}", lab.topology.backend_v4(i)))
            .collect();
        format!(
            "[[service]]\nname = \"web\"\nvip = \"{vip}/tcp\"\n[[service.group]]\nname = \"main\"\nbackends = [{}]\n",
            backends.join(", ")
        )
    };
    let file = lab.balancer.socket().with_file_name("web.toml");
    std::fs::write(&file, config(old))?;
    lab.balancer.ok(&["apply", "-f", file.to_str().unwrap()])?;
    let mut long_lived = LongLived::open(&lab.client, old, 20, &[])?;
    std::fs::write(&file, config(new))?;
    lab.balancer.ok(&["apply", "-f", file.to_str().unwrap()])?;
    let status = lab.balancer.status()?;
    ensure!(
        status.services[0].vip.addr == new,
        "{:?}",
        status.services[0].vip
    );
    let dist = lab.client.distribution(new, 100, &[])?;
    ensure!(dist.answered() == 100, "{dist:?}");
    // The service kept its backends: connections to the old VIP keep reaching them.
    for (i, original) in long_lived.original_backends().to_vec().iter().enumerate() {
        let answer = long_lived.ping_one(i);
        ensure!(
            answer.as_deref().ok() == Some(original.as_str()),
            "connection {i} to the old VIP: {answer:?}"
        );
    }
    ensure!(
        lab.client.ask_once(old, None).is_err(),
        "the old VIP still takes new connections"
    );
    Ok(())
}

#[test]
fn a_vip_port_change_keeps_old_flows_until_they_end() -> Result<()> {
    let lab = Lab::new("blt2")?;
    let old = Lab::vip(false);
    let config = |port: u16| {
        let backends: Vec<String> = (0..4)
            .map(|i| format!("{{ addr = \"{}\" }}", lab.topology.backend_v4(i)))
            .collect();
        format!(
            "[[service]]\nname = \"web\"\nvip = \"{}:{port}/tcp\"\n[[service.group]]\nname = \"main\"\nbackends = [{}]\n",
            old.ip(),
            backends.join(", ")
        )
    };
    let file = lab.balancer.socket().with_file_name("web.toml");
    std::fs::write(&file, config(old.port()))?;
    lab.balancer.ok(&["apply", "-f", file.to_str().unwrap()])?;
    let long_lived = LongLived::open(&lab.client, old, 12, &[])?;
    // The service moves to another port: no VIP serves port 80 any more, but the data
    // plane keeps looking its packets up while flows to it are active — over more than one
    // of the daemon's 10 s checks.
    std::fs::write(&file, config(8080))?;
    lab.balancer.ok(&["apply", "-f", file.to_str().unwrap()])?;
    let pings = long_lived.ping_in_background();
    std::thread::sleep(std::time::Duration::from_secs(12));
    let report = pings.stop();
    ensure!(
        report.failed_connections() == 0 && report.moved_connections() == 0,
        "{report:?}"
    );
    ensure!(
        lab.client.ask_once(old, None).is_err(),
        "the old port still takes new connections"
    );
    // Once they ended (and the idle time passed), the daemon closes the port.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let log = std::fs::read_to_string(lab.balancer.log_path())?;
        let closed = log.lines().any(|line| {
            let plain = without_colors(line);
            plain.contains("former VIP port without flows") && plain.contains("port=80 ")
        });
        if closed {
            break;
        }
        ensure!(
            std::time::Instant::now() < deadline,
            "port 80 not closed within 20 s; log:\n{}",
            lab.balancer.log_tail()
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    Ok(())
}

/// `line` without its ANSI color sequences (ESC [ ... m).
fn without_colors(line: &str) -> String {
    let mut plain = String::new();
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            chars.by_ref().find(|&c| c == 'm');
        } else {
            plain.push(c);
        }
    }
    plain
}

#[test]
fn the_last_of_65536_backends_is_taken_and_the_next_refused() -> Result<()> {
    use std::fmt::Write as _;
    const MAX: usize = balancer_common::MAX_BACKENDS as usize;
    const SERVICES: usize = 4;
    let lab = Lab::new("bll4")?;
    // 65,537 addresses that no host answers, each with a static neighbour entry.
    let addrs = lab.unanswering_backends(MAX + 1)?;
    let addr = |i: usize| addrs[i];

    // Four services of 16,384 backends, applied one service more each time (only the new
    // backends are located).
    let file = lab.balancer.socket().with_file_name("many.toml");
    let mut config = String::new();
    let per_service = MAX / SERVICES;
    for s in 0..SERVICES {
        let backends: Vec<String> = (s * per_service..(s + 1) * per_service)
            .map(|i| format!("{{ addr = \"{}\" }}", addr(i)))
            .collect();
        writeln!(
            config,
            "[[service]]\nname = \"s{s}\"\nvip = \"198.19.0.{}:80/tcp\"\n[[service.group]]\nname = \"main\"\nbackends = [{}]",
            10 + s,
            backends.join(", ")
        )?;
        std::fs::write(&file, &config)?;
        let start = std::time::Instant::now();
        lab.balancer.ok_within(
            &["apply", "-f", file.to_str().unwrap()],
            std::time::Duration::from_secs(300),
        )?;
        println!("apply of service {s} took {:?}", start.elapsed());
    }
    let count = |services: &[balancer_user::api::ServiceStatus]| -> usize {
        services.iter().map(|s| s.backends.len()).sum()
    };
    let before = lab.balancer.settings()?;
    ensure!(count(&before) == MAX, "{} backends", count(&before));
    let next = addr(MAX).to_string();
    let out = lab
        .balancer
        .cli(&["backend", "add", "s0", &next, "--group", "main"])?;
    ensure!(
        out.code == Some(1)
            && out.stderr.trim() == format!("error: no room for another backend (at most {MAX})"),
        "{out:?}"
    );
    ensure!(
        lab.balancer.settings()? == before,
        "a refused backend changed the state"
    );
    // A freed place is taken again: the removed backend retires, and goes within a second or
    // so since no flow of it is active.
    lab.balancer
        .ok(&["backend", "remove", "s3", &addr(MAX - 1).to_string()])?;
    let start = std::time::Instant::now();
    while lab
        .balancer
        .status()?
        .services
        .iter()
        .any(|s| !s.retired.is_empty())
    {
        ensure!(
            start.elapsed() < std::time::Duration::from_secs(5),
            "the idle retired backend did not go"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    lab.balancer
        .ok(&["backend", "add", "s3", &next, "--group", "main"])?;
    ensure!(count(&lab.balancer.settings()?) == MAX);
    Ok(())
}

/// New flows by backend name in the service `name` of `status`.
fn new_flows(lab: &Lab, name: &str) -> Result<std::collections::BTreeMap<String, u64>> {
    let status = lab.balancer.status()?;
    let service = status
        .services
        .iter()
        .find(|s| s.name == name)
        .with_context(|| format!("no service {name}"))?;
    Ok((0..4)
        .filter_map(|i| {
            let addr = lab.topology.backend_v4(i);
            let b = service.backends.iter().find(|b| b.addr == addr)?;
            Some((lab.topology.backend_name(i).to_string(), b.new_flows))
        })
        .collect())
}

#[test]
fn a_flood_of_new_flows_evicts_no_established_flow() -> Result<()> {
    const CONNTRACK: u32 = 4096;
    let lab = Lab::with_options(
        "blt3",
        DaemonOptions {
            conntrack_size: CONNTRACK,
            ..DaemonOptions::default()
        },
    )?;
    let vip = lab.weighted_service("web", false, &[100; 4])?;
    lab.udp_service("dns", false, &["main"; 4], &[100; 4])?;
    let mut busy = LongLived::open(&lab.client, vip, 50, &[])?;
    let mut quiet = LongLived::open(&lab.client, vip, 20, &[])?;
    let mut quiet_udp = LongLived::open_udp(&lab.client, vip, 10, &[])?;
    // Each flow has now sent more than its first packet (a UDP flow: its second datagram
    // now): all are established.
    busy.ping_all()?;
    quiet.ping_all()?;
    ensure!(
        quiet_udp.ping_all()? == quiet_udp.original_backends(),
        "UDP moved"
    );
    // From now on every new flow goes to b3: a flow balanced afresh would move there.
    for i in 0..3 {
        let addr = lab.topology.backend_v4(i).to_string();
        for service in ["web", "dns"] {
            lab.balancer
                .ok(&["backend", "set-weight", service, &addr, "0"])?;
        }
    }
    let movable = quiet
        .original_backends()
        .iter()
        .chain(busy.original_backends())
        .filter(|b| *b != "b3")
        .count();
    ensure!(movable >= 30, "only {movable} connections would move");
    let quiet_since = std::time::Instant::now();
    let pings = busy.ping_in_background();

    // The flood: SYNs and datagrams from random sources in 198.18.128.0/17 (which the
    // backends have no route back to) and random ports, each 5-tuple new, 20x and 10x the
    // connection-tracking size, sent as raw frames from the client's interface. Each SYN
    // is sent twice in a row (a retransmit): a flow's second packet is what makes a kernel
    // LRU keep the flood's entries and evict quiet flows instead.
    let (client_mac, lb_mac) = (
        netns::eth0_mac(lab.topology.client_ns())?,
        netns::eth0_mac(lab.topology.lb_ns())?,
    );
    let std::net::IpAddr::V4(vip4) = VIP4 else {
        unreachable!("an IPv4 VIP");
    };
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let mut syn_frames: Vec<Vec<u8>> = Vec::new();
    let mut udp_frames: Vec<Vec<u8>> = Vec::new();
    let (syns, datagrams) = (20 * CONNTRACK, 10 * CONNTRACK);
    for i in 0..syns + datagrams {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let source = [198, 18, 128 | (rng >> 8) as u8 & 0x7f, rng as u8];
        let port = 1024 + (rng >> 16) as u16 % 60_000;
        let builder = PacketBuilder::ethernet2(client_mac, lb_mac).ipv4(source, vip4.octets(), 64);
        let mut frame = Vec::new();
        if i < syns {
            builder
                .tcp(port, vip.port(), rng as u32, 64_240)
                .syn()
                .write(&mut frame, &[])?;
            syn_frames.push(frame);
        } else {
            builder.udp(port, vip.port()).write(&mut frame, b"flood")?;
            udp_frames.push(frame);
        }
    }
    let frames: Vec<Vec<u8>> = syn_frames
        .iter()
        .flat_map(|syn| [syn.clone(), syn.clone()])
        .chain(udp_frames)
        .collect();
    let before = (new_flows(&lab, "web")?, new_flows(&lab, "dns")?);
    let sender = netns::in_netns(lab.topology.client_ns(), || {
        RawSender::open("eth0", Qdisc::Use)
    })??;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let taken = sender.send_until(&frames, 1, Some(deadline))?;
    let after = (new_flows(&lab, "web")?, new_flows(&lab, "dns")?);
    let flooded =
        |before: &std::collections::BTreeMap<String, u64>,
         after: &std::collections::BTreeMap<String, u64>| { after["b3"] - before["b3"] };
    let (tcp, udp) = (flooded(&before.0, &after.0), flooded(&before.1, &after.1));
    println!("flood: {taken} frames sent; new flows seen: {tcp} TCP, {udp} UDP");
    ensure!(
        tcp >= u64::from(10 * CONNTRACK) && udp >= u64::from(5 * CONNTRACK),
        "the flood did not reach the data plane: {taken} sent, {tcp} TCP and {udp} UDP new flows"
    );

    // The quiet connections waited 10 s or more through the flood: they still reach their
    // backends, like the busy ones did all along.
    std::thread::sleep(std::time::Duration::from_secs(10).saturating_sub(quiet_since.elapsed()));
    let answers = quiet.ping_all()?;
    ensure!(
        answers == quiet.original_backends(),
        "quiet connections moved: {answers:?} (were {:?})",
        quiet.original_backends()
    );
    let answers = quiet_udp.ping_all()?;
    ensure!(
        answers == quiet_udp.original_backends(),
        "quiet UDP flows moved: {answers:?} (were {:?})",
        quiet_udp.original_backends()
    );
    let report = pings.stop();
    ensure!(
        report.failed_connections() == 0 && report.moved_connections() == 0,
        "busy connections: {report:?}"
    );
    Ok(())
}
