//! The frames of the fuzzed data plane, all drawn from one seeded generator: valid frames of
//! VIP and other flows (built with [`FrameBuilder`]: VLAN tags, IPv4 options and fragment
//! fields, IPv6 extension headers, TCP flags, payloads of every size, right checksums), the
//! reply direction of `nat` and `fullnat` backends ([`Answerer`]: their packets to clients
//! and to pool ports, among them the pool ports flows were given, which the run reports with
//! [`Generator::learn`]) and ICMP errors quoting packets to them, the same frames with one
//! to four mutations, and random bytes shaped just enough to reach the IP parser.
//!
//! The mutations know where the headers are ([`Shape`]), so that most of them hit a field the
//! parser reads: bit flips and byte values in the headers, truncations at header
//! boundaries, trailing bytes (Ethernet padding), lying length fields (IPv4 total length,
//! IHL, IPv6 payload length, UDP length, TCP data offset), tags pushed and popped (one and
//! two tags, and TPIDs the parser does not know), IPv4 options and IPv6 extension headers
//! inserted with or without fixing the lengths, fragment fields, protocol numbers, zero-length
//! L4 (the datagram ends at the L4 header, or holds only it), and addresses and ports moved
//! onto and off the VIPs and the martian ranges.
//!
//! Nothing here decides what the program should do with a frame: that is the model's part.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use fastrand::Rng;

use crate::{
    routed::Held,
    support::packet::{
        icmp_error, Flow, Transport, ACK, ETHERTYPE_ARP, ETHERTYPE_IPV4, ETHERTYPE_IPV6, ETH_LEN,
        FIN, IPV4_DONT_FRAGMENT, IPV4_LEN, IPV4_MORE_FRAGMENTS, IPV6_LEN, PSH, RST, SYN, TCP_LEN,
        TPID_8021AD, TPID_8021Q, UDP_LEN,
    },
};

/// The smallest frame `BPF_PROG_TEST_RUN` takes: an Ethernet header.
pub const MIN_FRAME: usize = ETH_LEN;

/// The largest payload of a generated flow (a full 1500-byte IPv4 packet with its headers).
const MAX_PAYLOAD: usize = 1460;

/// A TPID no parser takes for a VLAN tag (the old QinQ 0x9100).
const TPID_9100: u16 = 0x9100;

/// IPv6 next-header values of extension headers, as RFC 8200 and its registry list them.
const EXTENSION_HEADERS: [u8; 9] = [0, 43, 44, 60, 51, 50, 135, 139, 140];

/// A service address the generator aims most flows at.
#[derive(Clone, Copy, Debug)]
pub struct Target {
    /// VIP address.
    pub addr: IpAddr,
    /// VIP port.
    pub port: u16,
    /// VIP protocol.
    pub transport: Transport,
}

/// A `nat` or `fullnat` backend endpoint the generator makes replies and ICMP errors of.
#[derive(Clone, Copy, Debug)]
pub struct Answerer {
    /// The backend's address.
    pub addr: IpAddr,
    /// The backend's port.
    pub port: u16,
    /// The service's protocol.
    pub transport: Transport,
    /// `fullnat`: the pool's address and ports (first, last).
    pub pool: Option<(IpAddr, [u16; 2])>,
}

/// The most pool ports the generator remembers (the latest learned replace the oldest).
const HELD_MAX: usize = 256;

/// How a frame was made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Base {
    /// A valid frame of a flow, not mutated.
    Valid,
    /// A backend's reply (to a client, or to a pool port), not mutated.
    Reply,
    /// An ICMP error quoting a packet to a backend endpoint, not mutated.
    Error,
    /// A valid frame of a flow, then mutated.
    Mutated,
    /// A reply, then mutated.
    MutatedReply,
    /// An ICMP error, then mutated.
    MutatedError,
    /// Random bytes (with an EtherType, version and protocol that often reach the parser).
    Random,
    /// A frame given to be replayed.
    Replayed,
}

/// One mutation of a valid frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mutation {
    /// One bit flipped, most often in the headers.
    BitFlip,
    /// One header byte set to a value parsers stumble on.
    ByteSet,
    /// The frame cut short, most often at or next to a header boundary.
    Truncate,
    /// Bytes appended after the datagram (Ethernet padding or garbage).
    Extend,
    /// The IPv4 total length or IPv6 payload length changed.
    IpLength,
    /// The UDP length or the TCP data offset changed.
    L4Length,
    /// The IPv4 IHL or the IP version changed.
    HeaderLength,
    /// A VLAN tag (of a known TPID or not) pushed before the EtherType.
    PushTag,
    /// The outer VLAN tag removed.
    PopTag,
    /// The (inner) EtherType changed.
    EtherType,
    /// IPv4 flags and fragment offset changed; for IPv6 a fragment header inserted.
    Fragment,
    /// IPv4 options inserted (lengths fixed or not); for IPv6 an extension header.
    Options,
    /// An IPv6 extension header (or another next header) inserted; for IPv4 options.
    Extension,
    /// The IPv4 protocol or IPv6 next header changed.
    Protocol,
    /// The L4 part cut to nothing, or to its bare header, with the IP lengths agreeing.
    ZeroL4,
    /// The source address moved (clients, martians, random).
    Source,
    /// The destination address moved (VIPs, other addresses).
    Destination,
    /// A port moved (VIP ports, random).
    Ports,
    /// The TCP flags set to another combination.
    TcpFlags,
    /// TCP options inserted (data offset and lengths fixed or not).
    TcpOptions,
}

/// Every mutation, the generator's menu.
const MUTATIONS: [Mutation; 20] = [
    Mutation::BitFlip,
    Mutation::ByteSet,
    Mutation::Truncate,
    Mutation::Extend,
    Mutation::IpLength,
    Mutation::L4Length,
    Mutation::HeaderLength,
    Mutation::PushTag,
    Mutation::PopTag,
    Mutation::EtherType,
    Mutation::Fragment,
    Mutation::Options,
    Mutation::Extension,
    Mutation::Protocol,
    Mutation::ZeroL4,
    Mutation::Source,
    Mutation::Destination,
    Mutation::Ports,
    Mutation::TcpFlags,
    Mutation::TcpOptions,
];

/// A generated frame and how it was made.
pub struct Made {
    /// The frame's bytes (at least [`MIN_FRAME`]).
    pub frame: Vec<u8>,
    /// Valid, mutated or random.
    pub base: Base,
    /// The mutations applied, in order.
    pub mutations: Vec<Mutation>,
}

impl Made {
    /// One line saying how the frame was made.
    pub fn recipe(&self) -> String {
        match self.base {
            Base::Mutated => format!("mutated: {:?}", self.mutations),
            Base::MutatedReply => format!("mutated reply: {:?}", self.mutations),
            Base::MutatedError => format!("mutated ICMP error: {:?}", self.mutations),
            base => format!("{base:?}").to_lowercase(),
        }
    }
}

/// Where the headers of a frame under construction are, as it was built and moved by
/// structural mutations (field mutations leave it alone, so it may no longer be what a
/// parser would find: that is the point).
#[derive(Clone, Copy, Debug)]
struct Shape {
    /// Offset of the IP header.
    l3: usize,
    /// IPv6 rather than IPv4.
    v6: bool,
    /// Offset of the TCP or UDP header.
    l4: usize,
    /// The transport the frame was built with.
    transport: Transport,
}

/// The seeded generator: the same seed, targets and answerers (and pool ports learned at the
/// same frames) give the same frames.
pub struct Generator {
    rng: Rng,
    /// Every target.
    targets: Vec<Target>,
    /// The IPv4 targets.
    targets4: Vec<Target>,
    /// The IPv6 targets.
    targets6: Vec<Target>,
    /// The endpoints whose replies and errors are made.
    answerers: Vec<Answerer>,
    /// Pool ports flows were given (at most [`HELD_MAX`]).
    held: Vec<Held>,
    /// Pool ports learned so far.
    learned: usize,
}

impl Generator {
    /// A generator drawing from `seed`, aiming most flows at `targets`, and making replies
    /// and ICMP errors of `answerers` (none: no reply frames).
    pub fn new(seed: u64, targets: Vec<Target>, answerers: Vec<Answerer>) -> Self {
        let (targets6, targets4) = targets.iter().partition(|t| t.addr.is_ipv6());
        Self {
            rng: Rng::with_seed(seed),
            targets,
            targets4,
            targets6,
            answerers,
            held: Vec::new(),
            learned: 0,
        }
    }

    /// Remembers a pool port a flow was given, for replies and errors to come.
    pub fn learn(&mut self, held: Held) {
        if self.held.len() < HELD_MAX {
            self.held.push(held);
        } else {
            self.held[self.learned % HELD_MAX] = held;
        }
        self.learned += 1;
    }

    /// The next frame: about 1 in 4 valid, 2 in 3 mutated, 1 in 12 random; with answerers,
    /// one in ten of the valid and mutated a reply and one in ten an ICMP error.
    pub fn next_frame(&mut self) -> Made {
        let roll = self.rng.u32(0..120);
        if roll < 10 {
            return Made {
                frame: self.random_frame(),
                base: Base::Random,
                mutations: Vec::new(),
            };
        }
        let ((mut frame, mut shape), base, mutated) = match self.rng.u32(0..10) {
            0 if !self.answerers.is_empty() => {
                (self.reply_frame(), Base::Reply, Base::MutatedReply)
            }
            1 if !self.answerers.is_empty() => {
                (self.error_frame(), Base::Error, Base::MutatedError)
            }
            _ => (self.valid_frame(), Base::Valid, Base::Mutated),
        };
        if roll < 40 {
            return Made {
                frame,
                base,
                mutations: Vec::new(),
            };
        }
        let count = match self.rng.u32(0..10) {
            0..=4 => 1,
            5..=7 => 2,
            8 => 3,
            _ => 4,
        };
        let mut mutations = Vec::with_capacity(count);
        for _ in 0..count {
            let mutation = MUTATIONS[self.rng.usize(..MUTATIONS.len())];
            self.mutate(&mut frame, &mut shape, mutation);
            mutations.push(mutation);
        }
        if frame.len() < MIN_FRAME {
            frame.resize(MIN_FRAME, 0);
        }
        Made {
            frame,
            base: mutated,
            mutations,
        }
    }

    /// A valid frame of a flow, mostly to a VIP, from a small pool of clients and ports so
    /// that flows come back (the established path) among new ones.
    fn valid_frame(&mut self) -> (Vec<u8>, Shape) {
        let v6 = self.rng.bool();
        let (dst, dport, transport) = self.destination(v6);
        let flow = Flow {
            src: self.source(v6),
            dst,
            sport: 40_000 + self.rng.u16(0..24),
            dport,
            transport,
        };
        let mut builder = flow.builder();
        let mut l3 = ETH_LEN;
        let two_tags = match self.rng.u32(0..100) {
            0..=69 => false,
            70..=84 => {
                builder = builder.tag(TPID_8021Q, self.rng.u16(0..4096));
                l3 += 4;
                false
            }
            85..=92 => {
                builder = builder.tag(TPID_8021AD, self.rng.u16(0..4096));
                l3 += 4;
                false
            }
            _ => {
                builder = builder.tag(TPID_8021Q, self.rng.u16(0..4096));
                l3 += 4;
                true
            }
        };
        let l4 = if v6 {
            let extension = self.rng.u32(0..100) < 8;
            if extension {
                builder = builder.ipv6_extension(pick(&mut self.rng, &EXTENSION_HEADERS));
            }
            l3 + IPV6_LEN + if extension { 8 } else { 0 }
        } else {
            let options = if self.rng.u32(0..100) < 15 {
                let len = 4 * self.rng.usize(1..=10);
                self.ipv4_options(len)
            } else {
                Vec::new()
            };
            builder =
                builder
                    .ipv4_options(&options)
                    .ipv4_flags_fragment(match self.rng.u32(0..100) {
                        0..=84 => IPV4_DONT_FRAGMENT,
                        85..=89 => 0,
                        90..=93 => IPV4_MORE_FRAGMENTS,
                        94..=96 => self.rng.u16(1..0x2000),
                        _ => 0x8000, // the reserved bit: not a fragment
                    });
            l3 + IPV4_LEN + options.len()
        };
        if transport == Transport::Tcp && self.rng.bool() {
            builder = builder.tcp_flags(tcp_flags(&mut self.rng));
        }
        let payload = self.payload();
        let mut frame = builder.payload(&payload).build();
        let mut shape = Shape {
            l3,
            v6,
            l4,
            transport,
        };
        if two_tags {
            // An 802.1ad service tag outside the 802.1Q one: QinQ.
            push_tag(&mut frame, &mut shape, TPID_8021AD, self.rng.u16(..));
        }
        (frame, shape)
    }

    /// A payload of any size up to [`MAX_PAYLOAD`] (most of them short), zeros or random.
    fn payload(&mut self) -> Vec<u8> {
        let len = match self.rng.u32(0..100) {
            0..=39 => 0,
            40..=79 => self.rng.usize(1..64),
            80..=94 => self.rng.usize(64..512),
            _ => self.rng.usize(512..=MAX_PAYLOAD),
        };
        if self.rng.bool() {
            vec![0; len]
        } else {
            self.bytes(len)
        }
    }

    /// A backend's reply: from an answerer's endpoint to a client (`nat`), or to a pool port
    /// (`fullnat`: often one a flow holds), with a VLAN tag now and then.
    fn reply_frame(&mut self) -> (Vec<u8>, Shape) {
        let (src, sport, dst, dport, transport) = self.reply_ends();
        let flow = Flow {
            src,
            dst,
            sport,
            dport,
            transport,
        };
        let mut builder = flow.builder();
        let mut l3 = ETH_LEN;
        if self.rng.u32(0..100) < 15 {
            builder = builder.tag(TPID_8021Q, self.rng.u16(0..4096));
            l3 += 4;
        }
        if transport == Transport::Tcp {
            let flags = [
                SYN | ACK,
                SYN | ACK,
                ACK,
                ACK | PSH,
                RST | ACK,
                RST,
                FIN | ACK,
            ];
            builder = builder.tcp_flags(pick(&mut self.rng, &flags));
        }
        let payload = self.payload();
        let frame = builder.payload(&payload).build();
        let v6 = src.is_ipv6();
        let shape = Shape {
            l3,
            v6,
            l4: l3 + if v6 { IPV6_LEN } else { IPV4_LEN },
            transport,
        };
        (frame, shape)
    }

    /// (source, source port, destination, destination port, protocol) of a reply: from a
    /// pool port a flow holds, or from an answerer to a client or a pool port.
    fn reply_ends(&mut self) -> (IpAddr, u16, IpAddr, u16, Transport) {
        if !self.held.is_empty() && self.rng.u32(0..3) == 0 {
            let (pool, port, backend, backend_port, proto) = pick(&mut self.rng, &self.held);
            return (backend, backend_port, pool, port, transport(proto));
        }
        let a = pick(&mut self.rng, &self.answerers);
        let (dst, dport) = self.counterpart(&a);
        (a.addr, a.port, dst, dport, a.transport)
    }

    /// Who answerer `a` talks to: a client and its port (`nat`), or a pool port (`fullnat`:
    /// within the pool or not, held by a flow or not).
    fn counterpart(&mut self, a: &Answerer) -> (IpAddr, u16) {
        match a.pool {
            Some((pool, [first, last])) => {
                let port = match self.rng.bool() {
                    true => self.rng.u16(first..=last),
                    false => self.rng.u16(..),
                };
                (pool, port)
            }
            None => {
                let client = self.reply_client(a.addr.is_ipv6());
                let port = match self.rng.u32(0..10) {
                    0..=7 => 40_000 + self.rng.u16(0..24),
                    _ => self.port(),
                };
                (client, port)
            }
        }
    }

    /// A client of family `v6` a reply goes to: routed ones mostly, one behind a blackhole,
    /// one on the LB's link without a neighbour entry, the LB itself, one with no route.
    fn reply_client(&mut self, v6: bool) -> IpAddr {
        let host = self.rng.u8(2..16);
        let roll = self.rng.u32(0..100);
        if !v6 {
            let net = match roll {
                0..=49 => [203, 0, 113],
                50..=64 => [198, 51, 100],
                65..=74 => [198, 18, 201],
                75..=82 => [198, 18, 250],
                83..=89 => [198, 18, 200],
                90..=94 => return IpAddr::V4(Ipv4Addr::new(198, 18, 200, 1)),
                _ => [192, 0, 2],
            };
            let host = if net == [198, 18, 200] {
                host + 10
            } else {
                host
            };
            return IpAddr::V4(Ipv4Addr::new(net[0], net[1], net[2], host));
        }
        let net = match roll {
            0..=49 => 0xc,
            50..=64 => 0xd,
            65..=74 => 0x250,
            75..=84 => 0x200,
            85..=89 => return IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0x200, 0, 0, 0, 0, 1)),
            _ => 0xe,
        };
        let host = u16::from(host) + if net == 0x200 { 0x10 } else { 0 };
        IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, net, 0, 0, 0, 0, host))
    }

    /// An ICMP error quoting a packet to an answerer's endpoint (from a pool port for
    /// `fullnat`, often one a flow holds), from the backend or a router on the way, of a
    /// type that quotes or not, the quote whole or cut.
    fn error_frame(&mut self) -> (Vec<u8>, Shape) {
        let quoted = if !self.held.is_empty() && self.rng.bool() {
            let (pool, port, backend, backend_port, proto) = pick(&mut self.rng, &self.held);
            Flow {
                src: pool,
                sport: port,
                dst: backend,
                dport: backend_port,
                transport: transport(proto),
            }
        } else {
            let a = pick(&mut self.rng, &self.answerers);
            let (src, sport) = self.counterpart(&a);
            Flow {
                src,
                sport,
                dst: a.addr,
                dport: a.port,
                transport: a.transport,
            }
        };
        let v6 = quoted.src.is_ipv6();
        let from = match (self.rng.u32(0..5), v6) {
            (0..=2, _) => quoted.dst,
            (_, false) => IpAddr::V4(Ipv4Addr::new(198, 18, 200, 99)),
            (_, true) => IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0x200, 0, 0, 0, 0, 0x99)),
        };
        let kinds: &[(u8, u8)] = match v6 {
            false => &[(3, 3), (3, 4), (3, 1), (11, 0), (8, 0), (5, 0)],
            true => &[(1, 4), (1, 0), (2, 0), (3, 0), (128, 0), (4, 0)],
        };
        let (kind, code) = pick(&mut self.rng, kinds);
        let payload = self.payload();
        let mut builder = quoted.builder().tcp_flags(ACK).payload(&payload);
        let mut header = if v6 { IPV6_LEN } else { IPV4_LEN };
        if !v6 && self.rng.u32(0..10) == 0 {
            let options = self.ipv4_options(8);
            builder = builder.ipv4_options(&options);
            header += 8;
        }
        let packet = builder.build().split_off(ETH_LEN);
        let cut = match self.rng.u32(0..4) {
            0 | 1 => packet.len(),
            2 => header + 8,
            _ => self.rng.usize(1..=packet.len()),
        };
        let rest = [0, 0, 0x05, pick(&mut self.rng, &[0x00, 0xdc])];
        let frame = icmp_error(from, quoted.src, kind, code, rest, &packet[..cut]);
        let shape = Shape {
            l3: ETH_LEN,
            v6,
            l4: ETH_LEN + if v6 { IPV6_LEN } else { IPV4_LEN },
            transport: Transport::Udp,
        };
        (frame, shape)
    }

    /// A destination of family `v6`: mostly a target, else the VIP address on another port
    /// or protocol, another address of the VIP's network, or a random one.
    fn destination(&mut self, v6: bool) -> (IpAddr, u16, Transport) {
        let transport = if self.rng.bool() {
            Transport::Tcp
        } else {
            Transport::Udp
        };
        let roll = self.rng.u32(0..100);
        let family = if v6 { &self.targets6 } else { &self.targets4 };
        if roll < 80 && !family.is_empty() {
            let t = family[self.rng.usize(..family.len())];
            return (t.addr, t.port, t.transport);
        }
        if roll < 88 && !family.is_empty() {
            let t = family[self.rng.usize(..family.len())];
            return (t.addr, self.port(), transport);
        }
        let addr = if roll < 94 {
            if v6 {
                IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0xffff, 0, 0, 0, 0, 0x99))
            } else {
                IpAddr::V4(Ipv4Addr::new(198, 19, 0, 99))
            }
        } else {
            self.random_addr(v6)
        };
        (addr, self.port(), transport)
    }

    /// A port: a target's most of the time, else a well-known or a random one.
    fn port(&mut self) -> u16 {
        match self.rng.u32(0..3) {
            0 if !self.targets.is_empty() => {
                self.targets[self.rng.usize(..self.targets.len())].port
            }
            1 => pick(&mut self.rng, &[0, 1, 53, 80, 443, 8080, 65535]),
            _ => self.rng.u16(..),
        }
    }

    /// A client address of family `v6`: a small pool (part of it under the tests' client
    /// pin 203.0.113.0/29), IPv4-mapped ones, martian sources and their neighbours, or a
    /// random address.
    fn source(&mut self, v6: bool) -> IpAddr {
        let roll = self.rng.u32(0..100);
        if !v6 {
            return IpAddr::V4(match roll {
                0..=59 => Ipv4Addr::new(203, 0, 113, self.rng.u8(0..16)),
                60..=84 => Ipv4Addr::new(198, 51, 100, self.rng.u8(0..16)),
                85..=91 => Ipv4Addr::from(self.rng.u32(..)),
                _ => pick(
                    &mut self.rng,
                    &[
                        Ipv4Addr::new(0, 0, 0, 0),
                        Ipv4Addr::new(0, 1, 2, 3),
                        Ipv4Addr::new(127, 0, 0, 1),
                        Ipv4Addr::new(224, 0, 0, 1),
                        Ipv4Addr::new(240, 0, 0, 1),
                        Ipv4Addr::new(255, 255, 255, 255),
                        Ipv4Addr::new(1, 0, 0, 0),
                        Ipv4Addr::new(126, 255, 255, 255),
                        Ipv4Addr::new(128, 0, 0, 0),
                        Ipv4Addr::new(223, 255, 255, 255),
                    ],
                ),
            });
        }
        IpAddr::V6(match roll {
            0..=54 => Ipv6Addr::new(0x2001, 0xdb8, 0xc, 0, 0, 0, 0, self.rng.u16(0..16)),
            55..=74 => Ipv6Addr::new(0x2001, 0xdb8, 0xd, 0, 0, 0, 0, self.rng.u16(0..16)),
            75..=81 => Ipv4Addr::new(203, 0, 113, self.rng.u8(0..16)).to_ipv6_mapped(),
            82..=88 => Ipv6Addr::from(self.rng.u128(..)),
            _ => pick(
                &mut self.rng,
                &[
                    Ipv6Addr::UNSPECIFIED,
                    Ipv6Addr::LOCALHOST,
                    Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1),
                    Ipv4Addr::new(127, 0, 0, 1).to_ipv6_mapped(),
                    Ipv4Addr::new(224, 0, 0, 5).to_ipv6_mapped(),
                    Ipv4Addr::new(0, 0, 0, 0).to_ipv6_mapped(),
                    Ipv6Addr::new(0, 0, 0, 0, 0, 0, 0, 2),
                    Ipv6Addr::new(0, 0, 0, 0, 0, 0, 0x7f00, 1),
                    Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1),
                    Ipv4Addr::new(198, 51, 100, 7).to_ipv6_mapped(),
                ],
            ),
        })
    }

    /// A random address of family `v6`.
    fn random_addr(&mut self, v6: bool) -> IpAddr {
        if v6 {
            IpAddr::V6(Ipv6Addr::from(self.rng.u128(..)))
        } else {
            IpAddr::V4(Ipv4Addr::from(self.rng.u32(..)))
        }
    }

    /// `len` bytes of IPv4 options: real ones (router alert, NOPs, end of list) or random
    /// bytes; the parser skips them whatever they hold.
    fn ipv4_options(&mut self, len: usize) -> Vec<u8> {
        match self.rng.u32(0..3) {
            0 => {
                let mut options = vec![0x94, 0x04, 0x00, 0x00];
                options.resize(len, 0x01);
                options
            }
            1 => vec![0; len],
            _ => self.bytes(len),
        }
    }

    /// `len` random bytes.
    fn bytes(&mut self, len: usize) -> Vec<u8> {
        std::iter::repeat_with(|| self.rng.u8(..))
            .take(len)
            .collect()
    }

    /// Random bytes, most of them given an EtherType (after up to two tags), IP version and
    /// protocol that lead into the parser, and some a VIP as destination.
    fn random_frame(&mut self) -> Vec<u8> {
        let len = match self.rng.u32(0..100) {
            0..=69 => self.rng.usize(MIN_FRAME..=90),
            70..=94 => self.rng.usize(90..=300),
            _ => self.rng.usize(300..=1514),
        };
        let mut frame = self.bytes(len);
        if self.rng.u32(0..10) < 3 {
            return frame;
        }
        let mut l3 = ETH_LEN;
        for _ in 0..self.rng.usize(0..=2) {
            put16(
                &mut frame,
                l3 - 2,
                pick(&mut self.rng, &[TPID_8021Q, TPID_8021AD]),
            );
            l3 += 4;
        }
        let v6 = self.rng.bool();
        let ethertype = match self.rng.u32(0..10) {
            0 => ETHERTYPE_ARP,
            _ if v6 => ETHERTYPE_IPV6,
            _ => ETHERTYPE_IPV4,
        };
        put16(&mut frame, l3 - 2, ethertype);
        if self.rng.u32(0..10) < 8 {
            let version = if v6 { 0x60 } else { 0x40 | self.rng.u8(5..16) };
            put8(&mut frame, l3, version);
        }
        if self.rng.u32(0..10) < 7 {
            let proto = pick(&mut self.rng, &[6, 17]);
            put8(&mut frame, if v6 { l3 + 6 } else { l3 + 9 }, proto);
        }
        if !v6 && self.rng.bool() {
            put16(&mut frame, l3 + 6, 0); // not a fragment
        }
        let family = if v6 { &self.targets6 } else { &self.targets4 };
        if self.rng.bool() && !family.is_empty() {
            let target = family[self.rng.usize(..family.len())];
            put_addr(&mut frame, if v6 { l3 + 24 } else { l3 + 16 }, target.addr);
        }
        frame
    }

    /// Applies `mutation` to `frame`, moving `shape` along with structural changes. Writes
    /// that fall outside a (truncated) frame are skipped.
    fn mutate(&mut self, frame: &mut Vec<u8>, shape: &mut Shape, mutation: Mutation) {
        let rng = &mut self.rng;
        let Shape { l3, v6, l4, .. } = *shape;
        let headers_end = (l4 + TCP_LEN + 4).min(frame.len());
        match mutation {
            Mutation::BitFlip => {
                let at = if rng.u32(0..4) < 3 {
                    rng.usize(..headers_end)
                } else {
                    rng.usize(..frame.len())
                };
                frame[at] ^= 1 << rng.u8(0..8);
            }
            Mutation::ByteSet => {
                let at = rng.usize(..headers_end);
                frame[at] = pick(
                    rng,
                    &[0, 1, 5, 0x0f, 0x40, 0x45, 0x4f, 0x60, 0x7f, 0x80, 0xff],
                ) ^ if rng.u32(0..4) == 0 { rng.u8(..) } else { 0 };
            }
            Mutation::Truncate => {
                let ip_header = if v6 { IPV6_LEN } else { IPV4_LEN };
                let boundaries = [
                    l3,
                    l3 + 1,
                    l3 + ip_header - 1,
                    l3 + ip_header,
                    l4 - 1,
                    l4,
                    l4 + 1,
                    l4 + 4,
                    l4 + 5,
                    l4 + UDP_LEN - 1,
                    l4 + UDP_LEN,
                    l4 + 12,
                    l4 + 13,
                    l4 + TCP_LEN - 1,
                    l4 + TCP_LEN,
                    l4 + TCP_LEN + 1,
                    frame.len() - 1,
                ];
                let len = if rng.bool() {
                    pick(rng, &boundaries)
                } else {
                    rng.usize(MIN_FRAME..=frame.len())
                };
                frame.truncate(len.clamp(MIN_FRAME, frame.len()));
            }
            Mutation::Extend => {
                let more = rng.usize(1..=64);
                if rng.bool() {
                    frame.resize(frame.len() + more, 0);
                } else {
                    frame.extend(std::iter::repeat_with(|| rng.u8(..)).take(more));
                }
            }
            Mutation::IpLength => {
                let (at, header) = if v6 { (l3 + 4, IPV6_LEN) } else { (l3 + 2, 0) };
                let Some(now) = get16(frame, at) else { return };
                let fits = frame.len().saturating_sub(l3 + header) as u16;
                let ip_header = l4.saturating_sub(l3 + header) as u16;
                let choices = [
                    0,
                    now.wrapping_sub(1),
                    now.wrapping_add(1),
                    now.wrapping_add(rng.u16(2..64)),
                    now.wrapping_sub(rng.u16(2..64)),
                    0xffff,
                    rng.u16(..),
                    fits,
                    fits.wrapping_add(1),
                    ip_header.wrapping_sub(1),
                    ip_header,
                    ip_header + UDP_LEN as u16,
                    ip_header + TCP_LEN as u16,
                ];
                put16(frame, at, pick(rng, &choices));
            }
            Mutation::L4Length => match shape.transport {
                Transport::Udp => {
                    let Some(now) = get16(frame, l4 + 4) else {
                        return;
                    };
                    let choices = [
                        0,
                        7,
                        8,
                        now.wrapping_sub(1),
                        now.wrapping_add(1),
                        0xffff,
                        rng.u16(..),
                    ];
                    put16(frame, l4 + 4, pick(rng, &choices));
                }
                Transport::Tcp => {
                    if let Some(byte) = frame.get_mut(l4 + 12) {
                        *byte = (rng.u8(0..16) << 4) | (*byte & 0x0f);
                    }
                }
            },
            Mutation::HeaderLength => {
                if let Some(byte) = frame.get_mut(l3) {
                    *byte = if v6 || rng.u32(0..4) == 0 {
                        (rng.u8(0..16) << 4) | (*byte & 0x0f)
                    } else {
                        (*byte & 0xf0) | rng.u8(0..16)
                    };
                }
            }
            Mutation::PushTag => {
                let choices = [TPID_8021Q, TPID_8021AD, TPID_9100, rng.u16(..)];
                let tpid = pick(rng, &choices);
                let tci = rng.u16(..);
                push_tag(frame, shape, tpid, tci);
            }
            Mutation::PopTag => {
                if matches!(get16(frame, 12), Some(TPID_8021Q | TPID_8021AD)) && frame.len() >= 18 {
                    frame.drain(12..16);
                    shape.l3 = l3.saturating_sub(4).max(ETH_LEN);
                    shape.l4 = l4.saturating_sub(4).max(shape.l3);
                }
            }
            Mutation::EtherType => {
                let choices = [
                    ETHERTYPE_IPV4,
                    ETHERTYPE_IPV6,
                    ETHERTYPE_ARP,
                    TPID_8021Q,
                    TPID_8021AD,
                    rng.u16(..),
                ];
                put16(frame, l3 - 2, pick(rng, &choices));
            }
            Mutation::Fragment if !v6 => {
                let choices = [
                    IPV4_MORE_FRAGMENTS,
                    rng.u16(1..0x2000),
                    IPV4_MORE_FRAGMENTS | rng.u16(1..0x2000),
                    0x8000,
                    IPV4_DONT_FRAGMENT,
                    IPV4_DONT_FRAGMENT | IPV4_MORE_FRAGMENTS,
                    0,
                    0xffff,
                ];
                put16(frame, l3 + 6, pick(rng, &choices));
            }
            Mutation::Fragment => {
                let fix = rng.u32(0..4) != 0;
                insert_extension(rng, frame, shape, 44, fix);
            }
            Mutation::Options | Mutation::Extension if !v6 => {
                let len = 4 * rng.usize(1..=10);
                let Some(first) = frame.get(l3).copied() else {
                    return;
                };
                let ihl = usize::from(first & 0x0f) + len / 4;
                if ihl > 15 || l4 > frame.len() {
                    return;
                }
                let options = match rng.u32(0..3) {
                    0 => vec![1; len],
                    1 => vec![0; len],
                    _ => std::iter::repeat_with(|| rng.u8(..)).take(len).collect(),
                };
                frame.splice(l4..l4, options);
                frame[l3] = (first & 0xf0) | ihl as u8;
                if rng.u32(0..4) != 0 {
                    add16(frame, l3 + 2, len as u16);
                }
                shape.l4 += len;
            }
            Mutation::Options | Mutation::Extension => {
                let kind = if rng.u32(0..8) == 0 {
                    let choices = [58, 59, 1, rng.u8(..)];
                    pick(rng, &choices)
                } else {
                    pick(rng, &EXTENSION_HEADERS)
                };
                let fix = rng.u32(0..4) != 0;
                insert_extension(rng, frame, shape, kind, fix);
            }
            Mutation::Protocol => {
                let choices = [6, 17, 1, 58, 0, 44, 59, 132, rng.u8(..)];
                let value = pick(rng, &choices);
                put8(frame, if v6 { l3 + 6 } else { l3 + 9 }, value);
            }
            Mutation::ZeroL4 => {
                // No L4 bytes at all, or the bare TCP or UDP header without payload.
                let bare = match shape.transport {
                    Transport::Udp => UDP_LEN,
                    Transport::Tcp => TCP_LEN,
                };
                let end = if rng.bool() { l4 } else { l4 + bare };
                if end > frame.len() || end < l3 + if v6 { IPV6_LEN } else { IPV4_LEN } {
                    return;
                }
                if shape.transport == Transport::Udp && end == l4 + UDP_LEN {
                    put16(frame, l4 + 4, UDP_LEN as u16);
                }
                if v6 {
                    put16(frame, l3 + 4, (end - l3 - IPV6_LEN) as u16);
                } else {
                    put16(frame, l3 + 2, (end - l3) as u16);
                }
                let padding = if rng.bool() { 0 } else { rng.usize(1..=40) };
                frame.truncate((end + padding).min(frame.len()));
            }
            Mutation::Source => {
                let addr = if rng.u32(0..5) == 0 {
                    self.random_addr(v6)
                } else {
                    self.source(v6)
                };
                put_addr(frame, if v6 { l3 + 8 } else { l3 + 12 }, addr);
            }
            Mutation::Destination => {
                let (addr, _, _) = self.destination(v6);
                put_addr(frame, if v6 { l3 + 24 } else { l3 + 16 }, addr);
            }
            Mutation::Ports => {
                let port = self.port();
                let at = if self.rng.bool() { l4 } else { l4 + 2 };
                put16(frame, at, port);
            }
            Mutation::TcpFlags => put8(frame, l4 + 13, tcp_flags(rng)),
            Mutation::TcpOptions => {
                let len = 4 * rng.usize(1..=10);
                let at = l4 + TCP_LEN;
                let Some(offset_byte) = frame.get(l4 + 12).copied() else {
                    return;
                };
                if at > frame.len() {
                    return;
                }
                let options: Vec<u8> = match rng.u32(0..3) {
                    // MSS 1460, then NOPs.
                    0 => [2, 4, 0x05, 0xb4]
                        .into_iter()
                        .chain(std::iter::repeat(1))
                        .take(len)
                        .collect(),
                    1 => vec![0; len],
                    _ => std::iter::repeat_with(|| rng.u8(..)).take(len).collect(),
                };
                frame.splice(at..at, options);
                let offset = (usize::from(offset_byte >> 4) + len / 4).min(15) as u8;
                frame[l4 + 12] = (offset << 4) | (offset_byte & 0x0f);
                if rng.u32(0..4) != 0 {
                    add16(frame, if v6 { l3 + 4 } else { l3 + 2 }, len as u16);
                }
            }
        }
    }
}

/// The transport of protocol number `proto` (TCP or UDP).
fn transport(proto: u8) -> Transport {
    match proto {
        6 => Transport::Tcp,
        _ => Transport::Udp,
    }
}

/// TCP flags: the usual combinations, odd ones, now and then random bits flipped.
fn tcp_flags(rng: &mut Rng) -> u8 {
    let flags = pick(
        rng,
        &[
            0x02, 0x12, 0x10, 0x18, 0x11, 0x14, 0x04, 0x01, 0x03, 0x00, 0xff,
        ],
    );
    flags ^ if rng.u32(0..8) == 0 { rng.u8(..) } else { 0 }
}

/// Pushes a tag of `tpid` and `tci` outside whatever follows the MAC addresses.
fn push_tag(frame: &mut Vec<u8>, shape: &mut Shape, tpid: u16, tci: u16) {
    if frame.len() < 12 {
        return;
    }
    let tag = [tpid.to_be_bytes(), tci.to_be_bytes()].concat();
    frame.splice(12..12, tag);
    shape.l3 += 4;
    shape.l4 += 4;
}

/// Inserts an 8-byte IPv6 extension header of type `kind` right after the fixed header,
/// chaining it to what came next; with `fix` the payload length grows to cover it.
fn insert_extension(rng: &mut Rng, frame: &mut Vec<u8>, shape: &mut Shape, kind: u8, fix: bool) {
    let Shape { l3, .. } = *shape;
    let at = l3 + IPV6_LEN;
    let Some(next) = frame.get(l3 + 6).copied() else {
        return;
    };
    if at > frame.len() {
        return;
    }
    let header = match kind {
        // Fragment header: offset 0 or not, More Fragments or not, an identification.
        44 => vec![
            next,
            0,
            rng.u8(..) & 0x01,
            pick(rng, &[0x00, 0x01, 0x08, 0x09]),
            1,
            2,
            3,
            4,
        ],
        _ => vec![next, 0, 1, 4, 0, 0, 0, 0],
    };
    frame.splice(at..at, header);
    frame[l3 + 6] = kind;
    if fix {
        add16(frame, l3 + 4, 8);
    }
    shape.l4 += 8;
}

/// One of `items`, uniformly.
fn pick<T: Copy>(rng: &mut Rng, items: &[T]) -> T {
    items[rng.usize(..items.len())]
}

/// The big-endian u16 at `at`, if the frame holds it.
fn get16(frame: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*frame.get(at)?, *frame.get(at + 1)?]))
}

/// Writes `value` big-endian at `at` if the frame holds both bytes.
fn put16(frame: &mut [u8], at: usize, value: u16) {
    if let Some(bytes) = frame.get_mut(at..at + 2) {
        bytes.copy_from_slice(&value.to_be_bytes());
    }
}

/// Adds `more` to the big-endian u16 at `at` (wrapping), if the frame holds it.
fn add16(frame: &mut [u8], at: usize, more: u16) {
    if let Some(value) = get16(frame, at) {
        put16(frame, at, value.wrapping_add(more));
    }
}

/// Writes `value` at `at` if the frame holds it.
fn put8(frame: &mut [u8], at: usize, value: u8) {
    if let Some(byte) = frame.get_mut(at) {
        *byte = value;
    }
}

/// Writes an address (4 or 16 bytes) at `at` if the frame holds all of it.
fn put_addr(frame: &mut [u8], at: usize, addr: IpAddr) {
    let octets: Vec<u8> = match addr {
        IpAddr::V4(v4) => v4.octets().to_vec(),
        IpAddr::V6(v6) => v6.octets().to_vec(),
    };
    if let Some(bytes) = frame.get_mut(at..at + octets.len()) {
        bytes.copy_from_slice(&octets);
    }
}
