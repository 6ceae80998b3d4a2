//! Flow-state sync in the data plane: the record the program writes for each new
//! connection-tracking entry (and never for an established packet), and a peer's record
//! inserted into connection tracking, which then decides the flow's backend although the
//! tables now choose another — unless this host tracks the flow itself.

use balancer_common::{FlowRecord, RECORD_REOPENED};
use balancer_user::dataplane::sync::{Import, Inserted, Ring};

use super::*;
use crate::support::{
    fixture::Fixture,
    packet::{FIN, SYN},
    plane::{TestPlane, CONNTRACK_ENTRIES},
};

/// [`split_service`] on a data plane that writes sync records.
fn syncing(test: &str) -> Fixture {
    let mut fx = Fixture::on(TestPlane::load_syncing(test), CONNTRACK_ENTRIES);
    fx.add_service("web", &format!("{VIP4}:80/tcp"), Affinity::Connection);
    fx.add_two_groups("web", &BACKENDS4);
    fx
}

/// Every record waiting in `fx`'s ring buffer.
fn records(fx: &Fixture) -> Vec<FlowRecord> {
    Ring::open(&fx.plane.maps_dir())
        .expect("open the sync ring")
        .collect()
}

/// Sends `frame` and asserts it went to backend `index`.
fn forwarded_to(fx: &mut Fixture, frame: &[u8], index: u32, what: &str) {
    let run = fx.send(frame);
    assert_forwarded(&run, frame, &fx.backend(index), XDP_TX, what);
}

/// The address of backend `index` of `web`.
fn addr_of(fx: &Fixture, index: u32) -> std::net::IpAddr {
    fx.service("web")
        .backends()
        .find(|(_, b)| b.index == index)
        .map(|(_, b)| b.addr)
        .expect("backend index in state")
}

#[test]
fn a_new_flow_writes_one_record_and_established_packets_none() {
    let mut fx = syncing("sync-record");
    let flow = Flow::new(Transport::Tcp, CLIENT4, 41_001, VIP4, 80);
    let x = fx.expected_backend("web", &flow);
    // The SYN and its retransmit: pending, no entry made, no record (a SYN flood costs
    // the sync nothing).
    forwarded_to(&mut fx, &flow.frame(), x, "SYN");
    forwarded_to(&mut fx, &flow.frame(), x, "SYN retransmit");
    assert_eq!(records(&fx), Vec::new(), "no record for a pending flow");
    // The handshake's ACK makes the entry: exactly one record, with its key and backend.
    forwarded_to(&mut fx, &flow.frame_with(ACK), x, "ACK");
    let epoch = fx.backend(x).epoch;
    let expected = FlowRecord {
        key: flow.key(),
        backend: x,
        epoch,
        flags: 0,
        reserved: 0,
    };
    assert_eq!(records(&fx), vec![expected]);
    // Established packets write nothing.
    for _ in 0..10 {
        forwarded_to(&mut fx, &flow.frame_with(ACK | PSH), x, "established");
    }
    assert_eq!(
        records(&fx),
        Vec::new(),
        "no record for established packets"
    );

    // UDP: the second datagram makes the entry and its one record.
    let udp = Flow::new(Transport::Udp, CLIENT4, 41_002, VIP4, 80);
    fx.add_service("dns", &format!("{VIP4}:80/udp"), Affinity::Connection);
    fx.add_backend("dns", "198.18.0.105", "blue", 100);
    fx.publish("dns");
    let y = fx.expected_backend("dns", &udp);
    forwarded_to(&mut fx, &udp.frame(), y, "first datagram");
    assert_eq!(records(&fx), Vec::new(), "no record for one datagram");
    for _ in 0..3 {
        forwarded_to(&mut fx, &udp.frame(), y, "datagram");
    }
    let record = records(&fx);
    assert_eq!(record.len(), 1, "{record:?}");
    assert_eq!((record[0].key, record[0].backend), (udp.key(), y));

    // A new connection on the closed flow's 5-tuple: one record, flagged reopened.
    forwarded_to(&mut fx, &flow.frame_with(FIN | ACK), x, "FIN");
    assert_eq!(records(&fx), Vec::new(), "no record for a close");
    let reopened = flow.builder().tcp_flags(SYN).tcp_seq(7).build();
    let z = fx.expected_backend("web", &flow);
    forwarded_to(&mut fx, &reopened, z, "SYN on the closed flow");
    let record = records(&fx);
    assert_eq!(record.len(), 1, "{record:?}");
    assert_eq!(
        (record[0].key, record[0].backend, record[0].flags),
        (flow.key(), z, RECORD_REOPENED)
    );
}

#[test]
fn a_data_plane_without_sync_writes_no_record() {
    let mut fx = split_service("sync-off", &format!("{VIP4}:80/tcp"), &BACKENDS4);
    let flow = Flow::new(Transport::Tcp, CLIENT4, 41_003, VIP4, 80);
    let x = fx.expected_backend("web", &flow);
    forwarded_to(&mut fx, &flow.frame(), x, "SYN");
    forwarded_to(&mut fx, &flow.frame_with(ACK), x, "ACK");
    assert_eq!(fx.tracked_flows(), vec![flow.key()], "the entry is made");
    assert_eq!(records(&fx), Vec::new());
}

#[test]
fn a_peers_record_keeps_a_moved_flow_on_its_backend_after_the_tables_changed() {
    let mut fx = syncing("sync-peer");
    let flow = Flow::new(Transport::Tcp, CLIENT4, 41_004, VIP4, 80);
    let x = fx.expected_backend("web", &flow);
    // The flow began on a peer, which chose X; this host has seen none of its packets.
    let record = FlowRecord {
        key: flow.key(),
        backend: x,
        epoch: fx.backend(x).epoch,
        flags: 0,
        reserved: 0,
    };
    let mut import = Import::open(&fx.plane.maps_dir()).expect("open CONNTRACK");
    // The tables change: X takes no new flows (weight 0).
    let addr = addr_of(&fx, x);
    fx.set_weight("web", addr, 0);
    fx.publish("web");
    let now = fx.expected_backend("web", &flow);
    assert_ne!(now, x, "the tables no longer choose X");
    // Without the record, the moved flow's next packet would go where the tables say.
    let other = flow.with_sport(41_005);
    let before = fx.expected_backend("web", &other);
    forwarded_to(
        &mut fx,
        &other.frame_with(ACK),
        before,
        "a flow nobody recorded",
    );
    // With it, the router's move keeps the flow on X.
    assert_eq!(import.insert(&record).unwrap(), Inserted::New);
    for _ in 0..3 {
        forwarded_to(&mut fx, &flow.frame_with(ACK | PSH), x, "moved flow");
    }
    // Inserted as a peer's, the entry writes no record here (no echo back).
    let written: Vec<_> = records(&fx).into_iter().map(|r| r.key).collect();
    assert!(!written.contains(&flow.key()), "{written:?}");
}

#[test]
fn a_peers_record_does_not_overwrite_a_local_entry_unless_it_reopens_the_flow() {
    let mut fx = syncing("sync-local");
    let flow = Flow::new(Transport::Tcp, CLIENT4, 41_006, VIP4, 80);
    let x = fx.expected_backend("web", &flow);
    forwarded_to(&mut fx, &flow.frame(), x, "SYN");
    forwarded_to(&mut fx, &flow.frame_with(ACK), x, "ACK");
    let local = fx.entries("CONNTRACK")[&flow.key()];
    let y = (0..4)
        .map(|i| fx.entry("web", BACKENDS4[i].parse().unwrap()).index)
        .find(|&i| i != x)
        .unwrap();
    let mut record = FlowRecord {
        key: flow.key(),
        backend: y,
        epoch: fx.backend(y).epoch,
        flags: 0,
        reserved: 0,
    };
    let mut import = Import::open(&fx.plane.maps_dir()).expect("open CONNTRACK");
    assert_eq!(import.insert(&record).unwrap(), Inserted::Kept);
    assert_eq!(
        fx.entries("CONNTRACK")[&flow.key()],
        local,
        "entry unchanged"
    );
    forwarded_to(&mut fx, &flow.frame_with(ACK | PSH), x, "local flow");
    // A peer's new connection on the 5-tuple replaces the entry: the old flow is over.
    record.flags = RECORD_REOPENED;
    assert_eq!(import.insert(&record).unwrap(), Inserted::New);
    forwarded_to(
        &mut fx,
        &flow.frame_with(ACK | PSH),
        y,
        "reopened on the peer",
    );
}
