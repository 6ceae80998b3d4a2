//! Reading counters and connection tracking.

use std::{
    collections::{BTreeSet, HashMap as StdHashMap, HashSet},
    time::Duration,
};

use aya::maps::{Array, HashMap, IterableMap, MapData, PerCpuArray, PerCpuValues};
use balancer_common::{
    BackendStats, FlowKey, FlowState, NAT_STAT_ERRORS, NAT_STAT_EXHAUSTED, NAT_STAT_FAILED,
    NAT_STAT_REPLIES, NAT_STAT_TOO_BIG, NAT_STAT_UNRESOLVED, NAT_STAT_UNROUTABLE, STAT_DROPPED,
    STAT_MALFORMED, STAT_MARTIAN, STAT_PASSED, STAT_UNBALANCEABLE, TUNNEL_STAT_FAILED,
    TUNNEL_STAT_TOO_BIG, TUNNEL_STAT_UNRESOLVED, TUNNEL_STAT_UNROUTABLE,
};
use serde::{Deserialize, Serialize};

use super::{map_err, pending::PendingTable, unanswered::PendingFlow, DataPlaneError};

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
    /// Packets to tunnelled backends that were not sent out at once. Absent from the
    /// answers of daemons without tunnels: read as 0.
    #[serde(default)]
    pub tunnel: TunnelCounters,
    /// Packets of `nat` backends (either way). Absent from the answers of daemons without
    /// NAT: read as 0.
    #[serde(default)]
    pub nat: NatCounters,
}

/// Packets of `nat` backends: replies rewritten, and what the XDP program could not send
/// out itself.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NatCounters {
    /// Backend replies rewritten to come from their VIP.
    pub replies: u64,
    /// Rewritten packets passed to the kernel to forward: no neighbour entry for the next
    /// hop yet, or longer than the egress MTU.
    pub unresolved: u64,
    /// No route to the backend or the client: dropped.
    pub unroutable: u64,
    /// Headers out of reach, or no rewrite entry: dropped.
    pub failed: u64,
    /// ICMP errors about `nat` flows rewritten to quote the packet as the client sent it.
    /// Absent from the answers of daemons that did not translate them: read as 0.
    #[serde(default)]
    pub errors: u64,
    /// New full-NAT flows dropped: no pool port free towards their backend (or the
    /// translation maps full). Absent from older daemons' answers: read as 0.
    #[serde(default)]
    pub exhausted: u64,
    /// Clients' packets longer than the route's MTU to their backend, answered with ICMP
    /// "fragmentation needed" / "packet too big" from the VIP (IPv4 without DF: dropped).
    /// Absent from older daemons' answers: read as 0.
    #[serde(default)]
    pub too_big: u64,
}

/// Packets to tunnelled backends that the XDP program could not send out itself.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TunnelCounters {
    /// The kernel had no neighbour entry for the next hop: passed to it encapsulated (it
    /// resolves the next hop and forwards them).
    pub unresolved: u64,
    /// No route to the backend (or a blackhole, unreachable, prohibit route): dropped.
    pub unroutable: u64,
    /// No room for the outer headers, or no tunnel entry: dropped.
    pub failed: u64,
    /// Longer than the route's MTU once encapsulated: answered with ICMP "fragmentation
    /// needed" / ICMPv6 "packet too big" (an IPv4 packet without Don't Fragment: dropped).
    /// Absent from the answers of daemons that did not count them: read as 0.
    #[serde(default)]
    pub too_big: u64,
}

impl GlobalCounters {
    pub(super) fn read(
        map: &PerCpuArray<MapData, u64>,
        tunnel: &PerCpuArray<MapData, u64>,
        nat: &PerCpuArray<MapData, u64>,
    ) -> Result<Self, DataPlaneError> {
        let sum = |map: &PerCpuArray<MapData, u64>, index: u32, context: &'static str| {
            let values = map.get(&index, 0).map_err(map_err(context))?;
            Ok::<u64, DataPlaneError>(values.iter().sum())
        };
        let read = |index: u32| sum(map, index, "read GLOBAL_STATS");
        let read_tunnel = |index: u32| tunnel_counter(tunnel, index);
        let read_nat = |index: u32| sum(nat, index, "read NAT_STATS");
        Ok(Self {
            passed: read(STAT_PASSED)?,
            dropped: read(STAT_DROPPED)?,
            malformed: read(STAT_MALFORMED)?,
            unbalanceable: read(STAT_UNBALANCEABLE)?,
            martian: read(STAT_MARTIAN)?,
            tunnel: TunnelCounters {
                unresolved: read_tunnel(TUNNEL_STAT_UNRESOLVED)?,
                unroutable: read_tunnel(TUNNEL_STAT_UNROUTABLE)?,
                failed: read_tunnel(TUNNEL_STAT_FAILED)?,
                too_big: read_tunnel(TUNNEL_STAT_TOO_BIG)?,
            },
            nat: NatCounters {
                replies: read_nat(NAT_STAT_REPLIES)?,
                unresolved: read_nat(NAT_STAT_UNRESOLVED)?,
                unroutable: read_nat(NAT_STAT_UNROUTABLE)?,
                failed: read_nat(NAT_STAT_FAILED)?,
                errors: read_nat(NAT_STAT_ERRORS)?,
                exhausted: read_nat(NAT_STAT_EXHAUSTED)?,
                too_big: read_nat(NAT_STAT_TOO_BIG)?,
            },
        })
    }
}

/// Tunnel counter `index` (`TUNNEL_STAT_*`), summed over CPUs. A data plane pinned by an
/// older build keeps its smaller `TUNNEL_STATS` map (pinned maps are reused as they are):
/// a counter it has no entry for reads as 0.
pub(super) fn tunnel_counter(
    map: &PerCpuArray<MapData, u64>,
    index: u32,
) -> Result<u64, DataPlaneError> {
    match map.get(&index, 0) {
        Ok(values) => Ok(values.iter().sum()),
        Err(e) if super::missing(&e) => Ok(0),
        Err(e) => Err(map_err("read TUNNEL_STATS")(e)),
    }
}

pub(super) fn sum_backend(values: &PerCpuValues<BackendStats>) -> BackendStats {
    values
        .iter()
        .fold(BackendStats::default(), |acc, v| BackendStats {
            packets: acc.packets + v.packets,
            bytes: acc.bytes + v.bytes,
            new_flows: acc.new_flows + v.new_flows,
            fin_closes: acc.fin_closes + v.fin_closes,
            resets: acc.resets + v.resets,
            syn_retransmits: acc.syn_retransmits + v.syn_retransmits,
        })
}

/// Number of active tracked flows per (backend index, epoch).
pub type FlowCounts = StdHashMap<(u32, u32), u64>;

/// A handle of its own on connection tracking (both tables), for counting flows from any
/// thread without the data plane (and so without the controller's lock): walking a large
/// table takes a while, and nothing else needs to wait for it.
pub struct FlowCounter {
    conntrack: HashMap<MapData, FlowKey, FlowState>,
    pending: PendingTable,
    /// Entries `conntrack` holds at most (fixed when the map was created).
    conntrack_capacity: u64,
    /// Full NAT's translations, swept by the same thread that counts.
    pool: std::sync::Mutex<super::fullnat::Pool>,
}

impl FlowCounter {
    /// Opens the pinned connection-tracking tables in the maps directory `maps`.
    pub fn open(maps: &std::path::Path) -> Result<Self, DataPlaneError> {
        let open = |name: &str| -> Result<MapData, DataPlaneError> {
            let pin = maps.join(name);
            MapData::from_pin(&pin).map_err(|source| DataPlaneError::Map {
                context: format!("open {}", pin.display()),
                source,
            })
        };
        let conntrack = HashMap::try_from(aya::maps::Map::LruHashMap(open("CONNTRACK")?))
            .map_err(map_err("open pinned CONNTRACK"))?;
        let pending = Array::try_from(aya::maps::Map::Array(open("PENDING")?))
            .map_err(map_err("open pinned PENDING"))?;
        let info = IterableMap::map(&conntrack)
            .info()
            .map_err(map_err("read CONNTRACK's size"))?;
        Ok(Self {
            conntrack,
            pending: PendingTable::map(pending)?,
            conntrack_capacity: u64::from(info.max_entries()),
            pool: std::sync::Mutex::new(super::fullnat::Pool::open(maps)?),
        })
    }

    /// Frees the full-NAT translations of ended flows (see [`super::fullnat::Pool::sweep`]).
    pub fn sweep(
        &self,
        ending: super::fullnat::Ending,
    ) -> Result<super::fullnat::Swept, DataPlaneError> {
        self.pool
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .sweep(ending)
    }

    /// Every flow of the pending table, expired when `window` has passed since its last
    /// packet (see [`super::unanswered`]).
    pub fn pending(&self, window: Duration) -> Vec<PendingFlow> {
        let now = monotonic_ns();
        self.pending
            .flows()
            .map(|(slot, pending)| {
                let last = pending.state.last_seen_ns.max(pending.state.closed_ns);
                PendingFlow {
                    slot,
                    written: pending.written,
                    backend: (pending.state.backend, pending.state.epoch),
                    expired: now.saturating_sub(last) > window.as_nanos() as u64,
                }
            })
            .collect()
    }

    /// Active tracked flows per (index, epoch) and the entries of each table (see
    /// [`Tracking::census`]).
    pub fn census(&self, idle: Duration) -> Result<Census, DataPlaneError> {
        let census = Tracking {
            conntrack: &self.conntrack,
            pending: &self.pending,
        }
        .census(idle)?;
        Ok(Census {
            established_capacity: self.conntrack_capacity,
            pending_capacity: self.pending.len() as u64,
            ..census
        })
    }
}

/// One walk of connection tracking.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Census {
    /// Active flows per (index, epoch).
    pub active: FlowCounts,
    /// Entries of the established table (active or not).
    pub established: u64,
    /// Flows of the pending table.
    pub pending: u64,
    /// Entries the established table holds at most.
    pub established_capacity: u64,
    /// Slots of the pending table.
    pub pending_capacity: u64,
}

/// How long a flow whose client sent a FIN or RST, or a flow that sent only its first
/// packet (a SYN and its retransmits, one datagram), keeps counting as active after its
/// last packet (or its FIN or RST): it covers a connection's last ACKs, and a handshake.
/// Open flows that sent more than one packet count for `--flow-idle`.
pub const LINGER: Duration = Duration::from_secs(2);

/// Whether a flow (`pending`: from the pending table) is active at `now` (ns, CLOCK_MONOTONIC).
fn active(state: &FlowState, pending: bool, now: u64, idle: Duration) -> bool {
    let window = if pending || state.closed_by != 0 {
        LINGER.min(idle)
    } else {
        idle
    };
    let last = state.last_seen_ns.max(state.closed_ns);
    now.saturating_sub(last) <= window.as_nanos() as u64
}

/// The two connection-tracking tables.
pub(super) struct Tracking<'a> {
    /// Established flows.
    pub conntrack: &'a HashMap<MapData, FlowKey, FlowState>,
    /// The pending table.
    pub pending: &'a PendingTable,
}

impl Tracking<'_> {
    /// Calls `each(key, state, pending)` with every tracked flow: first the pending table's
    /// whole slots (a flow promoted meanwhile is then seen among the established), then the
    /// established flows, skipping entries that go while the map is walked.
    fn walk(&self, mut each: impl FnMut(FlowKey, FlowState, bool)) -> Result<(), DataPlaneError> {
        for (_, slot) in self.pending.flows() {
            each(slot.key, slot.state, true);
        }
        for entry in self.conntrack.iter() {
            match entry {
                Ok((key, state)) => each(key, state, false),
                Err(aya::maps::MapError::KeyNotFound) => continue,
                Err(e) => return Err(map_err("read CONNTRACK")(e)),
            }
        }
        Ok(())
    }

    /// Active flows per backend, and the entries of each table (the capacities are the
    /// caller's to fill).
    pub(super) fn census(&self, idle: Duration) -> Result<Census, DataPlaneError> {
        let now = monotonic_ns();
        let mut census = Census::default();
        self.walk(|_, state, pending| {
            match pending {
                true => census.pending += 1,
                false => census.established += 1,
            }
            if active(&state, pending, now, idle) {
                *census
                    .active
                    .entry((state.backend, state.epoch))
                    .or_default() += 1;
            }
        })?;
        Ok(census)
    }

    /// (destination port, protocol) of the active flows.
    pub(super) fn active_ports(
        &self,
        idle: Duration,
    ) -> Result<BTreeSet<(u16, u8)>, DataPlaneError> {
        let now = monotonic_ns();
        let mut ports = BTreeSet::new();
        self.walk(|key, state, pending| {
            if active(&state, pending, now, idle) {
                ports.insert((u16::from_be(key.dport_be), key.proto));
            }
        })?;
        Ok(ports)
    }
}

/// Forgets the flows pinned to any of `backends`: removes them from `conntrack` and empties
/// their pending slots. Returns how many it forgot.
pub(super) fn forget(
    conntrack: &mut HashMap<MapData, FlowKey, FlowState>,
    pending: &mut PendingTable,
    backends: &HashSet<(u32, u32)>,
) -> Result<u64, DataPlaneError> {
    let doomed: Vec<usize> = pending
        .flows()
        .filter(|(_, slot)| backends.contains(&(slot.state.backend, slot.state.epoch)))
        .map(|(index, _)| index)
        .collect();
    let mut forgotten = doomed.len() as u64;
    for index in doomed {
        pending.empty(index);
    }
    let mut doomed = Vec::new();
    for entry in conntrack.iter() {
        match entry {
            Ok((key, state)) if backends.contains(&(state.backend, state.epoch)) => {
                doomed.push(key)
            }
            Ok(_) | Err(aya::maps::MapError::KeyNotFound) => {}
            Err(e) => return Err(map_err("read CONNTRACK")(e)),
        }
    }
    for key in doomed {
        match conntrack.remove(&key) {
            Ok(()) => forgotten += 1,
            // Evicted or ended since it was read.
            Err(e) if super::missing(&e) => {}
            Err(e) => return Err(map_err("remove from CONNTRACK")(e)),
        }
    }
    Ok(forgotten)
}

/// CLOCK_MONOTONIC in nanoseconds: the clock of the program's timestamps
/// (`bpf_ktime_get_coarse_ns`).
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid out pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    fn flow(last_seen_s: u64, closed_s: Option<u64>) -> FlowState {
        FlowState {
            last_seen_ns: last_seen_s * S,
            closed_ns: closed_s.map_or(0, |c| c * S),
            closed_by: u32::from(closed_s.is_some()),
            ..FlowState::default()
        }
    }

    /// An established flow's activity.
    fn active_at(state: &FlowState, now: u64, idle: Duration) -> bool {
        active(state, false, now, idle)
    }

    #[test]
    fn open_flows_count_for_the_idle_time_closed_ones_for_the_linger() {
        let idle = Duration::from_secs(120);
        let now = 1000 * S;
        assert!(active_at(&flow(880, None), now, idle));
        assert!(!active_at(&flow(879, None), now, idle));
        // Closed: the linger after its last packet or its close, whichever is later.
        assert!(active_at(&flow(998, Some(990)), now, idle));
        assert!(active_at(&flow(990, Some(998)), now, idle));
        assert!(!active_at(&flow(997, Some(990)), now, idle));
        // An idle time shorter than the linger bounds it too.
        let short = Duration::from_millis(500);
        assert!(!active_at(&flow(999, Some(999)), now, short));
    }

    #[test]
    fn pending_flows_count_for_the_linger_only() {
        let idle = Duration::from_secs(120);
        let now = 1000 * S;
        assert!(active(&flow(998, None), true, now, idle));
        assert!(!active(&flow(997, None), true, now, idle));
        assert!(!active(&flow(997, Some(997)), true, now, idle));
    }

    #[test]
    fn an_answer_without_the_too_big_counter_reads_it_as_zero() {
        let older: TunnelCounters =
            serde_json::from_str(r#"{"unresolved":1,"unroutable":2,"failed":3}"#).unwrap();
        let expected = TunnelCounters {
            unresolved: 1,
            unroutable: 2,
            failed: 3,
            too_big: 0,
        };
        assert_eq!(older, expected);
    }
}
