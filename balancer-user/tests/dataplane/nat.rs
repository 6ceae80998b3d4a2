//! `nat` forwarding: the program rewrites a client's packet to the backend's address and
//! port and routes it; a backend's reply is rewritten to come from the VIP. Each test runs
//! in a namespace of its own with known routes ([`RoutedNetns`]). Every rewritten packet
//! is compared byte for byte with the packet a sender would have built for the new
//! addresses — checksums computed from scratch by the frame builder, so the program's
//! incremental updates are checked against a full recomputation.

use std::net::IpAddr;

use balancer_common::{
    handshake_bucket, Endpoint, Reply, Rewrite, FAMILY_V4, FAMILY_V6, FORWARD_NAT,
    NAT_STAT_REPLIES, PROTO_TCP, PROTO_UDP,
};

use super::*;
use crate::support::{
    packet::{icmp_error, FrameBuilder, ETH_LEN, IPV4_LEN, RST},
    plane::XDP_REDIRECT,
    routes::{RoutedNetns, NEXT_HOP_MAC, V0_MAC},
};

/// Clients of these tests: routed via the namespace's neighbour.
pub(super) const NAT_CLIENT4: &str = "198.18.201.7";
pub(super) const NAT_CLIENT6: &str = "2001:db8:c::7";
/// The VIP's port, and the backends' (another).
pub(super) const VIP_PORT: u16 = 80;
pub(super) const BACKEND_PORT: u16 = 8080;

/// An address as the maps keep it.
pub(super) fn bytes(text: &str) -> [u8; 16] {
    let mut out = [0u8; 16];
    match text.parse::<IpAddr>().expect("address") {
        IpAddr::V4(v4) => out[..4].copy_from_slice(&v4.octets()),
        IpAddr::V6(v6) => out = v6.octets(),
    }
    out
}

pub(super) fn family(addr: &str) -> u8 {
    if addr.contains(':') {
        FAMILY_V6
    } else {
        FAMILY_V4
    }
}

/// An endpoint (address, port, protocol) as the reply map keys it.
pub(super) fn endpoint(addr: &str, port: u16, proto: u8) -> Endpoint {
    Endpoint {
        addr: bytes(addr),
        port_be: port.to_be(),
        proto,
        family: family(addr),
    }
}

/// A fixture with service `web` on `vip` (`proto`, port [`VIP_PORT`]) and one `nat`
/// backend `backend` on [`BACKEND_PORT`], written as the daemon writes it: rewrite, then
/// the backend entry naming the mode, and its reply entry.
pub(super) fn translated(test: &str, vip: &str, backend: &str, proto: u8) -> Fixture {
    let mut fx = Fixture::new(test);
    let name = if proto == PROTO_TCP { "tcp" } else { "udp" };
    let service = match family(vip) {
        FAMILY_V4 => format!("{vip}:{VIP_PORT}/{name}"),
        _ => format!("[{vip}]:{VIP_PORT}/{name}"),
    };
    fx.add_service("web", &service, Affinity::Connection);
    let index = fx.add_backend("web", backend, "blue", 100);
    fx.publish("web");
    let rewrite = Rewrite {
        addr: bytes(backend),
        port_be: BACKEND_PORT.to_be(),
        family: family(backend),
        ..Rewrite::default()
    };
    fx.plane
        .set_rewrite(index, &rewrite)
        .expect("write the rewrite");
    fx.set_forward(index, FORWARD_NAT);
    let reply = Reply {
        vip: endpoint(vip, VIP_PORT, proto),
        backend: index,
        ..Reply::default()
    };
    fx.plane
        .set_reply(&endpoint(backend, BACKEND_PORT, proto), &reply)
        .expect("write the reply");
    fx
}

fn nat_counter(fx: &Fixture, stat: u32) -> u64 {
    let nat = fx.plane.global_counters().expect("counters").nat;
    match stat {
        NAT_STAT_REPLIES => nat.replies,
        _ => unreachable!("only replies are read by index"),
    }
}

/// (VIP, client, backend, protocol) of each family and protocol.
pub(super) const FAMILIES: [(&str, &str, &str, Transport); 4] = [
    (VIP4, NAT_CLIENT4, "198.18.200.10", Transport::Tcp),
    (VIP4, NAT_CLIENT4, "198.18.200.10", Transport::Udp),
    (VIP6, NAT_CLIENT6, "2001:db8:200::10", Transport::Tcp),
    (VIP6, NAT_CLIENT6, "2001:db8:200::10", Transport::Udp),
];

/// Checks that `out` is `expected` sent to the namespace's next hop out of `v0`.
pub(super) fn routed_as(out: &[u8], expected: &[u8], what: &str) {
    assert_eq!(&out[..6], &NEXT_HOP_MAC, "{what}: next hop MAC");
    assert_eq!(&out[6..12], &V0_MAC, "{what}: v0's MAC");
    assert_eq!(&out[12..], &expected[12..], "{what}: rewritten packet");
}

#[test]
fn a_clients_packet_is_rewritten_to_the_backend_and_routed() {
    let ns = RoutedNetns::new("nat-fwd");
    ns.enter(|| {
        for (i, (vip, client, backend, transport)) in FAMILIES.into_iter().enumerate() {
            let what = format!("{transport:?} to {vip}");
            let mut fx = translated(&format!("nat-fwd{i}"), vip, backend, transport.number());
            let flow = Flow::new(transport, client, 40_100, vip, VIP_PORT);
            let rewritten = Flow::new(transport, client, 40_100, backend, BACKEND_PORT);
            for flags in [SYN, ACK, ACK | PSH] {
                let frame = FrameBuilder::new(flow).tcp_flags(flags).build();
                let run = fx.send(&frame);
                assert_eq!(run.action, XDP_REDIRECT, "{what}: out of v0");
                let expected = FrameBuilder::new(rewritten).tcp_flags(flags).build();
                routed_as(&run.packet, &expected, &what);
            }
            // The flow is tracked like any other: its backend took every packet.
            let index = fx.entry("web", backend.parse().unwrap()).index;
            assert_eq!(fx.counters(index).packets, 3, "{what}");
        }
    });
}

#[test]
fn a_backends_reply_comes_from_the_vip() {
    let ns = RoutedNetns::new("nat-reply");
    ns.enter(|| {
        for (i, (vip, client, backend, transport)) in FAMILIES.into_iter().enumerate() {
            let what = format!("{transport:?} from {backend}");
            let mut fx = translated(&format!("nat-reply{i}"), vip, backend, transport.number());
            let reply = Flow::new(transport, backend, BACKEND_PORT, client, 40_100);
            let seen = Flow::new(transport, vip, VIP_PORT, client, 40_100);
            for (n, flags) in [SYN | ACK, ACK].into_iter().enumerate() {
                let frame = FrameBuilder::new(reply).tcp_flags(flags).build();
                let run = fx.send(&frame);
                assert_eq!(run.action, XDP_REDIRECT, "{what}: out of v0 to the client");
                let expected = FrameBuilder::new(seen).tcp_flags(flags).build();
                routed_as(&run.packet, &expected, &what);
                assert_eq!(nat_counter(&fx, NAT_STAT_REPLIES), n as u64 + 1, "{what}");
            }
            // A client port that is also a VIP port: the packet parses as one to a VIP
            // port, is no VIP's, and is still a reply.
            let reply = Flow::new(transport, backend, BACKEND_PORT, client, VIP_PORT);
            let seen = Flow::new(transport, vip, VIP_PORT, client, VIP_PORT);
            let run = fx.send(&reply.frame_with(ACK));
            assert_eq!(
                run.action, XDP_REDIRECT,
                "{what}: to a client on the VIP port"
            );
            routed_as(&run.packet, &seen.frame_with(ACK), &what);
        }
    });
}

#[test]
fn an_ipv4_udp_datagram_without_checksum_keeps_none() {
    let ns = RoutedNetns::new("nat-udp0");
    ns.enter(|| {
        let mut fx = translated("nat-udp0", VIP4, "198.18.200.10", PROTO_UDP);
        let flow = Flow::new(Transport::Udp, NAT_CLIENT4, 40_100, VIP4, VIP_PORT);
        let mut frame = flow.frame();
        let check = ETH_LEN + IPV4_LEN + 6;
        frame[check..check + 2].copy_from_slice(&[0, 0]);
        let run = fx.send(&frame);
        assert_eq!(run.action, XDP_REDIRECT);
        let rewritten = Flow::new(Transport::Udp, NAT_CLIENT4, 40_100, "198.18.200.10", 8080);
        let mut expected = rewritten.frame();
        expected[check..check + 2].copy_from_slice(&[0, 0]);
        routed_as(&run.packet, &expected, "UDP without checksum");
    });
}

#[test]
fn what_is_no_clients_reply_is_left_alone() {
    let ns = RoutedNetns::new("nat-alone");
    ns.enter(|| {
        let mut fx = translated("nat-alone", VIP4, "198.18.200.10", PROTO_TCP);
        let before = fx.plane.global_counters().expect("counters");
        // A health check's answer: from the backend's port to this host's own address.
        let to_host = Flow::new(
            Transport::Tcp,
            "198.18.200.10",
            BACKEND_PORT,
            "198.18.200.1",
            40_000,
        );
        // Another host's packet from the same port; the backend from another port; the
        // backend's port over UDP, which no UDP service uses.
        let others = [
            Flow::new(
                Transport::Tcp,
                "198.18.200.12",
                BACKEND_PORT,
                NAT_CLIENT4,
                40_000,
            ),
            Flow::new(
                Transport::Tcp,
                "198.18.200.10",
                BACKEND_PORT + 1,
                NAT_CLIENT4,
                40_000,
            ),
            Flow::new(
                Transport::Udp,
                "198.18.200.10",
                BACKEND_PORT,
                NAT_CLIENT4,
                40_000,
            ),
        ];
        for flow in std::iter::once(to_host).chain(others) {
            let frame = flow.frame_with(ACK);
            let run = fx.send(&frame);
            assert_eq!(run.action, XDP_PASS, "{flow:?}");
            assert_eq!(run.packet, frame, "{flow:?} untouched");
        }
        let after = fx.plane.global_counters().expect("counters");
        assert_eq!(after.nat, before.nat, "nothing counted as NAT");
        assert_eq!(after.passed, before.passed + 4, "each passed as not ours");
    });
}

#[test]
fn a_removed_reply_entry_closes_its_port_and_replies_pass_untouched() {
    let ns = RoutedNetns::new("nat-close");
    ns.enter(|| {
        let mut fx = translated("nat-close", VIP4, "198.18.200.10", PROTO_TCP);
        // A second backend on the same port keeps it open while it is there.
        let second = endpoint("198.18.200.13", BACKEND_PORT, PROTO_TCP);
        let reply = Reply {
            vip: endpoint(VIP4, VIP_PORT, PROTO_TCP),
            backend: 7,
            ..Reply::default()
        };
        fx.plane.set_reply(&second, &reply).expect("second reply");
        let first = endpoint("198.18.200.10", BACKEND_PORT, PROTO_TCP);
        fx.plane.remove_reply(&first).expect("remove the first");
        let reply = Flow::new(
            Transport::Tcp,
            "198.18.200.13",
            BACKEND_PORT,
            NAT_CLIENT4,
            40_000,
        );
        assert_eq!(
            fx.send(&reply.frame_with(ACK)).action,
            XDP_REDIRECT,
            "still open"
        );
        let gone = Flow::new(
            Transport::Tcp,
            "198.18.200.10",
            BACKEND_PORT,
            NAT_CLIENT4,
            40_000,
        );
        let frame = gone.frame_with(ACK);
        assert_eq!(
            fx.send(&frame).packet,
            frame,
            "a removed entry's replies: untouched"
        );
        fx.plane.remove_reply(&second).expect("remove the second");
        let frame = reply.frame_with(ACK);
        let run = fx.send(&frame);
        assert_eq!((run.action, run.packet), (XDP_PASS, frame), "port closed");
        assert!(fx.plane.replies().expect("replies").is_empty());
    });
}

#[test]
fn an_unresolved_next_hop_goes_to_the_kernel_rewritten_and_no_route_is_dropped() {
    let ns = RoutedNetns::new("nat-hops");
    ns.enter(|| {
        let mut fx = translated("nat-hops1", VIP4, "198.18.200.11", PROTO_TCP);
        let flow = Flow::new(Transport::Tcp, NAT_CLIENT4, 40_100, VIP4, VIP_PORT);
        let run = fx.send(&flow.frame());
        assert_eq!(
            run.action, XDP_PASS,
            "to the kernel, which resolves the neighbour"
        );
        let rewritten = Flow::new(Transport::Tcp, NAT_CLIENT4, 40_100, "198.18.200.11", 8080);
        assert_eq!(
            run.packet,
            rewritten.frame(),
            "rewritten, MACs as they came"
        );
        assert_eq!(fx.plane.global_counters().unwrap().nat.unresolved, 1);

        let mut fx = translated("nat-hops2", VIP4, "198.18.250.10", PROTO_TCP);
        assert_eq!(fx.send(&flow.frame()).action, XDP_DROP, "no route");
        assert_eq!(fx.plane.global_counters().unwrap().nat.unroutable, 1);
    });
}

/// The ICMP error `kind`/`code` from `from` to `client`, quoting the client's packet `flow`
/// (first `cut` bytes of its IP packet, all when `None`).
pub(super) fn error_about(
    from: &str,
    client: &str,
    kind: u8,
    code: u8,
    flow: Flow,
    cut: Option<usize>,
) -> Vec<u8> {
    let packet = flow.frame_with(ACK)[ETH_LEN..].to_vec();
    let quote = &packet[..cut.unwrap_or(packet.len()).min(packet.len())];
    icmp_error(
        from.parse().unwrap(),
        client.parse().unwrap(),
        kind,
        code,
        [0, 0, 0x05, 0x00],
        quote,
    )
}

#[test]
fn an_icmp_error_from_a_backend_reaches_the_client_about_the_vip() {
    let ns = RoutedNetns::new("nat-icmp");
    ns.enter(|| {
        // (VIP, client, backend, protocol, ICMP type/code: port unreachable, packet too
        // big, and a quote cut after 8 bytes of TCP)
        let cases = [
            (
                VIP4,
                NAT_CLIENT4,
                "198.18.200.10",
                Transport::Udp,
                (3, 3),
                None,
            ),
            (
                VIP4,
                NAT_CLIENT4,
                "198.18.200.10",
                Transport::Tcp,
                (3, 4),
                Some(IPV4_LEN + 8),
            ),
            (
                VIP6,
                NAT_CLIENT6,
                "2001:db8:200::10",
                Transport::Udp,
                (1, 4),
                None,
            ),
            (
                VIP6,
                NAT_CLIENT6,
                "2001:db8:200::10",
                Transport::Tcp,
                (2, 0),
                None,
            ),
        ];
        for (i, (vip, client, backend, transport, (kind, code), cut)) in
            cases.into_iter().enumerate()
        {
            let what = format!("ICMP {kind}/{code} about {transport:?} to {backend}");
            let mut fx = translated(&format!("nat-icmp{i}"), vip, backend, transport.number());
            let sent = Flow::new(transport, client, 40_100, backend, BACKEND_PORT);
            let seen = Flow::new(transport, client, 40_100, vip, VIP_PORT);
            let frame = error_about(backend, client, kind, code, sent, cut);
            let run = fx.send(&frame);
            assert_eq!(
                run.action, XDP_PASS,
                "{what}: to the kernel, which forwards it"
            );
            let expected = error_about(vip, client, kind, code, seen, cut);
            assert_eq!(run.packet, expected, "{what}: rewritten");
            assert_eq!(fx.plane.global_counters().unwrap().nat.errors, 1, "{what}");
        }
    });
}

#[test]
fn an_icmp_error_from_a_router_keeps_its_source_and_others_pass() {
    let ns = RoutedNetns::new("nat-router");
    ns.enter(|| {
        let mut fx = translated("nat-router", VIP4, "198.18.200.10", PROTO_UDP);
        let sent = Flow::new(
            Transport::Udp,
            NAT_CLIENT4,
            40_100,
            "198.18.200.10",
            BACKEND_PORT,
        );
        let seen = Flow::new(Transport::Udp, NAT_CLIENT4, 40_100, VIP4, VIP_PORT);
        // Time exceeded from a router on the way: the quote is the client's again, the
        // router stays the source.
        let frame = error_about("198.18.200.99", NAT_CLIENT4, 11, 0, sent, None);
        let run = fx.send(&frame);
        assert_eq!(run.action, XDP_PASS);
        let expected = error_about("198.18.200.99", NAT_CLIENT4, 11, 0, seen, None);
        assert_eq!(run.packet, expected, "time exceeded from a router");
        // Untouched: an error about another port of the backend, an echo request.
        let other = Flow::new(
            Transport::Udp,
            NAT_CLIENT4,
            40_100,
            "198.18.200.10",
            BACKEND_PORT + 1,
        );
        let untouched = [
            error_about("198.18.200.10", NAT_CLIENT4, 3, 3, other, None),
            error_about("198.18.200.10", NAT_CLIENT4, 8, 0, sent, None),
        ];
        for frame in untouched {
            let run = fx.send(&frame);
            assert_eq!((run.action, &run.packet), (XDP_PASS, &frame));
        }
        assert_eq!(fx.plane.global_counters().unwrap().nat.errors, 1);
    });
}

#[test]
fn a_backends_replies_are_counted_and_its_handshakes_timed() {
    let ns = RoutedNetns::new("nat-answers");
    ns.enter(|| {
        let mut fx = translated("nat-answers", VIP4, "198.18.200.10", PROTO_TCP);
        let index = fx.entry("web", "198.18.200.10".parse().unwrap()).index;
        let to_vip = Flow::new(Transport::Tcp, NAT_CLIENT4, 40_100, VIP4, VIP_PORT);
        let reply = Flow::new(
            Transport::Tcp,
            "198.18.200.10",
            BACKEND_PORT,
            NAT_CLIENT4,
            40_100,
        );
        fx.send(&to_vip.frame_with(SYN));
        let syn_ack = reply.frame_with(SYN | ACK);
        assert_eq!(fx.send(&syn_ack).action, XDP_REDIRECT);
        let stats = fx.plane.reply_counters(index).expect("reply counters");
        assert_eq!((stats.packets, stats.bytes), (1, syn_ack.len() as u64));
        assert_eq!(stats.handshakes, 1, "the SYN-ACK of a SYN the LB forwarded");
        assert!(
            stats.handshake_ns > 0 && stats.handshake_ns < 1_000_000_000,
            "timed: {} ns",
            stats.handshake_ns
        );
        assert_eq!(stats.buckets.iter().sum::<u64>(), 1);
        // Once the client's ACK completed the handshake, a SYN-ACK is not timed again; a
        // SYN-ACK of a flow the LB never saw is not timed either.
        fx.send(&to_vip.frame_with(ACK));
        fx.send(&syn_ack);
        fx.send(
            &Flow {
                dport: 40_101,
                ..reply
            }
            .frame_with(SYN | ACK),
        );
        // A reset from the backend.
        fx.send(&reply.frame_with(RST | ACK));
        let stats = fx.plane.reply_counters(index).expect("reply counters");
        assert_eq!(stats.packets, 4);
        assert_eq!(stats.handshakes, 1);
        assert_eq!(stats.resets, 1);
    });
}

#[test]
fn a_handshake_is_timed_from_the_clients_first_syn() {
    // Longer than the second after which a packet refreshes its flow's last-seen time.
    const WAITED: std::time::Duration = std::time::Duration::from_millis(1200);
    let waited_ns = WAITED.as_nanos() as u64;
    let ns = RoutedNetns::new("nat-first-syn");
    ns.enter(|| {
        let mut fx = translated("nat-first-syn", VIP4, "198.18.200.10", PROTO_TCP);
        let index = fx.entry("web", "198.18.200.10".parse().unwrap()).index;
        let to_vip = Flow::new(Transport::Tcp, NAT_CLIENT4, 40_200, VIP4, VIP_PORT);
        let reply = Flow::new(
            Transport::Tcp,
            "198.18.200.10",
            BACKEND_PORT,
            NAT_CLIENT4,
            40_200,
        );
        let syn = |seq| to_vip.builder().tcp_flags(SYN).tcp_seq(seq).build();
        let syn_ack = reply.frame_with(SYN | ACK);
        // The backend dropped the first SYN (a full accept queue); the client repeats it.
        fx.send(&syn(1000));
        std::thread::sleep(WAITED);
        assert_eq!(fx.send(&syn(1000)).action, XDP_REDIRECT, "the retransmit");
        fx.send(&syn_ack);
        let first = fx.plane.reply_counters(index).expect("reply counters");
        assert_eq!(first.handshakes, 1);
        assert!(
            first.handshake_ns >= waited_ns,
            "timed from the first SYN: {} ns",
            first.handshake_ns
        );
        assert_eq!(
            first.buckets[handshake_bucket(first.handshake_ns)],
            1,
            "{first:?}"
        );
        // A SYN of another sequence number is a new connection on the same port: timed
        // from that SYN, not from the first connection's.
        std::thread::sleep(WAITED);
        fx.send(&syn(2000));
        fx.send(&syn_ack);
        let both = fx.plane.reply_counters(index).expect("reply counters");
        assert_eq!(both.handshakes, 2);
        let second = both.handshake_ns - first.handshake_ns;
        assert!(
            second < waited_ns,
            "timed from the new connection's SYN: {second} ns"
        );
        // The client's ACK ends the handshake: the flow is established, its stamp gone.
        fx.send(&to_vip.builder().tcp_flags(ACK).tcp_seq(2001).build());
        let key = to_vip.key();
        let established = fx.entries("CONNTRACK")[&key];
        assert_eq!(
            (established.closed_ns, established.closed_by),
            (0, 0),
            "{established:?}"
        );
    });
}

/// Found by the fuzz: an ICMP error whose datagram (by its IP length) ends before the
/// quoted ports, the frame going on with bytes that would be them, is no error about a
/// flow: passed untouched, not counted (it was rewritten past its end).
#[test]
fn an_icmp_error_whose_datagram_ends_before_the_quoted_ports_is_left_alone() {
    let ns = RoutedNetns::new("nat-icmp-short");
    ns.enter(|| {
        let cases = [
            (VIP4, NAT_CLIENT4, "198.18.200.10", 3),
            (VIP6, NAT_CLIENT6, "2001:db8:200::10", 1),
        ];
        for (i, (vip, client, backend, kind)) in cases.into_iter().enumerate() {
            let what = format!("ICMP error about {backend}");
            let mut fx = translated(&format!("nat-icmp-short{i}"), vip, backend, PROTO_UDP);
            let sent = Flow::new(Transport::Udp, client, 40_100, backend, BACKEND_PORT);
            let mut frame = error_about(backend, client, kind, 4, sent, None);
            // The datagram: the IP header, the ICMP header and the quoted IP header only.
            if vip.contains(':') {
                let payload = (8 + 40u16).to_be_bytes();
                frame[ETH_LEN + 4..ETH_LEN + 6].copy_from_slice(&payload);
            } else {
                let total = (IPV4_LEN as u16 + 8 + 20).to_be_bytes();
                frame[ETH_LEN + 2..ETH_LEN + 4].copy_from_slice(&total);
            }
            let run = fx.send(&frame);
            assert_eq!((run.action, &run.packet), (XDP_PASS, &frame), "{what}");
            assert_eq!(fx.plane.global_counters().unwrap().nat.errors, 0, "{what}");
        }
    });
}
