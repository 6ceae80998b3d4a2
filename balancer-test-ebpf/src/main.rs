//! XDP programs for the tests and `cargo xtask bench`, kept out of the daemon's object.
//!
//! * `veth_pass` passes every packet: the veth peer that receives the balancer's XDP_TX
//!   frames must run an XDP program for the veth driver to deliver them.
//! * The benchmark's baselines: the cheapest possible verdict (`baseline_drop`), and the
//!   least a forwarding load balancer must do (`baseline_macswap`: parse, swap MACs,
//!   XDP_TX). The balancer's per-packet cost is reported as a ratio to these, measured in
//!   the same run.
//! * For the end-to-end forwarding benchmark, the `sink` that counts what reaches a backend.
//!
//! The programs are not `pub`: `#[xdp]` wraps each in the exported (`no_mangle`) program
//! function, which has no doc comment to carry; the symbols are exported all the same.
#![no_std]
#![no_main]

use aya_ebpf::{
    bindings::xdp_action,
    macros::{map, xdp},
    maps::PerCpuArray,
    programs::XdpContext,
};

/// UDP destination port of the benchmark's flood: `sink` drops these datagrams.
const FLOOD_PORT: u16 = 9;

/// Packets seen by `sink`, in slot 0, per CPU.
#[map]
static SINK_PACKETS: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// Passes every packet. Attached to the peer of a veth that receives XDP_TX frames: the
/// veth driver only delivers such frames when the receiving side runs an XDP program.
#[xdp]
fn veth_pass(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}

/// Drops every packet.
#[xdp]
fn baseline_drop(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_DROP
}

/// Checks the Ethernet header and an IP ethertype, swaps the MAC addresses and sends the
/// frame back.
#[xdp]
fn baseline_macswap(ctx: XdpContext) -> u32 {
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

/// Counts every packet, drops IPv4 and IPv6 UDP datagrams to [`FLOOD_PORT`] and passes
/// everything else (ARP, neighbour discovery, TCP) to the kernel.
#[xdp]
fn sink(ctx: XdpContext) -> u32 {
    if let Some(count) = SINK_PACKETS.get_ptr_mut(0) {
        // SAFETY: a valid per-CPU slot, only touched from this CPU.
        unsafe { *count += 1 };
    }
    if is_flood(&ctx) {
        xdp_action::XDP_DROP
    } else {
        xdp_action::XDP_PASS
    }
}

/// Whether the frame is a UDP datagram to [`FLOOD_PORT`] over IPv4 without options or
/// IPv6 without extension headers.
fn is_flood(ctx: &XdpContext) -> bool {
    match ether_type(ctx) {
        Some(0x0800) => udp_to_flood_port(ctx, 14 + 9, 14 + 20) && byte(ctx, 14) == Some(0x45),
        Some(0x86dd) => udp_to_flood_port(ctx, 14 + 6, 14 + 40),
        _ => false,
    }
}

/// The frame's EtherType.
#[inline(always)]
fn ether_type(ctx: &XdpContext) -> Option<u16> {
    Some(u16::from_be_bytes([byte(ctx, 12)?, byte(ctx, 13)?]))
}

/// Whether the IP protocol byte at `protocol` is UDP and the UDP header at `udp` has
/// destination port [`FLOOD_PORT`].
#[inline(always)]
fn udp_to_flood_port(ctx: &XdpContext, protocol: usize, udp: usize) -> bool {
    byte(ctx, protocol) == Some(17)
        && byte(ctx, udp + 2) == Some((FLOOD_PORT >> 8) as u8)
        && byte(ctx, udp + 3) == Some(FLOOD_PORT as u8)
}

/// The frame's byte at the constant `offset`, if the frame is that long.
#[inline(always)]
fn byte(ctx: &XdpContext, offset: usize) -> Option<u8> {
    let at = ctx.data() + offset;
    if at + 1 > ctx.data_end() {
        return None;
    }
    // SAFETY: bounds-checked against the end of the frame just above.
    Some(unsafe { *(at as *const u8) })
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
