//! The decapsulator's maps and load-time settings: its counters, the allowed outer
//! sources, and the GUE port.

use aya_ebpf::{
    macros::map,
    maps::{lpm_trie::Key, LpmTrie, PerCpuArray},
};
use balancer_common::{DECAP_STAT_COUNT, GUE_PORT};

use crate::headers::Source;

/// Most prefixes of each family `--allow` may give.
const MAX_ALLOWED: u32 = 256;

/// Packets per outcome (`balancer_common::DECAP_*`), per CPU.
#[map]
static DECAP_STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(DECAP_STAT_COUNT, 0);

/// Allowed IPv4 outer sources (prefix → 1).
#[map]
static ALLOW_V4: LpmTrie<[u8; 4], u8> = LpmTrie::with_max_entries(MAX_ALLOWED, 0);

/// Allowed IPv6 outer sources (prefix → 1).
#[map]
static ALLOW_V6: LpmTrie<[u8; 16], u8> = LpmTrie::with_max_entries(MAX_ALLOWED, 0);

/// Non-zero when only the sources in `ALLOW_V4`/`ALLOW_V6` are allowed; zero allows every
/// source. Written by the loader: a frozen read-only global, a constant to the verifier.
#[unsafe(no_mangle)]
static RESTRICTED: u8 = 0;

/// The UDP destination port of GUE, host order; written by the loader.
#[unsafe(no_mangle)]
static DECAP_GUE_PORT: u16 = GUE_PORT;

/// The configured GUE port (host order).
#[inline(always)]
pub fn gue_port() -> u16 {
    // SAFETY: a plain read of a global the loader wrote before the program was loaded.
    unsafe { core::ptr::read_volatile(&DECAP_GUE_PORT) }
}

/// Whether tunnel packets from `source` are taken.
#[inline(always)]
pub fn allowed(source: &Source) -> bool {
    // SAFETY: a plain read of a global the loader wrote before the program was loaded.
    if unsafe { core::ptr::read_volatile(&RESTRICTED) } == 0 {
        return true;
    }
    match source {
        Source::V4(addr) => ALLOW_V4.get(Key::new(32, *addr)).is_some(),
        Source::V6(addr) => ALLOW_V6.get(Key::new(128, *addr)).is_some(),
    }
}

/// Counts one packet in `stat`.
#[inline(always)]
pub fn count(stat: u32) {
    if let Some(counter) = DECAP_STATS.get_ptr_mut(stat) {
        // SAFETY: per-CPU slot, only this CPU writes it while the program runs.
        unsafe { *counter += 1 };
    }
}
