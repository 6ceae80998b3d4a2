//! Judging one window: the new group's signals against the limits of the plan, given the
//! old group's in the same window, with every value kept for `status` and the history.

use serde::{Deserialize, Serialize};

use super::{
    plan::{AnalysisPlan, Check, Signal, LONGEST_HANDSHAKE_MS},
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
    /// Not enough data to say (too few new flows, no handshakes to time, a gate without an
    /// answer).
    Inconclusive,
}

/// One signal of the new group against its limit, in the signal's unit: percent of new
/// flows, or milliseconds for a time ([`Signal::timed`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Reading {
    /// The signal.
    pub signal: Signal,
    /// The new group's value; none: nothing to measure (no handshakes timed).
    #[serde(alias = "percent")]
    pub value: Option<f64>,
    /// The old group's, when it had the minimum sample in the window (and for a time,
    /// handshakes timed).
    #[serde(alias = "baseline_percent")]
    pub baseline: Option<f64>,
    /// The limit applied; none: no limit can be set (a relative limit without the old
    /// group's value, where the absolute one, if any, does not already pass the value).
    #[serde(alias = "limit_percent")]
    pub limit: Option<f64>,
}

impl Reading {
    /// The check's verdict: no value or no limit leaves it without one.
    pub fn verdict(&self) -> Verdict {
        match (self.value, self.limit) {
            (Some(value), Some(limit)) if value > limit => Verdict::Fail,
            (Some(_), Some(_)) => Verdict::Pass,
            _ => Verdict::Inconclusive,
        }
    }
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
        .map(|check| read(check, &counted, baseline_counts))
        .collect();
    let with = |verdict| readings.iter().filter(move |r| r.verdict() == verdict);
    let (verdict, listed): (_, Vec<&Reading>) = if with(Verdict::Fail).next().is_some() {
        (Verdict::Fail, with(Verdict::Fail).collect())
    } else if with(Verdict::Inconclusive).next().is_some() {
        (Verdict::Inconclusive, with(Verdict::Inconclusive).collect())
    } else {
        (Verdict::Pass, readings.iter().collect())
    };
    let names = (from, to);
    let values: Vec<String> = listed.iter().map(|r| describe(r, names)).collect();
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

/// The new group's `check` in a window that `counted`, the old group's value counting when
/// it had the minimum sample (`baseline_counts`). The limit is the larger of the absolute
/// one and the factor times the old group's value; without the old group's value the
/// absolute limit alone — for a time only when it passes the value, since the relative
/// limit might be larger (a time check needs no absolute limit: with only a factor and no
/// old value there is no limit).
fn read(check: &Check, counted: &Pair, baseline_counts: bool) -> Reading {
    let signal = check.signal;
    let value = counted.to.value(signal);
    let baseline = counted.from.value(signal).filter(|_| baseline_counts);
    let absolute = check.max_percent.or(check.max_ms);
    let limit = match (check.max_factor, baseline) {
        (Some(factor), Some(base)) => Some(absolute.unwrap_or(0.0).max(factor * base)),
        (Some(_), None) if signal.timed() => {
            absolute.filter(|limit| value.is_some_and(|v| v <= *limit))
        }
        _ => absolute,
    };
    Reading {
        signal,
        value,
        baseline,
        limit,
    }
}

/// "resets 4.00% > limit 1.00% (blue 0.50%)", "handshake-time 1 s or more > limit 0.45
/// ms (blue 0.09 ms)", "handshake-time: green no handshakes timed".
fn describe(r: &Reading, (from, to): (&str, &str)) -> String {
    let name = r.signal.name();
    let shown = |v: f64| match r.signal.timed() {
        true if v >= LONGEST_HANDSHAKE_MS => "1 s or more".to_string(),
        true => format!("{v:.2} ms"),
        false => format!("{v:.2}%"),
    };
    let baseline = match r.baseline {
        Some(b) => format!("{from} {}", shown(b)),
        None if r.signal.timed() => format!("{from} no handshakes timed or too few flows"),
        None => format!("{from} too few flows"),
    };
    let Some(value) = r.value else {
        return format!("{name}: {to} no handshakes timed");
    };
    let Some(limit) = r.limit else {
        return format!("{name} {}, no limit ({baseline})", shown(value));
    };
    let relation = match value > limit {
        true => ">",
        false => "<=",
    };
    format!(
        "{name} {} {relation} limit {} ({baseline})",
        shown(value),
        shown(limit)
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
                max_percent: Some(0.5),
                max_ms: None,
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
        assert_eq!(pass.readings[0].limit, Some(2.0));
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
            (fail.verdict, fail.readings[0].limit),
            (Verdict::Fail, Some(0.5))
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
        assert_eq!(fail.readings[0].baseline, None);
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

    /// A plan checking the handshake time: at most `max_ms` and/or `max_factor` × the old
    /// group's, and backend resets at most 1%.
    fn timed_plan(max_ms: Option<f64>, max_factor: Option<f64>) -> AnalysisPlan {
        AnalysisPlan {
            min_flows: 20,
            checks: vec![
                Check {
                    signal: Signal::HandshakeTime,
                    max_percent: None,
                    max_ms,
                    max_factor,
                },
                Check {
                    signal: Signal::BackendResets,
                    max_percent: Some(1.0),
                    max_ms: None,
                    max_factor: None,
                },
            ],
            ..AnalysisPlan::default()
        }
    }

    /// A group of `new_flows` with `fast` handshakes within 100 µs and `slow` above 1 s.
    fn timed(new_flows: u64, fast: u64, slow: u64) -> Sample {
        let mut sample = Sample {
            new_flows,
            ..Sample::default()
        };
        sample.handshake_buckets[0] = fast;
        sample.handshake_buckets[12] = slow;
        sample
    }

    #[test]
    fn a_slow_handshake_time_fails_against_the_old_groups_times_the_factor() {
        let names = ("blue", "green");
        let plan = timed_plan(None, Some(5.0));
        let slow = Pair {
            from: timed(100, 100, 0),
            to: timed(40, 10, 30),
        };
        let j = judge(&plan, names, slow, 7);
        assert_eq!(j.verdict, Verdict::Fail, "{}", j.why);
        let time = &j.readings[0];
        assert_eq!(time.value, Some(LONGEST_HANDSHAKE_MS));
        assert!((time.limit.unwrap() - 0.45).abs() < 1e-9, "{time:?}");
        assert_eq!(
            j.why,
            "handshake-time 1 s or more > limit 0.45 ms (blue 0.09 ms); green 40 new flows, \
             blue 100"
        );
        // As fast as the old group: passes, and the window lists every reading.
        let fast = Pair {
            from: timed(100, 100, 0),
            to: timed(40, 40, 0),
        };
        let j = judge(&plan, names, fast, 7);
        assert_eq!(j.verdict, Verdict::Pass, "{}", j.why);
        assert_eq!(
            j.why,
            "handshake-time 0.09 ms <= limit 0.45 ms (blue 0.09 ms); backend-resets 0.00% <= \
             limit 1.00% (blue 0.00%); green 40 new flows, blue 100"
        );
        // Backend resets are a ratio to new flows like the client's.
        let resets = Pair {
            from: timed(100, 100, 0),
            to: Sample {
                backend_resets: 2,
                ..timed(40, 40, 0)
            },
        };
        let j = judge(&plan, names, resets, 7);
        assert_eq!(j.verdict, Verdict::Fail, "{}", j.why);
        assert!(
            j.why
                .starts_with("backend-resets 5.00% > limit 1.00% (blue 0.00%)"),
            "{}",
            j.why
        );
    }

    #[test]
    fn windows_without_handshakes_leave_a_time_check_without_a_verdict() {
        let names = ("blue", "green");
        let plan = timed_plan(None, Some(5.0));
        // The new group timed none: no time, never 0 ms.
        let untimed = Pair {
            from: timed(100, 100, 0),
            to: timed(40, 0, 0),
        };
        let j = judge(&plan, names, untimed, 7);
        assert_eq!(j.verdict, Verdict::Inconclusive, "{}", j.why);
        assert_eq!(
            j.why,
            "handshake-time: green no handshakes timed; green 40 new flows, blue 100"
        );
        // The old group timed none (or had too few flows): a factor alone sets no limit.
        for from in [timed(100, 0, 0), timed(10, 10, 0)] {
            let j = judge(
                &plan,
                names,
                Pair {
                    from,
                    to: timed(40, 40, 0),
                },
                7,
            );
            assert_eq!(j.verdict, Verdict::Inconclusive, "{}", j.why);
            assert!(
                j.why.starts_with("handshake-time 0.09 ms, no limit"),
                "{}",
                j.why
            );
        }
        // With an absolute limit too, a time within it passes without the old group, and a
        // time beyond it still needs the old group's (the relative limit may be larger).
        let plan = timed_plan(Some(50.0), Some(5.0));
        let pass = Pair {
            from: timed(100, 0, 0),
            to: timed(40, 40, 0),
        };
        assert_eq!(judge(&plan, names, pass, 7).verdict, Verdict::Pass);
        let unsure = Pair {
            from: timed(100, 0, 0),
            to: timed(40, 0, 40),
        };
        assert_eq!(
            judge(&plan, names, unsure, 7).verdict,
            Verdict::Inconclusive
        );
        // An absolute limit alone needs no old group.
        let plan = timed_plan(Some(50.0), None);
        let j = judge(&plan, names, unsure, 7);
        assert_eq!(j.verdict, Verdict::Fail, "{}", j.why);
        assert!(
            j.why.starts_with(
                "handshake-time 1 s or more > limit 50.00 ms (blue no handshakes timed or too \
                 few flows)"
            ),
            "{}",
            j.why
        );
        // A failing check fails the window even when another has no verdict.
        let both = Pair {
            from: timed(100, 0, 0),
            to: Sample {
                backend_resets: 4,
                ..timed(40, 0, 0)
            },
        };
        let j = judge(&timed_plan(None, Some(5.0)), names, both, 7);
        assert_eq!(j.verdict, Verdict::Fail, "{}", j.why);
    }

    #[test]
    fn readings_of_older_daemons_are_read() {
        let old =
            r#"{"signal":"resets","percent":4.0,"baseline_percent":null,"limit_percent":1.0}"#;
        let reading: Reading = serde_json::from_str(old).unwrap();
        assert_eq!(
            (reading.value, reading.baseline, reading.limit),
            (Some(4.0), None, Some(1.0))
        );
        assert_eq!(reading.verdict(), Verdict::Fail);
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
