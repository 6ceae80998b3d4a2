//! The decapsulator (`balancer decap`'s XDP program) run with `BPF_PROG_TEST_RUN`: each
//! case checks the verdict, the exact bytes that leave the program (the inner packet behind
//! a fresh Ethernet header, or the frame untouched) and the counter it lands in.

use balancer_user::decap::{Counters, Decapsulator, Settings};
use etherparse::{IpNumber, Ipv4Header, Ipv6FlowLabel, Ipv6Header, PacketBuilder};

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;
const DST_MAC: [u8; 6] = [0x02, 0xbe, 0xbe, 0, 0, 1];
const SRC_MAC: [u8; 6] = [0x02, 0x1b, 0x1b, 0, 0, 1];
const LB4: [u8; 4] = [198, 18, 0, 1];
const BACKEND4: [u8; 4] = [198, 18, 0, 101];
const LB6: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
const BACKEND6: [u8; 16] = [
    0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x65,
];
const GUE: u16 = 6080;

fn load(allow: &[&str]) -> Decapsulator {
    Decapsulator::load(&Settings {
        gue_port: GUE,
        allow: allow.iter().map(|a| a.parse().expect("prefix")).collect(),
    })
    .expect("load the decapsulator")
}

/// A client's UDP datagram to the VIP, IPv4 or IPv6, without Ethernet.
fn inner(v6: bool) -> Vec<u8> {
    let builder = if v6 {
        let mut client = [0u8; 16];
        client[..4].copy_from_slice(&[0x20, 0x01, 0x0d, 0xb8]);
        client[15] = 0x42;
        let mut vip = client;
        vip[15] = 0x80;
        PacketBuilder::ipv6(client, vip, 64)
    } else {
        PacketBuilder::ipv4([198, 19, 7, 42], [198, 18, 1, 80], 64)
    };
    let builder = builder.udp(40000, 53);
    let payload = b"hello, backend";
    let mut out = Vec::with_capacity(builder.size(payload.len()));
    builder.write(&mut out, payload).expect("inner packet");
    out
}

fn ethernet(ether_type: u16, tag: Option<u16>) -> Vec<u8> {
    let mut out = [DST_MAC, SRC_MAC].concat();
    if let Some(tci) = tag {
        out.extend_from_slice(&0x8100u16.to_be_bytes());
        out.extend_from_slice(&tci.to_be_bytes());
    }
    out.extend_from_slice(&ether_type.to_be_bytes());
    out
}

fn outer4(protocol: u8, source: [u8; 4], payload: &[u8]) -> Vec<u8> {
    let header = Ipv4Header::new(
        payload.len() as u16,
        64,
        IpNumber(protocol),
        source,
        BACKEND4,
    )
    .expect("IPv4 header");
    [header.to_bytes().to_vec(), payload.to_vec()].concat()
}

fn outer6(protocol: u8, source: [u8; 16], payload: &[u8]) -> Vec<u8> {
    let header = Ipv6Header {
        traffic_class: 0,
        flow_label: Ipv6FlowLabel::ZERO,
        payload_length: payload.len() as u16,
        next_header: IpNumber(protocol),
        hop_limit: 64,
        source,
        destination: BACKEND6,
    };
    [header.to_bytes().to_vec(), payload.to_vec()].concat()
}

/// GUE variant 1: `inner` in a UDP datagram to `port`, checksum 0.
fn gue(port: u16, inner: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&51234u16.to_be_bytes());
    out.extend_from_slice(&port.to_be_bytes());
    out.extend_from_slice(&((inner.len() + 8) as u16).to_be_bytes());
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(inner);
    out
}

fn ether_type(v6: bool) -> u16 {
    if v6 {
        0x86dd
    } else {
        0x0800
    }
}

/// Runs `frame`; asserts the verdict and output bytes and returns the counters.
fn run(decap: &mut Decapsulator, frame: &[u8], action: u32, expected: &[u8]) -> Counters {
    let run = decap.test_run(frame).expect("BPF_PROG_TEST_RUN");
    assert_eq!(run.action, action, "verdict");
    if action == XDP_PASS {
        assert_eq!(run.packet, expected, "output bytes");
    }
    decap.counters().expect("counters")
}

fn decapsulated(n: u64) -> Counters {
    Counters {
        decapsulated: n,
        ..Counters::default()
    }
}

#[test]
fn ipip_over_ipv4_and_ipv6_gives_the_inner_packet_behind_a_fresh_ethernet_header() {
    let mut decap = load(&[]);
    let cases = [
        (false, false, 4u8),
        (false, true, 41),
        (true, true, 41),
        (true, false, 4),
    ];
    for (n, (outer_v6, inner_v6, protocol)) in cases.into_iter().enumerate() {
        let inner = inner(inner_v6);
        let frame = match outer_v6 {
            false => [ethernet(0x0800, None), outer4(protocol, LB4, &inner)].concat(),
            true => [ethernet(0x86dd, None), outer6(protocol, LB6, &inner)].concat(),
        };
        let expected = [ethernet(ether_type(inner_v6), None), inner].concat();
        let counters = run(&mut decap, &frame, XDP_PASS, &expected);
        assert_eq!(counters, decapsulated(n as u64 + 1), "case {n}");
    }
}

#[test]
fn gue_over_ipv4_and_ipv6_gives_the_inner_packet() {
    let mut decap = load(&[]);
    let cases = [(false, false), (true, true), (false, true), (true, false)];
    for (n, (outer_v6, inner_v6)) in cases.into_iter().enumerate() {
        let inner = inner(inner_v6);
        let udp = gue(GUE, &inner);
        let frame = match outer_v6 {
            false => [ethernet(0x0800, None), outer4(17, LB4, &udp)].concat(),
            true => [ethernet(0x86dd, None), outer6(17, LB6, &udp)].concat(),
        };
        let expected = [ethernet(ether_type(inner_v6), None), inner].concat();
        let counters = run(&mut decap, &frame, XDP_PASS, &expected);
        assert_eq!(counters, decapsulated(n as u64 + 1), "case {n}");
    }
}

#[test]
fn a_vlan_tagged_frame_keeps_its_tag() {
    let mut decap = load(&[]);
    let inner = inner(false);
    let frame = [ethernet(0x86dd, Some(0x0123)), outer6(4, LB6, &inner)].concat();
    let expected = [ethernet(0x0800, Some(0x0123)), inner].concat();
    assert_eq!(
        run(&mut decap, &frame, XDP_PASS, &expected),
        decapsulated(1)
    );
}

#[test]
fn ethernet_padding_stays_behind_the_inner_packet() {
    let mut decap = load(&[]);
    let inner = inner(false);
    let padding = [0u8; 6];
    let frame = [
        ethernet(0x0800, None),
        outer4(4, LB4, &inner),
        padding.to_vec(),
    ]
    .concat();
    let expected = [ethernet(0x0800, None), inner, padding.to_vec()].concat();
    assert_eq!(
        run(&mut decap, &frame, XDP_PASS, &expected),
        decapsulated(1)
    );
}

#[test]
fn udp_to_another_port_and_plain_traffic_pass_untouched() {
    let mut decap = load(&[]);
    let frames = [
        [
            ethernet(0x0800, None),
            outer4(17, LB4, &gue(GUE + 1, &inner(false))),
        ]
        .concat(),
        [ethernet(0x0800, None), inner(false)].concat(),
        [ethernet(0x86dd, None), inner(true)].concat(),
        [ethernet(0x0806, None), vec![0; 28]].concat(),
    ];
    for frame in &frames {
        run(&mut decap, frame, XDP_PASS, frame);
    }
    let counters = decap.counters().expect("counters");
    assert_eq!(
        counters,
        Counters {
            passed: frames.len() as u64,
            ..Counters::default()
        }
    );
}

#[test]
fn truncated_or_inconsistent_headers_pass_untouched_as_malformed() {
    let mut decap = load(&[]);
    let v4 = inner(false);
    let v6 = inner(true);
    let whole = [ethernet(0x0800, None), outer4(4, LB4, &v4)].concat();
    let mut frames = vec![
        // The frame ends before the outer datagram does.
        whole[..whole.len() - 1].to_vec(),
        // The outer payload is shorter than the inner header says.
        [ethernet(0x0800, None), outer4(4, LB4, &v4[..v4.len() - 1])].concat(),
        // Protocol 4 carrying IPv6, 41 carrying IPv4.
        [ethernet(0x0800, None), outer4(4, LB4, &v6)].concat(),
        [ethernet(0x86dd, None), outer6(41, LB6, &v4)].concat(),
        // The inner header is cut short.
        [ethernet(0x86dd, None), outer6(41, LB6, &v6[..30])].concat(),
        // GUE whose payload is not an IP packet.
        [
            ethernet(0x0800, None),
            outer4(17, LB4, &gue(GUE, &[0u8; 24])),
        ]
        .concat(),
    ];
    // GUE whose UDP length is beyond the datagram.
    let mut long = gue(GUE, &v4);
    long[4..6].copy_from_slice(&((v4.len() + 9) as u16).to_be_bytes());
    frames.push([ethernet(0x0800, None), outer4(17, LB4, &long)].concat());
    // An IPv4 fragment.
    let mut fragment = [ethernet(0x0800, None), outer4(4, LB4, &v4)].concat();
    fragment[14 + 6] = 0x20;
    frames.push(fragment);
    for (n, frame) in frames.iter().enumerate() {
        let counters = run(&mut decap, frame, XDP_PASS, frame);
        assert_eq!(counters.malformed, n as u64 + 1, "frame {n}");
    }
    assert_eq!(decap.counters().expect("counters").decapsulated, 0);
}

#[test]
fn only_allowed_outer_sources_are_decapsulated_others_are_dropped() {
    let mut decap = load(&["198.18.0.0/24", "2001:db8::/64"]);
    let inner = inner(false);
    let allowed = [ethernet(0x0800, None), outer4(4, LB4, &inner)].concat();
    let expected = [ethernet(0x0800, None), inner.clone()].concat();
    run(&mut decap, &allowed, XDP_PASS, &expected);
    let allowed6 = [ethernet(0x86dd, None), outer6(4, LB6, &inner)].concat();
    run(&mut decap, &allowed6, XDP_PASS, &expected);
    let stranger = [ethernet(0x0800, None), outer4(4, [198, 19, 0, 1], &inner)].concat();
    run(&mut decap, &stranger, XDP_DROP, &[]);
    let mut source6 = LB6;
    source6[7] = 1;
    let stranger6 = [ethernet(0x86dd, None), outer6(4, source6, &inner)].concat();
    let counters = run(&mut decap, &stranger6, XDP_DROP, &[]);
    assert_eq!(
        counters,
        Counters {
            decapsulated: 2,
            refused: 2,
            ..Counters::default()
        }
    );
}

#[test]
fn the_configured_gue_port_is_the_one_taken() {
    let mut decap = Decapsulator::load(&Settings {
        gue_port: 5555,
        allow: Vec::new(),
    })
    .expect("load");
    let inner = inner(true);
    let other = [ethernet(0x0800, None), outer4(17, LB4, &gue(GUE, &inner))].concat();
    run(&mut decap, &other, XDP_PASS, &other);
    let ours = [ethernet(0x0800, None), outer4(17, LB4, &gue(5555, &inner))].concat();
    let expected = [ethernet(0x86dd, None), inner].concat();
    let counters = run(&mut decap, &ours, XDP_PASS, &expected);
    assert_eq!((counters.decapsulated, counters.passed), (1, 1));
}
