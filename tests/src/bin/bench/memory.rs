//! Section: the data plane's memory. Every map of the product object as the kernel created
//! it for the daemon's default connection-tracking size — the maps the loaded program
//! uses, found through the program's map IDs — with its key size, value size and maximum
//! entries from the kernel's map info, the bytes those give, and the kernel's own account
//! (`memlock` in the map's fdinfo). Measured with one service configured, then with as
//! many as the data plane takes, so the per-service tables of a later design can be set
//! against it.

use std::{
    net::IpAddr,
    os::fd::{AsFd, AsRawFd},
};

use anyhow::{bail, Context, Result};
use aya::{
    maps::{MapInfo, MapType},
    programs::loaded_programs,
};
use balancer_common::{DEFAULT_CONNTRACK_ENTRIES, MAX_SERVICES};
use balancer_user::state::Forward;

use crate::{
    plane::{dsr_backend, Plane},
    report::Report,
};

/// The section's name in failures.
const SECTION: &str = "memory";

/// Services the issue asks the data plane to hold.
const WANTED_SERVICES: u32 = 1024;

/// One map as the kernel created it.
struct Map {
    name: String,
    kind: MapType,
    key: u32,
    value: u32,
    entries: u32,
    /// The bytes its key size, value size and entries give (see [`payload`]).
    bytes: u64,
    /// The kernel's own account of its memory.
    memlock: Option<u64>,
}

/// Measures and writes the section.
pub fn run(report: &mut Report) -> Result<()> {
    let cpus = aya::util::nr_cpus().map_err(|(what, e)| anyhow::anyhow!("{what}: {e}"))?;
    let mut plane = Plane::load("memory", DEFAULT_CONNTRACK_ENTRIES)?;
    let mut counts = Vec::new();
    for services in [1, MAX_SERVICES] {
        for i in counts.last().map_or(0, |(n, _)| *n)..services {
            let vip = format!("198.19.{}.{}:80/tcp", 1 + i / 250, 1 + i % 250);
            let backend: IpAddr = format!("198.18.{}.{}", 1 + i / 250, 1 + i % 250).parse()?;
            plane.add_service(&format!("m{i}"), &vip, Forward::default(), &[backend])?;
        }
        plane.publish(|dp, _, b| Ok(dp.set_backend(b.index, &dsr_backend(b), true)?))?;
        counts.push((services, maps(&plane, cpus)?));
    }
    write(report, cpus, &counts);
    let totals: Vec<u64> = counts
        .iter()
        .map(|(_, maps)| maps.iter().map(|m| m.bytes).sum())
        .collect();
    if totals.contains(&0) {
        report.fail(SECTION, "no map of the data plane was found");
    }
    Ok(())
}

/// Every map of the program loaded over `plane`'s pins.
fn maps(plane: &Plane, cpus: usize) -> Result<Vec<Map>> {
    let vips = MapInfo::from_pin(plane.layout().maps().join("VIPS"))
        .context("read the pinned VIPS map")?
        .id();
    let ids = loaded_programs()
        .filter_map(Result::ok)
        .filter_map(|program| program.map_ids().ok().flatten())
        .find(|ids| ids.contains(&vips));
    let Some(ids) = ids else {
        bail!("{SECTION}: no loaded program uses the bench's VIPS map");
    };
    let mut maps = ids
        .into_iter()
        .map(|id| {
            let info = MapInfo::from_id(id).with_context(|| format!("map {id}"))?;
            let kind = info.map_type()?;
            let fd = info.fd()?;
            let memlock = memlock(fd.as_fd().as_raw_fd());
            Ok(Map {
                name: info.name_as_str().unwrap_or("?").to_string(),
                kind,
                key: info.key_size(),
                value: info.value_size(),
                entries: info.max_entries(),
                bytes: payload(
                    kind,
                    info.key_size(),
                    info.value_size(),
                    info.max_entries(),
                    cpus,
                ),
                memlock,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    maps.sort_by(|a, b| b.bytes.cmp(&a.bytes).then(a.name.cmp(&b.name)));
    Ok(maps)
}

/// The bytes a map of `kind` holds by its info: arrays a value per entry (the index is the
/// key), hashes and tries a key and a value per entry, a per-CPU value once per possible
/// CPU, a ring buffer its size (its `entries`). The kernel's bookkeeping per entry or per
/// map is not in it.
fn payload(kind: MapType, key: u32, value: u32, entries: u32, cpus: usize) -> u64 {
    let (key, value, entries, cpus) = (
        u64::from(key),
        u64::from(value),
        u64::from(entries),
        cpus as u64,
    );
    match kind {
        MapType::RingBuf => entries,
        MapType::Array => entries * value,
        MapType::PerCpuArray => entries * value * cpus,
        MapType::PerCpuHash | MapType::LruPerCpuHash => entries * (key + value * cpus),
        _ => entries * (key + value),
    }
}

/// The `memlock` line of the map's fdinfo: the kernel's own account of its memory.
fn memlock(fd: i32) -> Option<u64> {
    let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}")).ok()?;
    info.lines()
        .find_map(|line| line.strip_prefix("memlock:"))
        .and_then(|value| value.trim().parse().ok())
}

/// Bytes in MiB with two decimals.
fn mib(bytes: u64) -> String {
    format!("{:.2}", bytes as f64 / f64::from(1u32 << 20))
}

fn write(report: &mut Report, cpus: usize, counts: &[(u32, Vec<Map>)]) {
    report.line("## Data plane memory\n");
    report.line(format!(
        "Every map of the product object as the kernel created it for the daemon's default \
         connection tracking ({DEFAULT_CONNTRACK_ENTRIES} flows): the maps the loaded \
         program uses (its map IDs), each with its key size, value size and maximum entries \
         from the kernel's map info. *Bytes* is what those give: a value per entry for \
         arrays (the index is the key), a key and a value per entry for hashes and tries, a \
         per-CPU value times the {cpus} possible CPUs, a ring buffer's size; *kernel* is the \
         kernel's own account of the map (`memlock` in its fdinfo), with its per-entry \
         bookkeeping. The data plane holds at most {MAX_SERVICES} services; its tables are \
         allocated for all of them when it is created.\n"
    ));
    let Some((_, first)) = counts.first() else {
        return;
    };
    let last = counts.last().map_or(first, |(_, maps)| maps);
    let rows: Vec<Vec<String>> = last
        .iter()
        .map(|map| {
            vec![
                format!("`{}`", map.name),
                format!("{:?}", map.kind),
                map.key.to_string(),
                map.value.to_string(),
                map.entries.to_string(),
                mib(map.bytes),
                map.memlock.map_or("–".to_string(), mib),
            ]
        })
        .collect();
    report.line(format!(
        "### Maps with {} services configured\n",
        counts.last().map_or(0, |(n, _)| *n)
    ));
    report.table(
        &[
            "map",
            "type",
            "key (B)",
            "value (B)",
            "max entries",
            "bytes (MiB)",
            "kernel (MiB)",
        ],
        &rows,
    );
    let totals: Vec<Vec<String>> = counts
        .iter()
        .map(|(services, maps)| {
            let bytes: u64 = maps.iter().map(|m| m.bytes).sum();
            let kernel: u64 = maps.iter().filter_map(|m| m.memlock).sum();
            vec![
                services.to_string(),
                maps.len().to_string(),
                mib(bytes),
                mib(kernel),
            ]
        })
        .chain(std::iter::once(vec![
            WANTED_SERVICES.to_string(),
            "–".into(),
            format!("not possible: at most {MAX_SERVICES} services"),
            "–".into(),
        ]))
        .collect();
    report.line("### Total by services configured\n");
    report.table(
        &["services", "maps", "bytes (MiB)", "kernel (MiB)"],
        &totals,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_follow_the_map_type() {
        // Arrays: a value per entry, the index is no stored key.
        assert_eq!(payload(MapType::Array, 4, 24, 4096, 2), 24 * 4096);
        // Per-CPU arrays: a value per entry and CPU.
        assert_eq!(payload(MapType::PerCpuArray, 4, 48, 4096, 2), 48 * 4096 * 2);
        // Hashes and tries: a key and a value per entry.
        assert_eq!(payload(MapType::LruHash, 40, 32, 262_144, 2), 72 * 262_144);
        assert_eq!(payload(MapType::LpmTrie, 28, 4, 4096, 2), 32 * 4096);
        // Per-CPU hashes: one key, a value per CPU.
        assert_eq!(payload(MapType::PerCpuHash, 8, 16, 10, 4), 10 * (8 + 64));
        // A ring buffer: its size.
        assert_eq!(payload(MapType::RingBuf, 0, 0, 131_072, 2), 131_072);
    }
}
