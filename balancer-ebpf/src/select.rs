//! Backend selection: connection tracking first, then group split and weighted Maglev.

use aya_ebpf::helpers::generated::bpf_ktime_get_coarse_ns;
use balancer_common::{
    flow_hash, ring_index, tables_index, vip_port_bit, Backend, FlowKey, FlowState, VipKey,
    CLOSED_BY_FIN, CLOSED_BY_RST, FLAG_CLIENT_AFFINITY, FLAG_HAS_CLIENT_PINS, MAX_GROUPS, NONE,
    NO_GROUP, TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN,
};

use crate::{
    maps::{
        client_pin_group, BACKENDS, CONNTRACK, GENERATION, PENDING, RINGS, TABLES, VIPS, VIP_PORTS,
    },
    martian,
};

/// Refresh a flow's last-seen time at most this often, to keep writes off the hot path.
const LAST_SEEN_GRANULARITY_NS: u64 = 1_000_000_000;

/// Outcome of selection for one packet.
pub enum Selection<'a> {
    /// Not addressed to a configured VIP.
    NotVip,
    /// A VIP packet from a martian source (an address no client can send from).
    Martian,
    /// A VIP packet of `service` that no backend can take.
    NoBackend { service: u32 },
    /// A VIP packet of `service` whose ring slot (ring `group` of table generation
    /// `generation`) names backend `index`, whose entry is cleared: a bug signal, since
    /// backends are written before the tables that name them and cleared after.
    EmptySlot {
        service: u32,
        generation: u32,
        group: u32,
        index: u32,
    },
    /// Forward to this backend.
    Backend {
        index: u32,
        backend: &'a Backend,
        new_flow: bool,
    },
}

/// What one packet's TCP flags mean to connection tracking (UDP: none of them).
#[derive(Clone, Copy)]
struct Signals {
    /// A SYN without ACK: opens a connection (or retransmits the opening).
    syn: bool,
    /// `CLOSED_BY_*` bits of a FIN or RST, 0 if neither.
    closing: u32,
}

impl Signals {
    #[inline(always)]
    fn of(tcp_flags: u8) -> Self {
        let mut closing = 0;
        if tcp_flags & TCP_FIN != 0 {
            closing |= CLOSED_BY_FIN;
        }
        if tcp_flags & TCP_RST != 0 {
            closing |= CLOSED_BY_RST;
        }
        Self {
            syn: tcp_flags & (TCP_SYN | TCP_ACK) == TCP_SYN,
            closing,
        }
    }
}

/// What a tracked entry says about a packet of its flow.
enum Tracked {
    /// Forward to the flow's backend.
    Follow(Selection<'static>),
    /// A SYN on a closed flow: a new connection on the same 5-tuple, balanced afresh.
    Reopen,
    /// The flow's backend is gone (epoch changed): balanced afresh.
    Stale,
}

/// Finds the backend for the flow `key`, recording new flows in connection tracking.
///
/// First a pre-filter: a packet whose destination port and protocol no VIP (current, or
/// former with flows left) serves is not ours, at the cost of one array read. Then
/// `CONNTRACK`, the flows that sent more than one packet: an established flow costs one
/// hash lookup. Then `PENDING`, the flows that sent only their first packet: the client's
/// next packet that is neither a SYN nor a FIN or RST promotes the flow into `CONNTRACK`,
/// so a flood of one-packet flows (SYNs, datagrams) churns `PENDING` only. Only then the
/// VIP map: a flow whose VIP was withdrawn while its backend stayed keeps that backend.
///
/// Entries exist only for flows that were addressed to a VIP from a source that is not
/// martian (checked here, for new flows only); an entry whose backend was removed (epoch
/// changed) is ignored. A client's FIN or RST marks its flow closed; the flow keeps its
/// backend for its last packets, but a SYN on a closed flow is a new connection, balanced
/// by the current tables.
#[inline(always)]
pub fn backend_for(key: &FlowKey, tcp_flags: u8) -> Selection<'static> {
    let port = u32::from(u16::from_be(key.dport_be));
    match VIP_PORTS.get(port) {
        Some(bits) if *bits & vip_port_bit(key.proto) != 0 => {}
        _ => return Selection::NotVip,
    }
    let signals = Signals::of(tcp_flags);
    let mut reopen = false;
    if let Some(state) = CONNTRACK.get_ptr_mut(key) {
        match tracked(state, signals) {
            Tracked::Follow(selection) => return selection,
            Tracked::Reopen => reopen = true,
            Tracked::Stale => {}
        }
    }
    if !reopen {
        if let Some(state) = PENDING.get_ptr_mut(key) {
            match tracked(state, signals) {
                Tracked::Follow(selection) => {
                    // SAFETY: the pointer stays valid during this program run (RCU).
                    if !signals.syn && signals.closing == 0 && unsafe { (*state).closed_by } == 0 {
                        promote(key, state);
                    }
                    return selection;
                }
                Tracked::Reopen | Tracked::Stale => {}
            }
        }
    }
    balance(key, signals, reopen)
}

/// Follows a tracked entry: a packet of its flow goes to its backend while that backend
/// has the recorded epoch, except a SYN on a closed flow. Refreshes the last-seen time (at
/// most once a second) and records the client's first FIN or RST; an established packet
/// writes nothing else.
#[inline(always)]
fn tracked(state: *mut FlowState, signals: Signals) -> Tracked {
    // SAFETY: the pointer stays valid during this program run (RCU); fields are plain data.
    let (index, epoch, last_seen, closed_by) = unsafe {
        (
            (*state).backend,
            (*state).epoch,
            (*state).last_seen_ns,
            (*state).closed_by,
        )
    };
    let Some(backend) = BACKENDS.get(index) else {
        return Tracked::Stale;
    };
    if backend.epoch == 0 || backend.epoch != epoch {
        return Tracked::Stale;
    }
    if closed_by != 0 && signals.syn {
        return Tracked::Reopen;
    }
    let now = now();
    if now.wrapping_sub(last_seen) > LAST_SEEN_GRANULARITY_NS {
        // SAFETY: as above; a racing writer stores the same kind of timestamp.
        unsafe { (*state).last_seen_ns = now };
    }
    if signals.closing & !closed_by != 0 {
        // SAFETY: as above. The time first: a reader that sees the bits sees the time.
        unsafe {
            if closed_by == 0 {
                (*state).closed_ns = now;
            }
            (*state).closed_by = closed_by | signals.closing;
        }
    }
    Tracked::Follow(Selection::Backend {
        index,
        backend,
        new_flow: false,
    })
}

/// Moves a pending flow into `CONNTRACK`: its client sent a second packet that is not a
/// SYN. Inserted before it is removed from `PENDING`, so a concurrent packet of the flow
/// finds it in one map or the other.
#[inline(always)]
fn promote(key: &FlowKey, state: *mut FlowState) {
    // SAFETY: the pointer stays valid during this program run (RCU); plain data.
    let mut promoted = unsafe { *state };
    promoted.last_seen_ns = now();
    // A full LRU evicts its oldest entry; an insert cannot fail for lack of room.
    let _ = CONNTRACK.insert(key, promoted, 0);
    let _ = PENDING.remove(key);
}

/// Balances a new flow (or a new connection on a closed flow's 5-tuple, `reopen`) with the
/// live tables of its VIP, and records it: in `PENDING`, or in place of the closed entry
/// in `CONNTRACK` for a reopened flow.
#[inline(always)]
fn balance(key: &FlowKey, signals: Signals, reopen: bool) -> Selection<'static> {
    let vip = VipKey {
        addr: key.dst,
        port_be: key.dport_be,
        proto: key.proto,
        family: key.family,
    };
    // SAFETY: VIPS is only updated by the daemon with whole-value writes.
    let Some(info) = (unsafe { VIPS.get(vip) }) else {
        return Selection::NotVip;
    };
    if martian::source(key) {
        return Selection::Martian;
    }
    let service = info.service;
    let Some((generation, group, index)) = ring_slot(service, key) else {
        return Selection::NoBackend { service };
    };
    let backend = match BACKENDS.get(index) {
        Some(backend) if backend.epoch != 0 => backend,
        _ => {
            return Selection::EmptySlot {
                service,
                generation,
                group,
                index,
            }
        }
    };
    let now = now();
    let state = FlowState {
        backend: index,
        epoch: backend.epoch,
        last_seen_ns: now,
        closed_ns: if signals.closing != 0 { now } else { 0 },
        closed_by: signals.closing,
        reserved: 0,
    };
    // A full LRU evicts its oldest entry; an insert cannot fail for lack of room.
    if reopen {
        let _ = CONNTRACK.insert(key, state, 0);
    } else {
        let _ = PENDING.insert(key, state, 0);
    }
    Selection::Backend {
        index,
        backend,
        new_flow: true,
    }
}

/// Chooses the ring slot of a new flow from the live table generation of `service`: the
/// group of the client's client pin if it has one, else the group of the flow's split
/// cell; then the group's Maglev slot. Returns (generation, group, backend index), or
/// `None` when no backend can take the flow.
#[inline(always)]
fn ring_slot(service: u32, key: &FlowKey) -> Option<(u32, u32, u32)> {
    let generation = *GENERATION.get(service)?;
    let tables = TABLES.get(tables_index(service, generation))?;
    let hash = if tables.flags & FLAG_CLIENT_AFFINITY != 0 {
        flow_hash(&key.client_only(), tables.seed)
    } else {
        flow_hash(key, tables.seed)
    };
    let pinned = if tables.flags & FLAG_HAS_CLIENT_PINS != 0 {
        client_pin_group(service, generation, key.family, key.src)
    } else {
        None
    };
    let group = match pinned {
        Some(group) => group,
        None => {
            let cell = hash.cell(tables.cells)?;
            let group = *tables.cell_group.get(cell as usize)?;
            if group == NO_GROUP {
                return None;
            }
            group as u32
        }
    };
    if group >= MAX_GROUPS {
        return None;
    }
    let ring = RINGS.get(ring_index(service, generation, group))?;
    let slot = hash.slot(tables.ring_size)?;
    let index = *ring.slots.get(slot as usize)?;
    if index == NONE {
        return None;
    }
    Some((generation, group, index))
}

/// The time for last-seen stamps, read only for flows that are forwarded. The coarse clock
/// (CLOCK_MONOTONIC at tick resolution) is a memory read, where the precise one reads the
/// TSC: last-seen times only need second granularity.
#[inline(always)]
fn now() -> u64 {
    // SAFETY: plain helper call without arguments.
    unsafe { bpf_ktime_get_coarse_ns() }
}
