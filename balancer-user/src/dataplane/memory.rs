//! The data plane's memory as the kernel accounts it: the `memlock` line of each map's
//! fdinfo (what the kernel charges for the map: its preallocated entries, or for maps
//! that allocate per entry, what they hold).

use std::{
    io,
    os::fd::{AsRawFd, BorrowedFd},
};

use serde::{Deserialize, Serialize};

/// The data plane's memory, from the kernel's account of each map.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Memory {
    /// Bytes of every map together: the shared maps and every service's tables.
    pub total_bytes: u64,
    /// Bytes of the services' tables maps together (one per service in the data plane).
    pub tables_bytes: u64,
    /// Services with a tables map.
    pub tables: u32,
    /// Each shared map (not the services' tables), by name, largest first.
    pub maps: Vec<MapMemory>,
}

/// One map's memory in [`Memory`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MapMemory {
    /// The map's name in the program.
    pub name: String,
    /// Bytes the kernel accounts for it.
    pub bytes: u64,
}

impl Memory {
    /// The memory of the shared maps `maps` (name, bytes) and of the services' tables maps
    /// (bytes each).
    pub(crate) fn new(mut maps: Vec<MapMemory>, tables: impl Iterator<Item = u64>) -> Self {
        maps.sort_by(|a, b| b.bytes.cmp(&a.bytes).then_with(|| a.name.cmp(&b.name)));
        let (mut count, mut tables_bytes) = (0, 0);
        for bytes in tables {
            count += 1;
            tables_bytes += bytes;
        }
        Self {
            total_bytes: tables_bytes + maps.iter().map(|m| m.bytes).sum::<u64>(),
            tables_bytes,
            tables: count,
            maps,
        }
    }
}

/// The bytes the kernel accounts for the map behind `fd` (its fdinfo's `memlock`).
pub(crate) fn memlock(fd: BorrowedFd<'_>) -> io::Result<u64> {
    let path = format!("/proc/self/fdinfo/{}", fd.as_raw_fd());
    let text = std::fs::read_to_string(&path)?;
    parse(&text).ok_or_else(|| io::Error::other(format!("{path} has no memlock line")))
}

/// The `memlock` value of an fdinfo text.
fn parse(fdinfo: &str) -> Option<u64> {
    fdinfo
        .lines()
        .find_map(|line| line.strip_prefix("memlock:"))
        .and_then(|value| value.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memlock_is_read_from_its_line() {
        let fdinfo = "pos:\t0\nflags:\t02000002\nmnt_id:\t15\nino:\t1057\nmap_type:\t2\n\
                      key_size:\t4\nvalue_size:\t64\nmax_entries:\t174\nmap_flags:\t0x1400\n\
                      map_extra:\t0x0\nmemlock:\t16384\nmap_id:\t52\nfrozen:\t0\n";
        assert_eq!(parse(fdinfo), Some(16384));
        assert_eq!(parse("pos:\t0\n"), None);
        assert_eq!(parse("memlock:\tmany\n"), None);
    }

    #[test]
    fn the_total_adds_the_shared_maps_and_the_tables() {
        let maps = vec![
            MapMemory {
                name: "VIPS".into(),
                bytes: 10,
            },
            MapMemory {
                name: "CONNTRACK".into(),
                bytes: 300,
            },
        ];
        let memory = Memory::new(maps, [7, 8, 9].into_iter());
        assert_eq!(memory.total_bytes, 334);
        assert_eq!((memory.tables, memory.tables_bytes), (3, 24));
        assert_eq!(memory.maps[0].name, "CONNTRACK");
    }

    #[test]
    fn a_file_that_is_not_a_map_has_no_memlock() {
        let file = std::fs::File::open("/proc/self/status").unwrap();
        let error = memlock(std::os::fd::AsFd::as_fd(&file)).unwrap_err();
        assert!(error.to_string().contains("no memlock line"), "{error}");
    }
}
