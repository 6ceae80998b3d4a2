//! Rolling replacement: for each OLD=NEW pair, add NEW, wait until it passes its health
//! checks, ramp its weight up, drain OLD, remove OLD; then the next pair. The group never
//! has fewer healthy serving backends than before (surge one, unavailable zero). Progress
//! lives in the state file, so a restarted daemon carries on.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use super::{canary::Decision, State, StateError};

/// What a rollout is asked to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RolloutPlan {
    /// Group whose backends are replaced.
    pub group: String,
    /// (OLD, NEW) pairs, in order.
    pub pairs: Vec<(IpAddr, IpAddr)>,
    /// How long NEW may take to pass its health checks, milliseconds.
    pub ready_timeout_ms: u64,
    /// How long NEW's weight ramps up from 0 to OLD's weight, milliseconds.
    pub slow_start_ms: u64,
    /// How long OLD's established flows are waited for; none: until they end.
    pub drain_timeout_ms: Option<u64>,
}

/// Where the current pair is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RolloutPhase {
    /// NEW is added with weight 0 and must pass its health checks.
    Ready,
    /// NEW's weight ramps up.
    Ramp,
    /// OLD drains.
    Drain,
}

/// How a rollout ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RolloutOutcome {
    /// Every pair replaced.
    Completed,
    /// A NEW never became healthy: removed, its OLD kept serving.
    Failed,
    /// Stopped by the operator.
    Aborted,
}

/// A rollout of one group, running or finished.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rollout {
    /// Group whose backends are replaced.
    pub group: String,
    /// (OLD, NEW) pairs, in order.
    pub pairs: Vec<(IpAddr, IpAddr)>,
    /// Index of the pair in progress.
    pub current: usize,
    /// Phase of that pair.
    pub phase: RolloutPhase,
    /// When the phase began (Unix milliseconds).
    pub phase_since_ms: u64,
    /// OLD's weight, which NEW ramps up to.
    pub target_weight: u16,
    /// See [`RolloutPlan`].
    pub ready_timeout_ms: u64,
    /// See [`RolloutPlan`].
    pub slow_start_ms: u64,
    /// See [`RolloutPlan`].
    pub drain_timeout_ms: Option<u64>,
    /// How it ended; none while running.
    pub outcome: Option<RolloutOutcome>,
    /// What happened and why, oldest first.
    pub decisions: Vec<Decision>,
}

impl Rollout {
    fn record(&mut self, at_ms: u64, what: String) {
        self.decisions.push(Decision { at_ms, what });
    }
}

impl State {
    /// Starts a rollout; the first NEW is added at once with weight 0.
    pub fn start_rollout(
        &mut self,
        service: &str,
        plan: RolloutPlan,
        now_ms: u64,
    ) -> Result<(), StateError> {
        let svc = self.service(service)?;
        let bad = |why: String| Err(StateError::Rollout(why));
        if svc.health.is_none() {
            return bad(format!(
                "a rollout waits for health checks: service set {service} --health tcp"
            ));
        }
        if svc.rollout.as_ref().is_some_and(|r| r.outcome.is_none()) {
            return bad(format!(
                "service {service:?} already runs a rollout: abort it first"
            ));
        }
        let Some(g) = svc.group_index(&plan.group) else {
            return Err(StateError::UnknownGroup(plan.group, service.to_string()));
        };
        if plan.pairs.is_empty() {
            return bad("give at least one OLD=NEW pair".into());
        }
        for (i, (old, new)) in plan.pairs.iter().enumerate() {
            if !svc.groups[g].backends.iter().any(|b| b.addr == *old) {
                return bad(format!("{old} is not a backend of group {:?}", plan.group));
            }
            if svc.backends().any(|(_, b)| b.addr == *new) {
                return bad(format!("{new} is already a backend of service {service:?}"));
            }
            let repeated = plan.pairs[..i]
                .iter()
                .any(|(o, n)| o == old || n == new || o == new || n == old);
            if repeated || old == new {
                return bad(format!("{old}={new} repeats an address"));
            }
        }
        let mut rollout = Rollout {
            group: plan.group,
            pairs: plan.pairs,
            current: 0,
            phase: RolloutPhase::Ready,
            phase_since_ms: now_ms,
            target_weight: 0,
            ready_timeout_ms: plan.ready_timeout_ms,
            slow_start_ms: plan.slow_start_ms,
            drain_timeout_ms: plan.drain_timeout_ms,
            outcome: None,
            decisions: Vec::new(),
        };
        self.begin_pair(service, &mut rollout, now_ms)?;
        self.service_mut(service)?.rollout = Some(rollout);
        Ok(())
    }

    fn begin_pair(
        &mut self,
        service: &str,
        rollout: &mut Rollout,
        now_ms: u64,
    ) -> Result<(), StateError> {
        let (old, new) = rollout.pairs[rollout.current];
        let svc = self.service(service)?;
        rollout.target_weight = svc
            .backends()
            .find(|(_, b)| b.addr == old)
            .map(|(_, b)| b.weight)
            .ok_or_else(|| StateError::UnknownBackend(old, service.to_string()))?;
        self.add_backend(service, new, &rollout.group.clone(), 0)?;
        rollout.phase = RolloutPhase::Ready;
        rollout.phase_since_ms = now_ms;
        rollout.record(
            now_ms,
            format!(
                "pair {}/{}: added {new}, waiting for its health checks",
                rollout.current + 1,
                rollout.pairs.len()
            ),
        );
        Ok(())
    }

    /// Whether some rollout is still running.
    pub fn rollout_running(&self) -> bool {
        self.services
            .values()
            .any(|s| s.rollout.as_ref().is_some_and(|r| r.outcome.is_none()))
    }

    /// Moves every running rollout forward. `healthy(service, addr)` tells whether a
    /// backend passes its checks; drains end through [`State::check_drains`].
    pub fn step_rollouts(
        &mut self,
        now_ms: u64,
        healthy: impl Fn(&str, IpAddr) -> bool,
    ) -> Result<(), StateError> {
        let running: Vec<String> = self
            .services
            .iter()
            .filter(|(_, s)| s.rollout.as_ref().is_some_and(|r| r.outcome.is_none()))
            .map(|(name, _)| name.clone())
            .collect();
        for name in running {
            let mut rollout = self.service(&name)?.rollout.clone().expect("filtered");
            self.step_rollout(&name, &mut rollout, now_ms, &healthy)?;
            self.service_mut(&name)?.rollout = Some(rollout);
        }
        Ok(())
    }

    fn step_rollout(
        &mut self,
        service: &str,
        rollout: &mut Rollout,
        now_ms: u64,
        healthy: &impl Fn(&str, IpAddr) -> bool,
    ) -> Result<(), StateError> {
        let (old, new) = rollout.pairs[rollout.current];
        let elapsed = now_ms.saturating_sub(rollout.phase_since_ms);
        match rollout.phase {
            RolloutPhase::Ready if healthy(service, new) => {
                rollout.phase = RolloutPhase::Ramp;
                rollout.phase_since_ms = now_ms;
                rollout.record(
                    now_ms,
                    format!("{new} passes its health checks; ramping up"),
                );
                self.ramp(service, rollout, new, now_ms)
            }
            RolloutPhase::Ready if elapsed >= rollout.ready_timeout_ms => {
                self.remove_backend(service, new)?;
                rollout.outcome = Some(RolloutOutcome::Failed);
                rollout.record(
                    now_ms,
                    format!(
                        "failed: {new} did not pass its health checks within {} ms; removed it, {old} keeps serving",
                        rollout.ready_timeout_ms
                    ),
                );
                Ok(())
            }
            RolloutPhase::Ready => Ok(()),
            RolloutPhase::Ramp => self.ramp(service, rollout, new, now_ms),
            RolloutPhase::Drain => {
                let ended = self
                    .service(service)?
                    .backends()
                    .find(|(_, b)| b.addr == old)
                    .and_then(|(_, b)| b.drain.and_then(|d| d.ended));
                let Some(end) = ended else {
                    return Ok(());
                };
                self.remove_backend(service, old)?;
                rollout.record(
                    now_ms,
                    format!("{old} drained ({} flows left); removed", end.flows_left),
                );
                if rollout.current + 1 < rollout.pairs.len() {
                    rollout.current += 1;
                    self.begin_pair(service, rollout, now_ms)
                } else {
                    rollout.outcome = Some(RolloutOutcome::Completed);
                    rollout.record(now_ms, "completed: every pair replaced".into());
                    Ok(())
                }
            }
        }
    }

    /// Sets NEW's weight along the slow-start ramp; at its end, starts draining OLD.
    fn ramp(
        &mut self,
        service: &str,
        rollout: &mut Rollout,
        new: IpAddr,
        now_ms: u64,
    ) -> Result<(), StateError> {
        let elapsed = now_ms.saturating_sub(rollout.phase_since_ms);
        let target = u64::from(rollout.target_weight);
        if elapsed < rollout.slow_start_ms {
            let weight = (target * elapsed / rollout.slow_start_ms).max(1) as u16;
            return self.set_weight(service, new, weight);
        }
        self.set_weight(service, new, rollout.target_weight)?;
        let (old, _) = rollout.pairs[rollout.current];
        self.start_drain(service, old, rollout.drain_timeout_ms, now_ms)?;
        rollout.phase = RolloutPhase::Drain;
        rollout.phase_since_ms = now_ms;
        rollout.record(now_ms, format!("{new} at full weight; draining {old}"));
        Ok(())
    }

    /// Stops the running rollout: the pair in progress is undone (NEW removed, OLD back at
    /// its weight); pairs already replaced stay replaced.
    pub fn abort_rollout(&mut self, service: &str, now_ms: u64) -> Result<(), StateError> {
        let mut rollout = self
            .service(service)?
            .rollout
            .clone()
            .filter(|r| r.outcome.is_none())
            .ok_or_else(|| StateError::Rollout(format!("service {service:?} runs no rollout")))?;
        let (old, new) = rollout.pairs[rollout.current];
        self.set_weight(service, old, rollout.target_weight.max(1))?;
        self.remove_backend(service, new)?;
        rollout.outcome = Some(RolloutOutcome::Aborted);
        rollout.record(
            now_ms,
            format!("aborted by the operator: removed {new}, {old} serves again"),
        );
        self.service_mut(service)?.rollout = Some(rollout);
        Ok(())
    }
}
