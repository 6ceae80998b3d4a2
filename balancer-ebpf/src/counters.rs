//! Per-CPU counters: no atomics needed, summed by the daemon.

use balancer_common::packet_events::{FIN_CLOSE, NEW_FLOW, RESET, SYN_RETRANSMIT};

use crate::maps::{BACKEND_STATS, GLOBAL_STATS};

/// Adds one to a global counter.
#[inline(always)]
pub fn count(stat: u32) {
    if let Some(counter) = GLOBAL_STATS.get_ptr_mut(stat) {
        // SAFETY: per-CPU slot, only this CPU writes it while the program runs.
        unsafe { *counter += 1 };
    }
}

/// Accounts one forwarded packet of `bytes` to a backend, with what it did (`events`:
/// `packet_events` bits; an established flow's ordinary packet has none, and pays one test).
#[inline(always)]
pub fn count_backend(index: u32, bytes: usize, events: u32) {
    if let Some(stats) = BACKEND_STATS.get_ptr_mut(index) {
        // SAFETY: per-CPU slot, only this CPU writes it while the program runs.
        unsafe {
            (*stats).packets += 1;
            (*stats).bytes += bytes as u64;
            if events != 0 {
                (*stats).new_flows += u64::from(events & NEW_FLOW != 0);
                (*stats).fin_closes += u64::from(events & FIN_CLOSE != 0);
                (*stats).resets += u64::from(events & RESET != 0);
                (*stats).syn_retransmits += u64::from(events & SYN_RETRANSMIT != 0);
            }
        }
    }
}
