//! The `nat` forwarding mode: a client's packet to VIP:port leaves rewritten to the
//! backend's address and port, routed by the kernel's tables; the backend's reply, which
//! its routing sends through this host, leaves rewritten to come from VIP:port. Checksums
//! are updated incrementally (RFC 1624); an IPv4 UDP datagram without a checksum keeps
//! none.
//!
//! Replies are recognised without per-flow state: the source (address, port, protocol) of
//! a packet is looked up in `REPLIES`, which the daemon fills with one VIP per `nat`
//! backend endpoint. A packet from such an endpoint to an address of this host (a health
//! check's answer) is left alone.
//!
//! Full NAT (`fullnat`) uses the same rewriting for both ends: a client's packet also
//! leaves from its flow's pool address and port (`fullnat::translation`), and a reply to a
//! pool address and port goes to the client it was allocated for (`fullnat::origin`).

use aya_ebpf::{bindings::xdp_action, programs::XdpContext};
use balancer_common::{
    FlowKey, Translation, FAMILY_V4, NAT_STAT_FAILED, NAT_STAT_REPLIES, NAT_STAT_TOO_BIG,
    NAT_STAT_UNRESOLVED, NAT_STAT_UNROUTABLE, PROTO_TCP, PROTO_UDP, REPLY_FULLNAT,
};

use crate::{
    checksum::Change,
    fib::{self, Hop},
    icmp::{self, Answer},
    maps::{NAT_STATS, REPLIES, REWRITES},
    packet::{self, read_u16, write},
    wire::{IPV4_LEN, IPV6_LEN, TCP_CHECK, UDP_CHECK},
};

/// Which end of a packet is rewritten.
#[derive(Clone, Copy, PartialEq, Eq)]
enum End {
    /// The destination (a client's packet to its backend).
    Destination,
    /// The source (a backend's reply).
    Source,
}

/// Where a packet's headers are, from the start of the frame.
struct Headers {
    /// The IP header.
    l3: usize,
    /// The TCP or UDP header.
    l4: usize,
    /// The IP datagram's length.
    len: usize,
}

/// What became of a client's packet to a `nat` or `fullnat` backend.
pub enum Forwarded {
    /// Rewritten and sent, passed to the kernel, or dropped: this XDP action.
    Action(u32),
    /// Longer than the route's MTU (given): left as it came, for [`answer`] to turn into
    /// the ICMP error — from the caller, so that the error's subprogram and this one's
    /// stacks are not added up.
    TooBig(u16),
}

/// The XDP action of `forwarded` for the client's packet of `family`: a packet too big for
/// the route becomes "fragmentation needed" / "packet too big" from the VIP it was sent to,
/// counted; the client's stack then sends smaller packets.
#[inline(always)]
pub fn answer(ctx: &XdpContext, family: u8, forwarded: Forwarded) -> u32 {
    match forwarded {
        Forwarded::Action(action) => action,
        Forwarded::TooBig(mtu) => match icmp::too_big(ctx.ctx, family, mtu) {
            Answer::Failed => failed(),
            answer => {
                count(NAT_STAT_TOO_BIG);
                answer.action()
            }
        },
    }
}

/// Forwards a client's packet of the flow `key` to `nat` backend `index` — for full NAT,
/// from the pool address and port of its `translation`. A function of its own in the object
/// (a BPF subprogram): its stack is not the main program's.
#[inline(never)]
pub fn forward(
    ctx: &XdpContext,
    index: u32,
    key: &FlowKey,
    translation: Option<&Translation>,
) -> Forwarded {
    let Some(rewrite) = REWRITES.get(index) else {
        return Forwarded::Action(failed());
    };
    if rewrite.family != key.family {
        return Forwarded::Action(failed());
    }
    let Some(at) = headers(ctx, key.family) else {
        return Forwarded::Action(failed());
    };
    let source = match translation {
        Some(t) => &t.addr,
        None => &key.src,
    };
    let hop = fib::lookup(ctx, key.family, source, &rewrite.addr, at.len);
    match hop {
        Hop::Local | Hop::Unroutable => {
            count(NAT_STAT_UNROUTABLE);
            return Forwarded::Action(xdp_action::XDP_DROP);
        }
        Hop::TooBig(mtu) => return Forwarded::TooBig(mtu),
        _ => {}
    }
    let old = (&key.dst, key.dport_be);
    let new = (&rewrite.addr, rewrite.port_be);
    if translate(ctx, &at, key, End::Destination, old, new).is_none() {
        return Forwarded::Action(failed());
    }
    if let Some(t) = translation {
        let old = (&key.src, key.sport_be);
        if translate(ctx, &at, key, End::Source, old, (&t.addr, t.port_be)).is_none() {
            return Forwarded::Action(failed());
        }
    }
    Forwarded::Action(send(ctx, hop))
}

/// Forwards a backend's reply (the flow `key`, from the backend to its client — for full
/// NAT, to the pool address and port of the client's `origin`) if its source is a `nat`
/// backend's endpoint: rewritten to come from the VIP (and to go to the client). `None`:
/// not a reply, the caller goes on. A BPF subprogram, like [`forward`].
#[inline(never)]
pub fn reply(ctx: &XdpContext, key: &FlowKey, origin: Option<&FlowKey>) -> Option<u32> {
    let backend = key.source();
    // SAFETY: REPLIES is only updated by the daemon with whole-value writes.
    let reply = unsafe { REPLIES.get(backend) }?;
    // A full-NAT backend's packet to no allocated pool port: none of its flows'.
    if reply.flags & REPLY_FULLNAT != 0 && origin.is_none() {
        return None;
    }
    let vip = &reply.vip;
    let Some(at) = headers(ctx, key.family) else {
        return Some(failed());
    };
    let client = match origin {
        Some(o) => &o.src,
        None => &key.dst,
    };
    let hop = fib::lookup(ctx, key.family, &vip.addr, client, at.len);
    match hop {
        // An answer to this host itself (a health check's): not a client's.
        Hop::Local => return None,
        Hop::Unroutable => {
            count(NAT_STAT_UNROUTABLE);
            return Some(xdp_action::XDP_DROP);
        }
        _ => {}
    }
    let old = (&key.src, key.sport_be);
    let new = (&vip.addr, vip.port_be);
    if translate(ctx, &at, key, End::Source, old, new).is_none() {
        return Some(failed());
    }
    if let Some(o) = origin {
        let old = (&key.dst, key.dport_be);
        if translate(ctx, &at, key, End::Destination, old, (&o.src, o.sport_be)).is_none() {
            return Some(failed());
        }
    }
    count(NAT_STAT_REPLIES);
    Some(send(ctx, hop))
}

/// Sends a rewritten packet to its next hop, or to the kernel to forward (it resolves the
/// next hop; a reply longer than the route's MTU, the kernel answers itself).
#[inline(always)]
pub fn send(ctx: &XdpContext, hop: Hop) -> u32 {
    match hop {
        Hop::Out {
            macs,
            ifindex,
            back,
        } => fib::send(ctx, &macs, ifindex, back),
        _ => {
            count(NAT_STAT_UNRESOLVED);
            xdp_action::XDP_PASS
        }
    }
}

/// Finds the IP and L4 headers of a packet of `family` the parser accepted (Ethernet, at
/// most one VLAN tag, IPv4 with options or IPv6 without extension headers).
#[inline(always)]
fn headers(ctx: &XdpContext, family: u8) -> Option<Headers> {
    let start = ctx.data();
    let l3 = packet::link_len(ctx, IPV4_LEN)?;
    let ip = (start + l3) as *const u8;
    if family == FAMILY_V4 {
        // SAFETY: the first 20 bytes after at most 18 lie in the checked range.
        let (first, len) = unsafe { (*ip, u16::from_be_bytes([*ip.add(2), *ip.add(3)])) };
        return Some(Headers {
            l3,
            l4: l3 + usize::from(first & 0x0f) * 4,
            len: usize::from(len),
        });
    }
    if start + l3 + IPV6_LEN > ctx.data_end() {
        return None;
    }
    // SAFETY: the 40-byte header was bounds-checked.
    let payload = unsafe { u16::from_be_bytes([*ip.add(4), *ip.add(5)]) };
    Some(Headers {
        l3,
        l4: l3 + IPV6_LEN,
        len: IPV6_LEN + usize::from(payload),
    })
}

/// Rewrites one end of the packet from (address, port) `old` to `new`, with the IPv4
/// header checksum and the L4 checksum.
#[inline(always)]
fn translate(
    ctx: &XdpContext,
    at: &Headers,
    key: &FlowKey,
    end: End,
    old: (&[u8; 16], u16),
    new: (&[u8; 16], u16),
) -> Option<()> {
    let mut l4_change = Change::none();
    if key.family == FAMILY_V4 {
        let (from, to) = (fib::first4(old.0), fib::first4(new.0));
        let mut ip_change = Change::none();
        ip_change.bytes(&from, &to);
        l4_change.bytes(&from, &to);
        let offset = if end == End::Source { 12 } else { 16 };
        write(ctx, at.l3 + offset, &to)?;
        let check = read_u16(ctx, at.l3 + 10)?;
        write(ctx, at.l3 + 10, &ip_change.apply(check).to_ne_bytes())?;
    } else {
        l4_change.bytes(old.0, new.0);
        let offset = if end == End::Source { 8 } else { 24 };
        write(ctx, at.l3 + offset, new.0)?;
    }
    l4_change.word(old.1, new.1);
    let port_at = at.l4 + if end == End::Source { 0 } else { 2 };
    write(ctx, port_at, &new.1.to_ne_bytes())?;
    let check_at = at.l4
        + match key.proto {
            PROTO_TCP => TCP_CHECK,
            _ => UDP_CHECK,
        };
    let check = read_u16(ctx, check_at)?;
    // An IPv4 UDP datagram without a checksum (0) keeps none.
    if key.proto == PROTO_UDP && key.family == FAMILY_V4 && check == 0 {
        return Some(());
    }
    let mut updated = l4_change.apply(check);
    if key.proto == PROTO_UDP && updated == 0 {
        // A UDP checksum that computes to 0 is sent as all ones (RFC 768).
        updated = 0xffff;
    }
    write(ctx, check_at, &updated.to_ne_bytes())
}

/// Counts a NAT counter.
#[inline(always)]
pub fn count(stat: u32) {
    if let Some(counter) = NAT_STATS.get_ptr_mut(stat) {
        // SAFETY: a per-CPU slot: no other writer runs on this CPU meanwhile.
        unsafe { *counter += 1 };
    }
}

/// A packet that could not be rewritten: counted and dropped.
#[inline(always)]
pub fn failed() -> u32 {
    count(NAT_STAT_FAILED);
    xdp_action::XDP_DROP
}
