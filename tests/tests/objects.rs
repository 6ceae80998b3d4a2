//! What each eBPF object holds, parsed from the embedded ELF (no kernel, no root): the
//! daemon's object only the `balancer` program and its maps, the test-only programs of
//! `balancer-test-ebpf` nothing of the daemon's.

use std::collections::BTreeSet;

use aya_obj::Object;

/// The maps of the `balancer` program (`balancer-ebpf/src/maps.rs`, the log ring and
/// rate limiter of `balancer-ebpf/src/events.rs`, and the sync ring and counters of
/// `balancer-ebpf/src/sync.rs`).
const BALANCER_MAPS: [&str; 21] = [
    "ALLOCATIONS",
    "AYA_LOGS",
    "BACKENDS",
    "BACKEND_STATS",
    "CONNTRACK",
    "EVENT_LOGGED",
    "GLOBAL_STATS",
    "CLIENT_PINS",
    "NAT_STATS",
    "PENDING",
    "REPLIES",
    "REPLY_STATS",
    "REWRITES",
    "SYNC_RING",
    "SYNC_STATS",
    "TABLES",
    "TRANSLATIONS",
    "TUNNELS",
    "TUNNEL_STATS",
    "VIPS",
    "VIP_PORTS",
];

/// The program and map names of the object `elf`, each sorted; data sections (`.rodata*`,
/// which aya also loads as maps: the log messages' constants) left out.
fn contents(elf: &[u8]) -> (BTreeSet<String>, BTreeSet<String>) {
    let object = Object::parse(elf).expect("parse the eBPF object");
    (
        object.programs.into_keys().collect(),
        object
            .maps
            .into_keys()
            .filter(|name| !name.starts_with('.'))
            .collect(),
    )
}

/// Names as an ordered set, for comparing with [`contents`].
fn names(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|name| name.to_string()).collect()
}

#[test]
fn product_object_holds_only_the_balancer() {
    let (programs, maps) = contents(balancer_user::dataplane::object::OBJECT);
    assert_eq!(
        programs,
        names(&[balancer_user::dataplane::object::BALANCER_PROGRAM])
    );
    assert_eq!(maps, names(&BALANCER_MAPS));
}

#[test]
fn test_programs_live_in_their_own_object() {
    let (programs, maps) = contents(balancer_tests::test_programs::OBJECT);
    assert_eq!(
        programs,
        names(&[
            "baseline_drop",
            "baseline_macswap",
            "sink",
            balancer_tests::test_programs::VETH_PASS_PROGRAM,
        ])
    );
    assert_eq!(maps, names(&["SINK_PACKETS"]));
}
