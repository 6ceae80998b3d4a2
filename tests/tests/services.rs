//! A thousand services per host (issue 12 §4): 1024 services with a backend each are
//! configured with one `apply`, each VIP is served by its backend, the data plane's memory
//! reported by `status --json` grows with the services, and everything is torn down again,
//! the memory with it.

use std::{fmt::Write as _, net::SocketAddr, time::Instant};

use anyhow::{ensure, Context, Result};
use aya::maps::{Array, HashOfMaps, Map, MapData};
use balancer_common::{Chunk, MAX_SERVICES};
use balancer_tests::{lab::Lab, netns, topology::LB_V4, traffic::SERVICE_PORT};
use balancer_user::{api::Status, dataplane::bpffs::LAYOUT_VERSION};

/// The VIPs' network: routed to the LB by the client, local on every backend's loopback.
const VIP_NET: &str = "198.19.8.0/21";

/// The VIP of service `i`: the `i + 1`-th address of [`VIP_NET`].
fn vip(i: usize) -> SocketAddr {
    let base = u32::from(std::net::Ipv4Addr::new(198, 19, 8, 1));
    SocketAddr::from((std::net::Ipv4Addr::from(base + i as u32), SERVICE_PORT))
}

/// A configuration of services `0..count`, service `i` on [`vip`]`(i)` with lab backend
/// `i % 4` alone, tables of 251 slots.
fn config(lab: &Lab, count: usize) -> Result<String> {
    let mut text = String::new();
    for i in 0..count {
        writeln!(
            text,
            "[[service]]\nname = \"s{i}\"\nvip = \"{}/tcp\"\ntable_size = 251\n\
             [[service.group]]\nname = \"main\"\nbackends = [{{ addr = \"{}\" }}]",
            vip(i),
            lab.topology.backend_v4(i % 4)
        )?;
    }
    Ok(text)
}

/// Applies the services `0..count` (all others removed) and returns the status after.
fn apply(lab: &Lab, count: usize) -> Result<Status> {
    let file = lab.balancer.socket().with_file_name("services.toml");
    std::fs::write(&file, config(lab, count)?)?;
    let start = Instant::now();
    lab.balancer.ok_within(
        &["apply", "-f", &file.to_string_lossy()],
        std::time::Duration::from_secs(300),
    )?;
    println!("apply of {count} services took {:?}", start.elapsed());
    let status = lab.balancer.status()?;
    ensure!(
        status.services.len() == count,
        "{} services",
        status.services.len()
    );
    Ok(status)
}

/// The service slots the pinned `TABLES` holds, read from the kernel.
fn pinned_tables(lab: &Lab) -> Result<usize> {
    let pin = lab
        .balancer
        .pin_root()
        .join(format!("v{LAYOUT_VERSION}"))
        .join("eth0")
        .join("maps")
        .join("TABLES");
    let data = MapData::from_pin(&pin).context("open the pinned TABLES")?;
    let tables: HashOfMaps<MapData, u32, Array<MapData, Chunk>> =
        Map::HashOfMaps(data).try_into()?;
    Ok(tables.keys().filter(Result::is_ok).count())
}

#[test]
fn a_thousand_services_are_configured_served_and_torn_down() -> Result<()> {
    const MANY: usize = MAX_SERVICES as usize;
    const FEW: usize = 32;
    let lab = Lab::new("bsv1")?;
    netns::run(
        lab.topology.client_ns(),
        &["ip", "route", "add", VIP_NET, "via", &LB_V4.to_string()],
    )?;
    for b in 0..4 {
        netns::run(
            lab.topology.backend_ns(b),
            &["ip", "address", "add", VIP_NET, "dev", "lo"],
        )?;
    }
    let none = lab.balancer.status()?.memory;
    ensure!(
        none.tables == 0 && none.total_bytes > 0,
        "before any service: {none:?}"
    );

    let few = apply(&lab, FEW)?.memory;
    let many = apply(&lab, MANY)?.memory;
    // Every service's tables are a map of the same shape: 32 times as many services, 32
    // times the tables' memory; the shared maps do not grow with them.
    ensure!(
        few.tables == FEW as u32 && many.tables == MANY as u32,
        "tables of {} and {} services",
        few.tables,
        many.tables
    );
    ensure!(
        few.tables_bytes > 0 && many.tables_bytes == few.tables_bytes * (MANY / FEW) as u64,
        "the tables' memory does not grow with the services: {} for {FEW}, {} for {MANY}",
        few.tables_bytes,
        many.tables_bytes
    );
    ensure!(
        many.total_bytes - few.total_bytes == many.tables_bytes - few.tables_bytes,
        "the shared maps grew: {few:?} then {many:?}"
    );
    ensure!(pinned_tables(&lab)? == MANY, "TABLES in the kernel");

    // Each VIP is served, by its own backend.
    for i in 0..MANY {
        let answer = lab
            .client
            .ask_once(vip(i), None)
            .with_context(|| format!("service s{i} on {}", vip(i)))?;
        ensure!(
            answer == lab.topology.backend_name(i % 4),
            "service s{i} on {} answered by {answer}",
            vip(i)
        );
    }
    let counted = lab.balancer.status()?;
    let unserved: Vec<&str> = counted
        .services
        .iter()
        .filter(|s| s.backends.len() != 1 || s.backends[0].new_flows == 0)
        .map(|s| s.name.as_str())
        .collect();
    ensure!(unserved.is_empty(), "no new flow counted for {unserved:?}");

    // Back to 32, then none: the tables go, the memory with them.
    let back = apply(&lab, FEW)?.memory;
    ensure!(
        back.tables == FEW as u32 && back.tables_bytes == few.tables_bytes,
        "back to {FEW} services: {back:?}"
    );
    ensure!(pinned_tables(&lab)? == FEW, "TABLES in the kernel");
    let gone = apply(&lab, 0)?.memory;
    ensure!(
        gone.tables == 0 && gone.tables_bytes == 0 && gone.total_bytes == none.total_bytes,
        "after every service went: {gone:?} (before any: {none:?})"
    );
    ensure!(pinned_tables(&lab)? == 0, "TABLES in the kernel");
    Ok(())
}
