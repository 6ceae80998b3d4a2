//! The decapsulator of `balancer decap`: the backend side of the load balancer's `ipip` and
//! `gue` forwarding, for hosts without the kernel's ipip, ip6tnl or fou modules.
//!
//! A tunnel packet — outer IPv4 or IPv6 (after Ethernet and at most one 802.1Q/802.1ad
//! tag) carrying protocol 4 (IPv4) or 41 (IPv6), or UDP to the configured GUE port whose
//! payload begins with an IPv4 or IPv6 header (GUE variant 1, the same bytes as FOU) — has
//! its outer IP (and UDP) header cut off with `bpf_xdp_adjust_head`; the inner packet gets
//! the frame's MAC addresses (and VLAN tag) and its own EtherType, and goes to the kernel
//! (`XDP_PASS`), which delivers it as if it had arrived so. Both inner families are taken
//! over both outer ones. The outer destination is not checked: every tunnel packet that
//! reaches the interface is taken (so restrict the sources with `--allow`).
//!
//! * With allowed prefixes configured (`RESTRICTED` set by the loader, prefixes in
//!   `ALLOW_V4`/`ALLOW_V6`), a tunnel packet from any other outer source is dropped.
//! * A tunnel packet with truncated or inconsistent outer or inner headers (lengths beyond
//!   the frame or the outer datagram, a wrong inner version), an IPv4 fragment, or a UDP
//!   datagram to the GUE port that does not carry an IP packet, is passed untouched.
//! * Everything else passes untouched.
//!
//! Outer checksums are not verified (GUE sends UDP checksum 0); the kernel verifies the
//! inner packet's.
#![no_std]
#![no_main]

mod headers;
mod maps;
mod strip;

use aya_ebpf::{bindings::xdp_action, macros::xdp, programs::XdpContext};
use balancer_common::{DECAP_DECAPSULATED, DECAP_MALFORMED, DECAP_PASSED, DECAP_REFUSED};

use crate::headers::Found;

/// The decapsulator. Not `pub`: `#[xdp]` wraps it in the exported (`no_mangle`) program
/// function, which has no doc comment to carry; the symbol is exported all the same.
#[xdp]
fn decap(ctx: XdpContext) -> u32 {
    match headers::find(&ctx) {
        Found::Other => {
            maps::count(DECAP_PASSED);
            xdp_action::XDP_PASS
        }
        Found::Malformed => {
            maps::count(DECAP_MALFORMED);
            xdp_action::XDP_PASS
        }
        Found::Tunnel(tunnel) => {
            if !maps::allowed(&tunnel.source) {
                maps::count(DECAP_REFUSED);
                return xdp_action::XDP_DROP;
            }
            if strip::strip(&ctx, &tunnel) {
                maps::count(DECAP_DECAPSULATED);
            } else {
                // Only when the kernel refuses to move the head; the frame is unchanged.
                maps::count(DECAP_MALFORMED);
            }
            xdp_action::XDP_PASS
        }
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
