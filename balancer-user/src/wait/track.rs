//! Following the releases of one service through successive `status` answers: which ones a
//! wait follows, the progress lines to print (one per decision or phase change), and how
//! they ended. Pure: the loop in `wait` feeds it answers.

use crate::{
    api::ServiceStatus,
    basis_points::BasisPoints,
    error::Refused,
    release::{canary::Outcome, flip::FlipDrain, rollout::RolloutOutcome, Decision},
};

/// What a wait follows on its service.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// The canary (`canary start --wait`).
    Canary,
    /// The rollout (`rollout --wait`).
    Rollout,
    /// The flip drain (`flip --wait`); none: done at once.
    Flip,
    /// Whatever runs (`balancer wait`): canary, rollout, flip drain; none: the last one's
    /// outcome.
    Any,
}

/// How a release ended, as the exit code tells it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ending {
    /// It did what it was for: every step or pair done, promoted, the flip drain over.
    Completed,
    /// The operator stopped it: an abort, or a split, flip or apply that overrode it.
    Aborted,
    /// It went back by itself: a canary's automatic rollback (health checks or analysis), a
    /// rollout whose new backend never became healthy or had worse signals (removed, the
    /// old one kept).
    RolledBack,
}

impl Ending {
    /// The ending of a canary's outcome.
    pub fn of_canary(outcome: Outcome) -> Self {
        match outcome {
            Outcome::Completed | Outcome::Promoted => Ending::Completed,
            Outcome::Aborted | Outcome::Overridden => Ending::Aborted,
            Outcome::RolledBack => Ending::RolledBack,
        }
    }

    /// The ending of a rollout's outcome.
    pub fn of_rollout(outcome: RolloutOutcome) -> Self {
        match outcome {
            RolloutOutcome::Completed => Ending::Completed,
            RolloutOutcome::Aborted => Ending::Aborted,
            RolloutOutcome::Failed => Ending::RolledBack,
        }
    }
}

/// A release's end: how, and one line saying it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ended {
    /// How.
    pub ending: Ending,
    /// E.g. "canary web rolled back: 2 of 2 backends of green fail their health checks".
    pub what: String,
}

/// What one answer brought.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Step {
    /// Progress lines, oldest first.
    pub lines: Vec<String>,
    /// Set once every followed release has ended: the first that did not complete decides,
    /// else the last that completed.
    pub ended: Option<Ended>,
}

/// One release followed.
#[derive(Clone, Debug)]
enum Followed {
    /// A canary, known by its first decision's time; `shown`: the last decision printed.
    Canary {
        started_ms: u64,
        shown: Option<Decision>,
    },
    /// A rollout, known likewise.
    Rollout {
        started_ms: u64,
        shown: Option<Decision>,
    },
    /// A flip drain to group `to`.
    Flip {
        to: String,
        drain: FlipDrain,
        announced: bool,
    },
}

/// The releases a wait follows on one service.
#[derive(Clone, Debug)]
pub struct Tracker {
    service: String,
    /// Still running.
    followed: Vec<Followed>,
    /// Ended, in the order seen.
    ended: Vec<Ended>,
}

impl Tracker {
    /// Follows `kind` on `service` as the first answer shows it. A canary or rollout wait on
    /// a service that has none is refused; with nothing to follow, the first
    /// [`Tracker::step`] ends at once.
    pub fn new(kind: Kind, service: &ServiceStatus) -> Result<Self, Refused> {
        let name = &service.name;
        let mut tracker = Self {
            service: name.clone(),
            followed: Vec::new(),
            ended: Vec::new(),
        };
        let canary = service.canary.as_ref().map(|c| (c.running(), &c.decisions));
        let rollout = service
            .rollout
            .as_ref()
            .map(|r| (r.running(), &r.decisions));
        let follow_canary = |decisions: &Vec<Decision>| Followed::Canary {
            started_ms: started(decisions),
            shown: None,
        };
        let follow_rollout = |decisions: &Vec<Decision>| Followed::Rollout {
            started_ms: started(decisions),
            shown: None,
        };
        match kind {
            Kind::Canary => {
                let (_, decisions) = canary.ok_or_else(|| {
                    Refused::Request(format!("service {name} has no canary to wait for"))
                })?;
                tracker.followed.push(follow_canary(decisions));
            }
            Kind::Rollout => {
                let (_, decisions) = rollout.ok_or_else(|| {
                    Refused::Request(format!("service {name} has no rollout to wait for"))
                })?;
                tracker.followed.push(follow_rollout(decisions));
            }
            Kind::Flip => tracker.follow_flip(service),
            Kind::Any => {
                if let Some((true, decisions)) = canary {
                    tracker.followed.push(follow_canary(decisions));
                }
                if let Some((true, decisions)) = rollout {
                    tracker.followed.push(follow_rollout(decisions));
                }
                tracker.follow_flip(service);
                if tracker.followed.is_empty() {
                    tracker.ended.push(last_outcome(service));
                }
            }
        }
        if tracker.followed.is_empty() && tracker.ended.is_empty() {
            tracker.ended.push(Ended {
                ending: Ending::Completed,
                what: format!("flip {name}: no flip drain to wait for"),
            });
        }
        Ok(tracker)
    }

    fn follow_flip(&mut self, service: &ServiceStatus) {
        let Some(drain) = &service.flip_drain else {
            return;
        };
        let to = service
            .split
            .iter()
            .find(|g| g.percent == BasisPoints::ALL)
            .map_or_else(String::new, |g| g.group.clone());
        self.followed.push(Followed::Flip {
            to,
            drain: drain.clone(),
            announced: false,
        });
    }

    /// What is followed, for a line: "canary web", "canary web and flip drain of web".
    pub fn describe(&self) -> String {
        let name = &self.service;
        let parts: Vec<String> = self
            .followed
            .iter()
            .map(|f| match f {
                Followed::Canary { .. } => format!("canary {name}"),
                Followed::Rollout { .. } => format!("rollout {name}"),
                Followed::Flip { .. } => format!("flip drain of {name}"),
            })
            .collect();
        parts.join(" and ")
    }

    /// Takes in the next answer about the service.
    pub fn step(&mut self, service: &ServiceStatus) -> Step {
        let mut lines = Vec::new();
        let name = self.service.clone();
        let mut running = Vec::new();
        for mut followed in std::mem::take(&mut self.followed) {
            let ended = match &mut followed {
                Followed::Canary { started_ms, shown } => match &service.canary {
                    None => Some(gone("canary", &name)),
                    Some(c) if started(&c.decisions) != *started_ms => {
                        Some(replaced("canary", &name))
                    }
                    Some(c) => {
                        lines.extend(progress("canary", &name, &c.decisions, shown));
                        c.outcome.map(|outcome| Ended {
                            ending: Ending::of_canary(outcome),
                            what: finished("canary", &name, canary_word(outcome), &c.decisions),
                        })
                    }
                },
                Followed::Rollout { started_ms, shown } => match &service.rollout {
                    None => Some(gone("rollout", &name)),
                    Some(r) if started(&r.decisions) != *started_ms => {
                        Some(replaced("rollout", &name))
                    }
                    Some(r) => {
                        lines.extend(progress("rollout", &name, &r.decisions, shown));
                        r.outcome.map(|outcome| Ended {
                            ending: Ending::of_rollout(outcome),
                            what: finished("rollout", &name, rollout_word(outcome), &r.decisions),
                        })
                    }
                },
                Followed::Flip {
                    to,
                    drain,
                    announced,
                } => {
                    if !*announced {
                        *announced = true;
                        lines.push(format!(
                            "flip {name}: {to} takes every new flow; flip drain of {} until {}{}",
                            drain.groups.join(", "),
                            time(drain.deadline_ms),
                            if drain.cut { ", then cut" } else { "" }
                        ));
                    }
                    match service.flip_drain.as_ref() == Some(drain) {
                        true => None,
                        false => Some(flip_ended(&name, to, service)),
                    }
                }
            };
            match ended {
                Some(ended) => self.ended.push(ended),
                None => running.push(followed),
            }
        }
        self.followed = running;
        let ended = match self.followed.is_empty() {
            true => self
                .ended
                .iter()
                .find(|e| e.ending != Ending::Completed)
                .or(self.ended.last())
                .cloned(),
            false => None,
        };
        Step { lines, ended }
    }
}

/// The time of a release's first decision (0 if it has none).
fn started(decisions: &[Decision]) -> u64 {
    decisions.first().map_or(0, |d| d.at_ms)
}

/// The decisions after the last one `shown`, as lines; marks the last shown. The log is
/// bounded (its oldest but the first go), so the place is found by the decision itself,
/// else by time.
fn progress(
    kind: &str,
    name: &str,
    decisions: &[Decision],
    shown: &mut Option<Decision>,
) -> Vec<String> {
    let from = match shown.as_ref() {
        None => 0,
        Some(seen) => decisions.iter().rposition(|d| d == seen).map_or_else(
            || {
                decisions
                    .iter()
                    .position(|d| d.at_ms > seen.at_ms)
                    .unwrap_or(decisions.len())
            },
            |i| i + 1,
        ),
    };
    let lines = decisions[from..]
        .iter()
        .map(|d| format!("{} {kind} {name}: {}", time(d.at_ms), d.what))
        .collect();
    if let Some(last) = decisions.last() {
        *shown = Some(last.clone());
    }
    lines
}

/// "canary web rolled back: <its last decision>".
fn finished(kind: &str, name: &str, word: &str, decisions: &[Decision]) -> String {
    let why = decisions.last().map_or("", |d| d.what.as_str());
    format!("{kind} {name} {word}: {why}")
}

fn canary_word(outcome: Outcome) -> &'static str {
    match outcome {
        Outcome::Completed => "completed",
        Outcome::Promoted => "promoted",
        Outcome::Aborted => "aborted",
        Outcome::RolledBack => "rolled back",
        Outcome::Overridden => "overridden",
    }
}

fn rollout_word(outcome: RolloutOutcome) -> &'static str {
    match outcome {
        RolloutOutcome::Completed => "completed",
        RolloutOutcome::Failed => "failed",
        RolloutOutcome::Aborted => "aborted",
    }
}

fn gone(kind: &str, name: &str) -> Ended {
    Ended {
        ending: Ending::Aborted,
        what: format!("{kind} {name} is gone before it ended"),
    }
}

fn replaced(kind: &str, name: &str) -> Ended {
    Ended {
        ending: Ending::Aborted,
        what: format!("{kind} {name} was replaced by a newer one before its end was seen"),
    }
}

/// A flip drain that is no longer there: over (0) if `to` still takes every new flow, else
/// undone by a later split, flip or canary.
fn flip_ended(name: &str, to: &str, service: &ServiceStatus) -> Ended {
    let live = service
        .split
        .iter()
        .any(|g| g.group == to && g.percent == BasisPoints::ALL);
    match live {
        true => Ended {
            ending: Ending::Completed,
            what: format!("flip {name}: flip drain over, {to} takes every new flow"),
        },
        false => Ended {
            ending: Ending::Aborted,
            what: format!(
                "flip {name}: the split changed before the flip drain's end: {to} no longer takes every new flow"
            ),
        },
    }
}

/// With nothing running: the outcome of the canary or rollout that ended last; none ever
/// ran: done.
fn last_outcome(service: &ServiceStatus) -> Ended {
    let name = &service.name;
    let last_at = |decisions: &[Decision]| decisions.last().map_or(0, |d| d.at_ms);
    let canary = service.canary.as_ref().and_then(|c| {
        let outcome = c.outcome?;
        Some((
            last_at(&c.decisions),
            Ended {
                ending: Ending::of_canary(outcome),
                what: finished("canary", name, canary_word(outcome), &c.decisions),
            },
        ))
    });
    let rollout = service.rollout.as_ref().and_then(|r| {
        let outcome = r.outcome?;
        Some((
            last_at(&r.decisions),
            Ended {
                ending: Ending::of_rollout(outcome),
                what: finished("rollout", name, rollout_word(outcome), &r.decisions),
            },
        ))
    });
    [canary, rollout]
        .into_iter()
        .flatten()
        .max_by_key(|(at, _)| *at)
        .map_or_else(
            || Ended {
                ending: Ending::Completed,
                what: format!("service {name} runs no release and never ran one"),
            },
            |(_, ended)| Ended {
                what: format!("nothing runs; the last release: {}", ended.what),
                ..ended
            },
        )
}

/// Unix milliseconds as an RFC 3339 time to the second.
fn time(unix_ms: u64) -> String {
    humantime::format_rfc3339_seconds(
        std::time::UNIX_EPOCH + std::time::Duration::from_millis(unix_ms),
    )
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        api::GroupShare,
        release::{canary::Canary, rollout::Rollout},
        watch::rates::tests::{backend, status},
    };

    /// 2026-01-01T00:00:00Z.
    const T0: u64 = 1_767_225_600_000;

    fn decision(at_ms: u64, what: &str) -> Decision {
        Decision {
            at_ms,
            what: what.into(),
        }
    }

    fn web() -> ServiceStatus {
        status(vec![backend("198.18.0.101", "blue", 0)]).services[0].clone()
    }

    /// A canary of two steps started at `started_ms`, as the API gives it.
    fn canary(started_ms: u64) -> Canary {
        serde_json::from_value(serde_json::json!({
            "from": "blue",
            "to": "green",
            "steps": [5000, 10_000],
            "interval_ms": 1000,
            "step": 0,
            "next_step_at_ms": started_ms + 1000,
            "paused_remaining_ms": null,
            "outcome": null,
            "decisions": [{"at_ms": started_ms, "what": "started; step 1/2: 50.00% to green"}],
        }))
        .unwrap()
    }

    /// A rollout of one pair started at `started_ms`, as the API gives it.
    fn rollout(started_ms: u64) -> Rollout {
        serde_json::from_value(serde_json::json!({
            "group": "blue",
            "pairs": [["198.18.0.101", "198.18.0.105"]],
            "current": 0,
            "phase": "ready",
            "phase_since_ms": started_ms,
            "target_weight": 100,
            "ready_timeout_ms": 1000,
            "slow_start_ms": 0,
            "drain_timeout_ms": null,
            "outcome": null,
            "decisions": [{
                "at_ms": started_ms,
                "what": "pair 1/1: added 198.18.0.105, waiting for its health checks",
            }],
        }))
        .unwrap()
    }

    fn flip_drain() -> FlipDrain {
        FlipDrain {
            groups: vec!["blue".into()],
            deadline_ms: T0 + 5000,
            cut: false,
        }
    }

    fn split(service: &mut ServiceStatus, blue: u16) {
        let share = |group: &str, bp| GroupShare {
            group: group.into(),
            percent: BasisPoints::new(bp).unwrap(),
        };
        service.split = vec![share("blue", blue), share("green", 10_000 - blue)];
    }

    #[test]
    fn outcomes_map_to_endings() {
        use Ending::*;
        let canary = [
            (Outcome::Completed, Completed),
            (Outcome::Promoted, Completed),
            (Outcome::Aborted, Aborted),
            (Outcome::Overridden, Aborted),
            (Outcome::RolledBack, RolledBack),
        ];
        for (outcome, ending) in canary {
            assert_eq!(Ending::of_canary(outcome), ending, "{outcome:?}");
        }
        let rollout = [
            (RolloutOutcome::Completed, Completed),
            (RolloutOutcome::Aborted, Aborted),
            (RolloutOutcome::Failed, RolledBack),
        ];
        for (outcome, ending) in rollout {
            assert_eq!(Ending::of_rollout(outcome), ending, "{outcome:?}");
        }
    }

    #[test]
    fn a_canary_prints_each_decision_once_and_ends_with_its_outcome() {
        let mut s = web();
        s.canary = Some(canary(T0));
        let mut tracker = Tracker::new(Kind::Canary, &s).unwrap();
        assert_eq!(tracker.describe(), "canary web");
        let first = tracker.step(&s);
        assert_eq!(
            first.lines,
            ["2026-01-01T00:00:00Z canary web: started; step 1/2: 50.00% to green"]
        );
        assert_eq!(first.ended, None);
        assert_eq!(tracker.step(&s), Step::default());
        let c = s.canary.as_mut().unwrap();
        c.step = 1;
        c.outcome = Some(Outcome::Completed);
        c.decisions.extend([
            decision(T0 + 1000, "interval elapsed; step 2/2: 100.00% to green"),
            decision(T0 + 1000, "completed: every step done"),
        ]);
        let last = tracker.step(&s);
        assert_eq!(
            last.lines,
            [
                "2026-01-01T00:00:01Z canary web: interval elapsed; step 2/2: 100.00% to green",
                "2026-01-01T00:00:01Z canary web: completed: every step done",
            ]
        );
        assert_eq!(
            last.ended,
            Some(Ended {
                ending: Ending::Completed,
                what: "canary web completed: completed: every step done".into()
            })
        );
    }

    #[test]
    fn a_full_decision_log_that_drops_its_oldest_still_prints_only_the_new_ones() {
        let mut s = web();
        let mut c = canary(T0);
        c.decisions
            .extend((1..256).map(|i| decision(T0 + i, &format!("held {i}"))));
        s.canary = Some(c);
        let mut tracker = Tracker::new(Kind::Canary, &s).unwrap();
        assert_eq!(tracker.step(&s).lines.len(), 256);
        // Two more: the log keeps its length, the first and the latest.
        let c = s.canary.as_mut().unwrap();
        for i in 256..258 {
            c.decisions.remove(1);
            c.decisions.push(decision(T0 + i, &format!("held {i}")));
        }
        assert_eq!(
            tracker.step(&s).lines,
            [
                "2026-01-01T00:00:00Z canary web: held 256",
                "2026-01-01T00:00:00Z canary web: held 257"
            ]
        );
        assert!(tracker.step(&s).lines.is_empty());
    }

    #[test]
    fn a_rolled_back_or_replaced_canary_does_not_complete() {
        let mut s = web();
        s.canary = Some(canary(T0));
        let mut tracker = Tracker::new(Kind::Canary, &s).unwrap();
        let c = s.canary.as_mut().unwrap();
        c.outcome = Some(Outcome::RolledBack);
        c.decisions.push(decision(
            T0 + 300,
            "rolled back: 1 of 1 backends of green fail their health checks (threshold 50.00%)",
        ));
        let ended = tracker.step(&s).ended.unwrap();
        assert_eq!(ended.ending, Ending::RolledBack);
        assert_eq!(
            ended.what,
            "canary web rolled back: rolled back: 1 of 1 backends of green fail their health checks (threshold 50.00%)"
        );

        let mut s = web();
        s.canary = Some(canary(T0));
        let mut tracker = Tracker::new(Kind::Canary, &s).unwrap();
        s.canary = Some(canary(T0 + 700));
        let ended = tracker.step(&s).ended.unwrap();
        assert_eq!(ended.ending, Ending::Aborted);
        assert!(ended.what.contains("replaced by a newer one"), "{ended:?}");
    }

    #[test]
    fn a_failed_rollout_rolled_back() {
        let mut s = web();
        s.rollout = Some(rollout(T0));
        let mut tracker = Tracker::new(Kind::Rollout, &s).unwrap();
        let r = s.rollout.as_mut().unwrap();
        r.outcome = Some(RolloutOutcome::Failed);
        r.decisions.push(decision(T0 + 1000, "failed: 198.18.0.105 did not pass its health checks within 1000 ms; removed it, 198.18.0.101 keeps serving"));
        let step = tracker.step(&s);
        assert_eq!(step.lines.len(), 2);
        let ended = step.ended.unwrap();
        assert_eq!(ended.ending, Ending::RolledBack);
        assert!(
            ended.what.starts_with("rollout web failed: failed: "),
            "{ended:?}"
        );
    }

    #[test]
    fn a_canary_or_rollout_wait_without_one_is_refused() {
        let s = web();
        let err = Tracker::new(Kind::Canary, &s).unwrap_err();
        assert_eq!(err.to_string(), "service web has no canary to wait for");
        assert!(Tracker::new(Kind::Rollout, &s).is_err());
    }

    #[test]
    fn a_flip_without_drain_is_done_at_once() {
        let mut s = web();
        split(&mut s, 0);
        let mut tracker = Tracker::new(Kind::Flip, &s).unwrap();
        let step = tracker.step(&s);
        assert_eq!(
            step.ended,
            Some(Ended {
                ending: Ending::Completed,
                what: "flip web: no flip drain to wait for".into()
            })
        );
    }

    #[test]
    fn a_flip_drain_ends_over_or_undone() {
        let mut s = web();
        split(&mut s, 0);
        s.flip_drain = Some(flip_drain());
        let mut tracker = Tracker::new(Kind::Flip, &s).unwrap();
        assert_eq!(tracker.describe(), "flip drain of web");
        let first = tracker.step(&s);
        assert_eq!(
            first.lines,
            ["flip web: green takes every new flow; flip drain of blue until 2026-01-01T00:00:05Z"]
        );
        assert_eq!(first.ended, None);
        let mut over = s.clone();
        over.flip_drain = None;
        let ended = tracker.clone().step(&over).ended.unwrap();
        assert_eq!(ended.ending, Ending::Completed);
        assert_eq!(
            ended.what,
            "flip web: flip drain over, green takes every new flow"
        );
        // Flipped back before the drain's end.
        let mut undone = s.clone();
        undone.flip_drain = None;
        split(&mut undone, 10_000);
        let ended = tracker.step(&undone).ended.unwrap();
        assert_eq!(ended.ending, Ending::Aborted);
    }

    #[test]
    fn waiting_for_any_follows_everything_running_and_the_first_failure_decides() {
        let mut s = web();
        split(&mut s, 0);
        s.canary = Some(canary(T0));
        s.flip_drain = Some(flip_drain());
        let mut tracker = Tracker::new(Kind::Any, &s).unwrap();
        assert_eq!(tracker.describe(), "canary web and flip drain of web");
        assert_eq!(tracker.step(&s).lines.len(), 2);
        let c = s.canary.as_mut().unwrap();
        c.outcome = Some(Outcome::Aborted);
        c.decisions.push(decision(
            T0 + 100,
            "aborted by the operator: 100% back to blue",
        ));
        let step = tracker.step(&s);
        assert_eq!(step.ended, None, "the flip drain still runs");
        assert_eq!(tracker.describe(), "flip drain of web");
        s.flip_drain = None;
        let ended = tracker.step(&s).ended.unwrap();
        assert_eq!(ended.ending, Ending::Aborted);
        assert!(ended.what.starts_with("canary web aborted"), "{ended:?}");
    }

    #[test]
    fn waiting_for_any_with_nothing_running_gives_the_last_outcome() {
        let mut s = web();
        let mut done = canary(T0);
        done.outcome = Some(Outcome::Completed);
        done.decisions
            .push(decision(T0 + 1000, "completed: every step done"));
        s.canary = Some(done);
        let mut failed = rollout(T0 + 5000);
        failed.outcome = Some(RolloutOutcome::Failed);
        failed
            .decisions
            .push(decision(T0 + 9000, "failed: no health"));
        s.rollout = Some(failed);
        let ended = Tracker::new(Kind::Any, &s).unwrap().step(&s).ended.unwrap();
        assert_eq!(ended.ending, Ending::RolledBack);
        assert_eq!(
            ended.what,
            "nothing runs; the last release: rollout web failed: failed: no health"
        );

        let never = web();
        let ended = Tracker::new(Kind::Any, &never)
            .unwrap()
            .step(&never)
            .ended
            .unwrap();
        assert_eq!(
            ended,
            Ended {
                ending: Ending::Completed,
                what: "service web runs no release and never ran one".into()
            }
        );
    }
}
