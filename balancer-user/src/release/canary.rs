//! Gradual canary: new flows move from one group to another in steps on a timer that the
//! daemon keeps. Progress lives in the state file, so a restarted daemon resumes at the
//! step it was on, with the time left until the next one.

use serde::{Deserialize, Serialize};

use super::{
    analysis::{Analysis, AnalysisPlan, GateResult, Next, Pair, Question},
    decision::{record, Decision},
};
use crate::{
    basis_points::{stored, BasisPoints},
    state::{Service, State, StateError},
};

/// Named step plans.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Preset {
    /// 10% for 5 minutes, then 100%.
    Canary10Over5m,
    /// +10% every minute.
    Linear10Every1m,
    /// 100% at once.
    AllAtOnce,
}

impl Preset {
    /// Steps (shares of the new group) and interval in milliseconds.
    pub fn plan(self) -> (Vec<BasisPoints>, u64) {
        let bp = |v: u16| BasisPoints::new(v).expect("preset steps are at most 100%");
        match self {
            Preset::Canary10Over5m => (vec![bp(1000), BasisPoints::ALL], 5 * 60_000),
            Preset::Linear10Every1m => ((1..=10).map(|i| bp(i * 1000)).collect(), 60_000),
            Preset::AllAtOnce => (vec![BasisPoints::ALL], 0),
        }
    }
}

/// What a canary is asked to do.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CanaryPlan {
    /// Group new flows move away from.
    pub from: String,
    /// Group new flows move to.
    pub to: String,
    /// Shares of `to`, strictly ascending.
    pub steps: Vec<BasisPoints>,
    /// Time between steps, milliseconds.
    pub interval_ms: u64,
    /// Roll back when this share of `to`'s backends fail their checks; none: never.
    #[serde(default)]
    pub auto_rollback: Option<BasisPoints>,
    /// Compare the new group with the old one and step only while it holds up; none: steps
    /// on the timer alone.
    #[serde(default)]
    pub analysis: Option<AnalysisPlan>,
}

/// A canary of one service, running or finished.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Canary {
    /// Group new flows move away from.
    pub from: String,
    /// Group new flows move to.
    pub to: String,
    /// Shares of `to`, ascending.
    #[serde(with = "stored::list")]
    pub steps: Vec<BasisPoints>,
    /// Time between steps, milliseconds.
    pub interval_ms: u64,
    /// Index of the step in force.
    pub step: usize,
    /// When the next step is due (Unix milliseconds); none when paused or finished.
    pub next_step_at_ms: Option<u64>,
    /// Time that was left until the next step when paused, milliseconds.
    pub paused_remaining_ms: Option<u64>,
    /// Abort by itself when at least this share of the new group's backends fail their
    /// health checks; none: never.
    #[serde(default, with = "stored::optional")]
    pub auto_rollback: Option<BasisPoints>,
    /// The analysis that gates its steps, if asked for.
    #[serde(default)]
    pub analysis: Option<Analysis>,
    /// How it ended; none while running.
    pub outcome: Option<Outcome>,
    /// What happened and why, oldest first.
    pub decisions: Vec<Decision>,
}

/// How a canary ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// Every step done: the new group has all new flows.
    Completed,
    /// The operator jumped to 100%.
    Promoted,
    /// The operator went back to the old group.
    Aborted,
    /// Health checks or the analysis failed the new group: back to the old group.
    RolledBack,
    /// The operator set the split another way (a flip, a split, an apply) while it ran:
    /// it stopped, and the split is the operator's.
    Overridden,
}

/// Operator actions on a running canary.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CanaryAction {
    /// Stop the timer.
    Pause,
    /// Restart the timer with the time that was left.
    Resume,
    /// Jump to 100% on the new group.
    Promote,
    /// Return 100% to the old group in one write.
    Abort,
}

/// The split a canary wants: `share` of what `from` and `to` hold together goes to `to`,
/// the rest to `from`; every other group keeps its share.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Shift {
    /// The old group.
    pub from: String,
    /// The new group.
    pub to: String,
    /// The new group's part of the pair's share.
    pub share: BasisPoints,
}

impl Shift {
    /// The whole split of `service` after this shift, as (group, share) pairs.
    pub fn split(&self, service: &Service) -> Result<Vec<(String, BasisPoints)>, StateError> {
        let shares = service.shares()?;
        let pool = pair_share(service, &shares, &self.from, &self.to);
        let to = (u32::from(pool.get()) * u32::from(self.share.get()) + 5_000) / 10_000;
        let to = BasisPoints::new(u16::try_from(to).unwrap_or(u16::MAX))
            .ok_or_else(|| StateError::Corrupt(format!("a canary share of {to} basis points")))?;
        let from = BasisPoints::new(pool.get() - to.get())
            .ok_or_else(|| StateError::Corrupt("a canary share below zero".into()))?;
        let mut split: Vec<(String, BasisPoints)> = service
            .groups
            .iter()
            .zip(shares)
            .filter(|(group, _)| group.name != self.from && group.name != self.to)
            .map(|(group, share)| (group.name.clone(), share))
            .collect();
        split.push((self.from.clone(), from));
        split.push((self.to.clone(), to));
        Ok(split)
    }
}

/// What groups `from` and `to` of `service` hold together, given its `shares`.
fn pair_share(service: &Service, shares: &[BasisPoints], from: &str, to: &str) -> BasisPoints {
    let share_of = |name: &str| {
        service
            .group_index(name)
            .and_then(|g| shares.get(g))
            .map_or(0, |share| share.get())
    };
    // Shares of distinct groups sum to at most 100%.
    BasisPoints::new(share_of(from) + share_of(to)).unwrap_or(BasisPoints::ALL)
}

impl CanaryPlan {
    /// Checks the plan against `service` (named `name`).
    fn check(&self, service: &Service, name: &str) -> Result<(), StateError> {
        let bad = |why: String| Err(StateError::Canary(why));
        crate::duration::check("the canary interval", self.interval_ms)?;
        if self.auto_rollback.is_some() && service.health.is_none() {
            return bad(format!(
                "auto-rollback needs health checks: service set {name} --health tcp"
            ));
        }
        if self.auto_rollback.is_some_and(|t| t == BasisPoints::ZERO) {
            return bad("the rollback threshold must be above 0% and at most 100%".into());
        }
        for group in [&self.from, &self.to] {
            if service.group_index(group).is_none() {
                return Err(StateError::UnknownGroup(group.clone(), name.to_string()));
            }
        }
        if self.from == self.to {
            return bad("--from and --to name the same group".into());
        }
        if pair_share(service, &service.shares()?, &self.from, &self.to) == BasisPoints::ZERO {
            return bad(format!(
                "groups {} and {} hold no share of new flows: split first",
                self.from, self.to
            ));
        }
        if service.canary.as_ref().is_some_and(Canary::running) {
            return bad(format!(
                "service {name:?} already runs a canary: promote or abort it first"
            ));
        }
        if self.steps.is_empty() || self.steps.contains(&BasisPoints::ZERO) {
            return bad("steps must be percentages above 0 and at most 100".into());
        }
        if self.steps.windows(2).any(|w| w[0] >= w[1]) {
            return bad("steps must be strictly ascending".into());
        }
        if self.steps.len() > 1 && self.interval_ms == 0 {
            return bad("several steps need an interval above 0".into());
        }
        if let Some(analysis) = &self.analysis {
            if self.steps == [BasisPoints::ALL] {
                return bad(
                    "an analysis needs a step below 100%: nothing would be compared".into(),
                );
            }
            analysis.check()?;
        }
        Ok(())
    }
}

impl Canary {
    /// A canary at its first step, which applies at once.
    fn begin(plan: CanaryPlan, now_ms: u64) -> (Self, Shift) {
        let mut canary = Self {
            from: plan.from,
            to: plan.to,
            steps: plan.steps,
            interval_ms: plan.interval_ms,
            step: 0,
            next_step_at_ms: None,
            paused_remaining_ms: None,
            auto_rollback: plan.auto_rollback,
            analysis: plan.analysis.map(|a| Analysis::new(a, now_ms)),
            outcome: None,
            decisions: Vec::new(),
        };
        let what = format!("started; {}", canary.describe_step());
        record(&mut canary.decisions, now_ms, what);
        canary.schedule_or_complete(now_ms);
        let shift = canary.shift(canary.steps[0]);
        (canary, shift)
    }

    /// Whether it still runs (has no outcome).
    pub fn running(&self) -> bool {
        self.outcome.is_none()
    }

    /// Whether a step is due at `now_ms`: its interval passed and, with an analysis, a
    /// window passed and the webhooks said go (or are to be asked).
    pub fn due(&self, now_ms: u64) -> bool {
        let completes = self.next_completes();
        self.next_step_at_ms.is_some_and(|at| at <= now_ms)
            && self
                .analysis
                .as_ref()
                .is_none_or(|a| a.allows_step(completes) || a.needs_approval(completes))
    }

    /// Whether the next step is the last and gives the new group everything (promotion).
    fn next_completes(&self) -> bool {
        self.step + 2 == self.steps.len() && self.steps.last() == Some(&BasisPoints::ALL)
    }

    /// Takes the next step if it is due: returns the split it wants. With webhooks to ask
    /// first, asks them instead (the step is taken once they say go).
    pub fn step(&mut self, now_ms: u64) -> Option<Shift> {
        if !self.due(now_ms) || self.step + 1 >= self.steps.len() {
            return None;
        }
        let completes = self.next_completes();
        if let Some(analysis) = self.analysis.as_mut() {
            if analysis.needs_approval(completes) {
                analysis.ask_approval();
                let what = format!(
                    "analysis passed; asking the webhooks before step {}",
                    self.step + 2
                );
                record(&mut self.decisions, now_ms, what);
                return None;
            }
            analysis.stepped(now_ms);
        }
        self.step += 1;
        let why = match self.analysis.is_some() {
            true => "interval elapsed, analysis passed",
            false => "interval elapsed",
        };
        let what = format!("{why}; {}", self.describe_step());
        record(&mut self.decisions, now_ms, what);
        self.schedule_or_complete(now_ms);
        Some(self.shift(self.steps[self.step]))
    }

    /// Whether the running canary's analysis needs the counters at `now_ms`.
    pub fn wants_sample(&self, now_ms: u64) -> bool {
        self.running()
            && self
                .analysis
                .as_ref()
                .is_some_and(|a| a.wants_sample(now_ms))
    }

    /// Goes on with the analysis given the groups' counters `sample` at `now_ms`: the
    /// split it wants when it rolls back.
    pub fn analyse(&mut self, now_ms: u64, sample: Pair) -> Option<Shift> {
        let names = (self.from.clone(), self.to.clone());
        let next = self
            .analysis
            .as_mut()
            .filter(|_| self.outcome.is_none())?
            .advance(now_ms, sample, (&names.0, &names.1));
        self.follow(next, now_ms)
    }

    /// Takes the answers of the gates asked under `ticket`: the split it wants when they
    /// roll it back; none also when the question is stale.
    pub fn answer(&mut self, ticket: u64, results: Vec<GateResult>, now_ms: u64) -> Option<Shift> {
        let analysis = self.analysis.as_mut().filter(|_| self.outcome.is_none())?;
        let next = match analysis.approval_answered(ticket, &results) {
            Some(next) => next,
            None => analysis.window_answered(ticket, results)?,
        };
        self.follow(next, now_ms)
    }

    /// Whether a question under `ticket` is still open.
    pub fn asks(&self, ticket: u64) -> bool {
        self.running() && self.analysis.as_ref().is_some_and(|a| a.asks(ticket))
    }

    /// The open questions of its analysis for external gates.
    pub fn questions(&self, service: &str) -> Vec<Question> {
        let Some(analysis) = self.analysis.as_ref().filter(|_| self.running()) else {
            return Vec::new();
        };
        let completes = self.next_completes();
        let next = (self.step + 1).min(self.steps.len() - 1);
        let body = serde_json::json!({
            "service": service,
            "from": self.from,
            "to": self.to,
            "phase": if completes { "promotion" } else { "step" },
            "step": next + 1,
            "steps": self.steps.len(),
            "percent": self.steps[next].to_string(),
            "last_window": analysis.last,
        });
        analysis.questions(service, completes, &body)
    }

    /// Records what the analysis decided; rolls back when it says so.
    fn follow(&mut self, next: Next, now_ms: u64) -> Option<Shift> {
        match next {
            Next::Quiet => None,
            Next::Record(what) => {
                record(&mut self.decisions, now_ms, what);
                None
            }
            Next::RollBack(why) => Some(self.roll_back(why, now_ms)),
        }
    }

    /// An operator action on the running canary: returns the split it wants, if any.
    pub fn act(&mut self, action: CanaryAction, now_ms: u64) -> Result<Option<Shift>, StateError> {
        match action {
            CanaryAction::Pause => {
                let due = self
                    .next_step_at_ms
                    .ok_or_else(|| StateError::Canary("the canary is already paused".into()))?;
                self.paused_remaining_ms = Some(due.saturating_sub(now_ms));
                self.next_step_at_ms = None;
                let what = format!("paused by the operator at {}", self.describe_step());
                record(&mut self.decisions, now_ms, what);
                Ok(None)
            }
            CanaryAction::Resume => {
                let left = self
                    .paused_remaining_ms
                    .take()
                    .ok_or_else(|| StateError::Canary("the canary is not paused".into()))?;
                self.next_step_at_ms = Some(now_ms.saturating_add(left));
                record(
                    &mut self.decisions,
                    now_ms,
                    "resumed by the operator".into(),
                );
                Ok(None)
            }
            CanaryAction::Promote => {
                let what = "promoted by the operator: 100% to the new group".into();
                self.finish(Outcome::Promoted, now_ms, what);
                Ok(Some(self.shift(BasisPoints::ALL)))
            }
            CanaryAction::Abort => {
                let what = format!("aborted by the operator: 100% back to {}", self.from);
                self.finish(Outcome::Aborted, now_ms, what);
                Ok(Some(self.shift(BasisPoints::ZERO)))
            }
        }
    }

    /// Why the canary must roll back when `failing` of the new group's `members` backends
    /// fail their health checks; none while it may go on (or has no auto-rollback).
    pub fn rollback_reason(&self, members: usize, failing: usize) -> Option<String> {
        let threshold = self.auto_rollback.filter(|_| self.running())?;
        if members == 0 || failing * 10_000 < usize::from(threshold.get()) * members {
            return None;
        }
        Some(format!(
            "{failing} of {members} backends of {} fail their health checks (threshold {threshold}%)",
            self.to
        ))
    }

    /// Rolls back because of `why`: 100% of new flows return to the old group.
    pub fn roll_back(&mut self, why: String, now_ms: u64) -> Shift {
        self.finish(Outcome::RolledBack, now_ms, format!("rolled back: {why}"));
        self.shift(BasisPoints::ZERO)
    }

    fn shift(&self, share: BasisPoints) -> Shift {
        Shift {
            from: self.from.clone(),
            to: self.to.clone(),
            share,
        }
    }

    fn describe_step(&self) -> String {
        format!(
            "step {}/{}: {}% to {}",
            self.step + 1,
            self.steps.len(),
            self.steps[self.step],
            self.to
        )
    }

    fn schedule_or_complete(&mut self, now_ms: u64) {
        if self.step + 1 < self.steps.len() {
            self.next_step_at_ms = Some(now_ms.saturating_add(self.interval_ms));
        } else if self.steps[self.step] == BasisPoints::ALL {
            self.finish(
                Outcome::Completed,
                now_ms,
                "completed: every step done".into(),
            );
        } else {
            self.next_step_at_ms = None;
            let what = "holding at the last step: promote or abort".into();
            record(&mut self.decisions, now_ms, what);
        }
    }

    fn finish(&mut self, outcome: Outcome, now_ms: u64, what: String) {
        self.outcome = Some(outcome);
        self.next_step_at_ms = None;
        self.paused_remaining_ms = None;
        record(&mut self.decisions, now_ms, what);
    }
}

/// Starts a canary on `service`: its first step applies at once.
pub fn start(
    state: &mut State,
    service: &str,
    plan: CanaryPlan,
    now_ms: u64,
) -> Result<(), StateError> {
    plan.check(state.service(service)?, service)?;
    let (canary, shift) = Canary::begin(plan, now_ms);
    commit(state, service, canary, Some(shift))
}

/// Pauses, resumes, promotes or aborts the running canary of `service`.
pub fn act(
    state: &mut State,
    service: &str,
    action: CanaryAction,
    now_ms: u64,
) -> Result<(), StateError> {
    let mut canary = running(state, service)?;
    let shift = canary.act(action, now_ms)?;
    commit(state, service, canary, shift)
}

/// Rolls back the running canary of `service` because of `why`.
pub fn roll_back(
    state: &mut State,
    service: &str,
    why: String,
    now_ms: u64,
) -> Result<(), StateError> {
    let mut canary = running(state, service)?;
    let shift = canary.roll_back(why, now_ms);
    commit(state, service, canary, Some(shift))
}

/// Ends the running canary of `service`, if any, because the operator sets the split by
/// `what` (e.g. "a flip to blue"): it takes no further step, and records why.
pub fn override_by(
    state: &mut State,
    service: &str,
    what: &str,
    now_ms: u64,
) -> Result<(), StateError> {
    let Ok(mut canary) = running(state, service) else {
        return Ok(());
    };
    let why = format!("ended by {what}: the split is the operator's from now on");
    canary.finish(Outcome::Overridden, now_ms, why);
    commit(state, service, canary, None)
}

/// Whether some canary's analysis needs the counters at `now_ms`.
pub fn any_sampling(state: &State, now_ms: u64) -> bool {
    state
        .services
        .values()
        .any(|s| s.canary.as_ref().is_some_and(|c| c.wants_sample(now_ms)))
}

/// The services whose canary's analysis needs the counters at `now_ms`.
pub fn sampling(state: &State, now_ms: u64) -> Vec<String> {
    state.services_where(|s| s.canary.as_ref().is_some_and(|c| c.wants_sample(now_ms)))
}

/// Goes on with the analysis of the canary of `service` given its groups' counters.
pub fn analyse(
    state: &mut State,
    service: &str,
    sample: Pair,
    now_ms: u64,
) -> Result<(), StateError> {
    let mut canary = running(state, service)?;
    let shift = canary.analyse(now_ms, sample);
    commit(state, service, canary, shift)
}

/// Takes the gates' answers to the question of the canary of `service` under `ticket`.
pub fn answer(
    state: &mut State,
    service: &str,
    ticket: u64,
    results: Vec<GateResult>,
    now_ms: u64,
) -> Result<(), StateError> {
    let mut canary = running(state, service)?;
    let shift = canary.answer(ticket, results, now_ms);
    commit(state, service, canary, shift)
}

/// Whether the canary of `service` still waits for an answer under `ticket`.
pub fn asks(state: &State, service: &str, ticket: u64) -> bool {
    state
        .services
        .get(service)
        .and_then(|s| s.canary.as_ref())
        .is_some_and(|c| c.asks(ticket))
}

/// Every open question of the running canaries' analyses.
pub fn questions(state: &State) -> Vec<Question> {
    state
        .services
        .iter()
        .filter_map(|(name, s)| Some(s.canary.as_ref()?.questions(name)))
        .flatten()
        .collect()
}

/// Whether some canary has a step due at `now_ms`.
pub fn any_due(state: &State, now_ms: u64) -> bool {
    state
        .services
        .values()
        .any(|s| s.canary.as_ref().is_some_and(|c| c.due(now_ms)))
}

/// Takes every canary step that is due at `now_ms`.
pub fn step_due(state: &mut State, now_ms: u64) -> Result<(), StateError> {
    let due = state.services_where(|s| s.canary.as_ref().is_some_and(|c| c.due(now_ms)));
    for name in due {
        let mut canary = running(state, &name)?;
        let shift = canary.step(now_ms);
        commit(state, &name, canary, shift)?;
    }
    Ok(())
}

/// A copy of the running canary of `service`.
fn running(state: &State, service: &str) -> Result<Canary, StateError> {
    state
        .service(service)?
        .canary
        .clone()
        .filter(Canary::running)
        .ok_or_else(|| StateError::Canary(format!("service {service:?} runs no canary")))
}

/// Applies the split a canary wants, then stores its progress.
fn commit(
    state: &mut State,
    service: &str,
    canary: Canary,
    shift: Option<Shift>,
) -> Result<(), StateError> {
    if let Some(shift) = shift {
        let split = shift.split(state.service(service)?)?;
        state.set_split(service, &split)?;
    }
    state.service_mut(service)?.canary = Some(canary);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        release::analysis::Ask,
        state::tests::{sample, shares_of},
    };

    fn bp(v: u16) -> BasisPoints {
        BasisPoints::new(v).unwrap()
    }

    fn plan(from: &str, to: &str, steps: &[u16], interval_ms: u64) -> CanaryPlan {
        CanaryPlan {
            from: from.into(),
            to: to.into(),
            steps: steps.iter().map(|&s| bp(s)).collect(),
            interval_ms,
            auto_rollback: None,
            analysis: None,
        }
    }

    #[test]
    fn the_machine_steps_on_its_timer_and_records_why() {
        let (mut canary, first) = Canary::begin(plan("blue", "green", &[500, 10_000], 1000), 0);
        assert_eq!(
            first.split(sample().service("web").unwrap()).unwrap(),
            [("blue".into(), bp(9500)), ("green".into(), bp(500))]
        );
        assert_eq!(canary.step(999), None, "not due yet");
        let second = canary.step(1000).expect("due");
        assert_eq!(second.share, BasisPoints::ALL);
        assert_eq!(canary.outcome, Some(Outcome::Completed));
        assert_eq!(canary.step(5000), None, "a finished canary does not step");
        let whats: Vec<&str> = canary.decisions.iter().map(|d| d.what.as_str()).collect();
        assert_eq!(
            whats,
            [
                "started; step 1/2: 5.00% to green",
                "interval elapsed; step 2/2: 100.00% to green",
                "completed: every step done"
            ]
        );
    }

    #[test]
    fn rollback_reason_follows_the_threshold() {
        let mut p = plan("blue", "green", &[500], 0);
        p.auto_rollback = Some(bp(5000));
        let (canary, _) = Canary::begin(p, 0);
        // A canary at its only step below 100% holds and keeps watching.
        assert!(canary.running());
        assert_eq!(canary.rollback_reason(4, 1), None);
        assert_eq!(
            canary.rollback_reason(4, 2).as_deref(),
            Some("2 of 4 backends of green fail their health checks (threshold 50.00%)")
        );
        assert_eq!(canary.rollback_reason(0, 0), None, "no members, no verdict");
    }

    #[test]
    fn canary_steps_on_its_timer_and_records_why() {
        let mut s = sample();
        s.set_split("web", &[("blue".into(), BasisPoints::ALL)])
            .unwrap();
        start(
            &mut s,
            "web",
            plan("blue", "green", &[500, 2500, 10_000], 1000),
            0,
        )
        .unwrap();
        assert_eq!(shares_of(&s), vec![9500, 500]);
        assert!(!any_due(&s, 999));
        assert!(any_due(&s, 1000));
        step_due(&mut s, 1000).unwrap();
        assert_eq!(shares_of(&s), vec![7500, 2500]);
        act(&mut s, "web", CanaryAction::Pause, 1500).unwrap();
        assert!(!any_due(&s, 10_000), "a paused canary does not step");
        act(&mut s, "web", CanaryAction::Resume, 10_000).unwrap();
        assert!(
            !any_due(&s, 10_499) && any_due(&s, 10_500),
            "resumes with the time left"
        );
        step_due(&mut s, 10_500).unwrap();
        assert_eq!(shares_of(&s), vec![0, 10_000]);
        let canary = s.service("web").unwrap().canary.clone().unwrap();
        assert_eq!(canary.outcome, Some(Outcome::Completed));
        assert_eq!(canary.decisions.len(), 6);
        let err = act(&mut s, "web", CanaryAction::Abort, 11_000).unwrap_err();
        assert_eq!(err.to_string(), "service \"web\" runs no canary");
    }

    #[test]
    fn canary_abort_and_promote_are_one_write_each() {
        let mut s = sample();
        start(
            &mut s,
            "web",
            plan("blue", "green", &[100, 5000], 60_000),
            0,
        )
        .unwrap();
        let mut aborted = s.clone();
        act(&mut aborted, "web", CanaryAction::Abort, 5).unwrap();
        assert_eq!(shares_of(&aborted), vec![10_000, 0]);
        act(&mut s, "web", CanaryAction::Promote, 5).unwrap();
        assert_eq!(shares_of(&s), vec![0, 10_000]);
        assert_eq!(
            s.service("web").unwrap().canary.as_ref().unwrap().outcome,
            Some(Outcome::Promoted)
        );
    }

    #[test]
    fn a_canary_between_two_of_three_groups_leaves_the_third_alone() {
        let mut s = sample();
        s.add_backend("web", "198.18.0.104".parse().unwrap(), "gray", 100)
            .unwrap();
        let split = [("blue", 6000), ("green", 0), ("gray", 4000)];
        let split: Vec<_> = split.iter().map(|&(g, v)| (g.into(), bp(v))).collect();
        s.set_split("web", &split).unwrap();
        start(
            &mut s,
            "web",
            plan("blue", "green", &[2500, 5000, 10_000], 1000),
            0,
        )
        .unwrap();
        // Steps are parts of what blue and green hold together (60%).
        assert_eq!(shares_of(&s), vec![4500, 1500, 4000]);
        step_due(&mut s, 1000).unwrap();
        assert_eq!(shares_of(&s), vec![3000, 3000, 4000]);
        let mut aborted = s.clone();
        act(&mut aborted, "web", CanaryAction::Abort, 1500).unwrap();
        assert_eq!(shares_of(&aborted), vec![6000, 0, 4000]);
        let mut rolled_back = s.clone();
        roll_back(&mut rolled_back, "web", "checks".into(), 1500).unwrap();
        assert_eq!(shares_of(&rolled_back), vec![6000, 0, 4000]);
        step_due(&mut s, 2000).unwrap();
        assert_eq!(shares_of(&s), vec![0, 6000, 4000]);

        // Two groups that hold nothing have nothing to move.
        let split = [("blue", 0), ("green", 0), ("gray", 10_000)];
        let split: Vec<_> = split.iter().map(|&(g, v)| (g.into(), bp(v))).collect();
        s.set_split("web", &split).unwrap();
        let before = s.clone();
        let err = start(&mut s, "web", plan("blue", "green", &[500], 0), 0).unwrap_err();
        assert_eq!(
            err.to_string(),
            "groups blue and green hold no share of new flows: split first"
        );
        assert_eq!(s, before);
    }

    #[test]
    fn malformed_canaries_are_refused() {
        let s = sample();
        let attempts: [(&str, &str, &[u16], u64, &str); 6] = [
            (
                "blue",
                "purple",
                &[500],
                0,
                "no group \"purple\" in service \"web\"",
            ),
            (
                "blue",
                "blue",
                &[500],
                0,
                "--from and --to name the same group",
            ),
            (
                "blue",
                "green",
                &[2500, 500],
                1000,
                "steps must be strictly ascending",
            ),
            (
                "blue",
                "green",
                &[500, 500],
                1000,
                "steps must be strictly ascending",
            ),
            (
                "blue",
                "green",
                &[0, 500],
                1000,
                "steps must be percentages above 0 and at most 100",
            ),
            (
                "blue",
                "green",
                &[500, 10_000],
                0,
                "several steps need an interval above 0",
            ),
        ];
        for (from, to, steps, interval, why) in attempts {
            let mut copy = s.clone();
            let err = start(&mut copy, "web", plan(from, to, steps, interval), 0).unwrap_err();
            assert_eq!(err.to_string(), why, "{from}->{to} {steps:?}");
            assert_eq!(copy, s);
        }
        let mut running = s.clone();
        start(
            &mut running,
            "web",
            plan("blue", "green", &[500, 10_000], 1000),
            0,
        )
        .unwrap();
        let err = start(&mut running, "web", plan("blue", "green", &[500], 0), 0).unwrap_err();
        assert_eq!(
            err.to_string(),
            "service \"web\" already runs a canary: promote or abort it first"
        );
        let mut unchecked = s.clone();
        let mut p = plan("blue", "green", &[500], 0);
        p.auto_rollback = Some(bp(5000));
        let err = start(&mut unchecked, "web", p, 0).unwrap_err();
        assert_eq!(
            err.to_string(),
            "auto-rollback needs health checks: service set web --health tcp"
        );
    }

    #[test]
    fn a_promotion_webhook_is_asked_before_the_last_step_only() {
        use crate::release::analysis::{Phase, Sample, Verdict, Webhook};
        let mut p = plan("blue", "green", &[1000, 5000, 10_000], 1000);
        p.analysis = Some(AnalysisPlan {
            warmup_ms: 0,
            window_ms: 5000,
            min_flows: 10,
            webhooks: vec![Webhook {
                url: "http://198.18.0.1:8080/gate".into(),
                before: Phase::Promotion,
            }],
            ..AnalysisPlan::default()
        });
        let (mut canary, _) = Canary::begin(p, 0);
        let counters = |flows| Pair {
            from: Sample {
                new_flows: flows,
                ..Sample::default()
            },
            to: Sample {
                new_flows: flows,
                ..Sample::default()
            },
        };
        // One window per step: opened, then passed.
        let pass = |canary: &mut Canary, at: u64, flows| {
            assert_eq!(canary.analyse(at, counters(flows)), None);
            assert_eq!(canary.analyse(at + 5000, counters(flows + 100)), None);
        };
        pass(&mut canary, 0, 0);
        assert!(
            canary.questions("web").is_empty(),
            "no webhook before step 2"
        );
        assert_eq!(canary.step(5000).map(|s| s.share), Some(bp(5000)));
        pass(&mut canary, 5000, 100);
        assert_eq!(canary.step(10_000), None, "asks first");
        assert!(!canary.due(10_000), "not due while asked");
        let questions = canary.questions("web");
        assert_eq!(questions.len(), 1);
        let Ask::Webhook { body, .. } = &questions[0].asks[0] else {
            panic!("{questions:?}")
        };
        assert_eq!(body["phase"], "promotion");
        assert_eq!(body["step"], 3);
        assert_eq!(body["percent"], "100.00");
        let go = GateResult {
            gate: "webhook".into(),
            verdict: Verdict::Pass,
            detail: "HTTP 204".into(),
        };
        assert_eq!(canary.answer(questions[0].ticket, vec![go], 10_100), None);
        assert_eq!(canary.step(10_100).map(|s| s.share), Some(BasisPoints::ALL));
        assert_eq!(canary.outcome, Some(Outcome::Completed));
    }

    #[test]
    fn an_analysis_needs_a_step_below_all() {
        let mut p = plan("blue", "green", &[10_000], 0);
        p.analysis = Some(AnalysisPlan::default());
        let err = start(&mut sample(), "web", p, 0).unwrap_err();
        assert_eq!(
            err.to_string(),
            "an analysis needs a step below 100%: nothing would be compared"
        );
    }

    #[test]
    fn presets_are_valid_plans() {
        let s = sample();
        for preset in [
            Preset::Canary10Over5m,
            Preset::Linear10Every1m,
            Preset::AllAtOnce,
        ] {
            let (steps, interval_ms) = preset.plan();
            let plan = CanaryPlan {
                from: "blue".into(),
                to: "green".into(),
                steps,
                interval_ms,
                auto_rollback: None,
                analysis: None,
            };
            start(&mut s.clone(), "web", plan, 0).unwrap();
        }
    }
}
