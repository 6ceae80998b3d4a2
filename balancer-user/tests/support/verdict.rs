//! What the XDP program's parser should make of a frame, written from the rules the README
//! states, independently of the program's code: which frames are flows, which are
//! malformed, unbalanceable or not ours, and which source addresses are martian.
//!
//! The rules: Ethernet with at most one 802.1Q/802.1ad tag; IPv4 with IHL ≥ 5 whose total
//! length covers the header and lies within the frame (Ethernet padding may follow it);
//! IPv6 whose payload length lies within the frame; a TCP header (data offset ≥ 5) or UDP
//! length (≥ 8) within the datagram. Checksums are not checked; IPv4 options are allowed.
//! IPv4 fragments and IPv6 extension headers are unbalanceable.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

use super::packet::{Flow, Transport};

/// What the parser makes of a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Not TCP/UDP over IP.
    Other,
    /// Truncated, or lengths that disagree with each other or with the frame.
    Malformed,
    /// An IPv4 fragment or an IPv6 packet with an extension header.
    Unbalanceable,
    /// A well-formed TCP or UDP packet of this flow.
    Flow(Flow),
}

/// IPv6 next-header values of extension headers.
const EXTENSION_HEADERS: [u8; 9] = [0, 43, 44, 60, 51, 50, 135, 139, 140];

/// Source prefixes no client sends from.
const MARTIAN_PREFIXES: [&str; 7] = [
    "0.0.0.0/8",
    "127.0.0.0/8",
    "224.0.0.0/4",
    "240.0.0.0/4",
    "::/128",
    "::1/128",
    "ff00::/8",
];

/// Whether `addr` is a martian source: in [`MARTIAN_PREFIXES`], or an IPv4-mapped IPv6
/// address (::ffff:a.b.c.d) whose IPv4 address is.
pub fn martian(addr: IpAddr) -> bool {
    let listed = |addr: IpAddr| {
        MARTIAN_PREFIXES
            .iter()
            .any(|p| p.parse::<IpNet>().expect("prefix").contains(&addr))
    };
    match addr {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => listed(IpAddr::V4(v4)),
            None => listed(addr),
        },
        IpAddr::V4(_) => listed(addr),
    }
}

/// Classifies `frame` by the rules above.
pub fn classify(frame: &[u8]) -> Verdict {
    match segment(frame) {
        Ok(segment) => Verdict::Flow(segment.flow),
        Err(verdict) => verdict,
    }
}

/// The TCP flags and sequence number of `frame` if it is a well-formed TCP packet
/// ([`Verdict::Flow`]); `None` for anything else, UDP included.
pub fn tcp_header(frame: &[u8]) -> Option<(u8, u32)> {
    let segment = segment(frame).ok()?;
    let b = segment.bytes;
    (segment.flow.transport == Transport::Tcp)
        .then(|| (b[13], u32::from_be_bytes([b[4], b[5], b[6], b[7]])))
}

/// A well-formed TCP or UDP packet: its flow and the bytes its IP header says follow it.
struct Segment<'a> {
    flow: Flow,
    bytes: &'a [u8],
}

/// The segment of `frame`, or the verdict on a frame that is not a flow's packet.
fn segment(frame: &[u8]) -> Result<Segment<'_>, Verdict> {
    let Some(mut ethertype) = be16(frame, 12) else {
        return Err(Verdict::Malformed);
    };
    let mut l3 = 14;
    if ethertype == 0x8100 || ethertype == 0x88a8 {
        let Some(inner) = be16(frame, 16) else {
            return Err(Verdict::Malformed);
        };
        ethertype = inner;
        l3 = 18;
    }
    let ip = &frame[l3.min(frame.len())..];
    match ethertype {
        0x0800 => ipv4(ip),
        0x86dd => ipv6(ip),
        _ => Err(Verdict::Other),
    }
}

/// `ip`: from the IPv4 header to the end of the frame.
fn ipv4(ip: &[u8]) -> Result<Segment<'_>, Verdict> {
    if ip.len() < 20 || ip[0] >> 4 != 4 || usize::from(ip[0] & 0x0f) < 5 {
        return Err(Verdict::Malformed);
    }
    let header_len = usize::from(ip[0] & 0x0f) * 4;
    let Some(transport) = transport(ip[9]) else {
        return Err(Verdict::Other);
    };
    let flags_fragment = be16(ip, 6).expect("in the header");
    let more_fragments = flags_fragment & 0x2000 != 0;
    if more_fragments || flags_fragment & 0x1fff != 0 {
        return Err(Verdict::Unbalanceable);
    }
    let total_len = usize::from(be16(ip, 2).expect("in the header"));
    if total_len > ip.len() || total_len < header_len {
        return Err(Verdict::Malformed);
    }
    let src = Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]);
    let dst = Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]);
    transport_segment(
        transport,
        src.into(),
        dst.into(),
        &ip[header_len..total_len],
    )
}

/// `ip`: from the IPv6 header to the end of the frame.
fn ipv6(ip: &[u8]) -> Result<Segment<'_>, Verdict> {
    if ip.len() < 40 || ip[0] >> 4 != 6 {
        return Err(Verdict::Malformed);
    }
    let next = ip[6];
    let Some(transport) = transport(next) else {
        return Err(match EXTENSION_HEADERS.contains(&next) {
            true => Verdict::Unbalanceable,
            false => Verdict::Other,
        });
    };
    let payload_len = usize::from(be16(ip, 4).expect("in the header"));
    if 40 + payload_len > ip.len() {
        return Err(Verdict::Malformed);
    }
    let addr = |at: usize| -> Ipv6Addr {
        let octets: [u8; 16] = ip[at..at + 16].try_into().expect("16 bytes");
        octets.into()
    };
    transport_segment(
        transport,
        addr(8).into(),
        addr(24).into(),
        &ip[40..40 + payload_len],
    )
}

/// `bytes`: what the IP header says follows it (within the frame).
fn transport_segment(
    transport: Transport,
    src: IpAddr,
    dst: IpAddr,
    bytes: &[u8],
) -> Result<Segment<'_>, Verdict> {
    let header_ok = match transport {
        Transport::Tcp => bytes
            .get(12)
            .map(|&b| usize::from(b >> 4) * 4)
            .is_some_and(|len| len >= 20 && len <= bytes.len()),
        Transport::Udp => be16(bytes, 4)
            .map(usize::from)
            .is_some_and(|len| len >= 8 && len <= bytes.len()),
    };
    if !header_ok {
        return Err(Verdict::Malformed);
    }
    let flow = Flow {
        src,
        dst,
        sport: be16(bytes, 0).expect("in the header"),
        dport: be16(bytes, 2).expect("in the header"),
        transport,
    };
    Ok(Segment { flow, bytes })
}

fn transport(protocol: u8) -> Option<Transport> {
    match protocol {
        6 => Some(Transport::Tcp),
        17 => Some(Transport::Udp),
        _ => None,
    }
}

fn be16(bytes: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*bytes.get(at)?, *bytes.get(at + 1)?]))
}
