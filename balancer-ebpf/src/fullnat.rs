//! Full NAT's per-flow state: which pool address and port a flow's packets leave with
//! (`TRANSLATIONS`), and for each pool port in use towards a backend endpoint, the client
//! it stands for (`ALLOCATIONS`). The rewriting itself is `nat`'s.
//!
//! A flow's first packet allocates: a pool port is tried by inserting its allocation only
//! where none exists (`BPF_NOEXIST`), so two flows never get the same pool port towards the
//! same backend endpoint, whichever CPUs they arrive on; a taken port makes the flow try
//! another ([`ALLOCATION_TRIES`] in all). The daemon removes both entries once the flow has
//! ended (see `dataplane::fullnat` in the daemon).

use aya_ebpf::helpers::generated::bpf_ktime_get_coarse_ns;
use balancer_common::{
    flow_hash, pool_port, Allocation, FlowKey, Rewrite, Translation, ALLOCATION_TRIES,
    REPLY_FULLNAT, TCP_FIN, TCP_RST,
};

use crate::maps::{ALLOCATIONS, REPLIES, REWRITES, TRANSLATIONS};

/// `BPF_NOEXIST`: insert only where the key is absent.
const BPF_NOEXIST: u64 = 1;
/// `BPF_ANY`: insert or replace.
const BPF_ANY: u64 = 0;
/// Refresh a translation's last-seen time at most this often.
const SEEN_GRANULARITY_NS: u64 = 1_000_000_000;
/// Seed of the hash that picks a flow's first pool port (any constant: the allocation is
/// this host's alone).
const PORT_SEED: u64 = 0x6675_6c6c_6e61_7421;

/// The translation of the flow `key` towards backend `index` (with `tcp_flags`, which may
/// close it): the flow's own, or a new one with a free pool port. `None`: no pool port was
/// free within the tries (or the maps are full); the caller drops the packet. A BPF
/// subprogram of its own: its stack is not the packet path's.
#[inline(never)]
pub fn translation(key: &FlowKey, index: u32, tcp_flags: u8) -> Option<&'static Translation> {
    let rewrite = REWRITES.get(index)?;
    // SAFETY: CLOCK_MONOTONIC, no arguments.
    let now = unsafe { bpf_ktime_get_coarse_ns() };
    if let Some(found) = TRANSLATIONS.get_ptr_mut(key) {
        // SAFETY: a value of this map; fields are written whole, a torn time is harmless.
        let found = unsafe { &mut *found };
        if found.backend == index {
            if now.wrapping_sub(found.seen_ns) > SEEN_GRANULARITY_NS {
                found.seen_ns = now;
            }
            if tcp_flags & (TCP_FIN | TCP_RST) != 0 && found.closed_ns == 0 {
                found.closed_ns = now;
            }
            return Some(found);
        }
        // The flow was balanced again to another backend (its old one went): the port it
        // held towards the old one is free.
        let _ = ALLOCATIONS.remove(found.allocation(key));
    }
    allocate(key, index, rewrite, now)?;
    // SAFETY: written whole by this program; the daemon only removes entries.
    unsafe { TRANSLATIONS.get(key) }
}

/// Allocates a free pool port towards `rewrite`'s backend for the flow `key` and records
/// the flow's translation.
#[inline(always)]
fn allocate(key: &FlowKey, index: u32, rewrite: &Rewrite, now: u64) -> Option<()> {
    let hash = (flow_hash(key, PORT_SEED).0 >> 32) as u32;
    for attempt in 0..ALLOCATION_TRIES {
        let port_be = pool_port(rewrite.ports, hash, attempt)?.to_be();
        let taken = allocation(rewrite, key, rewrite.source, port_be);
        if ALLOCATIONS.insert(taken, key, BPF_NOEXIST).is_err() {
            continue;
        }
        let translation = Translation {
            addr: rewrite.source,
            port_be,
            backend_port_be: rewrite.port_be,
            backend: index,
            backend_addr: rewrite.addr,
            seen_ns: now,
            closed_ns: 0,
        };
        if TRANSLATIONS.insert(key, translation, BPF_ANY).is_err() {
            let _ = ALLOCATIONS.remove(taken);
            return None;
        }
        return Some(());
    }
    None
}

/// The allocation of pool (`pool`, `port_be`) towards `rewrite`'s backend endpoint for a
/// flow like `key`.
#[inline(always)]
fn allocation(rewrite: &Rewrite, key: &FlowKey, pool: [u8; 16], port_be: u16) -> Allocation {
    Allocation {
        pool,
        backend: rewrite.addr,
        pool_port_be: port_be,
        backend_port_be: rewrite.port_be,
        proto: key.proto,
        family: key.family,
        reserved: [0; 2],
    }
}

/// The client-side key of the flow a reply (the flow `key`, from a backend endpoint to a
/// pool address and port) belongs to, if its source is a full-NAT backend's endpoint and the
/// pool port is allocated towards it. A BPF subprogram of its own.
#[inline(never)]
pub fn origin(key: &FlowKey) -> Option<&'static FlowKey> {
    let backend = key.source();
    // SAFETY: REPLIES is only updated by the daemon with whole-value writes.
    let reply = unsafe { REPLIES.get(backend) }?;
    if reply.flags & REPLY_FULLNAT == 0 {
        return None;
    }
    let allocation = Allocation {
        pool: key.dst,
        backend: key.src,
        pool_port_be: key.dport_be,
        backend_port_be: key.sport_be,
        proto: key.proto,
        family: key.family,
        reserved: [0; 2],
    };
    // SAFETY: written whole by the program when allocated, never changed afterwards.
    unsafe { ALLOCATIONS.get(allocation) }
}
