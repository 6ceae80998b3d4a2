//! Baseline XDP programs for `cargo xtask bench`: the cheapest possible verdict, and the
//! least a forwarding load balancer must do (parse, swap MACs, XDP_TX). The balancer's
//! per-packet cost is reported as a ratio to these, measured in the same run.
#![no_std]
#![no_main]

use aya_ebpf::{bindings::xdp_action, macros::xdp, programs::XdpContext};

/// Drops every packet.
#[xdp]
pub fn baseline_drop(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_DROP
}

/// Checks the Ethernet header and an IP ethertype, swaps the MAC addresses and sends the
/// frame back.
#[xdp]
pub fn baseline_macswap(ctx: XdpContext) -> u32 {
    let start = ctx.data();
    if start + 14 > ctx.data_end() {
        return xdp_action::XDP_PASS;
    }
    let eth = start as *mut [u8; 14];
    // SAFETY: the 14 bytes were bounds-checked above.
    unsafe {
        let ether_type = u16::from_be_bytes([(*eth)[12], (*eth)[13]]);
        if ether_type != 0x0800 && ether_type != 0x86dd {
            return xdp_action::XDP_PASS;
        }
        for i in 0..6 {
            (*eth).swap(i, i + 6);
        }
    }
    xdp_action::XDP_TX
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
