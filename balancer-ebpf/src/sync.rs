//! Flow records for the fleet's flow-state sync: each new connection-tracking entry is
//! written to a ring buffer that the daemon reads and sends to its peers. Only when the
//! daemon asked for it (`daemon --sync-listen`): otherwise the check of a frozen global
//! is all a new flow pays, and the verifier drops the rest. Never on an established
//! packet: only where an entry is made.

use aya_ebpf::{
    macros::map,
    maps::{PerCpuArray, RingBuf},
};
use balancer_common::{
    FlowKey, FlowRecord, FlowState, SYNC_RING_BYTES, SYNC_STAT_COUNT, SYNC_STAT_OVERFLOWS,
};

/// The records of new connection-tracking entries, read by the daemon.
#[map]
pub static SYNC_RING: RingBuf = RingBuf::pinned(SYNC_RING_BYTES, 0);

/// Sync counters, indexed by `SYNC_STAT_*`.
#[map]
pub static SYNC_STATS: PerCpuArray<u64> = PerCpuArray::pinned(SYNC_STAT_COUNT, 0);

/// Whether records are written (not 0), set by the loader: a frozen read-only global, a
/// constant to the verifier.
#[unsafe(no_mangle)]
static SYNC_RECORDS: u32 = 0;

/// Writes the record of the new entry `key` → `state` (`flags`: `RECORD_*`) when sync is
/// on; a full ring buffer is counted, not fatal.
#[inline(always)]
pub fn record(key: &FlowKey, state: &FlowState, flags: u32) {
    // SAFETY: a plain read of a global the loader wrote before the program was loaded.
    if unsafe { core::ptr::read_volatile(&SYNC_RECORDS) } == 0 {
        return;
    }
    let record = FlowRecord {
        key: *key,
        backend: state.backend,
        epoch: state.epoch,
        flags,
        reserved: 0,
    };
    if SYNC_RING.output::<FlowRecord>(&record, 0).is_err() {
        if let Some(count) = SYNC_STATS.get_ptr_mut(SYNC_STAT_OVERFLOWS) {
            // SAFETY: per-CPU slot, only this CPU writes it while the program runs.
            unsafe { *count += 1 };
        }
    }
}
