//! Judging one window: the new group's signals against the limits of the plan, given the
//! old group's in the same window, with every value kept for `status` and the history.

use serde::{Deserialize, Serialize};

use super::{
    plan::{AnalysisPlan, Signal},
    sample::Pair,
};

/// What one window (or one gate) says.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// Within every limit.
    Pass,
    /// Beyond a limit: roll back.
    Fail,
    /// Not enough data to say (too few new flows, a gate without an answer).
    Inconclusive,
}

/// One signal of the new group against its limit.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Reading {
    /// The signal.
    pub signal: Signal,
    /// The new group's count per new flow, percent.
    pub percent: f64,
    /// The old group's, when it had the minimum sample in the window.
    pub baseline_percent: Option<f64>,
    /// The limit applied, percent.
    pub limit_percent: f64,
}

/// What an external gate (a Prometheus query, a webhook) answered.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GateResult {
    /// Which gate ("prometheus QUERY", "webhook URL").
    pub gate: String,
    /// Its verdict.
    pub verdict: Verdict,
    /// The value or the answer it was based on.
    pub detail: String,
}

/// The verdict on one window and the values it was based on.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Judgement {
    /// The verdict.
    pub verdict: Verdict,
    /// When the window ended (Unix milliseconds).
    pub ended_at_ms: u64,
    /// What both groups counted in the window.
    pub counted: Pair,
    /// The new group's signals against their limits (none without the minimum sample).
    pub readings: Vec<Reading>,
    /// The external gates asked at the end of the window.
    #[serde(default)]
    pub gates: Vec<GateResult>,
    /// The verdict in one line, with the values.
    pub why: String,
}

/// Judges a window of `plan` that ended at `ended_at_ms`, in which groups `from` (old) and
/// `to` (new) counted `counted`.
pub fn judge(
    plan: &AnalysisPlan,
    (from, to): (&str, &str),
    counted: Pair,
    ended_at_ms: u64,
) -> Judgement {
    let flows = format!(
        "{to} {} new flows, {from} {}",
        counted.to.new_flows, counted.from.new_flows
    );
    if counted.to.new_flows < plan.min_flows {
        return Judgement {
            verdict: Verdict::Inconclusive,
            ended_at_ms,
            counted,
            readings: Vec::new(),
            gates: Vec::new(),
            why: format!("{flows}: fewer than the minimum of {}", plan.min_flows),
        };
    }
    let baseline_counts = counted.from.new_flows >= plan.min_flows;
    let readings: Vec<Reading> = plan
        .checks
        .iter()
        .map(|check| {
            let baseline = counted
                .from
                .percent(check.signal)
                .filter(|_| baseline_counts);
            let relative = check
                .max_factor
                .zip(baseline)
                .map_or(0.0, |(factor, base)| factor * base);
            Reading {
                signal: check.signal,
                percent: counted.to.percent(check.signal).unwrap_or(0.0),
                baseline_percent: baseline,
                limit_percent: check.max_percent.max(relative),
            }
        })
        .collect();
    let over: Vec<&Reading> = readings
        .iter()
        .filter(|r| r.percent > r.limit_percent)
        .collect();
    let (verdict, listed) = match over.is_empty() {
        true => (Verdict::Pass, readings.iter().collect::<Vec<_>>()),
        false => (Verdict::Fail, over),
    };
    let values: Vec<String> = listed.iter().map(|r| describe(r, from)).collect();
    let why = match values.is_empty() {
        true => flows,
        false => format!("{}; {flows}", values.join("; ")),
    };
    Judgement {
        verdict,
        ended_at_ms,
        counted,
        readings,
        gates: Vec::new(),
        why,
    }
}

/// "resets 4.00% > limit 1.00% (blue 0.50%)".
fn describe(r: &Reading, from: &str) -> String {
    let relation = match r.percent > r.limit_percent {
        true => ">",
        false => "<=",
    };
    let baseline = match r.baseline_percent {
        Some(b) => format!("{from} {b:.2}%"),
        None => format!("{from} too few flows"),
    };
    format!(
        "{} {:.2}% {relation} limit {:.2}% ({baseline})",
        r.signal.name(),
        r.percent,
        r.limit_percent
    )
}

impl Judgement {
    /// Joins the external gates' answers: a failing gate fails the window, a gate without
    /// an answer leaves it without a verdict.
    pub fn with_gates(mut self, gates: Vec<GateResult>) -> Self {
        let worst = |v| gates.iter().filter(move |g| g.verdict == v);
        let failing: Vec<String> = worst(Verdict::Fail)
            .chain(worst(Verdict::Inconclusive))
            .map(|g| format!("{}: {}", g.gate, g.detail))
            .collect();
        if worst(Verdict::Fail).next().is_some() {
            self.verdict = Verdict::Fail;
        } else if worst(Verdict::Inconclusive).next().is_some() {
            self.verdict = Verdict::Inconclusive;
        }
        if !failing.is_empty() {
            self.why = format!("{}; {}", failing.join("; "), self.why);
        }
        self.gates = gates;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::release::analysis::{plan::Check, sample::Sample};

    fn plan() -> AnalysisPlan {
        AnalysisPlan {
            min_flows: 100,
            checks: vec![Check {
                signal: Signal::HandshakeFailures,
                max_percent: 0.5,
                max_factor: Some(2.0),
            }],
            ..AnalysisPlan::default()
        }
    }

    fn group(new_flows: u64, handshake_failures: u64) -> Sample {
        Sample {
            new_flows,
            handshake_failures,
            ..Sample::default()
        }
    }

    #[test]
    fn the_limit_is_the_larger_of_the_floor_and_the_factor() {
        let names = ("blue", "green");
        // Baseline 1% → limit 2%: 1.5% passes, 3% fails.
        let pass = judge(
            &plan(),
            names,
            Pair {
                from: group(1000, 10),
                to: group(200, 3),
            },
            7,
        );
        assert_eq!(pass.verdict, Verdict::Pass, "{}", pass.why);
        assert_eq!(pass.readings[0].limit_percent, 2.0);
        assert_eq!(
            pass.why,
            "handshake-failures 1.50% <= limit 2.00% (blue 1.00%); green 200 new flows, blue 1000"
        );
        let fail = judge(
            &plan(),
            names,
            Pair {
                from: group(1000, 10),
                to: group(200, 6),
            },
            7,
        );
        assert_eq!(fail.verdict, Verdict::Fail);
        assert_eq!(
            fail.why,
            "handshake-failures 3.00% > limit 2.00% (blue 1.00%); green 200 new flows, blue 1000"
        );
        // A clean baseline leaves the floor: 0.5%.
        let fail = judge(
            &plan(),
            names,
            Pair {
                from: group(1000, 0),
                to: group(200, 2),
            },
            7,
        );
        assert_eq!(
            (fail.verdict, fail.readings[0].limit_percent),
            (Verdict::Fail, 0.5)
        );
        // A baseline below the minimum sample does not count: the floor alone.
        let fail = judge(
            &plan(),
            names,
            Pair {
                from: group(50, 25),
                to: group(200, 2),
            },
            7,
        );
        assert_eq!(fail.verdict, Verdict::Fail);
        assert_eq!(fail.readings[0].baseline_percent, None);
        assert!(fail.why.contains("(blue too few flows)"), "{}", fail.why);
    }

    #[test]
    fn too_few_flows_is_no_verdict_never_a_pass() {
        let j = judge(
            &plan(),
            ("blue", "green"),
            Pair {
                from: group(1000, 0),
                to: group(99, 0),
            },
            7,
        );
        assert_eq!(j.verdict, Verdict::Inconclusive);
        assert!(j.readings.is_empty());
        assert_eq!(
            j.why,
            "green 99 new flows, blue 1000: fewer than the minimum of 100"
        );
    }

    #[test]
    fn gates_can_only_make_a_window_worse() {
        let pass = judge(
            &plan(),
            ("blue", "green"),
            Pair {
                from: group(1000, 0),
                to: group(200, 0),
            },
            7,
        );
        let gate = |verdict, detail: &str| GateResult {
            gate: "prometheus q".into(),
            verdict,
            detail: detail.into(),
        };
        let j = pass.clone().with_gates(vec![gate(Verdict::Pass, "0.1")]);
        assert_eq!(j.verdict, Verdict::Pass);
        let j = pass
            .clone()
            .with_gates(vec![gate(Verdict::Inconclusive, "empty result")]);
        assert_eq!(j.verdict, Verdict::Inconclusive);
        assert!(
            j.why.starts_with("prometheus q: empty result; "),
            "{}",
            j.why
        );
        let j = pass.with_gates(vec![
            gate(Verdict::Inconclusive, "no answer"),
            gate(Verdict::Fail, "0.9 > max 0.5"),
        ]);
        assert_eq!(j.verdict, Verdict::Fail);
        assert!(j
            .why
            .starts_with("prometheus q: 0.9 > max 0.5; prometheus q: no answer"));
    }
}
