//! Backend selection: connection tracking first, then group split and weighted Maglev.

use aya_ebpf::helpers::generated::{bpf_ktime_get_coarse_ns, bpf_ktime_get_ns};
use balancer_common::{
    cell_position, flow_hash,
    packet_events::{FIN_CLOSE, NEW_FLOW, RESET, SYN_RETRANSMIT},
    pending_check, pending_hash, slot_position, Backend, FlowKey, FlowState, PendingSlot, VipKey,
    CLOSED_BY_FIN, CLOSED_BY_RST, FLAG_CLIENT_AFFINITY, FLAG_HAS_CLIENT_PINS, MAX_GROUPS, NONE,
    NO_GROUP, RECORD_REOPENED, TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN,
};

use crate::{
    maps::{client_pin_group, pending_mask, BACKENDS, CONNTRACK, PENDING, TABLES, VIPS},
    martian, sync,
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
    /// Forward to this backend; `events` (`packet_events` bits) says what the packet did
    /// to its flow, for the backend's counters.
    Backend {
        index: u32,
        backend: &'a Backend,
        events: u32,
    },
}

/// What one packet's TCP flags mean to connection tracking (UDP: none of them).
#[derive(Clone, Copy)]
struct Signals {
    /// A SYN without ACK: opens a connection (or retransmits the opening).
    syn: bool,
    /// The TCP sequence number (of a SYN: the connection's initial one).
    seq: u32,
    /// `CLOSED_BY_*` bits of a FIN or RST, 0 if neither.
    closing: u32,
}

impl Signals {
    /// The `packet_events` bit of a flow's first close by this packet (none if it does not
    /// close): a RST is a reset, else a FIN a close.
    #[inline(always)]
    fn first_close(self) -> u32 {
        if self.closing & CLOSED_BY_RST != 0 {
            RESET
        } else if self.closing != 0 {
            FIN_CLOSE
        } else {
            0
        }
    }

    #[inline(always)]
    fn of(tcp_flags: u8, seq: u32) -> Self {
        let mut closing = 0;
        if tcp_flags & TCP_FIN != 0 {
            closing |= CLOSED_BY_FIN;
        }
        if tcp_flags & TCP_RST != 0 {
            closing |= CLOSED_BY_RST;
        }
        Self {
            syn: tcp_flags & (TCP_SYN | TCP_ACK) == TCP_SYN,
            seq,
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
/// The parser lets through only packets to the ports of VIPs (current, or former with
/// flows left). First `CONNTRACK`, the flows that sent more than one packet: an established
/// flow costs one hash lookup. Then `PENDING`, the flows that sent only their first packet,
/// two array slots read in place: the client's next packet that is neither a SYN nor a FIN
/// or RST promotes the flow into `CONNTRACK`, so a flood of one-packet flows (SYNs,
/// datagrams) overwrites `PENDING` slots only. Only then the VIP map: a flow whose VIP was
/// withdrawn while its backend stayed keeps that backend.
///
/// Entries exist only for flows that were addressed to a VIP from a source that is not
/// martian (checked here, for new flows only); an entry whose backend was removed (epoch
/// changed) is ignored. A client's FIN or RST marks its flow closed; the flow keeps its
/// backend for its last packets, but a SYN on a closed flow is a new connection, balanced
/// by the current tables. With flow sync on, each new `CONNTRACK` entry (a promotion, or a
/// new connection on a closed flow's 5-tuple) is recorded for the daemon (`sync::record`).
#[inline(always)]
pub fn backend_for(key: &FlowKey, tcp_flags: u8, tcp_seq: u32) -> Selection<'static> {
    let signals = Signals::of(tcp_flags, tcp_seq);
    if let Some(state) = CONNTRACK.get_ptr_mut(key) {
        match tracked(state, signals, false) {
            Tracked::Follow(selection) => return selection,
            Tracked::Reopen => {
                return balance(key, signals, core::ptr::null_mut(), 0, 0);
            }
            Tracked::Stale => {}
        }
    }
    let hash = pending_hash(key);
    let pair = hash as u32 & pending_mask() & !1;
    let (Some(first), Some(second)) = (PENDING.get_ptr_mut(pair), PENDING.get_ptr_mut(pair | 1))
    else {
        // Cannot happen: the mask fits the table.
        return Selection::NotVip;
    };
    let mut slot = first;
    let mut found = pending_state(first, key, hash);
    if found.is_none() {
        slot = second;
        found = pending_state(second, key, hash);
    }
    if let Some(state) = found {
        // SAFETY: the slot stays valid during this program run; plain data.
        let closed_by = unsafe { (*state).closed_by };
        match tracked(state, signals, true) {
            Tracked::Follow(mut selection) => {
                if signals.syn && closed_by == 0 {
                    if let Selection::Backend { events, .. } = &mut selection {
                        *events |= SYN_RETRANSMIT;
                    }
                }
                if !signals.syn && signals.closing == 0 && closed_by == 0 {
                    promote(key, slot, state);
                } else if signals.closing & !closed_by != 0 {
                    // SAFETY: as above. The check covers the close marks just written.
                    unsafe { (*slot).check = pending_check(hash, &*state) };
                }
                return selection;
            }
            // Balanced afresh into the flow's own slot.
            Tracked::Reopen | Tracked::Stale => {}
        }
    } else {
        slot = victim(first, second);
    }
    // SAFETY: both slots stay valid during this program run; plain data.
    let written = unsafe { (*first).written.max((*second).written) } + 1;
    balance(key, signals, slot, hash, written)
}

/// The slot of a pair that a new flow takes: an empty one (the first if both are), else
/// the one written longer ago.
#[inline(always)]
fn victim(first: *mut PendingSlot, second: *mut PendingSlot) -> *mut PendingSlot {
    // SAFETY: both slots stay valid during this program run; plain data.
    unsafe {
        if (*first).check == 0 {
            first
        } else if (*second).check == 0 {
            second
        } else if (*first).written < (*second).written {
            first
        } else {
            second
        }
    }
}

/// The state of the flow `key` (of pending hash `hash`) if `slot` holds it whole: its key,
/// and a check word that matches the key's hash and the state.
#[inline(always)]
fn pending_state(slot: *mut PendingSlot, key: &FlowKey, hash: u64) -> Option<*mut FlowState> {
    // SAFETY: the slot stays valid during this program run (an array element); plain data.
    // A racing writer may change it meanwhile: the check then fails.
    unsafe {
        let check = (*slot).check;
        if check == 0 || !same_key(&(*slot).key, key) {
            return None;
        }
        let state = core::ptr::addr_of_mut!((*slot).state);
        if check != pending_check(hash, &*state) {
            return None;
        }
        Some(state)
    }
}

/// Whether two flow keys are equal, compared as five 8-byte words (a derived comparison
/// compiles to a byte-wise loop).
#[inline(always)]
fn same_key(a: &FlowKey, b: &FlowKey) -> bool {
    const WORDS: usize = core::mem::size_of::<FlowKey>() / 8;
    let (a, b) = (
        (a as *const FlowKey).cast::<u64>(),
        (b as *const FlowKey).cast::<u64>(),
    );
    let mut differ = 0;
    for i in 0..WORDS {
        // SAFETY: FlowKey is 8-aligned and WORDS * 8 bytes long.
        differ |=
            unsafe { core::ptr::read_volatile(a.add(i)) ^ core::ptr::read_volatile(b.add(i)) };
    }
    differ == 0
}

/// Records the flow `key` (of pending hash `hash`) with `state` in `slot`, over whatever
/// the slot held, as its pair's write number `written`: the check word is cleared first
/// and written last, so a reader never takes a half-written slot for a whole one.
#[inline(always)]
fn write_pending(
    slot: *mut PendingSlot,
    key: &FlowKey,
    hash: u64,
    state: &FlowState,
    written: u64,
) {
    const KEY_WORDS: usize = core::mem::size_of::<FlowKey>() / 8;
    const STATE_WORDS: usize = core::mem::size_of::<FlowState>() / 8;
    // SAFETY: the slot stays valid during this program run (an array element); FlowKey and
    // FlowState are 8-aligned plain data of whole words. Volatile word stores keep the
    // copies from becoming calls of a byte-wise memcpy.
    unsafe {
        core::ptr::write_volatile(core::ptr::addr_of_mut!((*slot).check), 0);
        let (from, to) = (
            (key as *const FlowKey).cast::<u64>(),
            core::ptr::addr_of_mut!((*slot).key).cast::<u64>(),
        );
        for i in 0..KEY_WORDS {
            core::ptr::write_volatile(to.add(i), *from.add(i));
        }
        let (from, to) = (
            (state as *const FlowState).cast::<u64>(),
            core::ptr::addr_of_mut!((*slot).state).cast::<u64>(),
        );
        for i in 0..STATE_WORDS {
            core::ptr::write_volatile(to.add(i), *from.add(i));
        }
        core::ptr::write_volatile(core::ptr::addr_of_mut!((*slot).written), written);
        core::ptr::write_volatile(
            core::ptr::addr_of_mut!((*slot).check),
            pending_check(hash, state),
        );
    }
}

/// Follows a tracked entry (of the pending table when `pending`): a packet of its flow goes
/// to its backend while that backend has the recorded epoch, except a SYN that opens a new
/// connection. Refreshes the last-seen time (at most once a second) and records the
/// client's first FIN or RST; an established packet writes nothing else.
#[inline(always)]
fn tracked(state: *mut FlowState, signals: Signals, pending: bool) -> Tracked {
    // SAFETY: the pointer stays valid during this program run (RCU); fields are plain data.
    let (index, epoch, last_seen, closed_by, syn_seq) = unsafe {
        (
            (*state).backend,
            (*state).epoch,
            (*state).last_seen_ns,
            (*state).closed_by,
            (*state).syn_seq,
        )
    };
    let Some(backend) = BACKENDS.get(index) else {
        return Tracked::Stale;
    };
    if backend.epoch == 0 || backend.epoch != epoch {
        return Tracked::Stale;
    }
    // A SYN on a closed flow opens a new connection; so does one on a pending flow with
    // another initial sequence number than the SYN that opened it (the client reused the
    // port of a handshake that failed). An established flow keeps its backend for such a
    // SYN: one spoofed with the flow's addresses and ports must not move it.
    let reused = pending && syn_seq != 0 && syn_seq != signals.seq;
    if signals.syn && (closed_by != 0 || reused) {
        return Tracked::Reopen;
    }
    let now = now();
    if now.wrapping_sub(last_seen) > LAST_SEEN_GRANULARITY_NS {
        // SAFETY: as above; a racing writer stores the same kind of timestamp.
        unsafe { (*state).last_seen_ns = now };
    }
    let mut events = 0;
    if signals.closing & !closed_by != 0 {
        // SAFETY: as above. The time first: a reader that sees the bits sees the time.
        unsafe {
            if closed_by == 0 {
                (*state).closed_ns = now;
                events = signals.first_close();
            }
            (*state).closed_by = closed_by | signals.closing;
        }
    }
    Tracked::Follow(Selection::Backend {
        index,
        backend,
        events,
    })
}

/// Moves a pending flow into `CONNTRACK`: its client sent a second packet that is neither
/// a SYN nor a FIN or RST. Inserted before its slot is emptied, so a concurrent packet of
/// the flow finds it in one table or the other.
#[inline(always)]
fn promote(key: &FlowKey, slot: *mut PendingSlot, state: *mut FlowState) {
    // SAFETY: the slot stays valid during this program run; plain data.
    let mut promoted = unsafe { *state };
    promoted.last_seen_ns = now();
    // Open (promotion needs it): no close time, and the opening SYN's stamp stays behind.
    promoted.closed_ns = 0;
    // A full LRU evicts its oldest entry; an insert cannot fail for lack of room.
    let _ = CONNTRACK.insert(key, promoted, 0);
    sync::record(key, &promoted, 0);
    // SAFETY: as above.
    unsafe { core::ptr::write_volatile(core::ptr::addr_of_mut!((*slot).check), 0) };
}

/// Balances a new flow (or a new connection on a closed flow's 5-tuple) with the live
/// tables of its VIP, and records it: in the pending `slot` (`hash` is its pending hash,
/// `written` its pair's next write number), or, when `slot` is null (a SYN on a closed
/// established flow), in place of the closed entry in `CONNTRACK`.
#[inline(always)]
fn balance(
    key: &FlowKey,
    signals: Signals,
    slot: *mut PendingSlot,
    hash: u64,
    written: u64,
) -> Selection<'static> {
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
        closed_ns: if signals.closing != 0 {
            now
        } else if signals.syn && backend.translated() && !slot.is_null() {
            // The handshake's start, for timing the backend's SYN-ACK (see `since_syn`).
            precise_now()
        } else {
            0
        },
        closed_by: signals.closing,
        syn_seq: if signals.syn { signals.seq } else { 0 },
    };
    if slot.is_null() {
        // A full LRU evicts its oldest entry; an insert cannot fail for lack of room.
        let _ = CONNTRACK.insert(key, state, 0);
        sync::record(key, &state, RECORD_REOPENED);
    } else {
        write_pending(slot, key, hash, &state, written);
    }
    Selection::Backend {
        index,
        backend,
        events: NEW_FLOW | signals.first_close(),
    }
}

/// Chooses the ring slot of a new flow from the live tables of `service` (its map in
/// `TABLES`, read in three chunks: header, split cell, ring slot): the group of the
/// client's client pin if it has one, else the group of the flow's split cell; then the
/// group's Maglev slot. Returns (generation, group, backend index), or `None` when no
/// backend can take the flow.
#[inline(always)]
fn ring_slot(service: u32, key: &FlowKey) -> Option<(u32, u32, u32)> {
    // SAFETY: the outer map's values are maps, only replaced whole by the daemon; the map
    // this lookup returns stays valid during this program run (RCU).
    let tables = unsafe { TABLES.get(&service) }?;
    let header = *tables.get(0)?.header();
    let hash = if header.flags & FLAG_CLIENT_AFFINITY != 0 {
        flow_hash(&key.client_only(), header.seed)
    } else {
        flow_hash(key, header.seed)
    };
    let pinned = if header.flags & FLAG_HAS_CLIENT_PINS != 0 {
        client_pin_group(service, header.generation, key.family, key.src)
    } else {
        None
    };
    let group = match pinned {
        Some(group) => group,
        None => {
            let (chunk, byte) = cell_position(hash.cell(header.cells)?);
            let group = tables.get(chunk)?.cell(byte)?;
            if group == NO_GROUP {
                return None;
            }
            group as u32
        }
    };
    if group >= header.groups || group >= MAX_GROUPS {
        return None;
    }
    let (chunk, word) = slot_position(header.ring_chunks, group, hash.slot(header.ring_size)?);
    let index = tables.get(chunk)?.slot(word)?;
    if index == NONE {
        return None;
    }
    Some((header.generation, group, index))
}

/// How long ago the SYN that opened the pending flow `key` (client to VIP) was balanced,
/// when that flow is pending and open and a `nat` backend's (whose opening SYN is stamped
/// with [`precise_now`] in `closed_ns` while the flow is open: see `balance`). The client's
/// retransmits of that SYN (same sequence number) refresh only `last_seen_ns`, so for a
/// backend's SYN-ACK this is what the client waited: from its first SYN, also when the
/// backend dropped the first ones (a full accept queue).
#[inline(always)]
pub fn since_syn(key: &FlowKey) -> Option<u64> {
    let hash = pending_hash(key);
    let pair = hash as u32 & pending_mask() & !1;
    let first = PENDING.get_ptr_mut(pair)?;
    let second = PENDING.get_ptr_mut(pair | 1)?;
    let state = pending_state(first, key, hash).or_else(|| pending_state(second, key, hash))?;
    // SAFETY: the slot stays valid during this program run; plain data.
    let (opened, closed_by, syn_seq) =
        unsafe { ((*state).closed_ns, (*state).closed_by, (*state).syn_seq) };
    if closed_by != 0 || syn_seq == 0 || opened == 0 {
        return None;
    }
    Some(precise_now().saturating_sub(opened))
}

/// The precise time (CLOCK_MONOTONIC): stamps that time a handshake.
#[inline(always)]
fn precise_now() -> u64 {
    // SAFETY: plain helper call without arguments.
    unsafe { bpf_ktime_get_ns() }
}

/// The time for last-seen stamps, read only for flows that are forwarded. The coarse clock
/// (CLOCK_MONOTONIC at tick resolution) is a memory read, where the precise one reads the
/// TSC: last-seen times only need second granularity.
#[inline(always)]
fn now() -> u64 {
    // SAFETY: plain helper call without arguments.
    unsafe { bpf_ktime_get_coarse_ns() }
}
