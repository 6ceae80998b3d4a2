//! The `balancer` XDP program: L4 load balancing with L2 direct server return.
//!
//! For each packet: parse Ethernet (+ one VLAN tag), IPv4/IPv6 and TCP/UDP; pass anything
//! not addressed to a configured VIP untouched; for a VIP packet, keep the flow on the
//! backend recorded in connection tracking, or select one (group split, then weighted
//! Maglev) and record it; then forward by rewriting the MAC addresses.
#![no_std]
#![no_main]

mod counters;
mod forward;
mod maps;
mod parse;
mod select;

use aya_ebpf::{bindings::xdp_action, macros::xdp, programs::XdpContext};
use balancer_common::{STAT_DROPPED, STAT_MALFORMED, STAT_PASSED, STAT_UNBALANCEABLE};

use crate::{
    counters::{count, count_backend},
    parse::Parsed,
};

/// The load balancer.
#[xdp]
pub fn balancer(ctx: XdpContext) -> u32 {
    match parse::parse(&ctx) {
        Parsed::Other => {
            count(STAT_PASSED);
            xdp_action::XDP_PASS
        }
        Parsed::Malformed => {
            count(STAT_MALFORMED);
            xdp_action::XDP_PASS
        }
        Parsed::Unbalanceable => {
            count(STAT_UNBALANCEABLE);
            xdp_action::XDP_PASS
        }
        Parsed::Flow(packet) => match select::backend_for(&packet.key) {
            select::Selection::NotVip => {
                count(STAT_PASSED);
                xdp_action::XDP_PASS
            }
            select::Selection::NoBackend => {
                count(STAT_DROPPED);
                xdp_action::XDP_DROP
            }
            select::Selection::Backend {
                index,
                backend,
                new_flow,
            } => {
                count_backend(index, ctx.data_end() - ctx.data(), new_flow);
                forward::l2_dsr(&ctx, backend)
            }
        },
    }
}

/// Passes every packet. Attached to the peer of a veth that receives XDP_TX frames: the
/// veth driver only delivers such frames when the receiving side runs an XDP program.
#[xdp]
pub fn veth_pass(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
