//! Gradual canary: new flows move from one group to another in steps on a timer that the
//! daemon keeps. Progress lives in the state file, so a restarted daemon resumes at the
//! step it was on, with the time left until the next one.

use serde::{Deserialize, Serialize};

use super::{format_basis_points, State, StateError};

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
    /// Steps (basis points of the new group) and interval in milliseconds.
    pub fn plan(self) -> (Vec<u16>, u64) {
        match self {
            Preset::Canary10Over5m => (vec![1000, 10_000], 5 * 60_000),
            Preset::Linear10Every1m => ((1..=10).map(|i| i * 1000).collect(), 60_000),
            Preset::AllAtOnce => (vec![10_000], 0),
        }
    }
}

/// What a canary is asked to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CanaryPlan {
    /// Group new flows move away from.
    pub from: String,
    /// Group new flows move to.
    pub to: String,
    /// Shares of `to` in basis points, strictly ascending.
    pub steps: Vec<u16>,
    /// Time between steps, milliseconds.
    pub interval_ms: u64,
    /// Roll back when this share (basis points) of `to`'s backends fail their checks.
    pub auto_rollback: Option<u16>,
}

/// A canary of one service, running or finished.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Canary {
    /// Group new flows move away from.
    pub from: String,
    /// Group new flows move to.
    pub to: String,
    /// Shares of `to` in basis points, ascending.
    pub steps: Vec<u16>,
    /// Time between steps, milliseconds.
    pub interval_ms: u64,
    /// Index of the step in force.
    pub step: usize,
    /// When the next step is due (Unix milliseconds); none when paused or finished.
    pub next_step_at_ms: Option<u64>,
    /// Time that was left until the next step when paused, milliseconds.
    pub paused_remaining_ms: Option<u64>,
    /// Abort by itself when at least this share (basis points) of the new group's
    /// backends fail their health checks; none: never.
    #[serde(default)]
    pub auto_rollback: Option<u16>,
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
    /// Health checks of the new group failed: back to the old group.
    RolledBack,
}

/// One recorded decision.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    /// Unix milliseconds.
    pub at_ms: u64,
    /// What was done and why.
    pub what: String,
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

impl Canary {
    fn running(&self) -> bool {
        self.outcome.is_none()
    }

    fn record(&mut self, at_ms: u64, what: String) {
        self.decisions.push(Decision { at_ms, what });
    }

    fn describe_step(&self) -> String {
        format!(
            "step {}/{}: {}% to {}",
            self.step + 1,
            self.steps.len(),
            format_basis_points(self.steps[self.step]),
            self.to
        )
    }
}

impl State {
    /// Starts a canary from group `plan.from` to group `plan.to`: the first step applies at
    /// once, each later one `plan.interval_ms` after the previous.
    pub fn start_canary(
        &mut self,
        service: &str,
        plan: CanaryPlan,
        now_ms: u64,
    ) -> Result<(), StateError> {
        let CanaryPlan {
            from,
            to,
            steps,
            interval_ms,
            auto_rollback,
        } = plan;
        let (from, to) = (from.as_str(), to.as_str());
        let svc = self.service(service)?;
        if auto_rollback.is_some() && svc.health.is_none() {
            return Err(StateError::Canary(format!(
                "auto-rollback needs health checks: service set {service} --health tcp"
            )));
        }
        if auto_rollback.is_some_and(|t| t == 0 || t > 10_000) {
            return Err(StateError::Canary(
                "the rollback threshold must be above 0% and at most 100%".into(),
            ));
        }
        for group in [from, to] {
            if svc.group_index(group).is_none() {
                return Err(StateError::UnknownGroup(
                    group.to_string(),
                    service.to_string(),
                ));
            }
        }
        if from == to {
            return Err(StateError::Canary(
                "--from and --to name the same group".into(),
            ));
        }
        if svc.canary.as_ref().is_some_and(Canary::running) {
            return Err(StateError::Canary(format!(
                "service {service:?} already runs a canary: promote or abort it first"
            )));
        }
        if steps.is_empty() || steps.iter().any(|&s| s == 0 || s > 10_000) {
            return Err(StateError::Canary(
                "steps must be percentages above 0 and at most 100".into(),
            ));
        }
        if steps.windows(2).any(|w| w[0] >= w[1]) {
            return Err(StateError::Canary(
                "steps must be strictly ascending".into(),
            ));
        }
        if steps.len() > 1 && interval_ms == 0 {
            return Err(StateError::Canary(
                "several steps need an interval above 0".into(),
            ));
        }
        let mut canary = Canary {
            from: from.to_string(),
            to: to.to_string(),
            steps,
            interval_ms,
            step: 0,
            next_step_at_ms: None,
            paused_remaining_ms: None,
            auto_rollback,
            outcome: None,
            decisions: Vec::new(),
        };
        self.apply_canary_share(service, &canary, canary.steps[0])?;
        let what = format!("started; {}", canary.describe_step());
        canary.record(now_ms, what);
        schedule_or_complete(&mut canary, now_ms);
        self.service_mut(service)?.canary = Some(canary);
        Ok(())
    }

    /// A copy of the running canary of `service`.
    fn running_canary(&self, service: &str) -> Result<Canary, StateError> {
        self.service(service)?
            .canary
            .clone()
            .filter(Canary::running)
            .ok_or_else(|| StateError::Canary(format!("service {service:?} runs no canary")))
    }

    /// Pauses, resumes, promotes or aborts the running canary of `service`.
    pub fn canary_action(
        &mut self,
        service: &str,
        action: CanaryAction,
        now_ms: u64,
    ) -> Result<(), StateError> {
        let mut canary = self.running_canary(service)?;
        match action {
            CanaryAction::Pause => {
                let due = canary
                    .next_step_at_ms
                    .ok_or_else(|| StateError::Canary("the canary is already paused".into()))?;
                canary.paused_remaining_ms = Some(due.saturating_sub(now_ms));
                canary.next_step_at_ms = None;
                canary.record(
                    now_ms,
                    format!("paused by the operator at {}", canary.describe_step()),
                );
            }
            CanaryAction::Resume => {
                let left = canary
                    .paused_remaining_ms
                    .take()
                    .ok_or_else(|| StateError::Canary("the canary is not paused".into()))?;
                canary.next_step_at_ms = Some(now_ms + left);
                canary.record(now_ms, "resumed by the operator".into());
            }
            CanaryAction::Promote => {
                self.apply_canary_share(service, &canary, 10_000)?;
                finish(
                    &mut canary,
                    Outcome::Promoted,
                    now_ms,
                    "promoted by the operator: 100% to the new group".into(),
                );
            }
            CanaryAction::Abort => {
                self.apply_canary_share(service, &canary, 0)?;
                let what = format!("aborted by the operator: 100% back to {}", canary.from);
                finish(&mut canary, Outcome::Aborted, now_ms, what);
            }
        }
        self.service_mut(service)?.canary = Some(canary);
        Ok(())
    }

    /// Rolls back the running canary of `service` because of `why`: 100% of new flows return
    /// to the old group in one write, and the reason is recorded.
    pub fn roll_back_canary(
        &mut self,
        service: &str,
        why: String,
        now_ms: u64,
    ) -> Result<(), StateError> {
        let mut canary = self.running_canary(service)?;
        self.apply_canary_share(service, &canary, 0)?;
        finish(
            &mut canary,
            Outcome::RolledBack,
            now_ms,
            format!("rolled back: {why}"),
        );
        self.service_mut(service)?.canary = Some(canary);
        Ok(())
    }

    /// Running canaries with auto-rollback: (service, new group, threshold in basis points).
    pub fn rollback_watches(&self) -> Vec<(String, String, u16)> {
        self.services
            .iter()
            .filter_map(|(name, s)| {
                let c = s.canary.as_ref().filter(|c| c.running())?;
                Some((name.clone(), c.to.clone(), c.auto_rollback?))
            })
            .collect()
    }

    /// Whether some canary has a step due at `now_ms`.
    pub fn canary_due(&self, now_ms: u64) -> bool {
        self.services.values().any(|s| {
            s.canary
                .as_ref()
                .and_then(|c| c.next_step_at_ms)
                .is_some_and(|due| due <= now_ms)
        })
    }

    /// Takes every step that is due at `now_ms`.
    pub fn advance_canaries(&mut self, now_ms: u64) -> Result<(), StateError> {
        let due: Vec<String> = self
            .services
            .iter()
            .filter(|(_, s)| {
                s.canary
                    .as_ref()
                    .and_then(|c| c.next_step_at_ms)
                    .is_some_and(|at| at <= now_ms)
            })
            .map(|(name, _)| name.clone())
            .collect();
        for name in due {
            let mut canary = self.service(&name)?.canary.clone().expect("filtered above");
            canary.step += 1;
            self.apply_canary_share(&name, &canary, canary.steps[canary.step])?;
            let what = format!("interval elapsed; {}", canary.describe_step());
            canary.record(now_ms, what);
            schedule_or_complete(&mut canary, now_ms);
            self.service_mut(&name)?.canary = Some(canary);
        }
        Ok(())
    }

    /// Sets the split to `share` basis points on the canary's new group, the rest on the
    /// old group (other groups get nothing).
    fn apply_canary_share(
        &mut self,
        service: &str,
        canary: &Canary,
        share: u16,
    ) -> Result<(), StateError> {
        self.set_split(
            service,
            &[
                (canary.from.clone(), 10_000 - share),
                (canary.to.clone(), share),
            ],
        )
    }
}

fn schedule_or_complete(canary: &mut Canary, now_ms: u64) {
    if canary.step + 1 < canary.steps.len() {
        canary.next_step_at_ms = Some(now_ms + canary.interval_ms);
    } else if canary.steps[canary.step] == 10_000 {
        finish(
            canary,
            Outcome::Completed,
            now_ms,
            "completed: every step done".into(),
        );
    } else {
        canary.next_step_at_ms = None;
        canary.record(now_ms, "holding at the last step: promote or abort".into());
    }
}

fn finish(canary: &mut Canary, outcome: Outcome, now_ms: u64, what: String) {
    canary.outcome = Some(outcome);
    canary.next_step_at_ms = None;
    canary.paused_remaining_ms = None;
    canary.record(now_ms, what);
}
