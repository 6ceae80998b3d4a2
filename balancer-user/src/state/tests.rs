use std::net::IpAddr;

use super::*;
use crate::config::Config;

pub(crate) fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// Two services: web (blue 75%, green 25%, client affinity) and dns (one group).
pub(crate) fn sample() -> State {
    let mut s = State::default();
    s.add_service(
        "web",
        "198.19.0.1:80/tcp".parse().unwrap(),
        Affinity::Client,
        None,
    )
    .unwrap();
    s.add_service(
        "dns",
        "[2001:db8:ffff::1]:53/udp".parse().unwrap(),
        Affinity::Connection,
        Some(251),
    )
    .unwrap();
    s.add_backend("web", ip("198.18.0.101"), "blue", 100)
        .unwrap();
    s.add_backend("web", ip("198.18.0.102"), "blue", 50)
        .unwrap();
    s.add_backend("web", ip("198.18.0.103"), "green", 100)
        .unwrap();
    s.set_split(
        "web",
        &[("blue".into(), bp(7500)), ("green".into(), bp(2500))],
    )
    .unwrap();
    s.add_backend("dns", ip("2001:db8::101"), "main", 1)
        .unwrap();
    s
}

#[test]
fn first_group_takes_everything_later_groups_nothing() {
    let s = sample();
    let web = s.service("web").unwrap();
    assert_eq!(bps(web), vec![7500, 2500]);
    assert_eq!(bps(s.service("dns").unwrap()), vec![10_000]);
    let mut t = s.clone();
    t.add_backend("web", ip("198.18.0.104"), "canary", 100)
        .unwrap();
    assert_eq!(bps(t.service("web").unwrap()), vec![7500, 2500, 0]);
    s.validate().unwrap();
}

fn entry(s: &State, addr: &str) -> BackendEntry {
    *s.service("web")
        .unwrap()
        .backends()
        .find(|(_, b)| b.addr == ip(addr))
        .unwrap()
        .1
}

#[test]
fn a_removed_backend_retires_keeping_its_index_and_a_cut_one_frees_it() {
    let mut s = sample();
    let old = entry(&s, "198.18.0.102");
    s.remove_backend("web", ip("198.18.0.102"), false, 5)
        .unwrap();
    assert_eq!(
        s.service("web").unwrap().retired,
        vec![Retired {
            addr: ip("198.18.0.102"),
            group: "blue".into(),
            index: old.index,
            epoch: old.epoch,
            since_ms: 5,
        }]
    );
    s.validate().unwrap();
    // Its index stays taken while it is retired.
    s.add_backend("web", ip("198.18.0.110"), "blue", 100)
        .unwrap();
    assert_ne!(entry(&s, "198.18.0.110").index, old.index);
    // Removing it again needs --cut.
    let err = s
        .remove_backend("web", ip("198.18.0.102"), false, 6)
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "backend 198.18.0.102 of service \"web\" is already retired: remove it with --cut to re-balance its flows now"
    );
    // Added again (to another group, at another weight), it is revived with its index and
    // epoch: its tracked flows are its own again.
    let mut revived = s.clone();
    revived
        .add_backend("web", ip("198.18.0.102"), "green", 30)
        .unwrap();
    let back = entry(&revived, "198.18.0.102");
    assert_eq!(
        (back.index, back.epoch, back.weight),
        (old.index, old.epoch, 30)
    );
    assert!(revived.service("web").unwrap().retired.is_empty());
    assert_eq!(
        revived.next_epoch, s.next_epoch,
        "a revival takes no new epoch"
    );
    revived.validate().unwrap();
    // Cut, its index is free; the next backend takes it with a new epoch.
    s.remove_backend("web", ip("198.18.0.102"), true, 7)
        .unwrap();
    assert!(s.service("web").unwrap().retired.is_empty());
    s.add_backend("web", ip("198.18.0.111"), "blue", 100)
        .unwrap();
    let added = entry(&s, "198.18.0.111");
    assert_eq!(added.index, old.index, "lowest free index is reused");
    assert!(added.epoch > old.epoch, "epochs never come back");
    s.validate().unwrap();
}

#[test]
fn retirements_end_when_idle_dead_or_expired_and_not_before() {
    let mut s = sample();
    for (addr, at) in [
        ("198.18.0.101", 0),
        ("198.18.0.102", 0),
        ("198.18.0.103", 50),
    ] {
        s.remove_backend("web", ip(addr), false, at).unwrap();
    }
    let idle = entry(&sample(), "198.18.0.101");
    let active = |index: u32, _| u64::from(index != idle.index);
    let dead = |_: &str, addr: IpAddr| addr == ip("198.18.0.102");
    let mut ended = s.end_retirements(99, 100, active, dead);
    ended.sort_by_key(|(_, addr, _)| *addr);
    assert_eq!(
        ended,
        vec![
            ("web".to_string(), ip("198.18.0.101"), Farewell::Idle),
            ("web".to_string(), ip("198.18.0.102"), Farewell::Dead),
        ]
    );
    let alive = |_: &str, _| false;
    assert!(s.end_retirements(149, 100, active, alive).is_empty());
    assert_eq!(
        s.end_retirements(150, 100, active, alive),
        vec![("web".to_string(), ip("198.18.0.103"), Farewell::Expired)]
    );
    assert!(s.service("web").unwrap().retired.is_empty());
}

#[test]
fn a_state_with_a_retired_backend_sharing_an_index_or_address_is_refused() {
    let mut s = sample();
    s.remove_backend("web", ip("198.18.0.102"), false, 0)
        .unwrap();
    let mut twice = s.clone();
    let retired = twice.service("web").unwrap().retired[0].clone();
    twice.service_mut("web").unwrap().retired.push(Retired {
        addr: ip("198.18.0.120"),
        ..retired.clone()
    });
    assert!(twice
        .validate()
        .unwrap_err()
        .to_string()
        .contains("bad index or epoch"));
    let mut both = s.clone();
    both.service_mut("web").unwrap().retired[0].addr = ip("198.18.0.101");
    assert!(matches!(
        both.validate().unwrap_err(),
        StateError::DuplicateBackend(..)
    ));
}

#[test]
fn rejected_changes_leave_state_untouched() {
    let s = sample();
    type Attempt = Box<dyn Fn(&mut State) -> Result<(), StateError>>;
    let vip = |text: &str| text.parse().unwrap();
    let attempts: Vec<(Attempt, &str)> = vec![
        (
            Box::new(|s| s.add_backend("nosuch", ip("198.18.0.120"), "blue", 1)),
            "no service named \"nosuch\"",
        ),
        (
            Box::new(|s| s.add_backend("web", ip("198.18.0.101"), "green", 1)),
            "backend 198.18.0.101 already exists in service \"web\"",
        ),
        (
            Box::new(|s| s.add_backend("web", ip("2001:db8::9"), "blue", 1)),
            "backend 2001:db8::9 and VIP 198.19.0.1:80/tcp are of different address families",
        ),
        (
            Box::new(|s| s.add_backend("web", ip("127.0.0.1"), "blue", 1)),
            "backend address 127.0.0.1 is not a unicast, non-loopback address",
        ),
        (
            Box::new(|s| s.add_backend("web", ip("198.18.0.120"), "bad group", 1)),
            "bad group name \"bad group\": use 1-64 characters from A-Z a-z 0-9 - _ .",
        ),
        (
            Box::new(|s| s.set_weight("web", ip("198.18.0.199"), 1)),
            "no backend 198.18.0.199 in service \"web\"",
        ),
        (
            Box::new(|s| s.set_split("web", &[("blue".into(), bp(5000))])),
            "shares must add up to 10000 basis points (100%), not 5000",
        ),
        (
            Box::new(|s| s.set_split("web", &[("nosuch".into(), BasisPoints::ALL)])),
            "no group \"nosuch\" in service \"web\"",
        ),
        (
            Box::new(|s| {
                s.set_split(
                    "web",
                    &[("blue".into(), bp(5000)), ("blue".into(), bp(5000))],
                )
            }),
            "group \"blue\" is named twice",
        ),
        (
            Box::new(move |s| {
                s.add_service("web", vip("198.19.0.9:80/tcp"), Affinity::Client, None)
            }),
            "a service named \"web\" already exists",
        ),
        (
            Box::new(move |s| s.add_service("x", vip("198.19.0.1:80/tcp"), Affinity::Client, None)),
            "VIP 198.19.0.1:80/tcp is already served by service \"web\"",
        ),
        (
            Box::new(move |s| {
                s.add_service("x", vip("198.19.0.9:80/tcp"), Affinity::Client, Some(100))
            }),
            "table size 100 must be a prime between 3 and 65537",
        ),
        (
            Box::new(|s| s.remove_service("nosuch").map(|_| ())),
            "no service named \"nosuch\"",
        ),
        (
            Box::new(|s| s.remove_backend("web", ip("198.18.0.199"), false, 0)),
            "no backend 198.18.0.199 in service \"web\"",
        ),
    ];
    for (i, (attempt, why)) in attempts.iter().enumerate() {
        let mut copy = s.clone();
        let err = attempt(&mut copy).expect_err("accepted");
        assert_eq!(err.to_string(), *why, "attempt {i}");
        // The controller discards the copy on error; the mutation itself must also not
        // have half-applied anything observable in the copy for these validations.
        assert_eq!(copy, s, "attempt {i} changed the state");
    }
}

#[test]
fn empty_group_without_share_is_removed() {
    let mut s = sample();
    s.set_split("web", &[("blue".into(), BasisPoints::ALL)])
        .unwrap();
    s.remove_backend("web", ip("198.18.0.103"), true, 0)
        .unwrap();
    let web = s.service("web").unwrap();
    assert_eq!(web.groups.len(), 1);
    assert_eq!(bps(web), vec![10_000]);
}

#[test]
fn state_file_round_trip() {
    let dir = std::env::temp_dir().join(format!("balancer-state-{}", std::process::id()));
    let path = dir.join("state.json");
    let s = sample();
    let store = FileStore::new(&path);
    store.save(&s).unwrap();
    assert_eq!(store.load().unwrap(), s);
    std::fs::write(&path, b"{ not json").unwrap();
    assert!(matches!(store.load(), Err(StoreError::Parse { .. })));
    let mut future = s.clone();
    future.format = STATE_FORMAT + 1;
    std::fs::write(&path, serde_json::to_vec(&future).unwrap()).unwrap();
    assert!(
        matches!(store.load(), Err(StoreError::Format { format, .. }) if format == STATE_FORMAT + 1)
    );
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(store.load().unwrap(), State::default());
}

#[test]
fn toml_round_trip_keeps_identity() {
    let s = sample();
    let text = Config::from_state(&s).unwrap().to_toml();
    let config = Config::parse(&text).unwrap();
    // Applied to itself: nothing changes, not even backend indices or epochs.
    let mut same = s.clone();
    config.apply_to(&mut same, 0).unwrap();
    assert_eq!(same, s);
    // Applied to an empty state: the same services, groups, weights and split.
    let mut fresh = State::default();
    config.apply_to(&mut fresh, 0).unwrap();
    assert_eq!(
        Config::from_state(&fresh).unwrap(),
        Config::from_state(&s).unwrap()
    );
}

#[test]
fn toml_carries_the_forwarding_and_changes_it_only_without_backends() {
    let mut s = sample();
    let gue = Forward {
        mode: Mode::Gue,
        source: Some(ip("2001:db8:ffff::2")),
        port: Some(7000),
        backend_port: None,
        source_ports: None,
    };
    s.services.get_mut("dns").unwrap().forward = gue;
    let text = Config::from_state(&s).unwrap().to_toml();
    assert!(
        text.contains("forward = \"gue\"\ntunnel_source = \"2001:db8:ffff::2\"\ngue_port = 7000"),
        "{text}"
    );
    // Services by DSR say nothing of it: older files stay as they were.
    assert_eq!(text.matches("forward =").count(), 1, "{text}");
    let config = Config::parse(&text).unwrap();
    let mut same = s.clone();
    config.apply_to(&mut same, 0).unwrap();
    assert_eq!(same, s);
    let mut fresh = State::default();
    config.apply_to(&mut fresh, 0).unwrap();
    assert_eq!(fresh.services["dns"].forward, gue);
    // Another mode for a service with backends is refused, in one line.
    let mut ipip = config.clone();
    ipip.services.iter_mut().for_each(|svc| {
        svc.forward = Mode::Ipip;
        svc.gue_port = None;
    });
    let err = ipip.apply_to(&mut s.clone(), 0).unwrap_err().to_string();
    assert!(
        err.contains("its forwarding changes only without backends"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1);
}

#[test]
fn toml_carries_a_full_nat_pool() {
    let mut s = sample();
    let fullnat = Forward {
        mode: Mode::Fullnat,
        source: Some(ip("2001:db8:ffff::3")),
        port: None,
        backend_port: Some(5353),
        source_ports: Some("2000-2999".parse().unwrap()),
    };
    s.services.get_mut("dns").unwrap().forward = fullnat;
    let text = Config::from_state(&s).unwrap().to_toml();
    assert!(
        text.contains(
            "forward = \"fullnat\"\nbackend_port = 5353\npool = \"2001:db8:ffff::3\"\n\
             pool_ports = \"2000-2999\""
        ),
        "{text}"
    );
    assert!(!text.contains("tunnel_source"), "{text}");
    let mut fresh = State::default();
    Config::parse(&text)
        .unwrap()
        .apply_to(&mut fresh, 0)
        .unwrap();
    assert_eq!(fresh.services["dns"].forward, fullnat);
    // Pool ports that are no range: refused in one line, naming them.
    let bad = text.replace("2000-2999", "2999-2000");
    let err = Config::parse(&bad).unwrap_err().to_string();
    assert!(err.contains("\"2999-2000\""), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
}

#[test]
fn toml_affinity_change_keeps_backend_identity() {
    let s = sample();
    let mut config = Config::from_state(&s).unwrap();
    config
        .services
        .iter_mut()
        .for_each(|svc| svc.affinity = Affinity::Connection);
    let mut changed = s.clone();
    config.apply_to(&mut changed, 0).unwrap();
    let web = changed.service("web").unwrap();
    assert_eq!(web.affinity, Affinity::Connection);
    let ids = |st: &State| -> Vec<(u32, u32)> {
        st.service("web")
            .unwrap()
            .backends()
            .map(|(_, b)| (b.index, b.epoch))
            .collect()
    };
    assert_eq!(ids(&changed), ids(&s), "backends were re-created");
}

#[test]
fn toml_rejects_bad_files() {
    let service = "[[service]]\nname = \"web\"\nvip = \"198.19.0.1:80/tcp\"\n";
    let cases = [
        (
            "[[service]]\nname = \"web\"\n".to_string(),
            "missing field `vip`",
        ),
        (
            "[[service]]\nname = \"web\"\nvip = \"198.19.0.1:80\"\n".to_string(),
            "VIP \"198.19.0.1:80\" lacks a protocol",
        ),
        (
            format!("{service}bogus = 1\n"),
            "unknown field `bogus`",
        ),
        (
            format!("{service}[[service.group]]\nname = \"a\"\npercent = 50\nbackends = [{{ addr = \"198.18.0.1\" }}]\n[[service.group]]\nname = \"b\"\npercent = 40\nbackends = [{{ addr = \"198.18.0.2\" }}]\n"),
            "shares must add up to 10000 basis points (100%), not 9000",
        ),
        (
            format!("{service}[[service.group]]\nname = \"a\"\nbackends = [{{ addr = \"198.18.0.1\", weight = 70000 }}]\n"),
            "invalid value: integer `70000`, expected u16",
        ),
        (
            format!("{service}[[service.group]]\nname = \"a\"\nbackends = [{{ addr = \"198.18.0.1\", weight = 10 }}, {{ addr = \"198.18.0.1\", weight = 90 }}]\n"),
            "backend 198.18.0.1 appears twice in service \"web\"",
        ),
        (
            format!("{service}[[service.group]]\nname = \"a\"\npercent = 50\nbackends = [{{ addr = \"198.18.0.1\" }}]\n[[service.group]]\nname = \"b\"\npercent = 50\nbackends = [{{ addr = \"198.18.0.1\" }}]\n"),
            "backend 198.18.0.1 appears twice in service \"web\"",
        ),
    ];
    for (bad, why) in cases {
        let result = Config::parse(&bad)
            .map_err(|e| e.to_string())
            .and_then(|c| {
                let mut s = State::default();
                c.apply_to(&mut s, 0).map_err(|e| e.to_string())
            });
        let err = result.expect_err("accepted");
        assert!(err.contains(why), "{bad}: {err}");
        assert_eq!(err.lines().count(), 1, "{err}");
    }
}

#[test]
fn readme_configuration_example_applies() {
    let readme = include_str!("../../../README.md");
    let start = readme
        .find("```toml\n[[service]]")
        .expect("README has a TOML example of apply")
        + 8;
    let end = start + readme[start..].find("```").unwrap();
    let config = Config::parse(&readme[start..end]).unwrap();
    let mut state = State::default();
    config.apply_to(&mut state, 0).unwrap();
    let web = state.service("web").unwrap();
    assert_eq!(bps(web), vec![9000, 1000]);
    assert_eq!(web.pins.len(), 1);
}

/// The shares of web's groups in basis points.
pub(crate) fn shares_of(s: &State) -> Vec<u16> {
    bps(s.service("web").unwrap())
}

/// [`sample`] with TCP health checks on web.
pub(crate) fn checked_sample() -> State {
    let mut s = sample();
    let check = HealthCheck {
        kind: CheckKind::Tcp,
        interval_ms: 100,
        timeout_ms: 100,
        rise: 1,
        fall: 1,
    };
    s.set_health("web", Some(check)).unwrap();
    s
}

fn bp(v: u16) -> BasisPoints {
    BasisPoints::new(v).unwrap()
}

fn bps(service: &Service) -> Vec<u16> {
    service.shares().unwrap().iter().map(|b| b.get()).collect()
}

#[test]
fn toml_vip_changes_keep_identity_and_may_swap() {
    let mut s = sample();
    s.add_service(
        "api",
        "198.19.0.2:80/tcp".parse().unwrap(),
        Affinity::Connection,
        None,
    )
    .unwrap();
    s.add_backend("api", ip("198.18.0.121"), "main", 100)
        .unwrap();
    let mut config = Config::from_state(&s).unwrap();
    let vip_of = |c: &Config, name: &str| c.services.iter().position(|x| x.name == name).unwrap();
    let (web, api) = (vip_of(&config, "web"), vip_of(&config, "api"));
    let (a, b) = (config.services[web].vip, config.services[api].vip);
    config.services[web].vip = b;
    config.services[api].vip = a;
    let mut swapped = s.clone();
    config.apply_to(&mut swapped, 0).unwrap();
    swapped.validate().unwrap();
    assert_eq!(swapped.service("web").unwrap().vip, b);
    assert_eq!(swapped.service("api").unwrap().vip, a);
    let ids = |st: &State| -> Vec<(u32, u32)> {
        st.services
            .values()
            .flat_map(|svc| svc.backends().map(|(_, x)| (x.index, x.epoch)))
            .collect()
    };
    assert_eq!(ids(&swapped), ids(&s), "backends were re-created");
    // Two services on one VIP are refused.
    config.services[web].vip = a;
    let err = config.apply_to(&mut s.clone(), 0).unwrap_err();
    assert_eq!(
        err.to_string(),
        "VIP 198.19.0.1:80/tcp is already served by service \"api\""
    );
}
