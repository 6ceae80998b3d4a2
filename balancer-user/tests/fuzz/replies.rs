//! The reply direction of the routed services, as the model has it: a packet from a `nat`
//! or `fullnat` backend's endpoint (`REPLIES`) to a client (`nat`) or to a pool port some
//! full-NAT flow holds (`fullnat`) leaves from the VIP (to the flow's client), routed to
//! the client; an ICMP error quoting a packet to such an endpoint (from the pool port of a
//! flow, for `fullnat`) is rewritten to quote the client's packet to the VIP and passed to
//! the kernel. Everything else — another port or address, a pool port no flow holds, an
//! error about something else, a quote cut before its ports, an error whose datagram (by
//! its IP length) ends before them — is not a known reply: passed untouched.
//!
//! What is rewritten keeps its checksums by recomputation
//! ([`checksums`](super::checksums)): the IP header's and the TCP/UDP checksum of a reply;
//! for an error, the IPv4 header's, the quoted IPv4 header's, the quoted TCP/UDP checksum
//! (when quoted within the datagram; a quoted UDP checksum of 0 stays 0) and the ICMP
//! checksum (over the datagram).

use std::net::IpAddr;

use balancer_common::{FlowKey, FAMILY_V4};

use crate::{
    checksums::{self, Part},
    expect::{addr_at, put_addr, put_port, u16_at, Count, Expect},
    routed::{route, Layout, Mode, Route, Routed},
    support::{
        packet::{Flow, Transport, ACK, RST, SYN},
        plane::{XDP_DROP, XDP_PASS, XDP_REDIRECT},
        routes::{NEXT_HOP_MAC, V0_MAC},
        tracking::Tracking,
        verdict::tcp_header,
    },
};

/// The largest offset the program reads or writes a packet at (`packet::MAX_OFFSET`).
const MAX_OFFSET: usize = 256;

/// What a reply adds to its backend's reply counters (`REPLY_STATS`).
#[derive(Clone, Copy, Debug)]
pub struct Answer {
    /// The backend index.
    pub index: u32,
    /// The frame's length.
    pub bytes: usize,
    /// It carries a RST.
    pub reset: bool,
    /// A SYN-ACK of a flow whose SYN is pending (not closed): a handshake timed.
    pub handshake: bool,
}

/// The client's address and port in a flow key.
fn client_of(key: &FlowKey) -> (IpAddr, u16) {
    let addr = match key.family {
        FAMILY_V4 => IpAddr::from([key.src[0], key.src[1], key.src[2], key.src[3]]),
        _ => IpAddr::from(key.src),
    };
    (addr, u16::from_be(key.sport_be))
}

/// `n` bytes of `frame` at `at`, if the program can read them.
fn read(frame: &[u8], at: usize, n: usize) -> Option<&[u8]> {
    (at <= MAX_OFFSET).then_some(())?;
    frame.get(at..at + n)
}

impl Routed {
    /// Whether packets of `transport` from source port `port` pass the pre-filter as
    /// replies: some `nat`/`fullnat` endpoint answers from it.
    pub fn reply_port(&self, port: u16, transport: Transport) -> bool {
        self.replies
            .keys()
            .any(|&(_, p, t)| p == port && t == transport.number())
    }

    /// What the program must do with `frame`, a well-formed packet of `flow` to no VIP whose
    /// source port is a reply port, and what it adds to the reply counters; `None`: not a
    /// known reply, passed untouched. `tracking` is the connection-tracking model (a
    /// handshake is timed from a pending SYN).
    pub fn reply(
        &self,
        frame: &[u8],
        flow: &Flow,
        tracking: &Tracking,
    ) -> Option<(Expect, Option<Answer>)> {
        let index = *self
            .replies
            .get(&(flow.src, flow.sport, flow.transport.number()))?;
        let b = &self.backends[&index];
        let origin = match b.mode {
            Mode::Fullnat => {
                let held = (
                    flow.dst,
                    flow.dport,
                    flow.src,
                    flow.sport,
                    flow.transport.number(),
                );
                Some(client_of(self.held.get(&held)?))
            }
            _ => None,
        };
        let (client, client_port) = origin.unwrap_or((flow.dst, flow.dport));
        let l = Layout::of(frame);
        let mode = b.mode;
        let mut out = frame.to_vec();
        put_addr(&mut out, l.src(), b.vip.ip());
        put_port(&mut out, l.l4, b.vip.port());
        if origin.is_some() {
            put_addr(&mut out, l.dst(), client);
            put_port(&mut out, l.l4 + 2, client_port);
        }
        let (path, action, out, counts) = match route(client) {
            // To an address of this host (a health check's answer), or none routed.
            Route::Local => return None,
            Route::Blackhole => {
                let path = format!("{mode} reply: unroutable");
                let expect = Expect::untouched(path, XDP_DROP, frame, vec![Count::NatUnroutable]);
                return Some((expect, None));
            }
            Route::Out(mtu) | Route::Unresolved(mtu) if l.len > mtu => (
                "too big, to the kernel",
                XDP_PASS,
                out,
                vec![Count::NatReply, Count::NatUnresolved],
            ),
            Route::Unresolved(_) => (
                "unresolved, to the kernel",
                XDP_PASS,
                out,
                vec![Count::NatReply, Count::NatUnresolved],
            ),
            Route::Out(_) => {
                out[..6].copy_from_slice(&NEXT_HOP_MAC);
                out[6..12].copy_from_slice(&V0_MAC);
                ("out", XDP_REDIRECT, out, vec![Count::NatReply])
            }
        };
        let flags = tcp_header(frame).map_or(0, |(flags, _)| flags);
        let client_key = Flow {
            src: client,
            sport: client_port,
            dst: b.vip.ip(),
            dport: b.vip.port(),
            transport: flow.transport,
        }
        .key();
        let timed = tracking
            .pending
            .get(&client_key)
            .is_some_and(|e| e.syn_seq != 0 && !e.closed());
        let answer = Answer {
            index,
            bytes: frame.len(),
            reset: flags & RST != 0,
            handshake: flags & (SYN | ACK | RST) == SYN | ACK && timed,
        };
        let expect = Expect {
            path: format!("{mode} reply: {path}"),
            action,
            sums: l.sums(frame),
            frame: out,
            counts,
        };
        Some((expect, Some(answer)))
    }

    /// What the program must do with `frame`, a frame the parser's model finds no flow's,
    /// if it is an ICMP error about a translated flow; `None`: passed untouched.
    pub fn error(&self, frame: &[u8]) -> Option<Expect> {
        let l3 = match u16_at(frame, 12)? {
            0x8100 | 0x88a8 => 18,
            _ => 14,
        };
        let ethertype = u16_at(frame, l3 - 2)?;
        let first = *frame.get(l3)?;
        // The parser: a whole ICMP/ICMPv6 datagram that is not a fragment.
        let (v6, icmp, end) = match ethertype {
            0x0800 if frame.len() >= l3 + 20 && first >> 4 == 4 && first & 0x0f >= 5 => {
                let not_fragment = u16_at(frame, l3 + 6)? & 0x3fff == 0;
                let end = l3 + usize::from(u16_at(frame, l3 + 2)?);
                let ok = frame[l3 + 9] == 1 && not_fragment && end <= frame.len();
                ok.then_some((false, l3 + usize::from(first & 0x0f) * 4, end))?
            }
            0x86dd if frame.len() >= l3 + 40 && first >> 4 == 6 => {
                let end = l3 + 40 + usize::from(u16_at(frame, l3 + 4)?);
                let ok = frame[l3 + 6] == 58 && end <= frame.len();
                ok.then_some((true, l3 + 40, end))?
            }
            _ => return None,
        };
        let kind = read(frame, icmp, 2)?[0];
        let quotes = match v6 {
            false => matches!(kind, 3 | 11),
            true => matches!(kind, 1..=3),
        };
        if !quotes {
            return None;
        }
        // The quoted packet.
        let quote = icmp + 8;
        let q = read(frame, quote, 2)?;
        let (quoted_l4, proto, src_at, dst_at, quoted_ihl) = if v6 {
            let next = read(frame, quote + 6, 2)?[0];
            (q[0] >> 4 == 6).then_some(())?;
            (quote + 40, next, quote + 8, quote + 24, 40)
        } else {
            let proto = read(frame, quote + 8, 2)?[1];
            (q[0] >> 4 == 4 && q[0] & 0x0f >= 5).then_some(())?;
            let ihl = usize::from(q[0] & 0x0f) * 4;
            (quote + ihl, proto, quote + 12, quote + 16, ihl)
        };
        let transport = match proto {
            6 => Transport::Tcp,
            17 => Transport::Udp,
            _ => return None,
        };
        // Only the datagram is read: the quoted ports must lie within it.
        if quoted_l4 + 4 > end {
            return None;
        }
        let ports = read(frame, quoted_l4, 4)?;
        let (sport, dport) = (u16_at(ports, 0)?, u16_at(ports, 2)?);
        let width = if v6 { 16 } else { 4 };
        let backend = addr_at(read(frame, dst_at, width)?, 0, v6)?;
        let index = *self.replies.get(&(backend, dport, proto))?;
        let b = &self.backends[&index];
        let origin = match b.mode {
            Mode::Fullnat => {
                let pool = addr_at(read(frame, src_at, width)?, 0, v6)?;
                let held = (pool, sport, backend, dport, proto);
                Some(client_of(self.held.get(&held)?))
            }
            _ => None,
        };
        let source_at = l3 + if v6 { 8 } else { 12 };
        let from_backend = addr_at(read(frame, source_at, width)?, 0, v6)? == backend;
        let mut out = frame.to_vec();
        put_addr(&mut out, dst_at, b.vip.ip());
        put_port(&mut out, quoted_l4 + 2, b.vip.port());
        if let Some((client, client_port)) = origin {
            put_addr(&mut out, src_at, client);
            put_port(&mut out, quoted_l4, client_port);
            put_addr(&mut out, source_at + width, client);
        }
        if from_backend {
            put_addr(&mut out, source_at, b.vip.ip());
        }
        let mut sums = Vec::new();
        if !v6 {
            let ihl = usize::from(first & 0x0f) * 4;
            sums.push(checksums::ipv4_header("IPv4 header checksum", l3, ihl));
            sums.push(checksums::ipv4_header(
                "quoted IPv4 header checksum",
                quote,
                quoted_ihl,
            ));
        }
        let check_at = quoted_l4 + if transport == Transport::Udp { 6 } else { 16 };
        if check_at + 2 <= end && read(frame, check_at, 2).is_some() {
            let mut quoted = checksums::transport(
                "quoted TCP/UDP checksum",
                (quote, v6),
                quoted_l4,
                transport == Transport::Udp,
                frame.len() - quoted_l4,
            );
            quoted.parts.pop();
            quoted.parts.push(Part::Frame(quoted_l4..frame.len()));
            quoted.none_when_zero = transport == Transport::Udp;
            sums.push(quoted);
        }
        let len = end.saturating_sub(icmp);
        sums.push(checksums::icmp("ICMP checksum", (l3, v6), icmp, len));
        let mode = b.mode;
        let who = if from_backend { "backend" } else { "router" };
        let version = if v6 { 6 } else { 4 };
        Some(Expect {
            path: format!("{mode} ICMPv{version} error from the {who}"),
            action: XDP_PASS,
            frame: out,
            sums,
            counts: vec![Count::NatError],
        })
    }
}
