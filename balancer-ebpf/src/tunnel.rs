//! Tunnel forwarding modes: the client's IP packet, unchanged, inside an outer IP header
//! (`ipip`: IPv4 in IPv4, IPv6 in IPv6) or an outer IP and UDP header (`gue`: GUE variant 1,
//! the IP packet directly in UDP), addressed from the LB to the backend's own address and
//! routed by the kernel's tables (`bpf_fib_lookup`): out of the interface it came in
//! (`XDP_TX`) or redirected to another. A next hop the kernel has no neighbour entry for
//! yet: the encapsulated packet goes to the kernel, which resolves it and forwards it. An
//! outer packet longer than the route's MTU: the client gets "fragmentation needed" or
//! "packet too big" instead (`icmp`), with the MTU that leaves room for the outer headers.

use aya_ebpf::{
    bindings::xdp_action, helpers::generated::bpf_xdp_adjust_head, programs::XdpContext,
};
use balancer_common::{
    Backend, FlowKey, Tunnel, FAMILY_V4, FORWARD_GUE, PROTO_UDP, TUNNEL_STAT_FAILED,
    TUNNEL_STAT_TOO_BIG, TUNNEL_STAT_UNRESOLVED, TUNNEL_STAT_UNROUTABLE,
};

use crate::{
    fib::{self, Hop},
    icmp::{self, Answer},
    maps::{TUNNELS, TUNNEL_STATS},
    packet,
    wire::{ETH_LEN, ETH_P_IPV4, ETH_P_IPV6, IPV4_LEN, IPV6_LEN, UDP_LEN},
};

/// IP protocol numbers of the outer header: IPv4 inside, IPv6 inside.
const PROTO_IPIP: u8 = 4;
const PROTO_IPV6: u8 = 41;
/// Hop limit of the outer header.
const OUTER_TTL: u8 = 64;

/// The client's packet as it arrived: where its IP header starts, its length, and its
/// traffic class (copied to the outer header).
struct Inner {
    l3: usize,
    len: usize,
    tos: u8,
}

/// Forwards a packet of the flow `key` to tunnelled backend `index` (`backend`), by the
/// backend's `TUNNELS` entry.
#[inline(always)]
pub fn forward(ctx: &XdpContext, index: u32, backend: &Backend, key: &FlowKey) -> u32 {
    let Some(tunnel) = TUNNELS.get(index) else {
        return failed();
    };
    let Some(inner) = inner(ctx, key.family) else {
        return failed();
    };
    if tunnel.family != key.family {
        return failed();
    }
    let gue = backend.forward == FORWARD_GUE;
    let ip_len = if tunnel.family == FAMILY_V4 {
        IPV4_LEN
    } else {
        IPV6_LEN
    };
    let outer_len = ip_len + if gue { UDP_LEN } else { 0 };
    // Ask for the route while the packet is untouched. The egress: `None` is the kernel.
    let hop = fib::lookup(
        ctx,
        tunnel.family,
        &tunnel.src,
        &tunnel.dst,
        outer_len + inner.len,
    );
    let (macs, egress) = match hop {
        Hop::Out {
            macs,
            ifindex,
            back,
        } => (macs, Some((ifindex, back))),
        Hop::Unresolved => match packet::read::<12>(ctx, 0) {
            Some(macs) => (macs, None),
            None => return failed(),
        },
        Hop::TooBig(mtu) => return too_big(ctx, tunnel.family, mtu, outer_len),
        Hop::Local | Hop::Unroutable => {
            count(TUNNEL_STAT_UNROUTABLE);
            return xdp_action::XDP_DROP;
        }
    };
    // Room for the outer headers between a new Ethernet header and the client's IP header
    // (a VLAN tag is not kept: the routed egress decides).
    let delta = inner.l3 as i32 - (ETH_LEN + outer_len) as i32;
    // SAFETY: plain helper call on this program's context.
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, delta) } != 0 {
        return failed();
    }
    // The flow hash feeds GUE's source port and IPv6's flow label: plain IPv4 IPIP needs
    // none.
    let hash = match gue || tunnel.family != FAMILY_V4 {
        true => balancer_common::flow_hash(key, 0).0,
        false => 0,
    };
    let udp = gue.then(|| udp_header(tunnel, hash, UDP_LEN + inner.len));
    let written = match tunnel.family {
        FAMILY_V4 => write(
            ctx,
            &macs,
            ETH_P_IPV4,
            &ipv4_header(tunnel, &inner, gue),
            udp,
        ),
        _ => write(
            ctx,
            &macs,
            ETH_P_IPV6,
            &ipv6_header(tunnel, &inner, gue, hash),
            udp,
        ),
    };
    if written.is_none() {
        return failed();
    }
    match egress {
        None => {
            count(TUNNEL_STAT_UNRESOLVED);
            xdp_action::XDP_PASS
        }
        Some((ifindex, back)) => fib::leave(ifindex, back),
    }
}

/// The client's packet did not fit the route's `mtu` once encapsulated (`outer_len` bytes
/// of outer headers): it becomes the ICMP error telling the client the MTU that fits.
#[inline(always)]
fn too_big(ctx: &XdpContext, family: u8, mtu: u16, outer_len: usize) -> u32 {
    match icmp::too_big(ctx.ctx, family, mtu.saturating_sub(outer_len as u16)) {
        Answer::Failed => failed(),
        answer => {
            count(TUNNEL_STAT_TOO_BIG);
            answer.action()
        }
    }
}

/// Finds the client's IP header (after Ethernet and at most one VLAN tag) of `family`, and
/// reads its length and traffic class.
#[inline(always)]
fn inner(ctx: &XdpContext, family: u8) -> Option<Inner> {
    let start = ctx.data();
    let end = ctx.data_end();
    let l3 = packet::link_len(ctx, IPV4_LEN)?;
    let ip = (start + l3) as *const u8;
    if family == FAMILY_V4 {
        // SAFETY: the first 20 bytes after at most 18 lie in the checked range.
        let (tos, len) = unsafe { (*ip.add(1), u16::from_be_bytes([*ip.add(2), *ip.add(3)])) };
        return Some(Inner {
            l3,
            len: len as usize,
            tos,
        });
    }
    if start + l3 + IPV6_LEN > end {
        return None;
    }
    // SAFETY: the 40-byte header was bounds-checked.
    let (b0, b1, payload) = unsafe {
        (
            *ip,
            *ip.add(1),
            u16::from_be_bytes([*ip.add(4), *ip.add(5)]),
        )
    };
    Some(Inner {
        l3,
        len: IPV6_LEN + payload as usize,
        tos: (b0 << 4) | (b1 >> 4),
    })
}

/// The UDP source port of a GUE packet: the flow hash in the dynamic range, so backends'
/// receive-side scaling spreads flows.
#[inline(always)]
fn gue_source_port(hash: u64) -> u16 {
    0xc000 | (hash as u16 & 0x3fff)
}

/// The outer IPv4 header of the client's packet `inner` (protocol UDP for GUE).
#[inline(always)]
fn ipv4_header(tunnel: &Tunnel, inner: &Inner, gue: bool) -> [u8; IPV4_LEN] {
    let udp_len = if gue { UDP_LEN } else { 0 };
    let total = (IPV4_LEN + udp_len + inner.len) as u16;
    let mut ip = [0u8; IPV4_LEN];
    ip[0] = 0x45;
    ip[1] = inner.tos;
    ip[2..4].copy_from_slice(&total.to_be_bytes());
    // Don't Fragment: the backend's decapsulation does not reassemble.
    ip[6] = 0x40;
    ip[8] = OUTER_TTL;
    ip[9] = if gue { PROTO_UDP } else { PROTO_IPIP };
    ip[12..16].copy_from_slice(&fib::first4(&tunnel.src));
    ip[16..20].copy_from_slice(&fib::first4(&tunnel.dst));
    let checksum = ipv4_checksum(&ip);
    ip[10..12].copy_from_slice(&checksum.to_be_bytes());
    ip
}

/// The outer IPv6 header of the client's packet `inner` (next header UDP for GUE), its flow
/// label from the flow hash: ECMP and receive-side scaling spread flows.
#[inline(always)]
fn ipv6_header(tunnel: &Tunnel, inner: &Inner, gue: bool, hash: u64) -> [u8; IPV6_LEN] {
    let udp_len = if gue { UDP_LEN } else { 0 };
    let payload = (udp_len + inner.len) as u16;
    let label = (hash >> 12) as u32 & 0x000f_ffff;
    let mut ip = [0u8; IPV6_LEN];
    let first = (6u32 << 28) | (u32::from(inner.tos) << 20) | label;
    ip[0..4].copy_from_slice(&first.to_be_bytes());
    ip[4..6].copy_from_slice(&payload.to_be_bytes());
    ip[6] = if gue { PROTO_UDP } else { PROTO_IPV6 };
    ip[7] = OUTER_TTL;
    ip[8..24].copy_from_slice(&tunnel.src);
    ip[24..40].copy_from_slice(&tunnel.dst);
    ip
}

/// Writes the Ethernet header (`macs`, `ether_type`), the outer IP header `ip` and the UDP
/// header of GUE in front of the client's packet, where `bpf_xdp_adjust_head` made room.
#[inline(always)]
fn write<const N: usize>(
    ctx: &XdpContext,
    macs: &[u8; 12],
    ether_type: u16,
    ip: &[u8; N],
    udp: Option<[u8; UDP_LEN]>,
) -> Option<()> {
    let start = ctx.data();
    if start + ETH_LEN + N + UDP_LEN > ctx.data_end() {
        return None;
    }
    let p = start as *mut u8;
    // SAFETY: 14 + N + 8 bytes were bounds-checked; packet and stack never overlap.
    unsafe {
        core::ptr::copy_nonoverlapping(macs.as_ptr(), p, 12);
        core::ptr::copy_nonoverlapping(ether_type.to_be_bytes().as_ptr(), p.add(12), 2);
        core::ptr::copy_nonoverlapping(ip.as_ptr(), p.add(ETH_LEN), N);
        if let Some(udp) = udp {
            core::ptr::copy_nonoverlapping(udp.as_ptr(), p.add(ETH_LEN + N), UDP_LEN);
        }
    }
    Some(())
}

/// A GUE packet's UDP header of `len` bytes (header and payload); checksum 0 (RFC 6935 for
/// IPv6 tunnels).
#[inline(always)]
fn udp_header(tunnel: &Tunnel, hash: u64, len: usize) -> [u8; UDP_LEN] {
    let sport = gue_source_port(hash).to_be_bytes();
    let dport = tunnel.port_be.to_ne_bytes();
    let len = (len as u16).to_be_bytes();
    [sport[0], sport[1], dport[0], dport[1], len[0], len[1], 0, 0]
}

/// The IPv4 header checksum (RFC 791) of a header whose checksum field is zero.
#[inline(always)]
fn ipv4_checksum(header: &[u8; IPV4_LEN]) -> u16 {
    let mut sum = 0u32;
    let mut i = 0;
    while i < IPV4_LEN {
        sum += u32::from(u16::from_be_bytes([header[i], header[i + 1]]));
        i += 2;
    }
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    !(sum as u16)
}

/// Counts a tunnel counter.
#[inline(always)]
fn count(stat: u32) {
    if let Some(counter) = TUNNEL_STATS.get_ptr_mut(stat) {
        // SAFETY: a per-CPU slot: no other writer runs on this CPU meanwhile.
        unsafe { *counter += 1 };
    }
}

/// A packet that could not be encapsulated: counted and dropped.
#[inline(always)]
fn failed() -> u32 {
    count(TUNNEL_STAT_FAILED);
    xdp_action::XDP_DROP
}
