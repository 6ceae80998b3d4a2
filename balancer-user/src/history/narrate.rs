//! What the controller did, told as notes. The controller hands over [`Happening`]s — each
//! change of the desired state with the services it touched as they were and are, and
//! each health change — without knowing who caused them; [`narrate`] turns them into
//! notes for the operator's change that caused them, or for the daemon's own.
//!
//! Decisions are found generically: every [`Decision`] a release strategy recorded in a
//! service's state during a change is a note (see `decisions` for the lists looked at),
//! so a decision a strategy records later shows up without more work here.

use std::net::IpAddr;

use super::{operator, summary, Note};
use crate::{operation::Change, release::Decision, state::Service};

/// Something the controller did, before anyone says who caused it.
#[derive(Clone, Debug, PartialEq)]
pub enum Happening {
    /// A change of the desired state was saved and published.
    Changed {
        /// When (Unix milliseconds).
        at_ms: u64,
        /// The services it touched.
        services: Vec<Touched>,
    },
    /// A checked backend went down or came up.
    Health {
        /// When (Unix milliseconds).
        at_ms: u64,
        /// Its service.
        service: String,
        /// The backend.
        addr: IpAddr,
        /// Whether it is up now.
        healthy: bool,
        /// Why its last check failed, if it did.
        error: Option<String>,
    },
}

/// A service a change touched: as it was and as it is (none: absent).
#[derive(Clone, Debug, PartialEq)]
pub struct Touched {
    /// The service's name.
    pub name: String,
    /// Before the change.
    pub before: Option<Service>,
    /// After it.
    pub after: Option<Service>,
}

/// The notes of `happenings`, caused by the operator's `change`, or by the daemon when
/// none.
///
/// An operator's change is one note per service it touched (what the change does, with
/// the before/after summary), or one without a summary when it touched none; then one note
/// per decision it made a strategy record (e.g. a canary ended by a flip). The daemon's
/// changes are one note per decision, the first of a service carrying the service's
/// before/after summary, and one per end of a drain, a retirement or a flip drain; other
/// changes it makes (a rollout's slow-start ramp) are no events.
pub fn narrate(happenings: &[Happening], change: Option<&Change>) -> Vec<Note> {
    let mut notes = Vec::new();
    for happening in happenings {
        match happening {
            Happening::Changed { at_ms, services } => match change {
                Some(change) => operator_notes(*at_ms, services, change, &mut notes),
                None => daemon_notes(*at_ms, services, &mut notes),
            },
            Happening::Health {
                at_ms,
                service,
                addr,
                healthy,
                error,
            } => {
                let (what, before, after) = match (healthy, error) {
                    (true, _) => (format!("backend {addr} up"), "down", "up"),
                    (false, Some(why)) => (format!("backend {addr} down: {why}"), "up", "down"),
                    (false, None) => (format!("backend {addr} down"), "up", "down"),
                };
                notes.push(Note {
                    at_ms: *at_ms,
                    service: Some(service.clone()),
                    what,
                    before: Some(format!("backend {addr}: {before}")),
                    after: Some(format!("backend {addr}: {after}")),
                });
            }
        }
    }
    notes
}

fn operator_notes(at_ms: u64, services: &[Touched], change: &Change, notes: &mut Vec<Note>) {
    let what = operator::what(change);
    if services.is_empty() {
        let service = operator::service(change).map(str::to_string);
        notes.push(Note::plain(at_ms, service, what));
        return;
    }
    for touched in services {
        let (before, after) = summary::diff(touched.before.as_ref(), touched.after.as_ref());
        notes.push(Note {
            at_ms,
            service: Some(touched.name.clone()),
            what: what.clone(),
            before,
            after,
        });
    }
    for touched in services {
        notes.extend(decision_notes(touched));
    }
}

fn daemon_notes(at_ms: u64, services: &[Touched], notes: &mut Vec<Note>) {
    for touched in services {
        let mut decided = decision_notes(touched);
        if let Some(first) = decided.first_mut() {
            (first.before, first.after) =
                summary::diff(touched.before.as_ref(), touched.after.as_ref());
        }
        notes.extend(decided);
        if let (Some(before), Some(after)) = (&touched.before, &touched.after) {
            notes.extend(
                ends(before, after)
                    .into_iter()
                    .map(|what| Note::plain(at_ms, Some(touched.name.clone()), what)),
            );
        }
    }
}

/// The decision lists of a service: (strategy, decisions).
fn decisions(service: &Service) -> [(&'static str, &[Decision]); 2] {
    let canary = service.canary.as_ref().map_or(&[][..], |c| &c.decisions);
    let rollout = service.rollout.as_ref().map_or(&[][..], |r| &r.decisions);
    [("canary", canary), ("rollout", rollout)]
}

/// A note per decision recorded in the change of `touched`, `strategy: what` at its time.
fn decision_notes(touched: &Touched) -> Vec<Note> {
    let Some(after) = &touched.after else {
        return Vec::new();
    };
    let before = touched.before.as_ref().map(decisions);
    let mut notes = Vec::new();
    for (i, (strategy, now)) in decisions(after).into_iter().enumerate() {
        let was = before.as_ref().map_or(&[][..], |lists| lists[i].1);
        for decision in fresh(was, now) {
            let what = format!("{strategy}: {}", decision.what);
            notes.push(Note::plain(
                decision.at_ms,
                Some(touched.name.clone()),
                what,
            ));
        }
    }
    notes
}

/// The decisions of `now` that `was` did not have: those appended to the same list (which
/// may have dropped its oldest but the first to stay bounded), or all of them when the list
/// is another (a new canary or rollout).
fn fresh<'a>(was: &[Decision], now: &'a [Decision]) -> &'a [Decision] {
    if now.starts_with(was) {
        return &now[was.len()..];
    }
    let same = !was.is_empty() && was.first() == now.first();
    match was
        .last()
        .filter(|_| same)
        .and_then(|last| now.iter().rposition(|d| d == last))
    {
        Some(at) => &now[at + 1..],
        None => now,
    }
}

/// What ended between `before` and `after` of a service: drains, retirements, the flip
/// drain.
fn ends(before: &Service, after: &Service) -> Vec<String> {
    let mut ended = Vec::new();
    for (_, b) in after.backends() {
        let Some(end) = b.drain.and_then(|d| d.ended) else {
            continue;
        };
        let running_before = before
            .backends()
            .any(|(_, old)| old.addr == b.addr && old.drain.is_some_and(|d| d.running()));
        if running_before {
            let mut what = format!(
                "drain of {} ended with {} active flows left",
                b.addr, end.flows_left
            );
            if end.flows_left > 0 && b.drain.is_some_and(|d| d.cut) {
                what.push_str(": they are re-balanced");
            }
            ended.push(what);
        }
    }
    for r in &before.retired {
        let still = after.retired.iter().any(|n| n.addr == r.addr);
        let serving = after.backends().any(|(_, b)| b.addr == r.addr);
        if !still && !serving {
            ended.push(format!(
                "retirement of {} ended: its flows are no longer kept on it",
                r.addr
            ));
        }
    }
    if let (Some(drain), None) = (&before.flip_drain, &after.flip_drain) {
        let groups = drain.groups.join(",");
        ended.push(match drain.cut {
            true => format!("flip drain of {groups} over: their flows are re-balanced"),
            false => format!("flip drain of {groups} over: their flows are kept until they end"),
        });
    }
    ended
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        basis_points::BasisPoints,
        release::{
            canary::{self, CanaryAction, CanaryPlan},
            drain, flip,
        },
        state::{tests::ip, tests::sample, State},
    };

    fn touched(before: &State, after: &State, name: &str) -> Happening {
        Happening::Changed {
            at_ms: 5000,
            services: vec![Touched {
                name: name.into(),
                before: before.services.get(name).cloned(),
                after: after.services.get(name).cloned(),
            }],
        }
    }

    fn whats(notes: &[Note]) -> Vec<&str> {
        notes.iter().map(|n| n.what.as_str()).collect()
    }

    fn plan() -> CanaryPlan {
        CanaryPlan {
            from: "blue".into(),
            to: "green".into(),
            steps: vec![BasisPoints::new(5000).unwrap(), BasisPoints::ALL],
            interval_ms: 1000,
            auto_rollback: None,
            analysis: None,
        }
    }

    #[test]
    fn an_operators_change_is_one_note_with_its_summary_then_its_decisions() {
        let before = sample();
        let mut after = before.clone();
        canary::start(&mut after, "web", plan(), 5000).unwrap();
        let change = Change::StartCanary {
            service: "web".into(),
            plan: plan(),
        };
        let notes = narrate(&[touched(&before, &after, "web")], Some(&change));
        assert_eq!(
            whats(&notes),
            [
                "canary started from blue to green: steps 50.00%,100.00% every 1s",
                "canary: started; step 1/2: 50.00% to green"
            ]
        );
        assert_eq!(
            notes[0].before.as_deref(),
            Some("split: blue=75.00% green=25.00%; canary: none")
        );
        assert_eq!(
            notes[0].after.as_deref(),
            Some(
                "split: blue=50.00% green=50.00%; canary: blue -> green step 1/2 (50.00%), \
                 running"
            )
        );
        assert_eq!(
            (notes[1].before.as_ref(), notes[1].after.as_ref()),
            (None, None)
        );
        assert_eq!(notes[1].service.as_deref(), Some("web"));

        // A change that touched nothing is still the operator's note, without a summary.
        let change = Change::SetWeight {
            service: "web".into(),
            addr: ip("198.18.0.101"),
            weight: 100,
        };
        let unchanged = Happening::Changed {
            at_ms: 7,
            services: Vec::new(),
        };
        assert_eq!(
            narrate(&[unchanged], Some(&change)),
            [Note::plain(
                7,
                Some("web".into()),
                "weight of 198.18.0.101 set to 100".into()
            )]
        );
    }

    #[test]
    fn every_new_decision_of_a_daemon_change_is_a_note_and_the_first_has_the_summary() {
        let mut running = sample();
        canary::start(&mut running, "web", plan(), 0).unwrap();
        let mut stepped = running.clone();
        canary::step_due(&mut stepped, 1000).unwrap();
        let notes = narrate(&[touched(&running, &stepped, "web")], None);
        assert_eq!(
            whats(&notes),
            [
                "canary: interval elapsed; step 2/2: 100.00% to green",
                "canary: completed: every step done"
            ]
        );
        assert_eq!(notes[0].at_ms, 1000);
        assert!(
            notes[0]
                .after
                .as_deref()
                .is_some_and(|a| a.starts_with("split: blue=0.00% green=100.00%")),
            "{:?}",
            notes[0]
        );
        assert_eq!(notes[1].before, None);

        // A decision recorded in any way (here one the analysis of a later strategy would
        // add, with its measured values) is found.
        let mut held = running.clone();
        let c = held
            .services
            .get_mut("web")
            .unwrap()
            .canary
            .as_mut()
            .unwrap();
        c.decisions.push(Decision {
            at_ms: 1500,
            what: "held: 12 new flows of 100 needed".into(),
        });
        let notes = narrate(&[touched(&running, &held, "web")], None);
        assert_eq!(whats(&notes), ["canary: held: 12 new flows of 100 needed"]);
        assert_eq!(
            (notes[0].before.as_ref(), notes[0].after.as_ref()),
            (None, None)
        );

        // A new canary's decisions are all new, though the old one had as many.
        let mut again = stepped.clone();
        canary::start(
            &mut again,
            "web",
            CanaryPlan {
                from: "green".into(),
                to: "blue".into(),
                ..plan()
            },
            9000,
        )
        .unwrap();
        let notes = narrate(&[touched(&stepped, &again, "web")], None);
        assert_eq!(whats(&notes), ["canary: started; step 1/2: 50.00% to blue"]);

        // An operator's abort records its decision as the operator's.
        let mut aborted = running.clone();
        canary::act(&mut aborted, "web", CanaryAction::Abort, 2000).unwrap();
        let change = Change::Canary {
            service: "web".into(),
            action: CanaryAction::Abort,
        };
        let notes = narrate(&[touched(&running, &aborted, "web")], Some(&change));
        assert_eq!(
            whats(&notes),
            [
                "canary aborted",
                "canary: aborted by the operator: 100% back to blue"
            ]
        );
    }

    #[test]
    fn drain_retirement_and_flip_drain_ends_are_daemon_notes_and_a_slow_start_is_none() {
        let s = sample();
        let (b1, b2) = (ip("198.18.0.101"), ip("198.18.0.102"));
        let mut draining = s.clone();
        drain::start(&mut draining, "web", b1, Some(100), true, 0).unwrap();
        draining.remove_backend("web", b2, false, 0).unwrap();
        flip::flip(&mut draining, "web", "green", Some(100), false, 0).unwrap();
        let mut ended = draining.clone();
        drain::check(&mut ended, 100, |_, _| 3);
        ended.end_retirements(100, 50, |_, _| 0, |_, _| false);
        flip::end(&mut ended, "web").unwrap();
        let notes = narrate(&[touched(&draining, &ended, "web")], None);
        assert_eq!(
            whats(&notes),
            [
                "drain of 198.18.0.101 ended with 3 active flows left: they are re-balanced",
                "retirement of 198.18.0.102 ended: its flows are no longer kept on it",
                "flip drain of blue over: their flows are kept until they end"
            ]
        );
        // The operator's own removal of what ended is the operator's note only.
        let change = Change::RemoveBackend {
            service: "web".into(),
            addr: b2,
            cut: true,
        };
        let mut cut = draining.clone();
        cut.remove_backend("web", b2, true, 10).unwrap();
        let notes = narrate(&[touched(&draining, &cut, "web")], Some(&change));
        assert_eq!(
            whats(&notes),
            ["backend 198.18.0.102 removed, its flows cut"]
        );

        // A weight that moves without a decision (a slow-start ramp) is no note.
        let mut ramped = s.clone();
        ramped.set_weight("web", b1, 40).unwrap();
        assert!(narrate(&[touched(&s, &ramped, "web")], None).is_empty());
    }

    #[test]
    fn a_bounded_list_that_dropped_its_oldest_gives_only_its_new_decisions() {
        let d = |at_ms: u64| Decision {
            at_ms,
            what: format!("d{at_ms}"),
        };
        let was = [d(0), d(1), d(2), d(3)];
        // The list kept its first, dropped d1 and appended d4.
        let now = [d(0), d(2), d(3), d(4)];
        assert_eq!(fresh(&was, &now), &[d(4)]);
        assert_eq!(fresh(&was, &was), &[] as &[Decision]);
        let other = [d(9), d(10)];
        assert_eq!(fresh(&was, &other), &other, "another canary: all of it");
        assert_eq!(fresh(&[], &other), &other);
    }

    #[test]
    fn a_health_change_is_a_note_with_the_reason() {
        let down = Happening::Health {
            at_ms: 3,
            service: "web".into(),
            addr: ip("198.18.0.101"),
            healthy: false,
            error: Some("connect: Connection refused".into()),
        };
        let notes = narrate(&[down], None);
        assert_eq!(
            notes,
            [Note {
                at_ms: 3,
                service: Some("web".into()),
                what: "backend 198.18.0.101 down: connect: Connection refused".into(),
                before: Some("backend 198.18.0.101: up".into()),
                after: Some("backend 198.18.0.101: down".into()),
            }]
        );
    }
}
