//! `fullnat` forwarding: a client's packet leaves rewritten to the backend's address and
//! port and from a pool address and port that the program allocates for its flow; a reply
//! to that pool port goes back to the client, from the VIP. Rewritten packets are compared
//! byte for byte with packets built from scratch (checksums recomputed), as for `nat`.

use balancer_common::{FlowKey, Rewrite, FORWARD_FULLNAT, PROTO_TCP, PROTO_UDP, REPLY_FULLNAT};
use balancer_user::dataplane::fullnat::{Ending, Pool};

use super::nat::{
    bytes, endpoint, error_about, routed_as, translated, BACKEND_PORT, FAMILIES, NAT_CLIENT4,
    NAT_CLIENT6, VIP_PORT,
};
use super::*;
use crate::support::{
    packet::{FrameBuilder, FIN},
    plane::XDP_REDIRECT,
    routes::RoutedNetns,
};

/// The pool address of each family.
const POOL4: &str = "198.18.202.1";
const POOL6: &str = "2001:db8:202::1";

fn pool_of(addr: &str) -> &'static str {
    if addr.contains(':') {
        POOL6
    } else {
        POOL4
    }
}

/// The `nat` fixture of [`translated`] made `fullnat`: the rewrite names the pool (`ports`,
/// first and last), the backend entry the mode, the reply entry full NAT.
fn fullnat(test: &str, vip: &str, backend: &str, proto: u8, ports: [u16; 2]) -> Fixture {
    let mut fx = translated(test, vip, backend, proto);
    let index = fx.entry("web", backend.parse().unwrap()).index;
    let rewrite = Rewrite {
        source: bytes(pool_of(vip)),
        ports,
        ..fx.plane.rewrite(index).expect("rewrite")
    };
    fx.plane.set_rewrite(index, &rewrite).expect("rewrite");
    fx.set_forward(index, FORWARD_FULLNAT);
    let at = endpoint(backend, BACKEND_PORT, proto);
    let (_, mut reply) = fx
        .plane
        .replies()
        .expect("replies")
        .into_iter()
        .find(|(e, _)| *e == at)
        .expect("the reply entry");
    reply.flags = REPLY_FULLNAT;
    fx.plane.set_reply(&at, &reply).expect("reply");
    fx
}

fn pool(fx: &Fixture) -> Pool {
    Pool::open(&fx.plane.maps_dir()).expect("open the full-NAT maps")
}

/// The pool port the flow from `client`:`port` was given.
fn pool_port(fx: &Fixture, client: &str, port: u16) -> u16 {
    let translations = pool(fx).translations().expect("translations");
    let (_, t) = translations
        .iter()
        .find(|(k, _)| k.src == bytes(client) && k.sport_be == port.to_be())
        .expect("the flow's translation");
    u16::from_be(t.port_be)
}

#[test]
fn a_flow_leaves_from_its_pool_port_and_replies_return_to_its_client() {
    let ns = RoutedNetns::new("fnat-both");
    ns.enter(|| {
        for (i, (vip, client, backend, transport)) in FAMILIES.into_iter().enumerate() {
            let what = format!("{transport:?} to {vip}");
            let proto = transport.number();
            let mut fx = fullnat(&format!("fnat-both{i}"), vip, backend, proto, [2000, 2999]);
            let flow = Flow::new(transport, client, 40_100, vip, VIP_PORT);
            let pool_addr = pool_of(vip);
            let seen = Flow::new(transport, vip, VIP_PORT, client, 40_100);
            let mut port = None;
            // The handshake and a data packet, each answered by the backend (to the pool
            // port: the reply goes to the client, from the VIP).
            for (flags, answer) in [(SYN, SYN | ACK), (ACK, ACK), (ACK | PSH, ACK)] {
                let run = fx.send(&FrameBuilder::new(flow).tcp_flags(flags).build());
                assert_eq!(run.action, XDP_REDIRECT, "{what}: out of v0");
                let given = pool_port(&fx, client, 40_100);
                assert!((2000..=2999).contains(&given), "{what}: port {given}");
                assert_eq!(
                    *port.get_or_insert(given),
                    given,
                    "{what}: one port per flow"
                );
                let rewritten = Flow::new(transport, pool_addr, given, backend, BACKEND_PORT);
                let expected = FrameBuilder::new(rewritten).tcp_flags(flags).build();
                routed_as(&run.packet, &expected, &what);
                let reply = Flow::new(transport, backend, BACKEND_PORT, pool_addr, given);
                let run = fx.send(&FrameBuilder::new(reply).tcp_flags(answer).build());
                assert_eq!(run.action, XDP_REDIRECT, "{what}: reply out of v0");
                let expected = FrameBuilder::new(seen).tcp_flags(answer).build();
                routed_as(&run.packet, &expected, &what);
            }
            let given = port.expect("a port");
            // The allocation gives the flow back.
            let allocations = pool(&fx).allocations().expect("allocations");
            assert_eq!(allocations.len(), 1, "{what}");
            let (allocation, origin) = allocations[0];
            assert_eq!(
                (allocation.pool, u16::from_be(allocation.pool_port_be)),
                (bytes(pool_addr), given),
                "{what}"
            );
            assert_eq!(
                (origin.src, u16::from_be(origin.sport_be), origin.dst),
                (bytes(client), 40_100, bytes(vip)),
                "{what}"
            );
            let index = fx.entry("web", backend.parse().unwrap()).index;
            let answers = fx.plane.reply_counters(index).expect("reply counters");
            assert_eq!(answers.packets, 3, "{what}: counted for the backend");
            if transport == Transport::Tcp {
                assert_eq!(answers.handshakes, 1, "{what}: the handshake timed");
            }
            // A reply to a pool port no flow holds is none of ours.
            let stray = Flow::new(transport, backend, BACKEND_PORT, pool_addr, given + 1);
            let frame = stray.frame_with(ACK);
            let run = fx.send(&frame);
            assert_eq!((run.action, run.packet), (XDP_PASS, frame), "{what}: stray");
        }
    });
}

#[test]
fn flows_never_share_a_pool_port_and_ended_flows_free_theirs() {
    let ns = RoutedNetns::new("fnat-ports");
    ns.enter(|| {
        let backend = "198.18.200.10";
        let mut fx = fullnat("fnat-ports", VIP4, backend, PROTO_TCP, [5000, 5001]);
        let syn = |port: u16| Flow::new(Transport::Tcp, NAT_CLIENT4, port, VIP4, VIP_PORT);
        // Two ports, and the tries find both.
        let mut given = Vec::new();
        for client_port in [41_000, 41_001] {
            assert_eq!(
                fx.send(&syn(client_port).frame_with(SYN)).action,
                XDP_REDIRECT
            );
            given.push(pool_port(&fx, NAT_CLIENT4, client_port));
        }
        given.sort();
        assert_eq!(given, [5000, 5001], "each flow its own port");
        // A third flow finds none free: dropped, counted.
        assert_eq!(fx.send(&syn(41_002).frame_with(SYN)).action, XDP_DROP);
        assert_eq!(fx.plane.global_counters().unwrap().nat.exhausted, 1);
        // The first flow closes; once its linger has passed, a sweep frees its port.
        let first = pool_port(&fx, NAT_CLIENT4, 41_000);
        fx.send(&syn(41_000).frame_with(ACK | FIN));
        let ending = Ending {
            udp_idle: std::time::Duration::from_secs(120),
        };
        let now = balancer_user::dataplane::monotonic_ns();
        let swept = pool(&fx).sweep_at(ending, now).expect("sweep");
        assert_eq!((swept.active, swept.released), (2, 0), "not yet");
        let later = now + 11_000_000_000;
        let swept = pool(&fx).sweep_at(ending, later).expect("sweep");
        assert_eq!((swept.active, swept.released), (1, 1), "the closed flow's");
        // The third flow now gets the freed port; the second keeps its own.
        assert_eq!(fx.send(&syn(41_002).frame_with(SYN)).action, XDP_REDIRECT);
        assert_eq!(pool_port(&fx, NAT_CLIENT4, 41_002), first);
        let kept: Vec<FlowKey> = pool(&fx)
            .translations()
            .expect("translations")
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(kept.len(), 2);
    });
}

#[test]
fn an_icmp_error_about_a_flow_reaches_its_client_about_the_vip() {
    let ns = RoutedNetns::new("fnat-icmp");
    ns.enter(|| {
        // (family's VIP, client, backend, protocol, ICMP type/code, who sends it, quote cut)
        let cases = [
            (
                VIP4,
                NAT_CLIENT4,
                "198.18.200.10",
                Transport::Udp,
                (3, 3),
                None,
                None,
            ),
            (
                VIP4,
                NAT_CLIENT4,
                "198.18.200.10",
                Transport::Tcp,
                (3, 4),
                Some("198.18.200.99"),
                Some(28),
            ),
            (
                VIP6,
                NAT_CLIENT6,
                "2001:db8:200::10",
                Transport::Udp,
                (1, 4),
                None,
                None,
            ),
            (
                VIP6,
                NAT_CLIENT6,
                "2001:db8:200::10",
                Transport::Tcp,
                (2, 0),
                Some("2001:db8:200::99"),
                None,
            ),
        ];
        for (i, (vip, client, backend, transport, (kind, code), router, cut)) in
            cases.into_iter().enumerate()
        {
            let what = format!("ICMP {kind}/{code} about {transport:?} to {backend}");
            let proto = transport.number();
            let mut fx = fullnat(&format!("fnat-icmp{i}"), vip, backend, proto, [3000, 3999]);
            let flow = Flow::new(transport, client, 40_100, vip, VIP_PORT);
            assert_eq!(
                fx.send(&flow.frame_with(SYN)).action,
                XDP_REDIRECT,
                "{what}"
            );
            let given = pool_port(&fx, client, 40_100);
            let pool_addr = pool_of(vip);
            // The error about the packet as the backend got it, to the pool address...
            let sent = Flow::new(transport, pool_addr, given, backend, BACKEND_PORT);
            let from = router.unwrap_or(backend);
            let frame = error_about(from, pool_addr, kind, code, sent, cut);
            let run = fx.send(&frame);
            assert_eq!(
                run.action, XDP_PASS,
                "{what}: to the kernel, which forwards it"
            );
            // ... reaches the client about the packet it sent, from the VIP if the backend
            // sent it.
            let seen = Flow::new(transport, client, 40_100, vip, VIP_PORT);
            let from = router.unwrap_or(vip);
            let expected = error_about(from, client, kind, code, seen, cut);
            assert_eq!(run.packet, expected, "{what}: rewritten");
            assert_eq!(fx.plane.global_counters().unwrap().nat.errors, 1, "{what}");
            // An error about a pool port no flow holds: left alone.
            let stray = Flow::new(transport, pool_addr, given + 1, backend, BACKEND_PORT);
            let frame = error_about(backend, pool_addr, kind, code, stray, cut);
            let run = fx.send(&frame);
            assert_eq!((run.action, run.packet), (XDP_PASS, frame), "{what}: stray");
        }
    });
}

/// Found by the fuzz: an error about a flow's pool port that is addressed elsewhere than
/// the pool still leaves with right checksums (its destination was rewritten to the client
/// as if it had been the pool's).
#[test]
fn an_icmp_error_addressed_elsewhere_than_the_pool_keeps_right_checksums() {
    let ns = RoutedNetns::new("fnat-icmp-to");
    ns.enter(|| {
        let cases = [
            (VIP4, NAT_CLIENT4, "198.18.200.10", "198.18.200.50"),
            (VIP6, NAT_CLIENT6, "2001:db8:200::10", "2001:db8:200::50"),
        ];
        for (i, (vip, client, backend, elsewhere)) in cases.into_iter().enumerate() {
            let what = format!("ICMP error to {elsewhere}");
            let mut fx = fullnat(
                &format!("fnat-icmp-to{i}"),
                vip,
                backend,
                PROTO_UDP,
                [3000, 3999],
            );
            let flow = Flow::new(Transport::Udp, client, 40_100, vip, VIP_PORT);
            assert_eq!(fx.send(&flow.frame()).action, XDP_REDIRECT, "{what}");
            let given = pool_port(&fx, client, 40_100);
            let sent = Flow::new(Transport::Udp, pool_of(vip), given, backend, BACKEND_PORT);
            let frame = error_about(backend, elsewhere, 3, 3, sent, None);
            let run = fx.send(&frame);
            assert_eq!(run.action, XDP_PASS, "{what}");
            let seen = Flow::new(Transport::Udp, client, 40_100, vip, VIP_PORT);
            let expected = error_about(vip, client, 3, 3, seen, None);
            assert_eq!(run.packet, expected, "{what}: checksums as recomputed");
        }
    });
}
