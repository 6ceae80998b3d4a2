//! Changes as the daemon applies them: the regressions of input that used to be taken
//! (durations that overflow) and of changes that used to fight each other (a flip or a
//! split during a canary, a stale flip drain).

use super::*;
use crate::{
    release::{canary::Outcome, flip::due},
    state::tests::{ip, sample, shares_of},
};

fn bp(v: u16) -> BasisPoints {
    BasisPoints::new(v).unwrap()
}

fn canary_plan(interval_ms: u64) -> CanaryPlan {
    CanaryPlan {
        from: "blue".into(),
        to: "green".into(),
        steps: vec![bp(1000), bp(5000), BasisPoints::ALL],
        interval_ms,
        auto_rollback: None,
        analysis: None,
    }
}

fn start_canary(interval_ms: u64) -> Change {
    Change::StartCanary {
        service: "web".into(),
        plan: canary_plan(interval_ms),
    }
}

/// Applies `change` to a copy of `state`, as the controller does: the copy on success, the
/// one-line refusal otherwise (and `state` itself is never touched).
fn applied(state: &State, change: &Change, now_ms: u64) -> Result<State, String> {
    let mut copy = state.clone();
    change
        .apply(&mut copy, now_ms)
        .map(|()| copy)
        .map_err(|e| e.to_string())
}

#[test]
fn durations_that_would_overflow_a_deadline_are_refused_with_one_line() {
    let s = sample();
    let huge = u64::MAX;
    let cases = [
        (
            start_canary(huge),
            "the canary interval of 18446744073709551615 ms is longer than the longest allowed (365 days)",
        ),
        (
            Change::Drain {
                service: "web".into(),
                addr: ip("198.18.0.101"),
                timeout_ms: Some(huge),
                cut: false,
            },
            "the drain timeout of 18446744073709551615 ms is longer than the longest allowed (365 days)",
        ),
        (
            Change::Flip {
                service: "web".into(),
                to: "green".into(),
                // What `--drain-timeout 18446744073709551s616ms` saturates to.
                drain_timeout_ms: Some(huge),
                cut: true,
            },
            "the flip's drain timeout of 18446744073709551615 ms is longer than the longest allowed (365 days)",
        ),
        (
            Change::SetHealth {
                service: "web".into(),
                health: Some(HealthCheck {
                    kind: crate::state::CheckKind::Tcp,
                    interval_ms: huge,
                    timeout_ms: 1000,
                    rise: 1,
                    fall: 1,
                }),
            },
            "the health-check interval of 18446744073709551615 ms is longer than the longest allowed (365 days)",
        ),
    ];
    for (change, expected) in cases {
        assert_eq!(applied(&s, &change, 1000).unwrap_err(), expected);
    }
    // The longest allowed interval is taken, and its deadline lies in the future.
    let s = applied(&s, &start_canary(crate::duration::MAX_MS), 1000).unwrap();
    let canary = s.service("web").unwrap().canary.as_ref().unwrap();
    assert_eq!(canary.next_step_at_ms, Some(1000 + crate::duration::MAX_MS));
}

#[test]
fn a_flip_during_a_canary_ends_it_and_no_later_step_undoes_the_flip() {
    let s = applied(&sample(), &start_canary(3000), 0).unwrap();
    assert_eq!(shares_of(&s), vec![9000, 1000]);
    let flip = Change::Flip {
        service: "web".into(),
        to: "blue".into(),
        drain_timeout_ms: None,
        cut: true,
    };
    let mut s = applied(&s, &flip, 1000).unwrap();
    assert_eq!(shares_of(&s), vec![10_000, 0]);
    let canary = s.service("web").unwrap().canary.clone().unwrap();
    assert_eq!(canary.outcome, Some(Outcome::Overridden));
    assert_eq!(
        canary.decisions.last().unwrap().what,
        "ended by the operator's flip to blue: the split is the operator's from now on"
    );
    // The step that was due at 3 s never comes.
    crate::release::canary::step_due(&mut s, 3000).unwrap();
    crate::release::canary::step_due(&mut s, 60_000).unwrap();
    assert_eq!(shares_of(&s), vec![10_000, 0]);
}

#[test]
fn a_split_or_an_apply_that_changes_the_split_ends_a_canary_and_one_that_keeps_it_does_not() {
    let running = applied(&sample(), &start_canary(3000), 0).unwrap();
    let split = Change::Split {
        service: "web".into(),
        shares: vec![("blue".into(), bp(7000)), ("green".into(), bp(3000))],
    };
    let s = applied(&running, &split, 1000).unwrap();
    let canary = s.service("web").unwrap().canary.clone().unwrap();
    assert_eq!(canary.outcome, Some(Outcome::Overridden));
    assert!(canary
        .decisions
        .last()
        .unwrap()
        .what
        .contains("the operator's split"));
    assert_eq!(shares_of(&s), vec![7000, 3000]);

    // An apply of the exported state leaves the split and so the canary alone; an apply
    // with another split ends it.
    let exported = Config::from_state(&running).unwrap().to_toml();
    let same = applied(
        &running,
        &Change::Apply {
            toml: exported.clone(),
        },
        1000,
    )
    .unwrap();
    assert!(same
        .service("web")
        .unwrap()
        .canary
        .as_ref()
        .unwrap()
        .running());
    let other = exported.replacen("percent = \"90.00\"", "percent = \"80\"", 1);
    let other = other.replacen("percent = \"10.00\"", "percent = \"20\"", 1);
    assert_ne!(other, exported, "the export's percentages: {exported}");
    let s = applied(&running, &Change::Apply { toml: other }, 1000).unwrap();
    let canary = s.service("web").unwrap().canary.clone().unwrap();
    assert_eq!(canary.outcome, Some(Outcome::Overridden));
    assert_eq!(shares_of(&s), vec![8000, 2000]);
}

#[test]
fn a_flip_drain_never_forgets_the_flows_of_a_group_that_takes_new_flows_again() {
    let flip = Change::Flip {
        service: "web".into(),
        to: "green".into(),
        drain_timeout_ms: Some(6000),
        cut: true,
    };
    let s = applied(&sample(), &flip, 0).unwrap();
    assert_eq!(due(&s, 6000).len(), 1, "the drain names blue's backends");
    // The operator goes back to blue with a split, then takes a backend's weight away: the
    // drain that was pending must not forget blue's (now live) flows.
    let back = Change::Split {
        service: "web".into(),
        shares: vec![("blue".into(), BasisPoints::ALL), ("green".into(), bp(0))],
    };
    let s = applied(&s, &back, 1000).unwrap();
    let weight = Change::SetWeight {
        service: "web".into(),
        addr: ip("198.18.0.102"),
        weight: 0,
    };
    let s = applied(&s, &weight, 2000).unwrap();
    assert_eq!(s.service("web").unwrap().flip_drain, None);
    assert!(due(&s, 6000).is_empty());

    // With three groups, only the group that stays without share is still drained.
    let mut three = sample();
    three
        .add_backend("web", ip("198.18.0.104"), "gray", 100)
        .unwrap();
    three
        .set_split(
            "web",
            &[
                ("blue".into(), bp(5000)),
                ("green".into(), bp(2500)),
                ("gray".into(), bp(2500)),
            ],
        )
        .unwrap();
    let flip_gray = Change::Flip {
        service: "web".into(),
        to: "gray".into(),
        drain_timeout_ms: Some(6000),
        cut: true,
    };
    let s = applied(&three, &flip_gray, 0).unwrap();
    let green_back = Change::Split {
        service: "web".into(),
        shares: vec![("green".into(), bp(5000)), ("gray".into(), bp(5000))],
    };
    let s = applied(&s, &green_back, 1000).unwrap();
    let drain = s.service("web").unwrap().flip_drain.clone().unwrap();
    assert_eq!(drain.groups, vec!["blue".to_string()]);
}
