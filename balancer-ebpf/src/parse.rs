//! Header parsing: Ethernet (+ one 802.1Q/802.1ad tag), IPv4 (with options), IPv6, TCP, UDP.
//!
//! Every read is bounds-checked against `data_end`; nothing here can fault or loop.
//!
//! A TCP/UDP packet is a flow only when its lengths agree with each other and with the
//! frame: IPv4 IHL at least 5; the datagram (IPv4 total length, or the IPv6 header plus its
//! payload length) within the frame, which may be longer (Ethernet padding); the TCP header
//! (data offset at least 5) or the UDP length (at least 8) within the datagram. Anything else
//! is malformed. Checksums are not verified (the backend's kernel does), and IPv4 options
//! are allowed. A well-formed TCP/UDP packet to a port and protocol that no VIP serves, and
//! from one that no `nat` backend answers from, is not ours (the pre-filter, `VIP_PORTS`):
//! its addresses are not even copied.

use core::mem::MaybeUninit;

use aya_ebpf::programs::XdpContext;
use balancer_common::{
    reply_port_bit, vip_port_bit, FlowKey, FAMILY_V4, FAMILY_V6, PROTO_TCP, PROTO_UDP,
};

use crate::{
    maps::VIP_PORTS,
    wire::{
        ETH_P_8021AD, ETH_P_8021Q, ETH_P_IPV4, ETH_P_IPV6, IPV6_LEN, PROTO_ICMP, PROTO_ICMPV6,
        UDP_LEN,
    },
};

const IPV4_MIN_LEN: usize = 20;
const TCP_MIN_LEN: usize = 20;

/// IPv6 next-header values of extension headers (hop-by-hop, routing, fragment,
/// destination options, AH, ESP, mobility, HIP, shim6).
const IPV6_EXTENSION_HEADERS: [u8; 9] = [0, 43, 44, 60, 51, 50, 135, 139, 140];

/// Ethernet header.
#[repr(C)]
pub struct EthHdr {
    pub dst: [u8; 6],
    pub src: [u8; 6],
    pub ether_type_be: u16,
}

/// What the parser found.
pub enum Parsed<'a> {
    /// Not TCP/UDP over IP, or TCP/UDP to a port and protocol no VIP serves (see
    /// `VIP_PORTS`): not ours.
    Other,
    /// Headers truncated or inconsistent: lengths that disagree with each other or with
    /// the frame.
    Malformed,
    /// TCP/UDP that cannot be balanced safely per flow (IPv4 fragment, IPv6 extension
    /// headers): passed to the kernel rather than risk a wrong backend.
    Unbalanceable,
    /// An ICMP (IPv4) or ICMPv6 packet, whole and not a fragment: maybe an error about a
    /// `nat` flow, to translate. Its IP header starts at `l3`.
    Icmp {
        /// [`FAMILY_V4`] or [`FAMILY_V6`].
        family: u8,
        /// Offset of the IP header in the frame.
        l3: usize,
    },
    /// A TCP or UDP packet from a port and protocol that only a `nat` backend's reply has
    /// (not to a VIP's): its 5-tuple (source: the backend), written into the caller's key.
    Reply {
        /// The 5-tuple.
        key: &'a mut FlowKey,
        /// TCP flags.
        tcp_flags: u8,
    },
    /// A TCP or UDP flow to a VIP port: its 5-tuple, written into the caller's key, with
    /// the TCP header's flags and sequence number (0 for UDP).
    Flow {
        /// The 5-tuple.
        key: &'a mut FlowKey,
        /// TCP flags.
        tcp_flags: u8,
        /// TCP sequence number (host order).
        tcp_seq: u32,
    },
}

#[inline(always)]
fn ptr_at<T>(ctx: &XdpContext, offset: usize) -> Option<*const T> {
    let start = ctx.data();
    let end = ctx.data_end();
    if start + offset + core::mem::size_of::<T>() > end {
        return None;
    }
    Some((start + offset) as *const T)
}

/// Copies `N` packet bytes at `offset` into `out`; the caller bounds-checked them.
///
/// # Safety
/// `base + offset .. base + offset + N` must lie inside the packet.
#[inline(always)]
unsafe fn copy_bytes<const N: usize>(base: *const u8, offset: usize, out: &mut [u8; 16]) {
    // SAFETY: the caller guarantees the source; `out` holds at least N (<= 16) bytes; packet
    // and stack never overlap.
    unsafe { core::ptr::copy_nonoverlapping(base.add(offset), out.as_mut_ptr(), N) }
}

/// Parses the packet in `ctx`; a flow's 5-tuple goes into `key`, which is written (zeroed
/// first) only for a flow to a VIP port. The key is filled in place: moving a 40-byte key
/// through return values makes the BPF code generator split it into bytes and spill them.
#[inline(always)]
pub fn parse<'a>(ctx: &XdpContext, key: &'a mut MaybeUninit<FlowKey>) -> Parsed<'a> {
    let Some(eth) = ptr_at::<[u8; 14]>(ctx, 0) else {
        return Parsed::Malformed;
    };
    let eth = eth as *const u8;
    // SAFETY: the 14 Ethernet bytes were bounds-checked.
    let mut ether_type = unsafe { u16::from_be_bytes([*eth.add(12), *eth.add(13)]) };
    let mut offset = core::mem::size_of::<EthHdr>();
    if ether_type == ETH_P_8021Q || ether_type == ETH_P_8021AD {
        // Tag control (2 bytes) then the encapsulated type.
        let Some(tag) = ptr_at::<[u8; 4]>(ctx, offset) else {
            return Parsed::Malformed;
        };
        let tag = tag as *const u8;
        // SAFETY: the 4 tag bytes were bounds-checked.
        ether_type = unsafe { u16::from_be_bytes([*tag.add(2), *tag.add(3)]) };
        offset += 4;
    }
    match ether_type {
        ETH_P_IPV4 => parse_ipv4(ctx, offset, key),
        ETH_P_IPV6 => parse_ipv6(ctx, offset, key),
        _ => Parsed::Other,
    }
}

#[inline(always)]
fn parse_ipv4<'a>(
    ctx: &XdpContext,
    offset: usize,
    key: &'a mut MaybeUninit<FlowKey>,
) -> Parsed<'a> {
    let Some(hdr) = ptr_at::<[u8; IPV4_MIN_LEN]>(ctx, offset) else {
        return Parsed::Malformed;
    };
    let hdr = hdr as *const u8;
    // SAFETY: the 20 header bytes read below were bounds-checked.
    let (first, total_len, proto, frag) = unsafe {
        (
            *hdr,
            u16::from_be_bytes([*hdr.add(2), *hdr.add(3)]) as usize,
            *hdr.add(9),
            [*hdr.add(6), *hdr.add(7)],
        )
    };
    let header_len = ((first & 0x0f) as usize) * 4;
    if first >> 4 != 4 || header_len < IPV4_MIN_LEN {
        return Parsed::Malformed;
    }
    if proto == PROTO_ICMP {
        return icmp(ctx, offset, total_len, FAMILY_V4, u16::from_be_bytes(frag));
    }
    if proto != PROTO_TCP && proto != PROTO_UDP {
        return Parsed::Other;
    }
    // More-fragments flag or a fragment offset: no (or no trustworthy) L4 header.
    if u16::from_be_bytes(frag) & 0x3fff != 0 {
        return Parsed::Unbalanceable;
    }
    if !datagram_fits(ctx, offset, total_len) {
        return Parsed::Malformed;
    }
    let Some(l4_len) = total_len.checked_sub(header_len) else {
        return Parsed::Malformed;
    };
    let mut parsed = parse_l4(ctx, offset + header_len, l4_len, (proto, FAMILY_V4), key);
    if let Parsed::Flow { key, .. } | Parsed::Reply { key, .. } = &mut parsed {
        // SAFETY: source (12..16) and destination (16..20) lie in the checked header.
        unsafe {
            copy_bytes::<4>(hdr, 12, &mut key.src);
            copy_bytes::<4>(hdr, 16, &mut key.dst);
        }
    }
    parsed
}

#[inline(always)]
fn parse_ipv6<'a>(
    ctx: &XdpContext,
    offset: usize,
    key: &'a mut MaybeUninit<FlowKey>,
) -> Parsed<'a> {
    let Some(hdr) = ptr_at::<[u8; IPV6_LEN]>(ctx, offset) else {
        return Parsed::Malformed;
    };
    let hdr = hdr as *const u8;
    // SAFETY: the 40 header bytes read below were bounds-checked.
    let (first, payload_len, next) = unsafe {
        (
            *hdr,
            u16::from_be_bytes([*hdr.add(4), *hdr.add(5)]) as usize,
            *hdr.add(6),
        )
    };
    if first >> 4 != 6 {
        return Parsed::Malformed;
    }
    if next == PROTO_ICMPV6 {
        return icmp(ctx, offset, IPV6_LEN + payload_len, FAMILY_V6, 0);
    }
    if next != PROTO_TCP && next != PROTO_UDP {
        if IPV6_EXTENSION_HEADERS.contains(&next) {
            return Parsed::Unbalanceable;
        }
        return Parsed::Other;
    }
    if !datagram_fits(ctx, offset, IPV6_LEN + payload_len) {
        return Parsed::Malformed;
    }
    let mut parsed = parse_l4(ctx, offset + IPV6_LEN, payload_len, (next, FAMILY_V6), key);
    if let Parsed::Flow { key, .. } | Parsed::Reply { key, .. } = &mut parsed {
        // SAFETY: source (8..24) and destination (24..40) lie in the checked header.
        unsafe {
            copy_bytes::<16>(hdr, 8, &mut key.src);
            copy_bytes::<16>(hdr, 24, &mut key.dst);
        }
    }
    parsed
}

/// An ICMP packet of `family` whose IP header at `offset` says it is `len` bytes long
/// (`frag`: IPv4's flags and fragment offset): whole, not a fragment, and within the frame;
/// anything else is not ours.
#[inline(always)]
fn icmp<'a>(ctx: &XdpContext, offset: usize, len: usize, family: u8, frag: u16) -> Parsed<'a> {
    if frag & 0x3fff != 0 || !datagram_fits(ctx, offset, len) {
        return Parsed::Other;
    }
    Parsed::Icmp { family, l3: offset }
}

/// Whether `VIP_PORTS` lets packets to destination port `port` of protocol `proto` through:
/// one array read.
#[inline(always)]
fn vip_port(port: u16, proto: u8) -> bool {
    port_bits(port) & vip_port_bit(proto) != 0
}

/// Whether packets of `proto` from source port `port_be` (network byte order) may be the
/// replies of a `nat` backend: one array read.
#[inline(always)]
pub fn reply_port(port_be: u16, proto: u8) -> bool {
    port_bits(u16::from_be(port_be)) & reply_port_bit(proto) != 0
}

/// The `VIP_PORTS` entry of `port`.
#[inline(always)]
fn port_bits(port: u16) -> u32 {
    VIP_PORTS.get(u32::from(port)).copied().unwrap_or(0)
}

/// Whether a datagram of `len` bytes starting at `offset` lies within the frame. The frame
/// may hold more: Ethernet pads short frames to its minimum size.
#[inline(always)]
fn datagram_fits(ctx: &XdpContext, offset: usize, len: usize) -> bool {
    ctx.data() + offset + len <= ctx.data_end()
}

/// Reads the ports of the TCP or UDP header at `offset`, after checking it against the
/// `l4_len` bytes that the IP header says follow it: the TCP header (data offset × 4, at
/// least 20) or the UDP length (at least 8) must lie within them. A flow to a VIP port gets
/// `key` zeroed and its protocol, family (`proto_family`) and ports written.
#[inline(always)]
fn parse_l4<'a>(
    ctx: &XdpContext,
    offset: usize,
    l4_len: usize,
    (proto, family): (u8, u8),
    key: &'a mut MaybeUninit<FlowKey>,
) -> Parsed<'a> {
    let mut tcp_flags = 0;
    let mut tcp_seq = 0;
    let l4 = if proto == PROTO_TCP {
        let Some(tcp) = ptr_at::<[u8; TCP_MIN_LEN]>(ctx, offset) else {
            return Parsed::Malformed;
        };
        let tcp = tcp as *const u8;
        // SAFETY: byte 12 (data offset) lies in the checked 20-byte header.
        let header_len = unsafe { (*tcp.add(12) >> 4) as usize } * 4;
        if header_len < TCP_MIN_LEN || header_len > l4_len {
            return Parsed::Malformed;
        }
        // SAFETY: byte 13 (flags) lies in the checked 20-byte header.
        tcp_flags = unsafe { *tcp.add(13) };
        // SAFETY: bytes 4..8 (sequence number) lie in the checked 20-byte header.
        tcp_seq =
            unsafe { u32::from_be_bytes([*tcp.add(4), *tcp.add(5), *tcp.add(6), *tcp.add(7)]) };
        tcp
    } else {
        let Some(udp) = ptr_at::<[u8; UDP_LEN]>(ctx, offset) else {
            return Parsed::Malformed;
        };
        let udp = udp as *const u8;
        // SAFETY: bytes 4..6 (length) lie in the checked 8-byte header.
        let length = unsafe { u16::from_be_bytes([*udp.add(4), *udp.add(5)]) } as usize;
        if length < UDP_LEN || length > l4_len {
            return Parsed::Malformed;
        }
        udp
    };
    // SAFETY: the first 4 bytes of the (at least 8-byte) L4 header were bounds-checked.
    let (sport, dport) = unsafe { ([*l4, *l4.add(1)], [*l4.add(2), *l4.add(3)]) };
    // The pre-filter: a port and protocol that no VIP serves (nor served, while flows to it
    // are active), and that no `nat` backend answers from, is not ours, before any more
    // work.
    let to_vip = vip_port(u16::from_be_bytes(dport), proto);
    if !to_vip && !reply_port(u16::from_ne_bytes(sport), proto) {
        return Parsed::Other;
    }
    let key = zeroed(key);
    key.proto = proto;
    key.family = family;
    // Ports stay in network byte order, as they are on the wire.
    key.sport_be = u16::from_ne_bytes(sport);
    key.dport_be = u16::from_ne_bytes(dport);
    if !to_vip {
        return Parsed::Reply { key, tcp_flags };
    }
    Parsed::Flow {
        key,
        tcp_flags,
        tcp_seq,
    }
}

/// Zeroes `key` in place with five 8-byte stores. Zeroing it any other way (`Default`,
/// `write_bytes`) compiles to a call of a byte-wise `memset` subprogram, which cost more than
/// the rest of the established-flow path.
#[inline(always)]
fn zeroed(key: &mut MaybeUninit<FlowKey>) -> &mut FlowKey {
    const WORDS: usize = core::mem::size_of::<FlowKey>() / 8;
    let words = key.as_mut_ptr().cast::<u64>();
    for i in 0..WORDS {
        // SAFETY: FlowKey is 8-aligned and WORDS * 8 bytes long; volatile keeps the stores
        // from being merged back into a memset call.
        unsafe { core::ptr::write_volatile(words.add(i), 0) };
    }
    // SAFETY: every byte was written, and all-zero is a valid FlowKey (plain data).
    unsafe { key.assume_init_mut() }
}
