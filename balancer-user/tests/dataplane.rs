//! Data-plane tests: the XDP program, run with `BPF_PROG_TEST_RUN` on tables compiled from
//! a desired state. Every backend the kernel picks is compared with the one a model
//! computes from the written image (flow hash → split cell → group → Maglev slot), and
//! every counter with a tally kept by the test.
//!
//! Needs root (CAP_BPF) and a bpffs. Each test loads its own maps in its own pin
//! directory, so the tests run in parallel.

mod support;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use balancer_common::packet_events;
use balancer_user::{basis_points::BasisPoints, dataplane::GlobalCounters, state::Affinity};
use support::{
    fixture::{Counter, Fixture, Outcome, Tally},
    packet::{Flow, Transport, ACK, PSH, SYN},
    plane::{assert_forwarded, assert_untouched, XDP_DROP, XDP_PASS, XDP_TX},
    verdict::{classify, Verdict},
};

/// IPv4 VIP address of the test services.
const VIP4: &str = "198.19.0.1";
/// IPv6 VIP address of the test services.
const VIP6: &str = "2001:db8:ffff::1";
/// IPv4 backends.
const BACKENDS4: [&str; 4] = [
    "198.18.0.101",
    "198.18.0.102",
    "198.18.0.103",
    "198.18.0.104",
];
/// IPv6 backends.
const BACKENDS6: [&str; 4] = [
    "2001:db8::101",
    "2001:db8::102",
    "2001:db8::103",
    "2001:db8::104",
];
/// IPv4 client.
const CLIENT4: &str = "203.0.113.7";
/// IPv6 client.
const CLIENT6: &str = "2001:db8:c::7";

/// A fixture with one service `web` on `vip` (Connection affinity), its four backends in
/// two groups split 50/50, published.
fn split_service(test: &str, vip: &str, backends: &[&str]) -> Fixture {
    let mut fx = Fixture::new(test);
    fx.add_service("web", vip, Affinity::Connection);
    fx.add_two_groups("web", backends);
    fx
}

/// Asserts the published split of `service` gives exactly half of the cells to each of
/// its two groups.
fn assert_even_split(fx: &Fixture, service: &str) {
    let cells = &fx.image(service).cells;
    let per_group: Vec<usize> = (0..2u8)
        .map(|g| cells.iter().filter(|&&c| c == g).count())
        .collect();
    assert_eq!(per_group, [5000, 5000], "cells per group of {service}");
}

/// Sends one default frame of `flow` (for TCP a SYN, so the flow stays pending) and asserts
/// it was sent with XDP_TX to backend `index`; records it in `tally`: a new flow, or for TCP
/// a SYN retransmit.
fn send_expecting(fx: &mut Fixture, tally: &mut Tally, flow: &Flow, index: u32, new_flow: bool) {
    let frame = flow.frame();
    let run = fx.send(&frame);
    assert_forwarded(
        &run,
        &frame,
        &fx.backend(index),
        XDP_TX,
        &format!("{flow:?}"),
    );
    let events = match (new_flow, flow.transport) {
        (true, _) => packet_events::NEW_FLOW,
        (false, Transport::Tcp) => packet_events::SYN_RETRANSMIT,
        (false, Transport::Udp) => 0,
    };
    tally.counted(index, frame.len(), events);
}

/// Asserts that the global counters are exactly `expected`.
fn assert_globals(fx: &Fixture, expected: GlobalCounters) {
    assert_eq!(
        fx.plane.global_counters().expect("global counters"),
        expected,
        "global counters"
    );
}

/// Sends each frame of `cases` once, in order, and checks it against the outcome the case
/// states, which the fixture's model must state too: the XDP action and the frame (rewritten
/// for the model's backend, or untouched), exactly one more packet on the one global counter
/// the outcome names (none for a forwarded frame), and the pending flows gaining the
/// frame's flow when it is forwarded (its first packet) and nothing otherwise, established
/// flows never. Forwarded frames go into `tally`.
fn check_outcomes(fx: &mut Fixture, tally: &mut Tally, cases: &[(&str, Vec<u8>, Outcome)]) {
    for (what, frame, outcome) in cases {
        assert_eq!(fx.outcome(frame), *outcome, "{what}: the model's outcome");
        let counters = fx.plane.global_counters().expect("global counters");
        let mut pending: HashSet<_> = fx.pending_flows().into_iter().collect();
        let established: HashSet<_> = fx.tracked_flows().into_iter().collect();
        let run = fx.send(frame);
        let counters = match outcome {
            Outcome::Pass(counter) => {
                assert_untouched(&run, frame, XDP_PASS, what);
                counter.plus_one(counters)
            }
            Outcome::Drop(counter) => {
                assert_untouched(&run, frame, XDP_DROP, what);
                counter.plus_one(counters)
            }
            Outcome::Forward(index) => {
                assert_forwarded(&run, frame, &fx.backend(*index), XDP_TX, what);
                tally.forwarded(*index, frame.len(), true);
                let Verdict::Flow(flow) = classify(frame) else {
                    unreachable!("a forwarded frame is a flow");
                };
                assert!(pending.insert(flow.key()), "{what}: already tracked");
                counters
            }
        };
        assert_eq!(
            fx.plane.global_counters().expect("global counters"),
            counters,
            "{what}: global counters"
        );
        let now: HashSet<_> = fx.pending_flows().into_iter().collect();
        assert_eq!(now, pending, "{what}: pending flows");
        let now: HashSet<_> = fx.tracked_flows().into_iter().collect();
        assert_eq!(now, established, "{what}: established flows");
    }
}

/// Sends `count` flows like `base` (client ports from 40000), two frames each of
/// different sizes (for TCP a SYN, then data), and checks each frame against the model and all counters against
/// the tally. Also checks that the flows reached every backend of `web`, so that both
/// groups and all rings were exercised.
fn check_balanced_flows(fx: &mut Fixture, base: Flow, count: u16) {
    let mut tally = Tally::default();
    let mut chosen = BTreeSet::new();
    for i in 0..count {
        let flow = base.with_sport(40_000 + i);
        let expected = fx.expected_backend("web", &flow);
        chosen.insert(expected);
        // A SYN, then data (TCP; UDP ignores the flags): a new flow, then its promotion.
        for (n, payload_len, flags) in [(0, 32usize, SYN), (1, 700, ACK | PSH)] {
            let frame = flow
                .builder()
                .tcp_flags(flags)
                .payload(&vec![0xab; payload_len])
                .build();
            let run = fx.send(&frame);
            let what = format!("{flow:?} frame {n}");
            assert_forwarded(&run, &frame, &fx.backend(expected), XDP_TX, &what);
            tally.forwarded(expected, frame.len(), n == 0);
        }
    }
    tally.assert_matches(fx, "web");
    let all: BTreeSet<u32> = fx.service("web").backends().map(|(_, b)| b.index).collect();
    assert_eq!(chosen, all, "{count} flows should reach all four backends");
    assert_globals(fx, GlobalCounters::default());
}

/// A checked-in frame builder: the frames parse as intended with an independent parser.
mod builder {
    use etherparse::{NetHeaders, PacketHeaders, TransportHeader, VlanHeader};

    use super::*;
    use crate::support::packet::{ETH_LEN, IPV6_FRAGMENT, IPV6_LEN, TPID_8021Q};

    #[test]
    fn tagged_ipv4_tcp_with_options_parses_with_etherparse() {
        let options = [0x94, 0x04, 0x00, 0x00]; // router alert
        let frame = Flow::new(Transport::Tcp, CLIENT4, 40_001, VIP4, 80)
            .builder()
            .tag(TPID_8021Q, 100)
            .ipv4_options(&options)
            .payload(b"hello")
            .build();
        let headers = PacketHeaders::from_ethernet_slice(&frame).expect("parse");
        let Some(VlanHeader::Single(vlan)) = headers.vlan else {
            panic!("one VLAN tag expected: {:?}", headers.vlan);
        };
        assert_eq!(vlan.vlan_id.value(), 100);
        let Some(NetHeaders::Ipv4(ip, _)) = &headers.net else {
            panic!("IPv4 expected");
        };
        assert_eq!(ip.source, [203, 0, 113, 7]);
        assert_eq!(ip.destination, [198, 19, 0, 1]);
        assert_eq!(ip.options.as_slice(), options);
        assert_eq!(ip.header_checksum, ip.calc_header_checksum());
        assert!(!ip.is_fragmenting_payload());
        let Some(TransportHeader::Tcp(tcp)) = &headers.transport else {
            panic!("TCP expected");
        };
        assert_eq!((tcp.source_port, tcp.destination_port), (40_001, 80));
        assert!(tcp.syn);
        assert_eq!(headers.payload.slice(), b"hello");
        let checksum = tcp.calc_checksum_ipv4(ip, b"hello").expect("checksum");
        assert_eq!(tcp.checksum, checksum);
    }

    #[test]
    fn ipv6_udp_with_fragment_header_parses_with_etherparse() {
        let frame = Flow::new(Transport::Udp, CLIENT6, 40_002, VIP6, 53)
            .builder()
            .payload(b"query")
            .build();
        let headers = PacketHeaders::from_ethernet_slice(&frame).expect("parse");
        let Some(NetHeaders::Ipv6(ip, _)) = &headers.net else {
            panic!("IPv6 expected");
        };
        assert_eq!(ip.destination, CLIENT6_VIP6_DST);
        let Some(TransportHeader::Udp(udp)) = &headers.transport else {
            panic!("UDP expected");
        };
        assert_eq!((udp.source_port, udp.destination_port), (40_002, 53));
        assert_eq!(udp.length, 8 + 5);
        let checksum = udp.calc_checksum_ipv6(ip, b"query").expect("checksum");
        assert_eq!(udp.checksum, checksum);

        let fragment = Flow::new(Transport::Udp, CLIENT6, 40_002, VIP6, 53)
            .builder()
            .ipv6_extension(IPV6_FRAGMENT)
            .build();
        let headers = PacketHeaders::from_ethernet_slice(&fragment).expect("parse");
        let Some(NetHeaders::Ipv6(_, extensions)) = &headers.net else {
            panic!("IPv6 expected");
        };
        let header = extensions.fragment.as_ref().expect("fragment header");
        assert_eq!(header.identification, 0x0102_0304);
        // Offset 0 with M set, as RFC 8200 section 4.5 lays the bits out (M is the low bit of
        // the fourth byte). etherparse 0.16 reads M from the high bit of that byte, so its
        // `more_fragments` cannot be used as a reference here.
        let at = ETH_LEN + IPV6_LEN;
        assert_eq!(fragment[at + 2..at + 4], [0x00, 0x01], "offset 0, M set");
    }

    /// VIP6 as bytes.
    const CLIENT6_VIP6_DST: [u8; 16] = [
        0x20, 0x01, 0x0d, 0xb8, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1,
    ];
}

/// New flows are balanced exactly as the model says and rewritten for L2 DSR.
mod forwarding {
    use super::*;
    use crate::support::{
        packet::{TPID_8021AD, TPID_8021Q},
        plane::XDP_REDIRECT,
    };

    #[test]
    fn ipv4_tcp_flows_go_to_the_model_backend() {
        let mut fx = split_service("fwd-v4-tcp", &format!("{VIP4}:80/tcp"), &BACKENDS4);
        assert_even_split(&fx, "web");
        check_balanced_flows(&mut fx, Flow::new(Transport::Tcp, CLIENT4, 0, VIP4, 80), 64);
    }

    #[test]
    fn ipv4_udp_flows_go_to_the_model_backend() {
        let mut fx = split_service("fwd-v4-udp", &format!("{VIP4}:53/udp"), &BACKENDS4);
        assert_even_split(&fx, "web");
        check_balanced_flows(&mut fx, Flow::new(Transport::Udp, CLIENT4, 0, VIP4, 53), 64);
    }

    #[test]
    fn ipv6_tcp_flows_go_to_the_model_backend() {
        let mut fx = split_service("fwd-v6-tcp", &format!("[{VIP6}]:80/tcp"), &BACKENDS6);
        assert_even_split(&fx, "web");
        check_balanced_flows(&mut fx, Flow::new(Transport::Tcp, CLIENT6, 0, VIP6, 80), 64);
    }

    #[test]
    fn ipv6_udp_flows_go_to_the_model_backend() {
        let mut fx = split_service("fwd-v6-udp", &format!("[{VIP6}]:53/udp"), &BACKENDS6);
        assert_even_split(&fx, "web");
        check_balanced_flows(&mut fx, Flow::new(Transport::Udp, CLIENT6, 0, VIP6, 53), 64);
    }

    #[test]
    fn vlan_tagged_frames_are_forwarded_with_the_tag_kept() {
        let mut fx = split_service("fwd-vlan", &format!("{VIP4}:80/tcp"), &BACKENDS4);
        let mut tally = Tally::default();
        let base = Flow::new(Transport::Tcp, CLIENT4, 0, VIP4, 80);
        for (i, (tpid, vlan_id)) in [(TPID_8021Q, 100u16), (TPID_8021AD, 4000)]
            .iter()
            .enumerate()
        {
            let flow = base.with_sport(41_000 + i as u16);
            let expected = fx.expected_backend("web", &flow);
            let frame = flow.builder().tag(*tpid, *vlan_id).build();
            let run = fx.send(&frame);
            assert_forwarded(&run, &frame, &fx.backend(expected), XDP_TX, "tagged frame");
            let tag = [tpid.to_be_bytes(), vlan_id.to_be_bytes()].concat();
            assert_eq!(run.packet[12..16], tag, "VLAN tag kept");
            tally.forwarded(expected, frame.len(), true);
        }
        // IPv6 behind a tag too.
        let mut fx6 = split_service("fwd-vlan6", &format!("[{VIP6}]:80/tcp"), &BACKENDS6);
        let flow6 = Flow::new(Transport::Tcp, CLIENT6, 41_010, VIP6, 80);
        let expected6 = fx6.expected_backend("web", &flow6);
        let frame6 = flow6.builder().tag(TPID_8021Q, 7).build();
        let run6 = fx6.send(&frame6);
        assert_forwarded(
            &run6,
            &frame6,
            &fx6.backend(expected6),
            XDP_TX,
            "tagged IPv6 frame",
        );
        tally.assert_matches(&fx, "web");
    }

    #[test]
    fn ipv4_with_options_is_forwarded_by_its_ports() {
        let mut fx = split_service("fwd-options", &format!("{VIP4}:80/tcp"), &BACKENDS4);
        let mut tally = Tally::default();
        // Timestamp option filling the 40 bytes IPv4 allows: type, length, pointer, flags.
        let mut timestamp = vec![0x44, 40, 5, 0];
        timestamp.resize(40, 0);
        let options: [Vec<u8>; 3] = [
            vec![0x94, 0x04, 0x00, 0x00],                         // router alert
            vec![0x07, 0x0b, 0x04, 0, 0, 0, 0, 0, 0, 0, 0, 0x01], // record route, NOP
            timestamp,
        ];
        for (i, opts) in options.iter().enumerate() {
            let flow = Flow::new(Transport::Tcp, CLIENT4, 42_000 + i as u16, VIP4, 80);
            let expected = fx.expected_backend("web", &flow);
            let frame = flow.builder().ipv4_options(opts).build();
            let run = fx.send(&frame);
            let what = format!("IPv4 with {} bytes of options", opts.len());
            assert_forwarded(&run, &frame, &fx.backend(expected), XDP_TX, &what);
            tally.forwarded(expected, frame.len(), true);
        }
        tally.assert_matches(&fx, "web");
        assert_globals(&fx, GlobalCounters::default());
    }

    #[test]
    fn backend_behind_another_interface_is_redirected() {
        let mut fx = Fixture::new("fwd-redirect");
        fx.add_service("web", &format!("{VIP4}:80/tcp"), Affinity::Connection);
        let index = fx.add_backend_via("web", BACKENDS4[0], "blue", 100, 7);
        fx.publish("web");
        let flow = Flow::new(Transport::Tcp, CLIENT4, 43_000, VIP4, 80);
        assert_eq!(fx.expected("web", &flow), Some(index), "the only backend");
        let frame = flow.frame();
        let run = fx.send(&frame);
        assert_forwarded(&run, &frame, &fx.backend(index), XDP_REDIRECT, "redirect");
    }
}

/// Established flows stay on their backend; removed backends release their flows.
mod conntrack {
    use super::*;

    #[test]
    fn removing_what_is_not_there_is_not_a_fault() {
        // aya reports the deletion of a missing key as the syscall's ENOENT; a service
        // removal (a VIP already gone) and forgetting flows that ended must not fail on it.
        let mut fx = split_service("ct-missing", &format!("{VIP4}:80/tcp"), &BACKENDS4);
        let absent: balancer_user::vip::Vip = "198.19.0.99:80/tcp".parse().unwrap();
        fx.plane.remove_vip(&absent.key()).expect("a missing VIP");
        let flow = Flow::new(Transport::Tcp, CLIENT4, 40_011, VIP4, 80);
        let x = fx.expected_backend("web", &flow);
        let mut tally = Tally::default();
        send_expecting(&mut fx, &mut tally, &flow, x, true);
        let epoch = fx.backend(x).epoch;
        let ids: std::collections::HashSet<(u32, u32)> = [(x, epoch)].into();
        assert_eq!(fx.plane.forget_flows(&ids).unwrap(), 1);
        assert_eq!(
            fx.plane.forget_flows(&ids).unwrap(),
            0,
            "nothing left to forget"
        );
    }

    #[test]
    fn drained_backend_keeps_its_flows_and_removed_backend_releases_them() {
        let mut fx = split_service("ct-drain", &format!("{VIP4}:80/tcp"), &BACKENDS4);
        let mut tally = Tally::default();
        let flow = Flow::new(Transport::Tcp, CLIENT4, 40_007, VIP4, 80);
        let x = fx.expected_backend("web", &flow);
        let x_entry = *fx
            .service("web")
            .backends()
            .map(|(_, b)| b)
            .find(|b| b.index == x)
            .expect("X in state");
        let x_backend = fx.backend(x);
        send_expecting(&mut fx, &mut tally, &flow, x, true);

        // Drain X: new flows avoid it, its flow stays.
        fx.set_weight("web", x_entry.addr, 0);
        fx.publish("web");
        assert_ne!(
            fx.expected("web", &flow),
            Some(x),
            "new tables must not pick X"
        );
        send_expecting(&mut fx, &mut tally, &flow, x, false);
        let mut flows: HashMap<(u32, u32), u64> = HashMap::from([((x, x_entry.epoch), 1)]);
        let others = Flow::new(Transport::Tcp, "203.0.113.8", 0, VIP4, 80);
        for sport in 50_000..50_200 {
            let other = others.with_sport(sport);
            let expected = fx.expected_backend("web", &other);
            assert_ne!(expected, x, "model picks drained X for {other:?}");
            send_expecting(&mut fx, &mut tally, &other, expected, true);
            let epoch = fx.entry("web", addr_of(&fx, expected)).epoch;
            *flows.entry((expected, epoch)).or_default() += 1;
        }
        tally.assert_matches(&fx, "web");
        assert_eq!(fx.active_flows(), flows, "active flows after draining X");

        // Remove X: its flow is re-balanced as a new flow, never sent with X's MAC.
        fx.remove_backend("web", x_entry.addr);
        fx.publish("web");
        fx.clear_backend(x);
        let y = fx.expected_backend("web", &flow);
        assert_ne!(y, x, "X is gone from the tables");
        let frame = flow.frame();
        let run = fx.send(&frame);
        assert_ne!(run.packet[0..6], x_backend.dst_mac, "sent to removed X");
        assert_forwarded(&run, &frame, &fx.backend(y), XDP_TX, "re-balanced flow");
        tally.forwarded(y, frame.len(), true);
        tally.assert_matches(&fx, "web");
        assert_eq!(fx.counters(x), tally.of(x), "counters of removed X");
        flows.remove(&(x, x_entry.epoch));
        let y_epoch = fx.entry("web", addr_of(&fx, y)).epoch;
        *flows.entry((y, y_epoch)).or_default() += 1;
        assert_eq!(fx.active_flows(), flows, "active flows after removing X");
    }

    #[test]
    fn flows_of_a_withdrawn_vip_last_as_long_as_their_backend() {
        let mut fx = split_service("ct-vip", &format!("{VIP4}:80/tcp"), &BACKENDS4);
        let mut tally = Tally::default();
        let flow = Flow::new(Transport::Tcp, CLIENT4, 40_009, VIP4, 80);
        let x = fx.expected_backend("web", &flow);
        send_expecting(&mut fx, &mut tally, &flow, x, true);

        // The VIP goes (as when a service is given another VIP); X stays.
        fx.withdraw_vip("web");
        send_expecting(&mut fx, &mut tally, &flow, x, false);
        let newcomer = flow.with_sport(40_010).frame();
        assert_untouched(
            &fx.send(&newcomer),
            &newcomer,
            XDP_PASS,
            "new flow to no VIP",
        );

        // X goes too: its flow is no longer forwarded anywhere.
        fx.clear_backend(x);
        let frame = flow.frame();
        assert_untouched(
            &fx.send(&frame),
            &frame,
            XDP_PASS,
            "flow of a removed backend",
        );
    }

    #[test]
    fn reused_index_does_not_inherit_flows_of_the_previous_backend() {
        let mut fx = split_service("ct-reuse", &format!("{VIP4}:80/tcp"), &BACKENDS4);
        let x_entry = fx.entry("web", BACKENDS4[0].parse().unwrap());
        let (x, x_epoch) = (x_entry.index, x_entry.epoch);
        let base = Flow::new(Transport::Tcp, CLIENT4, 0, VIP4, 80);
        let pinned: Vec<Flow> = (40_000..60_000)
            .map(|sport| base.with_sport(sport))
            .filter(|f| fx.expected("web", f) == Some(x))
            .take(8)
            .collect();
        assert_eq!(pinned.len(), 8, "flows of X");
        let mut before = Tally::default();
        for flow in &pinned {
            send_expecting(&mut fx, &mut before, flow, x, true);
        }
        before.assert_matches(&fx, "web");

        // X leaves; W arrives in its group and takes its index with a new epoch.
        fx.remove_backend("web", BACKENDS4[0].parse().unwrap());
        fx.publish("web");
        fx.clear_backend(x);
        let w = fx.add_backend("web", "198.18.0.105", "blue", 100);
        assert_eq!(w, x, "the freed index is reused");
        let w_epoch = fx.entry("web", "198.18.0.105".parse().unwrap()).epoch;
        assert_ne!(w_epoch, x_epoch);
        fx.publish("web");

        let mut after = Tally::default();
        let mut flows: HashMap<(u32, u32), u64> = HashMap::new();
        for flow in &pinned {
            let expected = fx.expected_backend("web", flow);
            send_expecting(&mut fx, &mut after, flow, expected, true);
            let epoch = fx.entry("web", addr_of(&fx, expected)).epoch;
            *flows.entry((expected, epoch)).or_default() += 1;
        }
        // W's counters were zeroed when it was written, the others saw nothing before.
        after.assert_matches(&fx, "web");
        assert_eq!(
            fx.active_flows(),
            flows,
            "every flow re-recorded with its new backend"
        );
    }

    /// Address of the backend with index `index` in service `web`.
    fn addr_of(fx: &Fixture, index: u32) -> std::net::IpAddr {
        fx.service("web")
            .backends()
            .find(|(_, b)| b.index == index)
            .map(|(_, b)| b.addr)
            .expect("backend index in state")
    }
}

/// A client's FIN or RST closes its flow: the flow keeps its backend for its last packets,
/// counts as active for the linger only, and a SYN on it is a new connection. Every packet
/// is checked against the connection-tracking model (`support::tracking`); a flow's first
/// packet makes it pending, its second (a handshake's ACK) established.
mod closing {
    use std::time::Duration;

    use balancer_common::FlowState;
    use balancer_user::dataplane::{monotonic_ns, LINGER};

    use super::*;
    use crate::support::packet::{ACK, FIN, PSH, RST, SYN};

    /// `web` (TCP, port 80) and `dns` (UDP, port 53) on the IPv4 VIP, `web6` (TCP) on the
    /// IPv6 VIP; four backends each, in two groups split 50/50.
    pub(super) fn services(test: &str) -> Fixture {
        services_sized(test, None)
    }

    /// [`services`] with `conntrack` connection-tracking entries if given.
    pub(super) fn services_sized(test: &str, conntrack: Option<u32>) -> Fixture {
        let mut fx = match conntrack {
            Some(entries) => Fixture::with_conntrack(test, entries),
            None => Fixture::new(test),
        };
        fx.add_service("web", &format!("{VIP4}:80/tcp"), Affinity::Connection);
        fx.add_two_groups("web", &BACKENDS4);
        fx.add_service("dns", &format!("{VIP4}:53/udp"), Affinity::Connection);
        let dns: Vec<String> = (1..=4).map(|i| format!("198.18.1.{i}")).collect();
        let dns: Vec<&str> = dns.iter().map(String::as_str).collect();
        fx.add_two_groups("dns", &dns);
        fx.add_service("web6", &format!("[{VIP6}]:80/tcp"), Affinity::Connection);
        fx.add_two_groups("web6", &BACKENDS6);
        fx
    }

    /// Gives every backend of `service` other than `index` all the weight and `index` none:
    /// from now on a new flow can only land elsewhere.
    pub(super) fn steer_away_from(fx: &mut Fixture, service: &str, index: u32) {
        let addrs: Vec<(std::net::IpAddr, u32)> = fx
            .service(service)
            .backends()
            .map(|(_, b)| (b.addr, b.index))
            .collect();
        for (addr, i) in addrs {
            fx.set_weight(service, addr, if i == index { 0 } else { 100 });
        }
        fx.publish(service);
    }

    /// The established entry of `flow`.
    fn state(fx: &Fixture, flow: &Flow) -> FlowState {
        fx.entries("CONNTRACK")
            .remove(&flow.key())
            .unwrap_or_else(|| panic!("{flow:?} not established"))
    }

    #[test]
    fn a_backend_counts_fin_closes_resets_and_syn_retransmits_once_per_flow() {
        let mut fx = services("signals");
        let mut tally = Tally::default();
        let closed = Flow::new(Transport::Tcp, CLIENT4, 40_030, VIP4, 80);
        let x = fx.expected_backend("web", &closed);
        // The same 5-tuple's flows land on x; distinct ports may land elsewhere, so each
        // flow's counters are read on its own backend.
        let counted = |fx: &Fixture, i: u32| {
            let c = fx.counters(i);
            (c.new_flows, c.syn_retransmits, c.fin_closes, c.resets)
        };
        for flags in [SYN, SYN, SYN, ACK, ACK | FIN, ACK, FIN | ACK, RST] {
            fx.send_tracked(&closed, flags, &mut tally);
        }
        assert_eq!(
            counted(&fx, x),
            (1, 2, 1, 0),
            "two retransmits, one close (a second FIN and a RST after it count nothing)"
        );
        // A SYN on the closed flow is a new connection, which the client resets.
        for flags in [SYN, ACK, RST] {
            fx.send_tracked(&closed, flags, &mut tally);
        }
        assert_eq!(counted(&fx, x), (2, 2, 1, 1), "a new connection, reset");
        fx.send_tracked(&closed, RST, &mut tally);
        assert_eq!(counted(&fx, x), (2, 2, 1, 1), "a second RST counts nothing");
        // A first packet that is a RST: a new flow, reset at once.
        let stray = closed.with_sport(40_031);
        let y = fx
            .send_tracked(&stray, RST | ACK, &mut tally)
            .expect("forwarded");
        let before = if y == x { (2, 2, 1, 1) } else { (0, 0, 0, 0) };
        assert_eq!(
            counted(&fx, y),
            (before.0 + 1, before.1, before.2, before.3 + 1),
            "a stray RST"
        );
        // UDP has no flags: nothing but new flows.
        let datagram = Flow::new(Transport::Udp, CLIENT4, 40_032, VIP4, 53);
        let z = fx
            .send_tracked(&datagram, 0, &mut tally)
            .expect("forwarded");
        fx.send_tracked(&datagram, 0, &mut tally);
        assert_eq!(counted(&fx, z), (1, 0, 0, 0), "a UDP flow");
        tally.assert_matches(&fx, "web");
        tally.assert_matches(&fx, "dns");
    }

    #[test]
    fn forgetting_every_backend_empties_both_tables() {
        let mut fx = services("forget-all");
        let mut tally = Tally::default();
        let pending = Flow::new(Transport::Tcp, CLIENT4, 40_020, VIP4, 80);
        let established = pending.with_sport(40_021);
        let datagram = Flow::new(Transport::Udp, CLIENT4, 40_022, VIP4, 53);
        fx.send_tracked(&pending, SYN, &mut tally);
        fx.send_tracked(&established, SYN, &mut tally);
        fx.send_tracked(&established, ACK, &mut tally);
        fx.send_tracked(&datagram, 0, &mut tally);
        assert_eq!((fx.tracked_flows().len(), fx.pending_flows().len()), (1, 2));
        let census = fx
            .plane
            .flow_counter()
            .expect("a flow counter")
            .census(std::time::Duration::from_secs(3600))
            .expect("a walk");
        assert_eq!((census.established, census.pending), (1, 2));
        assert_eq!(census.active.values().sum::<u64>(), 3);
        assert!(census.established_capacity > 0 && census.pending_capacity > 0);
        assert_eq!(fx.forget_all(), 3);
        fx.assert_tracking("after forgetting");
        assert!(fx.tracked_flows().is_empty() && fx.pending_flows().is_empty());
        // Forgotten flows are balanced afresh: new flows again.
        fx.send_tracked(&established, ACK, &mut tally);
        assert_eq!(fx.pending_flows(), vec![established.key()]);
    }

    #[test]
    fn a_client_fin_or_rst_closes_the_flow_once_and_keeps_its_backend() {
        let mut fx = services("close-marks");
        let mut tally = Tally::default();
        let fin_flow = Flow::new(Transport::Tcp, CLIENT4, 40_004, VIP4, 80);
        let rst_flow = fin_flow.with_sport(40_005);
        let v6 = Flow::new(Transport::Tcp, CLIENT6, 40_004, VIP6, 80);
        for flow in [&fin_flow, &rst_flow, &v6] {
            fx.send_tracked(flow, SYN, &mut tally);
            fx.send_tracked(flow, ACK, &mut tally);
            fx.send_tracked(flow, ACK | PSH, &mut tally);
        }
        let open = state(&fx, &fin_flow);
        assert_eq!((open.closed_ns, open.closed_by), (0, 0), "open: {open:?}");
        let x = fx.send_tracked(&fin_flow, FIN | ACK, &mut tally);
        let closed = state(&fx, &fin_flow);
        let now = monotonic_ns();
        assert!(
            closed.closed_ns <= now && now - closed.closed_ns < 5_000_000_000,
            "close time {} against now {now}",
            closed.closed_ns
        );
        // Its last packets go to its backend; a later FIN or RST adds its mark, but the
        // close time stays that of the first.
        std::thread::sleep(Duration::from_millis(30));
        assert_eq!(fx.send_tracked(&fin_flow, ACK, &mut tally), x);
        assert_eq!(fx.send_tracked(&fin_flow, FIN | ACK, &mut tally), x);
        assert_eq!(fx.send_tracked(&fin_flow, RST, &mut tally), x);
        let again = state(&fx, &fin_flow);
        assert_eq!(again.closed_ns, closed.closed_ns, "first close time kept");
        let y = fx.send_tracked(&rst_flow, RST | ACK, &mut tally);
        assert_eq!(fx.send_tracked(&rst_flow, ACK, &mut tally), y);
        let z = fx.send_tracked(&v6, FIN | ACK, &mut tally);
        assert_eq!(fx.send_tracked(&v6, ACK, &mut tally), z);
        tally.assert_matches(&fx, "web");
        tally.assert_matches(&fx, "web6");
        assert_globals(&fx, GlobalCounters::default());
    }

    #[test]
    fn closed_and_pending_flows_stop_counting_as_active_after_the_linger_udp_when_idle() {
        let mut fx = services("close-linger");
        let mut tally = Tally::default();
        let base = Flow::new(Transport::Tcp, CLIENT4, 0, VIP4, 80);
        let (open, fin, rst) = (
            base.with_sport(40_006),
            base.with_sport(40_007),
            base.with_sport(40_008),
        );
        let udp = Flow::new(Transport::Udp, CLIENT4, 40_009, VIP4, 53);
        let mut backends = Vec::new();
        let syn_only = base.with_sport(40_019);
        for flow in [&open, &fin, &rst] {
            backends.push(fx.send_tracked(flow, SYN, &mut tally).expect("forwarded"));
            fx.send_tracked(flow, ACK, &mut tally);
        }
        fx.send_tracked(&fin, FIN | ACK, &mut tally);
        fx.send_tracked(&rst, RST, &mut tally);
        let u = fx.send_tracked(&udp, 0, &mut tally).expect("forwarded");
        fx.send_tracked(&udp, 0, &mut tally);
        // A flow that sent only its SYN counts for the linger too.
        backends.push(
            fx.send_tracked(&syn_only, SYN, &mut tally)
                .expect("forwarded"),
        );
        let count = |fx: &Fixture, indices: &[u32]| -> HashMap<(u32, u32), u64> {
            let mut counts = HashMap::new();
            for &i in indices {
                *counts.entry((i, fx.backend(i).epoch)).or_default() += 1;
            }
            counts
        };
        let mut all = backends.clone();
        all.push(u);
        assert_eq!(fx.active_flows(), count(&fx, &all), "all five at first");
        std::thread::sleep(LINGER + Duration::from_millis(1100));
        assert_eq!(
            fx.active_flows(),
            count(&fx, &[backends[0], u]),
            "after the linger: the open TCP flow and the UDP flow"
        );
        // Packets of a closed flow keep reaching its backend after the linger, too.
        assert_eq!(fx.send_tracked(&fin, ACK, &mut tally), Some(backends[1]));
        tally.assert_matches(&fx, "web");
        tally.assert_matches(&fx, "dns");
    }

    #[test]
    fn a_syn_on_a_closed_flow_is_a_new_flow_on_the_current_tables() {
        let mut fx = services("close-reopen");
        let mut tally = Tally::default();
        for flow in [
            Flow::new(Transport::Tcp, CLIENT4, 40_010, VIP4, 80),
            Flow::new(Transport::Tcp, CLIENT6, 40_010, VIP6, 80),
        ] {
            let service = if flow.src.is_ipv4() { "web" } else { "web6" };
            let x = fx.send_tracked(&flow, SYN, &mut tally).expect("forwarded");
            fx.send_tracked(&flow, ACK, &mut tally);
            steer_away_from(&mut fx, service, x);
            // Open: a SYN on the flow keeps its backend.
            assert_eq!(fx.send_tracked(&flow, SYN, &mut tally), Some(x));
            fx.send_tracked(&flow, FIN | ACK, &mut tally);
            assert_eq!(fx.send_tracked(&flow, ACK, &mut tally), Some(x), "last ACK");
            // Closed: a SYN is a new connection, on the current tables, in place of the old.
            let y = fx.send_tracked(&flow, SYN, &mut tally).expect("forwarded");
            assert_ne!(y, x);
            assert_eq!(fx.expected(service, &flow), Some(y));
            assert_eq!(
                fx.send_tracked(&flow, SYN, &mut tally),
                Some(y),
                "retransmit"
            );
            assert_eq!(fx.send_tracked(&flow, ACK, &mut tally), Some(y));
            assert_eq!(state(&fx, &flow).closed_by, 0, "open again");
            // A RST closes it again; a SYN after a RST is a new connection too.
            fx.send_tracked(&flow, RST, &mut tally);
            steer_away_from(&mut fx, service, y);
            let z = fx.send_tracked(&flow, SYN, &mut tally).expect("forwarded");
            assert_ne!(z, y);
            tally.assert_matches(&fx, service);
        }
    }
}

/// Two tables: a flow's first packet is pending; its client's next packet that is neither a
/// SYN nor a FIN or RST makes it established (UDP: its second datagram), so a flood of new
/// flows churns the pending table only. Every packet is checked against the
/// connection-tracking model (`support::tracking`).
mod pending {
    use super::*;
    use crate::{
        closing::{services, services_sized, steer_away_from},
        support::packet::{FrameBuilder, ACK, FIN, PSH, RST, SYN},
    };

    #[test]
    fn a_syn_is_pending_and_the_first_ack_establishes_it() {
        let mut fx = services("track-promote");
        let mut tally = Tally::default();
        for flow in [
            Flow::new(Transport::Tcp, CLIENT4, 40_000, VIP4, 80),
            Flow::new(Transport::Tcp, CLIENT6, 40_000, VIP6, 80),
        ] {
            let x = fx.send_tracked(&flow, SYN, &mut tally);
            assert!(
                fx.tracking.pending.contains_key(&flow.key()),
                "SYN: pending"
            );
            assert_eq!(fx.send_tracked(&flow, SYN, &mut tally), x, "retransmit");
            assert_eq!(fx.send_tracked(&flow, ACK, &mut tally), x, "handshake ACK");
            assert!(
                fx.tracking.established.contains_key(&flow.key()),
                "ACK: established"
            );
            assert_eq!(fx.send_tracked(&flow, ACK | PSH, &mut tally), x, "data");
        }
        tally.assert_matches(&fx, "web");
        tally.assert_matches(&fx, "web6");
        assert_globals(&fx, GlobalCounters::default());
    }

    #[test]
    fn syn_retransmits_and_the_promotion_keep_the_first_choice() {
        let mut fx = services("track-retransmit");
        let mut tally = Tally::default();
        let flow = Flow::new(Transport::Tcp, CLIENT4, 40_001, VIP4, 80);
        let x = fx.send_tracked(&flow, SYN, &mut tally).expect("forwarded");
        steer_away_from(&mut fx, "web", x);
        assert_ne!(fx.expected("web", &flow), Some(x), "the tables moved");
        assert_eq!(fx.send_tracked(&flow, SYN, &mut tally), Some(x));
        assert_eq!(fx.send_tracked(&flow, ACK, &mut tally), Some(x));
        assert_eq!(fx.send_tracked(&flow, ACK | PSH, &mut tally), Some(x));
        // A new flow of the same client goes by the new tables.
        let other = flow.with_sport(40_002);
        assert_ne!(fx.send_tracked(&other, SYN, &mut tally), Some(x));
        tally.assert_matches(&fx, "web");
    }

    #[test]
    fn a_syn_with_another_sequence_number_on_a_pending_flow_is_a_new_connection() {
        let mut fx = services("track-reused-port");
        let mut tally = Tally::default();
        let flow = Flow::new(Transport::Tcp, CLIENT4, 40_021, VIP4, 80);
        let syn = |seq| FrameBuilder::new(flow).tcp_flags(SYN).tcp_seq(seq).build();
        // A refused handshake: the SYN stays pending on x.
        let x = fx
            .send_frame_tracked(&flow, &syn(7), &mut tally)
            .expect("forwarded");
        steer_away_from(&mut fx, "web", x);
        // Its retransmit keeps x (and counts as one) ...
        assert_eq!(fx.send_frame_tracked(&flow, &syn(7), &mut tally), Some(x));
        // ... the client's next connection from the same port is balanced afresh.
        let y = fx
            .send_frame_tracked(&flow, &syn(8), &mut tally)
            .expect("forwarded");
        assert_ne!(y, x, "a reused port reaches the current tables");
        assert_eq!(fx.send_frame_tracked(&flow, &syn(8), &mut tally), Some(y));
        // Established on y: a SYN of any number keeps y (one spoofed with the flow's
        // addresses and ports must not move it); after the client's FIN, a SYN is new.
        assert_eq!(fx.send_tracked(&flow, ACK, &mut tally), Some(y));
        assert!(fx.tracking.established.contains_key(&flow.key()));
        steer_away_from(&mut fx, "web", y);
        assert_eq!(fx.send_frame_tracked(&flow, &syn(8), &mut tally), Some(y));
        assert_eq!(fx.send_frame_tracked(&flow, &syn(9), &mut tally), Some(y));
        assert_eq!(fx.send_tracked(&flow, ACK | FIN, &mut tally), Some(y));
        let z = fx
            .send_frame_tracked(&flow, &syn(9), &mut tally)
            .expect("forwarded");
        assert_ne!(z, y);
        tally.assert_matches(&fx, "web");
    }

    #[test]
    fn a_udp_flow_is_established_by_its_second_datagram() {
        let mut fx = services("track-udp");
        let mut tally = Tally::default();
        let flow = Flow::new(Transport::Udp, CLIENT4, 40_003, VIP4, 53);
        let x = fx.send_tracked(&flow, 0, &mut tally).expect("forwarded");
        assert!(fx.tracking.pending.contains_key(&flow.key()));
        steer_away_from(&mut fx, "dns", x);
        assert_eq!(fx.send_tracked(&flow, 0, &mut tally), Some(x));
        assert!(fx.tracking.established.contains_key(&flow.key()));
        assert_eq!(fx.send_tracked(&flow, 0, &mut tally), Some(x));
        tally.assert_matches(&fx, "dns");
    }

    #[test]
    fn a_syn_on_a_closed_pending_flow_is_a_new_flow_on_the_current_tables() {
        let mut fx = services("track-reopen-pending");
        let mut tally = Tally::default();
        let flow = Flow::new(Transport::Tcp, CLIENT4, 40_011, VIP4, 80);
        let x = fx.send_tracked(&flow, SYN, &mut tally).expect("forwarded");
        assert_eq!(fx.send_tracked(&flow, RST, &mut tally), Some(x));
        assert!(
            fx.tracking.pending.contains_key(&flow.key()),
            "never promoted"
        );
        steer_away_from(&mut fx, "web", x);
        let y = fx.send_tracked(&flow, SYN, &mut tally).expect("forwarded");
        assert_ne!(y, x);
        assert_eq!(fx.send_tracked(&flow, ACK, &mut tally), Some(y));
        assert!(fx.tracking.established.contains_key(&flow.key()));
        tally.assert_matches(&fx, "web");
    }

    #[test]
    fn a_fin_or_rst_before_the_handshake_ends_keeps_the_flow_pending() {
        let mut fx = services("track-early-close");
        let mut tally = Tally::default();
        let flow = Flow::new(Transport::Tcp, CLIENT4, 40_012, VIP4, 80);
        let x = fx.send_tracked(&flow, SYN, &mut tally);
        assert_eq!(fx.send_tracked(&flow, FIN | ACK, &mut tally), x);
        assert_eq!(fx.send_tracked(&flow, ACK, &mut tally), x);
        assert_eq!(fx.send_tracked(&flow, ACK, &mut tally), x);
        assert!(fx.tracking.established.is_empty(), "nothing established");
        // A mid-stream packet of a flow never seen is pending too.
        let midstream = flow.with_sport(40_013);
        let y = fx.send_tracked(&midstream, ACK, &mut tally);
        assert!(fx.tracking.pending.contains_key(&midstream.key()));
        assert_eq!(fx.send_tracked(&midstream, ACK | PSH, &mut tally), y);
        assert!(fx.tracking.established.contains_key(&midstream.key()));
        tally.assert_matches(&fx, "web");
    }

    #[test]
    fn a_flood_of_new_flows_ten_times_the_table_evicts_no_established_flow() {
        const CONNTRACK: u32 = 1024;
        let mut fx = services_sized("track-flood", Some(CONNTRACK));
        // Established flows, TCP and UDP, each on its backend; then a weight change, so
        // that any of them balanced afresh could land elsewhere.
        let tcp = Flow::new(Transport::Tcp, "203.0.113.50", 0, VIP4, 80);
        let udp = Flow::new(Transport::Udp, "203.0.113.51", 0, VIP4, 53);
        let mut established: Vec<(Flow, u32)> = Vec::new();
        for i in 0..200u16 {
            for (flow, second) in [
                (tcp.with_sport(30_000 + i), ACK),
                (udp.with_sport(30_000 + i), 0),
            ] {
                let index = fx.expected_backend(
                    if flow.transport == Transport::Tcp {
                        "web"
                    } else {
                        "dns"
                    },
                    &flow,
                );
                for flags in [SYN, second] {
                    let frame = match flow.transport {
                        Transport::Tcp => flow.frame_with(flags),
                        Transport::Udp => flow.frame(),
                    };
                    assert_forwarded(&fx.send(&frame), &frame, &fx.backend(index), XDP_TX, "open");
                }
                established.push((flow, index));
            }
        }
        let before = fx.entries("CONNTRACK");
        assert_eq!(before.len(), established.len(), "all established");
        let web: Vec<(std::net::IpAddr, u32)> = fx
            .service("web")
            .backends()
            .map(|(_, b)| (b.addr, b.index))
            .collect();
        fx.set_weight("web", web[0].0, 0);
        fx.publish("web");
        let dns: Vec<(std::net::IpAddr, u32)> = fx
            .service("dns")
            .backends()
            .map(|(_, b)| (b.addr, b.index))
            .collect();
        fx.set_weight("dns", dns[0].0, 0);
        fx.publish("dns");
        let movable = established
            .iter()
            .filter(|(f, i)| {
                let service = if f.transport == Transport::Tcp {
                    "web"
                } else {
                    "dns"
                };
                fx.expected(service, f) != Some(*i)
            })
            .count();
        assert!(
            movable > 20,
            "only {movable} flows would move if balanced afresh"
        );

        // The flood: SYNs (each sent twice: a retransmit) and single datagrams from random
        // sources and ports, 10× the table.
        let mut rng = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let flood = 10 * CONNTRACK;
        for i in 0..flood {
            let r = next();
            let src = format!("198.18.{}.{}", (r >> 8) as u8, r as u8);
            let sport = (r >> 16) as u16 | 1;
            let frame = if i % 2 == 0 {
                Flow::new(Transport::Tcp, &src, sport, VIP4, 80).frame_with(SYN)
            } else {
                Flow::new(Transport::Udp, &src, sport, VIP4, 53).frame()
            };
            assert_eq!(fx.send(&frame).action, XDP_TX, "flood packet {i}");
            if i % 2 == 0 {
                // A SYN retransmit: still pending.
                assert_eq!(fx.send(&frame).action, XDP_TX, "flood retransmit {i}");
            }
        }
        assert_eq!(
            fx.entries("CONNTRACK"),
            before,
            "established flows untouched"
        );
        assert!(
            fx.pending_flows().len() <= balancer_common::pending_slots(CONNTRACK) as usize,
            "the pending map holds the flood"
        );
        // Every established flow still reaches its backend.
        for (flow, index) in &established {
            let frame = match flow.transport {
                Transport::Tcp => flow.frame_with(ACK | PSH),
                Transport::Udp => flow.frame(),
            };
            assert_forwarded(
                &fx.send(&frame),
                &frame,
                &fx.backend(*index),
                XDP_TX,
                "after",
            );
        }
    }
}

/// The pre-filter: packets to a port and protocol that no VIP serves (or served, while
/// flows to it are active) are passed before any connection-tracking lookup.
mod filter {
    use std::time::Duration;

    use balancer_common::FlowState;

    use super::*;
    use crate::{
        closing::services,
        support::packet::{ACK, FIN, SYN},
    };

    #[test]
    fn packets_to_other_ports_never_touch_connection_tracking() {
        let mut fx = services("track-filter");
        let x = fx.entry("web", BACKENDS4[0].parse().expect("address"));
        // Entries no packet could have made, for a TCP flow to port 22 and a UDP flow to
        // port 80 (a TCP VIP's port): if the program looked them up, it would forward.
        let ssh = Flow::new(Transport::Tcp, CLIENT4, 40_014, VIP4, 22);
        let udp80 = Flow::new(Transport::Udp, CLIENT4, 40_015, VIP4, 80);
        let planted = FlowState {
            backend: x.index,
            epoch: x.epoch,
            last_seen_ns: 1,
            ..FlowState::default()
        };
        for name in ["CONNTRACK", "PENDING"] {
            for flow in [&ssh, &udp80] {
                fx.plant(name, flow.key(), planted);
            }
        }
        let before = (fx.entries("CONNTRACK"), fx.entries("PENDING"));
        let mut tally = Tally::default();
        for flow in [&ssh, &udp80] {
            for flags in [SYN, ACK, FIN | ACK] {
                assert!(!fx.vip_port(flow));
                let frame = match flow.transport {
                    Transport::Tcp => flow.frame_with(flags),
                    Transport::Udp => flow.frame(),
                };
                assert_untouched(&fx.send(&frame), &frame, XDP_PASS, &format!("{flow:?}"));
            }
        }
        assert_eq!(
            (fx.entries("CONNTRACK"), fx.entries("PENDING")),
            before,
            "entries neither used nor refreshed"
        );
        tally.assert_matches(&fx, "web");
        assert_globals(
            &fx,
            GlobalCounters {
                passed: 6,
                ..GlobalCounters::default()
            },
        );
        // The same port with the VIP's protocol is looked up.
        for name in ["CONNTRACK", "PENDING"] {
            for flow in [&ssh, &udp80] {
                fx.unplant(name, flow.key());
            }
        }
        let web = Flow::new(Transport::Tcp, CLIENT4, 40_016, VIP4, 80);
        fx.send_tracked(&web, SYN, &mut tally);
    }

    #[test]
    fn a_former_vip_port_stays_open_while_its_flows_are_active() {
        let mut fx = services("track-former");
        let mut tally = Tally::default();
        let flow = Flow::new(Transport::Tcp, CLIENT4, 40_017, VIP4, 80);
        let udp = Flow::new(Transport::Udp, CLIENT4, 40_017, VIP4, 53);
        let x = fx.send_tracked(&flow, SYN, &mut tally);
        fx.send_tracked(&flow, ACK, &mut tally);
        let u = fx.send_tracked(&udp, 0, &mut tally);
        fx.send_tracked(&udp, 0, &mut tally);
        fx.withdraw_vip("web");
        fx.withdraw_vip("web6");
        // Port 80 (TCP) lingers: the established flow keeps its backend; new flows pass.
        assert_eq!(fx.send_tracked(&flow, ACK, &mut tally), x);
        assert_eq!(
            fx.send_tracked(&flow.with_sport(40_018), SYN, &mut tally),
            None
        );
        let closed = fx
            .plane
            .close_idle_vip_ports(Duration::from_secs(3600))
            .expect("close idle ports");
        assert_eq!(closed, Vec::new(), "a flow to port 80 is active");
        assert_eq!(fx.send_tracked(&flow, ACK, &mut tally), x);
        // Once no flow to it is active (an idle time of zero), the port closes: its packets
        // are passed without a lookup. The current VIP's port (53/udp) stays.
        std::thread::sleep(Duration::from_millis(20));
        let closed = fx
            .plane
            .close_idle_vip_ports(Duration::ZERO)
            .expect("close idle ports");
        assert_eq!(closed, vec![(80, 6)]);
        fx.vip_ports_closed(&closed);
        assert_eq!(fx.send_tracked(&flow, ACK, &mut tally), None);
        assert_eq!(fx.send_tracked(&udp, 0, &mut tally), u);
    }
}

/// Client affinity hashes the client address alone.
mod affinity {
    use balancer_user::state::Affinity;

    use super::*;
    use crate::support::fixture::model_backend;

    #[test]
    fn one_client_stays_on_one_backend_across_ports() {
        let mut fx = Fixture::new("affinity-client");
        fx.add_service("web", &format!("{VIP4}:80/tcp"), Affinity::Client);
        fx.add_two_groups("web", &BACKENDS4);
        let mut tally = Tally::default();
        for client in ["203.0.113.10", "203.0.113.11", "203.0.113.12"] {
            let base = Flow::new(Transport::Tcp, client, 0, VIP4, 80);
            let flows: Vec<Flow> = (0..100).map(|i| base.with_sport(30_000 + i * 7)).collect();
            let expected = fx.expected_backend("web", &flows[0]);
            // Under connection affinity these flows would spread: the test can tell.
            let svc = fx.service("web");
            let spread: BTreeSet<Option<u32>> = flows
                .iter()
                .map(|f| {
                    model_backend(
                        fx.image("web"),
                        Affinity::Connection,
                        svc.table_size,
                        &f.key(),
                        None,
                    )
                })
                .collect();
            assert!(spread.len() > 1, "flows of {client} do not discriminate");
            for flow in &flows {
                send_expecting(&mut fx, &mut tally, flow, expected, true);
            }
        }
        tally.assert_matches(&fx, "web");
    }
}

/// Traffic that is not for a VIP goes to the kernel untouched.
mod passing {
    use super::*;
    use crate::support::packet::{arp_request, icmp_echo};

    #[test]
    fn non_vip_traffic_passes_unchanged() {
        let mut fx = split_service("pass-non-vip", &format!("{VIP4}:80/tcp"), &BACKENDS4);
        fx.add_service("web6", &format!("[{VIP6}]:80/tcp"), Affinity::Connection);
        fx.add_backend("web6", BACKENDS6[0], "blue", 100);
        fx.publish("web6");
        let frames: Vec<(&str, Vec<u8>)> = vec![
            (
                "ARP request for the VIP",
                arp_request([203, 0, 113, 7], [198, 19, 0, 1]),
            ),
            (
                "ICMP echo to the VIP",
                icmp_echo([203, 0, 113, 7], [198, 19, 0, 1]),
            ),
            (
                "TCP to the VIP on port 443",
                Flow::new(Transport::Tcp, CLIENT4, 40_000, VIP4, 443).frame(),
            ),
            (
                "UDP to the VIP's TCP port",
                Flow::new(Transport::Udp, CLIENT4, 40_000, VIP4, 80).frame(),
            ),
            (
                "UDP to a non-VIP address",
                Flow::new(Transport::Udp, CLIENT4, 40_000, "198.19.0.2", 80).frame(),
            ),
            (
                "IPv6 TCP to a non-VIP address",
                Flow::new(Transport::Tcp, CLIENT6, 40_000, "2001:db8:ffff::2", 80).frame(),
            ),
        ];
        for (what, frame) in &frames {
            let run = fx.send(frame);
            assert_untouched(&run, frame, XDP_PASS, what);
        }
        assert_globals(
            &fx,
            GlobalCounters {
                passed: frames.len() as u64,
                ..GlobalCounters::default()
            },
        );
        Tally::default().assert_matches(&fx, "web");
        Tally::default().assert_matches(&fx, "web6");
        assert_eq!(fx.active_flows(), HashMap::new(), "nothing tracked");
    }
}

/// Truncated or inconsistent headers are never forwarded: passed to the kernel, counted as
/// malformed, never tracked.
mod malformed {
    use aya::programs::ProgramError;
    use balancer_user::dataplane::DataPlaneError;

    use super::*;
    use crate::support::packet::{
        ethernet_header, ETHERTYPE_IPV4, ETH_LEN, IPV4_LEN, IPV6_LEN, TCP_LEN, TPID_8021Q, UDP_LEN,
    };

    /// Offset of the IPv4 total length in an untagged frame.
    const IPV4_TOTAL_LEN: usize = ETH_LEN + 2;
    /// Offset of the IPv6 payload length in an untagged frame.
    const IPV6_PAYLOAD_LEN: usize = ETH_LEN + 4;
    /// Offset of the TCP data offset byte after an untagged IPv4 header without options.
    const TCP4_DATA_OFFSET: usize = ETH_LEN + IPV4_LEN + 12;
    /// Offset of the TCP data offset byte after an untagged IPv6 header.
    const TCP6_DATA_OFFSET: usize = ETH_LEN + IPV6_LEN + 12;
    /// Offset of the UDP length after an untagged IPv4 header without options.
    const UDP4_LEN: usize = ETH_LEN + IPV4_LEN + 4;
    /// Offset of the UDP length after an untagged IPv6 header.
    const UDP6_LEN: usize = ETH_LEN + IPV6_LEN + 4;

    /// A fixture with TCP and UDP services on the IPv4 VIP and a TCP one on the IPv6 VIP.
    fn services(test: &str) -> Fixture {
        let mut fx = split_service(test, &format!("{VIP4}:80/tcp"), &BACKENDS4);
        fx.add_service("dns", &format!("{VIP4}:53/udp"), Affinity::Connection);
        fx.add_backend("dns", "198.18.1.101", "blue", 100);
        fx.publish("dns");
        fx.add_service("web6", &format!("[{VIP6}]:80/tcp"), Affinity::Connection);
        fx.add_backend("web6", BACKENDS6[0], "blue", 100);
        fx.publish("web6");
        fx
    }

    /// A TCP frame to the IPv4 VIP with its first IPv4 byte (version, IHL) replaced.
    fn with_version_ihl(byte: u8, payload: &[u8]) -> Vec<u8> {
        let mut frame = Flow::new(Transport::Tcp, CLIENT4, 40_000, VIP4, 80)
            .builder()
            .payload(payload)
            .build();
        frame[ETH_LEN] = byte;
        frame
    }

    #[test]
    fn malformed_frames_are_never_forwarded() {
        let mut fx = services("malformed");
        let tcp4 = Flow::new(Transport::Tcp, CLIENT4, 40_000, VIP4, 80).frame();
        let udp4 = Flow::new(Transport::Udp, CLIENT4, 40_000, VIP4, 53).frame();
        let tcp6 = Flow::new(Transport::Tcp, CLIENT6, 40_000, VIP6, 80).frame();
        let mut vlan_only_tci = ethernet_header(TPID_8021Q);
        vlan_only_tci.extend_from_slice(&[0x00, 0x64]);
        let mut vlan_then_nothing = vlan_only_tci.clone();
        vlan_then_nothing.extend_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
        let frames: Vec<(&str, Vec<u8>)> = vec![
            (
                "Ethernet header alone, IPv4 type",
                ethernet_header(ETHERTYPE_IPV4),
            ),
            ("IPv4 with IHL 4", with_version_ihl(0x44, b"payload")),
            (
                "version 6 in an IPv4 frame",
                with_version_ihl(0x65, b"payload"),
            ),
            (
                "IHL 15, header beyond the frame",
                with_version_ihl(0x4f, b""),
            ),
            (
                "TCP header cut to 10 bytes",
                tcp4[..ETH_LEN + IPV4_LEN + 10].to_vec(),
            ),
            (
                "UDP header cut to 4 bytes",
                udp4[..ETH_LEN + IPV4_LEN + 4].to_vec(),
            ),
            ("VLAN tag without inner type", vlan_only_tci),
            ("VLAN tag, IPv4 type, nothing after", vlan_then_nothing),
            ("IPv6 header cut to 30 bytes", tcp6[..ETH_LEN + 30].to_vec()),
            (
                "IPv6 TCP header cut to 10 bytes",
                tcp6[..ETH_LEN + IPV6_LEN + 10].to_vec(),
            ),
        ];
        for (what, frame) in &frames {
            let run = fx.send(frame);
            assert_untouched(&run, frame, XDP_PASS, what);
        }
        assert_globals(
            &fx,
            GlobalCounters {
                malformed: frames.len() as u64,
                ..GlobalCounters::default()
            },
        );
        for service in ["web", "dns", "web6"] {
            Tally::default().assert_matches(&fx, service);
        }
        assert_eq!(fx.active_flows(), HashMap::new(), "nothing tracked");
    }

    /// `frame` with the big-endian 16-bit field at `at` set to `value`. Checksums are left
    /// as they were: the program does not verify them.
    fn with_u16(mut frame: Vec<u8>, at: usize, value: usize) -> Vec<u8> {
        let value = u16::try_from(value).expect("a 16-bit field");
        frame[at..at + 2].copy_from_slice(&value.to_be_bytes());
        frame
    }

    /// `frame` with the TCP data offset at `at` set to `words` (32-bit words).
    fn with_data_offset(mut frame: Vec<u8>, at: usize, words: u8) -> Vec<u8> {
        frame[at] = (words << 4) | (frame[at] & 0x0f);
        frame
    }

    /// `frame` with zero bytes of Ethernet padding appended up to `len` bytes.
    fn padded(mut frame: Vec<u8>, len: usize) -> Vec<u8> {
        assert!(frame.len() < len, "padding must add bytes");
        frame.resize(len, 0);
        frame
    }

    /// [`services`] plus a UDP service on the IPv6 VIP.
    fn services_with_udp6(test: &str) -> Fixture {
        let mut fx = services(test);
        fx.add_service("dns6", &format!("[{VIP6}]:53/udp"), Affinity::Connection);
        fx.add_backend("dns6", BACKENDS6[1], "blue", 100);
        fx.publish("dns6");
        fx
    }

    #[test]
    fn lying_lengths_are_passed_as_malformed() {
        let mut fx = services_with_udp6("malformed-lengths");
        let tcp4 = Flow::new(Transport::Tcp, CLIENT4, 40_000, VIP4, 80);
        let udp4 = Flow::new(Transport::Udp, CLIENT4, 40_000, VIP4, 53);
        let tcp6 = Flow::new(Transport::Tcp, CLIENT6, 40_000, VIP6, 80);
        let udp6 = Flow::new(Transport::Udp, CLIENT6, 40_000, VIP6, 53);
        // Default frames carry 32 bytes of payload.
        let tcp4_frame = tcp4.frame();
        let ip4_len = tcp4_frame.len() - ETH_LEN;
        let syn4 = tcp4.builder().payload(&[]).build();
        assert_eq!(syn4.len(), 54, "a bare IPv4 SYN");
        let udp4_frame = udp4.frame();
        let tcp6_frame = tcp6.frame();
        let ip6_payload = tcp6_frame.len() - ETH_LEN - IPV6_LEN;
        let udp6_frame = udp6.frame();
        let udp6_payload = udp6_frame.len() - ETH_LEN - IPV6_LEN;
        let tagged = tcp4.builder().tag(TPID_8021Q, 100).build();
        let with_options = tcp4.builder().ipv4_options(&[0x94, 0x04, 0, 0]).build();
        let malformed = Outcome::Pass(Counter::Malformed);
        let cases: Vec<(&str, Vec<u8>, Outcome)> = vec![
            (
                "IPv4 total length 10",
                with_u16(tcp4_frame.clone(), IPV4_TOTAL_LEN, 10),
                malformed,
            ),
            (
                "IPv4 total length 1400 in a 54-byte frame",
                with_u16(syn4.clone(), IPV4_TOTAL_LEN, 1400),
                malformed,
            ),
            (
                "IPv4 total length one byte beyond the frame",
                with_u16(tcp4_frame.clone(), IPV4_TOTAL_LEN, ip4_len + 1),
                malformed,
            ),
            (
                "IPv4 total length counting the VLAN tag",
                with_u16(tagged.clone(), ETH_LEN + 4 + 2, tagged.len() - ETH_LEN),
                malformed,
            ),
            (
                "IPv4 total length one byte short of the TCP header",
                with_u16(tcp4_frame.clone(), IPV4_TOTAL_LEN, IPV4_LEN + TCP_LEN - 1),
                malformed,
            ),
            (
                "IPv4 total length one byte short of the UDP header",
                with_u16(udp4_frame.clone(), IPV4_TOTAL_LEN, IPV4_LEN + UDP_LEN - 1),
                malformed,
            ),
            (
                "IPv4 total length 20 with a 24-byte header (IHL 6)",
                with_u16(with_options, IPV4_TOTAL_LEN, IPV4_LEN),
                malformed,
            ),
            ("IPv4 IHL 4", with_version_ihl(0x44, b"payload"), malformed),
            (
                "TCP data offset 0",
                with_data_offset(tcp4_frame.clone(), TCP4_DATA_OFFSET, 0),
                malformed,
            ),
            (
                "TCP data offset 4",
                with_data_offset(tcp4_frame.clone(), TCP4_DATA_OFFSET, 4),
                malformed,
            ),
            (
                "TCP data offset 15: 60 bytes, 52 in the datagram",
                with_data_offset(tcp4_frame.clone(), TCP4_DATA_OFFSET, 15),
                malformed,
            ),
            (
                "TCP data offset 6 in a bare SYN: in the Ethernet padding, not the datagram",
                with_data_offset(padded(syn4.clone(), 60), TCP4_DATA_OFFSET, 6),
                malformed,
            ),
            (
                "UDP length 4",
                with_u16(udp4_frame.clone(), UDP4_LEN, 4),
                malformed,
            ),
            (
                "UDP length 0",
                with_u16(udp4_frame.clone(), UDP4_LEN, 0),
                malformed,
            ),
            (
                "UDP length one byte beyond the datagram",
                with_u16(udp4_frame.clone(), UDP4_LEN, UDP_LEN + 33),
                malformed,
            ),
            (
                "UDP length reaching into the Ethernet padding",
                with_u16(
                    padded(udp4.builder().payload(b"x").build(), 60),
                    UDP4_LEN,
                    UDP_LEN + 4,
                ),
                malformed,
            ),
            (
                "IPv6 payload length 1400 in a short frame",
                with_u16(tcp6_frame.clone(), IPV6_PAYLOAD_LEN, 1400),
                malformed,
            ),
            (
                "IPv6 payload length one byte beyond the frame",
                with_u16(tcp6_frame.clone(), IPV6_PAYLOAD_LEN, ip6_payload + 1),
                malformed,
            ),
            (
                "IPv6 payload length 10, short of the TCP header",
                with_u16(tcp6_frame.clone(), IPV6_PAYLOAD_LEN, 10),
                malformed,
            ),
            (
                "IPv6 payload length 0",
                with_u16(tcp6_frame.clone(), IPV6_PAYLOAD_LEN, 0),
                malformed,
            ),
            (
                "IPv6 payload length 20, short of a 24-byte TCP header",
                with_u16(
                    with_data_offset(tcp6_frame.clone(), TCP6_DATA_OFFSET, 6),
                    IPV6_PAYLOAD_LEN,
                    TCP_LEN,
                ),
                malformed,
            ),
            (
                "IPv6 UDP length one byte beyond the payload length",
                with_u16(udp6_frame.clone(), IPV6_PAYLOAD_LEN, udp6_payload - 1),
                malformed,
            ),
            (
                "IPv6 UDP length 4",
                with_u16(udp6_frame.clone(), UDP6_LEN, 4),
                malformed,
            ),
        ];
        let mut tally = Tally::default();
        check_outcomes(&mut fx, &mut tally, &cases);
        for service in ["web", "dns", "web6", "dns6"] {
            tally.assert_matches(&fx, service);
        }
        assert_eq!(fx.tracked_flows(), Vec::new(), "nothing tracked");
        assert_eq!(fx.pending_flows(), Vec::new(), "nothing pending");
    }

    #[test]
    fn padded_and_exactly_filled_frames_are_forwarded() {
        let mut fx = services_with_udp6("malformed-valid");
        let tcp4 = |sport| Flow::new(Transport::Tcp, CLIENT4, sport, VIP4, 80);
        let udp4 = Flow::new(Transport::Udp, CLIENT4, 41_000, VIP4, 53);
        let tcp6 = Flow::new(Transport::Tcp, CLIENT6, 41_000, VIP6, 80);
        let udp6 = Flow::new(Transport::Udp, CLIENT6, 41_000, VIP6, 53);
        let forward = |fx: &Fixture, service: &str, flow: Flow| {
            Outcome::Forward(fx.expected_backend(service, &flow))
        };
        let cases: Vec<(&str, Vec<u8>, Outcome)> = vec![
            (
                "bare IPv4 SYN padded to 60 bytes",
                padded(tcp4(41_000).builder().payload(&[]).build(), 60),
                forward(&fx, "web", tcp4(41_000)),
            ),
            (
                "IPv4 UDP with 1 byte of payload padded to 60 bytes",
                padded(udp4.builder().payload(b"x").build(), 60),
                forward(&fx, "dns", udp4),
            ),
            (
                "VLAN-tagged bare IPv4 SYN padded to 64 bytes",
                padded(
                    tcp4(41_001)
                        .builder()
                        .tag(TPID_8021Q, 100)
                        .payload(&[])
                        .build(),
                    64,
                ),
                forward(&fx, "web", tcp4(41_001)),
            ),
            (
                "IPv6 TCP with 6 bytes after the datagram",
                padded(tcp6.frame(), tcp6.frame().len() + 6),
                forward(&fx, "web6", tcp6),
            ),
            (
                "IPv6 UDP with 6 bytes after the datagram",
                padded(udp6.frame(), udp6.frame().len() + 6),
                forward(&fx, "dns6", udp6),
            ),
            (
                "UDP length 8, shorter than the datagram",
                with_u16(udp4.with_sport(41_001).frame(), UDP4_LEN, UDP_LEN),
                forward(&fx, "dns", udp4.with_sport(41_001)),
            ),
            (
                "TCP data offset 15 filling the datagram",
                with_data_offset(
                    tcp4(41_002).builder().payload(&[1; 40]).build(),
                    TCP4_DATA_OFFSET,
                    15,
                ),
                forward(&fx, "web", tcp4(41_002)),
            ),
        ];
        let mut tally = Tally::default();
        check_outcomes(&mut fx, &mut tally, &cases);
        for service in ["web", "dns", "web6", "dns6"] {
            tally.assert_matches(&fx, service);
        }
        assert_globals(&fx, GlobalCounters::default());
    }

    #[test]
    fn frames_shorter_than_ethernet_are_refused_by_the_kernel() {
        // BPF_PROG_TEST_RUN for XDP refuses input shorter than ETH_HLEN (14 bytes) with
        // EINVAL before the program runs (net/bpf/test_run.c, bpf_test_init), so the
        // program never sees such a frame here. (On a real NIC, drivers do not deliver
        // them either.)
        let mut fx = services("malformed-short");
        for len in [0usize, 1, 13] {
            let frame = ethernet_header(ETHERTYPE_IPV4)[..len].to_vec();
            let err = fx
                .plane
                .test_run(&frame, 1)
                .expect_err("a frame shorter than 14 bytes is accepted");
            let errno = match &err {
                DataPlaneError::Program {
                    source: ProgramError::SyscallError(e),
                    ..
                } => e.io_error.raw_os_error(),
                other => panic!("unexpected error for {len} bytes: {other}"),
            };
            assert_eq!(errno, Some(libc::EINVAL), "{len} bytes: {err}");
        }
        assert_globals(&fx, GlobalCounters::default());
    }
}

/// Martian sources (addresses no client sends from): dropped when addressed to a VIP, never
/// tracked; left to the kernel otherwise.
mod martians {
    use super::*;

    /// TCP and UDP services on the IPv4 VIP, a TCP one on the IPv6 VIP.
    fn services(test: &str) -> Fixture {
        let mut fx = split_service(test, &format!("{VIP4}:80/tcp"), &BACKENDS4);
        fx.add_service("dns", &format!("{VIP4}:53/udp"), Affinity::Connection);
        fx.add_backend("dns", "198.18.1.101", "blue", 100);
        fx.publish("dns");
        fx.add_service("web6", &format!("[{VIP6}]:80/tcp"), Affinity::Connection);
        fx.add_backend("web6", BACKENDS6[0], "blue", 100);
        fx.publish("web6");
        fx
    }

    /// A TCP frame from `src` to the VIP of its family, port 80.
    fn tcp_from(src: &str) -> Flow {
        let vip = if src.contains(':') { VIP6 } else { VIP4 };
        Flow::new(Transport::Tcp, src, 40_000, vip, 80)
    }

    #[test]
    fn martian_sources_to_a_vip_are_dropped() {
        let mut fx = services("martian-vip");
        let sources = [
            "0.0.0.0",
            "0.1.2.3",
            "127.0.0.1",
            "127.255.255.254",
            "224.0.0.1",
            "239.255.255.250",
            "240.0.0.1",
            "255.255.255.255",
            "::",
            "::1",
            "ff02::1",
            "ff0e::1",
            "::ffff:127.0.0.1",
            "::ffff:0.0.0.0",
            "::ffff:224.0.0.5",
            "::ffff:255.255.255.255",
        ];
        let martian = Outcome::Drop(Counter::Martian);
        let mut cases: Vec<(String, Vec<u8>, Outcome)> = sources
            .iter()
            .map(|src| (format!("TCP from {src}"), tcp_from(src).frame(), martian))
            .collect();
        let udp = Flow::new(Transport::Udp, "127.0.0.1", 40_000, VIP4, 53);
        cases.push(("UDP from 127.0.0.1".into(), udp.frame(), martian));
        let cases: Vec<(&str, Vec<u8>, Outcome)> = cases
            .iter()
            .map(|(what, frame, outcome)| (what.as_str(), frame.clone(), *outcome))
            .collect();
        let mut tally = Tally::default();
        check_outcomes(&mut fx, &mut tally, &cases);
        for service in ["web", "dns", "web6"] {
            Tally::default().assert_matches(&fx, service);
        }
        assert_eq!(fx.tracked_flows(), Vec::new(), "nothing tracked");
        assert_eq!(fx.pending_flows(), Vec::new(), "nothing pending");
    }

    #[test]
    fn sources_next_to_martian_ranges_are_forwarded() {
        let mut fx = services("martian-near");
        let sources = [
            "1.0.0.0",
            "126.255.255.255",
            "128.0.0.0",
            "223.255.255.255",
            "::2",
            "::7f00:1",
            "::fffe:7f00:1",
            "::ffff:198.51.100.7",
            "fe80::1",
            "fe00::1",
        ];
        let cases: Vec<(String, Vec<u8>, Outcome)> = sources
            .iter()
            .map(|src| {
                let flow = tcp_from(src);
                let service = if flow.src.is_ipv4() { "web" } else { "web6" };
                let index = fx.expected_backend(service, &flow);
                (
                    format!("TCP from {src}"),
                    flow.frame(),
                    Outcome::Forward(index),
                )
            })
            .collect();
        let cases: Vec<(&str, Vec<u8>, Outcome)> = cases
            .iter()
            .map(|(what, frame, outcome)| (what.as_str(), frame.clone(), *outcome))
            .collect();
        let mut tally = Tally::default();
        check_outcomes(&mut fx, &mut tally, &cases);
        tally.assert_matches(&fx, "web");
        tally.assert_matches(&fx, "web6");
        assert_globals(&fx, GlobalCounters::default());
    }

    #[test]
    fn martian_sources_to_other_addresses_pass() {
        let mut fx = services("martian-other");
        let passed = Outcome::Pass(Counter::Passed);
        let cases: Vec<(&str, Vec<u8>, Outcome)> = vec![
            (
                "TCP from 127.0.0.1 to a non-VIP address",
                Flow::new(Transport::Tcp, "127.0.0.1", 40_000, "198.19.0.2", 80).frame(),
                passed,
            ),
            (
                "DHCP discover from 0.0.0.0 to 255.255.255.255",
                Flow::new(Transport::Udp, "0.0.0.0", 68, "255.255.255.255", 67).frame(),
                passed,
            ),
            (
                "TCP from ::1 to the VIP on a port it does not serve",
                Flow::new(Transport::Tcp, "::1", 40_000, VIP6, 443).frame(),
                passed,
            ),
        ];
        let mut tally = Tally::default();
        check_outcomes(&mut fx, &mut tally, &cases);
        assert_eq!(fx.tracked_flows(), Vec::new(), "nothing tracked");
        assert_eq!(fx.pending_flows(), Vec::new(), "nothing pending");
    }
}

/// Fragments and IPv6 extension headers cannot be balanced per flow: passed to the kernel.
mod unbalanceable {
    use super::*;
    use crate::support::packet::{
        IPV4_DONT_FRAGMENT, IPV4_MORE_FRAGMENTS, IPV6_FRAGMENT, IPV6_HOP_BY_HOP,
    };

    #[test]
    fn fragments_and_extension_headers_pass_unchanged() {
        let mut fx = split_service("unbalanceable", &format!("{VIP4}:80/tcp"), &BACKENDS4);
        fx.add_service("web6", &format!("[{VIP6}]:80/tcp"), Affinity::Connection);
        fx.add_backend("web6", BACKENDS6[0], "blue", 100);
        fx.publish("web6");
        let tcp4 = Flow::new(Transport::Tcp, CLIENT4, 40_000, VIP4, 80);
        let tcp6 = Flow::new(Transport::Tcp, CLIENT6, 40_000, VIP6, 80);
        let frames: Vec<(&str, Vec<u8>)> = vec![
            (
                "IPv4 first fragment (MF, offset 0)",
                tcp4.builder()
                    .ipv4_flags_fragment(IPV4_MORE_FRAGMENTS)
                    .build(),
            ),
            (
                "IPv4 last fragment (offset 185)",
                tcp4.builder().ipv4_flags_fragment(185).build(),
            ),
            (
                "IPv4 middle fragment (MF, offset 16)",
                tcp4.builder()
                    .ipv4_flags_fragment(IPV4_MORE_FRAGMENTS | 16)
                    .build(),
            ),
            (
                "IPv6 with a fragment header",
                tcp6.builder().ipv6_extension(IPV6_FRAGMENT).build(),
            ),
            (
                "IPv6 with hop-by-hop options",
                tcp6.builder().ipv6_extension(IPV6_HOP_BY_HOP).build(),
            ),
        ];
        for (what, frame) in &frames {
            let run = fx.send(frame);
            assert_untouched(&run, frame, XDP_PASS, what);
        }
        assert_globals(
            &fx,
            GlobalCounters {
                unbalanceable: frames.len() as u64,
                ..GlobalCounters::default()
            },
        );
        Tally::default().assert_matches(&fx, "web");
        Tally::default().assert_matches(&fx, "web6");

        // Don't Fragment alone is an ordinary packet.
        let mut tally = Tally::default();
        let expected = fx.expected_backend("web", &tcp4);
        let frame = tcp4
            .builder()
            .ipv4_flags_fragment(IPV4_DONT_FRAGMENT)
            .build();
        let run = fx.send(&frame);
        assert_forwarded(&run, &frame, &fx.backend(expected), XDP_TX, "DF set");
        tally.forwarded(expected, frame.len(), true);
        tally.assert_matches(&fx, "web");
    }
}

/// A VIP without a serving backend drops its packets.
mod no_backend {
    use balancer_common::NO_GROUP;

    use super::*;

    #[test]
    fn vip_without_serving_backends_drops() {
        let mut fx = Fixture::new("no-backend");
        fx.add_service("empty", &format!("{VIP4}:80/tcp"), Affinity::Connection);
        fx.publish("empty");
        fx.add_service("idle", &format!("{VIP4}:81/tcp"), Affinity::Connection);
        let idle: Vec<u32> = ["198.18.0.101", "198.18.0.102"]
            .iter()
            .map(|addr| fx.add_backend("idle", addr, "blue", 0))
            .collect();
        fx.publish("idle");
        for service in ["empty", "idle"] {
            assert!(
                fx.image(service).cells.iter().all(|&c| c == NO_GROUP),
                "{service}: no cell may have a group"
            );
        }
        let mut sent = 0;
        for (port, service) in [(80, "empty"), (81, "idle")] {
            for sport in 40_000..40_003 {
                let flow = Flow::new(Transport::Tcp, CLIENT4, sport, VIP4, port);
                assert_eq!(fx.expected(service, &flow), None, "model selects nothing");
                let frame = flow.frame();
                let run = fx.send(&frame);
                assert_untouched(&run, &frame, XDP_DROP, &format!("{service} {flow:?}"));
                sent += 1;
            }
        }
        assert_globals(
            &fx,
            GlobalCounters {
                dropped: sent,
                ..GlobalCounters::default()
            },
        );
        for index in idle {
            assert_eq!(
                fx.counters(index),
                Default::default(),
                "idle backend {index}"
            );
        }
        assert_eq!(
            fx.active_flows(),
            HashMap::new(),
            "dropped flows are not tracked"
        );
    }
}

/// Every write swaps the service's tables for the ones just written.
mod generations {
    use super::*;

    /// Weight of backend `b` at step `step`: varies at every step, sometimes 0, never 0
    /// for both backends of a group (b = 0, 1 and b = 2, 3) at once.
    fn weight(step: u16, b: u16) -> u16 {
        if (step + b).is_multiple_of(7) {
            0
        } else {
            (step * 37 + b * 53) % 200 + 1
        }
    }

    #[test]
    fn new_flows_follow_the_latest_written_image() {
        let mut fx = split_service("generations", &format!("{VIP4}:80/tcp"), &BACKENDS4);
        let base = Flow::new(Transport::Tcp, CLIENT4, 0, VIP4, 80);
        let mut next_port = 10_000u16;
        let mut pinned_first: BTreeMap<u16, u32> = BTreeMap::new();
        for step in 0..20u16 {
            for (b, addr) in BACKENDS4.iter().enumerate() {
                fx.set_weight("web", addr.parse().unwrap(), weight(step, b as u16));
            }
            let flows: Vec<Flow> = (0..64).map(|i| base.with_sport(next_port + i)).collect();
            next_port += 64;
            let before: Vec<Option<u32>> = flows.iter().map(|f| fx.expected("web", f)).collect();
            fx.publish("web");
            let after: Vec<u32> = flows
                .iter()
                .map(|f| fx.expected_backend("web", f))
                .collect();
            assert!(
                before.iter().zip(&after).any(|(b, a)| *b != Some(*a)),
                "step {step}: the write changes no probe flow, the test cannot tell"
            );
            for (flow, expected) in flows.iter().zip(&after) {
                let frame = flow.frame();
                let run = fx.send(&frame);
                let what = format!("step {step}, {flow:?}");
                assert_forwarded(&run, &frame, &fx.backend(*expected), XDP_TX, &what);
                if step == 0 {
                    pinned_first.insert(flow.sport, *expected);
                }
            }
        }
        // The first step's flows are still tracked to their first backends.
        for (sport, index) in pinned_first {
            let flow = base.with_sport(sport);
            let frame = flow.frame();
            let run = fx.send(&frame);
            assert_forwarded(&run, &frame, &fx.backend(index), XDP_TX, "tracked flow");
        }
    }

    /// A tables map is read only once it is in `TABLES`: one made and filled beside the
    /// live one (here: every ring slot on one backend of each group) changes no flow until
    /// the one update that swaps it in; from the next packet on, new flows see it. The map
    /// is built here from the program's layout (`balancer_common::tables`), not with the
    /// daemon's encoder.
    #[test]
    fn a_tables_map_is_read_only_once_swapped_in() {
        use aya::maps::{Array, HashOfMaps, Map, MapData};
        use balancer_common::{
            cell_position, ring_chunks, slot_position, tables_chunks, Chunk, TablesHeader,
            SPLIT_CELLS, TABLES_MAP_FLAGS,
        };

        let mut fx = split_service("swap", &format!("{VIP4}:80/tcp"), &BACKENDS4);
        let slot = fx.service("web").slot;
        let pinned = MapData::from_pin(fx.plane.maps_dir().join("TABLES")).expect("TABLES");
        let mut tables: HashOfMaps<MapData, u32, Array<MapData, Chunk>> =
            Map::HashOfMaps(pinned).try_into().unwrap();
        let image = fx.image("web").clone();
        let only: Vec<u32> = (0..2)
            .map(|g| fx.entry("web", BACKENDS4[g * 2].parse().unwrap()).index)
            .collect();
        let per_ring = ring_chunks(image.ring_size);
        let mut chunks = vec![Chunk::default(); tables_chunks(2, image.ring_size) as usize];
        chunks[0] = Chunk::from_header(&TablesHeader {
            ring_size: image.ring_size,
            flags: image.flags,
            seed: image.seed,
            cells: SPLIT_CELLS as u32,
            groups: 2,
            ring_chunks: per_ring,
            generation: 0,
            reserved: [0; 8],
        });
        for (cell, &group) in image.cells.iter().enumerate() {
            let (chunk, byte) = cell_position(cell as u32);
            chunks[chunk as usize].cells_mut()[byte as usize] = group;
        }
        for (g, index) in only.iter().enumerate() {
            for s in 0..image.ring_size {
                let (chunk, word) = slot_position(per_ring, g as u32, s);
                chunks[chunk as usize].words[word as usize] = *index;
            }
        }
        let mut map = Array::<MapData, Chunk>::create(chunks.len() as u32, TABLES_MAP_FLAGS)
            .expect("create a tables map");
        for (i, chunk) in chunks.iter().enumerate() {
            map.set(i as u32, chunk, 0).expect("fill the tables map");
        }
        let base = Flow::new(Transport::Tcp, CLIENT4, 0, VIP4, 80);
        let flows: Vec<Flow> = (0..200).map(|i| base.with_sport(20_000 + i)).collect();
        let mut reached = BTreeSet::new();
        for flow in &flows[..100] {
            let expected = fx.expected_backend("web", flow);
            reached.insert(expected);
            let frame = flow.frame();
            let run = fx.send(&frame);
            assert_forwarded(&run, &frame, &fx.backend(expected), XDP_TX, "live tables");
        }
        assert_eq!(reached.len(), 4, "the live tables reach every backend");
        // The swap: from the next packet on, new flows see the new map.
        tables
            .insert(slot, &map, 0)
            .expect("swap the tables map in");
        for flow in &flows[100..] {
            let frame = flow.frame();
            let run = fx.send(&frame);
            let index = run.packet[0..6] == fx.backend(only[0]).dst_mac;
            let other = run.packet[0..6] == fx.backend(only[1]).dst_mac;
            assert!(index || other, "{flow:?} missed the swapped-in tables");
        }
        // Flows tracked before the flip keep their backends.
        for flow in &flows[..100] {
            let expected = fx.expected_backend("web", flow);
            let frame = flow.frame();
            let run = fx.send(&frame);
            assert_forwarded(&run, &frame, &fx.backend(expected), XDP_TX, "tracked flow");
        }
    }
}

/// Each service's tables are a map of their own: sized for the service, counted in the
/// data plane's memory, found again by a data plane loaded over the same pins, and gone
/// with the service, its client pins too.
mod tables {
    use aya::maps::{lpm_trie::LpmTrie, Map, MapData};
    use balancer_common::ClientPinKey;
    use balancer_user::dataplane::{bpffs::Layout, DataPlane};

    use super::*;
    use crate::support::plane::CONNTRACK_ENTRIES;

    /// The client pins in the pinned trie, as (service slot, generation).
    fn pins(fx: &Fixture) -> Vec<(u32, u8)> {
        let data = MapData::from_pin(fx.plane.maps_dir().join("CLIENT_PINS")).unwrap();
        let trie: LpmTrie<MapData, ClientPinKey, u32> = Map::LpmTrie(data).try_into().unwrap();
        trie.keys()
            .map(|key| {
                let data = key.unwrap().data();
                (u32::from_be_bytes(data.service_be), data.generation)
            })
            .collect()
    }

    #[test]
    fn a_services_tables_are_sized_for_it_counted_and_removed_with_it() {
        let mut fx = Fixture::new("tables");
        let empty = fx.plane.memory().unwrap();
        assert_eq!((empty.tables, empty.tables_bytes), (0, 0));
        assert!(
            empty
                .maps
                .iter()
                .any(|m| m.name == "CONNTRACK" && m.bytes > 0),
            "{empty:?}"
        );
        let vip = format!("{VIP4}:80/tcp").parse().unwrap();
        fx.state
            .add_service("small", vip, Affinity::Connection, Some(251))
            .unwrap();
        fx.add_backend("small", BACKENDS4[0], "blue", 100);
        fx.add_pin("small", "198.51.100.0/24", "blue");
        fx.publish("small");
        let small = fx.plane.memory().unwrap();
        // Header and cells (158 chunks of 64 bytes) and one ring of 16 chunks, in pages.
        let chunks = 158 + 16;
        assert_eq!(small.tables, 1);
        assert!(
            (chunks * 64..chunks * 64 + 3 * 4096).contains(&small.tables_bytes),
            "{small:?}"
        );
        let shared: u64 = small.maps.iter().map(|m| m.bytes).sum();
        assert_eq!(small.total_bytes, shared + small.tables_bytes);
        // The pin trie is allocated per pin.
        let trie = |m: &balancer_user::dataplane::Memory| {
            m.maps
                .iter()
                .find(|m| m.name == "CLIENT_PINS")
                .unwrap()
                .bytes
        };
        assert!(trie(&small) > trie(&empty), "{small:?}");
        fx.add_service("large", &format!("{VIP4}:81/tcp"), Affinity::Connection);
        fx.add_backend("large", BACKENDS4[1], "blue", 100);
        fx.publish("large");
        let both = fx.plane.memory().unwrap();
        // A ring of 65537 slots.
        assert_eq!(both.tables, 2);
        assert!(
            both.tables_bytes >= small.tables_bytes + (158 + 4097) * 64,
            "{both:?}"
        );
        // Each publish leaves the pins of the live tables' generation only.
        let slot = fx.service("small").slot;
        for _ in 0..3 {
            fx.publish("small");
            let held = pins(&fx);
            assert_eq!(held.len(), 1, "{held:?}");
            assert_eq!(held[0].0, slot);
        }
        // A data plane loaded over the same pins finds the tables.
        let maps = fx.plane.maps_dir();
        let root = maps.ancestors().nth(3).unwrap();
        let again =
            DataPlane::load_unattached(&Layout::new(root, "lo"), CONNTRACK_ENTRIES).unwrap();
        let mut slots = again.table_slots();
        slots.sort();
        assert_eq!(slots, [slot, fx.service("large").slot]);
        assert_eq!(again.memory().unwrap().tables_bytes, both.tables_bytes);
        drop(again);
        // Removed: its map and pins are gone, its VIP's new flows pass.
        fx.withdraw_vip("small");
        fx.plane.remove_tables(slot).unwrap();
        assert_eq!(fx.plane.table_slots(), [fx.service("large").slot]);
        assert_eq!(pins(&fx), []);
        let after = fx.plane.memory().unwrap();
        assert_eq!(after.tables, 1);
        assert_eq!(after.tables_bytes, both.tables_bytes - small.tables_bytes);
    }
}

/// Client pins: clients in a pinned prefix get the pin's group for new flows, whatever
/// the split; the longest pin wins; pins to a group that cannot serve are ignored.
mod pins {
    use std::ops::Range;

    use super::*;
    use crate::support::fixture::model_backend;

    /// Adds service `name` on `vip` (Connection affinity): the first two of `backends` in
    /// group blue, which takes 100% of new flows, the other two in group green (0%), with
    /// weight `green_weight`. Publishes it.
    fn blue_green(fx: &mut Fixture, name: &str, vip: &str, backends: &[&str], green_weight: u16) {
        fx.add_service(name, vip, Affinity::Connection);
        for (i, addr) in backends.iter().enumerate() {
            let (group, weight) = if i < 2 {
                ("blue", 100)
            } else {
                ("green", green_weight)
            };
            fx.add_backend(name, addr, group, weight);
        }
        let names: Vec<&str> = fx
            .service(name)
            .groups
            .iter()
            .map(|g| g.name.as_str())
            .collect();
        assert_eq!(names, ["blue", "green"], "groups of {name}");
        assert_eq!(
            fx.service(name).shares().expect("shares"),
            [BasisPoints::ALL, BasisPoints::ZERO],
            "split of {name}"
        );
        fx.publish(name);
    }

    /// Sends one new flow like `base` from each client port of `ports` to `service`, each
    /// checked against the model, and asserts that the model put every one in `group`.
    /// Returns the backends the flows went to.
    fn new_flows_go_to(
        fx: &mut Fixture,
        tally: &mut Tally,
        service: &str,
        base: Flow,
        ports: Range<u16>,
        group: &str,
    ) -> BTreeSet<u32> {
        let mut reached = BTreeSet::new();
        for sport in ports {
            let flow = base.with_sport(sport);
            let expected = fx.expected_backend(service, &flow);
            assert_eq!(
                fx.group_of(service, expected),
                group,
                "{service}: group of new flow {flow:?}"
            );
            send_expecting(fx, tally, &flow, expected, true);
            reached.insert(expected);
        }
        reached
    }

    /// The groups the split alone (no pin) would give new flows like `base` from `ports`.
    fn split_alone(fx: &Fixture, service: &str, base: Flow, ports: Range<u16>) -> BTreeSet<String> {
        let svc = fx.service(service);
        ports
            .filter_map(|sport| {
                let key = base.with_sport(sport).key();
                model_backend(fx.image(service), svc.affinity, svc.table_size, &key, None)
            })
            .map(|index| fx.group_of(service, index).to_string())
            .collect()
    }

    /// Indices of the backends of `group` in `service`.
    fn members(fx: &Fixture, service: &str, group: &str) -> BTreeSet<u32> {
        fx.service(service)
            .groups
            .iter()
            .filter(|g| g.name == group)
            .flat_map(|g| g.backends.iter().map(|b| b.index))
            .collect()
    }

    /// Pins `pin` to green on a blue/green service (green 0%) on `vip`:`port`; clients in
    /// the prefix (`inside`) get green for every new flow, the others blue.
    fn pinned_prefix_gets_its_group(
        test: &str,
        vip_spec: &str,
        vip: &str,
        backends: &[&str],
        pin: &str,
        inside: &[&str],
        outside: &[&str],
    ) {
        let mut fx = Fixture::new(test);
        blue_green(&mut fx, "web", vip_spec, backends, 100);
        fx.add_pin("web", pin, "green");
        fx.publish("web");
        let mut tally = Tally::default();
        for (clients, group) in [(inside, "green"), (outside, "blue")] {
            let mut reached = BTreeSet::new();
            for client in clients {
                let base = Flow::new(Transport::Tcp, client, 0, vip, 80);
                reached.extend(new_flows_go_to(
                    &mut fx,
                    &mut tally,
                    "web",
                    base,
                    40_000..40_016,
                    group,
                ));
            }
            assert_eq!(
                reached,
                members(&fx, "web", group),
                "flows of {clients:?} should reach both {group} backends"
            );
        }
        tally.assert_matches(&fx, "web");
        assert_globals(&fx, GlobalCounters::default());
    }

    #[test]
    fn ipv4_client_in_a_pinned_prefix_gets_the_pinned_group() {
        pinned_prefix_gets_its_group(
            "pin-v4",
            &format!("{VIP4}:80/tcp"),
            VIP4,
            &BACKENDS4,
            "203.0.113.0/24",
            &["203.0.113.0", "203.0.113.7", "203.0.113.255"],
            &["203.0.112.255", "203.0.114.0", "198.51.100.7"],
        );
    }

    #[test]
    fn ipv6_client_in_a_pinned_prefix_gets_the_pinned_group() {
        pinned_prefix_gets_its_group(
            "pin-v6",
            &format!("[{VIP6}]:80/tcp"),
            VIP6,
            &BACKENDS6,
            "2001:db8:c::/48",
            &[
                "2001:db8:c::",
                CLIENT6,
                "2001:db8:c:ffff:ffff:ffff:ffff:ffff",
            ],
            &[
                "2001:db8:b:ffff:ffff:ffff:ffff:ffff",
                "2001:db8:d::",
                "2001:db8:8000:c::7",
            ],
        );
    }

    #[test]
    fn longest_pin_wins() {
        let mut fx = Fixture::new("pin-longest");
        blue_green(&mut fx, "web", &format!("{VIP4}:80/tcp"), &BACKENDS4, 100);
        // An even split, so that a pin to either group is visible.
        fx.set_split("web", &[("blue", 5000), ("green", 5000)]);
        fx.add_pin("web", "203.0.113.0/24", "blue");
        fx.add_pin("web", "203.0.0.0/16", "green");
        fx.publish("web");
        let in_24 = Flow::new(Transport::Tcp, "203.0.113.7", 0, VIP4, 80);
        let host = Flow::new(Transport::Tcp, "203.0.113.9", 0, VIP4, 80);
        let in_16 = Flow::new(Transport::Tcp, "203.0.5.7", 0, VIP4, 80);
        for base in [in_24, host, in_16] {
            assert_eq!(
                split_alone(&fx, "web", base, 40_000..40_100).len(),
                2,
                "the split alone spreads {base:?} over both groups: the test can tell"
            );
        }
        let mut tally = Tally::default();
        let mut ports = (40_000..).step_by(16).map(|p: u16| p..p + 16);
        let mut check = |fx: &mut Fixture, base: Flow, group: &str| {
            let ports = ports.next().expect("ports");
            new_flows_go_to(fx, &mut tally, "web", base, ports, group);
        };
        check(&mut fx, in_24, "blue");
        check(&mut fx, host, "blue");
        check(&mut fx, in_16, "green");

        // A host pin overrides both.
        fx.add_pin("web", "203.0.113.9/32", "green");
        fx.publish("web");
        check(&mut fx, host, "green");
        check(&mut fx, in_24, "blue");
        check(&mut fx, in_16, "green");

        // Without the /24, its clients fall back to the /16.
        fx.remove_pin("web", "203.0.113.0/24");
        fx.publish("web");
        check(&mut fx, in_24, "green");
        check(&mut fx, host, "green");
        // And a client outside every pin follows the split.
        let outside = Flow::new(Transport::Tcp, "198.51.100.7", 0, VIP4, 80);
        let mut groups = BTreeSet::new();
        for sport in 41_000..41_064 {
            let flow = outside.with_sport(sport);
            let expected = fx.expected_backend("web", &flow);
            groups.insert(fx.group_of("web", expected).to_string());
            send_expecting(&mut fx, &mut tally, &flow, expected, true);
        }
        assert_eq!(groups.len(), 2, "an unpinned client gets both groups");
        tally.assert_matches(&fx, "web");
        assert_globals(&fx, GlobalCounters::default());
    }

    #[test]
    fn established_flows_ignore_pin_changes() {
        let mut fx = Fixture::new("pin-conntrack");
        blue_green(&mut fx, "web", &format!("{VIP4}:80/tcp"), &BACKENDS4, 100);
        let base = Flow::new(Transport::Tcp, CLIENT4, 0, VIP4, 80);
        let mut tally = Tally::default();
        let mut tracked: Vec<(Flow, u32)> = Vec::new();
        let mut record = |fx: &mut Fixture, tally: &mut Tally, ports: Range<u16>, group: &str| {
            for sport in ports.clone() {
                let flow = base.with_sport(sport);
                tracked.push((flow, fx.expected_backend("web", &flow)));
            }
            new_flows_go_to(fx, tally, "web", base, ports, group);
        };
        // Before any pin: blue.
        record(&mut fx, &mut tally, 40_000..40_008, "blue");
        fx.add_pin("web", "203.0.113.0/24", "green");
        fx.publish("web");
        // The pin applies to new flows only.
        record(&mut fx, &mut tally, 40_008..40_016, "green");
        fx.remove_pin("web", "203.0.113.0/24");
        fx.publish("web");
        // Without the pin, new flows follow the split again.
        record(&mut fx, &mut tally, 40_016..40_024, "blue");

        // Every flow, pinned or not when it started, stays on its first backend.
        for (flow, index) in &tracked {
            send_expecting(&mut fx, &mut tally, flow, *index, false);
        }
        tally.assert_matches(&fx, "web");
        let mut flows: HashMap<(u32, u32), u64> = HashMap::new();
        for (_, index) in &tracked {
            let epoch = fx.backend(*index).epoch;
            *flows.entry((*index, epoch)).or_default() += 1;
        }
        assert_eq!(fx.active_flows(), flows, "one tracked flow per flow sent");
        let green = members(&fx, "web", "green");
        assert!(
            tracked[8..16].iter().all(|(_, i)| green.contains(i)),
            "the flows started under the pin are tracked to green"
        );
        assert_globals(&fx, GlobalCounters::default());
    }

    #[test]
    fn pin_to_a_group_without_weight_is_ignored() {
        let mut fx = Fixture::new("pin-weightless");
        blue_green(&mut fx, "web", &format!("{VIP4}:80/tcp"), &BACKENDS4, 0);
        fx.add_pin("web", "203.0.113.0/24", "green");
        fx.publish("web");
        let base = Flow::new(Transport::Tcp, CLIENT4, 0, VIP4, 80);
        let mut tally = Tally::default();
        new_flows_go_to(&mut fx, &mut tally, "web", base, 40_000..40_016, "blue");

        // One green backend takes weight: the pin applies, to that backend alone.
        let green_addr = BACKENDS4[2].parse().expect("address");
        let green = fx.entry("web", green_addr).index;
        fx.set_weight("web", green_addr, 100);
        fx.publish("web");
        let reached = new_flows_go_to(&mut fx, &mut tally, "web", base, 40_016..40_032, "green");
        assert_eq!(
            reached,
            BTreeSet::from([green]),
            "the only weighted green backend"
        );

        // Drained again: the pin is ignored again; the green flows stay.
        fx.set_weight("web", green_addr, 0);
        fx.publish("web");
        new_flows_go_to(&mut fx, &mut tally, "web", base, 40_032..40_048, "blue");
        for sport in 40_016..40_032 {
            send_expecting(&mut fx, &mut tally, &base.with_sport(sport), green, false);
        }
        tally.assert_matches(&fx, "web");
        assert_globals(&fx, GlobalCounters::default());
    }

    #[test]
    fn only_the_live_generation_pins_apply() {
        let mut fx = Fixture::new("pin-generations");
        blue_green(&mut fx, "web", &format!("{VIP4}:80/tcp"), &BACKENDS4, 100);
        // A pin present in every generation, so that the service always has pins.
        let anchor = "198.51.100.0/24";
        fx.add_pin("web", anchor, "green");
        fx.publish("web");
        let rotating = ["203.0.113.0/24", "203.0.114.0/24", "203.0.115.0/24"];
        let clients: [(&str, Option<&str>); 5] = [
            ("203.0.113.7", Some(rotating[0])),
            ("203.0.114.7", Some(rotating[1])),
            ("203.0.115.7", Some(rotating[2])),
            ("198.51.100.7", Some(anchor)),
            ("192.0.2.7", None),
        ];
        let mut pinned: BTreeSet<&str> = BTreeSet::from([anchor]);
        let mut tally = Tally::default();
        let mut next_port = 40_000u16;
        for step in 0..10usize {
            // Add a pin, remove it, add the next one, ...: the generation written at every
            // other step alternately has each rotating pin and loses it again.
            let pin = rotating[(step / 2) % rotating.len()];
            if step % 2 == 0 {
                fx.add_pin("web", pin, "green");
                pinned.insert(pin);
            } else {
                fx.remove_pin("web", pin);
                pinned.remove(pin);
            }
            fx.publish("web");
            for (client, prefix) in clients {
                let group = match prefix {
                    Some(p) if pinned.contains(p) => "green",
                    _ => "blue",
                };
                let base = Flow::new(Transport::Tcp, client, 0, VIP4, 80);
                let ports = next_port..next_port + 4;
                next_port += 4;
                new_flows_go_to(&mut fx, &mut tally, "web", base, ports, group);
            }
        }
        tally.assert_matches(&fx, "web");
        assert_globals(&fx, GlobalCounters::default());
    }

    #[test]
    fn a_pin_applies_to_its_service_only() {
        let mut fx = Fixture::new("pin-services");
        blue_green(&mut fx, "web", &format!("{VIP4}:80/tcp"), &BACKENDS4, 100);
        let api_backends = [
            "198.18.1.101",
            "198.18.1.102",
            "198.18.1.103",
            "198.18.1.104",
        ];
        blue_green(
            &mut fx,
            "api",
            &format!("{VIP4}:81/tcp"),
            &api_backends,
            100,
        );
        assert_ne!(fx.service("web").slot, fx.service("api").slot, "slots");
        fx.add_pin("api", "203.0.113.0/24", "green");
        fx.publish("api");
        let mut web = Tally::default();
        let mut api = Tally::default();
        for (client, api_group) in [(CLIENT4, "green"), ("198.51.100.7", "blue")] {
            let to_web = Flow::new(Transport::Tcp, client, 0, VIP4, 80);
            let to_api = Flow::new(Transport::Tcp, client, 0, VIP4, 81);
            new_flows_go_to(&mut fx, &mut web, "web", to_web, 40_000..40_016, "blue");
            new_flows_go_to(&mut fx, &mut api, "api", to_api, 40_000..40_016, api_group);
        }
        web.assert_matches(&fx, "web");
        api.assert_matches(&fx, "api");
        assert_globals(&fx, GlobalCounters::default());
    }
}

/// The program's own messages (aya-log): a VIP packet nobody can take and a table naming a
/// cleared backend are reported, at most once per second per CPU and kind; nothing else is.
mod kernel_log {
    use std::time::{Duration, Instant};

    use balancer_user::dataplane::DataPlaneError;

    use super::*;
    use crate::support::kernel_log::{
        aya_warnings, capture_aya_warnings, stay_on_this_cpu, KernelLog, Message,
    };

    /// Target of the program's messages.
    const TARGET: &str = "balancer::xdp";
    /// The kernel's rate limit: one message per kind, CPU and interval.
    const INTERVAL: Duration = Duration::from_secs(1);

    /// Asserts that `messages` is one warning whose text contains every part of `parts`.
    fn assert_one_warning(messages: &[Message], parts: &[&str], what: &str) {
        assert_eq!(messages.len(), 1, "{what}: one message, got {messages:?}");
        let message = &messages[0];
        assert_eq!(message.level, log::Level::Warn, "{what}: level");
        assert_eq!(message.target, TARGET, "{what}: target");
        for part in parts {
            assert!(
                message.text.contains(part),
                "{what}: {:?} should contain {part:?}",
                message.text
            );
        }
    }

    /// Sends `frame` and asserts it was dropped.
    fn send_dropped(fx: &mut Fixture, frame: &[u8], what: &str) {
        let run = fx.send(frame);
        assert_untouched(&run, frame, XDP_DROP, what);
    }

    #[test]
    fn vip_packet_without_a_backend_is_reported_once_per_second() {
        stay_on_this_cpu();
        let mut fx = Fixture::new("log-no-backend");
        fx.add_service("empty", &format!("{VIP4}:80/tcp"), Affinity::Connection);
        fx.publish("empty");
        fx.add_service("empty6", &format!("[{VIP6}]:443/udp"), Affinity::Connection);
        fx.publish("empty6");
        let slot4 = fx.service("empty").slot.to_string();
        let slot6 = fx.service("empty6").slot.to_string();
        let mut log = KernelLog::open(&mut fx.plane);

        let first = Flow::new(Transport::Tcp, CLIENT4, 40_000, VIP4, 80);
        send_dropped(&mut fx, &first.frame(), "first packet");
        let reported = Instant::now();
        assert_one_warning(
            &log.read(),
            &[
                &format!("service {slot4} "),
                "VIP 198.19.0.1:80/tcp",
                "no backend",
                "dropped",
            ],
            "first packet",
        );

        // More of them within the interval: dropped and counted, not reported.
        for sport in 40_001..40_010 {
            let flow = first.with_sport(sport);
            send_dropped(&mut fx, &flow.frame(), "packet within the interval");
        }
        let to_v6 = Flow::new(Transport::Udp, CLIENT6, 40_000, VIP6, 443);
        send_dropped(&mut fx, &to_v6.frame(), "IPv6 packet within the interval");
        let suppressed = log.read();
        if reported.elapsed() < INTERVAL {
            assert_eq!(suppressed, [], "rate-limited within {INTERVAL:?}");
        }

        // After the interval, the next one is reported again.
        std::thread::sleep(INTERVAL.saturating_sub(reported.elapsed()) + INTERVAL / 10);
        send_dropped(&mut fx, &to_v6.frame(), "IPv6 packet after the interval");
        assert_one_warning(
            &log.read(),
            &[
                &format!("service {slot6} "),
                "VIP [2001:db8:ffff::1]:443/udp",
                "no backend",
            ],
            "IPv6 packet after the interval",
        );
        assert_globals(
            &fx,
            GlobalCounters {
                dropped: 12,
                ..GlobalCounters::default()
            },
        );
    }

    #[test]
    fn ring_slot_naming_a_cleared_backend_is_reported() {
        stay_on_this_cpu();
        let mut fx = Fixture::new("log-empty-slot");
        fx.add_service("web", &format!("{VIP4}:80/tcp"), Affinity::Connection);
        let index = fx.add_backend("web", BACKENDS4[0], "blue", 100);
        fx.publish("web");
        fx.add_service("empty", &format!("{VIP4}:81/tcp"), Affinity::Connection);
        fx.publish("empty");
        // The daemon never does this: it clears a backend only once no live table names it.
        fx.clear_backend(index);
        let slot = fx.service("web").slot;
        let mut log = KernelLog::open(&mut fx.plane);

        let flow = Flow::new(Transport::Tcp, CLIENT4, 40_000, VIP4, 80);
        assert_eq!(fx.expected("web", &flow), Some(index), "the ring names it");
        send_dropped(&mut fx, &flow.frame(), "first packet");
        let reported = Instant::now();
        // The first write of a service is generation 0; its only group is 0.
        assert_one_warning(
            &log.read(),
            &[
                &format!("service {slot} table generation 0 group 0"),
                &format!("backend index {index}, which is not set"),
                "dropped",
            ],
            "first packet",
        );

        send_dropped(&mut fx, &flow.with_sport(40_001).frame(), "second packet");
        let second = log.read();
        // The other kind has its own limit.
        let other = Flow::new(Transport::Tcp, CLIENT4, 40_000, VIP4, 81);
        send_dropped(&mut fx, &other.frame(), "packet without a backend");
        let other_kind = log.read();
        if reported.elapsed() < INTERVAL {
            assert_eq!(second, [], "rate-limited within {INTERVAL:?}");
        }
        assert_one_warning(
            &other_kind,
            &["VIP 198.19.0.1:81/tcp", "no backend"],
            "packet without a backend",
        );
        assert_globals(
            &fx,
            GlobalCounters {
                dropped: 3,
                ..GlobalCounters::default()
            },
        );
        assert_eq!(fx.counters(index), Default::default(), "nothing forwarded");
        assert_eq!(fx.active_flows(), HashMap::new(), "nothing tracked");
    }

    #[test]
    fn forwarded_and_non_vip_packets_are_not_reported() {
        stay_on_this_cpu();
        let mut fx = split_service("log-quiet", &format!("{VIP4}:80/tcp"), &BACKENDS4);
        fx.add_service("web6", &format!("[{VIP6}]:80/tcp"), Affinity::Connection);
        fx.add_backend("web6", BACKENDS6[0], "blue", 100);
        fx.publish("web6");
        let mut log = KernelLog::open(&mut fx.plane);

        let mut tally = Tally::default();
        for flow in [
            Flow::new(Transport::Tcp, CLIENT4, 40_000, VIP4, 80),
            Flow::new(Transport::Tcp, CLIENT6, 40_000, VIP6, 80),
        ] {
            let service = if flow.dst.is_ipv4() { "web" } else { "web6" };
            let index = fx.expected_backend(service, &flow);
            send_expecting(&mut fx, &mut tally, &flow, index, true);
            for _ in 0..3 {
                send_expecting(&mut fx, &mut tally, &flow, index, false);
            }
        }
        let non_vip = [
            Flow::new(Transport::Tcp, CLIENT4, 40_000, VIP4, 443).frame(),
            Flow::new(Transport::Udp, CLIENT4, 40_000, "198.19.0.2", 80).frame(),
            Flow::new(Transport::Tcp, CLIENT6, 40_000, "2001:db8:ffff::2", 80).frame(),
        ];
        for frame in &non_vip {
            let run = fx.send(frame);
            assert_untouched(&run, frame, XDP_PASS, "non-VIP packet");
        }
        assert_eq!(
            log.read(),
            [],
            "no message for forwarded or non-VIP packets"
        );

        // The ring is read all the same: a packet nobody can take is reported.
        fx.add_service("empty", &format!("{VIP4}:81/tcp"), Affinity::Connection);
        fx.publish("empty");
        let flow = Flow::new(Transport::Tcp, CLIENT4, 40_000, VIP4, 81);
        send_dropped(&mut fx, &flow.frame(), "packet without a backend");
        assert_one_warning(&log.read(), &["no backend"], "packet without a backend");
        assert_globals(
            &fx,
            GlobalCounters {
                passed: non_vip.len() as u64,
                dropped: 1,
                ..GlobalCounters::default()
            },
        );
    }

    #[test]
    fn the_program_loads_with_its_btf() {
        capture_aya_warnings();
        let _fx = Fixture::new("log-btf");
        let warnings = aya_warnings();
        assert!(
            !warnings.iter().any(|w| w.contains("BTF")),
            "the kernel refused the object's BTF (a type name it does not accept?): {warnings:?}"
        );
    }

    #[test]
    fn the_log_ring_can_be_taken_once() {
        let mut fx = Fixture::new("log-once");
        let _log = KernelLog::open(&mut fx.plane);
        assert!(
            matches!(
                fx.plane.kernel_log(log::logger()),
                Err(DataPlaneError::MissingMap(_))
            ),
            "a second reader has no ring to take"
        );
    }
}

/// Tunnel forwarding (`ipip`, `gue`): the program encapsulates the client's packet to the
/// backend's address and routes it with the kernel's tables. Each test runs in a network
/// namespace of its own with known routes ([`RoutedNetns`]). Tests of packets too big for the route once encapsulated lower `v0`'s MTU; the answers they
/// expect are built here byte by byte, checksums computed by the test's own code.
mod tunnels {
    use std::{net::IpAddr, process::Command};

    use balancer_user::dataplane::TestRun;

    use balancer_common::{
        Tunnel, FAMILY_V4, FAMILY_V6, FORWARD_GUE, FORWARD_IPIP, GUE_PORT, TUNNEL_STAT_FAILED,
        TUNNEL_STAT_TOO_BIG, TUNNEL_STAT_UNRESOLVED, TUNNEL_STAT_UNROUTABLE,
    };

    use super::*;
    use crate::support::{
        packet::{FrameBuilder, ACK},
        plane::{TestPlane, CONNTRACK_ENTRIES, XDP_REDIRECT},
        routes::{RoutedNetns, NEXT_HOP_MAC, V0_MAC},
    };

    /// `v0`'s interface index in the namespace.
    fn v0_index(ns: &RoutedNetns) -> u32 {
        let out = Command::new("ip")
            .args(["-n", ns.name(), "-j", "link", "show", "v0"])
            .output()
            .expect("ip link");
        let links: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
        links[0]["ifindex"].as_u64().expect("ifindex") as u32
    }

    /// A fixture with service `web` on `vip` and one backend `backend`, tunnelled in
    /// `forward` mode from `source` to `outer` (the backend's address as the outer header
    /// has it).
    fn tunnelled(
        test: &str,
        vip: &str,
        backend: &str,
        forward: u32,
        outer: (&str, &str),
    ) -> Fixture {
        tunnelled_on(Fixture::new(test), vip, backend, forward, outer)
    }

    /// [`tunnelled`] on the data plane of `fx`.
    fn tunnelled_on(
        mut fx: Fixture,
        vip: &str,
        backend: &str,
        forward: u32,
        outer: (&str, &str),
    ) -> Fixture {
        fx.add_service("web", vip, Affinity::Connection);
        let index = fx.add_backend("web", backend, "blue", 100);
        fx.publish("web");
        let addr = |text: &str| -> [u8; 16] {
            let mut out = [0u8; 16];
            match text.parse::<IpAddr>().expect("address") {
                IpAddr::V4(v4) => out[..4].copy_from_slice(&v4.octets()),
                IpAddr::V6(v6) => out = v6.octets(),
            }
            out
        };
        let family = if backend.contains(':') {
            FAMILY_V6
        } else {
            FAMILY_V4
        };
        let tunnel = Tunnel {
            dst: addr(outer.1),
            src: addr(outer.0),
            family,
            port_be: GUE_PORT.to_be(),
            ..Tunnel::default()
        };
        fx.plane
            .set_tunnel(index, &tunnel)
            .expect("write the tunnel");
        let mut entry = fx.backend(index);
        entry.forward = forward;
        fx.plane
            .set_backend(index, &entry, false)
            .expect("write the backend");
        fx
    }

    /// The Internet checksum (RFC 1071) over `bytes`, an odd last byte padded with a zero:
    /// what a checksum field must hold when it was zero while summing, and 0 over bytes
    /// whose checksum field is right.
    fn checksum(bytes: &[u8]) -> u16 {
        let mut sum: u32 = bytes
            .chunks(2)
            .map(|w| u32::from(u16::from_be_bytes([w[0], w.get(1).copied().unwrap_or(0)])))
            .sum();
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        !(sum as u16)
    }

    #[test]
    fn ipip_and_gue_over_ipv4_wrap_the_packet_unchanged_and_route_it() {
        let ns = RoutedNetns::new("tun4");
        let v0 = v0_index(&ns);
        ns.enter(|| {
            for (mode, proto, extra) in [(FORWARD_IPIP, 4u8, 0usize), (FORWARD_GUE, 17, 8)] {
                let vip = format!("{VIP4}:80/tcp");
                let mut fx = tunnelled(
                    &format!("tun4-{mode}"),
                    &vip,
                    "198.18.200.10",
                    mode,
                    ("198.18.200.1", "198.18.200.10"),
                );
                let flow = Flow::new(Transport::Tcp, CLIENT4, 40_100, VIP4, 80);
                for flags in [SYN, ACK] {
                    let frame = FrameBuilder::new(flow).tcp_flags(flags).build();
                    let inner = &frame[14..];
                    let run = fx.send(&frame);
                    assert_eq!(run.action, XDP_REDIRECT, "mode {mode}: to v0 ({v0})");
                    let out = &run.packet;
                    assert_eq!(out.len(), 14 + 20 + extra + inner.len(), "mode {mode}");
                    assert_eq!(&out[..6], &NEXT_HOP_MAC);
                    assert_eq!(&out[6..12], &V0_MAC);
                    assert_eq!(&out[12..14], &[0x08, 0x00]);
                    let ip = &out[14..34];
                    assert_eq!(ip[0], 0x45);
                    assert_eq!(ip[1], inner[1], "the client's traffic class");
                    let total = u16::from_be_bytes([ip[2], ip[3]]) as usize;
                    assert_eq!(total, 20 + extra + inner.len());
                    assert_eq!(&ip[6..10], &[0x40, 0, 64, proto], "DF, TTL 64, protocol");
                    assert_eq!(checksum(ip), 0, "header checksum");
                    assert_eq!(&ip[12..16], &[198, 18, 200, 1]);
                    assert_eq!(&ip[16..20], &[198, 18, 200, 10]);
                    if mode == FORWARD_GUE {
                        let udp = &out[34..42];
                        assert!(
                            u16::from_be_bytes([udp[0], udp[1]]) >= 0xc000,
                            "source port"
                        );
                        assert_eq!(u16::from_be_bytes([udp[2], udp[3]]), GUE_PORT);
                        assert_eq!(
                            u16::from_be_bytes([udp[4], udp[5]]) as usize,
                            8 + inner.len()
                        );
                        assert_eq!(&udp[6..8], &[0, 0], "no UDP checksum");
                    }
                    assert_eq!(&out[34 + extra..], inner, "the client's packet unchanged");
                }
                // The flow is tracked like any other: its backend took both packets.
                let index = fx.entry("web", "198.18.200.10".parse().unwrap()).index;
                assert_eq!(fx.counters(index).packets, 2);
            }
        });
    }

    #[test]
    fn ipip_over_ipv6_sets_the_flow_label_from_the_flow() {
        let ns = RoutedNetns::new("tun6");
        ns.enter(|| {
            let vip = format!("[{VIP6}]:80/tcp");
            let mut fx = tunnelled(
                "tun6",
                &vip,
                "2001:db8:200::10",
                FORWARD_IPIP,
                ("2001:db8:200::1", "2001:db8:200::10"),
            );
            let mut labels = Vec::new();
            for sport in [40_200, 40_201, 40_202, 40_203] {
                let flow = Flow::new(Transport::Tcp, CLIENT6, sport, VIP6, 80);
                let frame = flow.frame();
                let inner = &frame[14..];
                let run = fx.send(&frame);
                assert_eq!(run.action, XDP_REDIRECT);
                let out = &run.packet;
                assert_eq!(&out[12..14], &[0x86, 0xdd]);
                let ip = &out[14..54];
                assert_eq!(ip[0] >> 4, 6);
                assert_eq!(u16::from_be_bytes([ip[4], ip[5]]) as usize, inner.len());
                assert_eq!((ip[6], ip[7]), (41, 64), "IPv6 inside, hop limit 64");
                assert_eq!(
                    &ip[8..24],
                    &"2001:db8:200::1"
                        .parse::<std::net::Ipv6Addr>()
                        .unwrap()
                        .octets()
                );
                assert_eq!(
                    &ip[24..40],
                    &"2001:db8:200::10"
                        .parse::<std::net::Ipv6Addr>()
                        .unwrap()
                        .octets()
                );
                assert_eq!(&out[54..], inner);
                labels.push(u32::from_be_bytes([0, ip[1] & 0x0f, ip[2], ip[3]]));
            }
            labels.dedup();
            assert!(labels.len() > 1, "flows get different labels: {labels:?}");
        });
    }

    #[test]
    fn an_unresolved_next_hop_goes_to_the_kernel_encapsulated_and_no_route_is_dropped() {
        let ns = RoutedNetns::new("tunx");
        ns.enter(|| {
            let vip = format!("{VIP4}:80/tcp");
            let flow = Flow::new(Transport::Tcp, CLIENT4, 40_300, VIP4, 80);
            let frame = flow.frame();
            // No neighbour entry yet: the kernel resolves it; the frame keeps the MACs it
            // came with (addressed to this host).
            let mut fx = tunnelled(
                "tun-unresolved",
                &vip,
                "198.18.200.11",
                FORWARD_IPIP,
                ("198.18.200.1", "198.18.200.11"),
            );
            let run = fx.send(&frame);
            assert_eq!(run.action, XDP_PASS);
            assert_eq!(&run.packet[..12], &frame[..12]);
            assert_eq!(&run.packet[30..34], &[198, 18, 200, 11]);
            assert_eq!(&run.packet[34..], &frame[14..]);
            let counted = fx.plane.tunnel_counters().expect("counters");
            assert_eq!(counted[TUNNEL_STAT_UNRESOLVED as usize], 1);
            // No route at all: dropped and counted.
            let mut fx = tunnelled(
                "tun-unroutable",
                &vip,
                "198.18.250.1",
                FORWARD_IPIP,
                ("198.18.200.1", "198.18.250.1"),
            );
            let run = fx.send(&frame);
            assert_eq!(run.action, XDP_DROP);
            let counted = fx.plane.tunnel_counters().expect("counters");
            assert_eq!(counted[TUNNEL_STAT_UNROUTABLE as usize], 1);
        });
    }

    /// Sets the MTU of `v0`, the route's egress, in the namespace.
    fn set_mtu(ns: &RoutedNetns, mtu: u32) {
        let mtu = mtu.to_string();
        let status = Command::new("ip")
            .args(["-n", ns.name(), "link", "set", "v0", "mtu", &mtu])
            .status()
            .expect("run ip");
        assert!(status.success(), "ip link set v0 mtu {mtu}");
    }

    /// A TCP segment of `flow` whose IP packet is `len` bytes long (`options` bytes of IPv4
    /// options), built by `build` from a builder with the payload that makes it so.
    fn sized(
        flow: Flow,
        len: usize,
        options: usize,
        build: impl FnOnce(FrameBuilder) -> FrameBuilder,
    ) -> Vec<u8> {
        let ip = if flow.src.is_ipv4() { 20 + options } else { 40 };
        let payload: Vec<u8> = (0..len - ip - 20).map(|i| (i * 7 + 3) as u8).collect();
        let frame = build(FrameBuilder::new(flow).tcp_flags(ACK).payload(&payload)).build();
        assert_eq!(frame.len() - link_len(&frame), len, "the packet's length");
        frame
    }

    /// The length of a frame's link-layer header: 14, or 18 with a VLAN tag.
    fn link_len(frame: &[u8]) -> usize {
        match u16::from_be_bytes([frame[12], frame[13]]) {
            0x8100 | 0x88a8 => 18,
            _ => 14,
        }
    }

    /// The link-layer header of the answer to `frame`: the MACs swapped, a VLAN tag and the
    /// EtherType as they came.
    fn reversed_link(frame: &[u8]) -> Vec<u8> {
        let l2 = link_len(frame);
        [&frame[6..12], &frame[0..6], &frame[12..l2]].concat()
    }

    /// The frame the program must answer the IPv4 `frame` with: "fragmentation needed"
    /// (type 3, code 4) with next-hop MTU `mtu`, from the client's destination to the
    /// client, TTL 64, precedence "internetwork control", quoting the client's IP header and
    /// the 8 bytes after it.
    fn fragmentation_needed(frame: &[u8], mtu: u16) -> Vec<u8> {
        let client = &frame[link_len(frame)..];
        let quote = &client[..usize::from(client[0] & 0x0f) * 4 + 8];
        let mut icmp = vec![3, 4, 0, 0, 0, 0];
        icmp.extend_from_slice(&mtu.to_be_bytes());
        icmp.extend_from_slice(quote);
        let sum = checksum(&icmp);
        icmp[2..4].copy_from_slice(&sum.to_be_bytes());
        let total = (20 + icmp.len()) as u16;
        let mut ip = vec![0x45, 0xc0];
        ip.extend_from_slice(&total.to_be_bytes());
        ip.extend_from_slice(&[0, 0, 0, 0, 64, 1, 0, 0]);
        ip.extend_from_slice(&client[16..20]);
        ip.extend_from_slice(&client[12..16]);
        let sum = checksum(&ip);
        ip[10..12].copy_from_slice(&sum.to_be_bytes());
        [reversed_link(frame), ip, icmp].concat()
    }

    /// The frame the program must answer the IPv6 `frame` with: "packet too big" (type 2)
    /// with MTU `mtu`, from the client's destination to the client, hop limit 64, quoting
    /// the client's packet up to 1232 bytes (the error within 1280), its checksum over the
    /// pseudo-header.
    fn packet_too_big(frame: &[u8], mtu: u32) -> Vec<u8> {
        let client = &frame[link_len(frame)..];
        let quote = &client[..client.len().min(1232)];
        let mut icmp = vec![2, 0, 0, 0];
        icmp.extend_from_slice(&mtu.to_be_bytes());
        icmp.extend_from_slice(quote);
        let (src, dst) = (&client[24..40], &client[8..24]);
        let length = (icmp.len() as u32).to_be_bytes();
        let pseudo = [src, dst, &length, &[0, 0, 0, 58], &icmp].concat();
        let sum = checksum(&pseudo);
        icmp[2..4].copy_from_slice(&sum.to_be_bytes());
        let mut ip = vec![0x60, 0, 0, 0];
        ip.extend_from_slice(&(icmp.len() as u16).to_be_bytes());
        ip.extend_from_slice(&[58, 64]);
        ip.extend_from_slice(src);
        ip.extend_from_slice(dst);
        [reversed_link(frame), ip, icmp].concat()
    }

    /// Asserts that `run` answered with `expected`, an ICMP error, out of the interface the
    /// frame came in: readable checks of the fields first, then every byte.
    fn assert_answered(run: &TestRun, expected: &[u8], what: &str) {
        assert_eq!(run.action, XDP_TX, "{what}: sent back where it came from");
        let l2 = link_len(expected);
        let (got, want) = (&run.packet, expected);
        assert_eq!(got.len(), want.len(), "{what}: length of the error");
        assert_eq!(got[..l2], want[..l2], "{what}: link-layer header");
        let ip = if want[l2] >> 4 == 4 { 20 } else { 40 };
        assert_eq!(got[l2..l2 + ip], want[l2..l2 + ip], "{what}: IP header");
        let icmp = l2 + ip;
        assert_eq!(
            got[icmp..icmp + 8],
            want[icmp..icmp + 8],
            "{what}: ICMP header"
        );
        assert_eq!(got[icmp + 8..], want[icmp + 8..], "{what}: the quote");
    }

    /// The tunnel counters of `fx`'s data plane.
    fn tunnel_counted(fx: &Fixture) -> [u64; 4] {
        let counted = fx.plane.tunnel_counters().expect("counters");
        [
            counted[TUNNEL_STAT_TOO_BIG as usize],
            counted[TUNNEL_STAT_FAILED as usize],
            counted[TUNNEL_STAT_UNROUTABLE as usize],
            counted[TUNNEL_STAT_UNRESOLVED as usize],
        ]
    }

    /// Sends a packet of `flow` that fills the route's MTU exactly once encapsulated (`mtu`,
    /// `overhead`): it is encapsulated as always.
    fn encapsulated_whole(
        fx: &mut Fixture,
        flow: Flow,
        (mtu, overhead): (usize, usize),
        what: &str,
    ) {
        let frame = sized(flow, mtu - overhead, 0, |b| b);
        let run = fx.send(&frame);
        assert_eq!(run.action, XDP_REDIRECT, "{what}");
        assert_eq!(run.packet.len(), 14 + mtu, "{what}");
        assert_eq!(&run.packet[14 + overhead..], &frame[14..], "{what}");
    }

    #[test]
    fn an_ipv4_packet_too_big_once_encapsulated_gets_fragmentation_needed() {
        let ns = RoutedNetns::new("mtu4");
        set_mtu(&ns, 1300);
        ns.enter(|| {
            for (mode, overhead) in [(FORWARD_IPIP, 20usize), (FORWARD_GUE, 28)] {
                let what = |case: &str| format!("mode {mode}, {case}");
                let mut fx = tunnelled(
                    &format!("mtu4-{mode}"),
                    &format!("{VIP4}:80/tcp"),
                    "198.18.200.10",
                    mode,
                    ("198.18.200.1", "198.18.200.10"),
                );
                let fits = 1300 - overhead;
                let flow = Flow::new(Transport::Tcp, CLIENT4, 40_400, VIP4, 80);
                // Exactly the MTU once encapsulated: encapsulated as always.
                encapsulated_whole(&mut fx, flow, (1300, overhead), &what("fits"));
                // One byte more: "fragmentation needed", the MTU that leaves room for the
                // outer headers.
                let frame = sized(flow, fits + 1, 0, |b| b);
                let run = fx.send(&frame);
                let expected = fragmentation_needed(&frame, fits as u16);
                assert_answered(&run, &expected, &what("one byte too big"));
                assert_eq!(tunnel_counted(&fx), [1, 0, 0, 0], "{}", what("counted"));
                // A VLAN tag is kept; IPv4 options are quoted with the header.
                let tagged = Flow::new(Transport::Tcp, CLIENT4, 40_401, VIP4, 80);
                let frame = sized(tagged, 1400, 4, |b| {
                    b.tag(0x8100, 7).ipv4_options(&[1, 1, 1, 1])
                });
                let run = fx.send(&frame);
                assert_answered(
                    &run,
                    &fragmentation_needed(&frame, fits as u16),
                    &what("tagged, with options"),
                );
                assert_eq!(&run.packet[12..18], &frame[12..18], "{}", what("the tag"));
                assert_eq!(run.packet.len(), 18 + 20 + 8 + 24 + 8);
                assert_eq!(tunnel_counted(&fx), [2, 0, 0, 0], "{}", what("counted"));
                // Without Don't Fragment the client must not get the error (RFC 1191), and
                // the packet cannot be fragmented here: dropped, counted.
                let loose = Flow::new(Transport::Tcp, CLIENT4, 40_402, VIP4, 80);
                let frame = sized(loose, fits + 1, 0, |b| b.ipv4_flags_fragment(0));
                let run = fx.send(&frame);
                assert_eq!(run.action, XDP_DROP, "{}", what("no DF"));
                assert_eq!(tunnel_counted(&fx), [3, 0, 0, 0], "{}", what("counted"));
            }
        });
    }

    #[test]
    fn an_ipv6_packet_too_big_once_encapsulated_gets_packet_too_big() {
        let ns = RoutedNetns::new("mtu6");
        set_mtu(&ns, 1400);
        ns.enter(|| {
            for (mode, overhead) in [(FORWARD_IPIP, 40usize), (FORWARD_GUE, 48)] {
                let what = |case: &str| format!("mode {mode}, {case}");
                let mut fx = tunnelled(
                    &format!("mtu6-{mode}"),
                    &format!("[{VIP6}]:80/tcp"),
                    "2001:db8:200::10",
                    mode,
                    ("2001:db8:200::1", "2001:db8:200::10"),
                );
                let fits = 1400 - overhead;
                let flow = Flow::new(Transport::Tcp, CLIENT6, 40_500, VIP6, 80);
                encapsulated_whole(&mut fx, flow, (1400, overhead), &what("fits"));
                // One byte more: "packet too big", quoting 1232 bytes of it.
                let frame = sized(flow, fits + 1, 0, |b| b);
                let run = fx.send(&frame);
                assert_answered(
                    &run,
                    &packet_too_big(&frame, fits as u32),
                    &what("one byte too big"),
                );
                assert_eq!(run.packet.len(), 14 + 1280, "{}", what("within 1280"));
                let tagged = Flow::new(Transport::Tcp, CLIENT6, 40_501, VIP6, 80);
                let frame = sized(tagged, 1500, 0, |b| b.tag(0x88a8, 9));
                let run = fx.send(&frame);
                assert_answered(&run, &packet_too_big(&frame, fits as u32), &what("tagged"));
                assert_eq!(tunnel_counted(&fx), [2, 0, 0, 0], "{}", what("counted"));
            }
        });
        // A route whose MTU is below IPv6's minimum (a locked metric): the whole packet fits
        // in the error and is quoted, its odd length summed with a zero byte after it.
        let status = Command::new("ip")
            .args([
                "-n",
                ns.name(),
                "-6",
                "route",
                "add",
                "2001:db8:200::10/128",
            ])
            .args(["dev", "v0", "mtu", "lock", "1000"])
            .status()
            .expect("run ip");
        assert!(status.success(), "the route with MTU 1000");
        ns.enter(|| {
            let mut fx = tunnelled(
                "mtu6-short",
                &format!("[{VIP6}]:80/tcp"),
                "2001:db8:200::10",
                FORWARD_IPIP,
                ("2001:db8:200::1", "2001:db8:200::10"),
            );
            let flow = Flow::new(Transport::Tcp, CLIENT6, 40_502, VIP6, 80);
            let frame = sized(flow, 963, 0, |b| b);
            let run = fx.send(&frame);
            assert_answered(&run, &packet_too_big(&frame, 960), "MTU 1000, quoted whole");
            assert_eq!(run.packet.len(), 14 + 48 + 963);
        });
    }

    /// A data plane pinned by a build with three tunnel counters: the program takes its map
    /// over as it is, the error is still sent, and the counter it has no entry for reads as
    /// 0 without failing the reads of the others.
    #[test]
    fn an_older_data_planes_three_tunnel_counters_are_taken_over() {
        use aya::maps::MapData;
        use balancer_user::dataplane::object::OBJECT;

        let ns = RoutedNetns::new("mtuold");
        set_mtu(&ns, 1300);
        ns.enter(|| {
            let plane = TestPlane::load_over("mtu-older", CONNTRACK_ENTRIES, |pins| {
                std::fs::create_dir_all(pins.maps()).expect("the pin directory");
                aya::EbpfLoader::new()
                    .default_map_pin_directory(pins.maps())
                    .map_max_entries("TUNNEL_STATS", 3)
                    .load(OBJECT)
                    .expect("pin the maps as an older build did");
            });
            let pinned = MapData::from_pin(plane.maps_dir().join("TUNNEL_STATS"))
                .expect("the pinned counters");
            assert_eq!(pinned.info().expect("map info").max_entries(), 3);
            let mut fx = tunnelled_on(
                Fixture::on(plane, CONNTRACK_ENTRIES),
                &format!("{VIP4}:80/tcp"),
                "198.18.200.10",
                FORWARD_IPIP,
                ("198.18.200.1", "198.18.200.10"),
            );
            let flow = Flow::new(Transport::Tcp, CLIENT4, 40_600, VIP4, 80);
            let frame = sized(flow, 1281, 0, |b| b);
            let run = fx.send(&frame);
            assert_answered(&run, &fragmentation_needed(&frame, 1280), "older map");
            assert_eq!(tunnel_counted(&fx), [0, 0, 0, 0]);
            let globals = fx.plane.global_counters().expect("the global counters");
            assert_eq!(globals.tunnel.too_big, 0);
            // The counters it has still count: the backend's route turned into a blackhole.
            let status = Command::new("ip")
                .args([
                    "-n",
                    ns.name(),
                    "route",
                    "add",
                    "blackhole",
                    "198.18.200.10/32",
                ])
                .status()
                .expect("run ip");
            assert!(status.success(), "the blackhole route");
            let run = fx.send(&sized(flow, 100, 0, |b| b));
            assert_eq!(run.action, XDP_DROP);
            assert_eq!(tunnel_counted(&fx), [0, 0, 1, 0]);
        });
    }

    /// A `nat` client's packet longer than the route's MTU to its backend: "fragmentation
    /// needed" / "packet too big" from the VIP with the route's MTU (nothing is added to the
    /// packet), before anything is rewritten; one that fits is rewritten and sent.
    #[test]
    fn a_nat_packet_too_big_for_the_route_gets_the_error_from_the_vip() {
        let ns = RoutedNetns::new("mtunat");
        set_mtu(&ns, 1300);
        ns.enter(|| {
            let cases = [
                (VIP4, crate::nat::NAT_CLIENT4, "198.18.200.10"),
                (VIP6, crate::nat::NAT_CLIENT6, "2001:db8:200::10"),
            ];
            for (i, (vip, client, backend)) in cases.into_iter().enumerate() {
                let what = |case: &str| format!("{vip}: {case}");
                let mut fx = crate::nat::translated(&format!("mtunat{i}"), vip, backend, 6);
                let flow = Flow::new(Transport::Tcp, client, 40_700, vip, 80);
                let run = fx.send(&sized(flow, 1300, 0, |b| b));
                assert_eq!(run.action, XDP_REDIRECT, "{}", what("fits"));
                assert_eq!(run.packet.len(), 14 + 1300, "{}", what("fits"));
                let frame = sized(flow, 1301, 0, |b| b);
                let run = fx.send(&frame);
                let expected = match vip == VIP4 {
                    true => fragmentation_needed(&frame, 1300),
                    false => packet_too_big(&frame, 1300),
                };
                assert_answered(&run, &expected, &what("one byte too big"));
                let nat = fx.plane.global_counters().expect("counters").nat;
                assert_eq!((nat.too_big, nat.unresolved), (1, 0), "{}", what("counted"));
            }
        });
    }
}

#[path = "dataplane/nat.rs"]
mod nat;

#[path = "dataplane/fullnat.rs"]
mod fullnat;

#[path = "dataplane/sync.rs"]
mod sync;
