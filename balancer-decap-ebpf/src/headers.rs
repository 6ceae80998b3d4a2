//! Finding a tunnel packet: Ethernet (+ one 802.1Q/802.1ad tag), the outer IPv4 (with
//! options) or IPv6 header (no extension headers), the UDP header of GUE, and the inner IP
//! header's version and length.
//!
//! Every read is bounds-checked against `data_end`; nothing here can fault or loop.

use aya_ebpf::programs::XdpContext;

use crate::maps::gue_port;

const ETH_LEN: usize = 14;
const VLAN_LEN: usize = 4;
const ETH_P_IPV4: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88a8;
const IPV4_MIN_LEN: usize = 20;
const IPV6_LEN: usize = 40;
const UDP_LEN: usize = 8;
const PROTO_IPIP: u8 = 4;
const PROTO_IPV6: u8 = 41;
const PROTO_UDP: u8 = 17;

/// The outer source address of a tunnel packet.
pub enum Source {
    /// IPv4.
    V4([u8; 4]),
    /// IPv6.
    V6([u8; 16]),
}

/// A tunnel packet as found.
pub struct Tunnel {
    /// The outer source.
    pub source: Source,
    /// Whether a VLAN tag follows the MAC addresses (its TPID and TCI stay).
    pub tagged: bool,
    /// Bytes of outer IP (and UDP) headers to cut off.
    pub outer_len: usize,
    /// Whether the inner packet is IPv6.
    pub inner_v6: bool,
}

/// What the frame is.
pub enum Found {
    /// Not a tunnel packet.
    Other,
    /// A tunnel packet (or a fragment of one) that cannot be decapsulated: see the crate's
    /// documentation.
    Malformed,
    /// A tunnel packet to decapsulate.
    Tunnel(Tunnel),
}

#[inline(always)]
fn ptr_at<T>(ctx: &XdpContext, offset: usize) -> Option<*const u8> {
    if ctx.data() + offset + core::mem::size_of::<T>() > ctx.data_end() {
        return None;
    }
    Some((ctx.data() + offset) as *const u8)
}

#[inline(always)]
fn fits(ctx: &XdpContext, offset: usize, len: usize) -> bool {
    ctx.data() + offset + len <= ctx.data_end()
}

/// Looks at the frame in `ctx`.
#[inline(always)]
pub fn find(ctx: &XdpContext) -> Found {
    let Some(eth) = ptr_at::<[u8; ETH_LEN]>(ctx, 0) else {
        return Found::Other;
    };
    // SAFETY: the 14 Ethernet bytes were bounds-checked.
    let mut ether_type = unsafe { u16::from_be_bytes([*eth.add(12), *eth.add(13)]) };
    let mut offset = ETH_LEN;
    let tagged = ether_type == ETH_P_8021Q || ether_type == ETH_P_8021AD;
    if tagged {
        let Some(tag) = ptr_at::<[u8; VLAN_LEN]>(ctx, offset) else {
            return Found::Other;
        };
        // SAFETY: the 4 tag bytes were bounds-checked.
        ether_type = unsafe { u16::from_be_bytes([*tag.add(2), *tag.add(3)]) };
        offset += VLAN_LEN;
    }
    let outer = match ether_type {
        ETH_P_IPV4 => outer_ipv4(ctx, offset),
        ETH_P_IPV6 => outer_ipv6(ctx, offset),
        _ => return Found::Other,
    };
    let Some((source, protocol, payload, payload_len)) = outer else {
        return Found::Other;
    };
    if payload == 0 {
        return Found::Malformed;
    }
    let (inner, inner_len) = match protocol {
        PROTO_IPIP | PROTO_IPV6 => (payload, payload_len),
        PROTO_UDP => match gue(ctx, payload, payload_len) {
            Gue::Other => return Found::Other,
            Gue::Malformed => return Found::Malformed,
            Gue::Payload(len) => (payload + UDP_LEN, len),
        },
        _ => return Found::Other,
    };
    let inner_v6 = match protocol {
        PROTO_IPIP => false,
        PROTO_IPV6 => true,
        // GUE variant 1: the IP version of the payload's first nibble (read after checking
        // the 20 bytes both headers have at least: one byte alone the verifier would not
        // take as checked).
        _ => match ptr_at::<[u8; IPV4_MIN_LEN]>(ctx, inner) {
            // SAFETY: the byte was bounds-checked.
            Some(first) => match unsafe { *first } >> 4 {
                4 => false,
                6 => true,
                _ => return Found::Malformed,
            },
            None => return Found::Malformed,
        },
    };
    let whole = if inner_v6 {
        inner_ipv6(ctx, inner, inner_len)
    } else {
        inner_ipv4(ctx, inner, inner_len)
    };
    if !whole {
        return Found::Malformed;
    }
    Found::Tunnel(Tunnel {
        source,
        tagged,
        outer_len: inner - offset,
        inner_v6,
    })
}

/// The outer IPv4 header at `offset`: (source, protocol, payload offset, payload length),
/// the payload offset 0 for a tunnel protocol in a header that cannot be decapsulated
/// (lengths beyond the frame, a fragment). `None`: not IPv4 that could carry a tunnel.
#[inline(always)]
fn outer_ipv4(ctx: &XdpContext, offset: usize) -> Option<(Source, u8, usize, usize)> {
    let hdr = ptr_at::<[u8; IPV4_MIN_LEN]>(ctx, offset)?;
    // SAFETY: the 20 header bytes read below were bounds-checked.
    let (first, total_len, frag, protocol, source) = unsafe {
        (
            *hdr,
            u16::from_be_bytes([*hdr.add(2), *hdr.add(3)]) as usize,
            u16::from_be_bytes([*hdr.add(6), *hdr.add(7)]),
            *hdr.add(9),
            [*hdr.add(12), *hdr.add(13), *hdr.add(14), *hdr.add(15)],
        )
    };
    let header_len = ((first & 0x0f) as usize) * 4;
    if first >> 4 != 4 || header_len < IPV4_MIN_LEN || !is_tunnel_protocol(protocol) {
        return None;
    }
    let whole = frag & 0x3fff == 0 && total_len >= header_len && fits(ctx, offset, total_len);
    if !whole {
        return Some((Source::V4(source), protocol, 0, 0));
    }
    Some((
        Source::V4(source),
        protocol,
        offset + header_len,
        total_len - header_len,
    ))
}

/// The outer IPv6 header at `offset`, as [`outer_ipv4`]. Extension headers are not
/// followed: such a packet is not a tunnel packet here.
#[inline(always)]
fn outer_ipv6(ctx: &XdpContext, offset: usize) -> Option<(Source, u8, usize, usize)> {
    let hdr = ptr_at::<[u8; IPV6_LEN]>(ctx, offset)?;
    // SAFETY: the 40 header bytes read below were bounds-checked.
    let (first, payload_len, protocol) = unsafe {
        (
            *hdr,
            u16::from_be_bytes([*hdr.add(4), *hdr.add(5)]) as usize,
            *hdr.add(6),
        )
    };
    if first >> 4 != 6 || !is_tunnel_protocol(protocol) {
        return None;
    }
    let mut source = [0u8; 16];
    // SAFETY: the source (8..24) lies in the checked header; `source` is 16 bytes of stack.
    unsafe { core::ptr::copy_nonoverlapping(hdr.add(8), source.as_mut_ptr(), 16) };
    if !fits(ctx, offset + IPV6_LEN, payload_len) {
        return Some((Source::V6(source), protocol, 0, 0));
    }
    Some((Source::V6(source), protocol, offset + IPV6_LEN, payload_len))
}

#[inline(always)]
fn is_tunnel_protocol(protocol: u8) -> bool {
    protocol == PROTO_IPIP || protocol == PROTO_IPV6 || protocol == PROTO_UDP
}

/// What a UDP datagram is to the decapsulator.
enum Gue {
    /// Not to the GUE port (or too short to tell).
    Other,
    /// To the GUE port, with a UDP length beyond the datagram or below the header.
    Malformed,
    /// To the GUE port: the length of its payload.
    Payload(usize),
}

/// The UDP header at `offset`, in an IP payload of `len` bytes.
#[inline(always)]
fn gue(ctx: &XdpContext, offset: usize, len: usize) -> Gue {
    let Some(udp) = ptr_at::<[u8; UDP_LEN]>(ctx, offset) else {
        return Gue::Other;
    };
    // SAFETY: the 8 UDP header bytes were bounds-checked.
    let (port, udp_len) = unsafe {
        (
            u16::from_be_bytes([*udp.add(2), *udp.add(3)]),
            u16::from_be_bytes([*udp.add(4), *udp.add(5)]) as usize,
        )
    };
    if port != gue_port() || len < UDP_LEN {
        return Gue::Other;
    }
    if udp_len < UDP_LEN || udp_len > len {
        return Gue::Malformed;
    }
    Gue::Payload(udp_len - UDP_LEN)
}

/// Whether a whole IPv4 header (version 4, IHL at least 5) starts at `offset` and its
/// total length fits in the `len` bytes the outer headers give it.
#[inline(always)]
fn inner_ipv4(ctx: &XdpContext, offset: usize, len: usize) -> bool {
    let Some(hdr) = ptr_at::<[u8; IPV4_MIN_LEN]>(ctx, offset) else {
        return false;
    };
    // SAFETY: the bytes read below lie in the checked 20-byte header.
    let (first, total_len) = unsafe {
        (
            *hdr,
            u16::from_be_bytes([*hdr.add(2), *hdr.add(3)]) as usize,
        )
    };
    let header_len = ((first & 0x0f) as usize) * 4;
    first >> 4 == 4 && header_len >= IPV4_MIN_LEN && total_len >= header_len && total_len <= len
}

/// Whether a whole IPv6 header starts at `offset` and its payload fits in the `len` bytes
/// the outer headers give it.
#[inline(always)]
fn inner_ipv6(ctx: &XdpContext, offset: usize, len: usize) -> bool {
    let Some(hdr) = ptr_at::<[u8; IPV6_LEN]>(ctx, offset) else {
        return false;
    };
    // SAFETY: the bytes read below lie in the checked 40-byte header.
    let (first, payload_len) = unsafe {
        (
            *hdr,
            u16::from_be_bytes([*hdr.add(4), *hdr.add(5)]) as usize,
        )
    };
    first >> 4 == 6 && IPV6_LEN + payload_len <= len
}
