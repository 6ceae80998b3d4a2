//! ICMP errors about `nat` flows, translated back for the client. A backend (or a router on
//! the way to it) answers a client's packet it cannot take — port unreachable, fragmentation
//! needed / packet too big, time exceeded — with an ICMP error to the client that quotes the
//! packet as the backend got it: to the backend's address and port. Quoted so, the client
//! would match it to no connection of its own. When the quoted destination is a `nat`
//! backend's endpoint (`REPLIES`), the quote is rewritten to the VIP's address and port
//! (with the quoted IPv4 header's checksum and the quoted UDP/TCP checksum where quoted),
//! the error's own source too if the backend sent it, and the ICMP checksum; then the kernel
//! forwards it to the client (errors are rare: they need no fast path, and this keeps the
//! route lookup's stack off this path).
//!
//! For a `fullnat` backend the quoted packet left from a pool address and port and the
//! error is addressed to the pool: the quoted source is rewritten to the client's address
//! and port (`ALLOCATIONS` gives them back) and the error's destination to the client's
//! address too.
//!
//! Only the error's own datagram is read and written (its IP length, not the frame's end,
//! which may hold padding): an error whose datagram ends before the quoted ports is left
//! alone, and a quoted checksum past its end is kept.

use aya_ebpf::{
    bindings::{xdp_action, xdp_md},
    programs::XdpContext,
};
use balancer_common::{
    Allocation, Endpoint, FAMILY_V4, NAT_STAT_ERRORS, PROTO_TCP, PROTO_UDP, REPLY_FULLNAT,
};

use crate::{
    checksum::Change,
    fib,
    maps::{ALLOCATIONS, REPLIES},
    nat::{count, failed},
    packet::{read, read_u16, write},
    wire::{ICMPV6_TOO_BIG, ICMP_LEN, ICMP_UNREACHABLE, IPV6_LEN, TCP_CHECK, UDP_CHECK},
};

/// ICMP types of errors that quote a packet besides destination unreachable: time
/// exceeded.
const ICMP_TIME_EXCEEDED: u8 = 11;
/// ICMPv6 types of errors that quote a packet besides packet too big: destination
/// unreachable, time exceeded.
const ICMPV6_UNREACHABLE: u8 = 1;
const ICMPV6_TIME_EXCEEDED: u8 = 3;

/// Translates the ICMP packet of `family` whose IP header starts at `l3` if it is an error
/// quoting a packet to a `nat` backend's endpoint, and passes it to the kernel to forward.
/// `None`: not such an error, the caller passes it untouched. A BPF subprogram of its own:
/// its stack is not the packet path's.
#[inline(never)]
pub fn error(ctx: *mut xdp_md, family: u8, l3: usize) -> Option<u32> {
    let ctx = XdpContext::new(ctx);
    let v4 = family == FAMILY_V4;
    // Where the datagram ends, by its IP header.
    let (icmp, end) = if v4 {
        let [first, _tos, len_hi, len_lo] = read::<4>(&ctx, l3)?;
        let end = l3 + usize::from(u16::from_be_bytes([len_hi, len_lo]));
        (l3 + usize::from(first & 0x0f) * 4, end)
    } else {
        let [len_hi, len_lo] = read::<2>(&ctx, l3 + 4)?;
        let end = l3 + IPV6_LEN + usize::from(u16::from_be_bytes([len_hi, len_lo]));
        (l3 + IPV6_LEN, end)
    };
    let [kind, _code] = read::<2>(&ctx, icmp)?;
    let quotes = if v4 {
        kind == ICMP_UNREACHABLE || kind == ICMP_TIME_EXCEEDED
    } else {
        kind == ICMPV6_UNREACHABLE || kind == ICMPV6_TOO_BIG || kind == ICMPV6_TIME_EXCEEDED
    };
    if !quotes {
        return None;
    }
    // The quoted packet: the client's, to the backend.
    let quote = icmp + ICMP_LEN;
    let (quoted_l4, proto, src_at, dst_at) = if v4 {
        let [first, _tos] = read::<2>(&ctx, quote)?;
        let [_ttl, proto] = read::<2>(&ctx, quote + 8)?;
        if first >> 4 != 4 || first & 0x0f < 5 {
            return None;
        }
        (
            quote + usize::from(first & 0x0f) * 4,
            proto,
            quote + 12,
            quote + 16,
        )
    } else {
        let [first, _class] = read::<2>(&ctx, quote)?;
        let [next, _hops] = read::<2>(&ctx, quote + 6)?;
        if first >> 4 != 6 {
            return None;
        }
        (quote + IPV6_LEN, next, quote + 8, quote + 24)
    };
    if proto != PROTO_TCP && proto != PROTO_UDP {
        return None;
    }
    // Everything read or written but the quoted checksum lies before the quoted ports' end.
    if quoted_l4 + 4 > end {
        return None;
    }
    let ports = read::<4>(&ctx, quoted_l4)?;
    let endpoint = Endpoint {
        addr: address(&ctx, dst_at, v4)?,
        port_be: u16::from_ne_bytes([ports[2], ports[3]]),
        proto,
        family,
    };
    // SAFETY: REPLIES is only updated by the daemon with whole-value writes.
    let reply = unsafe { REPLIES.get(endpoint) }?;
    let vip = &reply.vip;
    let source_at = if v4 { l3 + 12 } else { l3 + 8 };
    // Full NAT: the quoted packet left from a pool port; the client it stands for.
    let client = if reply.flags & REPLY_FULLNAT != 0 {
        let allocation = Allocation {
            pool: address(&ctx, src_at, v4)?,
            backend: endpoint.addr,
            pool_port_be: u16::from_ne_bytes([ports[0], ports[1]]),
            backend_port_be: endpoint.port_be,
            proto,
            family,
            reserved: [0; 2],
        };
        // SAFETY: written whole by the program when allocated, never changed afterwards.
        Some(unsafe { ALLOCATIONS.get(allocation) }?)
    } else {
        None
    };
    // The error's own source is the VIP's when the backend sent it (a router on the way
    // keeps its own).
    let from_backend = same(&address(&ctx, source_at, v4)?, &endpoint.addr, v4);
    let rewritten = Rewritten {
        quote,
        quoted_l4,
        proto,
        src_at,
        dst_at,
        source_at,
        icmp,
        end,
        from_backend,
    };
    let old = (&endpoint.addr, endpoint.port_be);
    let applied = match client {
        None => rewritten.apply(&ctx, v4, old, (&vip.addr, vip.port_be), None),
        Some(c) => {
            let pool = address(&ctx, src_at, v4)?;
            let pool_port = u16::from_ne_bytes([ports[0], ports[1]]);
            let back = Back {
                pool: (&pool, pool_port),
                client: (&c.src, c.sport_be),
            };
            rewritten.apply(&ctx, v4, old, (&vip.addr, vip.port_be), Some(&back))
        }
    };
    if applied.is_none() {
        return Some(failed());
    }
    count(NAT_STAT_ERRORS);
    Some(xdp_action::XDP_PASS)
}

/// A full-NAT error's way back: the quoted source and the error's destination, from the
/// pool's (address, port) to the client's.
struct Back<'a> {
    pool: (&'a [u8; 16], u16),
    client: (&'a [u8; 16], u16),
}

/// Where an error's fields are, and whether its own source changes too.
struct Rewritten {
    quote: usize,
    quoted_l4: usize,
    proto: u8,
    src_at: usize,
    dst_at: usize,
    source_at: usize,
    icmp: usize,
    end: usize,
    from_backend: bool,
}

impl Rewritten {
    /// Rewrites the quoted destination from the backend's (address, port) `old` to the
    /// VIP's `new`, the error's source if the backend sent it, for full NAT (`back`) the
    /// quoted source and the error's destination, and every checksum that covers them.
    #[inline(always)]
    fn apply(
        &self,
        ctx: &XdpContext,
        v4: bool,
        old: (&[u8; 16], u16),
        new: (&[u8; 16], u16),
        back: Option<&Back>,
    ) -> Option<()> {
        let mut addr = Change::none();
        swap(ctx, v4, self.dst_at, old.0, new.0, &mut addr)?;
        if let Some(back) = back {
            swap(ctx, v4, self.src_at, back.pool.0, back.client.0, &mut addr)?;
        }
        let mut l4 = addr;
        l4.word(old.1, new.1);
        write(ctx, self.quoted_l4 + 2, &new.1.to_ne_bytes())?;
        if let Some(back) = back {
            l4.word(back.pool.1, back.client.1);
            write(ctx, self.quoted_l4, &back.client.1.to_ne_bytes())?;
        }
        // The ICMP checksum covers the quoted bytes: addresses, port and the quoted
        // checksums below.
        let mut icmp = l4;
        if v4 {
            let at = self.quote + 10;
            let check = read_u16(ctx, at)?;
            let updated = addr.apply(check);
            write(ctx, at, &updated.to_ne_bytes())?;
            icmp.word(check, updated);
        }
        let check_at = self.quoted_l4
            + match self.proto {
                PROTO_TCP => TCP_CHECK,
                _ => UDP_CHECK,
            };
        // A quote cut before its checksum (TCP quoted by 8 bytes), or UDP without one,
        // keeps it as it is.
        let quoted_check = match check_at + 2 <= self.end {
            true => read_u16(ctx, check_at),
            false => None,
        };
        if let Some(check) = quoted_check {
            if !(self.proto == PROTO_UDP && check == 0) {
                let mut updated = l4.apply(check);
                if self.proto == PROTO_UDP && updated == 0 {
                    updated = 0xffff;
                }
                write(ctx, check_at, &updated.to_ne_bytes())?;
                icmp.word(check, updated);
            }
        }
        // The error's own addresses: its source if the backend sent it, its destination
        // for full NAT. IPv4: the header checksum; ICMPv6's checksum covers the
        // pseudo-header, so the addresses count there.
        let mut outer = Change::none();
        if self.from_backend {
            swap(ctx, v4, self.source_at, old.0, new.0, &mut outer)?;
        }
        if let Some(back) = back {
            // From the destination it has (the pool's, unless it was sent elsewhere).
            let at = self.source_at + if v4 { 4 } else { 16 };
            let to = address(ctx, at, v4)?;
            swap(ctx, v4, at, &to, back.client.0, &mut outer)?;
        }
        if v4 {
            let at = self.source_at - 2;
            let check = read_u16(ctx, at)?;
            write(ctx, at, &outer.apply(check).to_ne_bytes())?;
        } else {
            icmp.add(outer);
        }
        let at = self.icmp + 2;
        let check = read_u16(ctx, at)?;
        write(ctx, at, &icmp.apply(check).to_ne_bytes())
    }
}

/// Writes address `new` at `at` in place of `old` (IPv4: their first four bytes), adding the
/// change to `sum`.
#[inline(always)]
fn swap(
    ctx: &XdpContext,
    v4: bool,
    at: usize,
    old: &[u8; 16],
    new: &[u8; 16],
    sum: &mut Change,
) -> Option<()> {
    if v4 {
        sum.bytes(&fib::first4(old), &fib::first4(new));
        write(ctx, at, &fib::first4(new))
    } else {
        sum.bytes(old, new);
        write(ctx, at, new)
    }
}

/// The address at `at` (IPv4: four bytes, kept in the first four).
#[inline(always)]
fn address(ctx: &XdpContext, at: usize, v4: bool) -> Option<[u8; 16]> {
    let mut out = [0u8; 16];
    if v4 {
        out[..4].copy_from_slice(&read::<4>(ctx, at)?);
    } else {
        out = read::<16>(ctx, at)?;
    }
    Some(out)
}

/// Whether two addresses are the same (IPv4: the first four bytes).
#[inline(always)]
fn same(a: &[u8; 16], b: &[u8; 16], v4: bool) -> bool {
    let n = if v4 { 4 } else { 16 };
    let mut differ = 0;
    for i in 0..n {
        differ |= a[i] ^ b[i];
    }
    differ == 0
}
