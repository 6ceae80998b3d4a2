//! Cutting the outer headers off: `bpf_xdp_adjust_head` past them, then a fresh Ethernet
//! header in front of the inner packet with the frame's MAC addresses, its VLAN tag if it
//! had one, and the inner packet's EtherType.

use aya_ebpf::{helpers::generated::bpf_xdp_adjust_head, programs::XdpContext};

use crate::headers::Tunnel;

/// The MAC addresses and, for a tagged frame, the TPID and TCI.
const SAVED: usize = 16;

/// Cuts the outer headers of `tunnel` off the frame in `ctx`; false (frame unchanged) if
/// the kernel would not move the head.
#[inline(always)]
pub fn strip(ctx: &XdpContext, tunnel: &Tunnel) -> bool {
    let mut saved = [0u8; SAVED];
    if ctx.data() + SAVED > ctx.data_end() {
        return false;
    }
    // SAFETY: 16 bytes (MACs, then tag or EtherType and the first bytes after it) were
    // bounds-checked; `saved` is 16 bytes of stack.
    unsafe { core::ptr::copy_nonoverlapping(ctx.data() as *const u8, saved.as_mut_ptr(), SAVED) };
    let Ok(delta) = i32::try_from(tunnel.outer_len) else {
        return false;
    };
    // SAFETY: the helper only moves the frame's start; `ctx.ctx` is the program's context.
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, delta) } != 0 {
        return false;
    }
    let ether_type: [u8; 2] = if tunnel.inner_v6 {
        [0x86, 0xdd]
    } else {
        [0x08, 0x00]
    };
    let start = ctx.data();
    if tunnel.tagged {
        if start + 18 > ctx.data_end() {
            return false;
        }
        let eth = start as *mut u8;
        // SAFETY: the 18 bytes were bounds-checked after the head moved; `saved` holds
        // MACs, TPID and TCI.
        unsafe {
            core::ptr::copy_nonoverlapping(saved.as_ptr(), eth, SAVED);
            *eth.add(16) = ether_type[0];
            *eth.add(17) = ether_type[1];
        }
    } else {
        if start + 14 > ctx.data_end() {
            return false;
        }
        let eth = start as *mut u8;
        // SAFETY: the 14 bytes were bounds-checked after the head moved; `saved` holds the
        // MACs.
        unsafe {
            core::ptr::copy_nonoverlapping(saved.as_ptr(), eth, 12);
            *eth.add(12) = ether_type[0];
            *eth.add(13) = ether_type[1];
        }
    }
    true
}
