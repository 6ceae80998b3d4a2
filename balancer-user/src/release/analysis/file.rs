//! The analysis file of `canary start --analysis FILE.toml`, read by the CLI and sent to
//! the daemon as an [`AnalysisPlan`]:
//!
//! ```toml
//! warmup = "10s"           # after each step, before the first window
//! window = "30s"           # at least 5s
//! min_flows = 50           # new flows of the new group per window for a verdict
//! max_inconclusive = 3     # windows in a row without a verdict, then roll back
//!
//! [[check]]                # absent: handshake-failures and resets, 0.5% / 2x
//! signal = "handshake-failures"   # or "resets", "syn-retransmits", "backend-resets"
//! max_percent = 0.5
//! max_factor = 2.0
//!
//! [[check]]                # nat services: the handshake time's 90th percentile
//! signal = "handshake-time"
//! max_ms = 50              # and/or max_factor
//! max_factor = 5.0
//!
//! [[prometheus]]
//! url = "http://198.18.0.1:9090"
//! query = 'sum(rate(balancer_backend_resets_total{group="green"}[1m]))'
//! max = 0.1
//!
//! [[webhook]]
//! url = "http://198.18.0.1:8080/gate"
//! before = "both"          # or "step", "promotion"
//! ```

use std::time::Duration;

use serde::Deserialize;

use super::plan::{AnalysisPlan, Check, PrometheusGate, Webhook};

/// A file that does not describe an analysis.
#[derive(Debug, thiserror::Error)]
#[error("analysis file: {0}")]
pub struct FileError(String);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    warmup: Option<String>,
    window: Option<String>,
    min_flows: Option<u64>,
    max_inconclusive: Option<u32>,
    check: Option<Vec<Check>>,
    #[serde(default)]
    prometheus: Vec<PrometheusGate>,
    #[serde(default)]
    webhook: Vec<Webhook>,
}

/// Reads an analysis from TOML; what the file leaves out keeps [`AnalysisPlan::default`].
pub fn parse(text: &str) -> Result<AnalysisPlan, FileError> {
    let file: File = toml::from_str(text).map_err(|e| FileError(one_line(&e.to_string())))?;
    let defaults = AnalysisPlan::default();
    let plan = AnalysisPlan {
        warmup_ms: millis("warmup", file.warmup, defaults.warmup_ms)?,
        window_ms: millis("window", file.window, defaults.window_ms)?,
        min_flows: file.min_flows.unwrap_or(defaults.min_flows),
        max_inconclusive: file.max_inconclusive.unwrap_or(defaults.max_inconclusive),
        checks: file.check.unwrap_or(defaults.checks),
        prometheus: file.prometheus,
        webhooks: file.webhook,
    };
    plan.check().map_err(|e| FileError(e.to_string()))?;
    Ok(plan)
}

/// A duration such as "30s" in milliseconds; `default` when absent.
fn millis(key: &str, text: Option<String>, default: u64) -> Result<u64, FileError> {
    let Some(text) = text else {
        return Ok(default);
    };
    let duration: Duration = humantime::parse_duration(&text)
        .map_err(|e| FileError(format!("{key} = {text:?}: {e}")))?;
    Ok(u64::try_from(duration.as_millis()).unwrap_or(u64::MAX))
}

/// TOML's errors span lines (a caret under the source): one line for the operator.
fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::release::analysis::{Phase, Signal};

    #[test]
    fn a_full_file_and_an_empty_one() {
        let plan = parse(
            r#"
            warmup = "7s"
            window = "8s"
            min_flows = 20
            max_inconclusive = 2
            [[check]]
            signal = "syn-retransmits"
            max_percent = 1.5
            [[prometheus]]
            url = "http://198.18.0.1:9090"
            query = "up"
            min = 1
            [[webhook]]
            url = "http://198.18.0.1:8080/gate"
            before = "promotion"
            "#,
        )
        .unwrap();
        assert_eq!((plan.warmup_ms, plan.window_ms), (7000, 8000));
        assert_eq!((plan.min_flows, plan.max_inconclusive), (20, 2));
        assert_eq!(plan.checks.len(), 1);
        assert_eq!(plan.checks[0].signal, Signal::SynRetransmits);
        assert_eq!(plan.checks[0].max_factor, None);
        assert_eq!(plan.prometheus[0].min, Some(1.0));
        assert_eq!(plan.webhooks[0].before, Phase::Promotion);
        assert_eq!(parse("").unwrap(), AnalysisPlan::default());
    }

    #[test]
    fn reply_signals_take_their_own_limits() {
        let plan = parse(
            r#"
            [[check]]
            signal = "handshake-time"
            max_factor = 5
            [[check]]
            signal = "handshake-time"
            max_ms = 50
            [[check]]
            signal = "backend-resets"
            max_percent = 1
            "#,
        )
        .unwrap();
        let limits: Vec<_> = plan
            .checks
            .iter()
            .map(|c| (c.signal, c.max_percent, c.max_ms, c.max_factor))
            .collect();
        assert_eq!(
            limits,
            [
                (Signal::HandshakeTime, None, None, Some(5.0)),
                (Signal::HandshakeTime, None, Some(50.0), None),
                (Signal::BackendResets, Some(1.0), None, None),
            ]
        );
        assert_eq!(plan.reply_signal(), Some(Signal::HandshakeTime));
        assert_eq!(AnalysisPlan::default().reply_signal(), None);
    }

    #[test]
    fn the_readme_example_is_a_valid_file() {
        let readme = include_str!("../../../../README.md");
        let start = readme
            .find("```toml\nwarmup")
            .expect("README has an analysis example")
            + 8;
        let end = start + readme[start..].find("```").unwrap();
        let plan = parse(&readme[start..end]).unwrap();
        let signals: Vec<Signal> = plan.checks.iter().map(|c| c.signal).collect();
        assert_eq!(signals, [Signal::HandshakeFailures, Signal::HandshakeTime]);
        assert_eq!((plan.prometheus.len(), plan.webhooks.len()), (1, 1));
    }

    #[test]
    fn bad_files_are_refused_in_one_line() {
        for (text, why) in [
            ("windows = \"8s\"", "unknown field `windows`"),
            ("window = \"2s\"", "the window must be at least 5 s"),
            ("warmup = \"5s\"", "the warm-up must be at least 6 s"),
            ("window = \"soon\"", "window"),
            (
                "[[check]]\nsignal = \"latency\"\nmax_percent = 1",
                "unknown variant `latency`",
            ),
            (
                "[[check]]\nsignal = \"resets\"\nmax_percent = 101",
                "max_percent of resets",
            ),
            (
                "[[check]]\nsignal = \"resets\"\nmax_percent = 1\nmax_factor = 0.5",
                "max_factor",
            ),
            (
                "[[check]]\nsignal = \"resets\"\nmax_factor = 2",
                "resets needs max_percent",
            ),
            (
                "[[check]]\nsignal = \"backend-resets\"\nmax_percent = 1\nmax_ms = 5",
                "backend-resets is a ratio to new flows: give max_percent, not max_ms",
            ),
            (
                "[[check]]\nsignal = \"handshake-time\"\nmax_percent = 1",
                "handshake-time is a time: give max_ms and/or max_factor, not max_percent",
            ),
            (
                "[[check]]\nsignal = \"handshake-time\"",
                "handshake-time needs a limit: max_ms and/or max_factor",
            ),
            (
                "[[check]]\nsignal = \"handshake-time\"\nmax_ms = 1500",
                "max_ms of handshake-time must be above 0 and below 1000",
            ),
            (
                "[[check]]\nsignal = \"handshake-time\"\nmax_ms = 0",
                "max_ms of handshake-time must be above 0",
            ),
            (
                "[[check]]\nsignal = \"handshake-time\"\nmax_factor = 0.9",
                "max_factor of handshake-time",
            ),
            ("check = []", "nothing to check"),
            (
                "[[prometheus]]\nurl = \"http://198.18.0.1:9090\"\nquery = \"up\"",
                "no max or min",
            ),
            ("[[webhook]]\nurl = \"https://198.18.0.1/\"", "http://"),
            ("min_flows = 0", "at least 1 new flow"),
        ] {
            let err = parse(text).unwrap_err().to_string();
            assert!(err.contains(why), "{text:?}: {err}");
            assert!(!err.contains('\n'), "{text:?}: {err}");
            assert!(err.starts_with("analysis file: "), "{err}");
        }
    }
}
