//! Reading counters and connection tracking.

use std::{collections::HashMap as StdHashMap, time::Duration};

use aya::maps::{HashMap, MapData, PerCpuArray, PerCpuValues};
use balancer_common::{
    BackendStats, FlowKey, FlowState, STAT_DROPPED, STAT_MALFORMED, STAT_MARTIAN, STAT_PASSED,
    STAT_UNBALANCEABLE,
};
use serde::{Deserialize, Serialize};

use super::{map_err, DataPlaneError};

/// Global packet counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GlobalCounters {
    /// Not addressed to a VIP, passed untouched.
    pub passed: u64,
    /// VIP packets dropped because no backend could take them.
    pub dropped: u64,
    /// Malformed or truncated packets (passed to the kernel, never forwarded).
    pub malformed: u64,
    /// IPv4 fragments and IPv6 packets with extension headers, passed to the kernel.
    pub unbalanceable: u64,
    /// VIP packets from a martian source (loopback, multicast, unspecified, reserved),
    /// dropped. Absent from the answers of daemons that did not count them: read as 0.
    #[serde(default)]
    pub martian: u64,
}

impl GlobalCounters {
    pub(super) fn read(map: &PerCpuArray<MapData, u64>) -> Result<Self, DataPlaneError> {
        let read = |index: u32| -> Result<u64, DataPlaneError> {
            let values = map.get(&index, 0).map_err(map_err("read GLOBAL_STATS"))?;
            Ok(values.iter().sum())
        };
        Ok(Self {
            passed: read(STAT_PASSED)?,
            dropped: read(STAT_DROPPED)?,
            malformed: read(STAT_MALFORMED)?,
            unbalanceable: read(STAT_UNBALANCEABLE)?,
            martian: read(STAT_MARTIAN)?,
        })
    }
}

pub(super) fn sum_backend(values: &PerCpuValues<BackendStats>) -> BackendStats {
    values
        .iter()
        .fold(BackendStats::default(), |acc, v| BackendStats {
            packets: acc.packets + v.packets,
            bytes: acc.bytes + v.bytes,
            new_flows: acc.new_flows + v.new_flows,
        })
}

/// Number of recently active tracked flows per (backend index, epoch).
pub type FlowCounts = StdHashMap<(u32, u32), u64>;

/// A handle of its own on connection tracking, for counting flows from any thread without
/// the data plane (and so without the controller's lock): walking a large table takes a
/// while, and nothing else needs to wait for it.
pub struct FlowCounter {
    conntrack: HashMap<MapData, FlowKey, FlowState>,
}

impl FlowCounter {
    /// Opens the pinned connection tracking at `pin`.
    pub fn open(pin: &std::path::Path) -> Result<Self, DataPlaneError> {
        let data = MapData::from_pin(pin).map_err(|source| DataPlaneError::Map {
            context: format!("open {}", pin.display()),
            source,
        })?;
        let conntrack = HashMap::try_from(aya::maps::Map::LruHashMap(data))
            .map_err(map_err("open the pinned CONNTRACK"))?;
        Ok(Self { conntrack })
    }

    /// Tracked flows per (index, epoch) seen within `idle`.
    pub fn count(&self, idle: Duration) -> Result<FlowCounts, DataPlaneError> {
        count_flows(&self.conntrack, idle)
    }
}

pub(super) fn count_flows(
    conntrack: &HashMap<MapData, FlowKey, FlowState>,
    idle: Duration,
) -> Result<FlowCounts, DataPlaneError> {
    let now = monotonic_ns();
    let idle_ns = idle.as_nanos() as u64;
    let mut counts = FlowCounts::new();
    for entry in conntrack.iter() {
        match entry {
            Ok((_, state)) => {
                if now.saturating_sub(state.last_seen_ns) <= idle_ns {
                    *counts.entry((state.backend, state.epoch)).or_default() += 1;
                }
            }
            // An entry evicted while iterating: skip it.
            Err(aya::maps::MapError::KeyNotFound) => continue,
            Err(e) => return Err(map_err("read CONNTRACK")(e)),
        }
    }
    Ok(counts)
}

/// CLOCK_MONOTONIC in nanoseconds: the clock of `bpf_ktime_get_ns`.
fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid out pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}
