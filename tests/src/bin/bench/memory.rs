//! Section: the data plane's memory. Every map of the product object as the kernel created
//! it for the daemon's default connection-tracking size — the maps the loaded program
//! uses, found through the program's map IDs — with its key size, value size and maximum
//! entries from the kernel's map info, the bytes those give, and the kernel's own account
//! (`memlock` in the map's fdinfo) — and every service's tables map, found through the
//! pinned `TABLES`. Measured with 1, 32 and 1024 services configured (one backend each,
//! the default table size).

use std::{
    net::IpAddr,
    os::fd::{AsFd, AsRawFd},
};

use anyhow::{bail, Context, Result};
use aya::{
    maps::{Array, HashOfMaps, IterableMap, Map as AyaMap, MapData, MapInfo, MapType},
    programs::loaded_programs,
};
use balancer_common::{Chunk, CHUNK_BYTES, DEFAULT_CONNTRACK_ENTRIES, MAX_SERVICES};
use balancer_user::state::Forward;

use crate::{
    plane::{dsr_backend, Plane},
    report::Report,
};

/// The section's name in failures.
const SECTION: &str = "memory";

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

/// The services' tables maps: one per service in `TABLES`, each of its own size.
#[derive(Clone, Copy, Default)]
struct Tables {
    /// How many.
    maps: u32,
    /// Their chunks together.
    entries: u64,
    /// The bytes their chunks give.
    bytes: u64,
    /// The kernel's own account of them, together.
    memlock: u64,
}

/// What was measured with a number of services configured.
struct Measure {
    services: u32,
    /// The maps the program uses (`TABLES` the outer one).
    maps: Vec<Map>,
    tables: Tables,
}

/// Measures and writes the section.
pub fn run(report: &mut Report) -> Result<()> {
    let cpus = aya::util::nr_cpus().map_err(|(what, e)| anyhow::anyhow!("{what}: {e}"))?;
    let mut plane = Plane::load("memory", DEFAULT_CONNTRACK_ENTRIES)?;
    let mut counts: Vec<Measure> = Vec::new();
    for services in [1, 32, MAX_SERVICES] {
        for i in counts.last().map_or(0, |m| m.services)..services {
            let vip = format!("198.19.{}.{}:80/tcp", 1 + i / 250, 1 + i % 250);
            let backend: IpAddr = format!("198.18.{}.{}", 1 + i / 250, 1 + i % 250).parse()?;
            plane.add_service(&format!("m{i}"), &vip, Forward::default(), &[backend])?;
        }
        plane.publish(|dp, _, b| Ok(dp.set_backend(b.index, &dsr_backend(b), true)?))?;
        counts.push(Measure {
            services,
            maps: maps(&plane, cpus)?,
            tables: tables(&plane)?,
        });
    }
    write(report, cpus, &counts);
    if counts
        .iter()
        .any(|m| m.maps.iter().all(|map| map.bytes == 0) || m.tables.maps != m.services)
    {
        report.fail(
            SECTION,
            "no map of the data plane was found, or not one tables map per service",
        );
    }
    Ok(())
}

/// Every service's tables map, through the pinned `TABLES`.
fn tables(plane: &Plane) -> Result<Tables> {
    let pinned = MapData::from_pin(plane.layout().maps().join("TABLES"))
        .context("open the pinned TABLES")?;
    let outer: HashOfMaps<MapData, u32, Array<MapData, Chunk>> =
        AyaMap::HashOfMaps(pinned).try_into()?;
    let mut tables = Tables::default();
    for slot in outer.keys() {
        let map = outer.get(&slot?, 0)?;
        let data = IterableMap::map(&map);
        let entries = u64::from(data.info()?.max_entries());
        tables.maps += 1;
        tables.entries += entries;
        tables.bytes += entries * CHUNK_BYTES as u64;
        tables.memlock += memlock(data.fd().as_fd().as_raw_fd()).unwrap_or(0);
    }
    Ok(tables)
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

fn write(report: &mut Report, cpus: usize, counts: &[Measure]) {
    report.line("## Data plane memory\n");
    report.line(format!(
        "Every map of the product object as the kernel created it for the daemon's default \
         connection tracking ({DEFAULT_CONNTRACK_ENTRIES} flows): the maps the loaded \
         program uses (its map IDs), each with its key size, value size and maximum entries \
         from the kernel's map info. *Bytes* is what those give: a value per entry for \
         arrays (the index is the key), a key and a value per entry for hashes and tries, a \
         per-CPU value times the {cpus} possible CPUs, a ring buffer's size; *kernel* is the \
         kernel's own account of the map (`memlock` in its fdinfo), with its per-entry \
         bookkeeping. Each service's tables are a map of their own in `TABLES` (64-byte \
         chunks: header, split cells, one ring per group of the service's table size, the \
         default 65537 slots here; one backend each), counted apart; the shared maps are \
         sized for the capacities ({MAX_SERVICES} services), whatever is configured.\n"
    ));
    let Some(last) = counts.last() else {
        return;
    };
    let table_row = |t: &Tables| {
        vec![
            format!("services' tables ({})", t.maps),
            "Array".to_string(),
            "4".to_string(),
            CHUNK_BYTES.to_string(),
            t.entries.to_string(),
            mib(t.bytes),
            mib(t.memlock),
        ]
    };
    let rows: Vec<Vec<String>> = last
        .maps
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
        .chain(std::iter::once(table_row(&last.tables)))
        .collect();
    report.line(format!(
        "### Maps with {} services configured\n",
        last.services
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
        .map(|m| {
            let bytes: u64 = m.maps.iter().map(|map| map.bytes).sum();
            let kernel: u64 = m.maps.iter().filter_map(|map| map.memlock).sum();
            vec![
                m.services.to_string(),
                m.maps.len().to_string(),
                mib(bytes),
                mib(kernel),
                mib(m.tables.memlock),
                mib(kernel + m.tables.memlock),
            ]
        })
        .collect();
    report.line("### Total by services configured\n");
    report.table(
        &[
            "services",
            "shared maps",
            "their bytes (MiB)",
            "their kernel (MiB)",
            "tables, kernel (MiB)",
            "total kernel (MiB)",
        ],
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
