//! Per-CPU counters: no atomics needed, summed by the daemon.

use crate::maps::{BACKEND_STATS, GLOBAL_STATS};

/// Adds one to a global counter.
#[inline(always)]
pub fn count(stat: u32) {
    if let Some(counter) = GLOBAL_STATS.get_ptr_mut(stat) {
        // SAFETY: per-CPU slot, only this CPU writes it while the program runs.
        unsafe { *counter += 1 };
    }
}

/// Accounts one forwarded packet of `bytes` to a backend.
#[inline(always)]
pub fn count_backend(index: u32, bytes: usize, new_flow: bool) {
    if let Some(stats) = BACKEND_STATS.get_ptr_mut(index) {
        // SAFETY: per-CPU slot, only this CPU writes it while the program runs.
        unsafe {
            (*stats).packets += 1;
            (*stats).bytes += bytes as u64;
            if new_flow {
                (*stats).new_flows += 1;
            }
        }
    }
}
