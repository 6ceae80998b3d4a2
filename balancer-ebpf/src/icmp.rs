//! The ICMP errors the program answers with itself: a client packet that does not fit the
//! egress MTU once encapsulated becomes, in place, "fragmentation needed" (ICMPv4 type 3
//! code 4, RFC 792/1191) or "packet too big" (ICMPv6 type 2, RFC 4443) from the address
//! the client sent it to (the VIP) back to the client, out of the interface it came in
//! (`XDP_TX`, the MAC addresses swapped, a VLAN tag kept).
//!
//! The error quotes the client's packet: for IPv4 its IP header and the first 8 bytes after
//! it (RFC 792), for IPv6 as much as keeps the error within the IPv6 minimum MTU of 1280
//! bytes (RFC 4443). An IPv4 packet without Don't Fragment gets no error (RFC 1191: the
//! message means "fragmentation needed and DF set"): the program cannot fragment it, so
//! the caller drops it.

use aya_ebpf::{
    bindings::{xdp_action, xdp_md},
    helpers::generated::{bpf_csum_diff, bpf_xdp_adjust_head, bpf_xdp_adjust_tail},
    programs::XdpContext,
};

use balancer_common::FAMILY_V4;

use crate::packet::{self, LINK_MAX};
use crate::wire::{
    ICMPV6_TOO_BIG, ICMP_LEN, ICMP_UNREACHABLE, IPV4_LEN, IPV6_LEN, PROTO_ICMP, PROTO_ICMPV6,
};

/// Bytes after the client's IPv4 header that the error quotes (RFC 792).
const IPV4_QUOTED_PAYLOAD: usize = 8;
/// Most of the client's IPv6 packet the error quotes: the error fits the IPv6 minimum MTU.
const IPV6_QUOTE_MAX: usize = 1280 - IPV6_LEN - ICMP_LEN;
/// ICMPv4 "destination unreachable" code "fragmentation needed and DF set".
const ICMP_FRAGMENTATION_NEEDED: u8 = 4;
/// The IPv4 Don't Fragment flag, in byte 6 of the header.
const DONT_FRAGMENT: u8 = 0x40;
/// Precedence "internetwork control" (RFC 1812 §4.3.2.5): the traffic class of ICMPv4
/// errors.
const INTERNETWORK_CONTROL: u8 = 0xc0;
/// TTL and hop limit of the errors.
const TTL: u8 = 64;
/// Bytes one `bpf_csum_diff` call sums at most (a multiple of 4, as the helper wants; it
/// takes at most 512).
const CHUNK: usize = 256;
/// Whole chunks in the longest message: the ICMPv6 header and the longest quote.
const CHUNKS: usize = (ICMP_LEN + IPV6_QUOTE_MAX) / CHUNK;

/// What became of a client packet too big for the egress MTU.
pub enum Answer {
    /// It became the ICMP error; the frame is to be sent back (`XDP_TX`).
    Sent,
    /// An IPv4 packet without Don't Fragment: no error may be sent, and it cannot be
    /// fragmented here.
    Unfragmentable,
    /// It could not be turned into the error (frame shorter than its headers say, or the
    /// frame could not be resized).
    Failed,
}

impl Answer {
    /// The XDP action of the answer.
    #[inline(always)]
    pub fn action(&self) -> u32 {
        match self {
            Answer::Sent => xdp_action::XDP_TX,
            Answer::Unfragmentable | Answer::Failed => xdp_action::XDP_DROP,
        }
    }
}

/// Turns the client's packet of `family` into the error that tells it the MTU `fits`. A
/// BPF subprogram of its own (`inline(never)`), called only on this path: its stack is not
/// added to the packet path's.
#[inline(never)]
pub fn too_big(ctx: *mut xdp_md, family: u8, fits: u16) -> Answer {
    let ctx = XdpContext::new(ctx);
    match family {
        FAMILY_V4 => fragmentation_needed(&ctx, fits),
        _ => packet_too_big(&ctx, u32::from(fits)),
    }
}

/// Turns the client's IPv4 packet into "fragmentation needed" with next-hop MTU `mtu`.
#[inline(always)]
fn fragmentation_needed(ctx: &XdpContext, mtu: u16) -> Answer {
    const HEADERS: usize = IPV4_LEN + ICMP_LEN;
    let Some(link) = packet::link_len(ctx, IPV4_LEN) else {
        return Answer::Failed;
    };
    let ip = (ctx.data() + link) as *const u8;
    // SAFETY: `link_len` checked LINK_MAX + IPV4_LEN bytes, and `link` <= LINK_MAX.
    let (first, flags) = unsafe { (*ip, *ip.add(6)) };
    if flags & DONT_FRAGMENT == 0 {
        return Answer::Unfragmentable;
    }
    let quote = usize::from(first & 0x0f) * 4 + IPV4_QUOTED_PAYLOAD;
    let Some(start) = reshape(ctx, link, quote, HEADERS, IPV4_LEN) else {
        return Answer::Failed;
    };
    let total = ((HEADERS + quote) as u16).to_be_bytes();
    let mtu = mtu.to_be_bytes();
    // SAFETY: `reshape` checked LINK_MAX + HEADERS + IPV4_LEN bytes: the error's headers
    // and the quoted client header after them; `link` <= LINK_MAX.
    unsafe {
        let h = start.add(link);
        let client = h.add(HEADERS);
        let header = [0x45, INTERNETWORK_CONTROL, total[0], total[1], 0, 0, 0, 0];
        core::ptr::copy_nonoverlapping(header.as_ptr(), h, 8);
        let header = [TTL, PROTO_ICMP, 0, 0];
        core::ptr::copy_nonoverlapping(header.as_ptr(), h.add(8), 4);
        // From the address the client sent to, back to the client.
        core::ptr::copy_nonoverlapping(client.add(16), h.add(12), 4);
        core::ptr::copy_nonoverlapping(client.add(12), h.add(16), 4);
        let Some(sum) = sum_bytes::<IPV4_LEN>(h) else {
            return Answer::Failed;
        };
        let checksum = fold(sum).to_ne_bytes();
        core::ptr::copy_nonoverlapping(checksum.as_ptr(), h.add(10), 2);
        let icmp = [
            ICMP_UNREACHABLE,
            ICMP_FRAGMENTATION_NEEDED,
            0,
            0,
            0,
            0,
            mtu[0],
            mtu[1],
        ];
        core::ptr::copy_nonoverlapping(icmp.as_ptr(), h.add(IPV4_LEN), ICMP_LEN);
    }
    finish(ctx, link + IPV4_LEN, 0)
}

/// Turns the client's IPv6 packet into "packet too big" with MTU `mtu`.
#[inline(always)]
fn packet_too_big(ctx: &XdpContext, mtu: u32) -> Answer {
    const HEADERS: usize = IPV6_LEN + ICMP_LEN;
    let Some(link) = packet::link_len(ctx, IPV6_LEN) else {
        return Answer::Failed;
    };
    let ip = (ctx.data() + link) as *const u8;
    // SAFETY: `link_len` checked LINK_MAX + IPV6_LEN bytes, and `link` <= LINK_MAX.
    let payload = unsafe { u16::from_be_bytes([*ip.add(4), *ip.add(5)]) };
    let quote = core::cmp::min(IPV6_LEN + usize::from(payload), IPV6_QUOTE_MAX);
    let Some(start) = reshape(ctx, link, quote, HEADERS, IPV6_LEN) else {
        return Answer::Failed;
    };
    let length = ((ICMP_LEN + quote) as u16).to_be_bytes();
    let mtu = mtu.to_be_bytes();
    // SAFETY: `reshape` checked LINK_MAX + HEADERS + IPV6_LEN bytes: the error's headers
    // and the quoted client header after them; `link` <= LINK_MAX.
    let addresses = unsafe {
        let h = start.add(link);
        let client = h.add(HEADERS);
        let header = [0x60, 0, 0, 0, length[0], length[1], PROTO_ICMPV6, TTL];
        core::ptr::copy_nonoverlapping(header.as_ptr(), h, 8);
        // From the address the client sent to, back to the client.
        core::ptr::copy_nonoverlapping(client.add(24), h.add(8), 16);
        core::ptr::copy_nonoverlapping(client.add(8), h.add(24), 16);
        let icmp = [ICMPV6_TOO_BIG, 0, 0, 0, mtu[0], mtu[1], mtu[2], mtu[3]];
        core::ptr::copy_nonoverlapping(icmp.as_ptr(), h.add(IPV6_LEN), ICMP_LEN);
        sum_bytes::<32>(h.add(8))
    };
    let Some(addresses) = addresses else {
        return Answer::Failed;
    };
    // The pseudo-header (RFC 8200 §8.1): addresses, upper-layer length, next header.
    let pseudo = addresses
        + u64::from(u16::from_ne_bytes(length))
        + u64::from(u16::from_ne_bytes([0, PROTO_ICMPV6]));
    finish(ctx, link + IPV6_LEN, pseudo)
}

/// Cuts the frame after the first `quote` bytes of the client's IP packet, makes room for
/// `headers` bytes (the error's IP and ICMP headers) in front of them, and writes the link
/// header of the answer there (the MAC addresses swapped, a VLAN tag and the EtherType as
/// they came). Returns the start of the frame, checked to hold the longest link header,
/// the `headers` and the `ip` bytes of the client's IP header after them.
#[inline(always)]
fn reshape(
    ctx: &XdpContext,
    link: usize,
    quote: usize,
    headers: usize,
    ip: usize,
) -> Option<*mut u8> {
    let frame = ctx.data_end() - ctx.data();
    let keep = link + quote;
    if keep > frame {
        return None;
    }
    // SAFETY: plain helper calls on this program's context.
    unsafe {
        if bpf_xdp_adjust_tail(ctx.ctx, keep as i32 - frame as i32) != 0 {
            return None;
        }
        if bpf_xdp_adjust_head(ctx.ctx, -(headers as i32)) != 0 {
            return None;
        }
    }
    let start = ctx.data();
    if start + LINK_MAX + headers + ip > ctx.data_end() {
        return None;
    }
    let p = start as *mut u8;
    // SAFETY: the old link header lies `headers` (> LINK_MAX) bytes on, in the checked
    // range: the copies never overlap. Bytes after the MACs are copied for the longest
    // header; for an untagged frame the error's IP header overwrites the last four.
    unsafe {
        let old = p.add(headers);
        core::ptr::copy_nonoverlapping(old.add(6), p, 6);
        core::ptr::copy_nonoverlapping(old, p.add(6), 6);
        core::ptr::copy_nonoverlapping(old.add(12), p.add(12), LINK_MAX - 12);
    }
    Some(p)
}

/// Writes the ICMP checksum of the message at `icmp` (to the end of the frame), `pseudo`
/// the sum of its pseudo-header (0 for ICMPv4, which has none).
#[inline(always)]
fn finish(ctx: &XdpContext, icmp: usize, pseudo: u64) -> Answer {
    let Some(message) = sum_to_end(ctx, icmp) else {
        return Answer::Failed;
    };
    let checksum = fold(pseudo + message).to_ne_bytes();
    let start = ctx.data();
    if start + LINK_MAX + IPV6_LEN + ICMP_LEN > ctx.data_end() {
        return Answer::Failed;
    }
    // SAFETY: the checksum field (icmp + 2, icmp <= LINK_MAX + IPV6_LEN) was bounds-checked.
    unsafe { core::ptr::copy_nonoverlapping(checksum.as_ptr(), (start + icmp + 2) as *mut u8, 2) };
    Answer::Sent
}

/// The one's complement sum (RFC 1071) of the frame's bytes from `offset` to its end, as
/// 16-bit words loaded in host order (so is everything summed here, and the checksum is
/// stored in host order: the sum is independent of byte order). `bpf_csum_diff` sums
/// `CHUNK`s, then one piece of each smaller power of two the rest holds: a few calls, no
/// long loop for the verifier to walk.
#[inline(always)]
fn sum_to_end(ctx: &XdpContext, offset: usize) -> Option<u64> {
    let end = ctx.data_end();
    let mut at = ctx.data() + offset;
    let mut total = 0u64;
    for _ in 0..CHUNKS {
        total += piece::<CHUNK>(&mut at, end)?;
    }
    total += piece::<128>(&mut at, end)?;
    total += piece::<64>(&mut at, end)?;
    total += piece::<32>(&mut at, end)?;
    total += piece::<16>(&mut at, end)?;
    total += piece::<8>(&mut at, end)?;
    total += piece::<4>(&mut at, end)?;
    if at + 2 <= end {
        let p = at as *const u8;
        // SAFETY: two bytes at `at` were bounds-checked.
        total += u64::from(unsafe { u16::from_ne_bytes([*p, *p.add(1)]) });
        at += 2;
    }
    if at < end {
        // SAFETY: the byte at `at` lies before the end. An odd last byte is summed as if a
        // zero byte followed it.
        total += u64::from(unsafe { u16::from_ne_bytes([*(at as *const u8), 0]) });
    }
    Some(total)
}

/// The sum of the `N` bytes at `at` (`N` a multiple of 4), moving `at` past them; 0 when
/// fewer than `N` are left before `end`.
#[inline(always)]
fn piece<const N: usize>(at: &mut usize, end: usize) -> Option<u64> {
    if *at + N > end {
        return Some(0);
    }
    // SAFETY: N bytes at `at` were bounds-checked.
    let part = unsafe { sum_bytes::<N>(*at as *const u8) }?;
    *at += N;
    Some(part)
}

/// The sum of the `N` bytes at `p` (`N` a multiple of 4, at most 512), by `bpf_csum_diff`;
/// none if the helper refused.
///
/// # Safety
/// `p .. p + N` must lie inside the packet.
#[inline(always)]
unsafe fn sum_bytes<const N: usize>(p: *const u8) -> Option<u64> {
    // SAFETY: the caller guarantees the N bytes; the helper only reads them.
    let part = unsafe { bpf_csum_diff(core::ptr::null_mut(), 0, p as *mut u32, N as u32, 0) };
    (part >= 0).then_some(part as u64 & 0xffff_ffff)
}

/// The checksum of a sum: folded to 16 bits, complemented.
#[inline(always)]
fn fold(mut total: u64) -> u16 {
    total = (total & 0xffff_ffff) + (total >> 32);
    total = (total & 0xffff) + (total >> 16);
    total = (total & 0xffff) + (total >> 16);
    total = (total & 0xffff) + (total >> 16);
    !(total as u16)
}
