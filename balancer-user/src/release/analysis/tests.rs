//! The analysis machine step by step: warm-up, windows, verdicts, held steps, the gates'
//! questions and stale answers.

use super::*;

const NAMES: (&str, &str) = ("blue", "green");

fn plan() -> AnalysisPlan {
    AnalysisPlan {
        warmup_ms: 1000,
        window_ms: 10_000,
        min_flows: 100,
        max_inconclusive: 2,
        ..AnalysisPlan::default()
    }
}

/// Counters: both groups with `flows` new flows each, the new one with `failures`
/// unanswered handshakes.
fn counters(flows: u64, failures: u64) -> Pair {
    Pair {
        from: Sample {
            new_flows: flows * 9,
            ..Sample::default()
        },
        to: Sample {
            new_flows: flows,
            handshake_failures: failures,
            ..Sample::default()
        },
    }
}

#[test]
fn a_window_opens_after_the_warm_up_and_passes_on_clean_signals() {
    let mut a = Analysis::new(plan(), 0);
    assert!(!a.wants_sample(999));
    assert_eq!(a.advance(999, counters(0, 0), NAMES), Next::Quiet);
    assert!(a.wants_sample(1000));
    assert_eq!(a.advance(1000, counters(10, 0), NAMES), Next::Quiet);
    assert!(matches!(a.stage, Stage::Measuring { since_ms: 1000, .. }));
    assert!(!a.wants_sample(10_999) && a.wants_sample(11_000));
    let next = a.advance(11_000, counters(210, 0), NAMES);
    assert_eq!(
        next,
        Next::Record(
            "analysis: window passed: handshake-failures 0.00% <= limit 0.50% (blue 0.00%); \
             resets 0.00% <= limit 0.50% (blue 0.00%); green 200 new flows, blue 1800"
                .into()
        )
    );
    assert!(a.passed && a.allows_step(false));
    let last = a.last.as_ref().unwrap();
    assert_eq!((last.counted.to.new_flows, last.ended_at_ms), (200, 11_000));
    // The next window starts where this one ended.
    assert!(matches!(
        a.stage,
        Stage::Measuring {
            since_ms: 11_000,
            ..
        }
    ));
    a.stepped(20_000);
    assert!(
        !a.passed && !a.allows_step(false),
        "a new step needs a window of its own"
    );
    assert_eq!(a.stage, Stage::Warming { until_ms: 21_000 });
}

#[test]
fn worse_signals_roll_back_with_the_values() {
    let mut a = Analysis::new(plan(), 0);
    a.advance(1000, counters(0, 0), NAMES);
    let next = a.advance(11_000, counters(200, 20), NAMES);
    assert_eq!(
        next,
        Next::RollBack(
            "analysis: handshake-failures 10.00% > limit 0.50% (blue 0.00%); green 200 new \
             flows, blue 1800"
                .into()
        )
    );
    assert_eq!(a.last.as_ref().unwrap().verdict, Verdict::Fail);
}

#[test]
fn no_data_holds_then_fails_and_is_never_a_pass() {
    let mut a = Analysis::new(plan(), 0);
    a.advance(1000, counters(0, 0), NAMES);
    let next = a.advance(11_000, counters(50, 0), NAMES);
    assert_eq!(
        next,
        Next::Record(
            "analysis: holding, window without a verdict (1 of 2): green 50 new flows, blue \
             450: fewer than the minimum of 100"
                .into()
        )
    );
    assert!(!a.passed);
    let next = a.advance(21_000, counters(60, 0), NAMES);
    let Next::RollBack(why) = next else {
        panic!("{next:?}")
    };
    assert!(
        why.starts_with("analysis: 2 windows in a row without a verdict: green 10 new flows"),
        "{why}"
    );
}

#[test]
fn a_pass_between_empty_windows_starts_the_count_again() {
    let mut a = Analysis::new(plan(), 0);
    a.advance(1000, counters(0, 0), NAMES);
    a.advance(11_000, counters(50, 0), NAMES);
    a.advance(21_000, counters(250, 0), NAMES);
    assert_eq!(a.inconclusive, 0);
    assert!(matches!(
        a.advance(31_000, counters(260, 0), NAMES),
        Next::Record(_)
    ));
    assert_eq!(a.inconclusive, 1);
    // A second pass in the same step updates the last window without a new decision.
    assert_eq!(a.advance(41_000, counters(460, 0), NAMES), Next::Quiet);
    assert_eq!(a.last.as_ref().unwrap().ended_at_ms, 41_000);
    assert_eq!(a.inconclusive, 0);
}

#[test]
fn counters_that_went_back_give_no_verdict() {
    let mut a = Analysis::new(plan(), 0);
    a.advance(1000, counters(500, 3), NAMES);
    let next = a.advance(11_000, counters(600, 1), NAMES);
    let Next::Record(why) = next else {
        panic!("{next:?}")
    };
    assert!(why.contains("counters went back"), "{why}");
}

fn prometheus_gate() -> PrometheusGate {
    PrometheusGate {
        url: "http://198.18.0.1:9090".into(),
        query: "up".into(),
        max: Some(1.0),
        min: None,
    }
}

fn result(verdict: Verdict, detail: &str) -> GateResult {
    GateResult {
        gate: "prometheus up".into(),
        verdict,
        detail: detail.into(),
    }
}

#[test]
fn a_passing_window_asks_prometheus_and_takes_its_answer_once() {
    let mut a = Analysis::new(
        AnalysisPlan {
            prometheus: vec![prometheus_gate()],
            ..plan()
        },
        0,
    );
    a.advance(1000, counters(0, 0), NAMES);
    assert_eq!(a.advance(11_000, counters(200, 0), NAMES), Next::Quiet);
    assert!(
        !a.wants_sample(30_000),
        "no window while the gates are asked"
    );
    let questions = a.questions("web", false, &serde_json::Value::Null);
    assert_eq!(questions.len(), 1);
    assert_eq!(questions[0].asks, [Ask::Prometheus(prometheus_gate())]);
    let ticket = questions[0].ticket;
    assert!(a.asks(ticket));
    assert_eq!(
        a.window_answered(ticket + 1, vec![]),
        None,
        "another ticket"
    );
    let next = a.window_answered(ticket, vec![result(Verdict::Fail, "3 > max 1")]);
    let Some(Next::RollBack(why)) = next else {
        panic!("{next:?}")
    };
    assert!(
        why.starts_with("analysis: prometheus up: 3 > max 1; handshake-failures"),
        "{why}"
    );
    assert_eq!(a.window_answered(ticket, vec![]), None, "answered once");
    assert!(!a.asks(ticket));
    assert!(matches!(
        a.stage,
        Stage::Measuring {
            since_ms: 11_000,
            ..
        }
    ));
}

#[test]
fn prometheus_without_a_value_leaves_the_window_without_a_verdict() {
    let mut a = Analysis::new(
        AnalysisPlan {
            prometheus: vec![prometheus_gate()],
            ..plan()
        },
        0,
    );
    a.advance(1000, counters(0, 0), NAMES);
    a.advance(11_000, counters(200, 0), NAMES);
    let ticket = a.tickets;
    let next = a.window_answered(ticket, vec![result(Verdict::Inconclusive, "empty result")]);
    assert!(
        matches!(next, Some(Next::Record(ref why)) if why.contains("without a verdict (1 of 2)")),
        "{next:?}"
    );
    assert!(!a.passed);
}

fn hook(before: Phase) -> Webhook {
    Webhook {
        url: "http://198.18.0.1:8080/gate".into(),
        before,
    }
}

#[test]
fn webhooks_gate_the_steps_of_their_phase() {
    let mut a = Analysis::new(
        AnalysisPlan {
            webhooks: vec![hook(Phase::Promotion)],
            ..plan()
        },
        0,
    );
    a.advance(1000, counters(0, 0), NAMES);
    a.advance(11_000, counters(200, 0), NAMES);
    assert!(
        a.allows_step(false),
        "a promotion webhook does not gate other steps"
    );
    assert!(!a.allows_step(true) && a.needs_approval(true));
    let ticket = a.ask_approval();
    assert!(
        !a.needs_approval(true) && !a.allows_step(true),
        "asked, not answered"
    );
    let body = serde_json::json!({"phase": "promotion"});
    let questions = a.questions("web", true, &body);
    assert_eq!(
        questions[0].asks,
        [Ask::Webhook {
            url: "http://198.18.0.1:8080/gate".into(),
            body
        }]
    );
    let go = GateResult {
        gate: "webhook http://198.18.0.1:8080/gate".into(),
        verdict: Verdict::Pass,
        detail: "HTTP 200 OK".into(),
    };
    assert_eq!(
        a.approval_answered(ticket, std::slice::from_ref(&go)),
        Some(Next::Record(
            "analysis: go from webhook http://198.18.0.1:8080/gate".into()
        ))
    );
    assert!(a.allows_step(true));
    a.stepped(30_000);
    assert_eq!(a.approval, Approval::None, "each step asks again");
}

#[test]
fn a_webhook_that_says_no_rolls_back() {
    let mut a = Analysis::new(
        AnalysisPlan {
            webhooks: vec![hook(Phase::Both)],
            ..plan()
        },
        0,
    );
    a.advance(1000, counters(0, 0), NAMES);
    a.advance(11_000, counters(200, 0), NAMES);
    let ticket = a.ask_approval();
    let no = GateResult {
        gate: "webhook http://198.18.0.1:8080/gate".into(),
        verdict: Verdict::Fail,
        detail: "HTTP 503 Service Unavailable".into(),
    };
    assert_eq!(
        a.approval_answered(ticket + 1, std::slice::from_ref(&no)),
        None
    );
    assert_eq!(
        a.approval_answered(ticket, &[no]),
        Some(Next::RollBack(
            "analysis: webhook said no: webhook http://198.18.0.1:8080/gate: HTTP 503 \
             Service Unavailable"
                .into()
        ))
    );
}
