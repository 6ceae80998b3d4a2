//! Header parsing: Ethernet (+ one 802.1Q/802.1ad tag), IPv4 (with options), IPv6, TCP, UDP.
//!
//! Every read is bounds-checked against `data_end`; nothing here can fault or loop.

use aya_ebpf::programs::XdpContext;
use balancer_common::{FlowKey, FAMILY_V4, FAMILY_V6, PROTO_TCP, PROTO_UDP};

const ETH_P_IPV4: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88a8;

const IPV4_MIN_LEN: usize = 20;
const IPV6_LEN: usize = 40;
const TCP_MIN_LEN: usize = 20;
const UDP_LEN: usize = 8;

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

/// A packet that can be balanced.
pub struct Packet {
    pub key: FlowKey,
}

/// What the parser found.
pub enum Parsed {
    /// Not TCP/UDP over IP: not ours.
    Other,
    /// Headers truncated or inconsistent.
    Malformed,
    /// TCP/UDP that cannot be balanced safely per flow (IPv4 fragment, IPv6 extension
    /// headers): passed to the kernel rather than risk a wrong backend.
    Unbalanceable,
    /// A TCP or UDP flow.
    Flow(Packet),
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

#[inline(always)]
fn read<T: Copy>(ctx: &XdpContext, offset: usize) -> Option<T> {
    // SAFETY: ptr_at checked the whole T lies inside the packet; unaligned read.
    ptr_at::<T>(ctx, offset).map(|p| unsafe { core::ptr::read_unaligned(p) })
}

/// Parses the packet in `ctx`.
#[inline(always)]
pub fn parse(ctx: &XdpContext) -> Parsed {
    let Some(mut ether_type) = read::<u16>(ctx, 12).map(u16::from_be) else {
        return Parsed::Malformed;
    };
    let mut offset = core::mem::size_of::<EthHdr>();
    if ether_type == ETH_P_8021Q || ether_type == ETH_P_8021AD {
        // Tag control (2 bytes) then the encapsulated type.
        let Some(inner) = read::<u16>(ctx, offset + 2).map(u16::from_be) else {
            return Parsed::Malformed;
        };
        ether_type = inner;
        offset += 4;
    }
    match ether_type {
        ETH_P_IPV4 => parse_ipv4(ctx, offset),
        ETH_P_IPV6 => parse_ipv6(ctx, offset),
        _ => Parsed::Other,
    }
}

#[inline(always)]
fn parse_ipv4(ctx: &XdpContext, offset: usize) -> Parsed {
    let Some(hdr) = read::<[u8; IPV4_MIN_LEN]>(ctx, offset) else {
        return Parsed::Malformed;
    };
    let version = hdr[0] >> 4;
    let header_len = ((hdr[0] & 0x0f) as usize) * 4;
    if version != 4 || header_len < IPV4_MIN_LEN {
        return Parsed::Malformed;
    }
    let proto = hdr[9];
    if proto != PROTO_TCP && proto != PROTO_UDP {
        return Parsed::Other;
    }
    // More-fragments flag or a fragment offset: no (or no trustworthy) L4 header.
    let frag = u16::from_be_bytes([hdr[6], hdr[7]]);
    if frag & 0x3fff != 0 {
        return Parsed::Unbalanceable;
    }
    let mut key = FlowKey {
        proto,
        family: FAMILY_V4,
        ..FlowKey::default()
    };
    key.src[0] = hdr[12];
    key.src[1] = hdr[13];
    key.src[2] = hdr[14];
    key.src[3] = hdr[15];
    key.dst[0] = hdr[16];
    key.dst[1] = hdr[17];
    key.dst[2] = hdr[18];
    key.dst[3] = hdr[19];
    parse_l4(ctx, offset + header_len, key)
}

#[inline(always)]
fn parse_ipv6(ctx: &XdpContext, offset: usize) -> Parsed {
    let Some(hdr) = read::<[u8; IPV6_LEN]>(ctx, offset) else {
        return Parsed::Malformed;
    };
    if hdr[0] >> 4 != 6 {
        return Parsed::Malformed;
    }
    let next = hdr[6];
    if next != PROTO_TCP && next != PROTO_UDP {
        if IPV6_EXTENSION_HEADERS.contains(&next) {
            return Parsed::Unbalanceable;
        }
        return Parsed::Other;
    }
    let mut key = FlowKey {
        proto: next,
        family: FAMILY_V6,
        ..FlowKey::default()
    };
    let Some(src) = hdr.get(8..24) else {
        return Parsed::Malformed;
    };
    let Some(dst) = hdr.get(24..40) else {
        return Parsed::Malformed;
    };
    key.src.copy_from_slice(src);
    key.dst.copy_from_slice(dst);
    parse_l4(ctx, offset + IPV6_LEN, key)
}

#[inline(always)]
fn parse_l4(ctx: &XdpContext, offset: usize, mut key: FlowKey) -> Parsed {
    let min_len = if key.proto == PROTO_TCP {
        TCP_MIN_LEN
    } else {
        UDP_LEN
    };
    if ptr_at::<[u8; UDP_LEN]>(ctx, offset).is_none() {
        return Parsed::Malformed;
    }
    if min_len == TCP_MIN_LEN && ptr_at::<[u8; TCP_MIN_LEN]>(ctx, offset).is_none() {
        return Parsed::Malformed;
    }
    let Some(ports) = read::<[u16; 2]>(ctx, offset) else {
        return Parsed::Malformed;
    };
    // Ports stay in network byte order, as they are on the wire.
    key.sport_be = ports[0];
    key.dport_be = ports[1];
    Parsed::Flow(Packet { key })
}
