//! Backend selection: connection tracking first, then group split and weighted Maglev.

use aya_ebpf::helpers::generated::bpf_ktime_get_coarse_ns;
use balancer_common::{
    flow_hash, ring_index, tables_index, Backend, FlowKey, FlowState, VipKey, FLAG_CLIENT_AFFINITY,
    FLAG_HAS_CLIENT_PINS, MAX_GROUPS, NONE, NO_GROUP,
};

use crate::{
    maps::{client_pin_group, BACKENDS, CONNTRACK, GENERATION, RINGS, TABLES, VIPS},
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

/// Finds the backend for the flow `key`, recording new flows in connection tracking.
///
/// Connection tracking is looked up first, so an established flow costs one hash lookup.
/// Its entries exist only for flows that were addressed to a VIP from a source that is not
/// martian (checked here, for new flows only), and an entry whose backend was removed
/// (epoch changed) is ignored. The one difference from looking up the VIP first: a flow
/// whose VIP was withdrawn while its backend stayed keeps that backend until it goes idle,
/// which is what the no-broken-connection promise asks for.
#[inline(always)]
pub fn backend_for(key: &FlowKey) -> Selection<'static> {
    if let Some(selection) = tracked(key) {
        return selection;
    }
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
    let state = FlowState {
        backend: index,
        epoch: backend.epoch,
        last_seen_ns: now(),
    };
    // A full LRU evicts its oldest entry; an insert cannot fail for lack of room.
    let _ = CONNTRACK.insert(key, state, 0);
    Selection::Backend {
        index,
        backend,
        new_flow: true,
    }
}

/// The backend this flow is already pinned to, if it still exists.
#[inline(always)]
fn tracked(key: &FlowKey) -> Option<Selection<'static>> {
    let state = CONNTRACK.get_ptr_mut(key)?;
    // SAFETY: the pointer stays valid during this program run (RCU); fields are plain data.
    let (index, epoch, last_seen) =
        unsafe { ((*state).backend, (*state).epoch, (*state).last_seen_ns) };
    let backend = BACKENDS.get(index)?;
    if backend.epoch == 0 || backend.epoch != epoch {
        return None;
    }
    let now = now();
    if now.wrapping_sub(last_seen) > LAST_SEEN_GRANULARITY_NS {
        // SAFETY: as above; a racing writer stores the same kind of timestamp.
        unsafe { (*state).last_seen_ns = now };
    }
    Some(Selection::Backend {
        index,
        backend,
        new_flow: false,
    })
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
