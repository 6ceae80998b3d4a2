//! Rolling replacement: for each OLD=NEW pair, add NEW, wait until it passes its health
//! checks, ramp its weight up, drain OLD, remove OLD; then the next pair. The group never
//! has fewer healthy serving backends than before (surge one, unavailable zero). Progress
//! lives in the state file, so a restarted daemon carries on.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use super::{
    analysis::{Analysis, AnalysisPlan, Next, Pair},
    decision::{record, Decision},
    drain,
};
use crate::state::{Service, State, StateError};

/// What a rollout is asked to do.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
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
    /// When OLD's drain ends, re-balance its remaining flows instead of retiring it with
    /// them.
    #[serde(default)]
    pub cut: bool,
    /// Before OLD drains, compare NEW with the rest of its group; none: no comparison.
    #[serde(default)]
    pub analysis: Option<AnalysisPlan>,
}

/// Where the current pair is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RolloutPhase {
    /// NEW is added with weight 0 and must pass its health checks.
    Ready,
    /// NEW's weight ramps up.
    Ramp,
    /// NEW serves at full weight beside OLD and is compared with the rest of its group.
    Analyse,
    /// OLD drains.
    Drain,
}

/// How a rollout ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RolloutOutcome {
    /// Every pair replaced.
    Completed,
    /// A NEW never became healthy, or its signals were worse than its group's: removed,
    /// its OLD kept serving.
    Failed,
    /// Stopped by the operator.
    Aborted,
}

/// A rollout of one group, running or finished.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
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
    /// See [`RolloutPlan`].
    #[serde(default)]
    pub cut: bool,
    /// The comparison of the current NEW with the rest of its group, if asked for.
    #[serde(default)]
    pub analysis: Option<Analysis>,
    /// How it ended; none while running.
    pub outcome: Option<RolloutOutcome>,
    /// What happened and why, oldest first.
    pub decisions: Vec<Decision>,
}

/// A change of its service that a rollout wants, applied in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RolloutChange {
    /// Add a backend to the rollout's group with this weight.
    Add {
        /// Address.
        addr: IpAddr,
        /// Weight.
        weight: u16,
    },
    /// Set a backend's weight.
    Weight {
        /// Address.
        addr: IpAddr,
        /// Weight.
        weight: u16,
    },
    /// Start draining a backend.
    Drain {
        /// Address.
        addr: IpAddr,
        /// Give up waiting for its flows after this long, milliseconds.
        timeout_ms: Option<u64>,
    },
    /// Remove a backend.
    Remove {
        /// Address.
        addr: IpAddr,
    },
}

impl RolloutPlan {
    /// Checks the plan against `service` (named `name`).
    fn check(&self, service: &Service, name: &str) -> Result<(), StateError> {
        let bad = |why: String| Err(StateError::Rollout(why));
        crate::duration::check("the rollout's ready timeout", self.ready_timeout_ms)?;
        crate::duration::check("the rollout's slow start", self.slow_start_ms)?;
        crate::duration::check_optional("the rollout's drain timeout", self.drain_timeout_ms)?;
        if service.health.is_none() {
            return bad(format!(
                "a rollout waits for health checks: service set {name} --health tcp"
            ));
        }
        if service.rollout.as_ref().is_some_and(Rollout::running) {
            return bad(format!(
                "service {name:?} already runs a rollout: abort it first"
            ));
        }
        let Some(g) = service.group_index(&self.group) else {
            return Err(StateError::UnknownGroup(
                self.group.clone(),
                name.to_string(),
            ));
        };
        if self.pairs.is_empty() {
            return bad("give at least one OLD=NEW pair".into());
        }
        for (i, (old, new)) in self.pairs.iter().enumerate() {
            if !service.groups[g].backends.iter().any(|b| b.addr == *old) {
                return bad(format!("{old} is not a backend of group {:?}", self.group));
            }
            if service.backends().any(|(_, b)| b.addr == *new) {
                return bad(format!("{new} is already a backend of service {name:?}"));
            }
            let repeated = self.pairs[..i]
                .iter()
                .any(|(o, n)| o == old || n == new || o == new || n == old);
            if repeated || old == new {
                return bad(format!("{old}={new} repeats an address"));
            }
        }
        if let Some(analysis) = &self.analysis {
            analysis
                .check()
                .map_err(|e| StateError::Rollout(e.to_string()))?;
            if !analysis.prometheus.is_empty() || !analysis.webhooks.is_empty() {
                return bad(
                    "a rollout's analysis compares signals only: Prometheus and \
                            webhook gates are for canaries"
                        .into(),
                );
            }
            if analysis.checks.is_empty() {
                return bad("a rollout's analysis needs at least one check".into());
            }
        }
        Ok(())
    }
}

impl Rollout {
    /// A rollout at its first pair: NEW is added with weight 0.
    fn begin(
        plan: RolloutPlan,
        service: &Service,
        now_ms: u64,
    ) -> Result<(Self, Vec<RolloutChange>), StateError> {
        let mut rollout = Self {
            group: plan.group,
            pairs: plan.pairs,
            current: 0,
            phase: RolloutPhase::Ready,
            phase_since_ms: now_ms,
            target_weight: 0,
            ready_timeout_ms: plan.ready_timeout_ms,
            slow_start_ms: plan.slow_start_ms,
            drain_timeout_ms: plan.drain_timeout_ms,
            cut: plan.cut,
            analysis: plan.analysis.map(|a| Analysis::new(a, now_ms)),
            outcome: None,
            decisions: Vec::new(),
        };
        let changes = rollout.begin_pair(service, now_ms)?;
        Ok((rollout, changes))
    }

    /// Whether it still runs (has no outcome).
    pub fn running(&self) -> bool {
        self.outcome.is_none()
    }

    /// Moves the pair in progress forward at `now_ms`. `service` is the rollout's service
    /// as it is now; `healthy` tells whether a backend passes its health checks.
    pub fn step(
        &mut self,
        service: &Service,
        now_ms: u64,
        healthy: impl Fn(IpAddr) -> bool,
    ) -> Result<Vec<RolloutChange>, StateError> {
        if !self.running() {
            return Ok(Vec::new());
        }
        let (old, new) = self.pairs[self.current];
        let elapsed = now_ms.saturating_sub(self.phase_since_ms);
        match self.phase {
            RolloutPhase::Ready if healthy(new) => {
                self.enter(RolloutPhase::Ramp, now_ms);
                let what = format!("{new} passes its health checks; ramping up");
                record(&mut self.decisions, now_ms, what);
                Ok(self.ramp(now_ms))
            }
            RolloutPhase::Ready if elapsed >= self.ready_timeout_ms => {
                self.outcome = Some(RolloutOutcome::Failed);
                let what = format!(
                    "failed: {new} did not pass its health checks within {} ms; removed it, {old} keeps serving",
                    self.ready_timeout_ms
                );
                record(&mut self.decisions, now_ms, what);
                Ok(vec![RolloutChange::Remove { addr: new }])
            }
            RolloutPhase::Ready => Ok(Vec::new()),
            RolloutPhase::Ramp => Ok(self.ramp(now_ms)),
            RolloutPhase::Analyse if self.analysis.as_ref().is_some_and(|a| a.passed) => {
                Ok(self.start_drain(now_ms))
            }
            RolloutPhase::Analyse => Ok(Vec::new()),
            RolloutPhase::Drain => {
                let ended = service
                    .backends()
                    .find(|(_, b)| b.addr == old)
                    .and_then(|(_, b)| b.drain.and_then(|d| d.ended));
                let Some(end) = ended else {
                    return Ok(Vec::new());
                };
                let what = format!("{old} drained ({} flows left); removed", end.flows_left);
                record(&mut self.decisions, now_ms, what);
                let mut changes = vec![RolloutChange::Remove { addr: old }];
                if self.current + 1 < self.pairs.len() {
                    self.current += 1;
                    changes.extend(self.begin_pair(service, now_ms)?);
                } else {
                    self.outcome = Some(RolloutOutcome::Completed);
                    record(
                        &mut self.decisions,
                        now_ms,
                        "completed: every pair replaced".into(),
                    );
                }
                Ok(changes)
            }
        }
    }

    /// Stops the rollout: the pair in progress is undone (NEW removed, OLD back at its
    /// weight); pairs already replaced stay replaced.
    pub fn abort(&mut self, now_ms: u64) -> Vec<RolloutChange> {
        let (old, new) = self.pairs[self.current];
        let what = format!("aborted by the operator: removed {new}, {old} serves again");
        self.undo_pair(RolloutOutcome::Aborted, what, now_ms)
    }

    /// Ends the rollout with `outcome` (recording `what`) and undoes the pair in progress:
    /// OLD back at its weight, NEW removed.
    fn undo_pair(
        &mut self,
        outcome: RolloutOutcome,
        what: String,
        now_ms: u64,
    ) -> Vec<RolloutChange> {
        let (old, new) = self.pairs[self.current];
        self.outcome = Some(outcome);
        record(&mut self.decisions, now_ms, what);
        vec![
            RolloutChange::Weight {
                addr: old,
                weight: self.target_weight.max(1),
            },
            RolloutChange::Remove { addr: new },
        ]
    }

    /// Whether its analysis needs the counters at `now_ms`.
    pub fn wants_sample(&self, now_ms: u64) -> bool {
        self.running()
            && self.phase == RolloutPhase::Analyse
            && self
                .analysis
                .as_ref()
                .is_some_and(|a| a.wants_sample(now_ms))
    }

    /// The backend under comparison: the current NEW.
    pub fn compared(&self) -> IpAddr {
        self.pairs[self.current].1
    }

    /// Goes on with the comparison given `sample` (from: the rest of the group, to: NEW)
    /// at `now_ms`; when NEW's signals are worse, the rollout fails: NEW is removed and
    /// OLD, not drained yet, keeps serving.
    pub fn analyse(&mut self, now_ms: u64, sample: Pair) -> Vec<RolloutChange> {
        let (old, new) = self.pairs[self.current];
        let rest = format!("rest of {}", self.group);
        let Some(analysis) = self.analysis.as_mut().filter(|_| self.outcome.is_none()) else {
            return Vec::new();
        };
        match analysis.advance(now_ms, sample, (&rest, &new.to_string())) {
            Next::Quiet => Vec::new(),
            Next::Record(what) => {
                record(&mut self.decisions, now_ms, format!("{new}: {what}"));
                Vec::new()
            }
            Next::RollBack(why) => {
                let what = format!("failed: {new}: {why}; removed {new}, {old} keeps serving");
                self.undo_pair(RolloutOutcome::Failed, what, now_ms)
            }
        }
    }

    fn enter(&mut self, phase: RolloutPhase, now_ms: u64) {
        self.phase = phase;
        self.phase_since_ms = now_ms;
    }

    fn begin_pair(
        &mut self,
        service: &Service,
        now_ms: u64,
    ) -> Result<Vec<RolloutChange>, StateError> {
        let (old, new) = self.pairs[self.current];
        self.target_weight = service
            .backends()
            .find(|(_, b)| b.addr == old)
            .map(|(_, b)| b.weight)
            .ok_or_else(|| {
                StateError::Rollout(format!(
                    "{old} is no longer a backend of group {:?}",
                    self.group
                ))
            })?;
        self.enter(RolloutPhase::Ready, now_ms);
        let what = format!(
            "pair {}/{}: added {new}, waiting for its health checks",
            self.current + 1,
            self.pairs.len()
        );
        record(&mut self.decisions, now_ms, what);
        Ok(vec![RolloutChange::Add {
            addr: new,
            weight: 0,
        }])
    }

    /// NEW's weight along the slow-start ramp; at its end, OLD starts draining.
    fn ramp(&mut self, now_ms: u64) -> Vec<RolloutChange> {
        let (old, new) = self.pairs[self.current];
        let elapsed = now_ms.saturating_sub(self.phase_since_ms);
        let target = u64::from(self.target_weight);
        if elapsed < self.slow_start_ms {
            let weight = (target * elapsed / self.slow_start_ms).max(1);
            let weight = u16::try_from(weight).unwrap_or(self.target_weight);
            return vec![RolloutChange::Weight { addr: new, weight }];
        }
        if let Some(analysis) = self.analysis.as_mut() {
            *analysis = Analysis::new(analysis.plan.clone(), now_ms);
            self.enter(RolloutPhase::Analyse, now_ms);
            let what = format!(
                "{new} at full weight; comparing it with the rest of {} before draining {old}",
                self.group
            );
            record(&mut self.decisions, now_ms, what);
            return vec![RolloutChange::Weight {
                addr: new,
                weight: self.target_weight,
            }];
        }
        self.start_drain(now_ms)
    }

    /// NEW at full weight, OLD draining.
    fn start_drain(&mut self, now_ms: u64) -> Vec<RolloutChange> {
        let (old, new) = self.pairs[self.current];
        self.enter(RolloutPhase::Drain, now_ms);
        record(
            &mut self.decisions,
            now_ms,
            format!("{new} at full weight; draining {old}"),
        );
        vec![
            RolloutChange::Weight {
                addr: new,
                weight: self.target_weight,
            },
            RolloutChange::Drain {
                addr: old,
                timeout_ms: self.drain_timeout_ms,
            },
        ]
    }
}

/// Starts a rollout on `service`; the first NEW is added at once with weight 0.
pub fn start(
    state: &mut State,
    service: &str,
    plan: RolloutPlan,
    now_ms: u64,
) -> Result<(), StateError> {
    let svc = state.service(service)?;
    plan.check(svc, service)?;
    let (rollout, changes) = Rollout::begin(plan, svc, now_ms)?;
    commit(state, service, rollout, changes, now_ms)
}

/// Whether some rollout is still running.
pub fn any_running(state: &State) -> bool {
    state
        .services
        .values()
        .any(|s| s.rollout.as_ref().is_some_and(Rollout::running))
}

/// Moves every running rollout forward. `healthy(service, addr)` tells whether a backend
/// passes its checks; drains end through [`drain::check`].
pub fn step_all(
    state: &mut State,
    now_ms: u64,
    healthy: impl Fn(&str, IpAddr) -> bool,
) -> Result<(), StateError> {
    let running = state.services_where(|s| s.rollout.as_ref().is_some_and(Rollout::running));
    for name in running {
        let svc = state.service(&name)?;
        let mut rollout = svc.rollout.clone().expect("filtered above");
        let changes = rollout.step(svc, now_ms, |addr| healthy(&name, addr))?;
        commit(state, &name, rollout, changes, now_ms)?;
    }
    Ok(())
}

/// The services whose rollout's analysis needs the counters at `now_ms`.
pub fn sampling(state: &State, now_ms: u64) -> Vec<String> {
    state.services_where(|s| s.rollout.as_ref().is_some_and(|r| r.wants_sample(now_ms)))
}

/// Goes on with the analysis of the rollout of `service` given `sample` (from: the rest of
/// the group, to: the NEW under comparison).
pub fn analyse(
    state: &mut State,
    service: &str,
    sample: Pair,
    now_ms: u64,
) -> Result<(), StateError> {
    let Some(mut rollout) = state
        .service(service)?
        .rollout
        .clone()
        .filter(Rollout::running)
    else {
        return Ok(());
    };
    let changes = rollout.analyse(now_ms, sample);
    commit(state, service, rollout, changes, now_ms)
}

/// Stops the running rollout of `service` (see [`Rollout::abort`]).
pub fn abort(state: &mut State, service: &str, now_ms: u64) -> Result<(), StateError> {
    let mut rollout = state
        .service(service)?
        .rollout
        .clone()
        .filter(Rollout::running)
        .ok_or_else(|| StateError::Rollout(format!("service {service:?} runs no rollout")))?;
    let changes = rollout.abort(now_ms);
    commit(state, service, rollout, changes, now_ms)
}

/// Applies the changes a rollout wants, then stores its progress.
fn commit(
    state: &mut State,
    service: &str,
    rollout: Rollout,
    changes: Vec<RolloutChange>,
    now_ms: u64,
) -> Result<(), StateError> {
    for change in changes {
        match change {
            RolloutChange::Add { addr, weight } => {
                state.add_backend(service, addr, &rollout.group, weight)?
            }
            RolloutChange::Weight { addr, weight } => state.set_weight(service, addr, weight)?,
            RolloutChange::Drain { addr, timeout_ms } => {
                drain::start(state, service, addr, timeout_ms, false, now_ms)?
            }
            RolloutChange::Remove { addr } => {
                state.remove_backend(service, addr, rollout.cut, now_ms)?
            }
        }
    }
    state.service_mut(service)?.rollout = Some(rollout);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::tests::{checked_sample, ip, sample};

    fn plan(pairs: &[(&str, &str)]) -> RolloutPlan {
        RolloutPlan {
            group: "blue".into(),
            pairs: pairs.iter().map(|(o, n)| (ip(o), ip(n))).collect(),
            ready_timeout_ms: 1000,
            slow_start_ms: 100,
            drain_timeout_ms: Some(5000),
            cut: false,
            analysis: None,
        }
    }

    fn weight_of(s: &State, addr: &str) -> Option<u16> {
        s.service("web")
            .unwrap()
            .backends()
            .find(|(_, b)| b.addr == ip(addr))
            .map(|(_, b)| b.weight)
    }

    #[test]
    fn the_machine_asks_for_each_phase_in_order() {
        let s = checked_sample();
        let svc = s.service("web").unwrap();
        let (mut r, first) =
            Rollout::begin(plan(&[("198.18.0.101", "198.18.0.111")]), svc, 0).unwrap();
        let (old, new) = (ip("198.18.0.101"), ip("198.18.0.111"));
        assert_eq!(
            first,
            [RolloutChange::Add {
                addr: new,
                weight: 0
            }]
        );
        assert_eq!(r.target_weight, 100);
        assert_eq!(r.step(svc, 10, |_| false).unwrap(), [], "waits for health");
        assert_eq!(
            r.step(svc, 20, |_| true).unwrap(),
            [RolloutChange::Weight {
                addr: new,
                weight: 1
            }],
            "ramp starts at weight 1"
        );
        assert_eq!(
            r.step(svc, 70, |_| true).unwrap(),
            [RolloutChange::Weight {
                addr: new,
                weight: 50
            }]
        );
        assert_eq!(
            r.step(svc, 120, |_| true).unwrap(),
            [
                RolloutChange::Weight {
                    addr: new,
                    weight: 100
                },
                RolloutChange::Drain {
                    addr: old,
                    timeout_ms: Some(5000)
                }
            ]
        );
        assert_eq!(r.phase, RolloutPhase::Drain);
        assert_eq!(
            r.step(svc, 130, |_| true).unwrap(),
            [],
            "OLD not drained yet"
        );
    }

    #[test]
    fn an_analysed_new_backend_is_compared_before_old_drains_and_removed_when_worse() {
        use crate::release::analysis::Sample;
        let s = checked_sample();
        let svc = s.service("web").unwrap();
        let mut p = plan(&[("198.18.0.101", "198.18.0.111")]);
        p.slow_start_ms = 0;
        p.analysis = Some(AnalysisPlan {
            warmup_ms: 0,
            window_ms: 5000,
            min_flows: 10,
            ..AnalysisPlan::default()
        });
        let (old, new) = (ip("198.18.0.101"), ip("198.18.0.111"));
        let (mut r, _) = Rollout::begin(p, svc, 0).unwrap();
        assert_eq!(
            r.step(svc, 10, |_| true).unwrap(),
            [RolloutChange::Weight {
                addr: new,
                weight: 100
            }],
            "healthy: full weight at once (no slow start), no drain yet"
        );
        assert_eq!(r.phase, RolloutPhase::Analyse);
        assert_eq!(
            r.step(svc, 30, |_| true).unwrap(),
            [],
            "no window passed yet"
        );
        let counters = |flows, failures| Pair {
            from: Sample {
                new_flows: flows,
                ..Sample::default()
            },
            to: Sample {
                new_flows: flows,
                handshake_failures: failures,
                ..Sample::default()
            },
        };
        let mut passing = r.clone();
        assert!(passing.wants_sample(20));
        assert_eq!(passing.analyse(20, counters(0, 0)), []);
        assert_eq!(passing.analyse(5020, counters(100, 0)), []);
        assert_eq!(
            passing.step(svc, 5030, |_| true).unwrap(),
            [
                RolloutChange::Weight {
                    addr: new,
                    weight: 100
                },
                RolloutChange::Drain {
                    addr: old,
                    timeout_ms: Some(5000)
                }
            ]
        );
        assert_eq!(r.analyse(20, counters(0, 0)), []);
        assert_eq!(
            r.analyse(5020, counters(100, 30)),
            [
                RolloutChange::Weight {
                    addr: old,
                    weight: 100
                },
                RolloutChange::Remove { addr: new }
            ]
        );
        assert_eq!(r.outcome, Some(RolloutOutcome::Failed));
        assert_eq!(
            r.decisions.last().unwrap().what,
            "failed: 198.18.0.111: analysis: handshake-failures 30.00% > limit 0.50% (rest of \
             blue 0.00%); 198.18.0.111 100 new flows, rest of blue 100; removed 198.18.0.111, \
             198.18.0.101 keeps serving"
        );
    }

    #[test]
    fn a_rollout_analysis_is_refused_with_gates() {
        let mut s = checked_sample();
        let mut p = plan(&[("198.18.0.101", "198.18.0.111")]);
        p.analysis = Some(AnalysisPlan {
            webhooks: vec![crate::release::analysis::Webhook {
                url: "http://198.18.0.1/".into(),
                before: Default::default(),
            }],
            ..AnalysisPlan::default()
        });
        let before = s.clone();
        let err = start(&mut s, "web", p, 0).unwrap_err();
        assert_eq!(
            err.to_string(),
            "a rollout's analysis compares signals only: Prometheus and webhook gates are for canaries"
        );
        assert_eq!(s, before);
    }

    #[test]
    fn a_rollout_analysis_of_a_reply_signal_needs_a_nat_service() {
        let mut s = checked_sample();
        let mut p = plan(&[("198.18.0.101", "198.18.0.111")]);
        p.analysis = Some(AnalysisPlan {
            checks: vec![crate::release::analysis::Check {
                signal: crate::release::analysis::Signal::BackendResets,
                max_percent: Some(1.0),
                max_ms: None,
                max_factor: None,
            }],
            ..AnalysisPlan::default()
        });
        start(&mut s, "web", p, 0).unwrap();
        assert_eq!(
            s.validate().unwrap_err().to_string(),
            "the analysis of service \"web\" checks backend-resets, which is counted from the \
             backends' replies: only a nat or fullnat service's pass the LB (this one forwards by dsr)"
        );
    }

    #[test]
    fn rollout_replaces_pairs_in_order_surge_one_unavailable_zero() {
        let mut s = checked_sample();
        let pairs = [
            ("198.18.0.101", "198.18.0.111"),
            ("198.18.0.102", "198.18.0.112"),
        ];
        start(&mut s, "web", plan(&pairs), 0).unwrap();
        assert_eq!(
            weight_of(&s, "198.18.0.111"),
            Some(0),
            "NEW starts without flows"
        );
        let all_healthy = |_: &str, _: IpAddr| true;
        step_all(&mut s, 10, all_healthy).unwrap();
        step_all(&mut s, 60, all_healthy).unwrap();
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
        step_all(&mut s, 120, all_healthy).unwrap();
        assert_eq!(weight_of(&s, "198.18.0.111"), Some(100));
        assert_eq!(weight_of(&s, "198.18.0.101"), Some(0), "OLD drains");
        step_all(&mut s, 200, all_healthy).unwrap();
        assert!(
            weight_of(&s, "198.18.0.101").is_some(),
            "OLD stays until drained"
        );
        drain::check(&mut s, 300, |_, _| 0);
        step_all(&mut s, 300, all_healthy).unwrap();
        assert_eq!(
            weight_of(&s, "198.18.0.101"),
            None,
            "OLD removed once drained"
        );
        assert_eq!(weight_of(&s, "198.18.0.112"), Some(0), "next NEW added");
        for t in [310, 420, 430] {
            step_all(&mut s, t, all_healthy).unwrap();
        }
        drain::check(&mut s, 500, |_, _| 7);
        step_all(&mut s, 500, all_healthy).unwrap();
        assert!(
            weight_of(&s, "198.18.0.102").is_some(),
            "OLD with flows is kept"
        );
        drain::check(&mut s, 5430, |_, _| 7);
        step_all(&mut s, 5430, all_healthy).unwrap();
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
        start(&mut s, "web", plan(&[("198.18.0.101", "198.18.0.111")]), 0).unwrap();
        step_all(&mut s, 999, |_, _| false).unwrap();
        assert!(weight_of(&s, "198.18.0.111").is_some());
        step_all(&mut s, 1000, |_, _| false).unwrap();
        assert_eq!(weight_of(&s, "198.18.0.111"), None, "unhealthy NEW removed");
        assert_eq!(weight_of(&s, "198.18.0.101"), Some(100), "OLD untouched");
        let rollout = s.service("web").unwrap().rollout.clone().unwrap();
        assert_eq!(rollout.outcome, Some(RolloutOutcome::Failed));

        start(
            &mut s,
            "web",
            plan(&[("198.18.0.101", "198.18.0.111")]),
            2000,
        )
        .unwrap();
        step_all(&mut s, 2010, |_, _| true).unwrap();
        step_all(&mut s, 2200, |_, _| true).unwrap();
        assert_eq!(weight_of(&s, "198.18.0.101"), Some(0), "draining");
        abort(&mut s, "web", 2300).unwrap();
        assert_eq!(weight_of(&s, "198.18.0.101"), Some(100), "OLD serves again");
        assert_eq!(weight_of(&s, "198.18.0.111"), None);
        let err = abort(&mut s, "web", 2400).unwrap_err();
        assert_eq!(err.to_string(), "service \"web\" runs no rollout");
    }

    #[test]
    fn malformed_rollouts_are_refused() {
        let s = checked_sample();
        let cases: [(&[(&str, &str)], &str); 6] = [
            (&[], "give at least one OLD=NEW pair"),
            (
                &[("198.18.0.199", "198.18.0.111")],
                "198.18.0.199 is not a backend of group \"blue\"",
            ),
            (
                &[("198.18.0.103", "198.18.0.111")],
                "198.18.0.103 is not a backend of group \"blue\"",
            ),
            (
                &[("198.18.0.101", "198.18.0.102")],
                "198.18.0.102 is already a backend of service \"web\"",
            ),
            (
                &[
                    ("198.18.0.101", "198.18.0.111"),
                    ("198.18.0.102", "198.18.0.111"),
                ],
                "198.18.0.102=198.18.0.111 repeats an address",
            ),
            (
                &[("198.18.0.101", "198.18.0.101")],
                "198.18.0.101 is already a backend of service \"web\"",
            ),
        ];
        for (pairs, why) in cases {
            let mut copy = s.clone();
            let err = start(&mut copy, "web", plan(pairs), 0).unwrap_err();
            assert_eq!(err.to_string(), why, "{pairs:?}");
            assert_eq!(copy, s);
        }
        let mut unchecked = sample();
        let err = start(
            &mut unchecked,
            "web",
            plan(&[("198.18.0.101", "198.18.0.111")]),
            0,
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "a rollout waits for health checks: service set web --health tcp"
        );
    }
}
