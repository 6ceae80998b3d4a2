//! A small builder of Ethernet frames carrying TCP or UDP over IPv4 or IPv6, with the
//! variations the data-plane tests need (VLAN tags, IPv4 options, fragments, IPv6
//! extension headers), and a few non-IP-flow frames (ARP, ICMP).
//!
//! Checksums are computed like a real sender would, although the XDP program ignores
//! them, so that the frames are valid on a wire as well.

use std::net::IpAddr;

use balancer_common::{FlowKey, FAMILY_V4, FAMILY_V6, PROTO_TCP, PROTO_UDP};

/// MAC of the client side (the router in front of the load balancer).
pub const CLIENT_MAC: [u8; 6] = [0x02, 0xc1, 0x1e, 0x00, 0x00, 0x01];
/// MAC of the load balancer's own interface: the destination of incoming frames.
pub const LB_MAC: [u8; 6] = [0x02, 0x1b, 0x1b, 0x00, 0x00, 0x01];

/// EtherType of IPv4.
pub const ETHERTYPE_IPV4: u16 = 0x0800;
/// EtherType of IPv6.
pub const ETHERTYPE_IPV6: u16 = 0x86dd;
/// EtherType of ARP.
pub const ETHERTYPE_ARP: u16 = 0x0806;
/// TPID of an 802.1Q VLAN tag.
pub const TPID_8021Q: u16 = 0x8100;
/// TPID of an 802.1ad (QinQ service) tag.
pub const TPID_8021AD: u16 = 0x88a8;

/// Length of an Ethernet header without tags.
pub const ETH_LEN: usize = 14;
/// Length of an IPv4 header without options.
pub const IPV4_LEN: usize = 20;
/// Length of the fixed IPv6 header.
pub const IPV6_LEN: usize = 40;
/// Length of a TCP header without options.
pub const TCP_LEN: usize = 20;
/// Length of a UDP header.
pub const UDP_LEN: usize = 8;

/// IPv4 flags/fragment-offset field with only Don't Fragment set (what Linux sends for TCP).
pub const IPV4_DONT_FRAGMENT: u16 = 0x4000;
/// IPv4 More Fragments flag.
pub const IPV4_MORE_FRAGMENTS: u16 = 0x2000;

/// IPv6 next-header value of the hop-by-hop options header.
pub const IPV6_HOP_BY_HOP: u8 = 0;
/// IPv6 next-header value of the fragment header.
pub const IPV6_FRAGMENT: u8 = 44;

/// TCP flag FIN.
pub const FIN: u8 = 0x01;
/// TCP flag SYN.
pub const SYN: u8 = 0x02;
/// TCP flag RST.
pub const RST: u8 = 0x04;
/// TCP flag PSH.
pub const PSH: u8 = 0x08;
/// TCP flag ACK.
pub const ACK: u8 = 0x10;

/// Transport protocol of a flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// TCP (the builder sends a SYN unless told other flags).
    Tcp,
    /// UDP.
    Udp,
}

impl Transport {
    /// IANA protocol number.
    pub fn number(self) -> u8 {
        match self {
            Transport::Tcp => PROTO_TCP,
            Transport::Udp => PROTO_UDP,
        }
    }
}

/// A transport flow as the client sends it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Flow {
    /// Client address.
    pub src: IpAddr,
    /// Destination (VIP or not) address.
    pub dst: IpAddr,
    /// Client port.
    pub sport: u16,
    /// Destination port.
    pub dport: u16,
    /// TCP or UDP.
    pub transport: Transport,
}

impl Flow {
    /// A flow from `src:sport` to `dst:dport`; addresses are parsed and must share a family.
    pub fn new(transport: Transport, src: &str, sport: u16, dst: &str, dport: u16) -> Self {
        let src: IpAddr = src.parse().expect("client address");
        let dst: IpAddr = dst.parse().expect("destination address");
        assert_eq!(src.is_ipv4(), dst.is_ipv4(), "mixed address families");
        Self {
            src,
            dst,
            sport,
            dport,
            transport,
        }
    }

    /// The same flow from another client port.
    pub fn with_sport(self, sport: u16) -> Self {
        Self { sport, ..self }
    }

    /// The connection-tracking key the XDP program should derive from this flow, built
    /// here field by field from the flow (not with the product's helpers).
    pub fn key(&self) -> FlowKey {
        let mut key = FlowKey {
            sport_be: self.sport.to_be(),
            dport_be: self.dport.to_be(),
            proto: self.transport.number(),
            family: if self.src.is_ipv4() {
                FAMILY_V4
            } else {
                FAMILY_V6
            },
            ..FlowKey::default()
        };
        put_addr(&mut key.src, self.src);
        put_addr(&mut key.dst, self.dst);
        key
    }

    /// A frame of this flow with default options (no tag, no IP options, DF set, 32 bytes
    /// of payload).
    pub fn frame(&self) -> Vec<u8> {
        FrameBuilder::new(*self).build()
    }

    /// A builder for a frame of this flow.
    pub fn builder(&self) -> FrameBuilder {
        FrameBuilder::new(*self)
    }

    /// A default frame of this flow with these TCP flags (ignored for UDP).
    pub fn frame_with(&self, tcp_flags: u8) -> Vec<u8> {
        FrameBuilder::new(*self).tcp_flags(tcp_flags).build()
    }
}

/// Writes an address the way keys store it: IPv4 in the first four bytes, rest zero.
fn put_addr(out: &mut [u8; 16], addr: IpAddr) {
    match addr {
        IpAddr::V4(v4) => out[..4].copy_from_slice(&v4.octets()),
        IpAddr::V6(v6) => *out = v6.octets(),
    }
}

/// The TCP sequence number of built frames unless set: every SYN of a flow is then a
/// retransmit of its first.
pub const DEFAULT_SEQ: u32 = 0x1000_0000;

/// Builds one frame of a [`Flow`].
#[derive(Clone, Debug)]
pub struct FrameBuilder {
    flow: Flow,
    tag: Option<(u16, u16)>,
    ipv4_options: Vec<u8>,
    ipv4_flags_fragment: u16,
    ipv6_extension: Option<u8>,
    payload: Vec<u8>,
    tcp_flags: u8,
    tcp_seq: u32,
}

impl FrameBuilder {
    /// Defaults: untagged, no IPv4 options, Don't Fragment, 32 bytes of payload, a TCP
    /// segment with only SYN set.
    pub fn new(flow: Flow) -> Self {
        Self {
            flow,
            tag: None,
            ipv4_options: Vec::new(),
            ipv4_flags_fragment: IPV4_DONT_FRAGMENT,
            ipv6_extension: None,
            payload: (0..32u8).collect(),
            tcp_flags: SYN,
            tcp_seq: DEFAULT_SEQ,
        }
    }

    /// Sets the TCP sequence number (default [`DEFAULT_SEQ`]).
    pub fn tcp_seq(mut self, seq: u32) -> Self {
        self.tcp_seq = seq;
        self
    }

    /// Sets the TCP flags (byte 13 of the TCP header), e.g. `ACK | PSH`.
    pub fn tcp_flags(mut self, flags: u8) -> Self {
        self.tcp_flags = flags;
        self
    }

    /// Adds one VLAN tag with this TPID (0x8100 or 0x88a8) and VLAN id.
    pub fn tag(mut self, tpid: u16, vlan_id: u16) -> Self {
        self.tag = Some((tpid, vlan_id));
        self
    }

    /// Adds IPv4 options (padded with end-of-list to a multiple of four bytes).
    pub fn ipv4_options(mut self, options: &[u8]) -> Self {
        self.ipv4_options = options.to_vec();
        while !self.ipv4_options.len().is_multiple_of(4) {
            self.ipv4_options.push(0);
        }
        assert!(self.ipv4_options.len() <= 40, "IPv4 options too long");
        self
    }

    /// Sets the IPv4 flags and fragment offset field (flags in the top three bits).
    pub fn ipv4_flags_fragment(mut self, field: u16) -> Self {
        self.ipv4_flags_fragment = field;
        self
    }

    /// Puts one 8-byte IPv6 extension header of this type before the transport header: a
    /// first fragment for [`IPV6_FRAGMENT`], PadN options otherwise.
    pub fn ipv6_extension(mut self, header_type: u8) -> Self {
        self.ipv6_extension = Some(header_type);
        self
    }

    /// Replaces the payload.
    pub fn payload(mut self, payload: &[u8]) -> Self {
        self.payload = payload.to_vec();
        self
    }

    /// The frame's bytes.
    pub fn build(&self) -> Vec<u8> {
        let l4 = self.transport_segment();
        let (ethertype, ip) = match (self.flow.src, self.flow.dst) {
            (IpAddr::V4(src), IpAddr::V4(dst)) => {
                let header = ipv4_header(&Ipv4Fields {
                    src: src.octets(),
                    dst: dst.octets(),
                    protocol: self.flow.transport.number(),
                    flags_fragment: self.ipv4_flags_fragment,
                    options: &self.ipv4_options,
                    payload_len: l4.len(),
                });
                (ETHERTYPE_IPV4, [header, l4].concat())
            }
            (IpAddr::V6(src), IpAddr::V6(dst)) => {
                let (next, extension) = match self.ipv6_extension {
                    None => (self.flow.transport.number(), Vec::new()),
                    Some(kind) => (kind, ipv6_extension(kind, self.flow.transport.number())),
                };
                let payload = [extension, l4].concat();
                let header = ipv6_header(src.octets(), dst.octets(), next, payload.len());
                (ETHERTYPE_IPV6, [header, payload].concat())
            }
            _ => unreachable!("Flow::new rejects mixed families"),
        };
        let mut frame = match self.tag {
            None => ethernet_header(ethertype),
            Some((tpid, vlan_id)) => {
                let mut header = ethernet_header(tpid);
                header.extend_from_slice(&(vlan_id & 0x0fff).to_be_bytes());
                header.extend_from_slice(&ethertype.to_be_bytes());
                header
            }
        };
        frame.extend_from_slice(&ip);
        frame
    }

    /// TCP (with its flags) or UDP header plus payload, with its checksum over the pseudo-header.
    fn transport_segment(&self) -> Vec<u8> {
        let flow = &self.flow;
        let mut segment = Vec::new();
        segment.extend_from_slice(&flow.sport.to_be_bytes());
        segment.extend_from_slice(&flow.dport.to_be_bytes());
        let checksum_at = match flow.transport {
            Transport::Tcp => {
                segment.extend_from_slice(&self.tcp_seq.to_be_bytes()); // sequence
                segment.extend_from_slice(&0u32.to_be_bytes()); // acknowledgment
                segment.push(((TCP_LEN / 4) as u8) << 4); // data offset
                segment.push(self.tcp_flags);
                segment.extend_from_slice(&64240u16.to_be_bytes()); // window
                segment.extend_from_slice(&[0, 0, 0, 0]); // checksum, urgent pointer
                16
            }
            Transport::Udp => {
                let len = (UDP_LEN + self.payload.len()) as u16;
                segment.extend_from_slice(&len.to_be_bytes());
                segment.extend_from_slice(&[0, 0]); // checksum
                6
            }
        };
        segment.extend_from_slice(&self.payload);
        let mut pseudo = Vec::new();
        match (flow.src, flow.dst) {
            (IpAddr::V4(src), IpAddr::V4(dst)) => {
                pseudo.extend_from_slice(&src.octets());
                pseudo.extend_from_slice(&dst.octets());
                pseudo.extend_from_slice(&[0, flow.transport.number()]);
                pseudo.extend_from_slice(&(segment.len() as u16).to_be_bytes());
            }
            (IpAddr::V6(src), IpAddr::V6(dst)) => {
                pseudo.extend_from_slice(&src.octets());
                pseudo.extend_from_slice(&dst.octets());
                pseudo.extend_from_slice(&(segment.len() as u32).to_be_bytes());
                pseudo.extend_from_slice(&[0, 0, 0, flow.transport.number()]);
            }
            _ => unreachable!("Flow::new rejects mixed families"),
        }
        pseudo.extend_from_slice(&segment);
        let mut checksum = internet_checksum(&pseudo);
        if checksum == 0 && flow.transport == Transport::Udp {
            checksum = 0xffff; // 0 means "no checksum" in UDP
        }
        segment[checksum_at..checksum_at + 2].copy_from_slice(&checksum.to_be_bytes());
        segment
    }
}

/// Ethernet header from [`CLIENT_MAC`] to [`LB_MAC`] with this EtherType (or TPID).
pub fn ethernet_header(ethertype: u16) -> Vec<u8> {
    let mut header = Vec::with_capacity(ETH_LEN);
    header.extend_from_slice(&LB_MAC);
    header.extend_from_slice(&CLIENT_MAC);
    header.extend_from_slice(&ethertype.to_be_bytes());
    header
}

/// The fields of an IPv4 header that the tests vary.
pub struct Ipv4Fields<'a> {
    /// Source address.
    pub src: [u8; 4],
    /// Destination address.
    pub dst: [u8; 4],
    /// Protocol number.
    pub protocol: u8,
    /// Flags (top three bits) and fragment offset (in 8-byte units).
    pub flags_fragment: u16,
    /// Options, a multiple of four bytes.
    pub options: &'a [u8],
    /// Length of what follows the header.
    pub payload_len: usize,
}

/// An IPv4 header (TTL 64, with its checksum).
pub fn ipv4_header(fields: &Ipv4Fields<'_>) -> Vec<u8> {
    let header_len = IPV4_LEN + fields.options.len();
    assert_eq!(header_len % 4, 0, "IPv4 options must be padded");
    let total_len = (header_len + fields.payload_len) as u16;
    let mut header = Vec::with_capacity(header_len);
    header.push(0x40 | (header_len / 4) as u8);
    header.push(0); // DSCP/ECN
    header.extend_from_slice(&total_len.to_be_bytes());
    header.extend_from_slice(&0x1234u16.to_be_bytes()); // identification
    header.extend_from_slice(&fields.flags_fragment.to_be_bytes());
    header.push(64); // TTL
    header.push(fields.protocol);
    header.extend_from_slice(&[0, 0]); // checksum
    header.extend_from_slice(&fields.src);
    header.extend_from_slice(&fields.dst);
    header.extend_from_slice(fields.options);
    let checksum = internet_checksum(&header);
    header[10..12].copy_from_slice(&checksum.to_be_bytes());
    header
}

/// A fixed IPv6 header (hop limit 64).
fn ipv6_header(src: [u8; 16], dst: [u8; 16], next: u8, payload_len: usize) -> Vec<u8> {
    let mut header = Vec::with_capacity(IPV6_LEN);
    header.extend_from_slice(&0x6000_0000u32.to_be_bytes()); // version, class, label
    header.extend_from_slice(&(payload_len as u16).to_be_bytes());
    header.push(next);
    header.push(64);
    header.extend_from_slice(&src);
    header.extend_from_slice(&dst);
    header
}

/// One 8-byte IPv6 extension header of type `kind` followed by `next`.
fn ipv6_extension(kind: u8, next: u8) -> Vec<u8> {
    match kind {
        // Fragment header: offset 0 with More Fragments, identification 0x01020304.
        IPV6_FRAGMENT => vec![next, 0, 0x00, 0x01, 0x01, 0x02, 0x03, 0x04],
        // Options header of length 8 (Hdr Ext Len 0) filled with one PadN option.
        _ => vec![next, 0, 1, 4, 0, 0, 0, 0],
    }
}

/// The 16-bit one's-complement checksum of RFC 1071.
fn internet_checksum(bytes: &[u8]) -> u16 {
    let mut sum: u32 = bytes
        .chunks(2)
        .map(|pair| u32::from(u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An ARP who-has request for `target` from `sender` (IPv4), broadcast.
pub fn arp_request(sender: [u8; 4], target: [u8; 4]) -> Vec<u8> {
    let mut frame = Vec::new();
    frame.extend_from_slice(&[0xff; 6]);
    frame.extend_from_slice(&CLIENT_MAC);
    frame.extend_from_slice(&ETHERTYPE_ARP.to_be_bytes());
    frame.extend_from_slice(&[0x00, 0x01, 0x08, 0x00, 6, 4, 0x00, 0x01]); // Ethernet/IPv4, request
    frame.extend_from_slice(&CLIENT_MAC);
    frame.extend_from_slice(&sender);
    frame.extend_from_slice(&[0; 6]);
    frame.extend_from_slice(&target);
    frame.resize(60, 0); // minimum Ethernet frame without FCS
    frame
}

/// An ICMP echo request from `src` to `dst` (IPv4).
pub fn icmp_echo(src: [u8; 4], dst: [u8; 4]) -> Vec<u8> {
    let mut icmp = vec![8, 0, 0, 0, 0x00, 0x2a, 0x00, 0x01]; // echo request, id 42, seq 1
    icmp.extend_from_slice(b"ping-payload");
    let checksum = internet_checksum(&icmp);
    icmp[2..4].copy_from_slice(&checksum.to_be_bytes());
    let mut frame = ethernet_header(ETHERTYPE_IPV4);
    frame.extend_from_slice(&ipv4_header(&Ipv4Fields {
        src,
        dst,
        protocol: 1,
        flags_fragment: 0,
        options: &[],
        payload_len: icmp.len(),
    }));
    frame.extend_from_slice(&icmp);
    frame
}

/// An ICMP (IPv4) or ICMPv6 error frame from `src` to `dst`: type `kind`, `code`, the four
/// bytes after the checksum (`rest`: unused, or the MTU), quoting `quote` (the offending
/// packet from its IP header on), with the IP and ICMP checksums (ICMPv6's over the
/// pseudo-header).
pub fn icmp_error(
    src: IpAddr,
    dst: IpAddr,
    kind: u8,
    code: u8,
    rest: [u8; 4],
    quote: &[u8],
) -> Vec<u8> {
    let mut message = vec![kind, code, 0, 0];
    message.extend_from_slice(&rest);
    message.extend_from_slice(quote);
    match (src, dst) {
        (IpAddr::V4(src), IpAddr::V4(dst)) => {
            let checksum = internet_checksum(&message);
            message[2..4].copy_from_slice(&checksum.to_be_bytes());
            let header = ipv4_header(&Ipv4Fields {
                src: src.octets(),
                dst: dst.octets(),
                protocol: 1,
                flags_fragment: 0,
                options: &[],
                payload_len: message.len(),
            });
            [ethernet_header(ETHERTYPE_IPV4), header, message].concat()
        }
        (IpAddr::V6(src), IpAddr::V6(dst)) => {
            let mut pseudo = Vec::new();
            pseudo.extend_from_slice(&src.octets());
            pseudo.extend_from_slice(&dst.octets());
            pseudo.extend_from_slice(&(message.len() as u32).to_be_bytes());
            pseudo.extend_from_slice(&[0, 0, 0, 58]);
            pseudo.extend_from_slice(&message);
            let checksum = internet_checksum(&pseudo);
            message[2..4].copy_from_slice(&checksum.to_be_bytes());
            let header = ipv6_header(src.octets(), dst.octets(), 58, message.len());
            [ethernet_header(ETHERTYPE_IPV6), header, message].concat()
        }
        _ => panic!("mixed address families"),
    }
}
