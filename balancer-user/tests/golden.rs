//! Golden vectors: fixed inputs with the flow hash, split cells, Maglev slots and whole
//! small tables they must give, committed as data in `tests/golden/vectors.json`. Hosts of a
//! fleet, and a daemon before and after an upgrade, agree on where a flow goes only while
//! these stay the same: a change to hashing or table building fails here.
//!
//! An intended change regenerates the file with `BALANCER_WRITE_GOLDEN=1 cargo test -p
//! balancer-user --test golden`, and says in its commit why every host's tables move.

use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr},
    path::PathBuf,
};

use balancer_common::{flow_hash, FlowKey, PROTO_TCP, PROTO_UDP, SPLIT_CELLS};
use balancer_user::{
    basis_points::BasisPoints,
    compile::compile,
    maglev::{build_table, MaglevBackend},
    split::SplitTable,
    state::{Affinity, State},
    vip::{addr_bytes, family},
};
use serde::{Deserialize, Serialize};

/// One flow and what it hashes to.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct HashVector {
    src: IpAddr,
    dst: IpAddr,
    sport: u16,
    dport: u16,
    udp: bool,
    client_only: bool,
    seed: u64,
    /// The 64-bit hash, hex.
    hash: String,
    /// Split cell of 10000.
    cell: u32,
    /// Slot of the default table (65537) and of a small one (251).
    slots: [u32; 2],
}

/// A whole table for a few backends (address, weight), slot by slot.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct TableVector {
    size: u32,
    backends: Vec<(IpAddr, u16)>,
    /// Each slot's backend, as an index into `backends`; none for an empty slot.
    slots: Vec<Option<usize>>,
}

/// A split built by a sequence of share changes: the runs of cells after each.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct SplitVector {
    shares: Vec<Vec<u16>>,
    /// (group, first cell, cells) after each change.
    runs: Vec<Vec<(u8, u16, u16)>>,
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Vectors {
    hashes: Vec<HashVector>,
    tables: Vec<TableVector>,
    splits: Vec<SplitVector>,
}

fn key(src: IpAddr, dst: IpAddr, sport: u16, dport: u16, udp: bool) -> FlowKey {
    FlowKey {
        src: addr_bytes(src),
        dst: addr_bytes(dst),
        sport_be: sport.to_be(),
        dport_be: dport.to_be(),
        proto: if udp { PROTO_UDP } else { PROTO_TCP },
        family: family(src),
        reserved: [0; 2],
    }
}

fn ip(text: &str) -> IpAddr {
    text.parse().expect("address")
}

fn hashes() -> Vec<HashVector> {
    let flows = [
        ("198.18.2.1", "198.19.0.1", 40000, 80, false),
        ("198.18.2.1", "198.19.0.1", 40001, 80, false),
        ("198.18.2.77", "198.19.0.1", 40000, 80, false),
        ("198.18.2.1", "198.19.0.1", 40000, 53, true),
        ("2001:db8:2::1", "2001:db8:ffff::1", 40000, 443, false),
        ("2001:db8:2::1", "2001:db8:ffff::1", 5353, 53, true),
    ];
    let mut out = Vec::new();
    for (src, dst, sport, dport, udp) in flows {
        for seed in [0, 0x5eed_0000_0000_0001] {
            for client_only in [false, true] {
                let flow = key(ip(src), ip(dst), sport, dport, udp);
                let flow = if client_only {
                    flow.client_only()
                } else {
                    flow
                };
                let hash = flow_hash(&flow, seed);
                out.push(HashVector {
                    src: ip(src),
                    dst: ip(dst),
                    sport,
                    dport,
                    udp,
                    client_only,
                    seed,
                    hash: format!("{:#018x}", hash.0),
                    cell: hash.cell(SPLIT_CELLS as u32).expect("cells"),
                    slots: [
                        hash.slot(65537).expect("slots"),
                        hash.slot(251).expect("slots"),
                    ],
                });
            }
        }
    }
    out
}

fn table(size: u32, backends: &[(IpAddr, u16)]) -> TableVector {
    let members: Vec<MaglevBackend> = backends
        .iter()
        .enumerate()
        .map(|(i, &(addr, weight))| MaglevBackend {
            index: i as u32 + 10,
            addr,
            weight,
        })
        .collect();
    let built = build_table(&members, size).expect("table");
    TableVector {
        size,
        backends: backends.to_vec(),
        slots: built
            .iter()
            .map(|&index| members.iter().position(|m| m.index == index))
            .collect(),
    }
}

fn tables() -> Vec<TableVector> {
    let v4 = |last: u8| IpAddr::V4(Ipv4Addr::new(198, 18, 0, last));
    vec![
        table(13, &[(v4(101), 1), (v4(102), 2), (v4(103), 3)]),
        table(
            31,
            &[
                (ip("2001:db8::101"), 100),
                (ip("2001:db8::102"), 100),
                (ip("2001:db8::103"), 0),
                (ip("2001:db8::104"), 50),
            ],
        ),
        table(
            251,
            &(1..=7)
                .map(|i| (v4(100 + i), u16::from(i) * 10))
                .collect::<Vec<_>>(),
        ),
    ]
}

fn split(shares: &[&[u16]]) -> SplitVector {
    let mut table = SplitTable::initial(shares[0]).expect("initial split");
    let mut runs = vec![table.to_runs()];
    for step in &shares[1..] {
        table = table.rebalance(step).expect("rebalance");
        runs.push(table.to_runs());
    }
    SplitVector {
        shares: shares.iter().map(|s| s.to_vec()).collect(),
        runs: runs
            .into_iter()
            .map(|r| r.iter().map(|c| (c.group, c.start, c.len)).collect())
            .collect(),
    }
}

fn splits() -> Vec<SplitVector> {
    vec![
        split(&[&[10_000, 0], &[9000, 1000], &[5000, 5000], &[0, 10_000]]),
        split(&[&[5000, 2500, 2500], &[2500, 5000, 2500], &[1, 9998, 1]]),
        split(&[
            &[10_000],
            &[7000, 3000],
            &[7000, 2000, 1000],
            &[2500, 2500, 2500, 2500],
        ]),
    ]
}

fn path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden/vectors.json")
}

#[test]
fn hashing_and_tables_match_the_committed_vectors() {
    let now = Vectors {
        hashes: hashes(),
        tables: tables(),
        splits: splits(),
    };
    if std::env::var_os("BALANCER_WRITE_GOLDEN").is_some() {
        let text = serde_json::to_string_pretty(&now).expect("vectors serialise");
        std::fs::write(path(), text + "\n").expect("write the vectors");
    }
    let text = std::fs::read_to_string(path()).expect("read tests/golden/vectors.json");
    let committed: Vectors = serde_json::from_str(&text).expect("parse the vectors");
    assert_eq!(committed.hashes, now.hashes, "the flow hash changed");
    assert_eq!(committed.tables, now.tables, "Maglev tables changed");
    assert_eq!(committed.splits, now.splits, "split layouts changed");
    // The vectors exercise what they claim: every backend of weight > 0 holds slots,
    // the weight-0 one none.
    for t in &committed.tables {
        for (i, (_, weight)) in t.backends.iter().enumerate() {
            let held = t.slots.iter().filter(|s| **s == Some(i)).count();
            assert_eq!(held > 0, *weight > 0, "table of {}: backend {i}", t.size);
        }
    }
}

/// A service's split cells by group name, and each group's ring slots by backend address.
type Placement = (Vec<String>, Vec<Vec<Option<IpAddr>>>);

/// Where each slot and split cell of every service of `state` sends a flow, by backend
/// address and group name: what two hosts must agree on (backend indices are local).
fn placement(state: &State) -> BTreeMap<String, Placement> {
    state
        .services
        .iter()
        .map(|(name, service)| {
            let image = compile(service, 7, &Default::default())
                .expect("compile")
                .image;
            let addr_of = |index: u32| {
                service
                    .backends()
                    .find(|(_, b)| b.index == index)
                    .map(|(_, b)| b.addr)
            };
            let cells = image.cells[..SPLIT_CELLS]
                .iter()
                .map(|&g| {
                    service
                        .groups
                        .get(usize::from(g))
                        .map_or("-".to_string(), |group| group.name.clone())
                })
                .collect();
            let rings = image
                .rings
                .iter()
                .map(|ring| {
                    ring[..service.table_size as usize]
                        .iter()
                        .map(|&i| addr_of(i))
                        .collect()
                })
                .collect();
            (name.clone(), (cells, rings))
        })
        .collect()
}

#[test]
fn two_hosts_with_the_same_state_built_in_different_orders_agree() {
    let vip = "198.19.0.1:80/tcp".parse().expect("vip");
    let bp = |v: u16| BasisPoints::new(v).expect("share");
    // Host A: blue first, then green, then the split.
    let mut a = State::default();
    a.add_service("web", vip, Affinity::Connection, Some(251))
        .unwrap();
    for (addr, group) in [
        ("198.18.0.101", "blue"),
        ("198.18.0.102", "blue"),
        ("198.18.0.103", "green"),
        ("198.18.0.104", "green"),
    ] {
        a.add_backend("web", ip(addr), group, 100).unwrap();
    }
    a.set_split(
        "web",
        &[("blue".into(), bp(7000)), ("green".into(), bp(3000))],
    )
    .unwrap();
    // Host B: another service first (other indices), backends in another order, the split
    // reached through other shares, and a backend that came and went.
    let mut b = State::default();
    b.add_service(
        "other",
        "198.19.0.9:53/udp".parse().unwrap(),
        Affinity::Client,
        None,
    )
    .unwrap();
    b.add_backend("other", ip("198.18.0.150"), "main", 1)
        .unwrap();
    b.add_service("web", vip, Affinity::Connection, Some(251))
        .unwrap();
    for (addr, group) in [
        ("198.18.0.104", "blue"),
        ("198.18.0.103", "green"),
        ("198.18.0.199", "blue"),
        ("198.18.0.102", "blue"),
    ] {
        b.add_backend("web", ip(addr), group, 100).unwrap();
    }
    b.remove_backend("web", ip("198.18.0.104"), true, 0)
        .unwrap();
    b.remove_backend("web", ip("198.18.0.199"), true, 0)
        .unwrap();
    b.add_backend("web", ip("198.18.0.101"), "blue", 100)
        .unwrap();
    b.add_backend("web", ip("198.18.0.104"), "green", 100)
        .unwrap();
    b.set_split(
        "web",
        &[("blue".into(), bp(2000)), ("green".into(), bp(8000))],
    )
    .unwrap();
    b.set_split(
        "web",
        &[("blue".into(), bp(7000)), ("green".into(), bp(3000))],
    )
    .unwrap();
    b.remove_service("other").unwrap();
    let web_a = a.service("web").unwrap();
    let web_b = b.service("web").unwrap();
    assert_ne!(
        web_a.backends().map(|(_, x)| x.index).collect::<Vec<_>>(),
        web_b.backends().map(|(_, x)| x.index).collect::<Vec<_>>(),
        "the two histories should give different backend indices"
    );
    assert!(
        placement(&a) == placement(&b),
        "the hosts place flows differently"
    );
}
