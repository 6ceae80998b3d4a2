//! Analysis-gated canaries: after each step and a warm-up, the new group's client-side
//! signals are compared with the old group's over windows of fixed length. A window with
//! too few new flows has no verdict (no data is never success): the step holds, and after
//! a configured number of such windows in a row the canary rolls back. A step is taken only
//! once its interval has passed and a window passed; optional external gates (Prometheus
//! queries at the end of a window, webhooks before a step) are asked off the controller's
//! lock and their answers come back with the ticket they were asked under.
//!
//! Everything here is pure: the controller reads the counters, the executor asks the
//! gates, and the canary records what the analysis decided with the values it used.

pub mod file;
mod judge;
mod plan;
mod sample;

pub use judge::{judge, GateResult, Judgement, Reading, Verdict};
pub use plan::{
    AnalysisPlan, Check, Phase, PrometheusGate, Signal, Webhook, MIN_WARMUP_MS, MIN_WINDOW_MS,
};
pub use sample::{Pair, Sample};

use serde::{Deserialize, Serialize};

/// An analysis in progress, kept with its canary (so a restarted daemon goes on with it).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Analysis {
    /// What it checks.
    pub plan: AnalysisPlan,
    /// Where it is in the current step.
    pub stage: Stage,
    /// Windows in a row without a verdict at this step.
    pub inconclusive: u32,
    /// Whether a window passed since the current step began.
    pub passed: bool,
    /// The webhooks' answer for the next step.
    pub approval: Approval,
    /// The last ticket handed out to a question for external gates.
    pub tickets: u64,
    /// The latest window's verdict and values.
    pub last: Option<Judgement>,
}

/// Where an analysis is in the current step.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "stage", rename_all = "lowercase")]
pub enum Stage {
    /// The step is new: no window until `until_ms`.
    Warming {
        /// End of the warm-up (Unix milliseconds).
        until_ms: u64,
    },
    /// A window runs.
    Measuring {
        /// When it began (Unix milliseconds).
        since_ms: u64,
        /// The counters when it began.
        base: Pair,
    },
    /// A window passed its checks and waits for the Prometheus gates' answer.
    Asking {
        /// The question's ticket.
        ticket: u64,
        /// The judgement so far.
        judgement: Box<Judgement>,
        /// The counters at the window's end (the next window's base).
        base: Pair,
    },
}

/// The webhooks' answer for the next step.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "approval", rename_all = "lowercase")]
pub enum Approval {
    /// Not asked yet.
    #[default]
    None,
    /// Asked under `ticket`.
    Asking {
        /// The question's ticket.
        ticket: u64,
    },
    /// Every webhook said go.
    Given,
}

/// What the analysis wants done.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Next {
    /// Nothing to record.
    Quiet,
    /// Record this decision.
    Record(String),
    /// Roll the canary back for this reason.
    RollBack(String),
}

/// A question for external gates, asked off the controller's lock.
#[derive(Clone, Debug, PartialEq)]
pub struct Question {
    /// The service whose canary asks.
    pub service: String,
    /// The ticket the answer must carry.
    pub ticket: u64,
    /// The gates to ask.
    pub asks: Vec<Ask>,
}

/// One gate to ask.
#[derive(Clone, Debug, PartialEq)]
pub enum Ask {
    /// A Prometheus query and its bounds.
    Prometheus(PrometheusGate),
    /// A webhook and the JSON body to POST.
    Webhook {
        /// Its URL.
        url: String,
        /// The rollout's context.
        body: serde_json::Value,
    },
}

impl Analysis {
    /// An analysis of a step that begins at `now_ms`.
    pub fn new(plan: AnalysisPlan, now_ms: u64) -> Self {
        let until_ms = now_ms.saturating_add(plan.warmup_ms);
        Self {
            plan,
            stage: Stage::Warming { until_ms },
            inconclusive: 0,
            passed: false,
            approval: Approval::None,
            tickets: 0,
            last: None,
        }
    }

    /// Starts the window in progress again at `now_ms`, counting none of it (a window that
    /// waits for its gates too): counters read on one host are not another's, so a new
    /// leader of a fleet does not end a window its predecessor began. Whether it changed
    /// anything (a warm-up goes on).
    pub fn remeasure(&mut self, now_ms: u64) -> bool {
        if matches!(self.stage, Stage::Warming { .. }) {
            return false;
        }
        self.stage = Stage::Warming { until_ms: now_ms };
        true
    }

    /// Whether it needs the counters at `now_ms` (a warm-up or a window ends).
    pub fn wants_sample(&self, now_ms: u64) -> bool {
        match &self.stage {
            Stage::Warming { until_ms } => now_ms >= *until_ms,
            Stage::Measuring { since_ms, .. } => {
                now_ms >= since_ms.saturating_add(self.plan.window_ms)
            }
            Stage::Asking { .. } => false,
        }
    }

    /// Goes on with the counters `sample` read at `now_ms` for groups `names` (old, new).
    pub fn advance(&mut self, now_ms: u64, sample: Pair, names: (&str, &str)) -> Next {
        if !self.wants_sample(now_ms) {
            return Next::Quiet;
        }
        let Stage::Measuring { base, .. } = &self.stage else {
            self.stage = Stage::Measuring {
                since_ms: now_ms,
                base: sample,
            };
            return Next::Quiet;
        };
        let judgement = match sample.since(base) {
            Some(counted) => judge(&self.plan, names, counted, now_ms),
            None => Judgement {
                verdict: Verdict::Inconclusive,
                ended_at_ms: now_ms,
                counted: Pair::default(),
                readings: Vec::new(),
                gates: Vec::new(),
                why: "counters went back (a daemon restart or replaced backends)".into(),
            },
        };
        if judgement.verdict == Verdict::Pass && !self.plan.prometheus.is_empty() {
            self.tickets += 1;
            self.stage = Stage::Asking {
                ticket: self.tickets,
                judgement: Box::new(judgement),
                base: sample,
            };
            return Next::Quiet;
        }
        self.conclude(judgement, sample)
    }

    /// The window's verdict with the Prometheus gates' answers under `ticket`; none when
    /// the question is stale.
    pub fn window_answered(&mut self, ticket: u64, gates: Vec<GateResult>) -> Option<Next> {
        let Stage::Asking {
            ticket: asked,
            judgement,
            base,
        } = &self.stage
        else {
            return None;
        };
        if *asked != ticket {
            return None;
        }
        let (judgement, base) = (judgement.as_ref().clone().with_gates(gates), *base);
        Some(self.conclude(judgement, base))
    }

    /// Records a window's verdict; the next window starts where it ended.
    fn conclude(&mut self, judgement: Judgement, base: Pair) -> Next {
        self.stage = Stage::Measuring {
            since_ms: judgement.ended_at_ms,
            base,
        };
        let why = judgement.why.clone();
        let verdict = judgement.verdict;
        self.last = Some(judgement);
        match verdict {
            Verdict::Pass => {
                // Later passes of the same step only update `last`: a long step does not
                // grow the decisions by one per window.
                let first = !self.passed;
                self.passed = true;
                self.inconclusive = 0;
                match first {
                    true => Next::Record(format!("analysis: window passed: {why}")),
                    false => Next::Quiet,
                }
            }
            Verdict::Fail => Next::RollBack(format!("analysis: {why}")),
            Verdict::Inconclusive => {
                self.inconclusive += 1;
                let (n, max) = (self.inconclusive, self.plan.max_inconclusive);
                match n >= max {
                    true => Next::RollBack(format!(
                        "analysis: {n} windows in a row without a verdict: {why}"
                    )),
                    false => Next::Record(format!(
                        "analysis: holding, window without a verdict ({n} of {max}): {why}"
                    )),
                }
            }
        }
    }

    /// Whether the next step (which `completes` the canary or not) may be taken as far as
    /// the analysis goes: a window passed in this step, and the webhooks that gate it (if
    /// any) said go.
    pub fn allows_step(&self, completes: bool) -> bool {
        self.passed && (self.approval == Approval::Given || self.hooks(completes).next().is_none())
    }

    /// Whether the next step waits for the webhooks to be asked (not asked yet).
    pub fn needs_approval(&self, completes: bool) -> bool {
        self.passed && self.approval == Approval::None && self.hooks(completes).next().is_some()
    }

    /// Asks the webhooks that gate the next step (which `completes` the canary or not):
    /// the question's ticket.
    pub fn ask_approval(&mut self) -> u64 {
        self.tickets += 1;
        self.approval = Approval::Asking {
            ticket: self.tickets,
        };
        self.tickets
    }

    /// The webhooks' answers under `ticket`: go when every one answered 2xx; none when the
    /// question is stale.
    pub fn approval_answered(&mut self, ticket: u64, answers: &[GateResult]) -> Option<Next> {
        if self.approval != (Approval::Asking { ticket }) {
            return None;
        }
        let refused: Vec<String> = answers
            .iter()
            .filter(|a| a.verdict != Verdict::Pass)
            .map(|a| format!("{}: {}", a.gate, a.detail))
            .collect();
        if !refused.is_empty() {
            return Some(Next::RollBack(format!(
                "analysis: webhook said no: {}",
                refused.join("; ")
            )));
        }
        self.approval = Approval::Given;
        let asked: Vec<&str> = answers.iter().map(|a| a.gate.as_str()).collect();
        Some(Next::Record(format!(
            "analysis: go from {}",
            asked.join(", ")
        )))
    }

    /// Whether a question under `ticket` waits for its answer.
    pub fn asks(&self, ticket: u64) -> bool {
        matches!(self.stage, Stage::Asking { ticket: t, .. } if t == ticket)
            || self.approval == (Approval::Asking { ticket })
    }

    /// A step was taken at `now_ms`: a new warm-up, no window passed yet, no approval.
    pub fn stepped(&mut self, now_ms: u64) {
        self.stage = Stage::Warming {
            until_ms: now_ms.saturating_add(self.plan.warmup_ms),
        };
        self.passed = false;
        self.inconclusive = 0;
        self.approval = Approval::None;
    }

    /// The questions still open: the Prometheus gates of a window, the webhooks of the
    /// next step (with `body`, the rollout's context, built by the caller for a step that
    /// `completes` the canary or not).
    pub fn questions(
        &self,
        service: &str,
        completes: bool,
        body: &serde_json::Value,
    ) -> Vec<Question> {
        let mut open = Vec::new();
        if let Stage::Asking { ticket, .. } = &self.stage {
            open.push(Question {
                service: service.to_string(),
                ticket: *ticket,
                asks: self
                    .plan
                    .prometheus
                    .iter()
                    .cloned()
                    .map(Ask::Prometheus)
                    .collect(),
            });
        }
        if let Approval::Asking { ticket } = self.approval {
            open.push(Question {
                service: service.to_string(),
                ticket,
                asks: self
                    .hooks(completes)
                    .map(|w| Ask::Webhook {
                        url: w.url.clone(),
                        body: body.clone(),
                    })
                    .collect(),
            });
        }
        open
    }

    fn hooks(&self, completes: bool) -> impl Iterator<Item = &Webhook> {
        self.plan
            .webhooks
            .iter()
            .filter(move |w| w.before.gates(completes))
    }
}

#[cfg(test)]
mod tests;
