//! Routed services on fakes: tunnel entries with the right outer header and `nat`
//! rewrites, written before the backend entry; `nat` reply entries for serving and retired
//! backends, one service per backend endpoint; never located on L2 nor followed there;
//! rebuilt identically at a restart; a backend without a route refused having changed
//! nothing.

use std::net::IpAddr;

use balancer_common::{
    Backend, Endpoint, Reply, Rewrite, Tunnel, FAMILY_V4, FAMILY_V6, FORWARD_GUE, FORWARD_IPIP,
    FORWARD_NAT, PROTO_TCP,
};

use super::super::{
    fakes::{source_of, Maps, Rig, ROUTELESS, SILENT},
    Controller,
};
use crate::{
    api::AddBackend,
    error::{Error, Refused},
    neighbor::{follow::Sighting, NeighborError},
    operation::Change,
    state::{
        tests::{ip, sample},
        Affinity, Forward, Mode, State,
    },
};

/// A routed backend (a DSR service could not have it: the fake never resolves it).
const ROUTED: &str = SILENT;
/// The IPv6 tunnel service's backend and outer source.
const ROUTED6: &str = "2001:db8:5::5";
const SOURCE6: &str = "2001:db8::7";

/// The sample plus `gue` (port 7000, the route's source) and `ipip6` (its own source),
/// one routed backend each.
fn with_tunnels() -> State {
    let mut state = sample();
    let gue = Forward {
        mode: Mode::Gue,
        source: None,
        port: Some(7000),
        backend_port: None,
        source_ports: None,
    };
    let ipip = Forward {
        mode: Mode::Ipip,
        source: Some(ip(SOURCE6)),
        port: None,
        backend_port: None,
        source_ports: None,
    };
    let services = [
        ("gue", "198.19.0.5:443/tcp", gue, ROUTED),
        ("ipip6", "[2001:db8:ffff::5]:443/tcp", ipip, ROUTED6),
    ];
    for (name, vip, forward, backend) in services {
        let vip = vip.parse().unwrap();
        state
            .add_service(name, vip, Affinity::Connection, None)
            .unwrap();
        state.set_forward(name, forward).unwrap();
        state.add_backend(name, ip(backend), "main", 100).unwrap();
    }
    state
}

/// (index, epoch) of `service`'s backend `addr`.
fn id(controller: &Controller, service: &str, addr: &str) -> (u32, u32) {
    let service = controller.state().service(service).unwrap();
    let backend = service
        .backends()
        .find(|(_, b)| b.addr == ip(addr))
        .unwrap()
        .1;
    (backend.index, backend.epoch)
}

fn bytes(addr: IpAddr) -> [u8; 16] {
    match addr {
        IpAddr::V4(a) => {
            let mut b = [0; 16];
            b[..4].copy_from_slice(&a.octets());
            b
        }
        IpAddr::V6(a) => a.octets(),
    }
}

/// The entries written for backend index `index`, in order.
fn written(maps: &Maps, index: u32) -> Vec<&'static str> {
    maps.entries_written
        .iter()
        .filter(|(_, i)| *i == index)
        .map(|(what, _)| *what)
        .collect()
}

fn add(service: &str, addr: &str) -> Change {
    Change::AddBackend {
        service: service.into(),
        backend: AddBackend {
            addr: ip(addr),
            group: "main".into(),
            weight: None,
        },
    }
}

fn apply(controller: &mut Controller, change: Change) -> Result<(), Error> {
    controller.change(|state, now_ms| change.apply(state, now_ms))
}

#[test]
fn tunnelled_backends_get_their_outer_header_before_the_entry_that_names_it() {
    let rig = Rig::new(with_tunnels());
    let controller = rig.start();
    let (gue, gue_epoch) = id(&controller, "gue", ROUTED);
    let (ipip, ipip_epoch) = id(&controller, "ipip6", ROUTED6);
    let maps = rig.plane.maps();
    assert_eq!(
        maps.tunnels[&gue],
        Tunnel {
            dst: bytes(ip(ROUTED)),
            src: bytes(source_of(ip(ROUTED))),
            family: FAMILY_V4,
            port_be: 7000u16.to_be(),
            ..Tunnel::default()
        }
    );
    assert_eq!(
        maps.tunnels[&ipip],
        Tunnel {
            dst: bytes(ip(ROUTED6)),
            src: bytes(ip(SOURCE6)),
            family: FAMILY_V6,
            ..Tunnel::default()
        }
    );
    let entry = |forward, epoch| Backend {
        epoch,
        forward,
        ..Backend::default()
    };
    assert_eq!(maps.backends[&gue], entry(FORWARD_GUE, gue_epoch));
    assert_eq!(maps.backends[&ipip], entry(FORWARD_IPIP, ipip_epoch));
    for index in [gue, ipip] {
        assert_eq!(written(&maps, index), ["tunnel", "backend"]);
    }
    // Never looked for on L2 (the fake would never find ROUTED there).
    assert!(!rig.neighbors.resolved().contains(&ip(ROUTED)));
    assert!(!rig.neighbors.resolved().contains(&ip(ROUTED6)));
    // A DSR backend has no tunnel entry.
    assert_eq!(maps.tunnels.len(), 2);
}

#[test]
fn a_backend_added_to_a_tunnelled_service_needs_a_route_not_a_neighbour() {
    let rig = Rig::new(with_tunnels());
    let mut controller = rig.start();
    let (writes, saves) = (rig.plane.maps().writes, rig.store.saves());
    let err = apply(&mut controller, add("gue", ROUTELESS)).unwrap_err();
    assert_eq!(err.to_string(), format!("no route to backend {ROUTELESS}"));
    assert!(matches!(
        err,
        Error::Refused(Refused::Unreachable(NeighborError::NoRoute(_)))
    ));
    assert_eq!(rig.plane.maps().writes, writes);
    assert_eq!(rig.store.saves(), saves);
    assert_eq!(controller.state(), &with_tunnels());

    let other = "198.18.7.7";
    apply(&mut controller, add("gue", other)).unwrap();
    let (index, epoch) = id(&controller, "gue", other);
    let maps = rig.plane.maps();
    assert_eq!(maps.backends[&index].forward, FORWARD_GUE);
    assert_eq!(maps.backends[&index].epoch, epoch);
    assert_eq!(maps.tunnels[&index].dst, bytes(ip(other)));
    assert_eq!(
        maps.entries_written[maps.entries_written.len() - 2..],
        [("tunnel", index), ("backend", index)]
    );
}

#[test]
fn the_neighbour_watch_never_rewrites_a_tunnelled_backend() {
    let rig = Rig::new(with_tunnels());
    let mut controller = rig.start();
    let (index, _) = id(&controller, "gue", ROUTED);
    let placements = controller.placements().unwrap();
    assert!(!placements.contains_key(&ip(ROUTED)));
    assert!(!placements.contains_key(&ip(ROUTED6)));
    assert!(placements.contains_key(&ip("198.18.0.101")));
    let before = rig.plane.maps().backends[&index];
    let writes = rig.plane.maps().writes;
    let sighting = Sighting::Neighbour {
        ifindex: 2,
        mac: [2, 0, 0, 0, 0xb0, 1],
    };
    let followed = controller.follow(&[(ip(ROUTED), sighting)]).unwrap();
    assert_eq!(followed.rewritten, 0);
    assert_eq!(rig.plane.maps().writes, writes);
    assert_eq!(rig.plane.maps().backends[&index], before);
}

#[test]
fn a_restart_rebuilds_the_same_tunnel_entries() {
    let rig = Rig::new(with_tunnels());
    let controller = rig.start();
    let (backends, tunnels) = {
        let maps = rig.plane.maps();
        (maps.backends.clone(), maps.tunnels.clone())
    };
    drop(controller);
    let restarted = rig.start();
    {
        let maps = rig.plane.maps();
        assert_eq!(maps.backends, backends);
        assert_eq!(maps.tunnels, tunnels);
    }
    assert_eq!(restarted.state(), &with_tunnels());
    assert!(rig.backends_match(&with_tunnels()));
}

#[test]
fn the_forwarding_of_a_service_with_backends_is_not_changed() {
    let rig = Rig::new(with_tunnels());
    let mut controller = rig.start();
    let (writes, saves) = (rig.plane.maps().writes, rig.store.saves());
    for (service, mode) in [("web", Mode::Ipip), ("gue", Mode::Dsr), ("gue", Mode::Ipip)] {
        let change = Change::SetForward {
            service: service.into(),
            forward: Forward {
                mode,
                ..Forward::default()
            },
        };
        let err = apply(&mut controller, change).unwrap_err().to_string();
        assert!(
            err.contains("its forwarding changes only without backends"),
            "{err}"
        );
    }
    assert_eq!(rig.plane.maps().writes, writes);
    assert_eq!(rig.store.saves(), saves);
    assert_eq!(controller.state(), &with_tunnels());
}

/// The sample plus `api`: `nat` from 198.19.0.6:80/tcp to backend port 8080, with
/// backends [`ROUTED`] and 198.18.7.7.
fn with_nat() -> State {
    let mut state = sample();
    let vip = "198.19.0.6:80/tcp".parse().unwrap();
    state
        .add_service("api", vip, Affinity::Connection, None)
        .unwrap();
    let nat = Forward {
        mode: Mode::Nat,
        backend_port: Some(8080),
        source_ports: None,
        ..Forward::default()
    };
    state.set_forward("api", nat).unwrap();
    for backend in [ROUTED, "198.18.7.7"] {
        state.add_backend("api", ip(backend), "main", 100).unwrap();
    }
    state
}

/// The reply entry of backend `addr` (index `backend`) of `api`: its endpoint → the VIP
/// and its index.
fn reply_of(addr: &str, backend: u32) -> (Endpoint, Reply) {
    let endpoint = |addr: &str, port: u16| Endpoint {
        addr: bytes(ip(addr)),
        port_be: port.to_be(),
        proto: PROTO_TCP,
        family: FAMILY_V4,
    };
    let reply = Reply {
        vip: endpoint("198.19.0.6", 80),
        backend,
        ..Reply::default()
    };
    (endpoint(addr, 8080), reply)
}

/// The reply entries of `api`'s two backends as `controller` placed them.
fn both_replies(controller: &Controller) -> [(Endpoint, Reply); 2] {
    [ROUTED, "198.18.7.7"].map(|addr| reply_of(addr, id(controller, "api", addr).0))
}

fn replies(rig: &Rig) -> Vec<(Endpoint, Reply)> {
    let mut replies = rig.plane.maps().replies.clone();
    replies.sort_by_key(|(backend, _)| backend.addr);
    replies
}

#[test]
fn nat_backends_get_their_rewrite_first_and_their_replies_an_entry() {
    let rig = Rig::new(with_nat());
    let controller = rig.start();
    for addr in [ROUTED, "198.18.7.7"] {
        let (index, epoch) = id(&controller, "api", addr);
        let maps = rig.plane.maps();
        assert_eq!(
            maps.rewrites[&index],
            Rewrite {
                addr: bytes(ip(addr)),
                port_be: 8080u16.to_be(),
                family: FAMILY_V4,
                ..Rewrite::default()
            }
        );
        assert_eq!(
            maps.backends[&index],
            Backend {
                epoch,
                forward: FORWARD_NAT,
                ..Backend::default()
            }
        );
        assert_eq!(written(&maps, index), ["rewrite", "backend"]);
    }
    assert_eq!(replies(&rig), both_replies(&controller));
    // Never looked for on L2; no tunnel entries.
    assert!(!rig.neighbors.resolved().contains(&ip(ROUTED)));
    assert!(rig.plane.maps().tunnels.is_empty());
}

#[test]
fn a_retired_nat_backend_keeps_its_reply_entry_and_a_cut_one_loses_it() {
    let rig = Rig::new(with_nat());
    let mut controller = rig.start();
    let both = both_replies(&controller);
    let remove = |addr: &str, cut| Change::RemoveBackend {
        service: "api".into(),
        addr: ip(addr),
        cut,
    };
    apply(&mut controller, remove(ROUTED, false)).unwrap();
    assert_eq!(
        replies(&rig),
        both,
        "a retired backend's flows still answer"
    );
    apply(&mut controller, remove(ROUTED, true)).unwrap();
    apply(&mut controller, remove("198.18.7.7", true)).unwrap();
    assert!(replies(&rig).is_empty());
}

#[test]
fn one_backend_endpoint_answers_for_one_nat_service_only() {
    let rig = Rig::new(with_nat());
    let mut controller = rig.start();
    let vip = "198.19.0.7:80/tcp".parse().unwrap();
    let add_service = Change::AddService(crate::api::AddService {
        name: "api2".into(),
        vip,
        affinity: Affinity::Connection,
        table_size: None,
        health: None,
        forward: Forward {
            mode: Mode::Nat,
            backend_port: Some(8080),
            source_ports: None,
            ..Forward::default()
        },
    });
    apply(&mut controller, add_service).unwrap();
    let (writes, saves) = (rig.plane.maps().writes, rig.store.saves());
    let err = apply(&mut controller, add("api2", ROUTED)).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "backend {ROUTED}:8080/tcp of service \"api2\" already answers for nat service \
             \"api\" (serving or retired): its replies can come from one VIP only"
        )
    );
    assert_eq!(rig.plane.maps().writes, writes);
    assert_eq!(rig.store.saves(), saves);
    // Another port of the same host is another endpoint.
    let set = Change::SetForward {
        service: "api2".into(),
        forward: Forward {
            mode: Mode::Nat,
            backend_port: Some(9090),
            source_ports: None,
            ..Forward::default()
        },
    };
    apply(&mut controller, set).unwrap();
    apply(&mut controller, add("api2", ROUTED)).unwrap();
    assert_eq!(replies(&rig).len(), 3);
}

#[test]
fn a_restart_rebuilds_the_nat_entries_and_drops_stray_replies() {
    let rig = Rig::new(with_nat());
    let controller = rig.start();
    let (backends, rewrites) = {
        let maps = rig.plane.maps();
        (maps.backends.clone(), maps.rewrites.clone())
    };
    let before = replies(&rig);
    drop(controller);
    // A reply entry the state does not have (a crash between two writes).
    rig.plane.maps().replies.push(reply_of("198.18.7.8", 99));
    let restarted = rig.start();
    let maps = rig.plane.maps();
    assert_eq!(maps.backends, backends);
    assert_eq!(maps.rewrites, rewrites);
    drop(maps);
    assert_eq!(replies(&rig), before);
    assert_eq!(restarted.state(), &with_nat());
}
