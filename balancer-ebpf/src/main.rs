//! The `balancer` XDP program: L4 load balancing with L2 direct server return, tunnels
//! (IP in IP, GUE) to routed backends, or address translation (`nat`).
//!
//! For each packet: parse Ethernet (+ one VLAN tag), IPv4/IPv6 and TCP/UDP; keep a flow
//! recorded in connection tracking on its backend; otherwise, pass anything not addressed
//! to a configured VIP untouched, and for a VIP packet select a backend (group split, then
//! weighted Maglev) and record it; then forward by rewriting the MAC addresses, or for a
//! tunnelled backend by encapsulating the packet and routing it (`tunnel`), for a `nat`
//! backend by rewriting its destination and routing it (`nat`), whose replies are
//! rewritten back to come from the VIP. A VIP packet
//! that no backend can take is dropped and reported to the daemon's log (rate-limited); a
//! new VIP flow from a martian source is dropped. Malformed packets go to the kernel.
#![no_std]
#![no_main]

mod answers;
mod checksum;
mod counters;
mod events;
mod fib;
mod forward;
mod fullnat;
mod icmp;
mod maps;
mod martian;
mod nat;
mod nat_icmp;
mod packet;
mod parse;
mod select;
mod sync;
mod tunnel;
mod wire;

use aya_ebpf::{bindings::xdp_action, macros::xdp, programs::XdpContext};
use balancer_common::{
    FlowKey, FORWARD_DSR, FORWARD_FULLNAT, FORWARD_NAT, NAT_STAT_EXHAUSTED, STAT_DROPPED,
    STAT_MALFORMED, STAT_MARTIAN, STAT_PASSED, STAT_UNBALANCEABLE,
};

use crate::{
    counters::{count, count_backend},
    parse::Parsed,
};

/// The load balancer. Not `pub`: `#[xdp]` wraps it in the exported (`no_mangle`) program
/// function, which has no doc comment to carry; the symbol is exported all the same.
#[xdp]
fn balancer(ctx: XdpContext) -> u32 {
    let mut key = core::mem::MaybeUninit::uninit();
    match parse::parse(&ctx, &mut key) {
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
        Parsed::Icmp { family, l3 } => nat_icmp::error(ctx.ctx, family, l3).unwrap_or_else(|| {
            count(STAT_PASSED);
            xdp_action::XDP_PASS
        }),
        Parsed::Reply { key, tcp_flags } => replied(&ctx, key, tcp_flags),
        Parsed::Flow {
            key,
            tcp_flags,
            tcp_seq,
        } => match select::backend_for(key, tcp_flags, tcp_seq) {
            // A client port that is also a VIP port: maybe a `nat` backend's reply.
            select::Selection::NotVip if parse::reply_port(key.sport_be, key.proto) => {
                replied(&ctx, key, tcp_flags)
            }
            select::Selection::NotVip => {
                count(STAT_PASSED);
                xdp_action::XDP_PASS
            }
            select::Selection::Martian => {
                count(STAT_MARTIAN);
                xdp_action::XDP_DROP
            }
            select::Selection::NoBackend { service } => {
                count(STAT_DROPPED);
                events::no_backend(service, key);
                xdp_action::XDP_DROP
            }
            select::Selection::EmptySlot {
                service,
                generation,
                group,
                index,
            } => {
                count(STAT_DROPPED);
                events::empty_slot(service, generation, group, index);
                xdp_action::XDP_DROP
            }
            select::Selection::Backend {
                index,
                backend,
                events,
            } => {
                count_backend(index, ctx.data_end() - ctx.data(), events);
                match backend.forward {
                    FORWARD_DSR => forward::l2_dsr(&ctx, backend),
                    FORWARD_NAT => {
                        let forwarded = nat::forward(&ctx, index, key, None);
                        nat::answer(&ctx, key.family, forwarded)
                    }
                    FORWARD_FULLNAT => match fullnat::translation(key, index, tcp_flags) {
                        Some(translation) => {
                            let forwarded = nat::forward(&ctx, index, key, Some(translation));
                            nat::answer(&ctx, key.family, forwarded)
                        }
                        None => {
                            nat::count(NAT_STAT_EXHAUSTED);
                            xdp_action::XDP_DROP
                        }
                    },
                    _ => tunnel::forward(&ctx, index, backend, key),
                }
            }
        },
    }
}

/// A packet from a `nat` backend's port (the flow `key`, with `tcp_flags`): rewritten to
/// come from the VIP (a full-NAT reply: and to go to its client) and counted for its
/// backend if it is a `nat` backend's reply, passed untouched otherwise.
#[inline(always)]
fn replied(ctx: &XdpContext, key: &mut FlowKey, tcp_flags: u8) -> u32 {
    let origin = fullnat::origin(key);
    match nat::reply(ctx, key, origin) {
        Some(action) => {
            if action != xdp_action::XDP_DROP {
                if let Some(o) = origin {
                    // Counted as the reply to the client it is now.
                    key.dst = o.src;
                    key.dport_be = o.sport_be;
                }
                answers::count(key, tcp_flags, (ctx.data_end() - ctx.data()) as u32);
            }
            action
        }
        None => {
            count(STAT_PASSED);
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
