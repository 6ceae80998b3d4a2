use std::net::IpAddr;

use super::*;
use crate::config::Config;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn sample() -> State {
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
    s.set_split("web", &[("blue".into(), 7500), ("green".into(), 2500)])
        .unwrap();
    s.add_backend("dns", ip("2001:db8::101"), "main", 1)
        .unwrap();
    s
}

#[test]
fn first_group_takes_everything_later_groups_nothing() {
    let s = sample();
    let web = s.service("web").unwrap();
    assert_eq!(web.shares().unwrap(), vec![7500, 2500]);
    assert_eq!(s.service("dns").unwrap().shares().unwrap(), vec![10_000]);
    let mut t = s.clone();
    t.add_backend("web", ip("198.18.0.104"), "canary", 100)
        .unwrap();
    assert_eq!(
        t.service("web").unwrap().shares().unwrap(),
        vec![7500, 2500, 0]
    );
    s.validate().unwrap();
}

#[test]
fn indices_and_epochs_are_unique_and_epochs_never_reused() {
    let mut s = sample();
    let removed = s.remove_backend("web", ip("198.18.0.102")).unwrap();
    s.add_backend("web", ip("198.18.0.110"), "blue", 100)
        .unwrap();
    let web = s.service("web").unwrap();
    let added = web
        .backends()
        .find(|(_, b)| b.addr == ip("198.18.0.110"))
        .unwrap()
        .1;
    assert_eq!(added.index, removed.index, "lowest free index is reused");
    assert!(added.epoch > removed.epoch, "epochs never come back");
    s.validate().unwrap();
}

#[test]
fn rejected_changes_leave_state_untouched() {
    let s = sample();
    type Attempt = Box<dyn Fn(&mut State) -> Result<(), StateError>>;
    let attempts: Vec<Attempt> = vec![
        Box::new(|s| s.add_backend("nosuch", ip("198.18.0.120"), "blue", 1)),
        Box::new(|s| s.add_backend("web", ip("198.18.0.101"), "green", 1)),
        Box::new(|s| s.add_backend("web", ip("2001:db8::9"), "blue", 1)),
        Box::new(|s| s.add_backend("web", ip("127.0.0.1"), "blue", 1)),
        Box::new(|s| s.add_backend("web", ip("198.18.0.120"), "bad group", 1)),
        Box::new(|s| s.set_weight("web", ip("198.18.0.199"), 1)),
        Box::new(|s| s.set_split("web", &[("blue".into(), 5000)])),
        Box::new(|s| s.set_split("web", &[("nosuch".into(), 10_000)])),
        Box::new(|s| s.set_split("web", &[("blue".into(), 5000), ("blue".into(), 5000)])),
        Box::new(|s| {
            s.add_service(
                "web",
                "198.19.0.9:80/tcp".parse().unwrap(),
                Affinity::Client,
                None,
            )
        }),
        Box::new(|s| {
            s.add_service(
                "x",
                "198.19.0.1:80/tcp".parse().unwrap(),
                Affinity::Client,
                None,
            )
        }),
        Box::new(|s| {
            s.add_service(
                "x",
                "198.19.0.9:80/tcp".parse().unwrap(),
                Affinity::Client,
                Some(100),
            )
        }),
        Box::new(|s| s.remove_service("nosuch").map(|_| ())),
        Box::new(|s| s.remove_backend("web", ip("198.18.0.199")).map(|_| ())),
    ];
    for (i, attempt) in attempts.iter().enumerate() {
        let mut copy = s.clone();
        assert!(attempt(&mut copy).is_err(), "attempt {i} accepted");
        // The controller discards the copy on error; the mutation itself must also not
        // have half-applied anything observable in the copy for these validations.
        assert_eq!(copy, s, "attempt {i} changed the state");
    }
}

#[test]
fn empty_group_without_share_is_removed() {
    let mut s = sample();
    s.set_split("web", &[("blue".into(), 10_000)]).unwrap();
    s.remove_backend("web", ip("198.18.0.103")).unwrap();
    let web = s.service("web").unwrap();
    assert_eq!(web.groups.len(), 1);
    assert_eq!(web.shares().unwrap(), vec![10_000]);
}

#[test]
fn state_file_round_trip() {
    let dir = std::env::temp_dir().join(format!("balancer-state-{}", std::process::id()));
    let path = dir.join("state.json");
    let s = sample();
    save(&path, &s).unwrap();
    assert_eq!(load(&path).unwrap(), s);
    std::fs::write(&path, b"{ not json").unwrap();
    assert!(load(&path).is_err());
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(load(&path).unwrap(), State::default());
}

#[test]
fn toml_round_trip_keeps_identity() {
    let s = sample();
    let text = Config::from_state(&s).unwrap().to_toml();
    let config = Config::parse(&text).unwrap();
    // Applied to itself: nothing changes, not even backend indices or epochs.
    let mut same = s.clone();
    config.apply_to(&mut same).unwrap();
    assert_eq!(same, s);
    // Applied to an empty state: the same services, groups, weights and split.
    let mut fresh = State::default();
    config.apply_to(&mut fresh).unwrap();
    assert_eq!(
        Config::from_state(&fresh).unwrap(),
        Config::from_state(&s).unwrap()
    );
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
    config.apply_to(&mut changed).unwrap();
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
    for bad in [
        "[[service]]\nname = \"web\"\n",
        "[[service]]\nname = \"web\"\nvip = \"198.19.0.1:80\"\n",
        "[[service]]\nname = \"web\"\nvip = \"198.19.0.1:80/tcp\"\nbogus = 1\n",
        "[[service]]\nname = \"web\"\nvip = \"198.19.0.1:80/tcp\"\n[[service.group]]\nname = \"a\"\npercent = 50\nbackends = [{ addr = \"198.18.0.1\" }]\n[[service.group]]\nname = \"b\"\npercent = 40\nbackends = [{ addr = \"198.18.0.2\" }]\n",
        "[[service]]\nname = \"web\"\nvip = \"198.19.0.1:80/tcp\"\n[[service.group]]\nname = \"a\"\nbackends = [{ addr = \"198.18.0.1\", weight = 70000 }]\n",
    ] {
        let result = Config::parse(bad).map_err(|e| e.to_string()).and_then(|c| {
            let mut s = State::default();
            c.apply_to(&mut s).map_err(|e| e.to_string())
        });
        assert!(result.is_err(), "accepted: {bad}");
    }
}

#[test]
fn readme_configuration_example_applies() {
    let readme = include_str!("../../../README.md");
    let start = readme.find("```toml\n").expect("README has a TOML example") + 8;
    let end = start + readme[start..].find("```").unwrap();
    let config = Config::parse(&readme[start..end]).unwrap();
    let mut state = State::default();
    config.apply_to(&mut state).unwrap();
    let web = state.service("web").unwrap();
    assert_eq!(web.shares().unwrap(), vec![9000, 1000]);
    assert_eq!(web.pins.len(), 1);
}

fn plan(from: &str, to: &str, steps: Vec<u16>, interval_ms: u64) -> CanaryPlan {
    CanaryPlan {
        from: from.into(),
        to: to.into(),
        steps,
        interval_ms,
        auto_rollback: None,
    }
}

fn shares_of(s: &State) -> Vec<u16> {
    s.service("web").unwrap().shares().unwrap()
}

#[test]
fn canary_steps_on_its_timer_and_records_why() {
    let mut s = sample();
    s.set_split("web", &[("blue".into(), 10_000)]).unwrap();
    s.start_canary(
        "web",
        plan("blue", "green", vec![500, 2500, 10_000], 1000),
        0,
    )
    .unwrap();
    assert_eq!(shares_of(&s), vec![9500, 500]);
    assert!(!s.canary_due(999));
    assert!(s.canary_due(1000));
    s.advance_canaries(1000).unwrap();
    assert_eq!(shares_of(&s), vec![7500, 2500]);
    s.canary_action("web", CanaryAction::Pause, 1500).unwrap();
    assert!(!s.canary_due(10_000), "a paused canary does not step");
    s.canary_action("web", CanaryAction::Resume, 10_000)
        .unwrap();
    assert!(
        !s.canary_due(10_499) && s.canary_due(10_500),
        "resumes with the time left"
    );
    s.advance_canaries(10_500).unwrap();
    assert_eq!(shares_of(&s), vec![0, 10_000]);
    let canary = s.service("web").unwrap().canary.clone().unwrap();
    assert_eq!(canary.outcome, Some(Outcome::Completed));
    assert_eq!(canary.decisions.len(), 6);
    assert!(s.canary_action("web", CanaryAction::Abort, 11_000).is_err());
}

#[test]
fn canary_abort_and_promote_are_one_write_each() {
    let mut s = sample();
    s.start_canary("web", plan("blue", "green", vec![100, 5000], 60_000), 0)
        .unwrap();
    let mut aborted = s.clone();
    aborted
        .canary_action("web", CanaryAction::Abort, 5)
        .unwrap();
    assert_eq!(shares_of(&aborted), vec![10_000, 0]);
    s.canary_action("web", CanaryAction::Promote, 5).unwrap();
    assert_eq!(shares_of(&s), vec![0, 10_000]);
    assert_eq!(
        s.service("web").unwrap().canary.as_ref().unwrap().outcome,
        Some(Outcome::Promoted)
    );
}

#[test]
fn malformed_canaries_are_refused() {
    let s = sample();
    let attempts: [(&str, &str, Vec<u16>, u64); 6] = [
        ("blue", "purple", vec![500], 0),
        ("blue", "blue", vec![500], 0),
        ("blue", "green", vec![2500, 500], 1000),
        ("blue", "green", vec![500, 500], 1000),
        ("blue", "green", vec![500, 10_001], 1000),
        ("blue", "green", vec![500, 10_000], 0),
    ];
    for (from, to, steps, interval) in attempts {
        let mut copy = s.clone();
        assert!(
            copy.start_canary("web", plan(from, to, steps.clone(), interval), 0)
                .is_err(),
            "{from}->{to} {steps:?} accepted"
        );
        assert_eq!(copy, s);
    }
    let mut running = s.clone();
    running
        .start_canary("web", plan("blue", "green", vec![500, 10_000], 1000), 0)
        .unwrap();
    assert!(
        running
            .start_canary("web", plan("blue", "green", vec![500], 0), 0)
            .is_err(),
        "a second canary was accepted"
    );
}

fn rollout_plan(pairs: &[(&str, &str)]) -> RolloutPlan {
    RolloutPlan {
        group: "blue".into(),
        pairs: pairs.iter().map(|(o, n)| (ip(o), ip(n))).collect(),
        ready_timeout_ms: 1000,
        slow_start_ms: 100,
        drain_timeout_ms: Some(5000),
    }
}

fn checked_sample() -> State {
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

fn weight_of(s: &State, addr: &str) -> Option<u16> {
    s.service("web")
        .unwrap()
        .backends()
        .find(|(_, b)| b.addr == ip(addr))
        .map(|(_, b)| b.weight)
}

#[test]
fn rollout_replaces_pairs_in_order_surge_one_unavailable_zero() {
    let mut s = checked_sample();
    s.start_rollout(
        "web",
        rollout_plan(&[
            ("198.18.0.101", "198.18.0.111"),
            ("198.18.0.102", "198.18.0.112"),
        ]),
        0,
    )
    .unwrap();
    assert_eq!(
        weight_of(&s, "198.18.0.111"),
        Some(0),
        "NEW starts without flows"
    );
    let all_healthy = |_: &str, _: IpAddr| true;
    s.step_rollouts(10, all_healthy).unwrap();
    s.step_rollouts(60, all_healthy).unwrap();
    assert_eq!(
        weight_of(&s, "198.18.0.111"),
        Some(50),
        "half way up the ramp"
    );
    assert_eq!(
        weight_of(&s, "198.18.0.101"),
        Some(100),
        "OLD serves during the ramp"
    );
    s.step_rollouts(120, all_healthy).unwrap();
    assert_eq!(weight_of(&s, "198.18.0.111"), Some(100));
    assert_eq!(weight_of(&s, "198.18.0.101"), Some(0), "OLD drains");
    s.step_rollouts(200, all_healthy).unwrap();
    assert!(
        weight_of(&s, "198.18.0.101").is_some(),
        "OLD stays until drained"
    );
    s.check_drains(300, |_, _| 0);
    s.step_rollouts(300, all_healthy).unwrap();
    assert_eq!(
        weight_of(&s, "198.18.0.101"),
        None,
        "OLD removed once drained"
    );
    assert_eq!(weight_of(&s, "198.18.0.112"), Some(0), "next NEW added");
    for t in [310, 420, 430] {
        s.step_rollouts(t, all_healthy).unwrap();
    }
    s.check_drains(500, |_, _| 7);
    s.step_rollouts(500, all_healthy).unwrap();
    assert!(
        weight_of(&s, "198.18.0.102").is_some(),
        "OLD with flows is kept"
    );
    s.check_drains(5430, |_, _| 7);
    s.step_rollouts(5430, all_healthy).unwrap();
    let rollout = s.service("web").unwrap().rollout.clone().unwrap();
    assert_eq!(rollout.outcome, Some(RolloutOutcome::Completed));
    assert!(rollout
        .decisions
        .iter()
        .any(|d| d.what.contains("7 flows left")));
    assert_eq!(weight_of(&s, "198.18.0.102"), None);
}

#[test]
fn rollout_fails_on_an_unhealthy_new_and_aborts_cleanly() {
    let mut s = checked_sample();
    s.start_rollout("web", rollout_plan(&[("198.18.0.101", "198.18.0.111")]), 0)
        .unwrap();
    s.step_rollouts(999, |_, _| false).unwrap();
    assert!(weight_of(&s, "198.18.0.111").is_some());
    s.step_rollouts(1000, |_, _| false).unwrap();
    assert_eq!(weight_of(&s, "198.18.0.111"), None, "unhealthy NEW removed");
    assert_eq!(weight_of(&s, "198.18.0.101"), Some(100), "OLD untouched");
    let rollout = s.service("web").unwrap().rollout.clone().unwrap();
    assert_eq!(rollout.outcome, Some(RolloutOutcome::Failed));

    s.start_rollout(
        "web",
        rollout_plan(&[("198.18.0.101", "198.18.0.111")]),
        2000,
    )
    .unwrap();
    s.step_rollouts(2010, |_, _| true).unwrap();
    s.step_rollouts(2200, |_, _| true).unwrap();
    assert_eq!(weight_of(&s, "198.18.0.101"), Some(0), "draining");
    s.abort_rollout("web", 2300).unwrap();
    assert_eq!(weight_of(&s, "198.18.0.101"), Some(100), "OLD serves again");
    assert_eq!(weight_of(&s, "198.18.0.111"), None);
    assert!(
        s.abort_rollout("web", 2400).is_err(),
        "nothing left to abort"
    );
}

#[test]
fn malformed_rollouts_are_refused() {
    let s = checked_sample();
    for pairs in [
        vec![],
        vec![("198.18.0.199", "198.18.0.111")],
        vec![("198.18.0.103", "198.18.0.111")],
        vec![("198.18.0.101", "198.18.0.102")],
        vec![
            ("198.18.0.101", "198.18.0.111"),
            ("198.18.0.102", "198.18.0.111"),
        ],
        vec![("198.18.0.101", "198.18.0.101")],
    ] {
        let mut copy = s.clone();
        assert!(
            copy.start_rollout("web", rollout_plan(&pairs), 0).is_err(),
            "{pairs:?}"
        );
        assert_eq!(copy, s);
    }
    let mut unchecked = sample();
    assert!(unchecked
        .start_rollout("web", rollout_plan(&[("198.18.0.101", "198.18.0.111")]), 0)
        .is_err());
}

#[test]
fn flip_with_drain_timeout_names_the_old_groups_backends() {
    let mut s = sample();
    s.flip("web", "green", Some(1000), 0).unwrap();
    assert_eq!(shares_of(&s), vec![0, 10_000]);
    assert!(s.flip_drains_due(999).is_empty());
    let due = s.flip_drains_due(1000);
    let blue: Vec<(u32, u32)> = s.service("web").unwrap().groups[0]
        .backends
        .iter()
        .map(|b| (b.index, b.epoch))
        .collect();
    assert_eq!(due, vec![("web".to_string(), blue)]);
    s.end_flip_drain("web").unwrap();
    assert!(s.flip_drains_due(5000).is_empty());
    assert!(
        s.flip("web", "green", None, 0).is_err(),
        "flip to the live group"
    );
}
