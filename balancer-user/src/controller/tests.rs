//! The controller on fakes ([`super::fakes`]): refusals, faults mid-publish, restarts, and
//! the release strategies driven by a manual clock.

use std::{collections::BTreeMap, net::IpAddr};

use balancer_common::{Backend, VipInfo};

use super::{
    fakes::{hop_of, Rig, SILENT, SLOW},
    ports::Neighbors as _,
    Controller, Followed,
};
use crate::{
    basis_points::BasisPoints,
    dataplane::ServiceImage,
    error::{Error, Fault, Refused},
    neighbor::{follow::Sighting, NextHop},
    operation::Change,
    release::{
        canary::{CanaryPlan, Outcome},
        rollout::{RolloutOutcome, RolloutPlan},
    },
    state::{
        tests::{checked_sample, ip, sample},
        State, StateError,
    },
};

fn apply(controller: &mut Controller, change: Change) -> Result<(), Error> {
    controller.change(|state, now_ms| change.apply(state, now_ms))
}

/// A rollout of web's blue group replacing 198.18.0.101 with 198.18.0.111.
fn replace_101_with_111(ready_timeout_ms: u64, slow_start_ms: u64) -> Change {
    Change::StartRollout {
        service: "web".into(),
        plan: RolloutPlan {
            group: "blue".into(),
            pairs: vec![(ip("198.18.0.101"), ip("198.18.0.111"))],
            ready_timeout_ms,
            slow_start_ms,
            drain_timeout_ms: None,
            cut: false,
            analysis: None,
        },
    }
}

fn flip_web_to_green(drain_timeout_ms: Option<u64>, cut: bool) -> Change {
    Change::Flip {
        service: "web".into(),
        to: "green".into(),
        drain_timeout_ms,
        cut,
    }
}

/// The checked sample with every new flow of web on blue (the group rollouts replace).
fn blue_only_checked() -> State {
    let mut state = checked_sample();
    state
        .set_split("web", &[("blue".into(), BasisPoints::ALL)])
        .unwrap();
    state
}

fn bp(v: u16) -> BasisPoints {
    BasisPoints::new(v).unwrap()
}

#[test]
fn start_publishes_the_stored_state() {
    let rig = Rig::new(sample());
    let controller = rig.start();
    assert_eq!(controller.state(), &sample());
    assert!(rig.live_matches(&sample()));
    assert!(rig.backends_match(&sample()));
}

/// Adds the backend that [`FakeNeighbors`] cannot find.
fn unreachable_backend() -> Change {
    Change::AddBackend {
        service: "web".into(),
        backend: crate::api::AddBackend {
            addr: ip(SILENT),
            group: "blue".into(),
            weight: None,
        },
    }
}

#[test]
fn a_refused_change_touches_neither_the_store_nor_the_data_plane() {
    let rig = Rig::new(sample());
    let mut controller = rig.start();
    let (writes, saves) = (rig.plane.maps().writes, rig.store.saves());
    let refusals = [
        Change::RemoveService {
            service: "nosuch".into(),
        },
        Change::Split {
            service: "web".into(),
            shares: vec![("blue".into(), bp(5000))],
        },
        Change::Apply {
            toml: "[[service]]\nname = \"web\"\n".into(),
        },
    ];
    for change in refusals {
        let err = apply(&mut controller, change.clone()).unwrap_err();
        assert!(matches!(err, Error::Refused(_)), "{change:?}: {err}");
    }
    // Valid for the state, but the backend is not in the neighbour table: the change waits
    // for it to be resolved off the lock, having changed nothing.
    let err = apply(&mut controller, unreachable_backend()).unwrap_err();
    assert!(
        matches!(&err, Error::Unlocated(addrs) if addrs == &[ip(SILENT)]),
        "{err}"
    );
    assert_eq!(
        rig.plane.maps().writes,
        writes,
        "the data plane was written"
    );
    assert_eq!(rig.store.saves(), saves, "the store was written");
    assert_eq!(controller.state(), &sample());
    assert!(rig.live_matches(&sample()));
}

#[test]
fn a_failed_save_publishes_nothing() {
    let rig = Rig::new(sample());
    let mut controller = rig.start();
    let writes = rig.plane.maps().writes;
    rig.store.fail_next_save();
    let err = apply(
        &mut controller,
        Change::SetWeight {
            service: "web".into(),
            addr: ip("198.18.0.101"),
            weight: 1,
        },
    )
    .unwrap_err();
    assert!(matches!(err, Error::Fault(Fault::Store(_))), "{err}");
    assert_eq!(
        crate::error::one_line(&err),
        "sync state.json: No space left on device (os error 28)"
    );
    assert_eq!(rig.plane.maps().writes, writes);
    assert_eq!(controller.state(), &sample());
    assert_eq!(rig.store.saved(), Some(sample()));
}

/// A change of both services (and a removal that cuts a backend) whose data-plane write
/// fails at each possible point: the old generation stays (or is put back) live, and the
/// store holds the old state.
#[test]
fn a_data_plane_failure_mid_publish_leaves_the_old_state_live_and_stored() {
    let apply_both = Change::Apply {
        toml: r#"
[[service]]
name = "web"
vip = "198.19.0.1:80/tcp"
affinity = "client"
[[service.group]]
name = "blue"
backends = [{ addr = "198.18.0.101", weight = 100 }, { addr = "198.18.0.120" }]

[[service]]
name = "dns"
vip = "[2001:db8:ffff::1]:53/udp"
table_size = 251
[[service.group]]
name = "main"
backends = [{ addr = "2001:db8::101", weight = 5 }]
"#
        .into(),
    };
    let cut = Change::RemoveBackend {
        service: "web".into(),
        addr: ip("198.18.0.102"),
        cut: true,
    };
    for (change, count, writes) in [
        (
            apply_both,
            3,
            "a backend added (.103 retires), two services",
        ),
        (cut, 2, "one service, a backend cleared"),
    ] {
        fail_at_each_write(change, count, writes);
    }
}

/// Runs `change` with the data plane failing at each of its `count` writes in turn
/// (`writes` says which they are).
fn fail_at_each_write(change: Change, count: usize, writes: &str) {
    // How many writes the change makes when nothing fails.
    let total = {
        let rig = Rig::new(sample());
        let mut controller = rig.start();
        let before = rig.plane.maps().writes;
        apply(&mut controller, change.clone()).unwrap();
        let next = controller.state().clone();
        assert!(rig.live_matches(&next) && rig.backends_match(&next));
        let after = rig.plane.maps().writes;
        after - before
    };
    assert_eq!(total, count, "{writes}");
    for failing in 0..total {
        let rig = Rig::new(sample());
        let mut controller = rig.start();
        rig.plane.fail_after(failing);
        let err = apply(&mut controller, change.clone()).unwrap_err();
        assert!(
            matches!(err, Error::Fault(Fault::DataPlane(_))),
            "write {failing}: {err}"
        );
        assert_eq!(controller.state(), &sample(), "write {failing}");
        assert_eq!(rig.store.saved(), Some(sample()), "write {failing}");
        assert!(
            rig.live_matches(&sample()),
            "write {failing}: new tables live"
        );
        assert!(rig.backends_match(&sample()), "write {failing}: backends");
        // The fault has passed: the same change now goes through.
        apply(&mut controller, change.clone()).unwrap();
        assert!(rig.live_matches(controller.state()));
    }
}

#[test]
fn a_removed_service_takes_its_tables_with_it() {
    let rig = Rig::new(sample());
    let mut controller = rig.start();
    let slot = controller.state().service("web").unwrap().slot;
    assert!(rig.plane.maps().live.contains_key(&slot));
    apply(
        &mut controller,
        Change::RemoveService {
            service: "web".into(),
        },
    )
    .unwrap();
    assert!(!rig.plane.maps().live.contains_key(&slot));
    assert!(rig.live_matches(controller.state()));
}

#[test]
fn a_restart_reconciles_to_identical_tables_and_removes_leftovers() {
    let rig = Rig::new(sample());
    let mut first = rig.start();
    apply(&mut first, flip_web_to_green(None, false)).unwrap();
    let state = first.state().clone();
    let live_before: BTreeMap<u32, ServiceImage> = rig.plane.maps().live.clone();
    let backends_before = rig.plane.maps().backends.clone();
    drop(first);
    // Leftovers of a crash between two writes: a VIP and a backend the state lacks.
    {
        let mut maps = rig.plane.maps();
        let stray: crate::vip::Vip = "198.19.0.99:80/tcp".parse().unwrap();
        maps.vips.push((stray.key(), VipInfo { service: 9 }));
        maps.backends.insert(
            4000,
            Backend {
                epoch: 77,
                ..Backend::default()
            },
        );
        let tables = maps.live.values().next().unwrap().clone();
        maps.live.insert(9, tables);
    }
    let second = rig.start();
    assert_eq!(second.state(), &state);
    assert!(
        rig.plane.maps().live == live_before,
        "tables differ after the restart (or the stray ones stayed)"
    );
    assert_eq!(rig.plane.maps().backends, backends_before);
    assert!(rig.live_matches(&state), "the stray VIP stayed");
}

#[test]
fn a_canary_steps_on_the_clock_exactly_as_planned() {
    let rig = Rig::new(sample());
    let mut controller = rig.start();
    let start_ms = crate::clock::Clock::now_ms(&*rig.clock);
    apply(
        &mut controller,
        Change::StartCanary {
            service: "web".into(),
            plan: CanaryPlan {
                from: "blue".into(),
                to: "green".into(),
                steps: vec![bp(1000), bp(5000), BasisPoints::ALL],
                interval_ms: 30_000,
                auto_rollback: None,
                analysis: None,
            },
        },
    )
    .unwrap();
    let shares = |c: &Controller| -> Vec<u16> {
        let web = c.state().service("web").unwrap();
        web.shares().unwrap().iter().map(|b| b.get()).collect()
    };
    assert_eq!(shares(&controller), [9000, 1000]);
    let mut seen = vec![(0, shares(&controller))];
    for elapsed in (1000..=61_000).step_by(1000) {
        rig.clock.set(start_ms + elapsed);
        controller.tick().unwrap();
        let now = shares(&controller);
        if seen.last().map(|(_, s)| s) != Some(&now) {
            seen.push((elapsed, now));
        }
        assert!(rig.live_matches(controller.state()), "at {elapsed} ms");
    }
    assert_eq!(
        seen,
        [
            (0, vec![9000, 1000]),
            (30_000, vec![5000, 5000]),
            (60_000, vec![0, 10_000])
        ]
    );
    let canary = controller
        .state()
        .service("web")
        .unwrap()
        .canary
        .clone()
        .unwrap();
    assert_eq!(canary.outcome, Some(Outcome::Completed));
    let times: Vec<u64> = canary
        .decisions
        .iter()
        .map(|d| d.at_ms - start_ms)
        .collect();
    assert_eq!(times, [0, 30_000, 60_000, 60_000]);
}

#[test]
fn a_rollout_steps_on_the_clock_and_never_lowers_serving_backends() {
    let rig = Rig::new(blue_only_checked());
    let mut controller = rig.start();
    apply(&mut controller, replace_101_with_111(60_000, 1000)).unwrap();
    let serving = |c: &Controller| -> usize {
        let web = c.state().service("web").unwrap();
        web.groups[0]
            .backends
            .iter()
            .filter(|b| b.weight > 0)
            .count()
    };
    let before = serving(&controller);
    let mut outcome = None;
    for _ in 0..100 {
        rig.clock.advance(100);
        for job in controller.tick().unwrap().checks {
            controller.report_check(&job, Ok(())).unwrap();
        }
        assert!(serving(&controller) >= before, "fewer serving backends");
        outcome = controller
            .state()
            .service("web")
            .unwrap()
            .rollout
            .as_ref()
            .and_then(|r| r.outcome);
        if outcome.is_some() {
            break;
        }
    }
    assert_eq!(outcome, Some(RolloutOutcome::Completed));
    let web = controller.state().service("web").unwrap();
    let blue: Vec<(IpAddr, u16)> = web.groups[0]
        .backends
        .iter()
        .map(|b| (b.addr, b.weight))
        .collect();
    assert_eq!(blue, [(ip("198.18.0.102"), 50), (ip("198.18.0.111"), 100)]);
    assert!(rig.backends_match(controller.state()));
    assert!(rig.live_matches(controller.state()));
    let phases: Vec<&str> = web
        .rollout
        .as_ref()
        .unwrap()
        .decisions
        .iter()
        .map(|d| d.what.split(';').next().unwrap_or(""))
        .collect();
    assert_eq!(
        phases,
        [
            "pair 1/1: added 198.18.0.111, waiting for its health checks",
            "198.18.0.111 passes its health checks",
            "198.18.0.111 at full weight",
            "198.18.0.101 drained (0 flows left)",
            "completed: every pair replaced"
        ]
    );
}

#[test]
fn a_cut_flip_drain_forgets_the_old_groups_flows_at_its_deadline() {
    let rig = Rig::new(sample());
    let mut controller = rig.start();
    apply(&mut controller, flip_web_to_green(Some(5000), true)).unwrap();
    rig.clock.advance(4999);
    controller.tick().unwrap();
    assert!(rig.plane.maps().forgotten.is_empty(), "forgotten early");
    rig.clock.advance(1);
    controller.tick().unwrap();
    let web = controller.state().service("web").unwrap();
    let mut blue: Vec<(u32, u32)> = web.groups[0]
        .backends
        .iter()
        .map(|b| (b.index, b.epoch))
        .collect();
    let mut forgotten = rig.plane.maps().forgotten.clone();
    blue.sort();
    forgotten.sort();
    assert_eq!(forgotten, blue);
    assert_eq!(web.flip_drain, None);
}

#[test]
fn a_flip_drain_that_is_not_cut_ends_at_its_deadline_and_forgets_nothing() {
    use crate::clock::Clock as _;
    let rig = Rig::new(sample());
    let mut controller = rig.start();
    apply(&mut controller, flip_web_to_green(Some(5000), false)).unwrap();
    let drain = controller
        .state()
        .service("web")
        .unwrap()
        .flip_drain
        .clone();
    assert_eq!(
        drain.map(|d| (d.deadline_ms, d.cut)),
        Some((rig.clock.now_ms() + 5000, false))
    );
    rig.clock.advance(5000);
    controller.tick().unwrap();
    assert!(
        rig.plane.maps().forgotten.is_empty(),
        "flows forgotten without a cut"
    );
    assert_eq!(controller.state().service("web").unwrap().flip_drain, None);
}

#[test]
fn refusals_of_the_release_strategies_name_the_reason() {
    let rig = Rig::new(sample());
    let mut controller = rig.start();
    let err = apply(&mut controller, replace_101_with_111(1, 0)).unwrap_err();
    assert!(matches!(
        err,
        Error::Refused(Refused::State(StateError::Rollout(_)))
    ));
}

/// Removes backend `addr` of web without cutting it: it retires.
fn retire(controller: &mut Controller, addr: &str) {
    let remove = Change::RemoveBackend {
        service: "web".into(),
        addr: ip(addr),
        cut: false,
    };
    apply(controller, remove).unwrap();
}

/// The data-plane entry of backend `addr` of web, if any.
fn entry_of(rig: &Rig, state: &State, addr: &str) -> Option<Backend> {
    let web = state.service("web").unwrap();
    let (index, epoch) = web
        .backends()
        .map(|(_, b)| (b.addr, b.index, b.epoch))
        .chain(web.retired.iter().map(|r| (r.addr, r.index, r.epoch)))
        .find(|(a, _, _)| *a == ip(addr))
        .map(|(_, i, e)| (i, e))?;
    rig.plane
        .maps()
        .backends
        .get(&index)
        .copied()
        .filter(|b| b.epoch == epoch)
}

#[test]
fn a_removed_backend_keeps_its_data_plane_entry_until_its_flows_end_it_dies_or_it_expires() {
    let rig = Rig::new(checked_sample());
    let mut controller = rig.start();
    let before = controller.state().clone();
    let remove = |addr: &str| Change::RemoveBackend {
        service: "web".into(),
        addr: ip(addr),
        cut: false,
    };
    for addr in ["198.18.0.101", "198.18.0.102"] {
        apply(&mut controller, remove(addr)).unwrap();
    }
    let state = controller.state().clone();
    assert_eq!(state.service("web").unwrap().retired.len(), 2);
    assert!(rig.backends_match(&state) && rig.live_matches(&state));
    // .101 still has flows; .102 has none.
    assert!(entry_of(&rig, &state, "198.18.0.101").is_some());
    assert!(entry_of(&rig, &state, "198.18.0.102").is_some());
    let r101 = state.service("web").unwrap().retired[0].clone();
    assert_eq!(r101.addr, ip("198.18.0.101"));
    rig.plane.maps().active.insert((r101.index, r101.epoch), 3);
    let status = controller.status(Some("web")).unwrap();
    let shown: Vec<(IpAddr, u64)> = status.services[0]
        .retired
        .iter()
        .map(|r| (r.addr, r.active_flows))
        .collect();
    assert_eq!(shown, [(ip("198.18.0.101"), 3), (ip("198.18.0.102"), 0)]);

    // The next count (at most a second later) ends the idle one.
    rig.clock.advance(1000);
    for job in controller.tick().unwrap().checks {
        controller.report_check(&job, Ok(())).unwrap();
    }
    let state = controller.state().clone();
    let retired: Vec<IpAddr> = state
        .service("web")
        .unwrap()
        .retired
        .iter()
        .map(|r| r.addr)
        .collect();
    assert_eq!(retired, [ip("198.18.0.101")]);
    assert!(
        entry_of(&rig, &before, "198.18.0.102").is_none(),
        "idle .102 cleared"
    );
    assert!(entry_of(&rig, &state, "198.18.0.101").is_some());

    // Dead: .101 fails its checks (fall = 3): it goes, and its flows with it.
    let mut failures = 0;
    for _ in 0..100 {
        rig.clock.advance(200);
        for job in controller.tick().unwrap().checks {
            let result = match job.target.ip() == ip("198.18.0.101") {
                true => {
                    failures += 1;
                    Err("refused".to_string())
                }
                false => Ok(()),
            };
            controller.report_check(&job, result).unwrap();
        }
        if controller
            .state()
            .service("web")
            .unwrap()
            .retired
            .is_empty()
        {
            break;
        }
    }
    assert!(controller
        .state()
        .service("web")
        .unwrap()
        .retired
        .is_empty());
    assert!(failures >= 3, "gone after {failures} failed checks");
    assert!(
        entry_of(&rig, &state, "198.18.0.101").is_none(),
        "dead .101 cleared"
    );
    assert!(rig.backends_match(controller.state()));
}

#[test]
fn a_retired_backend_with_live_flows_goes_at_the_retire_timeout() {
    let rig = Rig::new(sample());
    let mut controller = rig.start();
    retire(&mut controller, "198.18.0.102");
    let retired = controller.state().service("web").unwrap().retired[0].clone();
    rig.plane
        .maps()
        .active
        .insert((retired.index, retired.epoch), 1);
    let timeout = u64::try_from(super::fakes::RETIRE_TIMEOUT.as_millis()).unwrap();
    rig.clock.advance(timeout - 1000);
    controller.tick().unwrap();
    assert_eq!(controller.state().service("web").unwrap().retired.len(), 1);
    rig.clock.advance(1000);
    controller.tick().unwrap();
    assert!(controller
        .state()
        .service("web")
        .unwrap()
        .retired
        .is_empty());
    assert!(rig.backends_match(controller.state()));
}

#[test]
fn a_restart_starts_from_the_stored_health_not_from_every_backend_up() {
    let rig = Rig::new(checked_sample());
    let mut first = rig.start();
    let down = ip("198.18.0.102");
    // Up at start; .102 fails its checks (fall = 3) and goes down.
    for _ in 0..50 {
        rig.clock.advance(200);
        for job in first.tick().unwrap().checks {
            let failed = job.target.ip() == down;
            let result = if failed {
                Err("connect: refused".into())
            } else {
                Ok(())
            };
            first.report_check(&job, result).unwrap();
        }
    }
    let before = first.status(Some("web")).unwrap().services[0]
        .backends
        .clone();
    let shown = before.iter().find(|b| b.addr == down).unwrap();
    assert_eq!(shown.health, Some(crate::api::Health::Down));
    let since = shown.health_changed_at_ms;
    assert!(since.is_some());
    drop(first);
    rig.clock.advance(10_000);
    let second = rig.start();
    let after = second.status(Some("web")).unwrap().services[0]
        .backends
        .clone();
    let shown = after.iter().find(|b| b.addr == down).unwrap();
    assert_eq!(
        (
            shown.health,
            shown.health_changed_at_ms,
            shown.health_error.as_deref()
        ),
        (
            Some(crate::api::Health::Down),
            since,
            Some("connect: refused")
        )
    );
    assert_eq!(
        shown.effective_share, 0.0,
        "a down backend got new flows after the restart"
    );
    assert!(after
        .iter()
        .filter(|b| b.addr != down)
        .all(|b| b.health == Some(crate::api::Health::Up)));
}

#[test]
fn a_backend_the_kernel_has_not_resolved_yet_waits_for_its_resolution() {
    let rig = Rig::new(sample());
    let mut controller = rig.start();
    let add = Change::AddBackend {
        service: "web".into(),
        backend: crate::api::AddBackend {
            addr: ip(SLOW),
            group: "blue".into(),
            weight: None,
        },
    };
    let writes = rig.plane.maps().writes;
    let err = apply(&mut controller, add.clone()).unwrap_err();
    assert!(
        matches!(&err, Error::Unlocated(addrs) if addrs == &[ip(SLOW)]),
        "{err}"
    );
    assert_eq!(rig.plane.maps().writes, writes, "written before located");
    // Resolved (off the lock, by the executor), the same change goes through.
    assert!(rig.neighbors.resolve(&[ip(SLOW)])[0].is_ok());
    apply(&mut controller, add).unwrap();
    let entry = entry_of(&rig, controller.state(), SLOW).expect("an entry");
    assert_eq!(entry.dst_mac, hop_of(ip(SLOW)).dst_mac);
}

#[test]
fn a_rollout_step_adding_an_unresolved_backend_waits_and_checks_go_on() {
    let rig = Rig::new(blue_only_checked());
    let mut controller = rig.start();
    let mut rollout = replace_101_with_111(60_000, 0);
    if let Change::StartRollout { plan, .. } = &mut rollout {
        plan.pairs.push((ip("198.18.0.102"), ip(SLOW)));
    }
    apply(&mut controller, rollout).unwrap();
    let has_slow = |c: &Controller| {
        let web = c.state().service("web").unwrap();
        web.backends().any(|(_, b)| b.addr == ip(SLOW))
    };
    let mut waited = false;
    for _ in 0..100 {
        rig.clock.advance(100);
        let tick = controller.tick().unwrap();
        if !tick.locate.is_empty() {
            assert_eq!(tick.locate, [ip(SLOW)]);
            assert!(!has_slow(&controller));
            assert!(!tick.checks.is_empty(), "checks stopped while waiting");
            waited = true;
            rig.neighbors.resolve(&tick.locate);
        }
        for job in tick.checks {
            controller.report_check(&job, Ok(())).unwrap();
        }
        if has_slow(&controller) {
            break;
        }
    }
    assert!(waited && has_slow(&controller));
    assert!(rig.backends_match(controller.state()));
}

/// (index, epoch) of web's backend `addr`.
fn id_of(controller: &Controller, addr: &str) -> (u32, u32) {
    let web = controller.state().service("web").unwrap();
    web.backends()
        .map(|(_, b)| (b.addr, b.index, b.epoch))
        .chain(web.retired.iter().map(|r| (r.addr, r.index, r.epoch)))
        .find(|(a, _, _)| *a == ip(addr))
        .map(|(_, i, e)| (i, e))
        .unwrap()
}

#[test]
fn a_backend_that_moves_on_the_wire_is_rewritten_with_its_epoch() {
    let rig = Rig::new(sample());
    let mut controller = rig.start();
    let addr = ip("198.18.0.101");
    let (index, epoch) = id_of(&controller, "198.18.0.101");
    let before = rig.plane.maps().backends[&index];
    let placements = controller.placements().unwrap();
    assert_eq!(placements[&addr], Some(hop_of(addr)));
    assert_eq!(placements.len(), 4);

    let new_mac = [2, 0, 0, 0, 0xb0, 1];
    let moved = Sighting::Neighbour {
        ifindex: 2,
        mac: new_mac,
    };
    let followed = controller.follow(&[(addr, moved)]).unwrap();
    assert_eq!(
        followed,
        Followed {
            rewritten: 1,
            relocate: false
        }
    );
    let after = rig.plane.maps().backends[&index];
    assert_eq!(
        after,
        Backend {
            dst_mac: new_mac,
            ..before
        }
    );
    assert_eq!(after.epoch, epoch);

    // The same again, a failure, or an address that is no backend: nothing is written.
    let writes = rig.plane.maps().writes;
    let failed = Sighting::Failed { ifindex: 2 };
    let stranger = (ip("198.18.0.99"), moved);
    let followed = controller
        .follow(&[(addr, moved), (addr, failed), stranger])
        .unwrap();
    assert_eq!(followed, Followed::default());
    assert_eq!(rig.plane.maps().writes, writes);
    assert_eq!(rig.plane.maps().backends[&index].dst_mac, new_mac);

    // A neighbour on another interface needs a full location; a full location is taken.
    let elsewhere = Sighting::Neighbour {
        ifindex: 7,
        mac: [2, 0, 0, 0, 0, 7],
    };
    assert!(controller.follow(&[(addr, elsewhere)]).unwrap().relocate);
    assert_eq!(rig.plane.maps().writes, writes);
    let relocated = NextHop {
        ifindex: 7,
        src_mac: [2, 0, 0, 0, 0, 0x17],
        dst_mac: [2, 0, 0, 0, 0, 7],
    };
    controller
        .follow(&[(addr, Sighting::Located(relocated))])
        .unwrap();
    let entry = rig.plane.maps().backends[&index];
    assert_eq!(
        (entry.ifindex, entry.src_mac, entry.dst_mac, entry.epoch),
        (7, relocated.src_mac, relocated.dst_mac, epoch)
    );
    assert_eq!(controller.placements().unwrap()[&addr], Some(relocated));
}

#[test]
fn a_retired_backend_is_followed_too() {
    let rig = Rig::new(checked_sample());
    let mut controller = rig.start();
    retire(&mut controller, "198.18.0.102");
    let (index, epoch) = id_of(&controller, "198.18.0.102");
    let moved = Sighting::Neighbour {
        ifindex: 2,
        mac: [2, 0, 0, 0, 0xb0, 2],
    };
    let followed = controller.follow(&[(ip("198.18.0.102"), moved)]).unwrap();
    assert_eq!(followed.rewritten, 1);
    let entry = rig.plane.maps().backends[&index];
    assert_eq!((entry.dst_mac, entry.epoch), ([2, 0, 0, 0, 0xb0, 2], epoch));
}

#[test]
fn a_daemon_that_does_not_drive_takes_no_timed_step_and_keeps_checking() {
    let rig = Rig::new(checked_sample());
    let mut controller = rig.start();
    apply(
        &mut controller,
        Change::StartCanary {
            service: "web".into(),
            plan: CanaryPlan {
                from: "blue".into(),
                to: "green".into(),
                steps: vec![bp(5000), BasisPoints::ALL],
                interval_ms: 1000,
                auto_rollback: None,
                analysis: None,
            },
        },
    )
    .unwrap();
    let before = controller.state().clone();
    rig.clock.advance(1000);
    let unanswered = crate::dataplane::FlowCounts::new();
    let tick = controller
        .tick_counted(None, Some(&unanswered), false)
        .unwrap();
    assert_eq!(controller.state(), &before, "a follower stepped the canary");
    assert!(
        !tick.checks.is_empty(),
        "a follower still checks its backends"
    );
    controller
        .tick_counted(None, Some(&unanswered), true)
        .unwrap();
    let canary = controller.state().service("web").unwrap().canary.clone();
    assert_eq!(canary.unwrap().outcome, Some(Outcome::Completed));
}

#[test]
fn the_fleets_health_view_decides_the_tables_over_the_hosts_own_checks() {
    let rig = Rig::new(checked_sample());
    let mut controller = rig.start();
    let web = controller.state().service("web").unwrap().clone();
    let tables = |down: &[&str]| {
        let down = down.iter().map(|a| ip(a)).collect();
        crate::compile::compile(&web, super::fakes::SEED, &down)
            .unwrap()
            .image
    };
    let live = |rig: &Rig| rig.plane.maps().live[&web.slot].clone();
    assert_eq!(live(&rig), tables(&[]));
    // The fleet takes .101 out: this host's tables follow, though its own checks pass.
    controller
        .overrule([("web".to_string(), [(ip("198.18.0.101"), false)].into())].into())
        .unwrap();
    assert_eq!(live(&rig), tables(&["198.18.0.101"]));
    // This host's own check of .102 fails (fall 1): the fleet's view keeps .102 up, so
    // the tables stay, and the host's own result is what it publishes.
    controller
        .overrule(
            [(
                "web".to_string(),
                [(ip("198.18.0.101"), false), (ip("198.18.0.102"), true)].into(),
            )]
            .into(),
        )
        .unwrap();
    let writes = rig.plane.maps().writes;
    let job = crate::health::CheckJob {
        service: "web".into(),
        target: "198.18.0.102:80".parse().unwrap(),
        check: web.health.clone().unwrap(),
    };
    controller
        .report_check(&job, Err("refused".into()))
        .unwrap();
    assert_eq!(rig.plane.maps().writes, writes, "the tables were written");
    assert_eq!(live(&rig), tables(&["198.18.0.101"]));
    assert!(!controller.own_checks()["web"][&ip("198.18.0.102")]);
    assert!(controller.own_checks()["web"][&ip("198.18.0.101")]);
    let status = controller.status(Some("web")).unwrap();
    let shown: Vec<_> = status.services[0]
        .backends
        .iter()
        .map(|b| (b.addr, b.health, b.own_health))
        .collect();
    use crate::api::Health::{Down, Up};
    assert_eq!(
        shown[..2],
        [
            (ip("198.18.0.101"), Some(Down), Some(Up)),
            (ip("198.18.0.102"), Some(Up), Some(Down)),
        ]
    );
    // Without a view of its own for a backend, the host goes by its own checks.
    controller.overrule(BTreeMap::new()).unwrap();
    assert_eq!(live(&rig), tables(&["198.18.0.102"]));
}
